"""The background pass's rate-limit sleeps and wake-ups, with steps.

QEMU's block-copy (``block_copy_dirty_clusters``) asks the limiter before
each task (``ratelimit_calculate_delay(&s->rate_limit, 0)``) and sleeps what
it says; the guest's copy-before-writes count their bytes against the same
limiter, so while the pass sleeps they move the slice's end, and the pass,
woken, asks again and sleeps again.  With steps, ``BackupJob._sleep_over``
resumes the pass at once when its wake-up is the next event, does not
resume it at all when it would only sleep again, and the pass takes a wait
for a slot that is over at once without a trip through the steps
(``_dirty_clusters_steps``).  These tests compare such runs byte for byte
(equivalence.outcome) with those shortcuts off (``backup.SLEEPS``), with
the compiled loop off (``copyloop.ENABLED``) and without shortcuts, and
check that each path is taken.
"""

from __future__ import annotations

import pytest

import blocksim
from blocksim.engine import PENDING, copyloop, filtered
from blocksim.jobs import backup as backup_module
from blocksim.jobs.backup import BackupJob
from blocksim.simulation import Simulation
from equivalence import outcome
from jobcases import backup_case

MiB = 1 << 20


def backup(guest: dict | None = None, size: int = 256 * MiB, src: dict | None = None,
           tgt: dict | None = None, speed="400MiB", **keys) -> dict:
    """A full backup at ``speed`` under a guest of random 4 KiB writes."""
    return backup_case(
        size=size, data=((0, size),), duration="900ms", speed=speed,
        source_image={"bandwidth": "4GiB", "latency": "50us"} | (src or {}),
        target_image={"bandwidth": "2GiB", "latency": "80us"} | (tgt or {}),
        workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
                         "rate-iops": 3000} | (guest or {})}, **keys)


CASES = {
    # (d)'s shape: the guest's copy-before-writes move the slice's end while
    # the pass sleeps
    "a paced guest": backup(),
    "a busy guest, 64 KiB writes": backup(guest={"rate-iops": 20000, "bs": "64KiB",
                                                 "iodepth": 4}),
    # (the guest's writes on whole milliseconds, as the slices' ends are
    # now and then: a wake-up with a SimPy event at its instant)
    "whole milliseconds": backup(
        src={"latency": "1ms", "bandwidth": "1000MiB"},
        guest={"think-time": "1ms", "rate-iops": None, "bs": "64KiB"}),
    # (the guest copies the disk's tail while the pass sleeps before it:
    # woken, the pass finds nothing dirty from where it is)
    "the guest copies the tail first": backup(
        size=64 * MiB, speed="100MiB",
        guest={"rw": "write", "bs": "2MiB", "offset": "54MiB", "size": "10MiB",
               "rate-iops": 1900, "iodepth": 8, "start": "512300us"}),
    # (the guest's events at the instants the pass wakes: a SimPy event
    # due at the wake-up's instant, which the wake-up's event comes after)
    "the guest at the wake-ups' instants": backup(
        speed="200MiB",
        guest={"rw": "write", "bs": "1MiB", "offset": "200MiB", "size": "56MiB",
               "rate-iops": 400}),
    # (kicks of a sleep re-armed on the same event: set-speed, pause, cancel)
    "set-speed, pause, resume, cancel": backup(actions=[
        {"at": "120ms", "command": "block-job-set-speed",
         "arguments": {"device": "job0", "speed": 150 * MiB}},
        {"at": "250ms", "command": "block-job-pause", "arguments": {"device": "job0"}},
        {"at": "330ms", "command": "block-job-resume", "arguments": {"device": "job0"}},
        {"at": "500ms", "command": "block-job-set-speed",
         "arguments": {"device": "job0", "speed": 600 * MiB}},
        {"at": "800ms", "command": "block-job-cancel", "arguments": {"device": "job0"}}]),
    # (a task of the pass fails while it sleeps: woken, it ends the call)
    "a target fault while the pass sleeps": backup(
        faults=[{"image": "tgt", "operation": "write", "errno": "EIO", "offset": 0,
                 "length": "256MiB", "start": "300ms", "end": "380ms"}],
        on_target_error="ignore"),
}


def _runs(scenario: dict, monkeypatch) -> list[str]:
    """The run as it is, then with the sleeps' shortcuts off, the compiled
    loop off, and without shortcuts."""
    loaded = blocksim.load_scenario(scenario)
    out = [outcome(Simulation(loaded))]
    with monkeypatch.context() as m:
        m.setattr(backup_module, "SLEEPS", False)
        out.append(outcome(Simulation(loaded)))
    with monkeypatch.context() as m:
        m.setattr(copyloop, "ENABLED", False)
        out.append(outcome(Simulation(loaded)))
    out.append(outcome(Simulation(loaded, shortcuts=False)))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_pass_sleeps_the_same_with_the_shortcuts(name, monkeypatch):
    scenario = CASES[name]
    for w in scenario["workloads"].values():
        if w.get("rate-iops", 0) is None:
            del w["rate-iops"]
    fast, *others = _runs(scenario, monkeypatch)
    assert all(fast == other for other in others)


def _timers(loaded, monkeypatch) -> list:
    """Each timeout SimPy queues in the run, with its key (time, priority,
    id): the ids drawn before each, in the order they were drawn."""
    from blocksim.engine.clock import Clock
    from simpy.events import Timeout
    timers = []
    real = Clock.schedule

    def schedule(env, event, priority=1, delay=0):
        real(env, event, priority, delay)
        if event.__class__ is Timeout:
            timers.append(env._queue[-1][:3] if env._queue[-1][3] is event else
                          next(e[:3] for e in env._queue if e[3] is event))
    with monkeypatch.context() as m:
        m.setattr(Clock, "schedule", schedule)
        Simulation(loaded).run()
    return timers


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_pass_draws_the_same_ids_at_the_same_moments(name, monkeypatch):
    """A wake-up resumed at once or re-armed, a wait for a slot over at
    once: each id the skipped events and steps would draw is drawn where
    they would draw it, so every timeout of the run (the guest's, the
    pass's sleeps, the tasks' reads and writes left to SimPy) is queued
    under the same key as with the shortcuts off."""
    scenario = CASES[name]
    for w in scenario["workloads"].values():
        if w.get("rate-iops", 0) is None:
            del w["rate-iops"]
    loaded = blocksim.load_scenario(scenario)
    # (a quiet stretch that fires the pass's re-arming timer itself and
    # goes on skips the guest's waits and request around it without ids,
    # as every stretch does its requests; with the sleeps' shortcut off
    # the timer resumes the pass, and the stretch stops there: the ids of
    # the sleeps compared with the stretches alike, those timers left out)
    monkeypatch.setattr(filtered, "TIMERS", False)
    fast = _timers(loaded, monkeypatch)
    # (without the compiled loop: the fill makes nothing, the pass its tasks)
    monkeypatch.setattr(copyloop, "ENABLED", False)
    slow = _timers(loaded, monkeypatch)
    monkeypatch.setattr(backup_module, "SLEEPS", False)
    assert slow == _timers(loaded, monkeypatch)
    monkeypatch.setattr(copyloop, "ENABLED", True)
    assert fast == _timers(loaded, monkeypatch)


def test_a_wait_over_at_once_waits_for_what_is_due_with_it(monkeypatch):
    """A wait for a slot over at once is taken in the same resumption only
    when nothing is due at its instant: here, at each wake-up, an event at
    that instant (queued before the wake-up's, so the wake-up goes through
    SimPy) queues another one after it, whose callback draws an id; the
    wait's event must come after that one, as with the shortcuts off."""
    real = BackupJob._sleep_over

    def crowded(self, call, ev, timer):
        env = self.env
        if ev._value is PENDING:
            env.timeout(0).callbacks.append(
                lambda _e: env.timeout(0).callbacks.append(lambda _e: env.timeout(1)))
        return real(self, call, ev, timer)
    monkeypatch.setattr(BackupJob, "_sleep_over", crowded)
    # (ids compared with the sleeps' shortcut off: the stretches' timers
    # left out, as above; they fire a wake-up only when nothing is due)
    monkeypatch.setattr(filtered, "TIMERS", False)
    loaded = blocksim.load_scenario(CASES["a paced guest"])
    fast = _timers(loaded, monkeypatch)
    monkeypatch.setattr(backup_module, "SLEEPS", False)
    assert fast == _timers(loaded, monkeypatch)


def _count(monkeypatch, name: str) -> list:
    """Each result of ``BackupJob.name``."""
    seen = []
    real = getattr(BackupJob, name)

    def counting(self, *args):
        r = real(self, *args)
        seen.append(r)
        return r
    monkeypatch.setattr(BackupJob, name, counting)
    return seen


def test_a_wake_up_that_would_only_sleep_again_resumes_nothing(monkeypatch):
    """In (d)'s shape most of the pass's wake-ups are taken by
    ``_sleep_over``: some re-armed (the pass would only sleep again: the
    guest's copies moved the slice's end), the others resumed at once, and
    every re-armed sleep is one the pass would have slept: as many sleeps
    of the limiter (``_next_task``'s, plus the re-armed ones) as without."""
    again = _count(monkeypatch, "_sleeps_again")
    sleeps = _count(monkeypatch, "_call_sleep")
    loaded = blocksim.load_scenario(CASES["a paced guest"])
    Simulation(loaded).run()
    rearmed = [ns for ns in again if ns]
    assert len(rearmed) >= 5 and len(again) - len(rearmed) >= 5
    fast = len(sleeps) + len(rearmed)
    again.clear()
    sleeps.clear()
    monkeypatch.setattr(backup_module, "SLEEPS", False)
    Simulation(loaded).run()
    assert not again and len(sleeps) == fast


def test_a_wait_for_a_slot_over_at_once_takes_no_step(monkeypatch):
    """Woken from its sleep with a full pool whose tasks have ended, the
    pass makes the task that waits for a slot, finds the wait over at once
    and fills the pool in the same resumption: fewer ``_pool_wait`` than
    with the sleeps' shortcuts off, and the same run (compared above)."""
    waits = _count(monkeypatch, "_pool_wait")
    loaded = blocksim.load_scenario(CASES["a paced guest"])
    Simulation(loaded).run()
    fast = len(waits)
    waits.clear()
    monkeypatch.setattr(backup_module, "SLEEPS", False)
    Simulation(loaded).run()
    assert fast <= len(waits) - 4


def test_a_fill_goes_on_past_a_wait_over_at_once(monkeypatch):
    """Woken with a full pool whose tasks have ended, the pass's fill
    (copyloop.fill) makes the task that would wait for a slot and goes on:
    one fill of 65 tasks where the pass made 1, then 64 (the run is the
    same: compared above)."""
    made = []
    real = copyloop.fill

    def filling(job, pooled, woke=False):
        n = real(job, pooled, woke)
        made.append(n)
        return n
    monkeypatch.setattr(copyloop, "fill", filling)
    loaded = blocksim.load_scenario(CASES["a paced guest"])
    Simulation(loaded).run()
    assert made.count(65) >= 3 and 1 not in made
    made.clear()
    monkeypatch.setattr(backup_module, "SLEEPS", False)
    Simulation(loaded).run()
    assert 65 not in made and made.count(1) >= 3


def test_the_limiters_wait_is_its_delay_unasked():
    """``RateLimit.wait(now)`` is what ``delay(now, 0)`` returns, and a
    sleep it announces leaves the limiter as ``delay(now, 0)`` does."""
    from blocksim.model.ratelimit import SLICE_NS, RateLimit
    limit = RateLimit(100 * MiB)
    assert limit.wait(0) == 0 and limit.delay(0, 0) == 0
    limit.delay(0, 12 * MiB)                    # over the slice's quota
    state = (limit.slice_start, limit.slice_end, limit.dispatched)
    ns = limit.wait(SLICE_NS // 2)
    assert ns > 0 and (limit.slice_start, limit.slice_end, limit.dispatched) == state
    assert limit.delay(SLICE_NS // 2, 0) == ns
    limit.set_speed(50 * MiB)                   # (its end moves with the quota)
    ns = limit.wait(SLICE_NS // 2)
    assert ns > 0 and limit.delay(SLICE_NS // 2, 0) == ns
    assert limit.wait(limit.slice_end) == 0     # a new slice
    limit.set_speed(1000 * MiB)                 # (the stretched slice over)
    assert limit.wait(SLICE_NS // 2) == 0 == limit.delay(SLICE_NS // 2, 0)
    # (a slice over, then a lower speed: its end as the new quota would
    # stretch it is later, but the next ask starts a new slice)
    limit = RateLimit(100 * MiB)
    limit.delay(0, 12 * MiB)
    over = limit.slice_end
    limit.set_speed(10 * MiB)
    assert limit.wait(over) == 0 == limit.delay(over, 0)


def test_the_limiter_told_of_a_sleep_is_left_as_its_delay_leaves_it():
    """``RateLimit.asked(now, ns)``, where ``wait(now)`` said ``ns`` > 0,
    leaves the limiter as ``delay(now, 0)`` does (what a backup's pass
    waking only to sleep again asks, BackupJob._sleeps_again): over
    random slices, amounts, speed changes and instants."""
    import random
    from blocksim.model.ratelimit import SLICE_NS, RateLimit
    rng = random.Random(20)
    told = asked = 0
    for _case in range(200):
        a, b = RateLimit(rng.choice((1, 10, 100)) * MiB), None
        now = 0
        for _step in range(30):
            now += rng.choice((0, 1, SLICE_NS // 7, SLICE_NS // 2, SLICE_NS))
            if rng.random() < 0.1:
                a.set_speed(rng.choice((1, 10, 50, 100, 1000)) * MiB)
            elif rng.random() < 0.6:
                a.delay(now, rng.choice((4096, MiB, 3 * MiB, 12 * MiB)))
            ns = a.wait(now)
            if not ns:
                continue
            b = RateLimit(a.speed)
            b.slice_start, b.slice_end, b.dispatched = a.slice_start, a.slice_end, a.dispatched
            told += b.slice_end != a.slice_start + int(a.dispatched / max(a.slice_quota, 1)
                                                       * SLICE_NS)
            assert a.delay(now, 0) == ns
            b.asked(now, ns)
            asked += 1
            assert ((b.slice_start, b.slice_end, b.dispatched)
                    == (a.slice_start, a.slice_end, a.dispatched))
    assert asked > 500 and told > 20        # (ends moved by a speed change among them)


def test_a_guest_resumed_inside_a_step_skips_no_step(monkeypatch):
    """A guest resumed inside a step (Steps._fire: a task's done) skips no
    step with its wait: the clock's peek sees the steps' next entry, which
    has no marker in SimPy's queue while they run (Clock.peek).  Found with
    the sleeps' tests: a failed write of the pass ran after a guest's later
    copy-before-write, and the limiter counted them in the other order."""
    scenario = backup(
        faults=[{"image": "tgt", "operation": "write", "errno": "EIO", "offset": 0,
                 "length": "256MiB", "start": "395ms", "end": "470ms"}],
        on_target_error="ignore")
    loaded = blocksim.load_scenario(scenario)
    assert outcome(Simulation(loaded)) == outcome(Simulation(loaded, shortcuts=False))
