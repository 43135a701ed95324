"""Sweep throughput: 1 worker vs every core, and the per-run overhead of the
Dask path (a LocalCluster on loopback) vs the local process pool.

    .venv/bin/python benchmarks/bench_sweep.py [--runs N] [--short-runs N]

The throughput sweep uses a mirror of a 256 MiB disk under guest load for 20
simulated seconds (~0.1 s a run); the overhead sweep uses a 2-second mirror of
an 8 MiB disk (a few ms a run), so that what is measured is the cost of
shipping a run and its row, not the simulation.  Times are wall-clock and
include starting the pool's workers (not the Dask cluster's); no tables are
written; each figure is the best of ``--repeat`` (3) timings, since the
machine may be shared.  Goal: at least 1.8x with 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from blocksim.analysis.sweep import sweep

THROUGHPUT = """
name = "bench-mirror"
duration = "20s"
seed = 1

[images.disk]
size = "256MiB"
data = "full"

[images.copy]
size = "256MiB"
latency = "500us"
bandwidth = "200MiB"

[drives.vda]
image = "disk"

[[faults]]
image = "copy"
type = "error"
operation = "write"
probability = 0.02

[workloads.guest]
drive = "vda"
rw = "randwrite"
rate-iops = 500
size = "64MiB"

[jobs.job0]
type = "mirror"
device = "vda"
target = "copy"
speed = "32MiB"
on-target-error = "ignore"

[[actions]]
on = "BLOCK_JOB_READY"
command = "block-job-complete"
arguments = { device = "job0" }
"""

SHORT = """
name = "bench-short"
duration = "2s"
seed = 1

[images.disk]
size = "8MiB"
data = "full"

[images.copy]
size = "8MiB"

[drives.vda]
image = "disk"

[[faults]]
image = "copy"
type = "error"
operation = "write"
probability = 0.05

[jobs.job0]
type = "mirror"
device = "vda"
target = "copy"
speed = "16MiB"
on-target-error = "ignore"
"""


def timed(repeat: int, **kwargs) -> tuple[float, int]:
    """The best wall time of ``repeat`` identical sweeps (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = sweep(**kwargs)
        best = min(best, time.perf_counter() - start)
        assert result.complete and not result.failed, result
    return best, len(result.rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="runs of the throughput sweep (default 24)")
    parser.add_argument("--short-runs", type=int, default=200,
                        help="runs of the overhead sweep (default 200)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time each sweep this many times and keep the best (default 3)")
    args = parser.parse_args()
    repeat = max(1, args.repeat)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        long_path = Path(tmp) / "bench-mirror.toml"
        long_path.write_text(THROUGHPUT)
        short_path = Path(tmp) / "bench-short.toml"
        short_path.write_text(SHORT)
        vary = {"jobs.job0.on-target-error": ["ignore", "stop"]}
        seeds = max(1, args.runs // 2)

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"sweep throughput ({2 * seeds} runs of {long_path.stem}, {cores} cores, "
              f"load average {load:.2f} before starting)")
        one, n = timed(repeat, scenario_path=long_path, vary=vary, seeds=seeds, workers=1)
        print(f"  1 worker:        {n / one:6.2f} runs/s  ({one:.2f} s)")
        many, n = timed(repeat, scenario_path=long_path, vary=vary, seeds=seeds, workers=cores)
        print(f"  {cores} workers:       {n / many:6.2f} runs/s  ({many:.2f} s)")
        speedup = one / many
        goal = "" if cores < 2 else ("  (goal >= 1.8x on 2 cores: met)" if speedup >= 1.8
                                     else "  (goal >= 1.8x on 2 cores: NOT met)")
        print(f"  speedup:         {speedup:6.2f}x{goal}")

        short_seeds = max(1, args.short_runs // 2)
        print(f"\nper-run overhead, Dask vs local pool ({2 * short_seeds} runs of {short_path.stem}, "
              f"{cores} workers)")
        inline, n = timed(repeat, scenario_path=short_path, vary=vary, seeds=short_seeds, workers=1)
        print(f"  inline:          {1000 * inline / n:7.2f} ms/run")
        pool, n = timed(repeat, scenario_path=short_path, vary=vary, seeds=short_seeds, workers=cores)
        print(f"  process pool:    {1000 * pool / n:7.2f} ms/run  (wall time / runs, worker start included)")
        try:
            from distributed import LocalCluster
        except ImportError:
            print("  dask: distributed is not installed")
            return 0
        with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            timed(repeat, scenario_path=short_path, vary=vary, seeds=2,
                  scheduler=cluster.scheduler_address)  # warm up
            dask, n = timed(repeat, scenario_path=short_path, vary=vary, seeds=short_seeds,
                            scheduler=cluster.scheduler_address)
        print(f"  dask (local):    {1000 * dask / n:7.2f} ms/run")
        print(f"  dask overhead:   {1000 * (dask - pool) / n:+7.2f} ms/run vs the process pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
