"""Semantics profiles: which QEMU the simulation behaves like.

blocksim models today's QEMU (7.2 and later) by default.  The 2012 design note
that introduced block-job error actions (``block-job-error-rfc-2012.txt``)
differs in a few observable ways; the ``rfc-2012`` profile reproduces them so
the two can be compared on the same failure.  Every difference is a flag here,
and model code asks the flag rather than the profile's name, so a reader can
find each divergence in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BlocksimError


@dataclass(frozen=True)
class Profile:
    name: str
    #: Job life cycle with JOB_STATUS_CHANGE events (today).  Without it a job
    #: is only running, paused or finished, as in 2012.
    job_status_events: bool
    #: A ``report`` error ends the job with BLOCK_JOB_COMPLETED carrying an
    #: ``error`` (today) rather than BLOCK_JOB_CANCELLED (2012).
    report_completes_with_error: bool
    #: BLOCK_JOB_ERROR's ``device`` is the job id (today) or the drive (2012).
    job_error_names_job: bool
    #: Job io-status keeps the first error (today) or ranks
    #: ok < nospace < failed and only moves up (2012).
    job_iostatus_ranked: bool
    #: ``stop``/``enospc`` job policies need a drive with rerror=stop and
    #: werror=stop|enospc, else starting the job is refused (2012 only).
    job_stop_needs_drive_stop: bool
    #: BLOCK_IO_ERROR carries node-name, nospace and reason (today) or only
    #: device, operation and action (2012).
    io_error_details: bool
    #: Refuse a plain cancel of a paused job and a second pause (today).  In
    #: 2012 pause and resume were idempotent flags and cancel always worked.
    strict_job_verbs: bool
    #: A plain cancel of a ready mirror only requests the end (today's
    #: ``job_cancel_requested``), so the job still pauses at its pause points
    #: (an error's ``stop``, a user pause) until resumed; ``job_is_cancelled``
    #: means a forced cancel.  In 2012 any cancel kept a job from pausing.
    pause_after_plain_cancel: bool
    #: How a job is refused on a node another job holds: today's op blocker,
    #: naming the node ("Node 'disk' is busy: block device is in use by
    #: block job: mirror"; with -blockdev, as libvirt runs QEMU today, disks
    #: have no device name), or 2012's in-use flag on the drive
    #: (QERR_DEVICE_IN_USE, "Device 'vda' is in use").
    busy_disk_error: str
    #: block-commit takes ``on-error`` and its BLOCK_JOB_ERROR says which
    #: operation failed, the read of the top or the write to the base
    #: (today, commit.c:commit_run).  2012's block-commit (QEMU 1.3) had no
    #: ``on-error``: qmp_block_commit fixed it to report, so a scenario's
    #: other value is refused as QMP refused an unknown argument ("Invalid
    #: parameter 'on-error'"), and commit_run reported every error as a read.
    commit_on_error: bool = True
    #: A commit whose top is the drive's active layer runs as a mirror
    #: (today, mirror.c:commit_active_start).  2012's commit_start refused
    #: it: "Top image as the active layer is currently unsupported".
    active_commit: bool = True
    #: ``blockdev-backup`` and the ``block-dirty-bitmap-*`` commands exist
    #: (today).  The 2012 note predates both (backup came with QEMU 1.6 in
    #: 2013, named dirty bitmaps with 2.4): its QEMU answers CommandNotFound.
    has_backup: bool = True


QEMU = Profile(
    name="qemu",
    job_status_events=True,
    report_completes_with_error=True,
    job_error_names_job=True,
    job_iostatus_ranked=False,
    job_stop_needs_drive_stop=False,
    io_error_details=True,
    strict_job_verbs=True,
    pause_after_plain_cancel=True,
    busy_disk_error="Node '{node}' is busy: block device is in use by block job: {job_type}",
)

# The design note's event documentation says a STOP event follows a job's
# ``stop`` action, while its behaviour section and the code it adds only pause
# the job and leave the VM running.  We model the behaviour (no STOP).
RFC_2012 = Profile(
    name="rfc-2012",
    job_status_events=False,
    report_completes_with_error=False,
    job_error_names_job=False,
    job_iostatus_ranked=True,
    job_stop_needs_drive_stop=True,
    io_error_details=False,
    strict_job_verbs=False,
    pause_after_plain_cancel=False,
    busy_disk_error="Device '{device}' is in use",
    commit_on_error=False,
    active_commit=False,
    has_backup=False,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QEMU, RFC_2012)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BlocksimError(
            f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}") from None
