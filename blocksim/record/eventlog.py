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

:func:`normalise_events` gives the form in which two logs are compared (by
``blocksim compare``, sweeps and the baseline): no timestamps, and a retry
storm of identical events or cycles counting once.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

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


# -- comparing event sequences --------------------------------------------------------
#: Longest block of events a retry loop repeats that normalisation collapses.
MAX_PERIOD = 8


def _token_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, sort_keys=True)


def event_token(event: Mapping[str, Any] | str) -> str:
    """``NAME key=value ...``: an event without its timestamp (data keys sorted)."""
    if isinstance(event, str):
        return event
    data = event.get("data") or {}
    parts = [str(event.get("event"))]
    parts += [f"{k}={_token_value(data[k])}" for k in sorted(data)]
    return " ".join(parts)


def normalise_events(events: Iterable[Mapping[str, Any] | str], max_period: int = MAX_PERIOD) -> list[str]:
    """The event sequence with retry storms collapsed.

    Each event becomes a token (name and data, no timestamp).  A run of
    consecutive identical events counts as one, and so does a run of
    consecutive identical blocks of up to ``max_period`` events (an
    error / pause / resume cycle repeated by a retry loop): whenever the
    sequence ends with a block repeated twice, the second copy is dropped.
    Every kind of event is kept, JOB_STATUS_CHANGE included."""
    out: list[str] = []
    for event in events:
        out.append(event_token(event))
        collapsed = True
        while collapsed:
            collapsed = False
            for p in range(1, min(max_period, len(out) // 2) + 1):
                if out[-p:] == out[-2 * p:-p]:
                    del out[-p:]
                    collapsed = True
                    break
    return out
