"""A backup's copy loop compiled: the pass's tasks as rows of arrays.

:func:`blocksim.engine.copyloop.run` runs the background pass's task steps
(a start issues the source read, a read completes and issues the target
write, a write completes and ends the task, waking the pass, which makes
the next task) as plain Python, about 4 µs a step.  Python gets control
back at each SimPy event among the tasks (a guest request: about ten times
a 100 ms slice) with 64 tasks in flight, so the steps can only be compiled
if the tasks' steps live, across those returns, somewhere else than in the
steps' heap as Python tuples.  Here they are **rows**: each task of the
pass whose next step the compiled loop may run has a row (its clusters,
its stage: start, read, write or done; the key of its next step, ``(time,
priority, id)``, the id drawn from SimPy's counter where the steps would
draw it), the rows in a heap of their own (an array), and **one proxy
entry** stands for them in the steps' heap (``blocksim.engine.steps``),
under the key of the first row's step: the steps' order, their marker in
SimPy's queue and ``Steps._fire`` are unchanged, and when the proxy comes
first the copy loop runs the rows (:func:`step`) up to the first entry
that is not a row or SimPy's next event.

A row's task has **no object** while the compiled steps hold it (session
17): the job's list of tasks in flight (``BackupJob._tasks``) and the
pass's pool (``_Pool.tasks``) hold only the tasks Python holds, the pool is
a count (``_Pool.count``, its ended rows ``_Pool.ended_rows``), and the
pass's waiting task is a row too (``tslot``, ``_Pool.task`` is :data:`ROW`).
Every reader asks the rows: a guest's copy-before-write (``_in_flight``: the
first task in flight over its clusters in the job's list, each task's place
in it its ``seq``; :func:`in_flight`), the stretches (``quiet_nodes``:
:meth:`Rows.busy`), the pass's generator (its pool as a count, its wait for
all its tasks: :meth:`Rows.pool_tasks`).  An object is made **on demand**
(:meth:`Rows.obj`) for a caller that waits for the task at once: a
copy-before-write over it (the loop then leaves the rows alone:
``copyloop.run``'s conditions, ``NO_RESUME``), the pass's wait for all, a
row made an entry again (:meth:`Rows.hand_back`: into the lists at its
place).  A row's step that the compiled loop
leaves to Python (:func:`step` says which and why) is **materialized**: its
heap entry made again, exactly as the Python loop would have queued it
(the same key, callback and argument; a write still to come takes its read
then, as the loop's exit does for such writes: the source cannot change
over a task in flight, a guest write waits for it), and the Python loop
or the steps go on from there.  Every row is materialized when the loop
cannot run them (a fault rule, a cancel, a call waiting for a task of the
pool, the pass over: :func:`blocksim.engine.copyloop.run`'s conditions).

Every decision :func:`step` makes is the Python loop's own
(``copyloop.run``: its BEGIN, READ, WRITE and done branches, ``feasible``
and ``resume``), restated on the rows; the devices' queue and pipe are
``Device._service_done``'s, the rate limiter ``RateLimit.delay``'s.
``tests/engine/test_copyloop.py`` compares runs with it, with the Python
loop (``copyloop.KERNEL = False``), without the loop and without shortcuts.
"""

from __future__ import annotations

import struct
from functools import partial
from bisect import insort
from heapq import heapify, heappop, heappush
from itertools import count
from operator import attrgetter

import numpy as np
from simpy.events import NORMAL, URGENT

from .compiled import Compiled

njit = Compiled(globals())
_step = njit(cache=True, _nrt=False)

_SLICE_NS = 100_000_000     # BLOCK_JOB_SLICE_TIME (model.ratelimit.SLICE_NS)
_MAX_WORKERS = 64           # BLOCK_COPY_MAX_WORKERS (backup.MAX_WORKERS)
_NEVER = np.iinfo(np.int64).max
_SEQ = attrgetter("seq")     # (a task's place in the job's list)

#: a row's stage: the step its key stands for (MADE: a task made, waiting
#: for a slot, not in the heap)
FREE, MADE, BEGIN, READ, WRITE, DONE, EV = range(7)

#: why step() returned
EMPTY, BOUND, NEED_PLAN, PYTHON, FULL, WAKE = range(6)

# the int64 state array's fields
(NOW, OTHER_T, OTHER_P, OTHER_ID, Q_T, Q_P, Q_ID, EID, WAITING, FIRED, WAIT, PROCESSED,
 POOL_LEN, N_ENDED, TASK, NO_RESUME, PLAN_N, TAKEN, PLAN_FINAL, NEED_K, SPEED, QUOTA,
 SL_START, SL_END, DISPATCHED, POS, SIZE, TCS, N_READS, N_READ, N_WRITES, N_WRITTEN,
 N_COPIED, IN_FLIGHT, RESUMED, PASTE_N, ALLOC_N, HEAP_N, FREE_N, FREED_N, DONE_N, RAN,
 SLOT, EV_SLOT, MADE_N, SEQ,
 S_H, S_N, S_FREE, S_DEPTH, S_LAT, S_BW, T_H, T_N, T_FREE, T_DEPTH, T_LAT, T_BW,
 Q_MARK, QI, NFIELDS) = range(61)

#: SimPy's queue ahead as step() sees it (``qkeys``): the steps' own markers
#: at its head, at most this many, then the first other event
QUEUE_AHEAD = 8

_T, _P, _ID, _SLOT = range(4)
#: a row's key, read off the heap's bytes (Rows.top: numpy's tolist costs
#: three times as much)
_KEY = struct.Struct("=3q")


class _Packers(dict):
    """``n`` -> a struct of ``n`` int64, made on first use (Rows.ring_in:
    a node's queue into its ring's bytes, the state's six fields of it)."""

    def __missing__(self, n: int) -> struct.Struct:
        got = self[n] = struct.Struct(f"{n}q")      # (native: faster than "=")
        return got


_PACK = _Packers()

#: rows at most (64 in the pool, one waiting, the ended ones whose done is
#: queued; the rest is headroom: step() stops when none is free)
CAPACITY = 512
#: room in the runs of one call to step() (it stops, FULL, when fewer than
#: two rows are left; Python takes them and calls it again)
_RUNS = 2048


@_step
def _less(t, p, i, u, q, j):
    """Key ``(t, p, i)`` before key ``(u, q, j)``."""
    if t != u:
        return t < u
    if p != q:
        return p < q
    return i < j


@_step
def _put(heap, k, t, p, i, slot):
    heap[k, _T] = t
    heap[k, _P] = p
    heap[k, _ID] = i
    heap[k, _SLOT] = slot


@_step
def _push(heap, st, t, p, i, slot):
    """Key ``(t, p, i)`` of row ``slot`` into the rows' heap."""
    n = st[HEAP_N]
    st[HEAP_N] = n + 1
    while n > 0:
        up = (n - 1) >> 1
        if _less(heap[up, _T], heap[up, _P], heap[up, _ID], t, p, i):
            break
        _put(heap, n, heap[up, _T], heap[up, _P], heap[up, _ID], heap[up, _SLOT])
        n = up
    _put(heap, n, t, p, i, slot)


@_step
def _pop(heap, st):
    """The first key out of the rows' heap."""
    n = st[HEAP_N] - 1
    st[HEAP_N] = n
    if n == 0:
        return
    t, p, i, slot = heap[n, _T], heap[n, _P], heap[n, _ID], heap[n, _SLOT]
    k = 0
    c = 1
    while c < n:
        if c + 1 < n and _less(heap[c + 1, _T], heap[c + 1, _P], heap[c + 1, _ID],
                               heap[c, _T], heap[c, _P], heap[c, _ID]):
            c += 1
        if _less(t, p, i, heap[c, _T], heap[c, _P], heap[c, _ID]):
            break
        _put(heap, k, heap[c, _T], heap[c, _P], heap[c, _ID], heap[c, _SLOT])
        k = c
        c = 2 * k + 1
    _put(heap, k, t, p, i, slot)


@njit(cache=True, _nrt=False)
def start_rows(heap, st, stage, start, end, inpool, seq, free, ring, spans, slots, eid, now,
               size):
    """The starts of the pool's tasks ``spans`` (start, end, their place in
    the job's list), run in order at ``now`` as copyloop._start runs them:
    each read issued (``Device._service_done`` on the source's queue
    ``ring``), its step a row under the next id from ``eid``; their rows
    into ``slots``."""
    for k in range(spans.shape[0]):
        st[FREE_N] -= 1
        s = free[st[FREE_N]]
        a, e = spans[k, 0], spans[k, 1]
        done = _service(ring, st, S_H, now, (e if e < size else size) - a)
        stage[s] = READ
        start[s] = a
        end[s] = e
        inpool[s] = 1
        seq[s] = spans[k, 2]
        _push(heap, st, done, NORMAL, eid + k, s)
        slots[k] = s


@njit(cache=True, _nrt=False)
def admit(batch, out, at, lim, now, quota, speed, most, q):
    """copyloop.fill's limiter over its next tasks ``batch`` (rows of start
    and end), at most ``most`` of them: how many it makes before
    ``RateLimit.delay(now, 0)`` would ask for a sleep, each counted as
    ``delay(now, end - start)`` counts it, into ``out[at:]`` as (start,
    end, seq: ``q`` on); ``lim``: the limiter's slice start, end and bytes
    dispatched, taken and given back, and the tasks' bytes (added to)."""
    k = 0
    n = batch.shape[0]
    while k < n and k < most:
        if speed:
            if lim[1] <= now:
                if quota <= 0:
                    break
            elif lim[2] >= quota:
                break
            if lim[1] <= now:
                lim[0] = now
                lim[1] = now + _SLICE_NS
                lim[2] = 0
            lim[2] += batch[k, 1] - batch[k, 0]
            if lim[2] >= quota:
                lim[1] = lim[0] + int(lim[2] / max(quota, 1) * _SLICE_NS)
        out[at + k, 0] = batch[k, 0]
        out[at + k, 1] = batch[k, 1]
        out[at + k, 2] = q + at + k
        lim[3] += batch[k, 1] - batch[k, 0]
        k += 1
    return k


@njit(cache=True, _nrt=False)
def push_row(heap, st, stage, start, end, inpool, seq, slot, t, p, i, what, a, e, q):
    """Row ``slot``, a task ``[a, e)`` of the pool (``q``: its place in the
    job's list), queued under key ``(t, p, i)`` at stage ``what``."""
    stage[slot] = what
    start[slot] = a
    end[slot] = e
    inpool[slot] = 1
    seq[slot] = q
    _push(heap, st, t, p, i, slot)


@_step
def _service(ring, st, H, now, nbytes):
    """``Device._service_done(now, nbytes)`` on a quiet node (no jitter):
    its queue's busy slots (a FIFO ring from ``st[H]``, ``st[H + 1]`` of
    them), its pipe (``st[H + 2]``), depth, latency and bandwidth."""
    cap = ring.shape[0]
    h, n = st[H], st[H + 1]
    while n and ring[h] <= now:
        h += 1
        if h == cap:
            h = 0
        n -= 1
    if n >= st[H + 3]:
        start = ring[h]
        h += 1
        if h == cap:
            h = 0
        n -= 1
    else:
        start = now
    t = start + st[H + 4]
    if t < st[H + 2]:
        t = st[H + 2]
    done = t + nbytes * 1_000_000_000 // st[H + 5]
    st[H + 2] = done
    j = h + n
    if j >= cap:
        j -= cap
    ring[j] = done
    st[H] = h
    st[H + 1] = n + 1
    return done


@_step
def _free(st, freed, slot):
    """A row's slot given back (reused from the next call on: the log of
    this one names it)."""
    freed[st[FREED_N]] = slot
    st[FREED_N] += 1


@_step
def _feasible(st, plan, k, now):
    """copyloop.run's ``feasible(k, now)``: the pass, woken now, makes its
    next ``k`` tasks without a sleep, a shrink or an end (1), or not (0),
    or the plan is too short to say (-1: Python plans further)."""
    taken = st[TAKEN]
    if st[PLAN_N] - taken < k:
        if st[PLAN_FINAL]:
            return 0
        st[NEED_K] = k
        return -1
    if st[SPEED]:
        quota = st[QUOTA]
        start, slice_end, dispatched = st[SL_START], st[SL_END], st[DISPATCHED]
        for i in range(taken, taken + k):
            if slice_end <= now:
                start, slice_end, dispatched = now, now + _SLICE_NS, 0
            if dispatched >= quota:
                return 0
            dispatched += plan[i, 1] - plan[i, 0]
            if dispatched >= quota:
                slice_end = start + int(dispatched / max(quota, 1) * _SLICE_NS)
    return 1


@_step
def _refused(st, heap, plan, k, now, t, p, i, slot):
    """A step after which the pass would wake up, refused unless the wake-up
    is feasible (``feasible(k, now)``, and not a resume left to Python,
    ``NO_RESUME``), as copyloop.run refuses it: the row back under its key
    (``t, p, i``) and why (``NEED_PLAN``, ``PYTHON``), or -1: go on."""
    f = 0 if st[NO_RESUME] else _feasible(st, plan, k, now)
    if f > 0:
        return -1
    _push(heap, st, t, p, i, slot)
    if f < 0:
        return NEED_PLAN
    st[SLOT] = slot
    return PYTHON


@_step
def _first_key_after(heap, st, t, p, i):
    """Whether nothing (a row, another entry of the steps, SimPy's next
    event) comes before key ``(t, p, i)``."""
    if st[HEAP_N] and not _less(t, p, i, heap[0, _T], heap[0, _P], heap[0, _ID]):
        return False
    if not _less(t, p, i, st[OTHER_T], st[OTHER_P], st[OTHER_ID]):
        return False
    return _less(t, p, i, st[Q_T], st[Q_P], st[Q_ID])


@_step
def _nothing_due(heap, st, now):
    """``at_once``: nothing else due at ``now`` (rows, the steps' other
    entries, SimPy's queue)."""
    return ((st[HEAP_N] == 0 or heap[0, _T] > now) and st[OTHER_T] > now
            and st[Q_T] > now)


@_step
def _resume(st, heap, stage, start, end, inpool, seq, free, dslots, plan, src_ring, now):
    """copyloop.run's ``resume(now)``: the pass's generator resumed after
    its wait for a slot, up to its next wait (the pool's ended tasks out:
    their rows', and Python's own ones when it takes the state back,
    ``RESUMED``)."""
    st[FIRED] = 0
    st[RESUMED] += 1
    for k in range(st[DONE_N]):             # (the ended tasks out of the pool)
        inpool[dslots[k]] = 0
    st[POOL_LEN] -= st[N_ENDED]
    st[N_ENDED] = 0
    st[PROCESSED] = 0
    task = st[TASK]
    begin_id = -1
    begin_slot = -1
    several = False
    size = st[SIZE]
    while True:
        st[POOL_LEN] += 1
        inpool[task] = 1
        if begin_id < 0 and not several:
            begin_id = st[EID]
            st[EID] += 1
            begin_slot = task
        elif not several:
            stage[begin_slot] = BEGIN
            _push(heap, st, now, URGENT, begin_id, begin_slot)
            stage[task] = BEGIN
            _push(heap, st, now, URGENT, st[EID], task)
            st[EID] += 1
            several = True
        else:
            stage[task] = BEGIN
            _push(heap, st, now, URGENT, st[EID], task)
            st[EID] += 1
        taken = st[TAKEN]
        a, e = plan[taken, 0], plan[taken, 1]
        st[TAKEN] = taken + 1
        st[FREE_N] -= 1
        s = free[st[FREE_N]]
        stage[s] = MADE
        start[s] = a
        end[s] = e
        inpool[s] = 0
        seq[s] = st[SEQ]            # (its place in the job's list of tasks)
        st[SEQ] += 1
        st[MADE_N] += 1
        st[IN_FLIGHT] += e - a
        if st[SPEED]:
            if st[SL_END] <= now:
                st[SL_START] = now
                st[SL_END] = now + _SLICE_NS
                st[DISPATCHED] = 0
            st[DISPATCHED] += e - a
            if st[DISPATCHED] >= st[QUOTA]:
                st[SL_END] = st[SL_START] + int(st[DISPATCHED] / max(st[QUOTA], 1) * _SLICE_NS)
        st[POS] = e
        if st[POOL_LEN] >= _MAX_WORKERS:
            st[WAIT] += 1
            st[TASK] = s
            if not several:
                # the one start: run at once if nothing comes first, else
                # queued (the waiting task is never a write-zeroes here:
                # NO_RESUME)
                if _first_key_after(heap, st, now, URGENT, begin_id):
                    b = start[begin_slot]
                    z = end[begin_slot]
                    done = _service(src_ring, st, S_H, now, (z if z < size else size) - b)
                    stage[begin_slot] = READ
                    _push(heap, st, done, NORMAL, st[EID], begin_slot)
                    st[EID] += 1
                else:
                    stage[begin_slot] = BEGIN
                    _push(heap, st, now, URGENT, begin_id, begin_slot)
            return
        task = s


@njit(cache=True, _nrt=False)
def step(st, heap, stage, start, end, inpool, seq, free, freed, dslots, plan, pastes, allocs,
         src_ring, tgt_ring, qkeys):
    """Run the rows' steps in key order, as copyloop.run's branches would,
    until the next row comes after another entry of the steps' heap or
    SimPy's next event (``BOUND``), no row is left (``EMPTY``), the plan is
    too short to decide (``NEED_PLAN``: ``st[NEED_K]`` tasks), a row's step
    is one the Python loop must run (``PYTHON``: ``st[SLOT]``, left at the
    head: a done's wake-up not feasible, a resume of a write-zeroes or a
    waited-for task, the wait's event not fired here), the runs or the
    free rows are nearly used up (``FULL``), or a write was done whose
    task's end wakes the pass at once where it would not just make tasks
    and wait again (``WAKE``: the wait's event succeeded, its id drawn; its
    callbacks, the pass's generator resumed, are Python's once the loop has
    stopped: ``copyloop._run``'s end).

    SimPy's queue is ``qkeys`` from row ``st[QI]`` (its head in ``st[Q_T]``,
    ``st[Q_P]``, ``st[Q_ID]``; ``st[Q_MARK]``: 1 if it is one of the steps'
    markers): a marker the next row comes after is of a step already run,
    which the loop drops (``Steps._fire``, copyloop.run), and so does this
    one, the next key of ``qkeys`` SimPy's head then (``st[QI]`` counts
    them: Python drops them from the queue)."""
    for k in range(st[FREED_N]):
        free[st[FREE_N]] = freed[k]
        st[FREE_N] += 1
    st[FREED_N] = 0
    size = st[SIZE]
    tcs = st[TCS]
    while True:
        if st[HEAP_N] == 0:
            return EMPTY
        t, p, i, slot = heap[0, _T], heap[0, _P], heap[0, _ID], heap[0, _SLOT]
        # (SimPy's head under the row's own key: the row's marker, not a
        # bound, as the steps' loop tells them by their ids)
        if _less(st[OTHER_T], st[OTHER_P], st[OTHER_ID], t, p, i):
            return BOUND
        while st[Q_MARK] and _less(st[Q_T], st[Q_P], st[Q_ID], t, p, i):
            # (a marker of a step already run: dropped)
            k = st[QI] + 1
            st[QI] = k
            st[Q_T] = qkeys[k, 0]
            st[Q_P] = qkeys[k, 1]
            st[Q_ID] = qkeys[k, 2]
            st[Q_MARK] = qkeys[k, 3]
        if _less(st[Q_T], st[Q_P], st[Q_ID], t, p, i):
            return BOUND
        if (st[PASTE_N] + 2 > pastes.shape[0]
                or st[ALLOC_N] + 2 > allocs.shape[0] or st[FREE_N] < 2 * _MAX_WORKERS):
            return FULL
        now = t
        what = stage[slot]
        a = start[slot]
        z = end[slot]
        length = (z if z < size else size) - a
        if what == BEGIN:
            _pop(heap, st)
            st[NOW] = now
            done = _service(src_ring, st, S_H, now, length)
            stage[slot] = READ
            _push(heap, st, done, NORMAL, st[EID], slot)
            st[EID] += 1
        elif what == READ:
            _pop(heap, st)
            st[NOW] = now
            st[N_READS] += 1
            st[N_READ] += length
            c0 = a // tcs
            c1 = -(-(a + length) // tcs)
            n = st[ALLOC_N]
            if n and allocs[n - 1, 1] >= c0:
                if c1 > allocs[n - 1, 1]:
                    allocs[n - 1, 1] = c1
            else:
                allocs[n, 0] = c0
                allocs[n, 1] = c1
                st[ALLOC_N] = n + 1
            done = _service(tgt_ring, st, T_H, now, length)
            stage[slot] = WRITE
            _push(heap, st, done, NORMAL, st[EID], slot)
            st[EID] += 1
        elif what == WRITE:
            _pop(heap, st)
            at_once = _nothing_due(heap, st, now)
            wakes = st[WAITING] and not st[FIRED]
            sleeps = False
            if at_once and wakes:
                if st[NO_RESUME]:
                    # (a resume Python runs: the write as its entry)
                    _push(heap, st, t, p, i, slot)
                    st[SLOT] = slot
                    return PYTHON
                f = _feasible(st, plan, st[N_ENDED] + 1, now)
                if f < 0:
                    _push(heap, st, t, p, i, slot)
                    return NEED_PLAN
                # (not feasible: the pass, woken, would sleep, shrink or
                # end; the write done here all the same, WAKE below)
                sleeps = f == 0
            st[NOW] = now
            st[N_WRITES] += 1
            st[N_WRITTEN] += length
            n = st[PASTE_N]
            if n and pastes[n - 1, 1] == a:
                pastes[n - 1, 1] = a + length
            else:
                pastes[n, 0] = a
                pastes[n, 1] = a + length
                st[PASTE_N] = n + 1
            st[N_COPIED] += z - a
            st[N_ENDED] += 1
            i = st[EID]
            st[EID] += 1
            if at_once:
                stage[slot] = FREE
                _free(st, freed, slot)
                st[PROCESSED] += 1
                if wakes:
                    st[EID] += 1
                    if sleeps:
                        # the wait's event succeeded at once: its
                        # callbacks (the pass's generator) Python's
                        st[RAN] += 1
                        return WAKE
                    _resume(st, heap, stage, start, end, inpool, seq, free, dslots, plan,
                            src_ring, now)
            else:
                stage[slot] = DONE
                dslots[st[DONE_N]] = slot
                st[DONE_N] += 1
                _push(heap, st, now, NORMAL, i, slot)
        elif what == DONE:
            _pop(heap, st)
            at_once = _nothing_due(heap, st, now)
            wakes = inpool[slot] and st[WAITING] and not st[FIRED]
            if wakes and at_once:
                why = _refused(st, heap, plan, st[N_ENDED], now, t, p, i, slot)
                if why >= 0:
                    return why
            st[NOW] = now
            for k in range(st[DONE_N]):
                if dslots[k] == slot:
                    st[DONE_N] -= 1
                    dslots[k] = dslots[st[DONE_N]]
                    break
            stage[slot] = FREE
            _free(st, freed, slot)
            if inpool[slot]:
                st[PROCESSED] += 1
                if wakes:
                    if at_once:
                        st[EID] += 1
                        _resume(st, heap, stage, start, end, inpool, seq, free, dslots,
                                plan, src_ring, now)
                    else:
                        st[FIRED] = 1
                        st[FREE_N] -= 1
                        s = free[st[FREE_N]]
                        stage[s] = EV
                        st[EV_SLOT] = s
                        _push(heap, st, now, NORMAL, st[EID], s)
                        st[EID] += 1
        elif what == EV:
            f = 0
            if st[FIRED] and not st[NO_RESUME]:
                f = _feasible(st, plan, st[N_ENDED], now)
            if f < 0:
                return NEED_PLAN
            if f == 0:
                st[SLOT] = slot
                return PYTHON
            _pop(heap, st)
            st[NOW] = now
            stage[slot] = FREE
            _free(st, freed, slot)
            st[EV_SLOT] = -1
            _resume(st, heap, stage, start, end, inpool, seq, free, dslots, plan, src_ring,
                    now)
        else:
            st[SLOT] = slot
            return PYTHON
        st[RAN] += 1


@njit(cache=True, _nrt=False)
def in_flight(stage, start, end, seq, a, z, after):
    """The row of the newest task in flight (made, started, read or being
    written: the highest ``seq``, above ``after``) that overlaps ``[a, z)``,
    or -1.  (QEMU's list of tasks is newest first: see
    ``BackupJob._in_flight``.)"""
    best = -1
    for s in range(stage.shape[0]):
        what = stage[s]
        if (MADE <= what <= WRITE and start[s] < z and a < end[s]
                and seq[s] > after):
            after = seq[s]
            best = s
    return best


#: what the pass's ``_Pool.task`` holds while its waiting task is a row
#: (``Rows.tslot``, MADE), not an object
ROW = object()


class Rows:
    """The background pass's tasks whose steps are rows (see the module's
    doc): the arrays :func:`step` works on, the objects made on demand for
    some of them, the proxy entry standing for them in the steps' heap."""

    def __init__(self, job):
        self.job = job
        self.st = np.zeros(NFIELDS, dtype=np.int64)
        self.st_bytes = memoryview(self.st).cast("B")   # (its memory, for struct)
        self.heap = np.zeros((CAPACITY, 4), dtype=np.int64)
        self.heap_bytes = memoryview(self.heap).cast("B")   # (for _KEY)
        self.stage = np.zeros(CAPACITY, dtype=np.int64)
        self.start = np.zeros(CAPACITY, dtype=np.int64)
        self.end = np.zeros(CAPACITY, dtype=np.int64)
        self.inpool = np.zeros(CAPACITY, dtype=np.int64)
        self.seq = np.zeros(CAPACITY, dtype=np.int64)
        self.free = np.arange(CAPACITY - 1, -1, -1, dtype=np.int64)
        self.freed = np.zeros(CAPACITY, dtype=np.int64)
        self.dslots = np.zeros(CAPACITY, dtype=np.int64)
        self.pastes = np.zeros((_RUNS, 2), dtype=np.int64)
        self.allocs = np.zeros((_RUNS, 2), dtype=np.int64)
        #: row -> (its task's object, the row's stage when it was made):
        #: only the few a Python caller asked for (see obj())
        self.objs: dict = {}
        # (copyloop's plan of the pass's next tasks, kept across its entries)
        self.plan = np.zeros((256, 2), dtype=np.int64)
        # (copyloop.fill's: the tasks it makes, and the limiter's state)
        self.made = np.zeros((_MAX_WORKERS + 2, 3), dtype=np.int64)
        self.lim = np.zeros(4, dtype=np.int64)
        #: SimPy's queue ahead for step(): its markers at the head, then
        #: the first other event (time, priority, id, 1 if a marker)
        self.qkeys = np.zeros((QUEUE_AHEAD + 1, 4), dtype=np.int64)
        self.st[FREE_N] = CAPACITY
        self.st[EV_SLOT] = -1
        self.pooled = None          # the pass whose tasks the rows are
        self.proxy = None           # the proxy's entry in the steps' heap, if there
        self.tslot = -1             # the row of the pass's waiting task (MADE)
        #: the plan of the pass's next tasks the copy loop keeps for its
        #: next entry (copyloop._kept_plan), or None
        self.kept = None
        self.rings = {}             # node -> its queue for step() (ring())

    def __len__(self) -> int:
        return int(self.st[HEAP_N])

    def grow(self) -> tuple:
        """The runs' arrays (``pastes``, ``allocs``: the copy loop's, added
        to over an entry) twice as large, their rows kept."""
        self.pastes = np.concatenate((self.pastes, np.zeros_like(self.pastes)))
        self.allocs = np.concatenate((self.allocs, np.zeros_like(self.allocs)))
        return self.pastes, self.allocs

    def top(self):
        """The first row's key, ``(time, priority, id)``, or None."""
        if not self.st[HEAP_N]:
            return None
        return _KEY.unpack_from(self.heap_bytes, 0)

    def alloc(self) -> int:
        st = self.st
        st[FREE_N] -= 1
        return int(self.free[st[FREE_N]])

    def adopt(self, tasks: list) -> None:
        """The pass's ``tasks`` (objects, in its pool) become rows: out of
        the job's list and the pool's (nobody holds them but the steps)."""
        job = self.job
        pooled = self.pooled
        if len(tasks) == 1:
            task = tasks[0]
            job._tasks.remove(task)
            pooled.tasks.remove(task)
            return
        gone = set(tasks)
        job._tasks[:] = [t for t in job._tasks if t not in gone]
        pooled.tasks[:] = [t for t in pooled.tasks if t not in gone]

    def add(self, what: int, t: int, p: int, i: int, task) -> None:
        """A row for ``task`` (in the pass's pool, nobody waiting for it:
        its object is dropped), its step ``what`` due under key ``(t, p, i)``."""
        self.adopt([task])
        s = self.alloc()
        push_row(self.heap, self.st, self.stage, self.start, self.end, self.inpool, self.seq, s,
                 t, p, i, what, task.start, task.end, task.seq)

    def start_reads(self, src, spans: np.ndarray, lead, now: int, size: int) -> None:
        """The fill's starts (copyloop._start) run at once, compiled
        (:func:`start_rows`): each task's read issued on ``src``, its step a
        row, the ids drawn from SimPy's counter in order.  ``spans``: rows of
        start, end and seq; ``lead``: the task the pass took into its pool
        just before, first (its object dropped), or None."""
        if lead is not None:
            self.adopt([lead])
            spans = np.concatenate((np.array(((lead.start, lead.end, lead.seq),),
                                             dtype=np.int64), spans))
        env = self.job.env
        n = len(spans)
        eid = next(env._eid)
        slots = np.empty(n, dtype=np.int64)
        st = self.st
        start_rows(self.heap, st, self.stage, self.start, self.end, self.inpool, self.seq,
                   self.free, self.ring_in(src, S_H), spans, slots, eid, now, size)
        env._eid = count(eid + n)
        self.ring_out(src, S_H, st.tolist())

    def wait_row(self, a: int, e: int, q: int) -> None:
        """The pass's task ``[a, e)`` (``seq`` ``q``) that waits for a slot,
        made a row (MADE, ``tslot``): ``_Pool.task`` is then ``ROW``."""
        s = self.tslot = self.alloc()
        self.stage[s] = MADE
        self.start[s] = a
        self.end[s] = e
        self.inpool[s] = 0
        self.seq[s] = q
        self.pooled.task = ROW

    def release(self, slot: int) -> None:
        st = self.st
        self.free[st[FREE_N]] = slot
        st[FREE_N] += 1
        self.objs.pop(slot, None)
        self.stage[slot] = FREE

    # -- the tasks' objects, on demand -------------------------------------------------
    def obj(self, slot: int):
        """Row ``slot``'s task as a ``_Task``, made now if it has none: as
        the Python loop would have it (its place in the job's list, its
        pool and the pool's check among its done's callbacks once it entered
        the pool, its done triggered once ended).  It stays a row; made for
        a caller that waits for it at once (the loop then leaves the row
        alone: copyloop.run's conditions, ``NO_RESUME``), or dropped when
        the compiled steps move the row on (:meth:`forget`)."""
        got = self.objs.get(slot)
        if got is not None:
            return got[0]
        job = self.job
        what = int(self.stage[slot])
        task = job.Task(job.env, int(self.start[slot]), int(self.end[slot]),
                        int(self.seq[slot]))
        if what != MADE:
            pooled = self.pooled
            if self.inpool[slot]:
                task.pool = pooled
            task.done.callbacks.append(partial(job._pool_check, task))
            if what == DONE:
                done = task.done
                done._ok = True
                done._value = None
        self.objs[slot] = (task, what)
        return task

    def forget(self) -> None:
        """After a call of :func:`step`: the objects of rows it moved on
        (another stage, or freed: a freed row is reused from the next call
        only) dropped (nobody waited for them)."""
        stage = self.stage
        for s, (_task, what) in list(self.objs.items()):
            if stage[s] != what:
                del self.objs[s]

    def hand_back(self, slot: int):
        """Row ``slot``'s task (:meth:`obj`) back to Python, as the Python
        loop would hold it: in the job's list while in flight, in the
        pool's list (and its ended list, ended) while in the pool, in each
        at its place (``seq``)."""
        task = self.obj(slot)
        what = int(self.stage[slot])
        job = self.job
        if what != DONE:
            insort(job._tasks, task, key=_SEQ)
        if self.inpool[slot]:
            pooled = self.pooled
            insort(pooled.tasks, task, key=_SEQ)
            if what == DONE:
                pooled.ended.append(task)
                pooled.ended_rows -= 1
        return task

    def take_waiting(self):
        """The pass's waiting task (row ``tslot``, MADE) back to Python
        (:meth:`hand_back`), its row given back."""
        s = self.tslot
        task = self.hand_back(s)
        self.release(s)
        self.tslot = -1
        return task

    def busy(self) -> bool:
        """Whether a task is in flight among the rows."""
        st = self.st
        if not st[HEAP_N] and self.tslot < 0:
            return False
        return in_flight(self.stage, self.start, self.end, self.seq, 0, _NEVER, -1) >= 0

    def newest_in_flight(self, a: int, z: int, after: int):
        """The newest task in flight among the rows (its ``seq`` above
        ``after``) that overlaps ``[a, z)`` (its object), or None."""
        st = self.st
        if not st[HEAP_N] and self.tslot < 0:
            return None
        s = in_flight(self.stage, self.start, self.end, self.seq, a, z, after)
        return None if s < 0 else self.obj(s)

    def pool_tasks(self) -> list:
        """The pass's pool as the Python loop holds it (``_Pool.tasks``):
        its own tasks and the rows' in the pool (their objects, made now),
        in order (``seq``)."""
        pooled = self.pooled
        n = int(self.st[HEAP_N])
        rows = [self.obj(s) for s in self.heap[:n, _SLOT].tolist()
                if self.inpool[s] and self.stage[s] != EV]
        if not rows:
            return list(pooled.tasks)
        return sorted(pooled.tasks + rows, key=_SEQ)

    def unpool(self) -> None:
        """The pool's ended tasks out of it (the pass's generator or the
        Python loop resumed): the rows' whose done is still to come."""
        st = self.st
        dn = int(st[DONE_N])
        if dn:
            slots = self.dslots[:dn]
            self.inpool[slots] = 0
            for s in slots.tolist():
                got = self.objs.get(s)
                if got is not None:
                    got[0].pool = None

    # -- the proxy ---------------------------------------------------------------------
    def park(self, heap: list) -> None:
        """The proxy queued under the first row's key (none if no row)."""
        if self.proxy is None and self.st[HEAP_N]:
            t, p, i = _KEY.unpack_from(self.heap_bytes, 0)
            self.proxy = (t, p, i, self.fire, None)
            heappush(heap, self.proxy)

    def unpark(self, heap: list) -> None:
        proxy = self.proxy
        if proxy is not None:
            self.proxy = None
            if heap[0] is proxy:
                heappop(heap)
            else:
                heap.remove(proxy)
                heapify(heap)

    def fire(self, _argument) -> None:
        """The proxy run as a plain step (the copy loop off meanwhile):
        every row back in the steps' heap (the proxy is out already)."""
        self.proxy = None
        self.materialize_all(self.job._steps.heap)

    # -- rows back as the steps' entries ---------------------------------------------
    def entry(self, slot: int, t: int, p: int, i: int) -> tuple:
        """The steps' entry the Python loop would have queued for row
        ``slot``'s step under key ``(t, p, i)``, its task handed back."""
        job = self.job
        pooled = self.pooled
        what = int(self.stage[slot])
        if what == EV:
            return (t, p, i, None, pooled.ev)
        task = self.hand_back(slot)
        call = pooled.call
        if what == BEGIN:
            return (t, p, i, job._begin_step, (call, task))
        if what == READ:
            return (t, p, i, job._read_step, (call, task, 0))
        if what == WRITE:
            # (what it read, taken now: the same content, copyloop._leave)
            runs = job._read_for_copy(job.source, task.start, min(task.end, job.size))
            return (t, p, i, job._write_step, (call, task, 0, None, runs))
        assert what == DONE, what
        return (t, p, i, None, task.done)

    def materialize_top(self, heap: list) -> None:
        """The first row's step back in the steps' heap as its entry."""
        st = self.st
        t, p, i, slot = self.heap[0].tolist()
        entry = self.entry(slot, t, p, i)
        _pop(self.heap, st)
        if self.stage[slot] == EV:
            st[EV_SLOT] = -1
        self._drop_done(slot)
        self.release(slot)
        heappush(heap, entry)

    def materialize_evs(self, heap: list) -> None:
        """The wait's event queued here (fired) back in the steps' heap
        (the Python loop leaves it there when it stops: copyloop._leave)."""
        st = self.st
        slot = int(st[EV_SLOT])
        if slot < 0:
            return
        n = int(st[HEAP_N])
        rows = self.heap[:n].tolist()
        for k, (t, p, i, s) in enumerate(rows):
            if s == slot:
                entry = self.entry(slot, t, p, i)
                del rows[k]
                break
        st[HEAP_N] = 0
        for t, p, i, s in rows:
            _push(self.heap, st, t, p, i, s)
        st[EV_SLOT] = -1
        self.release(slot)
        heappush(heap, entry)

    def materialize_all(self, heap: list) -> None:
        """Every row's step back in the steps' heap, the waiting task back
        to the pass; no row left."""
        self.unpark(heap)
        st = self.st
        n = int(st[HEAP_N])
        for t, p, i, slot in self.heap[:n].tolist():
            heappush(heap, self.entry(slot, t, p, i))
        self.clear()

    def clear(self) -> None:
        """No row left (the pass's waiting task, a row, back to the pass)."""
        if self.tslot >= 0 and self.stage[self.tslot] == MADE:
            self.pooled.task = self.take_waiting()
        st = self.st
        st[HEAP_N] = st[FREED_N] = st[DONE_N] = 0
        st[EV_SLOT] = -1
        self.free[:] = np.arange(CAPACITY - 1, -1, -1, dtype=np.int64)
        st[FREE_N] = CAPACITY
        self.stage[:] = FREE
        self.objs.clear()
        self.tslot = -1

    def _drop_done(self, slot: int) -> None:
        st = self.st
        dn = int(st[DONE_N])
        for k in range(dn):
            if self.dslots[k] == slot:
                self.dslots[k] = self.dslots[dn - 1]
                st[DONE_N] = dn - 1
                return

    # -- the nodes' queues ----------------------------------------------------------------
    def ring_in(self, node, H: int):
        """``node``'s queue and pipe into the state (from ``st[H]``), unless
        they are as the state holds them still: as the last call of
        :meth:`ring_out` left them, or as the last load here left them when
        :func:`step` issued nothing on the node since (it changes the ring
        and the state's fields only with a request, which moves the pipe:
        :meth:`ring_out`)."""
        got = self.rings.get(node)
        if got is None or got[2] != node.queue_depth:
            got = self.ring(node)
        ring, left, _depth, ring_bytes = got
        slots = node._slots
        n = len(slots)
        free = node._pipe_free
        if (left[0] == free and left[1] == n
                and (not n or (left[2] == slots[0] and left[3] == slots[-1]))
                and left[4] == node.latency and left[5] == node.bandwidth):
            return ring
        # (into the arrays' bytes by struct: numpy converts a deque's and a
        # tuple's items one at a time, some 2 µs a load; a value not an int
        # goes through numpy as before)
        try:
            if n:
                _PACK[n].pack_into(ring_bytes, 0, *slots)
            _PACK[6].pack_into(self.st_bytes, 8 * H, 0, n, free, node.queue_depth,
                               node.latency, node.bandwidth)
        except struct.error:
            if n:
                ring[:n] = slots
            self.st[H:H + 6] = (0, n, free, node.queue_depth, node.latency, node.bandwidth)
        if n:
            left[:] = (free, n, slots[0], slots[-1], node.latency, node.bandwidth)
        else:
            left[:] = (free, 0, None, None, node.latency, node.bandwidth)
        return ring

    def ring_out(self, node, H: int, v: list) -> None:
        """The queue and pipe step() left (``v``: the state as a list), back
        into ``node`` (if it used them: a request changes the pipe's time)."""
        free = v[H + 2]
        if free == node._pipe_free:
            return
        ring, left, _depth, _bytes = self.rings[node]
        # (the ring's busy slots, oldest first)
        h, n = v[H], v[H + 1]
        cap = len(ring)
        if h + n <= cap:
            got = ring[h:h + n].tolist()
        else:
            got = ring[h:].tolist() + ring[:h + n - cap].tolist()
        slots = node._slots
        slots.clear()
        slots.extend(got)
        node._pipe_free = free
        left[:4] = (free, n, got[0], got[-1])

    def ring(self, node) -> tuple:
        """The array step() keeps ``node``'s queue in (a ring), what the state holds
        of the node (pipe, count, first, last, latency, bandwidth: None
        until loaded), the depth they are made for, and the ring's bytes."""
        got = self.rings.get(node)
        if got is None or got[2] != node.queue_depth:
            ring = np.zeros(node.queue_depth + 1, dtype=np.int64)
            got = self.rings[node] = (ring, [None] * 6, node.queue_depth,
                                      memoryview(ring).cast("B"))
        return got
