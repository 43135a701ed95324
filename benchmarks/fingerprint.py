"""Fingerprints of whole runs: the equivalence check behind every speed-up.

A change to the hot path (devices, extent maps, the mirror loop, guest
requests) must not change what a run produces.  This script runs every
scenario of the library (``scenarios/*.toml`` and ``scenarios/qemu/*.toml``)
plus the benchmark's mirror scenario at small sizes (and once under fault
rules), under a few seeds, and
prints one SHA-256 per run over its event log, command record, sampled series
and summary, serialised canonically, and over what every device holds at the
end (content and allocation, ``tests/equivalence.py``'s ``disks``).

    .venv/bin/python benchmarks/fingerprint.py --save /tmp/before.txt
    ... change the code ...
    .venv/bin/python benchmarks/fingerprint.py --check /tmp/before.txt

``--check`` lists every run whose fingerprint moved and exits 1 if any did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

SEEDS = (1, 2, 3)


def runs():
    """(label, scenario) pairs, in a fixed order."""
    import bench
    import blocksim
    files = sorted((ROOT / "scenarios").glob("*.toml")) + \
        sorted((ROOT / "scenarios" / "qemu").glob("*.toml"))
    for path in files:
        scenario = blocksim.load_scenario(path)
        for seed in SEEDS:
            yield f"{path.relative_to(ROOT)}@{seed}", scenario, seed
    for size, hours in ((2, 0.02), (8, 0.01)):
        scenario = blocksim.load_scenario(bench.mirror_scenario(size, hours))
        yield f"bench-mirror-{size}g-{hours}h@1", scenario, 1
    # the same under faults: the general path of copy bursts and of fault
    # verdicts, at a size where bursts and stretches run for long
    faulty = bench.mirror_scenario(2, 0.02) | {"faults": [
        {"type": "flakey", "image": "tgt", "operation": "write", "up": "1990ms", "down": "10ms"},
        {"type": "delay", "image": "src", "operation": "read", "offset": "1GiB",
         "length": "256MiB", "delay": "1ms"},
        {"image": "src", "operation": "write", "offset": "1536MiB", "length": "16MiB",
         "probability": 0.5}]}
    faulty["jobs"]["job0"]["on-target-error"] = "ignore"
    faulty["drives"]["drive0"]["werror"] = "report"
    yield "bench-mirror-2g-0.02h-faults@1", blocksim.load_scenario(faulty), 1
    # the other copy jobs (issue 17): a full backup (its copy-before-write
    # under the guest), an active commit (the mirror's loop, compiled, over
    # a backing chain) and an intermediate commit, at small sizes; the
    # backup and the active commit once more under fault rules
    for name, make in (("backup", bench.backup_scenario), ("commit", bench.commit_scenario),
                       ("intermediate-commit", bench.intermediate_commit_scenario)):
        for size, hours in ((2, 0.02),):
            yield (f"bench-{name}-{size}g-{hours}h@1",
                   blocksim.load_scenario(make(size, hours)), 1)
    faulty = bench.backup_scenario(2, 0.02) | {"faults": [
        {"type": "flakey", "image": "tgt", "operation": "write", "up": "490ms", "down": "10ms"},
        {"type": "delay", "image": "src", "operation": "read", "offset": "1GiB",
         "length": "256MiB", "delay": "1ms"},
        {"image": "src", "operation": "read", "offset": "1536MiB", "length": "64MiB",
         "probability": 0.05}]}
    faulty["jobs"]["job0"].update({"on-target-error": "ignore", "on-source-error": "ignore"})
    faulty["drives"]["drive0"]["werror"] = "report"
    yield "bench-backup-2g-0.02h-faults@1", blocksim.load_scenario(faulty), 1
    faulty = bench.commit_scenario(2, 0.02) | {"faults": [
        {"type": "flakey", "image": "base", "operation": "write", "up": "1990ms",
         "down": "10ms"},
        {"image": "top", "operation": "write", "offset": "1536MiB", "length": "16MiB",
         "probability": 0.5}]}
    faulty["jobs"]["job0"]["on-error"] = "ignore"
    faulty["drives"]["drive0"]["werror"] = "report"
    yield "bench-commit-2g-0.02h-faults@1", blocksim.load_scenario(faulty), 1


def fingerprint(result, sim) -> str:
    from equivalence import disks
    h = hashlib.sha256()
    h.update(result.events_jsonl().encode())
    for part in (result.commands, result.series, result.summary, disks(sim)):
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def main() -> int:
    import blocksim
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--save", type=Path, help="write the fingerprints to this file")
    group.add_argument("--check", type=Path, help="compare with fingerprints saved earlier")
    args = ap.parse_args()
    lines, wall = [], 0.0
    for label, scenario, seed in runs():
        t0 = time.perf_counter()
        sim = blocksim.Simulation(scenario, seed=seed)
        result = sim.run()
        wall += time.perf_counter() - t0
        lines.append(f"{fingerprint(result, sim)}  {label}")
    print(f"{len(lines)} runs in {wall:.1f} s of simulation", file=sys.stderr)
    if args.save:
        args.save.write_text("".join(line + "\n" for line in lines))
        return 0
    if args.check:
        saved = dict(reversed(line.split("  ", 1)) for line in args.check.read_text().splitlines())
        moved = [label for fp, label in (line.split("  ", 1) for line in lines)
                 if saved.get(label) != fp]
        for label in moved:
            print(f"CHANGED {label}")
        print(f"{len(lines) - len(moved)}/{len(lines)} runs identical")
        return 1 if moved else 0
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
