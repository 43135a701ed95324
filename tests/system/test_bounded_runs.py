"""A run stays bounded while it runs (issue 19 item 2): max-requests, the
sample limit, time standing still, and Ctrl-C each end it cleanly, with a
complete record marked truncated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from blocksim.record.results import FILES
from blocksim.scenario import load_scenario
from blocksim.scenario.limits import Limits
from blocksim.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]


def guest(**extra):
    raw = {"duration": "10s", "images": {"a": {"size": "1GiB"}}, "drives": {"d": {"image": "a"}},
           "workloads": {"w": {"drive": "d", "rate-iops": 10000}}}
    raw.update(extra)
    return raw


def test_max_requests_stops_the_run_at_a_sample_the_same_with_and_without_shortcuts():
    scenario = load_scenario(guest(**{"max-requests": 5000}))
    fast = Simulation(scenario).run()
    slow = Simulation(scenario, shortcuts=False).run()
    s = fast.summary
    assert s["truncated"] and s["stopped_by"] == "max-requests"
    # the first sample (every 100 ms) at or past 5000 requests of 10000/s
    assert s["simulated_seconds"] == 0.6 and s["drives"]["d"]["requests"] >= 5000
    assert fast.series["time"][-1] == 0.6
    assert (slow.summary, slow.events, slow.series) == (fast.summary, fast.events, fast.series)


def test_a_run_within_its_bounds_is_not_marked():
    result = Simulation(load_scenario(guest(duration="1s"))).run()
    assert not result.summary["truncated"] and "stopped_by" not in result.summary


def test_the_sample_limit_holds_while_running():
    result = Simulation(load_scenario(guest()), limits=Limits(max_samples=20)).run()
    assert result.summary["stopped_by"] == "max-samples"
    assert len(result.series["time"]) == 20


def test_requests_that_take_no_simulated_time_are_bounded_too():
    # latency 0 and every read failing at once (a dm-dust device answers
    # after its latency, here none): simulated time stands still, so no
    # sample comes; the run ends after twice max-requests
    raw = {"duration": "10s", "images": {"a": {"size": "1GiB", "latency": 0}},
           "drives": {"d": {"image": "a", "rerror": "report"}},
           "workloads": {"w": {"drive": "d", "rw": "read"}}, "max-requests": 20000,
           "faults": [{"image": "a", "type": "dust", "operation": "read",
                       "block-size": "1GiB", "blocks": [0]}]}
    started = time.monotonic()
    result = Simulation(load_scenario(raw)).run()
    assert time.monotonic() - started < 5
    s = result.summary
    assert s["stopped_by"] == "max-requests" and s["simulated_seconds"] == 0
    assert 40000 <= s["drives"]["d"]["requests"] < 41000


def test_ctrl_c_ends_a_run_with_a_complete_folder_marked_interrupted(tmp_path):
    scenario = tmp_path / "long.toml"
    scenario.write_text('name = "long"\nduration = "1h"\n[images.a]\nsize = "1G"\n'
                        '[drives.d]\nimage = "a"\n'
                        '[workloads.w]\ndrive = "d"\nrate-iops = 20000\niodepth = 2\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # `blocksim run`, saying on stdout when its run has simulated some time
    # (not merely started: on a loaded machine the first compiled steps may
    # take a second to load, and a run interrupted before its first
    # simulated instant has nothing to show)
    script = ("import sys, threading, time, blocksim.simulation as s\n"
              "run = s.Simulation.run\n"
              "def started(self, *a, **k):\n"
              "    def watch():\n"
              "        while self.env.now <= 0:\n"
              "            time.sleep(0.01)\n"
              "        print('running', flush=True)\n"
              "    threading.Thread(target=watch, daemon=True).start()\n"
              "    return run(self, *a, **k)\n"
              "s.Simulation.run = started\n"
              "from blocksim.cli import main\n"
              "main(sys.argv[1:], prog_name='blocksim')\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "run", str(scenario), "--out",
                             str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "running\n"
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    folder = tmp_path / "out" / "long"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["long"]     # no leftovers
    assert all((folder / name).is_file() for name in FILES)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["truncated"] and summary["stopped_by"] == "interrupted"
    assert 0 < summary["simulated_seconds"] < 3600
    assert "warning: stopped at" in err and "interrupted (Ctrl-C)" in err
