"""The simulation clock: SimPy's environment, plus one exact shortcut.

A discrete-event simulation spends most of its time on the event queue: a
process that waits ``d`` nanoseconds creates a timeout, SimPy pushes it on
its heap, pops it when it is due, and resumes the process.  Often that
timeout is the very next event of the whole simulation (a guest issuing
requests at its rate while a mirror sleeps out its rate-limit slice): then
nothing at all can happen between now and its expiry, and the round trip
through the queue changes nothing but the clock.

:meth:`Clock.skip_to` takes that shortcut: if the queue holds no event at or
before ``t``, it moves the clock to ``t`` and returns True, and the caller
carries on as if its timeout had just fired.  The result is *exactly* the
run SimPy would have produced:

- no other event is processed in between, by construction (strictly before
  the next queued event; an event due at ``t`` itself was scheduled before
  the timeout would have been, so it would run first: no skip then);
- the events the caller schedules afterwards get later sequence numbers than
  everything already queued, as they would have after a real timeout.

The caller must be where it would otherwise yield its timeout, with nothing
else left to run at the current instant: resumed by an event whose only
callback was its own (a timeout it created, or its own start), never in the
middle of handling an event that other processes also wait for.  Callers
say why that holds where they call it.

``Clock(shortcuts=False)`` turns the shortcut off; the test suite runs
scenarios both ways and requires byte-identical results.

This relies on SimPy's ``Environment._now`` (SimPy 4; the version is pinned
below 5 in ``pyproject.toml``).
"""

from __future__ import annotations

from heapq import heappush

import simpy
from simpy.core import Infinity
from simpy.events import NORMAL, Timeout

#: A time later than any run reaches, in integer nanoseconds: what compiled
#: code takes for "no next event" (SimPy's ``peek`` then answers infinity).
NEVER = 1 << 62


class Clock(simpy.Environment):
    def __init__(self, initial_time: int = 0, shortcuts: bool = True):
        super().__init__(initial_time)
        self.shortcuts = shortcuts
        #: how many timeouts the shortcut saved (a figure for benchmarks)
        self.skipped = 0
        #: the steps (:class:`blocksim.engine.steps.Steps`) whose loop is
        #: running, if any: their next entry has no marker in the queue then
        self.running_steps = None

    def peek(self) -> float:
        """When the next event is due: SimPy's queue, and, while a step runs
        (a process resumed inside ``Steps._fire``), the steps' next entry,
        which stands for an event SimPy would have queued but has no marker
        there until the loop ends.  Without it a guest woken by a task's
        ``done`` skipped its wait past a task's step due earlier (found by
        ``tests/jobs/test_backup_sleeps.py``: a failed write of the pass ran
        after a later copy-before-write, the limiter counting them in the
        other order)."""
        queue = self._queue
        t = queue[0][0] if queue else Infinity
        steps = self.running_steps
        if steps is not None and steps.heap:
            first = steps.heap[0][0]
            if first < t:
                return first
        return t

    def skip_to(self, t: int, waits: int = 1) -> bool:
        """Move the clock to ``t`` if no event is queued at or before ``t``.

        ``waits`` is how many timeouts that saves, for :attr:`skipped` (more
        than one for a stretch of requests done in bulk, see
        :mod:`blocksim.engine.stretch`)."""
        if self.shortcuts and t < self.peek():
            self._now = t
            self.skipped += waits
            return True
        return False

    def timeout_at(self, t: int, eid: int, delay: int) -> Timeout:
        """SimPy's timeout of ``delay``, due at ``t``, queued under the id
        ``eid`` drawn when it was created: compiled code that ran the wait itself up to
        SimPy's next event draws the id where SimPy would have
        (:mod:`blocksim.engine.burst_kernel`, a ready mirror's poll) and
        leaves the rest of the wait to SimPy under the same key."""
        timer = Timeout.__new__(Timeout)
        timer.env = self
        timer.callbacks = []
        timer._value = None
        timer._delay = delay
        timer._ok = True
        heappush(self._queue, (t, NORMAL, eid, timer))
        return timer
