"""The dirty bitmap against a naive model (a Python set of dirty granules)."""

import random

import numpy as np
import pytest

from blocksim.model.bitmap import BLOCK, DirtyBitmap


def naive_next(dirty: set[int], nbits: int, cursor: int) -> int:
    after = [b for b in dirty if b >= cursor]
    if after:
        return min(after)
    return min(dirty) if dirty else -1


def naive_run(dirty: set[int], nbits: int, b0: int, cap: int) -> int:
    n = 0
    while n < cap and b0 + n < nbits and b0 + n in dirty:
        n += 1
    return n


def check_consistent(bm: DirtyBitmap, dirty: set[int]) -> None:
    assert bm.count == len(dirty)
    assert {i for i, v in enumerate(bm.bits) if v} == dirty
    for blk, n in enumerate(bm.summary):
        assert n == sum(1 for b in dirty if b // BLOCK == blk)
        assert bm.blocks[blk] == (1 if n else 0)


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_naive_set(seed):
    rng = random.Random(seed)
    g = 512
    nbits = rng.choice([1, 7, BLOCK - 1, BLOCK, 3 * BLOCK + 5])
    size = nbits * g - rng.randrange(g)      # the last granule may be partial
    bm = DirtyBitmap(size, g)
    assert bm.nbits == nbits
    dirty: set[int] = set()
    for _ in range(300):
        op = rng.random()
        if op < 0.1:                        # a quiet stretch's writes, at once
            length = min(size, rng.choice([1, 100, g, 3 * g]))
            offsets = [rng.randrange(size - length + 1) for _ in range(rng.choice([3, 40]))]
            offsets += offsets[:3]          # some granules twice
            bm.mark_writes(np.array(offsets, dtype=np.int64), length)
            for a in offsets:
                dirty |= set(range(a // g, -(-(a + length) // g)))
            check_consistent(bm, dirty)
        elif op < 0.45:
            a = rng.randrange(size)
            b = min(size, a + rng.choice([1, g, 3 * g + 7, BLOCK * g // 3, 2 * BLOCK * g]))
            bm.mark(a, b)
            dirty |= set(range(a // g, -(-b // g)))
        elif op < 0.75:
            b0 = rng.randrange(nbits)
            b1 = min(nbits, b0 + rng.choice([1, 2, 17, BLOCK, 2 * BLOCK + 3]))
            bm.clear_bits(b0, b1)
            dirty -= set(range(b0, b1))
            check_consistent(bm, dirty)     # counts and block flags at once
        else:
            cursor = rng.randrange(nbits)
            found = bm.next_dirty(cursor)
            assert found == naive_next(dirty, nbits, cursor)
            if found >= 0:
                cap = rng.choice([1, 16, 5000])
                assert bm.dirty_run(found, cap) == naive_run(dirty, nbits, found, cap)
    check_consistent(bm, dirty)
    assert bm.dirty_bytes == min(len(dirty) * g, size)


def test_search_skips_clean_blocks_and_wraps():
    bm = DirtyBitmap(10 * BLOCK * 512, 512)
    bm.mark(7 * BLOCK * 512 + 3 * 512, 7 * BLOCK * 512 + 4 * 512)
    assert bm.next_dirty(0) == 7 * BLOCK + 3
    assert bm.next_dirty(7 * BLOCK + 4) == 7 * BLOCK + 3        # wrapped
    assert bm.dirty_run(7 * BLOCK + 3, 16) == 1
    bm.clear_bits(7 * BLOCK + 3, 7 * BLOCK + 4)
    assert bm.next_dirty(5) == -1
    assert bm.count == 0 and not any(bm.blocks)


def test_a_run_stops_at_the_end_of_the_disk():
    bm = DirtyBitmap(5 * 512, 512)
    bm.mark(0, 5 * 512)
    assert bm.dirty_run(3, 16) == 2
    assert bm.dirty_bytes == 5 * 512


@pytest.mark.parametrize("seed", range(4))
def test_ranges_of_many_blocks_match_a_naive_set(seed):
    # marks and clears spanning 8 blocks and more take the whole-block path
    # (a full mirror's first mark), with partial blocks either side
    rng = random.Random(seed)
    g = 512
    nbits = 20 * BLOCK + 5
    size = nbits * g
    bm = DirtyBitmap(size, g)
    dirty: set[int] = set()
    for _ in range(40):
        b0 = rng.randrange(nbits)
        b1 = min(nbits, b0 + rng.choice([1, 3 * BLOCK, 9 * BLOCK + 7, 20 * BLOCK]))
        if rng.random() < 0.6:
            bm.mark(b0 * g, b1 * g)
            dirty |= set(range(b0, b1))
        else:
            bm.clear_bits(b0, b1)
            dirty -= set(range(b0, b1))
        check_consistent(bm, dirty)
    bm.mark(0, size)
    check_consistent(bm, set(range(nbits)))
