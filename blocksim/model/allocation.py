"""Cluster allocation of one image layer.

qcow2 (and a thin-provisioned raw volume) allocates storage a cluster at a
time, on the first write that touches the cluster.  :class:`AllocationMap`
remembers which clusters a layer has allocated, so that

- a thin device can refuse a write that needs clusters past its capacity;
- reads fall through to the backing file where this layer has nothing;
- a stream job can skip what the top layer already holds, and a ``top`` sync
  mirror can copy only the top layer.

The disk is cut into pages of 32768 clusters (2 GiB of disk at 64 KiB
clusters); memory grows with the clusters allocated, not with the disk's
size.  Each page has two words in ``_meta`` (an ``array('q')``): where its
clusters are listed and how many it has allocated.  A page is

- *empty* (no cluster) or *full* (every cluster: a disk full of data, a
  mirror's source, its target once copied, costs nothing per page);
- *sparse*: a sorted run of its clusters' offsets, two bytes each, in a
  segment of ``_sparse`` (one ``array('H')`` for every page: a segment of
  4, 8, ... 2048 entries, replaced by one twice as large when full, the
  old one on a free list for its size, and the segments in use moved
  together when those left behind fill the pool, :meth:`AllocationMap._grow`);
  scattered guest writes over a 64 TiB thin disk allocate a cluster or two
  in each of its 32768 pages, which as byte pages held 1 GiB;
- *dense*: past ``_SPARSE_MAX`` clusters, or when a fill of many clusters
  makes it, one byte a cluster (1 = allocated) in a slot of 32 KiB of
  ``_dense`` (a ``bytearray``; a slot goes back to a free list when its
  page turns full).

Python reads the arrays directly (``bisect`` over a segment, ``count`` and
``find`` over a slot); every change is made by compiled code (numba, on
first use) over the same memory, one call for a range or for a whole
batch of clusters (:meth:`AllocationMap.set_each`: a guest's writes, a
mirror's copies handed in by the compiled copy loop), with no Python per
cluster.  The pools grow from Python (a compiled call stops where it
would lack room, and is called again).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterator

import numpy as np

from ..engine import Compiled, prefetch

#: compiled with numba on first use (engine/compiled.py); without numba's
#: runtime (the steps allocate nothing)
njit = Compiled(globals())
_step = njit(cache=True, _nrt=False)

PAGE_BITS = 15
_PAGE = 1 << PAGE_BITS
_MASK = _PAGE - 1
#: a sparse page holds at most this many clusters (4 KiB of offsets, an
#: eighth of a byte page); a fill of more clusters at once makes a byte page
_SPARSE_MAX = 2048
_SPARSE_FILL = 64
#: a sparse page's ``_meta`` word: its segment's first entry above
#: _CAP_BITS bits holding log2 of its capacity (at least _MIN_CAP: the word
#: is > 0, and a free segment holds the next one's place, 64 bits)
_CAP_BITS = 4
_MIN_CAP = 2
#: ``_state``: entries of ``_sparse`` handed out, slots of ``_dense`` handed
#: out, the free slots' list (its first slot + 1, 0 if none; each free slot
#: holds the next one + 1 in its first 8 bytes), then per capacity (log2)
#: the free segments' list (the first one's entry + 1, 0 if none; each holds
#: the next one's + 1 in its first four entries)
_SPARSE_USED, _DENSE_USED, _DENSE_FREE, _SEGMENTS_FREE = range(4)
_STATE = _SEGMENTS_FREE + 12


class AllocationMap:
    __slots__ = ("nclusters", "count", "_meta", "_sparse", "_dense", "_state", "_views")

    def __init__(self, nclusters: int):
        self.nclusters = nclusters
        self.count = 0                      # allocated clusters
        npages = (nclusters >> PAGE_BITS) + 1
        # per page: where its clusters are (0: nowhere, > 0 a sparse segment,
        # -1 - slot a dense slot) and how many (_PAGE: full)
        self._meta = array("q", bytes(16 * npages))
        self._sparse = array("H", bytes(2 * 2 * _SPARSE_MAX))
        self._dense = bytearray(_PAGE)
        self._state = array("q", bytes(8 * _STATE))
        self._views = None
        # (its compiled code loaded with the map, as the simulation is set
        # up: not at the run's first write, a second of numba's loading
        # before the simulated clock first moves)
        njit.load()

    # -- reading (Python, over the arrays) ------------------------------------
    def is_set(self, c: int) -> bool:
        p = c >> PAGE_BITS
        meta = self._meta
        n = meta[2 * p + 1]
        if not n:
            return False
        if n == _PAGE:
            return True
        loc = meta[2 * p]
        i = c & _MASK
        if loc > 0:
            off = loc >> _CAP_BITS
            sparse = self._sparse
            k = bisect_left(sparse, i, off, off + n)
            return k < off + n and sparse[k] == i
        return self._dense[((-1 - loc) << PAGE_BITS) + i] == 1

    def _count(self, p: int, a: int, b: int) -> int:
        """Allocated clusters of page ``p`` in ``[a, b)`` (offsets in it)."""
        meta = self._meta
        n = meta[2 * p + 1]
        if not n:
            return 0
        if n == _PAGE:
            return b - a
        loc = meta[2 * p]
        if loc > 0:
            off = loc >> _CAP_BITS
            sparse = self._sparse
            return bisect_left(sparse, b, off, off + n) - bisect_left(sparse, a, off, off + n)
        base = (-1 - loc) << PAGE_BITS
        return self._dense.count(1, base + a, base + b)

    def page_kind(self, p: int) -> str:
        """How page ``p`` is held: "empty", "full", "sparse" or "dense"."""
        n, loc = self._meta[2 * p + 1], self._meta[2 * p]
        return ("empty" if not n else "full" if n == _PAGE
                else "sparse" if loc > 0 else "dense")

    def sparse_entries(self) -> int:
        """Entries of the sparse segments handed out (two bytes each)."""
        return self._state[_SPARSE_USED]

    def _segments(self, c0: int, c1: int):
        while c0 < c1:
            p = c0 >> PAGE_BITS
            edge = min(c1, (p + 1) << PAGE_BITS)
            yield p, c0 & _MASK, (edge - 1 & _MASK) + 1
            c0 = edge

    def count_set(self, c0: int, c1: int) -> int:
        p = c0 >> PAGE_BITS
        if (c1 - 1) >> PAGE_BITS == p:
            # inside one page (every request but those of several GiB): no
            # generator of segments
            return self._count(p, c0 & _MASK, (c1 - 1 & _MASK) + 1) if c0 < c1 else 0
        total = 0
        for p, a, b in self._segments(c0, c1):
            total += self._count(p, a, b)
        return total

    # -- changing (compiled) ------------------------------------------------------
    def set_range(self, c0: int, c1: int) -> int:
        """Allocate clusters ``[c0, c1)``; returns how many were new."""
        if c0 >= c1:
            return 0
        meta = self._meta
        p = c0 >> PAGE_BITS
        if meta[2 * p + 1] == _PAGE and (c1 - 1) >> PAGE_BITS == p:
            return 0                        # (a full page: nothing to do)
        new = 0
        while True:
            # (the views are not held here: _grow needs them gone)
            c0, added = _set_range(*self._arrays(), c0, c1)
            new += added
            if c0 == c1:
                break
            self._grow()
        self.count += new
        return new

    def set_each(self, clusters) -> int:
        """``set_range(c, c + 1)`` for each cluster ``c`` of ``clusters``
        (ints or an int64 array, in any order, repeats allowed); returns how
        many were new.  A guest's scattered writes handed in at once, one
        compiled call."""
        clusters = np.asarray(clusters, dtype=np.int64)
        i, new = 0, 0
        while i < len(clusters):
            i, added = _set_each(*self._arrays(), clusters, i)
            new += added
            if i < len(clusters):
                self._grow()
        self.count += new
        return new

    def set_ranges(self, ranges: np.ndarray) -> int:
        """``set_range(lo, hi)`` for each row ``lo, hi`` of ``ranges`` (an
        int64 array of two columns); returns how many were new."""
        i, c, new = 0, -1, 0
        while i < len(ranges):
            i, c, added = _set_ranges(*self._arrays(), ranges, i, c)
            new += added
            if i < len(ranges):
                self._grow()
        self.count += new
        return new

    def _arrays(self) -> tuple:
        """The arrays as numpy arrays, for compiled code (the same memory)."""
        views = self._views
        if views is None:
            views = self._views = (np.frombuffer(self._meta, dtype=np.int64),
                                   np.frombuffer(self._state, dtype=np.int64),
                                   np.frombuffer(self._sparse, dtype=np.uint16),
                                   np.frombuffer(self._dense, dtype=np.uint8))
        return views

    def _grow(self) -> None:
        """Room for the next page's change: a segment of _SPARSE_MAX entries
        and a free dense slot (compiled code stops short of either)."""
        self._views = None              # (a buffer exported cannot grow)
        state, sparse = self._state, self._sparse
        if len(sparse) - state[_SPARSE_USED] < _SPARSE_MAX:
            # The segments in use moved together if those given back and
            # not taken again are half as many as those or more (pages growing in
            # step, as under writes at random, each outgrow a segment no
            # other page takes again), else the pool grown by half: its
            # memory follows the clusters listed.
            meta = np.frombuffer(self._meta, dtype=np.int64)
            locs = meta[0::2]
            pages = np.flatnonzero(locs > 0)
            live = int((1 << (locs[pages] & ((1 << _CAP_BITS) - 1))).sum())
            if 3 * live <= 2 * state[_SPARSE_USED]:
                order = pages[np.argsort(locs[pages] >> _CAP_BITS, kind="stable")]
                _compact(meta, np.frombuffer(state, dtype=np.int64),
                         np.frombuffer(sparse, dtype=np.uint16), order)
            del meta, locs
            if len(sparse) - state[_SPARSE_USED] < _SPARSE_MAX:
                sparse.frombytes(bytes(2 * max(len(sparse) >> 1, _SPARSE_MAX)))
        if not state[_DENSE_FREE] and len(self._dense) < (state[_DENSE_USED] + 1) << PAGE_BITS:
            self._dense.extend(bytes(max(len(self._dense), _PAGE)))

    def all_set(self, c0: int, c1: int) -> bool:
        return self.count_set(c0, c1) == c1 - c0

    def any_set(self, c0: int, c1: int) -> bool:
        return self.count_set(c0, c1) > 0

    def run_at(self, c0: int, c1: int) -> tuple[bool, int]:
        """Whether cluster ``c0`` is allocated, and the first cluster in
        ``(c0, c1)`` that differs (``c1`` if none): a ``bytearray.find``
        or a bisect per page, so a long unallocated stretch costs nothing
        per cluster."""
        value = self.is_set(c0)
        meta, sparse = self._meta, self._sparse
        c = c0
        while c < c1:
            p = c >> PAGE_BITS
            edge = min(c1, (p + 1) << PAGE_BITS)
            n = meta[2 * p + 1]
            if not n:
                if value:
                    return value, c
            elif n == _PAGE:
                if not value:
                    return value, c
            else:
                a, b = c & _MASK, ((edge - 1) & _MASK) + 1
                loc = meta[2 * p]
                if loc > 0:
                    off = loc >> _CAP_BITS
                    end = off + n
                    k = bisect_left(sparse, a, off, end)
                    if value:               # the first cluster of [a, b) not listed
                        while k < end and sparse[k] == a and a < b:
                            k += 1
                            a += 1
                        i = a if a < b else -1
                    else:                   # the first one listed in [a, b)
                        i = sparse[k] if k < end and sparse[k] < b else -1
                else:
                    base = (-1 - loc) << PAGE_BITS
                    i = self._dense.find(0 if value else 1, base + a, base + b)
                    if i >= 0:
                        i -= base
                if i >= 0:
                    return value, (p << PAGE_BITS) + i
            c = edge
        return value, c1

    def runs(self) -> Iterator[tuple[int, int]]:
        """Allocated cluster runs ``(c0, c1)`` in order, merged across pages."""
        cur = None
        meta = np.frombuffer(self._meta, dtype=np.int64)
        for p in np.flatnonzero(meta[1::2]).tolist():
            n, loc = self._meta[2 * p + 1], self._meta[2 * p]
            if n == _PAGE:
                page = np.ones(_PAGE, dtype=bool)
            elif loc > 0:
                off = loc >> _CAP_BITS
                page = np.zeros(_PAGE, dtype=bool)
                page[np.frombuffer(self._sparse, dtype=np.uint16)[off:off + n]] = True
            else:
                base = (-1 - loc) << PAGE_BITS
                page = np.frombuffer(self._dense, dtype=bool)[base:base + _PAGE].copy()
            base = p << PAGE_BITS
            # edges of runs of True inside the page
            padded = np.concatenate(([False], page, [False]))
            edges = np.flatnonzero(padded[1:] != padded[:-1])
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                a += base
                b = min(b + base, self.nclusters)
                if cur is not None and cur[1] == a:
                    cur = (cur[0], b)
                else:
                    if cur is not None:
                        yield cur
                    cur = (a, b)
        del meta
        if cur is not None:
            yield cur


# -- the compiled changes ---------------------------------------------------------
@_step
def _take_dense(state, dense):
    """A free dense slot, zeroed (the free list's head, else a new one)."""
    head = state[_DENSE_FREE]
    if head:
        slot = head - 1
        a = slot << PAGE_BITS
        nxt = 0
        for k in range(8):
            nxt |= np.int64(dense[a + k]) << (8 * k)
        state[_DENSE_FREE] = nxt
    else:
        slot = state[_DENSE_USED]
        state[_DENSE_USED] = slot + 1
    for j in range(slot << PAGE_BITS, (slot + 1) << PAGE_BITS):
        dense[j] = 0
    return slot


@_step
def _free_dense(state, dense, slot):
    a = slot << PAGE_BITS
    head = state[_DENSE_FREE]
    for k in range(8):
        dense[a + k] = (head >> (8 * k)) & 255
    state[_DENSE_FREE] = slot + 1


@_step
def _take_segment(state, sparse, cb):
    """A segment of ``1 << cb`` entries: a free one, else a new one."""
    head = state[_SEGMENTS_FREE + cb]
    if head:
        off = head - 1
        nxt = 0
        for k in range(4):
            nxt |= np.int64(sparse[off + k]) << (16 * k)
        state[_SEGMENTS_FREE + cb] = nxt
        return off
    off = state[_SPARSE_USED]
    state[_SPARSE_USED] = off + (1 << cb)
    return off


@_step
def _free_segment(state, sparse, off, cb):
    head = state[_SEGMENTS_FREE + cb]
    for k in range(4):
        sparse[off + k] = (head >> (16 * k)) & 0xFFFF
    state[_SEGMENTS_FREE + cb] = off + 1


@_step
def _compact(meta, state, sparse, order):
    """The sparse pages' segments (``order``: in the order of their places)
    moved to the pool's start, one after the other; no segment free."""
    to = 0
    for p in order:
        loc = meta[2 * p]
        off = loc >> _CAP_BITS
        cb = loc & ((1 << _CAP_BITS) - 1)
        for k in range(meta[2 * p + 1]):
            sparse[to + k] = sparse[off + k]
        meta[2 * p] = (to << _CAP_BITS) | cb
        to += 1 << cb
    state[_SPARSE_USED] = to
    for cb in range(_SEGMENTS_FREE, _STATE):
        state[cb] = 0


@_step
def _bisect(sparse, lo, hi, x):
    """bisect_left over ``sparse[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sparse[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_step
def _move_up(sparse, lo, hi, by):
    """``sparse[lo:hi]`` moved up by ``by`` entries (``by`` > 0), the last
    first.  Through views of the two ranges: the compiler then makes the
    loop wide (with a test that they do not overlap the wrong way), where
    the same loop over ``sparse`` itself moves an entry at a time (its
    indices may be negative, for all it knows).  A guest's scattered copies
    insert into sparse pages of a thousand entries or so: the hour's most
    of the target's allocation."""
    src = sparse[lo:hi]
    dst = sparse[lo + by:hi + by]
    for k in range(hi - lo - 1, -1, -1):
        dst[k] = src[k]


@_step
def _cap_bits(n):
    cb = _MIN_CAP
    while (1 << cb) < n:
        cb += 1
    return cb


@_step
def _fill(meta, state, sparse, dense, p, a, b):
    """Allocate ``[a, b)`` of page ``p`` (a < b); how many clusters were
    new, or -1 with nothing done if a pool lacks room (AllocationMap._grow)."""
    n = meta[2 * p + 1]
    if n == _PAGE:
        return 0
    if (sparse.shape[0] - state[_SPARSE_USED] < _SPARSE_MAX
            or (state[_DENSE_FREE] == 0 and dense.shape[0] < (state[_DENSE_USED] + 1) << PAGE_BITS)):
        return -1
    loc = meta[2 * p]
    if n == 0:
        if a == 0 and b == _PAGE:           # the whole page: full
            meta[2 * p + 1] = _PAGE
            return _PAGE
        if b - a <= _SPARSE_FILL:
            cb = _cap_bits(b - a)
            off = _take_segment(state, sparse, cb)
            for k in range(b - a):
                sparse[off + k] = a + k
            meta[2 * p] = (off << _CAP_BITS) | cb
            meta[2 * p + 1] = b - a
            return b - a
        loc = -1 - _take_dense(state, dense)
    elif loc > 0:
        off = loc >> _CAP_BITS
        cb = loc & ((1 << _CAP_BITS) - 1)
        lo = _bisect(sparse, off, off + n, a)
        hi = _bisect(sparse, lo, off + n, b)
        new = (b - a) - (hi - lo)
        if new == 0:
            return 0
        m = n + new
        if b - a <= _SPARSE_FILL and m <= _SPARSE_MAX:
            if m > (1 << cb):               # a segment twice as large (or more)
                old = cb
                cb = _cap_bits(m)
                to = _take_segment(state, sparse, cb)
                for k in range(off, lo):
                    sparse[to + k - off] = sparse[k]
                for k in range(off + n - 1, hi - 1, -1):
                    sparse[to + (k - off) + new] = sparse[k]
                meta[2 * p] = (to << _CAP_BITS) | cb
                lo += to - off
                _free_segment(state, sparse, off, old)
            else:                           # its tail moved up, in place
                _move_up(sparse, hi, off + n, new)
            for k in range(b - a):
                sparse[lo + k] = a + k
            meta[2 * p + 1] = m
            return new
        # a byte page
        slot = _take_dense(state, dense)
        base = slot << PAGE_BITS
        for k in range(off, off + n):
            dense[base + sparse[k]] = 1
        _free_segment(state, sparse, off, cb)
        loc = -1 - slot
    meta[2 * p] = loc
    base = (-1 - loc) << PAGE_BITS
    new = 0
    for i in range(base + a, base + b):
        if dense[i] == 0:
            dense[i] = 1
            new += 1
    n += new
    if n == _PAGE:                          # full: the slot back
        _free_dense(state, dense, -1 - loc)
        meta[2 * p] = 0
    meta[2 * p + 1] = n
    return new


@_step
def _set_range(meta, state, sparse, dense, c0, c1):
    """AllocationMap.set_range from ``c0``: where it stopped (``c1``: done;
    short of room before that cluster's page) and how many were new."""
    new = 0
    while c0 < c1:
        p = c0 >> PAGE_BITS
        edge = (p + 1) << PAGE_BITS
        if edge > c1:
            edge = c1
        r = _fill(meta, state, sparse, dense, p, c0 & _MASK, ((edge - 1) & _MASK) + 1)
        if r < 0:
            return c0, new
        new += r
        c0 = edge
    return c1, new


#: how many clusters ahead _set_each prefetches a page's segment
_AHEAD = 8


@_step
def _prefetch_page(meta, sparse, dense, c):
    """Prefetch what allocating cluster ``c`` will read: its sparse page's
    segment (its start, middle and end: where a bisection looks first), or
    its byte in a dense slot."""
    p = c >> PAGE_BITS
    n = meta[2 * p + 1]
    if n == 0 or n == _PAGE:
        return
    loc = meta[2 * p]
    if loc > 0:
        off = loc >> _CAP_BITS
        prefetch(sparse, off)
        prefetch(sparse, off + (n >> 1))
        prefetch(sparse, off + n - 1)
    else:
        prefetch(dense, ((-1 - loc) << PAGE_BITS) + (c & _MASK))


@_step
def _set_each(meta, state, sparse, dense, clusters, i):
    """AllocationMap.set_each from ``clusters[i]``: where it stopped and how
    many were new."""
    new = 0
    m = clusters.shape[0]
    for k in range(i, m):
        # (the lines that cluster k + _AHEAD will read prefetched, its page's
        # words those of k + 2 * _AHEAD: scattered clusters over a large
        # disk miss the caches, one wait after the other without)
        if k + 2 * _AHEAD < m:
            prefetch(meta, 2 * (clusters[k + 2 * _AHEAD] >> PAGE_BITS))
        if k + _AHEAD < m:
            _prefetch_page(meta, sparse, dense, clusters[k + _AHEAD])
        c = clusters[k]
        a = c & _MASK
        r = _fill(meta, state, sparse, dense, c >> PAGE_BITS, a, a + 1)
        if r < 0:
            return k, new
        new += r
    return clusters.shape[0], new


@_step
def _set_ranges(meta, state, sparse, dense, ranges, i, c):
    """AllocationMap.set_ranges from row ``i`` (from cluster ``c`` of it if
    not -1): where it stopped (row, cluster) and how many were new."""
    new = 0
    for k in range(i, ranges.shape[0]):
        c0 = ranges[k, 0] if c < 0 else c
        c = -1
        c0, added = _set_range(meta, state, sparse, dense, c0, ranges[k, 1])
        new += added
        if c0 < ranges[k, 1]:
            return k, c0, new
    return ranges.shape[0], -1, new
