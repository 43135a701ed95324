"""examples/serve/daemon.py against `blocksim serve`: the job's outcome and
the VM's paused time."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from .conftest import ROOT, start_server

pytest.importorskip("qemu.qmp")

EXAMPLE = ROOT / "examples" / "serve"


def load_daemon():
    spec = importlib.util.spec_from_file_location("daemon", EXAMPLE / "daemon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_daemon_keeps_the_guest_running_and_pivots_the_mirror(tmp_path):
    daemon = load_daemon()
    served = start_server(tmp_path, scenario=EXAMPLE / "thin-disk-and-mirror.toml")
    done = asyncio.run(daemon.manage(str(served.socket), "vda", "copy", "disk", 48 << 20, 2.0))
    assert done["completed"]["device"] == "mirror0"
    assert done["status"]["status"] == "running"
    assert served.wait() == 0
    folder = served.out / "thin-disk-and-mirror-served"
    summary = json.loads((folder / "summary.json").read_text())
    job = summary["jobs"]["mirror0"]
    assert job["outcome"] == "completed" and job["pivoted"]
    assert job["errors_by_action"]["stop"] == 1
    # the VM paused once, on ENOSPC, for the daemon's 2 s reaction
    assert summary["vm"]["stops"] == 1
    assert summary["vm"]["time_paused"] == pytest.approx(2.0, abs=1e-6)
    commands = [json.loads(line)["execute"] for line in (folder / "commands.jsonl").open()]
    assert commands.count("block-job-resume") == 1 and commands.count("cont") == 1
    assert commands.index("x-blocksim-thin-extend") < commands.index("cont")


def test_the_daemons_session_replays_with_and_without_shortcuts(tmp_path):
    from blocksim.scenario import load_scenario
    from blocksim.serve.session import replay

    daemon = load_daemon()
    scenario = EXAMPLE / "thin-disk-and-mirror.toml"
    served = start_server(tmp_path, scenario=scenario)
    asyncio.run(daemon.manage(str(served.socket), "vda", "copy", "disk", 48 << 20, 2.0))
    assert served.wait() == 0
    folder = served.out / "thin-disk-and-mirror-served"
    recorded = [json.loads(line) for line in (folder / "events.jsonl").open()]
    commands = [json.loads(line) for line in (folder / "commands.jsonl").open()]
    assert len(recorded) >= 14     # a guest, a mirror, a pause: the shortcuts have work
    for shortcuts in (True, False):
        session = replay(load_scenario(scenario), commands, shortcuts=shortcuts)
        assert session.sim.log.events == recorded, shortcuts


def test_with_a_write_threshold_the_daemon_extends_before_the_guest_pauses(tmp_path):
    daemon = load_daemon()
    served = start_server(tmp_path, scenario=EXAMPLE / "thin-disk-and-mirror.toml")
    done = asyncio.run(daemon.manage(str(served.socket), "vda", "copy", "disk", 16 << 20, 0.5,
                                     threshold=12 << 20))
    assert done["completed"]["device"] == "mirror0"
    assert served.wait() == 0
    folder = served.out / "thin-disk-and-mirror-served"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["jobs"]["mirror0"]["outcome"] == "completed"
    assert summary["vm"]["stops"] == 0 and summary["vm"]["time_paused"] == 0
    events = [json.loads(line) for line in (folder / "events.jsonl").open()]
    crossed = [e for e in events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    assert crossed and crossed[0]["data"]["node-name"] == "disk"
    assert crossed[0]["data"]["write-threshold"] == 12 << 20
    commands = [json.loads(line) for line in (folder / "commands.jsonl").open()]
    extends = [c for c in commands if c["execute"] == "x-blocksim-thin-extend"]
    assert len(extends) == len(crossed) and "cont" not in [c["execute"] for c in commands]
