"""The backup job: a point-in-time copy of a drive's disk while the guest runs.

Modelled on QEMU 7.2's ``blockdev-backup`` (``block/backup.c``) with its
copy engine (``block/block-copy.c``) and copy-before-write filter
(``block/copy-before-write.c``):

1. **Start** (``backup_job_create``, ``backup_init_bcs_bitmap``).  The job is
   created in a drained section: no guest request is in flight when its
   *copy bitmap* is made, at the block-copy cluster size (the larger of
   64 KiB and the target's cluster size): every cluster for ``full`` and
   ``none``, the clusters the top image allocates for ``top``, the named
   bitmap's dirty clusters for ``bitmap`` (``incremental`` is ``bitmap`` with
   ``bitmap-mode=on-success``).  That instant is the backup's point in time.
   The drain shows as ``paused`` then ``running`` right after ``running``,
   at every start.  A named bitmap the job uses is frozen then, after the
   drain (a write in flight at the command lands in the bitmap itself): new
   writes go to its successor.
2. **Copy-before-write** (``cbw_do_copy_before_write``).  The job installs a
   filter in the drive's write path.  A guest write first copies the
   still-dirty clusters it touches (whole block-copy clusters) to the
   target, waiting for a copy of the job already in flight there; the copy
   ignores ``speed`` but counts against it and towards ``offset``.  If that
   copy fails, the guest's write fails with its errno and the source is not
   changed (QEMU 7.2's blockdev-backup has no ``on-cbw-error``: a backup's
   filter always breaks the guest write); the job sees nothing (no
   BLOCK_JOB_ERROR), the cluster stays dirty.  The filter goes when the job
   ends (success, error or cancel).
3. **The background copy** (``backup_loop``, ``block_copy_dirty_clusters``).
   One *call* copies every dirty cluster from offset 0 upwards in tasks of up
   to 1 MiB (a task ends where the source's block status changes: over a
   backing chain, where any layer down to the one holding the data changes
   its allocation, as ``bdrv_block_status_above``; a zero task is a
   write-zeroes on the target and reads nothing), at most 64 in
   flight, throttled by ``speed`` before each task; it passes again until
   nothing is dirty.  The first task to fail ends the call once the tasks in
   flight are done (their copies count), its range dirty again: **one**
   BLOCK_JOB_ERROR per failed call, through the policy engine with
   ``on-source-error`` (reads) or ``on-target-error`` (writes, write-zeroes):
   ``report`` fails the job; ``ignore`` starts a new call at once (a
   persistent fault is an endless retry until cancelled); ``stop`` pauses
   the job, and resuming starts a new call from offset 0 over whatever is
   still dirty.  A pause cancels the call (the tasks in flight finish
   first); the resume starts a new one.  So does the blip of another job's
   drained section, which drops an error the call held but had not
   reported yet (asleep in the rate limit): its clusters are retried.  ``sync=none`` copies nothing by
   itself and runs until cancelled.
4. **The end.**  No READY and no ``complete``; a cancel is always a forced
   one (``backup_cancel``).  A used bitmap is settled
   (``backup_cleanup_sync_bitmap``): ``on-success`` installs the successor
   on success and merges it back on failure or cancel; ``always`` installs
   it in both cases, on failure adding the clusters not copied; ``never``
   merges it back.  On success the run checks that the target holds, in
   every cluster the job was to copy, what the source held at the point in
   time (not the source at the end).

Not modelled: compression itself (``compress`` only makes every task one
cluster, as ``block_copy_chunk_size``), ``x-perf``, ``filter-node-name``, the allocation scan of ``sync=top``
(done at once; QEMU's ``len`` shrinks while it scans).  Every start (refused
or not) and end blips the other jobs it drains (``drained_section`` in
blocksim.jobs.base: all of them, then those on its disk; at the end, the
backups stacked above it).  A second backup of a
source a backup is using stacks a second filter, as in QEMU (its filter
goes under the first one's, so a guest write copies to the first target,
then the second): the job op-blocks only its target (``held_nodes``).
"""

from __future__ import annotations

import errno as _errno
from functools import partial
from itertools import count

import numpy as np

from ..engine import PENDING, Compiled, Event, Snap, Steps, copyloop
from ..model.bitmap import BLOCK, BLOCK_SHIFT, COUNT_BITS, DirtyBitmap
from ..model.extents import ExtentMap, diff_ranges, run_arrays
from ..model.named_bitmap import dirty_ranges, merge_into
from ..model.policy import REPORT, STOP
from ..errors import CommandError
from .base import BlockJob, drain_all

#: What :meth:`BackupJob._next_task` returns after the rate limit's sleep.
_SLEPT = object()
#: with steps, the pass's rate-limit wake-ups resumed at once, and those
#: that would only sleep again not resumed (BackupJob._sleep_over); tests
#: switch it off to compare
SLEEPS = True

CLUSTER_DEFAULT = 64 * 1024          # BLOCK_COPY_CLUSTER_SIZE_DEFAULT
CHUNK = 1024 * 1024                  # BLOCK_COPY_MAX_BUFFER: a read/write task
MAX_WORKERS = 64                     # BLOCK_COPY_MAX_WORKERS


def cluster_size(target) -> int:
    """``block_copy_calculate_cluster_size``: 64 KiB, or the target's
    cluster size if larger (a raw target has none: 64 KiB)."""
    if target.format == "qcow2":
        return max(CLUSTER_DEFAULT, target.cluster_size)
    return CLUSTER_DEFAULT


class _Task:
    """A block-copy task: clusters ``[start, end)``, cleared from the copy
    bitmap while in flight (``BlockCopyTask``); ``seq``: its place in the
    job's list of tasks (``BlockCopyState.tasks``, in creation order)."""

    __slots__ = ("start", "end", "zero", "done", "pool", "waited", "checked", "seq")

    def __init__(self, env, start: int, end: int, seq: int):
        self.start = start
        self.end = end
        self.seq = seq
        self.zero = False
        self.done = Event(env)
        # (with steps: the pool it is in, whether a block-copy call waits
        # for it, the pool's wait that has a check of its own on it)
        self.pool = None
        self.waited = False
        self.checked = 0


class _Pool:
    """With steps (blocksim.engine.steps), a pass's pool of tasks as
    :func:`_any_done` sees it, without a check on every task at every wait:
    each task has one check (``BackupJob._pool_check``), first among its
    ``done`` event's callbacks, which serves every wait of the pool; only a
    task another call waits for gets a check of its own at each wait, after
    that waiter, as ``_any_done`` registers them.

    The pool is a count: the compiled loop's tasks are rows with no object
    (blocksim.engine.copyrows), so ``tasks`` and ``ended`` list only the
    pool's tasks Python holds, ``ended_rows`` counts the rows' ended ones,
    and ``task`` is ``copyrows.ROW`` while the waiting task is a row."""

    __slots__ = ("ev", "wait", "processed", "waited", "ended", "call", "end", "pos",
                 "tasks", "task", "count", "ended_rows")

    def __init__(self, call=None, start: int = 0, end: int = 0):
        self.ev = None          # the wait's event, while the pass waits
        self.wait = 0           # how many waits so far
        self.processed = 0      # tasks in the pool whose done was processed
        self.waited: list = []  # tasks in the pool some call waits for
        self.ended: list = []   # tasks of the pool ended (done triggered)
        # the pass's own state (the locals of block_copy_dirty_clusters),
        # here so that the compiled loop (blocksim.engine.copyloop) can
        # carry the pass on while it waits for a slot
        self.call = call
        self.end = end
        self.pos = start        # where the next task is searched from
        self.count = 0          # the pool (aio_task_pool): tasks started
        self.tasks: list = []   # those of them Python holds, in order (seq)
        self.ended_rows = 0     # the pool's ended tasks that are rows
        self.task = None        # the task made, waiting for a slot


#: blocks of a bitmap made dense at a time by :func:`_range_arrays` (1 MiB)
_DENSE_BLOCKS = 2048


#: compiled with numba on first use (engine/compiled.py), without numba's
#: runtime (nothing is allocated)
njit = Compiled(globals())


@njit(cache=True, _nrt=False)
def _mismatch_step(x0, x1, src_starts, src_values, tgt_starts, tgt_values, pit_starts,
                   pit_values, seen_starts, seen_ends, w):
    """:meth:`BackupJob._mismatch` over ``[x0, x1)``: the bytes where the
    target's value differs from the expected one (the witness's inside a
    witnessed range, else the source's), and the lowest such offset (-1:
    none).  Each map's runs as ``run_arrays`` gives them (run ``k`` from
    ``starts[k]`` to the next start, the last to ``x1``; runs from ``x1``
    on, read past the step, are not looked at); the witnessed
    ranges ``[seen_starts[i], seen_ends[i])`` sorted and disjoint, ``w`` the
    first that ends past ``x0``.  One walk over every edge of them all in
    order, each segment between two edges compared once."""
    total = 0
    first = -1
    i = j = k = 0
    ns, nt, npit, nw = len(src_starts), len(tgt_starts), len(pit_starts), len(seen_starts)
    pos = x0
    while pos < x1:
        while i + 1 < ns and src_starts[i + 1] <= pos:
            i += 1
        while j + 1 < nt and tgt_starts[j + 1] <= pos:
            j += 1
        while k + 1 < npit and pit_starts[k + 1] <= pos:
            k += 1
        while w < nw and seen_ends[w] <= pos:
            w += 1
        edge = x1
        if i + 1 < ns and src_starts[i + 1] < edge:
            edge = src_starts[i + 1]
        if j + 1 < nt and tgt_starts[j + 1] < edge:
            edge = tgt_starts[j + 1]
        if k + 1 < npit and pit_starts[k + 1] < edge:
            edge = pit_starts[k + 1]
        witnessed = False
        if w < nw:
            if seen_starts[w] <= pos:
                witnessed = True
                if seen_ends[w] < edge:
                    edge = seen_ends[w]
            elif seen_starts[w] < edge:
                edge = seen_starts[w]
        expected = pit_values[k] if witnessed else src_values[i]
        if expected != tgt_values[j]:
            total += edge - pos
            if first < 0:
                first = pos
        pos = edge
    return total, first


@njit(cache=True, _nrt=False)
def _close_run(starts, ends, n, run, end):
    """Row ``n`` of ``starts`` and ``ends`` the run ``[run, end)``: the
    next row, or -1 if there is no room for this one."""
    if n == starts.shape[0]:
        return -1
    starts[n] = run
    ends[n] = end
    return n + 1


#: eight granules of a bitmap's pool read as one word: all clean, all dirty
#: (uint64, as the words: numba compares a uint64 with an int64 as floats,
#: which cannot tell 0x0101010101010100 from this)
_CLEAN8 = np.uint64(0)
_DIRTY8 = np.uint64(0x0101010101010101)


@njit(cache=True, _nrt=False)
def _dirty_runs(bits, words, summary, nbits, starts, ends):
    """The runs of dirty granules of a bitmap's ``bits`` (its pool, one
    byte a granule, and the same memory as 64-bit ``words``) and
    ``summary`` (per block: 0 clean, ``BLOCK`` all dirty, else the count
    and the slot of its bytes in the pool) up to granule ``nbits``, into
    ``starts`` and ``ends`` (granules); how many, or -1 if they hold too
    few rows.  A mixed block's granules are read eight at a time where
    they are all clean or all dirty (a slot starts on a word: ``BLOCK``
    granules a slot), byte by byte only in a word that holds an edge: a
    backup's witness at the end of (d)'s copy is 16 M granules, most of
    them in mixed blocks, with a run per cluster a guest wrote."""
    n = 0
    run = -1                            # (the open run's first granule)
    nwords = words.shape[0]
    for blk in range(summary.shape[0]):
        v = summary[blk]
        base = blk << BLOCK_SHIFT
        if base >= nbits:
            break
        if v == 0:
            if run >= 0:
                n = _close_run(starts, ends, n, run, base)
                if n < 0:
                    return -1
                run = -1
        elif v == BLOCK:
            if run < 0:
                run = base
        else:
            slot = (v >> COUNT_BITS) << BLOCK_SHIFT
            lim = min(BLOCK, nbits - base)
            i = 0
            while i < lim:
                # (a whole word of alike granules is one step: its first says)
                step = 1
                if (i & 7) == 0 and i + 8 <= lim and (slot + i + 8) >> 3 <= nwords:
                    w = words[(slot + i) >> 3]
                    if w == _CLEAN8 or w == _DIRTY8:
                        step = 8
                if bits[slot + i]:
                    if run < 0:
                        run = base + i
                elif run >= 0:
                    n = _close_run(starts, ends, n, run, base + i)
                    if n < 0:
                        return -1
                    run = -1
                i += step
    if run >= 0:
        n = _close_run(starts, ends, n, run, nbits)
    return n


def _range_arrays(bits: DirtyBitmap) -> tuple[np.ndarray, np.ndarray]:
    """``dirty_ranges(bits)`` as two int64 arrays, the starts and the ends:
    one compiled walk over the blocks (:func:`_dirty_runs`, a row per run,
    at most one per dirty granule), else with numpy: the blocks with a
    dirty granule made dense (a mixed block's bytes, an all-dirty block's
    ones) a slice at a time, their runs found by differences and joined
    across slices.  The same ranges, without a Python step per run (a
    backup's witness has one per cluster a guest write touched: a million
    in (d)'s hour)."""
    granules, words, summary, _blocks, _bw = bits.arrays()
    starts, ends = np.empty(bits.count + 1, np.int64), np.empty(bits.count + 1, np.int64)
    n = _dirty_runs(granules, words, summary, bits.nbits, starts, ends)
    if n >= 0:
        # (granules to bytes in place: no more arrays of a million rows)
        g = bits.granularity
        starts, ends = starts[:n], ends[:n]
        starts *= g
        ends *= g
        np.minimum(ends, bits.size, out=ends)
        return starts, ends
    return _range_arrays_dense(bits)


def _range_arrays_dense(bits: DirtyBitmap) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_range_arrays` with numpy (see there)."""
    nblocks, nbits = len(bits.blocks), bits.nbits
    starts, ends = [], []
    for c0 in range(0, nblocks, _DENSE_BLOCKS):
        c1 = min(c0 + _DENSE_BLOCKS, nblocks)
        dense = bits.dense(c0, c1)         # (a mixed block's bytes are in its slot)
        if dense is None:
            continue
        flat = dense.reshape(-1)[:max(nbits - (c0 << BLOCK_SHIFT), 0)].astype(np.int8)
        step = np.diff(flat, prepend=np.int8(0), append=np.int8(0))
        starts.append(np.flatnonzero(step == 1) + (c0 << BLOCK_SHIFT))
        ends.append(np.flatnonzero(step == -1) + (c0 << BLOCK_SHIFT))
    if not starts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    b = np.concatenate(starts).astype(np.int64)
    e = np.concatenate(ends).astype(np.int64)
    # (a run cut at a slice's edge continues in the next slice)
    keep = np.ones(len(b), dtype=np.bool_)
    keep[1:] = b[1:] != e[:-1]
    b = b[keep]
    e = e[np.append(keep[1:], True)]
    g = bits.granularity
    return b * g, np.minimum(e * g, bits.size)


def _serve(node, t: int, done: int, nbytes: int) -> None:
    """``node._service_done(t, nbytes)`` of a request the caller knows
    completes at ``done``: on a node idle by ``t`` (every slot free) the
    request is alone in its queue and pipe, set directly."""
    if node._pipe_free <= t:
        slots = node._slots
        slots.clear()
        slots.append(done)
        node._pipe_free = done
    else:
        node._service_done(t, nbytes)


def _any_done(env, tasks: list):
    """An event that succeeds with the first of the tasks' ``done`` events
    to be processed: ``env.any_of`` as it schedules (the same event,
    triggered at the same moment, so the same id), without the condition's
    bookkeeping of values.  A done event already processed triggers it at
    once, as Condition.__init__ checks each event in turn.  (With steps,
    blocksim.engine.steps, the pool waits as _Pool says.)"""
    ev = env.event()

    def check(_event, ev=ev):
        if not ev.triggered:
            ev.succeed()
    for task in tasks:
        done = task.done
        if done.callbacks is None:
            check(done)
            break
        done.callbacks.append(check)
    return ev


class _Pieces(list):
    """With steps, what a task read across a page boundary of a journaled
    source: one read per page (``ExtentMap.snapshot``, a journal ``Snap``
    that settles nothing), pasted one after the other when the write
    completes.  The same content as one read of the whole range, which
    settles both pages first (``ExtentMap.snapshot``'s path for a range
    across pages), about 2 ms each on a page the guest writes."""

    __slots__ = ()

    def joined(self) -> list:
        """The content read, as one list of runs (the pieces consumed)."""
        out = []
        for piece in self:
            if piece.__class__ is Snap:
                out.extend(piece.runs())
                piece.forget()
            elif piece.__class__ is list:
                out.extend(piece)
            else:
                out.extend(piece.runs())
        return out


class _Call:
    """A block-copy call (``BlockCopyCallState``): the job's background pass
    or one guest write's copy-before-write."""

    __slots__ = ("cancelled", "finished", "err", "is_read", "sleep", "sleep_over", "done",
                 "copied")

    def __init__(self, env):
        self.copied = 0                 # bytes its own tasks copied
        self.cancelled = False
        self.finished = False
        self.err = 0
        self.is_read = False
        self.sleep = None
        #: the timer's callback of the rate-limit sleep (BackupJob._call_sleep)
        self.sleep_over = None
        self.done = Event(env)

    def kick(self) -> None:
        """``block_copy_kick``: end a rate-limit sleep now."""
        if self.sleep is not None and not self.sleep.triggered:
            self.sleep.succeed()


class BackupJob(BlockJob):
    job_type = "backup"
    Task = _Task
    integrity_invariant = "backup-point-in-time"

    def __init__(self, sim, job_id: str, spec):
        super().__init__(sim, job_id, spec)
        self.target = sim.devices[spec.target]
        self.sync_arg: str = spec.sync
        # do_backup_common: incremental is bitmap with on-success
        self.sync = "bitmap" if spec.sync == "incremental" else spec.sync
        self.bitmap_name: str | None = spec.bitmap
        self.bitmap_mode: str | None = spec.bitmap_mode or (
            "on-success" if spec.sync == "incremental" else None)
        self.on_source_error: str = spec.on_source_error
        self.on_target_error: str = spec.on_target_error
        self.compress: bool = spec.compress
        self.cluster = cluster_size(self.target)
        self.source = None
        self.size = 0
        self.sync_bitmap = None             # the named bitmap the job froze
        self.bcs: DirtyBitmap | None = None     # the copy bitmap
        self.in_flight_bytes = 0
        # tasks in flight, of every call, in creation order (seq): those
        # Python holds (the compiled loop's are rows, copyloop._rows)
        self._tasks: list[_Task] = []
        self._seq = count()                 # (the next task's seq)
        self._rows = None
        self._call: _Call | None = None     # the background call
        self._filtering = False
        # the point in time, for the end-of-job check: the source's content of
        # each cluster a guest write touched, taken before the first such write
        self._copy_set: list[tuple[int, int]] = []
        self._pit: ExtentMap | None = None
        # what _holds_data knows of the source's pages, and when
        self._data_pages = bytearray()
        self._data_stamp = self._data_zeroed = None
        self._data_map = self._data_index = None
        self._known_views = (None, None)    # (_known_view: the cache, its array)
        self._seen: DirtyBitmap | None = None
        #: the tasks' steps out of SimPy's queue, under SimPy's keys
        #: (blocksim.engine.steps), or None: each task a SimPy process
        self._steps = Steps(sim.env) if sim.env.shortcuts else None
        # the task steps as callbacks of their own (one object each, so
        # that the steps can tell them: blocksim.engine.copyloop takes them)
        self._begin_step = self._task_begin
        self._read_step = self._task_read
        self._write_step = self._task_written
        self._pass: _Pool | None = None     # the background call's pass
        if self._steps is not None:
            copyloop.attach(self, self._steps)
        # the target's clusters written by copies of a quiet stretch, not
        # allocated yet (quiet_end): single clusters, ranges
        self._quiet_allocs: list = []
        self._quiet_ranges: list = []
        self._kernel_allocs = None          # (blocksim.engine.backup_kernel's)
        self._planners: dict = {}           # (blocksim.engine.backup_kernel.planner's)
        # copy-before-write figures (summary)
        self.cbw_copies = 0
        self.cbw_bytes = 0
        self.cbw_failures = 0

    def nodes(self) -> list:
        return [self.drive.node, self.target]

    def held_nodes(self) -> list:
        """backup_job_create op-blocks its main node, the copy-before-write
        filter, and the target, not the source below the filter: a second
        backup of the same source (to another target) stacks a second
        filter, and a stream of it is accepted (checked on QEMU 7.2:
        backup-twice-one-drive)."""
        return [self.target]

    inserts_filter = True           # bdrv_cbw_append above the source

    def error_policies(self) -> dict[str, str]:
        return {"on-source-error": self.on_source_error,
                "on-target-error": self.on_target_error}

    def qmp_start_command(self) -> str:
        return "blockdev-backup"

    def qmp_start_arguments(self) -> dict:
        args = super().qmp_start_arguments()
        args.update({"target": self.target.name, "sync": self.sync_arg})
        if self.bitmap_name is not None:
            args["bitmap"] = self.bitmap_name
        if self.spec.bitmap_mode is not None:
            args["bitmap-mode"] = self.spec.bitmap_mode
        args.update({"compress": self.compress, "on-source-error": self.on_source_error,
                     "on-target-error": self.on_target_error})
        return args

    # -- start ------------------------------------------------------------------------
    def start(self) -> None:
        """``qmp_blockdev_backup``: a transaction of this one action
        (``blockdev_do_action`` -> ``qmp_transaction``): every node drained,
        then the action's prepare (:meth:`create`) and commit (:meth:`begin`)."""
        if not self.profile.has_backup:
            self.start_refused = True
            raise CommandError("The command blockdev-backup has not been found",
                               "CommandNotFound")
        # qmp_transaction drains every node (bdrv_drain_all): every other
        # job blips (the new job's own blip is run()'s)
        drain_all(self.sim)
        self.create()
        self.begin()

    def create(self) -> None:
        """``blockdev_backup_prepare``: the source drained for the whole
        action, refusals included (a second blip of the jobs on it), the
        checks QMP makes at run time (the static ones are the scenario's),
        then ``backup_job_create``."""
        self.drained_section("disk")
        bitmap = None
        if self.bitmap_name is not None:
            # do_backup_common
            bitmap = self.drive.node.bitmaps.get(self.bitmap_name)
            if bitmap is None:
                self.start_refused = True
                raise CommandError(f"Bitmap '{self.bitmap_name}' could not be found")
            if bitmap.busy:
                self.start_refused = True
                raise CommandError(f"Bitmap '{self.bitmap_name}' is currently in use by "
                                   "another operation and cannot be used")
        super().create()
        if bitmap is not None:
            # backup_job_create: the successor is made with the job
            bitmap.create_successor()
            self.sync_bitmap = bitmap

    def run(self):
        drive = self.drive
        # The job starts in a drained section (QEMU's transaction): requests
        # in flight finish first, and the job pauses until the drain ends.
        self._transition("paused")
        yield from drive.drain_begin()
        self._setup()
        self._transition("running")
        drive.drain_end()
        if self.sync == "none":
            # backup_run: the filter does the copies; wait for the cancel
            while not self.is_cancelled():
                if self.should_pause():
                    yield from self.pause_point()
                else:
                    yield from self._wait()
            return 0
        return (yield from self._loop())

    def _setup(self) -> None:
        """The point in time: the copy bitmap, the filter, the witness."""
        src = self.source = self.drive.node
        self.size = size = src.size
        cs = self.cluster
        if self.sync_bitmap is not None:
            # QEMU freezes the bitmap after the command's drain: the guest
            # writes in flight at the command landed before, in the bitmap
            # itself, not in its successor (found by running QEMU 7.2:
            # backup-bitmap-write-in-flight-at-start, fz7-119)
            self.sync_bitmap.reclaim()
            self.sync_bitmap.create_successor()
        bcs = self.bcs = DirtyBitmap(size, cs)
        if self.sync in ("full", "none"):
            bcs.mark(0, size)
        elif self.sync == "top":
            scs = src.cluster_size
            for a, b in src.alloc.runs():
                bcs.mark(a * scs, min(b * scs, size))
        else:
            merge_into(bcs, self.sync_bitmap.bits)
        self._copy_set = list(dirty_ranges(bcs))
        # (on the source's journal, when it has one: the witness pastes
        # what the source held without settling its page, as a copy does)
        content = src.content
        self._pit = ExtentMap(size, content._shift, journal=content._journal)
        self._seen = DirtyBitmap(size, cs)
        self.drive.write_filters.append(self)
        self._filtering = True

    # -- the background copy (backup_loop) ------------------------------------------
    def _loop(self):
        while True:
            call = self._call = _Call(self.env)
            self.env.process(self._background(call))
            while not call.finished and not self.is_cancelled():
                if self.should_pause():
                    yield from self.pause_point()
                else:
                    yield from self._wait()         # job_yield
            if not call.finished:
                # cancelled: stop the call, wait for its tasks in flight
                call.cancelled = True
                call.kick()
                yield call.done
                return 0
            self._call = None
            if self.is_cancelled() or (not call.cancelled and not call.err):
                return 0
            if call.cancelled:
                continue                # a pause ended the call: a new one
            is_read = call.is_read
            policy = self.on_source_error if is_read else self.on_target_error
            action = self.policy.job_error(self, policy, is_read, call.err)
            if action == REPORT:
                return call.err
            if action == STOP:
                yield from self.pause_point()
            # ignore: a new call at once

    def _background(self, call: _Call):
        """One call over the whole disk; enters the job when finished."""
        yield from self._block_copy(call, 0, self.bcs.nbits * self.cluster, True)
        call.finished = True
        call.done.succeed()
        self._enter()

    def pause_point(self):
        """``job_pause_point`` with ``backup_pause``: a pause first cancels
        the background call and waits for its tasks in flight."""
        if not self.should_pause():
            yield from super().pause_point()    # (drained sections, Job.drain_blip)
            return
        call = self._call
        if call is not None and not call.finished:
            call.cancelled = True
            call.kick()
            yield call.done
        yield from super().pause_point()

    def drain_blip(self) -> None:
        """A drained section of another job's start or end pauses the backup
        for real: ``job_pause`` enters it, and ``job_yield`` ->
        ``job_pause_point`` -> ``backup_pause`` cancels the background call
        (its rate-limit sleep kicked, ``block_copy_call_cancel``) before the
        job shows ``paused``; resumed, ``backup_loop`` finds the call
        cancelled and starts a new one from offset 0.  So an error the call
        held but had not reported yet (a failed task whose call was asleep
        in the rate limit) is dropped, and its clusters, dirty again, are
        retried (found by running QEMU 7.2: grammar 7, fz7-7; a refused
        blockdev-backup's ``bdrv_drain_all`` is enough)."""
        if not (self.paused or self.pause_count or self.is_cancelled()):
            call = self._call
            if call is not None and not call.finished:
                call.cancelled = True
                call.kick()
        super().drain_blip()

    def idle(self) -> bool:
        """A waiting backup pauses at once only without a background call
        running: ``backup_pause`` cancels it and waits for it to finish."""
        return self._call is None or self._call.finished

    def set_speed(self, speed: int) -> None:
        """``backup_set_speed``: the new limit, and the call's rate-limit
        sleep is kicked."""
        super().set_speed(speed)
        if self._call is not None:
            self._call.kick()

    # -- block-copy ------------------------------------------------------------------------
    def _block_copy(self, call: _Call, start: int, end: int, ratelimit: bool):
        """``block_copy_common`` over ``[start, end)`` (cluster-aligned):
        passes until nothing there is dirty or in flight; sets ``call.err``
        on failure."""
        while True:
            found = yield from self._dirty_clusters(call, start, end, ratelimit)
            if call.err or call.cancelled:
                return
            if not found:
                task = self._in_flight(start, end)
                if task is not None:
                    if task.pool is not None and not task.waited:
                        task.waited = True      # (see _Pool)
                        task.pool.waited.append(task)
                    yield task.done             # it may fail: look again
                elif self.bcs.find(start // self.cluster, -(-end // self.cluster)) < 0:
                    return

    def _dirty_clusters(self, call: _Call, start: int, end: int, ratelimit: bool):
        """``block_copy_dirty_clusters``: one pass; whether it found anything."""
        env = self.env
        steps = self._steps
        if steps is not None:
            return (yield from self._dirty_clusters_steps(call, start, end, ratelimit))
        pool: list[_Task] = []
        found = False
        pos = start
        while pos < end and not call.err and not call.cancelled:
            task = yield from self._next_task(call, pos, end, ratelimit)
            if task is None:
                break
            found = True
            if task is _SLEPT:
                continue
            pos = task.end
            while len(pool) >= MAX_WORKERS:          # aio_task_pool_wait_slot
                yield _any_done(env, pool)
                pool = [t for t in pool if not t.done.triggered]
            pool.append(task)
            env.process(self._task_run(call, task))
        for task in pool:                            # aio_task_pool_wait_all
            if not task.done.triggered:
                yield task.done
        return found

    def _next_task(self, call: _Call, pos: int, end: int, ratelimit: bool):
        """block_copy_dirty_clusters' next task from ``pos`` (generator):
        the task, its block status known and its bytes counted against the
        speed; None when nothing from ``pos`` on is dirty; or :data:`_SLEPT`
        when the rate limit asked for a sleep first (the task ended with
        EAGAIN, the pass slept and looks again)."""
        if ratelimit and self._steps is not None and self.limit.speed:
            # (with steps: a sleep the limiter asks for before a task there
            # is, without making the task only to end it: its bits cleared
            # and set again, its status, and its done, which no one waits
            # for, whose id is drawn all the same; delay(now, 0) asks the
            # same twice)
            cs = self.cluster
            if self.bcs.find(pos // cs, -(-end // cs)) >= 0:
                ns = self.limit.delay(self.env._now, 0)
                if ns > 0:
                    next(self.env._eid)
                    yield from self._call_sleep(call, ns)
                    return _SLEPT
        task = self._task_create(pos, end)
        if task is None:
            return None
        self._block_status(task)
        if ratelimit:
            ns = self.limit.delay(self.env._now, 0)
            if ns > 0:
                self._task_end(task, _errno.EAGAIN)
                yield from self._call_sleep(call, ns)
                return _SLEPT
        self.limit.delay(self.env._now, task.end - task.start)
        return task

    def _dirty_clusters_steps(self, call: _Call, start: int, end: int, ratelimit: bool):
        """:meth:`_dirty_clusters` with steps (blocksim.engine.steps): the
        same calls in the same order, the pass's state in its :class:`_Pool`
        (where the compiled loop, blocksim.engine.copyloop, may carry the
        background call's pass on while it waits for a slot)."""
        env = self.env
        steps = self._steps
        pooled = _Pool(call, start, end)
        if ratelimit and call is self._call:
            self._pass = pooled
        found = False
        # (resumed from its rate-limit sleep, not yielded since: see below)
        woke = False
        while pooled.pos < end and not call.err and not call.cancelled:
            if pooled is self._pass and copyloop.fill(self, pooled, woke):
                # (the tasks below, made in one go: blocksim.engine.copyloop)
                found = True
                task = pooled.task
                if task is None:
                    continue
            else:
                task = yield from self._next_task(call, pooled.pos, end, ratelimit)
                if task is None:
                    break
                found = True
                if task is _SLEPT:
                    woke = SLEEPS
                    continue
                pooled.pos = task.end
            if pooled.count >= MAX_WORKERS:         # aio_task_pool_wait_slot
                pooled.task = task
                while pooled.count >= MAX_WORKERS:
                    if woke and pooled.processed and self._next_now():
                        # The wait is over at once (_pool_wait: a task's
                        # done was processed already), and its event would
                        # be the very next step run: the pass was resumed
                        # from its sleep by an event's processing, which
                        # runs nothing after it yields (_sleep_over, or
                        # SimPy's step), and nothing is due at this instant.
                        # So its id is drawn, and the pass goes on.
                        pooled.wait += 1
                        next(env._eid)
                    else:
                        yield self._pool_wait(pooled)
                        woke = False
                    # (the tasks whose done is triggered: those ended since)
                    self._unpool(pooled)
                # (the loop may have made the next tasks meanwhile)
                task, pooled.task = pooled.task, None
                if task is copyloop.ROW:
                    task = self._rows.take_waiting()
                found = True
            pooled.tasks.append(task)
            pooled.count += 1
            task.pool = pooled
            task.done.callbacks.append(partial(self._pool_check, task))
            # the process's start (Initialize, urgent) and its steps
            steps.at(0, self._begin_step, (call, task), urgent=True)
        if self._pass is pooled:
            self._pass = None
        rows = self._rows
        pool = (rows.pool_tasks() if rows is not None and rows.pooled is pooled
                else pooled.tasks)
        for task in pool:                            # aio_task_pool_wait_all
            if not task.done.triggered:
                yield task.done
        return found

    def _next_now(self) -> bool:
        """Whether nothing is due at this instant, neither a SimPy event
        nor a step: an event scheduled now would be the next processed
        (``Steps.nothing_due``)."""
        return self._steps.nothing_due()

    def _unpool(self, pooled: _Pool) -> None:
        """The pool's ended tasks out of it (the pass resumed after its wait
        for a slot): Python's and the rows' (blocksim.engine.copyrows)."""
        for t in pooled.ended:
            pooled.tasks.remove(t)
            t.pool = None
        pooled.count -= len(pooled.ended) + pooled.ended_rows
        pooled.ended.clear()
        pooled.ended_rows = 0
        rows = self._rows
        if rows is not None and rows.pooled is pooled:
            rows.unpool()
        pooled.processed = 0

    def _pool_wait(self, pooled: _Pool):
        """``_any_done`` of the pool, with steps (see _Pool): an event
        triggered at once if a task's done was processed already, else by
        the first to be processed."""
        steps = self._steps
        pooled.wait += 1
        ev = Event(self.env)
        if pooled.processed:
            steps.succeed(ev)
            return ev
        for task in pooled.waited:
            if task.pool is pooled and task.done.callbacks is not None:
                # a check of its own, after the waiters it has now
                task.checked = pooled.wait

                def check(_event, ev=ev):
                    if ev._value is PENDING:
                        steps.succeed(ev)
                task.done.callbacks.append(check)
        pooled.ev = ev
        return ev

    def _pool_check(self, task: _Task, _done) -> None:
        """A task's done is processed: its pool's wait is over, unless the
        task has a check of its own for that wait (see _Pool)."""
        pooled = task.pool
        if pooled is None:
            return
        pooled.processed += 1
        ev = pooled.ev
        if ev is not None and ev._value is PENDING and task.checked != pooled.wait:
            # (last: this check is the done event's only callback unless
            # some call waits for the task: a pass waiting on its pool is
            # not in aio_task_pool_wait_all)
            self._steps.succeed(ev, not task.waited)

    def _call_sleep(self, call: _Call, ns: int):
        """``qemu_co_sleep_ns_wakeable``: ``ns`` asleep, or until kicked
        (``call.sleep``, :meth:`_Call.kick`)."""
        env = self.env
        ev = call.sleep = Event(env)
        # (the timer's callback kept: a wake-up that sleeps again re-arms
        # it, _sleep_over)
        over = call.sleep_over = partial(self._sleep_over, call, ev)
        env.timeout(ns).callbacks.append(over)
        yield ev
        call.sleep = None

    def _sleep_over(self, call: _Call, ev: Event, _timer) -> None:
        """The sleep's timer fires: its event ``ev`` succeeds (nothing if
        kicked already), and the pass resumes when SimPy processes it.

        With steps (shortcuts), when nothing is due at this instant (no
        SimPy event, no step: anything there came before ``ev``, whose id
        would be the last drawn), ``ev`` is the very next event processed
        and nothing runs between: its id is drawn and the pass resumed here
        at once, as ``Steps.succeed(last=True)`` does.  And when the pass
        would only sleep again (:meth:`_sleeps_again`: the guest's
        copy-before-writes, which count against the speed, moved the
        slice's end while it slept), it is not resumed at all: its next
        sleep's timer is armed on the same ``ev``, the ids it would draw
        drawn in the same order."""
        if ev._value is not PENDING:
            return
        env = self.env
        # (_next_now's test, without its call: ~27 K wake-ups in (d)'s copy)
        steps = self._steps
        if steps is None or not SLEEPS or not steps.nothing_due():
            ev.succeed()
            return
        next(env._eid)                      # (ev's, at its succeed)
        ns = self._sleeps_again(call, env._now)
        if ns:
            # the pass's next sleep (_next_task: the task's done not made,
            # whose id is drawn all the same; _call_sleep's timer, whose
            # callback is the one this timer ran: _timer's own)
            next(env._eid)
            env.timeout(ns).callbacks.append(call.sleep_over)
            return
        ev._ok = True
        ev._value = None
        callbacks, ev.callbacks = ev.callbacks, None
        for cb in callbacks:
            cb(ev)

    def _sleeps_again(self, call: _Call, now: int) -> int:
        """Whether the background pass, resumed now from its rate-limit
        sleep, would only sleep again, and for how long (0: it would do
        something else).  It would (``_dirty_clusters_steps`` after
        ``_next_task`` returned :data:`_SLEPT`): go on unless the call
        failed, was cancelled or is past its end; ``copyloop.fill`` makes
        nothing, the limiter asking for a sleep before the first task;
        ``_next_task`` finds a dirty cluster from the pass's position and
        sleeps for ``RateLimit.delay(now, 0)``, asked here (it only sets
        the slice's end when it asks for a sleep: ``RateLimit.wait``)."""
        ns = self._would_sleep_again(call, now)
        if ns:
            # (delay(now, 0) itself, told what wait(now) worked out: one
            # computation of the stretched slice's end instead of two)
            self.limit.asked(now, ns)
        return ns

    def _would_sleep_again(self, call: _Call, now: int) -> int:
        """:meth:`_sleeps_again`'s answer, asking nothing that changes
        anything: the sleep ``RateLimit.wait(now)`` works out (then
        ``delay(now, 0)`` is that sleep, and changes only the slice's end,
        to the one ``wait`` computes: ``RateLimit.asked``), or 0."""
        pooled = self._pass
        if (pooled is None or pooled.call is not call or call.err or call.cancelled
                or pooled.pos >= pooled.end):
            return 0
        ns = self.limit.wait(now)
        if not ns:
            return 0
        cs = self.cluster
        if self.bcs.find(pooled.pos // cs, -(-pooled.end // cs)) < 0:
            return 0
        return ns

    def _task_create(self, pos: int, end: int) -> _Task | None:
        """The next dirty area in ``[pos, end)``, at most a chunk, taken
        out of the copy bitmap."""
        cs, bcs = self.cluster, self.bcs
        b = bcs.find(pos // cs, -(-end // cs))
        if b < 0:
            return None
        # block_copy_chunk_size: 1 MiB, or one cluster with compress
        chunk = 1 if self.compress else max(CHUNK // cs, 1)
        n = bcs.dirty_run(b, min(chunk, -(-end // cs) - b))
        bcs.clear_bits(b, b + n)
        task = _Task(self.env, b * cs, (b + n) * cs, next(self._seq))
        self.in_flight_bytes += task.end - task.start
        self._tasks.append(task)
        return task

    def _block_status(self, task: _Task) -> None:
        """``block_copy_block_status``: the task shrinks to the extent whose
        status (zero or data) is that of its start, cut to whole clusters (at
        least one, taken as data); a zero extent is written as zeroes."""
        a = task.start
        zero, num = self._status(a, task.end)
        if a + num < task.end:                      # block_copy_task_shrink
            self.bcs.mark(a + num, task.end)
            self.in_flight_bytes -= task.end - (a + num)
            task.end = a + num
        task.zero = zero

    def _status(self, a: int, end: int) -> tuple[bool, int]:
        """``block_copy_block_status`` for a task ``[a, end)``: whether its
        extent from ``a`` reads as zeros, and its length in whole clusters
        (at least one, taken as data), before the task shrinks to it.

        Over a backing chain that is ``bdrv_block_status_above(source,
        NULL)`` (io.c:bdrv_co_common_block_status_above): the extent ends
        where any layer on the way down to the one that allocates ``a``
        changes its allocation, even where the data reads on (found by
        running QEMU 7.2: fz8-268, a write threshold on the target saw
        tasks of 512 KiB where blocksim made one of 1 MiB).  A single layer
        is read by content, its data and zero runs (its clusters allocated
        as its data was written).  Not modelled: qcow2 also ends the
        extent where the host clusters stop being contiguous
        (qcow2-cluster.c count_contiguous_subclusters), as after a guest
        write allocated a cluster at the file's end next to one written
        before; its two tasks then run together, in the thread pool's
        order (docs/qemu-check.md, session 16)."""
        cs, size = self.cluster, self.size
        src = self.source
        content = src.content
        shift = content._shift
        first, last = a >> shift, (min(end, size) - 1) >> shift
        if (src.backing is None and content._journal is not None
                and self._holds_data(content, first)
                and (last == first or all(self._holds_data(content, p)
                                          for p in range(first + 1, last + 1)))):
            # (its pages hold no zero, logged changes included: data
            # throughout, without settling them, ExtentMap.holds_data; a
            # task the guest's copies cut out of line may straddle two)
            zero, num = False, min(end, size) - a
        elif src.backing is not None:
            # bdrv_block_status_above(source, NULL): data where some layer
            # allocates the cluster, the extent bounded by the allocation
            # runs of every layer down to the one that decides
            data, n = src.block_status(a, min(end, size))
            zero, num = not data, n
        else:
            runs = src.read_content(a, min(end, size))
            zero = not runs[0][2]
            num = 0
            for x, y, gen in runs:
                if (not gen) != zero:
                    break
                num = y - a
        if num < cs:
            num, zero = cs, False
        elif a + num >= size:
            num = -(-num // cs) * cs
        else:
            num = num // cs * cs
        return zero, num

    def _holds_data(self, content, p: int) -> bool:
        """``content.holds_data(p)``, remembered for as long as the map's
        pages and its zeroing logs stay the same (as the compiled copy
        loop's ``safe``, blocksim.engine.burst_kernel): a page stays free
        of zeros while only non-zero writes are logged for it."""
        known = self._data_known(content)
        k = known[p]
        if not k:
            k = known[p] = 2 if content.holds_data(p) else 1
        return k == 2

    def _data_known(self, content) -> bytearray:
        """What :meth:`_holds_data` knows of ``content``'s pages, a byte a
        page (0: not asked yet, 1: may read as zeros, 2: data; the compiled
        stretches read it too, blocksim.engine.backup_kernel), forgotten
        when the map's pages or its zeroing logs change."""
        journal = content._journal
        if content is not self._data_map:           # (the map's place in the journal)
            self._data_map, self._data_index = content, journal.maps.index(content)
            self._data_stamp = None
        version, zeroed = content.version, journal.zeroed[self._data_index]
        if self._data_stamp != version or self._data_zeroed != zeroed:
            self._data_stamp, self._data_zeroed = version, zeroed
            self._data_pages = bytearray((content.size >> content._shift) + 1)
        return self._data_pages

    def _task_run(self, call: _Call, task: _Task):
        """``block_copy_do_copy``: write-zeroes, or read then write."""
        start, length = task.start, min(task.end, self.size) - task.start
        is_read = False
        if task.zero:
            err = yield from self.target.write_zeroes(start, length)
        else:
            # BlockDevice.read(want_data=True), what it read taken in the
            # form a write to another node pastes fastest (read_for_copy:
            # a journal Snap of the source's page, unsettled)
            src = self.source
            err, delay = src.submit_read(start, length)
            yield self.env.timeout(delay)
            if err:
                is_read = True
            else:
                src.complete_read(length)
                runs = src.read_for_copy(start, start + length)
                err = yield from self.target.write(start, length, runs)
                if err and runs.__class__ is Snap:     # nothing will paste it
                    runs.forget()
        if err and not call.err:
            call.err, call.is_read = err, is_read
        elif not err:
            call.copied += task.end - task.start
        self._task_end(task, err)

    # _task_run as steps (blocksim.engine.steps): what the process runs when
    # each of its events is processed, the same calls in the same order
    def _task_begin(self, arg) -> None:
        """The task process starts: its write-zeroes, or its read, is issued."""
        call, task = arg
        start, length = task.start, min(task.end, self.size) - task.start
        if task.zero:
            err, delay, dropped = self.target.submit_write_zeroes(start, length)
            self._steps.at(delay, self._task_zeroed, (call, task, err, dropped))
        else:
            err, delay = self.source.submit_read(start, length)
            self._steps.at(delay, self._read_step, (call, task, err))

    def _task_zeroed(self, arg) -> None:
        call, task, err, dropped = arg
        if not err:
            start = task.start
            self.target.complete_write_zeroes(start, min(task.end, self.size) - start, dropped)
        self._task_finish(call, task, err, False)

    def _task_read(self, arg) -> None:
        call, task, err = arg
        if err:
            self._task_finish(call, task, err, True)
            return
        start = task.start
        length = min(task.end, self.size) - start
        src = self.source
        src.complete_read(length)
        runs = self._read_for_copy(src, start, start + length)
        # BlockDevice.write: submit, wait, complete
        err, delay, how = self.target.submit_write(start, length, False)
        self._steps.at(delay, self._write_step, (call, task, err, how, runs))

    @staticmethod
    def _read_for_copy(src, start: int, end: int):
        """``src.read_for_copy(start, end)``, or for a range across pages of
        a journaled source with no backing file, one read per page
        (:class:`_Pieces`): nothing settled."""
        content = src.content
        if src.backing is None and content._journal is not None:
            shift = content._shift
            if (start >> shift) != ((end - 1) >> shift) and end <= content.size:
                pieces = _Pieces()
                a = start
                while a < end:
                    b = min(((a >> shift) + 1) << shift, end)
                    pieces.append(content.snapshot(a, b))
                    a = b
                return pieces
        return src.read_for_copy(start, end)

    def _task_written(self, arg) -> None:
        call, task, err, how, runs = arg
        if not err:
            self._write_done(task, how, runs)
        elif runs.__class__ is Snap:                # nothing will paste it
            runs.forget()
        elif runs.__class__ is _Pieces:
            runs.joined()
        self._task_finish(call, task, err, False)

    def _write_done(self, task: _Task, how, runs) -> None:
        """A task's write to the target completes (``complete_write``)."""
        start = task.start
        tgt = self.target
        if runs.__class__ is _Pieces:
            if how is None:
                # complete_write of the first piece (the counters, the
                # listeners: the whole range), then the others' content
                tgt.complete_write(start, min(task.end, self.size) - start, runs[0],
                                   None, False)
                content = tgt.content
                for piece in runs[1:]:
                    content.set_runs(piece)
                return
            runs = runs.joined()
        tgt.complete_write(start, min(task.end, self.size) - start, runs, how, False)

    def _paste(self, start: int, end: int) -> None:
        """The target's content of ``[start, end)`` becomes the source's
        (the content of completed task writes whose reads the compiled
        loop, blocksim.engine.copyloop, took when it stopped: the same
        content, read a page at a time)."""
        src = self.source
        content = self.target.content
        source = src.content
        journal = source._journal
        if (src.backing is None and journal is not None and content._journal is journal
                and end <= source.size):
            # a page at a time (_read_for_copy's pieces), each read pasted
            # at once where the page holds data (its read is then a Snap:
            # ContentJournal.copy), else as before
            shift = source._shift
            a = start
            while a < end:
                p = a >> shift
                b = min((p + 1) << shift, end)
                self._paste_page(journal, source, content, p, a, b)
                a = b
            return
        runs = self._read_for_copy(src, start, end)
        if runs.__class__ is _Pieces:
            for piece in runs:
                content.set_runs(piece)
        else:
            content.set_runs(runs)

    def _paste_page(self, journal, source, content, p: int, a: int, b: int) -> None:
        """A paste's piece ``[a, b)`` inside page ``p``: the journal's copy
        where the source's page holds data (its read is then a Snap), else
        the runs of its snapshot."""
        if self._holds_data(source, p):
            journal.copy(source, content, p, a, b)
        else:
            content.set_runs(source.snapshot(a, b))

    def _paste_runs(self, runs: np.ndarray) -> None:
        """:meth:`_paste` of each ``[start, end)`` of ``runs`` (an int64
        array of two columns, C-contiguous: the copy loop's, which keeps
        them so), in order: the pieces on pages known to hold data in
        compiled calls (``ContentJournal.copy_runs``: the same entries as
        ``copy``), the others one at a time as ``_paste`` does them.  The
        loop's runs are its tasks' writes, inside the job's size: their
        ends are read only when the job is larger than its source."""
        src = self.source
        content = self.target.content
        source = src.content
        journal = source._journal
        if (src.backing is not None or journal is None or content._journal is not journal
                or (self.size > source.size and max(runs[:, 1].tolist()) > source.size)):
            for a, b in runs.tolist():
                self._paste(a, b)
            return
        n = len(runs)
        shift = source._shift
        k, a = 0, int(runs[0, 0])
        while True:
            k, a = journal.copy_runs(source, content, runs, self._known_view(source), k, a)
            if k == n:
                return
            # (a page not known to hold data: asked now, as _paste does)
            p = a >> shift
            end = int(runs[k, 1])
            b = min((p + 1) << shift, end)
            self._paste_page(journal, source, content, p, a, b)
            a = b
            if a == end:
                k += 1
                if k == n:
                    return
                a = int(runs[k, 0])

    def _known_view(self, content) -> np.ndarray:
        """:meth:`_data_known` as a numpy array (the same memory), made
        again only with the cache."""
        known = self._data_known(content)
        view = self._known_views
        if view[0] is not known:
            view = self._known_views = (known, np.frombuffer(known, dtype=np.uint8))
        return view[1]

    def _chunk(self) -> int:
        """``block_copy_chunk_size`` in clusters: 1 MiB, or one cluster
        with compress."""
        return 1 if self.compress else max(CHUNK // self.cluster, 1)

    def _task_finish(self, call: _Call, task: _Task, err: int, is_read: bool) -> None:
        if err and not call.err:
            call.err, call.is_read = err, is_read
        elif not err:
            call.copied += task.end - task.start
        self._task_end(task, err, True)

    def _task_end(self, task: _Task, err: int, last: bool = False) -> None:
        """``block_copy_task_end``: a failed (or undone) task is dirty again;
        a copied one is progress.  ``last``: called as a task step's last
        action (``_task_finish``): its done event may run at once
        (``Steps.succeed``)."""
        nbytes = task.end - task.start
        self.in_flight_bytes -= nbytes
        if err:
            self.bcs.mark(task.start, task.end)
        elif err == 0:
            self.offset += nbytes
            self.bytes_copied += nbytes
        self._tasks.remove(task)
        if self._steps is not None:
            if task.pool is not None:
                task.pool.ended.append(task)
            # (last: a task step's end, see _task_finish)
            self._steps.succeed(task.done, last)
        else:
            task.done.succeed()

    def _in_flight(self, start: int, end: int) -> _Task | None:
        """The task in flight a block-copy call waits for over ``[start,
        end)`` (``block/reqlist.c:reqlist_wait_one``): the **newest** that
        overlaps it, as ``reqlist_init_req`` puts each task at the head of
        ``s->reqs`` and ``reqlist_find_conflict`` returns the first it meets;
        of those Python holds and the compiled loop's rows
        (blocksim.engine.copyrows: its object made then)."""
        found = None
        for task in self._tasks:
            if task.start < end and start < task.end and (found is None
                                                          or task.seq > found.seq):
                found = task
        rows = self._rows
        if rows is not None:
            row = rows.newest_in_flight(start, end, -1 if found is None else found.seq)
            if row is not None:
                return row
        return found

    # -- copy-before-write (the drive's write filter) -----------------------------------
    def before_write(self, offset: int, length: int):
        """``cbw_do_copy_before_write`` for a guest write (generator): copy
        the dirty clusters it touches first; the copy's errno breaks the
        guest write (break-guest-write, no timeout).  In two parts, which
        the drive calls itself when this is its only filter
        (``Drive.request``): :meth:`write_passes`, then, if not, the copy
        (:meth:`copy_before_write`)."""
        if self.write_passes(offset, length):
            return 0
        return (yield from self.copy_before_write(offset, length))

    def write_passes(self, offset: int, length: int) -> bool:
        """:meth:`before_write`'s steps up to its first wait, done now: the
        witness of the clusters the write touches, and whether there is
        nothing there to copy nor in flight (then the write passes, the
        filter done, having waited for nothing: ``block_copy_common`` would
        find nothing and wait for nothing)."""
        cs = self.cluster
        start = offset // cs * cs
        end = min(-(-(offset + length) // cs) * cs, self.bcs.nbits * cs)
        b0, b1 = start // cs, -(-end // cs)
        if b1 == b0 + 1:
            # (a write inside one cluster: the witness of that cluster, and
            # the range's find is that granule's test)
            seen = self._seen
            if not seen.is_dirty(b0):
                z = min(end, self.size)
                self._keep(start, z)
                seen.mark(start, z)
            return not self.bcs.is_dirty(b0) and self._in_flight(start, end) is None
        self._witness(start, end)
        return not self.bcs.find(b0, b1) >= 0 and self._in_flight(start, end) is None

    def copy_before_write(self, offset: int, length: int):
        """The rest of :meth:`before_write` (generator), after
        :meth:`write_passes` said no: the clusters' copy (``block_copy``),
        its errno."""
        cs = self.cluster
        start = offset // cs * cs
        end = min(-(-(offset + length) // cs) * cs, self.bcs.nbits * cs)
        call = _Call(self.env)
        if end == start + cs and self._steps is not None:
            yield from self._copy_cluster(call, start // cs, start, end)
        else:
            yield from self._block_copy(call, start, end, False)
        if call.copied:
            self.cbw_copies += 1
            self.cbw_bytes += call.copied
        if call.err:
            self.cbw_failures += 1
        return call.err

    def _copy_cluster(self, call: _Call, b: int, start: int, end: int):
        """:meth:`_block_copy` of one cluster ``b`` (``[start, end)``) for a
        guest write's call, with steps (generator): the same calls in the
        same order, without a pass's pool and generators.  A pass that
        finds the cluster dirty (``_dirty_clusters_steps``) makes one task
        of it (a task is at least a cluster), starts it, and waits for it,
        the only task of its pool: a pool that never waits for a slot,
        whose check (``_pool_check``) only counts for no one, so the task
        goes in no pool (its ``done`` event's waiters are the call's and
        those of other calls).  A pass that finds nothing has no effect
        (the pool made and dropped): then the task in flight over the
        cluster is waited for, as ``_block_copy`` does, or the copy is
        done."""
        bcs = self.bcs
        while True:
            if bcs.is_dirty(b):
                # _next_task without the rate limit: the task (_task_create:
                # the first dirty cluster is b, its dirty run one cluster
                # long, a chunk being one at least), its block status, its
                # bytes counted against the speed; its process's start
                # (Initialize, urgent) as a step
                bcs.clear_bits(b, b + 1)
                task = _Task(self.env, start, end, next(self._seq))
                self.in_flight_bytes += end - start
                self._tasks.append(task)
                self._block_status(task)
                self.limit.delay(self.env._now, task.end - task.start)
                self._steps.at(0, self._begin_step, (call, task), urgent=True)
                yield task.done                     # (aio_task_pool_wait_all)
                if call.err or call.cancelled:
                    return
                continue
            task = self._in_flight(start, end)
            if task is None:
                return                  # (nothing dirty there: bcs.find < 0)
            if task.pool is not None and not task.waited:
                task.waited = True      # (see _Pool)
                task.pool.waited.append(task)
            yield task.done             # it may fail: look again

    def _witness(self, start: int, end: int) -> None:
        """Keep what the source holds in ``[start, end)`` where no guest write
        has been since the point in time (the check's reference)."""
        seen, cs = self._seen, self.cluster
        b0, b1 = start // cs, -(-end // cs)
        while b0 < b1:
            if seen.is_dirty(b0):
                b0 += 1
                continue
            b = b0
            while b < b1 and not seen.is_dirty(b):
                b += 1
            a, z = b0 * cs, min(b * cs, self.size)
            self._keep(a, z)
            seen.mark(a, z)
            b0 = b

    def _keep(self, a: int, z: int) -> None:
        """The witness takes what the source holds in ``[a, z)``:
        ``set_runs(read_for_copy)``, or for a range inside one page of a
        journaled source (no backing file) that holds data there, the
        journal's read pasted at once (``ContentJournal.copy``, as the
        quiet stretches' witness: nothing comes between the read and the
        paste)."""
        src = self.source
        content = src.content
        journal = content._journal
        if src.backing is None and journal is not None and self._pit._journal is journal:
            p = a >> content._shift
            if p == (z - 1) >> content._shift and self._holds_data(content, p):
                journal.copy(content, self._pit, p, a, z)
                return
        self._pit.set_runs(src.read_for_copy(a, z))

    # -- copy-before-write in quiet stretches (blocksim.engine.filtered) -------------------
    def quiet_nodes(self):
        """The source and the target, for a stretch of guest writes through
        the filter (:mod:`blocksim.engine.filtered`, which checks that both
        are quiet and idle), or None while a task is in flight: a guest
        write could then wait for it, or the background call wake up."""
        if self._tasks or self.bcs is None:
            return None
        if self._rows is not None and self._rows.busy():
            return None
        return self.source, self.target

    def quiet_timer(self, queue) -> int:
        """For a quiet stretch that reached SimPy's next event
        (:mod:`blocksim.engine.filtered`, the head of ``queue``): if that
        event is the background pass's rate-limit sleep timer, and when it
        fires the pass would only sleep again (:meth:`_sleep_over`: nothing
        else due at that instant, :meth:`_sleeps_again`), when its next
        timer is due; else 0.  Reads and changes nothing: as it stands now,
        which is how it stands when the timer fires if the stretch's
        requests up to then are done (nothing else reads or changes what
        it asks: the pass, the copy bitmap, the limiter)."""
        t, _prio, _eid, timer = queue[0]
        callbacks = timer.callbacks
        if (self._steps is None or not SLEEPS or callbacks is None or len(callbacks) != 1
                or type(callbacks[0]) is not partial):
            return 0
        sleep_over = callbacks[0]
        if sleep_over.func != self._sleep_over or len(sleep_over.args) != 2:
            return 0
        call, ev = sleep_over.args
        if ev._value is not PENDING:
            return 0
        # (nothing else due at t once the timer is out: _next_now; a heap's
        # second smallest entry is a child of its root)
        heap = self._steps.heap
        if (any(queue[i][0] <= t for i in (1, 2) if i < len(queue))
                or (heap and heap[0][0] <= t)):
            return 0
        ns = self._would_sleep_again(call, t)
        return t + ns if ns else 0

    def copy_before_quietly(self, offset: int, length: int, t: int, deadline: int):
        """:meth:`before_write` of a guest write issued at ``t``, with quiet
        idle nodes and no task in flight: when the guest's write goes to the
        source (``t``, or when the copy's write to the target completes),
        which must be before ``deadline``; or None, with nothing done, if
        that is not so or the copy is not a single read-and-write task of
        the clusters the write touches (a write-zeroes, a task cut short)."""
        cs, bcs = self.cluster, self.bcs
        start = offset // cs * cs
        end = min(-(-(offset + length) // cs) * cs, bcs.nbits * cs)
        b0, b1 = start // cs, -(-end // cs)
        if b1 == b0 + 1 and end <= self.size:
            return self._copy_one_quietly(b0, start, end, t, deadline)
        if bcs.find(b0, b1) < 0:
            # nothing to copy (nothing in flight either): the witness only
            if t >= deadline:
                return None
            self._witness(start, end)
            return t
        # _block_copy makes one task of the whole range: every cluster of it
        # dirty, within a chunk, and of one status (data)
        n = b1 - b0
        chunk = 1 if self.compress else max(CHUNK // cs, 1)
        if n > chunk or bcs.dirty_run(b0, n) != n:
            return None
        zero, num = self._status(start, end)
        if zero or start + num < end:
            return None
        return self._copy_quietly(b0, b1, start, end, t, deadline)

    def learn_page(self, offset: int, length: int) -> bool:
        """For a stretch's compiled copies (blocksim.engine.filtered,
        backup_kernel, which hand back a write on a page whose data is not
        known yet): whether a guest write of ``[offset, offset + length)``
        inside one cluster of the disk meets a source page not asked yet;
        if so, asked now (:meth:`_holds_data`, which reads and changes
        nothing but its own cache: the same answer when the copy asks)."""
        cs = self.cluster
        start = offset // cs * cs
        end = min(-(-(offset + length) // cs) * cs, self.bcs.nbits * cs)
        if end != start + cs or end > self.size:
            return False
        content = self.source.content
        if content._journal is None:
            return False
        p = start >> content._shift
        if p != (end - 1) >> content._shift or self._data_known(content)[p]:
            return False
        self._holds_data(content, p)
        return True

    def learn_pages(self, offsets: np.ndarray, length: int) -> int:
        """:meth:`learn_page` for guest writes at each of ``offsets`` (an
        int64 array) at once: the source pages not asked yet that those
        inside one cluster of the disk (and one page) meet, asked now; how
        many.  A stretch asks the pages of the writes it may reach when its
        compiled copies first hand one back (blocksim.engine.filtered): one
        hand-back for them all, not one each (an answer asked early is the
        one asked later: the cache holds while the map's pages and zeroing
        logs stay the same, and nothing of the stretch changes them)."""
        content = self.source.content
        if content._journal is None or not len(offsets):
            return 0
        cs, shift = self.cluster, content._shift
        starts = offsets // cs * cs
        ends = np.minimum(-(-(offsets + length) // cs) * cs, self.bcs.nbits * cs)
        pages = starts >> shift
        one = (ends == starts + cs) & (ends <= self.size) & (pages == (ends - 1) >> shift)
        known = self._data_known(content)
        pages = np.unique(pages[one])
        pages = pages[np.frombuffer(known, dtype=np.uint8)[pages] == 0].tolist()
        for p in pages:
            self._holds_data(content, p)
        return len(pages)

    def _copy_quietly(self, b0: int, b1: int, start: int, end: int, t: int, deadline: int):
        """:meth:`copy_before_quietly` of dirty clusters ``[b0, b1)`` of data."""
        bcs = self.bcs
        self.quiet_end()            # (the allocation deferred so far: read below)
        src, tgt = self.source, self.target
        nbytes = end - start
        size = min(end, self.size) - start
        # _task_run on idle nodes: the read, then the target's write
        # (Device._service_done: no queue, the pipe free)
        read_done = t + src.latency + size * 1_000_000_000 // src.bandwidth
        write_done = read_done + tgt.latency + size * 1_000_000_000 // tgt.bandwidth
        if write_done >= deadline:
            return None
        # what before_write does at t, and its task at read_done and write_done
        self._witness(start, end)
        bcs.clear_bits(b0, b1)                      # _task_create
        self.limit.delay(t, nbytes)                 # (counted, not waited for)
        src._service_done(t, size)                  # submit_read
        src.complete_read(size)
        runs = src.read_for_copy(start, start + size)
        tcs = tgt.cluster_size                      # target.write: submit_write
        c0, c1 = start // tcs, -(-(start + size) // tcs)
        if tgt._new_clusters(c0, c1):
            tgt.alloc.set_range(c0, c1)
        tgt._service_done(read_done, size)
        tgt.complete_write(start, size, runs, None)
        self.offset += nbytes                       # _task_end
        self.bytes_copied += nbytes
        self.cbw_copies += 1
        self.cbw_bytes += nbytes
        return write_done

    def _copy_one_quietly(self, b: int, start: int, end: int, t: int, deadline: int):
        """:meth:`copy_before_quietly` of a write inside one cluster ``b``
        (``[start, end)``, within the disk): the same steps, one cluster's
        tests in place of the range's (``find`` and ``dirty_run`` of one
        granule are ``is_dirty``; the witness of one cluster; its block
        status on one page), the devices' reads and writes as
        ``read_for_copy`` and ``complete_write`` do them on a source with no
        backing file and a quiet target (no write listener): each read
        pasted at once (``ContentJournal.copy``: the source holds data
        there), the devices' queues idle (a request leaves at its own
        service time), the target's allocation handed in when the stretch
        ends (:meth:`quiet_end`: nothing reads it meanwhile)."""
        bcs = self.bcs
        if not bcs.is_dirty(b):
            if t >= deadline:
                return None
            seen = self._seen
            if not seen.is_dirty(b):                # _witness
                self._pit.set_runs(self.source.read_for_copy(start, end))
                seen.mark(start, end)
            return t
        src, tgt = self.source, self.target
        content = src.content
        journal = content._journal
        if (src.backing is not None or journal is None or tgt.write_listeners
                or tgt.content._journal is not journal):
            return self._copy_before_range(b, start, end, t, deadline)
        p = start >> content._shift
        if (p != (end - 1) >> content._shift or not self._holds_data(content, p)):
            return self._copy_before_range(b, start, end, t, deadline)
        # (the status: data throughout, the task the cluster)
        nbytes = end - start
        read_done = t + src.latency + nbytes * 1_000_000_000 // src.bandwidth
        write_done = read_done + tgt.latency + nbytes * 1_000_000_000 // tgt.bandwidth
        if write_done >= deadline:
            return None
        seen = self._seen
        if not seen.is_dirty(b):                    # _witness
            journal.copy(content, self._pit, p, start, end)
            seen.mark(start, end)
        bcs.clear_bits(b, b + 1)                    # _task_create
        self.limit.delay(t, nbytes)
        _serve(src, t, read_done, nbytes)          # submit_read
        src.reads += 1                              # complete_read
        src.bytes_read += nbytes
        # read_for_copy (a Snap: data throughout), pasted by the write below
        tcs = tgt.cluster_size                      # target.write: submit_write
        c0, c1 = start // tcs, -(-end // tcs)
        if c1 == c0 + 1:
            self._quiet_allocs.append(c0)
        else:
            self._quiet_ranges.append((c0, c1))
        _serve(tgt, read_done, write_done, nbytes)
        tgt.writes += 1                             # complete_write
        tgt.bytes_written += nbytes
        journal.copy(content, tgt.content, p, start, end)
        self.offset += nbytes                       # _task_end
        self.bytes_copied += nbytes
        self.cbw_copies += 1
        self.cbw_bytes += nbytes
        return write_done

    def quiet_end(self) -> None:
        """A quiet stretch through the filter ends: the target's clusters
        its copies wrote allocated (``submit_write``'s allocation, deferred
        by :meth:`_copy_one_quietly`; the same clusters in any order)."""
        alloc = self.target.alloc
        if self._quiet_allocs:
            if alloc.count != alloc.nclusters:
                alloc.set_each(self._quiet_allocs)
            self._quiet_allocs.clear()
        if self._quiet_ranges:
            if alloc.count != alloc.nclusters:
                alloc.set_ranges(np.array(self._quiet_ranges, dtype=np.int64))
            self._quiet_ranges.clear()

    def _copy_before_range(self, b: int, start: int, end: int, t: int, deadline: int):
        """The general path of :meth:`copy_before_quietly` for one cluster."""
        zero, num = self._status(start, end)
        if zero or start + num < end:
            return None
        return self._copy_quietly(b, b + 1, start, end, t, deadline)

    # -- the end ------------------------------------------------------------------------------
    def progress_len(self) -> int:
        """``offset`` + still dirty + in flight (``block_copy_task_end``)."""
        if self.bcs is None:
            return self.offset
        return self.offset + self.bcs.count * self.cluster + self.in_flight_bytes

    def prepare(self) -> None:
        self._verify()
        self._settle_bitmap(success=True)
        self._clean()

    def abort(self) -> None:
        self._settle_bitmap(success=False)
        self._clean()

    def _clean(self) -> None:
        """``backup_clean``: the filter goes."""
        if self._filtering:
            self._filtering = False
            self.drive.write_filters.remove(self)
            # bdrv_cbw_drop: the filter's drained section reaches the
            # filters stacked above it (earlier backups)
            self.drained_section("filter")

    def _settle_bitmap(self, success: bool) -> None:
        """``backup_cleanup_sync_bitmap``."""
        bm = self.sync_bitmap
        if bm is None:
            return
        mode = self.bitmap_mode
        if (success or mode == "always") and mode != "never":
            bm.abdicate()
        else:
            bm.reclaim()
        if not success and mode == "always":
            if self.bcs is not None:
                merge_into(bm.bits, self.bcs)
            elif self.started_at is None:
                # aborted by its transaction before it started: the copy
                # bitmap is still as block_copy_state_new made it, all
                # dirty (backup_run sets it from the sync mode)
                bm.bits.mark(0, bm.size)

    def _verify(self) -> None:
        """The target must hold the source as it was at the point in time,
        in every cluster the job was to copy."""
        if self.bcs is None:
            return
        if self.source.backing is None and self.target.backing is None:
            total, first = self._mismatch()
        else:
            total, first = self._mismatch_by_chains()
        if first is None:
            self.integrity = "identical"
            return
        self.integrity = "differs"
        self.integrity_detail = (f"target differs from the source at the point in time in "
                                 f"{total} bytes, first at offset {first}")

    #: bytes of the disk compared at most at a time by :meth:`_mismatch`
    VERIFY_STEP = 1 << 36
    #: and runs of each map read at most at a time (about: whole pages are
    #: read): the arrays' bound, 16 bytes a run, however fragmented the maps
    VERIFY_RUNS = 1 << 18

    def _mismatch(self) -> tuple[int, int | None]:
        """:meth:`_mismatch_by_chains` for a source and a target with no
        backing file, as arrays: every map's runs over a step of the disk
        (run_arrays), cut at each other's edges and the witnessed ranges',
        the expected value (the witness where a guest write came, else the
        source) against the target's, in one compiled walk over the edges
        (:func:`_mismatch_step`).  The same bytes, the same lowest offset.

        A step ends where the first of the maps reaches
        :data:`VERIFY_RUNS` runs (each map read only up to where those
        before it stopped; arrays reaching past the step's end are walked
        only up to it): at the end of (d)'s hour, 1 TiB of about 2 M runs
        a map, a few dozen steps, where steps of a fixed 1 GiB took a
        thousand, each with a dozen numpy calls a map."""
        src, tgt, pit = self.source.content, self.target.content, self._pit
        seen_starts, seen_ends = _range_arrays(self._seen)
        if not len(seen_starts):
            seen_starts = seen_ends = np.zeros(1, dtype=np.int64)
        total, first = 0, None
        for a, b in self._copy_set:
            # (the three maps' pages settled first, in the journal's bulk
            # chunks, not a step's pages at a time: run_arrays reads them)
            src.settle(a, b)
            x0 = a
            while x0 < b:
                x1 = min(x0 + self.VERIFY_STEP, b)
                x1, ss, sv = run_arrays(src, x0, x1, self.VERIFY_RUNS)
                x1, ts, tv = run_arrays(tgt, x0, x1, self.VERIFY_RUNS)
                x1, ps, pv = run_arrays(pit, x0, x1, self.VERIFY_RUNS)
                # (the witnessed ranges from the first that ends past x0)
                w = int(np.searchsorted(seen_ends, x0, "right"))
                n, at = _mismatch_step(x0, x1, ss, sv, ts, tv, ps, pv, seen_starts, seen_ends, w)
                if n:
                    total += int(n)
                    if first is None:
                        first = int(at)
                x0 = x1
        return total, first

    def _mismatch_by_chains(self) -> tuple[int, int | None]:
        """Where the target, read through its chain, differs from the
        source at the point in time, in the clusters the job was to copy:
        ``(bytes, lowest offset or None)``."""
        src, tgt = self.source.layers(), self.target.layers()
        pit = [self._pit]
        seen = list(dirty_ranges(self._seen))
        total, first = 0, None
        for a, b in self._copy_set:
            # [a, b) in pieces: where a guest write came (the witness holds
            # the point in time) and where none did (the source still does)
            pieces, pos = [], a
            for s, e in seen:
                if e <= pos or s >= b:
                    continue
                if s > pos:
                    pieces.append((pos, s, src))
                pieces.append((max(s, pos), min(e, b), pit))
                pos = min(e, b)
            if pos < b:
                pieces.append((pos, b, src))
            for x0, x1, layers in pieces:
                for x, y, _l, _r in diff_ranges(layers, tgt, x0, x1):
                    total += y - x
                    if first is None:
                        first = x
        return total, first
