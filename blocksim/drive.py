"""A guest drive: the guest's view of a node, with rerror and werror.

A :class:`Drive` is QEMU's BlockBackend plus the guest device in front of it.
Guest requests enter through :meth:`Drive.request`, which waits while the VM
is stopped or the drive is drained, sends the request to the drive's node
(the top of its backing chain, which a mirror's pivot can replace) and, on
failure, asks the shared :class:`~blocksim.policy.ErrorPolicyEngine`:

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

from array import array

import numpy as np

from .extents import PAGE_SHIFT, ExtentMap, from_sorted_runs
from .iostatus import IoStatus
from .policy import REPORT, STOP


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
        self.in_flight = 0
        self._drains = 0
        self._undrained = None
        self._idle = None
        # counters for the summary and the sampled series
        self.errors_by_action = {"ignore": 0, "report": 0, "stop": 0}
        self.guest_errors = 0
        self.reads = self.writes = 0
        self.completed = 0
        self.latency_sum = 0
        # the ledger: acknowledged writes in acknowledgement order, turned
        # into extent maps only at the end, a page at a time (cheaper than a
        # map update per request; see expected_parts)
        self._acked = array("q")
        self.lost: dict[int, str] = {}      # generation -> why it was lost

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
        vm = self.vm
        env = self.env
        is_read = op == "read"
        while True:
            if vm.state != "running":
                yield vm.wait_running()
                continue
            if self._undrained is not None:
                yield self._undrained
                continue
            start = env.now
            self.in_flight += 1
            node = self.node        # a pivot may replace it meanwhile
            if is_read:
                err, delay = node.submit_read(offset, length)
                yield env.timeout(delay)
                if not err:
                    node.complete_read(length)
            elif op == "flush":
                err = yield from node.flush()
            else:
                err, delay, how = node.submit_write(offset, length)
                yield env.timeout(delay)
                if not err:
                    node.complete_write(offset, length, gen, how)
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                ev, self._idle = self._idle, None
                ev.succeed()
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
                self._acked.extend((offset, offset + length, gen))
            return 0

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
        """
        size = self.node.size
        if not self._acked:
            return
        acked = np.frombuffer(self._acked, dtype=np.int64).reshape(-1, 3)
        lengths = acked[:, 1] - acked[:, 0]
        bs = int(lengths[0])
        if not ((lengths == bs).all() and not (acked[:, 0] % bs).any()):
            m = ExtentMap(size)
            for a, b, g in acked.tolist():
                m.set(a, b, g)
            yield m, 0, size
            return
        # Same-size aligned blocks: the last acknowledgement of each block
        # wins, found in one numpy pass; the winners sorted by offset do not
        # overlap, so each page's share is a slice.
        latest = acked[::-1]
        _, first = np.unique(latest[:, 0], return_index=True)
        table = latest[first]
        del latest, first, lengths
        starts, ends = table[:, 0], table[:, 1]
        for ps in range(int(starts[0]) // step * step, int(ends[-1]), step):
            pe = min(ps + step, size)
            i0 = int(np.searchsorted(ends, ps, side="right"))
            i1 = int(np.searchsorted(starts, pe, side="left"))
            if i0 < i1:
                yield from_sorted_runs(size, _rows(table[i0:i1])), ps, pe

    @property
    def writes_lost(self) -> int:
        return len(self.lost)


def _rows(table: np.ndarray, chunk: int = 1 << 16):
    """The rows of an (n, 3) array as tuples, converted a chunk at a time
    (a whole ledger as Python lists would cost far more than the array)."""
    for i in range(0, len(table), chunk):
        yield from map(tuple, table[i:i + chunk].tolist())
