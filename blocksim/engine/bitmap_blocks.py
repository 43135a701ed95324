"""The dirty bitmap's blocks and their pool of slots, compiled: one home.

:class:`~blocksim.model.bitmap.DirtyBitmap` (the model) keeps a count per
block of 512 granules and, for a *mixed* block only, 512 bytes in a slot of
a pool (its module's doc says why).  Compiled code updates that structure in
two places: the copy loop (:mod:`blocksim.engine.burst_kernel`: the guest's
marks, a claim's clear) and the quiet stretches' marks
(``DirtyBitmap.mark_writes``).  Both take the helpers below, so the pool's
rules are written once in compiled form (and once in Python, the
bitmap's own methods, the meaning):

- the layout constants (``BLOCK_SHIFT``, ``COUNT_BITS``: a block's summary
  entry is its count in the low ``COUNT_BITS`` bits, its slot above);
- :func:`_take_slot` and :func:`_free_slot`, the pool's free list (its head
  and the first slot never taken: slot 0's two little-endian uint32,
  :func:`_get32`, :func:`_put32`);
- :func:`_mark`, one granule marked dirty;
- the *groups*: a byte per 512 blocks (``GROUP_SHIFT``), at the end of the
  pool's mapping (:func:`_groups_at`), 1 where a block of the group may be
  flagged: set with the flag, cleared only by a search that finds the
  whole group's flags clear (:func:`_find_block`).  A search across a
  64 TiB disk's 2 M block flags then reads 4 K group bytes instead (a
  ready mirror's copies find their granule scattered over the disk, often
  the only one dirty: half the groups read at each copy), then the 512
  flags (eight cache lines) of the group found.  Groups of 64 blocks read
  32 K group bytes: the sparse hour's searches took 0.7 s, some 7 % of it.

The model imports these from here (the engine imports nothing of the model).
Numba's cache notices changes to a compiled function's own file only: a
function elsewhere that calls these keeps its cached machine code (these
helpers inlined) after an edit here, so delete the caches
(``blocksim/**/__pycache__/*.nbi``, ``*.nbc``) after changing this file.
"""

from __future__ import annotations

import numpy as np

from .compiled import Compiled

#: compiled with numba on first use (engine/compiled.py); without numba's
#: runtime (they allocate nothing: see burst_kernel's ``_step``)
njit = Compiled(globals())
_step = njit(cache=True, _nrt=False)

BLOCK_SHIFT = 9                      # 512 granules per summary block
BLOCK = 1 << BLOCK_SHIFT
#: a block's ``summary`` entry: its dirty count in the low COUNT_BITS bits,
#: its slot in the pool above them (0: none, the block is not mixed)
COUNT_BITS = BLOCK_SHIFT + 1
COUNT_MASK = (1 << COUNT_BITS) - 1
#: blocks per group (a group byte stands for 64 words of block flags)
GROUP_SHIFT = 9


def pool_bytes(nblocks: int) -> int:
    """The size of a bitmap's pool mapping for ``nblocks`` blocks: a slot of
    BLOCK bytes each, slot 0 (the free list's head), then a byte a group
    (a whole number of slots: the pool reads as rows of BLOCK bytes)."""
    groups = (nblocks >> GROUP_SHIFT) + 1
    return (nblocks + 1 + -(-groups >> BLOCK_SHIFT)) << BLOCK_SHIFT


@_step
def _groups_at(summary):
    """Where the group bytes start in the pool (a bitmap of
    ``summary.shape[0]`` blocks)."""
    return (summary.shape[0] + 1) << BLOCK_SHIFT


@_step
def _get32(bits, a):
    return np.int64(bits[a]) | (np.int64(bits[a + 1]) << 8) | (
        np.int64(bits[a + 2]) << 16) | (np.int64(bits[a + 3]) << 24)


@_step
def _put32(bits, a, v):
    for k in range(4):
        bits[a + k] = (v >> (8 * k)) & 255


@_step
def _take_slot(bits, fill):
    """DirtyBitmap._take_slot: a free slot of the pool (the free list's
    head, else the first never taken: slot 0's two uint32), its bytes
    ``fill``."""
    slot = _get32(bits, 0)
    if slot:
        _put32(bits, 0, _get32(bits, slot << BLOCK_SHIFT))
    else:
        slot = _get32(bits, 4)
        _put32(bits, 4, slot + 1)
    for j in range(slot << BLOCK_SHIFT, (slot + 1) << BLOCK_SHIFT):
        bits[j] = fill
    return slot


@_step
def _free_slot(bits, slot):
    """DirtyBitmap._free_slot: the slot heads the free list."""
    _put32(bits, slot << BLOCK_SHIFT, _get32(bits, 0))
    _put32(bits, 0, slot)


@_step
def _mark(bits, summary, blocks, b):
    """DirtyBitmap.mark of one granule: 1 if it turned dirty, else 0."""
    blk = b >> BLOCK_SHIFT
    v = summary[blk]
    c = v & COUNT_MASK
    if c == BLOCK:
        return 0
    if c == 0:                          # materialise: all clean
        slot = _take_slot(bits, 0)
        blocks[blk] = 1
        bits[_groups_at(summary) + (blk >> GROUP_SHIFT)] = 1
    else:
        slot = v >> COUNT_BITS
    i = (slot << BLOCK_SHIFT) | (b & (BLOCK - 1))
    if bits[i]:
        return 0
    bits[i] = 1
    c += 1
    if c == BLOCK:                      # all dirty: no bytes
        _free_slot(bits, slot)
        slot = 0
    summary[blk] = c | (slot << COUNT_BITS)
    return 1


@_step
def _find(flags, words, i, stop):
    """The first non-zero byte of ``flags[i:stop]``, or -1: what
    ``bytearray.find(1, i, stop)`` does with memchr, eight bytes at a time
    (``words`` is the same buffer as 64-bit words, its tail bytes left out)."""
    while i < stop and i & 7:
        if flags[i]:
            return i
        i += 1
    w, last = i >> 3, stop >> 3
    if last > words.shape[0]:
        last = words.shape[0]
    # (eight words at a time first, one test for 64 bytes: a search across
    # a 64 TiB disk's group bytes, or a mixed block's 512 bytes)
    while w + 8 <= last and not (words[w] | words[w + 1] | words[w + 2] | words[w + 3]
                                 | words[w + 4] | words[w + 5] | words[w + 6] | words[w + 7]):
        w += 8
    while w < last:
        if words[w]:
            for j in range(w << 3, (w << 3) + 8):
                if flags[j]:
                    return j
        w += 1
    if w << 3 > i:
        i = w << 3
    while i < stop:
        if flags[i]:
            return i
        i += 1
    return -1


@_step
def _find_block(bits, bit_words, summary, blocks, block_words, i, stop):
    """The first flagged block of ``[i, stop)``, or -1 (DirtyBitmap's
    ``blocks.find(1, i, stop)``): the rest of ``i``'s group, then the group
    bytes, each group they point at checked (and its byte cleared if none
    of its blocks is flagged: a flag cleared leaves its group's byte set)."""
    edge = ((i >> GROUP_SHIFT) + 1) << GROUP_SHIFT
    found = _find(blocks, block_words, i, edge if edge < stop else stop)
    if found >= 0 or edge >= stop:
        return found
    at = _groups_at(summary)
    nblocks = summary.shape[0]
    last = ((stop - 1) >> GROUP_SHIFT) + 1
    g = edge >> GROUP_SHIFT
    while g < last:
        g = _find(bits, bit_words, at + g, at + last)
        if g < 0:
            return -1
        g -= at
        lo = g << GROUP_SHIFT
        hi = lo + (1 << GROUP_SHIFT)
        whole = hi <= stop or stop == nblocks
        if hi > stop:
            hi = stop
        found = _find(blocks, block_words, lo, hi)
        if found >= 0:
            return found
        if whole:
            bits[at + g] = 0
        g += 1
    return -1
