"""Where benchmark (b)'s time goes, and what one item costs at its scale.

Run with ``python benchmarks/breakdown.py [SIZE_GIB] [SECONDS]`` (default: the
1 TiB mirror of benchmark (b) for 600 simulated seconds, about 15 s of wall
time).  It prints

1. the wall time of that mirror run split between copy bursts
   (``blocksim.engine.burst.copy``, with the guest's requests the compiled loop
   runs among the copies), quiet stretches of guest requests
   (``blocksim.engine.stretch.advance``), applying the content journal's logs
   (``blocksim.engine.journal``: at the end of the run, when the invariants
   and the summary read the disks) and everything else (SimPy's own events,
   requests done one by one, sampling, the end-of-run audit), with the
   number of copy operations and guest requests and what each cost;
2. the cost of the three content operations behind each guest write and
   each re-copy, on extent maps as fragmented as (b) leaves them: a 4 KiB
   ``ExtentMap.set``, a 64 KiB ``snapshot`` of the source and its paste
   into the target (``set_runs``).

The split is measured by wrapping the two entry points with a timer: it is
a benchmark, never a test.  Figures vary by 10-20 % with the hour on a
shared machine; compare runs made back to back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (the benchmark scenarios)

import blocksim  # noqa: E402
from blocksim.engine import burst
from blocksim.engine.journal import ContentJournal  # noqa: E402
from blocksim.model import workload  # noqa: E402
from blocksim.model.extents import ExtentMap  # noqa: E402

GiB = 1 << 30


def timed(module, name: str, totals: dict, key: str) -> None:
    """Wrap ``module.name`` so that its wall time adds up in ``totals[key]``
    (only the outermost of nested calls under the same key counts)."""
    inner = getattr(module, name)
    depth = totals.setdefault(("depth", key), [0])

    def wrapper(*args, **kwargs):
        if depth[0]:
            return inner(*args, **kwargs)
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0
            depth[0] -= 1

    setattr(module, name, wrapper)


def split(size_gib: int, seconds: float) -> None:
    totals = {"bursts": 0.0, "stretches": 0.0, "settles": 0.0}
    timed(burst, "copy", totals, "bursts")
    timed(workload, "advance", totals, "stretches")   # how the workers call it
    timed(ContentJournal, "settle", totals, "settles")
    timed(ContentJournal, "settle_range", totals, "settles")
    scenario = blocksim.load_scenario(bench.mirror_scenario(size_gib, seconds / 3600))
    sim = blocksim.Simulation(scenario)
    t0 = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - t0
    job = result.summary["jobs"]["job0"]
    writes = sum(d["requests"] for d in result.summary["drives"].values())
    in_stretches = sum(w.in_stretches for w in sim.workloads.values())
    in_kernel = sum(w.in_kernel for w in sim.workloads.values())
    copies = sim.devices["tgt"].writes
    other = wall - totals["bursts"] - totals["stretches"] - totals["settles"]
    journal = sim.journal
    ready = job["ready_at"]
    print(f"{size_gib} GiB mirror, {seconds:.0f} simulated s "
          f"(ready at {'never' if ready is None else f'{ready:.0f} s'}): wall {wall:.2f} s")
    print(f"  copy bursts    {totals['bursts']:7.2f} s  {copies:>10,} target writes   "
          f"{totals['bursts'] / max(copies, 1) * 1e6:5.1f} µs each, with "
          f"{in_kernel:,} guest requests run among them")
    print(f"  quiet stretches{totals['stretches']:7.2f} s  {in_stretches:>10,} guest requests  "
          f"{totals['stretches'] / max(in_stretches, 1) * 1e6:5.1f} µs each")
    print(f"  content settled{totals['settles']:7.2f} s  {journal.replayed:>10,} logged changes  "
          f"{totals['settles'] / max(journal.replayed, 1) * 1e6:5.1f} µs each, "
          f"{journal.settled_pages:,} page settles")
    print(f"  everything else{other:7.2f} s  ({writes - in_stretches - in_kernel:,} guest "
          f"requests one by one, {sim.env.skipped:,} waits skipped)")


def content(writes: int = 2_000_000, probes: int = 200_000) -> None:
    """Per-operation cost of the extent map at (b)'s fragmentation: a 1 TiB
    source holding ``writes`` random 4 KiB writes over one generation, and a
    target holding copies of most of their granules."""
    rng = np.random.default_rng(1)
    size = 1 << 40
    src, tgt = ExtentMap(size), ExtentMap(size)
    src.set(0, size, 1)
    tgt.set(0, size, 1)
    offsets = (rng.integers(0, size // 4096, writes + probes) * 4096).tolist()
    gen = 2
    for off in offsets[:writes]:
        src.set(off, off + 4096, gen)
        gen += 1
    for off in offsets[:writes * 9 // 10]:
        g = off & ~0xFFFF
        tgt.set_runs(src.snapshot(g, g + 0x10000))
    probe = offsets[writes:]
    t0 = time.perf_counter()
    for off in probe:
        src.set(off, off + 4096, gen)
        gen += 1
    t1 = time.perf_counter()
    snaps = [src.snapshot(off & ~0xFFFF, (off & ~0xFFFF) + 0x10000) for off in probe]
    t2 = time.perf_counter()
    for snap in snaps:
        tgt.set_runs(snap)
    t3 = time.perf_counter()
    print(f"extent maps at 1 TiB ({writes:,} random 4 KiB writes, "
          f"{src.extent_count():,} source runs, {tgt.extent_count():,} target runs):")
    for what, dt in (("set, 4 KiB (a guest write)", t1 - t0),
                     ("snapshot, 64 KiB (a re-copy's read)", t2 - t1),
                     ("set_runs of it (the re-copy's write)", t3 - t2)):
        print(f"  {what:<38} {dt / len(probe) * 1e6:5.2f} µs")


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    split(size, seconds)
    content()


if __name__ == "__main__":
    main()
