"""An agenda: a share of SimPy's event queue that one process keeps to itself.

A mirror in a long run has thousands of copy operations in flight per
second; each is a read, then a write, and each completion wakes the copy
loop.  As SimPy events that is three trips through the queue per operation
(a timeout object, a heap push and pop, callbacks, a generator resume),
although most of the time nothing else is due in between.

An :class:`Agenda` holds such timeouts outside SimPy's queue, with **the
exact key SimPy would have given them**: ``(time, NORMAL, id)``, the id
drawn from SimPy's own counter at the moment the timeout would have been
created.  SimPy orders its queue by those keys, so the merged order of the
agenda and the queue is exactly the order SimPy alone would have followed,
whatever happens in between:

- :meth:`run` (called by the owning process, from where it would wait)
  processes the agenda's entries as long as each comes before the head of
  SimPy's queue, moving the clock to each; it stops at a *wake mark*
  (:meth:`mark_wake`, what succeeding the process's wake-up event would have
  scheduled), where the process simply carries on;
- when the head of SimPy's queue comes first, the process waits for
  :meth:`turn`: an event pushed into SimPy's queue under the key of the
  agenda's first entry, so it fires exactly when that entry is due.  Only
  the owner adds entries, and it is suspended meanwhile, so the first entry
  cannot change before its turn;
- before the process waits for anything else (a sleep, a flush, a pause),
  :meth:`release` hands every entry to SimPy as an event under its own key,
  to be processed as if it had been there all along.

Events scheduled by the entries' callbacks (an error event, an action it
triggers) go to SimPy's queue with fresh ids, as they would have, and take
their place in the merged order.  An exception raised by a callback (a run
reaching its event cap) ends the run at once, as it would from SimPy's own
``step``.  So a run is the same with or without an
agenda (``Simulation(shortcuts=False)`` turns it off; the tests compare).

This relies on SimPy 4's ``Environment._queue``, ``_eid`` and ``_now`` and
on ``Event._ok``/``_value`` (the version is pinned below 5).
"""

from __future__ import annotations

from heapq import heappop, heappush

from simpy.events import NORMAL, Event


class Agenda:
    __slots__ = ("env", "_entries", "_failed")

    def __init__(self, env):
        self.env = env
        # (time, id, callback, argument); callback None is a wake mark
        self._entries: list = []
        self._failed = False

    def __len__(self) -> int:
        return len(self._entries)

    def schedule(self, delay: int, callback, argument) -> None:
        """Call ``callback(argument)`` in ``delay`` ns, in SimPy's order."""
        env = self.env
        heappush(self._entries, (env._now + delay, next(env._eid), callback, argument))

    def mark_wake(self) -> None:
        """Where SimPy would now schedule the owner's wake-up: :meth:`run`
        returns True on reaching it."""
        env = self.env
        heappush(self._entries, (env._now, next(env._eid), None, None))

    def run(self) -> bool:
        """Process entries while each is the next event of the simulation.

        Returns True at a wake mark (the clock is at its time), False when
        SimPy's queue holds the next event."""
        entries = self._entries
        env = self.env
        queue = env._queue
        while entries:
            t, eid, callback, argument = entries[0]
            if queue:
                head = queue[0]
                if t > head[0] or (t == head[0] and (head[1] < NORMAL or (
                        head[1] == NORMAL and eid > head[2]))):
                    return False
            heappop(entries)
            env._now = t
            if callback is None:
                return True
            try:
                callback(argument)
            except BaseException as error:
                self._raise_now(error)
                return False
        return False

    def _raise_now(self, error: BaseException) -> None:
        """A callback raised.  From a SimPy event it would have come out of
        ``env.step()`` at once (the event-cap stop of a run is one), but the
        owner's process would only fail later, after other events due now.
        So it goes to SimPy in an event ahead of everything else, raising
        it; the owner waits for ever (:meth:`turn`)."""
        def reraise(_event):
            raise error
        event = Event(self.env)
        event._ok = True
        event._value = None
        event.callbacks.append(reraise)
        heappush(self.env._queue, (self.env._now, -1, next(self.env._eid), event))
        self._failed = True

    def turn(self) -> Event:
        """An event SimPy processes exactly when the first entry is due
        (never, once a callback has raised)."""
        if self._failed:
            return Event(self.env)
        t, eid = self._entries[0][:2]
        event = Event(self.env)
        event._ok = True
        event._value = None
        heappush(self.env._queue, (t, NORMAL, eid, event))
        return event

    def release(self) -> None:
        """Hand every entry to SimPy, each as an event under its own key
        calling ``callback(argument)``."""
        entries, self._entries = self._entries, []
        queue = self.env._queue
        for t, eid, callback, argument in entries:
            if callback is None:
                raise RuntimeError("blocksim: a wake mark left on a released agenda")
            event = Event(self.env)
            event._ok = True
            event._value = argument
            event.callbacks.append(_Call(callback))
            heappush(queue, (t, NORMAL, eid, event))


class _Call:
    """An event callback calling ``callback(event.value)``."""

    __slots__ = ("callback",)

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, event) -> None:
        self.callback(event.value)
