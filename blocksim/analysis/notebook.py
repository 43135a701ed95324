"""Pandas views and plot helpers for notebooks.

Everything here works on :class:`~blocksim.record.result.Result` objects (one run)
or on lists of them (many runs, e.g. a policy over seeds), and returns plain
pandas DataFrames with proper dtypes, or matplotlib ``(fig, ax)`` pairs that
the caller can restyle:

* times are ``float`` simulated seconds (``NaN`` when something never
  happened, e.g. a mirror that never became ready);
* counts and byte sizes are numeric (``int64``, or ``float64`` when a value
  can be missing);
* names and states (events, outcomes, statuses, actions, profiles) are
  ``category``.

Views of one run::

    events_frame(result)                # the event log, indexed by time
    series_frame(result)                # the sampled series, indexed by time
    commands_frame(result)              # every management command
    query_block_jobs_snapshots(result)  # the returns of query-block-jobs
    time_in_state(result, "job.job0.status")  # seconds spent in each state

Many runs::

    frame = runs_frame(results, params)  # one row per run
    outcome_shares(frame, by="policy")   # fraction of runs per outcome
    plot_outcomes(frame, by="policy")    # the same as stacked bars
    plot_heatmap(frame, x="speed", y="iops", value="ready_at")

The plot helpers draw on ``ax`` when given, else on a new pyplot figure
(which a notebook shows inline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
import pandas as pd

from ..model.profile import PROFILES
from ..record.results import column_kind

__all__ = [
    "OUTCOMES", "OUTCOME_COLORS", "JOB_FIELDS",
    "runs_frame", "events_frame", "series_frame", "commands_frame",
    "query_block_jobs_snapshots", "time_in_state", "outcome_shares", "plot_outcomes", "plot_heatmap",
]

#: Every job outcome a summary can report (``blocksim.record.summary.job_outcome``),
#: ends first, then states a job can be left in at the end of a run.
OUTCOMES = ("completed", "completed-with-error", "cancelled", "ready", "running",
            "paused", "never-ready", "refused", "not-started")

OUTCOME_COLORS = {
    "completed": "#27ae60",
    "completed-with-error": "#c0392b",
    "cancelled": "#8e44ad",
    "ready": "#5dade2",
    "running": "#a9dfbf",
    "paused": "#f5b041",
    "never-ready": "#e67e22",
    "refused": "#7f8c8d",
    "not-started": "#d5d8dc",
}

#: Per-job columns of :func:`runs_frame` and their dtypes.
JOB_FIELDS = {
    "outcome": "category",
    "ready_at": "float64",
    "finished_at": "float64",
    "time_paused": "float64",
    "bytes_copied": "int64",
    "job_errors": "int64",
    "error": "category",
    "integrity": "category",
}

_EVENT_NAMES = ("JOB_STATUS_CHANGE", "BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "BLOCK_JOB_READY",
                "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "STOP", "RESUME")


def _seconds(timestamp: Mapping[str, int]) -> float:
    return timestamp["seconds"] + timestamp["microseconds"] / 1e6


def _nan(value: Any) -> float:
    return np.nan if value is None else float(value)


def _categorical(values, categories: Sequence[str] = ()) -> pd.Categorical:
    """A categorical with ``categories`` first (in that order), then any other
    value seen, in order of appearance."""
    seen = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    cats = list(categories) + [v for v in seen if v not in categories]
    return pd.Categorical([v if isinstance(v, str) else None for v in values], categories=cats)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns become categorical, columns of only booleans (and gaps)
    nullable ``boolean``, numbers stay numeric."""
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            continue
        values = [v for v in s if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if values and all(isinstance(v, bool) for v in values):
            df[col] = s.astype("boolean")
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            for v in values):
            df[col] = pd.to_numeric(s)
        elif all(isinstance(v, str) for v in values):
            df[col] = _categorical(list(s))
    return df


# -- one run ------------------------------------------------------------------------

def events_frame(result) -> pd.DataFrame:
    """The event log of ``result``: one row per event, in log order, indexed
    by ``time`` (float seconds).  ``event`` and the text fields of the data
    (``device``, ``id``, ``status``, ``operation``, ``action``, ``type``,
    ``error`` ...) are categorical; ``len``, ``offset`` and ``speed`` are
    numeric (NaN where an event has no such field); ``seq`` is the event's
    position in the log (events at the same instant keep their order)."""
    rows: list[dict[str, Any]] = []
    for seq, e in enumerate(result.events):
        row = {"time": _seconds(e["timestamp"]), "seq": seq, "event": e["event"]}
        for key, value in e.get("data", {}).items():
            row[key if key not in row else f"data.{key}"] = value
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["time", "seq", "event"])
    df["time"] = df["time"].astype("float64")
    df["seq"] = df["seq"].astype("int64")
    df["event"] = _categorical(list(df["event"]), _EVENT_NAMES)
    for col in ("len", "offset", "speed"):
        if col in df:
            df[col] = pd.to_numeric(df[col]).astype("float64")
    df = _tidy(df)
    return df.set_index("time")


def series_frame(result) -> pd.DataFrame:
    """The sampled series of ``result``, indexed by ``time`` (float seconds).
    Columns as in :mod:`blocksim.record.probes`: states (``vm.state``,
    ``job.ID.status``, ``*.io-status``: the text columns of
    :func:`blocksim.record.results.column_kind`) are categorical, everything else is
    numeric (byte counts, IOPS, latency in seconds, capacity NaN when
    unlimited)."""
    df = pd.DataFrame(dict(result.series))
    if "time" not in df:
        df["time"] = pd.Series(dtype="float64")
    df["time"] = df["time"].astype("float64")
    for col in df.columns:
        if col == "time":
            continue
        if column_kind(col) == "str":
            df[col] = _categorical(list(df[col]))
        else:
            df[col] = pd.to_numeric(df[col])
    return df.set_index("time")


def commands_frame(result) -> pd.DataFrame:
    """Every management command of ``result`` (accepted or refused), indexed
    by ``time``: ``execute`` and ``source`` (categorical), ``ok`` (bool),
    ``error`` (QMP's refusal text or missing), ``arguments`` and ``return``
    (as recorded)."""
    rows = []
    for c in result.commands:
        rows.append({"time": _seconds(c["timestamp"]), "execute": c["execute"],
                     "source": c.get("source"), "ok": "error" not in c,
                     "error": c["error"]["desc"] if "error" in c else None,
                     "arguments": c.get("arguments", {}), "return": c.get("return")})
    df = pd.DataFrame(rows, columns=["time", "execute", "source", "ok", "error",
                                     "arguments", "return"])
    df["time"] = df["time"].astype("float64")
    df["ok"] = df["ok"].astype("bool")
    for col in ("execute", "source"):
        df[col] = _categorical(list(df[col]))
    return df.set_index("time")


def query_block_jobs_snapshots(result) -> pd.DataFrame:
    """What each ``query-block-jobs`` command of ``result`` returned: one row
    per job per query, indexed by the query's ``time`` (float seconds), with
    ``query`` (0, 1, ... for the n-th query), the QMP fields (``type``,
    ``device``, ``len``, ``offset``, ``busy``, ``paused``, ``speed``,
    ``io-status``, ``ready``, ``status``, ...) and ``progress``
    (``offset / len``).  A query that found no job gives no row; refused
    queries are left out."""
    rows = []
    n = 0
    for c in result.commands:
        if c["execute"] != "query-block-jobs" or "error" in c:
            continue
        for entry in c.get("return") or []:
            rows.append({"time": _seconds(c["timestamp"]), "query": n, **entry})
        n += 1
    if not rows:
        return pd.DataFrame({"query": pd.Series(dtype="int64"),
                             "progress": pd.Series(dtype="float64")},
                            index=pd.Index([], dtype="float64", name="time"))
    df = pd.DataFrame(rows)
    df["time"] = df["time"].astype("float64")
    for col in ("len", "offset", "speed"):
        if col in df:
            df[col] = pd.to_numeric(df[col])
    if "len" in df and "offset" in df:
        length = df["len"].astype("float64")
        df["progress"] = (df["offset"] / length.where(length > 0)).astype("float64")
    df = _tidy(df)
    return df.set_index("time")


def time_in_state(result, column: str) -> pd.Series:
    """Seconds spent in each value of a sampled state ``column`` (``vm.state``,
    ``job.ID.status``, ``drive.NAME.io-status`` ...), holding each sample's
    value until the next sample (the last one until the end of the run).
    The resolution is the scenario's ``sample-interval``.  Returns a float
    Series indexed by state, in order of first appearance, summing to the
    run's duration."""
    times = [float(t) for t in result.series.get("time", [])]
    values = list(result.series[column])
    end = max([float(result.summary.get("simulated_seconds") or 0.0)] + times[-1:])
    spent: dict[str, float] = {}
    for k, value in enumerate(values):
        stop = times[k + 1] if k + 1 < len(times) else end
        spent[value] = spent.get(value, 0.0) + max(stop - times[k], 0.0)
    out = pd.Series(spent, dtype="float64", name="seconds")
    out.index.name = column
    return out


# -- many runs ----------------------------------------------------------------------

ParamsArg = Union[None, Sequence[Mapping[str, Any]], Callable[[Any], Mapping[str, Any]]]


def _job_columns(entry: Mapping[str, Any]) -> dict[str, Any]:
    errors = entry.get("errors_by_action") or {}
    return {
        "outcome": entry.get("outcome"),
        "ready_at": _nan(entry.get("ready_at")),
        "finished_at": _nan(entry.get("finished_at")),
        "time_paused": _nan(entry.get("time_paused")),
        "bytes_copied": int(entry.get("bytes_copied") or 0),
        "job_errors": int(sum(errors.values())),
        "error": entry.get("error"),
        "integrity": entry.get("integrity"),
    }


def runs_frame(results: Iterable, params: ParamsArg = None,
               job: Optional[str] = None) -> pd.DataFrame:
    """One row per run.

    ``results`` is an iterable of :class:`~blocksim.record.result.Result`, or of
    ``(params, result)`` pairs.  ``params`` gives the varied parameters of each
    run as extra columns: a sequence of dicts aligned with ``results``, or a
    function of a result returning a dict.

    Columns: ``scenario``, ``profile`` (categorical), ``seed``, the parameter
    columns, then per job ``outcome`` (categorical, see :data:`OUTCOMES`),
    ``ready_at``, ``finished_at`` (float seconds, NaN when it never
    happened), ``time_paused`` (seconds), ``bytes_copied``, ``job_errors``
    (BLOCK_JOB_ERROR count), ``error`` (the error string of a failed job),
    ``integrity``; then the guest's side: ``vm_time_paused`` (seconds),
    ``vm_stops``, ``guest_requests``, ``guest_errors``, ``writes_lost``,
    ``lost_bytes``, ``corrupt_bytes``, ``guest_latency`` (mean seconds over
    all drives); and ``events``, ``refused_commands``, ``violations``.

    With one job (or ``job=ID``) the per-job columns have those plain names;
    with several jobs they are prefixed ``ID.`` (``mirror0.outcome``)."""
    items = list(results)
    if params is not None and not callable(params) and len(params) != len(items):
        raise ValueError(f"params has {len(params)} entries for {len(items)} results")
    pairs: list[tuple[dict, Any]] = []
    for k, item in enumerate(items):
        if isinstance(item, tuple):
            p, r = item
            p = dict(p)
        else:
            r, p = item, {}
        if callable(params):
            p = {**p, **dict(params(r))}
        elif params is not None:
            p = {**p, **dict(params[k])}
        pairs.append((p, r))

    job_ids: list[str] = []
    for _, r in pairs:
        for j in r.summary.get("jobs", {}):
            if j not in job_ids:
                job_ids.append(j)
    if job is not None:
        job_ids, plain = [job], True
    else:
        plain = len(job_ids) == 1

    param_keys = list(dict.fromkeys(k for p, _ in pairs for k in p))
    rows = []
    for p, r in pairs:
        s = r.summary
        row: dict[str, Any] = {"scenario": s.get("scenario"), "profile": r.profile,
                               "seed": int(r.seed)}
        for key in param_keys:
            row[key] = p.get(key)
        for j in job_ids:
            cols = _job_columns(s.get("jobs", {}).get(j) or {})     # a job a run lacks: gaps
            for key, value in cols.items():
                row[key if plain else f"{j}.{key}"] = value
        drives = s.get("drives", {}).values()
        requests = sum(d.get("requests", 0) for d in drives)
        latency_sum = sum((d.get("mean_latency") or 0.0) * d.get("requests", 0) for d in drives)
        vm = s.get("vm", {})
        row.update({
            "vm_time_paused": float(vm.get("time_paused", 0.0)),
            "vm_stops": int(vm.get("stops", 0)),
            "guest_requests": int(requests),
            "guest_errors": int(sum(d.get("guest_errors", 0) for d in drives)),
            "writes_lost": int(sum(d.get("writes_lost", 0) for d in drives)),
            "lost_bytes": int(sum(d.get("lost_bytes", 0) for d in drives)),
            "corrupt_bytes": int(sum(d.get("corrupt_bytes", 0) for d in drives)),
            "guest_latency": latency_sum / requests if requests else np.nan,
            "events": int(s.get("events", len(r.events))),
            "refused_commands": int(s.get("commands", {}).get("refused", 0)),
            "violations": len(s.get("invariants", {}).get("violations", [])),
        })
        rows.append(row)

    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["scenario"] = _categorical(list(df["scenario"]))
    df["profile"] = _categorical(list(df["profile"]), tuple(PROFILES))
    for j in job_ids:
        for key, dtype in JOB_FIELDS.items():
            col = key if plain else f"{j}.{key}"
            if key == "outcome":
                df[col] = _categorical(list(df[col]), OUTCOMES)
            elif dtype == "category":
                df[col] = _categorical(list(df[col]))
            else:
                df[col] = df[col].astype(dtype)
    for key in param_keys:
        if key in JOB_FIELDS:
            continue
        values = [v for v in df[key] if v is not None]
        if values and all(isinstance(v, str) for v in values):
            df[key] = _categorical(list(df[key]), list(dict.fromkeys(values)))
        elif values and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                            for v in values):
            df[key] = pd.to_numeric(df[key])
    return df


def _outcome_column(frame: pd.DataFrame, column: Optional[str]) -> str:
    if column is not None:
        return column
    if "outcome" in frame:
        return "outcome"
    found = [c for c in frame.columns if str(c).endswith(".outcome")]
    if len(found) == 1:
        return found[0]
    raise ValueError("say which outcome column to use (column=...): "
                     f"found {found or 'none'}")


def outcome_shares(frame: pd.DataFrame, by: Union[str, Sequence[str], None] = None,
                   column: Optional[str] = None) -> pd.DataFrame:
    """The fraction of runs ending in each outcome, per group of ``by``
    (a column or list of columns; ``None``: all runs as one group).  Rows are
    the groups, columns the outcomes seen (in :data:`OUTCOMES` order); each row
    sums to 1."""
    col = _outcome_column(frame, column)
    outcomes = frame[col]
    if not isinstance(outcomes.dtype, pd.CategoricalDtype):
        outcomes = pd.Series(_categorical(list(outcomes), OUTCOMES), index=frame.index)
    seen = [c for c in outcomes.cat.categories if (outcomes == c).any()]
    if by is None:
        counts = outcomes.value_counts().reindex(seen).to_frame("all").T
        counts.index.name = None
    else:
        keys = [by] if isinstance(by, str) else list(by)
        counts = pd.crosstab([frame[k] for k in keys], outcomes, dropna=False)
        counts = counts.reindex(columns=seen, fill_value=0)
        counts = counts[counts.sum(axis=1) > 0]
    counts.columns = pd.CategoricalIndex(counts.columns, categories=seen, name="outcome")
    shares = counts.div(counts.sum(axis=1), axis=0).astype("float64")
    return shares


def _new_ax(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def plot_outcomes(frame: pd.DataFrame, by: Union[str, Sequence[str], None] = None,
                  column: Optional[str] = None, ax=None, title: Optional[str] = None):
    """Stacked horizontal bars: for each group of ``by``, the fraction of runs
    per outcome (coloured as :data:`OUTCOME_COLORS`), with the number of runs
    at the end of each bar.  Returns ``(fig, ax)``."""
    shares = outcome_shares(frame, by=by, column=column)
    col = _outcome_column(frame, column)
    if by is None:
        totals = [len(frame)]
    else:
        keys = [by] if isinstance(by, str) else list(by)
        sizes = frame.groupby(keys, observed=True, sort=False)[col].size()
        totals = [int(sizes.get(idx, 0)) for idx in shares.index]
    fig, ax = _new_ax(ax, (7.5, 0.5 + 0.45 * len(shares)))
    labels = [", ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in shares.index]
    y = np.arange(len(shares))
    left = np.zeros(len(shares))
    for outcome in shares.columns:
        widths = shares[outcome].to_numpy()
        ax.barh(y, widths, left=left, color=OUTCOME_COLORS.get(outcome, "#d7bde2"),
                edgecolor="white", linewidth=0.5, label=str(outcome))
        left += widths
    for yi, n in zip(y, totals):
        ax.text(1.01, yi, f"n={n}", va="center", fontsize="small")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of runs")
    if by is not None:
        ax.set_ylabel(by if isinstance(by, str) else ", ".join(by))
    ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), frameon=False, fontsize="small",
              title=col)
    if title:
        ax.set_title(title)
    return fig, ax


def plot_heatmap(frame: pd.DataFrame, x: str, y: str, value: str, ax=None,
                 agg: Union[str, Callable] = "mean", cmap: str = "viridis_r",
                 fmt: str = "{:.1f}", missing: str = "never", annotate: bool = True,
                 colorbar_label: Optional[str] = None, vmin=None, vmax=None,
                 title: Optional[str] = None):
    """A heat map of ``value`` aggregated (``agg``, default mean) over the runs
    of each ``(x, y)`` cell.  Cells where the aggregate is NaN (e.g. every run
    of the cell never became ready) are hatched grey and labelled ``missing``.
    Rows (``y``) grow upwards.  Returns ``(fig, ax)``; the colour bar is
    ``ax.images[0].colorbar``."""
    table = frame.pivot_table(index=y, columns=x, values=value, aggfunc=agg,
                              observed=False, dropna=False)
    table = table.sort_index(axis=0).sort_index(axis=1)
    data = table.to_numpy(dtype="float64")
    fig, ax = _new_ax(ax, (1.2 + 0.9 * max(len(table.columns), 2),
                           1.0 + 0.55 * max(len(table.index), 2)))
    masked = np.ma.masked_invalid(data)
    image = ax.imshow(masked, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ny, nx = data.shape
    for iy in range(ny):
        for ix in range(nx):
            v = data[iy, ix]
            if np.isnan(v):
                ax.add_patch(_hatch(ix, iy))
                if annotate:
                    ax.text(ix, iy, missing, ha="center", va="center", fontsize="small",
                            color="#444444")
            elif annotate:
                rgba = image.cmap(image.norm(v))
                dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                ax.text(ix, iy, fmt.format(v), ha="center", va="center", fontsize="small",
                        color="white" if dark else "black")
    ax.set_xticks(range(nx), [_tick(v) for v in table.columns])
    ax.set_yticks(range(ny), [_tick(v) for v in table.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    cbar = fig.colorbar(image, ax=ax)
    cbar.set_label(colorbar_label or value)
    if title:
        ax.set_title(title)
    return fig, ax


def _hatch(ix: int, iy: int):
    from matplotlib.patches import Rectangle
    return Rectangle((ix - 0.5, iy - 0.5), 1, 1, facecolor="#eeeeee", edgecolor="#bbbbbb",
                     hatch="//", linewidth=0.0)


def _tick(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
