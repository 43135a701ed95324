"""The guest's ledger: every write acknowledged to the guest.

A guest believes its disk holds what it was told was written.  The
:class:`Ledger` remembers exactly that, compactly (millions of writes in a
long run), so that the end of a run can prove every acknowledged write reads
back, or that its loss was recorded (see :mod:`blocksim.record.invariants`).  A
:class:`~blocksim.model.drive.Drive` appends to it once per acknowledged write.
"""

from __future__ import annotations

from array import array

import numpy as np

from ..engine import Compiled

#: compiled with numba on first use (engine/compiled.py), without numba's
#: runtime (nothing is allocated)
njit = Compiled(globals())


class Ledger:
    """Every write acknowledged to the guest, in acknowledgement order.

    A write is ``(offset, length, generation)``.  A long run acknowledges
    millions of them (an hour at 1000 IOPS is 3.6M), so the layout is chosen
    for bytes per write and for a cheap :meth:`append`:

    - offsets in blocks of the first write's length, in an ``array('I')``
      (4 B: a 1 TiB disk has 2**28 blocks of 4 KiB), widened once to byte
      offsets in an ``array('q')`` (8 B) by the first offset that is not a
      multiple of that length or whose block number does not fit;
    - generations in an ``array('I')`` (4 B), widened once to ``'q'`` by the
      first generation that does not fit (a run would need 4 billion writes);
    - lengths not at all while they equal :attr:`block_size`, the length of
      the first write; a write of another length is an *exception*, recorded
      as (index, length) in two side arrays.  A fio-like guest has no
      exceptions; a mix of block sizes pays 16 B per write of the other
      sizes.

    That is 8 B per write instead of 24 B for ``(start, end, generation)``
    triples (12 B until session 11), and :meth:`append` is two
    ``array.append`` calls, one division and a few comparisons.
    """

    __slots__ = ("_offsets", "_unit", "_gens", "block_size", "_odd_at", "_odd_len", "_held",
                 "_blocks")

    def __init__(self):
        # offsets // _unit ('I'), or byte offsets ('q') once widened (_unit 1)
        self._offsets = array("I")
        self._unit = 0                  # (0: no write yet)
        self._gens = array("I")
        self.block_size: int | None = None
        self._odd_at = array("q")       # indices of writes whose length != block_size
        self._odd_len = array("q")      # ... and their lengths
        # who holds rows of this ledger still to come, as the function that
        # hands them in (see hold), or None
        self._held = None
        self._blocks = None             # (extend's short runs: their blocks and generations)

    def hold(self, hand_in) -> None:
        """Rows of this ledger, the next ones in acknowledgement order, are
        held elsewhere (the compiled copy loop's buffer,
        :mod:`blocksim.engine.burst_kernel`) until ``hand_in()`` appends
        them: every other use of the ledger (a read, an append) calls it
        first, so nobody sees the ledger without them.  Rows held by
        someone else before are handed in first."""
        if self._held is not None and self._held != hand_in:
            self.catch_up()
        self._held = hand_in

    def catch_up(self) -> None:
        """Have the rows held elsewhere handed in (see :meth:`hold`)."""
        held = self._held
        if held is not None:
            self._held = None
            held()

    def append(self, offset: int, length: int, gen: int) -> None:
        """Record one acknowledged write (the guest request hot path)."""
        if self._held is not None:
            self.catch_up()
        try:
            self._gens.append(gen)
        except OverflowError:
            # negative or beyond 32 bits: from now on 8 B per generation
            self._gens = array("q", self._gens)
            self._gens.append(gen)
        if length != self.block_size:
            self._other_length(length)
        offsets = self._offsets
        if offsets.typecode == "I":
            unit = self._unit or self._first_unit(length)
            q, r = divmod(offset, unit)
            if not r and 0 <= q <= _MAX_BLOCK:
                offsets.append(q)
                return
            self._widen()
        self._offsets.append(offset)

    def _first_unit(self, length: int) -> int:
        """The unit of the compact offsets: the first write's length."""
        self._unit = length if length > 0 else 1
        return self._unit

    def _widen(self) -> None:
        """From block numbers to byte offsets, 8 B each, for good."""
        unit = self._unit or 1
        self._offsets = array("q", (np.frombuffer(self._offsets, dtype=np.uint32)
                                    .astype(np.int64) * unit).tobytes())
        self._unit = 1

    def extend(self, offsets, length: int, first_gen: int) -> None:
        """:meth:`append` for writes of ``length`` bytes at ``offsets`` (a
        sequence of ints, or an integer array) with generations
        ``first_gen``, ``first_gen + 1``, ... (a guest's quiet stretch,
        :mod:`blocksim.engine.stretch`)."""
        if self._held is not None:
            self.catch_up()
        n = len(offsets)
        if not n:
            return
        if (n <= _SHORT and length == self.block_size and self._offsets.typecode == "I"
                and self._gens.typecode == "I" and self._unit
                and 0 <= first_gen and first_gen + n - 1 <= 0xFFFFFFFF):
            # a short run of writes the compact columns take as they are (a
            # stretch through a backup's filter, a hundred writes or fewer):
            # their blocks checked and converted, and their generations
            # laid out, in one compiled pass; no generation widened, no odd
            # length (extend_with's numpy calls cost more than the writes)
            if self._blocks is None:
                self._blocks = np.empty((2, _SHORT), dtype=np.uint32)
            blocks, gens = self._blocks
            if _compact_blocks(np.asarray(offsets, dtype=np.int64), self._unit, first_gen,
                               blocks, gens):
                self._gens.frombytes(gens[:n].tobytes())
                self._offsets.frombytes(blocks[:n].tobytes())
                return
        self.extend_with(offsets, length, np.arange(first_gen, first_gen + n, dtype=np.int64))

    def extend_with(self, offsets, length: int, gens: np.ndarray) -> None:
        """:meth:`append` for writes of ``length`` bytes at ``offsets`` with
        the generations ``gens`` (an increasing int64 array, one each:
        writes a compiled loop ran, :mod:`blocksim.engine.burst_kernel`)."""
        if self._held is not None:
            self.catch_up()
        n = len(offsets)
        if not n:
            return
        if self._gens.typecode == "I" and (gens[0] < 0 or gens[n - 1] > 0xFFFFFFFF):
            self._gens = array("q", self._gens)     # (as append widens them)
        self._gens.frombytes(gens.astype(
            np.uint32 if self._gens.typecode == "I" else np.int64).tobytes())
        if length != self.block_size:
            if self.block_size is None:
                self.block_size = length
            else:
                at = len(self._offsets)
                self._odd_at.extend(range(at, at + n))
                self._odd_len.extend([length] * n)
        offsets = np.asarray(offsets, dtype=np.int64)
        if self._offsets.typecode == "I":
            unit = self._unit or self._first_unit(length)
            q = offsets // unit
            if not (q * unit != offsets).any() and q.min() >= 0 and q.max() <= _MAX_BLOCK:
                self._offsets.frombytes(q.astype(np.uint32).tobytes())
                return
            self._widen()
        self._offsets.frombytes(offsets.tobytes())

    def _other_length(self, length: int) -> None:
        if self.block_size is None:
            self.block_size = length
        else:
            self._odd_at.append(len(self._offsets))
            self._odd_len.append(length)

    def __len__(self) -> int:
        if self._held is not None:
            self.catch_up()
        return len(self._offsets)

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded writes (without the arrays' spare capacity)."""
        if self._held is not None:
            self.catch_up()
        return sum(len(a) * a.itemsize
                   for a in (self._offsets, self._gens, self._odd_at, self._odd_len))

    def rows(self):
        """The writes as ``(start, end, generation)``, in acknowledgement order."""
        if self._held is not None:
            self.catch_up()
        bs = self.block_size
        unit = self._unit if self._offsets.typecode == "I" else 1
        odd = zip(self._odd_at, self._odd_len)
        at, length = next(odd, (-1, 0))
        for i, (a, g) in enumerate(zip(self._offsets, self._gens)):
            a *= unit
            if i == at:
                yield a, a + length, g
                at, length = next(odd, (-1, 0))
            else:
                yield a, a + bs, g

    def by_block(self) -> BlockOrder | None:
        """The ledger sorted by block, or None unless all writes are the same
        size and aligned to it (only then is "the last write of each block"
        the whole story).

        The sort is what costs memory, so it sorts one int64 per write: the
        block number shifted left past the write's index, ORed with the index.
        Sorting those keys in place (no stability needed: they are distinct)
        orders the writes by block and, within a block, by acknowledgement,
        so the last key of each block is the write that wins.  The keys are
        built a chunk at a time, so the only full-size temporary is the key
        array itself (8 B per write).  Should block and index not fit in 63
        bits together, a stable argsort does the same job with about three
        times the memory.
        """
        if self._held is not None:
            self.catch_up()
        if self._odd_at:
            return None
        bs = self.block_size
        n = len(self._offsets)
        gens = np.frombuffer(self._gens, dtype=_NP_TYPES[self._gens.typecode])
        if self._offsets.typecode == "I" and self._unit == bs:
            # block numbers already (the unit is the first write's length)
            return self._sorted(np.frombuffer(self._offsets, dtype=np.uint32), n, bs, gens)
        offsets = np.frombuffer(self._offsets, dtype=_NP_TYPES[self._offsets.typecode])
        if self._offsets.typecode == "I":       # (in units of another size)
            offsets = offsets.astype(np.int64) * self._unit
        for i in range(0, n, _CHUNK):
            if (offsets[i:i + _CHUNK] % bs).any():
                return None
        return self._sorted(offsets, n, bs, gens, bs)

    @staticmethod
    def _sorted(offsets, n: int, bs: int, gens, unit: int = 1) -> BlockOrder:
        """:meth:`by_block` of ``offsets`` (block numbers, or byte offsets
        with ``unit`` the block size: aligned ones)."""
        first, last = int(offsets.min()) // unit, int(offsets.max()) // unit
        shift = (n - 1).bit_length()
        if first >= 0 and ((last + 1) << shift) < 1 << 63:
            keys = np.empty(n, dtype=np.int64)
            if n >= _RADIX_FROM:
                # (a run's ledger, millions of keys: made in one compiled
                # pass, and sorted in place by their digits, in about 40 %
                # of numpy's time, nothing more allocated; the keys are
                # distinct, so any sort gives the same order)
                counting = _block_keys(offsets, unit, shift, keys, gens)
                _sort_keys(keys, np.empty((_RADIX_LEVELS * _RADIX + 1, 3), dtype=np.int64),
                           np.empty(_RADIX + 1, dtype=np.int64),
                           np.empty(_RADIX, dtype=np.int64))
                return BlockOrder(keys, shift, None, bs, gens, counting)
            for i in range(0, n, _CHUNK):
                chunk = offsets[i:i + _CHUNK].astype(np.int64) // unit
                chunk <<= shift
                chunk |= np.arange(i, i + len(chunk), dtype=np.int64)
                keys[i:i + _CHUNK] = chunk
            keys.sort()
            return BlockOrder(keys, shift, None, bs, gens)
        index = np.argsort(offsets, kind="stable")
        return BlockOrder(offsets[index].astype(np.int64) // unit, 0, index, bs, gens)


# numpy's view of each array typecode a ledger column can have
_NP_TYPES = {"q": np.int64, "I": np.uintc}
# the largest block number a compact offset holds
_MAX_BLOCK = 0xFFFFFFFF
_CHUNK = 1 << 16
#: the longest run of writes :meth:`Ledger.extend` converts in one compiled pass
_SHORT = 4096


#: from how many keys :meth:`Ledger._sorted` sorts with :func:`_sort_keys`
#: (fewer: numpy's sort, and numba left unloaded for a short run's ledger)
_RADIX_FROM = 1 << 16
#: the digits of :func:`_sort_keys`: 10 bits, 1,024 buckets (of the widths
#: tried on a 1 TiB hour's 3.6 M keys, 8 to 12 bits, the fastest)
_RADIX_BITS = 10
_RADIX = 1 << _RADIX_BITS
#: the most levels of digits a non-negative int64 has
_RADIX_LEVELS = -(-63 // _RADIX_BITS)
#: a bucket this small is finished by insertion
_RADIX_SMALL = 24


@njit(cache=True, _nrt=False)
def _block_keys(offsets, unit, shift, keys, gens):
    """``keys[i] = (offsets[i] // unit) << shift | i`` (the offsets not
    negative): :meth:`Ledger._sorted`'s keys, in one pass; and whether
    the generations count up by one from the first, ``gens[i] == gens[0]
    + i`` (a guest's writes, each a fresh generation, as the only writer
    of generations: :class:`BlockOrder` then tells a write's generation
    from its index, with no read of ``gens``)."""
    counting = True
    g0 = np.int64(gens[0])
    for i in range(offsets.shape[0]):
        keys[i] = ((np.int64(offsets[i]) // unit) << shift) | i
        if np.int64(gens[i]) != g0 + i:
            counting = False
    return counting


@njit(cache=True, _nrt=False)
def _insert_sort(x, lo, hi):
    """Sort ``x[lo:hi]`` in place by insertion (a few keys)."""
    for i in range(lo + 1, hi):
        v = x[i]
        j = i
        while j > lo and x[j - 1] > v:
            x[j] = x[j - 1]
            j -= 1
        x[j] = v


@njit(cache=True, _nrt=False)
def _sort_keys(x, stack, starts, nxt):
    """Sort the non-negative int64 keys ``x`` in place, ascending: a
    most-significant-digit radix sort that permutes each range into its
    buckets in place (the "American flag" sort: each key swapped straight
    to its bucket's next free place), digit after digit from the highest
    bit in which the keys differ, a bucket of at most :data:`_RADIX_SMALL`
    keys finished by insertion.  Its workspace: ``stack`` (the ranges still
    to sort: at most ``_RADIX`` per level, ``_RADIX_LEVELS * _RADIX + 1``
    rows of (start, end, bits left)), ``starts`` (``_RADIX + 1``) and
    ``nxt`` (``_RADIX``).  A sort of millions of keys at random over a
    large disk, where numpy's comparison sort is the ledger audit's
    largest part."""
    n = x.shape[0]
    if n < 2:
        return
    lo_key = x[0]
    hi_key = x[0]
    for i in range(1, n):
        v = x[i]
        if v < lo_key:
            lo_key = v
        elif v > hi_key:
            hi_key = v
    # (the bits above the highest one in which the keys differ are the same
    # for all: no digit there)
    differ = lo_key ^ hi_key
    bits = 0
    while (differ >> bits) > 0:
        bits += 1
    stack[0, 0] = 0
    stack[0, 1] = n
    stack[0, 2] = bits
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        bits = stack[top, 2]
        if hi - lo <= _RADIX_SMALL:
            _insert_sort(x, lo, hi)
            continue
        if bits <= 0:                   # (all equal)
            continue
        shift = bits - _RADIX_BITS
        if shift < 0:
            shift = 0
        mask = (1 << (bits - shift)) - 1
        nb = mask + 1
        for b in range(nb + 1):
            starts[b] = 0
        for i in range(lo, hi):
            starts[((x[i] >> shift) & mask) + 1] += 1
        starts[0] = lo
        for b in range(nb):
            starts[b + 1] += starts[b]
            nxt[b] = starts[b]
        # each bucket filled in turn: a key out of place goes to its own
        # bucket's next free place, and the key there comes back in hand
        for b in range(nb):
            end = starts[b + 1]
            while nxt[b] < end:
                v = x[nxt[b]]
                d = (v >> shift) & mask
                while d != b:
                    w = x[nxt[d]]
                    x[nxt[d]] = v
                    nxt[d] += 1
                    v = w
                    d = (v >> shift) & mask
                x[nxt[b]] = v
                nxt[b] += 1
        if shift > 0:
            for b in range(nb):
                if starts[b + 1] - starts[b] > 1:
                    stack[top, 0] = starts[b]
                    stack[top, 1] = starts[b + 1]
                    stack[top, 2] = shift
                    top += 1


@njit(cache=True, _nrt=False)
def _compact_blocks(offsets, unit, first_gen, out, gens):
    """``out[:n] = offsets // unit`` and ``gens[:n] = first_gen + i`` (n =
    len(offsets); generations a compact column holds) if every offset is a
    block (a multiple of ``unit``) whose number a compact column holds
    (``0 <= block <= _MAX_BLOCK``); else False, ``out`` left half done."""
    for i in range(offsets.shape[0]):
        o = offsets[i]
        q = o // unit
        if o < 0 or q * unit != o or q > 0xFFFFFFFF:
            return False
        out[i] = q
        gens[i] = first_gen + i
    return True


class BlockOrder:
    """A same-size aligned ledger sorted by block (see :meth:`Ledger.by_block`).

    ``keys`` is sorted; ``keys >> shift`` is the block of each write and its
    index in the ledger is ``keys & (2**shift - 1)`` or, when ``index`` is
    given, ``index`` at the same position.
    """

    __slots__ = ("_keys", "_shift", "_index", "_bs", "_gens", "_first", "_last", "_counting")

    def __init__(self, keys, shift, index, bs, gens, counting: bool = False):
        self._keys, self._shift, self._index = keys, shift, index
        self._bs, self._gens = bs, gens
        #: the generations count up by one from the first (write ``i``'s is
        #: ``gens[0] + i``): :meth:`blocks` computes them from the indices,
        #: where reading them took a random access per block (a million
        #: cache misses over the 14 MiB of an hour's generations)
        self._counting = counting
        self._first = int(keys[0]) >> shift
        self._last = int(keys[-1]) >> shift

    def block_range(self) -> tuple[int, int]:
        """The first and the last block written."""
        return self._first, self._last

    @property
    def block_size(self) -> int:
        return self._bs

    def _position(self, block: int) -> int:
        """Index in ``keys`` of the first write to ``block`` or to a later one."""
        if block <= self._first:
            return 0
        if block > self._last:
            return len(self._keys)
        # between the first and the last block: block << shift fits in int64
        return int(np.searchsorted(self._keys, block << self._shift))

    def next_block(self, block: int) -> int | None:
        """The first written block at or after ``block``, or None: lets a walk
        over the disk jump across regions the guest never wrote."""
        i = self._position(block)
        if i == len(self._keys):
            return None
        return int(self._keys[i]) >> self._shift

    def block_after(self, block: int, writes: int) -> int:
        """A block past ``block`` such that ``[block, result)`` holds at most
        ``writes`` acknowledged writes (or all the rest), though never less
        than the one block ``block``: how a walk bounds the size of the
        arrays it builds per step, whatever the density of the ledger."""
        i = self._position(block) + writes
        if i >= len(self._keys):
            return max(self._last, block) + 1
        return max(int(self._keys[i]) >> self._shift, block + 1)

    def winners(self, b0: int, b1: int):
        """The runs ``(start, end, generation)`` of blocks ``[b0, b1)`` that
        were written, by offset, each with its last acknowledged generation;
        None if none was written."""
        found = self.blocks(b0, b1)
        if found is None:
            return None
        starts, gens = found
        return zip(starts.tolist(), (starts + self._bs).tolist(), gens.tolist())

    def blocks(self, b0: int, b1: int):
        """:meth:`winners` as numpy arrays: ``(starts, generations)``, the
        offsets of the blocks of ``[b0, b1)`` that were written (int64, in
        increasing order) and their last acknowledged generations (the
        ledger's dtype); None if none was written.  Each block is
        ``[start, start + block_size)``."""
        keys, shift = self._keys, self._shift
        b1 = min(b1, self._last + 1)     # keeps b1 << shift inside int64
        lo = int(np.searchsorted(keys, b0 << shift))
        hi = int(np.searchsorted(keys, b1 << shift))
        if lo >= hi:
            return None
        # the slice holds whole blocks (it is cut at block boundaries), so the
        # last entry of each block inside it is that block's last write
        part = keys[lo:hi]
        blocks = part >> shift
        last = np.empty(len(blocks), dtype=bool)
        np.not_equal(blocks[1:], blocks[:-1], out=last[:-1])
        last[-1] = True
        if self._index is None:
            index = part[last] & ((1 << shift) - 1)
        else:
            index = self._index[lo:hi][last]
        if self._counting:
            gens = self._gens
            return blocks[last] * self._bs, (index + int(gens[0])).astype(gens.dtype)
        return blocks[last] * self._bs, self._gens[index]
