"""The interactive timeline: the same story as :mod:`blocksim.record.plot`,
in a self-contained HTML page where every event and command shows its
details under the pointer.

Lanes, top to bottom, on one simulated-time axis: the VM's run state; each
job's status spans with its progress (offset / len); BLOCK_JOB_ERROR and
BLOCK_IO_ERROR events, one row per job or drive; every management command
(refused ones red, with QEMU's error); and every other event.  Hovering
shows an event's full ``data`` or a command's arguments and return.

plotly is an optional extra (``pip install 'blocksim[html]'``); without it
:func:`save_timeline_html` raises :class:`~blocksim.errors.BlocksimError`
naming the extra.  The page embeds plotly.js, so it opens offline, and is a
pure function of the result (a fixed element id, sorted keys).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BlocksimError
from .atomic import write_text
from .plot import (ACTION_COLORS, COMMAND_COLOR, JOB_COLORS, REFUSED_COLOR, VM_COLORS,
                   _command_label, _job_runs, _names, _seconds, _vm_runs)

__all__ = ["timeline_html", "save_timeline_html"]

#: Events drawn in their own lanes; every other one goes to the "events" lane.
_OWN_LANE = {"BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "STOP", "RESUME", "JOB_STATUS_CHANGE"}


def _plotly():
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise BlocksimError("the interactive timeline needs plotly: "
                            "pip install 'blocksim[html]'") from None
    return go, make_subplots


def _details(mapping: dict) -> str:
    return "<br>".join(f"{k}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(mapping.items()))


def _span_traces(go, runs, colors: dict, row_name: str, skip=(), named=None):
    """One horizontal bar a span, grouped by value; ``named`` holds the
    values already in the legend (each is named once)."""
    named = set() if named is None else named
    traces = []
    by_value: dict[str, list] = {}
    for start, width, value in runs:
        if value in skip or width <= 0:
            continue
        by_value.setdefault(value, []).append((start, width))
    for value, spans in by_value.items():
        traces.append(go.Bar(
            x=[w for _, w in spans], base=[s for s, _ in spans], y=[row_name] * len(spans),
            orientation="h", name=value, legendgroup=value, showlegend=value not in named,
            marker_color=colors.get(value, "#d7bde2"),
            hovertemplate=[f"{row_name}: {value}<br>from {s:.6f} s for {w:.6f} s<extra></extra>"
                           for s, w in spans]))
        named.add(value)
    return traces


def timeline_html(result) -> str:
    """The interactive timeline of ``result`` as a self-contained HTML page."""
    go, make_subplots = _plotly()
    series, summary = result.series, result.summary
    times = list(series.get("time", []))
    end = max([summary.get("simulated_seconds") or 0.0]
              + [_seconds(e["timestamp"]) for e in result.events] + times[-1:])
    jobs = [j for j in _names(series, "job.", ".status")
            if not all(s in ("none", "null") for s in series[f"job.{j}.status"])]
    errors = [e for e in result.events if e["event"] in ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR")]
    commands = [c for c in (result.commands or []) if "timestamp" in c]
    others = [e for e in result.events if e["event"] not in _OWN_LANE]
    named: set[str] = set()

    def hover(c):
        outcome = (f"<b>refused</b>: {_details(c['error'])}" if "error" in c
                   else f"return: {json.dumps(c.get('return'), sort_keys=True)[:400]}")
        return (f"<b>{c.get('execute')}</b> at {_seconds(c['timestamp']):.6f} s "
                f"({c.get('source', '')})<br>arguments:<br>{_details(c.get('arguments') or {})}"
                f"<br>{outcome}<extra></extra>")

    # (title, traces) a lane; a lane with nothing to show is left out
    lanes = [("run state", _span_traces(go, _vm_runs(result, times, end), VM_COLORS, "VM",
                                        named=named))]
    for job_id in jobs:
        statuses = series[f"job.{job_id}.status"]
        lanes.append((f"job {job_id}", _span_traces(
            go, _job_runs(result, job_id, times, statuses, end), JOB_COLORS, job_id,
            skip=("none", "null"), named=named)))
    if errors:
        lanes.append(("errors", [go.Scatter(
            x=[_seconds(e["timestamp"]) for e in errors],
            y=[f"{e['data'].get('device')} ({'job' if e['event'] == 'BLOCK_JOB_ERROR' else 'guest'})"
               for e in errors],
            mode="markers", name="errors", showlegend=False,
            marker=dict(color=[ACTION_COLORS.get(e["data"].get("action"), "black") for e in errors],
                        symbol=["triangle-down" if e["data"].get("operation") == "read" else "triangle-up"
                                for e in errors], size=10, line=dict(width=1, color="black")),
            hovertemplate=[f"<b>{e['event']}</b> at {_seconds(e['timestamp']):.6f} s<br>"
                           f"{_details(e['data'])}<extra></extra>" for e in errors])]))
    if commands:
        lanes.append(("commands", [go.Scatter(
            x=[_seconds(c["timestamp"]) for c in commands], y=[c.get("execute") for c in commands],
            mode="markers+text", text=[_command_label(c) for c in commands], textposition="middle right",
            textfont=dict(size=9), name="commands", showlegend=False,
            marker=dict(symbol=["x" if "error" in c else "line-ns-open" for c in commands], size=11,
                        color=[REFUSED_COLOR if "error" in c else COMMAND_COLOR for c in commands]),
            hovertemplate=[hover(c) for c in commands])]))
    if others:
        lanes.append(("events", [go.Scatter(
            x=[_seconds(e["timestamp"]) for e in others], y=[e["event"] for e in others],
            mode="markers", name="events", showlegend=False, marker=dict(size=9, color="#1f618d"),
            hovertemplate=[f"<b>{e['event']}</b> at {_seconds(e['timestamp']):.6f} s<br>"
                           f"{_details(e['data'])}<extra></extra>" for e in others])]))
    fig = make_subplots(rows=len(lanes), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[title for title, _ in lanes])
    for row, (_title, traces) in enumerate(lanes, start=1):
        for trace in traces:
            fig.add_trace(trace, row=row, col=1)
    titles = lanes
    name = summary.get("scenario") or result.scenario.get("name", "?")
    question = (result.scenario or {}).get("description") or ""
    fig.update_layout(
        title=dict(text=f"<b>{name}</b> — profile {result.profile}, seed {result.seed}"
                        + (f"<br><sup>{question}</sup>" if question else "")),
        barmode="overlay", height=180 + 150 * len(titles), hovermode="closest",
        template="plotly_white", legend=dict(title="states"))
    fig.update_xaxes(range=[0, end if end > 0 else 1])
    fig.update_xaxes(title_text="simulated time (s)", row=len(titles), col=1)
    return fig.to_html(full_html=True, include_plotlyjs=True, div_id="blocksim-timeline",
                       config={"displaylogo": False})


def save_timeline_html(result, path) -> Path:
    """Write the interactive timeline of ``result`` to ``path``, atomically."""
    return write_text(Path(path), timeline_html(result))
