"""The event timeline of a run: QMP-shaped events in simulated time.

Each event is recorded exactly as QMP would print it::

    {"event": "BLOCK_JOB_ERROR",
     "data": {"device": "job0", "operation": "write", "action": "stop"},
     "timestamp": {"seconds": 12, "microseconds": 500000}}

Simulated time is an integer number of nanoseconds since the run started, so
timestamps are exact and a run's log is a pure function of its inputs.  Events
are kept in the order they were emitted, which SimPy makes deterministic.

Listeners (management actions reacting to events) are called synchronously
after an event is recorded; they must only *schedule* work, never act inline.
"""

from __future__ import annotations

from typing import Any, Callable

Listener = Callable[[dict[str, Any]], None]


class EventCapReached(Exception):
    """Raised inside the simulation when a run emits more than max-events."""


def qmp_timestamp(now_ns: int) -> dict[str, int]:
    seconds, rest = divmod(int(now_ns), 1_000_000_000)
    return {"seconds": seconds, "microseconds": rest // 1000}


class EventLog:
    def __init__(self, env, max_events: int = 1_000_000):
        self.env = env
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self._listeners: dict[str, list[Listener]] = {}

    def emit(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        if len(self.events) >= self.max_events:
            raise EventCapReached(name)
        event = {"event": name, "data": dict(data or {}),
                 "timestamp": qmp_timestamp(self.env.now)}
        self.events.append(event)
        for listener in self._listeners.get(name, ()):
            listener(event)
        return event

    def subscribe(self, name: str, listener: Listener) -> None:
        self._listeners.setdefault(name, []).append(listener)
