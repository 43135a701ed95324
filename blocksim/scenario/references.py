"""Cross-references between tables: images, drives, jobs and actions that name
each other, backing chains, and what the run needs resolved.
"""

from collections.abc import Mapping
from typing import Any, Optional

from .actions import Action, BitmapAction, GuestBurstAction, ThinExtendAction, TransactionAction
from .events import match_problems
from .faults import DustFault, Fault
from .fields import Loc
from .images import Drive, Image
from .jobs import BackupJob, CommitJob, Job, MirrorJob, StreamJob
from .units import format_size
from .workloads import Workload


def _names(kind: str, names: Mapping[str, Any]) -> str:
    if not names:
        return f"no {kind}s are defined"
    return f"defined {kind}s: " + ", ".join(names)


def _chain(images: Mapping[str, Optional[Image]], top: str) -> list[str]:
    """``top`` and its backing images (stops at a missing or repeated image)."""
    chain = [top]
    image = images.get(top)
    while image is not None and image.backing is not None and image.backing not in chain:
        chain.append(image.backing)
        image = images.get(image.backing)
    return chain


def _cross_check(images: Mapping[str, Optional[Image]], drives: Mapping[str, Optional[Drive]],
                 faults: list[Optional[Fault]], workloads: Mapping[str, Optional[Workload]],
                 jobs: Mapping[str, Optional[Job]], actions: list[Optional[Action]]) -> list[tuple[Loc, str]]:
    """Checks between tables.  ``None`` stands for an entry that exists but is
    itself invalid: its name resolves, nothing else is checked against it."""
    problems: list[tuple[Loc, str]] = []

    def image_ref(loc: Loc, name: str) -> Optional[Image]:
        if name not in images:
            problems.append((loc, f"unknown image '{name}'; {_names('image', images)}"))
        return images.get(name)

    def drive_image(loc: Loc, name: str) -> Optional[Image]:
        if name not in drives:
            problems.append((loc, f"unknown drive '{name}'; {_names('drive', drives)}"))
            return None
        drive = drives[name]
        return images.get(drive.image) if drive is not None else None

    def region(loc: Loc, image: Image, offset: int, length: Optional[int], what: str) -> None:
        if offset >= image.size:
            problems.append((loc + ("offset",), f"{what} starts at or beyond the end of the image "
                                                f"(offset {offset}, image size {image.size})"))
        elif length is not None and offset + length > image.size:
            problems.append((loc + (what_key[what],), f"{what} ends beyond the end of the image "
                             f"(offset {offset} + {what_key[what]} {length} > image size {image.size})"))

    what_key = {"fault range": "length", "workload region": "size", "burst region": "size"}

    for name, image in images.items():
        if image is None or image.backing is None:
            continue
        loc: Loc = ("images", name, "backing")
        if image_ref(loc, image.backing) is None:
            continue
        seen, current = [name], image.backing
        while current in images and images[current] is not None:
            if current == name:
                problems.append((loc, "backing chain loops back to this image: "
                                      + " -> ".join([*seen, name])))
                break
            if current in seen:
                break
            seen.append(current)
            current = images[current].backing
            if current is None:
                break

    for name, drive in drives.items():
        if drive is not None:
            image_ref(("drives", name, "image"), drive.image)

    for i, fault in enumerate(faults):
        if fault is None:
            continue
        image = image_ref(("faults", i, "image"), fault.image)
        if image is None:
            continue
        region(("faults", i), image, fault.offset, fault.length, "fault range")
        if isinstance(fault, DustFault):
            blocks = image.size // fault.block_size
            outside = [b for b in fault.blocks if b >= blocks]
            if outside:
                problems.append((("faults", i, "blocks"),
                                 f"block(s) {', '.join(map(str, outside))} beyond the end of image "
                                 f"'{fault.image}' ({blocks} blocks of {format_size(fault.block_size)})"))

    for name, workload in workloads.items():
        if workload is None:
            continue
        image = drive_image(("workloads", name, "drive"), workload.drive)
        if image is None:
            continue
        region(("workloads", name), image, workload.offset, workload.size, "workload region")
        if workload.offset < image.size:
            span = workload.size if workload.size is not None else image.size - workload.offset
            if span < workload.bs:
                problems.append((("workloads", name, "size" if workload.size is not None else "offset"),
                                 f"the region ({span} bytes) is smaller than bs ({workload.bs})"))

    for job_id, job in jobs.items():
        if job is None:
            continue
        top = None
        if job.device not in drives:
            problems.append((("jobs", job_id, "device"),
                             _not_a_drive(job.device, images, drives)))
        elif drives[job.device] is not None:
            top = drives[job.device].image
        chain = _chain(images, top) if top is not None and images.get(top) is not None else None
        if isinstance(job, MirrorJob):
            loc = ("jobs", job_id, "target")
            target = image_ref(loc, job.target)
            if target is None or chain is None:
                continue
            if job.target == top:
                problems.append((loc, f"the target must not be the source image '{top}'"))
            elif job.target in chain:
                problems.append((loc, f"the target '{job.target}' is in the source's backing chain ("
                                      + " -> ".join(chain) + ")"))
            # (a target of another size is no error here: QEMU 7.2 accepts
            # blockdev-mirror and the job fails as it starts, MirrorJob.run)
        elif isinstance(job, BackupJob):
            # blockdev.c:do_backup_common and backup_job_create, QEMU's wording
            loc = ("jobs", job_id, "target")
            target = image_ref(loc, job.target)
            if target is None or top is None or images.get(top) is None:
                continue
            if job.target == top:
                problems.append((loc, f"Source and target cannot be the same (both are image '{top}')"))
            elif target.size != images[top].size:
                problems.append((loc, f"Source and target image have different sizes (source '{top}': "
                                      f"{images[top].size}, target '{job.target}': {target.size})"))
        elif isinstance(job, StreamJob) and job.base is not None:
            loc = ("jobs", job_id, "base")
            if image_ref(loc, job.base) is None or chain is None:
                continue
            if job.base not in chain[1:]:
                below = " -> ".join(chain[1:]) if len(chain) > 1 else "none"
                problems.append((loc, f"'{job.base}' is not below '{top}' in its backing chain "
                                      f"(images below '{top}': {below})"))

        elif isinstance(job, CommitJob):
            _check_commit(job_id, job, images, top, chain, image_ref, problems)

    for i, action in enumerate(actions):
        if action is None:
            continue
        if action.on is not None:
            problems += match_problems(("actions", i, "match"), action.on, action.match)
        if action.after is not None:
            problems += match_problems(("actions", i, "after-match"), action.after, action.after_match)
        loc = ("actions", i, "arguments")
        # (a job id in a command's arguments is not checked: a command
        # naming no job is refused at run time as QMP refuses it, which
        # scenarios may mean to show: "Block job 'x' not found")
        if isinstance(action, ThinExtendAction):
            image_ref(loc + ("image",), action.arguments["image"])
        elif isinstance(action, BitmapAction):
            problems += _bitmap_nodes(loc, action.arguments, images, drives)
        elif isinstance(action, TransactionAction):
            for k, entry in enumerate(action.arguments["actions"]):
                where = loc + ("actions", k, "data")
                if entry["type"].startswith("block-dirty-bitmap-"):
                    problems += _bitmap_nodes(where, entry["data"], images, drives)
                elif entry["type"] == "blockdev-backup":
                    job_id = entry["data"]["job-id"]
                    if jobs.get(job_id) is None or jobs[job_id].type != "backup":
                        backups = [j for j, job in jobs.items()
                                   if job is not None and job.type == "backup"]
                        problems.append((where + ("job-id",), (
                            f"'{job_id}' is not a backup job of [jobs]: a transaction's "
                            "blockdev-backup starts one the scenario declares (start = "
                            f"\"manual\"); {_names('backup job', dict.fromkeys(backups))}")))
        elif isinstance(action, GuestBurstAction):
            args = action.arguments
            image = drive_image(loc + ("drive",), args["drive"])
            if image is not None:
                region(loc, image, args["offset"], args.get("size"), "burst region")
    return problems


def _bitmap_nodes(loc, arguments: Mapping[str, Any], images, drives) -> list[tuple[Loc, str]]:
    """A bitmap command's ``node`` (and a merge's other nodes): images or drives."""
    nodes = [(loc + ("node",), arguments["node"])]
    nodes += [(loc + ("bitmaps", k, "node"), ref["node"])
              for k, ref in enumerate(arguments.get("bitmaps", ())) if isinstance(ref, dict)]
    return [(where, f"unknown node '{node}' (an image or a drive); "
                    f"{_names('image', images)}; {_names('drive', drives)}")
            for where, node in nodes if node not in images and node not in drives]


def _not_a_drive(name: str, images: Mapping[str, Any], drives: Mapping[str, Optional[Drive]]) -> str:
    """The problem of a job's ``device`` that names no drive (an image, say)."""
    if name in images:
        on = [d for d, drive in drives.items() if drive is not None and drive.image == name]
        hint = (f"drive '{on[0]}' has image '{name}': write device = \"{on[0]}\"" if on else
                _names('drive', drives))
        return f"'{name}' is an image, not a drive: a job's device is a drive; {hint}"
    return f"unknown drive '{name}'; {_names('drive', drives)}"


def _check_commit(job_id: str, job: CommitJob, images, drive_top: Optional[str],
                  chain: Optional[list[str]], image_ref, problems: list) -> None:
    """A commit's ``top`` and ``base`` in the drive's chain, top above base,
    and a base at least as large as the top (QEMU would grow it; blocksim
    does not resize images).  QEMU's own refusals are quoted where one
    applies (blockdev.c:qmp_block_commit)."""
    top, base = job.top, job.base
    if top is not None and image_ref(("jobs", job_id, "top"), top) is None:
        return
    if base is not None and image_ref(("jobs", job_id, "base"), base) is None:
        return
    if chain is None:
        return
    shown = " -> ".join(chain)
    if top is None:
        top = drive_top
    elif top not in chain:
        problems.append((("jobs", job_id, "top"),
                         f"'{top}' is not in the drive's backing chain ({shown}); "
                         f"QEMU: '{top}' is not in this backing file chain"))
        return
    below = chain[chain.index(top) + 1:]
    if base is None:
        if not below:
            problems.append((("jobs", job_id, "top"),
                             f"'{top}' has no backing file, so there is nothing to commit it into "
                             f"(the default base is the bottom of its chain, '{top}' itself); "
                             f"QEMU: cannot commit an image into itself"))
            return
        base = below[-1]
    elif base == top:
        problems.append((("jobs", job_id, "base"),
                         f"base and top are the same image '{base}'; "
                         f"QEMU: cannot commit an image into itself"))
        return
    elif base not in below:
        problems.append((("jobs", job_id, "base"),
                         f"'{base}' is not below '{top}' in the drive's backing chain ({shown}); "
                         f"QEMU: '{base}' is not in this backing file chain"))
        return
    if images[base] is not None and images[top] is not None and images[base].size < images[top].size:
        problems.append((("jobs", job_id, "base"),
                         f"base '{base}' ({images[base].size} bytes) is smaller than top '{top}' "
                         f"({images[top].size} bytes): QEMU would grow it, blocksim does not "
                         f"resize images"))


def _resolve(scenario) -> None:
    """Fill in the defaults that depend on other tables (called once the
    cross-references are known to be good)."""
    images = scenario.images

    def drive_size(drive: str) -> int:
        return images[scenario.drives[drive].image].size

    for i, fault in enumerate(scenario.faults):
        if fault.length is None:
            length = images[fault.image].size - fault.offset
            scenario.faults[i] = fault.model_copy(update={"length": length})
    for name, workload in scenario.workloads.items():
        if workload.size is None:
            size = drive_size(workload.drive) - workload.offset
            scenario.workloads[name] = workload.model_copy(update={"size": size})
    for job_id, job in scenario.jobs.items():
        if isinstance(job, CommitJob) and (job.top is None or job.base is None):
            # QEMU's defaults: top = the active layer, base = the bottom of
            # top's chain (blockdev.c:qmp_block_commit, bdrv_find_base)
            top = job.top or scenario.drives[job.device].image
            base = job.base or _chain(images, top)[-1]
            scenario.jobs[job_id] = job.model_copy(update={"top": top, "base": base})
    for i, action in enumerate(scenario.actions):
        if isinstance(action, GuestBurstAction) and "size" not in action.arguments:
            args = action.arguments
            size = drive_size(args["drive"]) - args["offset"]
            scenario.actions[i] = action.model_copy(update={"arguments": {**args, "size": size}})


#: the keys of each table that name an entry of another: key -> "image" or "drive"
_RAW_REFERENCES = {"drives": {"image": "image"}, "workloads": {"drive": "drive"},
                   "jobs": {"device": "drive", "target": "image", "base": "image", "top": "image"},
                   "faults": {"image": "image"}}


def check_invalid_entries(raw: Mapping[str, Any], parts: Mapping[str, Any],
                          found: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """The names an *invalid* entry gives to other tables, and an invalid
    action's ``match``, checked from the raw data: an entry with a wrong
    type in one key must not hide a wrong name in another (one pass).
    ``found`` are the problems already known (none is repeated)."""
    seen = {loc for loc, _ in found}
    images = raw.get("images") if isinstance(raw.get("images"), Mapping) else {}
    drives = raw.get("drives") if isinstance(raw.get("drives"), Mapping) else {}
    known = {"image": images, "drive": drives}
    problems: list[tuple[Loc, str]] = []

    def entries(section: str):
        table, valid = raw.get(section), parts.get(section)
        if isinstance(table, Mapping) and isinstance(valid, Mapping):
            return [(name, item, valid.get(name)) for name, item in table.items()]
        if isinstance(table, (list, tuple)) and isinstance(valid, list):
            return [(i, item, parts[section][i] if i < len(parts[section]) else None)
                    for i, item in enumerate(table)]
        return []

    for section, keys in _RAW_REFERENCES.items():
        for name, item, valid in entries(section):
            if valid is not None or not isinstance(item, Mapping):
                continue
            for key, kind in keys.items():
                value, loc = item.get(key), (section, name, key)
                if not isinstance(value, str) or loc in seen or value in known[kind]:
                    continue
                if section == "jobs" and key == "device":
                    problems.append((loc, _not_a_drive(value, images, {
                        d: v for d, v in parts["drives"].items()})))
                else:
                    problems.append((loc, f"unknown {kind} '{value}'; {_names(kind, known[kind])}"))
    for i, item, valid in entries("actions"):
        if valid is not None or not isinstance(item, Mapping):
            continue
        for on, match in (("on", "match"), ("after", "after-match")):
            event, table = item.get(on), item.get(match)
            if isinstance(event, str) and isinstance(table, Mapping):
                problems += [p for p in match_problems(("actions", i, match), event, table)
                             if p[0] not in seen]
    return problems
