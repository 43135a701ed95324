"""Management actions: what a management layer (libvirt, oVirt) does, when.

A scenario's ``[[actions]]`` run a QMP-like command either at a simulated
time (``at``) or in reaction to an event (``on``, optionally filtered by
equality on the event's data with ``match``), after ``delay``.  Which events
an ``on`` action reacts to is its :class:`Trigger`'s business: the first
matching one, the ``nth``, every one (``repeat``), only once armed by an
``after`` event.  Reactions are scheduled as their own SimPy processes, so
even a zero delay runs after the event that triggered it has been recorded.
qemu-check (:mod:`blocksim.qemu.check`) reacts to real QEMU's events with
the same :class:`Trigger`.
"""

from __future__ import annotations

from typing import Any, Mapping


class Trigger:
    """When an ``on`` action reacts: :meth:`offer` it every event, in order.

    - Only events named ``on`` whose data hold every ``match`` item count.
    - It reacts to the ``nth`` counted event (the first without ``nth``),
      then the count restarts; without ``repeat`` it never reacts again.
    - With ``after``, it counts only while armed: an ``after`` event whose
      data hold every ``after-match`` item arms it (while it is not armed),
      and each reaction disarms it.  The arming event is never counted, even
      when ``after`` and ``on`` are the same event: ``on = after = X``
      reacts to the second X (and with ``repeat`` to the fourth, ...).

    So "resume after the first stop error, force-cancel after the second" is
    two actions on BLOCK_JOB_ERROR: ``nth = 1`` resumes, ``nth = 2`` cancels.
    """

    __slots__ = ("on", "match", "nth", "repeat", "after", "after_match", "armed", "seen",
                 "fired")

    def __init__(self, on: str, match: Mapping[str, Any] | None = None, *, nth: int | None = None,
                 repeat: bool = False, after: str | None = None,
                 after_match: Mapping[str, Any] | None = None):
        self.on = on
        self.match = dict(match or {})
        self.nth = nth or 1
        self.repeat = repeat
        self.after = after
        self.after_match = dict(after_match or {})
        self.armed = after is None
        self.seen = 0                   # matching events counted since armed / last reaction
        self.fired = 0

    @classmethod
    def of(cls, spec) -> "Trigger":
        """The trigger of a scenario action (or of qemu-check's ActionPlan)."""
        return cls(spec.on, spec.match, nth=spec.nth, repeat=spec.repeat, after=spec.after,
                   after_match=spec.after_match)

    @property
    def events(self) -> tuple[str, ...]:
        """The event names it needs to be offered."""
        return (self.on,) if self.after in (None, self.on) else (self.on, self.after)

    def offer(self, name: str, data: Mapping[str, Any]) -> bool:
        """One event; True when the action reacts to it."""
        if self.fired and not self.repeat:
            return False
        if not self.armed:
            if name == self.after and _holds(data, self.after_match):
                self.armed = True
                self.seen = 0
            return False
        if name != self.on or not _holds(data, self.match):
            return False
        self.seen += 1
        if self.seen < self.nth:
            return False
        self.seen = 0
        self.fired += 1
        if self.after is not None:
            self.armed = False
        return True


def _holds(data: Mapping[str, Any], items: Mapping[str, Any]) -> bool:
    return all(data.get(key) == value for key, value in items.items())


class ActionScheduler:
    def __init__(self, sim):
        self.sim = sim
        self.fired = [0] * len(sim.scenario.actions)

    def install(self) -> None:
        env, log = self.sim.env, self.sim.log
        for index, spec in enumerate(self.sim.scenario.actions):
            if spec.at is not None:
                env.process(self._run_at(index, spec, spec.at + spec.delay))
            else:
                react = self._reaction(index, spec)
                for name in react.trigger.events:
                    log.subscribe(name, react)

    def _reaction(self, index: int, spec):
        trigger = Trigger.of(spec)

        def react(event):
            if trigger.offer(event["event"], event["data"]):
                self.fired[index] += 1
                self.sim.env.process(self._run_at(index, spec, self.sim.env.now + spec.delay))
        react.trigger = trigger
        return react

    def _run_at(self, index: int, spec, when: int):
        env = self.sim.env
        while True:
            if when > env.now:
                yield env.timeout(when - env.now)
            if spec.at is not None:
                self.fired[index] += 1
            self.sim.monitor.execute(spec.command, dict(spec.arguments),
                                     source=f"actions.{index}")
            # a poll (``every``) runs again until the end of the run
            every = getattr(spec, "every", None)
            if not every:
                return
            when += every
