"""Copy bursts between quiet nodes, compiled: the hot path of a long mirror.

:func:`blocksim.engine.burst.copy` runs a mirror's issue-and-wait cycle as one
plain Python loop.  Between *quiet* nodes (no fault rule that could match,
no jitter, no copy-on-write, room for the whole disk) each copy operation
is then about a dozen Python steps: the bitmap search and clear, the
overlap test, the devices' queue and pipe, three heap entries, the rate
limiter, the wake-up.  A 1 TiB mirror makes four million of them, and at
about 8 µs each they were most of benchmark (b)'s time.

This module runs the same steps, in the same order, compiled with numba.
The operations in flight and their agenda entries then live in arrays
(:class:`Kernel`) instead of :class:`~blocksim.jobs.mirror.CopyOperation`
objects and heap tuples, for as long as the nodes stay quiet: the burst
engine, the agenda and the mirror turn them back into objects
(:meth:`Kernel.materialize`) before anything else looks at them.

The content goes through the journal (:mod:`blocksim.engine.journal`) as in the
Python loop.  The kernel plans copies only where the source's block status
is data over every claim (:meth:`Kernel.claims_data`: a fully allocated
source, or one whose dirty granules all lie in allocated clusters; no
write-zeroes operation), and reads every page of a source with no backing
file (a read that finds zeros there is a Snap all the same, which pastes
the zeros a zero run would) and, over a backing file, only pages known to
hold no zero and to have no zero logged (asked of Python once per page,
:attr:`Kernel.safe`, until the source map changes); any other read or claim
hands the burst back to the Python loop.  A read is then its page's log
position (the journal keeps each log's length in :attr:`ContentJournal.loglen
<blocksim.engine.journal.ContentJournal.loglen>` for this, staged entries
included), and a paste a journal entry the kernel puts on the journal's
stage itself, flagging its page: the logs are byte for byte those of the
Python loop wherever its read would not settle the page.  Before anything settles
a page, the reads whose pastes are still to come become
:class:`~blocksim.engine.journal.Snap` objects (:meth:`Kernel.hand_in`), and their
pastes are then made from Python.

A one-worker paced guest on the mirror's source runs here too, among the
copies (:meth:`Kernel._adopt`): when SimPy's next event is its worker's
wait for its own timeout (a due time, or a request's completion), that
event becomes an entry of the kernel's heap under the same key, and the
guest's requests go through the source's queue and pipe, the journal's
stage, the dirty bitmap and a ledger buffer in SimPy's order.  It stays
across calls for as long as it fits (:meth:`Kernel._fits`: quiet nodes,
the VM running, no drain, nothing that could end it meanwhile), its
Python-side state written back at each return; it goes back to SimPy
(:meth:`Kernel._release`) under the key of its next step, its process
resumed by a new generator (``GuestWorkload._worker(resume=...)``).

The loop's sleeps run here too (session 12): where the mirror's loop would
sleep off the rate limit or, ready, sleep until its next poll, the kernel
draws the timer's id where ``Job.sleep`` would, runs the guest and the
copies in flight meanwhile (its agenda detached: they wake nobody), and
when the timer comes before SimPy's next event, with nothing else due at
its instant (the wake-up's own id comes after everything then), wakes the
loop at its top, whose checks hold (``MirrorJob.sleeps_through``,
``poll_sleeps``: loaded at each call, and nothing run here changes them).
Asleep when SimPy's next event comes first, it returns ``burst.SLEEPING``
and the loop sleeps the rest in SimPy under the timer's key
(``MirrorJob._copy_burst``, ``Clock.timeout_at``): a ready mirror's polls
are then one call each, or fewer, not two.

Every decision the kernel makes is the Python loop's own, restated:
``tests/engine/test_burst.py`` compares each case with the kernel, with the
Python loop alone (``burst.KERNEL = False``), with the agenda alone and
with no shortcut, and ``benchmarks/fingerprint.py`` compares whole runs;
the guest's run is compared with SimPy's in ``tests/engine/test_burst_kernel.py``
(``GUEST = False`` leaves every guest to SimPy).
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from itertools import count

import numpy as np
from simpy.events import NORMAL

from .bitmap_blocks import (BLOCK, BLOCK_SHIFT, COUNT_BITS, COUNT_MASK, _find, _find_block,
                            _free_slot, _mark, _take_slot)
from .burst import SLEEPING as ASLEEP
from .burst import TOP as BACK_TO_TOP
from .burst import TURN as ITERATED
from .burst import WAITING as STILL_WAITING
from .burst import _head, _quiet
from .clock import NEVER
from .journal import _MAP_BITS, _MAP_SHIFT, _OFFSET_BITS, Snap
from .stretch import AT_DUE
from .compiled import Compiled, prefetch

#: compiled with numba on first use (engine/compiled.py)
njit = Compiled(globals())

#: The kernel's scalar state, one int64 each in ``Kernel.st``.
(NOW, HEAD_T, LAST_EID, NEXT_EID, WAITING, AT_TOP, ONE_WAIT, STOP_AT_TOP,
 AWAITED, BM_COUNT, NBITS, GRAN, BM_SIZE, CLAIM_BITS, IN_FLIGHT,
 BYTES_IN_FLIGHT, BUF_FREE, CURSOR, OFFSET, BYTES_COPIED, SYNCED, SPEED,
 QUOTA, SLICE_START, SLICE_END, DISPATCHED, SRC_LAT, SRC_BW, SRC_QD,
 SRC_PIPE, SRC_HEAD, SRC_N, SRC_READS, SRC_BYTES, TGT_LAT, TGT_BW, TGT_QD,
 TGT_PIPE, TGT_HEAD, TGT_N, TGT_WRITES, TGT_BYTES, HEAP_N, OUT_N, SHIFT,
 SRC_SIZE, PAGE, TGT_FULL, TGT_TAG, SRC_MAP, STAGED,
 # a guest worker run here (Kernel.guest): its workload, its request in
 # flight, its drive's and its node's counters, its ledger rows
 G_BS, G_START_AT, G_ISSUED, G_K, G_GEN, G_COMPLETED, G_BOUND, G_OFF, G_READ,
 G_GENW, G_START, D_READS, D_WRITES, D_COMPLETED, D_LATENCY, SRC_WRITES,
 SRC_BYTES_W, SKIPPED, L_N, G_KIND,
 # the mirror's iteration (MirrorJob._start_iteration, _next_operation): its
 # claim's granules left, its next operation's plan (bytes, 0 = none yet;
 # a write-zeroes; its slot waited for), the sizes, its claims data (claims_data)
 IT_BIT, IT_END, IT_IO, IT_ZERO, IT_DONE, MAX_IO, COPY_MAX, SRC_FULL, STOP_RET,
 # the loop's sleeps (the rate limit's, a ready poll's) run here: whether they
 # may (MirrorJob.sleeps_through), whether the ready poll's may
 # (MirrorJob.poll_sleeps), and which it is in (its timer on the heap)
 SLEEPS, POLL, SLEEPING,
 # the next operation's place in QEMU's ops_in_flight (MirrorJob._op_seq);
 # AWAITED above is the place of the one the loop waits for (-1: none)
 OP_SEQ,
 # the loop runs from its sleep's timer (MirrorJob._timer_phase): its next
 # sleep of 0 ns after an iteration is a turn of the main loop, else none
 TIMER_PHASE) = range(85)
NSTATE = 85

#: What an agenda entry does (``Kernel.heap[:, KIND]``); TIMER is the loop's
#: sleep's (Job.sleep), and the guest's entries are its worker's wait for a
#: request's due time and for its completion.
WAKE, READ_DONE, WRITE_DONE, TIMER, GUEST_DUE, GUEST_DONE = range(6)
#: What the loop sleeps for (``st[SLEEPING]``): the rate limit, a ready poll.
RATE_LIMIT, NEXT_POLL = 1, 2
T, EID, KIND, SLOT = range(4)

#: What an operation slot holds (``Kernel.ops``): its granules and bytes,
#: whether it is in flight, what its read took (MODE) and where (POS), its
#: place in ops_in_flight (SEQ, CopyOperation.seq).
BIT, END_BIT, START, END, USED, MODE, POS, SEQ = range(8)
NCOLS = 8
#: MODE: the read is still in flight; it was made by the kernel, at entry
#: POS of its page's log; what it took is a Python object (``Kernel.snaps``:
#: a Snap, runs or a Span); it read zeros (a write-zeroes); its write's
#: paste of a Python object is made (from Python: PASTE).
READING, LOGGED, OBJECT, ZEROS, PASTED = 0, 1, 2, 3, 4

#: Records for the Python side (``Kernel.out``): a read's ``start, end``
#: (the target's allocation).  Pastes go to the journal's stage.

#: Return codes besides burst.TOP (0), burst.WAITING (-1) and a sleep (> 0)
#: (asleep, burst.SLEEPING, is WAITING with ``st[SLEEPING]`` set).
NEED_PAGE = -2          # is page ``st[PAGE]`` safe to read?  (nothing done yet)
NEED_BATCH = -5         # the guest needs ``st[G_BOUND]`` more requests drawn
HAND_BACK = -3          # the next step is not for the kernel (nothing done yet)
OUT_FULL = -4           # the records or the journal's stage are full: replay
                        # or flush them, then call again
PASTE = -6              # the write completing next pastes a Python object:
                        # paste it, then call again (nothing else done yet)
TURNS = -7              # an iteration is issued and the loop, which may not
                        # sleep here, sleeps 0 ns: burst.TURN

#: Kernel.stamp of a source with no backing file: every page is read here.
_EVERY_PAGE = object()

#: The kernel runs a paced guest on the mirror's source with its copies
#: (Kernel._adopt); False leaves every guest to SimPy (a reference for tests).
GUEST = True

#: Constants of the model restated, as compiled code takes them (the engine
#: sits below the model and the jobs and imports neither; test_burst_kernel
#: checks each against its source): the mirror's MAX_IN_FLIGHT and the rate
#: limiter's SLICE_NS (QEMU's BLOCK_JOB_SLICE_TIME), a main loop's turn
#: (the faults' MAIN_LOOP_TURN_NS: the loop's sleep of 0 ns).  The dirty bitmap's
#: layout (BLOCK_SHIFT, COUNT_BITS) and its pool's compiled helpers live in
#: bitmap_blocks, which the model's bitmap takes too.
MAX_IN_FLIGHT = 16
SLICE_NS = 100_000_000
TURN_NS = 10_000


#: What Kernel.copy loads into ``st`` at each call, in this order.
_LOADED = np.array([
    NOW, HEAD_T, LAST_EID, NEXT_EID, WAITING, AT_TOP, ONE_WAIT, STOP_AT_TOP,
    AWAITED, BM_COUNT, IN_FLIGHT, BYTES_IN_FLIGHT, CURSOR, OFFSET, BYTES_COPIED,
    SYNCED, SPEED, QUOTA, SLICE_START, SLICE_END, DISPATCHED,
    SRC_LAT, SRC_PIPE, SRC_READS, SRC_BYTES, TGT_LAT, TGT_PIPE, TGT_WRITES, TGT_BYTES,
    SRC_HEAD, SRC_N, TGT_HEAD, TGT_N, OUT_N, TGT_FULL,
    BUF_FREE, IT_BIT, IT_END, IT_IO, IT_ZERO, IT_DONE, SRC_FULL, STOP_RET, SLEEPS, POLL,
    OP_SEQ, TIMER_PHASE])
#: What Kernel._enter_guest loads, in this order.
_GUEST_LOADED = np.array([
    G_BS, G_START_AT, G_ISSUED, G_K, G_COMPLETED, G_GEN, D_READS, D_WRITES, D_COMPLETED,
    D_LATENCY, SRC_WRITES, SRC_BYTES_W, SKIPPED, L_N])


# -- the compiled steps ------------------------------------------------------------
#: How the kernel's steps are compiled: cached, and without numba's runtime
#: (NRT).  They allocate nothing, and with the runtime every array handed to
#: a step is reference-counted, with atomic operations, at every call: perf
#: showed those at a sixth of the samples of benchmark (b), and the loop
#: took 3.7 s instead of 2.5.  (A step that allocated would not compile.)
_step = njit(cache=True, _nrt=False)


# The agenda's entries: a binary heap of rows (time, id, kind, slot) ordered
# by (time, id), the key SimPy would have given each (blocksim.engine.agenda).
@_step
def _heap_put(heap, i, t, eid, kind, slot):
    heap[i, T] = t
    heap[i, EID] = eid
    heap[i, KIND] = kind
    heap[i, SLOT] = slot


@_step
def _heap_move(heap, to, at):
    """Row ``at`` copied to row ``to`` (element by element: a slice would be
    an array view, with the runtime's reference counting on each)."""
    for c in range(4):
        heap[to, c] = heap[at, c]


@_step
def _heap_push(heap, st, t, eid, kind, slot):
    i = st[HEAP_N]
    st[HEAP_N] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        pt, pe = heap[parent, T], heap[parent, EID]
        if pt < t or (pt == t and pe < eid):
            break
        _heap_move(heap, i, parent)
        i = parent
    _heap_put(heap, i, t, eid, kind, slot)


@_step
def _heap_pop(heap, st):
    n = st[HEAP_N] - 1
    st[HEAP_N] = n
    if n == 0:
        return
    t, eid, kind, slot = heap[n, T], heap[n, EID], heap[n, KIND], heap[n, SLOT]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (heap[c + 1, T] < heap[c, T] or (
                heap[c + 1, T] == heap[c, T] and heap[c + 1, EID] < heap[c, EID])):
            c += 1
        if heap[c, T] > t or (heap[c, T] == t and heap[c, EID] > eid):
            break
        _heap_move(heap, i, c)
        i = c
    _heap_put(heap, i, t, eid, kind, slot)


@njit(cache=True)
def _heap_take_guest(heap, st):
    """Take the guest's entry out of the heap; its time, id and kind."""
    i = 0
    while heap[i, KIND] < GUEST_DUE:
        i += 1
    return _heap_take(heap, st, i)


@njit(cache=True)
def _heap_take_timer(heap, st):
    """Take the sleep's timer out of the heap; its time, id and delay."""
    i = 0
    while heap[i, KIND] != TIMER:
        i += 1
    ns = heap[i, SLOT]
    t, eid, _kind = _heap_take(heap, st, i)
    return t, eid, ns


@njit(cache=True)
def _heap_take(heap, st, i):
    """Take row ``i`` out of the heap; its time, id and kind."""
    n = st[HEAP_N]
    t, eid, kind = heap[i, T], heap[i, EID], heap[i, KIND]
    # the others, in (time, id) order: a heap (at most 33 of them)
    for j in range(i + 1, n):
        _heap_move(heap, j - 1, j)
    n -= 1
    for j in range(1, n):
        k = j
        while k > 0 and (heap[k - 1, T] > heap[k, T] or (
                heap[k - 1, T] == heap[k, T] and heap[k - 1, EID] > heap[k, EID])):
            for c in range(4):
                heap[k - 1, c], heap[k, c] = heap[k, c], heap[k - 1, c]
            k -= 1
    st[HEAP_N] = n
    return t, eid, kind


@_step
def _service_done(st, slots, base, now, nbytes):
    """BlockDevice._service_done without jitter: the FIFO of busy slots is a
    ring ``slots``; the device's latency, bandwidth, queue depth, the time its
    pipe is free and the ring's head and length are ``st[base:base + 6]``
    (``base`` is SRC_LAT or TGT_LAT)."""
    cap = slots.shape[0]
    head, n = st[base + 4], st[base + 5]
    while n and slots[head] <= now:
        head = (head + 1) % cap
        n -= 1
    if n >= st[base + 2]:
        start = slots[head]
        head = (head + 1) % cap
        n -= 1
    else:
        start = now
    t = start + st[base]
    if t < st[base + 3]:
        t = st[base + 3]
    done = t + nbytes * 1_000_000_000 // st[base + 1]
    st[base + 3] = done
    slots[(head + n) % cap] = done
    st[base + 4] = head
    st[base + 5] = n + 1
    return done


@_step
def _search(bits, bit_words, summary, blocks, block_words, b0, b1):
    """DirtyBitmap._search: the first dirty bit in ``[b0, b1)``, or -1.  A
    block's count gives its state (DirtyBitmap's rule): 0 all clean, BLOCK
    all dirty (no bytes), mixed in between (its slot's bytes say)."""
    blk = b0 >> BLOCK_SHIFT
    edge = (blk + 1) << BLOCK_SHIFT
    v = summary[blk]
    c = v & COUNT_MASK
    if c == BLOCK:
        return b0 if b0 < b1 else -1
    # (a block with no dirty bit is not scanned: a ready mirror's cursor is
    # mostly in one, its only granule just copied)
    found = _find_in(bits, bit_words, v, blk, b0, b1 if b1 < edge else edge) if c else -1
    if found >= 0 or b1 <= edge:
        return found
    blk = _find_block(bits, bit_words, summary, blocks, block_words, blk + 1,
                      ((b1 - 1) >> BLOCK_SHIFT) + 1)
    if blk < 0:
        return -1
    # a flagged block inside the range holds a dirty bit; only the last
    # block can hold its dirty bits past b1
    start = blk << BLOCK_SHIFT
    v = summary[blk]
    if v == BLOCK:
        return start
    edge = start + BLOCK
    return _find_in(bits, bit_words, v, blk, start, b1 if b1 < edge else edge)


@_step
def _find_in(bits, bit_words, v, blk, b0, b1):
    """DirtyBitmap._find_in for a dirty byte: granules ``[b0, b1)`` of
    mixed block ``blk`` (summary entry ``v``), in its slot."""
    a = (blk - (v >> COUNT_BITS)) << BLOCK_SHIFT        # granule -> pool offset
    found = _find(bits, bit_words, b0 - a, b1 - a)
    return found + a if found >= 0 else -1


@_step
def _dirty(bits, summary, b):
    """DirtyBitmap.is_dirty."""
    v = summary[b >> BLOCK_SHIFT]
    c = v & COUNT_MASK
    return c == BLOCK or (c != 0 and bits[(v >> COUNT_BITS << BLOCK_SHIFT)
                                          | (b & (BLOCK - 1))] != 0)


@_step
def _start_iteration(st, bits, bit_words, summary, blocks, block_words, ops):
    """MirrorJob._start_iteration: claim the dirty run after the cursor (up
    to CLAIM_BITS granules, stopping at an operation in flight) and clear
    it; False (nothing done) if an operation in flight holds its first
    granule."""
    cursor = st[CURSOR]
    nbits = st[NBITS]
    b = _search(bits, bit_words, summary, blocks, block_words, cursor, nbits)
    if b < 0 and cursor:
        b = _search(bits, bit_words, summary, blocks, block_words, 0, cursor)
    # operations in flight are disjoint: the one holding b is the last one
    # starting at or before it; the claim stops at the first one after it
    last_bit, last_end, last_seq, after = -1, -1, -1, nbits
    for s in range(ops.shape[0]):
        if ops[s, USED]:
            bit = ops[s, BIT]
            if bit <= b:
                if bit > last_bit:
                    last_bit, last_end, last_seq = bit, ops[s, END_BIT], ops[s, SEQ]
            elif bit < after:
                after = bit
    if last_end > b:
        st[AWAITED] = last_seq          # (the loop waits for that one)
        return False
    end = b + st[CLAIM_BITS]
    if end > after:
        end = after
    e = b
    while e < end and _dirty(bits, summary, e):
        e += 1
    # clear_bits, counts exact per block: every granule of [b, e) is dirty,
    # so a block whose count is its part of the claim turns clean without
    # its bytes (its slot back), and a whole dirty block cleared in part is
    # materialised (a slot taken, all dirty)
    i = b
    while i < e:
        blk = i >> BLOCK_SHIFT
        stop = (blk + 1) << BLOCK_SHIFT
        if stop > e:
            stop = e
        v = summary[blk]
        c = v & COUNT_MASK
        slot = v >> COUNT_BITS
        if c == stop - i:
            if slot:
                _free_slot(bits, slot)
            summary[blk] = 0
            blocks[blk] = 0
        else:
            if c == BLOCK:
                slot = _take_slot(bits, 1)
            a = (blk - slot) << BLOCK_SHIFT
            for j in range(i - a, stop - a):
                bits[j] = 0
            summary[blk] = (c - (stop - i)) | (slot << COUNT_BITS)
        i = stop
    st[BM_COUNT] -= e - b
    st[CURSOR] = e if e < nbits else 0
    st[IT_BIT] = b
    st[IT_END] = e
    return True


@_step
def _next_operation(st, ops):
    """MirrorJob._next_operation on a source whose block status is data over
    the claim (Kernel.claims_data, MirrorJob._plan): book the claim's next copy;
    its slot, -1 to wait for an operation, -2 if the job has failed (the
    claim dropped), -3 if the copy's granules are not free in the buffer
    (it waits for them, queued: the Python loop's, nothing booked yet)."""
    g = st[GRAN]
    b = st[IT_BIT]
    if not st[IT_IO]:
        start = b * g
        size = st[BM_SIZE]
        io = st[IT_END] * g
        if io > size:
            io = size
        io -= start
        if io > st[MAX_IO]:
            io = st[MAX_IO]
        io -= io % g
        if io < g:
            io = g
        if io > size - start:
            io = size - start
        if io > st[COPY_MAX]:
            io = st[COPY_MAX]
        st[IT_IO] = io
    io = st[IT_IO]
    if not st[IT_DONE]:
        if st[IN_FLIGHT] >= MAX_IN_FLIGHT:
            return -1
        if st[STOP_RET]:
            st[IT_END] = b
            st[IT_IO] = 0
            return -2
        st[IT_DONE] = 1
    n = (io + g - 1) // g
    if st[BUF_FREE] < n:
        return -3
    st[BUF_FREE] -= n
    st[IT_IO] = 0
    st[IT_DONE] = 0
    st[IT_BIT] = b + n
    free = 0
    while ops[free, USED]:
        free += 1
    start = b * g
    ops[free, BIT] = b
    ops[free, END_BIT] = b + n
    ops[free, START] = start
    ops[free, END] = start + io
    ops[free, USED] = 1
    ops[free, MODE] = READING
    ops[free, SEQ] = st[OP_SEQ]
    st[OP_SEQ] += 1
    st[IN_FLIGHT] += 1
    st[BYTES_IN_FLIGHT] += io
    return free


@_step
def _oldest_copy(ops):
    """MirrorJob.oldest_copy: the place of the oldest operation in flight."""
    seq = -1
    for s in range(ops.shape[0]):
        if ops[s, USED] and (seq < 0 or ops[s, SEQ] < seq):
            seq = ops[s, SEQ]
    return seq


@_step
def _throttle(st, nbytes):
    """MirrorJob.throttle (RateLimit.delay, and none once ready)."""
    if not st[SPEED]:
        return 0
    now = st[NOW]
    if st[SLICE_END] <= now:
        st[SLICE_START] = now
        st[SLICE_END] = now + SLICE_NS
        st[DISPATCHED] = 0
    st[DISPATCHED] += nbytes
    if st[DISPATCHED] < st[QUOTA]:
        return 0
    quota = st[QUOTA] if st[QUOTA] > 1 else 1
    slices = st[DISPATCHED] / quota
    st[SLICE_END] = st[SLICE_START] + np.int64(slices * SLICE_NS)
    delay = st[SLICE_END] - now
    if delay < 0:
        delay = 0
    return 0 if st[SYNCED] else delay


@_step
def _sleep(st, heap, ns, what):
    """Job.sleep: the loop sleeps ``ns`` (its timer's id drawn now), its
    agenda running itself meanwhile (MirrorJob._away: operations finishing
    wake nobody); ``what`` is RATE_LIMIT or NEXT_POLL.  (The timer's entry
    keeps ``ns`` as its slot.)"""
    _heap_push(heap, st, st[NOW] + ns, st[NEXT_EID], TIMER, ns)
    st[NEXT_EID] += 1
    st[SLEEPING] = what
    st[WAITING] = 1


@njit(cache=True)
def _clusters(out, n, cs):
    """The clusters of the reads' ranges ``out[:n]`` (byte ``start, end``
    rows), as runs of clusters ``lo, hi`` written over ``out``'s first
    rows (a read's clusters joined to the run before when they follow on);
    how many."""
    m = 0
    lo = hi = -1
    for i in range(n):
        b, c = out[i, 0], out[i, 1]
        if b // cs == hi:
            hi = -(-c // cs)
        else:
            if hi > lo:
                out[m, 0] = lo
                out[m, 1] = hi
                m += 1
            lo, hi = b // cs, -(-c // cs)
    if hi > lo:
        out[m, 0] = lo
        out[m, 1] = hi
        m += 1
    return m


# -- the guest ----------------------------------------------------------------------
# A one-worker paced guest on the mirror's source, taken over from SimPy
# (Kernel._adopt): its worker's waits are entries of the heap, its requests
# go through the source's queue and pipe among the copies' reads, and its
# writes land as Drive.request and BlockDevice.complete_write land them
# (their journal entry, the dirty bitmap's mark, the counters, a ledger row).
@_step
def _peek(st, heap):
    """What SimPy's ``peek`` would answer: its own next event, or the
    agenda's marker (the first entry here)."""
    t = st[HEAD_T]
    if st[HEAP_N] and heap[0, T] < t:
        t = heap[0, T]
    return t


@_step
def _guest_done(st, now, ledger, bits, summary, blocks, stage, loglen, pending):
    """The guest's request completes: Drive.finish on a quiet node."""
    bs = st[G_BS]
    off = st[G_OFF]
    if st[G_READ]:
        st[SRC_READS] += 1
        st[SRC_BYTES] += bs
        st[D_READS] += 1
    else:
        st[SRC_WRITES] += 1
        st[SRC_BYTES_W] += bs
        # the content (ExtentMap.set, logged: a block never straddles pages)
        shift = st[SHIFT]
        p = off >> shift
        ps = p << shift
        n = st[STAGED]
        stage[n, 0] = p
        stage[n, 1] = (st[SRC_MAP] << _MAP_SHIFT) | (off - ps) | ((off + bs - ps) << _OFFSET_BITS)
        stage[n, 2] = st[G_GENW]
        st[STAGED] = n + 1
        loglen[p] += 2
        pending[p] = 1
        # the write listener: the mirror's dirty bitmap (DirtyBitmap.mark)
        g = st[GRAN]
        for b in range(off // g, (off + bs + g - 1) // g):
            st[BM_COUNT] += _mark(bits, summary, blocks, b)
        st[D_WRITES] += 1
        n = st[L_N]
        ledger[n, 0] = off
        ledger[n, 1] = st[G_GENW]      # (not always the one before plus one:
        st[L_N] = n + 1                 # a request taken over in flight)
    st[D_COMPLETED] += 1
    st[D_LATENCY] += now - st[G_START]
    st[G_COMPLETED] += 1


@_step
def _guest_waits(st, heap, interval):
    """The worker's loop top: its next request's due time.  True if it waits
    for it (an entry pushed), False if it issues it now (the clock at it)."""
    i = st[G_ISSUED]
    st[G_ISSUED] = i + 1
    due = st[G_START_AT] + np.int64(i * interval)
    if due <= st[NOW]:
        return False
    if due < _peek(st, heap):               # the clock's shortcut (Clock.skip_to)
        st[SKIPPED] += 1
        st[NOW] = due
        return False
    _heap_push(heap, st, due, st[NEXT_EID], GUEST_DUE, -1)
    st[NEXT_EID] += 1
    st[G_KIND] = GUEST_DUE
    return True


#: how many requests ahead the guest's steps prefetch what a write's
#: completion reads (_prefetch_guest)
_GUEST_AHEAD = 2


@_step
def _prefetch_guest(st, off, loglen, pending, summary):
    """Prefetch what _guest_done reads for a write at ``off``: its page's
    log length and flag and its granule's block in the dirty bitmap (a 64
    TiB disk's pages and blocks are megabytes of them, the guest's writes
    at random places: a cache miss each, waited for one after the other
    without).  Nothing changes."""
    p = off >> st[SHIFT]
    if p < loglen.shape[0]:
        prefetch(loglen, p)
    if p < pending.shape[0]:
        prefetch(pending, p)
    blk = (off // st[GRAN]) >> BLOCK_SHIFT
    if blk < summary.shape[0]:
        prefetch(summary, blk)


@_step
def _prefetch_copy(st, start, safe, loglen, tgt_pending, tgt_zeroing):
    """Prefetch what a copy's completions read for its page (the read's:
    ``safe`` and ``loglen``; the write's: the target's flags), as the read
    is issued: a ready mirror's copies are scattered as the guest's writes.
    Nothing changes."""
    p = start >> st[SHIFT]
    if p < safe.shape[0]:
        prefetch(safe, p)
    if p < loglen.shape[0]:
        prefetch(loglen, p)
    if p < tgt_pending.shape[0]:
        prefetch(tgt_pending, p)
    if p < tgt_zeroing.shape[0]:
        prefetch(tgt_zeroing, p)


@_step
def _guest(st, kind, heap, src_slots, offs, reads, ledger, interval, bits, summary, blocks,
           stage, loglen, pending):
    """The guest's entry popped at ``st[NOW]``: its request's completion, or
    its next request's due time.  The worker then runs on through every
    wait the clock's shortcut skips, and leaves its next entry on the heap."""
    if kind == GUEST_DONE:
        _guest_done(st, st[NOW], ledger, bits, summary, blocks, stage, loglen, pending)
        if _guest_waits(st, heap, interval):
            return
    while True:
        # the request (GuestWorkload._worker, Drive.request)
        now = st[NOW]
        k = st[G_K]
        st[G_K] = k + 1
        if k + _GUEST_AHEAD < offs.shape[0]:
            _prefetch_guest(st, offs[k + _GUEST_AHEAD], loglen, pending, summary)
        st[G_OFF] = offs[k]
        st[G_READ] = reads[k]
        if reads[k]:
            st[G_GENW] = 0
        else:
            st[G_GENW] = st[G_GEN]
            st[G_GEN] += 1
        st[G_START] = now
        done = _service_done(st, src_slots, SRC_LAT, now, st[G_BS])
        if not done < _peek(st, heap):
            _heap_push(heap, st, done, st[NEXT_EID], GUEST_DONE, -1)
            st[NEXT_EID] += 1
            st[G_KIND] = GUEST_DONE
            return
        st[SKIPPED] += 1
        st[NOW] = done
        _guest_done(st, done, ledger, bits, summary, blocks, stage, loglen, pending)
        if _guest_waits(st, heap, interval):
            return


@_step
def _run(st, bits, bit_words, summary, blocks, block_words, ops, heap, src_slots, tgt_slots,
         safe, loglen, out, stage, src_pending, tgt_pending, tgt_zeroing, zeroed,
         offs, reads, ledger, interval):
    """burst.copy's loop on quiet nodes, and the guest's steps if it runs
    here; see the module's doc.  Returns TOP, WAITING, a sleep in ns,
    NEED_PAGE, HAND_BACK or OUT_FULL."""
    out_cap = out.shape[0]
    stage_cap = stage.shape[0]
    while True:
        if not st[WAITING]:
            if st[IT_BIT] >= st[IT_END]:
                # the loop's top (MirrorJob.run)
                if st[AT_TOP]:
                    st[AT_TOP] = 0
                elif st[STOP_AT_TOP]:
                    return 0
                if not (st[BM_COUNT] and st[IN_FLIGHT] < MAX_IN_FLIGHT and st[BUF_FREE]):
                    if not st[IN_FLIGHT]:
                        if st[BM_COUNT] or not st[POLL]:
                            return 0
                        # a ready mirror's poll (MirrorJob.run): it sleeps a slice
                        _sleep(st, heap, SLICE_NS, NEXT_POLL)
                        continue
                    st[WAITING] = 1
                    st[AWAITED] = _oldest_copy(ops)
                    continue
                if not _start_iteration(st, bits, bit_words, summary, blocks, block_words, ops):
                    st[WAITING] = 1
                    continue
            st[AT_TOP] = 0
            # the claim's next operation: a copy, where the claim is data
            if st[IT_ZERO] or not (st[IT_IO] or st[SRC_FULL]):
                return -3
            slot = _next_operation(st, ops)
            if slot == -1:
                st[WAITING] = 1
                st[AWAITED] = _oldest_copy(ops)
                continue
            if slot == -2:              # the job failed: the claim dropped
                return TURNS
            if slot == -3:              # (MirrorJob._queued: Python's)
                return HAND_BACK
            nbytes = ops[slot, END] - ops[slot, START]
            _prefetch_copy(st, ops[slot, START], safe, loglen, tgt_pending, tgt_zeroing)
            done = _service_done(st, src_slots, SRC_LAT, st[NOW], nbytes)
            _heap_push(heap, st, done, st[NEXT_EID], READ_DONE, slot)
            st[NEXT_EID] += 1
            delay = _throttle(st, nbytes)
            if st[IT_BIT] >= st[IT_END]:
                if not st[SLEEPS]:
                    return delay if delay else TURNS
                # MirrorJob._iteration_sleep: the rate limit's delay, or 0
                # ns, a sleep only from the timers' phase
                if delay or st[TIMER_PHASE]:
                    _sleep(st, heap, delay if delay else TURN_NS, RATE_LIMIT)
                else:
                    st[TIMER_PHASE] = 1
            continue
        if not st[HEAP_N]:
            return 0
        t, eid = heap[0, T], heap[0, EID]
        if t > st[HEAD_T] or (t == st[HEAD_T] and eid > st[LAST_EID]):
            return -1
        kind, slot = heap[0, KIND], heap[0, SLOT]
        if kind >= GUEST_DUE:
            _heap_pop(heap, st)
            # the worker runs on until the next entry or SimPy's next event:
            # at most the requests due before then (and the one completing)
            bound = np.int64((_peek(st, heap) - st[G_START_AT]) / interval[0]) + 3 - st[G_ISSUED]
            st[G_BOUND] = bound
            if st[G_K] + bound > offs.shape[0]:
                _heap_push(heap, st, t, eid, kind, -1)
                return -5
            if st[STAGED] + bound > stage_cap or st[L_N] + bound > ledger.shape[0]:
                _heap_push(heap, st, t, eid, kind, -1)
                return -4
            st[NOW] = t
            _guest(st, kind, heap, src_slots, offs, reads, ledger, interval[0], bits, summary,
                   blocks, stage, loglen, src_pending)
            continue
        if kind == TIMER:
            # the sleep's timer: its callback wakes the loop (Event.succeed,
            # a new id: the wake-up comes after all else due at ``t``).  With
            # anything else due then, the rest of the sleep is SimPy's
            # (burst.SLEEPING).
            if t == st[HEAD_T]:
                return -1
            _heap_pop(heap, st)
            if st[HEAP_N] and heap[0, T] == t:
                _heap_push(heap, st, t, eid, TIMER, slot)
                return -1
            st[NOW] = t
            st[NEXT_EID] += 1
            st[TIMER_PHASE] = 1
            # the loop wakes, its agenda its own again (MirrorJob._away),
            # passes the pause point (none asked: Kernel.copy) and its top's
            # checks, which hold as when it went to sleep
            st[SLEEPING] = 0
            st[WAITING] = 0
            st[AT_TOP] = 1
            continue
        shift = st[SHIFT]
        if kind == READ_DONE:
            start, end = ops[slot, START], ops[slot, END]
            p = start >> shift
            if (end - 1) >> shift != p or end > st[SRC_SIZE] or safe[p] == 2:
                return -3
            if not safe[p]:
                st[PAGE] = p
                return -2
        elif kind == WRITE_DONE and ops[slot, MODE] == OBJECT:
            return -6               # (what it pastes is a Python object)
        elif kind == WRITE_DONE and ops[slot, MODE] == ZEROS:
            return -3
        if kind == READ_DONE and st[OUT_N] == out_cap or (
                kind == WRITE_DONE and st[STAGED] == stage_cap):
            return -4
        _heap_pop(heap, st)
        now = st[NOW] = t
        if kind == WAKE:
            st[TIMER_PHASE] = 0             # (woken by a completion)
            if st[ONE_WAIT]:
                return 0
            st[WAITING] = 0
            continue
        start, end = ops[slot, START], ops[slot, END]
        nbytes = end - start
        p = start >> shift
        if kind == READ_DONE:
            # CopyOperation.read_completed: the read's place in its page's
            # log (journal.snap), the write submitted
            ops[slot, MODE] = LOGGED
            ops[slot, POS] = loglen[p] >> 1
            if not st[TGT_FULL]:
                n = st[OUT_N]
                out[n, 0] = start
                out[n, 1] = end
                st[OUT_N] = n + 1
            st[SRC_READS] += 1
            st[SRC_BYTES] += nbytes
            done = _service_done(st, tgt_slots, TGT_LAT, now, nbytes)
            _heap_push(heap, st, done, st[NEXT_EID], WRITE_DONE, slot)
            st[NEXT_EID] += 1
            continue
        # CopyOperation.write_completed: the paste (journal.paste), unless
        # made already from Python (PASTE)
        if ops[slot, MODE] == LOGGED:
            ps = p << shift
            n = st[STAGED]
            stage[n, 0] = p
            stage[n, 1] = st[TGT_TAG] | (start - ps) | ((end - ps) << _OFFSET_BITS)
            stage[n, 2] = -1 - (((ops[slot, POS] << _MAP_BITS) | st[SRC_MAP]) << 1)
            st[STAGED] = n + 1
            loglen[p] += 2
            tgt_pending[p] = 1
            tgt_zeroing[p] = 1              # (a paste may bring zeros)
            zeroed[st[TGT_TAG] >> _MAP_SHIFT] += 1
        st[TGT_WRITES] += 1
        st[TGT_BYTES] += nbytes
        st[OFFSET] += nbytes
        st[BYTES_COPIED] += nbytes
        # MirrorJob._op_finished (a copy's granules back in the buffer)
        ops[slot, USED] = 0
        st[BUF_FREE] += ops[slot, END_BIT] - ops[slot, BIT]
        st[IN_FLIGHT] -= 1
        st[BYTES_IN_FLIGHT] -= nbytes
        # (the loop wakes when the operation it waits for is done; it is
        # then attached: MirrorJob._op_finished)
        if ops[slot, SEQ] == st[AWAITED]:
            st[AWAITED] = -1
            _heap_push(heap, st, now, st[NEXT_EID], WAKE, -1)
            st[NEXT_EID] += 1


# -- the Python side -----------------------------------------------------------------
class Kernel:
    """A mirror's operations in flight and agenda entries as arrays, and the
    compiled loop over them (see the module's doc).

    ``active``: the entries live here (the agenda's own list is empty);
    otherwise they are the agenda's tuples and this holds nothing."""

    __slots__ = ("job", "st", "ops", "heap", "out", "src_slots", "tgt_slots",
                 "safe", "stamp", "snaps", "active", "bitmap", "guest", "ledger",
                 "offs", "reads", "interval", "timer", "allocated")

    OUT_RECORDS = 4096
    #: ledger rows of the guest's writes between two hand-outs to its drive
    LEDGER_ROWS = 1 << 16

    def __init__(self, job):
        src, tgt = job.source, job.target
        self.job = job
        self.st = np.zeros(NSTATE, dtype=np.int64)
        self.ops = np.zeros((MAX_IN_FLIGHT, NCOLS), dtype=np.int64)
        # (each operation's read or write, the wake mark, the guest's entry)
        self.heap = np.zeros((2 * MAX_IN_FLIGHT + 2, 4), dtype=np.int64)
        self.out = np.zeros((self.OUT_RECORDS, 2), dtype=np.int64)
        self.src_slots = np.zeros(src.queue_depth + 1, dtype=np.int64)
        self.tgt_slots = np.zeros(tgt.queue_depth + 1, dtype=np.int64)
        content = src.content
        self.safe = np.zeros((content.size >> content._shift) + 1, dtype=np.uint8)
        self.stamp = None
        self.snaps: list = [None] * MAX_IN_FLIGHT
        self.active = False
        #: the guest worker run here during this call, as ``(workload, the
        #: event its process waits on)``, or None (see _adopt)
        self.guest = None
        self.ledger = np.zeros((self.LEDGER_ROWS, 2), dtype=np.int64)
        #: how many of the ledger buffer's rows have had their clusters
        #: allocated (_allocate)
        self.allocated = 0
        self.offs = np.zeros(1, dtype=np.int64)
        self.reads = np.zeros(1, dtype=np.bool_)
        self.interval = np.zeros(1, dtype=np.float64)
        #: the loop's sleep's timer as ``(time, id, the sleep's length,
        #: whether a poll's)`` after a call that returned burst.SLEEPING
        #: (see copy)
        self.timer = None
        st = self.st
        bm = job.bitmap
        self.bitmap = bm.arrays()
        st[NBITS], st[GRAN], st[BM_SIZE] = bm.nbits, bm.granularity, bm.size
        st[CLAIM_BITS], st[MAX_IO], st[COPY_MAX] = job.claim_bits, job.max_io, job.copy_max
        st[SRC_BW], st[SRC_QD] = src.bandwidth, src.queue_depth
        st[TGT_BW], st[TGT_QD] = tgt.bandwidth, tgt.queue_depth
        st[SHIFT], st[SRC_SIZE] = content._shift, content.size
        st[TGT_TAG], st[SRC_MAP] = tgt.content._tag, content._tag >> (2 * _OFFSET_BITS)
        content._journal._before_settle.append(self.hand_in)

    @staticmethod
    def applies(job) -> bool:
        """Whether the kernel can run ``job``'s quiet bursts at all: a source
        whose content is journaled, with the target's (what a read finds is
        then a :class:`~blocksim.engine.journal.Snap` where its page is
        known).  The source may have a backing file (an active commit's
        top, over its base, the target): the kernel reads only pages of the
        source's own map known to hold no zero (:attr:`safe`), and the
        chain's read there (:meth:`BlockDevice.read_for_copy
        <blocksim.model.device.BlockDevice.read_for_copy>`: resolve_runs,
        where a layer holds 0 the next one down answers) is the top's own
        runs: the same read.  Any other page is handed back to the Python
        loop, which resolves it through the chain."""
        src, tgt = job.source, job.target
        return (src.content._journal is not None
                and tgt.content._journal is src.content._journal)

    @staticmethod
    def claims_data(job) -> bool:
        """Whether the source's block status is data over every claim, so
        that the kernel plans copies as MirrorJob._plan would without asking
        (``st[SRC_FULL]``): a fully allocated source, or a source with no
        backing file whose dirty granules all lie in allocated clusters
        (MirrorJob.dirty_allocated): bdrv_block_status_above then finds one
        allocated extent from a claim's first granule to its end, and
        mirror_iteration copies it in operations of at most max_io.  Else
        the claim's plan is Python's (HAND_BACK), as is a write-zeroes."""
        src = job.source
        return src.fully_allocated() or (job.dirty_allocated and src.backing is None)

    def _check_safe(self, src, srcmap, journal, src_index: int) -> None:
        """Which pages of the source the kernel reads (``safe``).

        A source with no backing file: every page.  A read there is a
        :class:`~blocksim.engine.journal.Snap` whatever it finds, zeros
        included, where :meth:`ExtentMap.snapshot
        <blocksim.model.extents.ExtentMap.snapshot>` would settle the page
        and return the list ``[(start, end, 0)]`` for a range reading as
        zeros: both are written to the target as data (QEMU's
        mirror_read_complete writes what it read, zeros included), and the
        paste's settle gives the target the zeros the list would have, so
        the run is the same (its content, counters, events); only the
        journal's work differs (a paste logged instead of a settle of the
        source's page and of the target's).

        A source over a backing file (an active commit's top): only pages
        of its own map known to hold no zero, where its read is its own
        runs (asked of Python once per page, NEED_PAGE, until the map
        changes): a zero there reads the backing file, which the Python
        loop resolves through the chain."""
        if src.backing is None:
            if self.stamp is not _EVERY_PAGE:
                self.safe[:] = 1
                self.stamp = _EVERY_PAGE
            return
        stamp = (srcmap.version, journal.zeroed[src_index])
        if stamp != self.stamp:
            self.safe[:] = 0
            self.stamp = stamp

    @staticmethod
    def _allocates_quietly(src) -> bool:
        """Whether every guest write to ``src`` allocates its new clusters
        as BlockDevice.submit_write would, without failing and without
        copy-on-write (BlockDevice.allocate_quietly's conditions, for the
        whole disk): no backing file, no thin volume under it, room for
        every cluster.  (Thresholds are is_quiet_for's.)  The kernel then
        runs the guest on a source not fully allocated, its writes'
        clusters allocated from Python at each return (_allocate)."""
        return (src.backing is None and src.lv_size is None
                and (src.capacity is None
                     or src.capacity >= src.alloc.nclusters * src.cluster_size))

    def __len__(self) -> int:
        return int(self.st[HEAP_N])

    def first_key(self) -> tuple:
        """The first entry's ``(time, id)``."""
        return int(self.heap[0, T]), int(self.heap[0, EID])

    def has_wake_mark(self) -> bool:
        return WAKE in self.heap[:int(self.st[HEAP_N]), KIND].tolist()

    # -- the burst ---------------------------------------------------------------
    def copy(self, waiting: bool, at_top: bool, detached: bool, one_wait: bool,
             head_t, last_eid: int):
        """Run the burst; returns burst.copy's outcome, or None having handed
        the state back to Python objects (``materialize``) with ``waiting``
        and ``at_top`` as the loop must carry on, as ``(waiting, at_top)``."""
        job = self.job
        if not self.active and not self._absorb():
            return None, (waiting, at_top)
        env = job.env
        src, tgt, bm, limit = job.source, job.target, job.bitmap, job.limit
        if job._agenda._markers:
            head_t, last_eid = self._unmark(head_t, last_eid)
        srcmap = src.content
        journal = srcmap._journal
        src_index = srcmap._tag >> _MAP_SHIFT
        src_flags = journal.flags[src_index]
        tgt_flags = journal.flags[tgt.content._tag >> _MAP_SHIFT]
        self._check_safe(src, srcmap, journal, src_index)
        st = self.st
        n_src, n_tgt = len(src._slots), len(tgt._slots)
        self.src_slots[:n_src] = src._slots
        self.tgt_slots[:n_tgt] = tgt._slots
        alloc = tgt.alloc
        plan = job._it_plan
        sleeps = not (detached or one_wait) and job.sleeps_through()
        # the scalars, in the order of _LOADED
        st[_LOADED] = (
            env._now, NEVER if head_t == float("inf") else head_t, last_eid, next(env._eid),
            waiting, at_top, one_wait,
            bool(job.ret or (job.pause_count > 0 and job.should_pause())
                 or (job.cancelled and not job.completes_on_cancel())),
            job._awaited, bm.count,
            job.in_flight, job.bytes_in_flight, job._cursor, job.offset, job.bytes_copied,
            job.synced, limit.speed, limit.slice_quota,
            limit.slice_start, limit.slice_end, limit.dispatched,
            src.latency, src._pipe_free, src.reads, src.bytes_read,
            tgt.latency, tgt._pipe_free, tgt.writes, tgt.bytes_written,
            0, n_src, 0, n_tgt, 0, alloc.count == alloc.nclusters,
            job.buf_free, job._it_bit, job._it_end, *(plan or (0, 0, 0)),
            self.claims_data(job), bool(job.ret),
            # (the checks after the loop's sleeps, which nothing run here
            # changes: the loop may sleep here, from a burst of its own)
            sleeps, sleeps and job.poll_sleeps(), job._op_seq, job._timer_phase)
        loglen = np.frombuffer(journal.loglen, dtype=np.int64)
        zeroed = np.frombuffer(journal.zeroed, dtype=np.int64)
        bits, bit_words, summary, blocks, block_words = self.bitmap
        safe = self.safe
        queue = env._queue
        if self.guest is not None:          # still here since an earlier call
            if self._fits(self.guest[0], env._now, head_t, nodes_quiet=True):
                self._enter_guest()
            else:
                self._release()
                # (its event is back in SimPy's queue: the head now, or later)
                st[HEAD_T], st[LAST_EID] = _head(queue)
        run, args = _run, None
        while True:
            if args is None:        # (again after a step that replaces an array)
                args = (st, bits, bit_words, summary, blocks, block_words, self.ops,
                        self.heap, self.src_slots, self.tgt_slots, safe, loglen,
                        self.out, journal.rows, src_flags[0], tgt_flags[0],
                        tgt_flags[1], zeroed, self.offs, self.reads, self.ledger,
                        self.interval)
            st[STAGED] = journal.staged
            outcome = int(run(*args))
            journal.staged = int(st[STAGED])
            if st[OUT_N]:
                self._replay(tgt)
            if outcome == NEED_PAGE:
                p = int(st[PAGE])
                safe[p] = 1 if srcmap.holds_data(p) else 2     # (a source over a backing file)
                continue
            if outcome == OUT_FULL:
                bound = int(st[G_BOUND]) if self.guest is not None else 1
                if journal.staged + bound > journal.capacity:
                    journal.flush()
                if self.guest is not None and st[L_N] + bound > self.LEDGER_ROWS:
                    self._hand_out_ledger(self.guest[0])
                continue
            if outcome == PASTE:
                # the write's paste of what its read took as an object (a Snap
                # handed in before a settle, runs): burst.copy's own step
                slot = int(self.heap[0, SLOT])
                tgt.content.set_runs(self.snaps[slot])
                self.snaps[slot] = None
                self.ops[slot, MODE] = PASTED
                # (which may have settled pages of the source: what is known
                # of them goes with their change, as at the call's start)
                if (srcmap.version, journal.zeroed[src_index]) != self.stamp:
                    safe[:] = 0
                    self.stamp = (srcmap.version, journal.zeroed[src_index])
                continue
            if outcome == NEED_BATCH:
                w = self.guest[0]
                w._k = int(st[G_K])
                self.offs, self.reads, st[G_K] = w.ahead(int(st[G_BOUND]))
                args = None
                continue
            if (outcome == STILL_WAITING and self.guest is None and queue
                    and self._adopt(queue)):
                args = None
                continue
            break
        if outcome == TURNS:
            outcome = ITERATED
        if st[SLEEPING]:
            # asleep when SimPy's next event comes (or a step of the agenda
            # running itself is not for the kernel): the rest of the sleep is
            # SimPy's, its timer under the id drawn here (MirrorJob._copy_burst)
            t, eid, ns = _heap_take_timer(self.heap, st)
            self.timer = (int(t), int(eid), int(ns), int(st[SLEEPING]) == NEXT_POLL)
            st[SLEEPING] = 0
            outcome = ASLEEP
        v = st.tolist()
        if self.guest is not None:
            self._leave_guest(v)
            # it stays while the loop waits for its agenda, sleeps it off
            # with its agenda running itself, or waits for its next poll;
            # the loop's other ways (a pause, READY, a completion and its
            # drain, the Python loop) get it back to SimPy first
            if outcome == HAND_BACK or (outcome == BACK_TO_TOP and not detached and not (
                    not one_wait and job.synced and not st[STOP_AT_TOP]
                    and not st[IN_FLIGHT] and not st[BM_COUNT]
                    and not (job.should_complete or job.cancelled))):
                self._release()
        # write back
        env._now = v[NOW]
        env._eid = count(v[NEXT_EID])
        bm.count = v[BM_COUNT]
        job._cursor, job.offset, job.bytes_copied = v[CURSOR], v[OFFSET], v[BYTES_COPIED]
        job.in_flight, job.bytes_in_flight = v[IN_FLIGHT], v[BYTES_IN_FLIGHT]
        job.buf_free, job._it_bit, job._it_end = v[BUF_FREE], v[IT_BIT], v[IT_END]
        job._it_plan = [v[IT_IO], v[IT_ZERO] == 1, v[IT_DONE] == 1] if v[IT_IO] else None
        job._awaited, job._op_seq = v[AWAITED], v[OP_SEQ]
        job._timer_phase = v[TIMER_PHASE] == 1
        limit.slice_start, limit.slice_end, limit.dispatched = (
            v[SLICE_START], v[SLICE_END], v[DISPATCHED])
        src._pipe_free, src.reads, src.bytes_read = v[SRC_PIPE], v[SRC_READS], v[SRC_BYTES]
        tgt._pipe_free, tgt.writes, tgt.bytes_written = v[TGT_PIPE], v[TGT_WRITES], v[TGT_BYTES]
        src._slots = _ring(self.src_slots, v[SRC_HEAD], v[SRC_N])
        tgt._slots = _ring(self.tgt_slots, v[TGT_HEAD], v[TGT_N])
        if outcome == HAND_BACK:
            waiting, at_top = v[WAITING] == 1, v[AT_TOP] == 1
            self.materialize()
            return None, (waiting, at_top)
        return outcome, None

    def _unmark(self, head_t, last_eid) -> tuple:
        """Take the agenda's markers out of SimPy's queue, if the nodes stay
        quiet until the event after them: each stands in for an entry held
        here, which this call runs itself, in order (a marker left queued
        would stop it there, to do nothing when processed).  Whoever runs
        the agenda next queues a marker for its first entry again.  Returns
        SimPy's next event, as burst._head."""
        job = self.job
        queue = job.env._queue
        markers = job._agenda._markers
        marked = {id(event) for event in markers.values()}
        rest = [entry for entry in queue if id(entry[3]) not in marked]
        heapify(rest)
        head = _head(rest)
        if head[0] != head_t and not _quiet(job.source, job.target, job.env._now, head[0]):
            return head_t, last_eid
        queue[:] = rest
        markers.clear()
        return head

    def _replay(self, tgt) -> None:
        """What the kernel's reads did outside its arrays: the target's
        allocation (CopyOperation.read_completed).  (Its journal entries,
        their pages' flags and its ledger rows it wrote itself.)"""
        st = self.st
        n = int(st[OUT_N])
        if not n:
            return
        st[OUT_N] = 0
        # the clusters the reads' writes will allocate (their order does not
        # matter: merged where they meet)
        cs = tgt.cluster_size
        out = self.out
        first = out[:n, 0] // cs
        if n > 8 and np.array_equal(first + 1, -(-out[:n, 1] // cs)):
            # (a cluster each: a ready mirror's copies of scattered granules)
            tgt.alloc.set_each(first)
            return
        tgt.alloc.set_ranges(out[:_clusters(out, n, cs)])

    # -- the guest -------------------------------------------------------------------
    # A guest worker taken over (_adopt) stays here, its entry on the heap, for
    # as long as it fits (_fits): across calls, while the loop sleeps and the
    # agenda's marker runs the entries (the guest's among them), and while the
    # ready mirror waits for its next poll.  Between calls its drive, its
    # workload, its node's counters and its ledger are written back
    # (_leave_guest), so whatever else runs sees them as SimPy's run would,
    # and a request of it in flight counts in the drive's ``in_flight``.  It
    # goes back to SimPy (_release) when it no longer fits, and before any
    # Python step that takes the entries as objects or drains the drive.
    def _adopt(self, queue) -> bool:
        """SimPy's next event is a wait of a guest worker for its own
        timeout: its next request's due time, or its request's completion.
        Take the worker over, its requests to be run here among the copies
        in SimPy's order, if it fits (:meth:`_fits`); whether it did."""
        if not GUEST:
            return False
        t, priority, eid, event = queue[0]
        job = self.job
        for w in job.sim.workloads.values():
            # (the worker that waits on it: the drive remembers the last
            # request's completion whichever workload issued it)
            if w.process is None or w.process.target is not event:
                continue
            if w.due_event is event:
                request = None
                break
            if w.drive.completion is event:
                request = w.drive.in_flight_request
                break
        else:
            return False
        src, drive = job.source, w.drive
        if priority != NORMAL:
            return False
        if request is not None:
            # (a failed request goes through the error policy: SimPy's)
            err, node, is_read, offset, length, gen, how, start = request
            if not (not err and node is src and how is None and length == w.bs
                    and drive.in_flight == 1):
                return False
        entry = heappop(queue)
        head_t, last_eid = _head(queue)
        if not self._fits(w, job.env._now, head_t):
            heappush(queue, entry)
            return False
        self.guest = (w, event)
        st = self.st
        st[HEAD_T], st[LAST_EID] = head_t, last_eid
        if request is None:
            _heap_push(self.heap, st, t, eid, GUEST_DUE, -1)
            st[G_KIND] = GUEST_DUE
        else:
            st[G_OFF], st[G_READ], st[G_GENW], st[G_START] = offset, is_read, gen, start
            _heap_push(self.heap, st, t, eid, GUEST_DONE, -1)
            st[G_KIND] = GUEST_DONE
        self._enter_guest()
        return True

    def _fits(self, w, now: int, head_t, nodes_quiet: bool = False) -> bool:
        """Whether guest ``w`` can run here from ``now`` until SimPy's next
        event at ``head_t``: a one-worker paced guest on this mirror's
        source (GuestWorkload.runs_alone) whose every request until then
        would succeed after a service time known when issued, as on quiet
        nodes (no fault rule that could match, no jitter, an allocation
        that cannot fail nor copy on write: the source fully allocated, or
        with room for every cluster and no backing file, _allocates_quietly;
        the mirror's dirty bitmap its only
        write listener; blocks inside content pages), that neither its
        ``end`` nor its ``number-ios`` can stop meanwhile, while the VM
        runs and nothing drains the drive.  (``nodes_quiet``: the copies'
        nodes are known quiet until then.)"""
        job = self.job
        src, drive = job.source, w.drive
        content = src.content
        if not (w.runs_alone and drive.node is src and drive.accepts_requests()
                and (src.fully_allocated() or self._allocates_quietly(src))
                and len(src.write_listeners) == 1 and src.write_listeners[0] is job.bitmap
                and w.region_start % w.bs == 0 and (1 << content._shift) % w.bs == 0
                and head_t != float("inf")):
            return False
        # the most requests it may issue before head_t: those due before it
        bound = int((head_t - w.start_at) / w.interval) + 3 - w.issued
        return (bound <= min(self.LEDGER_ROWS, content._journal.capacity) // 2
                and (w.end is None or w.end > head_t)
                and (w.limit is None or w.limit > w.issued + bound)
                and (nodes_quiet or _quiet(src, job.target, now, head_t))
                and src.is_quiet_for(w.operations, *w.region, now, head_t + 1))

    def _enter_guest(self) -> None:
        """The guest's state into the kernel's (at its takeover, and at each
        call while it stays): its request in flight is the kernel's."""
        w = self.guest[0]
        src, drive = self.job.source, w.drive
        self.offs, self.reads, k = w.drawn()
        self.interval[0] = w.interval
        st = self.st
        # (in the order of _GUEST_LOADED)
        st[_GUEST_LOADED] = (
            w.bs, w.start_at, w.issued, k, w.completed, next(w.sim.generations),
            drive.reads, drive.writes, drive.completed, drive.latency_sum,
            src.writes, src.bytes_written, 0, st[L_N])     # (its rows held here stay)
        if st[G_KIND] == GUEST_DONE:
            drive.in_flight -= 1

    def _leave_guest(self, v: list) -> None:
        """The guest's state written back (the kernel returns; ``v`` is
        the state as a list)."""
        w = self.guest[0]
        src, drive = self.job.source, w.drive
        w.in_kernel += v[G_COMPLETED] - w.completed
        w.issued, w._k, w.completed = v[G_ISSUED], v[G_K], v[G_COMPLETED]
        drive.reads, drive.writes, drive.completed, drive.latency_sum = (
            v[D_READS], v[D_WRITES], v[D_COMPLETED], v[D_LATENCY])
        src.writes, src.bytes_written = v[SRC_WRITES], v[SRC_BYTES_W]
        if v[L_N]:
            # (its ledger rows stay in the buffer, handed in when anyone
            # else uses the ledger, the buffer fills or the guest leaves)
            w.drive.ledger.hold(self._hand_in_ledger)
        w.sim.generations = count(v[G_GEN])
        self._allocate(v[L_N], v[G_OFF] if v[G_KIND] == GUEST_DONE and not v[G_READ] else -1)
        w.env.skipped += v[SKIPPED]
        self.st[SKIPPED] = 0
        if v[G_KIND] == GUEST_DONE:
            drive.in_flight += 1

    def _release(self) -> None:
        """Hand the guest worker back to SimPy (its state written back),
        waiting where it waits here: its event goes back into SimPy's queue
        under the key of the worker's entry, and its process carries on
        from there (a new generator: GuestWorkload._worker's ``resume``)."""
        w, event = self.guest
        self._hand_out_ledger(w)
        self.guest = None
        st = self.st
        t, eid, kind = _heap_take_guest(self.heap, st)
        queue = w.env._queue
        # A marker queued under the entry's key stood in for it (the agenda's
        # first entry); the worker's own event takes its place (two equal
        # keys cannot share SimPy's heap).  Whoever runs the agenda next
        # queues a marker for its new first entry.
        marker = self.job._agenda._markers.pop((t, eid), None)
        if marker is not None:
            at = next(i for i, entry in enumerate(queue) if entry[3] is marker)
            queue[at] = queue[-1]
            queue.pop()
            heapify(queue)
        heappush(queue, (t, NORMAL, eid, event))
        drive = w.drive
        if kind == GUEST_DONE:
            # (its ``in_flight`` already counts it)
            resume = (self.job.source, st[G_READ] == 1, int(st[G_OFF]), w.bs,
                      int(st[G_GENW]), None, int(st[G_START]))
            # (the event now stands for that completion, which the new
            # generator finishes itself)
            w.due_event = drive.completion = None
        else:
            w.due_event, drive.completion = event, None
            resume = AT_DUE
        process = w.process
        parked = process._generator
        process._generator = w._worker(resume)
        parked.close()

    def _hand_out_ledger(self, w) -> None:
        """The writes of guest ``w`` completed here go to its drive's ledger."""
        st = self.st
        n = int(st[L_N])
        if n:
            self._allocate(n, -1)
            self.allocated = 0
            st[L_N] = 0
            w.drive.ledger.extend_with(self.ledger[:n, 0], w.bs, self.ledger[:n, 1])

    def _allocate(self, n: int, in_flight: int) -> None:
        """The clusters of the guest's writes run here allocated on the
        source, as BlockDevice.submit_write allocates them when each is
        issued (a source not fully allocated: _allocates_quietly): those of
        the ledger buffer's rows up to ``n`` not done yet, and of its write
        in flight at ``in_flight`` (-1: none; allocating again is nothing).
        Nothing reads the source's allocation while the kernel runs (its
        claims' block status is known, claims_data), so this is done at
        each return, before any Python step."""
        lo = self.allocated
        self.allocated = n
        src = self.job.source
        if src.alloc.count == src.alloc.nclusters or (lo >= n and in_flight < 0):
            return
        offsets = self.ledger[lo:n, 0]
        if in_flight >= 0:
            offsets = np.append(offsets, in_flight)
        src.allocate_writes(offsets, int(self.st[G_BS]))

    def _hand_in_ledger(self) -> None:
        """The ledger's rows held here handed in (Ledger.hold): those of the
        guest run here (the buffer is emptied when it leaves)."""
        if self.guest is not None:
            self._hand_out_ledger(self.guest[0])

    # -- objects and arrays -------------------------------------------------------
    def _absorb(self) -> bool:
        """Take the agenda's entries and the operations in flight as arrays,
        if every entry is one the kernel runs; whether it did."""
        job = self.job
        operation = job.copy_operation
        entries = job._agenda._entries
        read_done, write_done = operation._read_done, operation._write_done
        rows = []
        for t, eid, callback, _argument in entries:
            if callback is None:
                rows.append((t, eid, WAKE, None))
                continue
            step, op = callback.__func__, callback.__self__
            if step is read_done:
                rows.append((t, eid, READING, op))
            elif step is write_done and op.how is None and op.runs is not None:
                rows.append((t, eid, OBJECT, op))
            elif step is write_done and op.how is False and op.runs is None:
                rows.append((t, eid, ZEROS, op))
            else:
                return False
        ops, heap, snaps = self.ops, self.heap, self.snaps
        ops[:, USED] = 0
        slot = 0
        for i, (t, eid, mode, op) in enumerate(sorted(rows, key=lambda r: r[:2])):
            heap[i, T], heap[i, EID] = t, eid
            if op is None:
                heap[i, KIND], heap[i, SLOT] = WAKE, -1
                continue
            heap[i, KIND] = READ_DONE if mode == READING else WRITE_DONE
            heap[i, SLOT] = slot
            ops[slot] = (op.bit, op.end_bit, op.start, op.end, 1, mode, 0, op.seq)
            snaps[slot] = op.runs if mode == OBJECT else None
            slot += 1
        self.st[HEAP_N] = len(rows)
        entries.clear()
        job._ops.clear()
        job._op_starts.clear()
        job._copies.clear()
        self.active = True
        return True

    def oldest_copy(self) -> int:
        """MirrorJob.oldest_copy, while the operations are here."""
        return int(_oldest_copy(self.ops))

    def materialize(self) -> None:
        """Give the agenda and the job their entries and operations back as
        objects (before any Python step looks at them), and the guest back
        to SimPy."""
        if self.guest is not None:
            self._release()
        if not self.active:
            return
        job = self.job
        operation = job.copy_operation
        n = int(self.st[HEAP_N])
        rows = sorted(self.heap[:n].tolist())
        entries = job._agenda._entries
        ops, snaps = self.ops, self.snaps
        for t, eid, kind, slot in rows:
            if kind == WAKE:
                entries.append((t, eid, None, None))
                continue
            bit, end_bit, start, end, _used, mode, pos, seq = ops[slot].tolist()
            op = operation(job, bit, end_bit, start, end, True, False, seq)
            job._ops[bit] = op
            if kind == READ_DONE:
                entries.append((t, eid, op._read_done, 0))
                continue
            if mode == LOGGED:
                op.runs, op.how = self._snap(start, end, pos), None
            elif mode == OBJECT:
                op.runs, op.how = snaps[slot], None
            else:                           # a write-zeroes (no read)
                op.runs, op.how, op.zero = None, False, True
            snaps[slot] = None
            entries.append((t, eid, op._write_done, 0))
        job._op_starts[:] = sorted(job._ops)
        job._copies = {op.seq: op for op in sorted(job._ops.values(), key=_place)}
        self.st[HEAP_N] = 0
        self.active = False

    def close(self) -> None:
        """The job is over: no more reads to hand in."""
        self.materialize()
        hooks = self.job.source.content._journal._before_settle
        if self.hand_in in hooks:
            hooks.remove(self.hand_in)

    def hand_in(self) -> None:
        """A settle is coming: the reads the kernel logged whose pastes are
        still to come become journal Snaps, which the settle works out (the
        paste is then made from Python, the kernel handing its write back)."""
        if not self.active:
            return
        ops = self.ops
        for slot in np.flatnonzero(ops[:, USED] & (ops[:, MODE] == LOGGED)).tolist():
            start, end, pos = ops[slot, START], ops[slot, END], ops[slot, POS]
            self.snaps[slot] = self._snap(int(start), int(end), int(pos))
            ops[slot, MODE] = OBJECT

    def _snap(self, start: int, end: int, pos: int) -> Snap:
        """The Snap of a read the kernel made at entry ``pos`` of its page's log."""
        srcmap = self.job.source.content
        return srcmap._journal.snap(srcmap, start >> srcmap._shift, start, end, pos)


def _place(op) -> int:
    return op.seq


def _ring(slots: np.ndarray, head: int, n: int) -> deque:
    """A device's busy slots as the deque it keeps them in."""
    end = head + n
    if end <= len(slots):
        return deque(slots[head:end].tolist())
    return deque(slots[head:].tolist() + slots[:end - len(slots)].tolist())
