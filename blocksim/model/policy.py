"""The error-policy engine: one place decides what an I/O error does.

Every caller, a guest drive (``rerror``/``werror``) or a block job
(``on-error``, ``on-source-error``, ``on-target-error``), hands its failed
request here.  The engine

1. resolves the configured policy to an *action* (``report``, ``ignore`` or
   ``stop``): ``enospc`` stops on ENOSPC and reports anything else; for jobs
   ``auto`` resolves like ``enospc``; for a drive ``auto`` means "the drive's
   default" (rerror=report, werror=enospc), blocksim having one level only;
2. emits ``BLOCK_IO_ERROR`` or ``BLOCK_JOB_ERROR`` carrying the resolved
   action, *before* the action is carried out, one event per failed request
   (a drive's ``nospace`` only when its io-status is enabled:
   :func:`iostatus_enabled`);
3. carries out ``stop``: for a drive, io-status then VM stop (run state
   ``io-error``; today the STOP event comes once the other completions of
   that moment are done: :meth:`VM.stop <blocksim.model.vm.VM.stop>`); for a job, pause the job (a user-visible pause, as QEMU's
   ``job_user_pause``) and set the job's io-status (in the ``rfc-2012``
   profile only when the failing node is the job's own device, else that
   node's: :meth:`ErrorPolicyEngine.job_error`).  The VM keeps running.

It also holds the start-time rules on a job's policies
(:meth:`ErrorPolicyEngine.job_start_refusal`).

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


def iostatus_enabled(rerror: str, werror: str) -> bool:
    """Whether a drive publishes an io-status (block-backend.c:
    blk_iostatus_is_enabled): only when an error can stop the VM, werror
    ``stop`` or ``enospc`` (``auto``: the default, enospc), or rerror
    ``stop``.  Otherwise query-block shows none and BLOCK_IO_ERROR carries
    no ``nospace`` (send_qmp_error_event), as a QEMU 7.2 VM shows with
    werror=report or ignore; the same since QEMU 1.0."""
    werror = DRIVE_DEFAULTS["werror"] if werror == "auto" else werror
    return werror in (STOP, "enospc") or rerror == STOP


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
        #: ENOSPC errors decided here, by drive or job name (the summary's
        #: ``enospc`` figures: how often the guest or a job ran out of space)
        self.enospc_guest: dict[str, int] = {}
        self.enospc_jobs: dict[str, int] = {}

    def guest_error(self, drive, is_read: bool, err: int) -> str:
        """A guest request on ``drive`` failed: decide, announce, maybe stop."""
        key = "rerror" if is_read else "werror"
        policy = drive.rerror if is_read else drive.werror
        action = resolve(policy, err, default=DRIVE_DEFAULTS[key])
        drive.errors_by_action[action] += 1
        if err == _errno.ENOSPC:
            self.enospc_guest[drive.name] = self.enospc_guest.get(drive.name, 0) + 1
        data = {"device": drive.name}
        if self.profile.io_error_details:
            data["node-name"] = drive.node.name
        data["operation"] = "read" if is_read else "write"
        data["action"] = action
        if self.profile.io_error_details:
            # block-backend.c:send_qmp_error_event: nospace only when the
            # drive's io-status is enabled (blk_iostatus_is_enabled)
            if iostatus_enabled(drive.rerror, drive.werror):
                data["nospace"] = err == _errno.ENOSPC
            data["reason"] = strerror(err)
        if action == STOP:
            drive.iostatus.set_err(err)
        self.log.emit("BLOCK_IO_ERROR", data)
        if action == STOP:
            self.vm.stop("io-error", announce_later=self.profile.io_error_stop_requested)
        return action

    def job_error(self, job, policy: str, is_read: bool, err: int) -> str:
        """A request of ``job`` failed: decide, announce, maybe pause the job.

        Today (``blockjob.c:block_job_error_action``) a ``stop`` sets the
        job's io-status whatever node failed.  The 2012 note's
        ``block_job_error_action(job, bs, ...)`` is told the failing node
        (:meth:`job.error_node <blocksim.jobs.base.BlockJob.error_node>`) and
        sets the job's io-status only when ``bs == job->bs``; otherwise
        ``bdrv_iostatus_set_err(bs)``, the device rule (first error sticks):
        that of the drive whose node it is, else the node's own."""
        action = resolve(policy, err)
        job.errors_by_action[action] += 1
        if err == _errno.ENOSPC:
            self.enospc_jobs[job.id] = self.enospc_jobs.get(job.id, 0) + 1
        self.log.emit("BLOCK_JOB_ERROR", {
            "device": job_device(self.profile, job),
            "operation": "read" if is_read else "write",
            "action": action,
        })
        if action == STOP:
            node = job.error_node(is_read) if self.profile.job_iostatus_own_device_only else None
            if node is not None and node is not job.drive.node:
                self._node_iostatus(node).set_err(err)
            else:
                job.iostatus.set_err(err)
            job.pause_for_error()
        elif action == REPORT:
            job.reported = True
        return action

    def _node_iostatus(self, node):
        """The io-status ``bdrv_iostatus_set_err(bs)`` set in 2012: a drive's
        node was the drive (its BlockDriverState had the device name)."""
        for drive in self.vm.drives.values():
            if drive.node is node:
                return drive.iostatus
        return node.iostatus

    def job_arguments_refusal(self, job) -> str | None:
        """Why the profile refuses the arguments of ``job``'s start command
        (QMP's error text), or None; asked before anything else, as QMP
        parses a command before running it.

        2012 only: the note's ``switch (on_err)`` has no ``auto``
        (``job_policy_auto``; the 2012 QAPI enum parser, ``input_type_enum``,
        answers "Invalid parameter '<name>'"), and ``auto-finalize`` /
        ``auto-dismiss`` did not exist (``job_api_2_12``; ``qmp_check_client_args``
        gives the same answer for an unknown argument).  A job whose option is
        the default (true) was started without it."""
        if not self.profile.job_policy_auto:
            for param, policy in job.error_policies().items():
                if policy == "auto":
                    return f"Invalid parameter '{param}'"
        if not self.profile.job_api_2_12:
            for param, value in (("auto-finalize", job.auto_finalize),
                                 ("auto-dismiss", job.auto_dismiss)):
                if not value:
                    return f"Invalid parameter '{param}'"
        return None

    def job_start_refusal(self, job) -> str | None:
        """Why the profile refuses to start ``job`` once its nodes are free, or None.

        2012 only (``job_stop_needs_drive_stop``): a ``stop`` or ``enospc``
        policy needs a drive with rerror=stop and werror=stop|enospc, in the
        note's words.  (The merged code, ``stream_start`` and ``mirror_start``
        of 1.3, asked ``bdrv_iostatus_is_enabled`` for the source policy only.)"""
        if self.profile.job_stop_needs_drive_stop:
            drive = job.drive
            drive_can_stop = drive.rerror == "stop" and drive.werror in ("stop", "enospc")
            for param, policy in job.error_policies().items():
                if policy in ("stop", "enospc") and not drive_can_stop:
                    return f"Invalid parameter '{param}'"
        return None
