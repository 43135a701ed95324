"""Rate phases under the exact shortcuts: a bursty or traced guest's run is
the same with shortcuts on and off.

A phased workload shows the shortcuts the pacing of its next request's
phase (``start_at``, ``interval``) and where that phase ends (``end``), so a
quiet stretch stops at a phase's end; the compiled copy loop runs a phased
guest only while the next phase's first request is due by the same formula
(``GuestWorkload.runs_alone``).  Each case must actually exercise the
shortcut it is about.
"""

import pytest

import blocksim
from blocksim.engine import burst
from equivalence import outcome
from tests.engine.test_burst_kernel import _guest_mirror, _watch


def _paced(**extra) -> dict:
    return {"drive": "d0", "rw": "randwrite", "bs": "4KiB"} | extra


BURSTS = {
    "name": "phases-bursts", "duration": "3s",
    "images": {"disk": {"size": "256MiB", "latency": "60us"}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {"g": _paced(**{"rate-iops": 2000, "burst": {"on": "200ms", "off": "300ms"}})},
}
RANDOM_BURSTS = {
    "name": "phases-random-bursts", "duration": "3s",
    "images": {"disk": {"size": "256MiB", "latency": "60us"}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {"g": _paced(**{"rate-iops": 3000, "end": "2700ms",
                                 "burst": {"on": "150ms", "off": "100ms", "random": True}})},
}
# rates up, down, to zero and back, with a backlog after a stop
TRACE_THIN = {
    "name": "phases-trace-thin", "duration": "4s",
    "images": {"disk": {"size": "64MiB", "capacity": "4MiB", "cluster-size": "64KiB"}},
    "drives": {"d0": {"image": "disk", "werror": "enospc"}},
    "workloads": {"g": _paced(rw="write", bs="16KiB", trace=[
        [0, 1000], [0.4, 2500], [0.9, 0], [1.3, 700], [2.2, 1800.5], [3.1, 0]])},
    "actions": [{"on": "BLOCK_IO_ERROR", "delay": "300ms", "command": "thin-extend",
                 "arguments": {"image": "disk", "by": "8MiB"}, "repeat": True},
                {"on": "BLOCK_IO_ERROR", "delay": "400ms", "command": "cont", "repeat": True}],
}
CASES = {"bursts": BURSTS, "random-bursts": RANDOM_BURSTS, "trace-thin": TRACE_THIN}


@pytest.mark.parametrize("name", CASES)
def test_a_phased_guest_runs_the_same_with_and_without_shortcuts(name):
    scenario = blocksim.load_scenario(CASES[name])
    fast = blocksim.Simulation(scenario, seed=4)
    exact = blocksim.Simulation(scenario, seed=4, shortcuts=False)
    assert outcome(fast) == outcome(exact)
    assert fast.workloads["g"].in_stretches > 500, "no longer exercises quiet stretches"


def test_the_thin_trace_case_pauses_and_catches_up():
    r = blocksim.run(blocksim.load_scenario(TRACE_THIN), seed=4)
    assert r.summary["vm"]["stops"] >= 2
    assert r.summary["drives"]["d0"]["writes_lost"] == 0
    # every request the trace schedules before 3.1 s is issued
    expected = 400 + 1250 + 630 + int(0.9 * 1800.5) + 1
    assert abs(r.summary["drives"]["d0"]["writes"] - expected) <= 2


def test_a_traced_guest_on_a_mirror_source_runs_in_the_compiled_loop(monkeypatch):
    """Adjacent phases with requests: the compiled loop takes the guest
    over and hands it back as SimPy would have run it."""
    spec = _guest_mirror({"trace": [[0, 800], [0.3, 1200], [0.5, 500], [0.7, 0], [0.8, 900]]})
    del spec["workloads"]["g"]["rate-iops"]
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        compiled = outcome(blocksim.Simulation(scenario, seed=5))
    assert seen["adopted"] > 0
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=5, shortcuts=False)) == compiled


def test_the_compiled_loop_leaves_a_guest_before_an_off_phase_to_simpy():
    spec = _guest_mirror({"burst": {"on": "100ms", "off": "50ms"}})
    sim = blocksim.Simulation(blocksim.load_scenario(spec), seed=5)
    w = sim.workloads["g"]
    assert not w.runs_alone         # its first phase is followed by an off phase
    traced = _guest_mirror({"trace": [[0, 800], [0.3, 1200]]})
    del traced["workloads"]["g"]["rate-iops"]
    assert blocksim.Simulation(blocksim.load_scenario(traced), seed=5).workloads["g"].runs_alone
