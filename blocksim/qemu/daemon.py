"""Start and stop qemu-storage-daemon, never leaving a process behind.

:class:`StorageDaemon` runs ``qemu-storage-daemon`` with a QMP monitor on a
UNIX socket in a private temporary directory and connects a
:class:`~blocksim.qemu.qmp_client.QMPClient` to it.  It is a context manager;
however the block is left (an error, a timeout, Ctrl-C), the daemon is
stopped:

1. ``quit`` over QMP when the connection still works, then a grace period;
2. SIGTERM to the daemon's process group (it runs in a session of its own,
   so a terminal's Ctrl-C reaches only us, and we clean up), then SIGKILL
   after a second grace period (SIGKILL also ends a stopped or hung daemon);
3. the process is reaped and the temporary directory removed.

Daemons still running when the interpreter exits are killed by an ``atexit``
hook, and where ``setpriv`` exists the daemon is started with a parent-death
signal (SIGKILL), so even a killed Python leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Optional, Sequence

from .errors import (DaemonError, QemuNotFoundError, QMPCommandError, QMPConnectError,
                     QMPError)
from .qmp_client import QMPClient

__all__ = ["StorageDaemon", "find_binary", "DEFAULT_BINARIES"]

DEFAULT_BINARIES = {"qemu-storage-daemon": "qemu-storage-daemon", "qemu-img": "qemu-img",
                    "qemu-io": "qemu-io"}
INSTALL_HINT = ("install it with: apt-get install -y qemu-utils qemu-system-common "
                "(Debian/Ubuntu; see blocksim/qemu/install.sh)")

_LIVE: "weakref.WeakSet[StorageDaemon]" = weakref.WeakSet()


def find_binary(name: str, path: Optional[str] = None) -> str:
    """The absolute path of QEMU tool ``name`` (or of ``path`` if given).
    Raises :class:`QemuNotFoundError` with an install hint."""
    given = path or DEFAULT_BINARIES.get(name, name)
    if os.sep in given:
        if not os.path.exists(given):
            raise QemuNotFoundError(f"{name} not found at {given}")
        if os.path.isdir(given) or not os.access(given, os.X_OK):
            raise QemuNotFoundError(f"{name} at {given} is not an executable file")
        return os.path.abspath(given)
    found = shutil.which(given)
    if found is None:
        raise QemuNotFoundError(f"{given} not found on PATH; {INSTALL_HINT}")
    return found


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@atexit.register
def _kill_all() -> None:
    for daemon in list(_LIVE):
        daemon.kill()


class StorageDaemon:
    """One qemu-storage-daemon with a QMP monitor.

    ``args`` are extra command-line arguments (``--blockdev ...``);
    ``timeout`` is the QMP deadline in seconds; ``start_timeout`` bounds the
    wait for the monitor socket."""

    def __init__(self, binary: Optional[str] = None, args: Sequence[str] = (),
                 timeout: float = 10.0, start_timeout: float = 10.0, grace: float = 2.0,
                 workdir: Optional[str] = None):
        self.binary = find_binary("qemu-storage-daemon", binary)
        self.args = list(args)
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.grace = grace
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else None
        self.proc: Optional[subprocess.Popen] = None
        self.qmp: Optional[QMPClient] = None
        self.log_path: Optional[Path] = None
        self._log = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "qmp.sock"

    @property
    def pid_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "qemu-storage-daemon.pid"

    # -- start ------------------------------------------------------------------------
    def start(self) -> "StorageDaemon":
        if self.proc is not None:
            raise DaemonError("qemu-storage-daemon is already started")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="blocksim-qsd-"))
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
        sock = self.socket_path
        for stale in (sock, self.pid_path):
            if stale.exists():
                stale.unlink()
        self.log_path = self.dir / "qemu-storage-daemon.log"
        cmd = [self.binary,
               "--chardev", f"socket,id=blocksim-qmp,path={sock},server=on,wait=off",
               "--monitor", "chardev=blocksim-qmp", "--pidfile", str(self.pid_path),
               *self.args]
        setpriv = shutil.which("setpriv")
        if setpriv:   # setpriv execs the daemon: same pid, killed if we die
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.dir)
        except OSError as exc:
            self._log.close()
            self._cleanup_dir()
            raise DaemonError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        _LIVE.add(self)
        try:
            self._connect()
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        ready = self.pid_path
        # qemu-storage-daemon writes its pid file once its chardevs, exports
        # and NBD servers exist and before it accepts connections (the order
        # documented in main(), qemu-storage-daemon.c): the socket exists
        # earlier, while the monitor is still being set up
        while not ready.exists():
            if self.proc.poll() is not None:
                raise DaemonError(f"qemu-storage-daemon exited at start ({self._status()})"
                                  f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise DaemonError(f"qemu-storage-daemon did not open its QMP socket within "
                                  f"{self.start_timeout:g}s{self._log_tail()}")
            time.sleep(0.01)
        self._handshake(deadline)

    def _handshake(self, start_deadline: float) -> None:
        """Connect and negotiate, with a new connection when the first one
        goes wrong.

        QEMU 7.2 sets up a QMP monitor's chardev handlers in a bottom half
        of the monitor I/O thread (``monitor_init_qmp``), which races with
        the main loop accepting a client: about one start in 700 on a busy
        machine, the first client is greeted twice or its
        ``qmp_capabilities`` is never answered.  A fresh connection opens a
        fresh monitor session, so each attempt gets a short deadline that
        doubles up to the QMP deadline (a loaded machine can take seconds to
        schedule a fresh daemon), all attempts within that deadline."""
        deadline = max(start_deadline, time.monotonic() + self.timeout)
        attempt = min(1.0, self.timeout)
        while True:
            self.qmp = QMPClient(self.socket_path, timeout=self.timeout,
                                 name="qemu-storage-daemon")
            left = deadline - time.monotonic()
            try:
                self.qmp.connect(timeout=max(0.05, min(attempt, left)))
                return
            except QMPCommandError as exc:
                raise self.explain(exc) from None
            except QMPError as exc:
                self.qmp.close()
                if self.proc.poll() is not None or time.monotonic() >= deadline:
                    raise self.explain(exc) from None
                if isinstance(exc, QMPConnectError):
                    # the socket exists before the daemon listens on it
                    time.sleep(0.02)
                attempt = min(2 * attempt, self.timeout)

    # -- diagnosis ----------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _status(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:  # pragma: no cover
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip() if self.log_path else ""
        except OSError:
            text = ""
        if not text:
            return ""
        tail = text.splitlines()[-lines:]
        return "; its output: " + " | ".join(tail)

    def explain(self, exc: QMPError) -> DaemonError:
        """Turn a QMP failure into a :class:`DaemonError` saying whether the
        daemon died (and how) or hangs."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            return DaemonError(f"qemu-storage-daemon (pid {self.pid}) is not responding: {exc}")
        return DaemonError(f"qemu-storage-daemon (pid {self.pid}) died ({self._status()}): "
                           f"{exc}{self._log_tail()}")

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        """Quit (politely, then by force) and clean up; safe to call twice."""
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                if self.qmp is not None and self.qmp.connected:
                    try:
                        self.qmp.execute("quit", timeout=min(self.grace, 1.0))
                    except QMPError:
                        pass
                self._wait_or_kill(proc)
        finally:
            if proc is not None and proc.poll() is None:   # interrupted: be sure
                _kill_group(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            if self.qmp is not None:
                self.qmp.close()
            if self._log is not None:
                self._log.close()
                self._log = None
            _LIVE.discard(self)
            self._cleanup_dir()

    def _wait_or_kill(self, proc: subprocess.Popen) -> None:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                _kill_group(proc.pid, sig)
            try:
                proc.wait(timeout=self.grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        """Immediate SIGKILL (the atexit hook)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._own_dir and self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def keep_dir(self) -> None:
        """Do not remove the working directory at stop (for debugging)."""
        self._own_dir = False

    def __enter__(self) -> "StorageDaemon":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
