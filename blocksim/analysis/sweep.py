"""Policy sweeps: one scenario, many variants, many seeds, one table.

:func:`sweep` runs the cartesian product of the varied scenario keys (any key
path :func:`~blocksim.scenario.apply_overrides` accepts, such as
``jobs.job0.on-target-error`` or ``faults.0.probability``) times ``seeds``
seeds.  Run ``i`` of a combination uses the seed ``S + i`` where ``S`` is the
scenario's own ``seed`` (0 when it has none), so seed 0 of a sweep reproduces
``blocksim run`` of the same variant.

Every run gives one row: the varied values, the seed, every summary figure
flattened to a dotted column (``jobs.<id>.outcome``, ``jobs.<id>.bytes_copied``,
``vm.time_paused``, ``drives.<d>.writes_lost``, ``invariants.violations`` (a
count), ...) and ``error``: the exception text of a run that failed (``None``
otherwise).  A run that fails, or whose variant is not a valid scenario, is a
row with its error, never a lost sweep.  Rows are in combination order, then
seed order, whatever order the runs finished in.

With an output folder the sweep writes:

- ``sweep.json``: the definition (scenario, its SHA-256, varied values, seeds);
- ``scenario.toml``: a copy of the scenario file;
- ``runs.jsonl``: the journal, one finished run a line, flushed and fsynced;
  a sweep started again with the same folder and definition skips the runs
  already there (a different definition is an error);
- ``runs.csv`` (and ``runs.parquet`` when pyarrow is importable): the rows;
- ``aggregate.csv``: per combination, the mean and 95 % confidence interval
  (Student t) of every numeric figure and the share of each outcome class;
- ``comparison.png``: outcome shares and key figures per combination.

The tables are written atomically (a temporary file renamed into place).

Runs go to a process pool with one worker per core by default (``workers=1``
runs them inline), or to a Dask distributed cluster with
``scheduler="tcp://host:port"`` (its workers need blocksim installed).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import hashlib
import itertools
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import BlocksimError, ScenarioError
from ..model.profile import get_profile
from ..record.atomic import atomic_write, write_bytes, write_text
from ..record.eventlog import normalise_events
from ..record.results import SCENARIO_KEY, folder_name
from ..scenario import apply_overrides, load_scenario
from ..scenario.load import read_scenario_file
from ..scenario.overrides import _override_value, _split_key

__all__ = [
    "SweepError", "SweepResult", "sweep", "load_sweep", "flatten_summary", "combination_label",
    "parse_vary_values", "OUTCOME_CLASSES", "DEFINITION", "JOURNAL", "RUNS_CSV", "RUNS_PARQUET",
    "AGGREGATE_CSV", "COMPARISON_PNG", "SCENARIO_COPY",
]

DEFINITION = "sweep.json"
SCENARIO_COPY = "scenario.toml"
JOURNAL = "runs.jsonl"
RUNS_CSV = "runs.csv"
RUNS_PARQUET = "runs.parquet"
AGGREGATE_CSV = "aggregate.csv"
COMPARISON_PNG = "comparison.png"
FORMAT = 1
#: How long to wait for a Dask scheduler to answer.
DASK_CONNECT_TIMEOUT = "10s"

#: The outcome classes of :func:`blocksim.record.summary.job_outcome`, in display order.
OUTCOME_CLASSES = ("completed", "completed-with-error", "cancelled", "never-ready", "ready",
                   "running", "paused", "refused", "not-started")

#: Columns whose values are classes (shares are counted, not means).
_CLASS_SUFFIXES = (".outcome", ".integrity")
_CLASS_COLUMNS = ("vm.final_state",)
#: Summary keys that identify a run rather than describe it.
_IDENTITY_KEYS = ("blocksim_version", "scenario", "profile", "seed")


class SweepError(BlocksimError):
    """A sweep cannot be started or resumed (bad definition, folder in use)."""


# -- flattening -------------------------------------------------------------------
def flatten_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run's summary as one flat dict of dotted columns.

    Nested tables become ``a.b.c`` keys; ``invariants`` becomes
    ``invariants.violations`` (how many) and ``invariants.violated`` (the
    names of the violated invariants, sorted, joined with ``;``); identity
    keys (scenario, profile, seed, version) and the resolved scenario a
    results folder's ``summary.json`` carries are left out.  Values stay
    JSON scalars."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple)):
            out[prefix] = json.dumps(value, sort_keys=True)
        else:
            out[prefix] = value

    for key, value in summary.items():
        if key in _IDENTITY_KEYS or key == SCENARIO_KEY:
            continue
        if key == "invariants" and isinstance(value, Mapping):
            violations = value.get("violations") or []
            out["invariants.violations"] = len(violations)
            out["invariants.violated"] = ";".join(sorted({str(v.get("invariant")) for v in violations
                                                          if isinstance(v, Mapping)}))
            continue
        walk(key, value)
    return out


def is_class_column(column: str) -> bool:
    """True for columns holding a class (outcome, integrity verdict, VM state)."""
    return column in _CLASS_COLUMNS or (column.startswith("jobs.") and column.endswith(_CLASS_SUFFIXES))


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def combination_label(combination: Mapping[str, Any]) -> str:
    """``key=value, key=value`` (or ``(base)`` when nothing is varied)."""
    if not combination:
        return "(base)"
    return ", ".join(f"{k}={_format_value(v)}" for k, v in combination.items())


# -- the definition -----------------------------------------------------------------
def parse_vary_values(values: Iterable[Any]) -> list[Any]:
    """Values of one varied key: strings are read like ``--set`` values (a
    TOML value when they are one: ``"0.5"`` -> 0.5, ``"true"`` -> True), other
    values are kept."""
    return [_override_value(v) if isinstance(v, str) else v for v in values]


def _check_vary(vary: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    if not isinstance(vary, Mapping):
        raise SweepError(f"vary must be a mapping of key path -> list of values, not {type(vary).__name__}")
    problems, out = [], {}
    for key, values in vary.items():
        if not isinstance(key, str) or not _split_key(key):
            problems.append(f"vary: invalid key path {key!r}: expected dotted keys such as "
                            "jobs.job0.on-target-error or faults.0.probability")
            continue
        if key.strip() == "seed":
            problems.append("vary: 'seed' cannot be varied: run i of a combination uses the "
                            "scenario's seed + i; ask for more seeds instead")
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            problems.append(f"vary: {key}: expected a list of values, got {values!r}")
            continue
        parsed = parse_vary_values(values)
        if not parsed:
            problems.append(f"vary: {key}: no values given")
            continue
        seen: list[Any] = []
        for v in parsed:
            if any(v == s and type(v) is type(s) for s in seen):
                problems.append(f"vary: {key}: value {_format_value(v)} is given twice")
            seen.append(v)
        try:
            json.dumps(parsed)
        except (TypeError, ValueError):
            problems.append(f"vary: {key}: values must be plain numbers, strings, booleans or arrays")
            continue
        out[key] = parsed
    if problems:
        raise SweepError("\n".join(problems))
    return out


def _read_scenario_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    data, raw = read_scenario_file(path)
    raw.setdefault("name", path.stem)
    return data, raw


class _Plan:
    """The resolved definition: the scenario, the combinations and the runs."""

    def __init__(self, scenario_path, vary: Mapping[str, Sequence[Any]], seeds: int,
                 profile: Optional[str] = None, limits=None):
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise SweepError(f"seeds must be an integer >= 1, got {seeds!r}")
        if profile is not None:
            get_profile(profile)
        self.profile = profile
        self.limits = limits            # (not part of the definition: a resume may change them)
        self.path = Path(scenario_path)
        self.source = os.fspath(scenario_path)
        self.vary = _check_vary(vary)
        self.seeds = seeds
        data, self.raw = _read_scenario_file(self.path)
        self.text = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        base = load_scenario(self.path, limits=limits)   # the scenario itself must be valid
        self.name = base.name
        self.base_seed = base.seed
        keys = list(self.vary)
        self.combinations = [dict(zip(keys, values))
                             for values in itertools.product(*(self.vary[k] for k in keys))]
        self.invalid = self._check_combinations()

    def _check_combinations(self) -> dict[int, str]:
        """Variants that are not valid scenarios -> their error (rows, not a
        lost sweep); when no variant at all is valid, a :class:`ScenarioError`."""
        if self.vary:
            # a key path that cannot be set at all is bad input, whatever the value
            apply_overrides(self.raw, {k: v[0] for k, v in self.vary.items()}, source=self.source)
        invalid: dict[int, str] = {}
        first: Optional[ScenarioError] = None
        for index, combination in enumerate(self.combinations):
            try:
                load_scenario(self.raw, dict(combination) or None, limits=self.limits)
            except ScenarioError as exc:
                first = first or exc
                invalid[index] = _error_text(exc)
        if self.combinations and len(invalid) == len(self.combinations) and first is not None:
            raise ScenarioError(self.source, first.problems)
        return invalid

    @property
    def total(self) -> int:
        return len(self.combinations) * self.seeds

    def definition(self) -> dict[str, Any]:
        return {"blocksim_sweep": FORMAT, "scenario": self.source, "scenario_name": self.name,
                "scenario_sha256": self.sha256, "base_seed": self.base_seed,
                "vary": self.vary, "seeds": self.seeds, "profile": self.profile, "runs": self.total}

    def fingerprint(self) -> str:
        d = self.definition()
        key = {k: d[k] for k in ("scenario_sha256", "vary", "seeds")}
        if self.profile is not None:
            key["profile"] = self.profile
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]

    def task(self, index: int) -> dict[str, Any]:
        combo, i = divmod(index, self.seeds)
        return {"index": index, "raw": self.raw, "overrides": self.combinations[combo],
                "seed": self.base_seed + i, "profile": self.profile,
                "invalid": self.invalid.get(combo), "limits": self.limits}


def _error_text(exc: BaseException) -> str:
    """A row's ``error``, on one line: a scenario error's problems (the row's
    varied values already say which variant), else the exception's class and
    text."""
    if isinstance(exc, ScenarioError):
        return "; ".join(f"{path}: {msg}" if path else msg for path, msg in exc.problems)
    text = str(exc).strip().replace("\n", "; ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- one run (in a worker) ----------------------------------------------------------------
def run_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one run of a sweep and return its journal record
    ``{"index", "row", "events"}``.  Pure: the same task gives the same record,
    wherever it runs.  Never raises for a failing run: the row carries the error."""
    row: dict[str, Any] = dict(task["overrides"])
    row["seed"] = task["seed"]
    events = None
    error = task.get("invalid")
    if error is None:
        try:
            from ..simulation import run
            limits = task.get("limits")
            scenario = load_scenario(copy.deepcopy(task["raw"]), task["overrides"] or None,
                                     limits=limits)
            bounds = {} if limits is None else {"limits": limits}
            result = run(scenario, seed=task["seed"], profile=task.get("profile"), **bounds)
            for key, value in flatten_summary(result.summary).items():
                row.setdefault(key, value)
            events = normalise_events(result.events)
        except Exception as exc:  # noqa: BLE001 - a failing run is a row
            error = _error_text(exc)
    row["error"] = error
    return {"index": task["index"], "row": row, "events": events}


# -- the result -------------------------------------------------------------------------
class SweepResult:
    """The rows of a sweep, with pandas and matplotlib views.

    ``rows`` are in combination order then seed order; ``ran`` is how many
    runs this call executed and ``resumed`` how many it found in the journal."""

    def __init__(self, definition: dict[str, Any], rows: list[dict[str, Any]],
                 events: Optional[list[Optional[list[str]]]] = None, folder: Optional[Path] = None,
                 ran: int = 0, resumed: int = 0):
        self.definition = definition
        self.rows = rows
        self.events = events if events is not None else [None] * len(rows)
        self.folder = folder
        self.ran = ran
        self.resumed = resumed

    def __repr__(self) -> str:
        return (f"<SweepResult {self.definition.get('scenario_name')!r} "
                f"{len(self.rows)}/{self.total} runs, {self.failed} failed>")

    @property
    def varied(self) -> list[str]:
        return list(self.definition.get("vary", {}))

    @property
    def total(self) -> int:
        return int(self.definition.get("runs", len(self.rows)))

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.total

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.get("error") is not None)

    @property
    def violated(self) -> int:
        return sum(1 for r in self.rows if (r.get("invariants.violations") or 0) > 0)

    def combinations(self) -> list[dict[str, Any]]:
        keys = self.varied
        vary = self.definition.get("vary", {})
        return [dict(zip(keys, values)) for values in itertools.product(*(vary[k] for k in keys))]

    def _by_combination(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """``(combination, its rows)`` in combination order (the aggregate,
        the figure and the summary table all walk the rows this way)."""
        varied = self.varied
        groups: dict[str, list[dict]] = {}
        for row in self.rows:
            groups.setdefault(_combination_key(row, varied), []).append(row)
        return [(combo, groups.get(_combination_key(combo, varied), []))
                for combo in self.combinations()]

    def columns(self) -> list[str]:
        head = [*self.varied, "seed"]
        seen = set(head) | {"error"}
        figures = []
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    figures.append(key)
        return head + figures + ["error"]

    def frame(self):
        """One row a run (a pandas DataFrame)."""
        import pandas as pd
        columns = self.columns()
        return pd.DataFrame([[row.get(c) for c in columns] for row in self.rows], columns=columns)

    def aggregate(self):
        """One row a combination: ``runs``, ``failed``, then for every numeric
        figure ``<col>.mean``, ``<col>.ci_low``, ``<col>.ci_high`` (95 %,
        Student t; NaN with a single run) and for every class column (job
        outcome, integrity verdict, VM final state) ``<col>.<class>``: the
        share of the runs that did not fail."""
        import pandas as pd
        from scipy import stats

        varied = self.varied
        columns = self.columns()
        figures = [c for c in columns if c not in varied and c not in ("seed", "error")]
        numeric, classes = [], {}
        for c in figures:
            values = [r.get(c) for r in self.rows if r.get(c) is not None]
            if not values:
                continue
            if is_class_column(c):
                classes[c] = _class_order(str(v) for v in values)
            elif all(isinstance(v, (int, float)) for v in values):
                numeric.append(c)
        out = []
        for combination, rows in self._by_combination():
            ok = [r for r in rows if r.get("error") is None]
            entry: dict[str, Any] = dict(combination)
            entry["runs"] = len(rows)
            entry["failed"] = len(rows) - len(ok)
            for c, kinds in classes.items():
                for kind in kinds:
                    entry[f"{c}.{kind}"] = (sum(1 for r in ok if str(r.get(c)) == kind) / len(ok)
                                            if ok else math.nan)
            for c in numeric:
                values = [float(r[c]) for r in ok if r.get(c) is not None]
                mean, low, high = _mean_ci(values, stats)
                entry[f"{c}.mean"] = mean
                entry[f"{c}.ci_low"] = low
                entry[f"{c}.ci_high"] = high
            out.append(entry)
        return pd.DataFrame(out)

    def plot(self):
        """A matplotlib Figure: outcome shares per job and key figures (mean
        with the 95 % interval) per combination."""
        return _plot(self)

    def summary_lines(self) -> list[str]:
        """A short table: one line a combination."""
        return _summary_lines(self)


def _combination_key(row: Mapping[str, Any], varied: Sequence[str]) -> str:
    return json.dumps([row.get(k) for k in varied])


def _class_order(found: Iterable[str]) -> list[str]:
    """Classes in display order: the known outcomes first, then the rest sorted."""
    kinds = set(found)
    return [k for k in OUTCOME_CLASSES if k in kinds] + sorted(kinds - set(OUTCOME_CLASSES))


def _mean_ci(values: list[float], stats) -> tuple[float, float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = float(stats.t.ppf(0.975, n - 1)) * math.sqrt(var / n)
    return mean, mean - half, mean + half


# -- figures and tables ---------------------------------------------------------------------
_KEY_FIGURES = ("vm.time_paused", "jobs.*.bytes_copied", "jobs.*.ready_at", "jobs.*.finished_at",
                "jobs.*.time_paused", "drives.*.writes_lost", "drives.*.guest_errors",
                "invariants.violations",
                # thin provisioning (record.summary.thin_provisioning)
                "pauses.count", "pauses.longest", "enospc.guest", "enospc.jobs", "extends.count",
                "extends.failed")


def _key_figures(result: SweepResult) -> list[str]:
    import fnmatch
    columns = result.columns()
    chosen = []
    for pattern in _KEY_FIGURES:
        for c in columns:
            # figures that are zero (or absent) in every run tell nothing: left out
            if fnmatch.fnmatchcase(c, pattern) and c not in chosen and \
                    any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                        and r.get(c) != 0 for r in result.rows):
                chosen.append(c)
    return chosen


def _figure_unit(column: str, values: Sequence[float]) -> tuple[float, str]:
    """``(scale, unit)`` a key figure is drawn in: seconds for times, a binary
    byte unit for byte counts (chosen by the largest value), else a count."""
    name = column.rsplit(".", 1)[-1]
    if name.endswith("_at") or name.startswith("time_"):
        return 1.0, "s"
    if name.startswith("bytes") or name.endswith("bytes"):
        peak = max((abs(v) for v in values if not math.isnan(v)), default=0.0)
        for scale, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if peak >= scale:
                return float(scale), unit
        return 1.0, "bytes"
    return 1.0, "count"


def _short_label(combination: Mapping[str, Any]) -> str:
    if not combination:
        return "(base)"
    return "\n".join(_format_value(v) for v in combination.values())


def _axis_label(varied: Sequence[str]) -> str:
    return " / ".join(k.split(".")[-1] for k in varied)


_CLASS_COLOURS = {"completed": "#2ca02c", "completed-with-error": "#d62728", "cancelled": "#7f7f7f",
                  "never-ready": "#ff7f0e", "ready": "#17becf", "running": "#1f77b4",
                  "paused": "#9467bd", "refused": "#8c564b", "not-started": "#c7c7c7",
                  "error": "#000000"}


def _plot(result: SweepResult):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_combination = result._by_combination()
    combos = [combo for combo, _rows in by_combination]
    labels = [_short_label(c) for c in combos]
    varied = result.varied
    outcome_columns = [c for c in result.columns() if c.startswith("jobs.") and c.endswith(".outcome")]
    figures = _key_figures(result)
    panels = len(outcome_columns) + len(figures) + (0 if outcome_columns or figures else 1)
    ncols = 2 if panels > 1 else 1
    nrows = math.ceil(panels / ncols)
    width = max(9.0, min(20.0, 1.0 * len(combos) * ncols + 3))
    fig = Figure(figsize=(width, 3.2 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(panels)]
    fig.suptitle(f"sweep of {result.definition.get('scenario_name')}: {len(result.rows)} runs, "
                 f"{result.definition.get('seeds')} seeds per combination")
    x = list(range(len(combos)))
    for ax, column in zip(axes, outcome_columns):
        found = {str(r.get(column)) for r in result.rows if r.get(column) is not None}
        kinds = _class_order(found)
        if any(r.get("error") is not None for r in result.rows):
            kinds.append("error")
        bottom = [0.0] * len(combos)
        for kind in kinds:
            shares = []
            for _combo, rows in by_combination:
                hits = sum(1 for r in rows if (r.get("error") is not None if kind == "error"
                                               else r.get("error") is None and str(r.get(column)) == kind))
                shares.append(hits / len(rows) if rows else 0.0)
            ax.bar(x, shares, bottom=bottom, label=kind, color=_CLASS_COLOURS.get(kind))
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_title(f"{column.split('.')[1]}: outcome share")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of runs", fontsize=8)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel(_axis_label(varied), fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if figures:
        from scipy import stats
    for ax, column in zip(axes[len(outcome_columns):], figures):
        means, errs, have, runs = [], [[], []], [], []
        for _combo, rows in by_combination:
            ok = [r for r in rows if r.get("error") is None]
            values = [float(r[column]) for r in ok if r.get(column) is not None]
            mean, low, high = _mean_ci(values, stats)
            means.append(mean)
            have.append(len(values))
            runs.append(len(ok))
            errs[0].append(0.0 if math.isnan(low) else mean - low)
            errs[1].append(0.0 if math.isnan(high) else high - mean)
        scale, unit = _figure_unit(column, means)
        # a combination where no run has the figure (a job never ready has
        # no ready_at) gets no bar but says so: a zero-height bar would read
        # as "at zero"
        shown = [k for k, m in enumerate(means) if not math.isnan(m)]
        ax.bar([x[k] for k in shown], [means[k] / scale for k in shown],
               yerr=[[errs[0][k] / scale for k in shown], [errs[1][k] / scale for k in shown]],
               capsize=3, color="#4c72b0")
        for k in range(len(combos)):
            if math.isnan(means[k]):
                ax.annotate("none", (x[k], 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color="#7f7f7f", style="italic")
            elif have[k] < runs[k]:
                ax.annotate(f"{have[k]} of {runs[k]} runs", (x[k], means[k] / scale),
                            xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6, color="#7f7f7f")
        ax.set_xlim(-0.6, len(combos) - 0.4)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(f"{column} ({unit}; mean, 95% CI)", fontsize=9)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel(_axis_label(varied), fontsize=8)
    if not outcome_columns and not figures:
        axes[0].text(0.5, 0.5, "no figures", ha="center", va="center")
    return fig


def _summary_lines(result: SweepResult) -> list[str]:
    varied = result.varied
    outcome_columns = [c for c in result.columns() if c.startswith("jobs.") and c.endswith(".outcome")]
    header = [*(k for k in varied), "runs"]
    header += [f"{c.split('.')[1]} outcomes" for c in outcome_columns]
    header += ["VM paused (mean)", "violations", "failed"]
    table = [header]
    for combo, rows in result._by_combination():
        ok = [r for r in rows if r.get("error") is None]
        line = [_format_value(combo[k]) for k in varied] + [str(len(rows))]
        for c in outcome_columns:
            counts: dict[str, int] = {}
            for r in ok:
                counts[str(r.get(c))] = counts.get(str(r.get(c)), 0) + 1
            line.append(", ".join(f"{k} {100 * counts[k] / len(ok):.0f}%" for k in _class_order(counts))
                        or "-")
        paused = [r["vm.time_paused"] for r in ok if isinstance(r.get("vm.time_paused"), (int, float))]
        line.append(f"{sum(paused) / len(paused):.3f} s" if paused else "-")
        line.append(str(sum(1 for r in ok if (r.get("invariants.violations") or 0) > 0)))
        line.append(str(len(rows) - len(ok)))
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]


# -- files ---------------------------------------------------------------------------------
def _read_journal(folder: Path, total: Optional[int] = None) -> dict[int, dict[str, Any]]:
    """Finished runs of the journal by index; a torn last line (an interrupted
    write) is ignored: that run is simply run again."""
    records: dict[int, dict[str, Any]] = {}
    path = folder / JOURNAL
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break                                   # torn last line
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (isinstance(record, dict) and isinstance(record.get("index"), int)
                    and isinstance(record.get("row"), dict)
                    and (total is None or 0 <= record["index"] < total)):
                records[record["index"]] = record
    return records


def _repair_journal(folder: Path) -> None:
    """Drop the lines of the journal that cannot be read back: a torn last
    line (a crash or Ctrl-C in the middle of a write) or an unreadable one,
    so that the records appended on resume start on a line of their own
    (appended after a torn line they would be unreadable too).  The journal
    is rewritten atomically, and only when it needs it."""
    path = folder / JOURNAL
    try:
        data = path.read_bytes()
    except OSError:
        return
    kept, changed = [], False
    for line in data.splitlines(keepends=True):
        good = line.endswith(b"\n")
        if good:
            try:
                good = isinstance(json.loads(line), dict)
            except ValueError:
                good = False
        if good:
            kept.append(line)
        else:
            changed = True
    if changed:
        write_bytes(path, b"".join(kept))


def _load_definition(folder: Path) -> Optional[dict[str, Any]]:
    path = folder / DEFINITION
    if not path.exists():
        return None
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: not a sweep definition: {exc}") from None
    if not isinstance(definition, dict) or "blocksim_sweep" not in definition:
        raise SweepError(f"{path}: not a sweep definition")
    return definition


def _definition_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    diffs = []
    if old.get("scenario_sha256") != new.get("scenario_sha256"):
        diffs.append(f"scenario {old.get('scenario')} (sha256 {str(old.get('scenario_sha256'))[:12]}) "
                     f"vs {new.get('scenario')} (sha256 {str(new.get('scenario_sha256'))[:12]})")
    if old.get("vary") != new.get("vary"):
        diffs.append(f"vary {json.dumps(old.get('vary'))} vs {json.dumps(new.get('vary'))}")
    if old.get("seeds") != new.get("seeds"):
        diffs.append(f"seeds {old.get('seeds')} vs {new.get('seeds')}")
    if old.get("profile") != new.get("profile"):
        diffs.append(f"profile {old.get('profile') or 'default'} vs "
                     f"{new.get('profile') or 'default'}")
    return diffs


def _prepare_folder(folder: Path, plan: _Plan) -> dict[int, dict[str, Any]]:
    definition = plan.definition()
    if folder.exists() and not folder.is_dir():
        raise SweepError(f"{folder}: exists and is not a folder")
    old = _load_definition(folder) if folder.is_dir() else None
    if old is None:
        if folder.is_dir() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
            raise SweepError(f"{folder}: the folder is not empty and holds no sweep "
                             f"({DEFINITION}); choose another output folder")
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(folder / SCENARIO_COPY, plan.text)
        write_text(folder / DEFINITION, json.dumps(definition, indent=2) + "\n")
        return {}
    diffs = _definition_differences(old, definition)
    if diffs:
        raise SweepError(f"{folder}: holds a different sweep ({'; '.join(diffs)}); "
                         "use another output folder, or delete this one to start over")
    _repair_journal(folder)
    records = _read_journal(folder, plan.total)
    for index, record in records.items():
        expected = plan.task(index)
        row = record["row"]
        if row.get("seed") != expected["seed"] or any(row.get(k) != v for k, v in expected["overrides"].items()):
            raise SweepError(f"{folder / JOURNAL}: run {index} does not match the sweep definition; "
                             "the journal is damaged: delete the folder to start over")
    return records


class _Journal:
    def __init__(self, folder: Optional[Path]):
        self.file = open(folder / JOURNAL, "a", encoding="utf-8") if folder is not None else None

    def append(self, record: Mapping[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def write_tables(result: SweepResult, folder) -> list[Path]:
    """Write ``runs.csv`` (+ ``runs.parquet``), ``aggregate.csv`` and
    ``comparison.png`` of ``result`` in ``folder``, each atomically."""
    folder = Path(folder)
    written = []
    frame = result.frame()
    write_text(folder / RUNS_CSV, frame.to_csv(index=False, lineterminator="\n"))
    written.append(folder / RUNS_CSV)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        table = frame.copy()
        for column in table.columns:
            if table[column].dtype == object:
                kinds = {type(v) for v in table[column] if v is not None}
                if len(kinds) > 1 or kinds & {list, dict}:
                    table[column] = [None if v is None else _format_value(v) for v in table[column]]
        atomic_write(folder / RUNS_PARQUET, lambda tmp: table.to_parquet(tmp, index=False))
        written.append(folder / RUNS_PARQUET)
    write_text(folder / AGGREGATE_CSV, result.aggregate().to_csv(index=False, lineterminator="\n"))
    written.append(folder / AGGREGATE_CSV)
    fig = result.plot()
    atomic_write(folder / COMPARISON_PNG, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    written.append(folder / COMPARISON_PNG)
    return written


# -- executing ---------------------------------------------------------------------------------
def _pool_context():
    """``fork`` when this process has a single thread (safe, and the workers
    start with blocksim already imported), else ``forkserver`` (a process
    with threads, e.g. a Dask client, must not fork), whose server imports
    blocksim once.  With ``forkserver`` a script calling :func:`sweep` needs
    the ``if __name__ == "__main__":`` guard, as with any multiprocessing."""
    import multiprocessing
    import sys
    import threading
    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["blocksim.analysis.sweep", "blocksim.simulation", "blocksim.analysis.compare"])
        return ctx
    return multiprocessing.get_context("spawn")


def _execute_inline(tasks, on_record):
    for task in tasks:
        on_record(run_task(task))


def _execute_pool(tasks, on_record, workers: int):
    from concurrent.futures.process import BrokenProcessPool
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    futures = {}
    try:
        futures = {pool.submit(run_task, task): task for task in tasks}
        for future in cf.as_completed(futures):
            try:
                record = future.result()
            except BrokenProcessPool as exc:
                raise SweepError(f"a worker process died ({exc}); the finished runs are in the "
                                 "journal: start the sweep again to resume") from None
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                task = futures[future]
                record = _failed_record(task, exc)
            on_record(record)
    except KeyboardInterrupt:
        # Ctrl-C: the runs under way are abandoned (the journal has the
        # finished ones), not waited for: their workers are ended now
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for future in futures:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)
        raise
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _failed_record(task: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    row = dict(task["overrides"])
    row["seed"] = task["seed"]
    row["error"] = _error_text(exc)
    return {"index": task["index"], "row": row, "events": None}


def _execute_dask(tasks, on_record, scheduler):
    try:
        from distributed import Client, as_completed
    except ImportError:                      # the [dask] extra
        raise SweepError("scheduler: a sweep on a Dask cluster needs dask.distributed, which is "
                         "not installed: pip install 'blocksim[dask]'") from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise SweepError(f"scheduler {scheduler}: cannot connect to the Dask scheduler: "
                             f"{exc}") from None
    else:
        client = scheduler
    futures = []
    try:
        keys = [f"blocksim-run-{secrets.token_hex(6)}-{t['index']}" for t in tasks]
        futures = client.map(run_task, tasks, key=keys, pure=False)
        by_key = {f.key: t for f, t in zip(futures, tasks)}
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker, a task error
                record = _failed_record(by_key[future.key], exc)
            on_record(record)
    finally:
        if futures:
            try:
                client.cancel(futures)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if own:
            client.close()


def sweep(scenario_path, vary: Mapping[str, Sequence[Any]] | None = None, seeds: int = 1,
          workers: Optional[int] = None, scheduler=None, out=None,
          progress: Optional[Callable[[int, int], None]] = None,
          profile: Optional[str] = None, limits=None) -> SweepResult:
    """Run the cartesian product of ``vary`` (key path -> values) times
    ``seeds`` seeds of the scenario file ``scenario_path``.

    ``workers``: processes of the local pool (default ``os.cpu_count()``;
    1 runs inline).  ``scheduler``: the address of a Dask scheduler
    (``"tcp://host:port"``) or a ``distributed.Client``; then ``workers`` is
    ignored.  ``out``: the sweep folder (journal, tables, figure), resumed
    when it already holds this sweep.  ``progress(done, total)`` is called
    after each finished run (and once at the start); an exception it raises
    stops the sweep (the finished runs stay in the journal).  ``profile``
    overrides the scenario's semantics profile for every run.  ``limits``
    (:class:`blocksim.scenario.limits.Limits`) bound every run, as
    ``blocksim run`` does.  An interrupted sweep (Ctrl-C: KeyboardInterrupt)
    keeps its finished runs in the journal, and is resumed by the same call.

    Raises :class:`~blocksim.errors.ScenarioError` when the scenario (or
    every variant) is invalid, :class:`SweepError` for a bad definition or a
    folder holding another sweep."""
    plan = _Plan(scenario_path, vary or {}, seeds, profile, limits)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"workers must be an integer >= 1, got {workers!r}")
    folder = Path(out) if out is not None else None
    records = _prepare_folder(folder, plan) if folder is not None else {}
    resumed = len(records)
    total = plan.total
    pending = [plan.task(i) for i in range(total) if i not in records]
    if progress is not None:
        progress(len(records), total)
    journal = _Journal(folder)
    ran = 0

    def on_record(record: dict[str, Any]) -> None:
        nonlocal ran
        journal.append(record)
        records[record["index"]] = record
        ran += 1
        if progress is not None:
            progress(len(records), total)

    try:
        if pending:
            if scheduler is not None:
                _execute_dask(pending, on_record, scheduler)
            else:
                count = min(workers or os.cpu_count() or 1, len(pending))
                if count <= 1:
                    _execute_inline(pending, on_record)
                else:
                    _execute_pool(pending, on_record, count)
    finally:
        journal.close()
    ordered = [records[i] for i in range(total)]
    result = SweepResult(plan.definition(), [r["row"] for r in ordered], [r.get("events") for r in ordered],
                         folder=folder, ran=ran, resumed=resumed)
    if folder is not None:
        write_tables(result, folder)
    return result


def load_sweep(folder) -> SweepResult:
    """Read back a sweep folder (finished or not: ``.complete`` tells)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepError(f"{folder}: not a sweep folder (no such directory)")
    definition = _load_definition(folder)
    if definition is None:
        raise SweepError(f"{folder}: not a sweep folder ({DEFINITION} is missing)")
    total = int(definition.get("runs", 0))
    records = _read_journal(folder, total)
    ordered = [records[i] for i in sorted(records)]
    return SweepResult(definition, [r["row"] for r in ordered], [r.get("events") for r in ordered],
                       folder=folder, resumed=len(ordered))


def default_folder(scenario_path, vary: Mapping[str, Sequence[Any]], seeds: int, root="results",
                   profile: Optional[str] = None) -> Path:
    """``results/<name>-sweep-<hash>``: the same sweep gets the same folder
    (so it resumes), a different one another folder."""
    plan = _Plan(scenario_path, vary, seeds, profile)
    return Path(root) / f"{folder_name(plan.name)}-sweep-{plan.fingerprint()}"
