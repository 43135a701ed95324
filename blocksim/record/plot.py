"""The timeline figure of a run: what happened, lane by lane, on one time axis.

:func:`timeline` draws one matplotlib figure whose lanes share the simulated
time axis (seconds), top to bottom:

``vm``
    the VM's run state as coloured spans (running, paused, io-error);
``job:ID`` (one per job)
    the job's status as coloured spans, with its progress (offset / len) as
    a black line from 0 to 1;
``errors``
    BLOCK_JOB_ERROR and BLOCK_IO_ERROR events, one row per job or drive,
    coloured by action (ignore, report, stop), a triangle down for a read and
    up for a write; errors too close together to tell apart (at the same
    instant, or a storm) are one marker labelled with their count (``×N``);
``commands``
    every management command at its time, labelled (``block-job-resume
    job0``); a refused one is a red cross labelled with QEMU's error class;
``iops`` and ``latency``
    the guest's completed requests per second and their mean latency
    (milliseconds) per drive;
``io-status``
    the io-status of each drive and job, as spans where it is not ``ok``;
``usage``
    the allocated bytes of each thin image (solid) against its capacity
    (dashed).

A job's lane also marks BLOCK_JOB_READY, BLOCK_JOB_COMPLETED and
BLOCK_JOB_CANCELLED where they happen, so a state too short to see still
shows.  States in which a job does not progress (paused, standby, aborting)
are warm colours, those in which it does cool ones; a legend names only the
states that are wide enough to see.  The scenario's question is the subtitle.

A lane with nothing to show (no errors, no commands, no guest I/O, io-status
always ok, no thin image) is left out.  Each lane's axes carry the id ``lane:NAME``
(``ax.get_gid()``); :func:`lanes` lists them.  The figure uses the Agg canvas
and never opens a window.
"""

from __future__ import annotations

import bisect
import math
import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .atomic import atomic_write

VM_COLORS = {"running": "#8fd18f", "paused": "#f5b041", "io-error": "#e74c3c"}
# Progressing states are cool (green, blue), states in which the job does
# not progress warm (paused, standby, aborting): a job stuck in standby must
# not look like a healthy ready one.
JOB_COLORS = {
    "created": "#d5d8dc",
    "running": "#8fd18f",
    "paused": "#f5b041",
    "ready": "#5dade2",
    "standby": "#eb984e",
    "waiting": "#bb8fce",
    "pending": "#bb8fce",
    "aborting": "#e74c3c",
    "concluded": "#909497",
}
#: Statuses drawn hatched over their colour (standby: paused while ready).
JOB_HATCHES = {"standby": "///"}
#: Job events marked on the job's lane, with their colour.
JOB_EVENT_MARKS = {"BLOCK_JOB_READY": ("READY", "#1f618d"),
                   "BLOCK_JOB_COMPLETED": ("COMPLETED", "#196f3d"),
                   "BLOCK_JOB_CANCELLED": ("CANCELLED", "#6c3483")}
COMMAND_COLOR = "#34495e"
REFUSED_COLOR = "#c0392b"
#: A span narrower than this share of the time axis cannot be seen (about a
#: pixel): it gets no legend entry.
_VISIBLE = 1 / 1000
#: Errors of one row, action and operation closer than this share of the
#: time axis are one marker with their count.
_CLUSTER = 1 / 250
#: Statuses drawn as one legend entry.
_JOB_LEGEND = {"waiting": "waiting/pending", "pending": "waiting/pending"}
IOSTATUS_COLORS = {"nospace": "#f5b041", "failed": "#e74c3c"}
ACTION_COLORS = {"ignore": "#7f8c8d", "report": "#2e86c1", "stop": "#c0392b"}
OP_MARKERS = {"read": "v", "write": "^"}
_FALLBACK_COLOR = "#d7bde2"
_LEGEND = dict(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small",
               frameon=False, borderaxespad=0.0)


def _seconds(timestamp: dict) -> float:
    return timestamp["seconds"] + timestamp["microseconds"] / 1e6


def _runs(times: list, values: list, end: float):
    """Consecutive equal values as ``(start, width, value)``; the value of a
    sample holds until the next sample (the last until ``end``)."""
    return _change_runs(list(zip(times, values)), end)


def _spans(ax, runs, colors: dict, y=0.0, height=1.0, skip=(), visible=0.0,
           hatches: dict | None = None) -> list[str]:
    """Draw coloured spans; returns the values with a span at least
    ``visible`` wide (for the legend: a value nobody can see is not named)."""
    drawn: list[str] = []
    by_value: dict[str, list] = {}
    for start, width, value in runs:
        if value in skip or width <= 0:
            continue                    # an instant (waiting, pending...) cannot show
        by_value.setdefault(value, []).append((start, width))
    for value, ranges in by_value.items():
        hatch = (hatches or {}).get(value)
        ax.broken_barh(ranges, (y, height), facecolors=colors.get(value, _FALLBACK_COLOR),
                       edgecolor="white" if hatch else "none", linewidth=0, hatch=hatch)
        if max(width for _, width in ranges) >= visible:
            drawn.append(value)
    return drawn


def _legend_patches(values, colors: dict, names: dict | None = None) -> list:
    handles, seen = [], set()
    for value in colors:                # in the palette's order
        if value not in values:
            continue
        label = (names or {}).get(value, value)
        if label in seen:
            continue
        seen.add(label)
        hatch = _HATCH_OF.get(id(colors), {}).get(value)
        handles.append(Patch(facecolor=colors[value], label=label, hatch=hatch,
                             edgecolor="white" if hatch else None))
    # (sorted: ``values`` may be a set of strings, whose order follows
    # PYTHONHASHSEED; the figure's bytes must not)
    for value in sorted(values):
        if value not in colors and value not in seen:
            seen.add(value)
            handles.append(Patch(facecolor=_FALLBACK_COLOR, label=value))
    return handles


_HATCH_OF = {id(JOB_COLORS): JOB_HATCHES}


def _clusters(times: list[float], gap: float) -> list[tuple[float, int]]:
    """Sorted times grouped where each is within ``gap`` of the previous:
    ``(first time, count)`` per group."""
    out: list[tuple[float, int]] = []
    last = None
    for t in sorted(times):
        if out and t - last <= gap:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((t, 1))
        last = t
    return out


def _command_label(command: dict) -> str:
    """``execute`` and the argument that says what it acts on."""
    args = command.get("arguments") or {}
    target = next((str(args[k]) for k in ("job-id", "id", "device", "image", "drive", "node-name")
                   if k in args), "")
    return f"{command.get('execute', '?')} {target}".strip()


def _top(values: list[float], floor: float = 1.0) -> float:
    """An upper y limit that leaves a constant or peaking series off the
    top edge."""
    peak = max(values, default=0.0)
    return peak * 1.15 if peak > 0 else floor


def _finite(values) -> list:
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def _vm_runs(result, times: list, end: float):
    """VM run-state spans, exact from STOP/RESUME events.  A stop's state
    (paused or io-error) is read from the samples taken while stopped, or, if
    none was, inferred from a stop-action BLOCK_IO_ERROR at the same instant."""
    states = result.series.get("vm.state", [])
    changes: list[tuple[float, str]] = [(0.0, "running")]
    last_stop_error = None
    for e in result.events:
        t = _seconds(e["timestamp"])
        if e["event"] == "BLOCK_IO_ERROR" and e["data"].get("action") == "stop":
            last_stop_error = t
        elif e["event"] == "STOP":
            changes.append((t, "io-error" if last_stop_error == t else "paused"))
        elif e["event"] == "RESUME":
            changes.append((t, "running"))
    if len(changes) == 1 and states and any(s != "running" for s in states):
        return _runs(times, states, end)        # no events: trust the samples
    for k, (t, state) in enumerate(changes):
        if state == "running":
            continue
        t_next = changes[k + 1][0] if k + 1 < len(changes) else end + 1.0
        seen = [s for ts, s in zip(times, states) if t <= ts < t_next and s != "running"]
        if seen:
            changes[k] = (t, seen[0])
    return _change_runs(changes, end)


def _change_runs(changes: list[tuple[float, str]], end: float):
    """Spans from ``(time, new value)`` changes, merging equal neighbours."""
    out: list[tuple[float, float, str]] = []
    for k, (t, value) in enumerate(changes):
        t_next = changes[k + 1][0] if k + 1 < len(changes) else end
        if out and out[-1][2] == value:
            start = out[-1][0]
            out[-1] = (start, max(t_next - start, 0.0), value)
        else:
            out.append((t, max(t_next - t, 0.0), value))
    return out


def _job_runs(result, job_id: str, times: list, statuses: list, end: float):
    """A job's status spans: exact from its JOB_STATUS_CHANGE events when the
    profile emits them, else from the samples."""
    changes = [(0.0, "none")]
    for e in result.events:
        if e["event"] == "JOB_STATUS_CHANGE" and e["data"].get("id") == job_id:
            changes.append((_seconds(e["timestamp"]), e["data"].get("status", "?")))
    if len(changes) == 1:
        return _runs(times, statuses, end)
    return _change_runs(changes, end)


def _error_events(result):
    rows: dict[str, list] = {}
    for e in result.events:
        if e["event"] == "BLOCK_JOB_ERROR":
            label = f"{e['data'].get('device')} (job)"
        elif e["event"] == "BLOCK_IO_ERROR":
            label = f"{e['data'].get('device')} (guest)"
        else:
            continue
        rows.setdefault(label, []).append(
            (_seconds(e["timestamp"]), e["data"].get("action", "?"),
             e["data"].get("operation", "?")))
    return rows


def _names(series: dict, prefix: str, suffix: str) -> list[str]:
    return [k[len(prefix):-len(suffix)] for k in series
            if k.startswith(prefix) and k.endswith(suffix)]


def _bytes_unit(peak: float) -> tuple[float, str]:
    for scale, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if peak >= scale:
            return scale, unit
    return 1, "B"


def timeline(result) -> Figure:
    """The timeline figure of ``result`` (see the module documentation)."""
    series = result.series
    summary = result.summary
    times = list(series.get("time", []))
    events_end = max((_seconds(e["timestamp"]) for e in result.events), default=0.0)
    end = max([summary.get("simulated_seconds") or 0.0, events_end] + times[-1:])

    visible = end * _VISIBLE
    lanes: list[tuple[str, float, object]] = []   # (gid, height ratio, draw function)

    # -- VM -----------------------------------------------------------------------
    if times or result.events:
        def draw_vm(ax):
            drawn = _spans(ax, _vm_runs(result, times, end), VM_COLORS, visible=visible)
            ax.set_ylim(0, 1)
            ax.set_yticks([])
            ax.set_ylabel("VM", rotation=0, ha="right", va="center")
            ax.legend(handles=_legend_patches(drawn, VM_COLORS), **_LEGEND)
        lanes.append(("vm", 0.55, draw_vm))

    # -- jobs -----------------------------------------------------------------------
    for job_id in _names(series, "job.", ".status"):
        statuses = series[f"job.{job_id}.status"]
        if all(s in ("none", "null") for s in statuses):
            continue

        def draw_job(ax, job_id=job_id, statuses=statuses):
            drawn = _spans(ax, _job_runs(result, job_id, times, statuses, end),
                           JOB_COLORS, skip=("none", "null"), visible=visible,
                           hatches=JOB_HATCHES)
            # marks close together share one label (READY then COMPLETED a
            # millisecond later reads "READY, COMPLETED")
            marks: list[tuple[float, list[str], str]] = []
            for e in result.events:
                mark = JOB_EVENT_MARKS.get(e["event"])
                if mark is None or e["data"].get("device") != job_id:
                    continue
                label, color = mark
                if e["event"] == "BLOCK_JOB_COMPLETED" and e["data"].get("error"):
                    label, color = "COMPLETED (error)", REFUSED_COLOR
                t = _seconds(e["timestamp"])
                if marks and t - marks[-1][0] <= end * _CLUSTER:
                    marks[-1][1].append(label)
                    marks[-1] = (marks[-1][0], marks[-1][1], color)
                else:
                    marks.append((t, [label], color))
            for t, labels, color in marks:
                ax.axvline(t, ymin=0.0, ymax=1.0, color=color, linewidth=1.0, linestyle=":")
                ax.annotate(", ".join(labels), (t, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", fontsize="x-small",
                            color=color, ha="left", va="top", clip_on=False)
            offsets = series.get(f"job.{job_id}.offset", [])
            lengths = series.get(f"job.{job_id}.len", [])
            progress = [o / n if (isinstance(n, (int, float)) and n and not math.isnan(n)
                                  and status not in ("none", "null")) else math.nan
                        for o, n, status in zip(offsets, lengths, statuses)]
            handles = _legend_patches(drawn, JOB_COLORS, _JOB_LEGEND)
            if _finite(progress):
                ax.plot(times[:len(progress)], progress, color="black", linewidth=1.2)
                handles.append(Line2D([], [], color="black", label="progress"))
            ax.set_ylim(-0.05, 1.05)
            ax.set_yticks([0, 1])
            job_type = summary.get("jobs", {}).get(job_id, {}).get("type", "job")
            ax.set_ylabel(f"{job_id}\n{job_type}\nprogress", rotation=0,
                          ha="right", va="center")
            ax.legend(handles=handles, **_LEGEND)
        lanes.append((f"job:{job_id}", 1.0, draw_job))

    # -- error events ----------------------------------------------------------------
    errors = _error_events(result)
    if errors:
        def draw_errors(ax):
            labels = sorted(errors)
            actions, ops = set(), set()
            for row, label in enumerate(labels):
                for (action, op) in sorted({(a, o) for _, a, o in errors[label]}):
                    groups = _clusters([t for t, a, o in errors[label]
                                        if a == action and o == op], end * _CLUSTER)
                    xs = [t for t, _ in groups]
                    ax.scatter(xs, [row] * len(xs), s=28, linewidths=0.5,
                               marker=OP_MARKERS.get(op, "o"),
                               color=ACTION_COLORS.get(action, "black"),
                               edgecolors="black", zorder=3, clip_on=False)
                    for t, n in groups:
                        if n > 1:
                            # a write's count above its marker, a read's below
                            # (both may stand at one instant)
                            below = op == "read"
                            ax.annotate(f"\u00d7{n}", (t, row), xytext=(5, -3 if below else 3),
                                        textcoords="offset points", fontsize="x-small",
                                        ha="left", va="top" if below else "bottom",
                                        clip_on=False)
                    actions.add(action)
                    ops.add(op)
            ax.set_ylim(-0.7, len(labels) - 0.3)
            ax.set_yticks(range(len(labels)), labels, fontsize="small")
            ax.invert_yaxis()
            ax.set_ylabel("errors", rotation=0, ha="right", va="center", labelpad=10)
            ax.grid(axis="y", color="#eeeeee")
            handles = [Line2D([], [], linestyle="none", marker="s", markersize=7,
                              color=ACTION_COLORS.get(a, "black"), label=a)
                       for a in list(ACTION_COLORS) + sorted(actions - set(ACTION_COLORS))
                       if a in actions]
            handles += [Line2D([], [], linestyle="none", marker=OP_MARKERS.get(o, "o"),
                               markerfacecolor="white", color="black", label=o)
                        for o in sorted(ops)]
            ax.legend(handles=handles, **_LEGEND)
        lanes.append(("errors", 0.45 + 0.3 * len(errors), draw_errors))

    # -- management commands ------------------------------------------------------------
    commands = [c for c in (result.commands or []) if "timestamp" in c]
    if commands:
        def draw_commands(ax):
            # labels on three staggered levels so neighbours do not overwrite
            # each other; repeats of one command close together are one label
            # with their count
            by_label: dict[tuple[str, bool], list[float]] = {}
            for c in commands:
                refused = "error" in c
                label = _command_label(c)
                if refused:
                    # named by QEMU's own words, cut to fit the lane
                    reason = c["error"].get("desc") or c["error"].get("class", "refused")
                    label += " \u2717 " + (reason if len(reason) <= 60 else reason[:59] + "\u2026")
                by_label.setdefault((label, refused), []).append(_seconds(c["timestamp"]))
            marks = sorted((t, n, label, refused) for (label, refused), ts in by_label.items()
                           for t, n in _clusters(ts, end * _CLUSTER))
            ends = [-1.0, -1.0, -1.0]   # where each level's last label ends (share of the lane)
            unlabelled = 0
            for k, (t, n, label, refused) in enumerate(marks):
                color = REFUSED_COLOR if refused else COMMAND_COLOR
                text = label + (f" \u00d7{n}" if n > 1 else "")
                # (a label that would run past the lane's right edge reads
                # leftwards from its mark when there is more room there, and
                # is cut to the room it has: a character of x-small text is
                # about 0.58 % of the lane, bold 0.62 %)
                per_char = 0.0062 if refused else 0.0058
                at = t / end if end else 0.0
                left = at + len(text) * per_char > 1 and at > 1 - at
                room = max(24, int((at if left else 1 - at) / per_char) - 1)
                if len(text) > room:
                    text = text[:room - 1] + "\u2026"
                # the first of the three levels where the label overwrites no
                # other; with none free (a controller's stream of commands)
                # the mark stays, unlabelled, and the legend counts it
                width = len(text) * per_char + 0.006
                span = (at - width, at) if left else (at, at + width)
                level = next((lv for lv in range(3) if ends[lv] < span[0]), None)
                ax.plot([t], [k % 3 if level is None else level], marker="X" if refused else "|",
                        markersize=8 if refused else 10, color=color, linestyle="none",
                        clip_on=False, zorder=3)
                if level is None:
                    unlabelled += 1
                    continue
                ends[level] = span[1]
                ax.annotate(text, (t, level), xytext=(-4 if left else 4, 0),
                            textcoords="offset points", fontsize="x-small", color=color,
                            ha="right" if left else "left", va="center",
                            clip_on=False, fontweight="bold" if refused else "normal")
            ax.set_ylim(-0.7, 2.7)
            ax.set_yticks([])
            ax.invert_yaxis()
            ax.set_ylabel("commands", rotation=0, ha="right", va="center", labelpad=10)
            handles = [Line2D([], [], linestyle="none", marker="|", markersize=10,
                              color=COMMAND_COLOR, label="accepted")]
            if unlabelled:
                handles.append(Line2D([], [], linestyle="none", label=f"({unlabelled} unlabelled)"))
            if any(refused for *_, refused in marks):
                handles.append(Line2D([], [], linestyle="none", marker="X", markersize=7,
                                      color=REFUSED_COLOR, label="refused"))
            ax.legend(handles=handles, **_LEGEND)
        lanes.append(("commands", 0.9, draw_commands))

    # -- guest I/O ---------------------------------------------------------------------
    drives = _names(series, "drive.", ".iops")
    if any(v for d in drives for v in _finite(series[f"drive.{d}.iops"])):
        def draw_iops(ax):
            for d in drives:
                ax.plot(times, series[f"drive.{d}.iops"], linewidth=1.0, label=d)
            ax.set_ylim(0, _top([v for d in drives for v in _finite(series[f"drive.{d}.iops"])]))
            ax.set_ylabel("guest IOPS\n(req/s)", rotation=0, ha="right", va="center")
            ax.legend(**_LEGEND)
        lanes.append(("iops", 1.1, draw_iops))
    latency = {d: series.get(f"drive.{d}.latency", []) for d in drives}
    if any(_finite(v) for v in latency.values()):
        def draw_latency(ax):
            for d, values in latency.items():
                ax.plot(times, [v * 1e3 for v in values], linewidth=1.0,
                        marker=".", markersize=2, label=d)
            ax.set_ylim(0, _top([v * 1e3 for values in latency.values() for v in _finite(values)]))
            ax.set_ylabel("mean latency\n(ms)", rotation=0, ha="right", va="center")
            ax.legend(**_LEGEND)
        lanes.append(("latency", 1.1, draw_latency))

    # -- io-status ------------------------------------------------------------------------
    owners = ([(f"drive {d}", f"drive.{d}.io-status") for d in
               _names(series, "drive.", ".io-status")]
              + [(f"job {j}", f"job.{j}.io-status") for j in _names(series, "job.", ".io-status")])
    owners = [(label, key) for label, key in owners if any(v != "ok" for v in series[key])]
    if owners:
        def draw_iostatus(ax):
            drawn: set[str] = set()
            for row, (label, key) in enumerate(owners):
                drawn.update(_spans(ax, _runs(times, series[key], end), IOSTATUS_COLORS,
                                    y=row - 0.4, height=0.8, skip=("ok",), visible=visible))
            ax.set_ylim(-0.6, len(owners) - 0.4)
            ax.set_yticks(range(len(owners)), [label for label, _ in owners],
                          fontsize="small")
            ax.invert_yaxis()
            ax.set_ylabel("io-status", rotation=0, ha="right", va="center", labelpad=10)
            ax.legend(handles=_legend_patches(drawn, IOSTATUS_COLORS), **_LEGEND)
        lanes.append(("io-status", 0.35 + 0.3 * len(owners), draw_iostatus))

    # -- thin devices -------------------------------------------------------------------------
    thin = [i for i in _names(series, "image.", ".capacity")
            if _finite(series[f"image.{i}.capacity"])]
    if thin:
        def draw_usage(ax):
            peak = max(max(_finite(series[f"image.{i}.capacity"])
                           + _finite(series.get(f"image.{i}.allocated", [])))
                       for i in thin)
            scale, unit = _bytes_unit(peak)
            for k, image in enumerate(thin):
                color = f"C{k % 10}"
                allocated = series.get(f"image.{image}.allocated", [])
                capacity = series[f"image.{image}.capacity"]
                ax.plot(times[:len(allocated)], [v / scale for v in allocated],
                        color=color, linewidth=1.3, label=f"{image} allocated")
                ax.plot(times[:len(capacity)], [v / scale for v in capacity],
                        color=color, linewidth=1.0, linestyle="--", drawstyle="steps-post",
                        label=f"{image} capacity")
            # the storage's side of the loop on each image's allocation line:
            # where a write crossed a write threshold, and where an extend
            # landed or failed (blocksim.model.thin)
            marks = {"threshold crossed": ("v", "#7f8c8d"), "extended": ("^", "#27ae60"),
                     "extend failed": ("X", REFUSED_COLOR)}
            points: dict[str, list[tuple[float, float]]] = {}
            for e in result.events:
                data = e.get("data") or {}
                if e["event"] == "BLOCK_WRITE_THRESHOLD":
                    what, image = "threshold crossed", str(data.get("node-name", ""))
                    image = image[:-5] if image.endswith("-file") else image
                elif e["event"] in ("VOLUME_EXTENDED", "VOLUME_EXTEND_FAILED"):
                    what = "extended" if e["event"] == "VOLUME_EXTENDED" else "extend failed"
                    image = data.get("image")
                else:
                    continue
                allocated = series.get(f"image.{image}.allocated") or []
                if image not in thin or not allocated:
                    continue
                t = _seconds(e["timestamp"])
                k = min(max(bisect.bisect_right(times, t) - 1, 0), len(allocated) - 1)
                points.setdefault(what, []).append((t, allocated[k] / scale))
            for what, (marker, color) in marks.items():
                if what in points:
                    xs, ys = zip(*points[what])
                    ax.plot(xs, ys, marker=marker, color=color, linestyle="none", markersize=5,
                            zorder=3, label=what)
            smallest = min(min(_finite(series[f"image.{i}.capacity"]), default=peak) for i in thin)
            if smallest > 0 and peak / smallest > 20:
                # an extend by orders of magnitude would flatten the small
                # capacity, where the story is: a log axis keeps both visible
                ax.set_yscale("log")
                ax.set_ylim(bottom=smallest / scale / 20, top=peak / scale * 2)
            else:
                ax.set_ylim(bottom=0, top=peak / scale * 1.08 or 1)
            ax.set_ylabel(f"thin usage\n({unit})", rotation=0, ha="right", va="center")
            ax.legend(**_LEGEND)
        lanes.append(("usage", 1.1, draw_usage))

    # -- assemble -----------------------------------------------------------------------------
    heights = [h for _, h, _ in lanes] or [1.0]
    fig = Figure(figsize=(12, 1.2 + 1.15 * sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    name = summary.get("scenario") or result.scenario.get("name", "?")
    fig.suptitle(f"{name}  \u2014  profile {result.profile}, seed {result.seed}",
                 fontweight="bold")
    # the scenario's question, above the first lane
    question = "\n".join(textwrap.wrap((result.scenario or {}).get("description") or "", 140))
    if not lanes:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "nothing was sampled", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(lanes), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    if question:
        axes[0].set_title(question, fontsize="small", style="italic", loc="left")
    for ax, (gid, _, draw) in zip(axes, lanes):
        ax.set_gid(f"lane:{gid}")
        draw(ax)
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", labelbottom=False)
    axes[-1].tick_params(axis="x", labelbottom=True)
    axes[-1].set_xlim(0, end if end > 0 else 1)
    axes[-1].set_xlabel("simulated time (s)")
    return fig


def lanes(fig: Figure) -> list[str]:
    """The lanes of a figure drawn by :func:`timeline`, top to bottom."""
    return [ax.get_gid()[len("lane:"):] for ax in fig.axes
            if (ax.get_gid() or "").startswith("lane:")]


def save_timeline(result, path, dpi: int = 110) -> Path:
    """Draw the timeline of ``result`` into ``path`` (format from its suffix,
    PNG by default), replacing the file only once it is fully written."""
    path = Path(path)
    fig = timeline(result)
    fmt = path.suffix[1:].lower() or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
