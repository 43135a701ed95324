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
sets counts, not bytes.  Only a mixed block has bytes: a *slot* of 512 bytes
in ``granules``, a pool taken when the block turns mixed and given back
when it turns clean or all dirty (a free list, last freed first taken), its
number kept in the block's ``summary`` entry above the count (``COUNT_BITS``).
The pool is an anonymous memory mapping as large as every block's bytes,
whose pages the system supplies (zero) on first touch: memory follows the
most blocks mixed at once, not the disk's size nor the blocks ever mixed (a
guest writing at random over a 64 TiB thin disk while a ready mirror copies
its writes keeps a few hundred blocks mixed, where bytes at each block's
own place grew to the whole 1 GiB within the hour, a 4 KiB page per write;
the counts and flags are 6 MiB, 10 MiB with slots past 2**21 blocks).

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
from ..engine import Compiled, bitmap_blocks

#: compiled with numba on first use (engine/compiled.py)
njit = Compiled(globals())

#: the layout, and the pool's compiled helpers, are the engine's
#: (blocksim.engine.bitmap_blocks: one home for the compiled copy loop and
#: this module's compiled marks).  Compiled code takes them as constants:
#: after changing them, delete the numba cache, blocksim/**/__pycache__/*.nbi
#: and *.nbc, which only notices changes to the compiled functions' own files.
BLOCK_SHIFT, BLOCK = bitmap_blocks.BLOCK_SHIFT, bitmap_blocks.BLOCK
COUNT_BITS, COUNT_MASK = bitmap_blocks.COUNT_BITS, bitmap_blocks.COUNT_MASK
GROUP_SHIFT = bitmap_blocks.GROUP_SHIFT
_mark = bitmap_blocks._mark
_take_slot = bitmap_blocks._take_slot
_free_slot = bitmap_blocks._free_slot
_groups_at = bitmap_blocks._groups_at
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
        #: the mixed blocks' bytes, one per granule, a slot of BLOCK bytes
        #: each; slot 0 holds the free list's head and the first slot never
        #: taken (two uint32 at bytes 0 and 4)
        self.granules = mmap.mmap(-1, bitmap_blocks.pool_bytes(nblocks), flags=_MAP_FLAGS)
        #: where the group bytes start in ``granules`` (a byte per 512
        #: blocks, GROUP_SHIFT, 1 where one of them may be flagged: what the compiled
        #: search reads instead of the flags, bitmap_blocks._find_block)
        self._groups = (nblocks + 1) << BLOCK_SHIFT
        self.granules[4:8] = (1).to_bytes(4, "little")
        # per block, its dirty count and its slot (an array: compiled code
        # shares it, blocksim.engine.burst_kernel)
        wide = (nblocks + 1) << COUNT_BITS >= 1 << 31
        self.summary = array("q" if wide else "i", bytes((8 if wide else 4) * nblocks))
        self.blocks = bytearray(nblocks)       # 1 where the count > 0
        #: how many times the dirty granules changed (see :attr:`count`)
        self.version = 0
        self._count = 0
        self._arrays = None

    @property
    def count(self) -> int:
        """How many granules are dirty."""
        return self._count

    @count.setter
    def count(self, value: int) -> None:
        # Every change of the dirty granules, here or by compiled code over
        # :meth:`arrays`, ends by setting the count (it stays exact): so
        # each such set bumps :attr:`version`, which tells a reader that
        # kept an answer of the bitmap whether it may still hold it (the
        # backup's copy loop keeps its plan of the pass's next tasks across
        # its entries, blocksim.engine.copyloop).
        self._count = value
        self.version += 1

    # -- the pool of slots ---------------------------------------------------------
    def _take_slot(self, fill: memoryview) -> int:
        """A free slot, its bytes ``fill`` (a mixed block's, materialised)."""
        pool = self.granules
        head = int.from_bytes(pool[0:4], "little")
        if head:
            pool[0:4] = pool[head << BLOCK_SHIFT:(head << BLOCK_SHIFT) + 4]
            slot = head
        else:
            slot = int.from_bytes(pool[4:8], "little")
            pool[4:8] = (slot + 1).to_bytes(4, "little")
        a = slot << BLOCK_SHIFT
        pool[a:a + BLOCK] = fill
        return slot

    def _free_slot(self, slot: int) -> None:
        pool = self.granules
        a = slot << BLOCK_SHIFT
        pool[a:a + 4] = pool[0:4]
        pool[0:4] = slot.to_bytes(4, "little")

    def slots_in_use(self) -> int:
        """How many blocks hold a slot (the mixed ones)."""
        pool = self.granules
        n = int.from_bytes(pool[4:8], "little") - 1
        head = int.from_bytes(pool[0:4], "little")
        while head:
            n -= 1
            head = int.from_bytes(pool[head << BLOCK_SHIFT:(head << BLOCK_SHIFT) + 4], "little")
        return n

    def byte_at(self, b: int) -> int:
        """Granule ``b``'s byte, in its block's slot (a mixed block)."""
        return self.granules[(self.summary[b >> BLOCK_SHIFT] >> COUNT_BITS << BLOCK_SHIFT)
                             | (b & (BLOCK - 1))]

    # -- one granule -------------------------------------------------------------
    def is_dirty(self, b: int) -> bool:
        """Whether granule ``b`` is dirty."""
        v = self.summary[b >> BLOCK_SHIFT]
        c = v & COUNT_MASK
        return c == BLOCK or (c != 0 and self.granules[
            (v >> COUNT_BITS << BLOCK_SHIFT) | (b & (BLOCK - 1))] == 1)

    # -- byte ranges -----------------------------------------------------------
    def mark(self, start: int, end: int) -> None:
        """Mark the granules overlapping ``[start, end)`` dirty."""
        g = self.granularity
        b0, b1 = start // g, -(-end // g)
        if b1 - b0 == 1:
            blk = b0 >> BLOCK_SHIFT
            v = self.summary[blk]
            c = v & COUNT_MASK
            if c == BLOCK:
                return
            if not c:                       # materialise: all clean
                slot = self._take_slot(_ZEROS)
                self.blocks[blk] = 1
                self.granules[self._groups + (blk >> GROUP_SHIFT)] = 1
            else:
                slot = v >> COUNT_BITS
            i = (slot << BLOCK_SHIFT) | (b0 & (BLOCK - 1))
            bits = self.granules
            if bits[i]:
                return
            bits[i] = 1
            c += 1
            if c == BLOCK:                  # all dirty: no bytes
                self._free_slot(slot)
                slot = 0
            self.summary[blk] = c | (slot << COUNT_BITS)
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
        bytes).  The same memory: the structures never change size.  (The
        granules are the pool of slots, the counts carry the slots.)"""
        views = self._arrays
        if views is None:
            views = self._arrays = (
                np.frombuffer(self.granules, dtype=np.uint8),
                np.frombuffer(self.granules, dtype=np.uint64),
                np.frombuffer(self.summary, dtype=np.int64 if self.summary.typecode == "q"
                              else np.int32),
                np.frombuffer(self.blocks, dtype=np.uint8),
                np.frombuffer(self.blocks, dtype=np.uint64, count=len(self.blocks) >> 3))
        return views

    def dense(self, c0: int, c1: int) -> "np.ndarray | None":
        """Blocks ``[c0, c1)`` as one byte per granule, whatever their state
        (a ``(c1 - c0, BLOCK)`` uint8 array: a mixed block's slot, ones for
        an all-dirty block, zeros for a clean one), or None if none of them
        holds a dirty granule."""
        bits, _words, summary, _blocks, _block_words = self.arrays()
        entries = summary[c0:c1]
        if not entries.any():
            return None
        out = np.zeros((c1 - c0, BLOCK), dtype=np.uint8)
        out[entries == BLOCK] = 1
        mixed = np.flatnonzero(entries > COUNT_MASK)
        if len(mixed):
            pool = bits.reshape(-1, BLOCK)
            out[mixed] = pool[entries[mixed] >> COUNT_BITS]
        return out

    def clear_bits(self, b0: int, b1: int) -> None:
        blk = b0 >> BLOCK_SHIFT
        if b1 - b0 == 1:                    # one granule (a re-copy): one index
            v = self.summary[blk]
            c = v & COUNT_MASK
            if not c:
                return
            if c == BLOCK:                  # materialise: all dirty
                slot = self._take_slot(_ONES)
            else:
                slot = v >> COUNT_BITS
            i = (slot << BLOCK_SHIFT) | (b0 & (BLOCK - 1))
            bits = self.granules
            if not bits[i]:
                return
            bits[i] = 0
            c -= 1
            if not c:                       # all clean: no bytes
                self._free_slot(slot)
                slot = 0
                self.blocks[blk] = 0
            self.summary[blk] = c | (slot << COUNT_BITS)
            self.count -= 1
            return
        if (b1 - 1) >> BLOCK_SHIFT != blk and (b1 >> BLOCK_SHIFT) - (-(-b0 >> BLOCK_SHIFT)) >= 8:
            self._assign(b0, b1, False)         # (whole blocks: their counts at once)
            return
        # One block (every copy operation of a mirror) or a few (a backup's
        # tasks, cleared in a run when its copy loop stops or its pass fills
        # its pool: 64 MiB, three blocks): :meth:`_assign_block` for each,
        # compiled (some 5 µs of Python a block).
        bits, _words, summary, blocks, _block_words = self.arrays()
        cleared = _clear_blocks(bits, summary, blocks, b0, b1)
        if cleared:
            self.count -= cleared

    def _assign_block(self, blk: int, b0: int, b1: int, value: bool) -> None:
        """Mark or clear ``[b0, b1)``, inside block ``blk``: the count stays
        exact, a block turning mixed is materialised first (a slot taken,
        filled with its uniform value), and one turning clean or all dirty
        gives its slot back."""
        v = self.summary[blk]
        c = v & COUNT_MASK
        slot = v >> COUNT_BITS
        n = b1 - b0
        if n <= 0:
            return
        bits = self.granules
        a = (blk << BLOCK_SHIFT) - (slot << BLOCK_SHIFT)    # granule -> pool offset
        if value:
            if c == BLOCK:
                return
            if n == BLOCK:
                new = BLOCK
            else:
                if c:
                    before = bits[b0 - a:b1 - a].count(1)
                else:
                    slot = self._take_slot(_ZEROS)
                    a = (blk - slot) << BLOCK_SHIFT
                    before = 0
                bits[b0 - a:b1 - a] = _ONES[:n]
                new = c + n - before
        else:
            if not c:
                return
            if n == BLOCK:
                new = 0
            else:
                if c == BLOCK:
                    slot = self._take_slot(_ONES)
                    a = (blk - slot) << BLOCK_SHIFT
                    before = n
                else:
                    before = bits[b0 - a:b1 - a].count(1)
                    if not before:
                        return
                bits[b0 - a:b1 - a] = _ZEROS[:n]
                new = c - before
        if slot and (new == 0 or new == BLOCK):
            self._free_slot(slot)
            slot = 0
        self.summary[blk] = new | (slot << COUNT_BITS)
        if new:
            self.blocks[blk] = 1
            self.granules[self._groups + (blk >> GROUP_SHIFT)] = 1
        else:
            self.blocks[blk] = 0
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
            entries = summary[w0:w1]
            # (the mixed blocks among them give their slots back)
            for slot in (entries[entries > COUNT_MASK] >> COUNT_BITS).tolist():
                self._free_slot(slot)
            before = int((entries & COUNT_MASK).sum())
            entries[:] = BLOCK if value else 0
            blocks[w0:w1] = 1 if value else 0
            if value:
                g0, g1 = self._groups + (w0 >> GROUP_SHIFT), self._groups + ((w1 - 1) >> GROUP_SHIFT) + 1
                self.granules[g0:g1] = b"\x01" * (g1 - g0)
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
        v = summary[blk]
        c = v & COUNT_MASK
        if c == BLOCK:
            return b0 if b0 < b1 else -1
        found = self._find_in(v, blk, _ONE, b0, b1 if b1 < edge else edge) if c else -1
        if found >= 0 or b1 <= edge:
            return found
        blk = self.blocks.find(1, blk + 1, ((b1 - 1) >> BLOCK_SHIFT) + 1)
        if blk < 0:
            return -1
        # A flagged block inside the range holds a dirty bit; only the last
        # block can hold its dirty bits past b1.
        a = blk << BLOCK_SHIFT
        v = summary[blk]
        if v == BLOCK:
            return a
        edge = a + BLOCK
        return self._find_in(v, blk, _ONE, a, b1 if b1 < edge else edge)

    def _find_in(self, v: int, blk: int, byte: bytes, b0: int, b1: int) -> int:
        """The first granule of ``[b0, b1)`` (inside mixed block ``blk``,
        summary entry ``v``) whose byte is ``byte``, or -1."""
        a = (blk - (v >> COUNT_BITS)) << BLOCK_SHIFT        # granule -> pool offset
        found = self.granules.find(byte, b0 - a, b1 - a)
        return found + a if found >= 0 else -1

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
        summary = self.summary
        b = b0
        while b < end:
            blk = b >> BLOCK_SHIFT
            edge = (blk + 1) << BLOCK_SHIFT
            if edge > end:
                edge = end
            v = summary[blk]
            if v != BLOCK:
                if not v:
                    return b - b0
                clean = self._find_in(v, blk, _ZERO, b, edge)
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
        summary = self.arrays()[2]
        flags, bits, nbits = self.blocks, self.granules, self.nbits
        nblocks = len(flags)
        c0 = flags.find(1)
        while 0 <= c0 < nblocks:
            c1 = min(c0 + _RUN_CHUNK, nblocks)
            nz = np.flatnonzero(summary[c0:c1]) + c0
            full = summary[nz] == BLOCK
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
                # (in the block's slot: granule - shift is its byte)
                shift = (first - (self.summary[first] >> COUNT_BITS)) << BLOCK_SHIFT
                a -= shift
                z -= shift
                b = bits.find(_ONE, a, z)
                while b >= 0:
                    e = bits.find(_ZERO, b, z)
                    if e < 0:
                        e = z
                    yield b + shift, e + shift
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
            added += _mark(bits, summary, blocks, b)
    return added


@njit(cache=True)
def _clear_blocks(bits, summary, blocks, b0, b1):
    """DirtyBitmap._assign_block(blk, ..., False) for each block of ``[b0,
    b1)`` in order (its count, its slot taken or given back as there, the
    group byte set where a block stays dirty); returns how many granules
    turned clean (the caller's count, set once)."""
    cleared = 0
    groups = _groups_at(summary)
    while b0 < b1:
        blk = b0 >> BLOCK_SHIFT
        edge = (blk + 1) << BLOCK_SHIFT
        if edge > b1:
            edge = b1
        n = edge - b0
        v = summary[blk]
        c = v & COUNT_MASK
        slot = v >> COUNT_BITS
        new = c
        if c:
            change = True
            if n == BLOCK:
                new = 0
            else:
                if c == BLOCK:
                    slot = _take_slot(bits, 1)
                    before = n
                else:
                    a = (blk - slot) << BLOCK_SHIFT
                    before = 0
                    for j in range(b0 - a, edge - a):
                        if bits[j] == 1:
                            before += 1
                    change = before != 0
                if change:
                    a = (blk - slot) << BLOCK_SHIFT
                    for j in range(b0 - a, edge - a):
                        bits[j] = 0
                    new = c - before
            if change:
                if slot and (new == 0 or new == BLOCK):
                    _free_slot(bits, slot)
                    slot = 0
                summary[blk] = new | (slot << COUNT_BITS)
                if new:
                    blocks[blk] = 1
                    bits[groups + (blk >> GROUP_SHIFT)] = 1
                else:
                    blocks[blk] = 0
                cleared += c - new
        b0 = edge
    return cleared
