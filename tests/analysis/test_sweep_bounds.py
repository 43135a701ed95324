"""Sweeps under issue 19: a torn journal repaired on resume, limits for
every run, Ctrl-C keeping the finished runs, long names."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocksim.analysis.sweep import JOURNAL, default_folder, load_sweep, sweep
from blocksim.errors import ScenarioError
from blocksim.scenario.limits import Limits

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
name = "small"
duration = "0.5s"

[images.disk]
size = "8MiB"

[drives.vda]
image = "disk"

[workloads.guest]
drive = "vda"
rate-iops = 100
"""

VARY = {"workloads.guest.bs": ["4KiB", "8KiB"]}


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_a_torn_journal_is_repaired_on_resume(small, tmp_path):
    folder = tmp_path / "s"
    whole = sweep(small, VARY, seeds=2, workers=1, out=folder)
    lines = (folder / JOURNAL).read_text().splitlines(keepends=True)
    # killed mid-write: a torn last line, and (an older crash) a line of garbage
    (folder / JOURNAL).write_text(lines[0] + "{not json\n" + lines[1] + lines[2][:25])
    resumed = sweep(small, VARY, seeds=2, workers=1, out=folder)
    assert resumed.resumed == 2 and resumed.ran == 2 and resumed.rows == whole.rows
    repaired = (folder / JOURNAL).read_text().splitlines()
    assert len(repaired) == 4
    assert sorted(json.loads(line)["index"] for line in repaired) == [0, 1, 2, 3]
    assert load_sweep(folder).rows == whole.rows


def test_limits_bound_every_run_of_a_sweep(small, tmp_path):
    with pytest.raises(ScenarioError, match="samples over duration 500ms; at most 3"):
        sweep(small, VARY, seeds=1, workers=1, limits=Limits(max_samples=3))
    result = sweep(small, {"max-requests": ["10"]}, seeds=1, workers=1)
    assert result.rows[0]["truncated"] is True and result.rows[0]["stopped_by"] == "max-requests"


def test_a_long_name_gives_a_short_sweep_folder(small):
    small.write_text(SMALL.replace('name = "small"', f'name = "{"x" * 1000}"'))
    folder = default_folder(small, VARY, 1)
    assert len(folder.name) < 130 and folder == default_folder(small, VARY, 1)


def test_ctrl_c_stops_a_pool_sweep_at_once_keeping_the_finished_runs(small, tmp_path):
    small.write_text(SMALL.replace('"0.5s"', '"20s"').replace("rate-iops = 100",
                                                              "rate-iops = 20000\niodepth = 2"))
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "blocksim", "sweep", str(small), "--vary",
         "workloads.guest.bs=4K,8K", "--seeds", "4", "--workers", "2", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / JOURNAL).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)          # as a terminal's Ctrl-C: the whole group
    started = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 5
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("in its journal: the same command resumes the sweep")
    assert "Traceback" not in err
    assert all(isinstance(json.loads(line), dict)
               for line in (out / JOURNAL).read_text().splitlines())
