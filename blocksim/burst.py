"""Copy bursts: a mirror's issue-and-wait cycle run inline, in SimPy's order.

A mirror copies in bursts.  During its initial copy it dispatches one rate
limit slice's worth of operations (100 x 1 MiB at 1 GiB/s) and sleeps the
rest of the slice; once ready it wakes every 100 ms and re-copies what the
guest dirtied meanwhile.  Within a burst the copy loop does the same few
things over and over: issue operations while it may (16 in flight at most),
wait for one to finish, issue again.  Each operation is a source read whose
completion submits a target write whose completion wakes the loop.

The mirror's agenda (:mod:`blocksim.agenda`) already keeps those timeouts
out of SimPy's queue, under the keys SimPy would have given them.  What is
left is Python: about 25 calls per operation through the loop, the agenda,
the operation's callbacks and the devices' submit and complete steps.
:func:`copy` runs the same cycle as one loop over the agenda's own heap:

1. **When it applies** (:func:`applies`).  Every operation in flight is on
   the agenda, and both the source's and the target's chains are
   *predictable* (no fault rule, no jitter): every request then succeeds
   after a service time the device computes when it is issued, so no error,
   no policy decision and no event can come of an operation.  The target
   has no backing file (no copy-on-write) and no capacity it could run out
   of (no ENOSPC).
2. **What it does.**  Exactly what the loop, the agenda and
   :class:`~blocksim.mirror.CopyOperation` do, step for step and in the same
   order: the same bitmap search, overlap test and cursor; the same calls to
   the devices' queue and pipe (``_service_done``), allocation and content;
   the same ids drawn from SimPy's counter at the same moments (one per
   read and per write submitted, one per wake-up), so that entries still
   pending at the end are the agenda's entries as the one-by-one run would
   have left them, and everything scheduled later keeps its relative order.
   Only counters (offsets, bytes, requests) are kept in local variables and
   written back when it stops: nothing reads them in between.
3. **Where it stops.**  Before the first entry that SimPy's queue does not
   come after (its head is fixed meanwhile: nothing in a burst schedules a
   SimPy event), the loop then waits for the agenda's turn as it would have;
   when the rate limiter asks for a sleep; when nothing is dirty and nothing
   is in flight (the loop's flush, READY and completion path); and at a
   wake-up where the job has been paused, cancelled or has failed meanwhile
   (the loop's own checks then run).

``tests/test_burst.py`` runs mirrors with bursts, with only the agenda and
with neither (``Simulation(shortcuts=False)``) and requires byte-identical
events, series, summaries and device counters.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from heapq import heappop, heappush

from simpy.events import NORMAL

#: What the copy loop does after :func:`copy` returns (a positive value is
#: a rate-limit sleep, in ns).
TOP = 0             # carry on from the top of the loop
WAITING = -1        # keep waiting: SimPy's queue holds the next event

_READ, _WRITE, _WAKE = 0, 1, 2


def applies(job) -> bool:
    """Whether :func:`copy` may run the mirror ``job``'s cycle now."""
    agenda = job._agenda
    if agenda is None or agenda._failed:
        return False
    tgt = job.target
    if tgt.backing is not None or not tgt.is_predictable() \
            or not job.source.is_predictable():
        return False
    return tgt.capacity is None or tgt.capacity >= tgt.alloc.nclusters * tgt.cluster_size


def copy(job, waiting: bool, detached: bool = False) -> int:
    """Run the copy loop of ``job`` from its top (or, ``waiting``, from
    inside a wait for an operation) until it has to leave the cycle; returns
    :data:`TOP`, :data:`WAITING` or a sleep in ns.  See the module's doc.

    ``detached``: the loop waits for something else (a sleep, a pause) and
    the agenda runs itself (:meth:`Agenda.detach
    <blocksim.agenda.Agenda.detach>`): only complete the operations due
    before SimPy's next event, waking nobody."""
    from .mirror import MAX_IN_FLIGHT, CopyOperation

    env = job.env
    heap = _entries_from(job._agenda)
    queue = env._queue
    if queue:
        head_t, head_prio, head_eid = queue[0][:3]
        # an entry due at head_t runs first only if SimPy would order it
        # first: same priority and a smaller id
        last_eid = head_eid if head_prio == NORMAL else -1
    else:
        head_t, last_eid = float("inf"), -1
    eids = env._eid
    now = env._now

    bm = job.bitmap
    src, tgt = job.source, job.target
    src_service, tgt_service = src._service_done, tgt._service_done
    read_for_copy = src.read_for_copy
    set_runs, set_content = tgt.content.set_runs, tgt.content.set
    new_clusters, allocate = tgt._new_clusters, tgt.alloc.set_range
    tgt_alloc, nclusters = tgt.alloc, tgt.alloc.nclusters
    listeners = tgt.write_listeners
    tgt_latency, cs = tgt.latency, tgt.cluster_size
    ops, op_starts = job._ops, job._op_starts
    limit = job.limit
    g, size, nbits = job.granularity, src.size, bm.nbits
    max_bits = max(1, job.max_io // g)
    buf_size = job.buf_size
    in_flight, in_flight_bytes = job.in_flight, job.bytes_in_flight
    cursor = job._cursor
    woken = True if detached else job._woken      # (detached: no wake-up to mark)
    copied = reads = read_bytes = writes = written = 0
    outcome = TOP

    while True:
        if not waiting:
            if job.ret or job.pause_count > 0 or (
                    job.cancelled and (job.force_cancel or not job.synced)):
                break                       # the loop's own checks, as at its top
            if bm.count and in_flight < MAX_IN_FLIGHT and in_flight_bytes < buf_size:
                b = bm.next_dirty(cursor)
                n = bm.dirty_run(b, max_bits)
                i = bisect_left(op_starts, b + n) - 1
                if i >= 0 and ops[op_starts[i]].end_bit > b:
                    waiting, woken = True, False    # overlaps an operation in flight
                    continue
                bm.clear_bits(b, b + n)
                cursor = b + n if b + n < nbits else 0
                start, end = b * g, min((b + n) * g, size)
                op = ops[b] = CopyOperation(job, b, b + n, start, end, True)
                insort(op_starts, b)
                in_flight += 1
                in_flight_bytes += end - start
                heappush(heap, (src_service(now, end - start), next(eids), _READ, op))
                delay = limit.delay(now, end - start)
                if delay:
                    outcome = delay
                    break
                continue
            if not in_flight:
                break
            waiting, woken = True, False
        if not heap:                        # detached, every operation done
            break
        t, eid, kind, op = heap[0]
        if t > head_t or (t == head_t and eid > last_eid):
            outcome = WAITING
            break
        heappop(heap)
        env._now = now = t
        if kind is _READ:
            start, end = op.start, op.end
            reads += 1
            read_bytes += end - start
            runs = read_for_copy(start, end)
            if len(runs) == 1 and not runs[0][2]:       # zeros: a write-zeroes
                op.runs, op.how = None, False
                done = now + tgt_latency
            else:
                c0, c1 = start // cs, -(-end // cs)
                if tgt_alloc.count != nclusters and new_clusters(c0, c1):
                    allocate(c0, c1)
                op.runs, op.how = runs, None
                done = tgt_service(now, end - start)
            heappush(heap, (done, next(eids), _WRITE, op))
        elif kind is _WRITE:
            start, end = op.start, op.end
            if op.runs is None:
                set_content(start, end, 0)
            else:
                writes += 1
                written += end - start
                set_runs(op.runs)
                for listener in listeners:
                    listener(start, end)
            copied += end - start
            del ops[op.bit]
            op_starts.remove(op.bit)
            in_flight -= 1
            in_flight_bytes -= end - start
            if not woken:
                woken = True
                heappush(heap, (now, next(eids), _WAKE, None))
        else:
            waiting = False                 # the loop carries on

    job.in_flight, job.bytes_in_flight = in_flight, in_flight_bytes
    job._cursor = cursor
    if not detached:
        job._woken = woken
    job.offset += copied
    job.bytes_copied += copied
    src.reads += reads
    src.bytes_read += read_bytes
    tgt.writes += writes
    tgt.bytes_written += written
    _entries_to(job._agenda, heap)
    return outcome


def _entries_from(agenda) -> list:
    """The agenda's entries as ``(time, id, kind, operation)``, heap order
    kept (same keys, same places)."""
    from .mirror import CopyOperation
    out = []
    for t, eid, callback, _err in agenda._entries:
        if callback is None:
            out.append((t, eid, _WAKE, None))
        elif callback.__func__ is CopyOperation._read_done:
            out.append((t, eid, _READ, callback.__self__))
        elif callback.__func__ is CopyOperation._write_done:
            out.append((t, eid, _WRITE, callback.__self__))
        else:       # a failure callback: impossible on predictable nodes
            raise RuntimeError(f"blocksim: unexpected agenda entry {callback!r} in a copy burst")
    return out


def _entries_to(agenda, heap: list) -> None:
    agenda._entries = [
        (t, eid, None, None) if kind is _WAKE else
        (t, eid, op._read_done if kind is _READ else op._write_done, 0)
        for t, eid, kind, op in heap]
