"""The error-policy engine: how a configured policy resolves to an action.

SEMANTICS.md: ``enospc`` stops on ENOSPC and reports anything else; for jobs
``auto`` resolves like ``enospc``; for a guest drive ``auto`` inherits the
drive's default (rerror=report, werror=enospc).  Events carry the resolved
action only, never ``enospc`` or ``auto``.
"""

import errno
from types import SimpleNamespace

import pytest
import simpy

from blocksim.record.eventlog import EventLog
from blocksim.model.iostatus import IoStatus
from blocksim.model.policy import DRIVE_DEFAULTS, IGNORE, REPORT, STOP, ErrorPolicyEngine, resolve
from blocksim.model.profile import QEMU, RFC_2012
from blocksim.model.vm import VM

ENOSPC, EIO = errno.ENOSPC, errno.EIO

# (policy, errno) -> action, for block jobs (auto behaves as enospc).
JOB_TABLE = {
    ("report", ENOSPC): REPORT, ("report", EIO): REPORT,
    ("ignore", ENOSPC): IGNORE, ("ignore", EIO): IGNORE,
    ("stop", ENOSPC): STOP, ("stop", EIO): STOP,
    ("enospc", ENOSPC): STOP, ("enospc", EIO): REPORT,
    ("auto", ENOSPC): STOP, ("auto", EIO): REPORT,
}


@pytest.mark.parametrize("policy, err", sorted(JOB_TABLE))
def test_resolve_for_jobs(policy, err):
    assert resolve(policy, err) == JOB_TABLE[policy, err]


@pytest.mark.parametrize("policy", ["report", "ignore", "stop", "enospc"])
@pytest.mark.parametrize("err", [ENOSPC, EIO])
@pytest.mark.parametrize("key", ["rerror", "werror"])
def test_resolve_for_drives_explicit_policies(policy, err, key):
    # An explicit policy means the same for a drive as for a job.
    assert resolve(policy, err, default=DRIVE_DEFAULTS[key]) == JOB_TABLE[policy, err]


def test_drive_defaults_are_qemus():
    assert DRIVE_DEFAULTS == {"rerror": "report", "werror": "enospc"}


@pytest.mark.parametrize("err, rerror_action, werror_action", [
    (ENOSPC, REPORT, STOP),
    (EIO, REPORT, REPORT),
])
def test_auto_for_drives_inherits_the_drive_default(err, rerror_action, werror_action):
    assert resolve("auto", err, default=DRIVE_DEFAULTS["rerror"]) == rerror_action
    assert resolve("auto", err, default=DRIVE_DEFAULTS["werror"]) == werror_action


def test_other_errnos_are_not_enospc():
    for err in (errno.EPERM, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.ETIMEDOUT):
        assert resolve("enospc", err) == REPORT
        assert resolve("auto", err) == REPORT


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="unknown error policy"):
        resolve("retry", EIO)


# -- the engine: events and what it carries out -------------------------------------

class _Env:
    """An engine wired to a real event log and VM, with stand-in drives/jobs."""

    def __init__(self, profile=QEMU):
        self.env = simpy.Environment()
        self.log = EventLog(self.env)
        self.vm = VM(self.env, self.log)
        self.engine = ErrorPolicyEngine(self.log, profile, self.vm)

    def drive(self, rerror="report", werror="enospc"):
        return SimpleNamespace(name="d0", node=SimpleNamespace(name="disk0"),
                               rerror=rerror, werror=werror,
                               iostatus=IoStatus(lambda: self.env.now),
                               errors_by_action={"ignore": 0, "report": 0, "stop": 0})

    def job(self):
        paused = []
        node = SimpleNamespace(name="disk0")
        job = SimpleNamespace(id="job0", drive=SimpleNamespace(name="d0", node=node),
                              iostatus=IoStatus(lambda: self.env.now), reported=False,
                              errors_by_action={"ignore": 0, "report": 0, "stop": 0},
                              paused=paused)
        job.pause_for_error = lambda: paused.append(True)
        job.error_node = lambda is_read: node        # the job's own device
        return job


@pytest.mark.parametrize("policy", ["report", "ignore", "stop", "enospc", "auto"])
@pytest.mark.parametrize("err", [ENOSPC, EIO])
@pytest.mark.parametrize("is_read", [True, False])
def test_guest_error_event_carries_the_resolved_action(policy, err, is_read):
    e = _Env()
    d = e.drive(rerror=policy, werror=policy)
    action = e.engine.guest_error(d, is_read, err)
    e.env.run()                 # (a stop is announced once this moment is over)
    default = DRIVE_DEFAULTS["rerror" if is_read else "werror"]
    assert action == resolve(policy, err, default=default)
    assert action in (REPORT, IGNORE, STOP)
    first = e.log.events[0]
    assert first["event"] == "BLOCK_IO_ERROR"
    expected = {
        "device": "d0", "node-name": "disk0",
        "operation": "read" if is_read else "write",
        "action": action, "nospace": err == ENOSPC,
        "reason": "No space left on device" if err == ENOSPC else "Input/output error",
    }
    if policy in ("report", "ignore"):
        del expected["nospace"]     # no io-status: send_qmp_error_event leaves it out
    assert first["data"] == expected
    assert d.errors_by_action[action] == 1
    if action == STOP:
        assert [ev["event"] for ev in e.log.events] == ["BLOCK_IO_ERROR", "STOP"]
        assert e.vm.state == "io-error"
        assert d.iostatus.value == ("nospace" if err == ENOSPC else "failed")
    else:
        assert [ev["event"] for ev in e.log.events] == ["BLOCK_IO_ERROR"]
        assert e.vm.state == "running"
        assert d.iostatus.value == "ok"


def test_guest_error_rfc_2012_event_has_no_details():
    e = _Env(RFC_2012)
    e.engine.guest_error(e.drive(werror="stop"), False, ENOSPC)
    assert e.log.events[0]["data"] == {"device": "d0", "operation": "write", "action": "stop"}


@pytest.mark.parametrize("policy", ["report", "ignore", "stop", "enospc", "auto"])
@pytest.mark.parametrize("err", [ENOSPC, EIO])
@pytest.mark.parametrize("is_read", [True, False])
def test_job_error_event_and_effect(policy, err, is_read):
    e = _Env()
    job = e.job()
    action = e.engine.job_error(job, policy, is_read, err)
    assert action == JOB_TABLE[policy, err]
    assert [ev["event"] for ev in e.log.events] == ["BLOCK_JOB_ERROR"]
    assert e.log.events[0]["data"] == {"device": "job0",
                                       "operation": "read" if is_read else "write",
                                       "action": action}
    assert job.errors_by_action[action] == 1
    # A job's stop never stops the VM.
    assert e.vm.state == "running"
    if action == STOP:
        assert job.paused == [True]
        assert job.iostatus.value == ("nospace" if err == ENOSPC else "failed")
    else:
        assert job.paused == []
        assert job.iostatus.value == "ok"
    assert job.reported is (action == REPORT)


def test_job_error_rfc_2012_names_the_drive():
    e = _Env(RFC_2012)
    e.engine.job_error(e.job(), "enospc", False, ENOSPC)
    assert e.log.events[0]["data"] == {"device": "d0", "operation": "write", "action": "stop"}


@pytest.mark.parametrize("profile", [QEMU, RFC_2012])
def test_a_stop_on_another_node_sets_that_nodes_iostatus_in_2012_only(profile):
    # The note's block_job_error_action(job, bs, ...): the job's io-status
    # only when bs == job->bs, else bdrv_iostatus_set_err(bs), whose first
    # error sticks.  Today's block_job_error_action has no bs: always the job's.
    e = _Env(profile)
    job = e.job()
    target = SimpleNamespace(name="copy", iostatus=IoStatus(lambda: e.env.now))
    job.error_node = lambda is_read: job.drive.node if is_read else target
    e.engine.job_error(job, "stop", False, ENOSPC)          # the target
    e.engine.job_error(job, "stop", False, EIO)             # the target again
    if profile is RFC_2012:
        assert (job.iostatus.value, target.iostatus.value) == ("ok", "nospace")
    else:
        assert (job.iostatus.value, target.iostatus.value) == ("nospace", "ok")
    e.engine.job_error(job, "stop", True, EIO)              # the job's own device
    assert job.iostatus.value == ("failed" if profile is RFC_2012 else "nospace")
    assert job.paused == [True] * 3


def test_a_2012_stop_on_another_drives_node_sets_that_drives_iostatus():
    e = _Env(RFC_2012)
    job = e.job()
    other = e.drive()
    e.vm.drives = {"d1": other}
    job.error_node = lambda is_read: other.node
    e.engine.job_error(job, "stop", False, EIO)
    assert (job.iostatus.value, other.iostatus.value) == ("ok", "failed")


def test_one_event_per_failed_request_and_iostatus_is_sticky():
    e = _Env()
    d = e.drive(rerror="stop", werror="stop")
    e.vm.drives = {"d0": d}
    e.engine.guest_error(d, False, ENOSPC)
    e.engine.guest_error(d, True, EIO)
    e.engine.guest_error(d, False, EIO)
    e.env.run()
    # (failing at the same moment: the STOP comes once they are all told)
    assert [ev["event"] for ev in e.log.events] == [
        "BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP"]
    # The first error since the last reset sticks.
    assert d.iostatus.value == "nospace"
    assert d.errors_by_action == {"ignore": 0, "report": 0, "stop": 3}
    e.vm.cont()
    assert d.iostatus.value == "ok"
    assert [ev["event"] for ev in e.log.events][-1] == "RESUME"
