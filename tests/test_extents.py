"""ExtentMap against a brute-force byte array, and the chain/diff helpers."""

import numpy as np
import pytest

from blocksim.extents import ExtentMap, diff_ranges, resolve_runs


def dense(m: ExtentMap) -> np.ndarray:
    out = np.zeros(m.size, dtype=np.int64)
    for a, b, v in m.iter_runs():
        out[a:b] = v
    return out


@pytest.mark.parametrize("seed", range(8))
def test_random_writes_match_a_dense_model(seed):
    rng = np.random.default_rng(seed)
    size = 1000
    m = ExtentMap(size, page_shift=7)          # 128-unit pages: many page edges
    ref = np.zeros(size, dtype=np.int64)
    for _ in range(400):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, min(size, a + 300) + 1))
        v = int(rng.integers(0, 4))            # small alphabet: lots of merging
        m.set(a, b, v)
        ref[a:b] = v
        assert (dense(m) == ref).all()
    runs = m.runs()
    # canonical: contiguous, no two neighbours with the same value
    assert runs[0][0] == 0 and runs[-1][1] == size
    for (a1, b1, v1), (a2, b2, v2) in zip(runs, runs[1:]):
        assert b1 == a2 and v1 != v2
    for _ in range(50):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, size + 1))
        assert m.count(a, b, 0) == int((ref[a:b] == 0).sum())
        assert m.value_at(a) == ref[a]


def test_whole_page_writes_are_stored_as_one_int():
    m = ExtentMap(1 << 40)                      # 1 TiB
    m.set(0, 1 << 40, 7)
    assert m.extent_count() == (1 << 40) >> 26
    assert m.runs() == [(0, 1 << 40, 7)]
    m.set(4096, 8192, 9)
    assert m.runs(0, 1 << 20) == [(0, 4096, 7), (4096, 8192, 9), (8192, 1 << 20, 7)]


def test_resolve_reads_through_the_chain():
    base = ExtentMap(100, page_shift=4)
    top = ExtentMap(100, page_shift=4)
    base.set(0, 100, 1)
    top.set(10, 20, 2)
    assert resolve_runs([top, base], 0, 30) == [(0, 10, 1), (10, 20, 2), (20, 30, 1)]
    assert resolve_runs([top], 0, 30) == [(0, 10, 0), (10, 20, 2), (20, 30, 0)]


def test_diff_ranges_finds_exactly_the_differences():
    a = ExtentMap(1000, page_shift=6)
    b = ExtentMap(1000, page_shift=6)
    a.set(0, 1000, 5)
    b.set(0, 1000, 5)
    assert list(diff_ranges([a], [b], step=64)) == []
    b.set(100, 150, 6)
    b.set(990, 1000, 0)
    assert list(diff_ranges([a], [b], step=64)) == [
        (100, 128, 5, 6), (128, 150, 5, 6), (990, 1000, 5, 0)]


@pytest.mark.parametrize("seed", range(4))
def test_from_sorted_runs_equals_sequential_sets(seed):
    from blocksim.extents import from_sorted_runs
    rng = np.random.default_rng(seed)
    size = 5000
    cuts = np.sort(rng.choice(np.arange(1, size), size=60, replace=False))
    runs = []
    for a, b in zip(cuts[0::2], cuts[1::2]):
        runs.append((int(a), int(b), int(rng.integers(0, 3))))
    built = from_sorted_runs(size, runs, page_shift=6)
    ref = ExtentMap(size, page_shift=6)
    for a, b, v in runs:
        ref.set(a, b, v)
    assert built.runs() == ref.runs()
    assert built._pages.keys() == ref._pages.keys()
    assert list(diff_ranges([built], [ref], step=64)) == []
