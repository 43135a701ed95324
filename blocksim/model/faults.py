"""Fault-injection rules: how a simulated device misbehaves.

Each rule speaks one vocabulary users already know:

- :class:`ErrorRule` is QEMU's ``blkdebug`` ``inject-error``: an operation
  (blkdebug's iotype: a ``write`` rule does not see a write-zeroes, such as a
  mirror's or a backup's copy of a range reading as zeros), an errno, a byte range (a request *overlapping* it fails), a count (``once`` is
  1), a number of matching requests to let through first (``skip``, for "fail
  the Nth time" schedules), a time window and a seeded probability.
- :class:`FlakeyRule` is Linux ``dm-flakey``: periodic up/down windows; while
  down, matching requests fail, or writes are silently dropped.
- :class:`DustRule` is Linux ``dm-dust``: a bad-block list; reads of a bad
  block fail, and a write to a bad block heals it.
- :class:`DelayRule` is Linux ``dm-delay``: added latency per operation.

A device asks its rules in order for a :class:`Verdict` when a request is
*submitted*; the first rule that fails the request decides its errno (as in
blkdebug, whose first matching rule wins), delays add up.  A failed request is
not carried out.
"""

from __future__ import annotations

import errno as _errno
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

#: One turn of QEMU's main loop (aio_dispatch: bottom halves, handlers,
#: timers), in ns: how long a request blkdebug fails takes (it fails on the
#: next turn), and a block job's sleep of 0 ns from the loop's timers.  QEMU's
#: turn lasts what the loop has to do, from a few to tens of microseconds;
#: blocksim takes 10 us, so that a job retrying a persistent error under
#: ``ignore`` (an error storm) still lets time pass.
MAIN_LOOP_TURN_NS = 10_000

ERRNO = {name: getattr(_errno, name) for name in (
    "EIO", "ENOSPC", "EPERM", "EACCES", "EINVAL", "EROFS", "ETIMEDOUT",
    "ENOMEDIUM", "EDQUOT", "ECANCELED")}


@dataclass
class Verdict:
    errno: int = 0
    delay: int = 0          # extra nanoseconds of service time
    drop: bool = False      # a write acknowledged but not carried out
    #: The request fails on the main loop's next turn (MAIN_LOOP_TURN_NS),
    #: not after a service time: blkdebug's ``inject_error`` (``immediately``
    #: off, as qemu-check sets it) schedules the failing coroutine with
    #: ``aio_co_schedule`` and yields; the request never reaches the storage
    #: below it.
    next_turn: bool = False


class FaultRule:
    """Common matching: operations, byte range and active time window."""

    #: Whether a rule of ``write`` also sees write-zeroes.  A device-level
    #: fault (dm-flakey, dm-dust, dm-delay) does: below the image format a
    #: write-zeroes is written.  blkdebug tells them apart (ErrorRule).
    zeroes_are_writes = True

    def __init__(self, spec, image_size: int):
        ops = frozenset(spec.operation)
        if self.zeroes_are_writes and "write" in ops:
            ops |= {"write-zeroes"}
        self.ops = ops
        self.start_off = spec.offset
        self.end_off = spec.offset + (spec.length if spec.length is not None
                                      else image_size - spec.offset)
        self.t_start = spec.start
        self.t_end = spec.end
        self.errno = ERRNO[spec.errno]
        self.fired = 0
        # A flush has no range: like blkdebug, only a rule that is not limited
        # to a range (here: one covering the whole image) matches it.
        self.whole_image = self.start_off == 0 and self.end_off >= image_size

    def matches(self, now: int, op: str, start: int, end: int) -> bool:
        if op not in self.ops:
            return False
        if now < self.t_start or (self.t_end is not None and now >= self.t_end):
            return False
        if op == "flush":
            return self.whole_image
        return start < self.end_off and end > self.start_off

    def apply(self, now: int, op: str, start: int, end: int, verdict: Verdict) -> None:
        raise NotImplementedError

    def quiet_for(self, ops: frozenset, lo: int, hi: int, t0: int, t1) -> bool:
        """Whether no request with an operation in ``ops``, inside ``[lo,
        hi)`` and submitted in ``[t0, t1)``, can match: asking this rule
        about it would change nothing (no verdict, no count, no random
        draw), so a quiet stretch or a copy burst may leave it out."""
        return (not (self.ops & ops) or t1 <= self.t_start
                or (self.t_end is not None and t0 >= self.t_end)
                or hi <= self.start_off or lo >= self.end_off)


class ErrorRule(FaultRule):
    # blkdebug's iotypes: "write" and "write-zeroes" are two (blkdebug.c:
    # blkdebug_co_pwritev and blkdebug_co_pwrite_zeroes check their own)
    zeroes_are_writes = False

    def __init__(self, spec, image_size: int, rng: np.random.Generator):
        super().__init__(spec, image_size)
        self.count = spec.count
        self.skip = spec.skip
        self.probability = spec.probability
        self.rng = rng
        self.seen = 0

    def apply(self, now, op, start, end, verdict):
        if verdict.errno or not self.matches(now, op, start, end):
            return
        if self.count is not None and self.fired >= self.count:
            return
        self.seen += 1
        if self.seen <= self.skip:
            return
        if self.probability < 1.0 and self.rng.random() >= self.probability:
            return
        self.fired += 1
        verdict.errno = self.errno
        verdict.next_turn = True

    def quiet_for(self, ops, lo, hi, t0, t1) -> bool:
        # once its count is spent, a rule returns before counting anything
        return super().quiet_for(ops, lo, hi, t0, t1) or (
            self.count is not None and self.fired >= self.count)


class FlakeyRule(FaultRule):
    """Up for ``up``, then down for ``down``, repeating from the window start."""

    def __init__(self, spec, image_size: int):
        super().__init__(spec, image_size)
        self.up = spec.up
        self.down = spec.down
        self.drop_writes = spec.drop_writes

    def is_down(self, now: int) -> bool:
        return (now - self.t_start) % (self.up + self.down) >= self.up

    def apply(self, now, op, start, end, verdict):
        if verdict.errno or not self.matches(now, op, start, end) or not self.is_down(now):
            return
        self.fired += 1
        if self.drop_writes:
            if op == "write":
                verdict.drop = True
            return
        verdict.errno = self.errno

    def quiet_for(self, ops, lo, hi, t0, t1) -> bool:
        if super().quiet_for(ops, lo, hi, t0, t1):
            return True
        # all of [t0, t1) inside one up window: nothing fails, nothing counts
        t = max(t0, self.t_start)
        return (t - self.t_start) % (self.up + self.down) + (t1 - t) <= self.up


class DustRule(FaultRule):
    """Bad blocks: reads overlapping one fail; a write heals the blocks it covers."""

    def __init__(self, spec, image_size: int):
        super().__init__(spec, image_size)
        self.block_size = spec.block_size
        self.bad = sorted(set(spec.blocks))

    def apply(self, now, op, start, end, verdict):
        if verdict.errno or not self.matches(now, op, start, end) or op == "flush":
            return
        first = start // self.block_size
        last = (end - 1) // self.block_size
        i = bisect_left(self.bad, first)
        if i == len(self.bad) or self.bad[i] > last:
            return
        if op == "write":
            j = i
            while j < len(self.bad) and self.bad[j] <= last:
                j += 1
            del self.bad[i:j]     # dm-dust: writing a bad block clears it
            return
        self.fired += 1
        verdict.errno = self.errno

    def quiet_for(self, ops, lo, hi, t0, t1) -> bool:
        # no bad block left: no read fails, no write heals anything
        return super().quiet_for(ops, lo, hi, t0, t1) or not self.bad


class DelayRule(FaultRule):
    def __init__(self, spec, image_size: int):
        super().__init__(spec, image_size)
        self.delay = spec.delay

    def apply(self, now, op, start, end, verdict):
        if self.matches(now, op, start, end):
            self.fired += 1
            verdict.delay += self.delay


def make_rule(spec, image_size: int, rng: np.random.Generator) -> FaultRule:
    kind = spec.type
    if kind == "error":
        return ErrorRule(spec, image_size, rng)
    if kind == "flakey":
        return FlakeyRule(spec, image_size)
    if kind == "dust":
        return DustRule(spec, image_size)
    if kind == "delay":
        return DelayRule(spec, image_size)
    raise ValueError(f"unknown fault type {kind!r}")
