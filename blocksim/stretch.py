"""Quiet stretches: a paced guest's requests carried out in bulk.

A paced guest (``rate-iops`` with one worker) spends most of a long run with
nothing else going on: a mirror that sleeps out its rate-limit slice, or
waits 100 ms between two polls once it is ready, leaves the guest's requests
as the only thing happening for thousands of them.  The clock's shortcut
(:mod:`blocksim.clock`) already spares those requests their SimPy events;
what is left is the Python work of one request at a time, about 6 µs each:
the worker's loop, :meth:`Drive.request <blocksim.drive.Drive.request>`, the
device's submit and complete steps.

:func:`advance` does the same requests in one go:

1. **When it applies.** The worker is at the top of its loop, resumed by its
   own event, so it is where it would take its next request with nothing
   else left to run at this instant.  The VM runs, the drive is not drained,
   no fault rule sits anywhere in the node's chain and its latency has no
   jitter: every request then succeeds after a service time known in
   advance, and no event (no policy decision, no wake-up) can come of it.
2. **The times**, for the requests left in the workload's current batch of
   offsets.  Request *j* is due at ``start + int(j / rate)``; it is issued
   when due, or as soon as request *j-1* completes if that is later; it
   completes a latency plus a transfer time after it is issued:

       issue[j] = max(due[j], done[j-1])
       done[j]  = issue[j] + L

   (the node's queue and pipe are the worker's own: a request of someone
   else still in them would complete later, its completion is queued, and
   no stretch can reach past it, so the device's general formula reduces to
   this one).  This is the max-plus recurrence ``done[j] = L + max(due[j], done[j-1])``, whose
   solution is a cumulative maximum: numpy computes a stretch of thousands
   at once, exactly, in integer nanoseconds.
3. **Where it stops.** A request belongs to the stretch only if it completes
   strictly before the next event queued in the whole simulation, the
   *horizon*: that is exactly when the clock's shortcut lets the one-by-one
   path skip both its waits (due and service), so that path too would run
   it without processing any other event.  The stretch also stops before a
   request issued at or after the workload's ``end``, past ``number-ios``,
   and before a write that needs a cluster the device cannot allocate
   without the general path (past a thin device's capacity: ENOSPC; over a
   backing file: copy-on-write).
4. **The effects**, in request order: allocation, content, the write
   listeners (a mirror's dirty bitmap), generations and the ledger (in
   bulk), the counters, the device's queue and pipe, and the clock, left at
   the last completion.
   The worker then carries on with the next request as it would have.

Nothing outside the stretch can tell the difference: no other process runs
between the requests either way, and the events created afterwards keep
their relative order.  ``tests/test_stretch.py`` and ``tests/test_clock.py``
run scenarios both ways (``Simulation(shortcuts=False)`` turns this off with
the clock's shortcut) and require byte-identical results.
"""

from __future__ import annotations

from itertools import islice

import numpy as np

#: A stretch shorter than this is left to the one-by-one path: the numpy set-up
#: costs about as much as a few requests (any length would be exact).
MIN_STRETCH = 4


def advance(workload) -> int:
    """Carry out the worker's next requests while nothing else can happen.

    ``workload`` is a paced :class:`~blocksim.workload.GuestWorkload` with
    one worker, at the top of its loop.  Returns how many requests were
    carried out (0: none, the worker goes on one by one).
    """
    env = workload.env
    if not env.shortcuts:
        return 0
    drive = workload.drive
    node = drive.node
    if not (drive.accepts_requests() and node.is_predictable()):
        return 0
    offsets, reads, k = workload.drawn()
    m = len(offsets) - k
    i = workload.issued
    if workload.limit is not None:
        m = min(m, workload.limit - i)
    if m < MIN_STRETCH:
        return 0
    horizon = env.peek()
    now = env.now
    # A request still in the node's queue completes later, and its completion
    # is queued: it would end any stretch before its first request completed.
    if not node.is_idle(now):
        return 0
    bs = workload.bs
    service = node.latency + bs * 1_000_000_000 // node.bandwidth
    interval = workload.interval
    start_at = workload.start_at
    # cheap refusal first: the first few requests must complete before the horizon
    if max(start_at + int((i + MIN_STRETCH - 1) * interval), now) + service >= horizon:
        return 0

    # only requests due before the horizon can be in the stretch
    if horizon != float("inf"):
        m = min(m, int((horizon - start_at) / interval) + 2 - i)
        if m < MIN_STRETCH:
            return 0
    due = start_at + (np.arange(i, i + m, dtype=np.int64) * interval).astype(np.int64)
    steps = np.arange(m, dtype=np.int64) * service
    # done[j] = L + max(due[j], done[j-1]), done[-1] = now, unrolled:
    # (j + 1) L + max(now, max over k <= j of due[k] - k L)
    issue = due - steps
    issue[0] = max(issue[0], now)
    np.maximum.accumulate(issue, out=issue)
    issue += steps                      # issue[j] = max(due[j], done[j-1])
    n = int(np.searchsorted(issue, horizon - service, "left"))    # done < horizon
    if workload.end is not None:
        n = min(n, int(np.searchsorted(issue, workload.end, "left")))
    if n < MIN_STRETCH:
        return 0

    # the effects; a write the device cannot land quietly ends the stretch
    # before it
    offs = offsets[k:k + n]
    ops = reads[k:k + n]
    if not node.fully_allocated():
        for j, (off, is_read) in enumerate(zip(offs, ops)):
            if not is_read and not node.allocate_quietly(off, off + bs):
                n = j
                offs, ops = offs[:n], ops[:n]
                break
        if not n:
            return 0
    reads = sum(ops)
    if reads:
        node.complete_reads(reads, bs)
    written = [off for off, is_read in zip(offs, ops) if not is_read] if reads else offs
    if written:
        w = len(written)
        first = next(islice(workload.sim.generations, w - 1, None)) - w + 1
        node.land_writes(written, bs, first)
        drive.ledger.extend(written, bs, first)
    writes = n - reads

    last_done = int(issue[n - 1]) + service
    node.settle_queue(last_done)
    drive.account_quiet_requests(reads, writes, n * service)
    workload.account_stretch(n)
    # waits the one-by-one path would have skipped: each service, and each
    # due time still ahead when the worker came back for the request
    prev = np.empty(n, dtype=np.int64)
    prev[0] = now
    prev[1:] = issue[:n - 1] + service
    env.skip_to(last_done, waits=n + int(np.count_nonzero(due[:n] > prev)))
    return n
