"""Sizing thin-provisioning extension: the sweep file, and the tables that
answer "which chunk and threshold keep VM pauses under one a day?".

A *sweep file* (TOML; ``scenarios/sweeps/thin-sizing.sweep.toml``) names a
scenario (relative to the sweep file), the ``seeds``, the varied keys
(``[vary]``: key path -> values, as :func:`blocksim.analysis.sweep.sweep`
takes them), fixed overrides (``[set]``) and, under ``[small]``, what a quick run uses instead
(``seeds``, ``vary`` replacing those keys, ``set``: fixed overrides such as a
shorter ``duration``).  ``[names]`` gives each varied key a short name
(``chunk``, ``utilization``, ``rate``, ``latency``): the tables speak in
those.  ``[scale]`` multiplies a short name's values for the tables
(``rate = 64``: the scenario's ``rate-iops`` of 64 MiB requests, shown in
MiB/s).  ``[guests.NAME]``, optional, are guest patterns: the whole grid
runs once per pattern with its ``set`` overrides (such as a ``burst``
table) and its rate (the key named ``rate``) multiplied by ``rate-factor``,
so that every pattern has the same mean rate; the rows get a ``guest``
column.

From a sweep's rows:

- :func:`pause_table`: per combination, the runs, the share with at least
  one pause, pauses per day (all pauses over all simulated time) with the
  rule-of-three upper bound when none was seen, the distribution of pause
  lengths (median and longest of the runs' longest pause, paused time per
  day), extends per day and the space left free at the end.  With a
  ``chunk`` and a ``utilization`` (the controller's
  ``utilization-percent``), ``threshold`` is the free space below which the
  controller extends, ``chunk x (100 - utilization) / 100``.
- :func:`recommend`: per guest pattern, write rate and extend latency, the
  cheapest chunk and threshold (least free space left over) whose pause
  rate is under the target, or none.
- :func:`safe_threshold`: the free space a controller needs so that the
  guest cannot outrun one extend, ``rate x (cycle + latency)``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ScenarioError
from ..scenario.units import parse_duration, parse_size

__all__ = ["SizingSweep", "load_sweep_file", "run_sizing_sweep", "pause_table", "recommend",
           "safe_threshold", "DAY"]

DAY = 86400.0
#: What each short name is: a size, a duration or a number (for sorting and units).
_KINDS = {"chunk": "size", "threshold": "size", "latency": "duration", "rate": "number",
          "utilization": "number"}


@dataclass
class SizingSweep:
    """A sweep file, read: what :func:`run_sizing_sweep` runs."""

    path: Path
    scenario: Path
    seeds: int
    vary: dict[str, list[Any]]
    names: dict[str, str] = field(default_factory=dict)
    #: guest pattern -> (rate factor, fixed overrides); empty: one pattern
    guests: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    #: short name -> factor for the tables
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return (self.seeds * math.prod(len(v) for v in self.vary.values())
                * max(1, len(self.guests)))

    @property
    def rate_key(self) -> Optional[str]:
        return next((k for k, n in self.names.items() if n == "rate"), None)


def _problem(path: Path, key: str, message: str) -> ScenarioError:
    return ScenarioError(str(path), [(key, message)])


def load_sweep_file(path, small: bool = False) -> SizingSweep:
    """Read a sweep file (see the module doc); ``small``: its ``[small]``
    variant.  Bad files raise :class:`~blocksim.errors.ScenarioError` naming
    the file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _problem(path, "", "no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise _problem(path, "", f"invalid TOML: {exc}") from None
    scenario = raw.get("scenario")
    if not isinstance(scenario, str):
        raise _problem(path, "scenario", "the scenario file (relative to this file) is required")
    vary = raw.get("vary")
    if not isinstance(vary, dict) or not vary or not all(
            isinstance(v, list) and v for v in vary.values()):
        raise _problem(path, "vary", "a table of key path -> non-empty list of values is required")
    seeds = raw.get("seeds", 1)
    names = raw.get("names", {})
    vary = {k: list(v) for k, v in vary.items()}
    for key, value in raw.get("set", {}).items():
        vary[key] = [value]
    if small:
        part = raw.get("small", {})
        seeds = part.get("seeds", seeds)
        for key, values in part.get("vary", {}).items():
            if key not in vary:
                raise _problem(path, f"small.vary.{key}", "not a key of [vary]")
            vary[key] = list(values)
        for key, value in part.get("set", {}).items():
            vary[key] = [value]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise _problem(path, "seeds", f"must be an integer >= 1, got {seeds!r}")
    if not isinstance(names, dict) or any(k not in vary for k in names):
        raise _problem(path, "names", "a table of varied key path -> short name")
    guests: dict[str, tuple[float, dict[str, Any]]] = {}
    raw_guests = raw.get("guests", {})
    if not isinstance(raw_guests, dict):
        raise _problem(path, "guests", "a table of guest pattern name -> {rate-factor, set}")
    for gname, guest in raw_guests.items():
        if not isinstance(guest, dict) or set(guest) - {"rate-factor", "set"}:
            raise _problem(path, f"guests.{gname}", "a table with rate-factor and set only")
        factor = guest.get("rate-factor", 1)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise _problem(path, f"guests.{gname}.rate-factor",
                           f"must be a number > 0, got {factor!r}")
        overrides = guest.get("set", {})
        if not isinstance(overrides, dict):
            raise _problem(path, f"guests.{gname}.set", "a table of key path -> value")
        guests[gname] = (float(factor), dict(overrides))
    if any(f != 1 for f, _ in guests.values()) and not any(n == "rate" for n in names.values()):
        raise _problem(path, "names", "a guest's rate-factor needs a varied key named 'rate'")
    scale = raw.get("scale", {})
    if not isinstance(scale, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for v in scale.values()):
        raise _problem(path, "scale", "a table of short name -> factor > 0")
    target = (path.parent / scenario).resolve()
    return SizingSweep(path, target, seeds, vary, dict(names), guests,
                       {k: float(v) for k, v in scale.items()})


def run_sizing_sweep(sweep_file, small: bool = False, workers: Optional[int] = None, out=None,
                     progress: Optional[Callable[[int, int], None]] = None):
    """Run a sweep file; returns ``(SizingSweep, SweepResult)``.  With guest
    patterns, one sweep a pattern (in ``out/NAME`` with ``out``), their rows
    put together with a ``guest`` column and the rate key's mean value."""
    from .sweep import SweepResult, sweep
    plan = load_sweep_file(sweep_file, small=small)
    if not plan.guests:
        result = sweep(plan.scenario, plan.vary, seeds=plan.seeds, workers=workers, out=out,
                       progress=progress)
        return plan, result
    rows: list[dict[str, Any]] = []
    rate = plan.rate_key
    done = 0
    each = plan.runs // len(plan.guests)
    for gname, (factor, overrides) in plan.guests.items():
        vary = dict(plan.vary)
        if rate is not None and factor != 1:
            vary[rate] = [v * factor for v in vary[rate]]
        for key, value in overrides.items():
            vary[key] = [value]
        step = None if progress is None else (
            lambda d, _t, base=done: progress(base + d, plan.runs))
        part = sweep(plan.scenario, vary, seeds=plan.seeds, workers=workers,
                     out=None if out is None else Path(out) / gname, progress=step)
        for row in part.rows:
            row = dict(row)
            for key in overrides:
                row.pop(key, None)
            if rate is not None:
                row[rate] = row[rate] / factor
            rows.append({"guest": gname, **row})
        done += each
    definition = {"scenario_name": plan.scenario.stem, "runs": plan.runs,
                  "vary": {"guest": list(plan.guests), **plan.vary}}
    return plan, SweepResult(definition, rows)


def _value(kind: str, value: Any) -> float:
    if kind == "size":
        return float(parse_size(value))
    if kind == "duration":
        return parse_duration(value) / 1e9
    return float(value)


def pause_table(plan: SizingSweep, result, target_per_day: float = 1.0):
    """One row a combination (see the module doc), in the short names, with
    sizes in GiB and durations in seconds.  Columns: the names, ``runs``,
    ``failed``, ``share_paused``, ``pauses``, ``hours``, ``pauses_per_day``,
    ``pauses_per_day_upper`` (the one-sided 95 % upper bound of a Poisson
    rate: 3 pauses over the simulated time when none was seen), ``meets_target``,
    ``longest_median``, ``longest_max`` (s), ``paused_per_day`` (s),
    ``extends_per_day``, ``free_gib`` (mean space left free at the end),
    ``overallocation`` (mean physical / allocated)."""
    import pandas as pd
    from scipy.stats import chi2

    # the named keys (a fixed override such as a shorter duration is not one)
    names = dict(plan.names) if plan.names else {key: key for key in plan.vary}
    if plan.guests:
        names = {"guest": "guest", **names}
    groups: dict[tuple, list[dict]] = {}
    for row in result.rows:
        groups.setdefault(tuple(row.get(k) for k in names), []).append(row)
    out = []
    for values, rows in groups.items():
        ok = [r for r in rows if r.get("error") is None]
        entry: dict[str, Any] = {}
        for (key, name), value in zip(names.items(), values):
            kind = _KINDS.get(name)
            entry[name] = (value if kind is None
                           else _value(kind, value) / (2**30 if kind == "size" else 1)
                           * plan.scale.get(name, 1))
        if "chunk" in entry and "utilization" in entry and "threshold" not in entry:
            entry["threshold"] = entry["chunk"] * (100 - entry["utilization"]) / 100
        seconds = sum(r.get("simulated_seconds") or 0.0 for r in ok)
        pauses = sum(r.get("pauses.count") or 0 for r in ok)
        days = seconds / DAY if seconds else math.nan
        per_day = pauses / days if seconds else math.nan
        # the one-sided 95 % upper bound of a Poisson rate (3 for none seen:
        # the rule of three)
        upper = chi2.ppf(0.95, 2 * (pauses + 1)) / 2 / days if seconds else math.nan
        longest = sorted(r.get("pauses.longest") or 0.0 for r in ok)
        thin = [k for k in (ok[0] if ok else {}) if k.startswith("thin_images.")
                and k.endswith(".free")]
        free = [sum(r.get(k) or 0 for k in thin) for r in ok]
        over = [r.get(k.replace(".free", ".overallocation")) for r in ok for k in thin]
        over = [v for v in over if v is not None]
        entry.update({
            "runs": len(rows), "failed": len(rows) - len(ok),
            "share_paused": (sum(1 for r in ok if (r.get("pauses.count") or 0) > 0) / len(ok)
                             if ok else math.nan),
            "pauses": pauses, "hours": seconds / 3600,
            "pauses_per_day": per_day, "pauses_per_day_upper": upper,
            "meets_target": bool(ok) and per_day < target_per_day,
            "longest_median": longest[len(longest) // 2] if longest else math.nan,
            "longest_max": longest[-1] if longest else math.nan,
            "paused_per_day": (sum(r.get("pauses.total") or 0.0 for r in ok) / days
                               if seconds else math.nan),
            "extends_per_day": (sum(r.get("extends.count") or 0 for r in ok) / days
                                if seconds else math.nan),
            "free_gib": sum(free) / len(free) / 2**30 if free else math.nan,
            "overallocation": sum(over) / len(over) if over else math.nan,
        })
        out.append(entry)
    frame = pd.DataFrame(out)
    order = [n for n in ("guest", "rate", "latency", "chunk", "threshold") if n in frame.columns]
    return frame.sort_values(order).reset_index(drop=True) if order else frame


def recommend(table, target_per_day: float = 1.0, by=None):
    """Per ``by`` group (default: guest pattern, write rate and extend
    latency, those the table has), the chunk and threshold (and
    ``utilization``, when the table has it) with a pause rate under
    ``target_per_day`` that leave the least space free (ties: the smaller
    chunk, then the smaller threshold); ``chunk`` and ``threshold`` are NaN
    where no combination tried meets it."""
    import pandas as pd

    if by is None:
        by = tuple(n for n in ("guest", "rate", "latency") if n in table.columns)
    extra = ["utilization"] if "utilization" in table.columns else []
    rows = []
    for key, group in table.groupby(list(by), sort=True):
        good = group[group["pauses_per_day"] < target_per_day]
        entry = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if len(good):
            best = good.sort_values(["free_gib", "chunk", "threshold"]).iloc[0]
            entry.update({"chunk": best["chunk"], "threshold": best["threshold"],
                          **{c: best[c] for c in extra},
                          "pauses_per_day": best["pauses_per_day"],
                          "pauses_per_day_upper": best["pauses_per_day_upper"],
                          "free_gib": best["free_gib"], "hours": best["hours"]})
        else:
            worst = group.sort_values("pauses_per_day").iloc[0]
            entry.update({"chunk": math.nan, "threshold": math.nan,
                          **{c: math.nan for c in extra},
                          "pauses_per_day": worst["pauses_per_day"],
                          "pauses_per_day_upper": worst["pauses_per_day_upper"],
                          "free_gib": math.nan, "hours": worst["hours"]})
        rows.append(entry)
    return pd.DataFrame(rows)


def safe_threshold(rate_bytes: float, latency: float, poll: float) -> float:
    """The free space (bytes) below which a controller must ask for an
    extend so that a guest writing ``rate_bytes`` per second cannot run out
    before it is usable (``poll``: the monitor cycle that acts on the
    threshold event, or the polling period): what the guest writes between a cycle that just
    missed the threshold and the extend's end, ``rate x (poll + latency)``."""
    return rate_bytes * (poll + latency)


def _check(names: Mapping[str, str]) -> None:  # pragma: no cover - a hook for notebooks
    unknown = set(names.values()) - set(_KINDS)
    if unknown:
        raise ValueError(f"unknown short names: {sorted(unknown)}")
