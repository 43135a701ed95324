"""A guest drive: the guest's view of a node, with rerror and werror.

A :class:`Drive` is QEMU's BlockBackend plus the guest device in front of it.
Guest requests enter through :meth:`Drive.request`, which waits while the VM
is stopped or the drive is drained, sends the request to the drive's node
(the top of its backing chain, which a mirror's pivot can replace) and, on
failure, asks the shared :class:`~blocksim.model.policy.ErrorPolicyEngine`:

- ``report``: the guest sees the error;
- ``ignore``: the guest sees success although nothing was written; the write
  is recorded as silently lost;
- ``stop``: the VM stops; the request is parked and resubmitted on ``cont``.

The drive also keeps the guest's *ledger*: what the guest believes its disk
holds (every acknowledged write, by generation) and which generations were
lost on record, so the end-of-run check can tell a recorded loss from silent
corruption.
"""

from __future__ import annotations

from .extents import PAGE_SHIFT, ExtentMap, from_sorted_runs
from .iostatus import IoStatus
from .ledger import BlockOrder, Ledger
from .policy import REPORT, STOP, iostatus_enabled


class RequestCount:
    """The guest requests issued one by one on the drives sharing it (each
    call of :meth:`Drive.request`), and what to ask every ``every``-th call
    (a power of two): the run's bound where simulated time stands still
    (blocksim.simulation), which may end the run by raising.  Requests the
    shortcuts settle in bulk are not issued one by one and are not counted."""

    __slots__ = ("calls", "mask", "check")

    def __init__(self, check, every: int = 4096):
        assert every > 0 and not every & (every - 1)
        self.calls = 0
        self.mask = every - 1
        self.check = check


class Drive:
    def __init__(self, env, name: str, node, spec, vm, policy):
        self.env = env
        self.name = name
        self.node = node
        self.rerror: str = spec.rerror
        self.werror: str = spec.werror
        self.vm = vm
        self.policy = policy
        self.iostatus = IoStatus(lambda: env.now)
        #: whether the drive publishes an io-status (query-block's; see
        #: blocksim.model.policy.iostatus_enabled)
        self.iostatus_enabled = iostatus_enabled(self.rerror, self.werror)
        self.in_flight = 0
        #: the timeout the last request waited for its completion on, and
        #: its errno and what finishing it takes (Drive.finish's arguments)
        self.completion = None
        self.in_flight_request = None
        #: Filters a guest write passes before it reaches the node: a
        #: backup's copy-before-write (blocksim.jobs.backup) installs itself
        #: here while it runs.  ``before_write(offset, length)`` is a
        #: generator returning an errno; a failure fails the guest's write,
        #: which then never reaches the node.  A filter that may let a write
        #: pass without waiting says so first (``write_passes(offset,
        #: length)``, True: passed; else ``copy_before_write`` is the rest of
        #: its ``before_write``), so that a write it let pass may skip its
        #: node's wait (blocksim.engine.clock).  A filter that also acts after
        #: the node's write (an active mirror's mirror_top: blocksim.jobs.mirror)
        #: has ``prepare_write(offset, length)`` instead, a generator
        #: returning None or an object whose ``after_write(gen, err)``
        #: generator runs once the node's write is done (``err`` its errno;
        #: the data has landed when it is 0), before the guest is told.
        self.write_filters: list = []
        #: whether the request that just returned was last resumed by an
        #: event others wait for too, with no wait of its own since (a write
        #: a filter broke after waiting on a copy: the task's done event,
        #: which the job's call may wait on as well): its caller must not
        #: skip its next wait nor do a stretch at this instant, since the
        #: others still have to run (blocksim.engine.clock); read it at once
        self.woken_shared = False
        self._drains = 0
        self._undrained = None
        self._idle = None
        # counters for the summary and the sampled series
        self.errors_by_action = {"ignore": 0, "report": 0, "stop": 0}
        self.guest_errors = 0
        self.reads = self.writes = 0
        self.completed = 0
        self.latency_sum = 0
        #: requests issued one by one, counted for the run's bound (None:
        #: not counted; blocksim.simulation shares one among its drives)
        self.request_count: RequestCount | None = None
        # the ledger: acknowledged writes in acknowledgement order, turned
        # into extent maps only at the end, a page at a time (cheaper than a
        # map update per request; see expected_parts)
        self._ledger = Ledger()
        self.lost: dict[int, str] = {}      # generation -> why it was lost
        #: generations of writes landed on the node and not acknowledged yet
        #: (an active mirror's write path: the target's write comes between);
        #: in flight at the end of a run, either content is what the guest
        #: may find
        self.landed: set[int] = set()

    # -- drained sections (mirror completion) ---------------------------------
    def drain_begin(self):
        """Stop new guest requests and wait for those in flight (generator)."""
        self._drains += 1
        if self._undrained is None:
            self._undrained = self.env.event()
        while self.in_flight:
            if self._idle is None:
                self._idle = self.env.event()
            yield self._idle

    def drain_end(self) -> None:
        self._drains -= 1
        if self._drains == 0 and self._undrained is not None:
            ev, self._undrained = self._undrained, None
            ev.succeed()

    # -- guest requests ----------------------------------------------------------
    def request(self, op: str, offset: int, length: int, gen: int = 0):
        """One guest request (generator).  Returns the errno the guest sees.

        ``op`` is read, write or flush; a failed flush goes through werror and
        is reported as a write, as in QEMU."""
        count = self.request_count
        if count is not None:
            count.calls += 1
            if not count.calls & count.mask:
                count.check(count.calls)
        vm = self.vm
        env = self.env
        is_read = op == "read"
        # Whether this process was last resumed by an event others wait for
        # too (the VM's restart, the end of a drain): then it must not skip
        # its next wait, since the others still have to run at this instant
        # (blocksim.engine.clock).  The worker calling us was resumed by its own
        # timeout or its start.
        shared_wake = False
        while True:
            if vm.state != "running":
                yield vm.wait_running()
                shared_wake = True
                continue
            if self._undrained is not None:
                yield self._undrained
                shared_wake = True
                continue
            start = env.now
            self.in_flight += 1
            node = self.node        # a pivot may replace it meanwhile
            if op == "flush":
                err = yield from node.flush()
                shared_wake = False
            else:
                err = 0
                after = ()
                filters = self.write_filters
                if not is_read and filters:
                    # (a write that breaks in a filter never reaches the node)
                    passes = (getattr(filters[0], "write_passes", None)
                              if len(filters) == 1 else None)
                    if passes is None:
                        err, after = yield from self._filter_write(offset, length)
                        shared_wake = True
                    elif not passes(offset, length):
                        # (a backup's copy-before-write, in its two parts:
                        # one that never waits, then the copy, which may)
                        err = yield from filters[0].copy_before_write(offset, length)
                        shared_wake = True
                    # (else the filter let the write pass without a wait:
                    # what last resumed the request still holds for its
                    # next wait, which may then be skipped)
                if not err:
                    if is_read:
                        err, delay = node.submit_read(offset, length)
                        how = None
                    else:
                        err, delay, how = node.submit_write(offset, length)
                    if shared_wake or not env.skip_to(env.now + delay):
                        # (what compiled code needs to finish it, should it take
                        # the worker over while it waits: blocksim.engine.burst_kernel)
                        event = self.completion = env.timeout(delay)
                        self.in_flight_request = (err, node, is_read, offset, length, gen,
                                                  how, start)
                        yield event
                        shared_wake = False
                    if not err and after:
                        # the node's write lands, then what the filters do
                        # after it, before the guest is told
                        node.complete_write(offset, length, gen, how)
                        self.landed.add(gen)
                        for op in after:
                            yield from op.after_write(gen, 0)
                        self.landed.discard(gen)
                        self._acknowledge(False, offset, length, gen, start)
                        self.woken_shared = False
                        return 0
                    if not err:
                        self.finish(node, is_read, offset, length, gen, how, start)
                        self.woken_shared = False
                        return 0
                for op in after:        # (the node's write failed: nothing to copy)
                    yield from op.after_write(gen, err)
            self._leave()
            # (a write the filter broke returns with no wait of its own
            # since the filter's: see woken_shared)
            self.woken_shared = shared_wake
            if err:
                action = self.policy.guest_error(self, is_read, err)
                if action == STOP:
                    continue        # parked until the VM continues, then resubmitted
                if action == REPORT:
                    self.guest_errors += 1
                    self._account(is_read, start)
                    return err
                if gen:             # ignore: the guest believes it was written
                    self.lost[gen] = "ignored by werror=ignore"
            self._account(is_read, start)
            if gen:
                self._ledger.append(offset, length, gen)
            return 0

    def _filter_write(self, offset: int, length: int):
        """Run the write filters (generator); the first errno, or 0, and
        what to run after the node's write (``prepare_write``'s objects).

        A filter waits on events others may wait for too (another job's
        copy of the same cluster), so the request's next wait is never
        skipped (blocksim.engine.clock); a shortcut only ever saves time."""
        after = []
        for write_filter in list(self.write_filters):
            prepare = getattr(write_filter, "prepare_write", None)
            if prepare is not None:
                op = yield from prepare(offset, length)
                if op is not None:
                    after.append(op)
                continue
            err = yield from write_filter.before_write(offset, length)
            if err:
                for op in after:        # (the write goes no further)
                    yield from op.after_write(0, err)
                return err, ()
        return 0, after

    def finish(self, node, is_read: bool, offset: int, length: int, gen: int, how,
               start: int) -> None:
        """A read or write submitted to ``node`` at ``start`` completes now,
        successfully: its data lands, the guest is told (``how``: what the
        node's ``submit_write`` returned)."""
        if is_read:
            node.complete_read(length)
        else:
            node.complete_write(offset, length, gen, how)
        self._acknowledge(is_read, offset, length, gen, start)

    def _acknowledge(self, is_read: bool, offset: int, length: int, gen: int,
                     start: int) -> None:
        """The guest is told its request succeeded."""
        self._leave()
        self._account(is_read, start)
        if gen:
            self._ledger.append(offset, length, gen)

    def _leave(self) -> None:
        """A request leaves the drive: whoever drains it may go on."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            ev, self._idle = self._idle, None
            ev.succeed()

    # -- quiet stretches (blocksim.engine.stretch) ---------------------------------------
    def accepts_requests(self) -> bool:
        """Whether a request issued now goes straight to the node: the VM
        runs and nothing drains the drive."""
        return self.open_to_requests() and not self.write_filters

    def open_to_requests(self) -> bool:
        """Whether a request issued now goes on at once, to the node or
        through the write filters: the VM runs and nothing drains the drive
        (blocksim.engine.filtered)."""
        return self.vm.state == "running" and self._undrained is None and self._idle is None

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def account_quiet_requests(self, reads: int, writes: int, latency: int) -> None:
        """Count a stretch of successful requests (:meth:`_account` for each)."""
        self.reads += reads
        self.writes += writes
        self.completed += reads + writes
        self.latency_sum += latency

    def _account(self, is_read: bool, start: int) -> None:
        if is_read:
            self.reads += 1
        else:
            self.writes += 1
        self.completed += 1
        self.latency_sum += self.env.now - start

    def record_drop(self, gen) -> None:
        """A device fault acknowledged this write without carrying it out."""
        if gen.__class__ is int and gen:
            self.lost[gen] = "dropped by a device fault"

    def expected_content(self) -> ExtentMap:
        """What the guest believes its disk holds: every acknowledged write."""
        m = ExtentMap(self.node.size)
        for part, _start, _end in self.expected_parts():
            m.set_runs(list(part.iter_runs()))
        return m

    def expected_parts(self, step: int = 1 << PAGE_SHIFT):
        """What the guest believes its disk holds, a page at a time.

        Yields ``(map, start, end)``: ``map`` holds the acknowledged writes
        overlapping ``[start, end)`` (and nothing else), so a check can walk
        the disk holding one page of the ledger in memory, not all of it.

        When every acknowledged write has the same size and is aligned to it
        (a fio-like guest), two writes either cover the same block or do not
        overlap, so the expected content is the last acknowledgement of each
        block: :meth:`Ledger.by_block` sorts the ledger by block once, and a
        page's share is a slice of that order, turned into runs only when the
        page is reached.  Otherwise (mixed sizes, unaligned offsets) writes
        can partly overlap, and the ledger is replayed into one map in
        acknowledgement order.
        """
        ledger = self._ledger
        if not len(ledger):
            return
        size = self.node.size
        order = ledger.by_block()
        if order is None:
            m = ExtentMap(size)
            for a, b, g in ledger.rows():
                m.set(a, b, g)
            yield m, 0, size
            return
        bs = ledger.block_size
        first, last = order.block_range()
        for ps in range(first * bs // step * step, (last + 1) * bs, step):
            pe = min(ps + step, size)
            # the blocks overlapping [ps, pe): b * bs < pe and (b + 1) * bs > ps
            runs = order.winners(ps // bs, -(-pe // bs))
            if runs is not None:
                yield from_sorted_runs(size, runs), ps, pe

    def expected_blocks(self) -> BlockOrder | None:
        """What the guest believes its disk holds, as arrays of blocks.

        When every acknowledged write has the same size and is aligned to it,
        the expected content is, for each block written, its last
        acknowledgement: the :class:`BlockOrder` returned here gives those
        blocks for any range as numpy arrays (:meth:`BlockOrder.blocks`), so
        a check can compare them with a disk without building a map or a
        tuple per run.  None when the ledger is empty or holds writes of
        other sizes or unaligned ones: then only :meth:`expected_parts`,
        which replays the ledger, tells the truth.
        """
        if not len(self._ledger):
            return None
        return self._ledger.by_block()

    @property
    def writes_lost(self) -> int:
        return len(self.lost)
