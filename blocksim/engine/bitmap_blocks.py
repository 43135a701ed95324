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
- :func:`_mark`, one granule marked dirty.

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
