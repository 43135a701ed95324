"""Regression comparisons: did behaviour change between two sets of runs?

:func:`compare` takes two sides, each one of:

- a results folder (one run: ``summary.json`` and ``events.jsonl``);
- a sweep folder (``sweep.json`` and ``runs.jsonl``, see :mod:`blocksim.analysis.sweep`);
- a JSON file: a baseline record (see below) or a run's ``summary.json``;
- a folder of any of those (results folders, sweep folders, JSON files).

Runs are matched by scenario name (and, for sweeps, by combination of the
varied values); when each side is a single run, or a single sweep, the two
are matched whatever their names.  For every scenario or combination the
report says what changed:

- the outcome class of each job, its integrity verdict, the VM's final state
  and the other states of the summary (end event, error text, io-status...);
- the normalised event sequence (:func:`normalise_events`);
- invariant violations;
- numeric figures: with one run a side, a change beyond the relative
  ``tolerance``; with several runs (seeds) a side, a Mann-Whitney U test on the
  per-seed values, and a Fisher exact / chi-square test on the counts of each
  class, significant below ``alpha``.  Several-seed differences that are not
  significant are listed as notes and are not regressions.

A run that failed on one side only, a scenario or combination present on one
side only, a new invariant violation: always changes.  :attr:`Report.regressed`
is true when anything changed; the command line exits 1 then.

The baseline (``results/baseline/``) holds one JSON record per scenario of
``scenarios/*.toml``: ``{"blocksim_baseline": 1, "scenario", "file", "seed",
"profile", "summary", "events"}`` with the summary (without the version) and
the normalised event sequence; :func:`update_baseline` rewrites it.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ResultsError, ScenarioError
from ..record.atomic import write_text
from ..record.eventlog import event_token, normalise_events  # noqa: F401  (re-exported)
from .sweep import combination_label, flatten_summary, is_class_column, load_sweep

__all__ = [
    "Change", "CaseReport", "Report", "compare", "normalise_events", "event_token",
    "baseline_record", "update_baseline", "BASELINE_FORMAT", "DEFAULT_BASELINE", "DEFAULT_SCENARIOS",
]

BASELINE_FORMAT = 1
DEFAULT_BASELINE = "results/baseline"
DEFAULT_SCENARIOS = "scenarios"
#: Longest repeated block of events collapsed by :func:`normalise_events`.
_DIFF_LINES = 40


# -- the runs of a side ---------------------------------------------------------------
@dataclass
class _Run:
    scenario: str
    seed: Any
    flat: dict[str, Any]
    events: Optional[list[str]]
    error: Optional[str]
    origin: str
    combination: Optional[dict[str, Any]] = None


class _Side:
    def __init__(self, path):
        self.path = Path(path)
        self.kind = ""                      # "run", "sweep" or "collection"
        self.cases: dict[str, list[_Run]] = {}
        self._load()

    def add(self, key: str, run: _Run) -> None:
        self.cases.setdefault(key, []).append(run)

    @property
    def runs(self) -> int:
        return sum(len(v) for v in self.cases.values())

    def _load(self) -> None:
        p = self.path
        if not p.exists():
            raise ResultsError(f"{p}: no such file or folder")
        if p.is_file():
            self.kind = "run"
            run = _read_json_run(p)
            if run is None:
                raise ResultsError(f"{p}: not a blocksim summary or baseline JSON file")
            self.add(run.scenario, run)
            return
        if (p / "sweep.json").is_file():
            self.kind = "sweep"
            self._add_sweep(p, single=True)
            return
        if (p / "summary.json").is_file():
            self.kind = "run"
            run = _read_results_folder(p)
            self.add(run.scenario, run)
            return
        self.kind = "collection"
        for child in sorted(p.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir() and (child / "sweep.json").is_file():
                self._add_sweep(child, single=False)
            elif child.is_dir() and (child / "summary.json").is_file():
                run = _read_results_folder(child)
                self.add(run.scenario, run)
            elif child.is_file() and child.suffix == ".json":
                run = _read_json_run(child)
                if run is not None:
                    self.add(run.scenario, run)
        if not self.cases:
            raise ResultsError(f"{p}: holds no results: expected results folders, sweep folders "
                               "or summary / baseline JSON files")

    def _add_sweep(self, folder: Path, single: bool) -> None:
        result = load_sweep(folder)
        name = str(result.definition.get("scenario_name"))
        varied = result.varied
        for row, events in zip(result.rows, result.events):
            combination = {k: row.get(k) for k in varied}
            label = combination_label(combination)
            key = label if single else f"{name} [{label}]"
            flat = {k: v for k, v in row.items() if k not in varied and k not in ("seed", "error")}
            self.add(key, _Run(name, row.get("seed"), flat, events, row.get("error"),
                               str(folder), combination))


def _run_from_summary(summary: Mapping[str, Any], events, origin: str) -> _Run:
    return _Run(str(summary.get("scenario")), summary.get("seed"), flatten_summary(summary),
                events, None, origin)


def _read_json_run(path: Path) -> Optional[_Run]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        return None
    if "blocksim_baseline" in data:
        summary = data.get("summary")
        if not isinstance(summary, dict):
            raise ResultsError(f"{path}: baseline record without a summary")
        summary = {**summary, "scenario": data.get("scenario", summary.get("scenario")),
                   "seed": data.get("seed", summary.get("seed"))}
        events = data.get("events")
        return _run_from_summary(summary, list(events) if isinstance(events, list) else None, str(path))
    if isinstance(data.get("jobs"), dict) and isinstance(data.get("vm"), dict):
        events = None
        sibling = path.parent / "events.jsonl"
        if path.name == "summary.json" and sibling.is_file():
            events = _read_events(sibling)
        return _run_from_summary(data, events, str(path))
    return None


def _read_events(path: Path) -> list[str]:
    events = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as exc:
            raise ResultsError(f"{path}: line {number}: not JSON: {exc}") from None
    return normalise_events(events)


def _read_results_folder(folder: Path) -> _Run:
    run = _read_json_run(folder / "summary.json")
    if run is None:
        raise ResultsError(f"{folder}: summary.json is not a blocksim summary")
    run.origin = str(folder)
    return run


# -- the report -------------------------------------------------------------------------
@dataclass
class Change:
    """One difference: ``section`` (presence, error, outcome, integrity, vm,
    invariants, events, state, figure), ``subject`` (a column or a name), the
    two values, a readable ``detail`` and whether it is ``significant`` (a
    change) or a note."""

    section: str
    subject: str
    baseline: Any
    new: Any
    detail: str
    significant: bool = True
    diff: list[str] = field(default_factory=list)


@dataclass
class CaseReport:
    """The comparison of one scenario (or sweep combination)."""

    key: str
    baseline_runs: int
    new_runs: int
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.significant for c in self.changes)

    @property
    def status(self) -> str:
        if not self.baseline_runs:
            return "only-new"
        if not self.new_runs:
            return "only-baseline"
        return "changed" if self.changed else "same"


_SECTION_ORDER = ("presence", "error", "outcome", "integrity", "vm", "invariants", "events",
                  "state", "figure")


class Report:
    """What changed between ``baseline`` and ``new``."""

    def __init__(self, baseline: str, new: str, tolerance: float, alpha: float,
                 cases: list[CaseReport], baseline_runs: int = 0, new_runs: int = 0):
        self.baseline = baseline
        self.new = new
        self.tolerance = tolerance
        self.alpha = alpha
        self.cases = cases
        self.baseline_runs = baseline_runs
        self.new_runs = new_runs

    def __repr__(self) -> str:
        return (f"<Report {len(self.cases)} compared, {len(self.changed_cases)} changed, "
                f"regressed={self.regressed}>")

    @property
    def changed_cases(self) -> list[CaseReport]:
        return [c for c in self.cases if c.changed]

    @property
    def regressed(self) -> bool:
        return bool(self.changed_cases)

    @property
    def changes(self) -> list[Change]:
        return [ch for c in self.cases for ch in c.changes if ch.significant]

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "new": self.new, "tolerance": self.tolerance,
            "alpha": self.alpha, "regressed": self.regressed,
            "compared": len(self.cases), "changed": len(self.changed_cases),
            "cases": [{"key": c.key, "status": c.status, "baseline_runs": c.baseline_runs,
                       "new_runs": c.new_runs,
                       "changes": [_json_safe(asdict(ch)) for ch in c.changes if ch.significant],
                       "notes": [_json_safe(asdict(ch)) for ch in c.changes if not ch.significant]}
                      for c in self.cases],
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def text(self, verbose: bool = False) -> str:
        """A readable report: the changed cases in detail, the others one
        line; notes (not significant) only with ``verbose`` or in a changed case."""
        lines = [f"baseline: {self.baseline} ({self.baseline_runs} run{_s(self.baseline_runs)})",
                 f"new:      {self.new} ({self.new_runs} run{_s(self.new_runs)})",
                 f"figures: relative tolerance {self.tolerance:g} for single runs, "
                 f"tests at alpha {self.alpha:g} across seeds", ""]
        same = []
        for case in self.cases:
            notes = [c for c in case.changes if not c.significant]
            if not case.changed and not (verbose and notes):
                same.append(case.key)
                continue
            word = {"only-new": "NEW", "only-baseline": "GONE", "changed": "CHANGED",
                    "same": "same"}[case.status]
            runs = (f" ({case.baseline_runs} vs {case.new_runs} runs)"
                    if max(case.baseline_runs, case.new_runs) > 1 else "")
            lines.append(f"{word}  {case.key}{runs}")
            for ch in sorted(case.changes, key=lambda c: (not c.significant,
                                                          _SECTION_ORDER.index(c.section))):
                mark = "" if ch.significant else "(note) "
                lines.append(f"  {ch.section:<10} {mark}{ch.detail}")
                lines.extend(f"             {d}" for d in ch.diff)
        if same:
            if len(same) != len(self.cases):
                lines.append("")
            if any(", " in key for key in same):
                lines.append(f"same ({len(same)}):")
                lines.extend(f"  {key}" for key in same)
            else:
                lines.append(f"same ({len(same)}): " + ", ".join(same))
        lines.append("")
        if self.regressed:
            lines.append(f"REGRESSED: {len(self.changed_cases)} of {len(self.cases)} compared changed")
        else:
            lines.append(f"OK: nothing changed ({len(self.cases)} compared)")
        return "\n".join(lines)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -- comparing ------------------------------------------------------------------------------
def _section(column: str) -> str:
    if column == "vm.final_state":
        return "vm"
    if column.startswith("invariants."):
        return "invariants"
    if is_class_column(column):
        return "outcome" if column.endswith(".outcome") else "integrity"
    return "state"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _event_diff(base: list[str], new: list[str]) -> list[str]:
    diff = [line for line in difflib.unified_diff(base, new, "baseline", "new", n=1, lineterm="")
            if not line.startswith(("---", "+++"))]
    if len(diff) > _DIFF_LINES:
        diff = diff[:_DIFF_LINES] + [f"... ({len(diff) - _DIFF_LINES} more diff lines)"]
    return diff


def _compare_single(b: _Run, n: _Run, tolerance: float) -> list[Change]:
    out: list[Change] = []
    if b.error is not None or n.error is not None:
        if b.error != n.error:
            out.append(Change("error", "error", b.error, n.error,
                              f"run failed: {_show(b.error)} -> {_show(n.error)}"))
        return out
    for column in _columns(b.flat, n.flat):
        bv, nv = b.flat.get(column, None), n.flat.get(column, None)
        missing = column not in b.flat or column not in n.flat
        if column == "invariants.violated":
            if bv != nv:
                out.append(Change("invariants", column, bv, nv,
                                  f"violated invariants: {bv or 'none'} -> {nv or 'none'}"))
            continue
        if column == "invariants.violations":
            if bv != nv:
                out.append(Change("invariants", column, bv, nv, f"violations: {_show(bv)} -> {_show(nv)}"))
            continue
        if _is_number(bv) and _is_number(nv) and not missing:
            if bv == nv or (math.isnan(bv) and math.isnan(nv)):
                continue
            delta = nv - bv
            limit = tolerance * abs(bv)
            if abs(delta) > limit + 1e-12:
                rel = f"{100 * delta / abs(bv):+.1f}%" if bv else "from 0"
                out.append(Change("figure", column, bv, nv,
                                  f"{column}: {_show(bv)} -> {_show(nv)} ({rel}, tolerance "
                                  f"{100 * tolerance:g}%)"))
            continue
        if bv != nv or missing:
            section = _section(column)
            if missing:
                detail = (f"{column}: only in the new run ({_show(nv)})" if column not in b.flat
                          else f"{column}: only in the baseline ({_show(bv)})")
            else:
                detail = f"{column}: {_show(bv)} -> {_show(nv)}"
            if section == "state" and (_is_number(bv) or _is_number(nv)):
                section = "figure"
            out.append(Change(section, column, bv, nv, detail))
    if b.events is not None and n.events is not None and b.events != n.events:
        out.append(Change("events", "events", len(b.events), len(n.events),
                          f"normalised event sequence changed ({len(b.events)} -> {len(n.events)} "
                          "events):", diff=_event_diff(b.events, n.events)))
    return out


def _columns(*flats: Mapping[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for flat in flats:
        for key in flat:
            seen.setdefault(key, None)
    return list(seen)


def _class_test(counts_b: dict[str, int], counts_n: dict[str, int]) -> float:
    from scipy import stats
    kinds = sorted(set(counts_b) | set(counts_n))
    table = [[counts_b.get(k, 0) for k in kinds], [counts_n.get(k, 0) for k in kinds]]
    if len(kinds) < 2:
        return 1.0
    if len(kinds) == 2:
        return float(stats.fisher_exact(table).pvalue)
    return float(stats.chi2_contingency(table).pvalue)


def _counts(values: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = _show(v)
        out[key] = out.get(key, 0) + 1
    return out


def _shares(counts: Mapping[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {100 * c / total:.0f}%" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]))


def _compare_many(base: list[_Run], new: list[_Run], alpha: float) -> list[Change]:
    out: list[Change] = []
    by_seed_b = {r.seed: r for r in base}
    by_seed_n = {r.seed: r for r in new}
    if (len(by_seed_b) == len(base) and by_seed_b.keys() == by_seed_n.keys()
            and all(by_seed_b[s].flat == by_seed_n[s].flat and by_seed_b[s].error == by_seed_n[s].error
                    and by_seed_b[s].events == by_seed_n[s].events for s in by_seed_b)):
        return out                                     # identical seed for seed
    errors_b = _counts(r.error for r in base if r.error is not None)
    errors_n = _counts(r.error for r in new if r.error is not None)
    if errors_b != errors_n:
        out.append(Change("error", "error", sum(errors_b.values()), sum(errors_n.values()),
                          f"failed runs: {sum(errors_b.values())}/{len(base)} -> "
                          f"{sum(errors_n.values())}/{len(new)}"
                          + (f" (new: {'; '.join(sorted(set(errors_n) - set(errors_b)))})"
                             if set(errors_n) - set(errors_b) else "")))
    ok_b = [r for r in base if r.error is None]
    ok_n = [r for r in new if r.error is None]
    for column in _columns(*(r.flat for r in ok_b), *(r.flat for r in ok_n)):
        vb = [r.flat.get(column) for r in ok_b]
        vn = [r.flat.get(column) for r in ok_n]
        if column == "invariants.violated":
            names_b = {x for v in vb if v for x in str(v).split(";")}
            names_n = {x for v in vn if v for x in str(v).split(";")}
            runs_b = sum(1 for v in vb if v)
            runs_n = sum(1 for v in vn if v)
            if names_b != names_n or runs_b != runs_n:
                out.append(Change("invariants", column, sorted(names_b), sorted(names_n),
                                  f"runs violating an invariant: {runs_b}/{len(vb)} "
                                  f"({', '.join(sorted(names_b)) or 'none'}) -> {runs_n}/{len(vn)} "
                                  f"({', '.join(sorted(names_n)) or 'none'})"))
            continue
        if column == "invariants.violations":
            continue
        numbers_b = [v for v in vb if v is not None]
        numbers_n = [v for v in vn if v is not None]
        numeric = all(_is_number(v) for v in numbers_b + numbers_n) and numbers_b and numbers_n
        if numeric and not is_class_column(column):
            if sorted(numbers_b) == sorted(numbers_n):
                continue
            from scipy import stats
            p = float(stats.mannwhitneyu(numbers_b, numbers_n, alternative="two-sided").pvalue)
            mb = math.fsum(numbers_b) / len(numbers_b)
            mn = math.fsum(numbers_n) / len(numbers_n)
            significant = p < alpha
            out.append(Change("figure", column, mb, mn,
                              f"{column}: mean {_show(mb)} -> {_show(mn)} (Mann-Whitney U p={p:.3g}"
                              f"{' < ' if significant else ' >= '}{alpha:g}, "
                              f"{len(numbers_b)} vs {len(numbers_n)} runs)", significant))
            continue
        cb, cn = _counts(vb), _counts(vn)
        if _normalised_counts(cb, len(vb)) == _normalised_counts(cn, len(vn)):
            continue                                   # same shares
        p = _class_test(cb, cn)
        significant = p < alpha
        test = "Fisher exact" if len(set(cb) | set(cn)) == 2 else "chi-square"
        out.append(Change(_section(column), column, cb, cn,
                          f"{column}: {_shares(cb)} -> {_shares(cn)} ({test} p={p:.3g}"
                          f"{' < ' if significant else ' >= '}{alpha:g})", significant))
    out.extend(_compare_sequences(ok_b, ok_n, by_seed_b, by_seed_n, alpha))
    return out


def _shape(tokens: list[str]) -> list[str]:
    """Tokens without their numeric ``key=value`` parts, re-collapsed."""
    def strip(token: str) -> str:
        parts = token.split(" ")
        return " ".join([parts[0]] + [p for p in parts[1:] if not _numeric_value(p.partition("=")[2])])
    return normalise_events(strip(t) for t in tokens)


def _numeric_value(text: str) -> bool:
    try:
        return _is_number(json.loads(text))
    except ValueError:
        return False


def _seed_order(seed: Any) -> tuple:
    return (0, seed, "") if _is_number(seed) else (1, 0, str(seed))


def _compare_sequences(ok_b: list[_Run], ok_n: list[_Run], by_seed_b: dict, by_seed_n: dict,
                       alpha: float) -> list[Change]:
    """Normalised event sequences across seeds.  Their numbers (offsets,
    lengths) differ from seed to seed, so each distinct *shape* (the sequence
    without its numeric data) is a class, and the two distributions of
    classes are tested like outcomes; the diff shows a full sequence."""
    seq_b = ["\n".join(_shape(r.events)) for r in ok_b if r.events is not None]
    seq_n = ["\n".join(_shape(r.events)) for r in ok_n if r.events is not None]
    if not seq_b or not seq_n:
        return []
    seeds = sorted(set(by_seed_b) & set(by_seed_n), key=_seed_order)
    differing = [s for s in seeds if by_seed_b[s].events is not None and by_seed_n[s].events is not None
                 and by_seed_b[s].events != by_seed_n[s].events]
    cb, cn = _counts(seq_b), _counts(seq_n)
    same_shares = _normalised_counts(cb, len(seq_b)) == _normalised_counts(cn, len(seq_n))
    if same_shares and not differing:
        return []
    if same_shares:
        p, significant = 1.0, False
    else:
        p = _class_test(cb, cn)
        significant = p < alpha
    if differing:
        first = differing[0]
        base, new = by_seed_b[first].events, by_seed_n[first].events
        where = f"{len(differing)} of {len(seeds)} seeds differ (first: seed {first})"
    else:
        base = max(cb, key=lambda k: cb[k]).split("\n")
        new = max(cn, key=lambda k: cn[k]).split("\n")
        where = "most common sequences"
    unseen = sum(c for k, c in cn.items() if k not in cb)
    return [Change("events", "events", len(cb), len(cn),
                   f"normalised event sequences (numbers aside): {len(cb)} shape"
                   f"{_s(len(cb))} -> {len(cn)}, {unseen} of {len(seq_n)} new runs with a shape "
                   f"never seen in the baseline; {where} "
                   f"(p={p:.3g}{' < ' if significant else ' >= '}{alpha:g}):",
                   significant, diff=_event_diff(base, new))]


def _normalised_counts(counts: Mapping[str, int], total: int) -> dict[str, float]:
    return {k: v / total for k, v in counts.items()} if total else {}


def compare(baseline, new, tolerance: float = 0.05, alpha: float = 0.01) -> Report:
    """Compare two sides (paths: see the module docstring) and report what
    changed.  ``tolerance``: relative change of a figure allowed between two
    single runs; ``alpha``: significance level of the tests across seeds.
    Raises :class:`~blocksim.errors.ResultsError` when a side holds no results."""
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance and math.isfinite(tolerance)):
        raise ResultsError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ResultsError(f"alpha must be between 0 and 1, got {alpha!r}")
    b, n = _Side(baseline), _Side(new)
    b_cases, n_cases = b.cases, n.cases
    if len(b_cases) == 1 and len(n_cases) == 1 and b.kind == n.kind == "run":
        (bk, bv), (nk, nv) = next(iter(b_cases.items())), next(iter(n_cases.items()))
        key = bk if bk == nk else f"{bk} vs {nk}"
        b_cases, n_cases = {key: bv}, {key: nv}
    keys = list(b_cases) + [k for k in n_cases if k not in b_cases]
    cases = []
    for key in keys:
        br, nr = b_cases.get(key, []), n_cases.get(key, [])
        case = CaseReport(key, len(br), len(nr))
        if not br:
            case.changes.append(Change("presence", key, None, len(nr), "only in the new runs"))
        elif not nr:
            case.changes.append(Change("presence", key, len(br), None, "only in the baseline"))
        elif len(br) == 1 and len(nr) == 1:
            case.changes = _compare_single(br[0], nr[0], tolerance)
        else:
            case.changes = _compare_many(br, nr, alpha)
        cases.append(case)
    return Report(str(baseline), str(new), float(tolerance), float(alpha), cases, b.runs, n.runs)


# -- the baseline --------------------------------------------------------------------------
def baseline_record(scenario_path, profile: Optional[str] = None) -> dict[str, Any]:
    """Run a scenario (its own seed) and return its baseline record: the
    summary (without the version) and the normalised event sequence."""
    from ..scenario import load_scenario
    from ..simulation import run
    scenario = load_scenario(scenario_path)
    result = run(scenario, profile=profile)
    summary = {k: v for k, v in result.summary.items() if k != "blocksim_version"}
    return {"blocksim_baseline": BASELINE_FORMAT, "scenario": scenario.name,
            "file": Path(scenario_path).name, "seed": result.seed, "profile": result.profile,
            "summary": summary, "events": normalise_events(result.events)}


def _record_text(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=1) + "\n"


def baseline_file_name(name: str) -> str:
    import re
    return (re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "scenario") + ".json"


def _scenario_files(scenarios_dir) -> list[Path]:
    folder = Path(scenarios_dir)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such scenarios folder")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise ResultsError(f"{folder}: no scenario files (*.toml)")
    return files


def update_baseline(scenarios_dir=DEFAULT_SCENARIOS, baseline_dir=DEFAULT_BASELINE) -> list[Path]:
    """Run every scenario of ``scenarios_dir/*.toml`` and rewrite
    ``baseline_dir`` with one record a scenario (``<name>.json``); records of
    scenarios that are gone are removed.  Every scenario is run before
    anything is written.  Returns the files written, in name order."""
    files = _scenario_files(scenarios_dir)
    records: dict[str, dict[str, Any]] = {}
    problems: list[tuple[str, str]] = []
    for path in files:
        try:
            record = baseline_record(path)
        except ScenarioError as exc:
            problems += [(f"{exc.source}: {p}" if p else exc.source, m) for p, m in exc.problems]
            continue
        name = baseline_file_name(record["scenario"])
        if name in records:
            problems.append((str(path), f"scenario name {record['scenario']!r} is also the name of "
                                        f"{records[name]['file']}; baseline records need unique names"))
            continue
        records[name] = record
    if problems:
        raise ScenarioError(str(scenarios_dir), problems)
    folder = Path(baseline_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(records):
        target = folder / name
        text = _record_text(records[name])
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            write_text(target, text)
        written.append(target)
    for stale in sorted(folder.glob("*.json")):
        if stale.name not in records:
            try:
                data = json.loads(stale.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and "blocksim_baseline" in data:
                stale.unlink()
    return written


def check_against_baseline(scenario_path, baseline_dir=DEFAULT_BASELINE,
                           tolerance: float = 0.05) -> Report:
    """Run one scenario and compare it with its baseline record (a report
    with a "only in the new runs" change when there is none)."""
    import tempfile
    record = baseline_record(scenario_path)
    name = baseline_file_name(record["scenario"])
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / name
        new.write_text(_record_text(record), encoding="utf-8")
        old = Path(baseline_dir) / name
        if not old.is_file():
            case = CaseReport(record["scenario"], 0, 1,
                              [Change("presence", record["scenario"], None, 1,
                                      f"no baseline record {old}")])
            return Report(str(old), str(new), tolerance, 0.01, [case], 0, 1)
        report = compare(old, new, tolerance=tolerance)
        report.new = f"{scenario_path} (seed {record['seed']})"
        return report
