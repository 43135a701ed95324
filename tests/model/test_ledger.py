"""The guest's ledger: compact, ordered, exact."""

import numpy as np
import pytest

from blocksim.model.ledger import Ledger


def test_ledger_rows_keep_every_write_in_order():
    ledger = Ledger()
    writes = [(0, 4096, 1), (8192, 12288, 5), (100, 612, 3), (4096, 8192, 2**40),
              (0, 4096, 9), (1 << 40, (1 << 40) + 65536, 4)]
    for a, b, g in writes:
        ledger.append(a, b - a, g)
    assert list(ledger.rows()) == writes
    assert len(ledger) == len(writes)
    assert ledger.block_size == 4096


def test_ledger_costs_eight_bytes_per_same_size_write():
    ledger = Ledger()
    for i in range(1000):
        ledger.append(i * 4096, 4096, i + 1)
    assert ledger.nbytes == 8 * 1000
    ledger.append(8192, 512, 1001)                      # an exception: index and length
    assert ledger.nbytes == 8 * 1001 + 16


@pytest.mark.parametrize("how", ["append", "extend", "extend_with"])
@pytest.mark.parametrize("odd", [4096 * 3 + 512, 4096 * 2**32, -4096])
def test_an_offset_off_the_blocks_widens_the_offsets(odd, how):
    """Offsets are kept as block numbers of the first write's length, 4
    bytes each, until one is not a multiple of it (a write of another size)
    or its block number does not fit in 32 bits (a disk of more than 16 TiB
    of 4 KiB blocks), or is negative: then as byte offsets, 8 bytes each,
    the earlier ones kept."""
    ledger = Ledger()
    writes = [(0, 4096, 1), (4096 * (2**32 - 1), 4096, 2), (odd, 512, 3), (8192, 4096, 4)]
    ledger.append(*writes[0])
    ledger.append(*writes[1])
    assert ledger.nbytes == 8 * 2
    a, length, g = writes[2]
    if how == "append":
        ledger.append(a, length, g)
    elif how == "extend":
        ledger.extend([a], length, g)
    else:
        ledger.extend_with(np.array([a], dtype=np.int64), length, np.array([g], dtype=np.int64))
    ledger.append(*writes[3])
    assert list(ledger.rows()) == [(a, a + n, g) for a, n, g in writes]
    assert ledger.nbytes == 12 * 4 + 16
    if odd % 512 == 0 and odd > 0:
        assert ledger.by_block() is None                # (mixed sizes)


def test_block_numbers_in_units_of_a_smaller_first_write():
    ledger = Ledger()
    ledger.append(512, 512, 1)                          # the unit: 512 bytes
    for i in range(3):
        ledger.append(8192 * i, 4096, 2 + i)
    assert ledger.nbytes == 8 * 4 + 3 * 16
    assert list(ledger.rows()) == [(512, 1024, 1), (0, 4096, 2), (8192, 12288, 3),
                                   (16384, 20480, 4)]


@pytest.mark.parametrize("big", [2**32, 2**32 + 7, 2**62, -3])
def test_generations_beyond_32_bits_widen_the_ledger(big):
    ledger = Ledger()
    ledger.append(0, 4096, 1)
    ledger.append(4096, 4096, big)
    ledger.append(8192, 4096, 2)
    assert list(ledger.rows()) == [(0, 4096, 1), (4096, 8192, big), (8192, 12288, 2)]
    order = ledger.by_block()
    assert list(order.winners(0, 3)) == [(0, 4096, 1), (4096, 8192, big), (8192, 12288, 2)]


@pytest.mark.parametrize("as_array", [False, True])
@pytest.mark.parametrize("first_gen", [1, 2**32 - 2, 2**40])
def test_extend_records_what_appends_would(first_gen, as_array):
    # a quiet stretch's writes in bulk, between single appends, with a
    # length that is not the ledger's block size and generations that may
    # cross 32 bits half way
    bulk, single = Ledger(), Ledger()
    for ledger in (bulk, single):
        ledger.append(0, 4096, 7)
    batches = [([4096, 0, 12288], 4096), ([512, 1024], 512), ([8192], 4096)]
    gen = first_gen
    for offsets, length in batches:
        bulk.extend(np.array(offsets, dtype=np.int64) if as_array else offsets, length, gen)
        for i, off in enumerate(offsets):
            single.append(off, length, gen + i)
        gen += len(offsets)
    assert list(bulk.rows()) == list(single.rows())
    assert bulk.nbytes == single.nbytes
    assert len(bulk) == 7


def test_extend_sets_the_block_size_of_an_empty_ledger():
    ledger = Ledger()
    ledger.extend([0, 4096], 4096, 1)
    assert ledger.block_size == 4096 and ledger.nbytes == 16


def test_extend_with_takes_each_writes_generation():
    """Writes a compiled loop ran need not have consecutive generations (a
    request taken over in flight drew its own before another guest drew
    the next): each keeps its own, as appends would record them."""
    bulk, single = Ledger(), Ledger()
    offsets, gens = [0, 4096, 8192], [481, 483, 2**33]
    bulk.extend_with(np.array(offsets, dtype=np.int64), 4096, np.array(gens, dtype=np.int64))
    for off, gen in zip(offsets, gens):
        single.append(off, 4096, gen)
    assert list(bulk.rows()) == list(single.rows()) == [
        (0, 4096, 481), (4096, 8192, 483), (8192, 12288, 2**33)]


@pytest.mark.parametrize("use", ["append", "extend", "len", "rows", "by_block", "nbytes"])
def test_rows_held_elsewhere_come_in_before_any_other_use(use):
    """A compiled loop keeps its guest's ledger rows in its own buffer
    (Ledger.hold): whatever uses the ledger next sees them first, in
    order, and a second holder's rows come after the first's."""
    ledger = Ledger()
    ledger.append(0, 4096, 1)
    buffers = {"a": [(4096, 2), (8192, 3)], "b": [(12288, 4)]}

    def hand_in(name):
        rows, buffers[name] = buffers[name], []
        if rows:
            ledger.extend_with(np.array([r[0] for r in rows], dtype=np.int64), 4096,
                               np.array([r[1] for r in rows], dtype=np.int64))
    ledger.hold(lambda: hand_in("a"))
    ledger.hold(lambda: hand_in("b"))               # another holder: a's rows first
    assert buffers["a"] == [] and buffers["b"] == [(12288, 4)]
    if use == "append":
        ledger.append(16384, 4096, 5)
    elif use == "extend":
        ledger.extend(np.array([16384], dtype=np.int64), 4096, 5)
    elif use == "len":
        assert len(ledger) == 4
    elif use == "by_block":
        assert ledger.by_block().blocks(0, 4)[1].tolist() == [1, 2, 3, 4]
    elif use == "nbytes":
        assert ledger.nbytes == 8 * 4
    rows = list(ledger.rows())
    assert [g for _a, _b, g in rows][:4] == [1, 2, 3, 4] and buffers["b"] == []


@pytest.mark.parametrize("odd", [None, 4096 * 5 + 512, -4096, 4096 * 2**32, 4096 * (2**32 - 1)])
@pytest.mark.parametrize("first_gen", [1, 2**32 - 2])
def test_a_short_extend_converts_its_blocks_or_leaves_them_to_the_general_path(odd, first_gen):
    """extend's short runs (a backup's quiet stretch: a hundred writes) are
    converted in one compiled pass; one offset off the blocks, negative or
    past a compact column's block numbers, or generations past 32 bits,
    and the run takes the general path, widening as appends would."""
    rng = np.random.default_rng(5)
    offsets = (rng.integers(0, 1 << 28, 100) * 4096).tolist()
    if odd is not None:
        offsets[57] = odd
    bulk, single = Ledger(), Ledger()
    for ledger in (bulk, single):
        ledger.append(0, 4096, 7)
    bulk.extend(np.array(offsets, dtype=np.int64), 4096, first_gen)
    bulk.extend(offsets[:3], 4096, first_gen + 100)
    for i, off in enumerate(offsets + offsets[:3]):
        single.append(off, 4096, first_gen + i)
    assert list(bulk.rows()) == list(single.rows())
    assert bulk.nbytes == single.nbytes
    wide = odd not in (None, 4096 * (2**32 - 1))
    assert bulk.nbytes == 8 * 104 + (4 * 104 if wide else 0) + (
        4 * 104 if first_gen > 2**31 else 0)


def test_a_short_extend_of_blocks_takes_no_numpy_path(monkeypatch):
    ledger = Ledger()
    ledger.append(0, 4096, 1)
    monkeypatch.setattr(Ledger, "extend_with", lambda *a: pytest.fail("general path"))
    ledger.extend(np.array([8192, 4096, 0], dtype=np.int64), 4096, 2)
    ledger.extend([12288], 4096, 5)
    assert list(ledger.rows()) == [(0, 4096, 1), (8192, 12288, 2), (4096, 8192, 3),
                                   (0, 4096, 4), (12288, 16384, 5)]


def _radix_sorted(keys):
    from blocksim.model import ledger as L
    x = np.array(keys, dtype=np.int64)
    L._sort_keys(x, np.empty((L._RADIX_LEVELS * L._RADIX + 1, 3), dtype=np.int64),
                 np.empty(L._RADIX + 1, dtype=np.int64), np.empty(L._RADIX, dtype=np.int64))
    return x


@pytest.mark.parametrize("n", [0, 1, 2, 24, 25, 1000, 70_000])
@pytest.mark.parametrize("top", [1, 2, 25, 1 << 20, 1 << 40, (1 << 63) - 1])
def test_the_ledgers_radix_sort_sorts_as_numpy(n, top):
    """The ledger's keys sorted by their digits (Ledger._sorted from
    _RADIX_FROM keys): numpy's order, for keys of every width, a few or
    many, equal ones too (the ledger's are distinct: any sort gives the
    same order)."""
    keys = np.random.default_rng(n + top % 1000).integers(0, top, n, dtype=np.int64)
    assert _radix_sorted(keys).tolist() == np.sort(keys).tolist()


def test_the_ledgers_radix_sort_on_keys_that_share_their_top_bits():
    """Keys alike above their last few bits (a guest writing one region of
    a large disk): the digits start at the highest bit in which they differ."""
    rng = np.random.default_rng(3)
    for low in (1, 9, 10, 11, 21, 33):
        keys = (5 << 50) | rng.integers(0, 1 << low, 5000, dtype=np.int64)
        assert _radix_sorted(keys).tolist() == np.sort(keys).tolist()


@pytest.mark.parametrize("gaps", [None, "one", "wide"])
@pytest.mark.parametrize("wide", [False, True])
def test_a_large_ledger_by_block_is_numpys_order(wide, gaps):
    """A ledger of more than _RADIX_FROM writes at random over a large disk,
    repeats included: each block's last write (its keys made and sorted
    compiled), as a dict of the writes says; ``wide``: one block past a
    compact column, the offsets in bytes.  The generations count up by one
    (each block's told from its write's index, BlockOrder._counting), or
    not (``gaps``: one write's generation skips one, the last write's, or
    generations of 8 bytes from the middle on: each read as recorded)."""
    from blocksim.model import ledger as L
    rng = np.random.default_rng(8)
    n = L._RADIX_FROM + 5000
    blocks = rng.integers(0, 1 << 28, n)
    blocks[1::7] = blocks[::7][:len(blocks[1::7])]          # (blocks written twice)
    if wide:
        blocks[n // 2] = 1 << 33
    gens = np.arange(1, n + 1, dtype=np.int64)
    if gaps == "one":
        gens[-1] += 1
    elif gaps == "wide":
        gens[n // 2:] += 1 << 32
    ledger = Ledger()
    if gaps is None:
        ledger.extend(blocks * 4096, 4096, 1)
    else:
        ledger.extend_with(blocks * 4096, 4096, gens)
    order = ledger.by_block()
    assert (ledger._offsets.typecode == "q") == wide
    assert order._counting == (gaps is None)
    starts, got = order.blocks(0, 1 << 34)
    assert got.dtype == np.frombuffer(ledger._gens, dtype=L._NP_TYPES[ledger._gens.typecode]).dtype
    last = {}
    for i, b in enumerate(blocks.tolist()):
        last[b] = int(gens[i])
    want = sorted(last.items())
    assert starts.tolist() == [b * 4096 for b, _ in want]
    assert got.tolist() == [g for _, g in want]
