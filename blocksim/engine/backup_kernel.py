"""A quiet stretch's copy-before-writes through a backup's filter, compiled.

:func:`blocksim.engine.filtered.advance` runs a one-worker guest's requests
in bulk through a backup's copy-before-write filter, each write first
through the filter's ``copy_before_quietly`` (``BackupJob``, the meaning):
in (d)'s hour a million guest writes, each about twenty Python calls (the
copy bitmap's test and clear, the witness's test and mark, two journal
entries, the rate limiter, the devices' counters and queues).  :func:`run`
is the same loop compiled, for the one case that dominates: a write inside
one cluster, within the disk, on a source page known to hold data.  Per
request, in order, as ``filtered.advance`` and
``BackupJob._copy_one_quietly`` do it:

- the request's time (the worker back, or its due time under a rate), the
  end of the workload and the stretch's deadline (a read must be issued
  before it; a write's copy, if any, must be done before it);
- a read: counted (the stretch completes the reads in bulk);
- a write over a cluster the copy bitmap holds clean: its witness (the
  point-in-time map takes the source's cluster, ``ContentJournal.copy``,
  once per cluster: the ``seen`` bitmap); a write over a dirty one: the
  witness, the cluster cleared from the copy bitmap, the rate limiter's
  count, the source's read and the target's write (counters; the idle
  devices' queues hold that request alone), the target's clusters to be
  allocated (handed back), the copy's journal entry, the job's progress.

It hands back to the Python loop, before doing anything of that request,
at any request it cannot say so of: a write across clusters or past the
disk's last whole cluster, a source page whose data is not known yet
(``known``: 0 unknown, 1 may read as zeros, 2 data: the job's cache,
``BackupJob._holds_data``), or known not to hold data, a device not idle,
a stage with no room for two entries (the Python path flushes it).  The
Python loop then does that request itself and calls this again; for a
write on a page not asked yet it asks the page instead
(``BackupJob.learn_page``) and calls this again at once.  So the
same requests are done in the same order with the same effects; the tests
(``tests/engine/test_filtered.py``) compare runs with it, with the Python
loop (``filtered.KERNEL = False``) and without shortcuts.
"""

from __future__ import annotations

from .bitmap_blocks import (BLOCK, BLOCK_SHIFT, COUNT_BITS, COUNT_MASK, _find_block, _free_slot,
                            _mark, _take_slot)
from .compiled import Compiled, machine_code, prefetch
# the journal's entry layout (ContentJournal.copy)
from .journal import _MAP_BITS, _MAP_SHIFT, _OFFSET_BITS

#: compiled with numba on first use (engine/compiled.py), without numba's
#: runtime (nothing is allocated)
njit = Compiled(globals())
_step = njit(cache=True, _nrt=False)

_SLICE_NS = 100_000_000     # BLOCK_JOB_SLICE_TIME (model.ratelimit.SLICE_NS)

#: why run() stopped
DONE, STOP, PYTHON = 0, 1, 2

# the int64 state array's fields (in and out)
(N, BACK, NREADS, WAITED, LATENCY, STAGED, COPIES, WITNESSED, CLEARED, ALLOCS,
 SRC_FREE, TGT_FREE, SRC_SET, TGT_SET, SLICE_START, SLICE_END, DISPATCHED) = range(17)
STATE = 17


@_step
def _is_dirty(bits, summary, b):
    """DirtyBitmap.is_dirty."""
    v = summary[b >> BLOCK_SHIFT]
    c = v & COUNT_MASK
    return c == BLOCK or (c != 0 and bits[((v >> COUNT_BITS) << BLOCK_SHIFT)
                                          | (b & (BLOCK - 1))] == 1)


@_step
def _clear(bits, summary, blocks, b):
    """DirtyBitmap.clear_bits of one granule: 1 if it was dirty, else 0."""
    blk = b >> BLOCK_SHIFT
    v = summary[blk]
    c = v & COUNT_MASK
    if c == 0:
        return 0
    if c == BLOCK:                      # materialise: all dirty
        slot = _take_slot(bits, 1)
    else:
        slot = v >> COUNT_BITS
    i = (slot << BLOCK_SHIFT) | (b & (BLOCK - 1))
    if not bits[i]:
        return 0
    bits[i] = 0
    c -= 1
    if c == 0:                          # all clean: no bytes
        _free_slot(bits, slot)
        slot = 0
        blocks[blk] = 0
    summary[blk] = c | (slot << COUNT_BITS)
    return 1


#: how many requests ahead run() prefetches a write's granules
_AHEAD = 4


@_step
def _prefetch_granule(bits, summary, b):
    """Prefetch granule ``b``'s byte in a bitmap's pool, if its block is
    mixed (its summary entry read now: a small array, mostly cached): a
    guest's writes at random over a large disk meet the pools' bytes at
    random, a cache miss each, waited for one after the other without.
    Nothing changes."""
    v = summary[b >> BLOCK_SHIFT]
    c = v & COUNT_MASK
    if c != 0 and c != BLOCK:
        prefetch(bits, ((v >> COUNT_BITS) << BLOCK_SHIFT) | (b & (BLOCK - 1)))


@_step
def _copy(rows, st, loglen, p, src, dst_tag, pending, zeroing, zeroed, dst, start, end, shift):
    """ContentJournal.copy: the entry on the stage (room checked before)."""
    ps = p << shift
    k = st[STAGED]
    rows[k, 0] = p
    rows[k, 1] = dst_tag | (start - ps) | ((end - ps) << _OFFSET_BITS)
    rows[k, 2] = -1 - ((((loglen[p] >> 1) << _MAP_BITS) | src) << 1)
    st[STAGED] = k + 1
    loglen[p] += 2
    pending[p] = 1
    zeroing[p] = 1
    zeroed[dst] += 1


@_step
def run(st, offs, reads, m, rate, start_at, issued, interval, end_at, deadline, service,
        think, bs, cs, nbits, size, shift, known,
        bcs_bits, bcs_summary, bcs_blocks, seen_bits, seen_summary, seen_blocks,
        rows, capacity, loglen, src, zeroed,
        pit, pit_tag, pit_pending, pit_zeroing, tgt, tgt_tag, tgt_pending, tgt_zeroing,
        src_latency, src_bw, tgt_latency, tgt_bw, tcs, speed, quota, allocs):
    """The stretch's requests from ``st[N]`` up to ``m`` (see the module's
    doc): DONE, STOP (the Python loop stops before request ``st[N]``) or
    PYTHON (the Python loop does request ``st[N]``, then calls again)."""
    n = st[N]
    back = st[BACK]
    last = nbits * cs
    while n < m:
        if n + _AHEAD < m and not reads[n + _AHEAD] and offs[n + _AHEAD] < last:
            ahead = offs[n + _AHEAD] // cs
            _prefetch_granule(bcs_bits, bcs_summary, ahead)
            _prefetch_granule(seen_bits, seen_summary, ahead)
        t = back
        waits = 0
        if rate:
            due = start_at + int((issued + n) * interval)
            if due > back:
                t = due
                waits = 1
        if t >= end_at:
            st[N] = n
            st[BACK] = back
            st[WAITED] += waits             # (counted before the stop)
            return STOP
        if reads[n]:
            if t >= deadline:
                st[N] = n
                st[BACK] = back
                st[WAITED] += waits
                return STOP
            st[NREADS] += 1
            done = t + service
        else:
            off = offs[n]
            b = off // cs
            start = b * cs
            stop = -(-(off + bs) // cs) * cs
            if stop > nbits * cs:
                stop = nbits * cs
            if stop != start + cs or stop > size:
                break                                   # (not one cluster)
            p = start >> shift
            if not _is_dirty(bcs_bits, bcs_summary, b):
                if t >= deadline:
                    st[N] = n
                    st[BACK] = back
                    st[WAITED] += waits             # (counted before the stop)
                    return STOP
                if not _is_dirty(seen_bits, seen_summary, b):     # _witness
                    if known[p] != 2 or st[STAGED] + 1 > capacity:
                        break
                    _copy(rows, st, loglen, p, src, pit_tag, pit_pending, pit_zeroing,
                          zeroed, pit, start, stop, shift)
                    st[WITNESSED] += _mark(seen_bits, seen_summary, seen_blocks, b)
                at = t
            else:
                if known[p] != 2 or st[STAGED] + 2 > capacity:
                    break
                read_done = t + src_latency + cs * 1_000_000_000 // src_bw
                write_done = read_done + tgt_latency + cs * 1_000_000_000 // tgt_bw
                if write_done >= deadline:
                    st[N] = n
                    st[BACK] = back
                    st[WAITED] += waits             # (counted before the stop)
                    return STOP
                if st[SRC_FREE] > t or st[TGT_FREE] > read_done:
                    break                               # (a device not idle)
                if not _is_dirty(seen_bits, seen_summary, b):     # _witness
                    _copy(rows, st, loglen, p, src, pit_tag, pit_pending, pit_zeroing,
                          zeroed, pit, start, stop, shift)
                    st[WITNESSED] += _mark(seen_bits, seen_summary, seen_blocks, b)
                st[CLEARED] += _clear(bcs_bits, bcs_summary, bcs_blocks, b)   # _task_create
                if speed:                               # RateLimit.delay(t, cs)
                    if st[SLICE_END] <= t:
                        st[SLICE_START] = t
                        st[SLICE_END] = t + _SLICE_NS
                        st[DISPATCHED] = 0
                    st[DISPATCHED] += cs
                    if st[DISPATCHED] >= quota:
                        st[SLICE_END] = st[SLICE_START] + int(
                            st[DISPATCHED] / max(quota, 1) * _SLICE_NS)
                st[SRC_FREE] = read_done                # submit_read, on an idle node
                st[SRC_SET] = 1
                c0 = start // tcs                       # submit_write: its clusters
                k = st[ALLOCS]
                allocs[k, 0] = c0
                allocs[k, 1] = -(-stop // tcs)
                st[ALLOCS] = k + 1
                st[TGT_FREE] = write_done
                st[TGT_SET] = 1
                _copy(rows, st, loglen, p, src, tgt_tag, tgt_pending, tgt_zeroing,
                      zeroed, tgt, start, stop, shift)  # read_for_copy, complete_write
                st[COPIES] += 1
                at = write_done
            done = at + service
        st[WAITED] += waits
        st[LATENCY] += done - t
        back = done + think
        n += 1
    st[N] = n
    st[BACK] = back
    return DONE if n >= m else PYTHON


def advance(job, offs, reads, n: int, m: int, back: int, rate, start_at: int, issued: int,
            interval: float, end_at: int, deadline: int, service: int, think: int, bs: int):
    """:func:`run` for ``job``'s filter from request ``n`` of ``offs`` and
    ``reads`` (the stretch's requests, ``m`` of them), the worker back at
    ``back``: ``(n, back, reads, waits, latency, status)`` (the reads
    counted, the due times waited for and the latency summed over the
    requests it did), with every effect on the job, the devices, the
    bitmaps, the limiter and the journal handed in; or None if the filter's
    nodes are not of the kind it knows (a backing file under the source, a
    write listener on the target, a source with no journal, or a target
    on another one: the Python loop does it all)."""
    import numpy as np
    src, tgt = job.source, job.target
    content = src.content
    journal = content._journal
    if (src.backing is not None or journal is None or tgt.write_listeners
            or tgt.content._journal is not journal or job._pit._journal is not journal):
        return None
    known = job._known_view(content)
    st = np.zeros(STATE, dtype=np.int64)
    st[N] = n
    st[BACK] = back
    st[STAGED] = journal.staged
    st[SRC_FREE] = src._pipe_free
    st[TGT_FREE] = tgt._pipe_free
    limit = job.limit
    st[SLICE_START], st[SLICE_END], st[DISPATCHED] = (
        limit.slice_start, limit.slice_end, limit.dispatched)
    bcs, seen, pit, dst = job.bcs, job._seen, job._pit, tgt.content
    bcs_bits, _w, bcs_summary, bcs_blocks, _bw = bcs.arrays()
    seen_bits, _w, seen_summary, seen_blocks, _bw = seen.arrays()
    shift = journal.shift
    pit_i, tgt_i = pit._tag >> _MAP_SHIFT, dst._tag >> _MAP_SHIFT
    pit_pending, pit_zeroing = journal.flags[pit_i]
    tgt_pending, tgt_zeroing = journal.flags[tgt_i]
    allocs = job._kernel_allocs
    if allocs is None or len(allocs) < m:
        allocs = job._kernel_allocs = np.empty((max(m, 256), 2), dtype=np.int64)
    cs = job.cluster
    status = run(st, offs, reads, m, bool(rate), start_at, issued, float(interval), end_at,
                 deadline, service, think, bs, cs, bcs.nbits, job.size, shift,
                 known,
                 bcs_bits, bcs_summary, bcs_blocks, seen_bits, seen_summary, seen_blocks,
                 journal.rows, journal.capacity, np.frombuffer(journal.loglen, dtype=np.int64),
                 content._tag >> _MAP_SHIFT, np.frombuffer(journal.zeroed, dtype=np.int64),
                 pit_i, pit._tag, pit_pending, pit_zeroing, tgt_i, dst._tag, tgt_pending,
                 tgt_zeroing, src.latency, src.bandwidth, tgt.latency, tgt.bandwidth,
                 tgt.cluster_size, limit.speed, limit.slice_quota, allocs)
    copies, witnessed = int(st[COPIES]), int(st[WITNESSED])
    if copies or witnessed:
        journal.staged = int(st[STAGED])
        journal._next_sid += copies + witnessed
        seen.count += witnessed
    if copies:
        nbytes = copies * cs
        bcs.count -= int(st[CLEARED])
        src.reads += copies
        src.bytes_read += nbytes
        tgt.writes += copies
        tgt.bytes_written += nbytes
        job.offset += nbytes
        job.bytes_copied += nbytes
        job.cbw_copies += copies
        job.cbw_bytes += nbytes
        if limit.speed:
            limit.slice_start, limit.slice_end, limit.dispatched = (
                int(st[SLICE_START]), int(st[SLICE_END]), int(st[DISPATCHED]))
        for device, free in ((src, int(st[SRC_FREE])), (tgt, int(st[TGT_FREE]))):
            slots = device._slots
            slots.clear()
            slots.append(free)
            device._pipe_free = free
        alloc = tgt.alloc
        if alloc.count != alloc.nclusters:
            if tgt.cluster_size == cs:
                # (each copy one target cluster: set one by one, the
                # clusters ahead prefetched, as a guest's scattered writes)
                alloc.set_each(np.ascontiguousarray(allocs[:int(st[ALLOCS]), 0]))
            else:
                alloc.set_ranges(allocs[:int(st[ALLOCS])])
    return (int(st[N]), int(st[BACK]), int(st[NREADS]), int(st[WAITED]), int(st[LATENCY]),
            status)


# -- the background pass's next tasks (blocksim.engine.copyloop) ----------------------

@_step
def _find_in(bits, v, blk, byte, b0, b1):
    """DirtyBitmap._find_in: the first granule of ``[b0, b1)`` (inside
    mixed block ``blk``, summary entry ``v``) whose byte is ``byte``, or -1."""
    a = (blk - (v >> COUNT_BITS)) << BLOCK_SHIFT        # granule -> pool offset
    for i in range(b0 - a, b1 - a):
        if bits[i] == byte:
            return i + a
    return -1


@_step
def _search(bits, bit_words, summary, blocks, block_words, b0, b1):
    """DirtyBitmap._search: the first dirty granule of ``[b0, b1)`` (b0 <
    b1 <= nbits), or -1 (the flagged blocks found as the compiled loops do,
    bitmap_blocks._find_block)."""
    blk = b0 >> BLOCK_SHIFT
    edge = (blk + 1) << BLOCK_SHIFT
    v = summary[blk]
    c = v & COUNT_MASK
    if c == BLOCK:
        return b0 if b0 < b1 else -1
    found = -1
    if c:
        found = _find_in(bits, v, blk, 1, b0, b1 if b1 < edge else edge)
    if found >= 0 or b1 <= edge:
        return found
    blk = _find_block(bits, bit_words, summary, blocks, block_words, blk + 1,
                      ((b1 - 1) >> BLOCK_SHIFT) + 1)
    if blk < 0:
        return -1
    a = blk << BLOCK_SHIFT
    v = summary[blk]
    if v == BLOCK:
        return a
    edge = a + BLOCK
    return _find_in(bits, v, blk, 1, a, b1 if b1 < edge else edge)


@_step
def _dirty_run(bits, summary, nbits, b0, max_bits):
    """DirtyBitmap.dirty_run: the length of the dirty run from ``b0``, capped."""
    end = b0 + max_bits
    if end > nbits:
        end = nbits
    b = b0
    while b < end:
        blk = b >> BLOCK_SHIFT
        edge = (blk + 1) << BLOCK_SHIFT
        if edge > end:
            edge = end
        v = summary[blk]
        if v != BLOCK:
            if not v:
                return b - b0
            clean = _find_in(bits, v, blk, 0, b, edge)
            if clean >= 0:
                return clean - b0
        b = edge
    return end - b0


@_step
def plan(bits, bit_words, summary, blocks, block_words, nbits, count, end, last, chunk, cs,
         size, shift, known, out, pos):
    """The background pass's next tasks from byte ``pos`` (clusters up to
    ``last``), as ``copyloop``'s plan finds them with the bitmap unchanged:
    each the next dirty run of at most ``chunk`` clusters (``find``,
    ``dirty_run``), whose block status is data throughout (every page it
    meets known to hold data: ``known`` 2, BackupJob._holds_data; ``pos``
    below ``end``, the pass's), into the
    rows of ``out`` (start, end), as many as fit.  How many it found, and
    why it stopped: 0 ``out`` full, 1 nothing dirty left, 2 a task whose
    status the Python code must ask (its start in ``out``'s next row)."""
    k = 0
    while k < out.shape[0]:
        if pos >= end:
            return k, 1
        b0 = pos // cs
        b1 = last if last < nbits else nbits
        if not count or b0 >= b1:
            return k, 1
        b = _search(bits, bit_words, summary, blocks, block_words, b0, b1)
        if b < 0:
            return k, 1
        m = last - b
        n = _dirty_run(bits, summary, nbits, b, chunk if chunk < m else m)
        a, e = b * cs, (b + n) * cs
        z = e if e < size else size
        for p in range(a >> shift, ((z - 1) >> shift) + 1):
            if known[p] != 2:
                out[k, 0] = a
                out[k, 1] = e
                return k, 2
        out[k, 0] = a
        out[k, 1] = e
        k += 1
        pos = e
    return k, 0


@_step
def agree(bits, bit_words, summary, blocks, block_words, nbits, count, end, last, chunk, cs,
          size, shift, known, plan, taken, n, pos):
    """How many of the rows ``plan[taken:n]`` (start, end) :func:`plan`
    would find again, in order, from byte ``pos`` with the bitmap and the
    pages' cache as they stand now: a plan kept from before a change of
    either holds up to its first row found otherwise (each row's search
    starts where the one before it ended: the rows after it are found
    again only if it is)."""
    k = taken
    b1 = last if last < nbits else nbits
    while k < n:
        if pos >= end:
            break
        b0 = pos // cs
        if not count or b0 >= b1:
            break
        b = _search(bits, bit_words, summary, blocks, block_words, b0, b1)
        if b < 0:
            break
        m = last - b
        r = _dirty_run(bits, summary, nbits, b, chunk if chunk < m else m)
        a, e = b * cs, (b + r) * cs
        if a != plan[k, 0] or e != plan[k, 1]:
            break
        z = e if e < size else size
        for p in range(a >> shift, ((z - 1) >> shift) + 1):
            if known[p] != 2:
                return k - taken
        k += 1
        pos = e
    return k - taken


class Planner:
    """:func:`plan` for a backup's background pass (its copy bitmap, its
    source's pages as ``BackupJob._holds_data`` knows them), or nothing if
    the source is not of the kind it knows (a backing file, no journal).
    Made once per pass and size (:func:`planner`), brought up to date at
    each use (:meth:`refresh`)."""

    __slots__ = ("job", "args", "out", "_view", "made_for", "_plan", "_agree")

    def __init__(self, job, end: int, last: int, chunk: int, rows: int):
        import numpy as np
        self.job = job
        src = job.source
        self.args = None
        self._view = None
        # (plan's and agree's machine code for its arguments' types, which
        # never change: compiled.machine_code, after the first call)
        self._plan = self._agree = None
        # what it was made for (planner(): made again if any changed)
        self.made_for = (job.bcs, src, src.content, src.backing, src.content._journal)
        if src.backing is not None or src.content._journal is None:
            return
        self.out = np.empty((rows, 2), dtype=np.int64)
        bcs = job.bcs
        self.args = list(bcs.arrays()) + [bcs.nbits, bcs.count, end, last, chunk, job.cluster,
                                          job.size, src.content._shift, self.known(), self.out]

    def known(self):
        """The job's cache of the source's pages, as it stands (a Python
        block status may have replaced it): a view of it, made again only
        when the job made a new one (``BackupJob._known_view``)."""
        view = self.job._known_view(self.job.source.content)
        if view is not self._view:
            self._view = view
            if self.args is not None:
                self.args[13] = view
        return view

    def refresh(self) -> "Planner":
        """Up to date with the bitmap's count and the job's cache (the
        bitmap's arrays never change, BitmapBlocks.arrays)."""
        if self.args is not None:
            self.args[6] = self.job.bcs.count
            self.known()
        return self

    def __call__(self, pos: int) -> tuple:
        """``plan(..., pos)``: how many rows of ``out``, and why it stopped."""
        fn = self._plan
        if fn is not None:
            return fn(*self.args, pos)
        got = plan(*self.args, pos)
        self._plan = machine_code(plan, (*self.args, pos))
        return got

    def agree(self, rows, taken: int, n: int, pos: int) -> int:
        """``agree(..., rows, taken, n, pos)``: how many of a kept plan's
        rows ``rows[taken:n]`` hold."""
        a = self.args
        args = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
                a[12], a[13], rows, taken, n, pos)
        fn = self._agree
        if fn is not None:
            return fn(*args)
        got = agree(*args)
        self._agree = machine_code(agree, args)
        return got


def planner(job, end: int, last: int, chunk: int, rows: int) -> Planner:
    """The job's :class:`Planner` for a pass over ``[.., end)`` with
    ``rows`` rows, made on first use, up to date (the same answers as one
    made now: its source, bitmap and sizes are the job's for its life)."""
    made = job._planners.get((end, last, chunk, rows))
    src = job.source
    content = src.content
    if made is not None:
        bcs, was, pages, backing, journal = made.made_for
        if (bcs is job.bcs and was is src and pages is content and backing is src.backing
                and journal is content._journal):
            return made.refresh()
    made = job._planners[(end, last, chunk, rows)] = Planner(job, end, last, chunk, rows)
    return made
