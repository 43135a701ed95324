"""A served run: the simulation, advanced in steps as the client asks.

:class:`Session` holds one :class:`~blocksim.simulation.Simulation` and
starts it as :meth:`Simulation.run` does (scenario jobs with a start time,
guest workloads, actions, the sampler), but then lets simulated time advance
only through :meth:`advance` (to an instant, or until one of the named events
is emitted).  Commands run at the current simulated instant, between two
SimPy steps, as a scenario action would.

Stopping: ``advance(until=t)`` is SimPy's ``run(until=t)`` (an URGENT event
at ``t``, so the events due at ``t`` run after the next command).  Stopping
on an event uses the same kind of URGENT event, scheduled at the instant the
event is emitted, so the event's own process step completes first and no
step is cut in half; the listener only schedules, as the event log requires.

Determinism: the session is a pure function of the scenario, the seed and
the sequence of commands (``x-blocksim-advance`` included), so replaying a
recorded session (:func:`replay`) gives the same events, byte for byte.
"""

from __future__ import annotations

import math

from simpy.core import StopSimulation
from simpy.events import URGENT, Event

from ..record.eventlog import EventCapReached
from ..record.result import Result
from ..simulation import RunBounded, Simulation
from .protocol import QMPError


class Session:
    def __init__(self, scenario, seed: int | None = None, profile: str | None = None,
                 shortcuts: bool = True):
        self.scenario = scenario
        self.sim = Simulation(scenario, seed=seed, profile=profile, shortcuts=shortcuts)
        self.delivered = 0          # events handed to clients so far
        self._started = False
        self.quit = False
        self.faults_added = 0
        self.mode = "virtual"           # or "real-time" (the server sets it)
        self.start()

    @property
    def now(self) -> int:
        return self.sim.env.now

    @property
    def limit(self) -> int:
        """The session's end: the scenario's duration."""
        return self.scenario.duration

    def start(self) -> None:
        """What :meth:`Simulation.run` does before running the clock."""
        sim = self.sim
        for job_id, spec in self.scenario.jobs.items():
            if spec.start is not None:
                sim.env.process(sim._job_starter(job_id, spec.start))
        for workload in sim.workloads.values():
            workload.start()
        sim.actions.install()
        sim.sampler.start()
        self._started = True

    # -- time -------------------------------------------------------------------------
    def advance(self, until: int, events: tuple[str, ...] = ()) -> dict | None:
        """Run the clock to ``until`` (capped at the session's end), or until
        one of ``events`` is emitted; returns that event, if one stopped it."""
        sim, env = self.sim, self.sim.env
        if sim.truncated:
            raise QMPError(f"the run ended early ({sim.stopped_by}); "
                           "simulated time no longer advances")
        until = min(until, self.limit)
        if until <= env.now and not events:
            return None
        seen: list[dict] = []
        stop = Event(env)
        active = [True]

        def end(_event) -> None:
            if active[0]:
                raise StopSimulation(None)

        def listener(event) -> None:
            if not seen and active[0]:
                seen.append(event)
                now_event = Event(env)
                now_event._ok, now_event._value = True, None
                now_event.callbacks.append(end)
                env.schedule(now_event, URGENT, 0)

        for name in events:
            sim.log.subscribe(name, listener)
        stop._ok, stop._value = True, None
        stop.callbacks.append(end)
        env.schedule(stop, URGENT, max(0, until - env.now))
        try:
            env.run()
        except EventCapReached as stop:     # as Simulation.run: max-events, or a bound
            sim.truncated = True
            sim.stopped_by = stop.reason if isinstance(stop, RunBounded) else "max-events"
        finally:
            active[0] = False
            for name in events:
                sim.log._listeners[name].remove(listener)
        return seen[0] if seen else None

    def shutdown(self) -> None:
        """After ``quit``'s return: QEMU's SHUTDOWN (``qmp_quit``:
        ``qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_QMP_QUIT)``)."""
        self.sim.log.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})

    def new_events(self) -> list[dict]:
        events = self.sim.log.events[self.delivered:]
        self.delivered += len(events)
        return events

    # -- the record -------------------------------------------------------------------
    def record(self, command: str, arguments: dict, value=None, error: QMPError | None = None,
               timestamp=None) -> None:
        """Add a command the Monitor does not run itself to the run's record,
        in the Monitor's shape."""
        from ..record.eventlog import qmp_timestamp
        entry = {"timestamp": timestamp or qmp_timestamp(self.now), "execute": command,
                 "arguments": dict(arguments)}
        if error is not None:
            entry["error"] = {"class": error.error_class, "desc": error.desc}
        else:
            entry["return"] = {} if value is None else value
        self.sim.monitor.commands.append(entry)

    def result(self) -> Result:
        """The run's record so far (what :meth:`Simulation.run` builds at its end)."""
        sim = self.sim
        bounding, sim._bounding = sim._bounding, False    # (as Simulation.run's last sample)
        try:
            result = sim.result()
        finally:
            sim._bounding = bounding
        result.summary["served"] = {"ended_at": sim.env.now / 1e9,
                                    "commands": len(sim.monitor.commands)}
        return result

    def add_job_columns(self, job_id: str) -> None:
        """Series columns for a job the client created (earlier samples:
        no job yet)."""
        columns = self.sim.sampler.columns
        n = len(columns["time"])
        for key, blank in (("status", "none"), ("offset", 0), ("len", 0),
                           ("io-status", "ok")):
            columns.setdefault(f"job.{job_id}.{key}", [blank] * n)


def replay(scenario, commands, seed: int | None = None, shortcuts: bool = True) -> Session:
    """Run a recorded session's commands again, in order, each at its
    recorded simulated time (later than now: the clock advances to it
    first); returns the session, whose events are the recorded run's."""
    from .commands import dispatch
    session = Session(scenario, seed=seed, shortcuts=shortcuts)
    for entry in commands:
        if entry.get("source"):
            continue                    # the scenario's own actions and jobs
        ts = entry.get("timestamp") or {}
        at = ts.get("seconds", 0) * 1_000_000_000 + ts.get("microseconds", 0) * 1000
        if at > session.now and not math.isclose(at, session.now):
            session.advance(at)
        try:
            dispatch(session, entry["execute"], entry.get("arguments") or {})
        except QMPError:
            pass
        if session.quit:
            session.shutdown()
            break
    return session
