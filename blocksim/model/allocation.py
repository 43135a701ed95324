"""Cluster allocation of one image layer.

qcow2 (and a thin-provisioned raw volume) allocates storage a cluster at a
time, on the first write that touches the cluster.  :class:`AllocationMap`
remembers which clusters a layer has allocated, so that

- a thin device can refuse a write that needs clusters past its capacity;
- reads fall through to the backing file where this layer has nothing;
- a stream job can skip what the top layer already holds, and a ``top`` sync
  mirror can copy only the top layer.

It is a lazily created set of pages (32768 clusters, 2 GiB of disk at
64 KiB clusters, per page): memory grows with the clusters allocated, not
with the disk's size.  A page with few clusters is a sorted ``array('H')``
of their offsets in the page (*sparse*: 2 bytes a cluster; scattered guest
writes over a 64 TiB thin disk allocate a cluster or two in each of its
32768 pages, which as byte pages held 1 GiB); past ``_SPARSE_MAX`` clusters,
or when a fill of many clusters makes it, a page is a ``bytearray``, one
byte a cluster (1 = allocated), so that the common question of a guest
write, "is this one cluster allocated?", is one dict lookup and one
``bytearray`` index (a numpy scalar costs several times more); ranges are
counted and filled in C by ``bytearray.count`` and slice assignment.
Clusters are never freed, so a page once fully allocated never changes
again: it becomes one shared read-only page, and a disk full of data (a
mirror's source, its target once copied) costs no memory per page (32 MiB
less for the two disks of a 1 TiB mirror).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterator

import numpy as np

PAGE_BITS = 15
_PAGE = 1 << PAGE_BITS
_MASK = _PAGE - 1
_ONES = memoryview(b"\x01" * _PAGE)
_FULL = bytes(_ONES)            # every page fully allocated (never written again)
#: a sparse page holds at most this many clusters (4 KiB of offsets, an
#: eighth of a byte page); a fill of more clusters at once makes a byte page
_SPARSE_MAX = 2048
_SPARSE_FILL = 64


class AllocationMap:
    __slots__ = ("nclusters", "count", "_pages")

    def __init__(self, nclusters: int):
        self.nclusters = nclusters
        self.count = 0                      # allocated clusters
        self._pages: dict[int, bytearray] = {}

    def is_set(self, c: int) -> bool:
        page = self._pages.get(c >> PAGE_BITS)
        if page is None:
            return False
        i = c & _MASK
        if page.__class__ is array:
            k = bisect_left(page, i)
            return k < len(page) and page[k] == i
        return page[i] == 1

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
            page = self._pages.get(p)
            return 0 if page is None else _count(page, c0 & _MASK, (c1 - 1 & _MASK) + 1)
        total = 0
        for p, a, b in self._segments(c0, c1):
            page = self._pages.get(p)
            if page is not None:
                total += _count(page, a, b)
        return total

    def set_range(self, c0: int, c1: int) -> int:
        """Allocate clusters ``[c0, c1)``; returns how many were new."""
        p = c0 >> PAGE_BITS
        if c0 < c1 and (c1 - 1) >> PAGE_BITS == p:
            # inside one page (a guest write, a copy): no generator of segments
            page = self._pages.get(p)
            if page.__class__ is bytearray and c1 - c0 == 1:    # one cluster: one index
                i = c0 & _MASK
                if page[i]:
                    return 0
                page[i] = 1
                self.count += 1
                return 1
            new = self._fill(p, page, c0 & _MASK, (c1 - 1 & _MASK) + 1)
            self.count += new
            return new
        new = 0
        pages = self._pages
        for p, a, b in self._segments(c0, c1):
            new += self._fill(p, pages.get(p), a, b)
        self.count += new
        return new

    def set_each(self, clusters) -> int:
        """``set_range(c, c + 1)`` for each cluster ``c`` of ``clusters``
        (ints, in any order, repeats allowed); returns how many were new.
        A guest's scattered writes handed in at once (a write into a sparse
        page is a bisect and an insert)."""
        pages = self._pages
        new = 0
        for c in clusters:
            p = c >> PAGE_BITS
            page = pages.get(p)
            i = c & _MASK
            if page.__class__ is array and len(page) < _SPARSE_MAX:
                k = bisect_left(page, i)
                if k == len(page) or page[k] != i:
                    page.insert(k, i)
                    new += 1
            elif page is None:
                pages[p] = array("H", (i,))
                new += 1
            elif page is not _FULL:
                new += self._fill(p, page, i, i + 1)
        self.count += new
        return new

    def _fill(self, p: int, page, a: int, b: int) -> int:
        """Allocate ``[a, b)`` of page ``p`` (``page``, or None); returns how
        many clusters were new."""
        if page is None:
            if b - a <= _SPARSE_FILL:
                self._pages[p] = array("H", range(a, b))
                return b - a
            page = self._pages[p] = bytearray(_PAGE)
        elif page.__class__ is array:
            lo, hi = bisect_left(page, a), bisect_left(page, b)
            new = (b - a) - (hi - lo)
            if not new:
                return 0
            if b - a <= _SPARSE_FILL and len(page) + new <= _SPARSE_MAX:
                page[lo:hi] = array("H", range(a, b))
                return new
            dense = bytearray(_PAGE)
            for i in page:
                dense[i] = 1
            page = self._pages[p] = dense
        elif page is _FULL:
            return 0
        new = (b - a) - page.count(1, a, b)
        if new:
            page[a:b] = _ONES[:b - a]
            if b == _PAGE:
                self._share_if_full(p, page)
        return new

    def _share_if_full(self, p: int, page: bytearray) -> None:
        # (checked when a fill reaches the page's end: the last cluster of
        # a sequential fill, once per page)
        if page.count(1) == _PAGE:
            self._pages[p] = _FULL

    def all_set(self, c0: int, c1: int) -> bool:
        return self.count_set(c0, c1) == c1 - c0

    def any_set(self, c0: int, c1: int) -> bool:
        return self.count_set(c0, c1) > 0

    def run_at(self, c0: int, c1: int) -> tuple[bool, int]:
        """Whether cluster ``c0`` is allocated, and the first cluster in
        ``(c0, c1)`` that differs (``c1`` if none): a ``bytearray.find``
        per page, so a long unallocated stretch costs nothing per cluster."""
        value = self.is_set(c0)
        c = c0
        while c < c1:
            p = c >> PAGE_BITS
            edge = min(c1, (p + 1) << PAGE_BITS)
            page = self._pages.get(p)
            if page is None:
                if value:
                    return value, c
            else:
                a, b = c & _MASK, ((edge - 1) & _MASK) + 1
                if page.__class__ is array:
                    k = bisect_left(page, a)
                    if value:               # the first cluster of [a, b) not listed
                        while k < len(page) and page[k] == a and a < b:
                            k += 1
                            a += 1
                        i = a if a < b else -1
                    else:                   # the first one listed in [a, b)
                        i = page[k] if k < len(page) and page[k] < b else -1
                else:
                    i = page.find(0 if value else 1, a, b)
                if i >= 0:
                    return value, (p << PAGE_BITS) + i
            c = edge
        return value, c1

    def runs(self) -> Iterator[tuple[int, int]]:
        """Allocated cluster runs ``(c0, c1)`` in order, merged across pages."""
        cur = None
        for p in sorted(self._pages):
            page = self._pages[p]
            if page.__class__ is array:
                dense = np.zeros(_PAGE, dtype=bool)
                dense[np.frombuffer(page, dtype=np.uint16)] = True
                page = dense
            else:
                page = np.frombuffer(page, dtype=bool)
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
        if cur is not None:
            yield cur


def _count(page, a: int, b: int) -> int:
    """Allocated clusters of ``page`` in ``[a, b)``."""
    if page.__class__ is array:
        return bisect_left(page, b) - bisect_left(page, a)
    return page.count(1, a, b)
