"""Random scenarios run with and without the shortcuts must leave the same run.

The shortcut tests elsewhere run hand-built cases, each aimed at one rule.
This one draws whole scenarios (backing chains, thin targets, fault rules of
every kind, guests of every shape, a mirror or a stream with random policies,
commands at random times and in reaction to events; and, apart, a commit or a
backup, :func:`job_scenario`) from a seeded generator
and requires byte-identical outcomes with ``shortcuts=False``: events,
commands, series, summary, device counters and what every device holds
(``equivalence.outcome``).  A combination nobody thought of is where a
shortcut's rule would be wrong.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import pytest

import blocksim
from blocksim.simulation import Simulation
from equivalence import outcome

CASES = 48
MiB = 1 << 20
POLICIES = ("report", "ignore", "stop", "enospc", "auto")


def _ms(r: random.Random, lo: float, hi: float) -> str:
    return f"{r.uniform(lo, hi):.3f}ms"


def _fault(r: random.Random, image: str, size: int) -> dict:
    kind = r.choice(("error", "error", "flakey", "dust", "delay"))
    rule: dict = {"image": image}
    if kind == "flakey":
        rule.update(type="flakey", up=_ms(r, 50, 400), down=_ms(r, 1, 60),
                    operation=r.choice(("read", "write", "any")),
                    **({"drop-writes": True} if r.random() < 0.3 else {}))
        return rule
    if kind == "dust":
        rule.update(type="dust", blocks=sorted(r.sample(range(size // 512), 6)))
        rule["block-size"] = 512
        return rule
    length = r.choice((64 << 10, MiB, 4 * MiB))
    offset = r.randrange(0, (size - length) // MiB + 1) * MiB
    rule.update(offset=offset, length=length,
                operation=r.choice(("read", "write", "any")))
    if kind == "delay":
        rule.update(type="delay", delay=_ms(r, 0.1, 5))
        return rule
    rule["errno"] = r.choice(("EIO", "ENOSPC"))
    if r.random() < 0.5:
        rule["count"] = r.randint(1, 5)
    if r.random() < 0.3:
        rule["skip"] = r.randint(1, 4)
    if r.random() < 0.4:
        rule["start"] = _ms(r, 0, 800)
        rule["end"] = _ms(r, 800, 2500)
    if r.random() < 0.3:
        rule["probability"] = round(r.uniform(0.1, 0.9), 2)
    return rule


def _workload(r: random.Random, drive: str, size: int) -> dict:
    w = {"drive": drive,
         "rw": r.choice(("randwrite", "randwrite", "randread", "randrw", "write", "rw")),
         "bs": r.choice(("4KiB", "4KiB", "16KiB", "64KiB")),
         "iodepth": r.choice((1, 1, 1, 2, 4))}
    shape = r.random()
    if shape < 0.6:
        w["rate-iops"] = r.choice((200, 1000, 3000))
    elif shape < 0.8:
        w["think-time"] = _ms(r, 0.05, 2)
    else:
        w["number-ios"] = r.randint(500, 5000)
    if r.random() < 0.3:
        w["size"] = f"{r.choice((4, 16, size // MiB))}MiB"
    if r.random() < 0.15:
        w["fsync"] = r.randint(2, 16)
    if r.random() < 0.3:
        w["start"] = _ms(r, 0, 500)
    if r.random() < 0.3:
        w["end"] = _ms(r, 1000, 2500)
    return w


def scenario(seed: int) -> dict:
    """One random scenario: a guest disk (over a backing file or not), a
    mirror or a stream or neither (sometimes a cascade, sometimes a second
    disk with its own guest and mirror), fault rules, guests and commands."""
    r = random.Random(seed)
    size = r.choice((32, 64, 128)) * MiB
    images: dict = {"base": {"size": size, "format": "raw",
                             "data": r.choice(("full", "none", [{"offset": "0", "length": "8MiB"}]))}}
    disk = {"size": size, "latency": _ms(r, 0.02, 0.5),
            "bandwidth": r.choice(("200MiB", "1GiB", "4GiB"))}
    layered = r.random() < 0.5
    if layered:
        disk["backing"] = "base"
    else:
        disk["data"] = r.choice(("full", "none"))
    if r.random() < 0.2:
        disk["jitter"] = 0.2
    images["disk"] = disk
    drives = {"vda": {"image": "disk", "rerror": r.choice(POLICIES[:3]),
                      "werror": r.choice(POLICIES)}}
    jobs: dict = {}
    actions: list = []
    job = r.choice(("mirror", "mirror", "stream", None)) if layered else r.choice(("mirror", None))
    if job == "mirror":
        target = {"size": size, "latency": _ms(r, 0.02, 0.5),
                  "bandwidth": r.choice(("500MiB", "2GiB"))}
        if r.random() < 0.3:
            target["capacity"] = f"{size // MiB // 2}MiB"
            actions.append({"on": "BLOCK_JOB_ERROR", "delay": _ms(r, 10, 200),
                            "command": "thin-extend",
                            "arguments": {"image": "tgt", "capacity": size}})
        images["tgt"] = target
        jobs["job0"] = {"type": "mirror", "device": "vda", "target": "tgt",
                        "sync": r.choice(("full", "full", "top")),
                        "speed": r.choice((0, 64 * MiB, 256 * MiB)),
                        "granularity": r.choice(("64KiB", "256KiB")),
                        "buf-size": r.choice(("1MiB", "16MiB")),
                        "on-source-error": r.choice(POLICIES),
                        "on-target-error": r.choice(POLICIES)}
        if r.random() < 0.6:
            actions.append({"on": "BLOCK_JOB_READY", "delay": _ms(r, 0, 300),
                            "command": r.choice(("block-job-complete", "block-job-cancel")),
                            "arguments": {"device": "job0"}})
    elif job == "stream":
        jobs["job0"] = {"type": "stream", "device": "vda",
                        "speed": r.choice((0, 32 * MiB, 128 * MiB)),
                        "on-error": r.choice(POLICIES)}
    if jobs:
        actions.append({"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"},
                        "delay": _ms(r, 5, 300), "repeat": True,
                        "command": "block-job-resume", "arguments": {"device": "job0"}})
        for _ in range(r.randint(0, 3)):
            command = r.choice(("block-job-pause", "block-job-resume", "block-job-set-speed",
                                "block-job-cancel", "query-block-jobs"))
            arguments: dict = {} if command == "query-block-jobs" else {"device": "job0"}
            if command == "block-job-set-speed":
                arguments["speed"] = r.choice((0, 16 * MiB, 512 * MiB))
            if command == "block-job-cancel" and r.random() < 0.5:
                arguments["force"] = True
            actions.append({"at": _ms(r, 50, 2500), "command": command, "arguments": arguments})
    actions.append({"on": "BLOCK_IO_ERROR", "match": {"action": "stop"}, "delay": _ms(r, 5, 200),
                    "repeat": True, "command": "cont"})
    if r.random() < 0.3:
        at = r.uniform(100, 2000)
        actions.append({"at": f"{at:.3f}ms", "command": "stop"})
        actions.append({"at": f"{at + r.uniform(1, 300):.3f}ms", "command": "cont"})
    if jobs and r.random() < 0.2:           # started by a command, finalized by another
        jobs["job0"]["start"] = "manual"
        jobs["job0"]["auto-finalize"] = False
        actions.append({"at": _ms(r, 0, 300), "command": "job-start", "arguments": {"id": "job0"}})
        actions.append({"on": "JOB_STATUS_CHANGE", "match": {"status": "pending"},
                        "delay": _ms(r, 0, 100), "command": "block-job-finalize",
                        "arguments": {"id": "job0"}})
    if job == "mirror" and r.random() < 0.15:
        jobs["job0"]["sync"] = "none"
    if not layered and r.random() < 0.2:    # a thin guest disk: guest ENOSPC, extended later
        disk["capacity"] = f"{size // MiB // 2}MiB"
        actions.append({"at": _ms(r, 500, 2500), "command": "thin-extend",
                        "arguments": {"image": "disk", "capacity": size}})
    for _ in range(r.randint(0, 2)):
        actions.append({"at": _ms(r, 0, 2500), "command": "guest-burst",
                        "arguments": {"drive": "vda", "rw": r.choice(("read", "write", "randwrite")),
                                      "bs": "4KiB", "number-ios": r.randint(1, 50)}})
    workloads = {f"g{i}": _workload(r, "vda", size) for i in range(r.choice((1, 1, 2)))}
    if job == "mirror" and r.random() < 0.2:
        # a cascade asked for: the target is a drive too, and a mirror of it
        # is refused while the first mirror holds it (QEMU's op blockers)
        images["tgt2"] = {"size": size, "latency": _ms(r, 0.02, 0.5)}
        drives["vdt"] = {"image": "tgt"}
        jobs["job1"] = {"type": "mirror", "device": "vdt", "target": "tgt2",
                        "start": _ms(r, 0, 50), "speed": r.choice((0, 128 * MiB)),
                        "on-target-error": r.choice(POLICIES)}
    if r.random() < 0.2:
        # a second disk with its own guest, and maybe its own mirror
        images["disk2"] = {"size": size, "data": "full", "latency": _ms(r, 0.02, 0.5)}
        drives["vdb"] = {"image": "disk2", "werror": r.choice(POLICIES)}
        workloads["h0"] = _workload(r, "vdb", size)
        if r.random() < 0.5:
            images["tgt3"] = {"size": size}
            jobs["job2"] = {"type": "mirror", "device": "vdb", "target": "tgt3",
                            "speed": r.choice((0, 64 * MiB)),
                            "on-source-error": r.choice(POLICIES)}
    faults = [_fault(r, r.choice(sorted(images)), size) for _ in range(r.randint(0, 3))]
    return {"name": f"random-{seed}", "duration": "3s", "seed": seed,
            "profile": "rfc-2012" if r.random() < 0.15 else "qemu",
            "sample-interval": "50ms", "images": images, "drives": drives,
            "jobs": jobs, "faults": faults, "workloads": workloads, "actions": actions}


@pytest.mark.parametrize("seed", range(CASES))
def test_a_random_scenario_is_the_same_without_shortcuts(seed):
    loaded = blocksim.load_scenario(scenario(seed))
    fast = Simulation(loaded)
    exact = Simulation(loaded, shortcuts=False)
    assert outcome(fast) == outcome(exact)
    assert exact.env.skipped == 0


def _sound(source: dict) -> bool:
    """Whether the scenario keeps every invariant by construction: no fault
    drops writes silently, and a mirror copies the whole disk (``sync =
    "full"``; ``top`` and ``none`` onto a target without the source's backing
    chain lose data at the pivot, which the invariants rightly report)."""
    return all(job["type"] != "mirror" or job.get("sync", "full") == "full"
               for job in source["jobs"].values()) and \
        not any(f.get("drop-writes") for f in source["faults"])


def test_the_random_scenarios_exercise_the_shortcuts():
    """Across the cases: waits skipped, quiet stretches, errors of every
    action, jobs that complete, fail, are cancelled or end the run paused;
    and no invariant broken where none can be (:func:`_sound`), whatever
    the faults, policies and commands."""
    skipped = stretched = errors = sound = 0
    actions, outcomes = set(), set()
    for seed in range(CASES):
        source = scenario(seed)
        sim = Simulation(blocksim.load_scenario(source))
        result = sim.run()
        if _sound(source):
            sound += 1
            assert result.summary["invariants"]["violations"] == [], seed
        skipped += sim.env.skipped
        stretched += sum(w.in_stretches for w in sim.workloads.values())
        for event in result.events:
            if event["event"] in ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR"):
                errors += 1
                actions.add(event["data"]["action"])
        outcomes.update(j["outcome"] for j in result.summary["jobs"].values())
    assert skipped > 10_000 and stretched > 10_000
    assert errors > 100 and actions == {"report", "ignore", "stop"}
    assert {"completed", "completed-with-error", "cancelled", "paused"} <= outcomes
    assert sound > CASES // 2


# -- the other copy jobs: commit (active and intermediate) and backup ----------
JOB_CASES = 40


def job_scenario(seed: int) -> dict:
    """One random scenario around a commit or a backup (issue 17): an
    active commit of the drive's top (the mirror's loop, its source over a
    backing chain; the base sometimes thin), an intermediate commit of
    ``mid`` into ``base``, or a backup with a random sync mode onto a
    target sometimes thin (its copy-before-write under the guests); fault
    rules, guests and commands as :func:`scenario` draws them."""
    r = random.Random(1_000_003 + seed)
    size = r.choice((32, 64)) * MiB
    kind = r.choice(("active-commit", "intermediate-commit", "backup"))
    def image(**extra) -> dict:
        return {"size": size, "latency": _ms(r, 0.02, 0.5),
                "bandwidth": r.choice(("200MiB", "1GiB", "4GiB"))} | extra

    def some_data():
        return r.choice(("full", "none", [{"offset": "0", "length": "8MiB"}],
                         [{"offset": "4MiB", "length": f"{size // MiB // 2}MiB"}]))
    images: dict = {"base": image(data=r.choice(("full", "none", [{"offset": "0",
                                                                   "length": "8MiB"}])))}
    drives = {"vda": {"image": "top", "rerror": r.choice(POLICIES[:3]),
                      "werror": r.choice(POLICIES)}}
    actions: list = []
    if kind == "backup":
        layered = r.random() < 0.3
        images["top"] = image(data=some_data(), **({"backing": "base"} if layered else {}))
        images["tgt"] = image()
        if r.random() < 0.25:
            images["tgt"]["capacity"] = f"{size // MiB // 2}MiB"
            actions.append({"on": "BLOCK_JOB_ERROR", "delay": _ms(r, 10, 200),
                            "command": "thin-extend",
                            "arguments": {"image": "tgt", "capacity": size}})
        job = {"type": "backup", "device": "vda", "target": "tgt",
               "sync": r.choice(("full", "full", "top", "none")),
               "speed": r.choice((0, 16 * MiB, 64 * MiB)),
               "on-source-error": r.choice(POLICIES),
               "on-target-error": r.choice(POLICIES)}
        if job["sync"] == "none" or r.random() < 0.2:
            actions.append({"at": _ms(r, 500, 2500), "command": "block-job-cancel",
                            "arguments": {"device": "job0"}})
    else:
        images["mid"] = image(backing="base", data=some_data())
        images["top"] = image(backing="mid", data=r.choice(
            ("full", "full", "none", [{"offset": "2MiB", "length": "6MiB"}])))
        if r.random() < 0.25:
            images["base"]["capacity"] = f"{size // MiB * 3 // 4}MiB"
            actions.append({"on": "BLOCK_JOB_ERROR", "delay": _ms(r, 10, 200),
                            "command": "thin-extend",
                            "arguments": {"image": "base", "capacity": 2 * size}})
        job = {"type": "commit", "device": "vda",
               "speed": r.choice((0, 32 * MiB, 128 * MiB)),
               "on-error": r.choice(POLICIES)}
        if kind == "intermediate-commit":
            job |= {"top": "mid", "base": "base"}
        elif r.random() < 0.7:
            actions.append({"on": "BLOCK_JOB_READY", "delay": _ms(r, 0, 300),
                            "command": r.choice(("block-job-complete", "block-job-cancel")),
                            "arguments": {"device": "job0"}})
    if r.random() < 0.2:
        images["top"]["jitter"] = 0.2
    actions.append({"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"},
                    "delay": _ms(r, 5, 300), "repeat": True,
                    "command": "block-job-resume", "arguments": {"device": "job0"}})
    actions.append({"on": "BLOCK_IO_ERROR", "match": {"action": "stop"}, "delay": _ms(r, 5, 200),
                    "repeat": True, "command": "cont"})
    for _ in range(r.randint(0, 3)):
        command = r.choice(("block-job-pause", "block-job-resume", "block-job-set-speed",
                            "block-job-cancel", "query-block-jobs", "stop"))
        arguments: dict = {} if command in ("query-block-jobs", "stop") else {"device": "job0"}
        if command == "block-job-set-speed":
            arguments["speed"] = r.choice((0, 16 * MiB, 512 * MiB))
        if command == "block-job-cancel" and r.random() < 0.5:
            arguments["force"] = True
        at = r.uniform(50, 2500)
        actions.append({"at": f"{at:.3f}ms", "command": command, "arguments": arguments})
        if command == "stop":
            actions.append({"at": f"{at + r.uniform(1, 300):.3f}ms", "command": "cont"})
    workloads = {f"g{i}": _workload(r, "vda", size) for i in range(r.choice((1, 1, 2)))}
    if kind == "active-commit" and r.random() < 0.6:
        # a guest the compiled loop can run among the copies
        w = workloads["g0"]
        for key in ("think-time", "number-ios", "fsync", "size"):
            w.pop(key, None)
        w.update({"rw": "randwrite", "bs": "4KiB", "iodepth": 1,
                  "rate-iops": r.choice((1000, 3000))})
        images["top"]["data"] = "full"
    faults = [_fault(r, r.choice(sorted(images)), size) for _ in range(r.randint(0, 3))]
    return {"name": f"random-job-{seed}", "duration": "3s", "seed": seed,
            "sample-interval": "50ms", "images": images, "drives": drives,
            "jobs": {"job0": job}, "faults": faults, "workloads": workloads,
            "actions": actions}


@pytest.mark.parametrize("seed", range(JOB_CASES))
def test_a_random_commit_or_backup_is_the_same_without_shortcuts(seed):
    loaded = blocksim.load_scenario(job_scenario(seed))
    fast = Simulation(loaded)
    exact = Simulation(loaded, shortcuts=False)
    assert outcome(fast) == outcome(exact)


def test_the_random_commits_and_backups_exercise_the_shortcuts():
    """Across the cases: each job kind, the compiled loop running active
    commits, copy-before-write under guests, errors of every action, and
    jobs that complete, fail or are cancelled."""
    kinds, actions, outcomes = set(), set(), set()
    in_kernel = cbw = 0
    for seed in range(JOB_CASES):
        source = job_scenario(seed)
        sim = Simulation(blocksim.load_scenario(source))
        result = sim.run()
        job = source["jobs"]["job0"]
        kinds.add((job["type"], "top" in job))
        in_kernel += sum(w.in_kernel for w in sim.workloads.values())
        cbw += result.summary["jobs"]["job0"].get("copy_before_write", {}).get("writes", 0)
        for event in result.events:
            if event["event"] == "BLOCK_JOB_ERROR":
                actions.add(event["data"]["action"])
        outcomes.add(result.summary["jobs"]["job0"]["outcome"])
    assert kinds == {("commit", False), ("commit", True), ("backup", False)}
    assert in_kernel > 3000 and cbw > 1000
    assert actions == {"report", "ignore", "stop"}
    assert {"completed", "completed-with-error", "cancelled"} <= outcomes


CHILD = (
    "import hashlib, sys\n"
    "sys.path.insert(0, 'tests')\n"
    "import blocksim\n"
    "from blocksim.simulation import Simulation\n"
    "from equivalence import outcome\n"
    "from system.test_shortcuts_random import scenario\n"
    "for seed in range(int(sys.argv[1])):\n"
    "    run = outcome(Simulation(blocksim.load_scenario(scenario(seed))))\n"
    "    print(hashlib.sha256(run.encode()).hexdigest())\n"
)


def test_random_scenarios_are_the_same_in_other_processes():
    """Dict order, hashing and module state never leak into a run: the
    first cases give the same bytes here and in two processes with other
    hash seeds."""
    n = 12
    here = [hashlib.sha256(outcome(Simulation(blocksim.load_scenario(scenario(seed))))
                           .encode()).hexdigest() for seed in range(n)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for hashseed in ("1", "2"):
        child = subprocess.run([sys.executable, "-c", CHILD, str(n)], cwd=root,
                               env=dict(os.environ, PYTHONHASHSEED=hashseed),
                               capture_output=True, text=True, check=True, timeout=300)
        assert child.stdout.split() == here


BACKUP_CASES = 40


def backup_scenario(seed: int) -> dict:
    """One random backup under a one-worker guest, the copy-before-write's
    quiet stretches (blocksim.engine.filtered) among the job's copies: every
    sync mode (a bitmap for ``bitmap``), a rate limit or none, compress
    (one-cluster tasks), a thin or qcow2 (128 KiB clusters) target, a
    source over a backing file, fault rules, pause, resume, set-speed,
    stop, cancel, and a second guest at times."""
    r = random.Random(2_000_003 + seed)
    size = r.choice((32, 64)) * MiB
    sync = r.choice(("full", "full", "top", "none", "bitmap"))

    def image(**extra) -> dict:
        return {"size": size, "latency": _ms(r, 0.02, 0.3),
                "bandwidth": r.choice(("200MiB", "1GiB", "4GiB"))} | extra
    layered = r.random() < 0.3
    images: dict = {"base": image(data="full"),
                    "top": image(data=r.choice(("full", "full", "none",
                                                [{"offset": "0", "length": "8MiB"}])),
                                 **({"backing": "base"} if layered else {}))}
    images["tgt"] = image(**({"format": "qcow2", "cluster-size": "128KiB"}
                             if r.random() < 0.25 else {}))
    actions: list = []
    if r.random() < 0.2:
        images["tgt"]["capacity"] = f"{size // MiB // 2}MiB"
        actions.append({"on": "BLOCK_JOB_ERROR", "delay": _ms(r, 10, 200),
                        "command": "thin-extend",
                        "arguments": {"image": "tgt", "capacity": size}})
    job = {"type": "backup", "device": "vda", "target": "tgt", "sync": sync,
           "speed": r.choice((0, 16 * MiB, 64 * MiB, 64 * MiB)),
           "on-source-error": r.choice(POLICIES), "on-target-error": r.choice(POLICIES)}
    if r.random() < 0.15:
        job["compress"] = True
    if sync == "bitmap":
        images["top"]["bitmaps"] = [{"name": "b0", "dirty": [
            {"offset": f"{r.randrange(0, size // MiB - 8)}MiB", "length": "6MiB"}]}]
        job |= {"bitmap": "b0", "bitmap-mode": r.choice(("on-success", "always", "never"))}
    elif r.random() < 0.2:
        images["top"]["bitmaps"] = [{"name": "b1"}]      # recording the guest
    if sync == "none" or r.random() < 0.25:
        actions.append({"at": _ms(r, 300, 2500), "command": "block-job-cancel",
                        "arguments": {"device": "job0",
                                      **({"force": True} if r.random() < 0.5 else {})}})
    actions.append({"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"},
                    "delay": _ms(r, 5, 300), "repeat": True,
                    "command": "block-job-resume", "arguments": {"device": "job0"}})
    actions.append({"on": "BLOCK_IO_ERROR", "match": {"action": "stop"}, "delay": _ms(r, 5, 200),
                    "repeat": True, "command": "cont"})
    for _ in range(r.randint(0, 4)):
        command = r.choice(("block-job-pause", "block-job-resume", "block-job-set-speed",
                            "query-block-jobs", "stop"))
        arguments: dict = {} if command in ("query-block-jobs", "stop") else {"device": "job0"}
        if command == "block-job-set-speed":
            arguments["speed"] = r.choice((0, 16 * MiB, 64 * MiB))
        at = r.uniform(20, 2500)
        actions.append({"at": f"{at:.3f}ms", "command": command, "arguments": arguments})
        if command == "block-job-pause":
            actions.append({"at": f"{at + r.uniform(1, 400):.3f}ms",
                            "command": "block-job-resume", "arguments": {"device": "job0"}})
        if command == "stop":
            actions.append({"at": f"{at + r.uniform(1, 300):.3f}ms", "command": "cont"})
    guest = {"drive": "vda", "rw": r.choice(("randwrite", "randwrite", "randrw", "write")),
             "bs": r.choice(("4KiB", "4KiB", "4KiB", "16KiB", "96KiB")), "iodepth": 1}
    if r.random() < 0.8:
        guest["rate-iops"] = r.choice((500, 1000, 3000))
    else:
        guest["think-time"] = _ms(r, 0.05, 1)
    if r.random() < 0.3:
        guest["size"] = f"{r.choice((4, 16))}MiB"
    if r.random() < 0.2:
        guest["start"] = _ms(r, 0, 300)
    workloads = {"g0": guest}
    if r.random() < 0.15:
        workloads["g1"] = _workload(r, "vda", size)
    faults = [_fault(r, r.choice(sorted(images)), size) for _ in range(r.choice((0, 0, 1, 2)))]
    return {"name": f"random-backup-{seed}", "duration": "3s", "seed": seed,
            "sample-interval": "50ms", "images": images,
            "drives": {"vda": {"image": "top", "rerror": r.choice(POLICIES[:3]),
                               "werror": r.choice(POLICIES)}},
            "jobs": {"job0": job}, "faults": faults, "workloads": workloads,
            "actions": actions}


@pytest.mark.parametrize("seed", range(BACKUP_CASES))
def test_a_random_backup_under_a_paced_guest_is_the_same_without_shortcuts(seed):
    loaded = blocksim.load_scenario(backup_scenario(seed))
    assert outcome(Simulation(loaded)) == outcome(Simulation(loaded, shortcuts=False))


def test_the_random_backups_exercise_the_filtered_stretches():
    """Across the cases: guest writes through the copy-before-write filter
    done in stretches while the job ran, copies among them, every sync mode,
    and jobs that complete, fail or are cancelled."""
    from blocksim.engine import filtered
    counted = {"requests": 0, "copies": 0}
    advance = filtered.advance

    def counting(workload, write_filter):
        copies = write_filter.cbw_copies
        n = advance(workload, write_filter)
        counted["requests"] += n
        counted["copies"] += write_filter.cbw_copies - copies
        return n
    syncs, outcomes = set(), set()
    filtered.advance = counting
    try:
        for seed in range(BACKUP_CASES):
            source = backup_scenario(seed)
            result = Simulation(blocksim.load_scenario(source)).run()
            syncs.add(source["jobs"]["job0"]["sync"])
            outcomes.add(result.summary["jobs"]["job0"]["outcome"])
    finally:
        filtered.advance = advance
    assert syncs == {"full", "top", "none", "bitmap"}
    assert counted["requests"] > 10_000 and counted["copies"] > 1_000, counted
    assert {"completed", "completed-with-error", "cancelled"} <= outcomes
