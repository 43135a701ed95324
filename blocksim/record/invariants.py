"""Invariants checked at the end of every run.

A violation is part of the result (``summary["invariants"]["violations"]``),
never a crash and never silently dropped:

- ``legal-job-transitions``: every job status change is in the legal table;
- ``iostatus-sticky``: a drive's, node's or job's io-status only changes away
  from a non-ok value through a reset (today), or only moves up
  ok < failed < nospace (``rfc-2012`` jobs);
- ``guest-writes-durable``: every acknowledged guest write reads back at the
  end, unless its loss was recorded (``werror=ignore``, or a device fault
  that drops writes);
- ``mirror-target-identical``: a mirror that completed left a target that
  reads exactly as its source;
- ``stream-independent``: a stream that completed left a top image that reads
  the same without the backing files it dropped;
- ``commit-base-holds-top``: a commit that completed left a base that reads
  exactly as its top did (and, intermediate, a drive that reads the same
  without the layers it dropped; active, once pivoted, the drive is the base);
- ``backup-point-in-time``: a backup that completed left a target that holds,
  in every cluster it was to copy, what the source held when the job started
  (not what it holds at the end);
- ``active-mirror-in-sync``: an active mirror (``copy-mode =
  "write-blocking"``), once ready and actively synced, has nothing dirty and a
  target that reads as its source at every 100 ms poll, but where a guest
  write is in flight to both (checked by the job at each poll:
  ``MirrorJob.sync_violations``).
"""

from __future__ import annotations

import numpy as np

from ..model.extents import ExtentMap, diff_blocks, diff_ranges, run_arrays
from ..model.iostatus import _RANK, OK

CHECKED = ("legal-job-transitions", "iostatus-sticky", "guest-writes-durable",
           "mirror-target-identical", "stream-independent", "commit-base-holds-top",
           "backup-point-in-time")
#: checked too in a run with an active mirror (summary: ``checked_names``)
ACTIVE_MIRROR_CHECKED = "active-mirror-in-sync"


def checked_names(sim) -> list[str]:
    """The invariants a run checks: :data:`CHECKED`, and the active
    mirror's where one ran."""
    names = list(CHECKED)
    if any(getattr(job, "copy_mode", "background") != "background"
           for job in sim.jobs.values()):
        names.append(ACTIVE_MIRROR_CHECKED)
    return names


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
    """Compare what the guest believes it wrote with what the disk holds.

    Every byte of an acknowledged write (the last one to reach it, by
    acknowledgement) must read back with that write's generation.  A byte
    that does not is *lost* if its generation's loss was recorded in
    ``drive.lost`` and *corrupt* otherwise.  Returns the bytes of each kind,
    how many recorded losses are still visible, and the lowest corrupt
    offset (None if none).

    Two ways to the same figures:

    - the usual case, a disk without backing file and a guest writing
      same-size aligned blocks: the ledger's blocks, as arrays, against the
      disk's runs, as arrays (:func:`_audit_blocks`); a 1 TiB disk with
      millions of writes takes a fraction of a second;
    - anything else (a backing chain, mixed sizes): the ledger replayed
      into extent maps a page at a time and diffed run by run against the
      chain (:func:`_audit_maps`).
    """
    layers = drive.node.layers()
    # One layer: a 0 in it reads as zeros (with a backing file it would mean
    # "ask the layer below", which only the map path resolves).  Negative
    # offsets never come from a guest; the map path keeps whatever meaning
    # they had.  A top layer holding no 0 anywhere (an active commit's top
    # once written throughout) reads as itself alone, its chain unasked.
    if layers[0].size == drive.node.size and (
            len(layers) == 1 or layers[0].holds_no_zero()):
        order = drive.expected_blocks()
        if order is not None and order.block_range()[0] >= 0:
            return _audit_blocks(drive, layers[0], order)
    return _audit_maps(drive, layers)


def _audit_maps(drive, layers) -> dict:
    """:func:`guest_write_audit` for any drive: the ledger as maps, page by
    page (:meth:`Drive.expected_parts`), diffed with the chain's content."""
    lost_bytes = corrupt_bytes = 0
    lost_gens: set[int] = set()
    first_corrupt = None
    for expected, start, end in drive.expected_parts():
        for a, b, want, got in diff_ranges([expected], layers, start, end):
            if want == 0 or got in drive.landed:
                continue                      # never written here, or in flight
            if want in drive.lost:
                lost_bytes += b - a
                lost_gens.add(want)
            else:
                corrupt_bytes += b - a
                if first_corrupt is None:
                    first_corrupt = a
    return {"lost_bytes": lost_bytes, "lost_writes_visible": len(lost_gens),
            "corrupt_bytes": corrupt_bytes, "first_corrupt_offset": first_corrupt}


# How much one step of _audit_blocks holds: at most this many ledger writes
# and about this many runs of the disk (each costs some 100 bytes of numpy
# temporaries), so a step stays near 10 MiB whatever the disk's size or
# fragmentation, and a 1 TiB disk of millions of runs is still walked in
# about a hundred steps, which keeps numpy's per-call overhead negligible.
# A step also spans at most _STEP_PAGES pages of the map, so that a map of
# small pages with a few writes far apart is not walked page by page
# between them (the walk jumps from one written block to the next).
_STEP_WRITES = 1 << 16
_STEP_RUNS = 1 << 17
_STEP_PAGES = 1 << 12


def _audit_blocks(drive, content: ExtentMap, order) -> dict:
    """:func:`guest_write_audit` for a single-layer disk and a same-size
    aligned ledger: exact, and vectorised.

    The expected content is a set of disjoint blocks, each with the
    generation of its last acknowledged write (``order``, see
    :meth:`Drive.expected_blocks`), and nothing to check between them.  The
    disk is walked from the first written block to the last, in steps
    bounded by :data:`_STEP_WRITES`, :data:`_STEP_RUNS` and
    :data:`_STEP_PAGES` and jumping over regions never written; each step
    reads the disk's runs as arrays (:func:`~blocksim.model.extents.run_arrays`)
    and compares its blocks with them in one
    :func:`~blocksim.model.extents.diff_blocks` call, which returns the
    mismatching pieces as arrays.  A step's edges may cut a block or a run:
    the figures are sums over bytes, so where pieces are cut does not
    matter.  Pieces come in offset order, and
    steps too, so the first corrupt piece of the first step that has one is
    the lowest corrupt offset, as in :func:`_audit_maps`.

    Whether a generation's loss was recorded is asked of ``drive.lost``
    itself (one dict lookup per distinct mismatching generation), so the
    answer is exactly the dict's, whatever its keys.
    """
    lost = drive.lost
    bs = order.block_size
    first, last = order.block_range()
    end = min((last + 1) * bs, content.size)
    lost_bytes = corrupt_bytes = 0
    lost_gens: set[int] = set()
    first_corrupt = None
    a0 = first * bs
    while a0 < end:
        block = order.next_block(a0 // bs)  # skip what the guest never wrote
        if block is None:
            break
        a0 = max(a0, block * bs)
        if a0 >= end:
            break
        a1 = min(order.block_after(a0 // bs, _STEP_WRITES) * bs, end,
                 a0 + _STEP_PAGES * content.page_size)
        # only the pages the step's blocks touch are read (a few writes far
        # apart on a huge disk walk their pages, not the disk)
        found = order.blocks(a0 // bs, -(-a1 // bs))
        if found is None:
            a0 = a1
            continue
        touched = None
        page = content.page_size
        if bs <= page:                      # a block meets at most two pages
            # the first and the last page of each block, in offset order:
            # blocks are disjoint and sorted, so interleaved they are sorted
            # too, and the distinct ones are where neighbours differ
            shift = page.bit_length() - 1
            ends = np.empty(2 * len(found[0]), dtype=np.int64)
            ends[0::2] = np.maximum(found[0], a0) >> shift
            ends[1::2] = (np.minimum(found[0] + bs, a1) - 1) >> shift
            touched = ends[np.append(True, ends[1:] != ends[:-1])].tolist()
        # the disk's runs may end the step earlier (a fragmented region)
        a1, run_starts, run_values = run_arrays(content, a0, a1, max_runs=_STEP_RUNS,
                                                pages=touched)
        offsets, lengths, want, got = diff_blocks(run_starts, run_values, a1,
                                                  found[0], bs, found[1])
        written = want != 0              # a generation 0 is "never wrote here"
        if drive.landed:                 # (a write in flight at the end)
            written &= ~np.isin(got, np.fromiter(drive.landed, np.int64))
        if not written.all():
            offsets, lengths, want = offsets[written], lengths[written], want[written]
        if len(want):
            gens, which = np.unique(want, return_inverse=True)
            gen_lost = np.array([g in lost for g in gens.tolist()], dtype=bool)
            is_lost = gen_lost[which]
            lost_bytes += int(lengths[is_lost].sum())
            lost_gens.update(gens[gen_lost].tolist())
            corrupt = ~is_lost
            corrupt_bytes += int(lengths[corrupt].sum())
            if first_corrupt is None and corrupt.any():
                first_corrupt = int(offsets[corrupt][0])
        a0 = a1
    return {"lost_bytes": lost_bytes, "lost_writes_visible": len(lost_gens),
            "corrupt_bytes": corrupt_bytes, "first_corrupt_offset": first_corrupt}


def check(sim, audits: dict[str, dict]) -> list[dict]:
    violations: list[dict] = []
    for job_id, job in sim.jobs.items():
        for t, old, new in job.illegal_transitions:
            violations.append({"invariant": "legal-job-transitions", "subject": job_id,
                               "time": t / 1e9, "detail": f"{old} -> {new}"})
        violations += _iostatus_violations(f"job {job_id}", job.iostatus)
        for t, detail in getattr(job, "sync_violations", ()):
            violations.append({"invariant": "active-mirror-in-sync", "subject": job_id,
                               "time": t / 1e9, "detail": detail})
        if job.outcome == "completed" and job.integrity == "differs":
            violations.append({"invariant": job.integrity_invariant, "subject": job_id,
                               "time": (job.finished_at or 0) / 1e9,
                               "detail": job.integrity_detail})
    for name, dev in sim.devices.items():
        violations += _iostatus_violations(f"image {name}", dev.iostatus)
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
