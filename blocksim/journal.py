"""Deferred content: a simulation's content writes, kept per page, applied late.

Every guest write and every mirror copy changes an :class:`~blocksim.extents.ExtentMap`.
Done as it happens, each change is a splice into one of the map's 64 MiB
pages.  In a 1 TiB mirror under random guest writes those pages are touched
at random: each splice costs a few cache misses, and the content work was
half the cost of a copy (``docs/performance.md``).  Yet in such a run almost
nothing *reads* the content before the end: the guest's reads do not look at
data, and a mirror's copy only needs to know whether its range reads as
zeros (to send a write-zeroes instead of a write).

A :class:`ContentJournal` therefore records the changes instead, for every
map of one simulation, in one log per page, in the order they happen:

- ``set``: ``[a, b)`` of map ``m`` takes generation ``v`` (a guest write, a
  write-zeroes, a copy of a single value);
- ``snap``: a copy's read of ``[a, b)`` from map ``m`` (what
  :meth:`ExtentMap.snapshot <blocksim.extents.ExtentMap.snapshot>` returns
  is then a :class:`Snap`, a ticket for that content);
- ``paste``: the copy's write of that ticket into another map.

Copies go between equal offsets, so each page's log is a closed world: its
entries touch only that page of each map, and applying them in log order
gives exactly what applying them as they happened would have given.  A
page is *settled* (its log applied) when anything else needs it: a read of
its content, a change the log cannot hold (one spanning pages, a
copy-on-read fill), a copy from a range that may read as zeros, or the end
of the run (the summary counts extents, the invariants compare content).
Long logs are applied with numpy, many pages at once, with no Python per
entry (:meth:`ContentJournal._replay_bulk`); short logs, and the few pages
holding copies in flight, go through the maps' own splices.

Each log entry is two 64-bit words: ``a | b << 27 | map << 54`` (offsets
relative to the page, which is at most ``2**26`` bytes) and the value,
where a negative value stands for a snap (``-1 - 2 * id``) or a paste
(``-2 - 2 * id``).  Sixteen bytes per change, against about thirteen per
run in a page; past a budget (:data:`BUDGET_ENTRIES`, checked at each sample
tick) the whole journal is settled, so its memory stays bounded.

Turned off by ``Simulation(shortcuts=False)``, which applies every change
at once; the tests compare both (``tests/test_journal.py`` does so on
random sequences of changes and reads, with both ways of applying a log).
"""

from __future__ import annotations

from array import array

import numpy as np

_OFFSET_BITS = 27
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_MAP_SHIFT = 2 * _OFFSET_BITS
MAX_MAPS = 1 << (63 - _MAP_SHIFT)
MAX_PAGE_SHIFT = _OFFSET_BITS - 1

#: Logs of at most this many entries are applied with the maps' own
#: splices: below it numpy's fixed costs are larger than the splices'.
SMALL_LOG = 32

#: Longer logs are applied with numpy all at once (``True``), or entry by
#: entry like short ones (``False``, the reference the tests compare).
BULK = True

#: How many entries a bulk settle of many pages takes at a time (bounds
#: the temporaries: about 100 bytes per entry and per segment).
BULK_ENTRIES = 1 << 16

#: Past this many entries (16 bytes each) the journal is settled whole at
#: the next check (:meth:`ContentJournal.keep_within_budget`): memory stays
#: bounded however long the run, at the same cost per change.
BUDGET_ENTRIES = 8 << 20


class Snap:
    """What a copy read from a journaled map: a ticket for the content of
    ``[start, end)`` at the moment of the read, to be written into another
    map of the same journal with :meth:`ExtentMap.set_runs
    <blocksim.extents.ExtentMap.set_runs>` (or read with :meth:`runs`).

    A copy whose write fails or is dropped calls :meth:`forget`, so the
    journal does not keep content nobody will paste."""

    __slots__ = ("journal", "sid", "start", "end")

    def __init__(self, journal: "ContentJournal", sid: int, start: int, end: int):
        self.journal = journal
        self.sid = sid
        self.start, self.end = start, end

    def runs(self) -> list:
        """The content read, as ``(start, end, generation)`` runs."""
        held = self.journal.resolve(self)
        return held.runs() if held.__class__ is not list else list(held)

    def forget(self) -> None:
        self.journal.forget(self)


class ContentJournal:
    """The deferred content changes of a set of extent maps with the same
    pages (one simulation's devices).  See the module's doc."""

    __slots__ = ("shift", "maps", "logs", "_held", "_dead", "_next_sid",
                 "settled_pages", "replayed")

    def __init__(self, page_shift: int):
        if page_shift > MAX_PAGE_SHIFT:
            raise ValueError(f"pages of 2**{page_shift} bytes are too large to journal")
        self.shift = page_shift
        self.maps: list = []
        #: page -> its log, ``array('q')`` of two words per entry
        self.logs: dict[int, array] = {}
        # snap id -> what it read (runs or a Span), for snaps whose page was
        # settled before their paste came
        self._held: dict = {}
        self._dead: set[int] = set()     # forgotten snaps still in a log
        self._next_sid = 0
        #: counters, for benchmarks
        self.settled_pages = 0
        self.replayed = 0

    def register(self, m) -> None:
        """Make map ``m`` journal its changes here."""
        if m._shift != self.shift:
            raise ValueError("a journal's maps must share their page size")
        if len(self.maps) >= MAX_MAPS:
            raise ValueError(f"a journal holds at most {MAX_MAPS} maps")
        m._tag = len(self.maps) << _MAP_SHIFT
        m._journal = self
        m._pending = set()
        m._zeroing = set()
        self.maps.append(m)

    # -- recording (the maps call these from their hot paths) ---------------------
    def snap(self, m, p: int, start: int, end: int) -> Snap:
        """Log a read of ``[start, end)`` (inside page ``p``) of map ``m``."""
        sid = self._next_sid
        self._next_sid = sid + 1
        ps = p << self.shift
        log = self.logs.get(p)
        if log is None:
            log = self.logs[p] = array("q")
        log.append(m._tag | (start - ps) | ((end - ps) << _OFFSET_BITS))
        log.append(-1 - 2 * sid)
        return Snap(self, sid, start, end)

    def paste(self, m, snap: Snap) -> None:
        """Log the write of ``snap`` into map ``m``, at the same offsets."""
        start = snap.start
        p = start >> self.shift
        ps = p << self.shift
        log = self.logs.get(p)
        if log is None:
            log = self.logs[p] = array("q")
        log.append(m._tag | (start - ps) | ((snap.end - ps) << _OFFSET_BITS))
        log.append(-2 - 2 * snap.sid)
        m._pending.add(p)
        m._zeroing.add(p)               # a paste may bring zeros

    def forget(self, snap: Snap) -> None:
        """Nobody will paste ``snap``."""
        if self._held.pop(snap.sid, None) is None:
            self._dead.add(snap.sid)

    def resolve(self, snap: Snap):
        """What ``snap`` read (runs or a Span), settling its page if needed.
        The ticket stays valid: a paste may still follow."""
        sid = snap.sid
        if sid not in self._held:
            self.settle(snap.start >> self.shift)
        return self._held[sid]

    # -- settling -------------------------------------------------------------------
    def settle(self, p: int) -> None:
        """Apply page ``p``'s log to the maps, in order."""
        log = self._take(p)
        if log is None:
            return
        if len(log) <= 2 * SMALL_LOG:
            self._replay_small(p, log)
        elif BULK:
            self._replay_bulk([p], [log])
        else:
            self._replay_small(p, log)

    def settle_range(self, first: int, last: int) -> None:
        """Settle every page from ``first`` to ``last`` that has a log."""
        logs = self.logs
        if not logs:
            return
        if last - first < 64:
            pages = [p for p in range(first, last + 1) if p in logs]
        else:
            pages = sorted(q for q in logs if first <= q <= last)
        if len(pages) == 1:
            self.settle(pages[0])
            return
        if not BULK:
            for p in pages:
                self.settle(p)
            return
        # in chunks of about BULK_ENTRIES entries, applied together
        chunk: list = []
        chunk_logs: list = []
        size = 0
        for p in pages:
            log = self._take(p)
            chunk.append(p)
            chunk_logs.append(log)
            size += len(log)
            if size >= 2 * BULK_ENTRIES:
                self._replay_bulk(chunk, chunk_logs)
                chunk, chunk_logs, size = [], [], 0
        if chunk:
            self._replay_bulk(chunk, chunk_logs)

    def keep_within_budget(self) -> bool:
        """Settle everything if the logs hold more than
        :data:`BUDGET_ENTRIES` entries; whether it did."""
        if sum(map(len, self.logs.values())) <= 2 * BUDGET_ENTRIES:
            return False
        self.settle_all()
        return True

    def settle_all(self) -> None:
        if self.logs:
            self.settle_range(min(self.logs), max(self.logs))

    def _take(self, p: int):
        """Page ``p``'s log, removed from the journal (None if it has none)."""
        log = self.logs.pop(p, None)
        if log is None:
            return None
        for m in self.maps:
            m._pending.discard(p)
            m._zeroing.discard(p)
        self.settled_pages += 1
        self.replayed += len(log) >> 1
        return log

    def _entries(self, p: int, log: array):
        """The log's entries as lists: map index, absolute start and end, value."""
        words = np.frombuffer(log, dtype=np.int64)
        w0, values = words[0::2], words[1::2]
        ps = p << self.shift
        a = (w0 & _OFFSET_MASK) + ps
        b = ((w0 >> _OFFSET_BITS) & _OFFSET_MASK) + ps
        return (w0 >> _MAP_SHIFT).tolist(), a.tolist(), b.tolist(), values.tolist()

    def _replay_small(self, p: int, log: array) -> None:
        """Apply a short log entry by entry with the maps' own splices."""
        maps, held, dead = self.maps, self._held, self._dead
        taken: dict = {}
        for mi, a, b, v in zip(*self._entries(p, log)):
            m = maps[mi]
            if v >= 0:
                m._set(a, b, v)
                continue
            code = -1 - v
            sid = code >> 1
            if not code & 1:                # a snap
                if sid in dead:
                    dead.discard(sid)
                else:
                    taken[sid] = m._snapshot(a, b)
                continue
            m._set_runs(taken.pop(sid) if sid in taken else held.pop(sid))
        held.update(taken)

    def _replay_bulk(self, pages: list, logs: list) -> None:
        """Apply the logs of ``pages`` with numpy, with no Python loop per entry.

        The pages are cut into elementary segments at every edge; each
        write (a set or a paste) becomes one row per segment it covers.
        Sorted by (map, segment) and, within, by log order, the last row of
        each group is what the map finally holds there.  A paste stands for
        what its snap read: the last row of the source's group before the
        snap, or the source's stored value if none.  Pages with a paste of a snap taken before an earlier
        settle, or a snap whose paste is still to come (a few pages at
        most: copies in flight), take :meth:`_replay_small` instead."""
        shift = self.shift
        maps, dead = self.maps, self._dead
        words = (np.frombuffer(logs[0], dtype=np.int64) if len(logs) == 1 else
                 np.concatenate([np.frombuffer(log, dtype=np.int64) for log in logs]))
        w0, val = words[0::2], words[1::2]
        n = len(val)
        page_arr = np.asarray(pages, dtype=np.int64)
        page_of = np.repeat(page_arr, [len(log) >> 1 for log in logs])
        origin = page_of << shift
        a = origin + (w0 & _OFFSET_MASK)
        b = origin + ((w0 >> _OFFSET_BITS) & _OFFSET_MASK)
        mids = w0 >> _MAP_SHIFT
        code = -1 - val                     # snaps and pastes (val < 0)
        is_snap = (val < 0) & ((code & 1) == 0)
        is_paste = (val < 0) & ((code & 1) == 1)
        sid = code >> 1
        snap_at = np.flatnonzero(is_snap)
        snap_sid = sid[snap_at]
        paste_sid = sid[is_paste]
        dead_sid = np.fromiter(dead, dtype=np.int64, count=len(dead))
        odd = np.concatenate([
            page_of[is_paste][~_member(paste_sid, snap_sid)],
            page_of[snap_at][~(_member(snap_sid, paste_sid) | _member(snap_sid, dead_sid))]])
        if len(odd):
            odd_pages = set(odd.tolist())
            rest = [(p, log) for p, log in zip(pages, logs) if p not in odd_pages]
            for p, log in zip(pages, logs):
                if p in odd_pages:
                    self._replay_small(p, log)
            if rest:
                self._replay_bulk([p for p, _ in rest], [log for _, log in rest])
            return
        if len(dead_sid):
            dead.difference_update(snap_sid[_member(snap_sid, dead_sid)].tolist())

        # the maps involved, their stored runs on these pages, and the segments
        involved = _unique(mids)
        local = np.searchsorted(involved, mids)
        page_len = 1 << shift
        edges = [a, b, page_arr << shift, (page_arr + 1) << shift]
        base_runs = []
        for mi in involved.tolist():
            pages_of_map = maps[mi]._pages
            starts, values = [], []
            for p in pages:
                page = pages_of_map.get(p, 0)
                ps = p << shift
                if page.__class__ is int:
                    starts.append(np.array([ps], dtype=np.int64))
                    values.append(np.array([page], dtype=np.int64))
                else:
                    starts.append(np.frombuffer(page[0], dtype=_dtype(page[0])).astype(np.int64) + ps)
                    values.append(np.frombuffer(page[1], dtype=np.int64))
            starts = np.concatenate(starts)
            base_runs.append((starts, np.concatenate(values)))
            edges.append(starts)
        bounds = _unique(np.concatenate(edges))
        nseg = len(bounds)
        stored = np.empty((len(involved), nseg), dtype=np.int64)
        for k, (starts, values) in enumerate(base_runs):
            stored[k] = values[np.searchsorted(starts, bounds, side="right") - 1]
        ia = np.searchsorted(bounds, a)
        ib = np.searchsorted(bounds, b)

        # one row per (write, segment), sorted by (map, segment, log order)
        writes = np.flatnonzero(~is_snap)
        if not len(writes):                 # only forgotten snaps
            return
        lens = ib[writes] - ia[writes]
        row_entry = np.repeat(writes, lens)
        row_seg = ia[row_entry] + (np.arange(len(row_entry)) -
                                   np.repeat(np.cumsum(lens) - lens, lens))
        key = local[row_entry] * nseg + row_seg
        order = np.argsort(key, kind="stable")   # rows come in log order
        key = key[order]
        row_entry = row_entry[order]
        last = np.flatnonzero(np.append(key[1:] != key[:-1], True))
        final_key = key[last]
        writer = row_entry[last]
        final = val[writer]

        # pastes: what their snaps read.  That is a generation: a snap of a
        # page where its map has a paste logged settles the page first
        # (ExtentMap.snapshot), so no log holds a copy of a copy.
        todo = np.flatnonzero(final < 0)
        if len(todo):
            by_sid = np.argsort(snap_sid)
            snap = snap_at[by_sid[np.searchsorted(snap_sid[by_sid], sid[writer[todo]])]]
            seg = final_key[todo] % nseg
            src = local[snap]
            want = src * nseg + seg
            rank = key * n + row_entry          # increasing
            pos = np.searchsorted(rank, want * n + snap) - 1
            found = pos >= 0
            found[found] = key[pos[found]] == want[found]
            got = np.where(found, val[row_entry[pos]], stored[src, seg])
            if (got < 0).any():
                raise AssertionError("a journal log holds a copy of a copy")
            final[todo] = got

        # each (map, page) written: rebuilt from its segments
        written_map = final_key // nseg
        page_index = np.searchsorted(page_arr, bounds[final_key % nseg] >> shift)
        npages = len(pages)
        pairs = _unique(written_map * npages + page_index)
        page_starts = page_arr << shift
        lo = np.searchsorted(bounds, page_starts)
        for k in _unique(written_map).tolist():
            values = stored[k]
            mine = written_map == k
            values[final_key[mine] % nseg] = final[mine]
            m = maps[int(involved[k])]
            rebuilt = pairs[pairs // npages == k] % npages
            # each page up to its end, or the map's if the map ends inside it
            ends = np.minimum(page_starts[rebuilt] + page_len, m.size)
            m._put_pages(page_arr[rebuilt], bounds, values, lo[rebuilt],
                         np.searchsorted(bounds, ends))


def _unique(x: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``x`` (numpy's ``unique`` hashes large
    arrays, several times slower on these)."""
    x = np.sort(x)
    if len(x) > 1:
        x = x[np.append(True, x[1:] != x[:-1])]
    return x


def _member(x: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Which elements of ``x`` are in ``of`` (``np.isin``, by sorting)."""
    if not len(of):
        return np.zeros(len(x), dtype=bool)
    of = np.sort(of)
    i = np.searchsorted(of, x)
    i[i == len(of)] = 0
    return of[i] == x


def _dtype(column: array):
    return np.uint32 if column.typecode == "I" else np.int64
