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


def test_ledger_costs_twelve_bytes_per_same_size_write():
    ledger = Ledger()
    for i in range(1000):
        ledger.append(i * 4096, 4096, i + 1)
    assert ledger.nbytes == 12 * 1000
    ledger.append(0, 512, 1001)                         # an exception: index and length
    assert ledger.nbytes == 12 * 1001 + 16


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
    assert ledger.block_size == 4096 and ledger.nbytes == 24


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
        assert ledger.nbytes == 12 * 4
    rows = list(ledger.rows())
    assert [g for _a, _b, g in rows][:4] == [1, 2, 3, 4] and buffers["b"] == []
