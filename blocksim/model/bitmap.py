"""A dirty bitmap: which granules of a disk still need copying.

One byte per ``granularity`` bytes (1 = dirty) in a ``bytearray``, a count
of dirty granules per block of 512, a ``bytearray`` flag per block saying
whether it holds any, and a running total.  So that

- marking or clearing a range costs time proportional to the range, not the
  disk (a 4 KiB guest write touches one byte and one counter);
- finding the next dirty granule from a cursor looks at one block, then at
  the block flags, then at one block again, each with ``bytearray.find``
  (C ``memchr``): a copy iteration never scans the granules of the disk, and
  the flags it may scan are 512 times fewer (32 KiB for a 1 TiB disk at the
  default 64 KiB granularity).  Blocks of 512 rather than 4096: a ready
  mirror's copies find their granule scattered over the disk, and a block
  of 512 bytes is eight cache lines to scan instead of 64 (a copy of (b)'s
  steady state 1.3 -> 1.0 µs in the compiled loop).

This is the structure behind a mirror job (QEMU's ``BdrvDirtyBitmap`` with
its ``HBitmap`` levels play the same role).  Bytes rather than packed bits:
the per-granule operations of the hot path are then single C-level index
operations, for 8x the memory of a packed bitmap (16 MiB for 1 TiB).
"""

from __future__ import annotations

from array import array

import numpy as np
from ..engine import Compiled

#: compiled with numba on first use (engine/compiled.py)
njit = Compiled(globals())

BLOCK_SHIFT = 9                      # 512 granules per summary block
# (compiled code takes it as a constant: after changing it, delete the
# numba cache, blocksim/__pycache__/*.nbi and *.nbc, which only notices
# changes to the compiled functions' own files)
BLOCK = 1 << BLOCK_SHIFT
_ONES = memoryview(b"\x01" * BLOCK)
_ZEROS = memoryview(bytes(BLOCK))


class DirtyBitmap:
    def __init__(self, size: int, granularity: int):
        self.size = size
        self.granularity = granularity
        self.nbits = -(-size // granularity)
        self.bits = bytearray(self.nbits)
        nblocks = (self.nbits >> BLOCK_SHIFT) + 1
        # dirty granules per block (an array: compiled code shares it,
        # blocksim.engine.burst_kernel)
        self.summary = array("q", bytes(8 * nblocks))
        self.blocks = bytearray(nblocks)       # 1 where summary > 0
        self.count = 0
        self._arrays = None

    # -- byte ranges -----------------------------------------------------------
    def mark(self, start: int, end: int) -> None:
        """Mark the granules overlapping ``[start, end)`` dirty."""
        g = self.granularity
        b0, b1 = start // g, -(-end // g)
        if b1 - b0 == 1:
            if not self.bits[b0]:
                self.bits[b0] = 1
                self.count += 1
                blk = b0 >> BLOCK_SHIFT
                self.summary[blk] += 1
                self.blocks[blk] = 1
            return
        self._assign(b0, b1, True)

    def mark_writes(self, offsets: np.ndarray, length: int) -> None:
        """:meth:`mark` for writes of ``length`` bytes at each of ``offsets``
        (int64; a guest's quiet stretch), compiled: a stretch between two
        polls of a ready mirror holds about 100 writes, too few for numpy's
        whole-array operations to pay, and a call of :meth:`mark` each cost
        a third of a write's time."""
        bits, _words, summary, blocks, _block_words = self.arrays()
        self.count += _mark_writes(bits, summary, blocks, offsets, length, self.granularity)

    def arrays(self) -> tuple:
        """The bitmap's memory as numpy arrays, for compiled code: granules,
        granules as 64-bit words, per-block counts, block flags, block flags
        as words (the words leave out a tail of fewer than eight bytes).
        The same memory: the structures never change size."""
        views = self._arrays
        if views is None:
            views = self._arrays = (
                np.frombuffer(self.bits, dtype=np.uint8),
                np.frombuffer(self.bits, dtype=np.uint64, count=len(self.bits) >> 3),
                np.frombuffer(self.summary, dtype=np.int64),
                np.frombuffer(self.blocks, dtype=np.uint8),
                np.frombuffer(self.blocks, dtype=np.uint64, count=len(self.blocks) >> 3))
        return views

    def clear_bits(self, b0: int, b1: int) -> None:
        blk = b0 >> BLOCK_SHIFT
        if b1 - b0 == 1:                    # one granule (a re-copy): one index
            bits = self.bits
            if bits[b0]:
                bits[b0] = 0
                left = self.summary[blk] = self.summary[blk] - 1
                if not left:
                    self.blocks[blk] = 0
                self.count -= 1
            return
        if (b1 - 1) >> BLOCK_SHIFT != blk:
            self._assign(b0, b1, False)
            return
        # One block (every copy operation of a mirror): no loop.
        bits = self.bits
        n = bits.count(1, b0, b1)
        if n:
            bits[b0:b1] = _ZEROS[:b1 - b0]
            left = self.summary[blk] = self.summary[blk] - n
            if not left:
                self.blocks[blk] = 0
            self.count -= n

    def _assign(self, b0: int, b1: int, value: bool) -> None:
        # The whole summary blocks inside [b0, b1) at once (a full mirror's
        # first mark is every granule of the disk: a Python step per block
        # cost 3.5 s at 16 TiB): a block's count is its summary entry.
        w0, w1 = -(-b0 >> BLOCK_SHIFT), b1 >> BLOCK_SHIFT
        if w1 - w0 >= 8:
            self._assign_blocks(b0, w0 << BLOCK_SHIFT, value)
            bits, _words, summary, blocks, _block_words = self.arrays()
            counts = summary[w0:w1]
            before = int(counts.sum())
            bits[w0 << BLOCK_SHIFT:w1 << BLOCK_SHIFT] = 1 if value else 0
            counts[:] = BLOCK if value else 0
            blocks[w0:w1] = 1 if value else 0
            self.count += (((w1 - w0) << BLOCK_SHIFT) if value else 0) - before
            self._assign_blocks(w1 << BLOCK_SHIFT, b1, value)
            return
        self._assign_blocks(b0, b1, value)

    def _assign_blocks(self, b0: int, b1: int, value: bool) -> None:
        # Per summary block, so that the counts stay exact.
        bits, summary, blocks = self.bits, self.summary, self.blocks
        fill = _ONES if value else _ZEROS
        blk = b0 >> BLOCK_SHIFT
        while b0 < b1:
            edge = min(b1, (blk + 1) << BLOCK_SHIFT)
            before = bits.count(1, b0, edge)
            bits[b0:edge] = fill[:edge - b0]
            change = ((edge - b0) if value else 0) - before
            if change:
                summary[blk] += change
                blocks[blk] = 1 if summary[blk] else 0
                self.count += change
            b0 = edge
            blk += 1

    # -- searching -------------------------------------------------------------
    def next_dirty(self, cursor: int) -> int:
        """First dirty bit at or after ``cursor``, wrapping around; -1 if none."""
        if not self.count:
            return -1
        found = self._search(cursor, self.nbits)
        if found < 0 and cursor:
            found = self._search(0, cursor)
        return found

    def _search(self, b0: int, b1: int) -> int:
        bits = self.bits
        blk = b0 >> BLOCK_SHIFT
        edge = (blk + 1) << BLOCK_SHIFT
        found = bits.find(1, b0, b1 if b1 < edge else edge)
        if found >= 0 or b1 <= edge:
            return found
        blk = self.blocks.find(1, blk + 1, ((b1 - 1) >> BLOCK_SHIFT) + 1)
        if blk < 0:
            return -1
        # A flagged block inside the range holds a dirty bit; only the last
        # block can hold its dirty bits past b1.
        edge = (blk + 1) << BLOCK_SHIFT
        return bits.find(1, blk << BLOCK_SHIFT, b1 if b1 < edge else edge)

    def find(self, b0: int, b1: int) -> int:
        """First dirty bit in ``[b0, b1)`` (no wrapping); -1 if none."""
        if not self.count or b0 >= b1:
            return -1
        return self._search(b0, min(b1, self.nbits))

    def dirty_run(self, b0: int, max_bits: int) -> int:
        """Length (in bits) of the dirty run starting at ``b0``, capped."""
        end = b0 + max_bits
        if end > self.nbits:
            end = self.nbits
        clean = self.bits.find(0, b0, end)
        return (end if clean < 0 else clean) - b0

    @property
    def dirty_bytes(self) -> int:
        return min(self.count * self.granularity, self.size)


@njit(cache=True)
def _mark_writes(bits, summary, blocks, offsets, length, granularity):
    """DirtyBitmap.mark for each write; returns how many granules turned dirty."""
    added = 0
    for offset in offsets:
        for b in range(offset // granularity, (offset + length + granularity - 1) // granularity):
            if not bits[b]:
                bits[b] = 1
                added += 1
                blk = b >> BLOCK_SHIFT
                summary[blk] += 1
                blocks[blk] = 1
    return added
