"""The block-job life cycle shared by every job type.

A :class:`BlockJob` is one SimPy process that walks QEMU's job status machine
(``qapi/job.json``)::

    created -> running -> [paused <-> running] -> [ready <-> standby]
            -> waiting -> pending -> concluded -> null          (success)
            -> aborting -> concluded -> null                    (error, cancel)

Every transition emits ``JOB_STATUS_CHANGE {id, status}`` (the ``rfc-2012``
profile predates the status machine and emits none), and every transition is
checked against the legal table; an illegal one is recorded as an invariant
violation, never hidden.

Management commands arrive as verbs (cancel, pause, resume, set-speed,
complete, finalize, dismiss), each accepted only in the statuses listed in
:data:`VERBS`; a refusal raises :class:`~blocksim.errors.CommandError` with
QEMU's wording and becomes part of the run's record.

Subclasses implement :meth:`run` (a generator returning 0 or an errno), and
may override :meth:`prepare` (what success changes in the graph: a pivot, a
dropped backing file), :meth:`abort`, :meth:`complete`,
:meth:`completes_on_cancel`, :meth:`progress_len`, :meth:`error_policies`,
:meth:`idle` and the QMP start command they are recorded as.  They call
:meth:`pause_point` between iterations and :meth:`sleep` to wait; a command
wakes a sleeping job, as QEMU's ``job_enter`` does.

A command's effect on the job's status is visible to the next command at the
same instant, as in QEMU, where a QMP handler enters the job coroutine
synchronously (``job_enter_cond_locked`` -> ``aio_co_wake``) and the job runs
until it yields again before the command returns.  The job's process here
runs later in the instant, so each verb does itself what that synchronous
run changes in QMP's view: a resume (or a cancel of a paused job) leaves the
pause point, a pause of an :meth:`idle` sleeping job enters it, finalize,
dismiss and a cancel while pending end the job, all before the command's
record; complete, set-speed and a plain cancel change no status.
"""

from __future__ import annotations

import errno
import itertools

from ..errors import CommandError
from ..model.iostatus import IoStatus
from ..model.policy import job_device, strerror
from ..model.ratelimit import RateLimit

#: The order filters go in: a later one sits right above the device's node,
#: under the earlier ones (bdrv_cbw_append, bdrv_insert_node)
_FILTER_SEQ = itertools.count(1)
_CREATED_SEQ = itertools.count(1)


def newest_first(jobs) -> list:
    """The jobs that exist (created, not yet dismissed), as QEMU lists them
    in ``query-block-jobs`` and ``query-jobs``: ``job_create`` puts a job at
    the head of the global job list (``QLIST_INSERT_HEAD``), so the newest
    comes first (checked on QEMU 7.2 with two jobs)."""
    alive = [job for job in jobs if job.status not in (None, "null")]
    return sorted(alive, key=lambda job: -job._created_seq)

TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"created"}),
    "created": frozenset({"running", "aborting", "null"}),
    "running": frozenset({"paused", "ready", "waiting", "aborting"}),
    "paused": frozenset({"running"}),
    "ready": frozenset({"standby", "waiting", "aborting"}),
    "standby": frozenset({"ready"}),
    "waiting": frozenset({"pending", "aborting"}),
    "pending": frozenset({"aborting", "concluded"}),
    "aborting": frozenset({"aborting", "concluded"}),
    "concluded": frozenset({"null"}),
    "null": frozenset(),
}

_ACTIVE = frozenset({"created", "running", "paused", "ready", "standby"})
VERBS: dict[str, frozenset[str]] = {
    "cancel": _ACTIVE | {"waiting", "pending"},
    "pause": _ACTIVE,
    "resume": _ACTIVE,
    "set-speed": _ACTIVE,
    "complete": frozenset({"ready", "standby"}),
    "finalize": frozenset({"pending"}),
    "dismiss": frozenset({"concluded"}),
}


def drain_all(sim) -> None:
    """``bdrv_drain_all`` inside a command (a transaction's start, a job's
    start or end): every running or ready job blips (:meth:`Job.drain_blip`),
    in the order the scenario declared them."""
    if not sim.profile.job_status_events:
        return
    for job in list(sim.jobs.values()):
        if job.status in ("running", "ready"):
            job.drain_blip()


class BlockJob:
    job_type = "job"
    #: Whether ``complete`` applies (QEMU: the driver has a ``complete``)
    completable = False
    #: The invariant broken when the job completes with ``integrity`` "differs".
    integrity_invariant: str | None = None

    def __init__(self, sim, job_id: str, spec):
        self.sim = sim
        self.env = sim.env
        self.log = sim.log
        self.profile = sim.profile
        self.policy = sim.policy
        self.id = job_id
        self.spec = spec
        self.drive = sim.drives[spec.device]
        self.status: str | None = None
        #: a served session's job that already has this ID and is not
        #: dismissed (serve/commands.py puts the new job object in its place
        #: to start it): its op blockers still count, and the ID is in use
        self.displaces = None
        self.transitions: list[tuple[int, str | None, str]] = []
        self.illegal_transitions: list[tuple[int, str | None, str]] = []
        self.limit = RateLimit(spec.speed)
        self.offset = 0
        self.iostatus = IoStatus(lambda: self.env.now, ranked=self.profile.job_iostatus_ranked)
        self.pause_count = 0
        self.user_paused = False
        self.paused = False
        self.cancelled = False
        self.force_cancel = False
        self.should_complete = False
        self.reported = False
        self.auto_finalize: bool = spec.auto_finalize
        self.auto_dismiss: bool = spec.auto_dismiss
        self.error: str | None = None
        #: the error query-block-jobs shows for a cancelled job, which ends
        #: with no error in its events (:meth:`_finish`)
        self.cancel_error: str | None = None
        self.errors_by_action = {"ignore": 0, "report": 0, "stop": 0}
        self.bytes_copied = 0
        self.paused_ns = 0
        self.started_at: int | None = None
        self.ready_at: int | None = None
        self.finished_at: int | None = None
        self.outcome: str | None = None
        self.end_event: str | None = None
        self.integrity = "not-checked"
        self.integrity_detail: str | None = None
        self._wake = None
        self._sleeping = False          # waiting in sleep() or _wait() (QEMU: not busy)
        self._timed = False             # ... in sleep(): a timer is pending
        self._drain_pauses = 0          # drained sections it honours at its next yield (drain_blip)
        self._drain_since = 0           # ... that came at this instant
        self._drain_due = False         # ... and it has reached that yield (a sleep)
        self.start_refused = False
        self._held: list = []           # the nodes it holds once created (held_nodes())
        self._filtered = None           # the node its filter sits above (inserts_filter)
        self._filter_seq = 0            # ... inserted after the filters of lower numbers
        self._main_node = None          # the device's node as its "main node" (main_node_is_device)
        self._paused_since: int | None = None
        self._pause_prev: str | None = None     # the status a pause returns to

    # -- policies the job was given (for the rfc-2012 start check) -------------
    def error_policies(self) -> dict[str, str]:
        return {}

    def error_node(self, is_read: bool):
        """The node a failed request of this job was on, as the job types of
        2012 told ``block_job_error_action`` (its ``bs``): the job's own
        device (``stream_run`` passes ``s->common.bs``)."""
        return self.drive.node

    # -- start -------------------------------------------------------------------
    def qmp_start_command(self) -> str:
        """The QMP command that starts this job in QEMU (for the record)."""
        return "job-start"

    def qmp_start_arguments(self) -> dict:
        return {"job-id": self.id, "device": self.drive.name, "speed": self.speed,
                "auto-finalize": self.auto_finalize, "auto-dismiss": self.auto_dismiss}

    def start(self) -> None:
        """Create and start the job (QMP's blockdev-mirror / block-stream)."""
        self.create()
        self.begin()

    def create(self) -> None:
        """The job created (``block_job_create``), not started: the command's
        checks, then ``created``.  A ``transaction`` creates its backups in its
        prepare phase and starts them (:meth:`begin`) once every action is
        prepared, or aborts them (:meth:`abort_created`)."""
        # The 2012 profile's rules (model/policy.py) in QMP's order: the
        # arguments are parsed first, the drive is asked once the nodes are free.
        self._refuse_if(self.policy.job_arguments_refusal(self))
        self._check_nodes_free()
        self._refuse_if(self.policy.job_start_refusal(self))
        # The filter goes in before the job is created (stream.c:stream_start
        # -> bdrv_insert_node, then block_job_create): its drained sections.
        for _ in range(self.create_drains):
            self.drained_section("disk")
        # block_job_create -> job_create checks the job ID after the QMP
        # handler's node checks (qmp_get_root_bs, the op blockers) and the
        # job driver's own (backup_job_create's, mirror_start_job's): a
        # second start of a running job meets its own op blocker or filter
        # first (checked on QEMU 7.2: job-id-check-after-node-checks).
        if self.status is not None or self.displaces is not None:
            # the failure path takes the filter out again (stream_start's
            # bdrv_cor_filter_drop): as many drained sections
            for _ in range(self.create_drains):
                self.drained_section("disk")
            raise CommandError(f"Job ID '{self.id}' already in use")
        self._held = self.held_nodes()
        if self.inserts_filter and self.profile.root_node_check:
            self._filtered = self.drive.node
            self._filter_seq = next(_FILTER_SEQ)
        if self.main_node_is_device and self.profile.root_node_check:
            self._main_node = self.drive.node
        self._created_seq = next(_CREATED_SEQ)
        self._transition("created")

    def begin(self) -> None:
        """``job_start``: the job is running when the command returns."""
        self.started_at = self.env.now
        self._transition("running")
        self.env.process(self._main())

    def abort_created(self) -> None:
        """A job created and never started goes again (``job_cancel_sync`` of
        a transaction's abort): ``aborting``, its clean-up, ``concluded``
        (and ``null``), with no BLOCK_JOB_CANCELLED (observed on QEMU 7.2:
        transaction-backup-aborted-by-a-later-action).  Its ID is free
        again (``Simulation.job_to_start``)."""
        self._transition("aborting")
        self.abort()
        self._conclude()
        self.outcome = "refused"        # (its start command, the transaction, was)

    def _refuse_if(self, refusal: str | None) -> None:
        if refusal is not None:
            self.start_refused = self.status is None
            raise CommandError(refusal)

    def nodes(self) -> list:
        """The nodes the job holds while it runs: its disk's top node (and,
        for a mirror, the target)."""
        return [self.drive.node]

    def held_nodes(self) -> list:
        """The nodes the job op-blocks once created (``block_job_add_bdrv``):
        :meth:`nodes`, unless the job's main node is a filter of its own
        (a backup: blocksim.jobs.backup)."""
        return self.nodes()

    #: The job inserts a filter node above its device's node from its
    #: creation until it is finalized: a stream's copy-on-read
    #: (stream.c:stream_start), a mirror's or active commit's mirror_top
    #: (mirror.c:mirror_start_job), a backup's copy-before-write
    #: (backup.c:backup_job_create -> bdrv_cbw_append).  An intermediate
    #: commit's commit_top sits above ``top``, not the device's node.
    inserts_filter = False

    #: The job is created over its device's node itself, not over a filter
    #: of its own (an intermediate commit: commit.c:commit_start passes
    #: ``bs`` to block_job_create), so that node gets the job as a parent
    #: (blockjob.c:block_job_create adds it as the "main node", a child_job
    #: BdrvChild) until the job drops its nodes (commit_abort,
    #: commit_prepare -> block_job_remove_all_bdrv): the node is no longer
    #: a root node (block-backend.c:bdrv_is_root_node).
    main_node_is_device = False

    #: Drained sections the job's start opens over its device's node before
    #: the job is created (a stream's filter insertion); the same number
    #: again when job_create then refuses the job ID.
    create_drains = 0

    # -- drained sections ----------------------------------------------------------
    def drained_section(self, scope: str) -> None:
        """A drained section (``block/io.c:bdrv_drained_begin`` ..
        ``bdrv_drained_end``) that this job's start or end opens and closes
        within one command or graph change, as other jobs see it.

        Draining a node drains its parents too (``bdrv_child_cb_drained_begin``),
        up to the jobs attached to them (``block_job_add_bdrv``), and a job
        parent is paused (``blockjob.c:child_job_drained_begin`` ->
        ``job_pause``) and resumed at the end (``child_job_drained_end`` ->
        ``job_resume``): a running job blips ``paused``/``running`` (a
        ready one ``standby``/``ready``), a job already paused or cancelled
        shows nothing (found by running QEMU 7.2, then read in the source).

        ``scope``: ``disk`` (the device's node: every job holding it, or
        with a filter above it), ``filter`` (this job's own filter: only the
        filters above it, the jobs that inserted theirs earlier); every node
        (``bdrv_drain_all``) is :func:`drain_all`.

        QEMU's drain begins and ends inside one command, and the paused job
        goes on at the same instant, its sleep cut (:meth:`drain_blip`)."""
        if not self.profile.job_status_events:
            return
        node = self.drive.node
        for job in list(self.sim.jobs.values()):
            if job.status not in ("running", "ready"):
                continue
            if scope == "filter":
                hit = (self._filtered is not None and job._filtered is self._filtered
                       and job._filter_seq < self._filter_seq)
            else:
                hit = job._filtered is node or node in job.nodes()
            if hit:
                job.drain_blip()

    def drain_blip(self) -> None:
        """``job_pause`` then ``job_resume`` at one instant (a drained
        section of another job's graph change): ``job_pause`` enters a job
        that is not paused yet, it reaches ``job_pause_point`` (paused, or
        standby when ready) and, resumed, goes back.

        Entering the job cuts its sleep (``job_enter_cond_locked`` deletes
        the sleep timer): a job sleeping off its rate limit goes on at once.
        The resume runs the job inside the command (``job_enter`` ->
        ``aio_co_wake``): by the command's next drained section it has done
        its next step, I/O included, and the drain's ``job_pause`` finds it
        busy or asleep again.  So a job entered and not run yet (or with
        such a pause pending) takes the section where it next yields
        (:attr:`_drain_pauses`): a sleep at this instant, where it does not
        sleep, or the first pause point after its I/O; it shows
        ``paused``/``running`` there and goes on, as the drain, ended once
        that I/O is done, resumes it.  (Found by running QEMU 7.2: a refused
        blockdev-backup of a rate-limited active commit's disk, two drained
        sections, makes it READY at once, its last copy done, fz8-65,
        commit-active-drain-cuts-its-sleep; an intermediate commit copies its
        next chunk between the two blips, and an error there comes between
        them, fz8-283, commit-intermediate-error-between-drain-blips.)"""
        if self.paused or self.pause_count or self.is_cancelled():
            return
        if self._drain_pauses or (self._wake is not None and self._wake.triggered):
            if not self._drain_pauses:
                self._drain_since, self._drain_due = self.env.now, False
            self._drain_pauses += 1
            return
        self._blip()

    def drain_pause_due(self) -> bool:
        """Whether the job, at a pause point, takes the drained sections that
        came while it ran (:meth:`drain_blip`): after its sleep at their
        instant, or after I/O that took time."""
        return bool(self._drain_pauses) and (self._drain_due
                                             or self.env.now > self._drain_since)

    def _blip(self) -> None:
        """One drained section's ``paused``/``running`` (standby/ready), and
        its end of the job's sleep (:meth:`drain_blip`)."""
        if self.paused or self.pause_count or self.is_cancelled():
            return
        back = self.status
        self._transition("standby" if back == "ready" else "paused")
        self._transition(back)
        if self._timed:
            self._enter()

    def _check_root(self) -> None:
        """``blockdev.c:qmp_get_root_bs``, which block-commit,
        blockdev-mirror and drive-mirror call first, before any op
        blocker: the device's node must have only BlockBackends as parents
        (``bdrv_is_root_node``), so a node under another job's filter is
        refused with "Need a root block node" (checked on QEMU 7.2 with the
        node's name as the device, as libvirt's -blockdev passes it; the
        2012 profile has no filter nodes); so is the device of an
        intermediate commit, which holds it as its main node
        (:attr:`main_node_is_device`; checked on QEMU 7.2:
        commit-intermediate-then-commit-mirror-root-node)."""
        if not self.profile.root_node_check:
            return
        node = self.drive.node
        for other in self.sim.jobs.values():
            # (the job itself too, when it is started again while it runs)
            if ((other._filtered is node or other._main_node is node)
                    and other.holds_nodes()):
                self.start_refused = self.status is None
                raise CommandError("Need a root block node")

    def keeps_nodes_when_concluded(self) -> bool:
        """Whether the job, concluded and waiting for ``job-dismiss``, still
        holds its nodes: the nodes ``block_job_add_bdrv`` gave it (parents
        of class child_job, with their op blockers) are let go by
        ``block_job_remove_all_bdrv``, which a mirror (mirror_exit_common),
        a backup (backup_clean) and a failed or cancelled intermediate
        commit (commit_abort) call as they end, but a stream and a
        completed intermediate commit only in ``block_job_free``, when the
        job is dismissed (checked on QEMU 7.2:
        stream-concluded-holds-its-nodes, commit-concluded-holds-its-nodes)."""
        return False

    def holds_nodes(self) -> bool:
        """Whether the job holds its nodes now: from its creation until it
        concludes, or until it is dismissed
        (:meth:`keeps_nodes_when_concluded`)."""
        if self.status in (None, "null"):
            return False
        return self.status != "concluded" or self.keeps_nodes_when_concluded()

    def _check_nodes_free(self) -> None:
        """QEMU's op blockers: a job holds its nodes from its creation until
        it concludes (or is dismissed: :meth:`holds_nodes`), and a job asking for a node another job holds is
        refused (``bdrv_op_is_blocked``: two jobs never run on one disk)."""
        mine = self.nodes()
        others = list(self.sim.jobs.values())
        if self.displaces is not None:
            others.append(self.displaces)
        for other in others:
            # (the job itself too, when it is started again while it runs:
            # its own op blockers answer before job_create's job ID check)
            if not other.holds_nodes():
                continue
            for node in other._held:
                if node in mine:
                    self.start_refused = True
                    device = next((name for name, drive in self.sim.drives.items()
                                   if drive.node is node), node.name)
                    raise CommandError(self.profile.busy_disk_error.format(
                        node=node.name, device=device, job_type=other.job_type))

    def _main(self):
        ret = yield from self.run()
        self._finish(ret)

    def run(self):
        raise NotImplementedError
        yield  # pragma: no cover

    # -- ending ------------------------------------------------------------------
    def completes_on_cancel(self) -> bool:
        """Whether a plain cancel finishes the job as a success (a ready mirror)."""
        return False

    def prepare(self) -> None:
        """What success changes (pivot, dropped backing file) and its checks."""

    def abort(self) -> None:
        """Clean-up after an error or a cancel."""

    def _finish(self, ret: int) -> None:
        """The end of the job's process (QEMU's ``job_exit``, scheduled when
        ``run`` returns).  A job that waits for ``job-finalize`` or
        ``job-dismiss`` stops here: those verbs, and a cancel while pending,
        end it themselves, inside the command (:meth:`finalize`,
        :meth:`dismiss`, :meth:`cancel`)."""
        if self.cancelled and not self.completes_on_cancel():
            # job.c:job_update_rc_locked: a force-cancelled job's ret is
            # -ECANCELED unless its run returned an error, and its err that
            # ret's string, which block_job_query_locked shows as `error`
            # (BLOCK_JOB_CANCELLED carries none)
            self.cancel_error = strerror(ret or errno.ECANCELED)
            self._abort(cancelled=True)
            return
        if ret:
            if self.error is None:      # (else the job's own message: errp)
                self.error = strerror(ret)
            self._abort(cancelled=False)
            return
        self._transition("waiting")
        self._transition("pending")
        if not self.auto_finalize:
            # QEMU announces a job waiting for job-finalize (job.c: only
            # when auto-finalize is off): BLOCK_JOB_PENDING {type, id}.
            if self.profile.job_status_events:
                self.log.emit("BLOCK_JOB_PENDING", {"type": self.job_type, "id": self.id})
            return
        self._finalize()

    def _finalize(self) -> None:
        """QEMU's ``job_do_finalize_locked`` for a job that succeeded:
        ``prepare``, BLOCK_JOB_COMPLETED, concluded (and null)."""
        self.prepare()
        self.outcome = "completed"
        self._emit_end("BLOCK_JOB_COMPLETED")
        self._conclude()

    def _abort(self, cancelled: bool) -> None:
        self._transition("aborting")
        self.abort()
        if cancelled:
            self.outcome = "cancelled"
            self._emit_end("BLOCK_JOB_CANCELLED")
        else:
            self.outcome = "completed-with-error"
            # 2012: a job ended by a `report` action announces a cancel.
            if self.reported and not self.profile.report_completes_with_error:
                self._emit_end("BLOCK_JOB_CANCELLED")
            else:
                self._emit_end("BLOCK_JOB_COMPLETED", error=self.error)
        self._conclude()

    def _conclude(self) -> None:
        """QEMU's ``job_conclude_locked``: concluded, then null unless the
        job waits for ``job-dismiss``."""
        self._transition("concluded")
        self.finished_at = self.env.now
        if self.auto_dismiss:
            self._transition("null")

    def _emit_end(self, name: str, error: str | None = None) -> None:
        self.end_event = name
        data = self._job_event_data()
        if error is not None:
            data["error"] = error
        self.log.emit(name, data)

    def _job_event_data(self) -> dict:
        return {"type": self.job_type, "device": job_device(self.profile, self),
                "len": self.progress_len(), "offset": self.offset, "speed": self.speed}

    # -- status machine ------------------------------------------------------------
    def _transition(self, new: str) -> None:
        old = self.status
        now = self.env.now
        if new not in TRANSITIONS.get(old, ()):
            self.illegal_transitions.append((now, old, new))
        self.status = new
        self.transitions.append((now, old, new))
        if self.profile.job_status_events:
            self.log.emit("JOB_STATUS_CHANGE", {"id": self.id, "status": new})

    # -- waiting and pausing -------------------------------------------------------
    def _wait(self):
        """Sleep until a command enters the job."""
        ev = self._wake = self.env.event()
        self._sleeping = True
        yield ev
        self._sleeping = False
        self._wake = None

    def sleep(self, ns: int, timer=None):
        """Sleep ``ns`` nanoseconds, or less if a command enters the job.
        (``timer``: its timeout, drawn already: see :meth:`MirrorJob._copy_burst
        <blocksim.jobs.mirror.MirrorJob._copy_burst>`.)

        A cancelled job (:meth:`is_cancelled`) does not sleep at all, as
        QEMU's ``job_sleep_ns`` checks before it yields: a stream cancelled
        while its chunk was in flight ends when the chunk does, not after
        the rate limit's sleep.  Nor does a job asked to pause
        (:meth:`should_pause`): ``job_sleep_ns`` then goes straight to its
        pause point, so a pause asked while the job was busy takes effect
        when its I/O is done, not after the sleep the rate limit asks for.

        Returns True if the sleep's timer woke the job (the job then runs
        from the main loop's timers: :meth:`MirrorJob._iteration_sleep
        <blocksim.jobs.mirror.MirrorJob._iteration_sleep>`), False if a
        command entered it or it did not sleep."""
        if self.is_cancelled() or self.should_pause():
            return False
        if self._drain_pauses:
            self._drain_due = True      # a drained section ends this sleep (drain_blip)
            return False
        ev = self._wake = self.env.event()
        if timer is None:
            timer = self.env.timeout(ns)
        timer.callbacks.append(lambda _t, ev=ev: ev.triggered or ev.succeed(True))
        self._sleeping = self._timed = True
        by_timer = yield ev
        self._sleeping = self._timed = False
        self._wake = None
        return by_timer is True

    def ratelimit_sleep(self, delay: int, timer=None):
        """Sleep off the rate limit once, as QEMU 7.2's ``job_sleep_ns(job,
        delay)`` after a chunk (stream_run, mirror_run; ``delay`` is what
        ``ratelimit_calculate_delay`` asked for when the bytes were
        counted): none for a cancelled job, none either for a job asked to
        pause (:meth:`sleep`), then the pause point.  A job entered early (a
        pause, a raised speed) goes on without sleeping off the rest: 7.2
        does not ask the limiter again (``block_job_ratelimit_sleep`` is
        QEMU 8.0's)."""
        if not delay or self.is_cancelled():
            return
        yield from self._sleep_off(delay, timer)
        yield from self._pause_point()

    def _sleep_off(self, ns: int, timer=None):
        """How the job sleeps in :meth:`ratelimit_sleep` (a job with I/O of
        its own in flight meanwhile says so; ``timer``: see :meth:`sleep`)."""
        return self.sleep(ns, timer)

    def _pause_point(self):
        """The pause point of :meth:`ratelimit_sleep` (a job may have to do
        more there, as QEMU's job drivers' ``pause``)."""
        return self.pause_point()

    def _enter(self) -> None:
        """Wake the job if it sleeps (QEMU's ``job_enter``, which marks the
        job busy before it enters it)."""
        ev = self._wake
        if ev is not None and not ev.triggered:
            self._sleeping = self._timed = False
            ev.succeed()

    def idle(self) -> bool:
        """Whether the job, sleeping, would reach its pause point at once if
        entered: no I/O of its own in flight that its pause waits for (a
        mirror overrides this: QEMU's ``mirror_pause`` waits for its copies)."""
        return True

    def is_cancelled(self) -> bool:
        """QEMU's ``job_is_cancelled()``: the job ends without pausing again.

        Today that is a forced cancel, and any cancel of a job that cannot
        complete on cancel (QEMU's mirror turns a cancel before READY into a
        forced one; a stream has no soft cancel).  A plain cancel of a ready
        mirror is only requested: the mirror completes without the pivot, and
        pauses at its pause points meanwhile (job.c: ``job_pause_point``
        returns early only for ``job_is_cancelled``).  In the 2012 profile any
        cancel counts."""
        if not self.cancelled:
            return False
        return not (self.profile.pause_after_plain_cancel and self.completes_on_cancel())

    def should_pause(self) -> bool:
        """Whether the job pauses at its next pause point: asked to, and not
        cancelled in QEMU's sense (:meth:`is_cancelled`)."""
        return self.pause_count > 0 and not self.is_cancelled()

    def pause_point(self):
        """Pause here if asked to (QEMU's ``job_pause_point``).

        A verb may already have done either half at the instant it ran
        (:meth:`user_pause` of an idle job enters the pause, :meth:`user_resume`
        and :meth:`cancel` leave it), as QEMU's synchronous entry of the job
        from the command does; the job then only waits, or goes on."""
        if self.drain_pause_due():
            # drained sections that came while the job ran (drain_blip)
            for _ in range(self._drain_pauses):
                self._blip()
            self._drain_pauses = 0
        if self.should_pause() and not self.paused:
            self._enter_pause()
        while self.paused and self.should_pause():
            yield from self._wait()
        self._leave_pause()

    def _enter_pause(self) -> None:
        """The head of ``job_pause_point_locked``: paused (standby when ready)."""
        self._pause_prev = self.status
        self._transition("standby" if self.status == "ready" else "paused")
        self.paused = True
        self._paused_since = self.env.now

    def _leave_pause(self) -> None:
        """The tail of ``job_pause_point_locked``, once the job is entered:
        back to the status it paused in (nothing if it is not paused)."""
        if not self.paused:
            return
        self.paused = False
        self.paused_ns += self.env.now - self._paused_since
        self._paused_since = None
        self._transition(self._pause_prev)

    def time_paused(self, now: int) -> int:
        """Nanoseconds spent paused, including a pause still going on."""
        ongoing = now - self._paused_since if self._paused_since is not None else 0
        return self.paused_ns + ongoing

    def pause_for_error(self) -> None:
        """A ``stop`` action: a user-visible pause that needs a resume.

        Like QEMU's ``job_pause``, this enters a job sleeping (in its rate
        limit) so that it reaches its pause point now."""
        if not self.user_paused:
            self.user_paused = True
            self.pause_count += 1
            self._enter()

    # -- verbs -----------------------------------------------------------------------
    def _check_verb(self, verb: str) -> None:
        if self.status not in VERBS[verb]:
            raise CommandError(
                f"Job '{self.id}' in state '{self.status}' cannot accept command verb '{verb}'")

    def user_pause(self) -> None:
        """QEMU's ``job_user_pause_locked``.  ``job_pause_locked`` enters a
        job that is not busy: one sleeping with nothing in flight
        (:meth:`idle`) runs into its pause point before the command returns,
        so it is paused (or in standby) at once; a busy one pauses at its next
        pause point, ``running`` with ``paused: true`` meanwhile."""
        self._check_verb("pause")
        if self.user_paused:
            if self.profile.strict_job_verbs:
                raise CommandError("Job is already paused")
            return
        self.user_paused = True
        self.pause_count += 1
        if self._sleeping and not self.paused and self.should_pause() and self.idle():
            self._enter_pause()
        self._enter()

    def user_resume(self) -> None:
        # QEMU's job_user_resume asks whether the job is paused before it
        # asks the verb table: a job that is not paused gets that answer in
        # any status (pending, waiting...)
        if not self.user_paused and self.profile.strict_job_verbs:
            raise CommandError("Can't resume a job that was not paused")
        self._check_verb("resume")
        # The 2012 note's block_job_resume resets the io-status even of a job
        # that is not paused (today that resume is refused above).
        self.iostatus.reset()
        if not self.user_paused:
            return                  # 2012: resume was an idempotent flag
        self.user_paused = False
        self.pause_count -= 1
        # job_resume_locked enters the job: it leaves its pause point (the
        # status change comes before the command's reply)
        if self.paused and not self.should_pause():
            self._leave_pause()
        self._enter()

    def cancel(self, force: bool = False) -> None:
        """QEMU's ``job_user_cancel_locked``.  (``block-job-cancel`` refuses
        an unforced cancel of a user-paused job before this is asked:
        :mod:`blocksim.management.monitor`; ``job-cancel`` always forces.)

        ``job_cancel_async_locked`` un-pauses a user-paused job and enters
        it: a paused job leaves its pause point before the command returns.
        A job waiting in ``pending`` for ``job-finalize`` is aborted inside
        the command (``job_cancel_locked`` -> ``job_completed_txn_abort``),
        forced, since neither a stream nor a mirror that is not ready has a
        soft cancel (``mirror_cancel``)."""
        self._check_verb("cancel")
        if self.status == "pending":
            self.cancelled = self.force_cancel = True
            # (job_completed_txn_abort_locked -> job_finalize_single_locked
            # -> job_update_rc_locked: ret 0 becomes -ECANCELED)
            self.cancel_error = strerror(errno.ECANCELED)
            self._abort(cancelled=True)
            return
        self.cancelled = True
        self.force_cancel = self.force_cancel or force
        if self.user_paused:
            # job_cancel_async_locked calls the driver's user_resume
            # (blockjob.c:block_job_user_resume), which resets the
            # io-status: a job cancelled while paused by an error (or by
            # the user) ends with io-status ok
            self.iostatus.reset()
            self.user_paused = False
            self.pause_count -= 1
        if self.paused and not self.should_pause():
            self._leave_pause()
        self._enter()

    def complete(self) -> None:
        """QEMU's ``job_complete``: refused for a job type that has no
        completion step and for a job whose cancel was requested (a plain
        cancel once ready still ends it, without the pivot).  A paused job is
        not entered (``mirror_complete``): it completes once resumed."""
        self._check_verb("complete")
        if not self.completable or self.cancelled:
            raise CommandError(f"The active block job '{self.id}' cannot be completed")
        self.should_complete = True
        if not self.paused:
            self._enter()

    def set_speed(self, speed: int) -> None:
        """QEMU's ``block_job_set_speed_locked``: the verb check, then the
        speed's (``QERR_INVALID_PARAMETER_VALUE``)."""
        self._check_verb("set-speed")
        if speed < 0:
            raise CommandError("Parameter 'speed' expects a non-negative value")
        old = self.limit.speed
        self.limit.set_speed(speed)
        # QEMU's block_job_set_speed kicks the job only when the limit was
        # raised or lifted (a lower limit lets the current sleep run out),
        # and only if its sleep timer is pending (job_timer_pending): never
        # a paused job
        if speed and speed <= old:
            return
        if self._timed:
            self._enter()

    def finalize(self) -> None:
        """QEMU's ``job_finalize_locked``: the job is finalized inside the
        command (``prepare``, BLOCK_JOB_COMPLETED, concluded, null)."""
        self._check_verb("finalize")
        self._finalize()

    def dismiss(self) -> None:
        """QEMU's ``job_dismiss_locked``: null inside the command."""
        self._check_verb("dismiss")
        self._transition("null")

    # -- what QMP shows ----------------------------------------------------------------
    @property
    def speed(self) -> int:
        """Bytes per second, 0 for unlimited (the rate limit's own setting)."""
        return self.limit.speed

    def progress_len(self) -> int:
        return self.offset

    @property
    def ready(self) -> bool:
        return self.status in ("ready", "standby")

    #: Whether the job holds a drained section over its own nodes, which
    #: pauses it (``child_job_drained_begin`` -> ``job_pause``): a mirror from
    #: the end of its run until its exit (MirrorJob).
    drained_by_itself = False

    def job_info(self) -> dict:
        """One entry of ``query-jobs`` (``job-qmp.c:job_query_single_locked``):
        the job's id, type and status, its progress as ``query-block-jobs``
        gives it (``len`` and ``offset`` are the same progress meter) and the
        job's error once it has one (``job->err``, which ``job_update_rc``
        fills with the errno's text on a failure or a cancel)."""
        info = {"id": self.id, "type": self.job_type, "status": self.status,
                "current-progress": self.offset, "total-progress": self.progress_len()}
        error = self.error if self.error is not None else self.cancel_error
        if error is not None:
            info["error"] = error
        return info

    def query(self) -> dict:
        """One entry of ``query-block-jobs``."""
        if not self.profile.job_status_events:
            return {"type": self.job_type, "device": self.drive.name,
                    "len": self.progress_len(), "offset": self.offset,
                    "paused": self.pause_count > 0, "speed": self.speed,
                    "io-status": self.iostatus.value}
        info = {"type": self.job_type, "device": self.id,
                "len": self.progress_len(), "offset": self.offset,
                "busy": not (self._sleeping or self.paused),
                "paused": self.pause_count > 0 or self.drained_by_itself, "speed": self.speed,
                "io-status": self.iostatus.value, "ready": self.ready,
                "status": self.status, "auto-finalize": self.auto_finalize,
                "auto-dismiss": self.auto_dismiss}
        if self.error is not None:
            info["error"] = self.error
        elif self.cancel_error is not None:
            info["error"] = self.cancel_error
        return info
