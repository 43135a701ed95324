"""ExtentMap against a brute-force byte array, and the chain/diff helpers."""

import numpy as np
import pytest

from blocksim.model.extents import ExtentMap, Span, diff_ranges, resolve_runs


def dense(m: ExtentMap) -> np.ndarray:
    out = np.zeros(m.size, dtype=np.int64)
    for a, b, v in m.iter_runs():
        out[a:b] = v
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("first", [None, 0, 2])
def test_random_writes_match_a_dense_model(seed, first):
    # (first: a value the whole map gets at once, its default afterwards:
    # pages holding 0 then are stored, pages holding it are not)
    rng = np.random.default_rng(seed)
    size = 1000
    m = ExtentMap(size, page_shift=7)          # 128-unit pages: many page edges
    ref = np.zeros(size, dtype=np.int64)
    # the same writes on a map that never had a default (its whole-map
    # write made in two): the same runs, the same extent count
    plain = ExtentMap(size, page_shift=7)
    if first is not None:
        m.set(0, size, first)
        plain.set(0, size - 1, first)
        plain.set(size - 1, size, first)
        ref[:] = first
        assert m._pages == {} and m._base == first
    for step in range(400):
        if step % 50 == 49:
            m.check()
            assert m.runs() == plain.runs()
            assert m.extent_count() == plain.extent_count()
            assert m.holds_no_zero() == plain.holds_no_zero() == (ref != 0).all()
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, min(size, a + 300) + 1))
        v = int(rng.integers(0, 4))            # small alphabet: lots of merging
        m.set(a, b, v)
        plain.set(a, b, v)
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
    from blocksim.model.extents import from_sorted_runs
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


# -- the fast paths against the plain ones ---------------------------------

def random_map(rng, size, shift, writes, alphabet):
    m = ExtentMap(size, page_shift=shift)
    for _ in range(writes):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, min(size, a + 40) + 1))
        m.set(a, b, int(rng.integers(0, alphabet)))
    return m


def naive_runs(m: ExtentMap, start: int, end: int):
    """Canonical runs of [start, end) from value_at, one unit at a time."""
    out = []
    for x in range(start, end):
        v = m.value_at(x)
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], x + 1, v)
        else:
            out.append((x, x + 1, v))
    return out


def per_run_set(m: ExtentMap, runs):
    for a, b, v in runs:
        m.set(a, b, v)


def split_runs(rng, runs):
    """The same content, no longer canonical: runs cut at random points."""
    out = []
    for a, b, v in runs:
        while b - a > 1 and rng.random() < 0.5:
            c = int(rng.integers(a + 1, b))
            out.append((a, c, v))
            a = c
        out.append((a, b, v))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_set_runs_equals_a_set_per_run(seed):
    rng = np.random.default_rng(seed)
    size, shift = 700, 5                        # 32-unit pages, a short last page
    fast = random_map(rng, size, shift, 150, 3)
    slow = ExtentMap(size, page_shift=shift)
    per_run_set(slow, fast.runs())
    src = random_map(rng, size, shift, 300, 4)
    for step in range(300):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, min(size, a + 120) + 1))
        runs = src.runs(a, b)                   # the usual case: canonical, contiguous
        kind = step % 4
        if kind == 1:
            runs = split_runs(rng, runs)        # contiguous, equal neighbours
        elif kind == 2 and len(runs) > 2:       # a gap: the per-run fallback
            runs = runs[:1] + runs[2:]
        elif kind == 3:                         # a fresh pattern, not from src
            cuts = sorted({a, b, *map(int, rng.integers(a, b, 4))})
            runs = [(x, y, int(rng.integers(0, 3))) for x, y in zip(cuts, cuts[1:])]
        fast.set_runs(runs)
        per_run_set(slow, runs)
        fast.check()
        assert fast.runs() == slow.runs()
        # canonical pages are unique, so the stored form matches too
        assert fast.extent_count() == slow.extent_count()
        if step % 50 == 0:
            src = random_map(rng, size, shift, 300, 4)


@pytest.mark.parametrize("seed", range(12))
def test_a_snapshot_written_back_equals_its_runs(seed):
    # A mirror's copy: snapshot a range of the source when the read
    # completes, write it into the target when the write completes, with
    # source writes in between that must not leak into the copy.
    rng = np.random.default_rng(seed)
    size, shift = 700, 5
    src = random_map(rng, size, shift, 300, 4)
    fast = random_map(rng, size, shift, 150, 3)
    slow = ExtentMap(size, page_shift=shift)
    per_run_set(slow, fast.runs())
    spans = 0
    for _ in range(300):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, min(size, a + 40) + 1))
        snap = src.snapshot(a, b)
        runs = src.runs(a, b)
        if isinstance(snap, Span):
            spans += 1
            assert snap.runs() == runs and len(snap) == len(runs) > 1
        else:
            assert snap == runs
        x = int(rng.integers(0, size))
        src.set(x, min(size, x + 5), int(rng.integers(0, 4)))   # meanwhile
        fast.set_runs(snap)
        per_run_set(slow, runs)
        fast.check()
        assert fast.runs() == slow.runs()
        assert fast.extent_count() == slow.extent_count()
    assert spans > 50


def test_a_snapshot_into_a_map_with_other_pages_is_written_run_by_run():
    src = ExtentMap(1 << 12, page_shift=10)
    src.set(100, 200, 5)
    src.set(150, 160, 6)
    snap = src.snapshot(120, 170)
    assert isinstance(snap, Span)
    other = ExtentMap(1 << 12, page_shift=6)      # pages of 64: the span crosses two
    other.set_runs(snap)
    other.check()
    assert other.runs(0, 300) == [(0, 120, 0), (120, 150, 5), (150, 160, 6),
                                  (160, 170, 5), (170, 300, 0)]


def test_set_runs_replaces_a_fragmented_page_range():
    m = ExtentMap(1 << 20, page_shift=16)
    for k in range(16):
        m.set(k * 4096, (k + 1) * 4096, 100 + k)
    copy = [(0, 8192, 7), (8192, 65536 - 4096, 8), (65536 - 4096, 65536, 115)]
    m.set_runs(copy)
    m.check()
    assert m.runs(0, 65536) == [(0, 8192, 7), (8192, 61440, 8), (61440, 65536, 115)]
    m.set_runs([(4096, 8192, 7), (8192, 12288, 0)])      # merges left, 0 inside
    assert m.runs(0, 16384) == [(0, 8192, 7), (8192, 12288, 0), (12288, 16384, 8)]
    m.set_runs([(0, 30000, 0), (30000, 65536, 0)])       # the whole page to 0
    m.check()
    assert m.runs() == [(0, 1 << 20, 0)] and m.extent_count() == 0


@pytest.mark.parametrize("seed", range(6))
def test_runs_equals_a_naive_reference(seed):
    rng = np.random.default_rng(seed)
    size, shift = 600, 5
    m = random_map(rng, size, shift, 250, 3)
    m.check()
    assert m.runs() == naive_runs(m, 0, size)
    for _ in range(300):
        a = int(rng.integers(0, size))
        span = 32 if rng.random() < 0.6 else size  # often inside one page
        b = int(rng.integers(a + 1, min(size, a + span) + 1))
        want = naive_runs(m, a, b)
        assert m.runs(a, b) == want
        assert list(m.iter_runs(a, b)) == want
    assert m.runs(5, 5) == [] and list(m.iter_runs(9, 3)) == []


def test_check_rejects_a_non_canonical_page():
    m = ExtentMap(256, page_shift=6)
    m.set(10, 20, 3)
    m.check()
    m.set_runs([(64, 70, 1), (70, 128, 1)])            # stored canonically
    m.check()
    with pytest.raises(AssertionError):
        bad = ExtentMap(256, page_shift=6)
        bad._pages[0] = 0
        bad.check()


# -- page-relative starts --------------------------------------------------

def test_pages_store_relative_uint32_starts():
    from array import array
    m = ExtentMap(1 << 40)
    assert array("I").itemsize == 4
    for k in range(1, 9):
        a = (k << 30) + 4096 * k                # far above 2**32, inside a page
        m.set(a, a + 4096, k)
    m.check()                                   # starts are 'I', values 'q'
    assert m.runs((1 << 30) - 4096, (1 << 30) + 3 * 4096) == [
        ((1 << 30) - 4096, (1 << 30) + 4096, 0),
        ((1 << 30) + 4096, (1 << 30) + 8192, 1),
        ((1 << 30) + 8192, (1 << 30) + 3 * 4096, 0)]
    assert m.value_at((3 << 30) + 3 * 4096) == 3
    assert m.value_at((3 << 30) + 4 * 4096) == 0
    m.set(0, 8, 1 << 62)                        # generations keep 64 bits
    assert m.value_at(7) == 1 << 62


@pytest.mark.parametrize("shift", [32, 33, 36])
def test_large_pages_hold_offsets_near_and_past_4_gib(shift):
    """Starts up to 2**32 - 1 fit 'I'; bigger pages fall back to 'q'."""
    size = 1 << 38
    big = ExtentMap(size, page_shift=shift)
    ref = ExtentMap(size)                       # 64 MiB pages
    edge = (1 << 32) - 5
    ops = [(edge, edge + 10, 5), (7, 9, 2), ((1 << 34) + 3, (1 << 34) + 99, 4),
           ((1 << 32) + 1, (1 << 33) - 1, 6), (edge + 2, edge + 4, 0)]
    for a, b, v in ops:
        big.set(a, b, v)
        ref.set(a, b, v)
    big.check()
    assert big.runs() == ref.runs()
    assert big.runs(edge - 3, edge + 20) == ref.runs(edge - 3, edge + 20)
    copy = ref.runs(edge - 100, (1 << 33) + 5)
    big2 = ExtentMap(size, page_shift=shift)
    big2.set_runs(copy)
    big2.check()
    assert big2.runs(edge - 100, (1 << 33) + 5) == copy
    assert all(big.value_at(x) == ref.value_at(x) for x in (edge, edge + 2, edge + 4, 1 << 32))


def test_diff_ranges_compares_relative_pages_of_the_same_index_only():
    a = ExtentMap(256, page_shift=6)
    b = ExtentMap(256, page_shift=6)
    a.set(10, 20, 3)                            # same page-relative pattern ...
    b.set(64 + 10, 64 + 20, 3)                  # ... on another page
    assert list(diff_ranges([a], [b], step=64)) == [(10, 20, 3, 0), (74, 84, 0, 3)]
    b.set(10, 20, 3)
    a.set(74, 84, 3)
    assert list(diff_ranges([a], [b], step=64)) == []


# -- ranges as numpy arrays: run_arrays and diff_blocks ---------------------------

from blocksim.model.extents import diff_blocks, from_sorted_runs, run_arrays


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("shift", [4, 7, 33])
def test_run_arrays_read_what_the_map_holds(seed, shift):
    rng = np.random.default_rng(seed)
    size = 1000
    m = random_map(rng, size, shift, 150, 4)
    ref = dense(m)
    for _ in range(30):
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, size + 1))
        max_runs = None if rng.random() < 0.3 else int(rng.integers(1, 20))
        stop, starts, values = run_arrays(m, a, b, max_runs)
        assert starts.dtype == values.dtype == np.int64
        assert a < stop <= b
        if max_runs is None:
            assert stop == b
        else:                                 # whole pages, unless the range ends first
            assert stop == b or stop % m.page_size == 0
        assert starts[0] == a and (np.diff(starts) > 0).all() and starts[-1] < stop
        back = np.repeat(values, np.diff(np.append(starts, stop)))
        assert (back == ref[a:stop]).all()


def test_run_arrays_stop_after_enough_runs_but_always_read_a_page():
    m = ExtentMap(1 << 12, page_shift=8)
    for x in range(0, 1 << 12, 16):
        m.set(x, x + 8, x + 1)                # 32 runs per page
    assert run_arrays(m, 0, 1 << 12, max_runs=1)[0] == 256
    assert run_arrays(m, 100, 1 << 12, max_runs=40)[0] == 512
    assert run_arrays(m, 100, 300, max_runs=1000)[0] == 300


def diff_blocks_by_ranges(m, blocks, length, start, end):
    """diff_blocks' meaning, from diff_ranges: the map against a map of the blocks,
    only inside the blocks, as (offset, want, got) per unit."""
    expected = from_sorted_runs(m.size, [(s, s + length, g) for s, g in blocks],
                                m._shift)
    inside = np.zeros(m.size, dtype=bool)
    for s, _g in blocks:
        inside[s:s + length] = True
    out = []
    for a, b, want, got in diff_ranges([expected], [m], start, end, step=m.page_size):
        out += [(x, want, got) for x in range(a, b) if inside[x]]
    return out


@pytest.mark.parametrize("walk", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_diff_blocks_finds_exactly_the_units_diff_ranges_finds(seed, walk, monkeypatch):
    """(``walk``: the compiled walk, _diff_walk, from the first block)"""
    from blocksim.model import extents
    monkeypatch.setattr(extents, "_WALK_FROM", 1 if walk else 1 << 40)
    rng = np.random.default_rng(seed)
    size = 1200
    shift = int(rng.choice([4, 6, 9]))
    length = int(rng.choice([1, 8, 24, 100]))
    picked = np.sort(rng.choice(size // length, min(size // length, int(rng.integers(1, 30))),
                                replace=False))
    blocks = [(int(b) * length, int(rng.integers(1, 5))) for b in picked]
    m = ExtentMap(size, page_shift=shift)
    for s, g in blocks:                       # written, then partly messed with
        m.set(s, s + length, g)
    for _ in range(int(rng.integers(0, 40))):
        a = int(rng.integers(0, size))
        m.set(a, min(size, a + int(rng.integers(1, 3 * length))), int(rng.integers(0, 5)))
    start = int(rng.integers(0, size // 2))
    end = int(rng.integers(start + 1, size + 1))
    _stop, rs, rv = run_arrays(m, start, end)
    offsets, lengths, want, got = diff_blocks(rs, rv, end, [s for s, _ in blocks], length,
                                              np.array([g for _, g in blocks], dtype=np.uint32))
    assert (lengths > 0).all() and (np.diff(offsets) >= lengths[:-1]).all()   # ordered
    units = [(x, int(w), int(g)) for o, n, w, g in zip(offsets, lengths, want, got)
             for x in range(int(o), int(o + n))]
    assert units == diff_blocks_by_ranges(m, blocks, length, start, end)


@pytest.mark.parametrize("seed", range(6))
def test_diff_blocks_walked_makes_the_searches_rows(seed, monkeypatch):
    """The compiled walk (_diff_walk, from _WALK_FROM blocks) against
    numpy's searches: the very same rows, in the same order, for thousands
    of blocks against runs that start inside blocks, at their edges and
    across several, blocks clipped at both ends of the range."""
    from blocksim.model import extents
    rng = np.random.default_rng(seed)
    end = 10**6
    start = int(rng.integers(0, 1000))
    edges = rng.integers(start + 1, end, int(rng.integers(1, 4000)))
    length = int(rng.choice([1, 50, 400, 5000]))
    blocks = np.unique(rng.integers(0, end // length + 2, 6000)) * length - length // 2
    # (some runs start exactly where blocks do)
    rs = np.unique(np.concatenate([[start], edges, blocks[::3][blocks[::3] > start]]))
    rs = rs[rs < end].astype(np.int64)
    rv = rng.integers(0, 4, len(rs)).astype(np.int64)
    gens = rng.integers(0, 4, len(blocks)).astype(np.uint32)
    monkeypatch.setattr(extents, "_WALK_FROM", 1 << 40)
    searched = diff_blocks(rs, rv, end, blocks, length, gens)
    monkeypatch.setattr(extents, "_WALK_FROM", 1)
    walked = diff_blocks(rs, rv, end, blocks, length, gens)
    assert len(searched[0]) > 100
    for a, b in zip(searched, walked):
        assert a.dtype == b.dtype and a.tolist() == b.tolist()


def test_diff_blocks_outside_the_range_is_nothing():
    m = ExtentMap(1 << 10, page_shift=6)
    _stop, rs, rv = run_arrays(m, 100, 200)
    out = diff_blocks(rs, rv, 200, [0, 200, 300], 100, [1, 2, 3])
    assert [len(a) for a in out] == [0, 0, 0, 0]
    offsets, lengths, want, got = diff_blocks(rs, rv, 200, [0, 150], 120, [1, 2])
    # clipped to [100, 200); the second block is cut where the map's page ends (192)
    assert (offsets.tolist(), lengths.tolist(), want.tolist(), got.tolist()) == \
        ([100, 150, 192], [20, 42, 8], [1, 2, 2], [0, 0, 0])


def test_from_sorted_runs_rejects_a_run_past_the_end():
    import pytest
    from blocksim.model.extents import from_sorted_runs
    with pytest.raises(ValueError, match="past the map's size"):
        from_sorted_runs(4096, [(0, 512, 1), (3584, 4608, 2)], page_shift=10)
