"""Checking properties (:class:`blocksim.scenario.explore.Property`) on a run.

:func:`check_fields` says which compared fields a run's summary does not have
(with a did-you-mean), before any search starts; :func:`broken` evaluates
every property on one run and returns what broke, with a one-line reason.
The run's invariants are always a property (``no-invariant-violations``).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.sweep import flatten_summary
from ..scenario.explore import Property, parse_property
from ..scenario.units import format_duration

__all__ = ["check_fields", "broken", "with_invariants", "INVARIANTS"]

INVARIANTS = "no-invariant-violations"


def with_invariants(texts: Sequence[str]) -> list[Property]:
    """The properties of a spec, ``no-invariant-violations`` first unless given."""
    props = [parse_property(t) for t in texts]
    if not any(p.text == INVARIANTS for p in props):
        props.insert(0, parse_property(INVARIANTS))
    return props


def _matching(pattern: str, flat: Mapping[str, Any]) -> list[str]:
    if "*" not in pattern:
        return [pattern] if pattern in flat else []
    parts = pattern.split(".")
    return [k for k in flat if len(k.split(".")) == len(parts)
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(k.split("."), parts))]


def check_fields(props: Sequence[Property], summary: Mapping[str, Any]) -> list[str]:
    """One message per property naming a field the summary does not have."""
    flat = flatten_summary(summary)
    problems = []
    for i, prop in enumerate(props):
        if prop.kind not in ("compare", "named") or not prop.field:
            continue
        if prop.kind == "named" and prop.field.startswith("drives.") and not summary.get("drives"):
            problems.append(f"[{i}] {prop.text!r}: the scenario has no drives")
            continue
        if not _matching(prop.field, flat):
            close = difflib.get_close_matches(prop.field, list(flat), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            tables = sorted({k.split('.')[0] for k in flat})
            problems.append(f"[{i}] {prop.text!r}: unknown field {prop.field!r}{hint} "
                            f"(fields are summary paths under {', '.join(tables)}; "
                            "blocksim run --json shows them)")
    return problems


def _ns(event: Mapping[str, Any]) -> int:
    ts = event["timestamp"]
    return ts["seconds"] * 1_000_000_000 + ts["microseconds"] * 1000


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "in":
            return left in right
        if op == "not in":
            return left not in right
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if left is None:
            return False
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    except TypeError:
        return False


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _paused_intervals(events, end_ns: int, subject: str) -> list[tuple[str, int, int]]:
    """(who, from, to) for every pause: a job's JOB_STATUS_CHANGE to paused
    until its next status change, or the VM's STOP until RESUME; a pause
    still open at the end lasts until the end of the run."""
    open_: dict[str, int] = {}
    out = []
    for ev in events:
        name, data, t = ev["event"], ev.get("data") or {}, _ns(ev)
        if subject == "job" and name == "JOB_STATUS_CHANGE":
            who = data.get("id")
            if data.get("status") == "paused":
                open_.setdefault(who, t)
            elif who in open_:
                out.append((who, open_.pop(who), t))
        elif subject == "vm" and name == "STOP":
            open_.setdefault("vm", t)
        elif subject == "vm" and name == "RESUME" and "vm" in open_:
            out.append(("vm", open_.pop("vm"), t))
    out += [(who, t, end_ns) for who, t in open_.items()]
    return out


def _subject(data: Mapping[str, Any]) -> Any:
    return data.get("id", data.get("device"))


def _matches(data: Mapping[str, Any], where) -> bool:
    return all(str(data.get(k)) == str(v) if not isinstance(v, (int, float)) else data.get(k) == v
               for k, v in where)


def _follows(prop: Property, events, end_ns: int) -> str | None:
    for i, ev in enumerate(events):
        if ev["event"] != prop.event or not _matches(ev.get("data") or {}, prop.where):
            continue
        t0, who = _ns(ev), _subject(ev.get("data") or {})
        deadline = t0 + prop.bound
        if deadline > end_ns:
            continue                    # the run ended before the deadline: undecided
        for later in events[i + 1:]:
            t, data = _ns(later), later.get("data") or {}
            if t > deadline:
                break
            if prop.then == "resume":
                if ev["event"] in ("BLOCK_IO_ERROR", "STOP"):
                    ok = later["event"] == "RESUME"
                else:
                    ok = (later["event"] == "JOB_STATUS_CHANGE" and data.get("id") == who
                          and data.get("status") == "running")
            else:
                ok = (later["event"] == prop.then and _matches(data, prop.then_where)
                      and (who is None or _subject(data) in (None, who)))
            if ok:
                break
        else:
            return (f"{ev['event']} at {format_duration(t0)}"
                    + (f" ({who})" if who is not None else "")
                    + f" not followed by {prop.then} within {format_duration(prop.bound)}")
    return None


def broken(props: Sequence[Property], summary: Mapping[str, Any],
           events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """``(index, reason)`` for every property of ``props`` the run breaks."""
    flat = flatten_summary(summary)
    end_ns = round(float(summary.get("simulated_seconds") or 0) * 1e9)
    out = []
    for i, prop in enumerate(props):
        reason = None
        if prop.text == INVARIANTS:
            violations = summary["invariants"]["violations"]
            if violations:
                first = violations[0]
                reason = f"invariant violated: {first.get('invariant', first) if isinstance(first, dict) else first}"
        elif prop.kind == "named" or prop.kind == "compare":
            op, value = (prop.op, prop.value) if prop.kind == "compare" else ("==", 0)
            for key in _matching(prop.field, flat):
                if not _compare(op, flat[key], value):
                    reason = f"{key} = {_show(flat[key])}, not {op} {_show(value)}"
                    break
        elif prop.kind == "longest":
            for who, t0, t1 in _paused_intervals(events, end_ns, prop.subject):
                if t1 - t0 > prop.bound:
                    still = " (still paused at the end)" if t1 == end_ns else ""
                    reason = (f"{prop.subject} {who if prop.subject == 'job' else ''}".rstrip()
                              + f" paused {format_duration(t1 - t0)} from {format_duration(t0)}{still}")
                    break
        elif prop.kind == "follows":
            reason = _follows(prop, events, end_ns)
        if reason:
            out.append((i, reason))
    return out
