"""QMP commands of a served run, with QEMU 7.2's argument names and errors.

Each command has a QAPI-like argument list (:data:`SCHEMAS`), checked as
QEMU's input visitor does (``qapi/qobject-input-visitor.c``): members in
schema order (``Parameter 'X' is missing``, ``Invalid parameter type for
'X', expected: integer``, ``Parameter 'X' does not accept value 'V'``),
then ``Parameter 'X' is unexpected``.  Commands the management Monitor runs
(``blocksim.management.monitor``: stop, cont, the job verbs, the dirty
bitmaps, query-block-jobs) go through it, so they are recorded as a
scenario's actions are; the others are answered here and recorded in the
same shape.

Starting a job builds the job the scenario's ``[jobs]`` table would declare
(:mod:`blocksim.scenario.jobs`) from the QMP arguments: the inverse of
``blocksim.qemu.translate`` (which writes a scenario job's QMP arguments):
``device`` a drive (or its top image's node name), ``target`` / ``base-node``
/ ``top-node`` image names, the other arguments under their own names.
A job id defaults to the drive's name, as ``block_job_create`` takes the
BlockBackend's name.

Extensions, named as QEMU names non-standard commands (``x-`` prefix):

- ``x-blocksim-advance`` (``seconds``: how far, default to the session's
  end; ``until-event``: an event name or a list, stop right after the first
  of them): simulated time moves only through it in virtual time;
- ``x-blocksim-clock``: the simulated time now and the session's end;
- ``x-blocksim-fault-add`` (a ``[[faults]]`` entry's keys): a fault
  injected at run time, active from now unless ``start`` says otherwise;
- ``x-blocksim-thin-extend`` (``image``, ``capacity`` or ``by``) and
  ``x-blocksim-guest-burst`` (``drive`` and workload keys): the Monitor's
  ``thin-extend`` and ``guest-burst``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import CommandError
from ..jobs import JOB_TYPES
from ..management.monitor import COMMANDS as MONITOR_COMMANDS
from ..record.eventlog import qmp_timestamp
from ..scenario import BackupJob, CommitJob, MirrorJob, StreamJob
from ..scenario.fields import BACKUP_SYNC_MODES, BITMAP_MODES, COPY_MODES, JOB_POLICIES
from .protocol import QMPError

# -- argument schemas (qapi/*.json of QEMU 7.2) -------------------------------------
STR, INT, UINT, BOOL, NUM, ANY = "string", "integer", "uint64", "boolean", "number", "any"
BITMAP_REFS = "BlockDirtyBitmapOrStr"       # a list of names or {node, name}
MIRROR_SYNC = ("top", "full", "none", "incremental", "bitmap")     # MirrorSyncMode
JOB_ERROR = tuple(JOB_POLICIES)                                    # BlockdevOnError

_JOB_COMMON = [("job-id", STR, False), ("device", STR, True)]
_JOB_TAIL = [("auto-finalize", BOOL, False), ("auto-dismiss", BOOL, False)]

SCHEMAS: dict[str, list[tuple[str, Any, bool]]] = {
    "qmp_capabilities": [("enable", ("list", ("oob",)), False)],
    "query-status": [], "stop": [], "cont": [], "quit": [],
    "query-block": [], "query-named-block-nodes": [("flat", BOOL, False)],
    "query-block-jobs": [], "query-jobs": [], "query-version": [], "query-commands": [],
    # qapi/block-core.json
    "blockdev-mirror": _JOB_COMMON + [
        ("target", STR, True), ("replaces", STR, False), ("sync", MIRROR_SYNC, True),
        ("speed", INT, False), ("granularity", UINT, False), ("buf-size", INT, False),
        ("on-source-error", JOB_ERROR, False), ("on-target-error", JOB_ERROR, False),
        ("filter-node-name", STR, False), ("copy-mode", COPY_MODES, False)] + _JOB_TAIL,
    "drive-mirror": _JOB_COMMON + [
        ("target", STR, True), ("format", STR, False), ("node-name", STR, False),
        ("replaces", STR, False), ("sync", MIRROR_SYNC, True),
        ("mode", ("existing", "absolute-paths"), False), ("speed", INT, False),
        ("granularity", UINT, False), ("buf-size", INT, False),
        ("on-source-error", JOB_ERROR, False), ("on-target-error", JOB_ERROR, False),
        ("unmap", BOOL, False), ("copy-mode", COPY_MODES, False)] + _JOB_TAIL,
    "block-stream": _JOB_COMMON + [
        ("base", STR, False), ("base-node", STR, False), ("backing-file", STR, False),
        ("bottom", STR, False), ("speed", INT, False), ("on-error", JOB_ERROR, False),
        ("filter-node-name", STR, False)] + _JOB_TAIL,
    "block-commit": _JOB_COMMON + [
        ("base-node", STR, False), ("base", STR, False), ("top-node", STR, False),
        ("top", STR, False), ("backing-file", STR, False), ("speed", INT, False),
        ("on-error", JOB_ERROR, False), ("filter-node-name", STR, False)] + _JOB_TAIL,
    "blockdev-backup": _JOB_COMMON + [
        ("target", STR, True), ("sync", tuple(BACKUP_SYNC_MODES), True), ("speed", INT, False),
        ("bitmap", STR, False), ("bitmap-mode", tuple(BITMAP_MODES), False),
        ("compress", BOOL, False), ("on-source-error", JOB_ERROR, False),
        ("on-target-error", JOB_ERROR, False), ("filter-node-name", STR, False),
        ("x-perf", ANY, False)] + _JOB_TAIL,
    "block-job-cancel": [("device", STR, True), ("force", BOOL, False)],
    "block-job-pause": [("device", STR, True)], "block-job-resume": [("device", STR, True)],
    "block-job-complete": [("device", STR, True)],
    "block-job-set-speed": [("device", STR, True), ("speed", INT, True)],
    "block-job-finalize": [("id", STR, True)], "block-job-dismiss": [("id", STR, True)],
    "job-pause": [("id", STR, True)], "job-resume": [("id", STR, True)],
    "job-cancel": [("id", STR, True)], "job-complete": [("id", STR, True)],
    "job-finalize": [("id", STR, True)], "job-dismiss": [("id", STR, True)],
    "block-dirty-bitmap-add": [("node", STR, True), ("name", STR, True),
                               ("granularity", UINT, False), ("persistent", BOOL, False),
                               ("disabled", BOOL, False)],
    "block-dirty-bitmap-remove": [("node", STR, True), ("name", STR, True)],
    "block-dirty-bitmap-clear": [("node", STR, True), ("name", STR, True)],
    "block-dirty-bitmap-enable": [("node", STR, True), ("name", STR, True)],
    "block-dirty-bitmap-disable": [("node", STR, True), ("name", STR, True)],
    "block-dirty-bitmap-merge": [("node", STR, True), ("target", STR, True),
                                 ("bitmaps", BITMAP_REFS, True)],

    # extensions
    "x-blocksim-advance": [("seconds", NUM, False), ("until-event", ANY, False)],
    "x-blocksim-clock": [],
    "x-blocksim-fault-add": None,           # a [[faults]] entry: checked by the scenario layer
    "x-blocksim-thin-extend": [("image", STR, True), ("capacity", INT, False),
                               ("by", INT, False)],
    "x-blocksim-guest-burst": None,         # the workload keys: checked by the scenario layer
    # block/write-threshold.c (the Monitor has it once thin provisioning is in)
    "block-set-write-threshold": [("node-name", STR, True), ("write-threshold", UINT, True)],
}

#: arguments of the job-starting commands blocksim has no model for:
#: refused rather than ignored
UNSUPPORTED = {"replaces", "filter-node-name", "bottom", "x-perf", "node-name", "format",
               "unmap"}

#: extensions that do not change the run (the others: ``--no-x-commands`` refuses them)
_STARTS = ("blockdev-mirror", "drive-mirror", "block-stream", "block-commit", "blockdev-backup")
NOT_RUN_CHANGING = ("x-blocksim-advance", "x-blocksim-clock")


def check_arguments(command: str, args: dict, prefix: str = "") -> dict:
    """``args`` checked against ``command``'s schema; ``prefix``: where they
    sit in another command's (a transaction's action's ``data``), as QEMU
    names a member by its full path (an enum's value by its own name)."""
    if command == "transaction":
        _check_transaction(args)
        return args
    schema = SCHEMAS.get(command)
    if schema is None:
        return args
    for name, kind, required in schema:
        path = prefix + name
        if name not in args:
            if required:
                raise QMPError(f"Parameter '{path}' is missing")
            continue
        value = args[name]
        if kind == ANY:
            continue
        if kind == BITMAP_REFS:
            _check_bitmap_refs(path, value)
            continue
        if isinstance(kind, tuple) and kind and kind[0] == "list":
            if not isinstance(value, list):
                raise QMPError(f"Invalid parameter type for '{path}', expected: array")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise QMPError(f"Invalid parameter type for '{path}[{i}]', expected: string")
                if item not in kind[1]:
                    # (QEMU 7.2 names a list element 'null' here)
                    raise QMPError(f"Parameter 'null' does not accept value '{item}'")
            continue
        if isinstance(kind, tuple):
            if not isinstance(value, str):
                raise QMPError(f"Invalid parameter type for '{path}', expected: string")
            if value not in kind:
                raise QMPError(f"Parameter '{name}' does not accept value '{value}'")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind in (INT, UINT):
            if not number:
                raise QMPError(f"Invalid parameter type for '{path}', expected: integer")
            # qobject_input_type_{int,uint}64: a number that is not one
            if isinstance(value, float) or (kind == UINT and value < 0) \
                    or not -(1 << 63) <= value < (1 << 64):
                raise QMPError(f"Parameter '{path}' expects {kind}")
            continue
        ok = {STR: isinstance(value, str), BOOL: isinstance(value, bool), NUM: number}[kind]
        if not ok:
            raise QMPError(f"Invalid parameter type for '{path}', expected: {kind}")
    known = {name for name, _, _ in schema}
    for name in args:
        if name not in known:
            raise QMPError(f"Parameter '{prefix}{name}' is unexpected")
    if command in _STARTS:
        for name in args:
            if name in UNSUPPORTED:
                raise QMPError(f"Parameter '{prefix}{name}' is not modelled by blocksim")
    return args


#: QEMU 7.2's TransactionActionKind (qapi/transaction.json); blocksim
#: models all but the snapshots and drive-backup
TRANSACTION_KINDS = ("abort", "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
                     "block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
                     "block-dirty-bitmap-disable", "block-dirty-bitmap-merge", "blockdev-backup",
                     "blockdev-snapshot", "blockdev-snapshot-sync",
                     "blockdev-snapshot-internal-sync", "drive-backup")
_TRANSACTION_MODELLED = TRANSACTION_KINDS[:8]


def _check_transaction(args: dict) -> None:
    """``transaction``'s arguments as QEMU's input visitor checks them:
    each action's ``type`` and ``data`` (named by their full path,
    ``actions[0].data.name``; an enum by its own name), then
    ``properties``, then what is unexpected."""
    if "actions" not in args:
        raise QMPError("Parameter 'actions' is missing")
    actions = args["actions"]
    if not isinstance(actions, list):
        raise QMPError("Invalid parameter type for 'actions', expected: array")
    for i, entry in enumerate(actions):
        where = f"actions[{i}]"
        if not isinstance(entry, dict):
            raise QMPError(f"Invalid parameter type for '{where}', expected: object")
        if "type" not in entry:
            raise QMPError(f"Parameter '{where}.type' is missing")
        kind = entry["type"]
        if not isinstance(kind, str):
            raise QMPError(f"Invalid parameter type for '{where}.type', expected: string")
        if kind not in TRANSACTION_KINDS:
            raise QMPError(f"Parameter 'type' does not accept value '{kind}'")
        if "data" not in entry:
            raise QMPError(f"Parameter '{where}.data' is missing")
        if not isinstance(entry["data"], dict):
            raise QMPError(f"Invalid parameter type for '{where}.data', expected: object")
        if kind not in _TRANSACTION_MODELLED:
            raise QMPError(f"Transaction action '{kind}' is not modelled by blocksim")
        check_arguments(kind if kind != "abort" else "query-status", entry["data"],
                        f"{where}.data.")
        for key in entry:
            if key not in ("type", "data"):
                raise QMPError(f"Parameter '{where}.{key}' is unexpected")
    properties = args.get("properties", {})
    if not isinstance(properties, dict):
        raise QMPError("Invalid parameter type for 'properties', expected: object")
    mode = properties.get("completion-mode", "individual")
    if not isinstance(mode, str):
        raise QMPError("Invalid parameter type for 'properties.completion-mode', expected: string")
    if mode not in ("individual", "grouped"):
        raise QMPError(f"Parameter 'completion-mode' does not accept value '{mode}'")
    for key in properties:
        if key != "completion-mode":
            raise QMPError(f"Parameter 'properties.{key}' is unexpected")
    for key in args:
        if key not in ("actions", "properties"):
            raise QMPError(f"Parameter '{key}' is unexpected")


def _check_bitmap_refs(name: str, value) -> None:
    """A list of ``BlockDirtyBitmapOrStr``: each a string or ``{node, name}``
    (qapi/block-core.json), as QEMU's input visitor words its refusals."""
    if not isinstance(value, list):
        raise QMPError(f"Invalid parameter type for '{name}', expected: array")
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(item, str):
            continue
        if not isinstance(item, dict):
            # (QEMU 7.2 names an alternate's list element 'null' here)
            raise QMPError(f"Invalid parameter type for 'null', expected: {BITMAP_REFS}")
        for key in ("node", "name"):
            if key not in item:
                raise QMPError(f"Parameter '{where}.{key}' is missing")
            if not isinstance(item[key], str):
                raise QMPError(f"Invalid parameter type for '{where}.{key}', expected: string")
        for key in item:
            if key not in ("node", "name"):
                raise QMPError(f"Parameter '{where}.{key}' is unexpected")


# -- nodes and devices ----------------------------------------------------------------
def _lookup_drive(sim, name: str):
    """``bdrv_lookup_bs(device, device)`` for a job's ``device``: a drive, or
    the node at the top of a drive."""
    if name in sim.drives:
        return sim.drives[name]
    for drive in sim.drives.values():
        if drive.node.name == name:
            return drive
    raise QMPError(f"Cannot find device='{name}' nor node-name='{name}'")


def _lookup_node(sim, name: str):
    if name in sim.devices:
        return sim.devices[name]
    if name in sim.drives:
        return sim.drives[name].node
    raise QMPError(f"Cannot find device='{name}' nor node-name='{name}'")


def _node_info(sim, dev) -> dict:
    """BlockDeviceInfo (``bdrv_block_device_info``), the parts blocksim has."""
    depth, below = 0, dev.backing
    while below is not None:
        depth, below = depth + 1, below.backing
    image = {"filename": f"{dev.name}.{dev.format}", "format": dev.format,
             "virtual-size": dev.size,
             "actual-size": getattr(dev, "physical_size", dev.allocated_bytes),
             "cluster-size": dev.cluster_size, "dirty-flag": False}
    if dev.backing is not None:
        image["backing-filename"] = f"{dev.backing.name}.{dev.backing.format}"
    info = {"node-name": dev.name, "file": image["filename"], "ro": False,
            "drv": dev.format, "encrypted": False, "detect_zeroes": "off",
            "backing_file_depth": depth, "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0,
            "iops_rd": 0, "iops_wr": 0, "write_threshold": dev.write_threshold,
            "cache": {"writeback": True, "direct": False, "no-flush": False},
            "image": image}
    if dev.backing is not None:
        info["backing_file"] = image["backing-filename"]
    if dev.bitmaps:
        # bdrv_query_dirty_bitmaps: newest first
        info["dirty-bitmaps"] = [b.query() for b in reversed(list(dev.bitmaps.values()))]
    return info


def _query_block(sim, args) -> list:
    out = []
    for name, drive in sim.drives.items():
        info = {"device": name, "qdev": f"/machine/peripheral/{name}/virtio-backend",
                "type": "unknown", "removable": False, "locked": False,
                "io-status": drive.iostatus.value,
                "inserted": _node_info(sim, drive.node)}
        if not drive.iostatus_enabled:
            # (block/qapi.c:bdrv_query_info: only when blk_iostatus_is_enabled)
            del info["io-status"]
        out.append(info)
    return out


def _file_node_info(dev) -> dict:
    """The protocol node under an image's format node (``IMAGE-file``, as
    the Monitor names it): the file's physical size and its own threshold."""
    size = dev.physical_size
    return {"node-name": f"{dev.name}-file", "file": f"{dev.name}.{dev.format}", "ro": False,
            "drv": "file", "encrypted": False, "detect_zeroes": "off",
            "backing_file_depth": 0, "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0,
            "iops_rd": 0, "iops_wr": 0, "write_threshold": dev.file_write_threshold,
            "cache": {"writeback": True, "direct": False, "no-flush": False},
            "image": {"filename": f"{dev.name}.{dev.format}", "format": "file",
                      "virtual-size": size, "actual-size": size, "dirty-flag": False}}


def _query_named_block_nodes(sim, args) -> list:
    out = []
    for dev in sim.devices.values():
        out += [_node_info(sim, dev), _file_node_info(dev)]
    return out


def _query_status(sim, args) -> dict:
    state = sim.vm.state
    return {"status": state, "singlestep": False, "running": state == "running"}


# -- starting jobs ----------------------------------------------------------------
_COMMON_KEYS = ("speed", "auto-finalize", "auto-dismiss")


def _job_spec(sim, command: str, args: dict):
    """The scenario job (``blocksim.scenario.jobs``) the QMP arguments describe."""
    drive = _lookup_drive(sim, args["device"])
    spec: dict[str, Any] = {"device": drive.name, "start": "manual"}
    for key in _COMMON_KEYS:
        if key in args:
            spec[key] = args[key]
    if command in ("blockdev-mirror", "drive-mirror"):
        if args["sync"] in ("incremental", "bitmap"):
            # mirror.c:mirror_start
            raise QMPError(f"Sync mode '{args['sync']}' not supported")
        if command == "drive-mirror":
            target = args["target"]
            if target not in sim.devices:
                raise QMPError(f"Could not open '{target}': No such file or directory")
        else:
            target = _lookup_node(sim, args["target"]).name
        spec.update({"type": "mirror", "target": target, "sync": args["sync"]})
        if "granularity" in args:       # else the target's (jobs/mirror.py)
            spec["granularity"] = args["granularity"]
        for key in ("buf-size", "on-source-error", "on-target-error", "copy-mode"):
            if key in args:
                spec[key] = args[key]
        return MirrorJob, spec
    if command == "block-stream":
        spec["type"] = "stream"
        base = args.get("base-node", args.get("base"))
        if base is not None:
            spec["base"] = _lookup_node(sim, base).name
        if "on-error" in args:
            spec["on-error"] = args["on-error"]
        return StreamJob, spec
    if command == "block-commit":
        spec["type"] = "commit"
        for qmp_key, file_key, key in (("top-node", "top", "top"), ("base-node", "base", "base")):
            name = args.get(qmp_key, args.get(file_key))
            if name is not None:
                spec[key] = _lookup_node(sim, name).name
        for key in ("backing-file", "on-error"):
            if key in args:
                spec[key] = args[key]
        if spec.get("top") == drive.node.name:
            spec.pop("top")             # top = the active layer: an active commit
        return CommitJob, spec
    spec.update({"type": "backup", "target": _lookup_node(sim, args["target"]).name,
                 "sync": args["sync"]})
    for key in ("bitmap", "bitmap-mode", "compress", "on-source-error", "on-target-error"):
        if key in args:
            spec[key] = args[key]
    return BackupJob, spec


def _place_job(sim, command: str, args: dict):
    """The job a start command's QMP arguments describe, put in the run
    under its ID: ``(job id, job, the job it replaced or None)``; a
    refusal of the arguments raises QMPError."""
    model, raw = _job_spec(sim, command, args)
    job_id = args.get("job-id", raw["device"])
    old = sim.jobs.get(job_id)
    try:
        spec = model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise QMPError(str(first.get("msg", exc)).removeprefix("Value error, ")) from None
    job = JOB_TYPES[spec.type](sim, job_id, spec)
    if old is not None and old.status not in (None, "null"):
        # the ID is still in use, but QEMU checks it last (block_job_create
        # -> job_create), after the command's node checks: the job's start
        # answers which refusal comes first (jobs/base.py)
        job.displaces = old
    sim.jobs[job_id] = job
    return job_id, job, old


def _start_job(session, command: str, args: dict):
    sim = session.sim
    job_id, job, old = _place_job(sim, command, args)
    recorded = dict(args)
    recorded.setdefault("job-id", job_id)
    sim.monitor.execute(command if command != "drive-mirror" else "blockdev-mirror", recorded)
    entry = sim.monitor.commands[-1]
    if command == "drive-mirror":
        entry["execute"] = "drive-mirror"
    if "error" in entry:
        if job.status is None:
            if old is not None:
                sim.jobs[job_id] = old
            else:
                del sim.jobs[job_id]
        raise QMPError(entry["error"]["desc"], entry["error"]["class"])
    session.add_job_columns(job_id)
    return {}


def _transaction(session, args: dict):
    """``transaction`` through the Monitor's (``blocksim.management.transaction``),
    each blockdev-backup's job built from its QMP arguments as the command
    alone builds it (:func:`_start_job`) when its turn comes: a refusal
    there is that action's, after the actions before it were prepared."""
    sim = session.sim
    placed: list = []                   # (job id, job, the job it replaced)

    def backup_job(data: dict):
        try:
            placed.append(_place_job(sim, "blockdev-backup", data))
        except QMPError as exc:
            raise CommandError(exc.desc, exc.error_class) from None
        return placed[-1][1]

    sim.monitor.backup_job = backup_job
    try:
        sim.monitor.execute("transaction", args)
    finally:
        sim.monitor.backup_job = None
    entry = sim.monitor.commands[-1]
    for job_id, job, old in reversed(placed):
        if job.status is None:          # never created: as if never asked
            if old is not None:
                sim.jobs[job_id] = old
            else:
                del sim.jobs[job_id]
        elif job.started_at is not None:
            session.add_job_columns(job_id)
    if "error" in entry:
        raise QMPError(entry["error"]["desc"], entry["error"]["class"])
    return {}


# -- dispatch ---------------------------------------------------------------------
def _advance(session, args):
    seconds = args.get("seconds")
    events = args.get("until-event")
    if events is None:
        events = ()
    elif isinstance(events, str):
        events = (events,)
    elif isinstance(events, list) and all(isinstance(e, str) for e in events):
        events = tuple(events)
    else:
        raise QMPError("Invalid parameter type for 'until-event', expected: string or array")
    if seconds is not None and seconds < 0:
        raise QMPError("Parameter 'seconds' must not be negative")
    if seconds is None and not events:
        raise QMPError("Parameter 'seconds' or 'until-event' is missing")
    until = session.limit if seconds is None else session.now + round(seconds * 1e9)
    stopped = session.advance(until, events)
    out = {"time": qmp_timestamp(session.now), "end": session.now >= session.limit}
    if stopped is not None:
        out["event"] = stopped
    return out


def _clock(session, args):
    return {"time": qmp_timestamp(session.now), "end": qmp_timestamp(session.limit),
            "mode": session.mode}


def _fault_add(session, args):
    """``x-blocksim-fault-add``: a fault rule added now, as a scenario's
    ``[[faults]]`` entry (same keys; ``start`` defaults to now and counts
    from the run's start)."""
    from pydantic import TypeAdapter

    from ..model.faults import make_rule
    from ..scenario.faults import AnyFault
    sim = session.sim
    image = args.get("image")
    if not isinstance(image, str) or image not in sim.devices:
        raise QMPError(f"Cannot find device='{image}' nor node-name='{image}'")
    try:
        spec = TypeAdapter(AnyFault).validate_python(dict(args))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("error", "flakey",
                                                                           "dust", "delay"))
        raise QMPError(f"Parameter '{where}': "
                       + str(first.get("msg", "")).removeprefix("Value error, ")) from None
    if "start" not in args:
        spec = spec.model_copy(update={"start": session.now})
    session.faults_added += 1
    device = sim.devices[image]
    device.faults.append(make_rule(spec, device.size,
                                   sim.rng("x-fault", str(session.faults_added))))
    return {"index": len(device.faults) - 1}


def _quit(session, args):
    session.quit = True


#: commands answered here (not by the Monitor); they get the session
_LOCAL = {
    "query-status": lambda s, a: _query_status(s.sim, a),
    "query-block": lambda s, a: _query_block(s.sim, a),
    "query-named-block-nodes": lambda s, a: _query_named_block_nodes(s.sim, a),
    "blockdev-mirror": lambda s, a: _start_job(s, "blockdev-mirror", a),
    "drive-mirror": lambda s, a: _start_job(s, "drive-mirror", a),
    "block-stream": lambda s, a: _start_job(s, "block-stream", a),
    "block-commit": lambda s, a: _start_job(s, "block-commit", a),
    "blockdev-backup": lambda s, a: _start_job(s, "blockdev-backup", a),
    "transaction": lambda s, a: _transaction(s, a),
    "x-blocksim-advance": _advance,
    "x-blocksim-clock": _clock,
    "x-blocksim-fault-add": _fault_add,
    "quit": _quit,
}
#: what QEMU 7.2 calls the Monitor's commands that it has too
_QEMU_NAMES = {"stop", "cont", "query-block-jobs", "query-jobs", "query-block", "query-named-block-nodes",
               "block-set-write-threshold"} | {
    name for name in MONITOR_COMMANDS if name.startswith(("block-job-", "job-",
                                                          "block-dirty-bitmap-"))}
# query-block and query-named-block-nodes are answered here, with more of
# BlockDeviceInfo than the Monitor's (which has what qemu-check compares:
# node names, sizes, write thresholds, and the same values here).
#: Monitor commands a client may call: QEMU's under their QMP names, the
#: others (thin-extend, guest-burst, ...) as x-blocksim-NAME; job-start
#: (a scenario's manual job) has no QMP form, nor has the Monitor's
#: transaction (its blockdev-backup names a scenario's job; QMP's carries
#: the job's arguments, which serve does not take apart yet)
_MONITOR = {(name if name in _QEMU_NAMES else f"x-blocksim-{name}"): name
            for name in MONITOR_COMMANDS
            if name not in ("job-start", "transaction") and name not in _LOCAL}
#: commands recorded in the run's record (start commands record themselves)
_SELF_RECORDING = {"blockdev-mirror", "drive-mirror", "block-stream", "block-commit",
                   "blockdev-backup", "transaction"}

EXTENSIONS = tuple(sorted(name for name in set(_LOCAL) | set(_MONITOR)
                          if name.startswith("x-blocksim-")))


def is_run_changing(command: str) -> bool:
    return command.startswith("x-blocksim-") and command not in NOT_RUN_CHANGING


COMMANDS = tuple(sorted(set(_LOCAL) | set(_MONITOR) | {"qmp_capabilities", "query-version",
                                                        "query-commands"}))


def dispatch(session, command: str, args: dict, extensions: bool = True) -> Any:
    """Run one command (after negotiation); its value, or QMPError."""
    timestamp = qmp_timestamp(session.now)
    if command not in COMMANDS or (is_run_changing(command) and not extensions) \
            or command == "qmp_capabilities":
        if command == "qmp_capabilities":
            raise QMPError("Capabilities negotiation is already complete, command ignored",
                           "CommandNotFound")
        raise QMPError(f"The command {command} has not been found", "CommandNotFound")
    if command == "query-version":
        from .protocol import QEMU_VERSION
        return QEMU_VERSION
    if command == "query-commands":
        return [{"name": name} for name in COMMANDS]
    try:
        check_arguments(command, args)
    except QMPError as exc:
        session.record(command, args, error=exc, timestamp=timestamp)
        raise
    if command in _MONITOR:
        sim = session.sim
        value = sim.monitor.execute(_MONITOR[command], args)
        entry = sim.monitor.commands[-1]
        entry["execute"] = command
        if "error" in entry:
            raise QMPError(entry["error"]["desc"], entry["error"]["class"])
        return value
    before = len(session.sim.monitor.commands)
    try:
        value = _LOCAL[command](session, args)
    except QMPError as exc:
        if len(session.sim.monitor.commands) == before:     # refused before the Monitor
            session.record(command, args, error=exc, timestamp=timestamp)
        raise
    if command not in _SELF_RECORDING:
        session.record(command, args, value, timestamp=timestamp)
    return value

