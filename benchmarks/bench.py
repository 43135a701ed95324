"""blocksim benchmarks: print the figures the project's speed goals are about.

Run with ``make bench`` or ``python benchmarks/bench.py [--quick]``.

(a) Guest request throughput: simulated guest requests per wall second for
    random 4 KiB requests at iodepth 32, next to a bare SimPy
    request/timeout/release loop of the same count (goal: blocksim costs at
    most 2x the bare loop per request).
(b) A 1 TiB mirror at 1 GiB/s while the guest writes 4 KiB at 1000 IOPS for
    one simulated hour: wall time and peak memory (goal: under 10 s and under
    500 MiB on one core).
(c) The same mirror at 64 GiB and 4 TiB, to show that cost grows linearly
    with the disk size, not faster; and 10 simulated seconds of it at 1, 16
    and 64 TiB (issue 19: cost set by the data touched, not the virtual
    size; goal: 64 TiB within 1.2x of 1 TiB), with CPU time next to wall
    (a loaded machine stretches wall time, not CPU); and an hour of a 64
    TiB mirror whose source is 1 % allocated (goal: under 10 s).
(d) The other copy jobs at 1 TiB under the same guest: a full backup to a
    1 TiB target, and an active commit of the drive's active layer (fully
    allocated) into a 1 TiB base, each at 1 GiB/s (goal: under 10 s and
    under 500 MiB each).

Each measurement runs in a fresh process so that peak memory is its own,
after (0): a short run of each kind, so that numba's compilation (once
after an install, cached next to the modules) is not counted in them; its
time is printed.  Figures are printed, never asserted: this is a benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GiB = 1 << 30


def guest_scenario(n: int, rw: str) -> dict:
    return {
        "name": f"bench-guest-{rw}",
        "duration": "1000000s",
        "sample-interval": "1000s",
        "images": {"disk": {"size": "1TiB"}},
        "drives": {"drive0": {"image": "disk"}},
        "workloads": {"fio": {"drive": "drive0", "rw": rw, "bs": "4KiB",
                              "iodepth": 32, "number-ios": n}},
    }


def mirror_scenario(size_gib: int, hours: float) -> dict:
    size = f"{size_gib}GiB"
    return {
        "name": f"bench-mirror-{size_gib}g",
        "duration": f"{hours * 3600}s",
        "sample-interval": "10s",
        "images": {
            "src": {"size": size, "data": "full", "bandwidth": "4GiB"},
            "tgt": {"size": size, "bandwidth": "4GiB"},
        },
        "drives": {"drive0": {"image": "src"}},
        "jobs": {"job0": {"type": "mirror", "device": "drive0", "target": "tgt",
                          "speed": "1GiB"}},
        "workloads": {"guest": {"drive": "drive0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 1000}},
    }


def sparse_scenario(size_gib: int, hours: float) -> dict:
    """(c): the benchmark mirror of a sparse source: 1 % allocated, in 64
    extents of ``size_gib / 6400`` GiB, one at the start of each 64th of the
    disk (a filesystem's block groups: data spread over the disk in large
    extents); the guest's random writes land anywhere, as in (b).  The
    target has ``discard = "unmap"``: the mirror zeroes it and copies what
    is allocated (QEMU's mirror_dirty_init), as a thin target would be set
    up for such a disk (onto an "ignore" one it would copy 64 TiB of zeros
    at ``speed``)."""
    scenario = mirror_scenario(size_gib, hours)
    scenario["images"]["tgt"]["discard"] = "unmap"
    scenario["name"] = f"bench-sparse-mirror-{size_gib}g"
    extent = size_gib * 1024 // 6400                  # MiB
    step = size_gib * 1024 // 64
    scenario["images"]["src"]["data"] = [{"offset": f"{i * step}MiB", "length": f"{extent}MiB"}
                                         for i in range(64)]
    return scenario


def backup_scenario(size_gib: int, hours: float) -> dict:
    """(d): a full backup of the benchmark mirror's source, same guest."""
    scenario = mirror_scenario(size_gib, hours)
    scenario["name"] = f"bench-backup-{size_gib}g"
    scenario["jobs"] = {"job0": {"type": "backup", "device": "drive0", "target": "tgt",
                                 "sync": "full", "speed": "1GiB"}}
    return scenario


def commit_scenario(size_gib: int, hours: float) -> dict:
    """(d): an active commit of the drive's fully allocated active layer
    into its base, same guest."""
    size = f"{size_gib}GiB"
    return {
        "name": f"bench-commit-{size_gib}g",
        "duration": f"{hours * 3600}s",
        "sample-interval": "10s",
        "images": {
            "base": {"size": size, "data": "full", "bandwidth": "4GiB"},
            "top": {"size": size, "backing": "base", "data": "full", "bandwidth": "4GiB"},
        },
        "drives": {"drive0": {"image": "top"}},
        "jobs": {"job0": {"type": "commit", "device": "drive0", "speed": "1GiB"}},
        "workloads": {"guest": {"drive": "drive0", "rw": "randwrite", "bs": "4KiB",
                                "rate-iops": 1000}},
    }


def intermediate_commit_scenario(size_gib: int, hours: float) -> dict:
    """For the fingerprints: an intermediate commit of a fully allocated
    ``mid`` into its base, below the drive's active layer (which the guest
    writes, partly allocated), at 1 GiB/s."""
    scenario = commit_scenario(size_gib, hours)
    scenario["name"] = f"bench-intermediate-commit-{size_gib}g"
    images = scenario["images"]
    images["mid"] = images.pop("top")
    images["top"] = {"size": f"{size_gib}GiB", "backing": "mid", "bandwidth": "4GiB",
                     "data": [{"offset": "0", "length": f"{size_gib * 128}MiB"}]}
    scenario["jobs"]["job0"].update(top="mid", base="base")
    return scenario


SCENARIOS = {"mirror": mirror_scenario, "sparse": sparse_scenario, "backup": backup_scenario, "commit": commit_scenario}


def bare_simpy(n: int, iodepth: int = 32) -> float:
    """The reference: n requests through a Resource, a timeout, a release."""
    import simpy
    env = simpy.Environment()
    queue = simpy.Resource(env, capacity=iodepth)
    left = [n]

    def worker():
        while left[0] > 0:
            left[0] -= 1
            with queue.request() as req:
                yield req
                yield env.timeout(100_000)

    for _ in range(iodepth):
        env.process(worker())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0


def measure(kind: str, arg: str) -> dict:
    """Runs inside a child process; prints one JSON line."""
    import blocksim
    if kind == "warm":
        for run in warm_runs(arg == "quick"):
            measure(*run)
        return {}
    if kind == "bare":
        return {"wall": bare_simpy(int(arg))}
    if kind == "guest":
        n, rw = arg.split(":")
        scenario = blocksim.load_scenario(guest_scenario(int(n), rw))
    else:
        size, hours = arg.split(":")
        scenario = blocksim.load_scenario(SCENARIOS[kind](int(size), float(hours)))
    sim = blocksim.Simulation(scenario)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"wall": wall,
           "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "requests": sum(d["requests"] for d in result.summary["drives"].values()),
           "skipped": sim.env.skipped,
           "in_stretches": sum(w.in_stretches for w in sim.workloads.values()),
           "in_kernel": sum(w.in_kernel for w in sim.workloads.values())}
    job = result.summary["jobs"].get("job0")
    if job:
        out.update(ready_at=job["ready_at"], status=job["final_status"],
                   copied_gib=job["bytes_copied"] / GiB)
    return out


def child(kind: str, arg: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, arg],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"benchmark {kind} {arg} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm_up(quick: bool) -> float:
    """Run every kind of measurement below once, briefly, each in its own
    process, and return the wall seconds it took.

    blocksim's compiled shortcuts are compiled by numba on their first call
    after an install (or an edit of their module) and cached next to the
    modules (``engine/compiled.py``); later runs load the cache.  Compiling
    takes a minute and a few hundred MiB, once: a figure that included it
    would measure the compiler, not the run.  The short runs call the same
    compiled functions with the same types as the measured ones: the same
    scenarios, a few simulated seconds at each size measured below (some
    code runs only on the largest disks), and each copy job for long enough
    to finish at 64 GiB (its end's checks).  The caches are then warm, as
    for a user's second run; the time spent here is printed, not hidden."""
    t0 = time.perf_counter()
    child("warm", "quick" if quick else "full")
    return time.perf_counter() - t0


def warm_runs(quick: bool) -> list:
    """:func:`warm_up`'s short runs, done one after another in one process
    (the caches are per function, not per process)."""
    runs = [("guest", f"{2_000}:{rw}") for rw in ("randread", "randwrite")]
    sizes = (16, 64, 256, 1024) if quick else (64, 1024, 4096, 16384, 65536)
    brief = 10 / 3600
    runs += [("mirror", f"{size}:{brief}") for size in sizes]
    runs += [("sparse", f"{sizes[-1]}:{brief}")]
    runs += [(kind, f"{size}:{brief}") for kind in ("backup", "commit") for size in (64, 1024)]
    runs += [(kind, "64:0.03") for kind in ("mirror", "sparse", "backup", "commit")]
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return

    print("(0) warm-up: each measurement's code compiled (first run after an install) or its "
          "cache loaded")
    print(f"    {warm_up(args.quick):.1f} s wall, not counted in the figures below")
    n = 100_000 if args.quick else 1_000_000
    print(f"(a) {n:,} random 4 KiB guest requests at iodepth 32")
    bare = child("bare", str(n))["wall"]
    print(f"    bare SimPy request/timeout/release loop: {bare:7.2f} s  "
          f"{n / bare:>12,.0f} req/s")
    for rw in ("randread", "randwrite"):
        r = child("guest", f"{n}:{rw}")
        print(f"    blocksim {rw:<9}                       : {r['wall']:7.2f} s  "
              f"{n / r['wall']:>12,.0f} req/s  {r['wall'] / bare:4.2f}x bare  "
              f"(goal <= 2x), peak {r['peak_mib']:.0f} MiB")

    hours = 0.05 if args.quick else 1.0
    sizes = (64, 1024, 4096) if not args.quick else (16, 64)
    print(f"\n(b, c) mirror at 1 GiB/s, guest 4 KiB random writes at 1000 IOPS, "
          f"{hours * 3600:.0f} simulated s")
    base = None
    for size in sizes:
        r = child("mirror", f"{size}:{hours}")
        per_gib = r["wall"] / size
        base = base or per_gib
        ready = f"{r['ready_at']:.0f} s" if r.get("ready_at") is not None else "never"
        print(f"    {size:>5} GiB: wall {r['wall']:7.2f} s, peak {r['peak_mib']:6.0f} MiB, "
              f"{per_gib * 1000:6.1f} ms/GiB ({per_gib / base:4.2f}x the smallest), "
              f"ready at {ready}, copied {r['copied_gib']:.0f} GiB, "
              f"{r['requests']:,} guest requests ({r['in_stretches']:,} in quiet "
              f"stretches, {r['in_kernel']:,} in the compiled copy loop), "
              f"{r['skipped']:,} waits skipped")
    print("    goal for 1 TiB: under 10 s and under 500 MiB")
    seconds = 10
    print(f"    {seconds} simulated s, by virtual size:")
    first = None
    for size in ((64, 256, 1024) if args.quick else (1024, 16384, 65536)):
        r = child("mirror", f"{size}:{seconds / 3600}")
        first = first or r
        print(f"    {size // 1024 if size >= 1024 else size:>5} {'TiB' if size >= 1024 else 'GiB'}: "
              f"wall {r['wall']:7.2f} s, cpu {r['cpu']:6.2f} s "
              f"({r['cpu'] / first['cpu']:4.2f}x), peak {r['peak_mib']:6.0f} MiB "
              f"({r['peak_mib'] / first['peak_mib']:4.2f}x), copied {r['copied_gib']:.0f} GiB")
    print("    goal: 64 TiB within 1.2x of 1 TiB in time and memory")
    size = 1024 if args.quick else 65536
    r = child("sparse", f"{size}:{hours}")
    ready = f"{r['ready_at']:.0f} s" if r.get("ready_at") is not None else "never"
    print(f"    {size // 1024:>5} TiB sparse (1 % allocated in 64 extents), {hours * 3600:.0f} "
          f"simulated s: wall {r['wall']:7.2f} s, cpu {r['cpu']:6.2f} s, peak "
          f"{r['peak_mib']:6.0f} MiB, ready at {ready}, copied {r['copied_gib']:.0f} GiB")
    print("    goal for 64 TiB: under 10 s")

    size = 64 if args.quick else 1024
    print(f"\n(d) other copy jobs at {size} GiB, 1 GiB/s, the same guest, "
          f"{hours * 3600:.0f} simulated s")
    for kind, what in (("backup", "full backup   "), ("commit", "active commit ")):
        r = child(kind, f"{size}:{hours}")
        print(f"    {what}: wall {r['wall']:7.2f} s (CPU {r['cpu']:7.2f} s), "
              f"peak {r['peak_mib']:6.0f} MiB, "
              f"{r['status']}, copied {r['copied_gib']:.0f} GiB, "
              f"{r['requests']:,} guest requests ({r['in_stretches']:,} in quiet "
              f"stretches, {r['in_kernel']:,} in the compiled copy loop), "
              f"{r['skipped']:,} waits skipped")
    print("    goal for 1 TiB: under 10 s and under 500 MiB each")


if __name__ == "__main__":
    main()
