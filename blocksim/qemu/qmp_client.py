"""A small synchronous QMP client over a UNIX socket.

Enough of the QEMU Machine Protocol for the cross-check, with no thread and
no dependency: the greeting, capability negotiation, commands tagged with
ids, and an event queue filled while waiting for replies.

Every wait has a deadline.  Whatever goes wrong is raised as a subclass of
:class:`~blocksim.qemu.errors.QMPError` (a
:class:`~blocksim.errors.BlocksimError`) naming the socket and the command:

- :class:`QMPConnectError`: no socket, connection refused, the server closed
  the connection (it died);
- :class:`QMPProtocolError`: a reply that is not JSON, not an object, no
  greeting, a reply to an id we never sent;
- :class:`QMPTimeoutError`: no reply in time (a hung server);
- :class:`QMPCommandError`: the command was refused (``class`` and ``desc``).

After a connection, protocol or timeout error the client is unusable (the
stream may be out of step) and every later call raises
:class:`QMPConnectError`.

Usage::

    with QMPClient("/tmp/x/qmp.sock", timeout=5) as qmp:
        qmp.connect()
        qmp.execute("query-block-jobs")
        event = qmp.get_event(timeout=1.0)     # None when nothing came
"""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import time
from collections import deque
from typing import Any, Optional

from .errors import QMPCommandError, QMPConnectError, QMPError, QMPProtocolError, QMPTimeoutError

__all__ = ["QMPClient", "QMPError", "QMPCommandError", "QMPConnectError",
           "QMPProtocolError", "QMPTimeoutError"]

_MAX_LINE = 16 * 1024 * 1024


def _short(data: Any, limit: int = 120) -> str:
    text = data if isinstance(data, str) else repr(data)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class QMPClient:
    """A QMP connection.  ``timeout`` is the default deadline in seconds of
    every wait (connect, greeting, each command)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10.0,
                 name: str = "the QMP server"):
        self.path = os.fspath(path)
        self.timeout = float(timeout)
        self.name = name
        self.greeting: Optional[dict] = None
        #: every event received, in order
        self.events: list[dict] = []
        self._pending: deque[dict] = deque()
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        self._ids = itertools.count(1)
        self._broken: Optional[str] = None

    # -- connection -----------------------------------------------------------------
    def connect(self, timeout: Optional[float] = None) -> dict:
        """Connect, read the greeting and negotiate capabilities; returns the
        greeting."""
        timeout = self.timeout if timeout is None else timeout
        if self._sock is not None:
            raise QMPConnectError(f"{self.name} at {self.path}: already connected")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise QMPConnectError(f"cannot connect to {self.name}: no socket at {self.path}") from None
        except (ConnectionRefusedError, socket.timeout, OSError) as exc:
            sock.close()
            reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
            raise QMPConnectError(f"cannot connect to {self.name} at {self.path}: {reason}") from None
        sock.setblocking(False)
        self._sock = sock
        deadline = time.monotonic() + timeout
        greeting = self._read_message(deadline, "the QMP greeting")
        if not isinstance(greeting.get("QMP"), dict):
            self._break()
            raise QMPProtocolError(f"{self.name} at {self.path} did not greet with QMP "
                                   f"(first message: {_short(json.dumps(greeting))})")
        self.greeting = greeting
        self.execute("qmp_capabilities", timeout=timeout)
        return greeting

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        if self._broken is None:
            self._broken = "the connection was closed"

    def __enter__(self) -> "QMPClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._broken is None

    def _break(self, why: str = "an earlier error") -> None:
        self._broken = self._broken or why
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:  # pragma: no cover
                pass
            self._sock = None

    def _check_usable(self, what: str) -> None:
        if self._broken is not None:
            raise QMPConnectError(f"cannot send {what} to {self.name}: {self._broken}")
        if self._sock is None:
            raise QMPConnectError(f"cannot send {what} to {self.name}: not connected")

    # -- commands -------------------------------------------------------------------
    def execute(self, command: str, arguments: Optional[dict] = None,
                timeout: Optional[float] = None) -> Any:
        """Run ``command``; returns its ``return`` value or raises
        :class:`QMPCommandError` if refused.  Events that arrive meanwhile are
        queued for :meth:`get_event`."""
        what = f"'{command}'"
        self._check_usable(what)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        req_id = f"blocksim-{next(self._ids)}"
        request: dict[str, Any] = {"execute": command, "id": req_id}
        if arguments:
            request["arguments"] = arguments
        self._send(json.dumps(request).encode() + b"\n", deadline, what)
        while True:
            msg = self._read_message(deadline, f"the reply to {what}")
            if "event" in msg:
                self._queue_event(msg)
                continue
            if msg.get("id") != req_id:
                self._break("it sent a reply out of step")
                if "id" in msg:
                    raise QMPProtocolError(f"{self.name} replied to unknown id {msg['id']!r} "
                                           f"while we waited for the reply to {what}")
                if isinstance(msg.get("error"), dict):
                    raise QMPProtocolError(f"{self.name} could not read the request {what}: "
                                           f"{msg['error'].get('desc', msg['error'])}")
                raise QMPProtocolError(f"{self.name} sent a message that is neither an event nor "
                                       f"a reply to {what}: {_short(json.dumps(msg))}")
            if "return" in msg:
                return msg["return"]
            error = msg.get("error")
            if isinstance(error, dict):
                raise QMPCommandError(command, str(error.get("class", "GenericError")),
                                      str(error.get("desc", "")))
            self._break("it sent a malformed reply")
            raise QMPProtocolError(f"{self.name} sent a reply to {what} with neither 'return' "
                                   f"nor 'error': {_short(json.dumps(msg))}")

    def execute_record(self, command: str, arguments: Optional[dict] = None,
                       timeout: Optional[float] = None) -> dict:
        """Like :meth:`execute`, but a refusal is returned, not raised:
        ``{"execute", "arguments", "return"}`` or ``{..., "error": {"class",
        "desc"}}`` (the shape of blocksim's command record)."""
        record: dict[str, Any] = {"execute": command, "arguments": dict(arguments or {})}
        try:
            record["return"] = self.execute(command, arguments, timeout)
        except QMPCommandError as exc:
            record["error"] = {"class": exc.error_class, "desc": exc.desc}
        return record

    # -- events -----------------------------------------------------------------------
    def _queue_event(self, msg: dict) -> None:
        self.events.append(msg)
        self._pending.append(msg)

    def get_event(self, timeout: float = 0.0) -> Optional[dict]:
        """The next queued event, waiting up to ``timeout`` seconds for one;
        ``None`` if none came."""
        if self._pending:
            return self._pending.popleft()
        self._check_usable("a read")
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            msg = self._read_message(deadline, "an event", timeout_ok=True)
            if msg is None:
                return None
            if "event" in msg:
                self.events.append(msg)
                return msg
            self._break("it sent a reply nobody asked for")
            raise QMPProtocolError(f"{self.name} sent a message that is not an event while no "
                                   f"command was running: {_short(json.dumps(msg))}")

    def wait_event(self, name: str, timeout: Optional[float] = None, **match: Any) -> dict:
        """Wait for event ``name`` whose data has the ``match`` items; events
        passed over stay in :attr:`events` but leave the queue."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            event = self.get_event(max(0.0, deadline - time.monotonic()))
            if event is not None:
                data = event.get("data") or {}
                if event.get("event") == name and all(data.get(k) == v for k, v in match.items()):
                    return event
                continue
            if time.monotonic() >= deadline:
                raise QMPTimeoutError(f"no {name} event from {self.name} within {timeout:g}s")

    # -- the wire ---------------------------------------------------------------------
    def _send(self, data: bytes, deadline: float, what: str) -> None:
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._break("a send timed out")
                raise QMPTimeoutError(f"{self.name} did not accept {what} within the deadline")
            try:
                _r, w, _x = select.select([], [self._sock], [], remaining)
                if not w:
                    continue
                sent = self._sock.send(view)
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                self._break("the connection was lost")
                raise QMPConnectError(f"{self.name} closed the connection (sending {what}: "
                                      f"{exc.strerror or exc})") from None
            view = view[sent:]

    def _read_message(self, deadline: float, what: str, timeout_ok: bool = False) -> Optional[dict]:
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line, self._buf = self._buf[:newline], self._buf[newline + 1:]
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except (UnicodeDecodeError, ValueError) as exc:
                    self._break("it sent invalid JSON")
                    raise QMPProtocolError(f"{self.name} sent invalid JSON while we waited for {what}: "
                                           f"{_short(line.decode('utf-8', 'replace'))} ({exc})") from None
                if not isinstance(msg, dict):
                    self._break("it sent a non-object")
                    raise QMPProtocolError(f"{self.name} sent a JSON {type(msg).__name__}, not an "
                                           f"object, while we waited for {what}: {_short(line.decode())}")
                return msg
            if len(self._buf) > _MAX_LINE:
                self._break("it sent an over-long line")
                raise QMPProtocolError(f"{self.name} sent more than {_MAX_LINE} bytes without a newline")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if timeout_ok:
                    return None
                self._break(f"it did not answer in time ({what})")
                raise QMPTimeoutError(f"{self.name} at {self.path} did not send {what} within "
                                      f"the deadline; it may be hung")
            try:
                readable, _w, _x = select.select([self._sock], [], [], remaining)
                if not readable:
                    continue
                chunk = self._sock.recv(65536)
            except (ConnectionResetError, OSError) as exc:
                self._break("the connection was lost")
                raise QMPConnectError(f"{self.name} closed the connection while we waited for "
                                      f"{what} ({exc.strerror or exc})") from None
            if not chunk:
                self._break("the server closed the connection")
                raise QMPConnectError(f"{self.name} closed the connection while we waited for "
                                      f"{what} (did it exit?)")
            self._buf += chunk
