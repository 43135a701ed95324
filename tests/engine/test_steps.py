"""Steps (blocksim.engine.steps) are processed where SimPy would process the
events they stand for: the same order as processes and timeouts, whatever
SimPy's queue holds meanwhile, and a failing step fails the run where the
process would have."""

from __future__ import annotations

import pytest
import simpy

from blocksim.engine import Clock, Steps


def _script(env, log, use_steps: bool):
    """Processes started at the same instants as tasks are, with timeouts
    of the same lengths, among other processes' events at equal times:
    the log of what ran when."""
    steps = Steps(env) if use_steps else None

    def task(name, delays):
        if steps is None:
            def proc():
                for d in delays:
                    log.append((env.now, name))
                    yield env.timeout(d)
                log.append((env.now, name, "end"))
            env.process(proc())
            return

        def step(i):
            log.append((env.now, name) if i < len(delays) else (env.now, name, "end"))
            if i < len(delays):
                steps.at(delays[i], step, i + 1)
        steps.at(0, step, 0, urgent=True)

    def other(name, delays):
        for d in delays:
            yield env.timeout(d)
            log.append((env.now, name))
            if name == "spawner":
                task(f"late{env.now}", [0, 5, 5])

    env.process(other("a", [5, 5, 0, 10]))
    task("t1", [5, 10, 0])
    task("t2", [0, 15, 5])
    env.process(other("b", [10, 5, 5]))
    env.process(other("spawner", [5, 10]))
    task("t3", [20, 0])


def test_steps_run_in_simpys_order():
    runs = []
    for use_steps in (False, True):
        env = Clock()
        log: list = []
        _script(env, log, use_steps)
        env.run()
        runs.append(log)
    assert runs[0] == runs[1]
    assert len(runs[0]) > 20


def test_a_done_event_wakes_its_waiters_where_simpy_would():
    """An event succeeded through the steps resumes the processes waiting
    for it at the moment SimPy would have processed it, before a timeout
    due at the same instant but scheduled later."""
    runs = []
    for use_steps in (False, True):
        env = Clock()
        steps = Steps(env)
        log: list = []
        done = env.event()

        def waiter(name):
            yield done
            log.append((env.now, name))

        def finisher():
            yield env.timeout(10)
            if use_steps:
                steps.succeed(done)
            else:
                done.succeed()
            yield env.timeout(0)
            log.append((env.now, "finisher"))

        def late():
            yield env.timeout(10)
            log.append((env.now, "late"))
        env.process(waiter("w1"))
        env.process(finisher())
        env.process(late())
        env.process(waiter("w2"))
        env.run()
        runs.append(log)
    assert runs[0] == runs[1] == [(10, "late"), (10, "w1"), (10, "w2"), (10, "finisher")]


def test_a_failing_step_fails_the_run_where_its_process_would():
    """What the step raises comes out of the run once SimPy processes the
    failed process, after what was due before it."""
    runs = []
    for use_steps in (False, True):
        env = Clock()
        log: list = []
        steps = Steps(env)

        def boom(_arg):
            log.append((env.now, "boom"))
            raise ValueError("cap")
        if use_steps:
            steps.at(5, boom, None)
        else:
            def proc():
                yield env.timeout(5)
                boom(None)
            env.process(proc())

        def other():
            yield env.timeout(5)
            log.append((env.now, "other"))
        env.process(other())
        with pytest.raises(ValueError):
            env.run()
        runs.append(log)
    # (the process fails at 5, and the run stops after what is due then)
    assert runs[0] == runs[1] == [(5, "boom"), (5, "other")]


def _succeed_last(use_steps: bool, other: str | None) -> list:
    """A step (a process's last action) succeeds an event at 10 that a
    process waits for, with another process's timeout due at 10 scheduled
    before it (``other="before"``), after it (``"after"``) or none."""
    env = Clock()
    steps = Steps(env)
    log: list = []
    done = env.event()

    def waiter():
        yield done
        log.append((env.now, "w"))
        yield env.timeout(0)
        log.append((env.now, "w2"))

    def later():
        yield env.timeout(10)
        log.append((env.now, "other"))

    if other == "before":
        env.process(later())
    if use_steps:
        def finish(_arg):
            log.append((env.now, "finish"))
            steps.succeed(done, last=True)
            log.append((env.now, "inline" if done.callbacks is None else "queued"))
        # (as a process: its start, urgent, then its timeout)
        steps.at(0, lambda _arg: steps.at(10, finish, None), None, urgent=True)
    else:
        def proc():
            yield env.timeout(10)
            log.append((env.now, "finish"))
            done.succeed()
        env.process(proc())
    if other == "after":
        env.process(later())
    env.process(waiter())
    env.run()
    return log


@pytest.mark.parametrize("other", ["before", "after", None])
def test_an_event_succeeded_by_a_last_step_runs_where_simpy_would(other):
    """Steps.succeed(last=True) runs the event's callbacks at once only when
    nothing is due at that instant; else the event waits its turn (here
    behind the other process's timeout, scheduled before the event's)."""
    steps_log = _succeed_last(True, other)
    plain = _succeed_last(False, other)
    how = [e for e in steps_log if e[1] in ("inline", "queued")]
    assert [e for e in steps_log if e not in how] == plain
    assert how == [(10, "queued" if other else "inline")]
