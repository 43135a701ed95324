"""Leftovers (issue 19 item 6): what a killed run left is removed by the
next one, and the timeline's bytes do not depend on PYTHONHASHSEED."""

import os
import subprocess
import sys
from pathlib import Path

from blocksim.record.atomic import remove_leftovers, temporary_sibling, write_text
from blocksim.record.results import FILES, save_result
from blocksim.scenario import load_scenario
from blocksim.simulation import run

ROOT = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def quiet_result():
    return run(load_scenario({"name": "quiet", "duration": "0.1s",
                              "images": {"disk": {"size": "1MiB"}}}))


def test_a_rerun_removes_the_temporary_folders_a_killed_run_left(tmp_path):
    target = tmp_path / "quiet"
    dead = dead_pid()
    left = [tmp_path / f".quiet.tmp-{dead}-0123abcd", tmp_path / f".quiet.old-{dead}-89abcdef"]
    for folder in left:
        folder.mkdir()
        (folder / "events.jsonl").write_text("half\n")
    old_spelling = tmp_path / ".quiet.tmp-deadbeef"      # no PID: removed once an hour old
    old_spelling.mkdir()
    os.utime(old_spelling, (0, 0))
    live = tmp_path / f".quiet.tmp-{os.getppid()}-00000000"   # a live writer's: kept
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead}-0123abcd"          # another folder's: kept
    other.mkdir()
    save_result(quiet_result(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["quiet", live.name, other.name])
    assert all((target / name).is_file() for name in FILES)


def test_a_temporary_name_carries_the_writers_pid(tmp_path):
    name = temporary_sibling(tmp_path / "x.csv").name
    assert name.startswith(f".x.csv.tmp-{os.getpid()}-") and len(name.split("-")[-1]) == 8
    assert remove_leftovers(tmp_path / "x.csv") == []


def test_an_atomic_write_removes_a_dead_writers_temporary_file(tmp_path):
    stale = tmp_path / f".runs.csv.tmp-{dead_pid()}-0123abcd"
    stale.write_text("half")
    write_text(tmp_path / "runs.csv", "a,b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_the_timeline_is_the_same_bytes_whatever_pythonhashseed(tmp_path):
    # vm-stop-drains-failing-requests drew its error markers in the order of
    # a set of (action, operation) strings (fixed with issue 20's figure);
    # legends with a set of states are sorted too
    result = run(load_scenario(ROOT / "blocksim" / "library" / "vm-stop-drains-failing-requests.toml"))
    folder = save_result(result, tmp_path / "run")
    procs = []
    for seed in ("1", "2"):         # (and this process's own, at random)
        out = tmp_path / f"timeline-{seed}.png"
        procs.append((out, subprocess.Popen(
            [sys.executable, "-m", "blocksim", "plot", str(folder), "-o", str(out)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    for out, proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    first = (folder / "timeline.png").read_bytes()
    assert all(out.read_bytes() == first for out, _ in procs)
