"""A run is a pure function of scenario and seed: the same inputs give a
byte-identical event log, summary and series, in one process or in two."""

import json
import os
import subprocess
import sys

import blocksim

# Random in every way the engine knows: random offsets and read/write mix,
# latency jitter, a probabilistic fault, stop/cont reactions, a thin device
# that runs out of space and is extended, and a mirror with its own faults.
SCENARIO = {
    "name": "determinism",
    "duration": "40ms",
    "sample-interval": "2ms",
    "seed": 5,
    "images": {
        "base": {"size": "2MiB", "data": [{"offset": 0, "length": "1MiB"}]},
        "disk": {"size": "2MiB", "backing": "base", "jitter": 0.3, "latency": "50us"},
        "dst": {"size": "2MiB", "capacity": "1536KiB", "jitter": 0.2},
    },
    "drives": {"d0": {"image": "disk", "werror": "stop", "rerror": "report"}},
    "faults": [
        {"image": "disk", "operation": "write", "probability": 0.02},
        {"image": "base", "operation": "read", "probability": 0.05},
        {"image": "dst", "operation": "write", "probability": 0.05},
    ],
    "workloads": {"w": {"drive": "d0", "rw": "randrw", "rwmixread": 40, "iodepth": 4,
                        "bs": "4KiB"}},
    "jobs": {"m": {"type": "mirror", "device": "d0", "target": "dst", "start": "5ms",
                   "on-target-error": "ignore", "on-source-error": "ignore",
                   "granularity": "64KiB", "buf-size": "256KiB"}},
    "actions": [
        {"on": "STOP", "delay": "300us", "command": "cont", "repeat": True},
        {"on": "BLOCK_JOB_ERROR", "delay": "1ms", "command": "thin-extend",
         "arguments": {"image": "dst", "by": "256KiB"}},
    ],
}


def fingerprint(result):
    """Everything a run produces, as bytes."""
    return (result.events_jsonl()
            + json.dumps(result.summary, sort_keys=True) + "\n"
            + json.dumps(result.series, sort_keys=True) + "\n"
            + json.dumps(result.commands, sort_keys=True) + "\n").encode()


CHILD = (
    "import json, sys, blocksim\n"
    "from tests.system.test_determinism import fingerprint\n"
    "r = blocksim.run(json.loads(sys.argv[1]), seed=int(sys.argv[2]))\n"
    "sys.stdout.buffer.write(fingerprint(r))\n"
)


def run_in_child(scenario, seed, hashseed):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(scenario), str(seed)],
                         cwd=root, env=env, capture_output=True, check=True, timeout=120)
    return out.stdout


def test_scenario_is_really_random():
    r = blocksim.run(SCENARIO)
    names = set(r.event_names())
    assert {"BLOCK_IO_ERROR", "STOP", "RESUME", "BLOCK_JOB_ERROR"} <= names
    assert len(r.events) > 20
    assert any(c["execute"] == "thin-extend" for c in r.commands)


def test_same_seed_same_run_in_one_process():
    a = blocksim.run(SCENARIO, seed=11)
    b = blocksim.run(SCENARIO, seed=11)
    assert a.events_jsonl() == b.events_jsonl()
    assert a.summary == b.summary
    assert a.series == b.series
    assert a.commands == b.commands
    assert fingerprint(a) == fingerprint(b)


def test_same_seed_same_bytes_in_separate_processes():
    here = fingerprint(blocksim.run(SCENARIO, seed=11))
    one = run_in_child(SCENARIO, 11, hashseed=1)
    two = run_in_child(SCENARIO, 11, hashseed=2)
    assert one == two
    assert one == here


def test_different_seeds_give_different_runs():
    logs = {blocksim.run(SCENARIO, seed=s).events_jsonl() for s in (1, 2, 3)}
    assert len(logs) == 3


def test_each_source_of_randomness_depends_on_the_seed():
    base = {"duration": "5ms", "images": {"disk": {"size": "1MiB"}},
            "drives": {"d0": {"image": "disk", "werror": "report", "rerror": "report"}}}
    probabilistic = {**base,
                     "faults": [{"image": "disk", "probability": 0.2}],
                     "workloads": {"w": {"drive": "d0", "rw": "write"}}}
    random_offsets = {**base,
                      "faults": [{"image": "disk", "offset": "512KiB"}],
                      "workloads": {"w": {"drive": "d0", "rw": "randwrite"}}}
    random_mix = {**base,
                  "faults": [{"image": "disk", "operation": "read"}],
                  "workloads": {"w": {"drive": "d0", "rw": "rw"}}}
    for sc in (probabilistic, random_offsets, random_mix):
        a, b = blocksim.run(sc, seed=1), blocksim.run(sc, seed=2)
        assert a.events and b.events
        assert a.events_jsonl() != b.events_jsonl()
        assert blocksim.run(sc, seed=1).events_jsonl() == a.events_jsonl()


def test_a_deterministic_scenario_does_not_depend_on_the_seed():
    sc = {"duration": "5ms", "images": {"disk": {"size": "1MiB"}},
          "drives": {"d0": {"image": "disk", "werror": "report"}},
          "faults": [{"image": "disk", "skip": 3, "count": 2}],
          "workloads": {"w": {"drive": "d0", "rw": "write"}}}
    a, b = blocksim.run(sc, seed=1), blocksim.run(sc, seed=2)
    assert a.events_jsonl() == b.events_jsonl()
    assert len(a.events) == 2


def test_seed_passed_to_run_overrides_the_scenarios():
    explicit = blocksim.run({**SCENARIO, "seed": 7})
    overridden = blocksim.run(SCENARIO, seed=7)        # SCENARIO says seed 5
    own = blocksim.run(SCENARIO)
    assert overridden.seed == 7 and overridden.summary["seed"] == 7
    assert own.seed == 5 and own.summary["seed"] == 5
    assert fingerprint(overridden) == fingerprint(explicit)
    assert overridden.events_jsonl() != own.events_jsonl()
    sim = blocksim.Simulation(blocksim.load_scenario(SCENARIO), seed=7)
    assert sim.seed == 7
    assert fingerprint(sim.run()) == fingerprint(explicit)
