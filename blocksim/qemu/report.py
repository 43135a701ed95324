"""The qemu-check report: blocksim and QEMU side by side, per scenario.

:func:`render_text` prints, for each scenario, its verdict (agree, disagree,
documented difference, error, nothing to check), each job's normalised events
and results in two aligned columns (``!`` marks a row that differs), the
commands with their replies, the skipped parts with their reasons, the
approximations, and the first difference; then a table of all scenarios and
the agreement figure.  :func:`render_json` gives the same as data.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional

from .check import AGREE, DISAGREE, DOCUMENTED, ERROR, JOB_KEYS, NOTHING, ScenarioCheck, Tools, command_outcomes

__all__ = ["render_text", "render_json", "counts", "agreement_line"]

COL = 44


def counts(checks: list[ScenarioCheck]) -> dict[str, int]:
    out = {AGREE: 0, DOCUMENTED: 0, DISAGREE: 0, ERROR: 0, NOTHING: 0}
    for c in checks:
        out[c.status] = out.get(c.status, 0) + 1
    out["checked"] = len(checks) - out[NOTHING]
    return out


def agreement_line(checks: list[ScenarioCheck], tools: Optional[Tools] = None) -> str:
    n = counts(checks)
    qemu = f"QEMU {tools.version}: " if tools and tools.version else ""
    parts = [f"{n[AGREE]} of {n['checked']} scenarios agree"]
    parts.append(f"{n[DOCUMENTED]} documented difference{'s' if n[DOCUMENTED] != 1 else ''}")
    parts.append(f"{n[DISAGREE]} disagree")
    parts.append(f"{n[ERROR]} error{'s' if n[ERROR] != 1 else ''}")
    if n[NOTHING]:
        parts.append(f"{n[NOTHING]} with nothing to check")
    return qemu + ", ".join(parts)


def _cut(text: Any, width: int = COL) -> str:
    text = "-" if text is None else str(text)
    return text if len(text) <= width else text[:width - 3] + "..."


def _pairs(left: list[str], right: list[str]) -> Iterable[tuple[str, str, bool]]:
    """Rows (left, right, same) aligned on their common subsequence."""
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for a, b in zip(left[i1:i2], right[j1:j2]):
                yield a, b, True
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            a = left[i1 + k] if i1 + k < i2 else ""
            b = right[j1 + k] if j1 + k < j2 else ""
            yield a, b, False


def _row(mark: str, label: str, left: Any, right: Any) -> str:
    return f"   {mark} {label:<12} {_cut(left):<{COL}} | {_cut(right)}".rstrip()


def _short_command(text: str) -> str:
    """``name ok`` / ``name refused (Class)``; the rest goes below the row."""
    name, _, rest = text.partition(" ")
    if rest.startswith("refused ("):
        return f"{name} refused ({rest[len('refused ('):].split(':', 1)[0]})"
    return f"{name} {rest.split(' ', 1)[0]}"


def _detail(text: str) -> str:
    """A refusal's class and description, or a query's compared fields."""
    _name, _, rest = text.partition(" ")
    if rest.startswith("refused ("):
        return rest[len("refused ("):-1]
    if rest.startswith("ok ["):
        return rest[3:]
    return ""


def _scenario_lines(check: ScenarioCheck) -> list[str]:
    lines = [f"== {check.name}: {check.status.upper()}   ({check.path})"]
    plan = check.plan
    if check.status == ERROR:
        lines.append(f"   error: {check.first_difference}")
    if plan is not None and check.status not in (NOTHING, ERROR):
        lines.append(f"     {'':<12} {'blocksim':<{COL}} | QEMU")
        ev_b, ev_q = check.normalised("blocksim"), check.normalised("qemu")
        for job_id, job in plan.jobs.items():
            lines.append(f"     job {job_id} ({job.type})")
            for a, b, same in _pairs(ev_b.get(job_id, []), ev_q.get(job_id, [])):
                lines.append(_row(" " if same else "!", "", a, b))
            jb, jq = check.blocksim.jobs.get(job_id, {}), check.qemu.jobs.get(job_id, {})
            for key in JOB_KEYS:
                if key not in jb and key not in jq:
                    continue
                same = jb.get(key) == jq.get(key)
                lines.append(_row(" " if same else "!", key, jb.get(key), jq.get(key)))
                if key == "integrity" and not same:
                    for side, info in (("blocksim", jb), ("QEMU", jq)):
                        if info.get("integrity_detail"):
                            lines.append(f"     {'':<12} {side}: {info['integrity_detail']}")
        cb, cq = command_outcomes(check.blocksim.commands), command_outcomes(check.qemu.commands)
        if cb or cq:
            lines.append("     commands")
            for a, b, same in _pairs(cb, cq):
                lines.append(_row(" " if same else "!", "", _short_command(a), _short_command(b)))
                if _detail(a) or _detail(b):
                    if same:
                        lines.append(f"     {'':<12} both: {_detail(a)}")
                    else:
                        for side, text in (("blocksim", a), ("QEMU", b)):
                            if _detail(text):
                                lines.append(f"     {'':<12} {side}: {_detail(text)}")
        for drive in (plan.exports if plan is not None else {}):
            gb, gq = check.blocksim.guest.get(drive), check.qemu.guest.get(drive)
            lines.append(f"     guest writes on {drive}")
            lines.append(_row(" " if gb == gq else "!", "", gb, gq))
            for outcome in check.qemu.guest_writes.get(drive, []):
                lines.append(f"     {'':<12} QEMU: {outcome}")
        images = sorted(set(check.blocksim.bitmaps) | set(check.qemu.bitmaps))
        if images:
            lines.append("     named bitmaps at the end (dirty bytes)")
        for image in images:
            bb, bq = check.blocksim.bitmaps.get(image), check.qemu.bitmaps.get(image)
            lines.append(_row(" " if bb == bq else "!", image, _bitmaps(bb), _bitmaps(bq)))
    if plan is not None:
        for s in plan.skipped:
            lines.append(f"   skipped: {s}")
        for note in plan.notes:
            lines.append(f"   approximation: {note}")
    if check.status == NOTHING:
        lines.append("   nothing to check: no block job can run on QEMU without a guest")
    if check.differences:
        lines.append(f"   first difference: {check.differences[0]}")
        for d in check.differences[1:]:
            lines.append(f"   also: {d}")
    for key, reason in check.documented.items():
        seen = any(d.key == key for d in check.differences)
        state = "documented" if seen else "documented, not seen in this run"
        lines.append(f"   {state}: {key}: {reason}")
    return lines


def render_text(checks: list[ScenarioCheck], tools: Optional[Tools] = None) -> str:
    out: list[str] = []
    if tools is not None:
        out.append(f"qemu-check: blocksim vs QEMU {tools.version} "
                   f"({tools.qemu_storage_daemon})")
        out.append("")
    for check in checks:
        out.extend(_scenario_lines(check))
        out.append("")
    width = max([len(c.name) for c in checks] + [8])
    out.append(f"{'scenario':<{width}}  {'result':<21}  first difference / reason")
    for c in checks:
        detail = c.first_difference or ""
        if c.status == DOCUMENTED:
            detail = "; ".join(f"{d.key}: {c.documented.get(d.key, '')}" for d in c.differences)
        out.append(f"{c.name:<{width}}  {c.status:<21}  {_cut(detail, 100)}".rstrip())
    out.append("")
    out.append(agreement_line(checks, tools))
    return "\n".join(out) + "\n"


def render_json(checks: list[ScenarioCheck], tools: Optional[Tools] = None) -> dict[str, Any]:
    n = counts(checks)
    return {"qemu": tools.as_dict() if tools else None,
            "summary": {**n, "line": agreement_line(checks, tools),
                        "ok": all(c.ok for c in checks)},
            "scenarios": [c.as_dict() for c in checks]}


def _bitmaps(counts) -> str:
    """``name=count`` of an image's named bitmaps, sorted by name."""
    return "-" if not counts else " ".join(f"{n}={c}" for n, c in sorted(counts.items()))
