"""The management interface: QMP-like commands and their record.

Scenario actions (and notebooks) drive a run through :meth:`Monitor.execute`,
which behaves like a QMP monitor: a command either returns a value or is
refused with ``{"class", "desc"}``.  Every command, accepted or refused, is
appended to :attr:`Monitor.commands` with its simulated timestamp, so a
refusal ("cannot accept command verb 'complete'") is part of the result.

Commands:

- ``stop``, ``cont``, ``query-block-jobs``;
- ``block-job-{pause,resume,complete,cancel,set-speed}`` (argument ``device``,
  the job id, as in QMP), ``block-job-{finalize,dismiss}`` (``id``);
- ``job-{pause,resume,complete,cancel,finalize,dismiss}`` (``id``);
  ``job-cancel`` is always a forced cancel, as in QEMU, where
  ``block-job-cancel`` takes ``force`` and refuses an unforced cancel of a
  paused job; the ``rfc-2012`` profile answers the ``job-*`` commands and
  ``block-job-{finalize,dismiss}`` with CommandNotFound, as the 2012 monitor
  did, and the other commands QEMU 1.3 did not have
  (``Profile.newer_commands``: ``blockdev-mirror``, a mirror starting with
  ``drive-mirror`` there, ``query-named-block-nodes``,
  ``block-set-write-threshold``; backup and bitmaps: ``has_backup``);
- ``job-start`` (``id``): start a job the scenario declared with
  ``start = "manual"``.  A job the scenario starts by itself (``start`` a
  time) is recorded as the ``blockdev-mirror``, ``block-stream`` or
  ``block-commit`` command
  that would start it in QEMU, with its arguments;
- ``thin-extend`` (``image``, ``capacity`` or ``by``; ``latency``,
  ``if-free-below``, ``cont``): the storage administrator grows a thin
  device, at once or ``latency`` later, only when its free space is below
  ``if-free-below``, continuing a VM paused on an I/O error once done;
- ``guest-burst`` (``drive`` and workload keys): the guest issues a burst;
- ``block-set-write-threshold`` (``node-name``: ``IMAGE``, the format
  node, or ``IMAGE-file``, its protocol node; ``write-threshold``),
  ``query-named-block-nodes`` and ``query-block`` (``write_threshold``);
- ``lv-extend`` (``image``, ``size`` or ``by``): ask the storage to grow a
  thin volume (blocksim.model.thin), answered by VOLUME_EXTENDED or
  VOLUME_EXTEND_FAILED later;
- ``block-dirty-bitmap-{add,remove,clear,enable,disable}`` (``node``: an
  image or a drive; ``name``; add also ``granularity``, ``persistent``,
  ``disabled``): named dirty bitmaps (``blocksim.model.named_bitmap``);
  ``block-dirty-bitmap-merge`` (``node``, ``target``, ``bitmaps``);
- ``transaction`` (``actions``: ``{type, data}`` each, bitmap commands, a
  ``blockdev-backup`` of a declared job, ``abort``; ``properties``): all or
  nothing (``blocksim.management.transaction``).
"""

from __future__ import annotations

from typing import Any

from ..errors import CommandError
from ..jobs import newest_first
from ..model import named_bitmap
from ..model.profile import JOB_API_2_12_COMMANDS
from ..record.eventlog import qmp_timestamp
from . import transaction
from ..scenario.units import parse_duration


class Monitor:
    def __init__(self, sim):
        self.sim = sim
        self.commands: list[dict[str, Any]] = []
        #: how a transaction's blockdev-backup finds its job (None: the
        #: scenario's job of that id; blocksim serve builds it from QMP's
        #: arguments: management.transaction.run)
        self.backup_job = None

    def execute(self, command: str, arguments: dict | None = None,
                source: str | None = None) -> Any:
        """Run one command; returns its value, or ``None`` if it was refused."""
        arguments = dict(arguments or {})
        record: dict[str, Any] = {"timestamp": qmp_timestamp(self.sim.env.now),
                                  "execute": command, "arguments": arguments}
        if source is not None:
            record["source"] = source
        handler = _HANDLERS.get(command)
        profile = self.sim.profile
        if (not profile.job_api_2_12 and command in JOB_API_2_12_COMMANDS
                or command in profile.newer_commands):
            handler = None              # the 2012 monitor had no such command
        try:
            if handler is None:
                raise CommandError(f"The command {command} has not been found",
                                   "CommandNotFound")
            value = handler(self.sim, arguments)
        except CommandError as exc:
            record["error"] = {"class": exc.error_class, "desc": exc.desc}
            self.commands.append(record)
            return None
        record["return"] = {} if value is None else value
        self.commands.append(record)
        return value


def _block_job(sim, args: dict, key: str = "device"):
    job_id = args.get(key)
    job = sim.jobs.get(job_id)
    if job is None or job.status in (None, "null"):
        raise CommandError(f"Block job '{job_id}' not found", "DeviceNotActive")
    return job


def _job(sim, args: dict):
    job = sim.jobs.get(args.get("id"))
    if job is None or job.status in (None, "null"):
        raise CommandError("Job not found")
    return job


def _job_start(sim, args, key: str = "id"):
    job_id = args.get(key)
    if job_id not in sim.jobs:
        raise CommandError(f"No job declared with id '{job_id}'")
    sim.start_job(job_id)


def _block_job_cancel(sim, args: dict):
    """blockdev.c ``qmp_block_job_cancel``: ``force`` defaults to false, and
    an unforced cancel of a user-paused job (paused by the user or by a
    ``stop`` error) is refused, before the verb check."""
    job = _block_job(sim, args)
    force = bool(args.get("force", False))
    if job.user_paused and not force and sim.profile.strict_job_verbs:
        raise CommandError(f"The block job for device '{args.get('device')}' is currently paused")
    job.cancel(force)


def _thin_extend(sim, args):
    """Grow a thin device now, or ``latency`` later (its extends under way
    are in ``sim.pending_extends``, by image: the capacity they will set).
    With ``if-free-below``, only when the free space counting the extends
    under way is below it: otherwise the return says ``"extended": false``."""
    device = sim.devices[args["image"]]
    pending = sim.pending_extends
    # (a thin volume's size is its lv-size: blocksim.model.thin)
    current = pending.get(device.name,
                          device.lv_size if device.lv_size is not None else device.capacity)
    if args.get("capacity") is not None:
        new = int(args["capacity"])
    else:
        base = current if current is not None else device.allocated_bytes
        new = base + int(args["by"])
    if current is not None and new < current:
        raise CommandError(f"Cannot shrink thin device '{device.name}' "
                           f"from {current} to {new} bytes")
    below = args.get("if-free-below")
    if below is not None and current is not None and current - device.allocated_bytes >= int(below):
        return {"capacity": current, "extended": False}
    # (a validated action's arguments hold seconds, as a scenario's dump does)
    latency = parse_duration(args.get("latency") or 0)
    if not latency:
        _extended(sim, device, new, bool(args.get("cont")))
        return {"capacity": new}
    pending[device.name] = new
    sim.env.process(_extend_later(sim, device, new, latency, bool(args.get("cont"))))
    return {"capacity": new, "ready-in": latency / 1e9}


def _extend_later(sim, device, new: int, latency: int, cont: bool):
    """The storage's extend: the space is usable ``latency`` after the command."""
    yield sim.env.timeout(latency)
    if sim.pending_extends.get(device.name) == new:
        del sim.pending_extends[device.name]
    _extended(sim, device, new, cont)


def _extended(sim, device, new: int, cont: bool) -> None:
    if device.capacity is None or new > device.capacity:
        device.extend(new)
    if cont and sim.vm.state == "io-error":
        sim.monitor.execute("cont", {}, source="thin-extend")


def _node(sim, name):
    """The device and layer of a node name: ``IMAGE`` (its format node, the
    node jobs name) or ``IMAGE-file`` (its protocol node)."""
    if name in sim.devices:
        return sim.devices[name], "format"
    if isinstance(name, str) and name.endswith("-file") and name[:-5] in sim.devices:
        return sim.devices[name[:-5]], "file"
    return None, None


def _block_set_write_threshold(sim, args):
    """block/write-threshold.c qmp_block_set_write_threshold: arm (or with
    0 disarm) the threshold of the node named; an unknown node is refused
    with "Device '%s' not found"."""
    name = args.get("node-name")
    device, layer = _node(sim, name)
    if device is None:
        raise CommandError(f"Device '{name}' not found")
    threshold = int(args.get("write-threshold", 0))
    if layer == "format":
        device.write_threshold = threshold
    else:
        device.file_write_threshold = threshold


def _node_info(device, layer: str) -> dict:
    """A BlockDeviceInfo as block/qapi.c bdrv_block_device_info fills it,
    for what blocksim models: node-name, drv, image sizes and
    ``write_threshold`` (bdrv_write_threshold_get)."""
    if layer == "format":
        return {"node-name": device.name, "drv": device.format,
                "image": {"virtual-size": device.size, "actual-size": device.physical_size},
                "write_threshold": device.write_threshold}
    return {"node-name": f"{device.name}-file", "drv": "file",
            "image": {"virtual-size": device.physical_size,
                      "actual-size": device.physical_size},
            "write_threshold": device.file_write_threshold}


def _query_named_block_nodes(sim, args):
    out = []
    for device in sim.devices.values():
        out.append(_node_info(device, "format"))
        out.append(_node_info(device, "file"))
    return out


def _cont(sim) -> None:
    """cont: monitor/qmp-cmds.c:qmp_cont resets every drive's io-status and
    every block job's (block_job_iostatus_reset_locked: the job stays
    paused; checked on a QEMU 7.2 VM), whether the VM was stopped or not,
    then starts the VM (blocksim.model.vm.VM.cont)."""
    if sim.profile.cont_resets_job_iostatus:
        for job in sim.jobs.values():
            job.iostatus.reset()
    sim.vm.cont()


def _query_block(sim, args):
    """query-block: one entry per drive (BlockBackend), ``inserted`` its
    root node's BlockDeviceInfo (the format node's write threshold), and
    ``io-status`` when the drive has one (block/qapi.c:bdrv_query_info asks
    blk_iostatus_is_enabled: werror stop or enospc, or rerror stop)."""
    out = []
    for name, drive in sim.drives.items():
        info = {"device": name, "inserted": _node_info(drive.node, "format")}
        if drive.iostatus_enabled:
            info["io-status"] = drive.iostatus.value
        out.append(info)
    return out


def _lv_extend(sim, args):
    """Ask the storage to grow a thin volume (blocksim.model.thin): queued at
    its pool, done after a latency and a refresh; the outcome comes as
    VOLUME_EXTENDED or VOLUME_EXTEND_FAILED."""
    device = sim.devices.get(args.get("image"))
    if device is None or device.lv_size is None:
        raise CommandError(f"'{args.get('image')}' is not a thin volume")
    new = int(args["size"]) if args.get("size") is not None else device.lv_size + int(args["by"])
    if new < device.lv_size:
        raise CommandError(f"Cannot shrink volume '{device.name}' from {device.lv_size} "
                           f"to {new} bytes")
    sim.volume_group(device).request(device, new)
    return {"size": new}


def _guest_burst(sim, args):
    sim.start_burst(args)


def _bitmap_command(command: str, action):
    """A ``block-dirty-bitmap-*`` handler: the node (an image, or a drive's
    top node), then the model's command."""
    def handler(sim, args):
        action(_bitmap_node(sim, args.get("node"), command), args)
    return handler


def _bitmap_node(sim, node, command: str):
    """The node a bitmap command names (an image, or a drive's top node),
    as ``block_dirty_bitmap_lookup`` finds it (``bdrv_lookup_bs``); the 2012
    monitor has no bitmap commands."""
    if not sim.profile.has_backup:
        raise CommandError(f"The command {command} has not been found", "CommandNotFound")
    device = sim.devices.get(node)
    if device is None and node in sim.drives:
        device = sim.drives[node].node
    if device is None:
        raise CommandError(f"Cannot find device='{node}' nor node-name='{node}'"
                           if command.endswith("-add") else f"Node '{node}' not found")
    return device


def _bitmap_merge(sim, args) -> None:
    """``block-dirty-bitmap-merge``: its sources looked up as their turn
    comes (:func:`transaction.merge_sources`)."""
    command = "block-dirty-bitmap-merge"
    device = _bitmap_node(sim, args.get("node"), command)
    named_bitmap.merge_bitmaps(device, args.get("target"), transaction.merge_sources(
        device, args, lambda node: _bitmap_node(sim, node, command)))


_HANDLERS = {
    "stop": lambda sim, a: sim.vm.stop("paused"),
    "cont": lambda sim, a: _cont(sim),
    "query-block-jobs": lambda sim, a: [j.query() for j in newest_first(sim.jobs.values())],
    # job-qmp.c qmp_query_jobs: every job, newest first, internal ones aside
    "query-jobs": lambda sim, a: [j.job_info() for j in newest_first(sim.jobs.values())],
    "block-job-pause": lambda sim, a: _block_job(sim, a).user_pause(),
    "block-job-resume": lambda sim, a: _block_job(sim, a).user_resume(),
    "block-job-complete": lambda sim, a: _block_job(sim, a).complete(),
    "block-job-cancel": _block_job_cancel,
    "block-job-set-speed": lambda sim, a: _block_job(sim, a).set_speed(int(a.get("speed", 0))),
    "block-job-finalize": lambda sim, a: _block_job(sim, a, "id").finalize(),
    "block-job-dismiss": lambda sim, a: _block_job(sim, a, "id").dismiss(),
    "job-pause": lambda sim, a: _job(sim, a).user_pause(),
    "job-resume": lambda sim, a: _job(sim, a).user_resume(),
    "job-complete": lambda sim, a: _job(sim, a).complete(),
    # job-qmp.c qmp_job_cancel: job_user_cancel_locked(job, true, ...), always forced
    "job-cancel": lambda sim, a: _job(sim, a).cancel(True),
    "job-finalize": lambda sim, a: _job(sim, a).finalize(),
    "job-dismiss": lambda sim, a: _job(sim, a).dismiss(),
    "job-start": _job_start,
    "blockdev-mirror": lambda sim, a: _job_start(sim, a, "job-id"),
    "drive-mirror": lambda sim, a: _job_start(sim, a, "job-id"),
    "block-stream": lambda sim, a: _job_start(sim, a, "job-id"),
    "block-commit": lambda sim, a: _job_start(sim, a, "job-id"),
    "blockdev-backup": lambda sim, a: _job_start(sim, a, "job-id"),
    "block-dirty-bitmap-add": _bitmap_command("block-dirty-bitmap-add", lambda dev, a: (
        named_bitmap.add_bitmap(dev, a.get("name", ""), a.get("granularity"),
                                bool(a.get("persistent", False)),
                                bool(a.get("disabled", False))) and None)),
    "block-dirty-bitmap-remove": _bitmap_command("block-dirty-bitmap-remove", lambda dev, a:
                                                 named_bitmap.remove_bitmap(dev, a.get("name"))),
    "block-dirty-bitmap-clear": _bitmap_command("block-dirty-bitmap-clear", lambda dev, a:
                                                named_bitmap.clear_bitmap(dev, a.get("name"))),
    "block-dirty-bitmap-enable": _bitmap_command("block-dirty-bitmap-enable", lambda dev, a:
                                                 named_bitmap.enable_bitmap(dev, a.get("name"),
                                                                            True)),
    "block-dirty-bitmap-disable": _bitmap_command("block-dirty-bitmap-disable", lambda dev, a:
                                                  named_bitmap.enable_bitmap(dev, a.get("name"),
                                                                             False)),
    "block-dirty-bitmap-merge": _bitmap_merge,
    "transaction": lambda sim, a: transaction.run(sim, a, _bitmap_node, sim.monitor.backup_job),
    "thin-extend": _thin_extend,
    "block-set-write-threshold": _block_set_write_threshold,
    "query-named-block-nodes": _query_named_block_nodes,
    "query-block": _query_block,
    "lv-extend": _lv_extend,
    "guest-burst": _guest_burst,
}

COMMANDS = tuple(sorted(_HANDLERS))
