"""Management actions: what a management layer (libvirt, oVirt) does, when.

A scenario's ``[[actions]]`` run a QMP-like command either at a simulated
time (``at``) or in reaction to an event (``on``, optionally filtered by
equality on the event's data with ``match``), after ``delay``, once or every
time (``repeat``).  Reactions are scheduled as their own SimPy processes, so
even a zero delay runs after the event that triggered it has been recorded.
"""

from __future__ import annotations


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
                log.subscribe(spec.on, self._reaction(index, spec))

    def _reaction(self, index: int, spec):
        match = dict(spec.match)

        def react(event):
            if self.fired[index] and not spec.repeat:
                return
            data = event["data"]
            for key, value in match.items():
                if data.get(key) != value:
                    return
            self.fired[index] += 1
            self.sim.env.process(self._run_at(index, spec, self.sim.env.now + spec.delay))
        return react

    def _run_at(self, index: int, spec, when: int):
        env = self.sim.env
        if when > env.now:
            yield env.timeout(when - env.now)
        if spec.at is not None:
            self.fired[index] += 1
        self.sim.monitor.execute(spec.command, dict(spec.arguments),
                                 source=f"actions.{index}")
