"""Virtual time replays byte for byte; real time follows the wall clock."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from blocksim.scenario import load_scenario
from blocksim.serve.protocol import encode, event_message
from blocksim.serve.session import replay

from .conftest import ROOT, SCENARIO, start_server
from .test_serve_qmp import Raw

SCRIPT = [
    b'{"execute": "qmp_capabilities"}\n',
    b'{"execute": "blockdev-mirror", "arguments": {"job-id": "m0", "device": "vda", '
    b'"target": "copy", "sync": "full", "on-target-error": "stop", "speed": 67108864}}\n',
    b'{"execute": "x-blocksim-advance", "arguments": {"until-event": "BLOCK_JOB_ERROR"}}\n',
    b'{"execute": "x-blocksim-advance", "arguments": {"seconds": 0.25}}\n',
    b'{"execute": "block-job-resume", "arguments": {"device": "m0"}}\n',
    b'{"execute": "block-job-complete", "arguments": {"device": "m0"}}\n',
    b'{"execute": "x-blocksim-advance", "arguments": {"until-event": "BLOCK_JOB_READY"}}\n',
    b'{"execute": "block-job-complete", "arguments": {"device": "m0"}}\n',
    b'{"execute": "x-blocksim-advance", "arguments": {"seconds": 5}}\n',
    b'{"execute": "quit"}\n',
]


def wire_session(tmp_path) -> tuple[list[bytes], object]:
    """Run SCRIPT against a server; the event lines the client received."""
    tmp_path.mkdir(exist_ok=True)
    served = start_server(tmp_path)
    raw = Raw(served.socket)
    raw.file.readline()
    events: list[bytes] = []
    for request in SCRIPT:
        raw.send(request)
        while True:
            line = raw.file.readline()
            if line.startswith(b'{"timestamp"'):
                events.append(line)
            else:
                break
    events += [line for line in raw.file.readlines() if line.startswith(b'{"timestamp"')]
    raw.close()
    assert served.wait() == 0
    return events, served


def test_a_recorded_session_replays_to_byte_identical_events(tmp_path):
    events, served = wire_session(tmp_path / "a")
    names = [json.loads(e)["event"] for e in events]
    assert "BLOCK_JOB_ERROR" in names and "BLOCK_JOB_READY" in names and names[-1] == "SHUTDOWN"
    # a second server, same script: the same bytes
    again, _ = wire_session(tmp_path / "b")
    assert again == events
    # the record's commands, replayed without a socket: the same bytes
    commands = [json.loads(line) for line in (served.results / "commands.jsonl").open()]
    assert [c["execute"] for c in commands][:3] == ["blockdev-mirror", "x-blocksim-advance",
                                                    "x-blocksim-advance"]
    session = replay(load_scenario(SCENARIO), commands)
    assert [encode(event_message(e)) for e in session.sim.log.events] == events
    # the stops of x-blocksim-advance leave the exact shortcuts exact
    reference = replay(load_scenario(SCENARIO), commands, shortcuts=False)
    assert [encode(event_message(e)) for e in reference.sim.log.events] == events
    # and the same through the command line
    out = tmp_path / "replayed"
    subprocess.run([sys.executable, "-m", "blocksim", "serve", str(SCENARIO), "--replay",
                    str(served.results / "commands.jsonl"), "--out", str(out)], check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True)
    assert (out / "mirror-flaky-target-served" / "events.jsonl").read_text() == \
        (served.results / "events.jsonl").read_text()


def test_a_refused_verb_is_part_of_the_record(tmp_path):
    events, served = wire_session(tmp_path)
    commands = [json.loads(line) for line in (served.results / "commands.jsonl").open()]
    early = [c for c in commands if c["execute"] == "block-job-complete"][0]
    assert early["error"] == {"class": "GenericError",
                              "desc": "Job 'm0' in state 'running' cannot accept command verb "
                                      "'complete'"}


def test_real_time_mode_moves_the_clock_and_sends_events_unasked(tmp_path):
    qmp = pytest.importorskip("qemu.qmp")
    served = start_server(tmp_path, "--speed", "2")

    async def session():
        client = qmp.QMPClient("rt")
        await client.connect(str(served.socket))
        first = await client.execute("x-blocksim-clock")
        await asyncio.sleep(0.3)
        second = await client.execute("x-blocksim-clock")
        listener = qmp.EventListener(("BLOCK_JOB_ERROR",))
        with client.listen(listener):
            await client.execute("blockdev-mirror", {"device": "vda", "target": "copy",
                                                     "sync": "full",
                                                     "on-target-error": "report"})
            event = await asyncio.wait_for(listener.get(), 10)
        await client.execute("quit")
        await client.disconnect()
        return first, second, event

    first, second, event = asyncio.run(session())
    assert first["mode"] == "real-time"
    elapsed = (second["time"]["seconds"] - first["time"]["seconds"]) + \
        (second["time"]["microseconds"] - first["time"]["microseconds"]) / 1e6
    assert 0.5 <= elapsed <= 30         # 2x the wall clock's 0.3 s (and more on a busy machine)
    assert event["data"]["action"] == "report"
    assert served.wait() == 0


def test_a_fault_injected_at_run_time_fails_the_next_writes_and_replays(tmp_path):
    from blocksim.serve.commands import dispatch
    from blocksim.serve.protocol import QMPError
    from blocksim.serve.session import Session

    scenario = load_scenario(ROOT / "examples" / "serve" / "thin-disk-and-mirror.toml")
    session = Session(scenario)
    dispatch(session, "x-blocksim-thin-extend", {"image": "disk", "capacity": 64 << 20})
    dispatch(session, "x-blocksim-advance", {"seconds": 1})
    assert not [e for e in session.sim.log.events if e["event"] == "BLOCK_IO_ERROR"]
    with pytest.raises(QMPError, match="Parameter 'errno'"):
        dispatch(session, "x-blocksim-fault-add", {"image": "disk", "errno": "EWHAT"})
    assert dispatch(session, "x-blocksim-fault-add",
                    {"image": "disk", "operation": "write", "errno": "EIO", "count": 1}) == \
        {"index": 0}
    stopped = dispatch(session, "x-blocksim-advance", {"until-event": "BLOCK_IO_ERROR"})
    # the guest's next write (100 IOPS: within 10 ms) fails with the new rule
    assert stopped["event"]["data"]["reason"] == "Input/output error"
    assert 1.0 <= stopped["time"]["seconds"] + stopped["time"]["microseconds"] / 1e6 <= 1.011
    commands = session.sim.monitor.commands
    for shortcuts in (True, False):
        again = replay(scenario, commands, shortcuts=shortcuts)
        assert again.sim.log.events == session.sim.log.events


def test_a_bounded_run_ends_the_clock_with_the_reason_in_the_record():
    from blocksim.serve.commands import dispatch
    from blocksim.serve.protocol import QMPError
    from blocksim.serve.session import Session

    scenario = load_scenario(ROOT / "examples" / "serve" / "thin-disk-and-mirror.toml",
                             overrides={"max-requests": 150})
    session = Session(scenario)
    dispatch(session, "x-blocksim-thin-extend", {"image": "disk", "capacity": 64 << 20})
    dispatch(session, "x-blocksim-advance", {"seconds": 10})
    assert session.sim.stopped_by == "max-requests"
    assert session.now < 10 * 10**9         # 100 IOPS: 150 requests by about 1.5 s
    with pytest.raises(QMPError, match=r"the run ended early \(max-requests\)"):
        dispatch(session, "x-blocksim-advance", {"seconds": 1})
    assert session.result().summary["stopped_by"] == "max-requests"
