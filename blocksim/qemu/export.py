"""``blocksim export``: take a scenario to a real stack (issue 20, item 4).

Two forms, both printed, neither run:

- :func:`qsd_script` (``--qsd``): a shell script that builds the scenario's
  images with ``qemu-img`` / ``qemu-io`` (initial data, persistent bitmaps),
  starts ``qemu-storage-daemon`` with a QMP socket, and lists the QMP
  commands that add the nodes (blkdebug rules for the error faults), start
  the jobs and run the management actions, each with when it is due, and
  the guest's writes qemu-check can make (``qemu-io`` over an NBD export of
  the drive's node: a sequential ``guest-burst``).  It is
  qemu-check's own translation (:func:`~blocksim.qemu.translate.translate`),
  so it sets up exactly what ``blocksim qemu-check`` runs, and names what it
  leaves out (guests, thin storage, non-blkdebug faults) and why;
- :func:`libvirt_disks` (``--libvirt``): the domain XML ``<disk>`` elements
  of the scenario's drives, with ``error_policy`` / ``rerror_policy`` from
  the drive's ``werror`` / ``rerror``, the backing chain as
  ``<backingStore>``, and comments for what libvirt cannot say (a read
  policy of ``enospc``) and the ``virsh`` command of each job.

libvirt's policy names (``docs/formatdomain``): ``error_policy`` is
``stop | report | ignore | enospace`` and covers reads too unless
``rerror_policy`` (``stop | report | ignore``: no ``enospace``) is given;
omitted, QEMU's defaults apply (werror ``enospc``, rerror ``report``).  So a
read policy is always written out, or a write ``stop`` would stop reads too.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Optional
from xml.sax.saxutils import quoteattr

from ..scenario import BackupJob, CommitJob, MirrorJob, Scenario, StreamJob
from ..scenario.units import format_duration, format_size
from .translate import Plan, image_steps, translate

__all__ = ["image_commands", "qsd_script", "libvirt_disks", "QMP_SOCKET", "NBD_SOCKET",
           "LIBVIRT_WRITE_POLICY", "LIBVIRT_READ_POLICY"]

#: the QMP socket the exported daemon listens on (relative to its directory)
QMP_SOCKET = "blocksim-qmp.sock"
QSD_PIDFILE = "qemu-storage-daemon.pid"
#: the NBD socket of the drives' exports, when the scenario has guest writes
NBD_SOCKET = "blocksim-nbd.sock"

#: blocksim's werror -> libvirt's error_policy (auto: QEMU's default for writes)
LIBVIRT_WRITE_POLICY = {"report": "report", "ignore": "ignore", "stop": "stop",
                        "enospc": "enospace", "auto": "enospace"}
#: blocksim's rerror -> libvirt's rerror_policy (auto: QEMU's default for reads);
#: enospc has no libvirt name
LIBVIRT_READ_POLICY = {"report": "report", "ignore": "ignore", "stop": "stop",
                       "auto": "report"}


# -- the images: the commands qemu-check runs (translate.image_steps) -------------------
def image_commands(plan: Plan, paths: Optional[dict[str, str]] = None,
                   qemu_img: str = "qemu-img", qemu_io: str = "qemu-io") -> list[list[str]]:
    """The ``qemu-img`` / ``qemu-io`` argument lists that create the plan's
    images with their initial data and bitmaps, in backing order.  ``paths``
    maps image names to files (default: each image's file name, relative)."""
    return [args for args, _ in image_steps(plan, paths, qemu_img, qemu_io)]


# -- --qsd ---------------------------------------------------------------------------------
def _when(at: Optional[int], on: Optional[str], match: dict, delay: int, repeat: bool,
          nth: Optional[int] = None, after: Optional[str] = None) -> str:
    if on is None:
        return f"at {format_duration((at or 0) + delay)}"
    text = f"on {on}"
    if match:
        text += " " + json.dumps(match, sort_keys=True)
    if nth is not None:
        text += f" (nth = {nth})"
    if after is not None:
        text += f" (after {after})"
    if delay:
        text += f", {format_duration(delay)} later"
    if repeat:
        text += ", every time"
    return text


def _qmp(command: str, arguments: Optional[dict[str, Any]] = None) -> str:
    msg: dict[str, Any] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    return json.dumps(msg)


def qsd_script(scenario: Scenario) -> str:
    """The scenario as a qemu-storage-daemon session: a shell script that
    makes the images and starts the daemon, then prints (``cat`` of a here
    document) the QMP commands, one JSON object a line, each under a comment
    saying when it is due, to be sent through the daemon's socket."""
    plan = translate(scenario)
    lines = [f"# blocksim export --qsd: {scenario.name}"]
    if scenario.description:
        lines.append(f"# {scenario.description}")
    lines += ["# What qemu-check runs (blocksim/qemu/translate.py): run it in an empty directory.",
              "set -e", "", "# 1. The images, their initial data and bitmaps"]
    lines += [shlex.join(args) for args in image_commands(plan)]
    lines += ["", "# 2. The daemon, with a QMP monitor on a UNIX socket",
              shlex.join(["qemu-storage-daemon",
                          "--chardev", f"socket,id=qmp0,path={QMP_SOCKET},server=on,wait=off",
                          "--monitor", "chardev=qmp0", "--pidfile", QSD_PIDFILE]) + " &",
              "# connect once the pid file exists: the daemon writes it after its chardevs, before it"
              " accepts connections",
              f"while [ ! -e {QSD_PIDFILE} ]; do sleep 0.01; done",
              "", "# 3. QMP, one command a line (for example through",
              f"#    socat - UNIX-CONNECT:{QMP_SOCKET}), each at the time its comment says:",
              "cat <<'QMP'", _qmp("qmp_capabilities")]
    for name in plan.image_order():
        lines.append(_qmp("blockdev-add", plan.blockdev_options(name, plan.images[name].filename)))
    if plan.exports:     # guest writes: an NBD export per drive (check._QemuRun._start_exports)
        lines.append(_qmp("nbd-server-start",
                          {"addr": {"type": "unix", "data": {"path": NBD_SOCKET}}}))
        for drive, node in plan.exports.items():
            lines.append(_qmp("block-export-add", {"type": "nbd", "id": f"export-{drive}",
                                                   "node-name": node, "name": drive,
                                                   "writable": True}))
    events: list[tuple[int, int, str]] = []
    # (a job a transaction starts: its command is in the transaction's)
    in_transaction = {entry["data"].get("job-id") for action in plan.actions
                      if action.command == "transaction"
                      for entry in action.arguments["actions"] if entry["type"] == "blockdev-backup"}
    for job in plan.jobs.values():
        if job.start is not None:
            events.append((job.start, len(events),
                           f"# jobs.{job.id}: at {format_duration(job.start)}\n"
                           + _qmp(job.command, job.arguments)))
        elif job.id in in_transaction:
            continue
        else:
            events.append((plan.duration, len(events),
                           f"# jobs.{job.id}: started by a job-start action\n"
                           + _qmp(job.command, job.arguments)))
    for action in plan.actions:
        when = _when(action.at, action.on, action.match, action.delay, action.repeat,
                     action.nth, action.after)
        key = (action.at + action.delay) if action.on is None else plan.duration
        text = f"# actions.{action.original}: {when}\n"
        if action.command == "job-start" and action.arguments.get("id") in plan.jobs:
            text += f"#   (job-start of jobs.{action.arguments['id']}: send its command above)"
        elif action.command == "guest-burst":
            text += "#   the guest's writes, one after the other: " + _guest_writes(action)
        else:
            text += _qmp(action.command, action.arguments)
        events.append((key, len(events), text))
    lines += [text for _key, _n, text in sorted(events)]
    lines.append("QMP")
    lines.append(f"# The scenario runs for {format_duration(plan.duration)}.")
    if plan.skipped or plan.notes:
        lines += ["", "# Not expressed, and why:"]
        lines += [f"#   {item}" for item in plan.skipped]
        lines += [f"#   note: {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


def _guest_writes(action) -> str:
    """A guest-burst as qemu-check carries it out (check._QemuRun._guest_burst):
    qemu-io over the drive's NBD export, with a byte pattern of its own."""
    drive = action.arguments["drive"]
    io = ["qemu-io", "-f", "raw", f"nbd+unix:///{drive}?socket={NBD_SOCKET}"]
    for off, length in action.writes:
        io += ["-c", f"write -P 0x{0x80 + action.original % 0x70:x} {off} {length}"]
    return shlex.join(io)


# -- --libvirt -----------------------------------------------------------------------------
_TARGET = re.compile(r"^(vd|sd|hd|xvd)[a-z]+$")


def _target_names(scenario: Scenario) -> dict[str, str]:
    """Each drive's ``<target dev>``: its own name when it looks like one,
    else the next free ``vdX``."""
    out: dict[str, str] = {}
    used = {name for name in scenario.drives if _TARGET.match(name)}
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for name in scenario.drives:
        if _TARGET.match(name):
            out[name] = name
            continue
        dev = f"vd{next(letters)}"
        while dev in used:
            dev = f"vd{next(letters)}"
        used.add(dev)
        out[name] = dev
    return out


def _comment(text: str) -> str:
    """An XML comment (which may not hold ``--`` nor end with ``-``)."""
    while "--" in text:
        text = text.replace("--", "- -")
    return f"<!-- {text} -->"


def _job_comment(scenario: Scenario, job_id: str, job, dev: str, image_dir: str) -> str:
    images = scenario.images

    def file(name: str) -> str:
        return f"{image_dir}/{name}.{images[name].format}"

    speed = f", bandwidth {job.speed} bytes/s" if job.speed else ""
    if isinstance(job, CommitJob):
        top = job.top or scenario.drives[job.device].image
        base = f", base {file(job.base)}" if job.base else ""
        how = (f"virsh blockcommit {dev} active{base}{speed}, pivot once ready"
               if top == scenario.drives[job.device].image else
               f"virsh blockcommit {dev}, top {file(top)}{base}{speed}")
        policies = f"on-error={job.on_error}"
    elif isinstance(job, MirrorJob):
        how = f"virsh blockcopy {dev}, destination {file(job.target)}{speed}, pivot once ready"
        policies = f"on-source-error={job.on_source_error} on-target-error={job.on_target_error}"
    elif isinstance(job, StreamJob):
        base = f", base {file(job.base)}" if job.base else ""
        how = f"virsh blockpull {dev}{base}{speed}"
        policies = f"on-error={job.on_error}"
    else:
        assert isinstance(job, BackupJob)
        how = (f"virsh backup-begin with a push-mode domainbackup of {dev} to {file(job.target)}"
               " (an incremental names a checkpoint, libvirt's bitmap)")
        policies = f"on-source-error={job.on_source_error} on-target-error={job.on_target_error}"
    return "  " + _comment(f"jobs.{job_id} ({job.type}): {how}; libvirt has no setting for the "
                           f"scenario's {policies}")


def libvirt_disks(scenario: Scenario, image_dir: str = "/var/lib/libvirt/images") -> str:
    """The ``<disk>`` elements of the scenario's drives, for a domain's
    ``<devices>``."""
    images = scenario.images
    targets = _target_names(scenario)
    lines = [_comment(f"blocksim export, libvirt form: {scenario.name}")]
    if scenario.description:
        lines.append(_comment(scenario.description))
    for name, drive in scenario.drives.items():
        img = images[drive.image]
        write = LIBVIRT_WRITE_POLICY[drive.werror]
        read = LIBVIRT_READ_POLICY.get(drive.rerror)
        attrs = f'name="qemu" type={quoteattr(img.format)} error_policy={quoteattr(write)}'
        if read is not None:
            attrs += f" rerror_policy={quoteattr(read)}"
        lines.append(_comment(f"drives.{name}: rerror={drive.rerror} werror={drive.werror}"))
        if drive.werror == "auto":
            lines.append("<!-- werror auto: QEMU's default for writes, enospace -->")
        if drive.rerror == "auto":
            lines.append("<!-- rerror auto: QEMU's default for reads, report -->")
        if read is None:
            lines.append(_comment(f"rerror={drive.rerror}: libvirt has no such read policy "
                                  "(rerror_policy is stop, report or ignore); without "
                                  "rerror_policy, error_policy applies to reads too, except "
                                  "enospace (then report)"))
        lines += ['<disk type="file" device="disk">', f"  <driver {attrs}/>",
                  f"  <source file={quoteattr(f'{image_dir}/{drive.image}.{img.format}')}/>"]
        depth, backing = 1, img.backing
        while backing is not None:
            pad = "  " * depth
            b = images[backing]
            lines += [f'{pad}<backingStore type="file">', f"{pad}  <format type={quoteattr(b.format)}/>",
                      f"{pad}  <source file={quoteattr(f'{image_dir}/{backing}.{b.format}')}/>"]
            depth += 1
            backing = b.backing
        pad = "  " * depth
        lines.append(f"{pad}<backingStore/>")
        for d in range(depth - 1, 0, -1):
            lines.append(f"{'  ' * d}</backingStore>")
        lines.append(f'  <target dev={quoteattr(targets[name])} bus="virtio"/>')
        for job_id, job in scenario.jobs.items():
            if job.device == name:
                lines.append(_job_comment(scenario, job_id, job, targets[name], image_dir))
        lines.append("</disk>")
    thin = [f"{n} ({format_size(i.capacity)})" for n, i in images.items() if i.capacity is not None]
    if thin:
        lines.append(_comment(f"thin volumes, to be made by the storage (an LVM thin pool): "
                              f"{', '.join(thin)}"))
    if scenario.faults:
        lines.append(_comment(f"{len(scenario.faults)} fault rule(s) not expressed: libvirt has "
                              "no fault injection (use dm-flakey, dm-dust, dm-delay or dm-error "
                              "under the image)"))
    return "\n".join(lines) + "\n"
