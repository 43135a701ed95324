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
    env.skip_to(back, waits=waited + nreads + (n if think else 0))
    return n
