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
holds one value is stored as a plain int, and only pages with several runs
keep two compact ``array('q')`` columns (run starts, run values).  A 1 TiB
image written sequentially is a few thousand ints; random 4 KiB writes cost
16 bytes per run, and each insertion moves only the runs of one page.

Runs are always canonical (adjacent runs have different values), so equality
of content is equality of run lists.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Iterator, Sequence

Run = tuple[int, int, int]  # (start, end, generation), end exclusive

PAGE_SHIFT = 26


class ExtentMap:
    """A piecewise-constant map ``offset -> generation`` over ``[0, size)``."""

    __slots__ = ("size", "_pages", "_shift")

    def __init__(self, size: int, page_shift: int = PAGE_SHIFT):
        self.size = int(size)
        self._shift = page_shift
        # page index -> int (the whole page holds one value) or
        # (starts, values) arrays with starts[0] == the page's first offset.
        self._pages: dict = {}

    # -- writing -----------------------------------------------------------
    def set(self, start: int, end: int, value: int) -> None:
        """Give ``[start, end)`` the generation ``value``."""
        if start >= end:
            return
        shift = self._shift
        pages = self._pages
        first, last = start >> shift, (end - 1) >> shift
        for p in range(first, last + 1):
            ps = p << shift
            pe = min(ps + (1 << shift), self.size)
            a = start if start > ps else ps
            b = end if end < pe else pe
            if a == ps and b == pe:
                if value:
                    pages[p] = value
                else:
                    pages.pop(p, None)
                continue
            page = pages.get(p, 0)
            if page.__class__ is int:
                if page == value:
                    continue
                starts = array("q", (ps,))
                values = array("q", (page,))
                pages[p] = (starts, values)
            else:
                starts, values = page       # spliced in place
            _splice(starts, values, a, b, value, pe)
            if len(starts) == 1:            # one value again: a plain int
                if values[0]:
                    pages[p] = values[0]
                else:
                    pages.pop(p, None)

    def set_runs(self, runs: Sequence[Run]) -> None:
        """Copy runs read from another map (same offsets) into this one."""
        for a, b, v in runs:
            self.set(a, b, v)

    def fill_runs(self, runs: Sequence[Run]) -> None:
        """Like :meth:`set_runs`, but only where this map still holds 0.

        A copy-on-read never overwrites data a guest wrote meanwhile."""
        for a, b, v in runs:
            if v:
                for ha, hb, hv in self.runs(a, b):
                    if hv == 0:
                        self.set(ha, hb, v)

    # -- reading -----------------------------------------------------------
    def runs(self, start: int = 0, end: int | None = None) -> list[Run]:
        """The canonical runs covering ``[start, end)``, clipped to it."""
        return list(self.iter_runs(start, end))

    def iter_runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        if end is None:
            end = self.size
        if start >= end:
            return
        shift = self._shift
        pages = self._pages
        cur_s = cur_v = None
        cur_e = start
        for p in range(start >> shift, ((end - 1) >> shift) + 1):
            ps = p << shift
            pe = min(ps + (1 << shift), self.size)
            a = start if start > ps else ps
            b = end if end < pe else pe
            page = pages.get(p, 0)
            if page.__class__ is int:
                pieces = ((a, b, page),)
            else:
                pieces = _page_runs(page[0], page[1], a, b, pe)
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
        page = self._pages.get(offset >> self._shift, 0)
        if page.__class__ is int:
            return page
        starts, values = page
        return values[bisect_right(starts, offset) - 1]

    def count(self, start: int, end: int, value: int) -> int:
        """How many units of ``[start, end)`` hold ``value``."""
        return sum(b - a for a, b, v in self.iter_runs(start, end) if v == value)

    def extent_count(self) -> int:
        """Number of stored runs (a measure of memory use)."""
        return sum(1 if p.__class__ is int else len(p[0]) for p in self._pages.values())

    @property
    def page_size(self) -> int:
        return 1 << self._shift


def _page_runs(starts, values, a: int, b: int, pe: int) -> list[Run]:
    i = bisect_right(starts, a) - 1
    n = len(starts)
    out = []
    while i < n:
        s = starts[i]
        if s >= b:
            break
        e = starts[i + 1] if i + 1 < n else pe
        out.append((s if s > a else a, e if e < b else b, values[i]))
        i += 1
    return out


def _splice(starts: array, values: array, s: int, e: int, v: int, pe: int) -> None:
    """Set ``[s, e)`` to ``v`` inside one page, keeping runs canonical."""
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
    k = bisect_left(starts, e, i)            # first run starting at or after e
    tail_val = values[k - 1]                 # value just before e, before the change
    new_s: list[int] = []
    new_v: list[int] = []
    if starts[i] < s:
        new_s.append(starts[i])
        new_v.append(values[i])
        left_val = values[i]
    else:
        left_val = values[i - 1] if i > 0 else None
    if left_val != v:
        new_s.append(s)
        new_v.append(v)
    if e < pe:
        if k < len(starts) and starts[k] == e:
            if values[k] == v:
                k += 1          # the following run merges into this one
        elif tail_val != v:
            new_s.append(e)
            new_v.append(tail_val)
    starts[i:k] = array("q", new_s)
    values[i:k] = array("q", new_v)


def from_sorted_runs(size: int, runs, page_shift: int = PAGE_SHIFT) -> ExtentMap:
    """Build a map from runs sorted by start and not overlapping (gaps are 0).

    Appends page by page instead of splicing: how a ledger of many writes is
    turned into a map in one pass.
    """
    m = ExtentMap(size, page_shift)
    pages = m._pages
    step = 1 << page_shift
    last_end = 0
    for a, b, v in runs:
        if not v or a >= b:
            continue
        if a < last_end:
            raise ValueError("runs overlap or are not sorted")
        while a < b:
            p = a >> page_shift
            ps = p << page_shift
            pe = min(ps + step, size)
            piece_end = b if b < pe else pe
            page = pages.get(p)
            if page is None:
                page = pages[p] = (array("q", (ps,)), array("q", (0,)))
            starts, values = page
            if starts[-1] == a:
                values[-1] = v
            elif values[-1] != v:
                starts.append(a)
                values.append(v)
            if piece_end < pe:
                starts.append(piece_end)
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
    single = (len(left) == 1 and len(right) == 1
              and left[0]._shift == right[0]._shift and step == left[0].page_size
              and start % step == 0)
    for ps in range(start, end, step):
        pe = min(ps + step, end)
        if single:
            # Same page object contents means same runs: skip the resolve.
            pl = left[0]._pages.get(ps >> left[0]._shift, 0)
            pr = right[0]._pages.get(ps >> right[0]._shift, 0)
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
