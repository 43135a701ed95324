"""A drive's view of the guest's ledger: what it believes it wrote, read back a page at a time
or as arrays of blocks (the ledger itself: tests/model/test_ledger.py)."""

import random
from types import SimpleNamespace

import numpy as np
import pytest

import blocksim
from blocksim.model.extents import ExtentMap, from_sorted_runs
from blocksim.model.ledger import Ledger


def drive_after(workload: dict, size: str = "4MiB"):
    sim = blocksim.Simulation(blocksim.load_scenario({
        "duration": "10s",
        "images": {"disk": {"size": size}},
        "drives": {"vda": {"image": "disk"}},
        "workloads": {"w": {"drive": "vda", **workload}},
    }))
    sim.run()
    return sim.drives["vda"]


def joined(parts, size) -> list:
    m = ExtentMap(size)
    for part, start, end in parts:
        m.set_runs([r for r in part.runs(start, end) if r[2]])
    return m.runs()


def test_pages_of_the_ledger_add_up_to_the_whole_and_match_the_disk():
    # 24 KiB blocks straddle the 64 KiB-aligned pages used below
    drive = drive_after({"rw": "randwrite", "bs": "24KiB", "number-ios": 400})
    size = drive.node.size
    parts = list(drive.expected_parts(step=64 * 1024))
    assert len(parts) > 10
    assert all(start % (64 * 1024) == 0 for _part, start, _end in parts)
    whole = drive.expected_content()
    assert joined(parts, size) == whole.runs()
    # every write landed: the disk reads what the guest believes
    assert [r for r in drive.node.read_content(0, size) if r[2]] == \
        [r for r in whole.runs() if r[2]]


def test_mixed_sizes_fall_back_to_one_map():
    drive = drive_after({"rw": "write", "bs": "4KiB", "number-ios": 10})
    drive._ledger.append(100 * 512, 512, 10**6)       # one odd-sized write
    parts = list(drive.expected_parts())
    assert len(parts) == 1 and parts[0][1:] == (0, drive.node.size)
    assert parts[0][0].value_at(100 * 512) == 10**6


# -- the ledger against a naive replay ----------------------------------------------

def replay(writes, size) -> ExtentMap:
    """The obvious meaning of a ledger: every write applied in acknowledgement order."""
    m = ExtentMap(size)
    for a, b, g in writes:
        m.set(a, b, g)
    return m


def pages_before_the_compact_ledger(writes, size, step):
    """expected_parts() as it was with an (n, 3) int64 table, kept as the reference
    the page-by-page output must still match exactly."""
    acked = np.array(writes, dtype=np.int64).reshape(-1, 3)
    lengths = acked[:, 1] - acked[:, 0]
    bs = int(lengths[0])
    if not ((lengths == bs).all() and not (acked[:, 0] % bs).any()):
        yield replay(writes, size), 0, size
        return
    latest = acked[::-1]
    _, first = np.unique(latest[:, 0], return_index=True)
    table = latest[first]
    starts, ends = table[:, 0], table[:, 1]
    for ps in range(int(starts[0]) // step * step, int(ends[-1]), step):
        pe = min(ps + step, size)
        i0 = int(np.searchsorted(ends, ps, side="right"))
        i1 = int(np.searchsorted(starts, pe, side="left"))
        if i0 < i1:
            yield from_sorted_runs(size, map(tuple, table[i0:i1].tolist())), ps, pe


def drive_with(writes, size):
    """A Drive whose ledger holds exactly ``writes`` (nothing else of it is used)."""
    drive = drive_after({"rw": "write", "bs": "4KiB", "number-ios": 1})
    drive.node = SimpleNamespace(size=size)
    drive._ledger = Ledger()
    for a, b, g in writes:
        drive._ledger.append(a, b - a, g)
    return drive


def check_against_references(writes, size, step, window=None):
    lo, hi = window or (0, size)
    drive = drive_with(writes, size)
    got = [(part.runs(lo, hi), s, e) for part, s, e in drive.expected_parts(step)]
    want = [(part.runs(lo, hi), s, e)
            for part, s, e in pages_before_the_compact_ledger(writes, size, step)]
    assert got == want
    naive = replay(writes, size)
    assert joined_in(drive.expected_parts(step), size, lo, hi) == naive.runs(lo, hi)
    for part, s, e in drive.expected_parts(step):
        assert part.runs(s, e) == naive.runs(s, e)
    return got


def joined_in(parts, size, lo, hi) -> list:
    m = ExtentMap(size)
    for part, start, end in parts:
        m.set_runs([r for r in part.runs(max(start, lo), min(end, hi)) if r[2]])
    return m.runs(lo, hi)


def random_writes(rng, n, size, sizes, align):
    gens = rng.sample(range(1, 10 * n), n)          # acknowledgement order != generation order
    out = []
    for g in gens:
        length = rng.choice(sizes)
        a = rng.randrange(0, (size - length) // align + 1) * align
        out.append((a, a + length, g))
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bs,step", [(4096, 64 * 1024), (24 * 1024, 64 * 1024),
                                     (4096, 4096), (512, 1000)])
def test_same_size_aligned_ledger_matches_replay_and_previous_pages(seed, bs, step):
    rng = random.Random(seed)
    size = 2 << 20
    # few blocks, many writes: most blocks are acknowledged several times
    writes = random_writes(rng, rng.randrange(1, 3000), size - size % bs, [bs], bs)
    assert drive_with(writes, size)._ledger.by_block()._index is None     # packed keys
    parts = check_against_references(writes, size, step)
    assert len(parts) > 1 or len(writes) < 5


@pytest.mark.parametrize("seed", range(8))
def test_mixed_sizes_and_unaligned_ledgers_match_replay(seed):
    rng = random.Random(seed)
    size = 1 << 20
    mixed = random_writes(rng, 500, size, [4096, 512, 65536, 4096], 512)
    check_against_references(mixed, size, 64 * 1024)
    unaligned = random_writes(rng, 500, size, [4096], 512)
    if all(a % 4096 == 0 for a, _b, _g in unaligned):
        unaligned.append((512, 4608, 7))
    check_against_references(unaligned, size, 64 * 1024)


def test_an_odd_length_last_or_repeated_still_counts():
    size = 1 << 20
    writes = [(0, 4096, 1), (4096, 8192, 2), (0, 4096, 3), (2048, 10240, 4)]
    check_against_references(writes, size, 64 * 1024)
    writes = [(0, 8192, 1), (0, 4096, 2), (8192, 12288, 3), (4096, 16384, 4), (0, 8192, 5)]
    check_against_references(writes, size, 64 * 1024)


def test_blocks_too_far_out_to_pack_with_their_index_sort_the_other_way():
    # block numbers near 2**53 plus 12 bits of index do not fit in an int64 key
    rng = random.Random(5)
    base = 1 << 62
    size = base + (1 << 21)
    writes = [(base + a, base + b, g)
              for a, b, g in random_writes(rng, 4096, 1 << 21, [512], 512)]
    assert drive_with(writes, size)._ledger.by_block()._index is not None
    check_against_references(writes, size, 1 << 20, window=(base - (1 << 20), size))


def test_two_block_sizes_on_one_drive_read_back():
    sim = blocksim.Simulation(blocksim.load_scenario({
        "duration": "10s",
        "images": {"disk": {"size": "4MiB"}},
        "drives": {"vda": {"image": "disk"}},
        "workloads": {"a": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "number-ios": 300},
                      "b": {"drive": "vda", "rw": "randwrite", "bs": "64KiB", "number-ios": 50,
                            "fsync": 3}},
    }))
    sim.run()
    drive = sim.drives["vda"]
    size = drive.node.size
    assert drive._ledger._odd_at                      # the general path was taken
    assert len(drive._ledger) == 350                  # flushes are not writes
    assert [r for r in drive.node.read_content(0, size) if r[2]] == \
        [r for r in drive.expected_content().runs() if r[2]]


# -- the ledger as arrays of blocks (what the audit's fast path reads) ---------------

@pytest.mark.parametrize("far", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_block_order_navigation_matches_the_ledger(seed, far):
    rng = random.Random(seed)
    # far: blocks so far out that block and index do not fit in one key
    base = (1 << 62) if far else 0
    bs = 8 if far else rng.choice([512, 4096])
    n = rng.choice([30, 500] if far else [1, 30, 500])
    writes = [(base + a, base + b, g) for a, b, g in random_writes(rng, n, 1 << 20, [bs], bs)]
    drive = drive_with(writes, base + (1 << 20))
    order = drive.expected_blocks()
    assert (order._index is not None) == far
    assert order.block_size == bs
    latest = {}
    for a, _b, g in writes:
        latest[a // bs] = g
    blocks = sorted(latest)
    first, last = order.block_range()
    assert (first, last) == (blocks[0], blocks[-1])
    for _ in range(50):
        b0 = rng.randrange(first - 3, last + 4)
        b1 = rng.randrange(b0, last + 5)
        found = order.blocks(b0, b1)
        inside = [b for b in blocks if b0 <= b < b1]
        if not inside:
            assert found is None and order.winners(b0, b1) is None
        else:
            starts, gens = found
            assert starts.dtype == np.int64
            assert starts.tolist() == [b * bs for b in inside]
            assert gens.tolist() == [latest[b] for b in inside]
            assert list(order.winners(b0, b1)) == \
                [(b * bs, b * bs + bs, latest[b]) for b in inside]
        after = [b for b in blocks if b >= b0]
        assert order.next_block(b0) == (after[0] if after else None)
        budget = rng.choice([1, 2, 5, 50])
        stop = order.block_after(b0, budget)
        assert stop > b0
        if stop <= last:
            held = sum(1 for a, _b, _g in writes if b0 <= a // bs < stop)
            assert held <= budget or stop == b0 + 1


def test_expected_blocks_only_for_same_size_aligned_ledgers():
    assert drive_with([], 1 << 20).expected_blocks() is None
    assert drive_with([(0, 4096, 1), (4096, 8192, 2)], 1 << 20).expected_blocks() is not None
    assert drive_with([(0, 4096, 1), (512, 4608, 2)], 1 << 20).expected_blocks() is None
    assert drive_with([(0, 4096, 1), (4096, 4608, 2)], 1 << 20).expected_blocks() is None


def test_the_request_count_asks_its_check_every_nth_request_of_every_drive_sharing_it():
    # blocksim.simulation's bound where time stands still: one count shared
    # by the run's drives, asked every 4096th request issued one by one
    from blocksim.model.drive import RequestCount
    sim = blocksim.Simulation(blocksim.load_scenario({
        "duration": "10s", "images": {"a": {"size": "4MiB"}, "b": {"size": "4MiB"}},
        "drives": {"vda": {"image": "a"}, "vdb": {"image": "b"}},
        "workloads": {"wa": {"drive": "vda", "rw": "randwrite", "number-ios": 10},
                      "wb": {"drive": "vdb", "rw": "randread", "number-ios": 7}}}),
        shortcuts=False)
    asked = []
    count = RequestCount(asked.append, every=4)
    for drive in sim.drives.values():
        assert drive.request_count is not None     # the run's own count
        drive.request_count = count
    sim.run()
    assert count.calls == 17 and asked == [4, 8, 12, 16]
