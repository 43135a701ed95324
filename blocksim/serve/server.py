"""The socket loop of ``blocksim serve``: QMP monitors over unix or TCP sockets.

As QEMU's socket chardev with a QMP monitor (``chardev/char-socket.c``,
``monitor/qmp.c``): one client at a time; a second connection is accepted by
the kernel but gets no greeting until the first has gone, then it is served
(what qemu-storage-daemon 7.2.22 did, /tmp/work/serve-exp/exp.out).  Each
client gets the greeting, must negotiate with ``qmp_capabilities`` (before
that every other command is ``CommandNotFound`` "Expecting capabilities
negotiation with 'qmp_capabilities'", ``monitor_qmp_dispatch``), and gets
events only once negotiated (``monitor_qapi_event_emit``).  Events emitted
during a command are sent before its return, as QEMU does.

Requests are handled one after the other and nothing more is read from a
client while its answers have not been written (``drain``), so a client that
floods commands is slowed down by its own socket, as QEMU's monitor suspends
itself when its request queue is full (``QMP_REQ_QUEUE_LEN_MAX``).  A
message over QEMU's limits gets QEMU's error and is dropped
(:mod:`blocksim.serve.protocol`): memory stays bounded.

The unix socket is created owner-only (0600); TCP listens where told (the
CLI defaults to loopback).

When a client goes (quits or disconnects), the run's record is written to
the results folder, as ``blocksim run`` writes it; ``quit`` also ends the
server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from pathlib import Path

from ..errors import BlocksimError, CommandError
from .commands import COMMANDS, EXTENSIONS, check_arguments, dispatch, is_run_changing
from .protocol import (
    NEGOTIATION_DESC,
    JSONStreamer,
    QMPError,
    check_request,
    encode,
    error_response,
    event_message,
    greeting,
    response,
)

TICK = 0.01         # real-time mode: seconds between clock updates


class Server:
    def __init__(self, session, *, socket_path: str | None = None,
                 tcp: tuple[str, int] | None = None, speed: float | None = None,
                 extensions: bool = True, output: str | None = None, log=None):
        self.session = session
        self.socket_path = socket_path
        self.tcp = tcp
        self.speed = speed
        self.extensions = extensions
        self.output = output
        self.log = log or (lambda line: None)
        self.session.mode = "virtual" if speed is None else "real-time"
        self._lock: asyncio.Lock | None = None
        self._writer = None
        self._negotiated = False
        self._done: asyncio.Event | None = None
        self._servers: list = []
        self.saved: list[Path] = []
        self._unsaved = False       # commands run since the record was last written

    # -- set-up ------------------------------------------------------------------------
    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self._done = asyncio.Event()
        # TCP first: the unix socket's appearing says the server is ready
        if self.tcp:
            host, port = self.tcp
            server = await asyncio.start_server(self._client, host=host, port=port)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            self.tcp = (bound[0], bound[1])
            self.log(f"blocksim serve: QMP on tcp {bound[0]}:{bound[1]}")
        if self.socket_path:
            path = self.socket_path
            # util/qemu-sockets.c:unix_listen_saddr unlinks what is there first
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                server = await asyncio.start_unix_server(self._client, path=path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            self._servers.append(server)
            self.log(f"blocksim serve: QMP on unix socket {path}")
        self._base = (self.session.now, time.monotonic())
        if self.speed is not None:
            self._ticker = asyncio.ensure_future(self._tick())

    async def run(self) -> None:
        """Serve until ``quit`` (or SIGTERM / SIGINT: the record is written
        then too)."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop)
            except (NotImplementedError, RuntimeError):    # not the main thread
                pass
        try:
            await self._done.wait()
            if self._unsaved:
                self._save()
        finally:
            for server in self._servers:
                server.close()
            if self.socket_path:
                try:
                    os.unlink(self.socket_path)
                except OSError:
                    pass

    def _stop(self) -> None:
        self._done.set()

    # -- time ---------------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Real-time mode: simulated time follows the wall clock times speed."""
        if self.speed is None:
            return
        base_sim, base_real = self._base
        target = base_sim + int((time.monotonic() - base_real) * self.speed * 1e9)
        if target > self.session.now:
            try:
                self.session.advance(target)
            except QMPError:
                pass

    async def _tick(self) -> None:
        while not self._done.is_set():
            self._catch_up()
            await self._flush_events()
            await asyncio.sleep(TICK)

    # -- one client ----------------------------------------------------------------------
    async def _client(self, reader, writer) -> None:
        async with self._lock:
            if self._done.is_set():
                writer.close()
                return
            self._writer, self._negotiated = writer, False
            self._oob = False
            try:
                await self._serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writer = None
                try:
                    writer.close()
                except Exception:       # noqa: BLE001 (a socket already gone)
                    pass
                if self._unsaved:
                    self._save()
                if self.session.quit:
                    self._done.set()

    async def _send(self, writer, message: dict) -> None:
        if writer.is_closing():
            return
        writer.write(encode(message))
        await writer.drain()

    async def _flush_events(self) -> None:
        events = self.session.new_events()
        writer = self._writer
        if writer is None or not self._negotiated:
            return                      # QEMU sends events to negotiated monitors only
        for event in events:
            try:
                await self._send(writer, event_message(event))
            except ConnectionError:
                return

    async def _serve(self, reader, writer) -> None:
        self.session.new_events()       # what happened while nobody was connected
        await self._send(writer, greeting())
        streamer = JSONStreamer()
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for value, error in streamer.feed(data):
                if error is not None:
                    await self._send(writer, error_response(error))
                    continue
                await self._request(writer, value)
                if self.session.quit:
                    return

    async def _request(self, writer, obj) -> None:
        has_id = isinstance(obj, dict) and "id" in obj
        id_ = obj.get("id") if has_id else None
        try:
            command, args, oob = check_request(obj, allow_oob=self._oob)
            value = self._execute(command, args, oob)
        except QMPError as exc:
            await self._flush_events()
            await self._send(writer, error_response(exc.desc, exc.error_class, id_, has_id))
            return
        except CommandError as exc:         # the model's refusal outside the Monitor
            await self._flush_events()
            await self._send(writer, error_response(exc.desc, exc.error_class, id_, has_id))
            return
        except Exception as exc:            # noqa: BLE001 - a bad request never ends the server
            desc = " ".join(exc.lines()) if isinstance(exc, BlocksimError) else str(exc)
            await self._flush_events()
            await self._send(writer, error_response(desc or type(exc).__name__, "GenericError",
                                                    id_, has_id))
            return
        await self._flush_events()
        await self._send(writer, response(value, id_, has_id))
        if command == "quit":
            # qmp_quit: the return, then SHUTDOWN (host-qmp-quit)
            self.session.shutdown()
            await self._flush_events()

    def _execute(self, command: str, args: dict, oob: bool):
        if not self._negotiated:
            # monitor_qmp_dispatch: CommandNotFound gets a more useful desc
            if command != "qmp_capabilities":
                raise QMPError(NEGOTIATION_DESC, "CommandNotFound")
            check_arguments(command, args)
            self._oob = "oob" in args.get("enable", [])
            self._negotiated = True
            return {}
        if oob:
            if command not in COMMANDS:
                raise QMPError(f"The command {command} has not been found", "CommandNotFound")
            raise QMPError(f"The command {command} does not support OOB")
        if not self.extensions and command in EXTENSIONS and \
                (is_run_changing(command) or self.speed is not None):
            raise QMPError(f"The command {command} has not been found", "CommandNotFound")
        self._catch_up()
        self._unsaved = True
        value = dispatch(self.session, command, args)
        if command == "x-blocksim-advance":
            self._base = (self.session.now, time.monotonic())
        return value

    def _save(self) -> None:
        if not self.output:
            return
        from ..record.results import save_result
        self._unsaved = False
        try:
            self.saved.append(save_result(self.session.result(), self.output))
            self.log(f"blocksim serve: wrote {self.output}")
        except OSError as exc:
            self.log(f"blocksim serve: cannot write {self.output}: {exc}")
