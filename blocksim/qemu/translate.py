"""Scenario -> what real QEMU can run without a guest.

:func:`translate` splits a :class:`~blocksim.scenario.Scenario` into the part
qemu-storage-daemon can reproduce and the part it cannot, and says why for
each skipped item; nothing is dropped silently.

Expressed:

- images: ``qemu-img create -f qcow2|raw`` (cluster size, backing file with
  ``-b -F``), initial data written by ``qemu-io`` with a distinct byte
  pattern per extent, nodes opened with the image's ``discard`` option;
- error faults as ``blkdebug`` ``inject-error`` rules (iotype, errno, sector,
  once, immediately) on a blkdebug node put on top of the image's format node
  (``event = "none"`` makes a rule active from the start).  A fault over the
  whole image becomes a rule without a sector (every request, flushes too).
  Otherwise blkdebug matches a request *overlapping one sector* (and never a
  flush): the rule gets the first sector of the fault's range, and the
  blocksim side of the check gets the same one-sector range, so both sides
  fault the same requests (reported as an approximation);
- image bitmaps: ``qemu-img bitmap --add`` after the initial data, then the
  bitmap's dirty ranges written again with the same content (data: the
  extent's pattern; elsewhere a ``discard``, or ``write -z`` over a backing
  file), so that they, and only they, are dirty: one bitmap at a time, the
  others disabled meanwhile;
- block jobs: ``blockdev-mirror`` / ``block-stream`` / ``block-commit`` /
  ``blockdev-backup`` with job-id, speed, on-*-error, sync, granularity,
  buf-size, top-node, base-node, backing-file, bitmap, bitmap-mode, compress,
  auto-finalize, auto-dismiss; the drive a job names
  has no guest device in qemu-storage-daemon, so the job's ``device`` is the
  node of the drive's image.  A commit always names its ``base-node``: QEMU's
  default base follows filters down to the bottom format node, which would
  bypass a blkdebug node on the base;
- management actions at a time or on an event: block-job-*/job-* verbs,
  query-block-jobs, query-jobs, job-start (as the job's start command),
  block-dirty-bitmap-* (``node``, and a merge's ``{node, name}`` sources'
  nodes, the image's format node), transaction (its bitmap actions' nodes
  likewise, a blockdev-backup's data the job's start arguments),
  block-set-write-threshold and query-named-block-nodes (``IMAGE`` the
  node jobs name, ``IMAGE-file`` the format node's file node);
- a mirror's ``copy-mode`` (given to blockdev-mirror when write-blocking);
- guest writes: a ``guest-burst`` of sequential writes (``rw = "write"``,
  ``iodepth = 1``, at most :data:`MAX_GUEST_WRITES` of them) on a drive whose
  ``werror`` is ``report`` or ``enospc`` becomes writes by ``qemu-io`` to an
  NBD export of the drive's image node (``nbd-server-start`` on a unix
  socket, ``block-export-add`` writable), one after the other, each with its
  own byte pattern.  The export is a parent of the node, so a mirror's
  filter node (mirror_top, ``bdrv_append``) takes it over as a guest device's
  BlockBackend: its writes go through the job's write path.  The export
  reports every error to its client, as ``werror = "report"`` does.

Skipped (and named in the report): guest workloads, ``stop``/``cont``,
other ``guest-burst``s, ``thin-extend`` and thin capacities, thin volumes
(``lv-size``, ``pool``, ``[pools]``, ``[thin-provisioning]``, ``lv-extend``),
``query-block`` (no named BlockBackend in qemu-storage-daemon), flakey/dust/delay
faults, and error faults blkdebug cannot express (time windows,
probabilities, counts above 1, ``skip``, a one-shot rule over several
operations, faults on the top image of a stream, whose copy-on-read writes
below any filter).

:attr:`Plan.reduced` is the scenario without the skipped parts (and with the
narrowed fault ranges): the blocksim side runs *that*, so both sides run the
same thing.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

from ..jobs.backup import cluster_size
from ..model.faults import ERRNO
from ..model.named_bitmap import default_granularity
from ..scenario import (
    BackupJob,
    BitmapAction,
    CommitJob,
    ErrorFault,
    GuestBurstAction,
    MirrorJob,
    NoArgumentsAction,
    Scenario,
    StreamJob,
    ThinExtendAction,
    TransactionAction,
    load_scenario,
)
from ..scenario.units import format_size

__all__ = ["Plan", "ImagePlan", "JobPlan", "ActionPlan", "Skipped", "translate", "image_steps", "SECTOR",
           "qemu_node_name", "blocksim_node_names"]

SECTOR = 512
#: the most writes of one guest-burst that qemu-check carries out
MAX_GUEST_WRITES = 64
_NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,23}$")   # leaves room for suffixes

#: actions that need a guest, with the reason (thin-extend and guest-burst: see translate)
_GUEST_ONLY = {
    "stop": "needs a guest: qemu-storage-daemon has no VM run state to stop",
    "cont": "needs a guest: qemu-storage-daemon has no VM run state to continue",
}


@dataclass
class Skipped:
    """A part of the scenario the QEMU side does not run (``what`` is a key
    path such as ``faults.2`` or ``workloads.guest``)."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass
class ImagePlan:
    name: str
    format: str
    size: int
    cluster_size: int
    backing: Optional[str]            # image name
    extents: list[tuple[int, int, int]]   # (offset, length, byte pattern)
    discard: str = "ignore"           # the nodes' discard option, as the scenario says
    rules: list[dict[str, Any]] = field(default_factory=list)   # blkdebug inject-error
    node: str = ""                    # the node jobs and backing links name
    fmt_node: str = ""                # the format node (== node without faults)
    # persistent bitmaps at the start: (name, granularity, recording, dirty ranges)
    bitmaps: list[tuple[str, int, bool, list[tuple[int, int]]]] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{self.node}.{self.format}"


@dataclass
class JobPlan:
    id: str
    type: str
    command: str                      # blockdev-mirror / block-stream
    arguments: dict[str, Any]
    start: Optional[int]              # ns, or None: started by an action
    image: str                        # the drive's image (mirror source / stream top)
    target: Optional[str] = None      # mirror target image
    base: Optional[str] = None        # stream / commit base image
    top: Optional[str] = None         # commit top image
    overlay: Optional[str] = None     # intermediate commit: the image backed by top
    active: bool = False              # an active commit (mirror-like: READY, complete)
    #: backup: the byte ranges the job is to copy (the point-in-time check's)
    # None: not known beforehand (the bitmap may have changed before the start)
    copy_ranges: Optional[list[tuple[int, int]]] = field(default_factory=list)
    bitmap: Optional[str] = None      # backup: the bitmap it uses


@dataclass
class ActionPlan:
    index: int                        # in the reduced scenario (what blocksim records)
    original: int                     # in the scenario file
    command: str
    arguments: dict[str, Any]
    at: Optional[int]                 # ns
    on: Optional[str]
    match: dict[str, Any]
    delay: int                        # ns
    repeat: bool
    nth: Optional[int] = None
    after: Optional[str] = None
    after_match: dict[str, Any] = field(default_factory=dict)
    #: guest-burst: the writes ``(offset, length)`` qemu-io carries out, in
    #: order, on the NBD export named after the drive
    writes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"actions.{self.index}"


@dataclass
class Plan:
    scenario: Scenario
    images: dict[str, ImagePlan]
    jobs: dict[str, JobPlan]
    actions: list[ActionPlan]
    skipped: list[Skipped]
    notes: list[str]
    reduced: Scenario
    duration: int                     # ns
    #: drive -> the node its NBD export serves (drives with guest writes)
    exports: dict[str, str] = field(default_factory=dict)

    @property
    def bitmaps(self) -> bool:
        """Whether the run has named bitmaps (an image's, or made by a
        command): qemu-check compares every one's count at the end."""
        return (any(img.bitmaps for img in self.images.values())
                or any(a.command.startswith("block-dirty-bitmap-") or a.command == "transaction"
                       for a in self.actions))

    def image_order(self) -> list[str]:
        """Images with backing files after their backing images."""
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            backing = self.images[name].backing
            if backing is not None:
                visit(backing)
            done.append(name)

        for name in self.images:
            visit(name)
        return done

    def blockdev_options(self, name: str, path: str) -> dict[str, Any]:
        """The ``blockdev-add`` arguments of image ``name`` stored at ``path``."""
        img = self.images[name]
        # The image's discard option on every node of it: a mirror asks the
        # node it is given (the blkdebug node with faults) whether it can
        # write zeroes with unmap (bdrv_can_write_zeroes_with_unmap: its own
        # open flags, its children's zero flags)
        fmt: dict[str, Any] = {
            "driver": img.format, "node-name": img.fmt_node, "discard": img.discard,
            "file": {"driver": "file", "filename": path, "node-name": f"{img.fmt_node}-file",
                     "discard": img.discard}}
        if img.format == "qcow2":
            fmt["backing"] = self.images[img.backing].node if img.backing else None
        if not img.rules:
            return fmt
        return {"driver": "blkdebug", "node-name": img.node, "discard": img.discard, "image": fmt,
                "inject-error": [dict(rule) for rule in img.rules]}


def qemu_node_name(images: dict[str, "ImagePlan"], node: str) -> str:
    """The QEMU node of a blocksim node name: ``IMAGE`` is the node jobs
    name (the blkdebug node with faults, else the format node), and
    ``IMAGE-file`` the format node's protocol (file) node."""
    if node in images:
        return images[node].node
    if node.endswith("-file") and node[:-5] in images:
        return f"{images[node[:-5]].fmt_node}-file"
    return node                         # (no such node: QEMU refuses it too)


def blocksim_node_names(images: dict[str, "ImagePlan"]) -> dict[str, str]:
    """QEMU node name -> blocksim node name (the inverse of :func:`qemu_node_name`)."""
    out = {}
    for name, img in images.items():
        out[img.node] = name
        out[f"{img.fmt_node}-file"] = f"{name}-file"
    return out


def _pattern(image: str, index: int) -> int:
    """A non-zero byte pattern, distinct per image and extent (mostly)."""
    return 1 + (zlib.crc32(f"{image}/{index}".encode()) % 255)


def _node_names(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for i, name in enumerate(names):
        node = name if _NODE_NAME.match(name) else f"img{i}"
        while node in used:
            node = f"img{i}-{len(used)}"
        used.add(node)
        out[name] = node
    return out


def _fault_rules(index: int, fault, image_size: int, stream_tops: set[str],
                 skipped: list[Skipped], notes: list[str],
                 bitmap_sources: frozenset[str] = frozenset()
                 ) -> tuple[list[dict[str, Any]], Optional[tuple[int, int]]]:
    """blkdebug rules for fault ``index`` (empty = skipped) and the byte range
    the blocksim side should use instead of the fault's (None = unchanged)."""
    where = f"faults.{index}"
    if not isinstance(fault, ErrorFault):
        what = {"flakey": "dm-flakey up/down windows", "dust": "dm-dust bad blocks",
                "delay": "dm-delay latency"}.get(fault.type, fault.type)
        skipped.append(Skipped(where, f"{what} (type '{fault.type}'): blkdebug has no equivalent"))
        return [], None
    reasons = []
    if fault.start or fault.end is not None:
        reasons.append("a time window (start/end): blkdebug rules have no time")
    if fault.probability < 1.0:
        reasons.append(f"probability {fault.probability:g}: blkdebug rules are not random")
    if fault.count is not None and fault.count > 1:
        reasons.append(f"count {fault.count}: blkdebug fires once or always")
    if fault.skip:
        reasons.append(f"skip {fault.skip}: not expressed (would need blkdebug's state machine)")
    if fault.count == 1 and len(fault.operation) > 1:
        reasons.append("a one-shot fault over several operations: blkdebug's 'once' is per rule")
    if fault.image in bitmap_sources:
        reasons.append(f"image '{fault.image}' is the device of a backup with a bitmap: blkdebug "
                       "above its format node would hide the bitmap from blockdev-backup "
                       "(bdrv_find_dirty_bitmap on the filter)")
    if fault.image in stream_tops:
        reasons.append(f"image '{fault.image}' is the top of a stream job, whose copy-on-read "
                       "writes below any filter node: blkdebug on it would not see the job's I/O")
    if reasons:
        skipped.append(Skipped(where, "; ".join(reasons)))
        return [], None
    errno = ERRNO[fault.errno]
    once = fault.count == 1
    whole = fault.offset == 0 and fault.offset + fault.length >= image_size
    sector = fault.offset // SECTOR
    rules: list[dict[str, Any]] = []
    for op in fault.operation:
        rule: dict[str, Any] = {"event": "none", "iotype": op, "errno": errno,
                                "once": once, "immediately": False}
        if not whole:
            # A rule with a sector matches requests overlapping it, and never
            # a flush (no range), as blocksim's range-limited rules.
            rule["sector"] = sector
        rules.append(rule)
    narrowed = None
    if not whole and set(fault.operation) & {"read", "write", "write-zeroes"} and \
            (fault.offset % SECTOR or fault.length != SECTOR):
        narrowed = (sector * SECTOR, SECTOR)
        notes.append(f"{where}: range {format_size(fault.offset)}+{format_size(fault.length)} "
                     f"narrowed to sector {sector} (a blkdebug rule matches requests overlapping "
                     f"one sector); blocksim runs with the same sector")
    return rules, narrowed


def _backup_copy_ranges(scenario: Scenario, spec, image: str) -> list[tuple[int, int]]:
    """What a backup of ``image`` is to copy, with no guest writing: whole
    block-copy clusters (blocksim.jobs.backup) of the image (full), of its
    own data (top), of the bitmap's dirty ranges at the start (bitmap; a
    bitmap added during the run is empty: nothing writes the disk)."""
    img = scenario.images[image]
    cluster = cluster_size(scenario.images[spec.target])
    if spec.sync in ("full", "none"):
        ranges = [(0, img.size)]
    elif spec.sync == "top":
        cs = img.cluster_size
        ranges = [(o // cs * cs, -(-(o + n) // cs) * cs) for o, n in img.data]
    else:
        bitmap = next((b for b in img.bitmaps if b.name == spec.bitmap), None)
        g = (bitmap.granularity or default_granularity(img.cluster_size)) if bitmap else 1
        ranges = [(o // g * g, -(-(o + n) // g) * g) for o, n in bitmap.dirty] if bitmap else []
    out: list[tuple[int, int]] = []
    for a, b in sorted((a // cluster * cluster, min(-(-b // cluster) * cluster, img.size))
                       for a, b in ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _bitmap_may_change(scenario: Scenario, job_id: str, spec) -> bool:
    """A bitmap backup started later than 0 whose bitmap another backup or a
    bitmap command may have changed by then (a retry after a failed or
    cancelled backup): what it copies is not the bitmap at the start."""
    if spec.sync not in ("bitmap", "incremental") or spec.start == 0:
        return False
    if any(isinstance(other, BackupJob) and other.bitmap == spec.bitmap and jid != job_id
           for jid, other in scenario.jobs.items()):
        return True
    commands = [a.arguments for a in scenario.actions if isinstance(a, BitmapAction)]
    commands += [entry["data"] for a in scenario.actions if isinstance(a, TransactionAction)
                 for entry in a.arguments["actions"] if entry["type"].startswith("block-dirty")]
    return any(args.get("name", args.get("target")) == spec.bitmap for args in commands)


def translate(scenario: Scenario) -> Plan:
    skipped: list[Skipped] = []
    notes: list[str] = []
    raw = scenario.to_dict()
    if scenario.profile != "qemu":
        notes.append(f"profile '{scenario.profile}' is not today's QEMU: blocksim runs the check "
                     "with profile 'qemu'")
    raw["profile"] = "qemu"

    nodes = _node_names(list(scenario.images))
    images: dict[str, ImagePlan] = {}
    for name, spec in scenario.images.items():
        extents = [(off, length, _pattern(name, i)) for i, (off, length) in enumerate(spec.data)]
        bitmaps = [(b.name, b.granularity or default_granularity(spec.cluster_size), b.recording,
                    list(b.dirty)) for b in spec.bitmaps]
        images[name] = ImagePlan(name=name, format=spec.format, size=spec.size,
                                 cluster_size=spec.cluster_size, backing=spec.backing,
                                 extents=extents, discard=spec.discard, node=nodes[name],
                                 fmt_node=nodes[name], bitmaps=bitmaps)
        if spec.capacity is not None:
            skipped.append(Skipped(f"images.{name}.capacity",
                                   "thin provisioning: a physical capacity needs thin storage "
                                   "(the image can grow freely in QEMU)"))
            raw["images"][name].pop("capacity", None)
        for key in ("lv-size", "pool"):
            if raw["images"][name].get(key) is not None:
                skipped.append(Skipped(f"images.{name}.{key}",
                                       "a thin volume needs block storage and its manager "
                                       "(the image file grows freely in QEMU)"))
                raw["images"][name].pop(key, None)
    for key in ("pools", "thin-provisioning"):
        if raw.get(key):
            skipped.append(Skipped(key, "thin volumes and their controller need block storage "
                                        "and a management layer"))
        raw.pop(key, None)

    drive_image = {name: d.image for name, d in scenario.drives.items()}
    stream_tops = {drive_image[j.device] for j in scenario.jobs.values() if isinstance(j, StreamJob)}
    bitmap_sources = frozenset(drive_image[j.device] for j in scenario.jobs.values()
                               if isinstance(j, BackupJob) and j.bitmap is not None)

    kept_faults = []
    for i, fault in enumerate(scenario.faults):
        rules, narrowed = _fault_rules(i, fault, scenario.images[fault.image].size, stream_tops,
                                       skipped, notes, bitmap_sources)
        if not rules:
            continue
        images[fault.image].rules.extend(rules)
        entry = raw["faults"][i]
        if narrowed is not None:
            entry["offset"], entry["length"] = narrowed
        kept_faults.append(entry)
    raw["faults"] = kept_faults
    for img in images.values():
        if img.rules:
            img.fmt_node = f"{img.node}-fmt"

    for name in scenario.workloads:
        skipped.append(Skipped(f"workloads.{name}", "guest I/O: qemu-storage-daemon runs no guest"))
    raw["workloads"] = {}

    jobs: dict[str, JobPlan] = {}
    for job_id, spec in scenario.jobs.items():
        image = drive_image[spec.device]
        args: dict[str, Any] = {"job-id": job_id}
        if isinstance(spec, MirrorJob):
            args.update({"device": images[image].node, "target": images[spec.target].node,
                         "sync": spec.sync, "speed": spec.speed, "buf-size": spec.buf_size, "on-source-error": spec.on_source_error,
                         "on-target-error": spec.on_target_error})
            if spec.granularity is not None:    # absent: QEMU's default, the target's
                args["granularity"] = spec.granularity
            if spec.copy_mode != "background":
                args["copy-mode"] = spec.copy_mode
            command, target, base = "blockdev-mirror", spec.target, None
        elif isinstance(spec, CommitJob):
            # qmp_block_commit: top-node defaults to the device's root (an
            # active commit); the base is always named (see above)
            chain = [image]
            while scenario.images[chain[-1]].backing is not None:
                chain.append(scenario.images[chain[-1]].backing)
            active = spec.top == image
            args.update({"device": images[image].node})
            if not active:
                args["top-node"] = images[spec.top].node
            args["base-node"] = images[spec.base].node
            if spec.backing_file is not None:
                args["backing-file"] = spec.backing_file
            args.update({"speed": spec.speed, "on-error": spec.on_error})
            args["auto-finalize"] = spec.auto_finalize
            args["auto-dismiss"] = spec.auto_dismiss
            overlay = None if active else chain[chain.index(spec.top) - 1]
            jobs[job_id] = JobPlan(id=job_id, type="commit", command="block-commit",
                                   arguments=args, start=spec.start, image=image, base=spec.base,
                                   top=spec.top, overlay=overlay, active=active)
            continue
        elif isinstance(spec, BackupJob):
            args.update({"device": images[image].node, "target": images[spec.target].node,
                         "sync": spec.sync, "speed": spec.speed})
            if spec.bitmap is not None:
                args["bitmap"] = spec.bitmap
            if spec.bitmap_mode is not None:
                args["bitmap-mode"] = spec.bitmap_mode
            args.update({"compress": spec.compress, "on-source-error": spec.on_source_error,
                         "on-target-error": spec.on_target_error})
            command, target, base = "blockdev-backup", spec.target, None
        else:
            assert isinstance(spec, StreamJob)
            args.update({"device": images[image].fmt_node, "speed": spec.speed,
                         "on-error": spec.on_error})
            if spec.base is not None:
                args["base-node"] = images[spec.base].node
            command, target, base = "block-stream", None, spec.base
        args["auto-finalize"] = spec.auto_finalize
        args["auto-dismiss"] = spec.auto_dismiss
        jobs[job_id] = JobPlan(id=job_id, type=spec.type, command=command, arguments=args,
                               start=spec.start, image=image, target=target, base=base)
        if isinstance(spec, BackupJob):
            jobs[job_id].bitmap = spec.bitmap
            jobs[job_id].copy_ranges = (None if _bitmap_may_change(scenario, job_id, spec)
                                        else _backup_copy_ranges(scenario, spec, image))

    actions: list[ActionPlan] = []
    kept_actions = []
    exports: dict[str, str] = {}
    for i, action in enumerate(scenario.actions):
        where = f"actions.{i}"
        reason = None
        writes: list[tuple[int, int]] = []
        if getattr(action, "every", None) is not None:
            reason = "a poll ('every') is not replayed against real QEMU"
        elif isinstance(action, NoArgumentsAction) and action.command in _GUEST_ONLY:
            reason = _GUEST_ONLY[action.command]
        elif isinstance(action, ThinExtendAction):
            reason = "thin-extend needs thin storage (and a storage administrator)"
        elif isinstance(action, GuestBurstAction):
            reason, writes = _guest_writes(scenario, action.arguments)
            if reason is None:
                drive = action.arguments["drive"]
                exports[drive] = images[drive_image[drive]].node
        elif action.command == "lv-extend":
            reason = "lv-extend needs thin block storage (and its manager)"
        elif action.command == "query-block":
            reason = ("query-block lists BlockBackends with a name: qemu-storage-daemon has "
                      "none (a guest device's); query-named-block-nodes shows the same threshold")
        if reason is not None:
            skipped.append(Skipped(f"{where} ({action.command})", reason))
            continue
        kept_actions.append(raw["actions"][i])
        arguments = dict(action.arguments)
        if isinstance(action, BitmapAction):
            arguments = _bitmap_arguments(arguments, images, drive_image)
        elif isinstance(action, TransactionAction):
            # its bitmap actions as the commands; a blockdev-backup's data
            # is the job's start command's arguments
            arguments["actions"] = [
                {"type": entry["type"],
                 "data": (jobs[entry["data"]["job-id"]].arguments
                          if entry["type"] == "blockdev-backup" else
                          _bitmap_arguments(entry["data"], images, drive_image)
                          if entry["type"].startswith("block-dirty-bitmap-") else entry["data"])}
                for entry in arguments["actions"]]
        elif action.command == "block-set-write-threshold":
            arguments["node-name"] = qemu_node_name(images, arguments["node-name"])
        actions.append(ActionPlan(index=len(actions), original=i, command=action.command,
                                  arguments=arguments, at=action.at, on=action.on,
                                  match=dict(action.match), delay=action.delay,
                                  repeat=action.repeat, nth=action.nth, after=action.after,
                                  after_match=dict(action.after_match), writes=writes))
    raw["actions"] = kept_actions

    reduced = load_scenario(raw)
    reduced._source = scenario.source
    return Plan(scenario=scenario, images=images, jobs=jobs, actions=actions, skipped=skipped,
                notes=notes, reduced=reduced, duration=scenario.duration, exports=exports)


def _bitmap_arguments(arguments: dict, images: dict[str, "ImagePlan"],
                      drive_image: dict[str, str]) -> dict:
    """A bitmap command's arguments with QEMU's node names: the format node,
    below a blkdebug node of the image's faults.  QEMU stores persistent
    bitmaps only in a format driver (dirty-bitmap.c
    bdrv_can_store_new_dirty_bitmap: blkdebug has no
    bdrv_co_can_store_new_dirty_bitmap, "Can't store persistent bitmaps to
    tgt"); the format node sees every write the filter passes on, and the
    image's own bitmaps live there too."""
    arguments = dict(arguments)
    node = arguments["node"]
    arguments["node"] = images[drive_image.get(node, node)].fmt_node
    if "bitmaps" in arguments:      # a merge's bitmaps of other nodes
        arguments["bitmaps"] = [
            ref if isinstance(ref, str) else
            {**ref, "node": images[drive_image.get(ref["node"], ref["node"])].fmt_node}
            for ref in arguments["bitmaps"]]
    return arguments


def _guest_writes(scenario: Scenario, args: dict) -> tuple[Optional[str], list[tuple[int, int]]]:
    """A guest-burst's writes as qemu-check carries them out, or why not:
    ``(reason, [])`` or ``(None, [(offset, length), ...])``.  The offsets are
    the burst's own (a sequential workload: block after block from
    ``offset``, wrapping round its region)."""
    drive = scenario.drives[args["drive"]]
    if args.get("rw") != "write" or args.get("iodepth", 1) != 1:
        return ("guest-burst needs a guest (qemu-check carries out only sequential writes, "
                "rw = \"write\", iodepth = 1)"), []
    n = args.get("number-ios", 1)
    if n > MAX_GUEST_WRITES:
        return f"guest-burst of {n} writes: qemu-check carries out at most {MAX_GUEST_WRITES}", []
    if drive.werror not in ("report", "enospc"):
        return (f"guest writes on a drive with werror = \"{drive.werror}\": the NBD export "
                "reports every error to its client"), []
    bs, offset = args["bs"], args.get("offset", 0)
    size = args.get("size") or scenario.images[drive.image].size - offset
    nblocks = max(1, size // bs)
    return None, [(offset + (k % nblocks) * bs, bs) for k in range(n)]


# -- the images: what qemu-check runs and blocksim export prints -----------------------
def image_steps(plan: Plan, paths: Optional[dict[str, str]] = None, qemu_img: str = "qemu-img",
                qemu_io: str = "qemu-io") -> list[tuple[list[str], str]]:
    """The ``qemu-img`` / ``qemu-io`` argument lists that create the plan's
    images with their initial data and bitmaps, in backing order, each with
    what it does (for an error message).  ``paths`` maps image names to files
    (default: each image's file name, relative)."""
    paths = paths or {name: img.filename for name, img in plan.images.items()}
    out: list[tuple[list[str], str]] = []
    for name in plan.image_order():
        img = plan.images[name]
        path = paths[name]
        args = [qemu_img, "create", "-q", "-f", img.format]
        if img.format == "qcow2":
            args += ["-o", f"cluster_size={img.cluster_size}"]
            if img.backing:
                args += ["-b", paths[img.backing], "-F", plan.images[img.backing].format]
        out.append((args + [path, str(img.size)], f"creating image '{name}'"))
        if img.extents:
            io = [qemu_io, "-f", img.format]
            for off, length, pattern in img.extents:
                io += ["-c", f"write -q -P {pattern} {off} {length}"]
            out.append((io + [path], f"writing the initial data of image '{name}'"))
        out.extend(_bitmap_steps(plan, name, path, qemu_img, qemu_io))
    return out


def _bitmap_steps(plan: Plan, name: str, path: str, qemu_img: str,
                  qemu_io: str) -> list[tuple[list[str], str]]:
    """Persistent bitmaps, each added (recording), its dirty ranges written
    again with the content they hold (a pattern where the data is, a discard
    elsewhere: they dirty the bitmap and change nothing else), then
    disabled so that the next bitmap's writes leave it alone; at the end the
    recording ones enabled again.  (Writing every bitmap's ranges once all
    are added marked each with the others' ranges, and a disabled one
    with none of its own.)"""
    img = plan.images[name]
    out: list[tuple[list[str], str]] = []
    # where the image has no data of its own: a discard dirties the bitmaps
    # (io.c bdrv_co_pdiscard -> bdrv_co_write_req_finish sets them dirty
    # whatever the driver does) and leaves an unallocated qcow2 cluster of an
    # image without backing as it is (qcow2-cluster.c discard_in_l2_slice);
    # write -z would make it an allocated zero cluster, which a backup
    # sync=top then copies (found by running QEMU: grammar 7, fz7-45).  Over
    # a backing file both would hide the backing's data: write -z, as before.
    hole = "write -q -z" if img.backing else "discard -q"
    for bitmap, granularity, recording, dirty in img.bitmaps:
        out.append(([qemu_img, "bitmap", "--add", "-g", str(granularity), path, bitmap],
                    f"adding bitmap '{bitmap}' to image '{name}'"))
        rewrite: list[str] = []
        for off, length in dirty:
            pos, end = off, off + length
            for e_off, e_len, pattern in sorted(img.extents):
                a, b = max(pos, e_off), min(end, e_off + e_len)
                if a >= b:
                    continue
                if a > pos:
                    rewrite.append(f"{hole} {pos} {a - pos}")
                rewrite.append(f"write -q -P {pattern} {a} {b - a}")
                pos = b
            if pos < end:
                rewrite.append(f"{hole} {pos} {end - pos}")
        if rewrite:
            io = [qemu_io, "-f", img.format]
            for cmd in rewrite:
                io += ["-c", cmd]
            out.append((io + [path], f"dirtying bitmap '{bitmap}' of image '{name}'"))
        if len(img.bitmaps) > 1 or not recording:
            out.append(([qemu_img, "bitmap", "--disable", path, bitmap],
                        f"disabling bitmap '{bitmap}' of image '{name}'"))
    if len(img.bitmaps) > 1:
        for bitmap, _granularity, recording, _dirty in img.bitmaps:
            if recording:
                out.append(([qemu_img, "bitmap", "--enable", path, bitmap],
                            f"enabling bitmap '{bitmap}' of image '{name}'"))
    return out
