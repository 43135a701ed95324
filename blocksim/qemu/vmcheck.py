"""``qemu-check --vm``: a scenario's guest side against a real QEMU VM.

qemu-check (:mod:`blocksim.qemu.check`) runs scenarios on
qemu-storage-daemon, which has no guest device: the guest's ``rerror`` /
``werror``, the VM's ``STOP``/``RESUME``, ``cont`` and ``query-block``'s
io-status are not checked there.  This check runs a scenario's guest on a
real VM (:mod:`blocksim.qemu.vm`) and on blocksim and compares:

- the **events** in order: ``BLOCK_IO_ERROR`` with its whole payload
  (device, node-name, operation, action, and ``nospace``/``reason`` when
  QEMU gives them), ``STOP``, ``RESUME``;
- the **commands** the scenario's ``on`` actions send, in order, with
  ``query-block``'s io-status per drive (``absent`` when QEMU shows none),
  and a last ``query-block`` once the guest is done;
- what the **guest** saw of each request (``ok`` or ``error``), step by
  step: a write, a read, a flush;
- the **data**: per guest write, whether the disk holds it at the end.

What a scenario may hold (anything else is refused, with the reason):
one drive on one image (raw or qcow2, no backing file, no initial data,
no thin capacity); ``error`` faults on it that blkdebug expresses
(:func:`blocksim.qemu.translate._fault_rules`), at least
:data:`~blocksim.qemu.vm.SAFE_MARGIN` from both ends of the disk (Linux
reads there at boot); guest I/O as ``guest-burst`` actions (``at``) and
``workloads``, sequential reads or writes, one request at a time, or, for a
burst, ``iodepth`` = ``number-ios`` writes issued together (the guest
writes them as one O_DIRECT write that Linux splits into one request each,
``max_sectors_kb`` = the block size); a workload's ``fsync``; ``on``
actions (``cont``, ``stop``, ``query-block``).  Guest I/O
runs in the order of its start times, one step after the other: the VM's
clock is not blocksim's (a TCG guest takes seconds to boot), so only the
order of what happens is compared, never times.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import BlocksimError
from ..management.actions import Trigger
from ..scenario import ErrorFault, GuestBurstAction, Scenario, load_scenario
from ..simulation import Simulation
from .translate import _fault_rules
from .vm import SAFE_MARGIN, VMTools, drive_options, run_vm, scratch_dir

__all__ = ["VMPlan", "VMSide", "VMCheck", "VMUnsupported", "plan_vm", "run_blocksim_vm",
           "run_qemu_vm", "check_vm_scenario", "compare_vm"]

#: the commands an ``on`` action may send to the VM
VM_COMMANDS = ("cont", "stop", "query-block")
#: the events compared
VM_EVENTS = ("BLOCK_IO_ERROR", "STOP", "RESUME")


def format_size(n: int) -> str:
    """Exact: ``1028KiB``, ``3MiB``, ``512`` (bytes)."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class VMUnsupported(BlocksimError):
    """The scenario holds something the VM check cannot run."""


@dataclass
class Step:
    """One step of the guest's program: ``requests`` (op, offset, length)
    issued together (one line of ``/ops``)."""

    op: str                             # write, read, flush
    requests: list[tuple[int, int]]     # (offset, length) of each request
    byte: int = 0                       # a write's byte pattern

    def lines(self) -> list[str]:
        if self.op == "flush":
            return ["f"]
        offset = self.requests[0][0]
        length = sum(n for _o, n in self.requests)
        code = "w" if self.op == "write" else "r"
        line = f"{code} {offset} {length}" + (f" {self.byte}" if code == "w" else "")
        if len(self.requests) == 1:
            return [line]
        # one O_DIRECT write, split by Linux into requests of max_sectors_kb
        return [f"m {self.requests[0][1] // 1024}", line, "m 0"]

    def label(self) -> str:
        if self.op == "flush":
            return "flush"
        return " + ".join(f"{self.op} {format_size(o)}+{format_size(n)}" for o, n in self.requests)


@dataclass
class VMPlan:
    scenario: Scenario
    drive: str
    image: str
    format: str
    size: int
    rules: list[dict]
    steps: list[Step]
    actions: list                       # the on actions
    notes: list[str] = field(default_factory=list)

    def ops(self) -> list[str]:
        return [line for step in self.steps for line in step.lines()]

    def device_options(self) -> str:
        spec = self.scenario.drives[self.drive]
        return (f"virtio-blk-pci,drive={self.drive},id={self.drive}-dev,werror={spec.werror},"
                f"rerror={spec.rerror},request-merging=off")


def plan_vm(scenario: Scenario) -> VMPlan:
    """What the VM runs for ``scenario``, or :class:`VMUnsupported`."""
    why: list[str] = []
    if len(scenario.drives) != 1:
        raise VMUnsupported(f"{scenario.name}: the VM check needs exactly one drive")
    drive, spec = next(iter(scenario.drives.items()))
    image = spec.image
    img = scenario.images[image]
    if len(scenario.images) != 1:
        why.append("images: one image only (the drive's)")
    if img.backing is not None or img.data or img.capacity is not None or img.bitmaps \
            or img.lv_size is not None:
        why.append(f"images.{image}: no backing file, initial data, capacity, bitmaps or volume")
    if scenario.jobs:
        why.append("jobs: the VM check has none (qemu-check runs jobs)")
    rules: list[dict] = []
    notes: list[str] = []
    for index, fault in enumerate(scenario.faults):
        if not isinstance(fault, ErrorFault) or fault.image != image:
            why.append(f"faults.{index}: only error faults on the drive's image")
            continue
        skipped: list = []
        got, narrowed = _fault_rules(index, fault, img.size, set(), skipped, notes)
        if skipped or narrowed is not None:
            why.append(f"faults.{index}: " + "; ".join(s.reason for s in skipped)
                       if skipped else f"faults.{index}: give a one-sector range")
            continue
        if any("sector" not in r and r["iotype"] != "flush" for r in got) or any(
                "sector" in r and not SAFE_MARGIN <= r["sector"] * 512 < img.size - SAFE_MARGIN
                for r in got):
            why.append(f"faults.{index}: Linux reads the disk's first and last "
                       f"{format_size(SAFE_MARGIN)} at boot: keep faults away from them")
            continue
        rules += got
    starts: list[tuple[int, int, list[Step]]] = []
    actions = []
    pattern = 0
    for index, action in enumerate(scenario.actions):
        if isinstance(action, GuestBurstAction):
            a = action.arguments
            rw, bs, depth, count = a["rw"], a["bs"], a["iodepth"], a["number-ios"]
            if action.at is None:
                why.append(f"actions.{index}: a guest-burst at a time ('at') only")
                continue
            if rw not in ("read", "write") or depth not in (1, count) or \
                    (depth > 1 and rw != "write"):
                why.append(f"actions.{index}: sequential reads or writes, iodepth 1 (or all "
                           "writes at once: iodepth = number-ios)")
                continue
            size = a.get("size") if a.get("size") is not None else img.size - a["offset"]
            offsets = [a["offset"] + (i * bs) % size for i in range(count)]
            if depth > 1:
                pattern += 1
                steps = [Step(rw, [(o, bs) for o in offsets], pattern)]
            else:
                steps = []
                for o in offsets:
                    pattern += 1
                    steps.append(Step(rw, [(o, bs)], pattern))
            starts.append((action.at + action.delay, index, steps))
        elif action.on is None:
            why.append(f"actions.{index}: only guest-bursts at a time; other commands on events")
        elif action.command not in VM_COMMANDS:
            why.append(f"actions.{index}: command '{action.command}' (the VM check sends "
                       f"{', '.join(VM_COMMANDS)})")
        else:
            actions.append(action)
    for name, w in scenario.workloads.items():
        if w.drive != drive or w.rw not in ("read", "write") or w.iodepth != 1 or \
                w.number_ios is None or w.rate_iops is not None or w.burst or w.trace or \
                w.end is not None or w.think_time:
            why.append(f"workloads.{name}: sequential reads or writes, iodepth 1, number-ios, "
                       "closed loop (no rate, think-time or end)")
            continue
        size = w.size if w.size is not None else img.size - w.offset
        steps = []
        for i in range(w.number_ios):
            pattern += 1
            steps.append(Step(w.rw, [(w.offset + (i * w.bs) % size, w.bs)], pattern))
            if w.rw == "write" and w.fsync and (i + 1) % w.fsync == 0:
                steps.append(Step("flush", []))
        starts.append((w.start, 1000 + len(starts), steps))
    if pattern > 255:
        why.append("at most 255 guest requests (one byte pattern each)")
    if why:
        raise VMUnsupported(f"{scenario.name}: " + "; ".join(why))
    starts.sort(key=lambda s: (s[0], s[1]))
    steps = [step for _t, _i, group in starts for step in group]
    return VMPlan(scenario, drive, image, img.format, img.size, rules, steps, actions, notes)


# -- the two sides ----------------------------------------------------------------------------
@dataclass
class VMSide:
    events: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    guest: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    raw_events: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def normalise_event(event: dict) -> str:
    name = event["event"]
    if name != "BLOCK_IO_ERROR":
        return name
    data = event.get("data") or {}
    keys = ("device", "node-name", "operation", "action", "nospace", "reason")
    return name + " " + " ".join(f"{k}={data[k]}" for k in keys if k in data)


def normalise_command(record: dict) -> str:
    command = record["execute"]
    if "error" in record:
        return f"{command}: refused: {record['error'].get('desc')}"
    value = record.get("return")
    if command == "query-block":
        return command + ": " + ", ".join(
            f"{b['device']} io-status={b.get('io-status', 'absent')}" for b in value)
    return f"{command}: ok"


def _step_outcomes(plan: VMPlan, errs: list[Optional[int]]) -> list[str]:
    out = []
    k = 0
    for step in plan.steps:
        n = max(1, len(step.requests))
        mine = errs[k:k + n]
        k += n
        if len(mine) < n or None in mine:
            verdict = "never completed"
        else:
            verdict = "error" if any(mine) else "ok"
        out.append(f"{step.label()}: {verdict}")
    return out


def _written(plan: VMPlan, holds) -> list[str]:
    """Per write request: ``written`` when the disk holds it at the end,
    ``not written`` when it holds zeroes there (``holds(offset, length,
    byte)`` answers that, or None: something else)."""
    out = []
    for step in plan.steps:
        if step.op != "write":
            continue
        for offset, length in step.requests:
            verdict = holds(offset, length, step.byte)
            what = {True: "written", False: "not written"}.get(verdict, "something else")
            out.append(f"{format_size(offset)}+{format_size(length)}: {what}")
    return out


def run_blocksim_vm(plan: VMPlan) -> VMSide:
    """blocksim's side: the scenario, every request of the drive recorded
    (no shortcut: every request goes through :meth:`Drive.request`)."""
    t0 = time.monotonic()
    sim = Simulation(plan.scenario, profile="qemu", shortcuts=False)
    drive = sim.drives[plan.drive]
    outcomes: dict[tuple[str, int], Optional[int]] = {}
    order: list[tuple[str, int]] = []
    flushes = [0]
    request = drive.request

    def recorded(op, offset, length, gen=0):
        if op == "flush":
            flushes[0] += 1
            key = ("flush", flushes[0])
        else:
            key = (op, offset)
        order.append(key)
        outcomes[key] = None
        err = yield from request(op, offset, length, gen)
        outcomes[key] = err
        return err

    drive.request = recorded
    result = sim.run()
    sim.monitor.execute("query-block", {}, source="vm-check")
    errs: list[Optional[int]] = []
    nflush = 0
    for step in plan.steps:
        if step.op == "flush":
            nflush += 1
            errs.append(outcomes.get(("flush", nflush)))
        else:
            errs += [outcomes.get((step.op, o)) for o, _n in step.requests]
    device = sim.devices[plan.image]

    def holds(offset, length, _byte):
        values = {v for _a, _b, v in device.read_content(offset, offset + length)}
        if values == {0}:
            return False
        return True if 0 not in values and len(values) == 1 else None

    commands = [c for c in sim.monitor.commands if c["execute"] != "guest-burst"]
    return VMSide(events=[normalise_event(e) for e in result.events if e["event"] in VM_EVENTS],
                  commands=[normalise_command(c) for c in commands],
                  guest=_step_outcomes(plan, errs), data=_written(plan, holds),
                  raw_events=list(result.events), seconds=time.monotonic() - t0)


def run_qemu_vm(plan: VMPlan, tools: VMTools, workdir: Optional[Path] = None,
                timeout: float = 180.0) -> VMSide:
    """QEMU's side: the VM (:func:`blocksim.qemu.vm.run_vm`), the ``on``
    actions answered with the same :class:`Trigger` as blocksim's."""
    workdir = workdir or scratch_dir()
    image = workdir / f"{plan.image}.{plan.format}"
    subprocess.run(["qemu-img", "create", "-f", plan.format, str(image), str(plan.size)],
                   check=True, capture_output=True)
    triggers = [(Trigger.of(a), a) for a in plan.actions]
    pending: list[tuple[float, int, Any]] = []
    records: list[dict] = []
    seq = [0]

    def on_event(event, qmp, now):
        for trigger, action in triggers:
            if trigger.offer(event["event"], event.get("data") or {}):
                seq[0] += 1
                pending.append((now + action.delay / 1e9, seq[0], action))
        pending.sort(key=lambda p: (p[0], p[1]))
        due(qmp, now)

    def due(qmp, now):
        while pending and pending[0][0] <= now:
            _t, _s, action = pending.pop(0)
            records.append(qmp.execute_record(action.command, dict(action.arguments)))
        return pending[0][0] if pending else None

    run = run_vm(tools, plan.ops(), drive_options(plan.drive, plan.image, image, plan.format,
                                                   plan.rules),
                 plan.device_options(), image, on_event, due, workdir, timeout=timeout)
    raw = _raw_image(image, plan.format, workdir)
    errs: list[Optional[int]] = []
    by_line = iter(run.steps)
    for step in plan.steps:
        vm_steps = [next(by_line) for _line in step.lines()]
        main = vm_steps[1] if len(vm_steps) == 3 else vm_steps[0]
        outcome = None if main.outcome is None else (0 if main.outcome == "ok" else 5)
        if len(vm_steps) == 3 and any(s.outcome != "ok" for s in (vm_steps[0], vm_steps[2])):
            raise BlocksimError(f"the guest could not set max_sectors_kb: {vm_steps[0].outcome}")
        errs += [outcome] * max(1, len(step.requests))

    def holds(offset, length, byte):
        chunk = raw[offset:offset + length]
        if chunk == bytes(length):
            return False
        return True if chunk == bytes([byte]) * length else None

    return VMSide(events=[normalise_event(e) for e in run.events if e["event"] in VM_EVENTS],
                  commands=[normalise_command(c) for c in records + run.commands],
                  guest=_step_outcomes(plan, errs), data=_written(plan, holds),
                  raw_events=run.events, seconds=run.seconds)


def _raw_image(image: Path, fmt: str, workdir: Path) -> bytes:
    if fmt == "raw":
        return image.read_bytes()
    out = workdir / "image.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


# -- the comparison ---------------------------------------------------------------------------
@dataclass
class VMCheck:
    name: str
    path: str
    blocksim: VMSide
    qemu: VMSide
    differences: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def compare_vm(sim: VMSide, qemu: VMSide) -> list[str]:
    out = []
    for what in ("events", "commands", "guest", "data"):
        a, b = getattr(sim, what), getattr(qemu, what)
        if a != b:
            i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            out.append(f"{what}: first difference at #{i}: blocksim "
                       f"{a[i] if i < len(a) else '(nothing)'!r}, QEMU "
                       f"{b[i] if i < len(b) else '(nothing)'!r}")
    return out


def check_vm_scenario(path, tools: VMTools, workdir: Optional[Path] = None,
                      keep: bool = False) -> VMCheck:
    """Run scenario ``path`` on blocksim and on the VM and compare.  The
    VM's files go to ``workdir`` (default: a scratch directory, removed
    afterwards unless ``keep``)."""
    scenario = load_scenario(path)
    plan = plan_vm(scenario)
    sim = run_blocksim_vm(plan)
    own = workdir is None
    workdir = workdir or scratch_dir()
    try:
        qemu = run_qemu_vm(plan, tools, workdir)
    finally:
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    notes = list(plan.notes) + ([f"kept: {workdir}"] if own and keep else [])
    return VMCheck(scenario.name, str(path), sim, qemu, compare_vm(sim, qemu), notes)


def vm_check_dict(check: VMCheck) -> dict:
    """The check as data (``--json``)."""
    def side(s: VMSide) -> dict:
        return {"events": s.events, "commands": s.commands, "guest": s.guest, "data": s.data,
                "raw_events": s.raw_events, "seconds": s.seconds}

    return {"name": check.name, "path": check.path, "agrees": check.ok,
            "differences": check.differences, "notes": check.notes,
            "blocksim": side(check.blocksim), "qemu": side(check.qemu)}


def render_vm_check(check: VMCheck) -> str:
    """Two columns per part (blocksim | QEMU, ``!`` where they differ)."""
    lines = [f"== {check.name}: {'agrees' if check.ok else 'DIFFERS'} "
             f"(blocksim {check.blocksim.seconds:.1f}s, QEMU {check.qemu.seconds:.1f}s)"]
    for what in ("events", "commands", "guest", "data"):
        a, b = getattr(check.blocksim, what), getattr(check.qemu, what)
        lines.append(f"  {what}:")
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else ""
            y = b[i] if i < len(b) else ""
            mark = " " if x == y else "!"
            lines.append(f"   {mark} {x:<60} | {y}" if x != y else f"     {x}")
    lines += [f"  note: {n}" for n in check.notes]
    lines += [f"  difference: {d}" for d in check.differences]
    return "\n".join(lines)
