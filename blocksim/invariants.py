"""Invariants checked at the end of every run.

A violation is part of the result (``summary["invariants"]["violations"]``),
never a crash and never silently dropped:

- ``legal-job-transitions``: every job status change is in the legal table;
- ``iostatus-sticky``: a drive's or job's io-status only changes away from a
  non-ok value through a reset (today), or only moves up (``rfc-2012`` jobs);
- ``guest-writes-durable``: every acknowledged guest write reads back at the
  end, unless its loss was recorded (``werror=ignore``, or a device fault
  that drops writes);
- ``mirror-target-identical``: a mirror that completed left a target that
  reads exactly as its source;
- ``stream-independent``: a stream that completed left a top image that reads
  the same without the backing files it dropped.
"""

from __future__ import annotations

from .extents import diff_ranges
from .iostatus import OK, _RANK

CHECKED = ("legal-job-transitions", "iostatus-sticky", "guest-writes-durable",
           "mirror-target-identical", "stream-independent")


def _iostatus_violations(owner: str, status) -> list[dict]:
    out = []
    for t, old, new, why in status.history:
        if why != "set" or old == OK:
            continue
        if status.ranked and _RANK[new] > _RANK[old]:
            continue
        out.append({"invariant": "iostatus-sticky", "subject": owner, "time": t / 1e9,
                    "detail": f"io-status changed from {old} to {new} without a reset"})
    return out


def guest_write_audit(drive) -> dict:
    """Compare what the guest believes it wrote with what the disk holds."""
    layers = drive.node.layers()
    lost_bytes = corrupt_bytes = 0
    lost_gens: set[int] = set()
    first_corrupt = None
    for expected, start, end in drive.expected_parts():
        for a, b, want, _got in diff_ranges([expected], layers, start, end):
            if want == 0:
                continue                      # the guest never wrote here
            if want in drive.lost:
                lost_bytes += b - a
                lost_gens.add(want)
            else:
                corrupt_bytes += b - a
                if first_corrupt is None:
                    first_corrupt = a
    return {"lost_bytes": lost_bytes, "lost_writes_visible": len(lost_gens),
            "corrupt_bytes": corrupt_bytes, "first_corrupt_offset": first_corrupt}


def check(sim, audits: dict[str, dict]) -> list[dict]:
    violations: list[dict] = []
    for job_id, job in sim.jobs.items():
        for t, old, new in job.illegal_transitions:
            violations.append({"invariant": "legal-job-transitions", "subject": job_id,
                               "time": t / 1e9, "detail": f"{old} -> {new}"})
        violations += _iostatus_violations(f"job {job_id}", job.iostatus)
        if job.outcome == "completed" and job.integrity == "differs":
            violations.append({"invariant": job.integrity_invariant, "subject": job_id,
                               "time": (job.finished_at or 0) / 1e9,
                               "detail": job.integrity_detail})
    for name, drive in sim.drives.items():
        violations += _iostatus_violations(f"drive {name}", drive.iostatus)
        audit = audits[name]
        if audit["corrupt_bytes"]:
            violations.append({
                "invariant": "guest-writes-durable", "subject": name, "time": sim.env.now / 1e9,
                "detail": (f"{audit['corrupt_bytes']} acknowledged bytes do not read back "
                           f"and no loss was recorded (first at offset "
                           f"{audit['first_corrupt_offset']})")})
    return violations
