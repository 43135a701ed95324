"""Management controllers: policies that watch a run and act on it.

A controller is the part of a management layer (vdsm, libvirt's user) that
decides by itself, as opposed to a scenario's scripted ``[[actions]]``.
One scenario section configures each; :func:`make_controllers` builds those
the scenario has.  A controller

- reacts to events (:meth:`Controller.on`: the listener only schedules work,
  as the event log requires) and runs periodic work (:meth:`Controller.every`);
- acts only through the management monitor (:meth:`Controller.execute`), so
  each of its decisions is a command in ``commands.jsonl`` with ``source``
  its section, and on the timeline's command lane;
- reports what it did in :meth:`Controller.stats` (the run's summary).

The thin-provisioning controller (:mod:`.thin_provisioning`) is the first;
another policy (say, a fixed-size preallocation that extends every volume
by a set amount on a timer) subclasses :class:`Controller`, registers with
:func:`register` under its section's attribute name, and sits beside it.
"""

from __future__ import annotations

from typing import Any, Callable

#: scenario attribute (the section) -> Controller class
CONTROLLERS: dict[str, type["Controller"]] = {}


def register(section: str):
    def wrap(cls):
        cls.section = section
        CONTROLLERS[section] = cls
        return cls
    return wrap


class Controller:
    section = ""

    def __init__(self, sim, spec):
        self.sim = sim
        self.spec = spec

    @property
    def source(self) -> str:
        """How its commands are marked in commands.jsonl."""
        return self.section.replace("_", "-")

    def install(self) -> None:
        """Subscribe and start (called once, when the run starts)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    # helpers -------------------------------------------------------------------------
    def execute(self, command: str, arguments: dict | None = None) -> Any:
        return self.sim.monitor.execute(command, arguments or {}, source=self.source)

    def on(self, event: str, handler: Callable[[dict], None]) -> None:
        """Call ``handler(data)`` in a process of its own after each
        ``event`` (never inline: the event log's rule)."""
        env = self.sim.env

        def run(data):
            handler(data)
            return
            yield                       # (a generator: a SimPy process)

        self.sim.log.subscribe(event, lambda e: env.process(run(e["data"])))

    def every(self, interval: int, tick: Callable[[], None], first: int = 0) -> None:
        env = self.sim.env

        def loop():
            if first:
                yield env.timeout(first)
            while True:
                tick()
                yield env.timeout(interval)

        env.process(loop())


def make_controllers(sim) -> list[Controller]:
    """The controllers the scenario configures, in registration order."""
    return [cls(sim, getattr(sim.scenario, section))
            for section, cls in CONTROLLERS.items()
            if getattr(sim.scenario, section, None) is not None]
