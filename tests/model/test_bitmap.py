"""The dirty bitmap against a naive model (a Python set of dirty granules)."""

import random

import numpy as np
import pytest

from blocksim.model.bitmap import BLOCK, BLOCK_SHIFT, COUNT_BITS, COUNT_MASK, DirtyBitmap


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
    """The counts, flags and every granule's answer; the state rule: a
    block has bytes (a slot of the pool, its own) exactly when it is mixed,
    and they are its granules'."""
    assert bm.count == len(dirty)
    assert {b for b in range(bm.nbits) if bm.is_dirty(b)} == dirty
    assert len(bm.summary) == len(bm.blocks) == (bm.nbits >> BLOCK_SHIFT) + 1
    slots = []
    for blk, v in enumerate(bm.summary):
        n, slot = v & COUNT_MASK, v >> COUNT_BITS
        inside = {b for b in dirty if b // BLOCK == blk}
        assert n == len(inside)
        assert bm.blocks[blk] == (1 if n else 0)
        assert (slot != 0) == (0 < n < BLOCK)
        if slot:
            slots.append(slot)
            a = slot * BLOCK
            assert {blk * BLOCK + i for i, v in enumerate(bm.granules[a:a + BLOCK]) if v} == inside
    assert len(set(slots)) == len(slots) == bm.slots_in_use()
    assert list(bm.runs()) == naive_runs(dirty)


def naive_runs(dirty: set[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for b in sorted(dirty):
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    return [tuple(r) for r in runs]


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
    check_consistent(bm, set())


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


# -- the block states (all clean, all dirty without bytes, mixed) -------------------------
def test_a_whole_disk_mark_touches_no_granule_byte():
    # a full mirror's first mark (mirror_dirty_init without discard=unmap):
    # counts only; no block takes a slot until it turns mixed
    nbits = 40 * BLOCK + 17
    bm = DirtyBitmap(nbits * 512, 512)
    bm.mark(0, nbits * 512)
    assert bm.count == nbits and bm.slots_in_use() == 1    # the tail block: mixed
    check_consistent(bm, set(range(nbits)))
    bm.clear_bits(3 * BLOCK + 5, 3 * BLOCK + 6)        # block 3 materialised
    assert bm.slots_in_use() == 2 and bm.byte_at(3 * BLOCK + 5) == 0
    assert bm.byte_at(3 * BLOCK + 6) == 1
    check_consistent(bm, set(range(nbits)) - {3 * BLOCK + 5})


def test_a_block_gives_its_slot_back_when_it_is_no_longer_mixed():
    # a mixed block marked whole is all dirty, cleared whole all clean: its
    # slot goes back to the pool, and the next block to turn mixed takes it
    # (filled with its own uniform value, not the bytes left there)
    bm = DirtyBitmap(4 * BLOCK * 512, 512)
    bm.mark(BLOCK * 512 + 512 * 9, BLOCK * 512 + 512 * 10)
    slot = bm.summary[1] >> COUNT_BITS
    assert slot and bm.slots_in_use() == 1
    bm.mark(BLOCK * 512, 2 * BLOCK * 512)
    assert bm.summary[1] == BLOCK and bm.slots_in_use() == 0
    check_consistent(bm, set(range(BLOCK, 2 * BLOCK)))
    assert bm.dirty_run(BLOCK, 5000) == BLOCK and bm.find(BLOCK + 1, 4 * BLOCK) == BLOCK + 1
    bm.clear_bits(BLOCK + 3, BLOCK + 4)             # mixed again: all but one dirty
    assert bm.summary[1] >> COUNT_BITS == slot
    check_consistent(bm, set(range(BLOCK, 2 * BLOCK)) - {BLOCK + 3})
    bm.clear_bits(BLOCK, 2 * BLOCK)
    check_consistent(bm, set())
    bm.mark(3 * BLOCK * 512 + 512 * 3, 3 * BLOCK * 512 + 512 * 4)
    assert bm.summary[3] >> COUNT_BITS == slot      # the same slot, refilled
    check_consistent(bm, {3 * BLOCK + 3})           # materialised from clean


def test_scattered_marks_copied_at_once_hold_one_slot():
    # a ready mirror under a guest writing all over a 64 TiB disk: each
    # write's granule is copied before the next write; the pool stays at
    # one slot (bytes at each block's own place made each write a new page)
    import resource
    bm = DirtyBitmap(64 << 40, 65536)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(1)
    for _ in range(20000):
        b = rng.randrange(bm.nbits)
        bm.mark(b * 65536, b * 65536 + 4096)
        assert bm.next_dirty(rng.randrange(bm.nbits)) == b
        bm.clear_bits(b, b + 1)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 8 * 1024, f"{grown} KiB"         # not 80 MiB
    assert bm.slots_in_use() == 0
    # (a quiet stretch's marks, compiled: a slot for each block they make mixed)
    bm.mark_writes(np.array([b * 65536 for b in range(0, bm.nbits, 1 << 20)]), 4096)
    assert bm.slots_in_use() == bm.count == bm.nbits >> 20


def test_partial_marks_and_clears_of_whole_blocks():
    bm = DirtyBitmap(3 * BLOCK * 512, 512)
    bm.mark(0, 3 * BLOCK * 512)
    bm.clear_bits(BLOCK - 2, BLOCK + 3)             # two blocks cut into
    dirty = set(range(3 * BLOCK)) - set(range(BLOCK - 2, BLOCK + 3))
    check_consistent(bm, dirty)
    bm.clear_bits(0, 3 * BLOCK)
    check_consistent(bm, set())
    bm.mark(5 * 512, (BLOCK + 7) * 512)
    check_consistent(bm, set(range(5, BLOCK + 7)))


def test_a_64_tib_bitmap_costs_what_it_touches():
    # 2**30 granules of 64 KiB: the bytes are address space, not memory
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bm = DirtyBitmap(64 << 40, 65536)
    bm.mark(0, 64 << 40)
    for b in range(0, bm.nbits, 1 << 20):          # 1024 granules cleared
        bm.clear_bits(b, b + 1)
    assert bm.count == bm.nbits - 1024
    assert bm.next_dirty(0) == 1 and bm.dirty_run(1, 1 << 21) == (1 << 20) - 1
    runs = list(bm.runs())
    assert len(runs) == 1024 and runs[-1] == ((1023 << 20) + 1, bm.nbits)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 64 * 1024, f"{grown} KiB"        # not 1 GiB


try:
    from hypothesis import given, settings, strategies as st
except ImportError:                                 # pragma: no cover
    given = None

if given is not None:
    _NBITS = 3 * BLOCK + 11
    _op = st.one_of(
        st.tuples(st.just("mark"), st.integers(0, _NBITS - 1), st.integers(1, 2 * BLOCK + 3)),
        st.tuples(st.just("clear"), st.integers(0, _NBITS - 1), st.integers(1, 2 * BLOCK + 3)),
        st.tuples(st.just("whole"), st.sampled_from([True, False]), st.integers(0, 3)),
        st.tuples(st.just("writes"), st.lists(st.integers(0, _NBITS - 1), max_size=8),
                  st.integers(1, 3)))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(_op, max_size=25))
    def test_any_operations_match_a_plain_bitmap(ops):
        g = 512
        bm = DirtyBitmap(_NBITS * g, g)
        ref = bytearray(_NBITS)                     # the plain bitmap
        for op in ops:
            if op[0] == "mark":
                b0, b1 = op[1], min(_NBITS, op[1] + op[2])
                bm.mark(b0 * g, b1 * g)
                ref[b0:b1] = b"\x01" * (b1 - b0)
            elif op[0] == "clear":
                b0, b1 = op[1], min(_NBITS, op[1] + op[2])
                bm.clear_bits(b0, b1)
                ref[b0:b1] = bytes(b1 - b0)
            elif op[0] == "whole":                  # blocks 0..3 (3: the tail)
                b0, b1 = op[2] * BLOCK, min(_NBITS, (op[2] + 1) * BLOCK)
                (bm.mark(b0 * g, b1 * g) if op[1] else bm.clear_bits(b0, b1))
                ref[b0:b1] = (b"\x01" if op[1] else b"\x00") * (b1 - b0)
            else:
                starts = [min(b, _NBITS - op[2]) for b in op[1]]     # inside the disk
                bm.mark_writes(np.array([b * g for b in starts], dtype=np.int64), op[2] * g)
                for b in starts:
                    ref[b:b + op[2]] = b"\x01" * op[2]
            dirty = {i for i, v in enumerate(ref) if v}
            check_consistent(bm, dirty)
            for cursor in (0, BLOCK - 1, BLOCK, _NBITS - 1):
                assert bm.next_dirty(cursor) == naive_next(dirty, _NBITS, cursor)
                found = bm.find(cursor, _NBITS)
                assert found == min((b for b in dirty if b >= cursor), default=-1)
                if found >= 0:
                    assert bm.dirty_run(found, 700) == naive_run(dirty, _NBITS, found, 700)


@pytest.mark.parametrize("seed", range(4))
def test_a_clear_of_a_few_blocks_compiled_is_the_blocks_one_by_one(seed):
    """``clear_bits`` over a few blocks (a backup's tasks cleared in a run:
    compiled, ``_clear_blocks``) leaves the very bitmap a clear of each block
    in Python leaves (``_assign_block``): counts, flags, group bytes, every
    slot of the pool and its free list, byte for byte."""
    rng = random.Random(seed)
    g = 65536
    fast, slow = DirtyBitmap(5 << 30, g), DirtyBitmap(5 << 30, g)
    nb = fast.nbits
    dirty = set()
    for _ in range(300):
        b0 = rng.randrange(nb)
        b1 = min(nb, b0 + rng.choice([1, 2, 16, 300, BLOCK, 700, 2 * BLOCK, 1500, 3000]))
        if rng.random() < 0.5:
            for bm in (fast, slow):
                bm.mark(b0 * g, b1 * g)
            dirty |= set(range(b0, b1))
        else:
            fast.clear_bits(b0, b1)
            dirty -= set(range(b0, b1))
            while b0 < b1:                  # (the rule: block by block)
                edge = min(b1, ((b0 >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT)
                slow._assign_block(b0 >> BLOCK_SHIFT, b0, edge, False)
                b0 = edge
        assert fast.count == slow.count
        assert bytes(fast.summary) == bytes(slow.summary) and fast.blocks == slow.blocks
        assert fast.granules[:] == slow.granules[:]
    assert 0 < fast.count < nb
    check_consistent(fast, dirty)
