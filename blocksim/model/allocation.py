"""Cluster allocation of one image layer.

qcow2 (and a thin-provisioned raw volume) allocates storage a cluster at a
time, on the first write that touches the cluster.  :class:`AllocationMap`
remembers which clusters a layer has allocated, so that

- a thin device can refuse a write that needs clusters past its capacity;
- reads fall through to the backing file where this layer has nothing;
- a stream job can skip what the top layer already holds, and a ``top`` sync
  mirror can copy only the top layer.

It is a lazily created set of byte pages (32768 clusters, 2 GiB of disk at
64 KiB clusters, per page; 1 = allocated): memory grows with the area
written, and the common question of a guest write, "is this one cluster
allocated?", is one dict lookup and one ``bytearray`` index (a numpy scalar
costs several times more); ranges are counted and filled in C by
``bytearray.count`` and slice assignment.  Clusters are never freed, so a
page once fully allocated never changes again: it becomes one shared
read-only page, and a disk full of data (a mirror's source, its target once
copied) costs no memory per page (32 MiB less for the two disks of a 1 TiB
mirror).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

PAGE_BITS = 15
_PAGE = 1 << PAGE_BITS
_MASK = _PAGE - 1
_ONES = memoryview(b"\x01" * _PAGE)
_FULL = bytes(_ONES)            # every page fully allocated (never written again)


class AllocationMap:
    __slots__ = ("nclusters", "count", "_pages")

    def __init__(self, nclusters: int):
        self.nclusters = nclusters
        self.count = 0                      # allocated clusters
        self._pages: dict[int, bytearray] = {}

    def is_set(self, c: int) -> bool:
        page = self._pages.get(c >> PAGE_BITS)
        return page is not None and page[c & _MASK] == 1

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
            return 0 if page is None else page.count(1, c0 & _MASK, (c1 - 1 & _MASK) + 1)
        total = 0
        for p, a, b in self._segments(c0, c1):
            page = self._pages.get(p)
            if page is not None:
                total += page.count(1, a, b)
        return total

    def set_range(self, c0: int, c1: int) -> int:
        """Allocate clusters ``[c0, c1)``; returns how many were new."""
        p = c0 >> PAGE_BITS
        if c0 < c1 and (c1 - 1) >> PAGE_BITS == p:
            # inside one page (a guest write, a copy): no generator of segments
            page = self._pages.get(p)
            if page is None:
                page = self._pages[p] = bytearray(_PAGE)
            if c1 - c0 == 1:                # one cluster: one index
                i = c0 & _MASK
                if page[i]:
                    return 0
                page[i] = 1
                self.count += 1
                return 1
            a, b = c0 & _MASK, (c1 - 1 & _MASK) + 1
            new = (b - a) - page.count(1, a, b)
            if new:
                page[a:b] = _ONES[:b - a]
                self.count += new
                if b == _PAGE:
                    self._share_if_full(p, page)
            return new
        new = 0
        for p, a, b in self._segments(c0, c1):
            page = self._pages.get(p)
            if page is None:
                page = self._pages[p] = bytearray(_PAGE)
            added = (b - a) - page.count(1, a, b)
            if added:
                page[a:b] = _ONES[:b - a]
                new += added
                if b == _PAGE:
                    self._share_if_full(p, page)
        self.count += new
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
                i = page.find(0 if value else 1, c & _MASK, ((edge - 1) & _MASK) + 1)
                if i >= 0:
                    return value, (p << PAGE_BITS) + i
            c = edge
        return value, c1

    def runs(self) -> Iterator[tuple[int, int]]:
        """Allocated cluster runs ``(c0, c1)`` in order, merged across pages."""
        cur = None
        for p in sorted(self._pages):
            page = np.frombuffer(self._pages[p], dtype=bool)
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
