"""Quiet stretches: a one-worker guest's requests carried out in bulk.

A guest with one worker (paced by ``rate-iops``, or a closed loop with or
without ``think-time``) spends most of a long run with nothing else going
on: a mirror that sleeps out its rate-limit slice, or waits 100 ms between
two polls once it is ready, leaves the guest's requests as the only thing
happening for thousands of them.  The clock's shortcut
(:mod:`blocksim.engine.clock`) already spares those requests their SimPy events;
what is left is the Python work of one request at a time, about 6 µs each:
the worker's loop, :meth:`Drive.request <blocksim.model.drive.Drive.request>`, the
device's submit and complete steps.

:func:`advance` does the same requests in one go:

1. **When it applies.** The worker is at the top of its loop, resumed by its
   own event, so it is where it would take its next request with nothing
   else left to run at this instant.  The workload has no ``fsync``.  The
   VM runs, the drive is not drained, the node's latency has no jitter and
   no fault rule in its chain can match a request of the workload before
   the horizon (below): none on its operations or its region, or whose time
   window is open, or (dm-flakey) that goes down, or whose count is not
   spent, or (dm-dust) that has bad blocks left; see
   :meth:`FaultRule.quiet_for <blocksim.model.faults.FaultRule.quiet_for>`.
   Every request then succeeds after a service time ``L`` known in advance,
   and no event (no policy decision, no wake-up) can come of it.
2. **The times**, for the requests left in the workload's current batch of
   offsets.  The worker issues request *j*, waits ``L`` for it, thinks
   ``think`` (0 for a paced guest), and comes back; request *j* is issued
   then, or when it is due (``start + int(j / rate)``) if that is later:

       issue[j] = max(due[j], issue[j-1] + L + think)

   (the node's queue and pipe are the worker's own: a request of someone
   else still in them would complete later, its completion is queued, and
   no stretch can reach past it, so the device's general formula reduces to
   this one).  Compiled code (:func:`_plan`, numba) runs this max-plus
   recurrence for a stretch of thousands in a few microseconds, exactly, in
   integer nanoseconds (numpy's cumulative maximum, its unrolled form, cost
   more in fixed costs than a stretch of a hundred takes).  A closed loop
   has no due times: ``issue[j] = issue[0] + j (L + think)``.
3. **Where it stops.** A request belongs to the stretch only if the worker
   is back from it (completed, and done thinking) strictly before the next
   event queued in the whole simulation, the *horizon*: that is exactly when
   the clock's shortcut lets the one-by-one path skip all its waits (due,
   service, think), so that path too would run it without processing any
   other event.  The stretch also stops before a request issued at or after
   the workload's ``end``, past ``number-ios``, and before a write that
   needs a cluster the device cannot allocate without the general path
   (past a thin device's capacity: ENOSPC; over a backing file:
   copy-on-write).
4. **The effects**, in request order: allocation, content, the write
   listeners (a mirror's dirty bitmap), generations and the ledger (in
   bulk), the counters, the device's queue and pipe, and the clock, left
   where the worker is back from the last request.  The worker then carries
   on with the next request as it would have.

Nothing outside the stretch can tell the difference: no other process runs
between the requests either way, and the events created afterwards keep
their relative order.  ``tests/engine/test_stretch.py`` and ``tests/engine/test_clock.py``
run scenarios both ways (``Simulation(shortcuts=False)`` turns this off with
the clock's shortcut) and require byte-identical results.
"""

from __future__ import annotations

from itertools import islice

import numpy as np

from . import filtered
from .clock import NEVER
from .compiled import Compiled

#: compiled with numba on first use (engine/compiled.py)
njit = Compiled(globals())

#: A guest worker handed back waiting for its next request's due time, which
#: the event that resumes it is (the model's ``GuestWorkload._worker``; the
#: compiled copy loop hands a guest it ran back this way).
AT_DUE = "at due"

#: A stretch shorter than this is left to the one-by-one path: the numpy set-up
#: costs about as much as a few requests (any length would be exact).
MIN_STRETCH = 4


def advance(workload) -> int:
    """Carry out the worker's next requests while nothing else can happen.

    ``workload`` is a :class:`~blocksim.model.workload.GuestWorkload` with one
    worker and no fsync, at the top of its loop.  Returns how many requests
    were carried out (0: none, the worker goes on one by one).
    """
    env = workload.env
    if not env.shortcuts:
        return 0
    drive = workload.drive
    filters = drive.write_filters
    if filters:
        # (a backup's copy-before-write filter in the way: its own stretches)
        if (len(filters) == 1 and hasattr(filters[0], "quiet_nodes")
                and drive.open_to_requests()):
            return filtered.advance(workload, filters[0])
        return 0
    if not drive.open_to_requests():
        return 0
    node = drive.node
    offsets, read_flags, k = workload.drawn()
    m = len(offsets) - k
    if workload.limit is not None:
        m = min(m, workload.limit - workload.issued)
    now = env.now
    # A request still in the node's queue completes later, and its completion
    # is queued: it would end any stretch before its first request completed.
    if m < MIN_STRETCH or not node.is_idle(now):
        return 0
    bs = workload.bs
    service = node.latency + bs * 1_000_000_000 // node.bandwidth
    think = workload.think or 0
    # The worker is back for its next request `period` after issuing one
    # (completion, then think time), or later if that one is not due yet.
    period = service + think
    if period <= 0:
        return 0
    horizon = env.peek()
    # every request of the stretch is submitted in [now, horizon)
    if not node.is_quiet_for(workload.operations, *workload.region, now, horizon):
        return 0
    times = _issue_times(workload, now, horizon, m, period)
    if times is None:
        return 0
    issue, waited = times
    reads, writes = _carry_out(workload, node, offsets[k:k + len(issue)],
                               read_flags[k:k + len(issue)])
    n = reads + writes
    if not n:
        return 0
    workload.account_stretch(n)
    drive.account_quiet_requests(reads, writes, n * service)
    last_done = int(issue[n - 1]) + service
    node.settle_queue(last_done)
    # waits the one-by-one path would have skipped: each service, each think
    # time, and each due time still ahead when the worker came back
    waits = n * (2 if think else 1) + int(np.count_nonzero(waited[:n]))
    env.skip_to(last_done + think, waits=waits)
    return n


def _issue_times(workload, now: int, horizon, m: int, period: int):
    """The issue times of the next requests (at most ``m``) the worker is
    back from strictly before ``horizon`` and issues before the workload's
    ``end``, and for each whether the worker waited for its due time; None
    when fewer than :data:`MIN_STRETCH` qualify."""
    rate = workload.rate
    # cheap refusal first: issue[j] >= now + j * period, and >= due[j]
    bound = now + (MIN_STRETCH - 1) * period
    if rate:
        bound = max(bound, workload.start_at
                    + int((workload.issued + MIN_STRETCH - 1) * workload.interval))
    if bound + period >= horizon:
        return None
    end = workload.end
    issue, waited = _plan(now, NEVER if horizon == float("inf") else horizon, m, period,
                          bool(rate), workload.start_at, workload.issued, workload.interval,
                          NEVER if end is None else end)
    if len(issue) < MIN_STRETCH:
        return None
    return issue, waited


@njit(cache=True)
def _plan(now, horizon, m, period, paced, start_at, i, interval, end):
    """The max-plus recurrence above, one request at a time:

        issue[j] = max(due[j], issue[j-1] + period), the worker back at ``now``
        before the first (``due[j] = start_at + int((i + j) * interval)`` for
        a paced guest, none for a closed loop),

    for at most ``m`` requests, stopping before the first one the worker is
    not back from strictly before ``horizon`` or issues at or after ``end``;
    returns the issue times and, for each, whether it waited for its due time."""
    issue = np.empty(m, dtype=np.int64)
    waited = np.zeros(m, dtype=np.bool_)
    back = now
    n = 0
    while n < m:
        t = back
        if paced:
            due = start_at + np.int64((i + n) * interval)
            if due > back:
                t = due
                waited[n] = True
        if t >= horizon - period or t >= end:
            break
        issue[n] = t
        back = t + period
        n += 1
    return issue[:n], waited[:n]


def _carry_out(workload, node, offsets: np.ndarray, reads: np.ndarray) -> tuple[int, int]:
    """The requests' effects on the node and the ledger; returns how many
    reads and writes were carried out: all, or those before the first write
    the node cannot land quietly.  ``offsets`` and ``reads`` (the read
    flags) are arrays."""
    bs = workload.bs
    n = len(offsets)
    if not node.fully_allocated():
        for j, (off, is_read) in enumerate(zip(offsets.tolist(), reads.tolist())):
            if not is_read and not node.allocate_quietly(off, off + bs):
                n = j
                offsets, reads = offsets[:n], reads[:n]
                break
    nreads = int(np.count_nonzero(reads))
    writes = n - nreads
    if nreads:
        node.complete_reads(nreads, bs)
    if writes:
        written = offsets[~reads] if nreads else offsets
        first_gen = next(islice(workload.sim.generations, writes - 1, None)) - writes + 1
        node.land_writes(written, bs, first_gen)
        workload.drive.ledger.extend(written, bs, first_gen)
    return nreads, writes
