"""A dirty bitmap: which granules of a disk still need copying.

Granules are grouped in blocks of 512 (``BLOCK``).  Each block has a count
of its dirty granules (``summary``, int16), a flag saying whether it holds
any (``blocks``, a ``bytearray``), and 512 bytes, one per granule (1 =
dirty), in ``granules``; plus a running total.  The count gives the block's
state, after QEMU's ``HBitmap`` (``util/hbitmap.c``), whose upper levels say
"something dirty below":

- count 0: all clean; count ``BLOCK``: all dirty.  The block's bytes then
  say nothing (they may hold whatever the block last held);
- in between: *mixed*, and its bytes are authoritative.  A block turns mixed
  only by a partial mark or clear, which first fills its bytes with its
  uniform value (it *materialises* the block).

So a mark or clear of whole blocks (a full mirror's first mark of the whole
disk, QEMU's ``mirror_dirty_init`` without ``discard=unmap`` on the target)
sets counts, not bytes, and ``granules`` is an anonymous memory mapping
whose pages the system supplies (zero) on first touch: memory follows the
blocks ever mixed, not the disk's size (a 64 TiB disk at 64 KiB granules
has 1 GiB of granules, of which a 10 s mirror touches a few pages; its
counts and flags are 6 MiB).

- Marking or clearing a range costs time proportional to the range, not the
  disk (a 4 KiB guest write touches one byte and one counter; whole blocks
  one counter each);
- finding the next dirty granule from a cursor looks at one block, then at
  the block flags, then at one block again, each with ``find`` (C
  ``memchr``): a copy iteration never scans the granules of the disk, and
  the flags it may scan are 512 times fewer (32 KiB for a 1 TiB disk at the
  default 64 KiB granularity).  Blocks of 512 rather than 4096: a ready
  mirror's copies find their granule scattered over the disk, and a block
  of 512 bytes is eight cache lines to scan instead of 64 (a copy of (b)'s
  steady state 1.3 -> 1.0 µs in the compiled loop).

This is the structure behind a mirror job (QEMU's ``BdrvDirtyBitmap`` with
its ``HBitmap`` levels play the same role).  Bytes rather than packed bits:
the per-granule operations of the hot path are then single C-level index
operations, for 8x the memory of a packed bitmap in the mixed blocks.

Every reader honours the states: the methods below, :meth:`DirtyBitmap.runs`
(``named_bitmap.dirty_ranges``), and the compiled copy loop
(``blocksim.engine.burst_kernel``: ``_search``, ``_start_iteration``,
``_guest_done``), which restates these rules over :meth:`DirtyBitmap.arrays`.
"""

from __future__ import annotations

import mmap
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
_ONE, _ZERO = b"\x01", b"\x00"
#: blocks read at once by :meth:`DirtyBitmap.runs` (bounds its numpy
#: temporaries: a 64 TiB disk has 2M blocks)
_RUN_CHUNK = 1 << 16
#: an anonymous private mapping, not counted against the commit limit
#: until touched (a 64 TiB disk's granules are 1 GiB of address space)
_MAP_FLAGS = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0) | getattr(mmap, "MAP_NORESERVE", 0)


class DirtyBitmap:
    def __init__(self, size: int, granularity: int):
        self.size = size
        self.granularity = granularity
        self.nbits = -(-size // granularity)
        nblocks = (self.nbits >> BLOCK_SHIFT) + 1
        #: one byte per granule, whole blocks (authoritative in mixed blocks only)
        self.granules = mmap.mmap(-1, nblocks << BLOCK_SHIFT, flags=_MAP_FLAGS)
        # dirty granules per block (an array: compiled code shares it,
        # blocksim.engine.burst_kernel)
        self.summary = array("h", bytes(2 * nblocks))
        self.blocks = bytearray(nblocks)       # 1 where summary > 0
        self.count = 0
        self._arrays = None

    # -- one granule -------------------------------------------------------------
    def is_dirty(self, b: int) -> bool:
        """Whether granule ``b`` is dirty."""
        c = self.summary[b >> BLOCK_SHIFT]
        return c == BLOCK or (c != 0 and self.granules[b] == 1)

    # -- byte ranges -----------------------------------------------------------
    def mark(self, start: int, end: int) -> None:
        """Mark the granules overlapping ``[start, end)`` dirty."""
        g = self.granularity
        b0, b1 = start // g, -(-end // g)
        if b1 - b0 == 1:
            blk = b0 >> BLOCK_SHIFT
            c = self.summary[blk]
            if c == BLOCK:
                return
            bits = self.granules
            if not c:                       # materialise: all clean
                a = blk << BLOCK_SHIFT
                bits[a:a + BLOCK] = _ZEROS
                self.blocks[blk] = 1
            elif bits[b0]:
                return
            bits[b0] = 1
            self.summary[blk] = c + 1
            self.count += 1
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
        granules as 64-bit words, per-block counts (int16), block flags,
        block flags as words (the words leave out a tail of fewer than eight
        bytes).  The same memory: the structures never change size."""
        views = self._arrays
        if views is None:
            views = self._arrays = (
                np.frombuffer(self.granules, dtype=np.uint8),
                np.frombuffer(self.granules, dtype=np.uint64),
                np.frombuffer(self.summary, dtype=np.int16),
                np.frombuffer(self.blocks, dtype=np.uint8),
                np.frombuffer(self.blocks, dtype=np.uint64, count=len(self.blocks) >> 3))
        return views

    def clear_bits(self, b0: int, b1: int) -> None:
        blk = b0 >> BLOCK_SHIFT
        if b1 - b0 == 1:                    # one granule (a re-copy): one index
            c = self.summary[blk]
            if not c:
                return
            bits = self.granules
            if c == BLOCK:                  # materialise: all dirty
                a = blk << BLOCK_SHIFT
                bits[a:a + BLOCK] = _ONES
            elif not bits[b0]:
                return
            bits[b0] = 0
            self.summary[blk] = c - 1
            if c == 1:
                self.blocks[blk] = 0
            self.count -= 1
            return
        if (b1 - 1) >> BLOCK_SHIFT != blk:
            self._assign(b0, b1, False)
            return
        # One block (every copy operation of a mirror): no loop.
        self._assign_block(blk, b0, b1, False)

    def _assign_block(self, blk: int, b0: int, b1: int, value: bool) -> None:
        """Mark or clear ``[b0, b1)``, inside block ``blk``: the count stays
        exact, and a block turning mixed is materialised first."""
        c = self.summary[blk]
        n = b1 - b0
        if n <= 0:
            return
        if value:
            if c == BLOCK:
                return
            if n == BLOCK:
                new = BLOCK
            else:
                bits = self.granules
                if c:
                    before = bits[b0:b1].count(1)
                else:
                    a = blk << BLOCK_SHIFT
                    bits[a:a + BLOCK] = _ZEROS
                    before = 0
                bits[b0:b1] = _ONES[:n]
                new = c + n - before
        else:
            if not c:
                return
            if n == BLOCK:
                new = 0
            else:
                bits = self.granules
                if c == BLOCK:
                    a = blk << BLOCK_SHIFT
                    bits[a:a + BLOCK] = _ONES
                    before = n
                else:
                    before = bits[b0:b1].count(1)
                    if not before:
                        return
                bits[b0:b1] = _ZEROS[:n]
                new = c - before
        self.summary[blk] = new
        self.blocks[blk] = 1 if new else 0
        self.count += new - c

    def _assign(self, b0: int, b1: int, value: bool) -> None:
        # The whole summary blocks inside [b0, b1) at once (a full mirror's
        # first mark is every granule of the disk: a Python step per block
        # cost 3.5 s at 16 TiB): their counts, not their bytes.
        w0, w1 = -(-b0 >> BLOCK_SHIFT), b1 >> BLOCK_SHIFT
        if w1 - w0 >= 8:
            if b0 < w0 << BLOCK_SHIFT:
                self._assign_block(w0 - 1, b0, w0 << BLOCK_SHIFT, value)
            _bits, _words, summary, blocks, _block_words = self.arrays()
            counts = summary[w0:w1]
            before = int(counts.sum())
            counts[:] = BLOCK if value else 0
            blocks[w0:w1] = 1 if value else 0
            self.count += (((w1 - w0) << BLOCK_SHIFT) if value else 0) - before
            if w1 << BLOCK_SHIFT < b1:
                self._assign_block(w1, w1 << BLOCK_SHIFT, b1, value)
            return
        while b0 < b1:
            blk = b0 >> BLOCK_SHIFT
            edge = min(b1, (blk + 1) << BLOCK_SHIFT)
            self._assign_block(blk, b0, edge, value)
            b0 = edge

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
        # (b0 < b1 <= nbits)
        summary = self.summary
        blk = b0 >> BLOCK_SHIFT
        edge = (blk + 1) << BLOCK_SHIFT
        c = summary[blk]
        if c == BLOCK:
            return b0 if b0 < b1 else -1
        found = self.granules.find(_ONE, b0, b1 if b1 < edge else edge) if c else -1
        if found >= 0 or b1 <= edge:
            return found
        blk = self.blocks.find(1, blk + 1, ((b1 - 1) >> BLOCK_SHIFT) + 1)
        if blk < 0:
            return -1
        # A flagged block inside the range holds a dirty bit; only the last
        # block can hold its dirty bits past b1.
        a = blk << BLOCK_SHIFT
        if summary[blk] == BLOCK:
            return a
        edge = a + BLOCK
        return self.granules.find(_ONE, a, b1 if b1 < edge else edge)

    def find(self, b0: int, b1: int) -> int:
        """First dirty bit in ``[b0, b1)`` (no wrapping); -1 if none."""
        if b1 > self.nbits:
            b1 = self.nbits
        if not self.count or b0 >= b1:
            return -1
        return self._search(b0, b1)

    def dirty_run(self, b0: int, max_bits: int) -> int:
        """Length (in bits) of the dirty run starting at ``b0``, capped."""
        end = b0 + max_bits
        if end > self.nbits:
            end = self.nbits
        summary, bits = self.summary, self.granules
        b = b0
        while b < end:
            blk = b >> BLOCK_SHIFT
            edge = (blk + 1) << BLOCK_SHIFT
            if edge > end:
                edge = end
            c = summary[blk]
            if c != BLOCK:
                if not c:
                    return b - b0
                clean = bits.find(_ZERO, b, edge)
                if clean >= 0:
                    return clean - b0
            b = edge
        return end - b0

    def runs(self):
        """The dirty runs of granules ``(b, e)``, maximal, in order: a step
        per mixed block and per run of whole dirty blocks, not per block."""
        run_b = run_e = -1                  # the run being built
        for b, e in self._pieces():
            if b == run_e:
                run_e = e
                continue
            if run_e >= 0:
                yield run_b, run_e
            run_b, run_e = b, e
        if run_e >= 0:
            yield run_b, run_e

    def _pieces(self):
        """Dirty granule ranges in order, adjacent ones not yet joined: one
        per run of whole dirty blocks, one per dirty run inside a mixed block."""
        if not self.count:
            return
        counts = self.arrays()[2]
        flags, bits, nbits = self.blocks, self.granules, self.nbits
        nblocks = len(flags)
        c0 = flags.find(1)
        while 0 <= c0 < nblocks:
            c1 = min(c0 + _RUN_CHUNK, nblocks)
            nz = np.flatnonzero(counts[c0:c1]) + c0
            full = counts[nz] == BLOCK
            # a piece starts at each block but those that continue a
            # piece of whole dirty blocks
            cont = np.zeros(len(nz), dtype=np.bool_)
            cont[1:] = (np.diff(nz) == 1) & full[1:] & full[:-1]
            starts = np.flatnonzero(~cont)
            lasts = np.append(starts[1:], len(nz)) - 1
            for first, last, whole in zip(nz[starts].tolist(), nz[lasts].tolist(),
                                          full[starts].tolist()):
                if whole:
                    yield first << BLOCK_SHIFT, (last + 1) << BLOCK_SHIFT
                    continue
                a = first << BLOCK_SHIFT
                z = min(a + BLOCK, nbits)
                b = bits.find(_ONE, a, z)
                while b >= 0:
                    e = bits.find(_ZERO, b, z)
                    if e < 0:
                        e = z
                    yield b, e
                    b = bits.find(_ONE, e, z) if e < z else -1
            c0 = flags.find(1, c1) if c1 < nblocks else -1

    @property
    def dirty_bytes(self) -> int:
        return min(self.count * self.granularity, self.size)


@njit(cache=True)
def _mark_writes(bits, summary, blocks, offsets, length, granularity):
    """DirtyBitmap.mark for each write; returns how many granules turned dirty."""
    added = 0
    for offset in offsets:
        for b in range(offset // granularity, (offset + length + granularity - 1) // granularity):
            blk = b >> BLOCK_SHIFT
            c = summary[blk]
            if c == BLOCK:
                continue
            if c == 0:                      # materialise: all clean
                for j in range(blk << BLOCK_SHIFT, (blk + 1) << BLOCK_SHIFT):
                    bits[j] = 0
                blocks[blk] = 1
            elif bits[b]:
                continue
            bits[b] = 1
            summary[blk] = c + 1
            added += 1
    return added
