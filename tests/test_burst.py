"""Copy bursts: a mirror's issue-and-wait cycle run inline changes nothing.

Each scenario runs three ways: with every shortcut, with copy bursts turned
off (the agenda alone), and with no shortcut at all.  Events, commands,
series, summary and device counters must be byte-identical, and the bursts
must actually have carried most of the copying, so that the comparison says
something about them.
"""

import pytest

import blocksim
from blocksim import burst
from blocksim.simulation import Simulation
from equivalence import outcome


def _mirror(name: str, src: dict, tgt: dict, job: dict, guest: dict | None = None,
            actions: list | None = None, duration: str = "4s", **images) -> dict:
    return {
        "name": name, "duration": duration, "sample-interval": "250ms",
        "images": {"src": {"size": "64MiB", "data": "full"} | src,
                   "tgt": {"size": "64MiB"} | tgt} | images,
        "drives": {"d0": {"image": "src"}},
        "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "tgt"} | job},
        "workloads": {"guest": {"drive": "d0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 2000} | (guest or {})},
        "actions": actions or [],
    }


CASES = {
    # Rate-limited initial copy (bursts of one slice's quota, then a sleep),
    # READY, re-copies of what the guest dirties, complete with its drain.
    "rate-limited-then-complete": _mirror(
        "burst-complete", {"latency": "50us"}, {"latency": "80us"},
        {"speed": "128MiB"},
        actions=[{"on": "BLOCK_JOB_READY", "delay": "1500ms",
                  "command": "block-job-complete", "arguments": {"device": "j0"}}]),
    # Most of the source reads as zeros, in clusters (1 MiB) larger than the
    # operations (64 KiB): whole operations read zeros and become
    # write-zeroes (latency only, not the pipe), which complete out of order
    # with the data writes.
    "sparse-source": _mirror(
        "burst-sparse", {"cluster-size": "1MiB",
                         "data": [{"offset": "0", "length": "64KiB"},
                                  {"offset": "40MiB", "length": "2200KiB"}]}, {},
        {"buf-size": "1MiB"}, guest={"rw": "randrw", "rwmixread": 50}),
    # A small disk written fast with no speed limit and equal devices: the
    # guest re-dirties granules in flight (the loop waits on an overlap) and
    # its requests fall on the same nanosecond as copy operations.
    "overlaps-and-ties": _mirror(
        "burst-ties", {"size": "8MiB", "latency": "100us", "bandwidth": "1GiB"},
        {"size": "8MiB", "latency": "100us", "bandwidth": "1GiB"},
        {"granularity": "64KiB"}, guest={"rate-iops": 10000, "bs": "64KiB"},
        duration="1s"),
    # Commands land between and inside bursts: pause, resume and force
    # cancel while operations are in flight, set-speed, then a cancel once
    # ready (which keeps copying until converged).
    "commands": _mirror(
        "burst-commands", {"bandwidth": "128MiB"}, {"bandwidth": "128MiB"}, {},
        guest={"rate-iops": 500}, actions=[{"at": "101ms", "command": "block-job-pause", "arguments": {"device": "j0"}},
                 {"at": "212ms", "command": "block-job-resume", "arguments": {"device": "j0"}},
                 {"at": "300ms", "command": "block-job-set-speed",
                  "arguments": {"device": "j0", "speed": 100 << 20}},
                 {"on": "BLOCK_JOB_READY", "delay": "1s", "command": "block-job-cancel",
                  "arguments": {"device": "j0"}}]),
    "force-cancel": _mirror(
        "burst-force", {"bandwidth": "128MiB"}, {"bandwidth": "128MiB"}, {},
        guest={"rate-iops": 500}, actions=[{"at": "123ms", "command": "block-job-cancel",
                  "arguments": {"device": "j0", "force": True}}]),
    # The source is an overlay over a base image: reads resolve the chain.
    "source-over-backing": {
        **_mirror("burst-backing", {"format": "qcow2", "backing": "base", "data": "none"},
                  {}, {"sync": "full"},
                  base={"size": "64MiB", "data": [{"offset": "0", "length": "24MiB"}]}),
    },
}


def _without_bursts(monkeypatch):
    monkeypatch.setattr(burst, "applies", lambda job: False)


def _share_in_bursts(sim: Simulation, monkeypatch) -> float:
    """Run ``sim``; the share of the mirror's copied bytes copied in bursts."""
    in_bursts = []
    real = burst.copy

    def counting(job, waiting, detached=False):
        before = job.bytes_copied
        out = real(job, waiting, detached)
        in_bursts.append(job.bytes_copied - before)
        return out
    monkeypatch.setattr(burst, "copy", counting)
    result = sim.run()
    return sum(in_bursts) / result.summary["jobs"]["j0"]["bytes_copied"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mirror_is_the_same_with_and_without_copy_bursts(name, monkeypatch):
    scenario = blocksim.load_scenario(CASES[name])
    exact = outcome(Simulation(scenario, seed=7, shortcuts=False))
    fast = outcome(Simulation(scenario, seed=7))
    with monkeypatch.context() as m:
        _without_bursts(m)
        agenda_only = outcome(Simulation(scenario, seed=7))
    assert fast == exact
    assert agenda_only == exact


# (after a force cancel the loop only waits for the operations in flight,
# one at a time: half the copying of that case)
@pytest.mark.parametrize("name", sorted(set(CASES) - {"force-cancel"}))
def test_bursts_carry_most_of_the_copying(name, monkeypatch):
    scenario = blocksim.load_scenario(CASES[name])
    assert _share_in_bursts(Simulation(scenario, seed=7), monkeypatch) > 0.8


def test_the_cases_reach_what_they_are_built_for(monkeypatch):
    r = blocksim.run(blocksim.load_scenario(CASES["rate-limited-then-complete"]), seed=7)
    job = r.summary["jobs"]["j0"]
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    assert job["bytes_copied"] > 64 << 20            # re-copies after READY
    r = blocksim.run(blocksim.load_scenario(CASES["commands"]), seed=7)
    statuses = [e["data"]["status"] for e in r.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert "paused" in statuses and statuses[-1] == "null"
    assert r.summary["jobs"]["j0"]["integrity"] == "identical"

    # ties: a burst stops before an entry due at the same nanosecond as
    # SimPy's head when SimPy orders the head first
    ties = []
    real = burst.copy

    def watching(job, waiting, detached=False):
        out = real(job, waiting, detached)
        entries = job._agenda._entries
        if out == burst.WAITING and entries[0][0] == job.env.peek():
            ties.append(job.env.now)
        return out
    monkeypatch.setattr(burst, "copy", watching)
    blocksim.run(blocksim.load_scenario(CASES["overlaps-and-ties"]), seed=7)
    assert ties


@pytest.mark.parametrize("image, extra", [
    ("tgt", {"faults": [{"image": "tgt", "operation": "write", "offset": "60MiB",
                         "length": "64KiB"}]}),
    # a rule whose window opens after the run: it never fires, but a burst
    # cannot know that
    ("src", {"faults": [{"image": "src", "operation": "read", "start": "100s"}]}),
])
def test_no_burst_where_a_fault_rule_could_fire(image, extra, monkeypatch):
    source = _mirror("burst-faults", {}, {}, {"on-target-error": "ignore"}, duration="1s")
    scenario = blocksim.load_scenario(source | extra)
    assert _share_in_bursts(Simulation(scenario, seed=3), monkeypatch) == 0
    exact = outcome(Simulation(scenario, seed=3, shortcuts=False))
    assert outcome(Simulation(scenario, seed=3)) == exact


def test_no_burst_onto_a_thin_target_that_could_fill_up(monkeypatch):
    source = _mirror("burst-thin", {}, {"capacity": "32MiB"}, {}, duration="1s")
    scenario = blocksim.load_scenario(source)
    assert _share_in_bursts(Simulation(scenario, seed=3), monkeypatch) == 0
    # with room for the whole disk it cannot fail: bursts again
    roomy = blocksim.load_scenario(_mirror("burst-roomy", {}, {"capacity": "64MiB"}, {},
                                           duration="1s"))
    assert _share_in_bursts(Simulation(roomy, seed=3), monkeypatch) > 0.8
