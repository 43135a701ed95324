"""Searching an explore spec's space with Hypothesis and shrinking what breaks.

One *worker* (:func:`run_worker`) runs Hypothesis on the spec with its own
seed and share of the budget: the test runs the case's scenario and fails
when a property not yet found is broken (one exception class per property, so
the shrinker keeps to the property it shrinks).  Hypothesis stops generating
at the first failure and shrinks it (its shrinker, at most 500 shrinks); the
worker then searches again for the properties still unbroken, replaying the
cases already run from a cache, until the budget of generated cases is spent,
the time is up or every property broke.

Deterministic: Hypothesis is seeded (``@seed``), derandomised of nothing
else, has no example database unless one is asked for, no deadline and no
health checks, and every run is a pure function of its scenario, so the same
spec, ``--seed``, ``--runs`` and ``--workers`` give the same counterexamples
byte for byte.  ``--time`` stops the *generation* at a wall-clock limit (a
found case is always shrunk to the end), so a search cut by time is
reproducible only with the number of runs it reports.

:func:`explore` splits the budget over workers with independent seeds (the
process pool of :mod:`blocksim.analysis.sweep`, or a Dask cluster), keeps per
property the smallest counterexample (fewest faults, then the first in
worker order) and adds up the statistics.
"""

from __future__ import annotations

import copy
import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

from ..errors import BlocksimError, ScenarioError
from ..scenario import load_scenario
from ..scenario.explore import FAULT_KINDS, Explore
from ..scenario.load import read_scenario_file
from .properties import broken, check_fields, with_invariants
from .space import case_key, case_scenario, case_strategy, fault_count

__all__ = ["ExploreError", "explore", "run_worker", "load_spec", "worker_seed"]


class ExploreError(BlocksimError):
    """A spec that cannot be explored (no [explore] table, an unknown field)."""


class _OutOfTime(BaseException):
    """Raised through Hypothesis to end a generation cut by ``--time``."""


class PropertyBroken(Exception):
    index = -1

    def __init__(self, case, reasons):
        super().__init__(f"property {self.index} broken")
        self.case = case
        self.reasons = reasons


_CLASSES: dict[int, type] = {}


def _broken_class(index: int) -> type:
    """One exception class per property: Hypothesis tells bugs apart by class."""
    if index not in _CLASSES:
        _CLASSES[index] = type(f"Property{index}Broken", (PropertyBroken,), {"index": index})
    return _CLASSES[index]


def load_spec(path) -> tuple[dict[str, Any], Any]:
    """``(raw, scenario)`` of an explore spec; the scenario must have ``[explore]``."""
    raw = read_scenario_file(path)[1]
    scenario = load_scenario(path)
    if scenario.explore is None:
        raise ExploreError(f"{path}: no [explore] table: an explore spec is a scenario with an "
                           "[explore] table saying what to search (docs/explore.md)")
    raw.setdefault("name", scenario.name)
    return raw, scenario


def worker_seed(seed: int, worker: int) -> int:
    """Worker 0 uses ``seed`` itself; the others a seed derived from it."""
    if worker == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{worker}".encode()).digest()[:8], "big")


class _Runner:
    """Runs cases of one spec (cached by case)."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = dict(raw)
        scenario = load_scenario(copy.deepcopy(self.raw))
        self.spec: Explore = scenario.explore
        self.props = with_invariants(self.spec.properties)
        self.scenario = scenario
        self.cache: dict[str, dict] = {}

    def run(self, case: Mapping[str, Any]) -> dict[str, Any]:
        key = case_key(case)
        if key not in self.cache:
            from ..simulation import run
            try:
                scenario = load_scenario(case_scenario(self.raw, case))
            except ScenarioError as exc:
                self.cache[key] = {"invalid": "; ".join(f"{p}: {m}" for p, m in exc.problems)}
                return self.cache[key]
            result = run(scenario)
            self.cache[key] = {"broken": broken(self.props, result.summary, result.events)}
        return self.cache[key]

    def strategy(self):
        sc = self.scenario
        return case_strategy(self.spec, self.raw, sc.duration,
                             {name: img.size for name, img in sc.images.items()}, list(sc.pools))


def run_worker(task: Mapping[str, Any], progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Search with one seed and budget (``task``: raw, seed, runs, time,
    database); returns ``{"found": {index: {...}}, "cases": {key: {...}},
    "runs": simulations}``.  Pure for a given task when ``time`` is None."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed
    from hypothesis.database import DirectoryBasedExampleDatabase
    from hypothesis.errors import HypothesisDeprecationWarning

    runner = _Runner(task["raw"])
    limit = None if task.get("time") is None else time.monotonic() + task["time"]
    database = (DirectoryBasedExampleDatabase(task["database"]) if task.get("database") else None)
    cases: dict[str, dict] = {}          # generated cases, for the statistics
    found: dict[int, dict] = {}
    targets = set(range(len(runner.props)))
    strategy = runner.strategy()
    while targets:
        state = {"generating": True, "first": None}

        @settings(max_examples=task["runs"], database=database, derandomize=False, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                  report_multiple_bugs=False, print_blob=False,
                  verbosity=Verbosity.debug if task.get("debug") else Verbosity.quiet)
        @hseed(task["seed"])
        @given(strategy)
        def test(case):
            outcome = runner.run(case)
            if "invalid" in outcome:
                from hypothesis import reject
                reject()
            if state["generating"]:
                if limit is not None and time.monotonic() > limit:
                    raise _OutOfTime()
                key = case_key(case)
                if key not in cases:
                    cases[key] = {"kinds": list(case["kinds"]),
                                  "present": sorted({f.get("type", "error") for f in case["faults"]}
                                                    | {k.split(".")[-1] for k in case["set"]
                                                       if k.endswith(("capacity", "extend-latency"))}),
                                  "faults": fault_count(case),
                                  "broken": [i for i, _ in outcome["broken"]]}
                    if progress is not None:
                        progress(len(cases))
            hit = [(i, why) for i, why in outcome["broken"] if i in targets]
            if hit:
                if state["generating"]:
                    state["first"] = copy.deepcopy(case)
                state["generating"] = False
                raise _broken_class(hit[0][0])(copy.deepcopy(case), dict(outcome["broken"]))

        try:
            with warnings.catch_warnings():
                # on a Dask worker, other threads use the random module while
                # Hypothesis draws: it warns, though the cases do not depend on it
                warnings.simplefilter("ignore", HypothesisDeprecationWarning)
                test()
        except _OutOfTime:
            break
        except PropertyBroken as exc:
            first = state["first"]
            exc.case, exc.reasons = _one_minimal(runner, exc.index, exc.case, exc.reasons)
            found[exc.index] = {"case": exc.case, "reasons": {str(k): v for k, v in exc.reasons.items()},
                                "before": fault_count(first) if first else None,
                                "after": fault_count(exc.case), "first": first}
            targets.discard(exc.index)
            # a case breaking several properties at once counts for each
            for other in list(targets):
                if other in exc.reasons:
                    found[other] = dict(found[exc.index])
                    targets.discard(other)
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. Hypothesis giving up on invalid cases
            name = type(exc).__name__
            if name in ("Unsatisfiable", "FailedHealthCheck"):
                break
            raise
        break
    return {"found": {str(k): v for k, v in found.items()}, "cases": cases, "runs": len(runner.cache)}


def _one_minimal(runner: _Runner, index: int, case: dict, reasons: dict) -> tuple[dict, dict]:
    """After Hypothesis's shrinker: delete each fault (then each setting) in
    turn while the property stays broken, until no single deletion keeps it
    broken (a one-minimal schedule; deterministic, at most a few runs)."""
    changed = True
    while changed:
        changed = False
        candidates = [dict(case, faults=case["faults"][:i] + case["faults"][i + 1:])
                      for i in range(len(case["faults"]))]
        candidates += [dict(case, set={k: v for k, v in case["set"].items() if k != key})
                       for key in case["set"] if key not in runner.spec.vary]
        for smaller in candidates:
            outcome = runner.run(smaller)
            hit = dict(outcome.get("broken", []))
            if index in hit:
                case, reasons, changed = smaller, hit, True
                break
    return case, reasons


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, dict] = {}
    cases: dict[str, dict] = {}
    runs = 0
    for worker, result in enumerate(results):
        runs += result["runs"]
        for key, value in result["cases"].items():
            cases.setdefault(key, value)
        for index, item in result["found"].items():
            rank = (item["after"], case_key(item["case"]))
            if index not in found or rank < (found[index]["after"], case_key(found[index]["case"])):
                found[index] = dict(item, worker=worker)
    return {"found": found, "cases": cases, "runs": runs}


def explore(spec_path, runs: Optional[int] = None, seed: int = 0, workers: int = 1, scheduler=None,
            time_limit: Optional[float] = None, database=None,
            progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Explore the spec at ``spec_path``; returns the merged outcome (see
    :mod:`blocksim.explore.report` for what is written)."""
    from ..simulation import run
    raw, scenario = load_spec(spec_path)
    spec = scenario.explore
    props = with_invariants(spec.properties)
    base = run(load_scenario(case_scenario(raw, {"faults": [], "set": {}})))
    problems = check_fields(props, base.summary)
    if problems:
        raise ExploreError(f"{spec_path}: explore.properties" + problems[0]
                           + "".join(f"; {p}" for p in problems[1:]))
    base_broken = broken(props, base.summary, base.events)
    total = runs if runs is not None else spec.runs
    workers = max(1, min(workers, total))
    tasks = [{"raw": raw, "seed": worker_seed(seed, w), "time": time_limit,
              "runs": total // workers + (1 if w < total % workers else 0),
              "database": None if database is None else str(Path(database) / f"worker{w}")}
             for w in range(workers)]
    if scheduler is not None:
        results = _run_dask(tasks, scheduler, progress, total)
    elif workers == 1:
        results = [run_worker(tasks[0], None if progress is None else (lambda n: progress(n, total)))]
    else:
        results = _run_pool(tasks, progress, total)
    merged = _merge(results)
    merged.update(spec_path=str(spec_path), raw=raw, props=[p.text for p in props], seed=seed,
                  workers=workers, budget=total, base_broken=base_broken,
                  kinds=list(spec.kinds), name=scenario.name, scheduler=scheduler is not None)
    return merged


def _pool_worker(task, queue, index):
    def report(n):
        queue.put((index, n))
    return run_worker(task, report)


def _run_pool(tasks, progress, total):
    import concurrent.futures as cf
    import queue as _queue

    from ..analysis.sweep import _pool_context
    ctx = _pool_context()
    manager = ctx.Manager()
    try:
        q = manager.Queue()
        done = [0] * len(tasks)
        with cf.ProcessPoolExecutor(max_workers=len(tasks), mp_context=ctx) as pool:
            futures = [pool.submit(_pool_worker, t, q, i) for i, t in enumerate(tasks)]
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.2)
                while True:
                    try:
                        i, n = q.get_nowait()
                    except _queue.Empty:
                        break
                    done[i] = n
                if progress is not None:
                    progress(min(sum(done), total), total)
            return [f.result() for f in futures]
    finally:
        manager.shutdown()


def _run_dask(tasks, scheduler, progress, total):
    try:
        from distributed import Client
    except ImportError:                      # pragma: no cover - a declared dependency
        raise ExploreError("--scheduler: dask.distributed is not installed (pip install 'blocksim[dask]')") from None
    own = not isinstance(scheduler, Client)
    client = Client(scheduler, timeout="10s") if own else scheduler
    try:
        futures = client.map(run_worker, tasks, pure=False)
        results = client.gather(futures)
        if progress is not None:
            progress(total, total)
        return results
    finally:
        if own:
            client.close()
