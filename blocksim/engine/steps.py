"""Steps: events kept out of SimPy's queue under the keys SimPy would give them.

A backup's block-copy (``blocksim.jobs.backup``) runs each task as a SimPy
process: its start (an ``Initialize`` event, urgent), its read's timeout, its
write's timeout, its ``done`` event and its end, and the background call
waits for the first ``done`` of its pool of 64 through one more event.  A
1 TiB backup has a million such tasks, and each trip through SimPy (an event
object, a heap push and pop, the callbacks, a generator resumed) costs more
than the task's own work.

:class:`Steps` keeps such events in a heap of its own, each under **the key
SimPy would have given it**: ``(time, priority, id)``, the id drawn from
SimPy's own counter at the moment the event would have been scheduled.  One
event stands in SimPy's queue for the first of them (a *marker*, under the
same key), so SimPy processes it exactly when that step is due; its callback
runs every step that comes before SimPy's next event, in key order, then a
marker stands in for the next one.  A step is either a plain callback (what
the process would have run when resumed by that event: the job hands its
task's steps as callbacks, :meth:`at`) or an event's own callbacks, run as
SimPy's ``step`` runs them (:meth:`succeed`: a ``done`` event others wait
for, whose waiters are resumed at the same moment).  Events that no one
waits for (a task process's end) need no step: processing them would change
nothing, and leaving them out only shifts the ids drawn after them, never
the order of two events.  So every event that matters is processed at the
same point of the same order as without the steps, and a run is the same
(``Simulation(shortcuts=False)`` keeps the processes; the tests compare).

An exception raised by a plain step is what the process's generator would
have raised: SimPy would have failed the process, scheduling it at once and
raising the error when it is processed; :meth:`at`'s steps do the same.

This relies on SimPy 4's ``Environment._queue``, ``_eid`` and ``_now`` and
on ``Event._ok``/``_value``/``callbacks`` (the version is pinned below 5).
"""

from __future__ import annotations

from heapq import heappop, heappush

from simpy.events import NORMAL, PENDING, URGENT, Event

#: SimPy's event (``env.event()`` without the environment's lookup)
Event = Event

#: an event's value until it is triggered (``event._value is PENDING``: not
#: ``event.triggered``, without the property's call)
PENDING = PENDING


class Steps:
    __slots__ = ("env", "heap", "_markers", "_running", "loop_for")

    def __init__(self, env):
        self.env = env
        # (time, priority, id, callback, argument), flat: compared with
        # SimPy's (time, priority, id, event) as they stand, the ids (one
        # counter, never equal) decide before the rest; callback None:
        # argument is an event whose callbacks run (succeed)
        self.heap: list = []
        # (time, priority, id) -> the marker queued in SimPy under that key
        self._markers: dict = {}
        self._running = False
        #: callback -> a loop that runs that step and those after it
        #: (``loop(entry)``, true if it ran any: blocksim.engine.copyloop)
        self.loop_for: dict = {}

    def __len__(self) -> int:
        return len(self.heap)

    def at(self, delay: int, callback, argument, urgent: bool = False) -> None:
        """Call ``callback(argument)`` in ``delay`` ns, where SimPy would
        process an event scheduled now (``urgent``: a process's start)."""
        env = self.env
        entry = (env._now + delay, URGENT if urgent else NORMAL, next(env._eid),
                 callback, argument)
        heap = self.heap
        heappush(heap, entry)
        if not self._running and heap[0] is entry:
            self._marker()

    def succeed(self, event: Event, last: bool = False) -> None:
        """``event.succeed()``: the event is triggered now and its callbacks
        run where SimPy would process it.

        ``last``: the caller is a step that does nothing after this call
        (nor does any step or callback that called it).  Then, if nothing is
        due at this instant (no step, no SimPy event: anything there came
        before the event, whose id is the last drawn), the event is the very
        next thing the loop would run, and its callbacks run at once,
        without the trip through the heap."""
        event._ok = True
        event._value = None
        if last and self._running:
            env = self.env
            if self.nothing_due():
                next(env._eid)                  # (its id, drawn as at() would)
                callbacks, event.callbacks = event.callbacks, None
                for cb in callbacks:
                    cb(event)
                return
        self.at(0, None, event)

    def nothing_due(self) -> bool:
        """Whether nothing is due at this instant, neither a step nor a
        SimPy event: an event scheduled now would be the very next one
        processed (anything there came before it)."""
        now = self.env._now
        heap, queue = self.heap, self.env._queue
        return (not heap or heap[0][0] > now) and (not queue or queue[0][0] > now)

    def _marker(self) -> None:
        """The event queued in SimPy under the first step's key (one per
        key: SimPy's heap cannot hold two equal keys)."""
        key = self.heap[0][:3]
        if key in self._markers:
            return
        marker = self._markers[key] = Event(self.env)
        marker._ok = True
        marker._value = None
        marker.callbacks.append(lambda _event: self._fire(key))
        heappush(self.env._queue, (key[0], key[1], key[2], marker))

    def _fire(self, key: tuple) -> None:
        """A marker is processed by SimPy's step: run the steps that come
        before SimPy's next event, then queue a marker for the next one."""
        del self._markers[key]
        env = self.env
        heap = self.heap
        queue = env._queue
        markers = self._markers
        loop_for = self.loop_for
        self._running = True
        # (the clock's peek sees the next entry while they run: no marker)
        env.running_steps = self
        try:
            while heap:
                entry = heap[0]
                if queue:
                    head = queue[0]
                    # (the same id: the marker queued for this very step)
                    if entry[2] != head[2] and entry > head:
                        key = head[:3]
                        if markers.get(key) is head[3]:
                            # a marker of a step already run: it would
                            # only run the steps, which this loop does
                            heappop(queue)
                            del markers[key]
                            continue
                        break
                callback, argument = entry[3], entry[4]
                if loop_for:
                    loop = loop_for.get(callback)
                    if loop is not None and loop(entry):
                        continue
                heappop(heap)
                env._now = entry[0]
                if callback is None:
                    # an event's callbacks, as Environment.step runs them
                    callbacks, argument.callbacks = argument.callbacks, None
                    for cb in callbacks:
                        cb(argument)
                    continue
                try:
                    callback(argument)
                except BaseException as error:      # the process fails
                    failed = Event(env)
                    failed._ok = False
                    failed._value = error
                    env.schedule(failed)
        finally:
            self._running = False
            env.running_steps = None
            if heap:
                self._marker()
