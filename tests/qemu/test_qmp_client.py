"""The QMP client against a fake QMP server on a UNIX socket.

The fake server runs in a thread and follows a script: what to greet with,
how to answer each command (a reply, an error, garbage, nothing, or hang up).
Every failure must surface as a clear BlocksimError subclass, quickly.
"""

import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from blocksim.errors import BlocksimError
from blocksim.qemu.qmp_client import (QMPClient, QMPCommandError, QMPConnectError, QMPError,
                                      QMPProtocolError, QMPTimeoutError)

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                    "capabilities": []}}


class FakeServer:
    """A one-connection QMP server.  ``handler(request, send)`` answers a
    request; it may send any bytes, return "close" to hang up, or "hang" to
    stop answering."""

    def __init__(self, handler=None, greeting=GREETING):
        self.dir = tempfile.mkdtemp(prefix="qmp-", dir="/tmp")   # short: sun_path limit
        self.path = os.path.join(self.dir, "s")
        self.handler = handler or (lambda req, send: send({"return": {}, "id": req.get("id")}))
        self.greeting = greeting
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            def send(obj):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\r\n"
                conn.sendall(data)

            if self.greeting is not None:
                send(self.greeting)
            buf = b""
            while not self.stop.is_set():
                try:
                    conn.settimeout(0.05)
                    chunk = conn.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    self.requests.append(req)
                    if req.get("execute") == "qmp_capabilities":
                        send({"return": {}, "id": req.get("id")})
                        continue
                    verdict = self.handler(req, send)
                    if verdict == "close":
                        return
                    if verdict == "hang":
                        self.stop.wait()
                        return

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def server():
    made = []

    def make(*args, **kwargs):
        srv = FakeServer(*args, **kwargs)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.close()


def connect(srv, timeout=0.5):
    client = QMPClient(srv.path, timeout=timeout, name="fake QMP server")
    client.connect()
    return client


def test_every_error_is_a_blocksim_error():
    for cls in (QMPError, QMPCommandError, QMPConnectError, QMPProtocolError, QMPTimeoutError):
        assert issubclass(cls, BlocksimError)


def test_greeting_capabilities_and_a_command(server):
    srv = server(lambda req, send: send({"return": [{"device": "job0"}], "id": req["id"]}))
    client = connect(srv)
    assert client.greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert client.execute("query-block-jobs") == [{"device": "job0"}]
    assert [r["execute"] for r in srv.requests] == ["qmp_capabilities", "query-block-jobs"]
    ids = [r["id"] for r in srv.requests]
    assert len(set(ids)) == 2                         # every request has its own id
    client.close()


def test_arguments_are_sent(server):
    srv = server()
    client = connect(srv)
    client.execute("block-job-cancel", {"device": "job0", "force": True})
    assert srv.requests[-1]["arguments"] == {"device": "job0", "force": True}


def test_events_before_a_reply_are_queued(server):
    def handler(req, send):
        send({"event": "JOB_STATUS_CHANGE", "data": {"id": "job0", "status": "paused"},
              "timestamp": {"seconds": 1, "microseconds": 0}})
        send({"return": {}, "id": req["id"]})

    client = connect(server(handler))
    client.execute("block-job-pause", {"device": "job0"})
    event = client.get_event()
    assert event["event"] == "JOB_STATUS_CHANGE" and event["data"]["status"] == "paused"
    assert client.get_event(timeout=0.05) is None
    assert [e["event"] for e in client.events] == ["JOB_STATUS_CHANGE"]


def test_wait_event_matches_data(server):
    def handler(req, send):
        for status in ("created", "running"):
            send({"event": "JOB_STATUS_CHANGE", "data": {"id": "job0", "status": status}})
        send({"return": {}, "id": req["id"]})

    client = connect(server(handler))
    client.execute("blockdev-mirror")
    event = client.wait_event("JOB_STATUS_CHANGE", timeout=0.5, status="running")
    assert event["data"]["status"] == "running"
    with pytest.raises(QMPTimeoutError, match="no BLOCK_JOB_READY event"):
        client.wait_event("BLOCK_JOB_READY", timeout=0.1)


def test_refused_command(server):
    srv = server(lambda req, send: send({"error": {"class": "GenericError",
                                                   "desc": "Job is already paused"},
                                         "id": req["id"]}))
    client = connect(srv)
    with pytest.raises(QMPCommandError) as info:
        client.execute("block-job-pause", {"device": "job0"})
    assert (info.value.error_class, info.value.desc) == ("GenericError", "Job is already paused")
    assert "block-job-pause" in str(info.value)
    record = client.execute_record("block-job-pause", {"device": "job0"})
    assert record["error"] == {"class": "GenericError", "desc": "Job is already paused"}
    assert client.connected                           # a refusal is not a broken connection


def test_no_socket():
    with pytest.raises(QMPConnectError, match="no socket at"):
        QMPClient("/nonexistent/dir/qmp.sock", timeout=0.2).connect()


def test_connection_refused():
    d = tempfile.mkdtemp(prefix="qmp-", dir="/tmp")
    path = os.path.join(d, "s")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                                          # a socket file nobody listens on
    try:
        with pytest.raises(QMPConnectError, match="cannot connect"):
            QMPClient(path, timeout=0.2).connect()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_greeting(server):
    srv = server(greeting={"hello": "not qmp"})
    with pytest.raises(QMPProtocolError, match="did not greet with QMP"):
        connect(srv)


def test_no_greeting_times_out(server):
    srv = server(greeting=None)
    t0 = time.monotonic()
    with pytest.raises(QMPTimeoutError, match="QMP greeting"):
        connect(srv, timeout=0.3)
    assert time.monotonic() - t0 < 2


def test_invalid_json_reply(server):
    client = connect(server(lambda req, send: send(b"{this is not json\r\n")))
    with pytest.raises(QMPProtocolError, match="invalid JSON"):
        client.execute("query-block-jobs")
    with pytest.raises(QMPConnectError):              # the stream is out of step now
        client.execute("query-block-jobs")


def test_non_object_reply(server):
    client = connect(server(lambda req, send: send(b"[1, 2, 3]\r\n")))
    with pytest.raises(QMPProtocolError, match="not an object"):
        client.execute("query-block-jobs")


def test_reply_to_unknown_id(server):
    client = connect(server(lambda req, send: send({"return": {}, "id": "someone-else"})))
    with pytest.raises(QMPProtocolError, match="unknown id 'someone-else'"):
        client.execute("query-block-jobs")


def test_reply_with_neither_return_nor_error(server):
    client = connect(server(lambda req, send: send({"id": req["id"], "what": 1})))
    with pytest.raises(QMPProtocolError, match="neither 'return' nor 'error'"):
        client.execute("query-block-jobs")


def test_error_without_id_is_a_protocol_error(server):
    client = connect(server(lambda req, send: send({"error": {"class": "GenericError",
                                                              "desc": "JSON parse error"}})))
    with pytest.raises(QMPProtocolError, match="could not read the request"):
        client.execute("query-block-jobs")


def test_server_that_dies(server):
    client = connect(server(lambda req, send: "close"))
    with pytest.raises(QMPConnectError, match="closed the connection.*'query-block-jobs'"):
        client.execute("query-block-jobs")
    with pytest.raises(QMPConnectError):
        client.execute("query-block-jobs")
    with pytest.raises(QMPConnectError):
        client.get_event()


def test_server_that_hangs(server):
    client = connect(server(lambda req, send: "hang"), timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(QMPTimeoutError, match="may be hung"):
        client.execute("query-block-jobs")
    assert time.monotonic() - t0 < 2
    with pytest.raises(QMPConnectError, match="did not answer in time"):
        client.execute("query-block-jobs")


def test_per_command_timeout(server):
    client = connect(server(lambda req, send: "hang"), timeout=30)
    t0 = time.monotonic()
    with pytest.raises(QMPTimeoutError):
        client.execute("query-block-jobs", timeout=0.2)
    assert time.monotonic() - t0 < 2


def test_get_event_timeout_returns_none(server):
    client = connect(server())
    t0 = time.monotonic()
    assert client.get_event(timeout=0.1) is None
    assert 0.05 < time.monotonic() - t0 < 1


def test_stray_reply_while_idle_is_a_protocol_error(server):
    def handler(req, send):
        send({"return": {}, "id": req["id"]})
        send({"return": {}, "id": "late"})

    client = connect(server(handler))
    client.execute("query-block-jobs")
    with pytest.raises(QMPProtocolError, match="not an event"):
        client.get_event(timeout=0.5)


def test_context_manager_closes(server):
    srv = server()
    with QMPClient(srv.path, timeout=0.5) as client:
        client.connect()
        assert client.connected
    assert not client.connected
    with pytest.raises(QMPConnectError):
        client.execute("query-block-jobs")
