"""The agenda: timeouts kept outside SimPy's queue, processed in SimPy's order.

An owner process runs "operations" (two chained timeouts, the second one
waking the owner) while other processes and bare callbacks do things at the
same instants, with both priorities.  Run once with every timeout in SimPy's
queue and once with the owner's on an agenda, the log of who did what when
must be identical, ties included.
"""

import numpy as np
import pytest
import simpy

from blocksim.engine.agenda import Agenda


def _run(seed: int, use_agenda: bool) -> list:
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    log = []
    agenda = Agenda(env) if use_agenda else None
    state = {"wait": None, "woken": False, "detached": 0}

    def after(delay, callback, arg, private):
        if private:
            agenda.schedule(delay, callback, arg)
        else:
            env.timeout(delay, arg).callbacks.append(lambda ev: callback(ev.value))

    live = set()        # operations in flight

    class Op:
        def __init__(self, n, private):
            self.n, self.private = n, private

        def start(self):
            after(int(rng.integers(0, 4)), self.half, "a", self.private)

        def half(self, arg):
            log.append((env.now, "op", self.n, arg))
            after(int(rng.integers(0, 4)), self.done, "b", self.private)

        def done(self, arg):
            log.append((env.now, "op", self.n, arg))
            live.discard(self)
            if self.private:
                # the owner, if it is running the agenda, is woken (once)
                if agenda.attached and not state["woken"]:
                    state["woken"] = True
                    agenda.mark_wake()
            else:
                ev = state["wait"]
                if ev is not None and not ev.triggered:
                    ev.succeed()

    def owner():
        n = 0
        while n < 60 or live:
            for _ in range(int(rng.integers(1, 4)) if n < 60 else 0):
                op = Op(n, use_agenda)
                live.add(op)
                op.start()
                n += 1
            if rng.random() < 0.2:
                # a sleep: meanwhile the operations run by themselves
                if agenda is not None:
                    state["detached"] += len(agenda) > 0
                    agenda.detach()
                yield env.timeout(int(rng.integers(0, 3)))
                if agenda is not None:
                    agenda.attach()
                log.append((env.now, "owner slept"))
            if live:
                if use_agenda:
                    state["woken"] = False
                    while not agenda.run():
                        yield agenda.turn()
                else:
                    ev = state["wait"] = env.event()
                    yield ev
                    state["wait"] = None
                log.append((env.now, "owner woke", len(live)))

    def other(name, gap):
        for _ in range(40):
            yield env.timeout(int(rng.integers(0, gap)))
            log.append((env.now, name))
            if rng.random() < 0.3:               # an URGENT event at this instant
                env.process(blip(name))
            if rng.random() < 0.3:               # a NORMAL event at this instant
                ev = env.event()
                ev.callbacks.append(lambda _e, name=name: log.append((env.now, name, "cb")))
                ev.succeed()

    def blip(name):
        log.append((env.now, name, "blip"))
        yield env.timeout(0)

    env.process(owner())
    env.process(other("x", 3))
    env.process(other("y", 5))
    env.run(until=400)
    return log, state["detached"]


@pytest.mark.parametrize("seed", range(30))
def test_an_agenda_keeps_simpys_order(seed):
    plain, _ = _run(seed, False)
    with_agenda, _ = _run(seed, True)
    assert plain == with_agenda
    assert sum(1 for e in plain if e[1] == "op") > 60


def test_the_cases_detach_the_agenda_and_tie_with_other_events():
    detached = sum(_run(seed, True)[1] for seed in range(30))
    assert detached > 20
    ties = 0
    for seed in range(30):
        log, _ = _run(seed, True)
        times_op = {e[0] for e in log if e[1] == "op"}
        ties += sum(1 for e in log if e[1] in ("x", "y") and e[0] in times_op)
    assert ties > 100


class Boom(Exception):
    pass


@pytest.mark.parametrize("agenda_mode", [None, "attached", "detached"])
def test_an_exception_in_a_callback_ends_the_run_before_anything_else(agenda_mode):
    # As from a SimPy event's callback, at once: not after the other events
    # due at the same instant (a run stopped by its event cap relies on it),
    # whether the owner runs the agenda or it runs itself.
    env = simpy.Environment()
    log = []
    agenda = Agenda(env)

    def explode(_arg):
        log.append("explode")
        raise Boom()

    def owner():
        yield env.timeout(1)
        if agenda_mode:
            agenda.schedule(4, explode, None)          # due at 5, queued first
        else:
            env.timeout(4).callbacks.append(lambda _e: explode(None))
        env.timeout(4).callbacks.append(lambda _e: log.append("later, same instant"))
        if agenda_mode == "attached":
            while not agenda.run():
                yield agenda.turn()
        elif agenda_mode == "detached":
            agenda.detach()
            yield env.timeout(10)
        else:
            yield env.event()

    env.process(owner())
    with pytest.raises(Boom):
        env.run(until=10)
    assert log == ["explode"]
    assert env.now == 5


def test_a_mirror_run_stopped_by_its_event_cap_is_the_same_without_the_agenda():
    # The target fails every write to one range, ignored: BLOCK_JOB_ERROR
    # after BLOCK_JOB_ERROR from the agenda's callbacks, until the cap.
    import json

    import blocksim
    from blocksim.simulation import Simulation

    source = {
        "name": "cap", "duration": "2s", "sample-interval": "100ms",
        "images": {"src": {"size": "256MiB", "data": "full"}, "tgt": {"size": "256MiB"}},
        "drives": {"d0": {"image": "src"}},
        "faults": [{"image": "tgt", "operation": "write", "offset": "64MiB", "length": "1MiB"}],
        "jobs": {"j0": {"type": "mirror", "device": "d0", "target": "tgt",
                        "on-target-error": "ignore", "speed": "512MiB"}},
        "workloads": {"g": {"drive": "d0", "rw": "randwrite", "bs": "4KiB", "rate-iops": 500}},
    }

    def outcome(sim):
        r = sim.run()
        return r.events_jsonl() + json.dumps([r.commands, r.series, r.summary],
                                             sort_keys=True, default=str), r
    for cap in (13, 40, 77):
        scenario = blocksim.load_scenario(source | {"max-events": cap})
        fast, result = outcome(Simulation(scenario, seed=1))
        exact, _ = outcome(Simulation(scenario, seed=1, shortcuts=False))
        assert fast == exact
        assert result.summary["truncated"] and len(result.events) == cap
        assert result.events[-1]["event"] == "BLOCK_JOB_ERROR"
