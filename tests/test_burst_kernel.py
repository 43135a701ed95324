"""The compiled bursts' own steps against the Python ones they restate.

Whole runs are compared in ``tests/test_burst.py`` (kernel, Python loop,
agenda alone, no shortcut) and by ``benchmarks/fingerprint.py``; these tests
pin the steps whose edge cases a run may not reach: the eight-bytes-at-a-time
search at every alignment, the bitmap search across blocks and around the
cursor, and the device's ring of busy slots when it wraps.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import blocksim
from blocksim import burst, burst_kernel
from blocksim.bitmap import BLOCK, DirtyBitmap
from equivalence import outcome


def _words(buf) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint64, count=len(buf) >> 3)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 63, 64, 1000, 4099])
def test_find_is_bytearray_find(size):
    rng = np.random.default_rng(size)
    for density in (0.0, 0.01, 0.3):
        buf = bytearray((rng.random(size) < density).astype(np.uint8).tobytes())
        flags = np.frombuffer(buf, dtype=np.uint8)
        for _ in range(200):
            a = int(rng.integers(0, size + 1))
            b = int(rng.integers(a, size + 1))
            assert burst_kernel._find(flags, _words(buf), a, b) == buf.find(1, a, b), (a, b)


def test_search_is_the_bitmaps_search():
    rng = np.random.default_rng(5)
    nbits = 5 * BLOCK + 123                 # blocks, and a tail that is no whole word
    bm = DirtyBitmap(nbits * 4096, 4096)
    for b in rng.choice(nbits, 40, replace=False).tolist():
        bm.mark(b * 4096, b * 4096 + 1)
    bits = np.frombuffer(bm.bits, dtype=np.uint8)
    blocks = np.frombuffer(bm.blocks, dtype=np.uint8)
    for _ in range(2000):
        a = int(rng.integers(0, nbits + 1))
        b = int(rng.integers(a, nbits + 1))
        got = burst_kernel._search(bits, _words(bm.bits), blocks, _words(bm.blocks), a, b)
        assert got == bm._search(a, b), (a, b)


def test_a_devices_slots_survive_the_ring():
    slots = np.array([5, 6, 7, 1, 2, 3, 4], dtype=np.int64)
    assert burst_kernel._ring(slots, 3, 4) == deque([1, 2, 3, 4])
    assert burst_kernel._ring(slots, 5, 4) == deque([3, 4, 5, 6])
    assert burst_kernel._ring(slots, 0, 0) == deque()


def _mirror(source_data, duration="2s"):
    return {
        "name": "kernel", "duration": duration,
        "images": {"src": {"size": "64MiB", "data": source_data},
                   "tgt": {"size": "64MiB", "latency": "300us"}},
        "drives": {"d": {"image": "src"}},
        "workloads": {"g": {"drive": "d", "rw": "randwrite", "bs": "4KiB",
                            "rate-iops": 3000}},
        "jobs": {"j": {"type": "mirror", "device": "d", "target": "tgt",
                       "granularity": "64KiB", "speed": "200MiB"}},
        "actions": [{"on": "BLOCK_JOB_READY", "delay": "300ms",
                     "command": "block-job-complete", "arguments": {"device": "j"}}],
    }


@pytest.mark.parametrize("data", ["full", [{"offset": 0, "length": "20MiB"},
                                           {"offset": "40MiB", "length": "1MiB"}]])
def test_the_kernel_gives_the_python_loops_run(data, monkeypatch):
    """A rate-limited mirror to completion, with a source full of data (every
    read known not to be zeros) and a sparse one (the kernel hands the reads
    of unknown pages back to the Python loop): the same run either way, and
    the kernel did run."""
    scenario = blocksim.load_scenario(_mirror(data))
    calls = []
    real = burst_kernel._run
    with monkeypatch.context() as m:
        m.setattr(burst_kernel, "_run", lambda *args: calls.append(1) or real(*args))
        compiled = outcome(blocksim.Simulation(scenario, seed=3))
    assert len(calls) > 50
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=3)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=3, shortcuts=False)) == compiled
