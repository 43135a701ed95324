"""The mirror job: copy a drive's disk to a target while the guest runs.

Modelled on QEMU's ``block/mirror.c`` (background copy mode):

1. A :class:`~blocksim.model.bitmap.DirtyBitmap` at ``granularity`` starts with
   what ``sync`` asks for (``mirror_dirty_init``): ``full`` marks the whole
   device, unless the target can write zeroes with unmap (its image has
   ``discard = "unmap"``): then the target is zeroed first and only what is
   allocated anywhere in the source's chain is marked; ``top`` marks only the
   top layer's allocation, ``none`` nothing.  Guest writes to the source
   re-dirty their range for as long as the job runs.
2. The copy loop runs iterations (``mirror_iteration``): each claims up to
   ``buf-size`` of consecutive dirty granules after a cursor (stopping at one
   in flight; waiting when the first is), clears them, and splits them by the
   source's block status into operations (:class:`CopyOperation`): data in
   copies (read the source, write the target) of at most ``MAX(buf-size /
   16, 1 MiB)`` and ``buf-size``, extents reading as zeros in one
   write-zeroes each; at most 16 in flight and ``buf-size`` of copies.
   ``speed`` counts each operation (:meth:`MirrorJob.throttle`) and the loop
   sleeps once after the whole iteration, until READY.  The operations'
   timeouts stay on the job's agenda
   (:mod:`blocksim.engine.agenda`) and the loop issues and completes them in one
   plain loop (:mod:`blocksim.engine.burst`): both give exactly the run SimPy would
   give one event at a time.
3. A failed read or write re-dirties its range and goes through the error
   policy engine with ``on-source-error`` (reads) or ``on-target-error``
   (writes): ``ignore`` retries it later, ``stop`` pauses the job until
   resumed, ``report`` fails the job once the operations in flight are done.
4. When nothing is dirty and nothing is in flight the target is flushed and
   the job becomes ``ready`` (``BLOCK_JOB_READY``, once) and keeps mirroring,
   polling every 100 ms.
5. ``complete`` (or a plain ``cancel`` when ready) drains the guest's
   requests and, once nothing is dirty and the target is flushed, finishes:
   complete pivots the drive to the target, cancel leaves the source in
   place.  In both cases the run then verifies that the target reads exactly
   as the source.

A persistent fault under ``ignore`` therefore never converges: the job keeps
retrying (throttled by ``speed``) and never becomes ready, until cancelled.

``copy-mode = "write-blocking"`` (an *active* mirror, QEMU's
``MIRROR_COPY_MODE_WRITE_BLOCKING``): the job's filter (QEMU's mirror_top
node, :class:`ActiveWriteFilter`) sits in the drive's write path from the
job's start until it ends.  The dirty bitmap no longer records guest writes
(``mirror_start_job``: ``bdrv_disable_dirty_bitmap``); instead a guest write,
while the job has not failed and is not cancelled (``job->ret >= 0`` and not
``job_is_cancelled``), waits for the copies and active writes in flight on its
granules (``active_write_prepare``, ``mirror_wait_on_conflicts``), goes to the
source, and once that succeeded is written to the target before the guest is
told (``do_sync_target_write``): the granules it covers whole are cleared, a
head or tail in a dirty granule is left to the copy loop.  A failed target
write dirties its granules (aligned out) and goes through ``on-target-error``
(BLOCK_JOB_ERROR, stop pauses the job, report fails it); the guest's write
succeeds all the same.  At READY such a mirror is *actively synced*; any
error of the job clears that (``mirror_error_action``).  While it holds, the
target reads as the source at every 100 ms poll, but where an active write is
in flight (invariant ``active-mirror-in-sync``).  (Its copy loop runs without
the agenda and the copy bursts: the guest's writes change its bitmap and its
operations in flight between any two of its steps.)
"""

from __future__ import annotations

import errno
from bisect import bisect_right, insort
from collections import deque

from ..engine import Agenda, Snap, burst, burst_kernel
from ..errors import CommandError
from ..model.bitmap import DirtyBitmap
from ..model.named_bitmap import default_granularity
from ..model.extents import diff_ranges
from ..model.faults import MAIN_LOOP_TURN_NS
from ..model.policy import REPORT
from ..model.ratelimit import SLICE_NS
from .base import BlockJob

MAX_IN_FLIGHT = 16
MAX_IO_BYTES = 1 << 20      # mirror.c
MAX_IOV = 1024              # IOV_MAX: the nodes' bl.max_iov
INT_MAX = (1 << 31) - 1


def target_granularity(node) -> int:
    """``dirty-bitmap.c:bdrv_get_default_bitmap_granularity(target)``: the
    cluster size ``bdrv_get_info`` reports, within [4 KiB, 64 KiB]; a raw
    node reports none (file-posix's raw_get_info), so 64 KiB."""
    return default_granularity(node.cluster_size if node.format == "qcow2" else 0)


class MirrorJob(BlockJob):
    job_type = "mirror"
    completable = True
    integrity_invariant = "mirror-target-identical"
    #: mirror_run: an active commit grows its base to the top's size; a
    #: mirror's target must be the source's size
    resizes_target = False

    def __init__(self, sim, job_id: str, spec):
        super().__init__(sim, job_id, spec)
        self.target = sim.devices[spec.target]
        self.sync: str = spec.sync
        # mirror_start_job: granularity 0 (not given) is
        # bdrv_get_default_bitmap_granularity(target)
        self.granularity: int = spec.granularity or target_granularity(self.target)
        self.buf_size: int = spec.buf_size
        self.on_source_error: str = spec.on_source_error
        self.on_target_error: str = spec.on_target_error
        #: "background" or "write-blocking" (an active mirror; an active
        #: commit is always background: commit_active_start)
        self.copy_mode: str = getattr(spec, "copy_mode", "background")
        g = self.granularity
        # mirror.c (mirror_start_job): the buffer is whole granules
        self.buf_size = -(-self.buf_size // g) * g
        # mirror_iteration: a data extent is copied in operations of at
        # most max_io_bytes = MAX(buf_size / MAX_IN_FLIGHT, MAX_IO_BYTES)
        self.max_io = max(self.buf_size // MAX_IN_FLIGHT, MAX_IO_BYTES)
        # mirror_co_read: and of at most MIN(buf_size, granularity * max_iov)
        self.copy_max = min(self.buf_size, g * MAX_IOV)
        # an iteration claims up to buf_size of consecutive dirty granules
        self.claim_bits = self.buf_size // g
        self.buf_free = self.claim_bits     # free granules of the buffer
        # mirror_iteration's write_zeroes_ok: zeroes are not counted against
        # the speed when the target can write zeroes with unmap
        self.zeroes_free = self.target.discard == "unmap"
        # The iteration in progress: granules [_it_bit, _it_end) of its
        # claim are still to be issued; _it_plan is its next operation as
        # block status made it (bytes, zero), decided before its waits.
        self._it_bit = self._it_end = 0
        self._it_plan = None
        #: Every dirty granule lies in clusters the source has allocated (a
        #: source with no backing file, whose cluster size is a multiple of
        #: the granularity, whose initial bitmap is its allocation): its
        #: block status is then data over any claim (bdrv_block_status_above
        #: on allocated clusters), which the compiled copy loop takes
        #: without asking (blocksim.engine.burst_kernel).  It stays so: a
        #: write allocates its clusters when submitted, before it marks its
        #: granules when it completes, clusters are never freed, and a failed
        #: operation re-dirties a range it had claimed; anything else that
        #: marks an unallocated range clears it (_failed).
        self.dirty_allocated = False
        self._marked_unallocated = False
        self.source = None
        self.bitmap: DirtyBitmap | None = None
        self.in_flight = 0
        self._pausing = False           # headed for its pause point (_pause_point)
        self.bytes_in_flight = 0
        self._ops: dict[int, CopyOperation] = {}   # first bit -> each op in flight
        self._op_starts: list[int] = []      # their first bits, sorted
        # QEMU's ops_in_flight is a list in creation order, and the loop
        # waits on one operation of it (mirror_wait_for_free_in_flight_slot:
        # the first copy in flight; mirror_wait_on_conflicts: the first one
        # over the granule it wants): each operation's place (its ``seq``),
        # the copies in flight by place, oldest first, and the place of the
        # one the loop waits for (-1: none)
        self._op_seq = 0
        self._copies: dict[int, CopyOperation] = {}
        self._awaited = -1
        # Copies booked but waiting for their buffer (mirror_co_read's wait
        # for buf_free_count), in the order they wait: not in flight, not
        # counted, each waiting on a copy in flight (CopyOperation.awaits)
        self._queued: list[CopyOperation] = []
        self._held_by = -1          # what held the granule _start_iteration wanted
        #: The loop runs from its own sleep's timer (the main loop's timers),
        #: not from a completion or a command: see _iteration_sleep
        self._timer_phase = False
        self.synced = False
        self.ret = 0
        self.pivoted = False
        self._cursor = 0
        self._op_done = None
        self._drained = False
        # Copy operations keep their timeouts in the job's own agenda
        # (blocksim.engine.agenda): the loop waits for them without a trip through
        # SimPy's queue, and while it waits for anything else they run by
        # themselves.
        self._agenda: Agenda | None = None
        # write-blocking: the filter in the drive's write path, the active
        # writes not yet settled (in_active_write_counter) and their bytes
        # in flight to the target, the guest writes waiting for a conflict
        # to clear, and actively_synced
        self._filter: ActiveWriteFilter | None = None
        self.active_writes_pending = 0
        self.active_bytes_in_flight = 0
        self._conflict_waiters: list = []
        self.actively_synced = False
        self.active_writes = self.active_bytes = self.active_failed = 0
        #: (time ns, detail) of each poll where an actively synced mirror's
        #: target did not read as its source (invariant active-mirror-in-sync)
        self.sync_violations: list[tuple[int, str]] = []

    def nodes(self) -> list:
        return [self.drive.node, self.target]

    #: mirror_start_job puts mirror_top above the source (active commit too)
    inserts_filter = True

    def error_policies(self) -> dict[str, str]:
        return {"on-source-error": self.on_source_error,
                "on-target-error": self.on_target_error}

    def error_node(self, is_read: bool):
        """A read fails on the source (the job's own device), a write or
        flush on the target, as 2012's ``mirror_error_action`` passed
        ``s->common.bs`` or ``s->target``."""
        return self.drive.node if is_read else self.target

    def qmp_start_command(self) -> str:
        """blockdev-mirror; drive-mirror for a QEMU without it (the 2012
        profile: blockdev-mirror came with QEMU 2.6)."""
        if "blockdev-mirror" in self.profile.newer_commands:
            return "drive-mirror"
        return "blockdev-mirror"

    def qmp_start_arguments(self) -> dict:
        args = super().qmp_start_arguments()
        args.update({"target": self.target.name, "sync": self.sync,
                     "granularity": self.granularity, "buf-size": self.buf_size,
                     "on-source-error": self.on_source_error,
                     "on-target-error": self.on_target_error})
        if self.copy_mode != "background":
            args["copy-mode"] = self.copy_mode
        return args

    def start(self) -> None:
        """blockdev-mirror: the 2012 profile's QMP had no ``copy-mode``
        (drive-mirror of QEMU 1.3): an active mirror is refused as QMP
        refused an unknown argument."""
        if self.copy_mode != "background" and not self.profile.copy_mode:
            self.start_refused = True
            raise CommandError("Invalid parameter 'copy-mode'")
        self._check_root()          # qmp_blockdev_mirror: qmp_get_root_bs first
        super().start()

    @property
    def zero_target(self) -> bool:
        """mirror_start_job's ``zero_target``: a full mirror (drive-mirror,
        blockdev-mirror) starts from a target it may have to zero; an active
        commit (commit_active_start) never does."""
        return self.sync == "full"

    # -- the copy loop -------------------------------------------------------------
    def run(self):
        src = self.source = self.drive.node
        bm = self.bitmap = DirtyBitmap(src.size, self.granularity)
        if self.copy_mode == "background":
            # (QEMU's dirty bitmap exists from mirror_start_job on: guest
            # writes during an initial zeroing pass are tracked)
            src.write_listeners.append(bm)
        else:
            # mirror_start_job: write-blocking disables the bitmap; guest
            # writes go through the job's filter (bs_opaque->job = s)
            self._filter = ActiveWriteFilter(self)
            self.drive.write_filters.append(self._filter)
        if src.size != self.target.size and not self.resizes_target:
            # mirror_run: a target of another size fails the job as it starts
            # (blockdev-mirror itself accepts it), with errp's message
            self.error = "Source and target image have different sizes"
            return -errno.EINVAL
        if self.zero_target and not self.zeroes_free:
            # mirror_dirty_init: a target that cannot write zeroes with
            # unmap (discard=ignore, QEMU's default) gets every byte: the
            # whole device dirty, unallocated ranges written as zeroes
            bm.mark(0, src.size)
        elif self.sync != "none":
            if self.zero_target:
                yield from self._zero_target()
            self._initial_dirty(src, bm)
            # (after the zeroing pass, whose failures dirty unallocated
            # ranges: _failed, which keeps it false for good)
            self.dirty_allocated = (self._marked_unallocated is False and src.backing is None
                                    and src.cluster_size % self.granularity == 0)
        if self.env.shortcuts and self._filter is None:
            self._agenda = Agenda(self.env)
            self._agenda.runner = self._complete_detached
            if burst_kernel.Kernel.applies(self):
                self._agenda.kernel = burst_kernel.Kernel(self)
        while True:
            if self._it_bit >= self._it_end:
                # mirror_run's loop top
                if self.ret:
                    break
                if self.pause_count > 0 or self._drain_pauses:  # (pause_point() checks again)
                    yield from self._pause_point()
                if self.cancelled and not self.completes_on_cancel():
                    break
                if bm.count and self.in_flight < MAX_IN_FLIGHT and self.buf_free:
                    if burst.applies(self):
                        delay = yield from self._copy_burst()
                        if delay:               # (a sleep, or burst.TURN)
                            yield from self._iteration_sleep(max(delay, 0))
                        continue
                    if self._agenda is not None:    # (the operations as objects)
                        self._agenda._objects()
                    if not self._start_iteration():     # an operation in flight there
                        yield from self._wait_op(self._held_by)
                        continue
                else:
                    if self.in_flight:
                        yield from self._wait_op()
                        continue
                    # Nothing in flight from here on, so nothing on the agenda.
                    if not self.synced:
                        # QEMU flushes the target before announcing READY; a
                        # failed flush goes through on-target-error as a write.
                        if (yield from self._flush_target()):
                            continue
                        self._become_ready()
                    # As mirror_run: the guest may have written during the flush.
                    completing = self.should_complete or self.cancelled
                    if completing and not bm.count:
                        yield from self.drive.drain_begin()
                        if bm.count or self.in_flight or (yield from self._flush_target()):
                            self.drive.drain_end()
                            continue
                        self._drained = True
                        break
                    if not completing:
                        if self.actively_synced:
                            self._check_in_sync()
                        if not bm.count:
                            # (the agenda runs itself meanwhile: a guest the
                            # compiled loop runs stays there, blocksim.engine.burst_kernel)
                            self._timer_phase = yield from self._away(self.sleep(SLICE_NS))
                        continue
                    # completing, with data dirtied during the flush: QEMU
                    # sleeps off the rate limit here, the only place a ready
                    # mirror does (only a cancel forced before READY gets
                    # here, and a cancelled job does not sleep)
                    yield from self.ratelimit_sleep(self.limit.delay(self.env.now, 0))
                    continue
            # mirror_iteration: the claim's next operation
            if burst.applies(self):
                delay = yield from self._copy_burst()
                if delay:                       # (a sleep, or burst.TURN)
                    yield from self._iteration_sleep(max(delay, 0))
                continue
            if self._agenda is not None:    # (the operations as objects)
                self._agenda._objects()
            op = self._next_operation()
            if op is None:                  # 16 in flight, or the buffer is full
                yield from self._wait_op()
                continue
            if op is False:                 # the job failed: the claim is dropped
                yield from self._iteration_sleep(0)
                continue
            if op.awaits < 0:               # (else it waits for its buffer)
                op.issue()
            delay = self.throttle(op.counted())
            # mirror_run sleeps once the whole iteration is issued, for the
            # delay of its last operation
            if self._it_bit >= self._it_end:
                yield from self._iteration_sleep(delay)
        while self.in_flight:
            yield from self._wait_op()
        return self.ret

    # -- write-blocking (an active mirror) ----------------------------------------------
    def copies_to_target(self) -> bool:
        """bdrv_mirror_top_do_write's ``copy_to_target``: the job has not
        failed (``s->job->ret >= 0``) and is not cancelled
        (``job_is_cancelled``: forced, or before READY)."""
        return not self.ret and not self.is_cancelled()

    def _conflicts(self, b0: int, b1: int) -> bool:
        """Whether granules ``[b0, b1)`` hold an operation in flight: a
        copy, an active write past its wait, or what the iteration in
        progress has claimed and not issued yet (QEMU's in_flight_bitmap,
        which mirror_iteration sets for its whole claim)."""
        if self._it_bit < self._it_end and self._it_bit < b1 and self._it_end > b0:
            return True
        starts = self._op_starts
        i = bisect_right(starts, b1 - 1)
        # (the operations in flight never overlap: the last one starting
        # before b1 is the only one that can reach b0)
        return bool(i) and self._ops[starts[i - 1]].end_bit > b0

    def _wake_conflicts(self) -> None:
        """Something in flight settled: the guest writes waiting look again."""
        waiters, self._conflict_waiters = self._conflict_waiters, []
        for ev in waiters:
            ev.succeed()

    def _active_settled(self, op: "ActiveWrite") -> None:
        """active_write_settle: the write's granules are free again."""
        self.active_writes_pending -= 1
        if op.registered:
            del self._ops[op.bit]
            self._op_starts.remove(op.bit)
        self._wake_conflicts()
        if op.registered and op.seq == self._awaited:     # (the loop's conflict)
            self._awaited = -1
            self._op_done.succeed()

    def _check_in_sync(self) -> None:
        """Invariant ``active-mirror-in-sync``: at a poll of a ready,
        actively synced mirror nothing is dirty (active_write_settle's
        assertion) and the target reads as the source, but where an active
        write is in flight (its data landed on one side only)."""
        if self.bitmap.count:
            self.sync_violations.append(
                (self.env.now, f"{self.bitmap.dirty_bytes} bytes dirty while actively synced"))
            return
        busy = sorted((op.start, op.end) for op in self._ops.values()
                      if op.__class__ is ActiveWrite)
        for a, b, _l, _r in diff_ranges(self.source.layers(), self.target.layers(), 0,
                                        self.source.size):
            for s, e in busy:           # what the writes in flight cover
                if s <= a < e:
                    a = e
            if a < b:
                self.sync_violations.append(
                    (self.env.now, f"target differs from source at offset {a} "
                                   f"({b - a} bytes) while actively synced"))
                return

    def _zero_target(self):
        """mirror_dirty_init's zeroing of a target that can write zeroes
        with unmap, before a full mirror copies what is allocated: write
        zeroes over the whole target in pieces of at most INT_MAX aligned
        down to the granularity, 16 in flight, waiting for them all.  The
        pass counts neither in progress (``initial_zeroing_ongoing``) nor
        against the speed; a failed piece dirties its range and goes through
        on-target-error as a write (mirror_write_complete)."""
        tgt, size, g = self.target, self.source.size, self.granularity
        piece = INT_MAX // g * g
        pending = deque()           # the pieces in flight, oldest first
        offset = 0
        while offset < size:
            if self.should_pause():     # mirror_throttle's pause point
                while pending:          # (mirror_pause waits for all I/O)
                    yield pending.popleft()
                yield from self.pause_point()
            if self.is_cancelled():
                break
            if len(pending) >= MAX_IN_FLIGHT:
                yield pending.popleft()     # mirror_wait_for_free_in_flight_slot
                continue
            n = min(size - offset, piece)
            err, delay, dropped = tgt.submit_write_zeroes(offset, n)
            ev = self.env.timeout(delay, (offset, n, err, dropped))
            ev.callbacks.append(self._zeroed)
            pending.append(ev)
            offset += n
        while pending:                  # mirror_wait_for_all_io
            yield pending.popleft()

    def _zeroed(self, event) -> None:
        offset, n, err, dropped = event.value
        if err:
            self._failed(offset, offset + n, self.on_target_error, False, err)
        else:
            self.target.complete_write_zeroes(offset, n, dropped)

    def _dirty_layers(self, src) -> list:
        """The layers whose allocation the initial dirty bitmap takes:
        full, the source's whole chain; top, the top layer only."""
        return [src] if self.sync == "top" else src.chain()

    def _initial_dirty(self, src, bm: DirtyBitmap) -> None:
        """mirror_dirty_init's walk of the allocation: every range allocated
        in one of :meth:`_dirty_layers`."""
        for node in self._dirty_layers(src):
            cs = node.cluster_size
            for a, b in node.alloc.runs():
                bm.mark(a * cs, min(b * cs, node.size))

    def _start_iteration(self) -> bool:
        """mirror_iteration's claim: from the next dirty granule after the
        cursor, up to buf-size of consecutive dirty granules, stopping at
        one in flight; they are cleared at once.  False (nothing done) if an
        operation in flight holds the first one (mirror_wait_on_conflicts:
        the loop waits for that one, :attr:`_held_by`)."""
        bm = self.bitmap
        b = bm.next_dirty(self._cursor)
        starts = self._op_starts
        i = bisect_right(starts, b)
        if i:
            holder = self._ops[starts[i - 1]]
            if holder.end_bit > b:
                self._held_by = holder.seq
                return False
        n = bm.dirty_run(b, self.claim_bits)
        if i < len(starts) and starts[i] < b + n:
            n = starts[i] - b
        bm.clear_bits(b, b + n)
        self._cursor = b + n if b + n < bm.nbits else 0
        self._it_bit, self._it_end = b, b + n
        return True

    def _plan(self, b: int) -> tuple:
        """The claim's next operation from granule ``b``, as mirror_iteration
        decides it by the source's block status: ``(bytes, zero)``.  A data
        extent goes in copies of at most ``max_io`` bytes; an extent reading
        as zeros in one write-zeroes (no read, not capped), if it covers
        whole granules and whole target clusters, else in a copy; the last
        operation stops at the device's end (mirror_clip_bytes); a copy
        takes at most ``copy_max`` bytes (mirror_co_read)."""
        g = self.granularity
        start = b * g
        size = self.bitmap.size
        end = self._it_end * g
        data, io = self.source.block_status(start, end if end < size else size)
        if data and io > self.max_io:
            io = self.max_io
        io -= io % g
        zero = False
        if io < g:
            io = g
        elif not data:
            tcs = self.target.cluster_size
            zero = not (start % tcs or io % tcs)
        if io > size - start:
            io = size - start
        if not zero and io > self.copy_max:
            io = self.copy_max
        return io, zero

    def _next_operation(self) -> "CopyOperation | None | bool":
        """Book the claim's next operation (not issued yet); None if the
        loop must first wait for one in flight (16 in flight), False if the
        job has failed (the rest of the claim is dropped, as
        mirror_iteration's ``goto fail``).

        QEMU's mirror_iteration waits for a free slot, then checks for a
        failure, then starts the operation's coroutine, which waits for its
        buffer while the iteration goes on to the next one (mirror_co_read:
        only then is it in flight, counted in ``in_flight``).  A copy whose
        granules are not free in the buffer is so booked and queued
        (:attr:`_queued`, its :attr:`CopyOperation.awaits` set): the caller
        must not issue it; :meth:`_start_queued` does when its buffer is
        free.  (Found by running QEMU 7.2: mirror-buffer-wait-lets-iterations-go-on.)"""
        plan = self._it_plan
        if plan is None:
            plan = self._it_plan = [*self._plan(self._it_bit), False]
        io, zero, performed = plan
        if not performed:
            if self.in_flight >= MAX_IN_FLIGHT:
                return None
            if self.ret:
                self._it_end = self._it_bit
                self._it_plan = None
                if self._conflict_waiters:
                    self._wake_conflicts()
                return False
            plan[2] = True
        g = self.granularity
        b = self._it_bit
        n = -(-io // g)
        queued = not zero and self.buf_free < n
        if not zero and not queued:
            self.buf_free -= n
        self._it_plan = None
        self._it_bit = b + n
        start = b * g
        seq = self._op_seq
        self._op_seq = seq + 1
        op = self._ops[b] = CopyOperation(
            self, b, b + n, start, start + io, self._agenda is not None, zero, seq)
        insort(self._op_starts, b)
        if queued:
            op.awaits = self.oldest_copy()
            self._queued.append(op)
            return op
        self._copies[seq] = op
        self.in_flight += 1
        self.bytes_in_flight += io
        return op

    def _start_queued(self, seq: int) -> None:
        """The copy at place ``seq`` has finished: the copies queued on it
        wake in the order they wait (mirror_iteration_done's
        qemu_co_queue_restart_all) and each takes its buffer if it is free
        now, and is issued, or waits again on the oldest copy in flight."""
        woken = [op for op in self._queued if op.awaits == seq]
        if not woken:
            return
        self._queued = [op for op in self._queued if op.awaits != seq]
        for op in woken:
            n = op.end_bit - op.bit
            if self.buf_free < n:
                op.awaits = self.oldest_copy()
                self._queued.append(op)
                continue
            self.buf_free -= n
            op.awaits = -1
            copies = self._copies
            if copies and next(reversed(copies)) > op.seq:
                # (its place in ops_in_flight is its creation's, before
                # copies started while it waited)
                copies[op.seq] = op
                self._copies = dict(sorted(copies.items()))
            else:
                copies[op.seq] = op
            self.in_flight += 1
            self.bytes_in_flight += op.end - op.start
            op.issue()

    def throttle(self, nbytes: int) -> int:
        """Account ``nbytes`` just issued against ``speed``; the sleep the
        loop then takes, in ns.

        QEMU's mirror counts every operation against the rate limit
        (``block_job_ratelimit_get_delay`` in ``mirror_iteration``), but
        ``mirror_run`` only sleeps for it before READY: once ready, its loop
        sleeps 100 ms when there is nothing to copy and otherwise copies at
        the devices' speed, a final sync after ``complete`` included.  The
        2012 mirror did the same (``if (!s->synced && s->common.speed)``).
        So a slow ``speed`` delays READY but never a ready mirror's
        re-copies."""
        delay = self.limit.delay(self.env.now, nbytes)
        return 0 if self.synced else delay

    def _op_finished(self, op: "CopyOperation") -> None:
        if self._conflict_waiters:
            self._wake_conflicts()
        del self._ops[op.bit]
        del self._copies[op.seq]
        if not op.zero:
            self.buf_free += op.end_bit - op.bit
        self._op_starts.remove(op.bit)
        self.in_flight -= 1
        self.bytes_in_flight -= op.end - op.start
        if self._queued:
            # (they wait ahead of the loop: it queues its own wait after
            # the iteration that queued them)
            self._start_queued(op.seq)
        if op.seq != self._awaited:
            return
        # mirror_iteration_done's qemu_co_queue_restart_all: the loop waits
        # for this one.  (So it runs the agenda: an operation awaited is
        # never done while the agenda runs itself, Agenda.detach.)
        self._awaited = -1
        if op.private:
            # SimPy would now schedule the loop's wake-up
            self._agenda.mark_wake()
            return
        self._op_done.succeed()

    def _pause_point(self):
        """The loop's pause point: QEMU's ``mirror_pause`` first waits for
        the operations in flight (whose errors come before the pause)."""
        self._pausing = True
        while self.in_flight and (self.should_pause() or self.drain_pause_due()):
            yield from self._wait_op()
        self._pausing = False
        if self.should_pause() or self.drain_pause_due():   # (else pause_point() does nothing)
            self._timer_phase = False       # (resumed by a command)
            yield from self._away(self.pause_point())

    def pause_for_error(self) -> None:
        """A ``stop`` action.  QEMU's ``job_pause`` enters a sleeping job
        (its timer cancelled): it heads for its pause point, where
        ``mirror_pause`` waits for the copies in flight."""
        heading = self._sleeping and not self.user_paused
        super().pause_for_error()
        if heading and not self.paused:
            self._pausing = True

    @property
    def drained_by_itself(self) -> bool:
        """mirror_run ends in ``bdrv_drained_begin`` of its source (the
        guest's requests drained before the pivot), which pauses the job
        itself (``child_job_drained_begin`` -> ``job_pause``) until
        ``mirror_exit_common``'s ``bdrv_drained_end`` at finalization: a
        completed mirror (or active commit) waiting for ``job-finalize`` is
        listed ``pending`` and ``paused`` (found by running QEMU 7.2)."""
        return self._drained

    def _pause_if_drained(self) -> None:
        """A failed copy has just finished.  If it was the last one in
        flight and the job is headed for its pause point, the job is paused
        now: in QEMU the copy's completion (mirror_iteration_done) wakes the
        job, which runs through ``mirror_pause`` into ``job_pause_point``
        before the monitor reads the next command, so a query sent on the
        BLOCK_JOB_ERROR of a stop finds ``paused`` (found by running QEMU
        7.2: mirror-stop-error-query-same-instant; blocksim showed
        ``running``, ``paused: true``).  With other copies still in flight
        the job stays ``running`` until they are done."""
        if (self._pausing and not self.in_flight and self.should_pause()
                and not self.paused):
            self._enter_pause()

    def idle(self) -> bool:
        """A sleeping mirror pauses at once only with no copy in flight:
        QEMU's ``mirror_pause`` (``mirror_wait_for_all_io``) waits for them."""
        return self.in_flight == 0

    def _sleep_off(self, ns: int, timer=None):
        """The rate limit's sleep, the operations in flight running by
        themselves meanwhile."""
        return self._away(self.sleep(ns, timer))

    def _away(self, wait):
        """``yield from wait`` (a sleep, a pause): something other than the
        operations in flight, which meanwhile run from the agenda by
        themselves (:meth:`Agenda.detach <blocksim.engine.agenda.Agenda.detach>`)."""
        agenda = self._agenda
        if agenda is None:
            return (yield from wait)
        agenda.detach()
        value = yield from wait
        agenda.attach()
        return value

    def _failed(self, start: int, end: int, policy: str, is_read: bool, err: int) -> None:
        if not self._marked_unallocated and not self.source.is_allocated(start, end):
            # (a write-zeroes of the zeroing pass, or of an unallocated
            # extent: for good, see dirty_allocated)
            self.dirty_allocated = False
            self._marked_unallocated = True
        self.bitmap.mark(start, end)
        self._job_error(policy, is_read, err)

    def _job_error(self, policy: str, is_read: bool, err: int) -> None:
        """Ask the policy engine; the first reported error ends the job.
        (mirror_error_action: the mirror is no longer actively synced.)"""
        self.actively_synced = False
        if self.policy.job_error(self, policy, is_read, err) == REPORT and not self.ret:
            self.ret = err

    def _flush_target(self):
        """Flush the target (generator); returns the errno, 0 on success."""
        self._timer_phase = False
        err = yield from self.target.flush()
        if err:
            self._job_error(self.on_target_error, False, err)
        return err

    def oldest_copy(self) -> int:
        """The place of the oldest copy in flight, the one the loop waits for
        when it waits for a free slot (QEMU's
        mirror_wait_for_free_in_flight_slot waits on the first operation of
        ``ops_in_flight`` that is neither a pseudo operation nor an active
        write).  So an operation finishing before it wakes nobody: a stop
        error on a later copy pauses the job only once the oldest copy is
        done, and an error reported meanwhile ends it instead (found by
        running QEMU 7.2: mirror-stop-then-report-waits-for-oldest-copy)."""
        agenda = self._agenda
        if agenda is not None and agenda.kernel is not None and agenda.kernel.active:
            return agenda.kernel.oldest_copy()      # (the copies are its arrays)
        return next(iter(self._copies))

    def _wait_op(self, seq: int = -1):
        """Wait until the operation at place ``seq`` (by default the oldest
        copy in flight, :meth:`oldest_copy`) finishes."""
        self._awaited = self.oldest_copy() if seq < 0 else seq
        self._timer_phase = False           # (woken by a completion)
        agenda = self._agenda
        if agenda is not None:
            # every operation in flight is on the agenda: run it as a burst
            # (blocksim.engine.burst) until the wake mark
            while burst.copy(self, True, one_wait=True) == burst.WAITING:
                yield agenda.turn()
            return
        ev = self._op_done = self.env.event()
        yield ev
        self._op_done = None

    def _copy_burst(self):
        """Issue and wait in one plain loop (:mod:`blocksim.engine.burst`) until the
        loop has to leave its cycle; returns a rate-limit sleep in ns, or 0.
        (After a callback raised, the agenda's turn never comes.)

        The compiled loop (:mod:`blocksim.engine.burst_kernel`) goes on
        through the loop's sleeps where :meth:`sleeps_through` (the rate
        limit's, and a ready poll's where :meth:`poll_sleeps`) and back to
        its top, as long as SimPy's queue holds nothing before the sleep's
        end.  Asleep when something does (``burst.SLEEPING``), the loop has
        done what :meth:`run` does up to that sleep, and sleeps the rest
        here: the same sleep, its timer under the id the compiled loop drew
        for it."""
        outcome = burst.copy(self, False)
        while outcome == burst.WAITING:
            yield self._agenda.turn()
            outcome = burst.copy(self, True)
        if outcome == burst.SLEEPING:
            t, eid, ns, poll = self._agenda.kernel.timer
            timer = self.env.timeout_at(t, eid, ns)
            if poll:
                self._timer_phase = yield from self._away(self.sleep(ns, timer))
            else:
                yield from self._iteration_sleep(ns, timer)
            return 0
        return outcome

    def _iteration_sleep(self, delay: int, timer=None):
        """mirror_run's ``job_sleep_ns(delay_ns)`` after each iteration:
        the rate limit's delay, or 0 ns (QEMU 7.2's trace shows
        ``mirror_before_sleep ... delay 0ns`` after every iteration).  As
        :meth:`ratelimit_sleep` otherwise: none for a cancelled job, none
        for one asked to pause, then the pause point.

        A sleep of 0 ns lasts until the main loop runs its timers
        (aio_dispatch: bottom halves, then handlers, then timers).  A loop
        that runs from its own sleep's timer wakes on the next turn
        (:data:`MAIN_LOOP_TURN_NS <blocksim.model.faults.MAIN_LOOP_TURN_NS>`
        later), after its bottom halves: a request blkdebug failed meanwhile
        (:attr:`Verdict.next_turn <blocksim.model.faults.Verdict.next_turn>`)
        is acted on before the next iteration.  A loop that runs from an
        operation's completion or a command (:attr:`_timer_phase` false)
        wakes in the same turn's timers, before them: no time, no event,
        its next iteration issued first.  (Found by running QEMU 7.2: a
        report on the first iteration's copy lets a second iteration out,
        not a third, mirror-report-on-first-iteration-lets-a-second-out;
        mirror-stop-then-report-waits-for-oldest-copy.)"""
        if self.is_cancelled():
            return
        if delay or self._timer_phase:
            self._timer_phase = yield from self._sleep_off(delay or MAIN_LOOP_TURN_NS, timer)
        else:
            self._timer_phase = True
        yield from self._pause_point()

    def sleeps_through(self) -> bool:
        """Whether a sleep of the loop (:meth:`ratelimit_sleep`'s, the ready
        poll's) is one, after which the loop goes on from its top: no error
        to end on (``ret``), no pause asked, not cancelled."""
        if self._drain_pauses:
            # drained sections the loop takes at this pause point
            # (Job.drain_blip): Python's to take.  (The command still has
            # its own process's end due at that instant, so the compiled
            # loop would hand the sleep back anyway: SLEEPING; this keeps
            # it so by rule.)
            return False
        return not self.ret and not self.pause_count and not self.cancelled

    def poll_sleeps(self) -> bool:
        """Whether the loop, at its top with nothing dirty and nothing in
        flight, sleeps for its next poll, as :meth:`run` does once ready
        (with :meth:`sleeps_through`): ready and not asked to complete.  (A
        write-blocking mirror, which checks its sync first, has no compiled
        loop: its filter sees every guest write.)"""
        return self.synced and not self.should_complete

    def _complete_detached(self) -> bool:
        """The agenda's runner while the loop is away (a sleep, a pause):
        operations complete in bulk where a burst applies."""
        if not burst.applies(self):
            return False
        burst.copy(self, True, detached=True)
        return True

    def _become_ready(self) -> None:
        if self.copy_mode != "background":
            self.actively_synced = True     # mirror_run, after job_transition_to_ready
        self.synced = True
        self.ready_at = self.env.now
        self._transition("ready")
        self.log.emit("BLOCK_JOB_READY", self._job_event_data())

    # -- verbs and ending --------------------------------------------------------------
    def completes_on_cancel(self) -> bool:
        return self.synced and not self.force_cancel

    def progress_len(self) -> int:
        dirty = self.bitmap.dirty_bytes if self.bitmap is not None else 0
        return self.offset + self.bytes_in_flight + dirty + self.active_bytes_in_flight

    def prepare(self) -> None:
        self._verify()
        if self.should_complete:
            self.drive.node = self.target       # the pivot
            self.pivoted = True
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        # run() registered the listener (or the filter) before anything can
        # end the job; mirror_exit_common takes the filter out
        if self._filter is not None:
            self.drive.write_filters.remove(self._filter)
            self._filter = None
        else:
            self.source.write_listeners.remove(self.bitmap)
        if self._agenda is not None and self._agenda.kernel is not None:
            self._agenda.kernel.close()
        if self._drained:
            self._drained = False
            self.drive.drain_end()

    def _verify(self) -> None:
        """At completion the target must read exactly as the source."""
        diffs = diff_ranges(self.source.layers(), self.target.layers(), 0, self.source.size)
        first = next(diffs, None)
        if first is None:
            self.integrity = "identical"
            return
        total = first[1] - first[0] + sum(b - a for a, b, _l, _r in diffs)
        self.integrity = "differs"
        self.integrity_detail = (f"target differs from source in {total} bytes, "
                                 f"first at offset {first[0]}")


class CopyOperation:
    """One operation of a mirror: a copy (read the source, then write the
    target: ``mirror_co_read``) or, for a range the source's block status
    says reads as zeros, a write-zeroes to the target with no read
    (``mirror_co_zero``).

    QEMU runs each operation as its own coroutine.  Here it is a chain of
    timeouts with callbacks rather than a SimPy process: there are a million
    of them in a 1 TiB mirror, and a process costs two extra events and a
    generator each.  A *private* operation keeps its timeouts on the job's
    agenda (:mod:`blocksim.engine.agenda`) instead of SimPy's queue, in the
    same order.  The device's submit step runs when the operation is issued,
    its complete step when the timeout fires, exactly as in the device's own
    generators.  A copy writes what it read as data, zeros included (QEMU's
    mirror_read_complete: ``blk_co_pwritev``).
    """

    __slots__ = ("job", "bit", "end_bit", "start", "end", "zero", "runs", "how", "private",
                 "seq", "awaits", "_next")

    def __init__(self, job: MirrorJob, bit: int, end_bit: int, start: int, end: int,
                 private: bool, zero: bool, seq: int):
        self.job = job
        self.seq = seq              # its place in ops_in_flight (MirrorJob._copies)
        #: the place of the copy it waits on for its buffer, -1 once it has
        #: it (MirrorJob._next_operation)
        self.awaits = -1
        self.bit, self.end_bit = bit, end_bit      # its granules in the dirty bitmap
        self.start = start
        self.end = end
        self.zero = zero
        self.private = private

    def counted(self) -> int:
        """The bytes mirror_iteration counts against the speed: all but a
        write-zeroes to a target that can write zeroes with unmap."""
        return 0 if self.zero and self.job.zeroes_free else self.end - self.start

    # Each step returns ``(delay, callback, errno)``: what to call when, for
    # the copy loop's agenda (blocksim.engine.burst) or through _after.
    def issue(self) -> None:
        self._after(*(self.submit_zero() if self.zero else self.submit_read()))

    def submit_read(self) -> tuple:
        err, delay = self.job.source.submit_read(self.start, self.end - self.start)
        return delay, (self._read_failed if err else self._read_done), err

    def submit_zero(self) -> tuple:
        err, delay, self.how = self.job.target.submit_write_zeroes(self.start,
                                                                   self.end - self.start)
        self.runs = None
        return delay, (self._write_failed if err else self._write_done), err

    def _after(self, delay: int, callback, err: int) -> None:
        """``callback(err)`` in ``delay`` ns."""
        if self.private:
            self.job._agenda.schedule(delay, callback, err)
            return
        self._next = callback
        self.job.env.timeout(delay, err).callbacks.append(self._fire)

    def _fire(self, event) -> None:
        self._next(event.value)

    def _read_failed(self, err: int) -> None:
        job = self.job
        job._failed(self.start, self.end, job.on_source_error, True, err)
        job._op_finished(self)
        job._pause_if_drained()

    def _read_done(self, _err: int) -> None:
        self._after(*self.read_completed())

    def read_completed(self) -> tuple:
        """The read is done: snapshot what it read, submit the write."""
        job, start, end = self.job, self.start, self.end
        src, tgt = job.source, job.target
        src.complete_read(end - start)
        self.runs = src.read_for_copy(start, end)
        err, delay, self.how = tgt.submit_write(start, end - start)
        return delay, (self._write_failed if err else self._write_done), err

    def _write_failed(self, err: int) -> None:
        if self.runs.__class__ is Snap:     # nothing will paste what it read
            self.runs.forget()
        job = self.job
        job._failed(self.start, self.end, job.on_target_error, False, err)
        job._op_finished(self)
        job._pause_if_drained()

    def _write_done(self, _err: int) -> None:
        self.write_completed()
        self.job._op_finished(self)

    def write_completed(self) -> None:
        """The write is done: what it wrote lands on the target."""
        job, start, end = self.job, self.start, self.end
        if self.runs is None:
            job.target.complete_write_zeroes(start, end - start, self.how)
        else:
            job.target.complete_write(start, end - start, self.runs, self.how)
        job.offset += end - start
        job.bytes_copied += end - start


class ActiveWriteFilter:
    """An active mirror's mirror_top node in its drive's write path
    (:attr:`Drive.write_filters <blocksim.model.drive.Drive.write_filters>`)."""

    __slots__ = ("job",)

    def __init__(self, job: MirrorJob):
        self.job = job

    def prepare_write(self, offset: int, length: int):
        """bdrv_mirror_top_do_write up to the source's write (generator):
        an :class:`ActiveWrite` past its wait, or None when the job no
        longer copies to the target."""
        job = self.job
        if not job.copies_to_target():
            return None
        op = ActiveWrite(job, offset, length)
        job.active_writes_pending += 1         # active_write_prepare
        # mirror_wait_on_conflicts: until nothing in flight holds one of
        # its granules, or the job has failed
        while not job.ret and job._conflicts(op.bit, op.end_bit):
            ev = job.env.event()
            job._conflict_waiters.append(ev)
            yield ev
        if not job._conflicts(op.bit, op.end_bit):
            # bitmap_set(in_flight_bitmap): (a failed job's writer that went
            # on while the granules were held does not mark them)
            op.registered = True
            op.seq = job._op_seq
            job._op_seq += 1
            job._ops[op.bit] = op
            insort(job._op_starts, op.bit)
        return op


class ActiveWrite:
    """A guest write under an active mirror (``MirrorOp`` with
    ``is_active_write``): its granules are in flight from the end of its
    wait until it settles; it counts in neither the 16 copies in flight nor
    the buffer."""

    __slots__ = ("job", "start", "end", "bit", "end_bit", "registered", "seq")

    def __init__(self, job: MirrorJob, offset: int, length: int):
        g = job.granularity
        self.job = job
        self.start, self.end = offset, offset + length
        self.bit, self.end_bit = offset // g, -(-(offset + length) // g)
        self.registered = False

    def after_write(self, gen: int, err: int):
        """The source's write is done (``err`` its errno): the copy to the
        target when it succeeded (do_sync_target_write), then
        active_write_settle (generator)."""
        job = self.job
        if not err:
            yield from self._sync_target_write(gen)
        job._active_settled(self)

    def _sync_target_write(self, gen: int):
        """do_sync_target_write for MIRROR_METHOD_COPY."""
        job = self.job
        bm, g = job.bitmap, job.granularity
        offset, end = self.start, self.end
        if offset % g and bm.is_dirty(offset // g):
            # a dirty unaligned head: left to the copy loop
            offset = offset - offset % g + g
            if offset >= end:
                return
        if end % g and bm.is_dirty((end - 1) // g):
            # a dirty unaligned tail, likewise
            end -= end % g
            if end <= offset:
                return
        # the granules it covers whole are clean now (the tails are either
        # clean or cut off)
        b0, b1 = -(-offset // g), end // g
        if b0 < b1:
            bm.clear_bits(b0, b1)
        n = end - offset
        job.active_bytes_in_flight += n
        job.active_writes += 1
        tgt = job.target
        err, delay, how = tgt.submit_write(offset, n)
        yield job.env.timeout(delay)
        job.active_bytes_in_flight -= n
        if not err:
            tgt.complete_write(offset, n, gen, how)
            job.offset += n
            job.active_bytes += n
            return
        # the whole area, aligned out, is dirty again
        job.active_failed += 1
        bm.mark(offset - offset % g, end)
        job._job_error(job.on_target_error, False, err)


# What the engine's copy loops (blocksim.engine.burst, burst_kernel) take
# from the job they run, since the engine imports no job module.
MirrorJob.copy_operation = CopyOperation
MirrorJob.max_in_flight = MAX_IN_FLIGHT
