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
- before the process waits for anything else (a sleep, a pause),
  :meth:`detach` lets the agenda run itself: one event in SimPy's queue,
  under the key of the first entry, processes the entries that come before
  SimPy's next event when it fires, then stands in for the next entry, and
  so on.  Each entry is processed exactly where SimPy would have processed
  its own event; finishing operations wake nobody, since the process is not
  waiting for them.  :meth:`attach` hands the entries back to the process
  when it runs again (a stand-in already queued then does nothing).

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
    __slots__ = ("env", "_entries", "_failed", "attached", "_markers", "runner",
                 "kernel")

    def __init__(self, env):
        self.env = env
        # (time, id, callback, argument); callback None is a wake mark
        self._entries: list = []
        self._failed = False
        #: whether the owner runs the entries (else they run themselves)
        self.attached = True
        # (time, id) -> an event queued in SimPy under that key, not yet
        # processed (see _marker)
        self._markers: dict = {}
        #: the owner's faster way to run its entries while detached, if any:
        #: called as ``runner()``, it runs exactly the entries that come
        #: before SimPy's next event and returns True, or returns False
        #: having done nothing
        self.runner = None
        #: the owner's compiled loop (blocksim.engine.burst_kernel.Kernel), if any:
        #: while it is ``active`` it holds the entries, as arrays
        self.kernel = None

    def __len__(self) -> int:
        kernel = self.kernel
        if kernel is not None and kernel.active:
            return len(kernel)
        return len(self._entries)

    def _objects(self) -> None:
        """The entries as tuples again, if the kernel holds them."""
        kernel = self.kernel
        if kernel is not None and kernel.active:
            kernel.materialize()

    @property
    def heap(self) -> list:
        """The entries themselves, ``(time, id, callback, argument)`` in heap
        order, for the owner's runner (:mod:`blocksim.engine.burst`), which
        processes them in place exactly as :meth:`run` would."""
        self._objects()
        return self._entries

    @property
    def failed(self) -> bool:
        """Whether a callback raised (:meth:`raise_now`): nothing runs any more."""
        return self._failed

    def schedule(self, delay: int, callback, argument) -> None:
        """Call ``callback(argument)`` in ``delay`` ns, in SimPy's order."""
        self._objects()
        env = self.env
        heappush(self._entries, (env._now + delay, next(env._eid), callback, argument))

    def mark_wake(self) -> None:
        """Where SimPy would now schedule the owner's wake-up: :meth:`run`
        returns True on reaching it."""
        self._objects()
        env = self.env
        heappush(self._entries, (env._now, next(env._eid), None, None))

    def run(self) -> bool:
        """Process entries while each is the next event of the simulation.

        Returns True at a wake mark (the clock is at its time), False when
        SimPy's queue holds the next event."""
        try:
            return self._run_due()
        except BaseException as error:
            self.raise_now(error)
            return False

    def _run_due(self) -> bool:
        """Process entries while each comes before SimPy's next event; True
        on reaching a wake mark."""
        self._objects()
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
            callback(argument)
        return False

    def raise_now(self, error: BaseException) -> None:
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
        return self._marker()

    def detach(self) -> None:
        """The owner is about to wait for something else: from now on the
        entries run themselves, each when SimPy would process it."""
        kernel = self.kernel
        if kernel is not None and kernel.active:
            marked = kernel.has_wake_mark()
        else:
            marked = any(callback is None for _t, _eid, callback, _arg in self._entries)
        if marked:
            raise RuntimeError("blocksim: a wake mark left on a detached agenda")
        self.attached = False
        if len(self) and not self._failed:
            self._marker()

    def attach(self) -> None:
        """The owner runs again and takes the entries back."""
        self.attached = True

    def _marker(self) -> Event:
        """The event queued in SimPy under the first entry's key (one per
        key: SimPy's heap cannot hold two equal keys)."""
        kernel = self.kernel
        key = kernel.first_key() if kernel is not None and kernel.active \
            else self._entries[0][:2]
        event = self._markers.get(key)
        if event is None:
            event = self._markers[key] = Event(self.env)
            event._ok = True
            event._value = None
            event.callbacks.append(lambda _event: self._fire(key))
            heappush(self.env._queue, (key[0], NORMAL, key[1], event))
        return event

    def _fire(self, key: tuple) -> None:
        """A marker is being processed by SimPy's step.  Attached, the owner
        (if it waits for this one) resumes by its own callback.  Detached,
        the entries that come before SimPy's next event run now, and a
        marker stands in for the next one.  An exception from a callback
        comes out of SimPy's step, as it would from the entry's own event."""
        del self._markers[key]
        if self.attached:
            return
        if self.runner is None or not self.runner():
            self._run_due()             # (no wake mark while detached)
        if len(self):                   # (a runner may replace the list)
            self._marker()
