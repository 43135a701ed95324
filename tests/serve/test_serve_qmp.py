"""`blocksim serve` driven by the official qemu.qmp library, as a management
layer would: QMPClient (async) and the legacy sync QEMUMonitorProtocol."""

from __future__ import annotations

import asyncio
import json
import socket as socketlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

qmp = pytest.importorskip("qemu.qmp")
from qemu.qmp import EventListener, QMPClient  # noqa: E402
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402

from .conftest import start_server  # noqa: E402

MIRROR = {"job-id": "m0", "device": "vda", "target": "copy", "sync": "full",
          "on-target-error": "stop"}


def test_a_mirror_over_a_failing_target_with_the_async_client(served):
    async def session():
        client = QMPClient("test")
        await client.connect(str(served.socket))
        assert client.greeting.QMP.version["qemu"]["major"] == 7
        assert client.greeting.QMP.version["qemu"]["minor"] == 2
        assert await client.execute("query-status") == {"status": "running",
                                                         "singlestep": False, "running": True}
        seen = []
        listener = EventListener()
        with client.listen(listener):
            assert await client.execute("blockdev-mirror", MIRROR) == {}
            advanced = await client.execute("x-blocksim-advance",
                                            {"until-event": "BLOCK_JOB_ERROR"})
            assert advanced["event"]["data"] == {"device": "m0", "operation": "write",
                                                 "action": "stop"}
            jobs = await client.execute("query-block-jobs")
            assert jobs[0]["paused"] and jobs[0]["io-status"] == "failed"
            await client.execute("block-job-resume", {"device": "m0"})
            await client.execute("x-blocksim-advance", {"until-event": "BLOCK_JOB_READY"})
            await client.execute("block-job-complete", {"device": "m0"})
            await client.execute("x-blocksim-advance", {"until-event": "BLOCK_JOB_COMPLETED"})
            seen = list(listener.clear())
        await client.execute("quit")
        await client.disconnect()
        return seen

    events = asyncio.run(session())
    names = [e["event"] for e in events]
    assert names.index("BLOCK_JOB_ERROR") < names.index("BLOCK_JOB_READY") \
        < names.index("BLOCK_JOB_COMPLETED")
    error = events[names.index("BLOCK_JOB_ERROR")]
    assert set(error["timestamp"]) == {"seconds", "microseconds"}
    assert served.wait() == 0
    # the record: the same results folder as blocksim run
    folder = served.results
    assert {p.name for p in folder.iterdir()} >= {"events.jsonl", "commands.jsonl",
                                                   "summary.json", "series.csv"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["jobs"]["m0"]["outcome"] == "completed"
    assert summary["jobs"]["m0"]["errors_by_action"]["stop"] == 1
    commands = [json.loads(line) for line in (folder / "commands.jsonl").open()]
    assert [c["execute"] for c in commands][:2] == ["query-status", "blockdev-mirror"]
    recorded = [json.loads(line)["event"] for line in (folder / "events.jsonl").open()]
    assert recorded[-1] == "SHUTDOWN"


def test_the_legacy_sync_client_and_qemu_errors(served):
    mon = QEMUMonitorProtocol(str(served.socket))
    greeting = mon.connect(negotiate=True)
    assert greeting["QMP"]["capabilities"] == ["oob"]
    answer = mon.cmd_raw("no-such-command")
    assert answer["error"] == {"class": "CommandNotFound",
                               "desc": "The command no-such-command has not been found"}
    answer = mon.cmd_raw("qmp_capabilities")
    assert answer["error"] == {"class": "CommandNotFound",
                               "desc": "Capabilities negotiation is already complete, "
                                       "command ignored"}
    answer = mon.cmd_raw("block-job-cancel", {})
    assert answer["error"]["desc"] == "Parameter 'device' is missing"
    answer = mon.cmd_raw("block-job-cancel", {"device": "j"})
    assert answer["error"] == {"class": "DeviceNotActive", "desc": "Block job 'j' not found"}
    answer = mon.cmd_raw("job-cancel", {"id": "j"})
    assert answer["error"] == {"class": "GenericError", "desc": "Job not found"}
    answer = mon.cmd_raw("blockdev-mirror", {"device": "a", "target": "b", "sync": "full"})
    assert answer["error"]["desc"] == "Cannot find device='a' nor node-name='a'"
    answer = mon.cmd_raw("blockdev-mirror", {"device": "vda", "target": "copy", "sync": "bad"})
    assert answer["error"]["desc"] == "Parameter 'sync' does not accept value 'bad'"
    answer = mon.cmd_raw("query-jobs", {"x": 1})
    assert answer["error"]["desc"] == "Parameter 'x' is unexpected"
    # the input visitor's wording (qemu-storage-daemon 7.2.22's answers)
    for arguments, desc in [
            ({"device": "j", "speed": "1"}, "Invalid parameter type for 'speed', expected: integer"),
            ({"device": 5, "speed": 1}, "Invalid parameter type for 'device', expected: string")]:
        assert mon.cmd_raw("block-job-set-speed", arguments)["error"]["desc"] == desc
    assert mon.cmd_raw("block-job-cancel", {"device": "j", "force": 1})["error"]["desc"] == \
        "Invalid parameter type for 'force', expected: boolean"
    answer = mon.cmd_raw("blockdev-mirror", {"device": "a", "target": "b", "sync": "full",
                                             "granularity": 1.5})
    assert answer["error"]["desc"] == "Parameter 'granularity' expects uint64"
    answer = mon.cmd_raw("blockdev-mirror", {"device": "a", "sync": "full", "bogus": 1})
    assert answer["error"]["desc"] == "Parameter 'target' is missing"
    assert mon.cmd("query-version")["qemu"] == {"micro": 22, "minor": 2, "major": 7}
    assert mon.cmd("stop") == {}
    assert mon.get_events(wait=False)[0]["event"] == "STOP"
    assert mon.cmd("query-status")["status"] == "paused"
    block = mon.cmd("query-block")
    assert block[0]["device"] == "vda" and block[0]["io-status"] == "ok"
    assert block[0]["inserted"]["node-name"] == "disk"
    assert {n["node-name"] for n in mon.cmd("query-named-block-nodes")} == \
        {"disk", "disk-file", "copy", "copy-file"}
    # write thresholds (block/write-threshold.c, the Monitor's model)
    assert mon.cmd_raw("block-set-write-threshold",
                       {"node-name": "copy", "write-threshold": 1 << 20}) == {"return": {}}
    assert mon.cmd_raw("block-set-write-threshold", {"node-name": "nope", "write-threshold": 1}) \
        == {"error": {"class": "GenericError", "desc": "Device 'nope' not found"}}
    nodes = {n["node-name"]: n for n in mon.cmd("query-named-block-nodes")}
    assert nodes["copy"]["write_threshold"] == 1 << 20 and nodes["copy-file"]["write_threshold"] == 0
    # block-dirty-bitmap-merge: the alternate's wording (qemu-storage-daemon 7.2.22)
    assert mon.cmd("block-dirty-bitmap-add", node="disk", name="a") == {}
    merge = {"node": "disk", "target": "a"}
    for bitmaps, desc in [
            ([1], "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"),
            ([{"node": "disk"}], "Parameter 'bitmaps[0].name' is missing"),
            ([{"node": "disk", "name": 2}],
             "Invalid parameter type for 'bitmaps[0].name', expected: string"),
            ([{"node": "disk", "name": "a", "x": 1}], "Parameter 'bitmaps[0].x' is unexpected"),
            ("a", "Invalid parameter type for 'bitmaps', expected: array"),
            ([{"node": "zz", "name": "a"}], "Node 'zz' not found")]:
        answer = mon.cmd_raw("block-dirty-bitmap-merge", {**merge, "bitmaps": bitmaps})
        assert answer["error"]["desc"] == desc
    assert mon.cmd("block-dirty-bitmap-merge", **merge, bitmaps=["a"]) == {}
    mon.cmd("quit")
    mon.close()
    assert served.wait() == 0


# -- the wire: what QEMU 7.2 answers (qemu-storage-daemon 7.2.22, see
#    blocksim/serve/protocol.py) -------------------------------------------------------
class Raw:
    def __init__(self, path):
        self.sock = socketlib.socket(socketlib.AF_UNIX)
        self.sock.connect(str(path))
        self.sock.settimeout(20)
        self.file = self.sock.makefile("rb")

    def line(self) -> dict:
        line = self.file.readline()
        assert line.endswith(b"\r\n"), line      # as QEMU's monitor_puts writes it
        return json.loads(line)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, data: bytes) -> dict:
        self.send(data)
        return self.line()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_transaction_with_a_backup_all_or_nothing(served):
    """``transaction`` as libvirt sends it: its argument errors worded as
    qemu-storage-daemon 7.2.22 words them (full paths), a refused last
    action aborting the backup created before it, then the backup with its
    checkpoint started."""
    mon = QEMUMonitorProtocol(str(served.socket))
    mon.connect(negotiate=True)
    add = {"type": "block-dirty-bitmap-add", "data": {"node": "disk", "name": "c1"}}
    backup = {"type": "blockdev-backup",
              "data": {"job-id": "b", "device": "vda", "target": "copy", "sync": "full"}}
    for arguments, desc in [
            ({}, "Parameter 'actions' is missing"),
            ({"actions": 5}, "Invalid parameter type for 'actions', expected: array"),
            ({"actions": [{"data": {}}]}, "Parameter 'actions[0].type' is missing"),
            ({"actions": [{"type": "nope", "data": {}}]},
             "Parameter 'type' does not accept value 'nope'"),
            ({"actions": [{"type": "block-dirty-bitmap-add"}]},
             "Parameter 'actions[0].data' is missing"),
            ({"actions": [add, {"type": "block-dirty-bitmap-add", "data": {"node": "disk"}}]},
             "Parameter 'actions[1].data.name' is missing"),
            ({"actions": [{**add, "data": {**add["data"], "bogus": 1}}]},
             "Parameter 'actions[0].data.bogus' is unexpected"),
            ({"actions": [{**add, "data": {**add["data"], "name": 5}}]},
             "Invalid parameter type for 'actions[0].data.name', expected: string"),
            ({"actions": [{"type": "blockdev-backup", "data": {"device": "vda", "target": "copy"}}]},
             "Parameter 'actions[0].data.sync' is missing"),
            ({"actions": [{**add, "extra": 1}]}, "Parameter 'actions[0].extra' is unexpected"),
            ({"actions": [], "properties": {"completion-mode": "sometimes"}},
             "Parameter 'completion-mode' does not accept value 'sometimes'"),
            ({"actions": [{"type": "abort", "data": {}}]}, "Transaction aborted using Abort action"),
            ({"actions": [{"type": "block-dirty-bitmap-add",
                           "data": {"node": "nonode", "name": "x"}}]},
             "Cannot find device='nonode' nor node-name='nonode'")]:
        assert mon.cmd_raw("transaction", arguments)["error"]["desc"] == desc, arguments
    assert mon.get_events(wait=False) == []         # (nothing was prepared)
    answer = mon.cmd_raw("transaction", {"actions": [add, backup, add]})
    assert answer["error"] == {"class": "GenericError", "desc": "Bitmap already exists: c1"}
    assert [e["data"]["status"] for e in mon.get_events(wait=False)
            if e["event"] == "JOB_STATUS_CHANGE"] == ["created", "aborting", "concluded", "null"]
    mon.clear_events()
    assert mon.cmd("query-block-jobs") == []
    assert mon.cmd("transaction", actions=[add, backup]) == {}
    # (the job's start drain, paused/running, comes as the served run goes on)
    assert [e["data"]["status"] for e in mon.get_events(wait=False)
            if e["event"] == "JOB_STATUS_CHANGE"] == ["created", "running"]
    (job,) = mon.cmd("query-block-jobs")
    assert (job["device"], job["type"]) == ("b", "backup")
    assert mon.cmd_raw("block-dirty-bitmap-add", {"node": "disk", "name": "c1"})["error"][
        "desc"] == "Bitmap already exists: c1"
    mon.cmd("quit")
    mon.close()
    assert served.wait() == 0


def test_a_command_before_negotiation_garbage_and_malformed_requests(served):
    raw = Raw(served.socket)
    assert raw.line()["QMP"]["version"]["qemu"] == {"micro": 22, "minor": 2, "major": 7}
    negotiate = "Expecting capabilities negotiation with 'qmp_capabilities'"
    assert raw.ask(b'{"execute": "query-status"}\n') == {
        "error": {"class": "CommandNotFound", "desc": negotiate}}
    assert raw.ask(b'{"execute": "nope", "id": 1}\n') == {
        "id": 1, "error": {"class": "CommandNotFound", "desc": negotiate}}
    assert raw.ask(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}}\n') == \
        {"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'x'"}}
    assert raw.ask(b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}\n') == \
        {"error": {"class": "GenericError",
                   "desc": "Invalid parameter type for 'enable', expected: array"}}
    assert raw.ask(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, '
                   b'"id": "x"}\n') == {"return": {}, "id": "x"}
    assert raw.ask(b"garbage\n") == {"error": {
        "class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}
    raw.send(b"\xff\xfe junk {\n")
    stray = {"error": {"class": "GenericError", "desc": "JSON parse error, stray '\ufffd'"}}
    assert raw.line() == stray and raw.line() == stray
    assert raw.ask(b"}\n")["error"]["desc"] == "QMP input lacks member 'execute'"
    assert raw.ask(b"[1,2]\n")["error"]["desc"] == "QMP input must be a JSON object"
    assert raw.ask(b'{"id": 5}\n') == {"id": 5, "error": {
        "class": "GenericError", "desc": "QMP input lacks member 'execute'"}}
    assert raw.ask(b'{"execute": "query-jobs", "execute": "x"}\n')["error"]["desc"] == \
        "JSON parse error, duplicate key"
    assert raw.ask(b'{"execute": "query-jobs", "id": {"a": [1]}}\n') == \
        {"return": [], "id": {"a": [1]}}
    assert raw.ask(b'{"execute": 5}\n')["error"]["desc"] == \
        "QMP input member 'execute' must be a string"
    assert raw.ask(b'{"execute": "query-jobs", "foo": 1}\n')["error"]["desc"] == \
        "QMP input member 'foo' is unexpected"
    assert raw.ask(b'{"execute": "query-jobs", "arguments": [1]}\n')["error"]["desc"] == \
        "QMP input member 'arguments' must be an object"
    assert raw.ask(b'{"exec-oob": "query-jobs"}\n')["error"]["desc"] == \
        "The command query-jobs does not support OOB"
    # a message nested deeper than QEMU's 1024 levels: the error, then the
    # lexer goes on, and each of the 1025 "]" is a message of its own (what
    # qemu-storage-daemon 7.2.22 answered: 1027 lines in all)
    raw.send(b"[" * 1025 + b"]" * 1025 + b"\n")
    assert raw.line()["error"]["desc"] == "JSON nesting depth limit exceeded"
    for _ in range(1025):
        assert raw.line()["error"]["desc"] == "JSON parse error, expecting value"
    # the server is still there
    assert raw.ask(b'{"execute": "query-jobs", "id": 7}\n') == {"return": [], "id": 7}
    raw.close()


def test_an_oversized_message_gets_qemus_error_and_the_server_goes_on(served):
    raw = Raw(served.socket)
    raw.line()
    raw.ask(b'{"execute": "qmp_capabilities"}\n')
    raw.sock.settimeout(120)
    # 2 Mi + 1 tokens: QEMU's token count limit (json-streamer.c MAX_TOKEN_COUNT)
    raw.send(b"[" + b"1," * (1 << 20) + b"1]\n")
    # then the last "1" and "]" are messages of their own (QEMU 7.2.22's
    # answers, line for line)
    assert [raw.line()["error"]["desc"] for _ in range(3)] == [
        "JSON token count limit exceeded", "QMP input must be a JSON object",
        "JSON parse error, expecting value"]
    assert raw.ask(b'{"execute": "query-status", "id": "after"}\n')["id"] == "after"
    raw.close()


def test_a_client_that_disconnects_mid_command_then_another(served):
    raw = Raw(served.socket)
    raw.line()
    raw.ask(b'{"execute": "qmp_capabilities"}\n')
    # a command, then half of another, and gone before any answer: the
    # command runs (its answer has nowhere to go), the half is dropped
    raw.send(b'{"execute": "x-blocksim-advance", "arguments": {"seconds": 2}}\n'
             b'{"execute": "query-jo')
    raw.close()
    again = Raw(served.socket)
    assert "QMP" in again.line()
    again.ask(b'{"execute": "qmp_capabilities"}\n')
    clock = again.ask(b'{"execute": "x-blocksim-clock"}\n')["return"]
    assert clock["time"] == {"seconds": 2, "microseconds": 0}
    again.close()
    assert served.proc.poll() is None


def test_two_clients_are_served_one_after_the_other_as_qemu_does(served):
    first = Raw(served.socket)
    first.line()
    first.ask(b'{"execute": "qmp_capabilities"}\n')
    second = Raw(served.socket)
    second.send(b'{"execute": "qmp_capabilities"}\n')
    second.sock.settimeout(0.5)
    with pytest.raises(socketlib.timeout):
        second.sock.recv(1)             # no greeting while the first is connected
    second.sock.settimeout(20)
    assert first.ask(b'{"execute": "query-jobs"}\n') == {"return": []}
    first.close()
    assert "QMP" in second.line()       # then the greeting, and its queued command
    assert second.line() == {"return": {}}
    second.close()


def test_the_socket_is_owner_only(served):
    assert stat.S_IMODE(served.socket.stat().st_mode) == 0o600


def test_qmp_shell_as_shipped_with_qemu_qmp(served):
    shell = Path(sys.executable).parent / "qmp-shell"
    if not shell.exists():
        pytest.skip("qmp-shell is not installed beside this Python")
    script = ("query-status\n"
              "blockdev-mirror job-id=m0 device=vda target=copy sync=full on-target-error=stop\n"
              "x-blocksim-advance until-event=BLOCK_JOB_ERROR\n"
              "query-jobs\n"
              "quit\n")
    out = subprocess.run([sys.executable, str(shell), str(served.socket)], input=script,
                         capture_output=True, text=True, timeout=60).stdout
    assert "Connected to QEMU 7.2.22" in out
    answers = [json.loads(line.split("(QEMU) ", 1)[1]) for line in out.splitlines()
               if line.startswith("(QEMU) {")]
    assert answers[0]["return"]["status"] == "running"
    assert answers[2]["return"]["event"]["event"] == "BLOCK_JOB_ERROR"
    assert answers[3]["return"][0]["id"] == "m0"
    assert served.wait() == 0


def test_tcp_listens_on_loopback_unless_told(tmp_path):
    from blocksim.serve.cli import parse_tcp
    assert parse_tcp("4444") == ("127.0.0.1", 4444)
    assert parse_tcp("0.0.0.0:4444") == ("0.0.0.0", 4444)
    probe = socketlib.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    served = start_server(tmp_path, "--tcp", str(port))   # listening once the unix socket is
    mon = QEMUMonitorProtocol(("127.0.0.1", port))
    mon.connect(negotiate=True)
    assert mon.cmd("query-status")["running"] is True
    mon.cmd("quit")
    mon.close()
    assert served.wait() == 0


def test_the_run_changing_extensions_can_be_refused(tmp_path):
    served = start_server(tmp_path, "--no-x-commands")
    mon = QEMUMonitorProtocol(str(served.socket))
    mon.connect(negotiate=True)
    answer = mon.cmd_raw("x-blocksim-thin-extend", {"image": "copy", "by": 1 << 20})
    assert answer["error"] == {"class": "CommandNotFound",
                               "desc": "The command x-blocksim-thin-extend has not been found"}
    assert "return" in mon.cmd_raw("x-blocksim-advance", {"seconds": 1})   # virtual time needs it
    mon.cmd("quit")
    mon.close()
    assert served.wait() == 0


def test_sigterm_ends_the_server_with_the_record_written(served):
    raw = Raw(served.socket)
    raw.line()
    raw.ask(b'{"execute": "qmp_capabilities"}\n')
    raw.ask(b'{"execute": "x-blocksim-advance", "arguments": {"seconds": 1}}\n')
    served.proc.terminate()
    assert served.wait() == 0
    assert not served.socket.exists()
    commands = [json.loads(line) for line in (served.results / "commands.jsonl").open()]
    assert [c["execute"] for c in commands] == ["x-blocksim-advance"]
    raw.close()


TWO_DRIVES = """
name = "two-drives"
duration = "60s"
[images.a]
size = "64MiB"
data = "full"
[images.b]
size = "64MiB"
data = "full"
[images.c]
size = "64MiB"
bandwidth = "1MiB"
[drives.vda]
image = "a"
[drives.vdb]
image = "b"
"""


def test_a_job_id_in_use_is_checked_after_the_node_checks(tmp_path):
    """QEMU checks a new job's ID last (block_job_create -> job_create), after
    the command's node checks; a served session does too, although it puts a
    new job object under the ID to start it."""
    scenario = tmp_path / "two-drives.toml"
    scenario.write_text(TWO_DRIVES)
    served = start_server(tmp_path, scenario=scenario)
    mon = QEMUMonitorProtocol(str(served.socket))
    mon.connect(negotiate=True)
    assert mon.cmd_raw("blockdev-mirror", {"job-id": "j", "device": "vda", "target": "c",
                                           "sync": "full"}) == {"return": {}}
    # vda is busy: the same refusal whatever the ID, not the ID's
    with_free_id = mon.cmd_raw("block-stream", {"job-id": "k", "device": "vda"})
    with_used_id = mon.cmd_raw("block-stream", {"job-id": "j", "device": "vda"})
    assert "already in use" not in with_free_id["error"]["desc"]
    assert with_used_id == with_free_id
    # vdb is free: now the ID answers, and the running mirror keeps it
    assert mon.cmd_raw("block-stream", {"job-id": "j", "device": "vdb"})["error"] == \
        {"class": "GenericError", "desc": "Job ID 'j' already in use"}
    jobs = mon.cmd("query-block-jobs")
    assert [(job["device"], job["type"], job["status"]) for job in jobs] == \
        [("j", "mirror", "running")]
    mon.cmd("quit")
    mon.close()
    assert served.wait() == 0
