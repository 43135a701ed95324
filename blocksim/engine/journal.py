"""Deferred content: a simulation's content writes, kept per page, applied late.

Every guest write and every mirror copy changes an :class:`~blocksim.model.extents.ExtentMap`.
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
- ``paste``: a copy's write of ``[a, b)`` into map ``m`` of what it read.
  The read is not logged: what :meth:`ExtentMap.snapshot
  <blocksim.model.extents.ExtentMap.snapshot>` returns is a :class:`Snap`, a
  ticket that keeps the read's place in the page's log, and the paste names
  that place (or, if the page was settled in between, the content the
  settle worked out for the ticket).

Copies go between equal offsets, so each page's log is a closed world: its
entries touch only that page of each map, and applying them in log order
gives exactly what applying them as they happened would have given.  A
page is *settled* (its log applied) when anything else needs it: a read of
its content, a change the log cannot hold (one spanning pages, a
copy-on-read fill), a copy from a range that may read as zeros, or the end
of the run (the summary counts extents, the invariants compare content).
Long logs are applied in bulk, many pages at once, with no Python per
entry (:meth:`ContentJournal._replay_bulk`: numpy cuts the pages into
segments, a compiled sweep applies the entries); short logs, and the few
pages holding copies in flight, go through the maps' own splices.

Each log entry is two 64-bit words: ``a | b << 27 | map << 54`` (offsets
relative to the page, which is at most ``2**26`` bytes) and the value,
where a negative value stands for a paste (see :meth:`ContentJournal.paste`).  Sixteen bytes per change, against about thirteen per
run in a page; past a budget (:data:`BUDGET_ENTRIES`, checked at each sample
tick) the whole journal is settled, so its memory stays bounded.

Entries are not appended to their page's log one by one: they go, in the
order they happen, to one flat *stage* of ``(page, word, value)`` rows,
which compiled code appends to as well (a mirror's copy bursts,
:mod:`blocksim.engine.burst_kernel`, and a guest's quiet stretches,
:func:`log_writes`), and which is handed out to the pages' logs in bulk
(:meth:`ContentJournal.flush`) when it is full and before anything settles.
A page's entries keep their order either way; :attr:`ContentJournal.loglen`
counts each page's entries, staged ones included, which is what a read's
place in its log is measured in.

Turned off by ``Simulation(shortcuts=False)``, which applies every change
at once; the tests compare both (``tests/engine/test_journal.py`` does so on
random sequences of changes and reads, with both ways of applying a log).
"""

from __future__ import annotations

from array import array

import numpy as np
from .compiled import Compiled

#: compiled with numba on first use (engine/compiled.py)
njit = Compiled(globals())

_OFFSET_BITS = 27
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_MAP_SHIFT = 2 * _OFFSET_BITS
_MAP_BITS = 63 - _MAP_SHIFT
MAX_MAPS = 1 << _MAP_BITS
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

#: How many entries the stage holds (24 bytes each) before they are handed
#: out to the pages' logs (:meth:`ContentJournal.flush`): enough that a hand
#: out meets each page of a 1 TiB disk many times over.
STAGE_ENTRIES = 1 << 19


class Snap:
    """What a copy read from a journaled map: a ticket for the content of
    ``[start, end)`` at the moment of the read, to be written into another
    map of the same journal with :meth:`ExtentMap.set_runs
    <blocksim.model.extents.ExtentMap.set_runs>` (or read with :meth:`runs`).

    The read itself is not logged: the ticket holds its place in the page's
    log (``log``, ``pos``: the entries before it), which the paste then
    names.  If the page is settled first, what was read is worked out then
    and held for the paste.  A copy whose write fails or is dropped calls
    :meth:`forget`."""

    __slots__ = ("journal", "sid", "start", "end", "log", "pos", "src")

    def __init__(self, journal: "ContentJournal", sid: int, start: int, end: int,
                 log: array, pos: int, src: int):
        self.journal = journal
        self.sid = sid
        self.start, self.end = start, end
        self.log = log                  # the page's log when the read was made
        self.pos = pos                  # how many of its entries came before
        self.src = src                  # the map read (its index)

    def runs(self) -> list:
        """The content read, as ``(start, end, generation)`` runs."""
        held = self.journal.resolve(self)
        return held.runs() if held.__class__ is not list else list(held)

    def forget(self) -> None:
        self.journal.forget(self)


class ContentJournal:
    """The deferred content changes of a set of extent maps with the same
    pages (one simulation's devices).  See the module's doc."""

    __slots__ = ("shift", "maps", "_logs", "loglen", "_held", "_open", "_next_sid",
                 "settled_pages", "replayed", "_before_settle", "stage", "rows",
                 "staged", "capacity", "flags", "zeroed")

    def __init__(self, page_shift: int):
        if page_shift > MAX_PAGE_SHIFT:
            raise ValueError(f"pages of 2**{page_shift} bytes are too large to journal")
        self.shift = page_shift
        self.maps: list = []
        # page -> its log, ``array('q')`` of two words per entry (without
        # the entries still on the stage: see ``logs``)
        self._logs: dict[int, array] = {}
        #: page -> the length of its log in words, staged entries included
        #: (0: none): a read's place in its page's log (blocksim.engine.burst_kernel)
        self.loglen = array("q")
        #: the stage: entries not yet handed out to their pages' logs, as
        #: ``(page, word, value)`` rows, ``staged`` of them, in the order
        #: they were made (``rows`` is the same memory as an array, for
        #: compiled code; the array never changes size)
        self.capacity = STAGE_ENTRIES
        self.stage = array("q", bytes(24 * self.capacity))
        self.rows = np.frombuffer(self.stage, dtype=np.int64).reshape(self.capacity, 3)
        self.staged = 0
        #: each map's page flags (its ``_pending`` and ``_zeroing``) as
        #: arrays, for compiled code that logs changes
        self.flags: list = []
        #: per map, how many times a change that may bring zeros was logged
        #: (what a reader caching "no zeros here" watches)
        self.zeroed = array("q")
        #: called before any settle: whoever keeps reads of its own outside
        #: ``_open`` hands them in (blocksim.engine.burst_kernel)
        self._before_settle: list = []
        # snap id -> what it read (runs or a Span), for snaps whose page was
        # settled before their paste came
        self._held: dict = {}
        # snap id -> the Snap, until it is pasted or forgotten (the copies
        # in flight: a settle works out what they read)
        self._open: dict = {}
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
        pages = (m.size >> self.shift) + 1
        if len(self.loglen) < pages:
            self.loglen.frombytes(bytes(8 * (pages - len(self.loglen))))
        m._journal = self
        # page -> 1 if its log changes this map; 1 if that may bring zeros
        m._pending = bytearray(pages)
        m._zeroing = bytearray(pages)
        self.flags.append((np.frombuffer(m._pending, dtype=np.uint8),
                           np.frombuffer(m._zeroing, dtype=np.uint8)))
        self.zeroed.append(0)
        self.maps.append(m)

    @property
    def logs(self) -> dict[int, array]:
        """Page -> its log, every entry handed out (a view for tests and
        diagnostics: it flushes the stage)."""
        self.flush()
        return self._logs

    def entries(self) -> int:
        """How many entries the journal holds, staged or in logs."""
        return sum(map(len, self._logs.values())) // 2 + self.staged

    # -- recording (the maps call these from their hot paths) ---------------------
    def log(self, p: int, word: int, value: int) -> None:
        """Log an entry for page ``p`` (on the stage)."""
        n = self.staged
        if n == self.capacity:
            self.flush()
            n = 0
        stage = self.stage
        k = 3 * n
        stage[k] = p
        stage[k + 1] = word
        stage[k + 2] = value
        self.staged = n + 1
        self.loglen[p] += 2

    def flush(self) -> None:
        """Hand the staged entries out to their pages' logs, in order."""
        n = self.staged
        if not n:
            return
        self.staged = 0
        words = np.empty((n, 2), dtype=np.int64)
        pages, ends = _by_page(self.rows, n, len(self.loglen), words)
        data = memoryview(words).cast("B")
        logs = self._logs
        a = 0
        for p, b in zip(pages.tolist(), ends.tolist()):
            log = logs.get(p)
            if log is None:
                log = logs[p] = array("q")
            log.frombytes(data[a << 4:b << 4])
            a = b

    def snap(self, m, p: int, start: int, end: int, pos: int | None = None) -> Snap:
        """A read of ``[start, end)`` (inside page ``p``) of map ``m``, made
        now or, ``pos``, after the first ``pos`` entries of the page's log
        (a read compiled code made, which no settle has taken since)."""
        sid = self._next_sid
        self._next_sid = sid + 1
        log = self._logs.get(p)
        if log is None:                 # (a log to hold the read's place)
            log = self._logs[p] = array("q")
        snap = self._open[sid] = Snap(self, sid, start, end, log,
                                      self.loglen[p] >> 1 if pos is None else pos,
                                      m._tag >> _MAP_SHIFT)
        return snap

    def paste(self, m, snap: Snap) -> None:
        """Log the write of ``snap`` into map ``m``, at the same offsets:
        value ``-1 - 2 * (pos << 9 | src)`` names the read's place in this
        log, ``-2 - 2 * id`` a read held since its page was settled."""
        del self._open[snap.sid]
        start = snap.start
        p = start >> self.shift
        ps = p << self.shift
        # (a settle since the read took its log: what it read is held)
        if self._logs.get(p) is snap.log:
            value = -1 - ((snap.pos << _MAP_BITS | snap.src) << 1)
        else:
            value = -2 - (snap.sid << 1)
        self.log(p, m._tag | (start - ps) | ((snap.end - ps) << _OFFSET_BITS), value)
        m._pending[p] = 1
        self.may_zero(m, p)             # a paste may bring zeros

    def may_zero(self, m, p: int) -> None:
        """A change logged for page ``p`` of map ``m`` may bring zeros."""
        m._zeroing[p] = 1
        self.zeroed[m._tag >> _MAP_SHIFT] += 1

    def log_writes(self, m, offsets: np.ndarray, length: int, first_value: int) -> None:
        """Log ``m.set(offset, offset + length, value)`` for each of
        ``offsets`` (int64) in turn, values ``first_value``,
        ``first_value + 1``... (positive: no zeros), compiled: the writes of
        a guest's quiet stretch.  A write across pages takes ``m.set``."""
        n = len(offsets)
        i = 0
        loglen = np.frombuffer(self.loglen, dtype=np.int64)
        pending = self.flags[m._tag >> _MAP_SHIFT][0]
        while i < n:
            k, self.staged = _stage_sets(self.rows, self.staged, loglen, pending, offsets, i,
                                         length, first_value, m._tag, self.shift)
            i = k
            if i < n:
                if self.staged == self.capacity:
                    self.flush()
                else:
                    a = int(offsets[i])
                    m.set(a, a + length, first_value + i)
                    i += 1

    def forget(self, snap: Snap) -> None:
        """Nobody will paste ``snap``."""
        self._open.pop(snap.sid, None)
        self._held.pop(snap.sid, None)

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
        for hand_in in self._before_settle:
            hand_in()
        self.flush()
        log = self._take(p)
        if log is None:
            return
        if len(log) <= 2 * SMALL_LOG or not BULK:
            self._replay_small(p, log)
        else:
            self._replay_bulk([p], [log])

    def settle_range(self, first: int, last: int) -> None:
        """Settle every page from ``first`` to ``last`` that has a log."""
        if not (self._logs or self.staged):
            return
        for hand_in in self._before_settle:
            hand_in()
        self.flush()
        logs = self._logs
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
        if self.entries() <= BUDGET_ENTRIES:
            return False
        self.settle_all()
        return True

    def settle_all(self) -> None:
        self.flush()
        if self._logs:
            self.settle_range(min(self._logs), max(self._logs))

    def _take(self, p: int):
        """Page ``p``'s log, removed from the journal (None if it has none)."""
        log = self._logs.pop(p, None)
        if log is None:
            return None
        self.loglen[p] = 0
        for m in self.maps:
            if p < len(m._pending):     # (maps of several sizes)
                m._pending[p] = 0
                m._zeroing[p] = 0
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
        """Apply a log entry by entry with the maps' own splices (a short
        log, a page holding copies in flight, or the reference): each read
        is taken where it was made, between the entries before and after."""
        maps, held = self.maps, self._held
        mids, a, b, values = self._entries(p, log)
        due: dict = {}                  # entry index -> reads to take there
        for j, v in enumerate(values):
            if v < 0 and not (-1 - v) & 1:
                code = (-1 - v) >> 1
                due.setdefault(code >> _MAP_BITS, []).append((j, code & (MAX_MAPS - 1), a[j], b[j]))
        opened = [s for s in self._open.values() if s.log is log]
        for s in opened:
            due.setdefault(s.pos, []).append((s, s.src, s.start, s.end))
        taken: dict = {}
        n = len(values)
        for k in range(n + 1):
            for key, src, start, end in due.get(k, ()):
                taken[key] = maps[src]._snapshot(start, end)
            if k == n:
                break
            v = values[k]
            if v >= 0:
                maps[mids[k]]._set(a[k], b[k], v)
            elif (-1 - v) & 1:          # a read held since an earlier settle
                maps[mids[k]]._set_runs(held.pop((-2 - v) >> 1))
            else:
                maps[mids[k]]._set_runs(taken.pop(k))
        for s in opened:                # copies in flight: held for their paste
            held[s.sid] = taken.pop(s)

    def _replay_bulk(self, pages: list, logs: list) -> None:
        """Apply the logs of ``pages`` in bulk, with no Python loop per entry.

        The pages are cut into elementary segments at every edge, and each
        map's stored runs become one value per segment.  :func:`_apply`
        (compiled) then applies the entries in log order to those values: a
        set gives its segments its generation, a paste what its source held
        there at its read's place (its reads are taken as the sweep passes
        their places).  Pages with a
        paste of a read held since an earlier settle, or a read whose paste
        is still to come (a few pages at most: copies in flight), take
        :meth:`_replay_small` instead."""
        shift = self.shift
        maps = self.maps
        words = (np.frombuffer(logs[0], dtype=np.int64) if len(logs) == 1 else
                 np.concatenate([np.frombuffer(log, dtype=np.int64) for log in logs]))
        w0, val = words[0::2], words[1::2]
        n = len(val)
        counts = [len(log) >> 1 for log in logs]
        page_arr = np.asarray(pages, dtype=np.int64)
        page_of = np.repeat(page_arr, counts)
        origin = page_of << shift
        a = origin + (w0 & _OFFSET_MASK)
        b = origin + ((w0 >> _OFFSET_BITS) & _OFFSET_MASK)
        mids = w0 >> _MAP_SHIFT
        code = -1 - val                     # pastes (val < 0)
        placed = (val < 0) & ((code & 1) == 0)      # the read's place in this log
        in_flight = {id(s.log) for s in self._open.values()}
        odd = [p for p, log in zip(pages, logs) if id(log) in in_flight]
        odd += page_of[(val < 0) & ((code & 1) == 1)].tolist()   # reads held
        if odd:
            odd_pages = set(odd)
            rest = [(p, log) for p, log in zip(pages, logs) if p not in odd_pages]
            for p, log in zip(pages, logs):
                if p in odd_pages:
                    self._replay_small(p, log)
            if rest:
                self._replay_bulk([p for p, _ in rest], [log for _, log in rest])
            return
        if not n:                           # only the places of reads never pasted
            return
        # each paste's read: the entry of its page it came before, and its map
        first_entry = np.repeat(np.cumsum(counts) - counts, counts)
        read_at = first_entry + (code >> (1 + _MAP_BITS))
        read_map = (code >> 1) & (MAX_MAPS - 1)

        # the maps involved, their stored runs on these pages, and the segments
        involved = _unique(np.concatenate([mids, read_map[placed]]))
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

        # the entries applied in log order, each paste taking what its
        # source held at its read's place (_apply, compiled)
        pastes = np.flatnonzero(placed)
        pastes = pastes[np.argsort(read_at[pastes], kind="stable")]
        npages = len(pages)
        page_index = np.repeat(np.arange(npages, dtype=np.int64), counts)
        written = np.zeros((len(involved), npages), dtype=np.bool_)
        _apply(stored, local, ia, ib, val, read_at,
               np.searchsorted(involved, read_map), pastes, page_index, written)

        # each (map, page) written: rebuilt from its segments
        page_starts = page_arr << shift
        lo = np.searchsorted(bounds, page_starts)
        for k in np.flatnonzero(written.any(axis=1)).tolist():
            m = maps[int(involved[k])]
            rebuilt = np.flatnonzero(written[k])
            # each page up to its end, or the map's if the map ends inside it
            ends = np.minimum(page_starts[rebuilt] + page_len, m.size)
            m._put_pages(page_arr[rebuilt], bounds, stored[k], lo[rebuilt],
                         np.searchsorted(bounds, ends))


@njit(cache=True)
def _by_page(rows, n, npages, words):
    """The first ``n`` staged rows' words grouped by page, in order within
    each (a counting sort into ``words``); the pages met, ascending, and
    where each one's words end."""
    counts = np.zeros(npages + 1, dtype=np.int64)
    for i in range(n):
        counts[rows[i, 0] + 1] += 1
    met = 0
    for p in range(npages):
        if counts[p + 1]:
            met += 1
        counts[p + 1] += counts[p]
    pages = np.empty(met, dtype=np.int64)
    ends = np.empty(met, dtype=np.int64)
    k = 0
    for p in range(npages):
        if counts[p + 1] > counts[p]:
            pages[k] = p
            ends[k] = counts[p + 1]
            k += 1
    for i in range(n):
        p = rows[i, 0]
        at = counts[p]
        words[at, 0] = rows[i, 1]
        words[at, 1] = rows[i, 2]
        counts[p] = at + 1
    return pages, ends


@njit(cache=True)
def _stage_sets(rows, staged, loglen, pending, offsets, i, length, first_value, tag, shift):
    """Stage the entries of writes ``offsets[i:]`` (values ``first_value +
    index``) while each lies inside one page and the stage has room, laid
    out as ContentJournal.log's, flagging their pages ``pending``; returns
    the next write's index and the new number of staged rows."""
    cap = rows.shape[0]
    n = len(offsets)
    while i < n and staged < cap:
        a = offsets[i]
        b = a + length
        p = a >> shift
        if (b - 1) >> shift != p:
            break
        ps = p << shift
        rows[staged, 0] = p
        rows[staged, 1] = tag | (a - ps) | ((b - ps) << _OFFSET_BITS)
        rows[staged, 2] = first_value + i
        loglen[p] += 2
        pending[p] = 1
        staged += 1
        i += 1
    return i, staged


@njit(cache=True)
def _apply(values, maps, ia, ib, val, read_at, read_map, pastes, page_index, written):
    """Apply a chunk's log entries, in order, to ``values`` (map x segment):
    entry ``j`` gives map ``maps[j]`` segments ``ia[j]:ib[j]`` the generation
    ``val[j]`` or, for a paste (``val[j] < 0``), what map ``read_map[j]``
    held there just before entry ``read_at[j]`` (``pastes``: the pastes by
    their reads' places).  Marks ``written[map, page_index[j]]``."""
    n = len(val)
    total = 0
    for q in pastes:
        total += ib[q] - ia[q]
    taken = np.empty(total, dtype=np.int64)
    start = np.empty(n, dtype=np.int64)        # each paste's part of taken
    nxt = 0
    used = 0
    for j in range(n + 1):
        # the reads made before entry j: what their sources hold now
        while nxt < len(pastes) and read_at[pastes[nxt]] <= j:
            q = pastes[nxt]
            start[q] = used
            src = read_map[q]
            for s in range(ia[q], ib[q]):
                taken[used] = values[src, s]
                used += 1
            nxt += 1
        if j == n:
            break
        m = maps[j]
        v = val[j]
        if v >= 0:
            for s in range(ia[j], ib[j]):
                values[m, s] = v
        else:
            k = start[j]
            for s in range(ia[j], ib[j]):
                values[m, s] = taken[k]
                k += 1
        written[m, page_index[j]] = True


def _unique(x: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``x`` (numpy's ``unique`` hashes large
    arrays, several times slower on these)."""
    x = np.sort(x)
    if len(x) > 1:
        x = x[np.append(True, x[1:] != x[:-1])]
    return x


def _dtype(column: array):
    return np.uint32 if column.typecode == "I" else np.int64
