"""A real QEMU VM with a guest that does I/O: the guest side of qemu-check.

qemu-storage-daemon has no guest device, so the guest's ``rerror``/``werror``,
the VM's ``stop``/``cont`` and ``query-block``'s io-status cannot be checked
with it.  This module boots a tiny Linux guest under ``qemu-system-x86_64``
(TCG: no KVM needed) whose only job is a list of I/O requests on one
virtio-blk disk, and records what QEMU says meanwhile over QMP.

The guest
  An initramfs built at run time from installed Debian packages (nothing
  binary is kept in the repository): ``busybox`` (static, package
  ``busybox-static``) as every command, the kernel's virtio modules (package
  ``linux-image-cloud-amd64`` or ``linux-image-amd64``: the kernel is
  ``/boot/vmlinuz-VERSION``, its modules ``/lib/modules/VERSION``), an
  ``/init`` script and the case's program ``/ops``.  The kernel unpacks it,
  ``/init`` loads virtio_blk and runs ``/ops`` step by step:

  - ``w OFFSET LENGTH BYTE``: one O_DIRECT write of LENGTH bytes of BYTE
    (``dd oflag=direct``: a single request, the guest waits for it);
  - ``r OFFSET LENGTH``: one O_DIRECT read;
  - ``f``: an fsync of the disk (``sync /dev/vda``: Linux sends a flush);
  - ``m KB``: Linux's largest request (``max_sectors_kb``; 0: back to its
    default), so that one O_DIRECT write becomes several requests issued
    together, in one notification of the device;

  and prints ``<step> ok`` or ``<step> err <message>`` for each to its
  second serial port, then ``DONE`` and powers off.  Linux reads the first
  and last sectors of the disk at boot (the partition scan): faults belong
  elsewhere (:data:`SAFE_MARGIN`).

The VM
  ``-drive if=none,id=DRIVE,node-name=NODE,driver=blkdebug,...`` (so that
  ``BLOCK_IO_ERROR``'s ``device`` is the drive's name, as blocksim names it,
  and ``node-name`` the node over the image: a blkdebug node with the
  case's ``inject-error`` rules) and ``-device virtio-blk-pci`` with the
  case's ``werror``/``rerror`` and ``request-merging=off`` (QEMU would
  otherwise merge adjacent requests issued together into one).  It starts
  paused (``-S``): the QMP client connects, then ``cont`` starts it, so no
  event is missed (events before that ``cont``'s RESUME are not the case's).
  A guest power-off pauses the VM (``-action shutdown=pause``) for a last
  ``query-block``, then ``quit``.

:func:`run_vm` returns the events, the answers to the commands the caller's
``on_event`` sent, the guest's per-step results and the image file; the
comparison with blocksim is :mod:`blocksim.qemu.vmcheck`'s.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .daemon import find_binary
from .errors import QemuError, QemuNotFoundError
from .qmp_client import QMPClient, QMPConnectError

__all__ = ["VMTools", "find_vm_tools", "GuestStep", "VMRun", "run_vm", "build_initramfs",
           "SAFE_MARGIN", "VMError"]

#: Faults must stay this far from both ends of the disk: Linux's partition
#: scan reads the first sectors (and some table formats the last ones).
SAFE_MARGIN = 1 << 20

#: the kernel modules the guest needs (their dependencies are added from modules.dep)
_MODULES = ("virtio_pci", "virtio_blk")

_INSTALL = ("apt-get install -y --no-install-recommends qemu-system-x86 "
            "linux-image-cloud-amd64 busybox-static (or run blocksim/qemu/install.sh)")


class VMError(QemuError):
    """The VM did not start, hung, or its guest did not run its program."""


@dataclass
class VMTools:
    qemu: str               # qemu-system-x86_64
    kernel: str             # /boot/vmlinuz-VERSION
    modules: str            # /lib/modules/VERSION
    busybox: str            # a static busybox


def _static(path: str) -> bool:
    """Whether ``path`` is an ELF executable without an interpreter (static)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and b"/ld-linux" not in head and b"ld-musl" not in head


def find_vm_tools(qemu: Optional[str] = None) -> VMTools:
    """The VM's binaries, or :class:`QemuNotFoundError` saying what to install."""
    try:
        qemu_bin = find_binary("qemu-system-x86_64", qemu)
    except QemuNotFoundError:
        raise QemuNotFoundError(f"qemu-system-x86_64 not found; install it: {_INSTALL}") from None
    kernels = []
    for path in sorted(Path("/boot").glob("vmlinuz-*")):
        version = path.name[len("vmlinuz-"):]
        mods = Path("/lib/modules") / version
        if (mods / "modules.dep").exists() and os.access(path, os.R_OK):
            kernels.append((path, mods))
    if not kernels:
        raise QemuNotFoundError(f"no readable /boot/vmlinuz-* with its /lib/modules; install: {_INSTALL}")
    # the cloud kernel boots faster (fewer drivers); else the newest
    kernel, mods = next(((k, m) for k, m in reversed(kernels) if "cloud" in k.name), kernels[-1])
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if _static(p)), None)
    if busybox is None:
        raise QemuNotFoundError(f"no static busybox; install busybox-static: {_INSTALL}")
    return VMTools(qemu=qemu_bin, kernel=str(kernel), modules=str(mods), busybox=busybox)


# -- the initramfs --------------------------------------------------------------------
_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
out=/dev/ttyS1
i=0
for n in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/vda ] || echo "NODISK" > $out
maxkb=$(cat /sys/block/vda/queue/max_sectors_kb)
one() {
  # one request: $1 step, $2 op, then its arguments; one line of outcome
  case $2 in
  w) head -c $4 /dev/zero | tr '\0' "\\$(printf %03o $5)" > /tmp/buf.$1
     msg=$(dd if=/tmp/buf.$1 of=/dev/vda bs=$4 count=1 seek=$3 oflag=direct,seek_bytes \
           conv=notrunc status=none 2>&1);;
  r) msg=$(dd if=/dev/vda of=/dev/null bs=$4 count=1 skip=$3 iflag=direct,skip_bytes \
           status=none 2>&1);;
  f) msg=$(sync /dev/vda 2>&1);;
  m) kb=$3; [ "$kb" = 0 ] && kb=$maxkb
     msg=$(echo $kb > /sys/block/vda/queue/max_sectors_kb 2>&1);;
  esac
  if [ $? -eq 0 ]; then echo "$1 ok" > $out; else echo "$1 err $msg" | head -n 1 > $out; fi
}
echo START > $out
while read op a b c; do
  i=$((i + 1))
  one $i $op $a $b $c
done < /ops
echo DONE > $out
poweroff -f
"""


def _module_order(modules_dir: Path, wanted=_MODULES) -> list[tuple[str, Path]]:
    """``(name, path)`` of ``wanted`` and their dependencies, dependencies
    first (modules.dep lists each module's, already closed)."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(rel: str) -> None:
        for dep in reversed(deps.get(rel, [])):
            visit(dep)
        if rel not in order:
            order.append(rel)

    for name in wanted:
        if name not in by_name:
            # built into the kernel (=y): nothing to load
            if (modules_dir / "modules.builtin").exists() and \
                    any(Path(b).name.startswith(name + ".ko")
                        for b in (modules_dir / "modules.builtin").read_text().split()):
                continue
            raise VMError(f"kernel module {name} not found in {modules_dir}")
        visit(by_name[name])
    out = []
    for rel in order:
        if not rel.endswith(".ko"):
            raise VMError(f"kernel module {rel} is compressed; busybox insmod needs plain .ko files")
        out.append((Path(rel).name[:-3], modules_dir / rel))
    return out


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of ``(path, mode, data)`` entries."""
    out = bytearray()

    def header(name: str, mode: int, size: int, ino: int) -> None:
        fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
        out.extend(b"070701" + "".join(f"{v:08x}" for v in fields).encode())
        out.extend(name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (path, mode, data) in enumerate(entries, 1):
        header(path, mode, len(data), ino)
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
    header("TRAILER!!!", 0, 0, 0)
    return bytes(out)


def build_initramfs(tools: VMTools, ops: list[str], path: Path) -> Path:
    """Write the guest's initramfs (gzip'd newc cpio) with program ``ops``."""
    mods = _module_order(Path(tools.modules))
    d, x, r = 0o040755, 0o100755, 0o100644
    entries = [(p, d, b"") for p in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules")]
    entries.append(("bin/busybox", x, Path(tools.busybox).read_bytes()))
    entries += [(f"lib/modules/{name}.ko", r, p.read_bytes()) for name, p in mods]
    entries.append(("modules", r, " ".join(name for name, _ in mods).encode() + b"\n"))
    entries.append(("init", x, _INIT.encode()))
    entries.append(("ops", r, "".join(line + "\n" for line in ops).encode()))
    path.write_bytes(gzip.compress(_cpio(entries), compresslevel=1))
    return path


# -- a run ----------------------------------------------------------------------------------
@dataclass
class GuestStep:
    """One line of the guest's program and what the guest saw."""

    op: str                     # w, r, f, m
    offset: int = 0
    length: int = 0
    byte: int = 0
    outcome: Optional[str] = None   # "ok", "err ..." (None: never finished)


@dataclass
class VMRun:
    events: list[dict] = field(default_factory=list)     # from the guest's start on
    commands: list[dict] = field(default_factory=list)   # execute_record()s, in order
    steps: list[GuestStep] = field(default_factory=list)
    image: Optional[Path] = None
    finished: bool = False          # the guest ran its whole program
    console: str = ""
    seconds: float = 0.0


def drive_options(drive: str, node: str, image: Path, fmt: str, rules: list[dict]) -> str:
    """The ``-drive`` option string: the drive's BlockBackend named ``drive``
    on a blkdebug node ``node`` (its ``inject-error`` rules) over the image."""
    opts = [f"if=none,id={drive},node-name={node},driver=blkdebug",
            f"image.driver={fmt},image.node-name={node}-fmt",
            f"image.file.driver=file,image.file.filename={image}",
            f"image.file.node-name={node}-fmt-file"]
    for i, rule in enumerate(rules):
        for key, value in rule.items():
            if isinstance(value, bool):
                value = "on" if value else "off"
            opts.append(f"inject-error.{i}.{key}={value}")
    return ",".join(opts)


_STEP = re.compile(r"^(\d+) (ok|err)(?: (.*))?$")


def run_vm(tools: VMTools, ops: list[str], drive_opts: str, device_opts: str, image: Path,
           on_event: Callable[[dict, QMPClient, float], None],
           due: Callable[[QMPClient, float], Optional[float]],
           workdir: Path, timeout: float = 120.0, settle: float = 2.0,
           qmp_timeout: float = 10.0) -> VMRun:
    """Boot the VM with guest program ``ops``; every QMP event from the
    guest's start on is handed to ``on_event(event, qmp, now)`` (``now``:
    seconds since the guest's start, the ``cont`` that starts the VM),
    and ``due(qmp, now)`` is asked in between: it runs what is due and
    returns when it next wants to be asked (None: nothing pending).

    The run ends when the guest powers off (its program done), or when
    nothing happened for ``settle`` seconds while the VM stands stopped
    with nothing pending (a request parked for good), or at ``timeout``
    (then :class:`VMError`)."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = build_initramfs(tools, ops, workdir / "initrd.gz")
    sock = workdir / "qmp.sock"
    results = workdir / "results.log"
    console = workdir / "console.log"
    for stale in (sock, results, console):
        if stale.exists():
            stale.unlink()
    # (TCG, even where KVM is there: the same guest timing everywhere, CI included)
    cmd = [tools.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-S",
           "-accel", "tcg", "-m", "256", "-net", "none", "-action", "shutdown=pause",
           "-kernel", tools.kernel, "-initrd", str(initrd),
           "-append", "console=ttyS0 quiet panic=-1",
           "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
           "-chardev", f"file,id=res,path={results}", "-serial", "chardev:res",
           "-chardev", f"socket,id=qmp,path={sock},server=on,wait=off", "-mon", "chardev=qmp,mode=control",
           "-drive", drive_opts, "-device", device_opts]
    setpriv = shutil.which("setpriv")
    if setpriv:   # killed if we die
        cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    log = open(workdir / "qemu.log", "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=workdir)
    run = VMRun(image=image)
    try:
        deadline = t0 + 15
        while not sock.exists():
            if proc.poll() is not None:
                raise VMError(f"qemu-system-x86_64 exited at start: {_tail(workdir / 'qemu.log')}")
            if time.monotonic() > deadline:
                raise VMError("qemu-system-x86_64 did not open its QMP socket in 15s")
            time.sleep(0.02)
        while True:
            # (the socket file exists from bind(), a moment before listen())
            qmp = QMPClient(sock, timeout=qmp_timeout, name="qemu-system-x86_64")
            try:
                qmp.connect()
                break
            except QMPConnectError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        qmp.execute("cont")
        # the events before the guest's start (the cont above) are not the case's
        while qmp.get_event(0.2) is not None:
            pass
        qmp.events.clear()
        start = time.monotonic()
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                raise VMError(f"the VM did not finish within {timeout:g}s "
                              f"(guest: {_read(results).strip()[-200:]!r})")
            wake = due(qmp, now - start)
            wait = 0.05 if wake is None else max(0.0, min(0.05, wake - (now - start)))
            event = qmp.get_event(wait)
            if event is not None:
                name = event.get("event")
                quiet_since = time.monotonic()
                if name == "SHUTDOWN":
                    run.finished = "DONE" in _read(results)
                    break
                run.events.append(event)
                on_event(event, qmp, time.monotonic() - start)
                continue
            if wake is None and time.monotonic() - quiet_since > settle:
                status = qmp.execute("query-status")
                if status.get("status") != "running":
                    break       # stopped with nothing pending: a request parked for good
                quiet_since = time.monotonic()
        run.commands.append(qmp.execute_record("query-block"))
        qmp.execute("quit")
        qmp.close()
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
    run.console = _read(console)
    out = _read(results)
    if "START" not in out or "NODISK" in out:
        raise VMError(f"the guest did not run its program ({out.strip()[:80]!r}); its console: "
                      f"{_tail(console)}")
    run.steps = _steps(ops, out)
    run.seconds = time.monotonic() - t0
    return run


def _steps(ops: list[str], results: str) -> list[GuestStep]:
    steps = []
    for line in ops:
        parts = line.split()
        nums = [int(p) for p in parts[1:]]
        steps.append(GuestStep(parts[0], *nums))
    for line in results.splitlines():
        m = _STEP.match(line.strip())
        if m and 0 < int(m.group(1)) <= len(steps):
            step = steps[int(m.group(1)) - 1]
            step.outcome = m.group(2) if m.group(2) == "ok" else f"err {m.group(3) or ''}".strip()
    return steps


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(_read(path).strip().splitlines()[-lines:])


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="blocksim-vm-"))
