"""A block device node: an image with content, allocation, faults and timing.

A :class:`BlockDevice` is what QEMU calls a node: a raw or qcow2 image with a
virtual size, a cluster size and, for qcow2, an optional backing file.  It
tracks

- *content*: an :class:`~blocksim.model.extents.ExtentMap` of generations written
  to this layer (0 = not allocated here, read from the backing file);
- *allocation*: which clusters this layer has allocated, so that a thin
  device with a physical ``capacity`` fails a write needing a new cluster past
  it with ENOSPC (a management action can raise the capacity);
- *service time*: a FIFO queue of ``queue_depth`` slots in front of a shared
  transfer pipe; a request takes ``latency`` (with optional seeded jitter)
  plus ``length / bandwidth`` on the pipe.  Completion times are computed when
  the request is issued, so each request costs one SimPy timeout;
- *faults*: the rules of :mod:`blocksim.model.faults`, asked when a request is
  issued.  A failed request is not carried out and completes after the bare
  latency (blkdebug and dm-flakey fail requests without doing the I/O).

Requests are generators to be driven with ``yield from`` inside a SimPy
process, returning an errno (0 on success).
"""

from __future__ import annotations

import errno as _errno
from bisect import bisect_left, insort
from collections import deque
from typing import Callable

import numpy as np

from ..engine import Snap
from .allocation import AllocationMap
from .extents import ExtentMap, Run, resolve_runs
from .faults import MAIN_LOOP_TURN_NS, FaultRule, Verdict
from .iostatus import IoStatus

NO_VERDICT = Verdict()


class BlockDevice:
    def __init__(self, env, name: str, spec, rng: np.random.Generator, journal=None):
        self.env = env
        self.name = name
        self.size: int = spec.size
        self.cluster_size: int = spec.cluster_size
        self.format: str = spec.format
        self.capacity: int | None = spec.capacity
        #: A thin volume (blocksim.model.thin): the usable size of the block
        #: volume (the LV) the qcow2 file sits on, or None (a file that grows
        #: freely).  A write whose allocation would take the file past it
        #: fails with ENOSPC, as a write past the end of a block device does.
        self.lv_size: int | None = getattr(spec, "lv_size", None)
        #: block/write-threshold.c: ``write_threshold_offset`` of this node
        #: (the format node, guest offsets) and of its protocol node
        #: ``NAME-file`` (host offsets in the image file); 0 = disarmed.
        self.write_threshold = 0
        self.file_write_threshold = 0
        #: Host clusters (in the image file) of the disk clusters a write
        #: allocated while the protocol node's threshold was armed: QEMU
        #: appends them in the order they are allocated (see
        #: :meth:`_host_cluster`); and those disk clusters, sorted.
        self._late_host: dict[int, int] = {}
        self._late_sorted: list[int] = []
        #: Called as ``on_threshold(node_name, amount_exceeded, threshold)``
        #: when a write crosses an armed threshold (the run emits
        #: BLOCK_WRITE_THRESHOLD).
        self.on_threshold: Callable[[str, int, int], None] | None = None
        self.latency: int = spec.latency
        self.bandwidth: int = spec.bandwidth
        self.queue_depth: int = spec.queue_depth
        self.jitter: float = spec.jitter
        #: The node's ``discard`` open option: with "unmap" (and qcow2 v3 or
        #: raw, which blocksim assumes) it can write zeroes with unmap
        #: (QEMU's ``bdrv_can_write_zeroes_with_unmap``).
        self.discard: str = spec.discard
        self.backing: BlockDevice | None = None
        #: With a journal (blocksim.engine.journal, the simulation's shortcut), changes
        #: are logged and applied when the content is read.
        self.content = ExtentMap(self.size, journal=journal)
        self.alloc = AllocationMap(-(-self.size // self.cluster_size))
        self.faults: list[FaultRule] = []
        #: Told of each successful write, as ``listener.mark(start, end)``
        #: or, for many writes of one length, ``listener.mark_writes(offsets,
        #: length)`` (an int64 array): how a mirror's dirty bitmap sees guest
        #: writes.
        self.write_listeners: list = []
        #: Named dirty bitmaps (blocksim.model.named_bitmap), by name, oldest
        #: first; each recording one is also a write listener.
        self.bitmaps: dict = {}
        #: Called with a write's generation when a fault drops it silently.
        self.on_drop: Callable[[object], None] | None = None
        self._rng = rng
        self._jitter_pool: np.ndarray | None = None
        self._jitter_i = 0
        self._slots: deque[int] = deque()   # busy-until times of occupied queue slots
        self._pipe_free = 0
        self.reads = self.writes = self.flushes = self.failed = 0
        # QEMU's write_gen and flushed_gen (block/io.c): every write request
        # that finished (writes + zero_writes + failed_writes), and their
        # number at the start of the last successful flush
        self.zero_writes = self.failed_writes = self.flushed_gen = 0
        self.bytes_read = self.bytes_written = 0
        #: The node's own io-status, as a 2012 BlockDriverState had one: only
        #: the ``rfc-2012`` profile sets it (a job's ``stop`` on a node that is
        #: not the job's own device, ``bdrv_iostatus_set_err``); ``cont``
        #: resets it.  Today's QEMU keeps io-status on BlockBackends only.
        self.iostatus = IoStatus(lambda: env.now)

    # -- the chain ------------------------------------------------------------
    def chain(self) -> list["BlockDevice"]:
        """This node and its backing files, top first."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.backing
        return out

    def layers(self) -> list[ExtentMap]:
        return [n.content for n in self.chain()]

    def read_content(self, start: int, end: int) -> list[Run]:
        """What a read of ``[start, end)`` returns, resolved through backing files."""
        if self.backing is None:
            return self.content.runs(start, end)
        return resolve_runs(self.layers(), start, end)

    def read_for_copy(self, start: int, end: int):
        """:meth:`read_content`, in the form another node's
        :meth:`complete_write` takes fastest (a copy operation's read):
        runs, or a :class:`~blocksim.model.extents.Span` of one page, or a
        :class:`~blocksim.engine.journal.Snap` (the list ``[(start, end, 0)]``
        stands for zeros in each case)."""
        if self.backing is None:
            return self.content.snapshot(start, end)
        return resolve_runs(self.layers(), start, end)

    def block_status(self, start: int, end: int) -> tuple[bool, int]:
        """QEMU's ``bdrv_block_status_above(bs, NULL, ...)`` as a mirror asks
        it: whether ``start`` holds data (its cluster is allocated in some
        layer of the chain; else it reads as zeros) and for how many bytes
        up to ``end`` that holds.  The extent stops where any layer down to
        the deciding one changes its allocation, as QEMU's walk of the chain
        does."""
        n = end - start
        node = self
        while node is not None:
            cs = node.cluster_size
            c0 = start // cs
            allocated, c = node.alloc.run_at(c0, -(-end // cs))
            if c * cs - start < n:
                n = c * cs - start
            if allocated:
                return True, n
            node = node.backing
        return False, n

    @property
    def allocated_bytes(self) -> int:
        return self.alloc.count * self.cluster_size

    def is_allocated(self, start: int, end: int) -> bool:
        """Whether every cluster of ``[start, end)`` is allocated in this layer."""
        cs = self.cluster_size
        return self.alloc.all_set(start // cs, -(-end // cs))

    def extend(self, capacity: int) -> None:
        """A management action grows the thin device's physical capacity
        (the volume's size for a thin volume)."""
        if self.lv_size is not None:
            self.lv_size = capacity
        else:
            self.capacity = capacity

    # -- the image file's physical layout (qcow2) --------------------------------------
    # How far the image file reaches, as a function of what is allocated
    # (so it is the same however the allocation was done).  The layout
    # follows docs/interop/qcow2.txt and what qemu-img create 7.2 writes,
    # checked by running QEMU (scenarios/qemu/threshold-*): the header,
    # the refcount table, one refcount block and the L1 table (8 bytes per
    # L2 table, in whole clusters) come first; then, appended as writes
    # allocate, one L2 table per cluster_size / 8 clusters of the disk that
    # hold data, the data clusters, and one refcount block per
    # cluster_size / 2 host clusters (16-bit refcounts) past the first.
    # Not modelled: the refcount table growing, zero clusters (a
    # write-zeroes allocates no L2 table here), clusters leaked by failed
    # writes.
    @property
    def _l2_clusters(self) -> int:
        """Disk clusters one L2 table maps."""
        return self.cluster_size // 8

    def _l2_tables(self, c0: int = 0, c1: int | None = None) -> int:
        """L2 tables that map some allocated cluster of ``[c0, c1)`` (whole tables)."""
        per = self._l2_clusters
        n = self.alloc.nclusters
        g0, g1 = c0 // per, -(-(n if c1 is None else c1) // per)
        return sum(1 for g in range(g0, g1)
                   if self.alloc.any_set(g * per, min(n, (g + 1) * per)))

    def _host_clusters(self, data: int, l2: int) -> int:
        cs = self.cluster_size
        l1 = -(-(-(-self.size // (cs * self._l2_clusters)) * 8) // cs)
        host = 3 + l1 + l2 + data
        return host + max(0, -(-host // (cs // 2)) - 1)

    @property
    def physical_size(self) -> int:
        """The image file's end in bytes: the physical allocation, as the
        protocol node's ``wr_highest_offset`` sees it (raw: the virtual size)."""
        if self.format != "qcow2":
            return self.size
        return self._host_clusters(self.alloc.count, self._l2_tables()) * self.cluster_size

    def max_physical_size(self) -> int:
        """The file of a fully allocated image (the largest a volume needs)."""
        return self._host_clusters(self.alloc.nclusters,
                                   -(-self.alloc.nclusters // self._l2_clusters)) * self.cluster_size

    def _allocation_writes(self, c0: int, c1: int, new: int) -> tuple[list[int], int]:
        """The ends of the protocol node's writes when clusters ``[c0, c1)``
        (``new`` of them unallocated) are allocated now: the first
        refcount block's, then one whole-cluster write per new L2 table,
        then one write per run of unallocated clusters, in disk order, each
        ending where the file ends once that run is allocated
        (qcow2_co_pwritev_part writes a request in pieces
        of host-contiguous clusters, qcow2_alloc_host_offset stopping a
        new run at the next allocated cluster, and starts each piece's
        write before it allocates the next; handle_alloc_space zeroes a
        piece's whole allocation first: seen by running QEMU, fz9-2025),
        and where the file ends afterwards."""
        cs = self.cluster_size
        per = self._l2_clusters
        alloc = self.alloc
        l2 = self._l2_tables()
        new_l2 = sum(1 for g in range(c0 // per, -(-c1 // per))
                     if not alloc.any_set(g * per, min(alloc.nclusters, (g + 1) * per)))
        old_end = self._host_clusters(alloc.count, l2) * cs
        new_end = self._host_clusters(alloc.count + new, l2 + new_l2) * cs
        ends = [old_end + (i + 1) * cs for i in range(new_l2)]
        if new_l2 and old_end // cs < cs // 2:
            # qcow2-cluster.c l2_allocate flushes the refcount block cache
            # before it writes the new table: the first refcount block,
            # host cluster 2 (qemu-img create's layout), holding the new
            # table's refcount, is written whole first (measured on QEMU
            # 7.2: a threshold below 196608 crosses there, fz8-278).  (A
            # later refcount block's place is not modelled.)
            ends.insert(0, 3 * cs)
        if new < c1 - c0:
            # the runs of unallocated clusters, one write each
            done, c = 0, c0
            while c < c1:
                allocated, nxt = alloc.run_at(c, c1)
                if not allocated:
                    done += nxt - c
                    if done < new:
                        ends.append(self._host_clusters(alloc.count + done, l2 + new_l2) * cs)
                c = nxt
        ends.append(new_end)
        return ends, new_end

    def _host_cluster(self, c: int) -> int:
        """Where allocated disk cluster ``c`` lies in the image file, in
        clusters: the layout of an image written in ascending order (as
        qemu-io writes a scenario's data, and as jobs copy): the metadata
        of the header, then each L2 table before the first data cluster it
        maps, the data clusters in disk order; clusters a write allocated
        while the protocol node's threshold was armed where that write put
        them, at the file's end (QEMU appends clusters in the order they
        are allocated: one allocated by a fast path while no threshold was
        armed is taken to lie in disk order with the first ones)."""
        late = self._late_host.get(c)
        if late is not None:
            return late
        per = self._l2_clusters
        head = self._host_clusters(0, 0)
        return head + self._l2_tables(0, (c // per + 1) * per) + self.alloc.count_set(0, c) \
            - bisect_left(self._late_sorted, c)

    def _place_late(self, c0: int, c1: int, host: int) -> None:
        """Record where the new clusters of ``[c0, c1)`` go: from host
        cluster ``host`` on, in disk order (one allocation, qcow2's
        handle_alloc_space)."""
        alloc = self.alloc
        for c in range(c0, c1):
            if not alloc.is_set(c):
                self._late_host[c] = host
                host += 1
                insort(self._late_sorted, c)

    def _rewrite_crossing(self, offset: int, end: int, c0: int, c1: int, thr: int) -> int | None:
        """The end of the first write into the file node, past ``thr``,
        that the write of ``[offset, end)`` makes into clusters already
        allocated: qcow2_co_pwritev_task writes them at their host offset
        (bdrv_co_pwritev on the data file, whose bdrv_co_write_req_prepare
        checks its threshold), one write per run of host-contiguous
        clusters, in disk order (found by grammar 9, fz9-18: a commit into
        a fully allocated base crossed its protocol node's threshold).
        Only runs before the request's first new cluster count: from there
        its allocation writes at the file's end come first, and they end
        past any run already allocated."""
        cs = self.cluster_size
        per = self._l2_clusters
        alloc = self.alloc
        c = c0
        while c < c1:
            if not alloc.is_set(c):
                return None
            a, host = c, self._host_cluster(c)
            c += 1
            while c < c1 and alloc.is_set(c) and c % per and self._host_cluster(c) == host + c - a:
                c += 1
            start = max(offset, a * cs)
            stop = min(end, c * cs)
            file_end = host * cs + (start - a * cs) + (stop - start)
            if file_end > thr:
                return file_end
        return None

    def _threshold_crossed(self, node: str, end: int, threshold: int) -> None:
        """block/write-threshold.c bdrv_write_threshold_check_write: a write
        ending past the threshold emits the event (amount-exceeded = end -
        threshold) and disarms it."""
        if node == self.name:
            self.write_threshold = 0
        else:
            self.file_write_threshold = 0
        if self.on_threshold is not None:
            self.on_threshold(node, end - threshold, threshold)

    # -- timing -----------------------------------------------------------------
    def _latency(self) -> int:
        if not self.jitter:
            return self.latency
        pool = self._jitter_pool
        if pool is None or self._jitter_i >= len(pool):
            # Gamma with mean 1 and coefficient of variation `jitter`: positive,
            # drawn in batches from the device's own seeded stream.
            k = 1.0 / (self.jitter * self.jitter)
            pool = self._jitter_pool = self._rng.gamma(k, 1.0 / k, 4096)
            self._jitter_i = 0
        factor = pool[self._jitter_i]
        self._jitter_i += 1
        return int(self.latency * factor)

    def _service_done(self, now: int, nbytes: int) -> int:
        """Completion time of a request issued now (FIFO queue + shared pipe).

        Completion times never decrease (each request leaves the pipe after
        the one before it), so the busy slots form a sorted FIFO: a deque,
        not a heap."""
        slots = self._slots
        while slots and slots[0] <= now:
            slots.popleft()
        start = slots.popleft() if len(slots) >= self.queue_depth else now
        t = start + (self._latency() if self.jitter else self.latency)
        if t < self._pipe_free:
            t = self._pipe_free
        done = t + nbytes * 1_000_000_000 // self.bandwidth
        self._pipe_free = done
        slots.append(done)
        return done

    # -- quiet stretches (blocksim.engine.stretch) ---------------------------------------
    def is_quiet_for(self, ops: frozenset, lo: int, hi: int, t0: int, t1) -> bool:
        """Whether every request with an operation in ``ops`` inside ``[lo,
        hi)`` submitted in ``[t0, t1)`` succeeds after a service time known
        when it is issued: no jitter, and no fault rule anywhere in the chain
        can match it (see :meth:`FaultRule.quiet_for
        <blocksim.model.faults.FaultRule.quiet_for>`)."""
        if self.jitter or self.write_threshold or self.file_write_threshold \
                or self.lv_size is not None:
            return False        # (each write is checked against them one by one)
        node = self
        while node is not None:
            for rule in node.faults:
                if not rule.quiet_for(ops, lo, hi, t0, t1):
                    return False
            node = node.backing
        return True

    def is_idle(self, now: int) -> bool:
        """Whether every request issued so far has left the pipe by ``now``
        (so its queue slots are free too)."""
        return self._pipe_free <= now

    def settle_queue(self, last_done: int) -> None:
        """The queue and pipe after a stretch of requests, one at a time,
        issued to an idle node, the last completing at ``last_done``: each
        freed the slot of the one before it and took one."""
        self._slots.clear()
        self._slots.append(last_done)
        self._pipe_free = last_done

    def fully_allocated(self) -> bool:
        """Whether every cluster is allocated: no write allocates any more."""
        return self.alloc.count == self.alloc.nclusters

    def complete_reads(self, count: int, length: int) -> None:
        """:meth:`complete_read` for ``count`` reads of ``length`` bytes."""
        self.reads += count
        self.bytes_read += count * length

    def land_writes(self, offsets, length: int, first_gen: int) -> None:
        """:meth:`complete_write` for plain writes of ``length`` bytes at
        ``offsets`` (an int64 array), in order, with generations
        ``first_gen``, ``first_gen + 1``..."""
        self.writes += len(offsets)
        self.bytes_written += len(offsets) * length
        self.content.set_writes(offsets, length, first_gen)
        # (the marks of different writes commute, and nothing reads the
        # bitmaps in between: all at once)
        for listener in self.write_listeners:
            listener.mark_writes(offsets, length)

    def allocate_quietly(self, offset: int, end: int) -> bool:
        """Allocate for a write of ``[offset, end)`` as :meth:`submit_write`
        would, if that cannot fail nor copy on write; False (and nothing
        done) if it could: past a thin device's capacity, over a backing file."""
        cs = self.cluster_size
        c0, c1 = offset // cs, -(-end // cs)
        new = self._new_clusters(c0, c1)
        if new:
            if self.backing is not None or self.lv_size is not None or (
                    self.capacity is not None and (self.alloc.count + new) * cs > self.capacity):
                return False
            self.alloc.set_range(c0, c1)
        return True

    def allocate_writes(self, offsets, length: int) -> None:
        """:meth:`allocate_quietly` for writes of ``length`` bytes at each of
        ``offsets`` (an int64 array), known not to fail nor copy on write (a
        guest run by the compiled copy loop, blocksim.engine.burst_kernel:
        its writes handed in when it returns; clusters allocated in another
        order than the writes' give the same map)."""
        alloc, cs = self.alloc, self.cluster_size
        if alloc.count == alloc.nclusters or not len(offsets):
            return
        first = offsets // cs
        if np.array_equal(first, (offsets + (length - 1)) // cs):
            alloc.set_each(first)                  # (one cluster a write)
            return
        alloc.set_ranges(np.stack((first, -(-(offsets + length) // cs)), axis=1))

    # -- fault verdicts ---------------------------------------------------------
    def _failure_delay(self, verdict: Verdict) -> int:
        """When a request the fault rules fail completes, from its submit:
        on the main loop's next turn when blkdebug fails it
        (:attr:`Verdict.next_turn`), else after the device's latency (a
        dm device fails it in the kernel, below the format driver)."""
        return MAIN_LOOP_TURN_NS if verdict.next_turn else self._latency() + verdict.delay

    def _verdict(self, op: str, start: int, end: int) -> Verdict:
        verdict = Verdict()
        now = self.env.now
        for rule in self.faults:
            rule.apply(now, op, start, end, verdict)
        return verdict

    def _read_verdict(self, start: int, end: int) -> Verdict:
        """Faults of every layer that serves part of a read."""
        verdict = self._verdict("read", start, end) if self.faults else NO_VERDICT
        if self.backing is None or verdict.errno:
            return verdict
        # Clusters not allocated here are read from the backing file, whose
        # own rules apply to them.  An allocated cluster is served by this
        # layer entirely, even where it holds no data (qcow2 never reads the
        # backing file for it again).
        if not self.backing._has_read_faults():
            return verdict
        cs = self.cluster_size
        alloc = self.alloc
        c, c_end = start // cs, -(-end // cs)
        while c < c_end:
            if alloc.is_set(c):
                c += 1
                continue
            c2 = c + 1
            while c2 < c_end and not alloc.is_set(c2):
                c2 += 1
            a, b = max(start, c * cs), min(end, c2 * cs)
            c = c2
            sub = self.backing._read_verdict(a, b)
            if sub.errno or sub.delay:
                if verdict is NO_VERDICT:
                    verdict = Verdict()
                verdict.delay += sub.delay
                if sub.errno:
                    verdict.errno = sub.errno
                    # on the next turn only if the backing file serves the
                    # whole read: qcow2 waits for all of a read's parts
                    # (qcow2_co_preadv_part: aio_task_pool_wait_all)
                    verdict.next_turn = sub.next_turn and a == start and b == end
                    break
        return verdict

    def _has_read_faults(self) -> bool:
        node = self
        while node is not None:
            if any("read" in r.ops for r in node.faults):
                return True
            node = node.backing
        return False

    # -- requests ---------------------------------------------------------------
    # Each request is a *submit* step, run when it is issued (fault verdict,
    # allocation, a place in the queue: hence its completion time), and a
    # *complete* step, run when it completes (counters, content).  The
    # generators below drive both around one SimPy timeout; a caller on the
    # hot path (a mirror's copy operation) chains them with callbacks instead.

    def submit_read(self, offset: int, length: int) -> tuple[int, int]:
        """Issue a read now: ``(errno, nanoseconds until it completes)``."""
        verdict = self._read_verdict(offset, offset + length) \
            if (self.faults or self.backing) else NO_VERDICT
        if verdict.errno:
            self.failed += 1
            return verdict.errno, self._failure_delay(verdict)
        now = self.env._now             # (env.now without the property)
        return 0, self._service_done(now, length) - now + verdict.delay

    def complete_read(self, length: int) -> None:
        self.reads += 1
        self.bytes_read += length

    def read(self, offset: int, length: int, want_data: bool = False,
             may_skip: bool = False):
        """Read ``[offset, offset+length)``; returns ``(errno, runs or None)``.

        ``may_skip``: the calling process is resumed only by its own events,
        so the wait may take the clock's shortcut (:mod:`blocksim.engine.clock`)."""
        err, delay = self.submit_read(offset, length)
        if not (may_skip and self.env.skip_to(self.env.now + delay)):
            yield self.env.timeout(delay)
        if err:
            return err, None
        self.complete_read(length)
        return 0, (self.read_content(offset, offset + length) if want_data else None)

    def submit_write(self, offset: int, length: int,
                     copy_on_read: bool = False) -> tuple[int, int, object]:
        """Issue a write now: ``(errno, nanoseconds until it completes, how)``.

        ``how`` is what :meth:`complete_write` needs: ``None`` for a plain
        write, ``False`` for a write a fault drops, or the copy-on-write runs
        of a partial write to new qcow2 clusters.  Clusters are allocated
        here, when the request is issued, as qcow2 does, so that concurrent
        writes cannot overcommit a thin device.
        """
        end = offset + length
        # bdrv_co_write_req_prepare checks the threshold of the node named
        # before the request goes down (a blkdebug rule there fails it after).
        # A copy-on-read (a stream's) is written by bdrv_co_do_copy_on_readv
        # with bdrv_driver_pwritev, which skips that check on this node; the
        # qcow2 driver's writes to its file node do not (seen on QEMU 7.2:
        # scenarios/qemu/threshold-stream-top).
        if self.write_threshold and end > self.write_threshold and not copy_on_read:
            self._threshold_crossed(self.name, end, self.write_threshold)
        verdict = self._verdict("write", offset, end) if self.faults else NO_VERDICT
        cow = None
        if not verdict.errno:
            cs = self.cluster_size
            c0, c1 = offset // cs, -(-end // cs)
            alloc = self.alloc
            new = self._new_clusters(c0, c1)
            if self.file_write_threshold and new < c1 - c0 and self.format == "qcow2":
                crossing = self._rewrite_crossing(offset, end, c0, c1, self.file_write_threshold)
                if crossing is not None:
                    self._threshold_crossed(f"{self.name}-file", crossing,
                                            self.file_write_threshold)
            if new:
                err = 0
                late = 0
                if (self.lv_size is not None or self.file_write_threshold) \
                        and self.format == "qcow2":
                    ends, file_end = self._allocation_writes(c0, c1, new)
                    thr = self.file_write_threshold
                    if thr:
                        late = file_end // cs - new    # where its data clusters begin
                    if thr:
                        crossing = next((e for e in ends if e > thr), None)
                        if crossing is not None:
                            self._threshold_crossed(f"{self.name}-file", crossing, thr)
                    if self.lv_size is not None and file_end > self.lv_size:
                        # a write past the end of the block device
                        err = _errno.ENOSPC
                if err:
                    pass
                elif self.capacity is not None and (alloc.count + new) * cs > self.capacity:
                    err = _errno.ENOSPC
                elif self.backing is not None:
                    cow_failed = self._cow_read_error(offset, end, c0, c1)
                    if cow_failed is None:
                        cow = self._cow_runs(offset, end, c0, c1)
                    else:
                        cow_failed.delay = verdict.delay    # (any dm-delay)
                        verdict = cow_failed
                if err:
                    # a new Verdict: NO_VERDICT is shared; keep any dm-delay
                    verdict = Verdict(errno=err, delay=verdict.delay)
                else:
                    if late:
                        self._place_late(c0, c1, late)
                    alloc.set_range(c0, c1)
        if verdict.errno:
            self.failed += 1
            self.failed_writes += 1
            return verdict.errno, self._failure_delay(verdict), None
        now = self.env._now             # (env.now without the property)
        delay = self._service_done(now, length) - now + verdict.delay
        return 0, delay, (False if verdict.drop else cow)

    def complete_write(self, offset: int, length: int, data, how, fill: bool = False) -> None:
        """A successful write completes: its data lands (see :meth:`write`)."""
        self.writes += 1
        self.bytes_written += length
        if how is False:            # acknowledged, never carried out
            if self.on_drop is not None:
                self.on_drop(data)
            if data.__class__ is Snap:
                data.forget()
            return
        end = offset + length
        if how:
            # Only where nothing landed meanwhile: a later write to the same
            # cluster may have completed first (qcow2 orders them).
            self.content.fill_runs(how)
        if data.__class__ is int:
            self.content.set(offset, end, data)
        elif fill:
            self.content.fill_runs(data)
        else:
            self.content.set_runs(data)
        for listener in self.write_listeners:
            listener.mark(offset, end)

    def write(self, offset: int, length: int, data, fill: bool = False,
              may_skip: bool = False):
        """Write ``data`` (a generation, or runs read elsewhere) at ``offset``.

        With ``fill`` (a copy-on-read) the data lands only where this layer
        holds nothing yet when the write completes.  ``may_skip`` as for
        :meth:`read`.  Returns an errno.
        """
        err, delay, how = self.submit_write(offset, length, fill)
        if not (may_skip and self.env.skip_to(self.env.now + delay)):
            yield self.env.timeout(delay)
        if not err:
            self.complete_write(offset, length, data, how, fill)
        return err

    def _new_clusters(self, c0: int, c1: int) -> int:
        """How many of clusters ``[c0, c1)`` a write would allocate."""
        alloc = self.alloc
        if alloc.count == alloc.nclusters:     # (a full target of a mirror)
            return 0
        if c1 - c0 == 1:
            return 0 if alloc.is_set(c0) else 1
        return (c1 - c0) - alloc.count_set(c0, c1)

    def _cow_read_error(self, offset: int, end: int, c0: int, c1: int) -> Verdict | None:
        """The verdict failing the copy-on-write read from the backing file,
        if its fault rules fail it (qcow2 then fails the guest's write), else
        None.  qcow2's perform_cow reads the head, then the tail: a failure
        on the next turn fails the write on it only if no read before it
        went to the storage."""
        if not self.backing._has_read_faults():
            return None
        cs = self.cluster_size
        head, tail = c0 * cs, min(c1 * cs, self.size)
        first = True
        for a, b, allocated in ((head, offset, self.alloc.is_set(c0)),
                                (end, tail, self.alloc.is_set(c1 - 1))):
            if a < b and not allocated:
                sub = self.backing._read_verdict(a, b)
                if sub.errno:
                    return Verdict(errno=sub.errno, next_turn=sub.next_turn and first)
                first = False
        return None

    def _cow_runs(self, offset: int, end: int, c0: int, c1: int) -> list[Run]:
        """qcow2 copy-on-write: a partial write to a new cluster first copies
        the rest of the cluster from the backing file."""
        cs = self.cluster_size
        runs: list[Run] = []
        head, tail = c0 * cs, min(c1 * cs, self.size)
        if head < offset and not self.alloc.is_set(c0):
            runs += [r for r in self.backing.read_content(head, offset) if r[2]]
        if end < tail and not self.alloc.is_set(c1 - 1):
            runs += [r for r in self.backing.read_content(end, tail) if r[2]]
        return runs

    def submit_write_zeroes(self, offset: int, length: int) -> tuple[int, int, bool]:
        """Issue a write-zeroes now: ``(errno, ns until it completes, dropped)``.

        Zeroing is a metadata operation: latency only, nothing allocated.
        Used by a mirror for source ranges that read as zeros; setting the
        layer to 0 makes it read as zeros only without a backing file, which
        is the case for a full-sync mirror target.
        """
        if self.write_threshold and offset + length > self.write_threshold:
            self._threshold_crossed(self.name, offset + length, self.write_threshold)
        verdict = self._verdict("write-zeroes", offset, offset + length) \
            if self.faults else NO_VERDICT
        if verdict.errno:
            self.failed += 1
            self.failed_writes += 1
            return verdict.errno, self._failure_delay(verdict), verdict.drop
        return 0, self._latency() + verdict.delay, verdict.drop

    def complete_write_zeroes(self, offset: int, length: int, dropped: bool) -> None:
        self.zero_writes += 1
        if not dropped:
            self.content.set(offset, offset + length, 0)

    def write_zeroes(self, offset: int, length: int):
        """Zero ``[offset, offset+length)`` (generator); returns an errno."""
        err, delay, dropped = self.submit_write_zeroes(offset, length)
        yield self.env.timeout(delay)
        if not err:
            self.complete_write_zeroes(offset, length, dropped)
        return err

    def flush(self):
        """Flush the node (generator); returns an errno.

        QEMU's ``bdrv_co_flush`` calls the driver's flush to disk only when a
        write request finished since the last successful flush (``write_gen``
        against ``flushed_gen``): with nothing written since, no fault rule
        sees the flush (blkdebug checks its rules in ``blkdebug_co_flush``,
        a flush to disk), so a mirror that wrote nothing to its target
        before READY, or a guest's second fsync in a row, cannot fail."""
        env = self.env
        gen = self.writes + self.zero_writes + self.failed_writes
        verdict = self._verdict("flush", 0, 0) \
            if self.faults and gen != self.flushed_gen else NO_VERDICT
        yield env.timeout(self._failure_delay(verdict) if verdict.errno
                          else self._latency() + verdict.delay)
        if verdict.errno:
            self.failed += 1
            return verdict.errno
        self.flushes += 1
        self.flushed_gen = gen
        return 0
