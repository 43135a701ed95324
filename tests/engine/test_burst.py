"""Copy bursts: a mirror's issue-and-wait cycle run inline changes nothing.

Each scenario runs three ways: with every shortcut, with copy bursts turned
off (the agenda alone), and with no shortcut at all.  Events, commands,
series, summary and device counters must be byte-identical, and the bursts
must actually have carried most of the copying, so that the comparison says
something about them.
"""

from pathlib import Path

import pytest

import blocksim
from blocksim.engine import burst, burst_kernel
from blocksim.simulation import Simulation
from equivalence import outcome


def _mirror(name: str, src: dict, tgt: dict, job: dict, guest: dict | None = None,
            actions: list | None = None, faults: list | None = None,
            duration: str = "4s", **images) -> dict:
    return {
        "name": name, "duration": duration, "sample-interval": "250ms",
        "images": {"src": {"size": "64MiB", "data": "full"} | src,
                   "tgt": {"size": "64MiB"} | tgt} | images,
        "drives": {"d0": {"image": "src"}},
        "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "tgt"} | job},
        "workloads": {"guest": {"drive": "d0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 2000} | (guest or {})},
        "actions": actions or [],
        "faults": faults or [],
    }


def _active_commit(name: str, job: dict, actions: list | None = None, base: dict | None = None,
                   duration: str = "3s", top: dict | None = None,
                   size: str = "64MiB") -> dict:
    """An active commit of ``top`` (and ``mid``) into ``base`` under guest writes."""
    return {
        "name": name, "duration": duration, "sample-interval": "250ms",
        "images": {"base": {"size": size, "data": "full"} | (base or {}),
                   "mid": {"size": size, "backing": "base",
                           "data": [{"offset": "8MiB", "length": "20MiB"}]},
                   "top": {"size": size, "backing": "mid",
                           "data": [{"offset": "24MiB", "length": "12MiB"}]} | (top or {})},
        "drives": {"d0": {"image": "top"}},
        "jobs": {"j0": {"type": "commit", "device": "d0"} | job},
        "workloads": {"guest": {"drive": "d0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 2000}},
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
    # Most of the source is unallocated, in clusters (1 MiB): onto the
    # default discard=ignore target the whole disk is dirty and those ranges
    # become write-zeroes with no read (latency only, not the pipe), which
    # complete out of order with the data copies.
    "sparse-source": _mirror(
        "burst-sparse", {"cluster-size": "1MiB",
                         "data": [{"offset": "0", "length": "64KiB"},
                                  {"offset": "40MiB", "length": "2200KiB"}]}, {},
        {"buf-size": "1MiB"}, guest={"rw": "randrw", "rwmixread": 50}),
    # Every cluster (1 MiB) allocated but most of them holding a 64 KiB
    # extent only: the source's block status is data throughout, so the
    # compiled loop runs, with a guest among its copies, reading pages that
    # may hold zeros (handed back) and pages of data.
    "zeros-in-allocated-clusters": _mirror(
        "burst-zero-pages", {"cluster-size": "1MiB", "data": [
            {"offset": f"{i}MiB", "length": "64KiB"} for i in range(64) if not 40 <= i < 48]
            + [{"offset": "40MiB", "length": "8MiB"}]}, {},
        {"buf-size": "1MiB"}, guest={"rw": "randrw", "rwmixread": 50}),
    # QEMU 7.2's iterations: 1.5 MiB of buffer (a 1 MiB copy then 512 KiB,
    # copies waiting for buffer granules) under a speed limit (one sleep per
    # iteration), 512-byte granules (copies of granularity x IOV_MAX), and a
    # sparse source onto a discard=unmap target (zeroed first; write-zeroes
    # not counted against the speed).
    "iterations-under-speed": _mirror(
        "burst-iterations", {}, {}, {"buf-size": "1536KiB", "speed": "96MiB"}),
    "small-granules": _mirror(
        "burst-small-granules", {"size": "8MiB"}, {"size": "8MiB"},
        {"granularity": "512", "speed": "32MiB"}, guest={"rate-iops": 500}),
    "sparse-onto-unmap": _mirror(
        "burst-unmap", {"data": [{"offset": "1MiB", "length": "3MiB"},
                                 {"offset": "33MiB", "length": "5MiB"}]},
        {"discard": "unmap"}, {"speed": "64MiB"}, guest={"rw": "randrw"}),
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
        # (the pause waits for the 16 MiB in flight, 125 ms at 128 MiB/s)
        guest={"rate-iops": 500}, actions=[{"at": "101ms", "command": "block-job-pause", "arguments": {"device": "j0"}},
                 {"at": "312ms", "command": "block-job-resume", "arguments": {"device": "j0"}},
                 {"at": "400ms", "command": "block-job-set-speed",
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
    # A cascade asked for: a second mirror of the first one's target is
    # refused while the first runs (QEMU's op blockers hold the target), and
    # the first one copies in bursts all the same.
    "cascade": {
        "name": "burst-cascade", "duration": "3s", "sample-interval": "250ms",
        "images": {"src": {"size": "32MiB", "data": "full"}, "mid": {"size": "32MiB"},
                   "dst": {"size": "32MiB"}},
        "drives": {"d0": {"image": "src"}, "d1": {"image": "mid"}},
        "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "mid"},
                 "j1": {"type": "mirror", "device": "d1", "target": "dst", "start": "5ms"}},
        "workloads": {"guest": {"drive": "d0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 2000}},
    },
    # Failures inside bursts go through the error policy: writes to one range
    # of the target fail five times, each stops the job, an action resumes it.
    "target-errors-stop-resume": _mirror(
        "burst-stop", {}, {}, {"on-target-error": "stop"},
        faults=[{"image": "tgt", "operation": "write", "offset": "20MiB", "length": "1MiB",
                 "count": 5}],
        actions=[{"on": "BLOCK_JOB_ERROR", "delay": "30ms", "repeat": True,
                  "command": "block-job-resume", "arguments": {"device": "j0"}}]),
    # dm-flakey reads on the source, ignored (retried later), with jitter on
    # both devices and dm-delay on part of the target.
    "flakey-source-ignore": _mirror(
        "burst-flakey", {"jitter": 0.3}, {"jitter": 0.2}, {"on-source-error": "ignore"},
        faults=[{"type": "flakey", "image": "src", "operation": "read",
                 "up": "170ms", "down": "13ms"},
                {"type": "delay", "image": "tgt", "operation": "write", "offset": "8MiB",
                 "length": "8MiB", "delay": "2ms"}],
        actions=[{"on": "BLOCK_JOB_READY", "delay": "500ms", "command": "block-job-complete",
                  "arguments": {"device": "j0"}}]),
    # A thin target fills up: ENOSPC stops the job (enospc), an action
    # extends the target and resumes.
    "thin-target-enospc": _mirror(
        "burst-enospc", {}, {"capacity": "40MiB"}, {"on-target-error": "enospc"},
        actions=[{"on": "BLOCK_JOB_ERROR", "delay": "100ms",
                  "command": "thin-extend", "arguments": {"image": "tgt", "capacity": "64MiB"}},
                 {"on": "BLOCK_JOB_ERROR", "delay": "150ms",
                  "command": "block-job-resume", "arguments": {"device": "j0"}}]),
    # dm-flakey dropping target writes: a write submitted in a down window may
    # complete once the node is quiet again, and must still be dropped.
    "dropped-writes": _mirror(
        "burst-drop", {}, {"latency": "2ms"}, {}, duration="2s",
        faults=[{"type": "flakey", "image": "tgt", "operation": "write", "up": "50ms",
                 "down": "5ms", "drop-writes": True}]),
    # One failed source read, reported: the job fails with operations in flight.
    "source-error-report": _mirror(
        "burst-report", {}, {}, {"on-source-error": "report"},
        faults=[{"image": "src", "operation": "read", "offset": "30MiB", "length": "64KiB",
                 "count": 1}]),
    # A stop pauses the job while its operations in flight fail on a full
    # target (report): resumed, the loop claims an iteration (mirror_run
    # checks the job's error before its pause point) but issues nothing,
    # as mirror_iteration checks it again before each operation.
    "report-during-pause": _mirror(
        "burst-report-paused", {}, {"capacity": "12MiB"},
        {"on-source-error": "stop", "on-target-error": "report", "granularity": "256KiB"},
        faults=[{"image": "src", "operation": "read", "offset": "11MiB", "length": "64KiB",
                 "count": 1}],
        actions=[{"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"}, "delay": "100ms",
                  "command": "block-job-resume", "arguments": {"device": "j0"}}],
        duration="1s"),
    # A plain cancel once ready, then a target error with stop: the job pauses
    # (standby) until resumed, and then completes without the pivot.
    "plain-cancel-then-stop": _mirror(
        "burst-cancel-stop", {}, {}, {"on-target-error": "stop"},
        faults=[{"image": "tgt", "operation": "write", "start": "180ms", "count": 1}],
        actions=[{"on": "BLOCK_JOB_READY", "delay": "100ms", "command": "block-job-cancel",
                  "arguments": {"device": "j0"}},
                 {"on": "BLOCK_JOB_ERROR", "delay": "50ms", "command": "block-job-resume",
                  "arguments": {"device": "j0"}}], duration="1s"),
    # A shallow mirror (sync=top) between two overlays of one base, with
    # clusters larger than the granularity: partial writes to new target
    # clusters copy the rest from the base first (copy-on-write).
    "shallow-target-cow": {
        **_mirror("burst-cow", {"format": "qcow2", "backing": "base", "cluster-size": "256KiB",
                                "data": [{"offset": "4MiB", "length": "6MiB"}]},
                  {"format": "qcow2", "backing": "base", "cluster-size": "256KiB"},
                  {"sync": "top"}, actions=[{"on": "BLOCK_JOB_READY", "delay": "500ms", "command": "block-job-complete",
                  "arguments": {"device": "j0"}}],
                  base={"size": "64MiB", "data": "full"}),
    },
    # Active commit: the mirror's loop with the base as target and the top's
    # chain as source (reads resolve through mid and base, which the copies
    # write), under guest writes, completed (the pivot) once ready.
    "active-commit-complete": _active_commit(
        "burst-commit", {}, actions=[{"on": "BLOCK_JOB_READY", "delay": "300ms",
                                      "command": "block-job-complete",
                                      "arguments": {"device": "j0"}}]),
    # Active commit into a thin base that fills up: on-error=enospc stops the
    # job, an action extends the base and resumes; then a plain cancel once
    # ready (no pivot).
    "active-commit-thin-base": _active_commit(
        "burst-commit-thin", {"on-error": "enospc", "speed": "256MiB"},
        base={"data": [{"offset": "0", "length": "16MiB"}], "capacity": "24MiB"},
        actions=[{"on": "BLOCK_JOB_ERROR", "delay": "100ms", "command": "thin-extend",
                  "arguments": {"image": "base", "capacity": "64MiB"}},
                 {"on": "BLOCK_JOB_ERROR", "delay": "150ms", "command": "block-job-resume",
                  "arguments": {"device": "j0"}},
                 {"on": "BLOCK_JOB_READY", "delay": "200ms", "command": "block-job-cancel",
                  "arguments": {"device": "j0"}}]),
    # Active commit of a fully allocated top: the compiled loop runs it, the
    # guest among its copies, reading the top's pages over its chain.
    "active-commit-full-top": _active_commit(
        "burst-commit-full", {"speed": "128MiB"}, top={"data": "full"},
        actions=[{"on": "BLOCK_JOB_READY", "delay": "400ms", "command": "block-job-complete",
                  "arguments": {"device": "j0"}}]),
    # A named dirty bitmap recording on the base: the commit's copies mark
    # it (BlockDevice.complete_write), so no copy between these nodes is
    # quiet (burst._quiet) and the query shows the same count either way.
    "active-commit-bitmap-on-base": _active_commit(
        "burst-commit-bitmap", {}, top={"data": "full"},
        actions=[{"at": "0s", "command": "block-dirty-bitmap-add",
                  "arguments": {"node": "base", "name": "b0"}},
                 {"at": "2900ms", "command": "query-named-block-nodes"}]),
    # Every cluster (1 MiB) of the top allocated, but in the first content
    # page (64 MiB) most hold a 64 KiB extent only: the compiled loop runs
    # (block status data throughout) and reads the pages of data; a read of
    # the first page resolves through mid and base where the top holds
    # zeros (handed back to the Python loop).
    "active-commit-zeros-in-top": _active_commit(
        "burst-commit-zero-pages", {}, size="192MiB", duration="2s", top={
            "cluster-size": "1MiB", "data": [
                {"offset": f"{i}MiB", "length": "64KiB"} for i in range(64)]
            + [{"offset": "64MiB", "length": "128MiB"}]}),
}


def _without_bursts(monkeypatch):
    monkeypatch.setattr(burst, "applies", lambda job: False)


def _share_in_bursts(sim: Simulation, monkeypatch) -> float:
    """Run ``sim``; the share of its mirrors' copied bytes copied in bursts."""
    in_bursts = []
    real = burst.copy

    def counting(job, *args, **kwargs):
        before = job.bytes_copied
        out = real(job, *args, **kwargs)
        in_bursts.append(job.bytes_copied - before)
        return out
    monkeypatch.setattr(burst, "copy", counting)
    result = sim.run()
    return sum(in_bursts) / sum(job["bytes_copied"] for job in result.summary["jobs"].values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mirror_is_the_same_with_and_without_copy_bursts(name, monkeypatch):
    scenario = blocksim.load_scenario(CASES[name])
    exact = outcome(Simulation(scenario, seed=7, shortcuts=False))
    fast = outcome(Simulation(scenario, seed=7))
    with monkeypatch.context() as m:
        _without_bursts(m)
        agenda_only = outcome(Simulation(scenario, seed=7))
    with monkeypatch.context() as m:
        m.setattr(burst, "KERNEL", False)       # the Python loop, not compiled
        python_bursts = outcome(Simulation(scenario, seed=7))
    assert fast == exact
    assert agenda_only == exact
    assert python_bursts == exact


@pytest.mark.parametrize("name", sorted(CASES))
def test_with_shortcuts_every_copy_completes_in_a_burst(name, monkeypatch):
    # issued by the loop, completed while it waits, while it sleeps or is
    # paused, or while it waits out the operations left after it ended
    scenario = blocksim.load_scenario(CASES[name])
    assert _share_in_bursts(Simulation(scenario, seed=7), monkeypatch) == 1.0


def test_the_cases_reach_what_they_are_built_for(monkeypatch):
    r = blocksim.run(blocksim.load_scenario(CASES["rate-limited-then-complete"]), seed=7)
    job = r.summary["jobs"]["j0"]
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    assert job["bytes_copied"] > 64 << 20            # re-copies after READY
    r = blocksim.run(blocksim.load_scenario(CASES["cascade"]), seed=7)
    assert [(c["execute"], c["error"]["desc"]) for c in r.commands if "error" in c] == [
        ("blockdev-mirror", "Node 'mid' is busy: block device is in use by block job: mirror")]
    assert r.summary["jobs"]["j0"]["outcome"] == "ready"
    r = blocksim.run(blocksim.load_scenario(CASES["commands"]), seed=7)
    statuses = [e["data"]["status"] for e in r.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert "paused" in statuses and statuses[-1] == "null"
    assert r.summary["jobs"]["j0"]["integrity"] == "identical"

    for name, errors, end in (("target-errors-stop-resume", {"stop": 5}, "ready"),
                              ("thin-target-enospc", {"stop": 24}, "ready"),
                              ("flakey-source-ignore", {"ignore": 355}, "completed"),
                              ("source-error-report", {"report": 1}, "completed-with-error"),
                              ("shallow-target-cow", {}, "completed")):
        job = blocksim.run(blocksim.load_scenario(CASES[name]), seed=7).summary["jobs"]["j0"]
        assert {k: v for k, v in job["errors_by_action"].items() if v} == errors, name
        assert job["outcome"] == end, name
        if end == "completed":
            assert job["integrity"] == "identical", name

    r = blocksim.run(blocksim.load_scenario(CASES["report-during-pause"]), seed=7)
    names = [(e["event"], e["data"].get("status", e["data"].get("action")))
             for e in r.events]
    resumed = names.index(("JOB_STATUS_CHANGE", "running"), 2)
    # the iteration claimed after the resume issues nothing: the job ends
    assert names[resumed + 1:resumed + 2] == [("JOB_STATUS_CHANGE", "aborting")]
    r = blocksim.run(blocksim.load_scenario(CASES["plain-cancel-then-stop"]), seed=7)
    statuses = [e["data"]["status"] for e in r.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert statuses[2:] == ["ready", "standby", "ready", "waiting", "pending", "concluded",
                            "null"]
    assert r.summary["jobs"]["j0"]["outcome"] == "completed"

    # ties: a burst stops before an entry due at the same nanosecond as
    # SimPy's head when SimPy orders the head first (the guest's events kept
    # in SimPy's queue: run by the kernel, they meet the copies in its heap)
    monkeypatch.setattr(burst_kernel, "GUEST", False)
    ties = []
    real = burst.copy

    def watching(job, *args, **kwargs):
        out = real(job, *args, **kwargs)
        entries = job._agenda.heap
        if out == burst.WAITING and entries[0][0] == job.env.peek():
            ties.append(job.env.now)
        return out
    monkeypatch.setattr(burst, "copy", watching)
    blocksim.run(blocksim.load_scenario(CASES["overlaps-and-ties"]), seed=7)
    assert ties


LIBRARY = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("mirror-*.toml"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_every_library_mirror_is_the_same_with_and_without_copy_bursts(path, monkeypatch):
    scenario = blocksim.load_scenario(path)
    exact = outcome(Simulation(scenario, shortcuts=False))
    assert outcome(Simulation(scenario)) == exact
    with monkeypatch.context() as m:
        _without_bursts(m)
        assert outcome(Simulation(scenario)) == exact


def test_failures_inside_bursts_go_through_the_error_policy(monkeypatch):
    """A failed read or write met in a burst calls the operation's failure
    callback (re-dirty, policy engine) from inside the burst."""
    from blocksim.jobs import mirror
    inside = {"burst": False, "failed": []}
    real = burst.copy

    def flagged(job, *args, **kwargs):
        inside["burst"] = True
        try:
            return real(job, *args, **kwargs)
        finally:
            inside["burst"] = False

    for name in ("_read_failed", "_write_failed"):
        def failed(op, err, _real=getattr(mirror.CopyOperation, name), _name=name):
            inside["failed"].append((_name, inside["burst"]))
            return _real(op, err)
        monkeypatch.setattr(mirror.CopyOperation, name, failed)
    monkeypatch.setattr(burst, "copy", flagged)
    for case in ("target-errors-stop-resume", "flakey-source-ignore"):
        blocksim.run(blocksim.load_scenario(CASES[case]), seed=7)
    assert ("_write_failed", True) in inside["failed"]
    assert ("_read_failed", True) in inside["failed"]
    assert sum(in_burst for _name, in_burst in inside["failed"]) > 100


class Boom(Exception):
    pass


@pytest.mark.parametrize("shortcuts", [False, True])
def test_an_exception_in_a_failure_callback_ends_the_run_at_once(shortcuts, monkeypatch):
    """As from a SimPy event's callback (the event cap is one): before
    anything else due at the same instant, here an event the callback
    itself triggers."""
    from blocksim.jobs import mirror
    log = []

    def boom(op, err):
        log.append(("failed", op.job.env.now))
        done = op.job.env.event()
        done.callbacks.append(lambda _event: log.append("later, same instant"))
        done.succeed()
        raise Boom()

    monkeypatch.setattr(mirror.CopyOperation, "_write_failed", boom)
    source = _mirror("burst-boom", {}, {}, {}, duration="1s",
                     faults=[{"image": "tgt", "operation": "write", "offset": "30MiB",
                              "length": "64KiB", "count": 1}])
    with pytest.raises(Boom):
        Simulation(blocksim.load_scenario(source), seed=1, shortcuts=shortcuts).run()
    assert len(log) == 1 and log[0][0] == "failed"


def test_simpys_next_event_sets_which_entries_may_run_first():
    """An entry due at the same time as SimPy's head runs first only if
    SimPy would order it first: the head is NORMAL and older."""
    from simpy.events import NORMAL, URGENT
    assert burst._head([]) == (float("inf"), -1)
    assert burst._head([(50, NORMAL, 7, None)]) == (50, 7)
    assert burst._head([(50, URGENT, 7, None)]) == (50, -1)


def test_a_run_in_steps_for_a_progress_bar_is_the_same():
    """``run(progress=...)`` stops SimPy a hundred times (an URGENT event at
    each step's end): entries due then must wait for it, markers and turns
    must survive the stops."""
    scenario = blocksim.load_scenario(CASES["rate-limited-then-complete"])
    steps = []
    stepped = outcome(_Stepped(scenario, seed=7, progress=steps.append))
    assert stepped == outcome(Simulation(scenario, seed=7))
    assert len(steps) == 100


class _Stepped(Simulation):
    def __init__(self, scenario, seed, progress):
        super().__init__(scenario, seed=seed)
        self._progress = progress

    def run(self, progress=None):
        return super().run(progress=self._progress)


def test_active_commits_reach_what_they_are_built_for():
    r = blocksim.run(blocksim.load_scenario(CASES["active-commit-complete"]), seed=7)
    job = r.summary["jobs"]["j0"]
    assert (job["type"], job["outcome"], job["integrity"], job["pivoted"]) == (
        "commit", "completed", "identical", True)
    assert r.summary["drives"]["d0"]["node"] == "base"
    r = blocksim.run(blocksim.load_scenario(CASES["active-commit-thin-base"]), seed=7)
    job = r.summary["jobs"]["j0"]
    # QEMU 7.2's mirror_iteration issues a whole iteration's copies (1 MiB
    # each, 16 in flight) before it waits: those past the base's capacity
    # fail together
    assert job["errors_by_action"] == {"ignore": 0, "report": 0, "stop": 12}
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", False)
    assert r.summary["drives"]["d0"]["node"] == "top"


def test_an_active_commit_runs_compiled(monkeypatch):
    """The compiled loop runs an active commit (a source with a backing
    file: Kernel.applies): its copies and the guest's requests among them;
    on a page where the top holds zeros it hands the read back (the chain
    answers there, not the top), on the others it reads."""
    kernel_reads = {}
    for name in ("active-commit-full-top", "active-commit-zeros-in-top"):
        reads = []
        real = burst_kernel.Kernel.copy

        def counting(kernel, *args, **kwargs):
            before = kernel.job.source.reads
            out = real(kernel, *args, **kwargs)
            reads.append(kernel.job.source.reads - before)
            return out
        with monkeypatch.context() as m:
            m.setattr(burst_kernel.Kernel, "copy", counting)
            sim = Simulation(blocksim.load_scenario(CASES[name]), seed=7)
            result = sim.run()
        assert result.summary["jobs"]["j0"]["type"] == "commit"
        assert sim.workloads["guest"].in_kernel > 0, name
        kernel_reads[name] = (sum(reads), sim.devices["top"].reads)
    done, total = kernel_reads["active-commit-full-top"]
    assert done > 0.9 * total
    done, total = kernel_reads["active-commit-zeros-in-top"]
    # (the first page, a third of the disk, is read by the Python loop: the
    # initial pass's copies of it and the guest's writes there, a third too)
    assert 0.05 * total < done < 2 / 3 * total


def test_a_write_zeroes_fault_keeps_the_zeroes_out_of_bursts():
    # a mirror onto a target that cannot unmap writes zeroes where the source
    # holds nothing; a blkdebug write-zeroes rule fails one of them, so a
    # burst (which runs only where no rule can match) must leave it alone
    scenario = blocksim.load_scenario(_mirror(
        "burst-zeroes-fault", {"data": [{"offset": "0", "length": "8MiB"}]}, {},
        {"on-target-error": "report"},
        faults=[{"image": "tgt", "operation": "write-zeroes", "offset": "32MiB",
                 "length": "512"}]))
    result = Simulation(scenario, seed=7, shortcuts=False).run()
    errors = [e["data"] for e in result.events if e["event"] == "BLOCK_JOB_ERROR"]
    assert errors == [{"device": "j0", "operation": "write", "action": "report"}]
    exact = outcome(Simulation(scenario, seed=7, shortcuts=False))
    assert outcome(Simulation(scenario, seed=7)) == exact
