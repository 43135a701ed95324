"""The error-policy engine: one place decides what an I/O error does.

Every caller, a guest drive (``rerror``/``werror``) or a block job
(``on-error``, ``on-source-error``, ``on-target-error``), hands its failed
request here.  The engine

1. resolves the configured policy to an *action* (``report``, ``ignore`` or
   ``stop``): ``enospc`` stops on ENOSPC and reports anything else; for jobs
   ``auto`` resolves like ``enospc``; for a drive ``auto`` means "the drive's
   default" (rerror=report, werror=enospc), blocksim having one level only;
2. emits ``BLOCK_IO_ERROR`` or ``BLOCK_JOB_ERROR`` carrying the resolved
   action, *before* the action is carried out, one event per failed request;
3. carries out ``stop``: for a drive, io-status then VM stop (run state
   ``io-error``); for a job, pause the job (a user-visible pause, as QEMU's
   ``job_user_pause``) and set the job's io-status.  The VM keeps running.

``report`` and ``ignore`` are carried out by the caller, which knows what
"complete with an error" or "skip" means for it.
"""

from __future__ import annotations

import errno as _errno
import os

REPORT, IGNORE, STOP = "report", "ignore", "stop"
POLICIES = ("report", "ignore", "stop", "enospc", "auto")
DRIVE_DEFAULTS = {"rerror": "report", "werror": "enospc"}


def resolve(policy: str, err: int, *, default: str = "enospc") -> str:
    """The action a policy takes for an errno.  ``auto`` becomes ``default``."""
    if policy == "auto":
        policy = default
    if policy == "enospc":
        return STOP if err == _errno.ENOSPC else REPORT
    if policy in (REPORT, IGNORE, STOP):
        return policy
    raise ValueError(f"unknown error policy {policy!r}")


def strerror(err: int) -> str:
    """The error string QEMU puts in events (glibc's strerror)."""
    return os.strerror(err)


def job_device(profile, job) -> str:
    """The ``device`` of a job's events: the job id (today) or its drive (2012)."""
    return job.id if profile.job_error_names_job else job.drive.name


class ErrorPolicyEngine:
    def __init__(self, log, profile, vm=None):
        self.log = log
        self.profile = profile
        self.vm = vm

    def guest_error(self, drive, is_read: bool, err: int) -> str:
        """A guest request on ``drive`` failed: decide, announce, maybe stop."""
        key = "rerror" if is_read else "werror"
        policy = drive.rerror if is_read else drive.werror
        action = resolve(policy, err, default=DRIVE_DEFAULTS[key])
        drive.errors_by_action[action] += 1
        data = {"device": drive.name}
        if self.profile.io_error_details:
            data["node-name"] = drive.node.name
        data["operation"] = "read" if is_read else "write"
        data["action"] = action
        if self.profile.io_error_details:
            data["nospace"] = err == _errno.ENOSPC
            data["reason"] = strerror(err)
        if action == STOP:
            drive.iostatus.set_err(err)
        self.log.emit("BLOCK_IO_ERROR", data)
        if action == STOP:
            self.vm.stop("io-error")
        return action

    def job_error(self, job, policy: str, is_read: bool, err: int) -> str:
        """A request of ``job`` failed: decide, announce, maybe pause the job."""
        action = resolve(policy, err)
        job.errors_by_action[action] += 1
        self.log.emit("BLOCK_JOB_ERROR", {
            "device": job_device(self.profile, job),
            "operation": "read" if is_read else "write",
            "action": action,
        })
        if action == STOP:
            job.iostatus.set_err(err)
            job.pause_for_error()
        elif action == REPORT:
            job.reported = True
        return action
