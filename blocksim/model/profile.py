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
    #: Job io-status keeps the first error (today, ``block_job_iostatus_set_err``
    #: acts only while ``ok``) or only moves up a ranking (2012).  The note's
    #: ``block_job_iostatus_set_err`` compares the C enum's values
    #: (``job->iostatus < new_status``), and ``BlockDeviceIoStatus`` is
    #: declared ``ok, failed, nospace`` (qapi, since 1.0), so the code ranks
    #: ok < failed < nospace although its comment says "(ok, nospace,
    #: failed)".  We follow the code, as that is what the note's
    #: implementation did: EIO then ENOSPC shows ``nospace``.
    job_iostatus_ranked: bool
    #: Which io-status a job's ``stop`` sets.  Today the job's own, whatever
    #: node failed (``block_job_error_action`` has no node argument).  The
    #: note's ``block_job_error_action(job, bs, ...)`` sets the job's only
    #: when ``bs == job->bs`` (the job's own device: a mirror's source, a
    #: stream's disk) and otherwise that node's (``bdrv_iostatus_set_err``,
    #: the device rule: the first error sticks until ``cont``), so a mirror
    #: target's error leaves the job's io-status ``ok``.
    job_iostatus_own_device_only: bool
    #: The ``auto`` job error policy (today; QEMU 2.12).  The note's
    #: ``switch (on_err)`` knows enospc, stop, report and ignore only, so a
    #: 2012 job given ``auto`` is refused ("Invalid parameter 'on-error'",
    #: the 2012 QAPI enum parser's answer).
    job_policy_auto: bool
    #: ``stop``/``enospc`` job policies need a drive with rerror=stop and
    #: werror=stop|enospc, else starting the job is refused (2012 only).
    #: The note names ``stop`` ("can only be specified if the block device
    #: has rerror=stop and werror=stop or enospc"); ``enospc`` "behaves as
    #: 'stop'" for ENOSPC and needs the same, as the merged code checked
    #: (``stream_start``, ``mirror_start``: stop or enospc).
    job_stop_needs_drive_stop: bool
    #: BLOCK_IO_ERROR carries node-name, nospace and reason (today) or only
    #: device, operation and action (2012).
    io_error_details: bool
    #: Refuse a plain cancel of a paused job, a second pause and the resume
    #: of a job that is not paused (today).  In 2012 pause and resume were
    #: idempotent flags and cancel always worked; the note's
    #: ``block_job_resume`` resets the job's io-status whether or not the
    #: job was paused (and only the job's: a node's waits for ``cont``).
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
    #: The job API of QEMU 2.12 and 3.0 (today): ``block-job-finalize``,
    #: ``block-job-dismiss``, the ``job-*`` commands and the
    #: ``auto-finalize``/``auto-dismiss`` options.  The 2012 monitor did not
    #: know them: the commands are CommandNotFound, and a job started with
    #: either option false is refused ("Invalid parameter 'auto-finalize'",
    #: as 2012's ``qmp_check_client_args`` answers an unknown argument).
    job_api_2_12: bool
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
    #: blockdev-mirror takes ``copy-mode`` (today; QEMU 3.0's active
    #: mirror).  2012's drive-mirror (QEMU 1.3) had no such argument: a
    #: write-blocking mirror is refused ("Invalid parameter 'copy-mode'", as
    #: QMP refused an unknown argument); background is what it did.
    copy_mode: bool = True
    #: block-commit, blockdev-mirror and drive-mirror want the device's
    #: node to be a root (blockdev.c:qmp_get_root_bs): under another job's
    #: filter node (a stream's copy-on-read, a mirror's mirror_top, a
    #: backup's copy-before-write) they are refused "Need a root block
    #: node" before any op blocker (today).  2012's QEMU had no filter
    #: nodes: the drive's in-use flag answers.
    root_node_check: bool = True
    #: Commands this QEMU does not have beyond the job API and backup
    #: (``job_api_2_12``, ``has_backup``): its monitor answers
    #: CommandNotFound, "The command X has not been found".  Today: none.
    newer_commands: frozenset = frozenset()
    #: A guest's ``stop`` error *requests* the VM stop and the main loop
    #: carries it out (today: block-backend.c:blk_error_action calls
    #: qemu_system_vmstop_request; softmmu/runstate.c:main_loop_should_exit
    #: then vm_stop), so the STOP event comes after every BLOCK_IO_ERROR of
    #: the requests completing at that moment (checked on a QEMU 7.2 VM: two
    #: writes failing together give BLOCK_IO_ERROR, BLOCK_IO_ERROR, STOP).
    #: 2012's virtio_blk_handle_rw_error called vm_stop at once: STOP right
    #: after the first.
    io_error_stop_requested: bool = True
    #: ``cont`` resets every block job's io-status as well as the drives'
    #: (today: monitor/qmp-cmds.c:qmp_cont calls block_job_iostatus_reset_locked
    #: for each job; the job stays paused until block-job-resume; checked on
    #: a QEMU 7.2 VM).  The 2012 note resets a job's io-status on its resume
    #: only (left so: whether 2012's cont did too was not checked).
    cont_resets_job_iostatus: bool = True


#: The commands of today's job API (``job_api_2_12``).
JOB_API_2_12_COMMANDS = frozenset({
    "block-job-finalize", "block-job-dismiss", "job-pause", "job-resume", "job-complete",
    "job-cancel", "job-finalize", "job-dismiss", "query-jobs"})


QEMU = Profile(
    name="qemu",
    job_status_events=True,
    report_completes_with_error=True,
    job_error_names_job=True,
    job_iostatus_ranked=False,
    job_iostatus_own_device_only=False,
    job_policy_auto=True,
    job_stop_needs_drive_stop=False,
    io_error_details=True,
    strict_job_verbs=True,
    pause_after_plain_cancel=True,
    busy_disk_error="Node '{node}' is busy: block device is in use by block job: {job_type}",
    job_api_2_12=True,
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
    job_iostatus_own_device_only=True,
    job_policy_auto=False,
    job_stop_needs_drive_stop=True,
    io_error_details=False,
    strict_job_verbs=False,
    pause_after_plain_cancel=False,
    busy_disk_error="Device '{device}' is in use",
    job_api_2_12=False,
    commit_on_error=False,
    active_commit=False,
    has_backup=False,
    copy_mode=False,
    root_node_check=False,
    io_error_stop_requested=False,
    cont_resets_job_iostatus=False,
    # QEMU 1.3 (December 2012), whose drive-mirror, block-stream,
    # block-commit and block-job-* the note extends, had none of these:
    # blockdev-mirror (2.6: a mirror starts with drive-mirror),
    # query-named-block-nodes (2.0), block-set-write-threshold (2.3).
    newer_commands=frozenset({"blockdev-mirror", "query-named-block-nodes",
                              "block-set-write-threshold"}),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QEMU, RFC_2012)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BlocksimError(
            f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}") from None
