"""Extent maps: what a block device holds, at byte precision, in little memory.

Content is tracked as *generations*, not bytes: every write carries a number
that stands for the data it wrote (a guest write gets a fresh one, a copy
carries the numbers it read).  An :class:`ExtentMap` is a piecewise-constant
function from offset to generation, with ``0`` meaning "nothing written here"
(zeros, or "look in the backing file" for a qcow2 layer).  Two ranges hold the
same data exactly when their generation runs are equal, which is how a run
proves that a mirror's target equals its source or that an acknowledged guest
write survived.

Memory grows with the number of distinct extents, not with the virtual size:
the address space is cut into fixed pages (64 MiB by default); a page that
holds one value is stored as a plain int (none at all when it holds the
map's default: 0, or the value the whole map was given at once, as an image
with ``data = "full"``), and only pages with several runs
keep two compact columns: run starts *relative to the page*, as
``array('I')`` (4 bytes: a 64 MiB page needs 26 bits), and run values as
``array('q')`` (8 bytes: generation numbers are unbounded).  A 1 TiB image
written sequentially is a few thousand ints; random 4 KiB writes cost 12
bytes per run (plus the arrays' slack), and each insertion moves only the
runs of one page.  A page the journal's settle stores whole, whose values
all fit 32 bits (every generation of a run of fewer than 4 billion writes),
keeps them as ``array('I')`` instead: 8 bytes per run, in a
:class:`SharedPage`, which nothing splices in place (the first write takes
the map's own ``'q'`` copy).

Runs are always canonical (adjacent runs have different values), so equality
of content is equality of run lists.

A map may journal its changes (:mod:`blocksim.engine.journal`): a write inside one
page is then logged, and applied when something reads that page.  Every
reader here settles what it reads first, so the journal is invisible to
callers, except that :meth:`ExtentMap.snapshot` may return a ticket
(:class:`~blocksim.engine.journal.Snap`) that only :meth:`ExtentMap.set_runs` of a
map of the same journal, or its own ``runs()``, can use.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Iterator, Sequence

import numpy as np

from ..engine import Compiled, Snap

#: compiled with numba on first use (engine/compiled.py): the bulk's rows
njit = Compiled(globals())

Run = tuple[int, int, int]  # (start, end, generation), end exclusive

PAGE_SHIFT = 26


def _starts_type(page_shift: int) -> str:
    """Typecode of a page's start column: offsets inside a page are below
    ``2**page_shift``, so 32-bit unsigned ``'I'`` holds them up to a 4 GiB
    page; larger pages (no caller uses them) fall back to 64-bit ``'q'``,
    still page-relative, so every function reads both the same way."""
    if page_shift <= 32 and array("I").itemsize >= 4:
        return "I"
    return "q"


class Span:
    """The runs of a range inside one page, as slices of the page's columns.

    What :meth:`ExtentMap.snapshot` returns for a range that meets several
    runs of one page (a mirror's copy operation, read from a source the
    guest has fragmented), and what :meth:`ExtentMap.set_runs` writes back
    fastest into a map with the same pages: one splice of the slices, with
    no run tuples built in between.  ``starts`` are page-relative (the first
    one is the range's start); there are at least two runs, neighbours
    differ in value.  A snapshot owns its slices: later writes to the map
    it came from do not change it.
    """

    __slots__ = ("start", "end", "starts", "values", "shift")

    def __init__(self, start: int, end: int, starts: array, values: array, shift: int):
        self.start, self.end = start, end
        self.starts, self.values = starts, values
        self.shift = shift

    def runs(self) -> list[Run]:
        """The same content as ``(start, end, generation)`` runs."""
        ps = (self.start >> self.shift) << self.shift
        inner = [ps + s for s in self.starts[1:]]
        return list(zip([self.start, *inner], [*inner, self.end], self.values))

    def __len__(self) -> int:
        return len(self.values)


class SharedPage(tuple):
    """A page's ``(starts, values)`` columns held by several maps at once
    (:meth:`ExtentMap._share_pages`), or with 4-byte values (``'I'``, as
    :meth:`ExtentMap._put_pages` stores them): read like any page, never
    spliced in place; the map that writes it first takes its own copy
    (:func:`_own`)."""

    __slots__ = ()


def _own(page: SharedPage) -> tuple:
    """A map's own copy of a shared page's columns (values ``'q'``)."""
    starts, values = page
    return (array(starts.typecode, starts), array("q", values))


#: the largest value a page's 4-byte values column holds
_MAX_COMPACT = 0xFFFFFFFF
assert array("I").itemsize == 4


#: A map of at least BULK_MIN_PAGES pages and at most BULK_MAX_PAGES stores
#: what a journal's settle gives it in bulk (:class:`_Bulk`: 13 bytes a page
#: for its table); others as page objects: a disk of few pages (under 8 TiB
#: of 64 MiB pages) costs little per page, and a mirror's target in sync
#: then shares its source's page objects (the bulk gives each map its own
#: rows: 100 MiB more at the end of the 1 TiB mirror hour); a larger one
#: (small pages over a large disk) would need too large a table.
BULK_MIN_PAGES = 1 << 17
BULK_MAX_PAGES = 1 << 22
#: the bulk's arrays hold at least this many rows
BULK_MIN_ROWS = 1 << 16


def _stored_in(store: dict, at: np.ndarray) -> np.ndarray:
    """Where ``at`` (int64 pages, increasing) lists pages of ``store``:
    their indices, increasing; by the smaller of the two."""
    if len(store) > len(at):
        return np.array([i for i, p in enumerate(at.tolist()) if p in store], dtype=np.int64)
    keys = np.fromiter(store, dtype=np.int64, count=len(store))
    i = np.searchsorted(at, keys)
    found = i < len(at)
    i, keys = i[found], keys[found]
    i = i[at[i] == keys]
    i.sort()
    return i


class PageColumns(tuple):
    """A settle's rows (page-relative ``starts`` in the start type
    ``stype``, and ``values``: numpy arrays) as the two Python arrays each
    page's columns are sliced from, and the class of the pages made so:
    ``(starts, values, page_class)``.  Values that all fit 32 bits are
    kept 4 bytes each, the pages :class:`SharedPage` s; else 8 bytes, the
    pages tuples.  (A slice of an array is one C copy, where a numpy slice
    made into an array took three steps, at a million pages a settle; the
    arrays are filled from the numpy rows' memory, with no bytes copy in
    between.)"""

    __slots__ = ()

    def __new__(cls, starts: np.ndarray, values: np.ndarray, stype: str):
        vtype, page_class = "q", tuple
        if len(values) and 0 <= values.min() and values.max() <= _MAX_COMPACT:
            values = values.astype(np.uint32)
            vtype, page_class = "I", SharedPage
        all_starts, all_values = array(stype), array(vtype)
        all_starts.frombytes(memoryview(np.ascontiguousarray(starts, _np_type(stype))).cast("B"))
        all_values.frombytes(memoryview(np.ascontiguousarray(values, _np_type(vtype))).cast("B"))
        return super().__new__(cls, (all_starts, all_values, page_class))


class _Bulk:
    """Pages stored as rows of two whole arrays, as a journal's settle
    builds them (:meth:`ExtentMap._put_pages`): page ``p`` (``flags[p]``
    set) holds the ``n[p]`` runs ``lo[p]:lo[p] + n[p]`` of ``starts``
    (page-relative, the map's start type) and ``values`` (``uint32`` while
    every value fits, else ``int64``), canonical; one run is a page
    holding one value.  No Python object per page: a settle of a million
    pages at the end of a run costs a few numpy calls, and the end's
    readers (:meth:`ExtentMap.extent_count`, :func:`run_arrays`) read the
    rows as they are.  Any other reader takes a page out first
    (:meth:`ExtentMap._get`, or all of them: ``_pages``).  Rows of pages
    taken out or stored again are garbage until the arrays next grow,
    when only the pages' live rows are copied."""

    __slots__ = ("flags", "flags_np", "lo", "n", "starts", "values", "used", "live", "count")

    def __init__(self, npages: int, stype: str, compact: bool):
        self.flags = bytearray(npages)
        self.flags_np = np.frombuffer(self.flags, dtype=np.uint8)
        self.lo = np.zeros(npages, dtype=np.int64)
        self.n = np.zeros(npages, dtype=np.int32)
        self.starts = np.empty(0, dtype=_np_type(stype))
        self.values = np.empty(0, dtype=np.uint32 if compact else np.int64)
        self.used = 0           # rows written
        self.live = 0           # rows of pages stored
        self.count = 0          # pages stored

    def reserve(self, k: int, wide: bool) -> None:
        """Room for ``k`` more rows (values of 8 bytes if ``wide``).
        Growing copies only the live rows (the pages' order kept), into
        arrays of twice their number."""
        if wide and self.values.dtype == np.uint32:
            self.values = self.values.astype(np.int64)
        if self.used + k > len(self.starts) and self.live == self.used:
            # (no garbage: the rows as they are, into arrays twice as large)
            cap = max(2 * (self.used + k), BULK_MIN_ROWS)
            for name in ("starts", "values"):
                old = getattr(self, name)
                new = np.empty(cap, dtype=old.dtype)
                new[:self.used] = old[:self.used]
                setattr(self, name, new)
        if self.used + k > len(self.starts):
            pages = np.flatnonzero(self.flags_np)
            n = self.n[pages].astype(np.int64)
            to = np.cumsum(n) - n
            total = int(to[-1] + n[-1]) if len(n) else 0
            cap = max(2 * (total + k), BULK_MIN_ROWS)
            new_starts = np.empty(cap, dtype=self.starts.dtype)
            new_values = np.empty(cap, dtype=self.values.dtype)
            _move_rows(self.lo[pages], n, to, self.starts, self.values, new_starts, new_values)
            self.lo[pages] = to
            self.starts, self.values = new_starts, new_values
            self.used = total


class ExtentMap:
    """A piecewise-constant map ``offset -> generation`` over ``[0, size)``."""

    __slots__ = ("size", "_dict", "_base", "_shift", "_stype",
                 "_journal", "_tag", "_pending", "_zeroing", "version", "_bulk")

    def __init__(self, size: int, page_shift: int = PAGE_SHIFT, journal=None):
        self.size = int(size)
        self._shift = page_shift
        self._stype = _starts_type(page_shift)
        # With a journal (blocksim.engine.journal) changes inside one page are
        # logged there and applied when something reads the page: _tag is
        # this map's index in the log's words, _pending flags the pages whose
        # log changes this map, _zeroing those where a change may bring zeros
        # (bytearrays, one byte a page).
        self._journal = None
        self._tag = 0
        self._pending = self._zeroing = None
        # page index -> int (the whole page holds one value, never 0: a page
        # of 0 is absent) or (starts, values) arrays: starts relative to the
        # page's first offset (so starts[0] == 0), typecode self._stype;
        # values 'q'.  Only this module reads pages.  (Read through the
        # property _pages, or _get(p): pages a settle stored in bulk,
        # _bulk, are taken out of it first.)
        self._dict: dict = {}
        #: pages a journal's settle stored as rows of whole arrays
        #: (:class:`_Bulk`), none of them in ``_dict``; None if none
        self._bulk = None
        #: what every page absent from _pages holds: 0, or the value the
        #: whole map was given at once (an image with ``data = "full"``:
        #: no dict entry per page, a million of them at 64 TiB); a page
        #: holding 0 is then stored as the int 0
        self._base = 0
        #: counts the changes made to the pages themselves (not logged ones):
        #: what a reader caches about a page holds while it stays the same
        #: (blocksim.engine.burst_kernel)
        self.version = 0
        if journal is not None:
            journal.register(self)

    # -- the pages ------------------------------------------------------------
    @property
    def _pages(self) -> dict:
        """Page index -> the page (an int or columns), every page stored in
        bulk taken out of it first: what any reader of the whole dict
        sees.  Readers of one page call :meth:`_get`, and the end's readers
        (:meth:`extent_count`, :func:`run_arrays`) read the bulk itself."""
        if self._bulk is not None:
            self._unbulk_all()
        return self._dict

    @_pages.setter
    def _pages(self, pages: dict) -> None:
        if self._bulk is not None:
            self._unbulk_all()
        self._dict = pages

    def _get(self, p: int):
        """Page ``p`` as stored: an int (one value) or its columns (taken
        out of the bulk first)."""
        b = self._bulk
        if b is not None and b.flags[p]:
            self._unbulk_one(p)
        return self._dict.get(p, self._base)

    def _unbulk_one(self, p: int) -> None:
        """Move page ``p`` (stored in bulk) into ``_dict``, as
        :meth:`_put_pages` stored pages before the bulk: one value as an
        int (absent if the default), several as columns (a
        :class:`SharedPage` if its values are 4 bytes each)."""
        b = self._bulk
        b.flags[p] = 0
        lo = int(b.lo[p])
        n = int(b.n[p])
        b.count -= 1
        b.live -= n
        if n == 1:
            v = int(b.values[lo])
            if v != self._base:
                self._dict[p] = v
        else:
            starts = array(self._stype, b.starts[lo:lo + n].tobytes())
            if b.values.dtype == np.uint32:
                self._dict[p] = SharedPage((starts, array("I", b.values[lo:lo + n].tobytes())))
            else:
                self._dict[p] = (starts, array("q", b.values[lo:lo + n].tobytes()))
        if not b.count:
            self._bulk = None

    def _unbulk_all(self) -> None:
        """Move every page stored in bulk into ``_dict``."""
        b = self._bulk
        self._bulk = None
        pages = np.flatnonzero(b.flags_np)
        lo = b.lo[pages]
        n = b.n[pages].astype(np.int64)
        all_starts = array(self._stype, b.starts[:b.used].tobytes())
        compact = b.values.dtype == np.uint32
        all_values = array("I" if compact else "q", b.values[:b.used].tobytes())
        page_class = SharedPage if compact else tuple
        store, base = self._dict, self._base
        for p, i, k in zip(pages.tolist(), lo.tolist(), n.tolist()):
            if k == 1:
                v = all_values[i]
                if v != base:
                    store[p] = v
            else:
                store[p] = page_class((all_starts[i:i + k], all_values[i:i + k]))

    def _stored_runs(self, at: np.ndarray, max_runs: int | None = None):
        """The runs stored on pages ``at`` (int64, increasing), logged
        changes aside, with no Python step per page in bulk or absent:
        ``(counts, starts, values)``, page ``at[i]`` holding the
        ``counts[i]`` runs after those of the pages before it, starts
        page-relative (int64 arrays).  With ``max_runs``, only the pages
        until the first at which the runs reach that many are read (``at``
        cut there: ``len(counts)`` says how many)."""
        n = len(at)
        counts = np.ones(n, dtype=np.int64)
        b = self._bulk
        inb = None
        if b is not None:
            inb = np.zeros(n, dtype=np.bool_)
            inside = at < len(b.flags)          # (a journal's maps of several sizes)
            inb[inside] = b.flags_np[at[inside]] != 0
            counts[inb] = b.n[at[inb]]
        store = self._dict
        present = np.empty(0, dtype=np.int64)
        objs: list = []
        if store:
            present = _stored_in(store, at)
            objs = [store[p] for p in at[present].tolist()]
            counts[present] = [1 if page.__class__ is int else len(page[1]) for page in objs]
        ends = np.cumsum(counts)
        if max_runs is not None:
            k = int(np.searchsorted(ends, max_runs, side="left"))
            if k + 1 < n:
                n = k + 1
                counts, ends = counts[:n], ends[:n]
                at = at[:n]
                if inb is not None:
                    inb = inb[:n]
                kept = present < n
                objs = [page for page, keep in zip(objs, kept.tolist()) if keep]
                present = present[kept]
        if (objs and len(objs) == n and all(page.__class__ is not int for page in objs)
                and all(page[1].typecode == "I" for page in objs)):
            # (every page read is columns of 4-byte values, as at the end of
            # a long run: the columns joined as bytes in C, a few numpy
            # calls in all, where a numpy copy per page took microseconds)
            starts = np.frombuffer(b"".join([page[0] for page in objs]),
                                   dtype=_np_type(self._stype)).astype(np.int64)
            values = np.frombuffer(b"".join([page[1] for page in objs]),
                                   dtype=np.uint32).astype(np.int64)
            return counts, starts, values
        total = int(ends[-1]) if n else 0
        first = ends - counts
        starts = np.zeros(total, dtype=np.int64)
        values = np.empty(total, dtype=np.int64)
        values[first] = self._base
        if inb is not None and inb.any():
            _move_rows(b.lo[at[inb]], counts[inb], first[inb], b.starts, b.values,
                       starts, values)
        for k, page in zip(present.tolist(), objs):
            o = int(first[k])
            if page.__class__ is int:
                values[o] = page
            else:
                c = len(page[1])
                starts[o:o + c] = np.asarray(page[0])
                values[o:o + c] = np.asarray(page[1])
        return counts, starts, values

    # -- the journal ---------------------------------------------------------
    def settle(self, start: int = 0, end: int | None = None) -> None:
        """Apply the journal's logged changes to the pages of ``[start,
        end)`` (every reader does this first; a no-op without a journal)."""
        j = self._journal
        if j is not None and (j.staged or j._logs or j._chunks):
            if end is None or end > self.size:
                end = self.size
            if start < end:
                j.settle_range(start >> self._shift, (end - 1) >> self._shift)

    def holds_no_zero(self) -> bool:
        """Whether no byte of the map holds 0, once settled: every page is
        stored and none holds a 0 (a conservative answer past ``size`` in
        the last page).  A backing chain with this map on top then reads as
        this map alone (:func:`resolve_runs`: a layer's 0 asks the layer
        below)."""
        self.settle()
        pages = self._pages
        if not self._base and len(pages) < -(-self.size >> self._shift):
            return False
        for page in pages.values():
            if page.__class__ is int:
                if not page:
                    return False
            elif min(page[1]) == 0:
                return False
        return True

    def holds_data(self, p: int) -> bool:
        """Whether no read inside page ``p`` can be zeros, as
        :meth:`snapshot` would find without settling: the page stores no 0
        and no change that may bring zeros is logged for it."""
        if self._zeroing[p]:
            return False
        page = self._get(p)
        if page.__class__ is int:
            return page != 0
        return min(page[1]) > 0

    def _base_zero(self, p: int, start: int, end: int) -> bool:
        """Whether page ``p``'s stored runs hold only 0 on ``[start, end)``
        (inside the page), logged changes aside."""
        page = self._get(p)
        if page.__class__ is int:
            return not page
        starts, values = page
        ps = p << self._shift
        i = bisect_right(starts, start - ps) - 1
        return not values[i] and bisect_left(starts, end - ps, i + 1) == i + 1

    def _put_pages(self, pages, starts: np.ndarray, values: np.ndarray, lo, hi,
                   many: bool = False, columns: "PageColumns | None" = None) -> None:
        """Store each page ``pages[i]`` as the runs ``lo[i]:hi[i]`` of
        ``starts`` (page-relative, this map's start type) and ``values``:
        canonical (the first starts at 0, neighbours differ), as the
        journal's settle builds them (``pages``, ``lo``, ``hi``: int64
        arrays or lists).  In bulk (:class:`_Bulk`: the rows copied, a few
        numpy calls whatever the number of pages), unless the map has more
        than :data:`BULK_MAX_PAGES` pages (:meth:`_put_page_objects`) or
        the settle is of few pages (``many``: see :meth:`_stores_bulk`);
        ``columns``: the rows as :class:`PageColumns` already, for page
        objects."""
        self.version += 1
        if not self._stores_bulk(many):
            self._put_page_objects(list(pages), starts, values, list(lo), list(hi), columns)
            return
        pages = np.asarray(pages, dtype=np.int64)
        lo = np.asarray(lo, dtype=np.int64)
        n = np.asarray(hi, dtype=np.int64) - lo
        total = int(n.sum())
        # (values of 4 bytes while they fit: those of the whole settle, or
        # else this map's rows)
        compact = not len(values) or (0 <= values.min() and values.max() <= _MAX_COMPACT)
        if not compact:
            compact = _rows_fit(lo, n, values, _MAX_COMPACT)
        b = self._bulk
        if b is None:
            b = self._bulk = _Bulk((self.size >> self._shift) + 1, self._stype, compact)
        else:                       # pages stored again: their old rows are garbage
            again = pages[b.flags_np[pages] != 0]
            if len(again):
                b.live -= int(b.n[again].sum())
                b.count -= len(again)
                b.flags_np[again] = 0
        store = self._dict
        if store:                   # (a page is in the bulk or in the dict)
            for p in pages[_stored_in(store, pages)].tolist():
                del store[p]
        b.reserve(total, not compact)
        to = b.used + np.cumsum(n) - n
        _move_rows(lo, n, to, starts, values, b.starts, b.values)
        b.used += total
        b.lo[pages] = to
        b.n[pages] = n
        b.flags_np[pages] = 1
        b.count += len(pages)
        b.live += total

    def _stores_bulk(self, many: bool) -> bool:
        """Whether :meth:`_put_pages` stores in bulk: a map of
        :data:`BULK_MIN_PAGES` to :data:`BULK_MAX_PAGES` pages, in a settle
        of many of them at once (``many``, the journal's call: a page table
        of 13 bytes a page touched at random by a few thousand pages would
        cost more than their page objects) or once it has pages in bulk."""
        return (BULK_MIN_PAGES <= (self.size >> self._shift) + 1 <= BULK_MAX_PAGES
                and (many or self._bulk is not None))

    def _clear_pages(self, first: int, last: int) -> None:
        """Pages ``first`` to ``last`` hold the map's default (absent),
        at a cost by the pages stored there, not by their number."""
        pages = self._dict
        if len(pages) < last - first + 1:
            for p in [p for p in pages if first <= p <= last]:
                del pages[p]
        else:
            for p in range(first, last + 1):
                pages.pop(p, None)
        b = self._bulk
        if b is not None:
            at = np.flatnonzero(b.flags_np[first:last + 1]) + first
            if len(at):
                b.live -= int(b.n[at].sum())
                b.count -= len(at)
                b.flags_np[at] = 0
                if not b.count:
                    self._bulk = None

    def _drop_bulk(self, p: int) -> None:
        """Forget page ``p``'s rows in the bulk, if it has some (the page is
        about to be stored whole)."""
        b = self._bulk
        if b is not None and b.flags[p]:
            b.flags[p] = 0
            b.live -= int(b.n[p])
            b.count -= 1
            if not b.count:
                self._bulk = None

    def _columns(self, starts: np.ndarray, values: np.ndarray) -> PageColumns:
        """A settle's rows as :class:`PageColumns` for this map's pages
        (what :meth:`_put_pages` takes as ``columns``)."""
        return PageColumns(starts, values, self._stype)

    def _put_page_objects(self, pages: list, starts: np.ndarray, values: np.ndarray,
                          lo: list, hi: list, columns: "PageColumns | None" = None) -> None:
        """:meth:`_put_pages` as page objects: values that all fit 32 bits
        are stored 4 bytes each, in :class:`SharedPage` s.  ``columns``:
        ``starts`` and ``values`` as :class:`PageColumns` already (a settle
        storing pages of several maps from the same rows makes them once)."""
        store = self._dict
        if columns is None:
            columns = PageColumns(starts, values, self._stype)
        all_starts, all_values, page_class = columns
        base = self._base
        for p, i, j in zip(pages, lo, hi):
            if j - i == 1:
                v = all_values[i]
                if v != base:
                    store[p] = v
                else:
                    store.pop(p, None)
            else:
                store[p] = page_class((all_starts[i:j], all_values[i:j]))

    def _share_pages(self, pages: list, other: "ExtentMap") -> None:
        """Store each of ``pages`` as ``other`` holds it, sharing its
        columns: both maps then hold the page as one :class:`SharedPage`,
        which neither splices in place (a write makes the writer's own copy
        first).  What a settle does where a mirror's target ends up holding
        what its source holds: the memory of one map for two."""
        self.version += 1
        store = self._dict
        theirs = other._dict
        for p in pages:
            self._drop_bulk(p)
            page = other._get(p)
            if page.__class__ is int:
                if page != self._base:
                    store[p] = page
                else:
                    store.pop(p, None)
                continue
            if page.__class__ is tuple:
                page = theirs[p] = SharedPage(page)
            store[p] = page

    # -- writing -----------------------------------------------------------
    def set(self, start: int, end: int, value: int) -> None:
        """Give ``[start, end)`` the generation ``value``."""
        if start >= end:
            return
        j = self._journal
        if j is not None:
            shift = self._shift
            p = start >> shift
            if (end - 1) >> shift == p:     # inside one page: log it
                ps = p << shift
                j.log(p, self._tag | (start - ps) | ((end - ps) << 27), value)
                self._pending[p] = 1
                if not value:
                    j.may_zero(self, p)
                return
            self.settle(start, end)
        self._set(start, end, value)

    def set_writes(self, offsets: np.ndarray, length: int, first_value: int) -> None:
        """``set(offset, offset + length, value)`` for each of ``offsets``
        (int64) in turn, with values ``first_value``, ``first_value + 1``...
        (the writes of a guest's quiet stretch; logged by compiled code on a
        journaled map)."""
        j = self._journal
        if j is not None and first_value > 0 and length > 0:
            j.log_writes(self, offsets, length, first_value)
            return
        set_one = self.set
        value = first_value
        for offset in offsets.tolist():
            set_one(offset, offset + length, value)
            value += 1

    def _set(self, start: int, end: int, value: int) -> None:
        """:meth:`set`, at once (the journal's logged changes to these pages
        applied already)."""
        self.version += 1
        if start >= end:
            return
        shift = self._shift
        pages = self._dict
        size = self.size
        if start <= 0 and end >= size:
            # the whole map (an image's data = "full"): its default value
            pages.clear()
            self._bulk = None
            self._base = value
            return
        base = self._base
        first, last = start >> shift, (end - 1) >> shift
        pieces = range(first, last + 1)
        if value == base and last - first > 8:
            # the whole pages inside, back to the default (a write-zeroes
            # over many pages): no step per page, only per page stored
            whole_first = first if start == first << shift else first + 1
            whole_last = last if end >= min((last + 1) << shift, size) else last - 1
            self._clear_pages(whole_first, whole_last)
            pieces = sorted({first, last})
        bulk = self._bulk
        for p in pieces:
            ps = p << shift
            pe = ps + (1 << shift)
            if pe > size:
                pe = size
            a = start if start > ps else ps
            b = end if end < pe else pe
            if bulk is not None and bulk.flags[p]:
                if a == ps and b == pe:
                    self._drop_bulk(p)
                else:
                    self._unbulk_one(p)
                bulk = self._bulk
            if a == ps and b == pe:
                if value != base:
                    pages[p] = value
                else:
                    pages.pop(p, None)
                continue
            page = pages.get(p, base)
            if page.__class__ is int:
                if page == value:
                    continue
                starts = array(self._stype, (0,))
                values = array("q", (page,))
                pages[p] = (starts, values)
            else:
                if page.__class__ is not tuple:     # shared: this map's own copy
                    page = pages[p] = _own(page)
                starts, values = page       # spliced in place
            _splice(starts, values, a - ps, b - ps, value, pe - ps)
            if len(starts) == 1:            # one value again: a plain int
                if values[0] != base:
                    pages[p] = values[0]
                else:
                    pages.pop(p, None)

    def set_runs(self, runs: Sequence[Run]) -> None:
        """Copy runs read from another map (same offsets) into this one.

        ``runs`` may also be what :meth:`snapshot` returned on a journaled
        map: a :class:`~blocksim.engine.journal.Snap`, logged as a paste.

        The result is exactly that of ``set(a, b, v)`` for each run in turn,
        but the usual argument -- the output of :meth:`runs` on some map:
        sorted, contiguous, covering one range ``[A, B)`` -- is written with
        one splice per page touched instead of one per run.  Copying 64 KiB
        that the source holds as 16 runs of 4 KiB into a fragmented page then
        costs one bisect pair and one slice assignment, not 16 splices.

        Anything else (gaps, overlaps, unsorted or empty runs, runs outside
        ``[0, size)``) takes the per-run loop, which gives the same answer
        for any input, just slower.
        """
        if runs.__class__ is Snap:
            if runs.journal is self._journal:
                runs.journal.paste(self, runs)
                return
            runs = runs.runs()
        if self._journal is not None:
            if runs.__class__ is Span:
                self.settle(runs.start, runs.end)
            else:
                runs = list(runs)
                if runs:
                    self.settle(min(r[0] for r in runs), max(r[1] for r in runs))
        self._set_runs(runs)

    def _set_runs(self, runs) -> None:
        """:meth:`set_runs` at once."""
        self.version += 1
        if runs.__class__ is Span:
            if runs.shift == self._shift:
                self._paste(runs)
                return
            runs = runs.runs()
        elif runs.__class__ is not list and runs.__class__ is not tuple:
            runs = list(runs)
        if len(runs) <= 1:
            for a, b, v in runs:
                self._set(a, b, v)
            return
        # The fast path relies on contiguity: check it rather than trust it.
        first = prev = runs[0][0]
        for a, b, _v in runs:
            if a != prev or b <= a:
                break
            prev = b
        else:
            if first >= 0 and prev <= self.size:
                self._set_contiguous(runs, first, prev)
                return
        for a, b, v in runs:
            self._set(a, b, v)

    def _set_contiguous(self, runs: Sequence[Run], start: int, end: int) -> None:
        """:meth:`set_runs` for contiguous runs covering ``[start, end)``.

        Walks the runs once, cutting them at page edges and merging
        neighbours of equal value (so each page's share is canonical), and
        hands each page's share, with page-relative starts, to
        :meth:`_write_page`.
        """
        shift = self._shift
        size = self.size
        p = start >> shift
        ps = p << shift
        pe = min(ps + (1 << shift), size)
        seg_s: list[int] = []
        seg_v: list[int] = []
        for a, b, v in runs:
            while True:
                if a == pe:                 # this run opens the next page
                    self._write_page(p, ps, pe, seg_s, seg_v, pe)
                    p += 1
                    ps = pe
                    pe = min(ps + (1 << shift), size)
                    seg_s = []
                    seg_v = []
                if not seg_v or seg_v[-1] != v:
                    seg_s.append(a - ps)
                    seg_v.append(v)
                if b <= pe:
                    break
                a = pe                      # the rest of the run: next page
        self._write_page(p, ps, pe, seg_s, seg_v, end)

    def _paste(self, span: Span) -> None:
        """:meth:`set_runs` of a :class:`Span` from a map with the same pages."""
        shift = self._shift
        p = span.start >> shift
        ps = p << shift
        # the span's arrays are its own: _write_page may keep or extend them
        self._write_page(p, ps, min(ps + (1 << shift), self.size),
                         span.starts, span.values, span.end)

    def _write_page(self, p: int, ps: int, pe: int,
                    seg_s: list[int], seg_v: list[int], b: int) -> None:
        """Replace page ``p``'s content on ``[ps + seg_s[0], b)`` by canonical
        runs (``seg_s`` their page-relative starts, ``seg_v`` their values),
        keeping the page canonical: one value becomes a plain int, a page of
        0 is dropped."""
        pages = self._dict
        a = seg_s[0]
        if len(seg_v) == 1:                 # one value: exactly what set() does
            self._set(ps + a, b, seg_v[0])
            return
        if a == 0 and b == pe:              # the whole page, already canonical
            self._drop_bulk(p)
            pages[p] = (array(self._stype, seg_s), array("q", seg_v))
            return
        page = self._get(p)
        if page.__class__ is int:
            starts = array(self._stype, (0,))
            values = array("q", (page,))
            pages[p] = (starts, values)
        else:
            if page.__class__ is not tuple:     # shared: this map's own copy
                page = pages[p] = _own(page)
            starts, values = page           # spliced in place
        _splice_runs(starts, values, a, b - ps, seg_s, seg_v, pe - ps)
        # Several distinct values went in, so the page cannot collapse to
        # one run: no int/empty check needed here.

    def fill_runs(self, runs: Sequence[Run]) -> None:
        """Like :meth:`set_runs`, but only where this map still holds 0.

        A copy-on-read never overwrites data a guest wrote meanwhile."""
        runs = list(runs)
        if runs:
            self.settle(min(r[0] for r in runs), max(r[1] for r in runs))
        for a, b, v in runs:
            if v:
                for ha, hb, hv in self._runs(a, b):
                    if hv == 0:
                        self._set(ha, hb, v)

    # -- reading -----------------------------------------------------------
    def runs(self, start: int = 0, end: int | None = None) -> list[Run]:
        """The canonical runs covering ``[start, end)``, clipped to it."""
        if self._journal is not None:
            self.settle(start, end)
        return self._runs(start, end)

    def _runs(self, start: int = 0, end: int | None = None) -> list[Run]:
        if end is None:
            end = self.size
        if start >= end:
            return []
        shift = self._shift
        p = start >> shift
        if (end - 1) >> shift == p:
            # Inside one page (a 64 KiB or 1 MiB read): a canonical page
            # clipped to the range is already the answer, no merging needed.
            pe = (p + 1) << shift
            b = end if end < pe else pe
            if b > self.size:
                b = self.size
            page = self._get(p)
            if page.__class__ is int:
                return [(start, b, page)]
            return _page_runs(page[0], page[1], start, b, p << shift)
        return list(self._iter_runs(start, end))

    def snapshot(self, start: int, end: int) -> "list[Run] | Span | Snap":
        """What ``[start, end)`` holds, to be written elsewhere with
        :meth:`set_runs`: a :class:`Span` when the range meets several runs
        of one page, else :meth:`runs`.

        On a journaled map, a range inside one page that does not read as
        zeros is a :class:`~blocksim.engine.journal.Snap` instead: the read is
        logged, and what it read is only worked out when its page settles.
        A range that reads as zeros is always the list ``[(start, end, 0)]``
        (a copy then writes zeros instead)."""
        j = self._journal
        if j is not None:
            shift = self._shift
            p = start >> shift
            if start < end and (end - 1) >> shift == p and end <= self.size:
                page = self._get(p)
                if page.__class__ is int and page and not self._zeroing[p]:
                    # data stored all over the page, and only non-zero
                    # writes logged: no zeros (a mirror's source, written
                    # by its guest)
                    return j.snap(self, p, start, end)
                if self._zeroing[p]:
                    j.settle(p)
                elif self._pending[p]:
                    # only non-zero sets logged: where the stored runs hold
                    # data, so does the range; else they decide
                    if not self._base_zero(p, start, end):
                        return j.snap(self, p, start, end)
                    j.settle(p)
                if self._base_zero(p, start, end):
                    return [(start, end, 0)]
                return j.snap(self, p, start, end)
            self.settle(start, end)
        return self._snapshot(start, end)

    def _snapshot(self, start: int, end: int) -> "list[Run] | Span":
        shift = self._shift
        p = start >> shift
        if start < end and (end - 1) >> shift == p and end <= self.size:
            # inside one page (every copy operation): runs() without a second lookup
            page = self._get(p)
            if page.__class__ is int:
                return [(start, end, page)]
            starts, values = page
            ps = p << shift
            i = bisect_right(starts, start - ps) - 1
            j = bisect_left(starts, end - ps, i + 1)
            if j > i + 1:
                head = starts[i:j]
                head[0] = start - ps
                return Span(start, end, head, values[i:j], shift)
            return [(start, end, values[i])]
        return self._runs(start, end)

    def iter_runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        """Like :meth:`runs`, one run at a time: a whole 1 TiB map can be
        walked without building its list of runs."""
        if self._journal is not None:
            self.settle(start, end)
        return self._iter_runs(start, end)

    def _iter_runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        if end is None:
            end = self.size
        if start >= end:
            return
        shift = self._shift
        if (end - 1) >> shift == start >> shift:
            yield from self._runs(start, end)   # one page: no merging
            return
        pages, base = self._pages, self._base
        cur_s = cur_v = None
        cur_e = start
        for p in range(start >> shift, ((end - 1) >> shift) + 1):
            ps = p << shift
            pe = min(ps + (1 << shift), self.size)
            a = start if start > ps else ps
            b = end if end < pe else pe
            page = pages.get(p, base)
            if page.__class__ is int:
                pieces = ((a, b, page),)
            else:
                pieces = _page_runs(page[0], page[1], a, b, ps)
            for ra, rb, v in pieces:
                if v == cur_v:
                    cur_e = rb
                else:
                    if cur_v is not None:
                        yield (cur_s, cur_e, cur_v)
                    cur_s, cur_e, cur_v = ra, rb, v
        if cur_v is not None:
            yield (cur_s, cur_e, cur_v)

    def value_at(self, offset: int) -> int:
        if self._journal is not None:
            self.settle(offset, offset + 1)
        page = self._get(offset >> self._shift)
        if page.__class__ is int:
            return page
        starts, values = page
        rel = offset & ((1 << self._shift) - 1)
        return values[bisect_right(starts, rel) - 1]

    def count(self, start: int, end: int, value: int) -> int:
        """How many units of ``[start, end)`` hold ``value``."""
        return sum(b - a for a, b, v in self.iter_runs(start, end) if v == value)

    def extent_count(self) -> int:
        """Number of stored runs (a measure of memory use)."""
        self.settle()
        # (a page holding 0 is no run: absent when the default is 0, the
        # int 0 otherwise; an absent page holding the default is one)
        pages = self._dict
        b = self._bulk
        stored = len(pages) + (b.count if b is not None else 0)
        absent = -(-self.size >> self._shift) - stored if self._base else 0
        count = absent + sum((1 if p else 0) if p.__class__ is int else len(p[0])
                             for p in pages.values())
        if b is not None:
            # (the pages in bulk: their rows, one a page of one value unless 0)
            at = np.flatnonzero(b.flags_np)
            n = b.n[at]
            one = n == 1
            count += int(n[~one].sum()) + int(np.count_nonzero(b.values[b.lo[at[one]]]))
        return count

    @property
    def page_size(self) -> int:
        return 1 << self._shift

    def check(self) -> None:
        """Raise :class:`AssertionError` unless every page is canonical.

        For tests: canonical pages are what make equal content compare
        equal, and what the fast paths rely on.  A page holding one value is
        an int other than the map's default (a page holding the default,
        0 unless the whole map was given one value, is absent); otherwise its page-relative
        starts begin at 0, increase strictly and stay inside the page,
        there are at least two runs, and neighbours differ in value.
        """
        self.settle()
        shift = self._shift
        for p, page in self._pages.items():
            ps = p << shift
            pe = min(ps + (1 << shift), self.size)
            if not 0 <= ps < self.size:
                raise AssertionError(f"page {p} outside the map")
            if page.__class__ is int:
                if page == self._base:
                    raise AssertionError(f"page {p} stored as the default {page}")
                continue
            starts, values = page
            if starts.typecode != self._stype or values.typecode != "q" and not (
                    values.typecode == "I" and page.__class__ is SharedPage):
                raise AssertionError(f"page {p}: arrays {starts.typecode!r}, {values.typecode!r}")
            if len(starts) != len(values) or len(starts) < 2:
                raise AssertionError(f"page {p}: {len(starts)} starts, {len(values)} values")
            if starts[0] != 0 or starts[-1] >= pe - ps:
                raise AssertionError(f"page {p}: starts leave the page")
            if any(x >= y for x, y in zip(starts, starts[1:])):
                raise AssertionError(f"page {p}: starts not increasing")
            if any(u == w for u, w in zip(values, values[1:])):
                raise AssertionError(f"page {p}: neighbours with equal values")


def _np_type(typecode: str):
    return np.uint32 if typecode == "I" else np.int64


def _page_runs(starts, values, a: int, b: int, ps: int) -> list[Run]:
    """The runs of the multi-run page starting at ``ps`` that meet ``[a, b)``
    (absolute offsets inside the page), clipped to it, in absolute offsets.

    Built with slices and ``zip`` rather than a per-run loop: runs ``i`` to
    ``j - 1`` meet the range, each ends where the next starts, the first is
    clipped to ``a`` and the last to ``b`` (the run after it, or the page
    end, starts at or beyond ``b``).  Only the inner boundaries are read
    from the page, made absolute by adding ``ps``.
    """
    i = bisect_right(starts, a - ps) - 1
    j = bisect_left(starts, b - ps, i + 1)
    if j == i + 1:                           # inside one run: the usual small read
        return [(a, b, values[i])]
    inner = list(map(ps.__add__, starts[i + 1:j]))
    return list(zip([a, *inner], [*inner, b], values[i:j]))


def _splice(starts: array, values: array, s: int, e: int, v: int, pe: int) -> None:
    """Set ``[s, e)`` to ``v`` inside one page, keeping runs canonical.

    Offsets here (``s``, ``e``, the page end ``pe``, the starts) are all
    page-relative."""
    i = bisect_right(starts, s) - 1          # run holding s
    n = len(starts)
    if e < (starts[i + 1] if i + 1 < n else pe):
        # The hot case (a small write inside one run) in place: two inserts.
        u = values[i]
        if u == v:
            return
        if starts[i] < s:
            starts.insert(i + 1, s)
            starts.insert(i + 2, e)
            values.insert(i + 1, v)
            values.insert(i + 2, u)
            return
        if i > 0 and values[i - 1] == v:
            starts[i] = e
            return
        values[i] = v
        starts.insert(i + 1, e)
        values.insert(i + 1, u)
        return
    # Across run edges: the general splice, with one new run.
    _splice_runs(starts, values, s, e, [s], [v], pe)


def _splice_runs(starts: array, values: array, a: int, b: int,
                 seg_s: list[int], seg_v: list[int], pe: int) -> None:
    """Replace ``[a, b)`` of one page by the runs ``seg_s``/``seg_v``
    (canonical among themselves, ``seg_s[0] == a``), keeping the page
    canonical, with one slice assignment per column.  Offsets (``a``,
    ``b``, ``seg_s``, the page end ``pe``) are page-relative.

    The slice replaced is ``starts[lo:k]``: the runs starting inside
    ``[a, b)``.  At the left edge the new first run merges into the run
    before ``a`` when their values are equal; at the right edge the old run
    covering ``b - 1`` resumes at ``b`` unless its value equals the new last
    one, and a run starting exactly at ``b`` is absorbed when equal.
    ``seg_s``/``seg_v`` may be modified.
    """
    if seg_v.__class__ is array and seg_v.typecode != "q":
        seg_v = array("q", seg_v)            # (a Span from a page of 4-byte values)
    i = bisect_right(starts, a) - 1          # run holding a
    k = bisect_left(starts, b, i + 1)        # first run starting at or after b
    tail_val = values[k - 1]                 # value just before b, before the change
    if starts[i] < a:
        lo = i + 1                           # run i keeps its start
        left_val = values[i]
    else:
        lo = i
        left_val = values[i - 1] if i > 0 else None
    last_v = seg_v[-1]
    if b < pe:
        if k < len(starts) and starts[k] == b:
            if values[k] == last_v:
                k += 1                       # the following run merges into the last
        elif tail_val != last_v:
            seg_s.append(b)
            seg_v.append(tail_val)
    if seg_v[0] == left_val:                 # the first new run extends run lo-1
        seg_s = seg_s[1:]
        seg_v = seg_v[1:]
    if seg_s.__class__ is array:             # a Span's columns (same typecodes)
        starts[lo:k] = seg_s
        values[lo:k] = seg_v
    else:
        starts[lo:k] = array(starts.typecode, seg_s)
        values[lo:k] = array("q", seg_v)


def from_sorted_runs(size: int, runs, page_shift: int = PAGE_SHIFT) -> ExtentMap:
    """Build a map from runs sorted by start and not overlapping (gaps are 0).

    Appends page by page instead of splicing: how a ledger of many writes is
    turned into a map in one pass.
    """
    m = ExtentMap(size, page_shift)
    pages = m._pages
    stype = m._stype
    step = 1 << page_shift
    last_end = 0
    for a, b, v in runs:
        if not v or a >= b:
            continue
        if a < last_end:
            raise ValueError("runs overlap or are not sorted")
        if b > size:
            raise ValueError(f"run [{a}, {b}) ends past the map's size {size}")
        while a < b:
            p = a >> page_shift
            ps = p << page_shift
            pe = min(ps + step, size)
            piece_end = b if b < pe else pe
            page = pages.get(p)
            if page is None:
                page = pages[p] = (array(stype, (0,)), array("q", (0,)))
            starts, values = page
            if starts[-1] == a - ps:        # page-relative starts
                values[-1] = v
            elif values[-1] != v:
                starts.append(a - ps)
                values.append(v)
            if piece_end < pe:
                starts.append(piece_end - ps)
                values.append(0)
            a = piece_end
        last_end = b
    # canonical form: drop a leading zero run that merged, whole-page values
    for p, (starts, values) in list(pages.items()):
        if len(starts) > 1 and values[0] == values[1]:
            del starts[1]
            del values[1]
        if len(starts) == 1:
            if values[0]:
                pages[p] = values[0]
            else:
                del pages[p]
    return m


def resolve_runs(layers: Sequence[ExtentMap], start: int, end: int) -> list[Run]:
    """Read-through content of a backing chain (top first) over ``[start, end)``.

    Where a layer holds 0 the next layer down answers; 0 from the bottom layer
    means zeros.  The result is canonical.
    """
    out: list[Run] = []
    _resolve_into(out, layers, 0, start, end)
    return out


def _resolve_into(out: list, layers: Sequence[ExtentMap], depth: int,
                  start: int, end: int) -> None:
    layer = layers[depth]
    last = depth + 1 == len(layers)
    for a, b, v in layer.iter_runs(start, end):
        if v == 0 and not last:
            _resolve_into(out, layers, depth + 1, a, b)
            continue
        if out and out[-1][2] == v and out[-1][1] == a:
            out[-1] = (out[-1][0], b, v)
        else:
            out.append((a, b, v))


def diff_ranges(left: Sequence[ExtentMap], right: Sequence[ExtentMap],
                start: int = 0, end: int | None = None,
                step: int = 1 << PAGE_SHIFT) -> Iterator[tuple[int, int, int, int]]:
    """Where two chains read differently: yields ``(start, end, left_gen, right_gen)``.

    Works a page at a time so that comparing two 1 TiB images never
    materialises more than one page of runs.
    """
    if end is None:
        end = min(left[0].size, right[0].size)
    for m in (*left, *right):
        m.settle(start, end)
    single = (len(left) == 1 and len(right) == 1
              and left[0]._shift == right[0]._shift and step == left[0].page_size
              and start % step == 0)
    for ps in range(start, end, step):
        pe = min(ps + step, end)
        if single:
            # Equal pages mean equal runs (same index, same shift, and starts
            # relative to the same page offset): skip the resolve.
            pl = left[0]._pages.get(ps >> left[0]._shift, left[0]._base)
            pr = right[0]._pages.get(ps >> right[0]._shift, right[0]._base)
            if pl.__class__ is pr.__class__ and pl == pr:
                continue
        lr = resolve_runs(left, ps, pe)
        rr = resolve_runs(right, ps, pe)
        if lr == rr:
            continue
        yield from _diff_run_lists(lr, rr)


def _diff_run_lists(lr: list[Run], rr: list[Run]) -> Iterator[tuple[int, int, int, int]]:
    i = j = 0
    while i < len(lr) and j < len(rr):
        la, lb, lv = lr[i]
        ra, rb, rv = rr[j]
        a = max(la, ra)
        b = min(lb, rb)
        if a < b and lv != rv:
            yield (a, b, lv, rv)
        if lb <= rb:
            i += 1
        if rb <= lb:
            j += 1


# -- whole ranges as numpy arrays ------------------------------------------------

def run_arrays(m: ExtentMap, start: int, end: int, max_runs: int | None = None,
               pages=None) -> tuple[int, np.ndarray, np.ndarray]:
    """The runs of ``m`` from ``start`` as two int64 arrays, for vectorised checks.

    Returns ``(stop, starts, values)``: run ``k`` covers
    ``[starts[k], starts[k + 1])`` (the last one ``[starts[-1], stop)``) and
    holds ``values[k]``; ``starts[0] == start``.  ``stop`` is ``end`` (at
    most ``m.size``) unless ``max_runs`` is given: then whole pages are read
    only until about that many runs are in hand (at least one page, so a
    caller always makes progress), ``stop`` is where they end, and the
    caller goes on from there.  That bounds the arrays, 16 bytes per run,
    however fragmented the map is.

    The pages' own arrays are concatenated in C, not walked run by run: the
    only Python loop is over pages.  Runs are canonical inside a page but
    two runs either side of a page edge may hold the same value; a caller
    that counts bytes does not care.

    ``pages``: only these pages are read (page indices, increasing; pages
    of ``[start, end)`` not listed are skipped, so the walk costs what is
    listed, not the range's size).  The last run read before a skipped
    page then stands over it too: what the arrays say of skipped pages is
    meaningless, for callers that look only inside listed pages
    (:func:`diff_blocks` against blocks inside them).
    """
    end = min(end, m.size)
    if start >= end:
        raise ValueError(f"empty range [{start}, {end})")
    m.settle(start, end)
    if m._bulk is not None:
        return _run_arrays_bulk(m, start, end, max_runs, pages)
    shift = m._shift
    wanted, pages = pages, m._pages
    first, last = start >> shift, (end - 1) >> shift
    if wanted is None:
        read = range(first, last + 1)
    else:
        read = [q for q in wanted if first <= q <= last]
        if not read:                        # nothing listed: one run, meaningless
            return end, np.array([start], dtype=np.int64), np.zeros(1, dtype=np.int64)
    # (the pages and their runs' counts in list comprehensions, not a
    # Python step of several statements per page: at the end of a run the
    # checks read every page of a 1 TiB disk, 16 K of them, of each map)
    base = m._base
    objs = [pages.get(q, base) for q in read]
    counts = [1 if page.__class__ is int else len(page[1]) for page in objs]
    stop = end
    if max_runs is not None:
        # (the pages up to the one at which the runs reach max_runs)
        k = bisect_left(list(accumulate(counts)), max_runs)
        if k < len(objs):
            del objs[k + 1:], counts[k + 1:]
            read = read[:k + 1]
            stop = min((read[k] + 1) << shift, end)
    # (the columns joined as bytes, in C: numpy's concatenate of a million
    # small arrays cost several times more; values are 4 bytes each unless
    # a page holds 8-byte ones, ``wide``)
    zero = array(m._stype, (0,))            # the start column of a one-value page
    starts = np.frombuffer(b"".join([zero if page.__class__ is int else page[0]
                                     for page in objs]),
                           dtype=_np_type(m._stype)).astype(np.int64)
    bases = (np.arange(first, first + len(objs), dtype=np.int64) if wanted is None
             else np.array(read, dtype=np.int64))
    starts += np.repeat(bases << shift, counts)     # page-relative -> absolute
    wide = any([page[1].typecode == "q" if page.__class__ is not int
                else not 0 <= page <= _MAX_COMPACT for page in objs])
    # (pages of 4-byte values and of 8-byte ones: int64 either way)
    if wide:
        values = np.concatenate([np.asarray(page[1]) if page.__class__ is not int
                                 else np.array([page], dtype=np.int64)
                                 for page in objs]).astype(np.int64)
    else:
        values = np.frombuffer(b"".join([page.to_bytes(4, "little") if page.__class__ is int
                                         else page[1] for page in objs]),
                               dtype=np.uint32).astype(np.int64)
    # clip to [start, stop): from the run holding start to the last one before stop
    # (0 if the first page read is past start's, skipped)
    i = max(int(np.searchsorted(starts, start, side="right")) - 1, 0)
    j = int(np.searchsorted(starts, stop, side="left"))
    starts = starts[i:j]
    starts[0] = start
    return stop, starts, values[i:j]


def _run_arrays_bulk(m: ExtentMap, start: int, end: int, max_runs: int | None,
                     wanted) -> tuple[int, np.ndarray, np.ndarray]:
    """:func:`run_arrays` of a map with pages stored in bulk (settled):
    the same arrays, read with :meth:`ExtentMap._stored_runs` (no Python
    step per page in bulk)."""
    shift = m._shift
    first, last = start >> shift, (end - 1) >> shift
    if wanted is not None:
        listed = np.asarray(wanted, dtype=np.int64)
        at = listed[(listed >= first) & (listed <= last)]
        if not len(at):                     # nothing listed: one run, meaningless
            return end, np.array([start], dtype=np.int64), np.zeros(1, dtype=np.int64)
    else:
        at = np.arange(first, last + 1, dtype=np.int64)
    counts, starts, values = m._stored_runs(at, max_runs)
    stop = end
    if len(counts) < len(at) or (max_runs is not None and int(counts.sum()) >= max_runs):
        # (run_arrays stops after the page at which the runs reach max_runs)
        stop = min((int(at[len(counts) - 1]) + 1) << shift, end)
        at = at[:len(counts)]
    starts += np.repeat(at << shift, counts)    # page-relative -> absolute
    # clip to [start, stop): from the run holding start to the last one before stop
    i = max(int(np.searchsorted(starts, start, side="right")) - 1, 0)
    j = int(np.searchsorted(starts, stop, side="left"))
    starts = starts[i:j]
    starts[0] = start
    return stop, starts, values[i:j]


def diff_blocks(run_starts: np.ndarray, run_values: np.ndarray, end: int,
                starts, length: int, gens) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where a range of a map differs from blocks: the array form of
    :func:`diff_ranges` for one map against blocks that do not overlap.

    The map's side is what :func:`run_arrays` returns for ``[start, end)``:
    run ``k`` covers ``[run_starts[k], run_starts[k + 1])`` (the last one
    ends at ``end``) and holds ``run_values[k]``.  Block ``i`` is
    ``[starts[i], starts[i] + length)`` holding ``gens[i]``; ``starts``
    increase and blocks do not overlap.  Blocks are clipped to
    ``[run_starts[0], end)``, and only the bytes inside them are compared:
    what the map holds between blocks is not looked at.

    Returns four int64 arrays ``(offsets, lengths, want, got)``: the pieces
    where the map holds ``got`` instead of the block's ``want``, in
    increasing offset order.  They cover exactly the bytes
    :func:`diff_ranges` would report inside the blocks, cut differently: at
    every block edge and every run edge (``diff_ranges`` merges neighbours
    of equal value), so sums of lengths and the first offset agree, not the
    pieces themselves.

    How: for each block, ``searchsorted`` finds the run holding its first
    byte and the first run starting at or after its end; the runs in between
    are the ones it meets, usually exactly one (the block was written and
    nothing changed it since).  One row per (block, run) pair, clipped to
    both, compares the values: a block partly overwritten by something else
    yields exactly the bytes that differ, and no Python loop runs per block
    or per run.  Costs about 100 bytes of temporaries per block.
    """
    rs = run_starts
    start = int(rs[0])
    s = np.asarray(starts, dtype=np.int64)
    want = np.asarray(gens, dtype=np.int64)
    e = np.minimum(s + length, end)
    s = np.maximum(s, start)
    inside = s < e
    if not inside.all():
        s, e, want = s[inside], e[inside], want[inside]
    if not len(s):
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty, empty
    if len(s) >= _WALK_FROM:
        # (many blocks, as a long run's audit: one compiled walk over both)
        return _diff_walk(np.asarray(rs, dtype=np.int64),
                          np.asarray(run_values, dtype=np.int64), end, s, e, want)
    re = np.empty_like(rs)                  # run ends
    re[:-1] = rs[1:]
    re[-1] = end
    first = np.searchsorted(rs, s, side="right") - 1      # the run holding a block's first byte
    count = np.searchsorted(rs, e, side="left") - first   # the runs the block meets (>= 1)
    if (count == 1).all():                  # every block inside one run: one row each
        blk = slice(None)
        run = first
    else:
        blk = np.repeat(np.arange(len(s)), count)
        # a row's run: its block's first run plus the row's rank among the block's rows
        run = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count - first, count)
    got = run_values[run]
    bad = got != want[blk]
    a = np.maximum(s[blk], rs[run])[bad]
    b = np.minimum(e[blk], re[run])[bad]
    return a, b - a, want[blk][bad], got[bad]


#: from how many blocks :func:`diff_blocks` walks them compiled
#: (:func:`_diff_walk`; fewer: numpy's searches, and numba left unloaded)
_WALK_FROM = 1 << 12


def _diff_walk(rs, values, end: int, s, e, want):
    """:func:`diff_blocks`'s pieces, walked (:func:`_diff_rows`): counted,
    then filled in."""
    empty = np.empty(0, dtype=np.int64)
    n = _diff_rows(rs, values, end, s, e, want, empty, empty, empty, empty)
    out = tuple(np.empty(n, dtype=np.int64) for _ in range(4))
    if n:
        _diff_rows(rs, values, end, s, e, want, *out)
    return out


@njit(cache=True, _nrt=False)
def _diff_rows(rs, values, end, s, e, want, offsets, lengths, wanted, got):
    """The blocks ``[s[i], e[i])`` (clipped, none empty, in increasing
    order) and the runs (``rs``, their starts, increasing, the last one
    ending at ``end``; ``values``) walked side by side, each block from the
    run holding its first byte (numpy's ``searchsorted(rs, s, "right") -
    1``) through every run starting before its end (``searchsorted(rs, e,
    "left")``): a piece where the run's value is not the block's, the same
    rows in the same order as :func:`diff_blocks`'s searches make, where
    those cost a binary search per block and a dozen temporaries (a 1 TiB
    hour's audit: 3.6 M blocks).  How many pieces; they are written to the
    four arrays (offset, length, the block's value, the run's) if those
    have room (else only counted)."""
    fill = offsets.shape[0] > 0
    n = s.shape[0]
    m = rs.shape[0]
    k = 0
    r = 0
    for i in range(n):
        while r + 1 < m and rs[r + 1] <= s[i]:
            r += 1
        q = r
        while True:
            if values[q] != want[i]:
                if fill:
                    a = rs[q] if rs[q] > s[i] else s[i]
                    b = rs[q + 1] if q + 1 < m else end
                    if e[i] < b:
                        b = e[i]
                    offsets[k] = a
                    lengths[k] = b - a
                    wanted[k] = want[i]
                    got[k] = values[q]
                k += 1
            q += 1
            if q >= m or rs[q] >= e[i]:
                break
    return k


@njit(cache=True)
def _move_rows(lo, n, to, starts, values, to_starts, to_values):
    """Copy rows ``lo[i]:lo[i] + n[i]`` of ``starts`` and ``values`` to
    ``to[i]:to[i] + n[i]`` of ``to_starts`` and ``to_values``, for each
    ``i`` (the bulk's rows: one pass, no index arrays)."""
    for i in range(lo.shape[0]):
        a = lo[i]
        t = to[i]
        for k in range(n[i]):
            to_starts[t + k] = starts[a + k]
            to_values[t + k] = values[a + k]


@njit(cache=True)
def _rows_fit(lo, n, values, most):
    """Whether the values of rows ``lo[i]:lo[i] + n[i]`` all lie in
    ``[0, most]``."""
    for i in range(lo.shape[0]):
        for k in range(lo[i], lo[i] + n[i]):
            if values[k] < 0 or values[k] > most:
                return False
    return True
