"""End-of-run invariants: each violation, constructed honestly, is reported by
name in ``summary["invariants"]["violations"]``; normal runs have none."""

import pytest

import blocksim
from blocksim import invariants
from blocksim.invariants import CHECKED, guest_write_audit
from blocksim.iostatus import IoStatus
from blocksim.mirror import MirrorJob
from blocksim.stream import StreamJob

KiB = 1024
MS = 1_000_000

GUEST = {
    "duration": "10ms",
    "images": {"disk": {"size": "1MiB"}},
    "drives": {"d0": {"image": "disk", "werror": "stop"}},
    "faults": [{"image": "disk", "operation": "write", "count": 2}],
    "workloads": {"w": {"drive": "d0", "rw": "randwrite", "iodepth": 2}},
    "actions": [{"on": "STOP", "delay": "1ms", "command": "cont", "repeat": True}],
}

MIRROR = {
    "duration": "50ms",
    "images": {"src": {"size": "1MiB", "data": [{"offset": 0, "length": "512KiB"}]},
               "dst": {"size": "1MiB"}},
    "drives": {"d0": {"image": "src"}},
    "workloads": {"w": {"drive": "d0", "rw": "randwrite", "rate-iops": 2000}},
    "jobs": {"m": {"type": "mirror", "device": "d0", "target": "dst"}},
    "actions": [{"on": "BLOCK_JOB_READY", "delay": "5ms", "command": "block-job-complete",
                 "arguments": {"device": "m"}}],
}

STREAM = {
    "duration": "50ms",
    "images": {"base": {"size": "2MiB", "data": "full"},
               "top": {"size": "2MiB", "backing": "base"}},
    "drives": {"d0": {"image": "top"}},
    "workloads": {"w": {"drive": "d0", "rw": "randrw", "rate-iops": 2000}},
    "jobs": {"s": {"type": "stream", "device": "d0"}},
}


def build(sc, **kw):
    return blocksim.Simulation(blocksim.load_scenario(sc), **kw)


def at(sim, t, fn):
    """Call ``fn(sim)`` at simulated time ``t`` during the run."""
    def proc():
        yield sim.env.timeout(t)
        fn(sim)
    sim.env.process(proc())


def names(violations):
    return [v["invariant"] for v in violations]


@pytest.mark.parametrize("sc", [GUEST, MIRROR, STREAM], ids=["guest", "mirror", "stream"])
def test_normal_runs_have_no_violations(sc):
    r = blocksim.run(sc)
    assert r.summary["invariants"] == {"checked": list(CHECKED), "violations": []}
    assert r.ok


def test_normal_runs_really_exercise_what_is_checked():
    g = blocksim.run(GUEST)
    # Both requests in flight fail: one STOP, two errors, one RESUME.
    assert g.event_names() == ["BLOCK_IO_ERROR", "STOP", "BLOCK_IO_ERROR", "RESUME"]
    assert g.summary["drives"]["d0"]["writes"] > 50
    m = blocksim.run(MIRROR)
    assert m.summary["jobs"]["m"]["outcome"] == "completed"
    assert m.summary["jobs"]["m"]["integrity"] == "identical"
    assert m.summary["jobs"]["m"]["pivoted"] is True
    s = blocksim.run(STREAM)
    assert s.summary["jobs"]["s"]["outcome"] == "completed"
    assert s.summary["jobs"]["s"]["integrity"] == "identical"


def test_checked_invariants():
    assert CHECKED == ("legal-job-transitions", "iostatus-sticky", "guest-writes-durable",
                       "mirror-target-identical", "stream-independent")


# -- guest-writes-durable ---------------------------------------------------------------

def test_corrupted_disk_after_the_run_is_caught_by_the_audit():
    sim = build(GUEST)
    r = sim.run()
    assert r.violations == []
    drive = sim.drives["d0"]
    expected = drive.expected_content()
    # Pick an acknowledged write and overwrite its bytes behind the guest's back.
    a, b, gen = next((a, b, g) for a, b, g in expected.runs() if g)
    drive.node.content.set(a, a + 512, 10**9)
    audit = guest_write_audit(drive)
    assert audit == {"lost_bytes": 0, "lost_writes_visible": 0, "corrupt_bytes": 512,
                     "first_corrupt_offset": a}
    violations = invariants.check(sim, {"d0": audit})
    assert names(violations) == ["guest-writes-durable"]
    assert violations[0]["subject"] == "d0"
    assert f"first at offset {a}" in violations[0]["detail"]
    assert "512 acknowledged bytes" in violations[0]["detail"]


def test_corruption_during_the_run_is_in_the_summary():
    def corrupt(s):
        # Forget an acknowledged write: the node reads zeros where the guest wrote.
        d = s.drives["d0"]
        a, b, _g = next(run for run in d.expected_content().runs() if run[2])
        d.node.content.set(a, b, 0)

    # Eight writes, all done long before the corruption at 5 ms.
    sim = build({**GUEST, "faults": [], "actions": [],
                 "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 8}}})
    at(sim, 5 * MS, corrupt)
    r = sim.run()
    assert names(r.violations) == ["guest-writes-durable"]
    assert r.summary["drives"]["d0"]["corrupt_bytes"] == 4 * KiB
    assert not r.ok


def test_recorded_losses_are_not_corruption():
    sim = build({**GUEST, "drives": {"d0": {"image": "disk", "werror": "ignore"}},
                 "actions": [],
                 "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 8}}})
    r = sim.run()
    d = r.summary["drives"]["d0"]
    assert (d["writes_lost"], d["lost_bytes"], d["corrupt_bytes"]) == (2, 8 * KiB, 0)
    assert r.violations == []
    # Forgetting the record turns the same state into a violation.
    drive = sim.drives["d0"]
    drive.lost.clear()
    audit = guest_write_audit(drive)
    assert (audit["lost_bytes"], audit["corrupt_bytes"], audit["first_corrupt_offset"]) == \
        (0, 8 * KiB, 0)
    assert names(invariants.check(sim, {"d0": audit})) == ["guest-writes-durable"]


# -- iostatus-sticky ----------------------------------------------------------------------

def test_iostatus_change_without_reset_is_a_violation():
    sim = build(GUEST)

    def overwrite(s):
        st = s.drives["d0"].iostatus
        st._change("nospace", "set")      # ok -> nospace: legal
        st._change("failed", "set")       # nospace -> failed without a reset: illegal

    at(sim, 5 * MS, overwrite)
    r = sim.run()
    assert names(r.violations) == ["iostatus-sticky"]
    v = r.violations[0]
    assert v["subject"] == "drive d0"
    assert v["time"] == 0.005
    assert v["detail"] == "io-status changed from nospace to failed without a reset"


def test_iostatus_set_err_never_violates_stickiness():
    st = IoStatus(lambda: 0)
    st.set_err(28)
    st.set_err(5)
    assert st.value == "nospace"
    st.reset()
    st.set_err(5)
    st.set_err(28)
    assert st.value == "failed"
    assert [(o, n, w) for _t, o, n, w in st.history] == [
        ("ok", "nospace", "set"), ("nospace", "ok", "reset"), ("ok", "failed", "set")]


def test_ranked_iostatus_may_only_move_up():
    sim = build(MIRROR, profile="rfc-2012")

    def mess(s):
        st = s.jobs["m"].iostatus
        assert st.ranked
        st.set_err(28)                   # ok -> nospace
        st.set_err(5)                    # nospace -> failed: legal when ranked
        st._change("nospace", "set")     # failed -> nospace: down, illegal

    at(sim, 1 * MS, mess)
    r = sim.run()
    assert names(r.violations) == ["iostatus-sticky"]
    assert r.violations[0]["subject"] == "job m"
    assert r.violations[0]["detail"] == "io-status changed from failed to nospace without a reset"


# -- legal-job-transitions ----------------------------------------------------------------

def test_illegal_job_transition_is_a_violation():
    sim = build(MIRROR)
    at(sim, 40 * MS, lambda s: s.jobs["m"]._transition("running"))    # null -> running
    r = sim.run()
    assert r.summary["jobs"]["m"]["final_status"] == "running"
    assert names(r.violations) == ["legal-job-transitions"]
    assert r.violations[0]["subject"] == "m"
    assert r.violations[0]["detail"] == "null -> running"
    assert r.violations[0]["time"] == 0.04


def test_illegal_transition_mid_job():
    sim = build(STREAM)
    seen = []

    def skip(s):
        job = s.jobs["s"]
        seen.append(job.status)
        job._transition("ready")          # running -> ready is legal, but...
        job._transition("running")        # ready -> running is not

    at(sim, 1 * MS, skip)
    r = sim.run()
    assert seen == ["running"]
    assert [v["detail"] for v in r.violations] == ["ready -> running"]


def test_legal_transitions_pass():
    sim = build(MIRROR)
    r = sim.run()
    job = sim.jobs["m"]
    assert [new for _t, _old, new in job.transitions] == [
        "created", "running", "ready", "waiting", "pending", "concluded", "null"]
    assert job.illegal_transitions == []
    assert r.violations == []


# -- mirror-target-identical and stream-independent ------------------------------------

def test_mirror_target_made_to_differ_before_prepare(monkeypatch):
    original = MirrorJob.prepare

    def corrupt_then_prepare(self):
        self.target.content.set(4 * KiB, 8 * KiB, 10**9)
        original(self)

    monkeypatch.setattr(MirrorJob, "prepare", corrupt_then_prepare)
    r = blocksim.run(MIRROR)
    job = r.summary["jobs"]["m"]
    assert job["outcome"] == "completed"
    assert job["integrity"] == "differs"
    assert job["integrity_detail"] == "target differs from source in 4096 bytes, first at offset 4096"
    assert names(r.violations) == ["mirror-target-identical"]
    assert r.violations[0]["subject"] == "m"
    assert r.violations[0]["detail"] == job["integrity_detail"]
    assert r.violations[0]["time"] == job["finished_at"]


def test_stream_that_copies_nothing_is_not_independent(monkeypatch):
    monkeypatch.setattr(StreamJob, "_needs_copy", lambda self, start, end: False)
    r = blocksim.run({**STREAM, "workloads": {}})
    job = r.summary["jobs"]["s"]
    assert job["outcome"] == "completed"
    assert job["integrity"] == "differs"
    assert names(r.violations) == ["stream-independent"]
    assert r.violations[0]["detail"] == ("after dropping the backing file the disk differs "
                                         "at offset 0")


def test_integrity_is_not_a_violation_for_jobs_that_did_not_complete():
    # A cancelled mirror's target is not expected to match.
    r = blocksim.run({**MIRROR, "actions": [
        {"on": "BLOCK_JOB_READY", "command": "block-job-cancel",
         "arguments": {"device": "m", "force": True}}]})
    assert r.summary["jobs"]["m"]["outcome"] == "cancelled"
    assert r.violations == []
