"""Run a scenario on blocksim and on real QEMU, and compare.

For each scenario, :func:`check_scenario`

1. translates it (:mod:`blocksim.qemu.translate`): what QEMU can run without
   a guest, and what is skipped and why;
2. runs blocksim on the reduced scenario (profile ``qemu``);
3. runs QEMU: creates the images with ``qemu-img``, writes their initial data
   with ``qemu-io``, starts ``qemu-storage-daemon``, adds the nodes (blkdebug
   where faults apply), starts the jobs and carries out the actions over QMP
   in wall-clock time (scenario seconds = real seconds), records every event
   and command, then stops the daemon and checks the data with ``qemu-img``:
   ``compare`` source vs target after a mirror completed; after a stream,
   whether the top image still has a backing file and ``compare`` against a
   copy of the disk taken before the job; after a commit, ``compare`` of the
   base against a copy of the top taken before the job (and, intermediate,
   the overlay's backing file and the disk against its copy);
4. compares the two sides (:func:`compare`): per job, the normalised event
   sequence, the outcome, the error string, the data integrity and (stream)
   the backing file left; the sequence of commands with whether each was
   accepted or refused; and per drive with guest writes (``guest-burst``
   carried out by ``qemu-io`` over an NBD export of the drive's node, see
   :mod:`blocksim.qemu.translate`), how many of its writes succeeded and
   how many failed.

Normalised events, per job: ``JOB_STATUS_CHANGE <status>``,
``BLOCK_JOB_ERROR <operation> <action>``, ``BLOCK_JOB_READY``,
``BLOCK_JOB_PENDING``, ``BLOCK_JOB_COMPLETED [error=...]``,
``BLOCK_JOB_CANCELLED``; timestamps, ``len`` and ``offset`` are ignored, and a
storm of identical consecutive ``BLOCK_JOB_ERROR`` counts as one.

A difference the scenario file documents, with a comment line
``# qemu-check: difference <key>: <reason>`` (``<key>`` as in the report, e.g.
``job0.events``, ``job0.outcome`` or ``commands``), makes the scenario a
"documented difference" instead of a disagreement, as long as every
difference found is documented.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..management.actions import Trigger
from ..model.extents import diff_ranges
from ..scenario import Scenario, load_scenario
from ..simulation import Simulation
from .daemon import StorageDaemon, find_binary
from .errors import QemuError, QemuToolError, QMPCommandError, QMPError
from .translate import Plan, blocksim_node_names, image_steps, translate

__all__ = ["Tools", "SideResult", "ScenarioCheck", "find_tools", "check_scenario",
           "check_scenarios", "compare", "normalise_events", "documented_differences",
           "AGREE", "DISAGREE", "DOCUMENTED", "ERROR", "NOTHING"]

AGREE, DISAGREE, DOCUMENTED, ERROR, NOTHING = (
    "agree", "disagree", "documented difference", "error", "nothing to check")

TOOL_TIMEOUT = 120.0
#: How long the run waits, once nothing is left to do, for events not read
#: yet (seconds); each one that comes restarts the wait.
LAST_EVENTS_WAIT = 0.1
#: What is compared of each job's results (the report shows the same rows).
JOB_KEYS = ("outcome", "error", "integrity", "backing", "bitmap", "guest_on_target")
_END_EVENTS = ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")


# -- the tools ----------------------------------------------------------------------------
@dataclass
class Tools:
    qemu_storage_daemon: str
    qemu_img: str
    qemu_io: str
    version: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"qemu-storage-daemon": self.qemu_storage_daemon, "qemu-img": self.qemu_img,
                "qemu-io": self.qemu_io, "version": self.version}


def find_tools(qemu_storage_daemon: Optional[str] = None, qemu_img: Optional[str] = None,
               qemu_io: Optional[str] = None) -> Tools:
    """Locate the three QEMU tools (qemu-io is looked for next to qemu-img
    when qemu-img is given as a path).  Raises
    :class:`~blocksim.qemu.errors.QemuNotFoundError`."""
    qsd = find_binary("qemu-storage-daemon", qemu_storage_daemon)
    img = find_binary("qemu-img", qemu_img)
    io_default = None
    if qemu_io is None and qemu_img is not None and os.sep in qemu_img:
        sibling = Path(img).with_name("qemu-io")
        io_default = str(sibling) if sibling.exists() else None
    io = find_binary("qemu-io", qemu_io or io_default)
    return Tools(qsd, img, io, _version(qsd))


def _version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.strip().splitlines()[0] if out.strip() else ""
    match = re.search(r"version\s+(\S+(?:\s+\([^)]*\))?)", first)
    return match.group(1) if match else (first or "unknown")


def _run_tool(args: list[str], what: str, ok_codes: tuple[int, ...] = (0,),
              cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                              cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise QemuToolError(f"{what}: {Path(args[0]).name} did not finish within "
                            f"{TOOL_TIMEOUT:g}s") from None
    except OSError as exc:
        raise QemuToolError(f"{what}: cannot run {args[0]}: {exc.strerror or exc}") from None
    if proc.returncode not in ok_codes:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise QemuToolError(f"{what}: {Path(args[0]).name} failed (exit status "
                            f"{proc.returncode}){': ' + tail if tail else ''}")
    return proc


# -- results of one side ------------------------------------------------------------------
@dataclass
class SideResult:
    events: list[dict] = field(default_factory=list)      # as QMP prints them
    commands: list[dict] = field(default_factory=list)    # {"execute", "arguments", "return"|"error"}
    jobs: dict[str, dict] = field(default_factory=dict)   # outcome, error, integrity, ...
    error: Optional[str] = None
    seconds: float = 0.0
    #: drive -> "N written, M failed" (drives with guest writes)
    guest: dict[str, str] = field(default_factory=dict)
    #: drive -> each guest write's outcome, "offset+length ok|<error>" (QEMU side)
    guest_writes: dict[str, list[str]] = field(default_factory=dict)
    #: image -> its named bitmaps' dirty bytes at the end (runs with bitmaps)
    bitmaps: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "commands": self.commands, "jobs": self.jobs,
                "guest": self.guest, "guest_writes": self.guest_writes,
                "bitmaps": self.bitmaps, "error": self.error, "seconds": round(self.seconds, 3)}


@dataclass
class Difference:
    key: str            # job0.events, job0.outcome, commands, ...
    text: str

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


@dataclass
class ScenarioCheck:
    name: str
    path: str
    status: str
    plan: Optional[Plan]
    blocksim: SideResult
    qemu: SideResult
    differences: list[Difference] = field(default_factory=list)
    documented: dict[str, str] = field(default_factory=dict)   # key -> reason

    @property
    def ok(self) -> bool:
        return self.status in (AGREE, DOCUMENTED, NOTHING)

    @property
    def first_difference(self) -> Optional[str]:
        if self.status == ERROR:
            return self.qemu.error or self.blocksim.error
        return str(self.differences[0]) if self.differences else None

    def normalised(self, side: str) -> dict[str, list[str]]:
        result = self.blocksim if side == "blocksim" else self.qemu
        jobs = list(self.plan.jobs) if self.plan else []
        return normalise_events(result.events, jobs)

    def as_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "scenario": self.name, "path": self.path, "status": self.status,
            "first_difference": self.first_difference,
            "differences": [{"key": d.key, "text": d.text} for d in self.differences],
            "documented": self.documented,
            "skipped": [{"what": s.what, "reason": s.reason} for s in plan.skipped] if plan else [],
            "notes": list(plan.notes) if plan else [],
            "normalised": {"blocksim": self.normalised("blocksim"), "qemu": self.normalised("qemu")},
            "commands": {"blocksim": command_outcomes(self.blocksim.commands),
                         "qemu": command_outcomes(self.qemu.commands,
                                                  blocksim_node_names(plan.images) if plan else None)},
            "thresholds": {"blocksim": threshold_events(self.blocksim.events),
                           "qemu": threshold_events(self.qemu.events,
                                                    blocksim_node_names(plan.images) if plan else None)},
            "blocksim": self.blocksim.as_dict(),
            "qemu": self.qemu.as_dict(),
        }


# -- normalisation and comparison ------------------------------------------------------
def _event_key(event: dict) -> tuple[Optional[str], Optional[str]]:
    """(job id, normalised text) of an event, or (None, None) if not compared."""
    name, data = event.get("event"), event.get("data") or {}
    if name == "JOB_STATUS_CHANGE":
        return data.get("id"), f"JOB_STATUS_CHANGE {data.get('status')}"
    if name == "BLOCK_JOB_ERROR":
        return data.get("device"), f"BLOCK_JOB_ERROR {data.get('operation')} {data.get('action')}"
    if name == "BLOCK_JOB_COMPLETED":
        error = data.get("error")
        return data.get("device"), "BLOCK_JOB_COMPLETED" + (f" error={error}" if error else "")
    if name in ("BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED"):
        return data.get("device"), name
    if name == "BLOCK_JOB_PENDING":
        return data.get("id"), name
    return None, None


def normalise_events(events: list[dict], job_ids: list[str]) -> dict[str, list[str]]:
    """Per job, the compared events in order (identical consecutive
    BLOCK_JOB_ERRORs collapsed into one)."""
    out: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for event in events:
        job_id, text = _event_key(event)
        if job_id is None or text is None:
            continue
        seq = out.setdefault(job_id, [])
        if text.startswith("BLOCK_JOB_ERROR") and seq and seq[-1] == text:
            continue
        seq.append(text)
    return out


def threshold_events(events: list[dict], names: Optional[dict[str, str]] = None) -> list[str]:
    """The BLOCK_WRITE_THRESHOLD events in order, ``node amount-exceeded
    write-threshold``, node names as blocksim spells them (``names``: QEMU's
    node name -> blocksim's; absent = as they are)."""
    out = []
    for event in events:
        if event.get("event") != "BLOCK_WRITE_THRESHOLD":
            continue
        data = event.get("data") or {}
        node = data.get("node-name")
        node = names.get(node, node) if names is not None else node
        out.append(f"BLOCK_WRITE_THRESHOLD node={node} amount-exceeded={data.get('amount-exceeded')}"
                   f" write-threshold={data.get('write-threshold')}")
    return out


def command_outcomes(commands: list[dict], names: Optional[dict[str, str]] = None) -> list[str]:
    """``<command> ok`` or ``<command> refused (<class>: <desc>)`` per command
    (compared as is: the refusal's wording is part of the record).  A
    query-named-block-nodes shows each node's write_threshold, for the nodes
    ``names`` maps (QEMU's name -> blocksim's; absent = every node)."""
    out = []
    for c in commands:
        if "error" in c:
            err = c["error"]
            out.append(f"{c['execute']} refused ({err.get('class')}: {err.get('desc')})")
        elif c["execute"] == "query-named-block-nodes" and isinstance(c.get("return"), list):
            nodes = sorted(f"{names.get(n.get('node-name'), n.get('node-name')) if names is not None else n.get('node-name')}"
                           f" write_threshold={n.get('write_threshold')}"
                           for n in c["return"]
                           if names is None or n.get("node-name") in names)
            out.append(f"{c['execute']} ok [{'; '.join(nodes)}]")
        elif c["execute"] == "query-block-jobs" and isinstance(c.get("return"), list):
            jobs = [" ".join(f"{k}={job.get(k)}" for k in _QUERY_KEYS if k in job)
                    for job in c["return"]]
            out.append(f"{c['execute']} ok [{'; '.join(jobs)}]")
        elif c["execute"] == "query-jobs" and isinstance(c.get("return"), list):
            jobs = [" ".join(f"{k}={job.get(k)}" for k in _JOB_INFO_KEYS if k in job)
                    for job in c["return"]]
            out.append(f"{c['execute']} ok [{'; '.join(jobs)}]")
        else:
            out.append(f"{c['execute']} ok")
    return out


#: what is compared of a query-block-jobs entry (not len, offset, busy: timing)
_QUERY_KEYS = ("device", "type", "status", "paused", "ready", "io-status", "speed",
               "auto-finalize", "auto-dismiss", "error")
#: what is compared of a query-jobs entry (not the progress: timing)
_JOB_INFO_KEYS = ("id", "type", "status", "error")


def _first_difference(blocksim: list[str], qemu: list[str], what: str) -> str:
    """``<what> #n: blocksim '...', QEMU '...'`` at the first position where
    the two sequences differ (one may just be shorter)."""
    i = next((k for k, (x, y) in enumerate(zip(blocksim, qemu)) if x != y),
             min(len(blocksim), len(qemu)))
    left = blocksim[i] if i < len(blocksim) else f"(no more {what}s)"
    right = qemu[i] if i < len(qemu) else f"(no more {what}s)"
    return f"{what} #{i + 1}: blocksim {left!r}, QEMU {right!r}"


def compare(plan: Plan, sim: SideResult, qemu: SideResult) -> list[Difference]:
    """Every difference between the two sides, the most telling first."""
    diffs: list[Difference] = []
    jobs = list(plan.jobs)
    ev_b, ev_q = normalise_events(sim.events, jobs), normalise_events(qemu.events, jobs)
    for job_id in jobs:
        a, b = ev_b.get(job_id, []), ev_q.get(job_id, [])
        if a != b:
            diffs.append(Difference(f"{job_id}.events", _first_difference(a, b, "event")))
        jb, jq = sim.jobs.get(job_id, {}), qemu.jobs.get(job_id, {})
        for key in JOB_KEYS:
            if key not in jb and key not in jq:
                continue
            if key == "integrity" and jq.get(key) == "not-checked" and \
                    jq.get("integrity_detail"):
                # QEMU's side could not judge (a backup started after guest
                # writes: no copy of the disk at its point in time), so
                # blocksim's verdict has nothing to be compared with
                continue
            if jb.get(key) != jq.get(key):
                extra = ""
                if key == "integrity":
                    detail = jq.get("integrity_detail") or jb.get("integrity_detail")
                    extra = f" ({detail})" if detail else ""
                diffs.append(Difference(f"{job_id}.{key}", f"blocksim {jb.get(key)!r}, "
                                                           f"QEMU {jq.get(key)!r}{extra}"))
    names = blocksim_node_names(plan.images)
    tb, tq = threshold_events(sim.events), threshold_events(qemu.events, names)
    if tb != tq:
        diffs.append(Difference("thresholds", _first_difference(tb, tq, "event")))
    cb, cq = command_outcomes(sim.commands), command_outcomes(qemu.commands, names)
    if cb != cq:
        diffs.append(Difference("commands", _first_difference(cb, cq, "command")))
    for drive in plan.exports:
        gb, gq = sim.guest.get(drive), qemu.guest.get(drive)
        if gb != gq:
            diffs.append(Difference(f"guest.{drive}", f"blocksim {gb!r}, QEMU {gq!r}"))
    if sim.bitmaps != qemu.bitmaps:
        image = next(i for i in sorted(set(sim.bitmaps) | set(qemu.bitmaps))
                     if sim.bitmaps.get(i) != qemu.bitmaps.get(i))
        diffs.append(Difference(f"bitmaps.{image}", f"blocksim {sim.bitmaps.get(image)!r}, "
                                                     f"QEMU {qemu.bitmaps.get(image)!r}"))
    # events first, then outcomes, then commands: the order above
    return diffs


_DOC_LINE = re.compile(r"^\s*#\s*qemu-check:\s*(?:documented[ -])?difference\s+([^\s:]+)\s*:\s*(.*)$")


def documented_differences(path: str) -> dict[str, str]:
    """``key -> reason`` from ``# qemu-check: difference <key>: <reason>``
    comment lines (a reason continues on following ``#`` lines indented by
    at least two more spaces)."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    current = None
    for line in lines:
        match = _DOC_LINE.match(line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
            continue
        cont = re.match(r"^\s*#\s{3,}(\S.*)$", line)
        if current is not None and cont:
            out[current] = f"{out[current]} {cont.group(1).strip()}".strip()
        else:
            current = None
    return out


def overlay_backing(job, backing_of) -> Optional[str]:
    """The backing file of an intermediate commit's overlay, the image above
    its ``top`` (``backing_of(image)``: an image's backing file on that
    side).  The overlay is the scenario's image above ``top``, unless an
    earlier job dropped it from the drive's chain (an intermediate commit
    of that image): then it is the image of the chain as it is now whose
    backing file is ``top`` or ``base``.  (A dropped node keeps its own
    backing link, and QEMU's bdrv_drop_intermediate rewrites the backing
    file of every parent of the dropped ``top``, that node included: its
    header named the base on QEMU, its old backing in blocksim, found by
    grammar 8: fz8-2063.)"""
    chain, name = [], job.image
    while name is not None and name not in chain:
        chain.append(name)
        name = backing_of(name)
    overlay = job.overlay
    if overlay not in chain:
        overlay = next((n for n in chain if backing_of(n) in (job.top, job.base)), overlay)
    return backing_of(overlay)


# -- the blocksim side ---------------------------------------------------------------
def run_blocksim(plan: Plan) -> SideResult:
    t0 = time.monotonic()
    sim = Simulation(plan.reduced, profile="qemu")
    result = sim.run()
    jobs: dict[str, dict] = {}
    for job_id, entry in result.summary["jobs"].items():
        info = {"outcome": entry["outcome"], "error": entry["error"],
                "integrity": entry["integrity"], "integrity_detail": entry["integrity_detail"],
                "final_status": entry["final_status"]}
        job = plan.jobs[job_id]
        if job.type == "stream":
            top = sim.devices[job.image]
            info["backing"] = top.backing.name if top.backing is not None else None
        elif job.type == "commit" and job.overlay is not None:
            info["backing"] = overlay_backing(job, lambda name: (
                sim.devices[name].backing.name if sim.devices[name].backing is not None else None))
        elif job.type == "mirror" and _guest_ranges(plan, job):
            src, tgt = sim.devices[job.image], sim.devices[job.target]
            info["guest_on_target"] = _on_target(
                _guest_ranges(plan, job),
                lambda a, b: next(diff_ranges(src.layers(), tgt.layers(), a, b), None) is None)
        elif plan.jobs[job_id].type == "backup" and plan.jobs[job_id].bitmap is not None:
            named = sim.devices[plan.jobs[job_id].image].bitmaps.get(plan.jobs[job_id].bitmap)
            info["bitmap"] = named.count if named is not None else None
        jobs[job_id] = info
    commands = [{k: v for k, v in c.items() if k != "timestamp"} for c in result.commands]
    guest = {}
    for name in plan.exports:
        drive = sim.drives[name]
        guest[name] = _guest_figures(drive.writes - drive.guest_errors, drive.guest_errors)
    bitmaps = ({name: {b.name: b.count for b in sim.devices[name].bitmaps.values()}
                for name in plan.images if sim.devices[name].bitmaps} if plan.bitmaps else {})
    return SideResult(events=list(result.events), commands=commands, jobs=jobs,
                      seconds=time.monotonic() - t0, guest=guest, bitmaps=bitmaps)


def _guest_ranges(plan: Plan, job) -> list[tuple[int, int]]:
    """The guest writes of the plan on the drive of mirror ``job``, as
    ``(start, end)``."""
    drive = plan.scenario.jobs[job.id].device
    return [(off, off + length) for action in plan.actions
            if action.writes and action.arguments.get("drive") == drive
            for off, length in action.writes]


def _on_target(ranges: list[tuple[int, int]], same) -> str:
    """Whether the target holds what the source does in each guest write's
    range at the end (``same(start, end)``), as one line."""
    differ = sum(1 for a, b in ranges if not same(a, b))
    if not differ:
        return f"all {len(ranges)} guest writes' ranges as the source"
    return f"{differ} of {len(ranges)} guest writes' ranges differ from the source"


def _guest_figures(written: int, failed: int) -> str:
    return f"{written} written, {failed} failed"


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open ranges sorted, with overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(a: int, b: int, covered: list[tuple[int, int]]):
    """The parts of ``[a, b)`` outside the merged ranges ``covered``."""
    for c, d in covered:
        if d <= a or c >= b:
            continue
        if c > a:
            yield a, c
        a = max(a, d)
    if a < b:
        yield a, b


def _first_difference_at(x: bytes, y: bytes, a: int, b: int) -> Optional[int]:
    """The first offset in ``[a, b)`` where ``x`` and ``y`` differ, or None."""
    step = 1 << 16
    for pos in range(a, b, step):
        end = min(b, pos + step)
        if x[pos:end] != y[pos:end]:
            return next(i for i in range(pos, end) if x[i] != y[i])
    return None


# -- the QEMU side -------------------------------------------------------------------
class _QemuRun:
    """One run of a plan on qemu-storage-daemon, in ``workdir``."""

    def __init__(self, plan: Plan, tools: Tools, workdir: Path, qmp_timeout: float):
        self.plan = plan
        self.tools = tools
        self.dir = workdir
        self.qmp_timeout = qmp_timeout
        self.paths = {name: workdir / img.filename for name, img in plan.images.items()}
        self._names = blocksim_node_names(plan.images)     # QEMU node -> blocksim's
        self.refs: dict[str, Path] = {}
        self.result = SideResult()
        self.status: dict[str, Optional[str]] = {j: None for j in plan.jobs}
        self.started: set[str] = set()
        self.start_order: list[str] = []   # the jobs QEMU accepted, in order
        self.refused: set[str] = set()
        self.final_jobs: dict[str, dict] = {}       # query-block-jobs at the end, by device
        self.final_bitmaps: dict[str, dict[str, int]] = {}   # node -> bitmap -> count
        self.daemon: Optional[StorageDaemon] = None
        self.t0 = 0.0
        #: drive -> each guest write as (offset, length, pattern, ok), in order
        self.written: dict[str, list[tuple[int, int, int, bool]]] = {}
        #: job -> how many of its drive's guest writes were done when its
        #: BLOCK_JOB_COMPLETED (no error) came: a mirror or active commit
        self.completed_after: dict[str, int] = {}
        #: mirrors and active commits QEMU accepted a block-job-cancel of
        #: (no force) while READY: they complete without a pivot
        self.cancelled_ready: set[str] = set()
        #: backup job -> how many of its drive's guest writes were done
        #: when it was started (its point in time)
        self.started_after: dict[str, int] = {}

    # images --------------------------------------------------------------------
    def make_images(self) -> None:
        plan = self.plan
        paths = {name: str(path) for name, path in self.paths.items()}
        for args, what in image_steps(plan, paths, self.tools.qemu_img, self.tools.qemu_io):
            _run_tool(args, what, cwd=self.dir)
        for job in plan.jobs.values():
            if job.type in ("stream", "commit", "backup"):
                ref = self.dir / f"reference-{job.id}.raw"
                _run_tool([self.tools.qemu_img, "convert", "-O", "raw", str(self.paths[job.image]),
                           str(ref)], f"copying the disk of {job.type} job '{job.id}'", cwd=self.dir)
                self.refs[job.id] = ref
            if job.type == "commit" and job.top != job.image:
                ref = self.dir / f"reference-{job.id}-top.raw"
                _run_tool([self.tools.qemu_img, "convert", "-O", "raw", str(self.paths[job.top]),
                           str(ref)], f"copying the top of commit job '{job.id}'", cwd=self.dir)
                self.refs[f"{job.id}/top"] = ref

    # the timeline ----------------------------------------------------------------
    def run(self) -> SideResult:
        t_start = time.monotonic()
        self.make_images()
        self.daemon = StorageDaemon(self.tools.qemu_storage_daemon, timeout=self.qmp_timeout,
                                    workdir=str(self.dir / "daemon"))
        try:
            self.daemon.start()
            for name in self.plan.image_order():
                self._execute_checked("blockdev-add",
                                      self.plan.blockdev_options(name, str(self.paths[name])))
            self._start_exports()
            self._timeline()
            self._final_query()
        except QMPError as exc:
            raise self.daemon.explain(exc) from None
        finally:
            self.daemon.stop()
        self._job_results()
        for drive, outcomes in self.result.guest_writes.items():
            failed = sum(1 for o in outcomes if not o.endswith(" ok"))
            self.result.guest[drive] = _guest_figures(len(outcomes) - failed, failed)
        self.result.seconds = time.monotonic() - t_start
        return self.result

    # guest writes --------------------------------------------------------------------
    def _start_exports(self) -> None:
        """An NBD server on a unix socket and a writable export of each
        drive's node that has guest writes (named after the drive)."""
        if not self.plan.exports:
            return
        self.nbd_socket = self.dir / "nbd.sock"
        self._execute_checked("nbd-server-start", {
            "addr": {"type": "unix", "data": {"path": str(self.nbd_socket)}}})
        for drive, node in self.plan.exports.items():
            self._execute_checked("block-export-add", {
                "type": "nbd", "id": f"export-{drive}", "node-name": node,
                "name": drive, "writable": True})
            self.result.guest_writes[drive] = []
            self.written[drive] = []

    def _guest_burst(self, action) -> None:
        """A guest-burst's writes by qemu-io over the drive's export, one
        after the other (each waits for the previous one), with a byte
        pattern of its own; each write's outcome is recorded."""
        drive = action.arguments["drive"]
        self._burst_count = getattr(self, "_burst_count", 0) + 1
        pattern = 0x80 + self._burst_count % 0x70
        io = [self.tools.qemu_io, "-f", "raw", f"nbd+unix:///{drive}?socket={self.nbd_socket}"]
        for off, length in action.writes:
            io += ["-c", f"write -P {pattern} {off} {length}"]
        out = {"execute": action.command, "arguments": action.arguments,
               "source": action.source, "time": round(self._now(), 6)}
        proc = _run_tool(io, f"guest writes of {action.source} on drive '{drive}'",
                         ok_codes=(0, 1), cwd=self.dir)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines()
                 if line.startswith(("wrote ", "write failed"))]
        outcomes = self.result.guest_writes[drive]
        for (off, length), line in itertools.zip_longest(action.writes, lines[:len(action.writes)]):
            if line is None:
                outcomes.append(f"{off}+{length} not done")
            elif line.startswith("wrote "):
                outcomes.append(f"{off}+{length} ok")
            else:
                outcomes.append(f"{off}+{length} {line.split(':', 1)[-1].strip()}")
            self.written[drive].append((off, length, pattern,
                                        line is not None and line.startswith("wrote ")))
        out["return"] = {}
        self.result.commands.append(out)

    def _execute_checked(self, command: str, arguments: dict) -> Any:
        try:
            return self.daemon.qmp.execute(command, arguments)
        except QMPCommandError as exc:
            raise QemuError(f"qemu-storage-daemon refused {command} "
                            f"{json.dumps(arguments)[:200]}: {exc.desc}") from None

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _timeline(self) -> None:
        plan = self.plan
        queue: list[tuple[float, int, str, Any]] = []
        seq = itertools.count()
        for job in plan.jobs.values():
            if job.start is not None:
                heapq.heappush(queue, (job.start / 1e9, next(seq), "start", job.id))
        for action in plan.actions:
            if action.at is not None:
                heapq.heappush(queue, ((action.at + action.delay) / 1e9, next(seq), "action", action))
        triggers = self._triggers()
        duration = plan.duration / 1e9
        qmp = self.daemon.qmp
        self.t0 = time.monotonic()
        while True:
            while True:
                # the events already come (with the last command, or since)
                # are taken before anything else is sent: a job's completion
                # is seen before a guest write or command that follows it
                while True:
                    event = qmp.get_event(0)
                    if event is None:
                        break
                    self._on_event(event, queue, seq, triggers)
                if not (queue and queue[0][0] <= self._now() and queue[0][0] < duration):
                    break
                _due, _n, kind, item = heapq.heappop(queue)
                if kind == "start":
                    self._start_job(item, f"jobs.{item}")
                else:
                    self._action(item)
            now = self._now()
            if now >= duration:
                break
            if self._finished(queue):
                # the events the last command or guest write raised may not
                # have been read yet (a write threshold a final guest burst
                # crossed was lost when nothing came after it); one may
                # trigger an action still
                event = qmp.get_event(LAST_EVENTS_WAIT)
                if event is None:
                    break
                self._on_event(event, queue, seq, triggers)
                continue
            wake = min(duration, queue[0][0]) if queue else duration
            event = qmp.get_event(max(0.0, min(wake - now, 0.25)))
            if event is not None:
                self._on_event(event, queue, seq, triggers)

    def _triggers(self) -> dict[int, Trigger]:
        """Which events each `on` action reacts to (by plan index): the
        simulation's own rule (blocksim.management.actions.Trigger)."""
        return {i: Trigger.of(action) for i, action in enumerate(self.plan.actions)
                if action.on is not None}

    def _finished(self, queue) -> bool:
        if queue:
            return False
        return all(self.status[j] == "null" or j in self.refused or j not in self.started
                   for j in self.plan.jobs)

    def _on_event(self, event: dict, queue, seq, triggers) -> None:
        event = dict(event)
        self.result.events.append(event)
        name, data = event.get("event"), event.get("data") or {}
        if name == "JOB_STATUS_CHANGE" and data.get("id") in self.status:
            self.status[data["id"]] = data.get("status")
        if name == "BLOCK_JOB_COMPLETED" and not data.get("error"):
            job = self.plan.jobs.get(data.get("device"))
            if job is not None and (job.type == "mirror" or job.active):
                drive = self.plan.scenario.jobs[job.id].device
                self.completed_after[job.id] = len(self.written.get(drive, []))
        if name == "BLOCK_WRITE_THRESHOLD" and "node-name" in data:
            # an action's `match` names nodes as blocksim does: QEMU's file
            # node of an image with faults is IMAGE-fmt-file, blocksim's
            # IMAGE-file
            data = dict(data, **{"node-name": self._names.get(data["node-name"],
                                                              data["node-name"])})
        for i, trigger in triggers.items():
            if trigger.offer(name, data):
                action = self.plan.actions[i]
                heapq.heappush(queue, (self._now() + action.delay / 1e9, next(seq), "action",
                                       action))

    def _record(self, command: str, arguments: dict, source: str, qmp_command: str,
                qmp_arguments: dict) -> dict:
        record = self.daemon.qmp.execute_record(qmp_command, qmp_arguments)
        out = {"execute": command, "arguments": arguments, "source": source,
               "time": round(self._now(), 6)}
        out.update({k: v for k, v in record.items() if k in ("return", "error")})
        self.result.commands.append(out)
        return out

    def _start_job(self, job_id: str, source: str, as_command: Optional[str] = None,
                   arguments: Optional[dict] = None) -> None:
        job = self.plan.jobs[job_id]
        record = self._record(as_command or job.command, arguments or job.arguments, source,
                              job.command, job.arguments)
        self._started(job_id, "error" not in record)

    def _started(self, job_id: str, accepted: bool) -> None:
        """What a start command of ``job_id`` (alone or in a transaction) did."""
        if not accepted:
            if job_id not in self.started:
                self.refused.add(job_id)
        else:
            self.started.add(job_id)
            self.start_order.append(job_id)
            self.refused.discard(job_id)
            drive = self.plan.scenario.jobs[job_id].device
            self.started_after.setdefault(job_id, len(self.written.get(drive, [])))

    def _action(self, action) -> None:
        if action.command == "guest-burst":
            self._guest_burst(action)
            return
        if action.command == "job-start":
            job_id = action.arguments.get("id")
            if job_id in self.plan.jobs:
                self._start_job(job_id, action.source, "job-start", action.arguments)
                return
        record = self._record(action.command, action.arguments, action.source, action.command,
                              action.arguments)
        if action.command == "transaction":
            for entry in action.arguments["actions"]:
                if entry["type"] == "blockdev-backup":
                    self._started(entry["data"]["job-id"], "error" not in record)
            return
        job_id = action.arguments.get("device")
        if action.command == "block-job-cancel" and "error" not in record \
                and not action.arguments.get("force") and self.status.get(job_id) == "ready":
            # mirror.c:mirror_run leaves its loop (job_is_cancelled is false
            # without force: the job completes, BLOCK_JOB_COMPLETED) and
            # mirror_exit_common replaces no node (should_complete unset)
            self.cancelled_ready.add(job_id)

    def _final_query(self) -> None:
        try:
            jobs = self.daemon.qmp.execute("query-block-jobs")
            # the nodes only for the bitmaps' counts: QEMU 7.2's
            # qemu-storage-daemon dies (SIGSEGV) in query-named-block-nodes
            # while a completed stream waits for job-dismiss (found by
            # running it: scenarios/qemu/stream-concluded-holds-its-nodes)
            nodes = (self.daemon.qmp.execute("query-named-block-nodes", {"flat": True})
                     if self._query_nodes() else [])
        except QMPCommandError:  # pragma: no cover
            return
        self.final_jobs = {j.get("device"): j for j in jobs}
        self._stop_copying(jobs)
        # named bitmaps (anonymous ones are internal to a job)
        self.final_bitmaps = {n.get("node-name"): {b["name"]: b.get("count")
                                                   for b in n.get("dirty-bitmaps", []) if "name" in b}
                              for n in nodes}
        if self.plan.bitmaps and nodes:
            # (each image's bitmaps live on its format node)
            self.result.bitmaps = {name: self.final_bitmaps[img.fmt_node]
                                   for name, img in self.plan.images.items()
                                   if self.final_bitmaps.get(img.fmt_node)}

    def _query_nodes(self) -> bool:
        """Whether to ask the nodes' bitmaps at the end: a backup's bitmap,
        or any named bitmap, unless a stream waits for its dismiss (QEMU
        7.2's qemu-storage-daemon dies then, see _final_query)."""
        if any(j.bitmap is not None for j in self.plan.jobs.values()):
            return True
        return self.plan.bitmaps and not any(
            j.type == "stream" and not j.arguments.get("auto-dismiss", True)
            for j in self.plan.jobs.values())

    def _stop_copying(self, jobs: list[dict]) -> None:
        """Cancel (forced) the jobs still copying at the end, before the
        daemon quits: its exit closes the guest's NBD exports first
        (``blk_exp_close_all``), and closing one drains its node
        (``blk_unref`` -> ``blk_drain``), which enters a job asleep in its
        rate limit and lets it copy on (a mirror then re-copied the guest's
        writes that blocksim, ending the run there, leaves dirty: found by
        running QEMU, fz8-203).  A forced cancel ends the job at its next
        check, as the daemon's own ``job_cancel_sync_all`` does later; the
        events it sends come after the timeline and are not read."""
        if not self.plan.exports:
            return
        for job in jobs:
            if job.get("status") in ("running", "ready", "paused", "standby"):
                try:
                    self.daemon.qmp.execute("job-cancel", {"id": job.get("device")})
                except QMPCommandError:  # pragma: no cover
                    pass

    # results ---------------------------------------------------------------------
    def _job_results(self) -> None:
        per_job = normalise_events(self.result.events, list(self.plan.jobs))
        final = self.final_jobs
        for job_id, job in self.plan.jobs.items():
            seq = per_job.get(job_id, [])
            end = next((e for e in reversed(seq) if e.split()[0] in _END_EVENTS), None)
            status = self.status[job_id]
            if job_id in final:
                status = final[job_id].get("status", status)
            info: dict[str, Any] = {"final_status": status or "none", "error": None,
                                    "integrity": "not-checked", "integrity_detail": None}
            if end is not None:
                if end.startswith("BLOCK_JOB_CANCELLED"):
                    info["outcome"] = "cancelled"
                elif " error=" in end:
                    info["outcome"] = "completed-with-error"
                    info["error"] = end.split(" error=", 1)[1]
                else:
                    info["outcome"] = "completed"
            elif job_id in self.refused:
                info["outcome"] = "refused"
            elif job_id not in self.started:
                info["outcome"] = "not-started"
            elif status in ("paused", "standby"):
                info["outcome"] = "paused"
            elif status in ("waiting", "pending"):
                info["outcome"] = "pending"     # as blocksim's summary.job_outcome
            elif (job.type == "mirror" or job.active) and "BLOCK_JOB_READY" not in seq:
                info["outcome"] = "never-ready"
            else:
                info["outcome"] = "ready" if status == "ready" else "running"
            later = self._written_later(job) or self._written_before(job)
            if info["outcome"] == "completed" and later is not None:
                info["integrity_detail"] = later
            elif info["outcome"] == "completed":
                if job.type == "mirror":
                    self._mirror_integrity(job, info)
                elif job.type == "commit":
                    self._commit_integrity(job, info)
                elif job.type == "backup":
                    self._backup_integrity(job, info)
                else:
                    self._stream_integrity(job, info)
            if job.type == "backup" and job.bitmap is not None:
                info["bitmap"] = self._bitmap_count(job)
            if job.type == "mirror" and _guest_ranges(self.plan, job):
                src, tgt = self._raw(job.image), self._raw(job.target)
                info["guest_on_target"] = _on_target(_guest_ranges(self.plan, job),
                                                     lambda a, b: src[a:b] == tgt[a:b])
            if job.type == "stream":
                # (what the header says now, started or not: another job,
                # an intermediate commit, may have changed it)
                info["backing"] = self._backing_of(job.image)
            elif job.type == "commit" and job.overlay is not None:
                # (what the header says now: an earlier job may have changed it)
                info["backing"] = overlay_backing(job, self._backing_of)
            self.result.jobs[job_id] = info

    def _written_later(self, job) -> Optional[str]:
        """Why ``job``'s result cannot be judged from the images at the end:
        a job QEMU started after it writes into the image it wrote (a
        commit's base, a mirror's or backup's target) or into that image's
        backing chain, so the image no longer reads as ``job`` left it (found by grammar 8: an intermediate
        commit, then an active commit into the same base); a stream is
        judged by its top's backing file, which a later stream of the same
        top rewrites (fz8-2077)."""
        if job.type == "stream" and job.id in self.start_order:
            for other_id in self.start_order[self.start_order.index(job.id) + 1:]:
                other = self.plan.jobs[other_id]
                if other.type == "stream" and other.image == job.image:
                    return f"job '{other_id}' changed the backing file of '{job.image}' afterwards"
            return None
        own = job.base if job.type == "commit" else job.target
        if own is None or job.id not in self.start_order:
            return None
        # the image and its backing chain: a write below it shows through
        below, name = [], own
        while name is not None:
            below.append(name)
            name = self.plan.images[name].backing
        for other_id in self.start_order[self.start_order.index(job.id) + 1:]:
            other = self.plan.jobs[other_id]
            wrote = other.base if other.type == "commit" else other.target
            if wrote in below:
                return f"job '{other_id}' wrote into '{wrote}' afterwards"
            # an intermediate commit is judged by its overlay's backing file,
            # which a later stream of the overlay rewrites (fz8-211)
            if (job.type == "commit" and job.overlay is not None and other.type == "stream"
                    and other.image == job.overlay):
                return f"job '{other_id}' changed the backing file of '{job.overlay}' afterwards"
        return None

    def _written_before(self, job) -> Optional[str]:
        """Why an intermediate commit ``job`` cannot be judged against the
        copy of its top taken before the run: a job QEMU started before it
        wrote into its top or the top's backing chain (an active commit
        into the same base, cancelled when READY, leaves the whole disk in
        the base, which the top then reads where it allocates nothing), so
        the top no longer reads as that copy when the commit starts (found
        by grammar 8: fz8-2012)."""
        if job.type != "commit" or job.overlay is None or job.id not in self.start_order:
            return None
        below, name = [], job.top
        while name is not None:
            below.append(name)
            name = self.plan.images[name].backing
        for other_id in self.start_order[:self.start_order.index(job.id)]:
            other = self.plan.jobs[other_id]
            wrote = other.base if other.type == "commit" else other.target
            if wrote in below:
                return f"job '{other_id}' wrote into '{wrote}' before it started"
        return None

    def _compare(self, a: Path, fmt_a: str, b: Path, fmt_b: str, what: str) -> Optional[str]:
        proc = _run_tool([self.tools.qemu_img, "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                         what, ok_codes=(0, 1), cwd=self.dir)
        if proc.returncode == 0:
            return None
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "content differs"

    def _mirror_integrity(self, job, info: dict) -> None:
        """The target reads as the source at the job's completion (the
        verdict blocksim takes in jobs/mirror.py ``_verify``), see
        :meth:`_at_completion`."""
        src, tgt = self.plan.images[job.image], self.plan.images[job.target]
        later = self._later_writes(job)
        if later:
            detail = self._at_completion(job.image, job.target, later, "target",
                                         pivot=job.id not in self.cancelled_ready)
        else:
            detail = self._compare(self.paths[job.image], src.format, self.paths[job.target],
                                   tgt.format, f"comparing source and target of job '{job.id}'")
        info["integrity"] = "identical" if detail is None else "differs"
        info["integrity_detail"] = detail

    def _later_writes(self, job) -> list[tuple[int, int, int, bool]]:
        """The guest writes on the drive of a mirror or active commit
        ``job`` done after its BLOCK_JOB_COMPLETED (no error) came: after the
        pivot (mirror.c:mirror_exit_common, bdrv_replace_node) they go to
        the new active node (the target, the base) only; after a READY
        cancel (no pivot) to the source only."""
        done = self.completed_after.get(job.id)
        if done is None:
            return []
        return self.written.get(self.plan.scenario.jobs[job.id].device, [])[done:]

    def _at_completion(self, source: str, target: str, later, what: str,
                       pivot: bool = True) -> Optional[str]:
        """Whether ``target`` read as ``source`` (with its backing chain) at
        the job's completion, from the images at the end of the run (the
        daemon stopped, everything flushed) and the guest writes ``later``
        done after the completion: outside their ranges neither image has
        changed since (the source is off the drive's graph; the target
        gets only those writes), so the two must read the same there; in
        their ranges the target must hold what the last successful write
        of each byte wrote (the writes went to the new active node).  A
        failed write's range is left unchecked (its content is unknown).
        Without a ``pivot`` (a READY mirror cancelled: it completes, but
        the drive stays on the source) the writes went to the source, which
        must hold them instead (found by grammar 9, fz9-3: an active commit
        cancelled at READY).  None if so, else where it fails."""
        src, tgt = self._raw(source), self._raw(target)
        size = max(len(src), len(tgt))
        src, tgt = src.ljust(size, b"\0"), tgt.ljust(size, b"\0")
        excluded = _merge([(off, min(off + length, size)) for off, length, _p, _ok in later])
        pos = 0
        for a, b in excluded + [(size, size)]:
            first = _first_difference_at(src, tgt, pos, a)
            if first is not None:
                return (f"{what} differs from source at offset {first} (outside the guest's "
                        f"{len(later)} writes after the completion)")
            pos = max(pos, b)
        covered: list[tuple[int, int]] = []
        holder, name = (tgt, what) if pivot else (src, "source")
        for off, length, pattern, ok in reversed(later):
            end = min(off + length, size)
            for a, b in _subtract(off, end, covered):
                wrote = bytes([pattern]) * (b - a)
                if ok and holder[a:b] != wrote:
                    first = a + _first_difference_at(holder[a:b], wrote, 0, b - a)
                    return (f"the guest's write at {off}+{length} after the completion is not on "
                            f"the {name} at offset {first}")
            covered = _merge(covered + [(off, end)])
        return None

    def _bitmap_count(self, job) -> Optional[int]:
        """The dirty bytes of a backup's bitmap at the end (None: gone)."""
        img = self.plan.images[job.image]
        for node in (img.node, img.fmt_node):
            count = self.final_bitmaps.get(node, {}).get(job.bitmap)
            if count is not None:
                return count
        return None

    def _raw(self, name: str) -> bytes:
        img = self.plan.images[name]
        out = self.dir / f"content-{name}.raw"
        if not out.exists():
            _run_tool([self.tools.qemu_img, "convert", "-f", img.format, "-O", "raw",
                       str(self.paths[name]), str(out)], f"reading image '{name}'", cwd=self.dir)
        return out.read_bytes()

    def _backup_integrity(self, job, info: dict) -> None:
        """The target holds the source in every range the job was to copy
        (with no guest, the source at the end is the point in time; with
        guest writes all done after the job started, the copy of the disk
        taken before the run is)."""
        written = self.written.get(self.plan.scenario.jobs[job.id].device, [])
        if job.copy_ranges is None:
            info["integrity"] = "not-checked"
            info["integrity_detail"] = ("its bitmap may have changed before it started "
                                        "(another backup or a bitmap command)")
            return
        if written and self.started_after.get(job.id) == 0:
            src = self.refs[job.id].read_bytes()
        elif written:
            info["integrity"] = "not-checked"
            info["integrity_detail"] = "guest writes before the backup started"
            return
        else:
            src = self._raw(job.image)
        tgt = self._raw(job.target)
        total, first = 0, None
        for a, b in job.copy_ranges:
            if src[a:b] == tgt[a:b]:
                continue
            for x in range(a, b, 512):
                if src[x:x + 512] != tgt[x:x + 512]:
                    total += min(512, b - x)
                    first = x if first is None else first
        info["integrity"] = "identical" if first is None else "differs"
        info["integrity_detail"] = None if first is None else (
            f"target differs from source in {total} bytes of the copied ranges, first at {first}")

    def _stream_integrity(self, job, info: dict) -> None:
        top = self.plan.images[job.image]
        problems = []
        backing = self._backing_of(job.image)
        if backing != job.base:
            problems.append(f"backing file is {backing!r}, expected {job.base!r}")
        detail = self._disk_as_before(job)
        if detail is not None:
            problems.append(f"the disk does not read as before: {detail}")
        info["integrity"] = "differs" if problems else "identical"
        info["integrity_detail"] = "; ".join(problems) or None

    def _disk_as_before(self, job) -> Optional[str]:
        """Whether a stream's or an intermediate commit's disk reads as the
        copy taken before the run, with the guest's writes on the drive
        done over it (the last successful write of each byte; a failed
        write's range left unchecked).  None if so, else where it fails.
        Another job on the drive that may pivot it (a mirror, an active
        commit) makes it unknown what the image holds: passed unjudged."""
        top = self.plan.images[job.image]
        writes = self.written.get(self.plan.scenario.jobs[job.id].device, [])
        if not writes:
            return self._compare(self.refs[job.id], "raw", self.paths[job.image], top.format,
                                 f"comparing the disk of job '{job.id}' with its copy")
        device = self.plan.scenario.jobs[job.id].device
        if any(other.id != job.id and self.plan.scenario.jobs[other.id].device == device
               and (other.type == "mirror" or getattr(other, "active", False))
               for other in self.plan.jobs.values()):
            return None
        want = bytearray(self.refs[job.id].read_bytes())
        disk = self._raw(job.image)
        unknown: list[tuple[int, int]] = []
        for off, length, pattern, ok in writes:
            end = min(off + length, len(want))
            if ok:
                want[off:end] = bytes([pattern]) * (end - off)
                unknown = [(a, b) for a, b in unknown if b <= off or a >= end] + [
                    (a, off) for a, b in unknown if a < off < b] + [
                    (end, b) for a, b in unknown if a < end < b]
            else:
                unknown = _merge(unknown + [(off, end)])
        pos = 0
        for a, b in _merge(unknown) + [(len(want), len(want))]:
            first = _first_difference_at(bytes(want), disk, pos, a)
            if first is not None:
                return (f"Content mismatch at offset {first}! (the copy before the run with the "
                        f"guest's {len(writes)} writes over it)")
            pos = max(pos, b)
        return None

    def _commit_integrity(self, job, info: dict) -> None:
        """An active commit: the base reads as the top (with its chain)
        at the job's completion, as a mirror's target its source (blocksim's
        verdict in jobs/commit.py ``ActiveCommitJob._verify``; guest writes
        before the completion are in the top and copied to the base, those
        after it go to the base: see :meth:`_at_completion`).  An
        intermediate commit: the base reads as the top did when the job
        started (the copies taken before it, with no guest meanwhile); the
        overlay is backed by the base and the disk reads the same."""
        base = self.plan.images[job.base]
        problems = []
        if job.active:
            later = self._later_writes(job)
            if later:
                detail = self._at_completion(job.image, job.base, later, "base",
                                             pivot=job.id not in self.cancelled_ready)
            else:
                top = self.plan.images[job.image]
                detail = self._compare(self.paths[job.image], top.format, self.paths[job.base],
                                       base.format,
                                       f"comparing the base of job '{job.id}' with its top")
        else:
            top_ref = self.refs.get(f"{job.id}/top", self.refs[job.id])
            detail = self._compare(top_ref, "raw", self.paths[job.base], base.format,
                                   f"comparing the base of job '{job.id}' with its top")
        if detail is not None:
            problems.append(f"the base does not read as the top did: {detail}")
        if job.overlay is not None:
            backing = self._backing_of(job.overlay)
            if backing != job.base:
                problems.append(f"'{job.overlay}' is backed by {backing!r}, expected {job.base!r}")
            else:
                detail = self._disk_as_before(job)
                if detail is not None:
                    problems.append(f"the disk does not read as before: {detail}")
        info["integrity"] = "differs" if problems else "identical"
        info["integrity_detail"] = "; ".join(problems) or None

    def _backing_of(self, image: str) -> Optional[str]:
        fmt = self.plan.images[image].format
        if fmt != "qcow2":
            return None
        proc = _run_tool([self.tools.qemu_img, "info", "--output=json", "-f", fmt,
                          str(self.paths[image])], f"reading the header of image '{image}'",
                         cwd=self.dir)
        try:
            backing = json.loads(proc.stdout).get("backing-filename")
        except ValueError:
            raise QemuToolError(f"qemu-img info of image '{image}' is not JSON") from None
        if not backing:
            return None
        for name, path in self.paths.items():
            if os.path.basename(backing) == path.name or backing == str(path):
                return name
        if backing.startswith("json:"):
            # a node's pseudo-filename (block.c:bdrv_refresh_filename): a
            # blkdebug node over the new backing (a commit into a base under
            # faults), or a format node whose own backing was given
            # explicitly (a stream's base-node over a layer with faults).
            # The new backing is the image file the outermost node names,
            # not one nested in its own "backing".
            try:
                spec = json.loads(backing[len("json:"):])
            except ValueError:
                spec = None
            while isinstance(spec, dict) and isinstance(spec.get("image"), dict):
                spec = spec["image"]       # blkdebug's image
            file = spec.get("file") if isinstance(spec, dict) else None
            filename = file.get("filename") if isinstance(file, dict) else None
            for name, path in self.paths.items():
                if filename == str(path):
                    # qemu-img cannot open such a header again ("Can't
                    # specify 'file' and 'filename' options at the same
                    # time"): name the image file itself, the same data
                    # (blkdebug changes none), so the checks can read it
                    _run_tool([self.tools.qemu_img, "rebase", "-u", "-f", fmt, "-b",
                               str(path), "-F", self.plan.images[name].format,
                               str(self.paths[image])],
                              f"naming the backing file of image '{image}'", cwd=self.dir)
                    return name
            for name, path in self.paths.items():
                if json.dumps(str(path)) in backing:
                    return name
        return backing


def run_qemu(plan: Plan, tools: Tools, qmp_timeout: float = 10.0, keep: bool = False,
             log: Optional[Callable[[str], None]] = None) -> SideResult:
    """Run ``plan`` on qemu-storage-daemon in a temporary directory (removed
    afterwards unless ``keep``)."""
    workdir = Path(tempfile.mkdtemp(prefix="blocksim-qemu-check-"))
    try:
        return _QemuRun(plan, tools, workdir, qmp_timeout).run()
    finally:
        if keep:
            if log:
                log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# -- one scenario, many scenarios ---------------------------------------------------
def check_scenario(source, tools: Tools, qmp_timeout: float = 10.0, keep: bool = False,
                   log: Optional[Callable[[str], None]] = None) -> ScenarioCheck:
    """Check one scenario (a path or a loaded :class:`Scenario`).  QEMU-side
    failures (a daemon that dies or hangs, a tool that fails) make the
    status ``error``; they are not raised."""
    scenario = source if isinstance(source, Scenario) else load_scenario(source)
    path = scenario.source
    plan = translate(scenario)
    documented = documented_differences(path) if path and path != "<dict>" else {}
    if not plan.jobs and not plan.actions:
        # (commands alone, write thresholds with guest writes, are worth a run)
        return ScenarioCheck(scenario.name, path, NOTHING, plan, SideResult(), SideResult(),
                             documented=documented)
    sim = run_blocksim(plan)
    try:
        qemu = run_qemu(plan, tools, qmp_timeout=qmp_timeout, keep=keep, log=log)
    except QemuError as exc:
        qemu = SideResult(error=str(exc))
        return ScenarioCheck(scenario.name, path, ERROR, plan, sim, qemu, documented=documented)
    diffs = compare(plan, sim, qemu)
    if not diffs:
        status = AGREE
    elif all(d.key in documented for d in diffs):
        status = DOCUMENTED
    else:
        status = DISAGREE
    return ScenarioCheck(scenario.name, path, status, plan, sim, qemu, diffs, documented)


def check_scenarios(paths, tools: Tools, qmp_timeout: float = 10.0, keep: bool = False,
                    log: Optional[Callable[[str], None]] = None,
                    progress: Optional[Callable[[ScenarioCheck], None]] = None) -> list[ScenarioCheck]:
    """Check every scenario; all are loaded (validated) first."""
    scenarios = [load_scenario(p) for p in paths]
    out = []
    for scenario in scenarios:
        check = check_scenario(scenario, tools, qmp_timeout=qmp_timeout, keep=keep, log=log)
        out.append(check)
        if progress is not None:
            progress(check)
    return out
