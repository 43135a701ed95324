"""A dirty bitmap: which granules of a disk still need copying.

One bit per ``granularity`` bytes, held in a numpy bool array, plus a coarse
summary (how many bits are set in each block of 4096 bits) and a running
count, so that

- marking or clearing a range costs time proportional to the range, not the
  disk (a 4 KiB guest write touches one bit);
- finding the next dirty granule from a cursor skips clean blocks through the
  summary, a bounded window at a time, instead of scanning the whole bitmap on
  each copy iteration.

This is the structure behind a mirror job (QEMU's ``BdrvDirtyBitmap`` with
its ``HBitmap`` levels play the same role).
"""

from __future__ import annotations

import numpy as np

BLOCK_SHIFT = 12                     # 4096 bits per summary block
_WINDOW = 1024                       # summary entries looked at per search step


class DirtyBitmap:
    def __init__(self, size: int, granularity: int):
        self.size = size
        self.granularity = granularity
        self.nbits = -(-size // granularity)
        self.bits = np.zeros(self.nbits, dtype=bool)
        self.summary = np.zeros((self.nbits >> BLOCK_SHIFT) + 1, dtype=np.int32)
        self.count = 0

    # -- byte ranges -----------------------------------------------------------
    def bit_range(self, start: int, end: int) -> tuple[int, int]:
        g = self.granularity
        return start // g, -(-end // g)

    def mark(self, start: int, end: int) -> None:
        """Mark the granules overlapping ``[start, end)`` dirty."""
        b0, b1 = self.bit_range(start, end)
        if b1 - b0 == 1:
            if not self.bits[b0]:
                self.bits[b0] = True
                self.count += 1
                self.summary[b0 >> BLOCK_SHIFT] += 1
            return
        self._assign(b0, b1, True)

    def clear_bits(self, b0: int, b1: int) -> None:
        self._assign(b0, b1, False)

    def _assign(self, b0: int, b1: int, value: bool) -> None:
        # Per summary block, so that the summary stays exact.
        bits, summary = self.bits, self.summary
        blk = b0 >> BLOCK_SHIFT
        while b0 < b1:
            edge = min(b1, (blk + 1) << BLOCK_SHIFT)
            seg = bits[b0:edge]
            before = int(np.count_nonzero(seg))
            seg[:] = value
            after = (edge - b0) if value else 0
            summary[blk] += after - before
            self.count += after - before
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
        bits, summary = self.bits, self.summary
        if b0 < b1 and bits[b0]:
            return b0
        blk = b0 >> BLOCK_SHIFT
        last_blk = (b1 - 1) >> BLOCK_SHIFT
        while blk <= last_blk:
            if summary[blk]:
                lo = max(b0, blk << BLOCK_SHIFT)
                hi = min(b1, (blk + 1) << BLOCK_SHIFT)
                seg = bits[lo:hi]
                i = int(seg.argmax())
                if seg[i]:
                    return lo + i
                blk += 1
                continue
            # skip clean blocks a window at a time
            window = summary[blk:min(last_blk + 1, blk + _WINDOW)]
            nz = np.flatnonzero(window)
            if len(nz) == 0:
                blk += len(window)
            else:
                blk += int(nz[0])
        return -1

    def dirty_run(self, b0: int, max_bits: int) -> int:
        """Length (in bits) of the dirty run starting at ``b0``, capped."""
        seg = self.bits[b0:b0 + max_bits]
        i = int(seg.argmin())
        return len(seg) if seg[i] else i

    @property
    def dirty_bytes(self) -> int:
        return min(self.count * self.granularity, self.size)
