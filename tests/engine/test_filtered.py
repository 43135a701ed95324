"""Quiet stretches through a backup's copy-before-write filter
(blocksim.engine.filtered) and the backup's task steps (blocksim.engine.steps)
leave the run SimPy gives one event at a time: backups under a one-worker
guest, each aimed at one rule of the stretch, compared with
``Simulation(shortcuts=False)`` byte for byte (equivalence.outcome)."""

from __future__ import annotations

import copy

import pytest

import blocksim
from blocksim.engine import filtered
from blocksim.simulation import Simulation
from equivalence import outcome

MiB = 1 << 20


def backup(guest: dict | None = None, job: dict | None = None, src: dict | None = None,
           tgt: dict | None = None, **extra) -> dict:
    scenario = {
        "name": "filtered", "duration": "1.5s", "sample-interval": "100ms",
        "images": {"src": {"size": "64MiB", "data": "full", "bandwidth": "1GiB",
                           "latency": "50us"} | (src or {}),
                   "tgt": {"size": "64MiB", "bandwidth": "1GiB", "latency": "80us"}
                   | (tgt or {})},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"job0": {"type": "backup", "device": "vda", "target": "tgt",
                          "sync": "full", "speed": "64MiB"} | (job or {})},
        "workloads": {"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
                            "rate-iops": 2000} | (guest or {})},
    }
    scenario.update(extra)
    return scenario


CASES = {
    "paced guest, rate-limited backup": backup(),
    # (a millisecond's source write fault every 7 ms: some begin between a
    # timer a stretch fires and the next horizon, where the stretch must
    # stop: filtered._quiet_timer, the nodes' quiet asked again)
    "short source write faults every 7 ms": backup(faults=[
        {"image": "src", "operation": "write", "errno": "EIO",
         "start": f"{100_000 + 7_000 * i}us", "end": f"{101_000 + 7_000 * i}us"}
        for i in range(185)]),
    "closed-loop guest with think time": backup(guest={"rate-iops": None,
                                                       "think-time": "300us"}),
    "mixed reads and writes": backup(guest={"rw": "randrw"}),
    "writes over two clusters, one copied": backup(guest={"bs": "96KiB", "rate-iops": 500}),
    "compress: one-cluster tasks": backup(job={"compress": True},
                                          guest={"bs": "96KiB", "rate-iops": 500}),
    "a qcow2 target with 128 KiB clusters": backup(tgt={"format": "qcow2",
                                                        "cluster-size": "128KiB"}),
    "a thin target that fills": backup(tgt={"capacity": "40MiB"},
                                       job={"on-target-error": "ignore"}),
    "a source partly zero": backup(src={"data": [{"offset": 0, "length": "16MiB"}]}),
    # (writes over two clusters where the source reads as zeros: the range's
    # block status, BackupJob.copy_before_quietly's general path)
    "writes over two clusters of a source partly zero": backup(
        src={"data": [{"offset": 0, "length": "16MiB"}]},
        guest={"bs": "96KiB", "rate-iops": 500}),
    # (tasks the guest's copies put out of line straddle the 64 MiB page
    # boundary, into a page of zeros)
    "tasks across two pages, into zeros": backup(
        src={"size": "128MiB", "data": [{"offset": 0, "length": "64MiB"}]},
        tgt={"size": "128MiB"}, duration="2s",
        guest={"offset": "63MiB", "size": "512KiB", "rate-iops": 200}),
    # (guest writes of two clusters across the 64 MiB page boundary: the
    # witness of a range over two pages, read then pasted, not at once; the
    # backup completes, so the check reads the witness)
    "writes of two clusters across two pages": backup(
        src={"size": "128MiB"}, tgt={"size": "128MiB"}, job={"speed": "256MiB"},
        guest={"offset": 64 * MiB - 64 * 1024, "size": "1MiB", "bs": "128KiB",
               "rate-iops": 300}),
    # (the same with data on both sides: each such task reads one piece
    # per page, backup._Pieces, and pastes them in turn)
    "tasks across two pages of data": backup(
        src={"size": "192MiB"}, tgt={"size": "192MiB"}, duration="3s",
        job={"speed": "128MiB"}, guest={"offset": "56MiB", "size": "16MiB", "rate-iops": 100}),
    "tasks across two pages, the target dropping writes": backup(
        src={"size": "192MiB"}, tgt={"size": "192MiB"}, duration="3s",
        job={"speed": "128MiB"}, guest={"offset": "56MiB", "size": "16MiB", "rate-iops": 100},
        faults=[{"type": "flakey", "image": "tgt", "up": "1ms", "down": "10s",
                 "operation": "write", "drop-writes": True, "offset": "63MiB",
                 "length": "2MiB"}]),
    "tasks across two pages, the target failing writes": backup(
        src={"size": "192MiB"}, tgt={"size": "192MiB"}, duration="3s",
        job={"speed": "128MiB", "on-target-error": "ignore"},
        guest={"offset": "56MiB", "size": "16MiB", "rate-iops": 100},
        faults=[{"image": "tgt", "operation": "write", "errno": "EIO", "offset": "60MiB",
                 "length": "8MiB", "start": "200ms", "end": "900ms"}]),
    # (a full pool of 64 tasks, 1 MiB each, with the guest's writes over
    # tasks in flight: the pool's wake-up after a task another call waits
    # for runs after that waiter)
    "a full pool, the guest waiting for its tasks": backup(
        src={"size": "256MiB", "bandwidth": "256MiB"}, tgt={"size": "256MiB"},
        job={"speed": "1GiB"}, guest={"size": "256MiB", "rate-iops": 3000}),
    "a thin source": backup(src={"data": "none"}),
    # (a write-zeroes task keeps neither node busy: a guest write over it
    # must still wait for it, so no stretch while it is in flight)
    "write-zeroes in flight under the guest": backup(
        job={"sync": "bitmap", "bitmap": "b0", "bitmap-mode": "always"},
        src={"data": [{"offset": "8MiB", "length": "56MiB"}],
             "bitmaps": [{"name": "b0", "dirty": [{"offset": 0, "length": "4MiB"}]}]},
        tgt={"latency": "50ms"}, guest={"size": "32MiB", "rate-iops": 3000}),
    "sync=none until cancelled": backup(job={"sync": "none"}, actions=[
        {"at": "1s", "command": "block-job-cancel", "arguments": {"device": "job0"}}]),
    "a bitmap recording the guest": backup(src={"bitmaps": [{"name": "b1"}]}),
    "sync=bitmap": backup(job={"sync": "bitmap", "bitmap": "b0", "bitmap-mode": "always"}, src={"bitmaps": [
        {"name": "b0", "dirty": [{"offset": "8MiB", "length": "24MiB"}]}]}),
    "a target write fault in a window": backup(faults=[
        {"image": "tgt", "operation": "write", "errno": "EIO", "offset": 0,
         "length": "64MiB", "start": "300ms", "end": "320ms"}],
        job={"on-target-error": "ignore"}),
    # (the target held data: a dropped write-zeroes leaves it there)
    "write-zeroes dropped by a flakey target": backup(
        src={"data": [{"offset": 0, "length": "16MiB"}]}, tgt={"data": "full"},
        faults=[{"type": "flakey", "image": "tgt", "up": "40ms", "down": "30ms",
                 "operation": "write", "drop-writes": True}]),
    "a source read error, ignored": backup(faults=[
        {"image": "src", "operation": "read", "errno": "EIO", "offset": "32MiB",
         "length": "64KiB", "count": 2}],
        job={"on-source-error": "ignore", "on-target-error": "report"},
        guest={"size": "16MiB"}),
    "a slow source read fault": backup(faults=[
        {"type": "delay", "image": "src", "operation": "read", "delay": "2ms",
         "offset": "32MiB", "length": "1MiB"}]),
    "a jittery target": backup(tgt={"jitter": 0.3}),
    "pause, set-speed, stop and cont": backup(actions=[
        {"at": "200ms", "command": "block-job-pause", "arguments": {"device": "job0"}},
        {"at": "450ms", "command": "block-job-resume", "arguments": {"device": "job0"}},
        {"at": "500ms", "command": "block-job-set-speed",
         "arguments": {"device": "job0", "speed": 16 * MiB}},
        {"at": "700ms", "command": "stop"}, {"at": "760ms", "command": "cont"}]),
    "a guest that ends and a second guest": backup(guest={"end": "600ms"}, workloads={
        "g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
              "rate-iops": 2000, "end": "600ms"},
        "h": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
              "rate-iops": 700, "start": "400ms"}}),
}


#: cases where no stretch may run: a copy's write could take longer, a
#: copy's read could be delayed, every copy is a write-zeroes, a copy could
#: find the target full
NOT_QUIET = {"a jittery target", "a slow source read fault", "a thin source",
             "a full pool, the guest waiting for its tasks",
             "tasks across two pages, the target dropping writes",
             "a thin target that fills", "write-zeroes in flight under the guest",
             "write-zeroes dropped by a flakey target"}


def _clean(scenario: dict) -> dict:
    for w in scenario["workloads"].values():
        for key in [k for k, v in w.items() if v is None]:
            del w[key]
    return scenario


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_backup_under_a_guest_is_the_same_without_shortcuts(name, monkeypatch):
    counted = []
    real = filtered.advance

    def counting(workload, write_filter):
        n = real(workload, write_filter)
        counted.append(n)
        return n
    monkeypatch.setattr(filtered, "advance", counting)
    loaded = blocksim.load_scenario(_clean(CASES[name]))
    fast = outcome(Simulation(loaded))
    assert fast == outcome(Simulation(loaded, shortcuts=False))
    if name not in NOT_QUIET:
        assert sum(counted) > 50          # the stretches did run



def test_the_stretches_copy_before_writes():
    """In the plain case most guest writes run in stretches, half of them
    copying their cluster first."""
    sim = Simulation(blocksim.load_scenario(CASES["paced guest, rate-limited backup"]))
    result = sim.run()
    copies = result.summary["jobs"]["job0"]["copy_before_write"]["writes"]
    assert sim.workloads["g"].in_stretches > 1500 and copies > 300


@pytest.mark.parametrize("name", ["tasks across two pages of data",
                                  "tasks across two pages, the target dropping writes",
                                  "tasks across two pages, the target failing writes"])
def test_tasks_across_pages_read_a_piece_per_page(name, monkeypatch):
    """The cases above do make tasks that straddle a page and read them in
    pieces (with steps), and leave no read open in the journal (the
    equivalence test above compares what the pieces pasted)."""
    from blocksim.jobs import backup as backup_module
    pieces = []
    real = backup_module.BackupJob._read_for_copy

    def counting(src, start, end):
        runs = real(src, start, end)
        if runs.__class__ is backup_module._Pieces:
            pieces.append(runs)
        return runs
    monkeypatch.setattr(backup_module.BackupJob, "_read_for_copy", staticmethod(counting))
    # (the copy loop's pastes read a page at a time too: BackupJob._paste)
    pasted = []
    real_paste = backup_module.BackupJob._paste

    def pasting(job, start, end):
        shift = job.source.content._shift
        if start >> shift != (end - 1) >> shift:
            pasted.append((start, end))
        return real_paste(job, start, end)
    monkeypatch.setattr(backup_module.BackupJob, "_paste", pasting)
    # (and BackupJob._paste_runs, its pieces a page at a time, compiled)
    real_runs = backup_module.BackupJob._paste_runs

    def pasting_runs(job, pastes):
        shift = job.source.content._shift
        pasted.extend((a, b) for a, b in pastes if a >> shift != (b - 1) >> shift)
        return real_runs(job, pastes)
    monkeypatch.setattr(backup_module.BackupJob, "_paste_runs", pasting_runs)
    sim = Simulation(blocksim.load_scenario(_clean(CASES[name])))
    sim.run()
    assert len(pieces) + len(pasted) >= 2 and all(len(p) == 2 for p in pieces)
    # (a piece whose write failed or was dropped is not left open)
    journal = sim.devices["src"].content._journal
    assert not journal._open and not journal._held


def test_the_guest_waits_for_tasks_of_a_full_pool(monkeypatch):
    """In the full-pool case the pass waits for a free slot while the
    guest's copy waits for a task of the pool (what the pool's wake-up
    must leave to that waiter first)."""
    from blocksim.jobs import backup as backup_module
    from blocksim.engine import copyloop
    # (the pass's own waits: without the loop, which waits in place of
    # the generator while no call waits for a task of the pool)
    monkeypatch.setattr(copyloop, "ENABLED", False)
    waits = []
    real = backup_module.BackupJob._pool_wait

    def counting(self, pooled):
        waits.append(sum(1 for t in pooled.waited if t.pool is pooled
                         and t.done.callbacks is not None))
        return real(self, pooled)
    monkeypatch.setattr(backup_module.BackupJob, "_pool_wait", counting)
    Simulation(blocksim.load_scenario(_clean(CASES["a full pool, the guest waiting for its tasks"]))).run()
    assert len(waits) > 100 and sum(1 for w in waits if w) > 5


def test_a_witness_over_two_pages_keeps_both():
    """A guest write of two clusters across the 64 MiB page edge: its
    witness keeps what the source held on both pages (read, then pasted;
    the journal's read pasted at once is for a range inside one page,
    BackupJob._keep), so the completed backup's check finds the target
    holding the point in time (with or without shortcuts the same path)."""
    scenario = _clean(CASES["writes of two clusters across two pages"])
    result = Simulation(blocksim.load_scenario(copy.deepcopy(scenario))).run()
    job = result.summary["jobs"]["job0"]
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")
    assert job["copy_before_write"]["writes"] > 0


#: cases whose stretches fire the pass's sleep timers (filtered._quiet_timer)
TIMER_CASES = ["paced guest, rate-limited backup", "mixed reads and writes",
               "a target write fault in a window", "a jittery target",
               "writes over two clusters, one copied", "compress: one-cluster tasks",
               "a guest that ends and a second guest", "a source partly zero",
               "short source write faults every 7 ms"]


def _in_stretches(loaded, monkeypatch, **switches) -> tuple:
    """The run's outcome, the requests its guests did in stretches, and how
    many times a stretch found the pass's timer its own to fire."""
    fired = []
    real = filtered._quiet_timer

    def firing(*args):
        at = real(*args)
        if at:
            fired.append(at)
        return at
    with monkeypatch.context() as m:
        m.setattr(filtered, "_quiet_timer", firing)
        for name, value in switches.items():
            m.setattr(filtered, name, value)
        sim = Simulation(loaded)
        out = outcome(sim)
    return out, sum(w.in_stretches for w in sim.workloads.values()), len(fired)


@pytest.mark.parametrize("name", TIMER_CASES)
def test_a_stretch_fires_the_pass_s_timer_that_only_sleeps_again(name, monkeypatch):
    """The pass's sleep timer that would only set another (the guest's
    copies moved the slice's end while it slept) is fired by the stretch
    that reaches it, which goes on: the same run as with those timers left
    to SimPy (the stretch stopped, the request across it one by one), and
    without shortcuts; more requests in stretches.  And the early refusal
    (a stretch whose first request is past its deadline) refuses only
    stretches that would do nothing: as many requests in stretches as
    without it."""
    loaded = blocksim.load_scenario(_clean(copy.deepcopy(CASES[name])))
    fast, stretched, fired = _in_stretches(loaded, monkeypatch)
    left, stretched_left, none = _in_stretches(loaded, monkeypatch, TIMERS=False)
    late, stretched_late, _ = _in_stretches(loaded, monkeypatch, EARLY=False)
    assert fired and not none
    assert fast == left == late == outcome(Simulation(loaded, shortcuts=False))
    assert stretched_late == stretched
    assert stretched >= stretched_left
    if name == "paced guest, rate-limited backup":
        assert stretched > stretched_left


def test_a_stretch_leaves_to_simpy_a_timer_with_something_due_with_it(monkeypatch):
    """At the first timer a stretch would fire (the pass would only sleep
    again), asked again: with the worker due at the instant of the next
    timer (0: one by one its wait, queued before that timer, comes first),
    then with another event due at the timer's instant (0: the pass's
    wake-up would see it, ``_next_now``, and resume the pass)."""
    answers = []
    real = filtered._quiet_timer

    def probing(env, write_filter, due, end):
        at = real(env, write_filter, due, end)
        if at and not answers:
            again = write_filter.quiet_timer(env._queue)
            answers.append((at, again, real(env, write_filter, again, end)))
            env.timeout(at - env.now)           # (due with the timer, queued after it)
            answers.append((write_filter.quiet_timer(env._queue), real(env, write_filter, due, end)))
            return 0
        return at
    monkeypatch.setattr(filtered, "_quiet_timer", probing)
    Simulation(blocksim.load_scenario(_clean(copy.deepcopy(CASES["paced guest, rate-limited backup"])))).run()
    (at, again, at_the_next), (with_another, stretch) = answers
    assert again > at and at_the_next == 0
    assert with_another == 0 and stretch == 0
