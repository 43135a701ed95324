"""Copy bursts: a mirror's issue-and-wait cycle run inline, in SimPy's order.

A mirror copies in bursts.  During its initial copy it dispatches one rate
limit slice's worth of operations (100 x 1 MiB at 1 GiB/s) and sleeps the
rest of the slice; once ready it wakes every 100 ms and re-copies what the
guest dirtied meanwhile.  Within a burst the copy loop does the same few
things over and over: issue operations while it may (16 in flight at most),
wait for one to finish, issue again.  Each operation is a source read whose
completion submits a target write whose completion wakes the loop.

The mirror's agenda (:mod:`blocksim.engine.agenda`) already keeps those timeouts
out of SimPy's queue, under the keys SimPy would have given them.  What is
left is Python: the loop's generator, the agenda's run, each step's
callback and its trip through ``_after`` and ``schedule``.  :func:`copy`
runs the same cycle as one plain loop over the agenda's own heap:

1. **What it does.**  What :meth:`MirrorJob.run
   <blocksim.jobs.mirror.MirrorJob.run>` and :meth:`Agenda.run
   <blocksim.engine.agenda.Agenda.run>` do, in the same order, calling the same
   steps: the loop's checks, :meth:`~blocksim.jobs.mirror.MirrorJob._next_operation`
   (bitmap search, overlap test, cursor, booking), the operation's
   ``submit_read``, ``read_completed`` and ``write_completed`` (the devices'
   fault verdicts, queue and pipe, allocation, copy-on-write, content), the
   rate limiter and ``_op_finished`` (which marks the wake-up when the
   operation the loop waits for is done: its oldest copy in flight, or the
   one holding the granule it wants, ``MirrorJob._awaited``).  Between
   *quiet* nodes (no jitter, no fault rule that could match a source read
   or a target write before SimPy's next event, no backing file under the
   target, room on it for the whole disk) an operation cannot fail and its
   steps reduce to the devices' queue and pipe, allocation and content: they
   are then done inline, the hot path of a long mirror, or compiled with
   numba where the content allows (:mod:`blocksim.engine.burst_kernel`, which hands
   the burst back here for any step it does not take).  Entries are
   pushed with ids drawn from SimPy's counter at the same moments as the
   agenda would draw them, so the heap is always exactly the agenda the
   one-by-one run would have.  A failed read or write calls the operation's
   own failure callback (re-dirty, error policy): that may emit events,
   trigger actions, pause or end the job, so SimPy's next event is looked up
   again afterwards.
2. **Where it stops.**  Before the first entry that SimPy's queue does not
   come after; the loop then waits for the agenda's turn as it would have.
   At the end of each iteration, where the loop sleeps: the rate limit's
   delay, or 0 ns (a turn of the main loop, :data:`TURN`; the compiled
   loop takes those sleeps itself).  When nothing is dirty and nothing
   is in flight (the loop's flush, READY and completion path).  And at a
   wake-up where the job has been paused, cancelled or has failed meanwhile
   (the loop's own checks then run).
3. **While the loop is away** (a sleep, a pause), the detached agenda's
   marker calls it to complete the operations due before SimPy's next
   event, waking nobody; where the loop waits for one operation
   (``MirrorJob._wait_op``), it runs until the wake-up.

An exception from a failure callback (the event cap) is raised ahead of
everything else, as from :meth:`Agenda.run <blocksim.engine.agenda.Agenda.run>`
(or straight out of SimPy's step when detached).

``tests/engine/test_burst.py`` runs mirrors with bursts, with only the agenda and
with neither (``Simulation(shortcuts=False)``), including fault rules,
jitter, thin and copy-on-write targets and commands inside bursts, and
requires byte-identical events, series, summaries and device counters.
"""

from __future__ import annotations

from heapq import heappop, heappush

from simpy.events import NORMAL

#: What the copy loop does after :func:`copy` returns (a positive value is
#: a rate-limit sleep, in ns).
TOP = 0             # carry on from the top of the loop
WAITING = -1        # keep waiting: SimPy's queue holds the next event
SLEEPING = -2       # the loop went on to a sleep, the rate limit's or a
                    # ready poll's, and sleeps still (compiled only:
                    # blocksim.engine.burst_kernel): its timer is drawn
TURN = -3           # an iteration is issued and the loop sleeps 0 ns: a turn
                    # of the main loop (mirror_run's job_sleep_ns after each
                    # iteration, with no rate-limit delay)

#: Quiet bursts run compiled (blocksim.engine.burst_kernel) where they can; False
#: keeps them in the Python loop below (the reference the tests compare).
KERNEL = True


def applies(job) -> bool:
    """Whether :func:`copy` may run the mirror ``job``'s cycle: its
    operations are on an agenda that no callback has broken."""
    agenda = job._agenda
    return agenda is not None and not agenda.failed


def copy(job, waiting: bool, detached: bool = False, one_wait: bool = False) -> int:
    """Run the copy loop of ``job`` from its top (or, ``waiting``, from
    inside a wait for an operation) until it has to leave the cycle; returns
    :data:`TOP`, :data:`WAITING`, a sleep in ns, :data:`TURN`, or (from the compiled loop
    only, called neither ``one_wait`` nor ``detached``) :data:`SLEEPING`.
    See the module's doc.

    ``one_wait``: only finish the current wait (:data:`TOP` at the wake-up),
    for a caller that waits for one operation (``MirrorJob._wait_op``).

    ``detached``: the loop waits for something else (a sleep, a pause) and
    the agenda runs itself (:meth:`Agenda.detach
    <blocksim.engine.agenda.Agenda.detach>`): only complete the operations due
    before SimPy's next event, waking nobody."""
    env = job.env
    agenda = job._agenda
    queue = env._queue
    head_t, last_eid = _head(queue)
    now = env._now
    src, tgt = job.source, job.target
    # On quiet nodes every request succeeds after a service time known when
    # it is issued: the operation's steps are done here, inline (the hot path
    # of a long mirror), or compiled (blocksim.engine.burst_kernel); elsewhere they
    # are the operation's own methods.
    quiet = _quiet(src, tgt, now, head_t)
    # Called from the top of the loop, the cycle starts at its issue
    # condition: the loop has just made its checks, and made its check of
    # ``ret`` before its pause point, as QEMU's mirror_run does, so an error
    # reported during a pause still lets it issue once before it stops.
    at_top = not waiting
    kernel = agenda.kernel
    if kernel is not None:
        # (copies waiting for their buffer, MirrorJob._queued, are the
        # Python loop's alone)
        if quiet and KERNEL and not job._queued:
            outcome, back = kernel.copy(waiting, at_top, detached, one_wait,
                                        head_t, last_eid)
            if back is None:
                return outcome
            # handed back, at a step only the Python loop takes
            waiting, at_top = back
            now = env._now
        else:
            kernel.materialize()
        # (a guest the kernel ran is back in SimPy's queue: its next event)
        head_t, last_eid = _head(queue)
    # the job's own operation type and limit (the engine imports no job)
    operation, max_in_flight = job.copy_operation, job.max_in_flight
    heap = agenda.heap
    eids = env._eid
    read_done, write_done = operation._read_done, operation._write_done
    bm = job.bitmap
    src_service, tgt_service = src._service_done, tgt._service_done
    # (BlockDevice.read_for_copy, without its call, for a source with no backing file)
    read_for_copy = src.content.snapshot if src.backing is None else src.read_for_copy
    set_runs, set_zeros = tgt.content.set_runs, tgt.content.set
    tgt_alloc = tgt.alloc
    # a full target (every mirror's once its initial copy is done) stays full
    tgt_full = tgt_alloc.count == tgt_alloc.nclusters

    while True:
        if not waiting:
            if job._it_bit >= job._it_end:
                # the loop's top, as in MirrorJob.run (mirror_run)
                if at_top:
                    at_top = False
                elif job.ret or (job.pause_count > 0 and job.should_pause()) or (
                        job.cancelled and not job.completes_on_cancel()):
                    return TOP
                if not (bm.count and job.in_flight < max_in_flight and job.buf_free):
                    if not job.in_flight:
                        return TOP
                    waiting = True
                    job._awaited = job.oldest_copy()
                    continue
                if not job._start_iteration():  # an operation in flight there
                    waiting = True
                    job._awaited = job._held_by
                    continue
            at_top = False
            # mirror_iteration: the claim's next operation
            op = job._next_operation()
            if op is None:                  # 16 in flight, or the buffer is full
                waiting = True
                job._awaited = job.oldest_copy()
                continue
            if op is False:                 # the job failed: the claim dropped
                return TURN
            nbytes = op.end - op.start
            if op.awaits >= 0:              # it waits for its buffer (queued)
                pass
            elif op.zero:
                delay, callback, err = op.submit_zero()
                heappush(heap, (now + delay, next(eids), callback, err))
            elif quiet:                     # CopyOperation.submit_read
                heappush(heap, (src_service(now, nbytes), next(eids), op._read_done, 0))
            else:
                delay, callback, err = op.submit_read()
                heappush(heap, (now + delay, next(eids), callback, err))
            delay = job.throttle(op.counted())
            # (the loop sleeps once the whole iteration is issued, 0 ns
            # included: MirrorJob._iteration_sleep)
            if job._it_bit >= job._it_end:
                return delay or TURN
            continue
        # waiting, as in Agenda.run
        if not heap:                        # (detached: every operation done)
            return TOP
        t, eid, callback, argument = heap[0]
        if t > head_t or (t == head_t and eid > last_eid):
            return WAITING
        heappop(heap)
        env._now = now = t
        if callback is None:                # the loop's wake-up
            job._timer_phase = False        # (by a completion)
            if one_wait:
                return TOP
            waiting = False
            continue
        step = callback.__func__
        if step is read_done:
            op = callback.__self__
            if quiet:                       # CopyOperation.read_completed
                start, end = op.start, op.end
                src.reads += 1
                src.bytes_read += end - start
                if not tgt_full:
                    cs = tgt.cluster_size
                    c0, c1 = start // cs, -(-end // cs)
                    if tgt._new_clusters(c0, c1):
                        tgt_alloc.set_range(c0, c1)
                op.runs, op.how = read_for_copy(start, end), None
                done = tgt_service(now, end - start)
                heappush(heap, (done, next(eids), op._write_done, 0))
            else:
                delay, callback, err = op.read_completed()
                heappush(heap, (now + delay, next(eids), callback, err))
        elif step is write_done:
            op = callback.__self__
            # (a write submitted before the node turned quiet may carry a
            # verdict: dropped, or copy-on-write runs; its own step then)
            if quiet and (op.how is None or op.how is False and op.runs is None):
                # CopyOperation.write_completed of a plain write
                start, end = op.start, op.end
                if op.runs is None:
                    set_zeros(start, end, 0)
                else:
                    tgt.writes += 1
                    tgt.bytes_written += end - start
                    set_runs(op.runs)
                    # (no write listeners to tell: the target is held by
                    # this mirror alone, so no other job's bitmap watches it)
                job.offset += end - start
                job.bytes_copied += end - start
            else:
                op.write_completed()
            job._op_finished(op)
        else:
            # a failed read or write: the error policy may emit events,
            # trigger actions, pause or end the job
            if detached:
                callback(argument)
            else:
                try:
                    callback(argument)
                except BaseException as error:
                    agenda.raise_now(error)
                    return WAITING
            head_t, last_eid = _head(queue)


_READS, _WRITES = frozenset({"read"}), frozenset({"write", "write-zeroes"})


def _quiet(src, tgt, now: int, until) -> bool:
    """Whether a copy between these nodes submitted from ``now`` up to
    ``until`` (SimPy's next event) cannot fail nor wait on anything but the
    devices' queues and pipes: no jitter and no fault rule that could match
    a read of the source or a write to the target meanwhile, no backing file
    under the target (no copy-on-write), no write listener on it (a named
    dirty bitmap) and room on it for the whole disk (no ENOSPC)."""
    return (tgt.backing is None
            # (no named dirty bitmap recording on the target, such as one
            # added to an active commit's base: a copy's write marks it,
            # BlockDevice.complete_write, which the quiet steps skip)
            and not tgt.write_listeners
            and (tgt.capacity is None
                 or tgt.capacity >= tgt.alloc.nclusters * tgt.cluster_size)
            and src.is_quiet_for(_READS, 0, src.size, now, until + 1)
            and tgt.is_quiet_for(_WRITES, 0, tgt.size, now, until + 1))


def _head(queue) -> tuple:
    """SimPy's next event as ``(time, largest id an entry due then may
    have to come first)``: an entry due at that time runs first only if
    SimPy would order it first (same priority, smaller id)."""
    if not queue:
        return float("inf"), -1
    t, priority, eid = queue[0][:3]
    return t, (eid if priority == NORMAL else -1)
