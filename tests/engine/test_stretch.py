"""Quiet stretches: a paced guest's requests done in bulk change nothing.

Each scenario is run with the shortcuts (clock skips and quiet stretches) on
and off; the events, commands, series and summary must be byte-identical,
and the stretches must actually have been taken, so that the comparison
says something about them.
"""

import pytest

import blocksim
from blocksim.simulation import Simulation
from equivalence import outcome


def _paced(**extra) -> dict:
    return {"drive": "d0", "rw": "randwrite", "bs": "4KiB", "rate-iops": 2000} | extra


# A mirror copying in bursts while the guest writes: stretches fill the gaps
# between bursts and polls, and the guest's writes re-dirty the bitmap.
MIRROR = {
    "name": "stretch-mirror", "duration": "6s", "sample-interval": "500ms",
    "images": {"src": {"size": "256MiB", "data": "full", "latency": "50us"},
               "tgt": {"size": "256MiB", "latency": "80us"}},
    "drives": {"d0": {"image": "src"}},
    "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "tgt", "speed": "128MiB"}},
    "workloads": {"guest": _paced(rw="randrw", rwmixread=30, end="5321ms")},
    "actions": [{"on": "BLOCK_JOB_READY", "delay": "1s", "command": "block-job-complete",
                 "arguments": {"device": "j0"}}],
}

# A thin disk that fills up in the middle of a stretch: the write needing a
# cluster past the capacity ends the stretch and fails (werror=enospc stops
# the VM); thin-extend and cont let the guest go on.
THIN = {
    "name": "stretch-thin", "duration": "4s",
    "images": {"disk": {"size": "64MiB", "capacity": "3MiB", "cluster-size": "64KiB"}},
    "drives": {"d0": {"image": "disk", "werror": "enospc"}},
    "workloads": {"guest": _paced(rw="write", bs="16KiB", **{"number-ios": 5000})},
    "actions": [{"on": "BLOCK_IO_ERROR", "delay": "300ms", "command": "thin-extend",
                 "arguments": {"image": "disk", "capacity": "64MiB"}},
                {"on": "BLOCK_IO_ERROR", "delay": "400ms", "command": "cont"}],
}

# An overlay over a base image: a write to a cluster the overlay does not
# hold yet needs a copy-on-write, which ends a stretch; a rewrite does not.
BACKING = {
    "name": "stretch-backing", "duration": "3s",
    "images": {"base": {"size": "8MiB", "data": "full"},
               "top": {"size": "8MiB", "format": "qcow2", "backing": "base"}},
    "drives": {"d0": {"image": "top"}},
    "workloads": {"guest": _paced(rw="randrw", bs="4KiB")},
}

# Two paced guests on two drives: the fast one's stretches end where the
# slow one's next request is queued (the slow one, 1 ms per request, never
# fits a stretch between two of the fast one's and goes one by one).
TWO_GUESTS = {
    "name": "stretch-two-guests", "duration": "2s",
    "images": {"a": {"size": "1GiB"}, "b": {"size": "1GiB", "latency": "1ms"}},
    "drives": {"d0": {"image": "a"}, "d1": {"image": "b"}},
    "workloads": {"fast": _paced(**{"rate-iops": 3000}),
                  "slow": {"drive": "d1", "rw": "randread", "bs": "64KiB",
                           "rate-iops": 300}},
}

# A guest behind its own rate: requests due before the previous one completed
# are issued at its completion, so the max-plus recurrence's max matters.
LATE = {
    "name": "stretch-late", "duration": "1s",
    "images": {"disk": {"size": "256MiB", "latency": "700us", "bandwidth": "100MiB"}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {"guest": _paced(rw="write", **{"rate-iops": 1300})},
}

# A 64 MiB read holds the pipe for 640 ms now and then: the small writes
# issued meanwhile queue behind it and cannot complete before it does.
QUEUED_BEHIND = {
    "name": "stretch-queued-behind", "duration": "3s",
    "images": {"disk": {"size": "1GiB", "bandwidth": "100MiB", "latency": "20us"}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {"small": _paced(**{"rate-iops": 1000}),
                  "big": {"drive": "d0", "rw": "read", "bs": "64MiB", "rate-iops": 1}},
}
# Closed loops: one thinks between requests on a disk a mirror copies,
# the other issues back to back against a rate-paced reader on the same
# drive, with a request cap.
THINKER = {
    "name": "stretch-thinker", "duration": "4s", "sample-interval": "1s",
    "images": {"src": {"size": "128MiB", "data": "full", "latency": "60us"},
               "tgt": {"size": "128MiB"}},
    "drives": {"d0": {"image": "src"}},
    "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "tgt", "speed": "64MiB"}},
    "workloads": {"guest": {"drive": "d0", "rw": "randrw", "bs": "8KiB",
                            "think-time": "330us", "end": "3700ms"}},
}
BACK_TO_BACK = {
    "name": "stretch-back-to-back", "duration": "2s",
    "images": {"disk": {"size": "1GiB", "latency": "40us"}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {"loop": {"drive": "d0", "rw": "write", "bs": "4KiB",
                           "number-ios": 20000},
                  "paced": _paced(rw="randread", **{"rate-iops": 50})},
}

# Fault rules that cannot match the guest's requests while a stretch lasts
# leave it alone: a rule on reads under a writing guest, dm-flakey between
# its down windows, a count that is spent, a rule whose window opens later
# (then requests fail one by one and report BLOCK_IO_ERROR).
FAULTS_ASIDE = {
    "name": "stretch-faults-aside", "duration": "3s",
    "images": {"disk": {"size": "1GiB", "latency": "50us"}},
    "drives": {"d0": {"image": "disk", "werror": "report"}},
    "faults": [{"image": "disk", "operation": "read"},
               {"type": "flakey", "image": "disk", "operation": "write",
                "up": "700ms", "down": "3ms"},
               {"image": "disk", "operation": "write", "start": "100ms", "count": 3},
               {"type": "delay", "image": "disk", "operation": "write", "start": "2500ms",
                "delay": "1ms"}],
    "workloads": {"guest": _paced(rw="randwrite")},
}

CASES = {"mirror": MIRROR, "thin": THIN, "backing": BACKING, "two-guests": TWO_GUESTS,
         "late": LATE, "queued-behind": QUEUED_BEHIND,
         "thinker": THINKER, "back-to-back": BACK_TO_BACK, "faults-aside": FAULTS_ASIDE}


@pytest.mark.parametrize("name", CASES)
def test_a_run_is_the_same_with_and_without_quiet_stretches(name):
    scenario = blocksim.load_scenario(CASES[name])
    fast = Simulation(scenario, seed=5)
    exact = Simulation(scenario, seed=5, shortcuts=False)
    assert outcome(fast) == outcome(exact)
    stretched = sum(w.in_stretches for w in fast.workloads.values())
    assert stretched > 100, "the scenario no longer exercises quiet stretches"
    assert all(w.in_stretches == 0 for w in exact.workloads.values())


def test_the_cases_reach_what_they_are_built_for():
    # A case that silently stopped doing what its comment says would make the
    # comparison above say less than it seems to.
    r = blocksim.run(blocksim.load_scenario(MIRROR), seed=5)
    assert r.summary["jobs"]["j0"]["outcome"] == "completed"
    assert r.summary["jobs"]["j0"]["integrity"] == "identical"
    r = blocksim.run(blocksim.load_scenario(THIN), seed=5)
    assert [e["event"] for e in r.events[:2]] == ["BLOCK_IO_ERROR", "STOP"]
    assert r.summary["drives"]["d0"]["requests"] == 5000
    assert r.summary["drives"]["d0"]["writes_lost"] == 0
    late = blocksim.run(blocksim.load_scenario(LATE), seed=5)
    # 700 us plus 4 KiB at 100 MiB/s is 739 us per request, one due every
    # 769 us: the guest keeps up, and its mean latency is the service time
    assert late.summary["drives"]["d0"]["requests"] == 1300


def test_a_stretch_stops_where_a_fault_rule_could_fire(monkeypatch):
    """No request of a stretch is submitted once a rule could match it: in
    FAULTS_ASIDE, the flakey rule's down windows, the error rule's three
    failures and the delay rule's window are all met one by one."""
    import blocksim.model.workload
    stretches = []
    real = blocksim.model.workload.advance

    def recording(workload):
        t0 = workload.env.now
        n = real(workload)
        if n:
            stretches.append((t0, workload.env.now))
        return n
    monkeypatch.setattr(blocksim.model.workload, "advance", recording)
    r = blocksim.run(blocksim.load_scenario(FAULTS_ASIDE), seed=5)
    ms = 1_000_000
    downs = [(k * 703 * ms + 700 * ms, (k + 1) * 703 * ms) for k in range(5)]
    assert len(stretches) > 10
    for t0, t1 in stretches:
        assert t1 <= 2500 * ms                      # dm-delay from 2.5 s on
        assert not any(t0 < b and t1 > a for a, b in downs), (t0, t1)
    # what the rules did: the error rule's three failures as its window
    # opens (a request every 500 us; blkdebug fails each on the main loop's
    # next turn, 10 us later, with no service time), then six writes in each
    # 3 ms down window of dm-flakey; dm-delay then slows the guest down
    errors = [e["timestamp"]["seconds"] * 10**6 + e["timestamp"]["microseconds"]
              for e in r.events if e["event"] == "BLOCK_IO_ERROR"]
    assert errors[:3] == [100_010, 100_510, 101_010]
    for a, b in downs[:3]:
        assert sum(a // 1000 <= t < b // 1000 for t in errors) == 6
    assert 5000 < r.summary["drives"]["d0"]["requests"] < 6000


def _completed_at_a_timer(shortcuts: bool) -> list[int]:
    """Requests every 1 ms, each served in exactly 500 us (400 us plus 4 KiB
    at 40.96 MB/s), and bare timers at 10.5 ms and 20.4 ms: the first one
    falls exactly on a completion, the second between two."""
    source = {
        "name": "stretch-boundary", "duration": "30ms",
        "images": {"disk": {"size": "64MiB", "latency": "400us", "bandwidth": 40_960_000}},
        "drives": {"d0": {"image": "disk"}},
        "workloads": {"guest": _paced(rw="write", **{"rate-iops": 1000})},
    }
    sim = Simulation(blocksim.load_scenario(source), seed=1, shortcuts=shortcuts)
    seen = []
    for t in (10_500_000, 20_400_000):
        sim.env.timeout(t).callbacks.append(
            lambda _e: seen.append(sim.workloads["guest"].completed))
    sim.run()
    assert sim.workloads["guest"].in_stretches > (20 if shortcuts else -1)
    return seen


def test_a_request_completing_exactly_at_the_next_event_waits_for_it():
    # The timer was queued first, so it runs before the completion due at
    # the same instant: 10 requests (0 to 9) are done when it fires, not 11.
    assert _completed_at_a_timer(False) == [10, 20]
    assert _completed_at_a_timer(True) == [10, 20]


@pytest.mark.parametrize("name", ["mirror", "late", "thinker", "back-to-back"])
def test_a_stretch_counts_the_waits_it_saves_as_the_clock_would(name, monkeypatch):
    # env.skipped is a benchmark figure: a stretch adds the waits the clock
    # shortcut would have skipped one by one (due, service, think).
    scenario = blocksim.load_scenario(CASES[name])
    bulk = Simulation(scenario, seed=5)
    bulk.run()
    monkeypatch.setattr("blocksim.model.workload.advance", lambda workload: 0)
    single = Simulation(scenario, seed=5)
    single.run()
    assert sum(w.in_stretches for w in single.workloads.values()) == 0
    assert bulk.env.skipped == single.env.skipped
