"""Quiet stretches through a copy-before-write filter.

A backup (``blocksim.jobs.backup``) puts a copy-before-write filter in its
drive's write path for as long as it runs, which keeps the guest out of the
quiet stretches of :mod:`blocksim.engine.stretch`: a guest write may first
copy the clusters it touches to the backup's target, and wait for that.  Yet
at 1 GiB/s a full backup copies its slice's quota in a quarter of each
100 ms slice and sleeps the rest; meanwhile the guest's writes are the only
thing happening, each a dozen SimPy events when it copies (a block-copy
call, a task process, its read and its write, their ends).

:func:`advance` does those requests in bulk, one after the other in plain
Python, with the same steps in the same order:

1. **When it applies.**  What :func:`stretch.advance
   <blocksim.engine.stretch.advance>` asks (a one-worker guest at the top of
   its loop, no fsync, the VM running, no drain, a quiet idle node), with
   one write filter that offers the stretch its nodes (``quiet_nodes()``:
   the source, which must be the guest's node, and the target, or None while
   it has copies in flight: a backup with a task in flight does not, and
   without one its target is idle too), and both quiet up to the horizon as a mirror's copy burst
   requires (:func:`blocksim.engine.burst._quiet`: no fault rule that could
   match, no jitter, no backing file under the target, no write listener on
   it, room for the whole disk).  A guest that writes needs a node on which
   writing cannot fail nor copy on write (fully allocated, or plain with no
   capacity limit).
2. **The requests.**  Each is issued when the worker is back, or when it is
   due; a write first goes through the filter's ``copy_before_quietly(offset,
   length, t, deadline)``, which does what the filter's ``before_write``
   would do at ``t`` with quiet idle nodes and returns when the guest's write
   reaches the node, or None (having done nothing) when it cannot say so
   (then the stretch stops before the request).  The stretch stops before a
   request the worker would not be back from strictly before the horizon
   (SimPy's next event), as a stretch does: so no other event of the run is
   processed among its steps either way.  What the filter defers while the
   stretch runs (nothing else reads it: its copies' allocation on the
   target) it hands in at ``quiet_end()``, when the requests are done.
   When the horizon is the filter's own timer that changes nothing but
   the timers (``quiet_timer``: a backup's pass that would only sleep
   again), with the worker waiting across it, the stretch fires it, as
   SimPy would, and goes on to the next horizon (:func:`_quiet_timer`).
3. **The effects**: the filter's as it goes (its copies, in order, through
   the devices' queues), the guest's writes landed in bulk at the end (a
   copy before a write reads only clusters no write of the stretch has
   touched yet, so it reads the same), the ledger, the counters, the
   node's queue, and the clock where the worker is back from the last one.

Nothing outside the stretch can tell: its events would all have come strictly
before SimPy's next event, and none is left when it ends.
``tests/engine/test_filtered.py`` and ``tests/system/test_shortcuts_random.py``
compare backups under guest writes with and without shortcuts.
"""

from __future__ import annotations

from itertools import islice

from . import backup_kernel
from .burst import _quiet
from .clock import NEVER

#: tests switch the compiled requests off to compare (the Python loop alone)
KERNEL = True
#: tests switch the early refusal off to compare (:func:`_first_too_late`)
EARLY = True
#: tests switch the timers fired inside a stretch off (:func:`_quiet_timer`)
TIMERS = True


def _quiet_timer(env, write_filter, due: int, end: int) -> int:
    """When SimPy's next event is due, if the stretch, stopped at it before
    a request of a paced worker due at ``due``, may process it itself and
    go on: the filter's own timer that changes nothing but the timers
    (``write_filter.quiet_timer``: a backup's pass that would only sleep
    again, its next sleep's timer due when it says), nothing else due at
    that instant (no step either), and the worker idle across it, waiting
    for ``due``, strictly later, before the workload's ``end``, and not at
    the instant of the next timer (there the one-by-one worker's wait,
    made before that timer, would come first; after the stretch it would
    come after).  Else 0.  Reads and changes nothing.

    In the backup hour the pass's sleep timer fires about once a slice
    between its wake-ups, when the guest's copies moved the slice's end
    while it slept (``BackupJob._sleep_over``): 6,937 of the 10,300
    slices, each a stretch stopped, a request one by one through SimPy and
    the filter, and a stretch begun again, for a timer that only set
    another."""
    queue = env._queue
    if not queue:
        return 0
    t = queue[0][0]
    steps = env.running_steps
    if not t < due < end or (steps is not None and steps.heap and steps.heap[0][0] <= t):
        return 0
    again = write_filter.quiet_timer(queue)
    if not again or again == due:
        return 0
    return t


def _first_too_late(workload, node, now: int, horizon) -> bool:
    """Whether the stretch's first request would be issued at or past its
    deadline (``horizon`` less a request's service and think time: the
    worker back at ``now``, or at its due time under a rate): then the
    stretch stops before it, having done nothing, whatever the request
    (a read, a write, with a copy or not: the copy only makes it later).
    Asked before the stretch's checks, which cost more than the answer
    saves to the others: in the backup hour 2,971 of the 20,498 stretches
    the filter let start (15 %) stopped so, each with the checks of the
    nodes' quiet and the compiled call's set-up done for nothing (the
    pass's next wake-up is near: the worker was back from a one-by-one
    request just before it)."""
    t = now
    if workload.rate:
        due = workload.start_at + int(workload.issued * workload.interval)
        if due > t:
            t = due
    deadline = ((NEVER if horizon == float("inf") else horizon) - node.latency
                - workload.bs * 1_000_000_000 // node.bandwidth - (workload.think or 0))
    return t >= deadline


def _reach(n: int, m: int, back: int, rate, start_at: int, issued: int, interval: float,
           deadline: int, period: int) -> int:
    """How far (request index, at most ``m``) a stretch at request ``n``,
    the worker back at ``back``, may reach before ``deadline``: request
    ``j`` is issued at its due time or later, or ``period`` after the one
    before it at the soonest (an upper bound: the pages its compiled copies
    ask ahead, blocksim.jobs.backup.BackupJob.learn_pages)."""
    if deadline >= NEVER:
        return m
    if rate:
        # (due[j] = start_at + int((issued + j) * interval) < deadline)
        last = int((deadline - start_at) / interval) - issued + 1
    elif period > 0:
        last = n + (deadline - back) // period + 1
    else:
        return m
    return max(n, min(m, last + 1))


def advance(workload, write_filter) -> int:
    """Carry out the worker's next requests through ``write_filter`` while
    nothing else can happen; returns how many (0: none).  ``workload`` is at
    the top of its loop with one worker and no fsync, its drive open to
    requests (see the module's doc)."""
    # (the cheapest refusal first: while the filter's copies are in flight,
    # as during most of a backup's slice, no stretch; asking changes nothing)
    nodes = write_filter.quiet_nodes()
    if nodes is None:
        return 0
    env = workload.env
    drive = workload.drive
    node = drive.node
    if EARLY and _first_too_late(workload, node, env.now, env.peek()) and not (
            TIMERS and workload.rate and hasattr(write_filter, "quiet_timer")
            and _quiet_timer(env, write_filter,
                             workload.start_at + int(workload.issued * workload.interval),
                             NEVER if workload.end is None else workload.end)):
        return 0
    offsets, read_flags, k = workload.drawn()
    m = len(offsets) - k
    if workload.limit is not None:
        m = min(m, workload.limit - workload.issued)
    now = env.now
    if m < 1 or not node.is_idle(now):
        return 0
    src, tgt = nodes
    if src is not node:
        return 0
    writes = "write" in workload.operations
    if writes and not (node.fully_allocated() or (
            node.backing is None and node.lv_size is None and node.capacity is None)):
        return 0
    horizon = env.peek()
    if not (node.is_quiet_for(workload.operations, *workload.region, now, horizon)
            and _quiet(src, tgt, now, horizon)):
        return 0
    bs = workload.bs
    service = node.latency + bs * 1_000_000_000 // node.bandwidth
    think = workload.think or 0
    # a request issued at t is back at t + service (+ the copy before it)
    # + think, which must come strictly before the horizon
    deadline = (NEVER if horizon == float("inf") else horizon) - service - think
    rate = workload.rate
    start_at, issued, interval = workload.start_at, workload.issued, workload.interval
    end = NEVER if workload.end is None else workload.end
    # (as lists, a few at a time, once the Python loop below needs them: a
    # stretch among a backup's slices is short, and the kernel's needs none)
    chunk = 32
    offs, reads = [], []
    allocate = writes and not node.fully_allocated()
    copy_before = write_filter.copy_before_quietly
    back = now
    n = nreads = waited = latency = 0
    # (the requests the filter's compiled loop can do, it does, handing
    # back those it cannot say so of: blocksim.engine.backup_kernel)
    kernel = KERNEL and not allocate and hasattr(write_filter, "_data_known")
    idle = 0
    learned = -1                # (the request a page was last asked for)
    fired = now                 # (when the last timer the stretch fired was due)
    timers = TIMERS and bool(rate) and hasattr(write_filter, "quiet_timer")
    while True:
        while n < m:
            if kernel:
                was = n
                done = backup_kernel.advance(
                    write_filter, offsets[k:k + m], read_flags[k:k + m], n, m, back, rate,
                    start_at, issued, interval, end, deadline, service, think, bs)
                if done is None:
                    kernel = False
                else:
                    n, back, done_reads, done_waits, done_latency, status = done
                    nreads += done_reads
                    waited += done_waits
                    latency += done_latency
                    if status != backup_kernel.PYTHON:
                        break
                    if (n != learned and not read_flags[k + n]
                            and write_filter.learn_page(int(offsets[k + n]), bs)):
                        # (a write on a source page whose data the filter had
                        # not asked yet: asked now, with those of the writes
                        # after it the stretch may reach, and the kernel again)
                        learned = n
                        idle = 0
                        ahead = _reach(n, m, back, rate, start_at, issued, interval, deadline,
                                       service + think)
                        if ahead > n + 1:
                            later = slice(k + n + 1, k + ahead)
                            write_filter.learn_pages(offsets[later][~read_flags[later]], bs)
                        continue
                    # (request n: the Python loop's, below; a loop that hands
                    # back at once twice in a row is left out of this stretch)
                    idle = idle + 1 if n == was else 0
                    kernel = idle < 2
            while n >= len(offs):
                chunk *= 4
                offs += offsets[k + len(offs):k + min(m, len(offs) + chunk)].tolist()
                reads += read_flags[k + len(reads):k + min(m, len(reads) + chunk)].tolist()
            t = back
            if rate:
                due = start_at + int((issued + n) * interval)
                if due > back:
                    t = due
                    waited += 1
            if t >= end:
                break
            if reads[n]:
                if t >= deadline:
                    break
                nreads += 1
                done = t + service
            else:
                off = offs[n]
                at = copy_before(off, bs, t, deadline)
                if at is None:
                    break
                if allocate:
                    node.allocate_quietly(off, off + bs)
                done = at + service
            latency += done - t
            back = done + think
            n += 1
        # (stopped before request n at the horizon: if that is the pass's
        # sleep timer, which would only sleep again, fired at its time
        # and the stretch goes on to the next horizon: _quiet_timer)
        if not timers or n >= m:
            break
        due = start_at + int((issued + n) * interval)
        at = _quiet_timer(env, write_filter, due, end)
        if not at:
            break
        env.step()                  # (the timer, as SimPy would process it, at `at`)
        fired = at
        waited -= 1                 # (request n's wait, counted at the stop, comes again)
        horizon = env.peek()
        if not (node.is_quiet_for(workload.operations, *workload.region, now, horizon)
                and _quiet(src, tgt, now, horizon)):
            break
        deadline = (NEVER if horizon == float("inf") else horizon) - service - think
    # (what the filter deferred while nothing else ran: its copies' allocation)
    write_filter.quiet_end()
    if not n:
        return 0
    nwrites = n - nreads
    if nreads:
        node.complete_reads(nreads, bs)
    if nwrites:
        written = offsets[k:k + n]
        if nreads:
            written = written[~read_flags[k:k + n]]
        first_gen = next(islice(workload.sim.generations, nwrites - 1, None)) - nwrites + 1
        node.land_writes(written, bs, first_gen)
        drive.ledger.extend(written, bs, first_gen)
    workload.account_stretch(n)
    drive.account_quiet_requests(nreads, nwrites, latency)
    node.settle_queue(back - think)
    # (the waits the one-by-one path would have skipped: the due times
    # still ahead and the reads' completions; a write through the filter
    # waits on a timeout of its own)
    env.skip_to(max(back, fired), waits=waited + nreads + (n if think else 0))
    return n
