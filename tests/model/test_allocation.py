"""AllocationMap against a plain set of clusters, on ranges inside one page,
across page edges and empty ones."""

import numpy as np
import pytest

from blocksim.model.allocation import PAGE_BITS, AllocationMap

PAGE = 1 << PAGE_BITS


def random_ranges(rng, nclusters: int, n: int):
    for _ in range(n):
        kind = rng.integers(0, 4)
        if kind == 0:                               # one cluster
            c0 = int(rng.integers(0, nclusters))
            yield c0, c0 + 1
        elif kind == 1:                             # up to 16 clusters, maybe at a page edge
            c0 = int(rng.integers(0, nclusters // PAGE)) * PAGE + int(rng.integers(-8, 8))
            c0 = min(max(c0, 0), nclusters - 1)
            yield c0, min(c0 + int(rng.integers(1, 17)), nclusters)
        elif kind == 2:                             # across several pages
            c0 = int(rng.integers(0, nclusters - 1))
            yield c0, min(c0 + int(rng.integers(1, 3 * PAGE)), nclusters)
        else:                                       # empty
            c0 = int(rng.integers(0, nclusters))
            yield c0, c0


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_set_of_clusters(seed):
    rng = np.random.default_rng(seed)
    nclusters = 5 * PAGE + 123
    amap, ref = AllocationMap(nclusters), set()
    for c0, c1 in random_ranges(rng, nclusters, 400):
        if rng.random() < 0.5:
            new = set(range(c0, c1)) - ref
            assert amap.set_range(c0, c1) == len(new)
            ref |= new
        else:
            inside = sum(1 for c in range(c0, c1) if c in ref)
            assert amap.count_set(c0, c1) == inside
            assert amap.all_set(c0, c1) == (inside == c1 - c0)
            assert amap.any_set(c0, c1) == (inside > 0)
        assert amap.count == len(ref)
    for c in rng.integers(0, nclusters, 200).tolist():
        assert amap.is_set(c) == (c in ref)
    runs = list(amap.runs())
    assert sum(b - a for a, b in runs) == len(ref)
    assert all(all(c in ref for c in range(a, b)) for a, b in runs)


def test_a_range_ending_on_a_page_edge_stays_in_its_page():
    amap = AllocationMap(3 * PAGE)
    assert amap.set_range(PAGE - 16, PAGE) == 16
    assert amap.count_set(PAGE - 16, PAGE) == 16
    assert amap.count_set(PAGE, PAGE + 1) == 0
    assert amap.set_range(PAGE - 1, PAGE + 1) == 1      # one new, across the edge
    assert amap.count == 17
    assert list(amap.runs()) == [(PAGE - 16, PAGE + 1)]


def test_a_full_page_becomes_the_shared_page_and_stays_right():
    amap = AllocationMap(3 * PAGE)
    assert amap.set_range(0, PAGE - 1) == PAGE - 1
    assert amap.page_kind(0) == "dense"            # not full yet
    assert amap.set_range(5, PAGE) == 1            # the fill reaches the end
    assert amap.page_kind(0) == "full"
    assert amap.set_range(PAGE // 2, 2 * PAGE + 3) == PAGE + 3    # across pages
    assert amap.page_kind(1) == "full" and amap.page_kind(2) == "sparse"
    assert amap.set_range(7, 9) == 0 and amap.count == 2 * PAGE + 3
    assert amap.is_set(PAGE - 1) and amap.all_set(0, 2 * PAGE) and not amap.is_set(2 * PAGE + 3)
    assert list(amap.runs()) == [(0, 2 * PAGE + 3)]


@pytest.mark.parametrize("seed", range(4))
def test_sparse_pages_match_a_set_of_clusters(seed):
    # scattered single clusters and short fills (sparse pages), then more of
    # them than a sparse page holds, and long fills (byte pages)
    from blocksim.model.allocation import _SPARSE_MAX, _SPARSE_FILL
    rng = np.random.default_rng(seed)
    nclusters = 3 * PAGE + 77
    alloc, ref = AllocationMap(nclusters), set()
    sparse_seen = False
    for step in range(3 * _SPARSE_MAX):
        c0 = int(rng.integers(0, nclusters))
        n = int(rng.choice([1, 2, _SPARSE_FILL, _SPARSE_FILL + 1])) if step % 50 else 300
        c1 = min(c0 + n, nclusters)
        added = alloc.set_range(c0, c1)
        assert added == len(set(range(c0, c1)) - ref)
        ref |= set(range(c0, c1))
        if step % 97 == 0:
            for _ in range(20):
                a = int(rng.integers(0, nclusters))
                b = min(a + int(rng.integers(1, 3000)), nclusters)
                assert alloc.count_set(a, b) == sum(1 for c in range(a, b) if c in ref)
                assert alloc.is_set(a) == (a in ref)
                value, upto = alloc.run_at(a, b)
                e = a
                while e < b and (e in ref) == (a in ref):
                    e += 1
                assert (value, upto) == (a in ref, e)
        sparse_seen = sparse_seen or any(alloc.page_kind(p) == "sparse" for p in range(4))
    assert alloc.count == len(ref)
    runs = [c for a, b in alloc.runs() for c in range(a, b)]
    assert runs == sorted(ref)
    kinds = [alloc.page_kind(p) for p in range(4)]
    assert kinds.count("dense") == 3 and sparse_seen     # the whole pages grew past sparse


def test_scattered_clusters_cost_a_few_bytes_each():
    # a 64 TiB thin disk at 64 KiB clusters: 32768 pages, one write in each
    alloc = AllocationMap(1 << 30)
    for p in range(1 << 15):
        alloc.set_range((p << PAGE_BITS) + 7, (p << PAGE_BITS) + 8)
    assert alloc.count == 1 << 15
    assert {alloc.page_kind(p) for p in range(1 << 15)} == {"sparse"}
    # (a segment of four entries, two bytes each, a page)
    assert alloc.sparse_entries() == 4 << 15
    assert len(alloc._dense) == PAGE                # no byte page made


@pytest.mark.parametrize("seed", range(4))
def test_batches_match_a_set_of_clusters(seed):
    # set_each and set_ranges (the compiled copy loop's batches) against a
    # set, through sparse segments that grow, pages turning dense and full
    # (their slots reused) and pools that grow mid-batch
    rng = np.random.default_rng(seed)
    nclusters = 6 * PAGE + 5
    alloc, ref = AllocationMap(nclusters), set()
    for step in range(60):
        if step % 3:
            # scattered clusters, repeats and a crowded page among them
            cs = np.concatenate((rng.integers(0, nclusters, 400),
                                 rng.integers(0, 3000, 300) + (step % 6) * PAGE,
                                 rng.integers(0, nclusters, 10)))
            cs = np.concatenate((cs, cs[:50]))
            new = set(cs.tolist()) - ref
            assert alloc.set_each(cs) == len(new)
            ref |= new
        else:
            lo = rng.integers(0, nclusters, 40)
            hi = np.minimum(lo + rng.choice([1, 3, 64, 65, 2 * PAGE], 40), nclusters)
            new = set()
            for a, b in zip(lo.tolist(), hi.tolist()):
                new |= set(range(a, b))
            new -= ref
            assert alloc.set_ranges(np.stack((lo, hi), axis=1)) == len(new)
            ref |= new
        assert alloc.count == len(ref)
        for c in rng.integers(0, nclusters, 300).tolist():
            assert alloc.is_set(c) == (c in ref)
        a = int(rng.integers(0, nclusters))
        b = min(a + int(rng.integers(1, 3 * PAGE)), nclusters)
        assert alloc.count_set(a, b) == sum(1 for c in range(a, b) if c in ref)
        value, upto = alloc.run_at(a, b)
        e = a
        while e < b and (e in ref) == (a in ref):
            e += 1
        assert (value, upto) == (a in ref, e)
    assert [c for a, b in alloc.runs() for c in range(a, b)] == sorted(ref)


def test_a_full_page_gives_its_byte_slot_back():
    alloc = AllocationMap(4 * PAGE)
    assert alloc.set_range(0, 100) == 100                  # a byte page
    assert alloc.page_kind(0) == "dense"
    assert alloc.set_range(50, PAGE) == PAGE - 100         # full: its slot back
    assert alloc.page_kind(0) == "full"
    room = len(alloc._dense)                    # (a slot in use, a free one ready)
    alloc.set_range(PAGE + 1, PAGE + 200)                  # another byte page,
    assert alloc.page_kind(1) == "dense" and len(alloc._dense) == room     # in that slot
    assert alloc._state[1] == 1                 # (one slot ever handed out)
    assert alloc.count_set(PAGE, 2 * PAGE) == 199 and not alloc.is_set(PAGE + 200)
    assert alloc.set_each([PAGE, 0, 3 * PAGE]) == 2 and alloc.count == PAGE + 201
    assert alloc.run_at(PAGE - 5, 2 * PAGE) == (True, PAGE + 200)
    assert alloc.run_at(PAGE + 200, 3 * PAGE + 5) == (False, 3 * PAGE)
    assert list(alloc.runs()) == [(0, PAGE + 200), (3 * PAGE, 3 * PAGE + 1)]


@pytest.mark.parametrize("seed", range(4))
def test_set_each_is_set_range_per_cluster(seed):
    # a guest's writes handed in at once from the compiled copy loop: the
    # clusters in any order, repeats and ones already allocated among them,
    # in sparse pages, dense ones and full ones
    rng = np.random.default_rng(seed)
    nclusters = 4 * PAGE + 77
    amap, ref = AllocationMap(nclusters), set()
    amap.set_range(PAGE, 2 * PAGE)                  # a full page
    amap.set_range(2 * PAGE, 2 * PAGE + 3000)       # a dense one
    ref |= set(range(PAGE, 2 * PAGE + 3000))
    for _ in range(60):
        clusters = rng.integers(0, nclusters, int(rng.integers(1, 200))).tolist()
        clusters += clusters[:5] + sorted(ref)[:3]
        new = set(clusters) - ref
        assert amap.set_each(clusters) == len(new)
        ref |= new
        assert amap.count == len(ref)
    assert list(amap.runs()) == _runs(ref) and all(amap.is_set(c) for c in ref)


def _runs(clusters: set) -> list:
    out = []
    for c in sorted(clusters):
        if out and out[-1][1] == c:
            out[-1] = (out[-1][0], c + 1)
        else:
            out.append((c, c + 1))
    return out


def test_segments_outgrown_are_taken_again():
    # 200 pages fill up a cluster at a time, in turn: each outgrows segments
    # of 4, 8, ... 64 entries, which the next page to grow takes again
    alloc = AllocationMap(200 * PAGE)
    rng = np.random.default_rng(3)
    for step in range(100):
        alloc.set_each([(p << PAGE_BITS) + int(c) for p, c in
                        enumerate(rng.integers(0, PAGE, 200))])
    assert alloc.count == len({c for a, b in alloc.runs() for c in range(a, b)})
    live = 200 * 128                        # (about 100 clusters each: 128 entries)
    # (in step: what they outgrew, 4 + 8 + ... + 64 entries each, no other
    # page takes again; the pool's segments in use moved together instead)
    assert alloc.sparse_entries() < live + 200 * 64


def test_a_segment_outgrown_is_the_next_page_s():
    alloc = AllocationMap(4 * PAGE)
    for c in (10, 20, 30, 40, 50):          # four entries, then eight
        alloc.set_each([c])
    assert alloc.sparse_entries() == 4 + 8
    alloc.set_each([PAGE + 5])              # the four given back
    assert alloc.sparse_entries() == 4 + 8
    assert [c for a, b in alloc.runs() for c in range(a, b)] == [10, 20, 30, 40, 50, PAGE + 5]
