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
entry (:meth:`ContentJournal._replay_bulk`: compiled code cuts each page
into segments, applies the entries and rebuilds the page); short logs, and
the few pages holding copies in flight, go through the maps' own splices.
A page that a settle leaves holding what another map holds there (a
mirror's target in sync with its source) is stored once for both
(:class:`~blocksim.model.extents.SharedPage`).

An entry is ``a | b << 27 | map << 54`` (offsets relative to the page,
which is at most ``2**26`` bytes) and the value, where a negative value
stands for a paste (see :meth:`ContentJournal.paste`).  In a page's log it
takes one 64-bit word when it can (:func:`_compact`: offsets on 4 KiB,
one of the first 8 maps, a value of 32 bits, as a guest's 4 KiB write or
a mirror's copy of whole clusters), else two, the first with its top bit
set (:func:`_unpack` reads both): eight bytes per change, against about
twelve per run in a page.  Past a budget (:data:`BUDGET_ENTRIES`, checked
at each sample tick) the whole journal is settled, so its memory stays
bounded.

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

import mmap
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
# how a settle sorts a page's edges (_sort_offsets): three digits of 9 bits
_RADIX_BITS = 9
_RADIX = 1 << _RADIX_BITS
assert 3 * _RADIX_BITS >= _OFFSET_BITS      # (three digits cover an offset)
# (or by insertion, up to this many edges)
_INSERTION_MAX = 48
# or, where the offsets take few positions, marked in a bitmap of at most
# this many words per edge (and this many more) instead (_page_bounds)
_MARK_WORDS = 2
_MARK_WORDS_MIN = 64
# an edge's sort key: its offset above a tag of this many bits (63 in all)
_TAG_BITS = 63 - _OFFSET_BITS
_TAG_MASK = (1 << _TAG_BITS) - 1
# An entry in a page's log (_compact, _unpack): one word, its top bit clear,
# ``a >> 12 | ((b - a >> 12) - 1) << 14 | map << 28 | (value + 2**31) << 31``
# when a and b are on 4 KiB, b > a, map < 8 and the value fits 32 bits;
# else two, ``word | _WIDE`` and the value
_WIDE = -(1 << 63)
_WORD_MASK = (1 << 63) - 1
_C_UNIT = 12
_C_OFF_BITS = MAX_PAGE_SHIFT - _C_UNIT
_C_OFF_MASK = (1 << _C_OFF_BITS) - 1
_C_MAP_SHIFT = 2 * _C_OFF_BITS
_C_MAPS = 8
_C_VALUE_SHIFT = _C_MAP_SHIFT + 3
_C_BIAS = 1 << 31
assert _C_VALUE_SHIFT + 32 == 63

#: Logs of at most this many entries are applied with the maps' own
#: splices: below it numpy's fixed costs are larger than the splices'.
SMALL_LOG = 32

#: Longer logs are applied with numpy all at once (``True``), or entry by
#: entry like short ones (``False``, the reference the tests compare).
BULK = True

#: How many entries a bulk settle of many pages takes at a time (bounds
#: the temporaries: about 100 bytes per entry and per segment).
BULK_ENTRIES = 1 << 16

#: A settle of at least one in 2**BULK_SHARE of the disk's pages is of
#: *many* pages: the maps may store them in bulk (ExtentMap._stores_bulk).
BULK_SHARE = 4

#: Past this many entries (8 bytes each, 16 for one a word cannot hold) the
#: journal is settled whole at the next check
#: (:meth:`ContentJournal.keep_within_budget`): memory stays bounded however
#: long the run, at the same cost per change.
BUDGET_ENTRIES = 8 << 20

#: How many entries the stage holds (24 bytes each) before they are handed
#: out to the pages' logs (:meth:`ContentJournal.flush`): enough that a hand
#: out meets each page of a 1 TiB disk many times over.
STAGE_ENTRIES = 1 << 19
#: or this many a page of the disk, up to STAGE_MAX (ContentJournal.register)
STAGE_PER_PAGE = 2
STAGE_MAX = 1 << 21

#: A flush of at least this many entries keeps them as one *chunk* (its
#: words grouped by page, :meth:`ContentJournal.flush`), pulled into a
#: page's log only when that page is settled, instead of handing each page
#: met its entries with a Python step: a stage of 2 M entries at 64 TiB meets
#: a million pages.  At most MAX_CHUNKS chunks are kept (past them a flush
#: hands its entries out).
CHUNK_ENTRIES = 1 << 20
MAX_CHUNKS = 8

# A flush (_by_page) sorts the pages it met unless they are more than one
# in this many of the disk's: then it walks all the pages' counts instead.
_SORT_FACTOR = 16


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

    __slots__ = ("shift", "maps", "_logs", "logged", "loglen", "_held", "_open", "_next_sid",
                 "settled_pages", "replayed", "_before_settle", "stage", "rows",
                 "staged", "capacity", "flags", "zeroed", "_counts", "_met", "_scratch",
                 "_chunks", "_pulled", "_seq")

    def __init__(self, page_shift: int):
        if page_shift > MAX_PAGE_SHIFT:
            raise ValueError(f"pages of 2**{page_shift} bytes are too large to journal")
        self.shift = page_shift
        self.maps: list = []
        # page -> its log, ``array('q')`` of one or two words per entry
        # (_unpack; without the entries still on the stage, nor those in
        # chunks: see ``logs``)
        self._logs: dict[int, array] = {}
        # the chunks (CHUNK_ENTRIES): ``(seq, pages, ends, words)``, a
        # flush's words grouped by page (pages increasing, int32; where
        # each one's words end, int32), in the order they were made (seq
        # increasing); a page's part of a chunk is in its log once
        # ``_pulled[p]`` (int64 per page) is past the chunk's seq
        self._chunks: list = []
        self._pulled = np.zeros(0, dtype=np.int64)
        self._seq = 0
        #: how many entries the logs hold (without the stage's)
        self.logged = 0
        #: page -> the length of its log in words, staged entries included
        #: (0: none): a read's place in its page's log (blocksim.engine.burst_kernel)
        self.loglen = array("q")
        #: the stage: entries not yet handed out to their pages' logs, as
        #: ``(page, word, value)`` rows, ``staged`` of them, in the order
        #: they were made (``rows`` is the same memory as an array, for
        #: compiled code; both sized when the maps register, see register)
        # (the stage and the flush's ``_met`` are one anonymous mapping,
        # garbage once handed out: :meth:`settle_all` gives its pages back;
        # its pages past the stage in use are never touched)
        # (private: a process forked later does not share it)
        size = 32 * STAGE_MAX
        self._scratch = (mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                         if hasattr(mmap, "MAP_ANONYMOUS") else mmap.mmap(-1, size))
        self.staged = 0
        # a flush's workspace (_by_page): a count per page, zero between
        # flushes (int32: a stage holds fewer than 2**31 entries), and the
        # pages met
        assert STAGE_MAX < 1 << 31
        self._counts = np.zeros(0, dtype=np.int32)
        self._met = np.frombuffer(self._scratch, dtype=np.int64, count=STAGE_MAX,
                                  offset=24 * STAGE_MAX)
        self._size_stage(STAGE_ENTRIES)
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

    def _size_stage(self, cap: int) -> None:
        """The stage holds ``cap`` entries (nothing staged)."""
        self.capacity = cap
        self.stage = memoryview(self._scratch).cast("B").cast("q")[:3 * cap]
        self.rows = np.frombuffer(self._scratch, dtype=np.int64, count=3 * cap).reshape(cap, 3)

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
            self._counts = np.zeros(pages, dtype=np.int32)
            # (zeros the system supplies on first touch: a page's entry is
            # written only when a chunk is pulled into its log)
            pulled = np.zeros(pages, dtype=np.int64)
            pulled[:len(self._pulled)] = self._pulled
            self._pulled = pulled
            # a stage of two entries a page, up to STAGE_MAX: a hand out
            # then meets each page it visits about twice (a million pages
            # at 64 TiB: one of STAGE_ENTRIES met most pages once)
            cap = min(STAGE_MAX, max(STAGE_ENTRIES, STAGE_PER_PAGE * pages))
            if cap > self.capacity and not self.staged:
                self._size_stage(cap)
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
        """Page -> its log, every entry handed out, as two words per entry
        (a copy for tests and diagnostics: it flushes the stage and pulls
        the chunks' entries into the pages' logs)."""
        self.flush()
        self._pull(self._logged_pages(0, len(self.loglen) - 1))
        return {p: array("q", _unpack_log(log).tobytes()) for p, log in self._logs.items()}

    def entries(self) -> int:
        """How many entries the journal holds, staged or in logs."""
        return self.logged + self.staged

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
        """Hand the staged entries out to their pages' logs, in order: as
        one chunk if they are many (CHUNK_ENTRIES), else page by page."""
        n = self.staged
        if not n:
            return
        self.staged = 0
        self.logged += n
        words = np.empty(2 * n, dtype=np.int64)
        pages, ends = _by_page(self.rows, n, self._counts, self._met, words)
        if n >= CHUNK_ENTRIES and len(self._chunks) < MAX_CHUNKS:
            self._chunks.append((self._seq, pages.astype(np.int32), ends.astype(np.int32),
                                 words[:int(ends[-1])].copy()))
            self._seq += 1
            return
        self._pull(pages)               # (their entries in chunks come first)
        data = memoryview(words).cast("B")
        logs = self._logs
        a = 0
        for p, b in zip(pages.tolist(), ends.tolist()):
            log = logs.get(p)
            if log is None:
                log = logs[p] = array("q")
            log.frombytes(data[a << 3:b << 3])
            a = b

    def _pull(self, at: np.ndarray) -> None:
        """Append to the logs of pages ``at`` (int64, each once) their
        entries in chunks not pulled yet, chunk by chunk in order (they
        come before anything logged since).  Chunks are dropped when the
        whole journal settles (:meth:`settle_all`): until then their memory
        stays, at most MAX_CHUNKS stages' worth."""
        if not self._chunks:
            return
        at = np.asarray(at, dtype=np.int64)
        since = self._pulled[at]
        key = at.astype(np.int32)       # (as the chunks' pages: no copy of them to compare)
        logs = self._logs
        for seq, pages, ends, words in self._chunks:
            i = np.searchsorted(pages, key)
            hit = i < len(pages)
            hit[hit] = pages[i[hit]] == at[hit]
            hit &= since <= seq
            if hit.any():
                i = i[hit]
                b = ends[i].astype(np.int64)
                a = np.where(i > 0, ends[i - 1], 0)
                data = memoryview(words).cast("B")
                for p, x, y in zip(at[hit].tolist(), a.tolist(), b.tolist()):
                    log = logs.get(p)
                    if log is None:
                        log = logs[p] = array("q")
                    log.frombytes(data[x << 3:y << 3])
        self._pulled[at] = self._seq

    def _logged_pages(self, first: int, last: int) -> list:
        """The pages from ``first`` to ``last`` with a log or entries
        (staged ones handed out), increasing."""
        logs = self._logs
        if last - first < 64:
            loglen = self.loglen
            return [p for p in range(first, last + 1) if p in logs or loglen[p]]
        keys = np.fromiter(logs, dtype=np.int64, count=len(logs))
        keys = keys[(keys >= first) & (keys <= last)]
        if self._chunks:
            counted = np.frombuffer(self.loglen, dtype=np.int64)[first:last + 1]
            keys = np.union1d(keys, np.flatnonzero(counted) + first)
        else:
            keys.sort()
        return keys.tolist()

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

    def copy(self, src, dst, p: int, start: int, end: int) -> None:
        """``dst.set_runs(src.snapshot(start, end))`` at once, for a range
        inside page ``p`` of which the snapshot is a :class:`Snap` (``src``
        holds data there, ``ExtentMap.holds_data``) and ``dst`` a map of this
        journal: :meth:`snap` then :meth:`paste` without the ticket, the same
        entry logged (the ticket's id drawn all the same).  A backup's
        copy-before-write in a quiet stretch (its witness, its copy)."""
        self._next_sid += 1
        if p not in self._logs:         # (snap: a log to hold the read's place)
            self._logs[p] = array("q")
        ps = p << self.shift
        self.log(p, dst._tag | (start - ps) | ((end - ps) << _OFFSET_BITS),
                 -1 - (((self.loglen[p] >> 1) << _MAP_BITS | src._tag >> _MAP_SHIFT) << 1))
        dst._pending[p] = 1
        dst._zeroing[p] = 1             # may_zero: a paste may bring zeros
        self.zeroed[dst._tag >> _MAP_SHIFT] += 1

    def copy_runs(self, src, dst, runs: np.ndarray, known: np.ndarray, k: int, a: int):
        """:meth:`copy` of each page's piece of the ranges ``runs[k:]`` (rows
        of start and end, from ``a`` in ``runs[k]``), in order, compiled,
        while ``known`` (a byte a page of ``src``) says 2: ``src`` holds data
        there (``ExtentMap.holds_data``).  The same entries logged, the same
        flags, ids and logs; where it stops (a page not known to hold data:
        the caller's; the ranges done: ``k == len(runs)``), as ``(k, a)``."""
        di = dst._tag >> _MAP_SHIFT
        pending, zeroing = self.flags[di]
        pages = np.empty(len(runs) + 1, dtype=np.int64)
        logs = self._logs
        while True:
            k, a, staged, copies, npages = _copy_runs(
                self.rows, self.staged, np.frombuffer(self.loglen, dtype=np.int64), pending,
                zeroing, known, runs, k, a, pages, dst._tag, src._tag >> _MAP_SHIFT,
                self.shift)
            self.staged = staged
            if copies:
                self._next_sid += copies
                self.zeroed[di] += copies
                # (snap's log to hold the read's place, as copy makes it)
                for p in pages[:npages].tolist():
                    if p not in logs:
                        logs[p] = array("q")
            if k == len(runs) or known[a >> self.shift] != 2:
                return k, a
            if staged == self.capacity:
                self.flush()

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
        if not (self._logs or self.staged or self._chunks):
            return
        for hand_in in self._before_settle:
            hand_in()
        self.flush()
        pages = self._logged_pages(first, last)
        if len(pages) == 1:
            self.settle(pages[0])
            return
        if not BULK:
            for p in pages:
                self.settle(p)
            return
        # in chunks of about BULK_ENTRIES entries, applied together (their
        # logs taken a chunk at a time: a million pages at the end of a run)
        at = np.asarray(pages, dtype=np.int64)
        sizes = (np.frombuffer(self.loglen, dtype=np.int64)[at] >> 1).tolist()
        many = len(pages) >= len(self.loglen) >> BULK_SHARE
        lo = size = 0
        for k, n in enumerate(sizes):
            size += n
            if size >= BULK_ENTRIES or k == len(sizes) - 1:
                self._replay_bulk(pages[lo:k + 1], self._take_many(at[lo:k + 1]), many)
                lo, size = k + 1, 0

    def keep_within_budget(self) -> bool:
        """Settle everything if the logs hold more than
        :data:`BUDGET_ENTRIES` entries; whether it did."""
        if self.entries() <= BUDGET_ENTRIES:
            return False
        self.settle_all()
        return True

    def settle_all(self) -> None:
        """Settle every page: in bulk (:meth:`_settle_all_bulk`), else
        the stage handed out and every page's log taken."""
        if BULK and (self._logs or self.staged):
            self._settle_all_bulk()
            return
        self.flush()
        self._give_back_stage()
        if self._logs or self._chunks:
            self.settle_range(0, len(self.loglen) - 1)
        self._chunks = []

    def _give_back_stage(self) -> None:
        """Nothing is staged: the stage's memory goes back to the system
        until it fills again (12 to 48 MiB: the end of a run then reads the
        disks), before the settle builds the pages."""
        if hasattr(self._scratch, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._scratch.madvise(mmap.MADV_DONTNEED)

    def _settle_all_bulk(self) -> None:
        """:meth:`settle_all` without handing the stage out to the pages'
        logs nor taking them back one by one (a million pages at the end of
        a run): every page's log and its staged entries joined in one
        compiled merge (:func:`_merge_logs`), then applied a chunk of about
        :data:`BULK_ENTRIES` entries at a time (:meth:`_apply_bulk`), as
        :meth:`settle_range` would.  The pages of copies in flight and of
        reads held since an earlier settle (a few) take :meth:`settle`
        after, with their staged entries handed out first (a page's entries
        change only its own content, so the order of pages does not
        matter)."""
        for hand_in in self._before_settle:
            hand_in()
        shift = self.shift
        odd = {s.start >> shift for s in self._open.values()}
        for held in self._held.values():
            odd.add((held.start if held.__class__ is not list else held[0][0]) >> shift)
        odd_at = np.array(sorted(odd), dtype=np.int64)
        # the staged entries, by page (as flush would hand them out)
        n = self.staged
        self.staged = 0
        self.logged += n
        words = np.empty(2 * n, dtype=np.int64)
        if n:
            spages, sends = _by_page(self.rows, n, self._counts, self._met, words)
        else:
            spages = sends = np.empty(0, dtype=np.int64)
        sstarts = np.concatenate((np.zeros(1, dtype=np.int64), sends[:-1])) if n else sends
        logs = self._logs
        if len(odd_at):
            self._pull(odd_at)          # (their chunks' entries first)
            is_odd = np.isin(spages, odd_at)
            for p, a, b in zip(spages[is_odd].tolist(), sstarts[is_odd].tolist(),
                               sends[is_odd].tolist()):
                log = logs.get(p)
                if log is None:
                    log = logs[p] = array("q")
                log.frombytes(memoryview(words[a:b]).cast("B"))
            keep = ~is_odd
            spages, sstarts, sends = spages[keep], sstarts[keep], sends[keep]
        self._give_back_stage()
        # the pages' logs (the other pages'), the chunks' parts not pulled
        # yet, in order, and the stage's: three kinds of streams of parts
        # (page, its words), each in page order
        keys = np.fromiter(logs, dtype=np.int64, count=len(logs))
        if len(odd_at):
            keys = keys[~np.isin(keys, odd_at)]
        keys.sort()
        streams = []
        pulled = self._pulled
        for seq, cpages, cends, cwords in self._chunks:
            cpages = cpages.astype(np.int64)
            cends = cends.astype(np.int64)
            cstarts = np.concatenate((np.zeros(1, dtype=np.int64), cends[:-1]))
            live = pulled[cpages] <= seq
            if len(odd_at):
                live &= ~np.isin(cpages, odd_at)
            streams.append((cpages[live], cstarts[live], cends[live], cwords))
        self._chunks = []
        streams.append((spages, sstarts, sends, words))
        # (every page once, increasing: one sort of them all; numpy's union1d
        # took a second a stream, hashing)
        every = np.concatenate([keys, *(stream[0] for stream in streams)])
        every.sort()
        every = every[np.concatenate((np.ones(min(len(every), 1), dtype=np.bool_),
                                      every[1:] != every[:-1]))]
        # a step of about BULK_ENTRIES entries at a time, as settle_range
        # takes them (its temporaries bounded: the budget's 8 M entries
        # merged at once would take some 300 MiB)
        loglen = np.frombuffer(self.loglen, dtype=np.int64)
        upto = np.cumsum(loglen[every] >> 1)
        many = len(every) >= len(loglen) >> BULK_SHARE
        lo = 0
        while lo < len(every):
            before = int(upto[lo - 1]) if lo else 0
            hi = min(int(np.searchsorted(upto, before + BULK_ENTRIES, side="left")) + 1,
                     len(every))
            first_p, last_p = int(every[lo]), int(every[hi - 1])
            i0 = int(np.searchsorted(keys, first_p, side="left"))
            i1 = int(np.searchsorted(keys, last_p, side="right"))
            taken = list(map(logs.pop, keys[i0:i1].tolist()))
            ends = np.cumsum(np.fromiter(map(len, taken), dtype=np.int64, count=len(taken)))
            old = (np.frombuffer(b"".join(taken), dtype=np.int64) if taken
                   else np.empty(0, dtype=np.int64))
            del taken
            parts = [(keys[i0:i1], ends - np.diff(ends, prepend=0), ends, old)]
            for spg, sst, sen, swd in streams:
                j0 = int(np.searchsorted(spg, first_p, side="left"))
                j1 = int(np.searchsorted(spg, last_p, side="right"))
                if j1 > j0:
                    at = int(sst[j0])
                    parts.append((spg[j0:j1], sst[j0:j1] - at, sen[j0:j1] - at,
                                  swd[at:int(sen[j1 - 1])]))
            at = 0
            for k, (p, a, b, w) in enumerate(parts):
                parts[k] = (p, a + at, b + at, w)
                at += len(w)
            sbeg = np.zeros(len(parts) + 1, dtype=np.int64)
            np.cumsum([len(p) for p, *_ in parts], out=sbeg[1:])
            pages, merged, mbounds = _merge_logs(
                np.concatenate([p for p, *_ in parts]), np.concatenate([a for _, a, _, _ in parts]),
                np.concatenate([b for _, _, b, _ in parts]), sbeg,
                np.concatenate([w for *_, w in parts]))
            del parts, old
            w0, val, first = _unpack(merged, mbounds)
            del merged
            # (as _take_many: the pages' counts and flags cleared)
            loglen[pages] = 0
            for pending, zeroing in self.flags:
                inside = pages[pages < len(pending)]        # (maps of several sizes)
                pending[inside] = 0
                zeroing[inside] = 0
            self.settled_pages += len(pages)
            self.replayed += len(val)
            self.logged -= len(val)
            self._apply_bulk(pages.tolist(), w0, val, first, many)
            lo = hi
        del loglen, streams, words
        for p in odd_at.tolist():
            if p in logs:
                self.settle(p)

    def _take(self, p: int):
        """Page ``p``'s log, removed from the journal (None if it has none)."""
        if self._chunks:
            self._pull(np.array([p], dtype=np.int64))
        log = self._logs.pop(p, None)
        if log is None:
            return None
        n = self.loglen[p] >> 1         # (its entries: the stage is handed out)
        self.loglen[p] = 0
        for m in self.maps:
            if p < len(m._pending):     # (maps of several sizes)
                m._pending[p] = 0
                m._zeroing[p] = 0
        self.settled_pages += 1
        self.replayed += n
        self.logged -= n
        return log

    def _take_many(self, pages: np.ndarray) -> list:
        """:meth:`_take` of each of ``pages`` (int64, each with a log), at once."""
        self._pull(pages)
        logs = self._logs
        taken = [logs.pop(p) for p in pages.tolist()]
        loglen = np.frombuffer(self.loglen, dtype=np.int64)
        n = int((loglen[pages] >> 1).sum())
        loglen[pages] = 0
        del loglen
        for pending, zeroing in self.flags:
            inside = pages[pages < len(pending)]        # (maps of several sizes)
            pending[inside] = 0
            zeroing[inside] = 0
        self.settled_pages += len(taken)
        self.replayed += n
        self.logged -= n                # (as _take: the budget counts what is logged)
        return taken

    def _entries(self, p: int, log: array):
        """The log's entries as lists: map index, absolute start and end, value."""
        w0, values, _ = _unpack_logs([log])
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

    def _replay_bulk(self, pages: list, logs: list, many: bool = False) -> None:
        """Apply the logs of ``pages`` in bulk, with no Python loop per entry.

        The maps' stored runs on these pages are handed, with the logs, to
        :func:`_settle_pages` (compiled), which settles them page by page:
        each page cut into elementary segments at every edge, the entries
        applied in log order to one value per map and segment (a set gives
        its segments its generation, a paste what its source held there at
        its read's place), and each page written rebuilt as canonical runs,
        stored with :meth:`ExtentMap._put_pages`.  Pages with a
        paste of a read held since an earlier settle, or a read whose paste
        is still to come (a few pages at most: copies in flight), take
        :meth:`_replay_small` instead."""
        w0, val, first = _unpack_logs(logs)
        counts = np.diff(first)
        code = -1 - val                     # pastes (val < 0)
        in_flight = {id(s.log) for s in self._open.values()}
        odd = [p for p, log in zip(pages, logs) if id(log) in in_flight] if in_flight else []
        held = (val < 0) & ((code & 1) == 1)        # reads held
        if held.any():
            odd += np.repeat(np.asarray(pages, dtype=np.int64), counts)[held].tolist()
        if odd:
            odd_pages = set(odd)
            rest = [(p, log) for p, log in zip(pages, logs) if p not in odd_pages]
            for p, log in zip(pages, logs):
                if p in odd_pages:
                    self._replay_small(p, log)
            if rest:
                self._replay_bulk([p for p, _ in rest], [log for _, log in rest], many)
            return
        self._apply_bulk(pages, w0, val, first, many)

    def _apply_bulk(self, pages: list, w0: np.ndarray, val: np.ndarray,
                    first: np.ndarray, many: bool = False) -> None:
        """The bulk settle of :meth:`_replay_bulk` proper: ``pages`` (none
        with a copy in flight or a read held) whose entries, unpacked
        (:func:`_unpack`), are ``w0[first[i]:first[i + 1]]`` and ``val``'s,
        taken from the journal already."""
        shift = self.shift
        maps = self.maps
        n = len(val)
        if not n:                           # only the places of reads never pasted
            return
        # the maps involved (those written, those read: one compiled pass,
        # where numpy's took a dozen temporaries of the chunk's size), and
        # what each holds on these pages before the logs: its runs, page by
        # page
        seen = np.zeros(MAX_MAPS, dtype=np.bool_)
        _maps_involved(w0, val, seen)
        involved = np.flatnonzero(seen)
        local = np.zeros(MAX_MAPS, dtype=np.int64)     # map -> its index among them
        local[involved] = np.arange(len(involved))
        npages = len(pages)
        base_at = np.zeros(len(involved) * npages + 1, dtype=np.int64)
        at = np.asarray(pages, dtype=np.int64)
        # (each map's runs on these pages as arrays, with no Python step
        # for a page stored in bulk or holding the map's default:
        # ExtentMap._stored_runs)
        stored = [maps[mi]._stored_runs(at) for mi in involved.tolist()]
        np.cumsum(np.concatenate([counts for counts, _, _ in stored]), out=base_at[1:])
        base_starts = np.concatenate([starts for _, starts, _ in stored])
        base_values = np.concatenate([values for _, _, values in stored])
        del stored
        sizes = np.array([maps[mi].size for mi in involved.tolist()], dtype=np.int64)

        # each page cut into segments, its entries applied in log order,
        # each paste taking what its source held at its read's place, and
        # the pages written rebuilt (_settle_pages, compiled)
        out_starts, out_values, out_lo, out_hi = _settle_pages(
            w0, val, first, np.asarray(pages, dtype=np.int64), shift, local,
            base_starts, base_values, base_at, sizes,
            np.empty(0, dtype=_np_type(maps[0]._stype)))
        ids = involved.tolist()
        columns = None                  # (the rows as page columns, made once)
        for k, mi in enumerate(ids):
            m = maps[mi]
            bulk = m._stores_bulk(many)
            rebuilt = np.flatnonzero(out_lo[k] >= 0)
            if bulk:
                # pages ending up as another map holds them (a mirror's
                # target in sync with its source) take that map's rows
                lo, hi = out_lo[k].copy(), out_hi[k].copy()
                shared = np.flatnonzero(lo <= -2)
                if len(shared):
                    k2 = -2 - lo[shared]
                    lo[shared] = out_lo[k2, shared]
                    hi[shared] = out_hi[k2, shared]
                    rebuilt = np.flatnonzero(lo >= 0)
                if len(rebuilt):
                    m._put_pages(at[rebuilt], out_starts, out_values, lo[rebuilt], hi[rebuilt],
                                 many)
                continue
            if len(rebuilt):
                if columns is None:
                    columns = m._columns(out_starts, out_values)
                m._put_pages([pages[i] for i in rebuilt.tolist()], out_starts, out_values,
                             out_lo[k][rebuilt].tolist(), out_hi[k][rebuilt].tolist(), many,
                             columns)
            # pages ending up as another map holds them (a mirror's target
            # in sync with its source) share that map's columns
            shared = np.flatnonzero(out_lo[k] <= -2)
            if len(shared):
                with_map = -2 - out_lo[k][shared]
                for k2 in np.unique(with_map).tolist():
                    m._share_pages([pages[i] for i in shared[with_map == k2].tolist()],
                                   maps[ids[k2]])


def _np_type(typecode: str):
    return np.uint32 if typecode == "I" else np.int64


@njit(cache=True, _nrt=False)
def _maps_involved(w0, val, seen):
    """``seen[m]`` set for each map ``m`` an entry of ``w0`` and ``val``
    (unpacked) writes, and each map a paste's read (a read's place in
    this log: ``val < 0`` with its low code bit clear) reads."""
    for j in range(w0.shape[0]):
        seen[w0[j] >> _MAP_SHIFT] = True
        v = val[j]
        if v < 0:
            code = -1 - v
            if (code & 1) == 0:
                seen[(code >> 1) & (MAX_MAPS - 1)] = True


@njit(cache=True)
def _settle_pages(w0, val, first, pages, shift, local, base_starts, base_values,
                  base_at, sizes, starts_like):
    """Apply the logs of ``pages`` (entries ``first[i]:first[i + 1]`` of
    ``w0``, each ``a | b << 27 | map << 54``, and ``val``, their values, are
    page ``pages[i]``'s, in log order; map ``m`` of an entry is map
    ``local[m]`` among those involved) to what the maps
    involved hold there (map ``k``'s runs on page ``i``: rows
    ``base_at[k * npages + i]`` on of ``base_starts`` (page-relative) and
    ``base_values``), page by page.

    A page is cut into elementary segments at every edge of its entries
    and of its stored runs, and each map's runs become one value per
    segment.  The entries are then applied in log order: a set gives its
    segments its generation, a paste what its source (the map its value
    names, ``(-1 - value) >> 1`` in the low bits) held
    there just before the entry of its read's place (the reads are taken
    as the sweep passes their places).  Each map ``k`` written on page
    ``i`` comes out as canonical runs ``out_lo[k, i]:out_hi[k, i]`` of
    ``out_starts`` (page-relative) and ``out_values``, up to the page's end
    or the map's (``sizes``); ``out_lo`` is -1 for a map not written
    there, and ``-2 - k2`` for one whose runs there are the same as those
    of map ``k2`` (the smallest such ``k2``; its page is to be shared);
    ``out_starts`` of ``starts_like``'s type."""
    npages = len(pages)
    nmaps = len(sizes)
    page_len = np.int64(1) << shift
    # room: each page's edges, for every map
    most = 0
    room = 0
    for i in range(npages):
        e = 2 * (first[i + 1] - first[i]) + 2
        for k in range(nmaps):
            e += base_at[k * npages + i + 1] - base_at[k * npages + i]
        room += nmaps * e
        if e > most:
            most = e
    # (the starts in the maps' start type, ``starts_like``'s: page-relative,
    # they fit; a conversion after cost a pass over every row)
    out_starts = np.empty(room, dtype=starts_like.dtype)
    out_values = np.empty(room, dtype=np.int64)
    out_lo = np.full((nmaps, npages), -1, dtype=np.int64)
    out_hi = np.full((nmaps, npages), -1, dtype=np.int64)
    edges = np.empty(most, dtype=np.int64)
    spare = np.empty(most, dtype=np.int64)
    bounds = np.empty(most, dtype=np.int64)
    ia = np.empty(most, dtype=np.int64)
    ib = np.empty(most, dtype=np.int64)
    counts = np.empty(_RADIX + 1, dtype=np.int64)
    stored = np.empty((nmaps, most), dtype=np.int64)
    # (a page's workspace, allocated once: a million pages at the end of a
    # run spent more in allocations than in their work)
    places = np.empty(most, dtype=np.int64)
    which = np.empty(most, dtype=np.int64)
    order = np.empty(most, dtype=np.int64)
    start = np.empty(most, dtype=np.int64)     # each paste's part of taken
    written = np.zeros(nmaps, dtype=np.bool_)
    taken = np.empty(most, dtype=np.int64)
    # (_page_bounds' marks: at most this many words of them a page)
    marks = np.zeros(_MARK_WORDS * most + _MARK_WORDS_MIN, dtype=np.uint64)
    ranks = np.empty(_MARK_WORDS * most + _MARK_WORDS_MIN, dtype=np.int64)
    used = 0
    for i in range(npages):
        e0 = first[i]
        e1 = first[i + 1]
        ps = pages[i] << shift
        n = e1 - e0
        # the segments: every edge, sorted, once, and for each entry the
        # first and the last of its segments (_page_bounds)
        nb = _page_bounds(w0, e0, n, base_starts, base_at, i, npages, nmaps, page_len,
                          edges, spare, counts, bounds, ia, ib, marks, ranks)
        nseg = nb - 1                       # (the last edge is the page's end)
        # what each map holds on each segment
        for k in range(nmaps):
            r = base_at[k * npages + i]
            last = base_at[k * npages + i + 1] - 1
            for s in range(nseg):
                while r < last and base_starts[r + 1] <= bounds[s]:
                    r += 1
                stored[k, s] = base_values[r]
        # the pastes, by their reads' places in this log
        npaste = 0
        for j in range(e0, e1):
            v = val[j]
            if v < 0 and ((-1 - v) & 1) == 0:
                npaste += 1
        q = 0
        total = 0
        for j in range(e0, e1):
            v = val[j]
            if v < 0 and ((-1 - v) & 1) == 0:
                places[q] = (-1 - v) >> (1 + _MAP_BITS)
                which[q] = j
                q += 1
        # the pastes by place, stably (equal places keep their log order)
        if npaste > 16:
            order[:npaste] = np.argsort(places[:npaste], kind="mergesort")
        else:
            for q in range(npaste):
                x = q
                while x > 0 and places[order[x - 1]] > places[q]:
                    order[x] = order[x - 1]
                    x -= 1
                order[x] = q
        for q in range(npaste):
            j = which[q] - e0
            total += ib[j] - ia[j]
        if total > len(taken):
            taken = np.empty(max(total, 2 * len(taken)), dtype=np.int64)
        written[:] = False
        nxt = 0
        got = 0
        for j in range(n + 1):
            # the reads made before entry j: what their sources hold now
            while nxt < npaste and places[order[nxt]] <= j:
                jq = which[order[nxt]] - e0
                start[jq] = got
                src = local[((-1 - val[which[order[nxt]]]) >> 1) & (MAX_MAPS - 1)]
                for s in range(ia[jq], ib[jq]):
                    taken[got] = stored[src, s]
                    got += 1
                nxt += 1
            if j == n:
                break
            m = local[w0[e0 + j] >> _MAP_SHIFT]
            v = val[e0 + j]
            if v >= 0:
                for s in range(ia[j], ib[j]):
                    stored[m, s] = v
            else:
                t = start[j]
                for s in range(ia[j], ib[j]):
                    stored[m, s] = taken[t]
                    t += 1
            written[m] = True
        # each map written: its canonical runs, up to the page's end or its own
        for k in range(nmaps):
            if not written[k]:
                continue
            end = sizes[k] - ps
            if end > page_len:
                end = page_len
            lo = used
            for s in range(nseg):
                if bounds[s] >= end:
                    break
                if used == lo or stored[k, s] != out_values[used - 1]:
                    out_starts[used] = bounds[s]
                    out_values[used] = stored[k, s]
                    used += 1
            out_lo[k, i] = lo
            out_hi[k, i] = used
            # the same runs as a map before it on this page: shared
            for k2 in range(k):
                lo2 = out_lo[k2, i]
                if lo2 < 0 or out_hi[k2, i] - lo2 != used - lo:
                    continue
                same = True
                for x in range(used - lo):
                    if (out_starts[lo + x] != out_starts[lo2 + x]
                            or out_values[lo + x] != out_values[lo2 + x]):
                        same = False
                        break
                if same:
                    out_lo[k, i] = -2 - k2
                    used = lo
                    break
    return out_starts[:used], out_values[:used], out_lo, out_hi


@njit(cache=True)
def _page_bounds(w0, e0, n, base_starts, base_at, i, npages, nmaps, page_len, edges, spare,
                 counts, bounds, ia, ib, marks, ranks):
    """:func:`_settle_pages`' segments of page ``i``: the distinct offsets
    of every edge (0, the page's end, each entry's start and end, each
    stored run's start) in increasing order into ``bounds``, how many
    (returned), and for each entry ``j`` the indices of its start and its
    end among them (``ia[j]``, ``ib[j]``).

    Where every offset is a multiple of a unit that cuts the page into
    few positions (``2**low`` with at most :data:`_MARK_WORDS` words of 64
    positions per edge: a guest's 4 KiB writes, 16 K positions on a 64 MiB
    page, 257 words), the offsets are marked in a bitmap of the positions
    (``marks``, left all zero), the bounds read off its set bits in order
    and each entry's indices counted (:func:`_rank`): no sort, a few
    operations per edge and per word.  Else the edges are sorted
    (:func:`_sort_offsets`), each entry's tagged (1 + 2 * its index, + 1
    for its end) below the offset, so that the sort also says which
    segments each entry covers."""
    ored = page_len
    for j in range(n):
        w = w0[e0 + j]
        ored |= (w & _OFFSET_MASK) | ((w >> _OFFSET_BITS) & _OFFSET_MASK)
    c = 2 + 2 * n
    for k in range(nmaps):
        for r in range(base_at[k * npages + i], base_at[k * npages + i + 1]):
            ored |= base_starts[r]
            c += 1
    low = 0
    while not (ored >> low) & 1:
        low += 1
    words = ((page_len >> low) >> 6) + 1
    if words <= _MARK_WORDS * c + _MARK_WORDS_MIN:
        _mark(marks, 0)
        _mark(marks, page_len >> low)
        for k in range(nmaps):
            for r in range(base_at[k * npages + i], base_at[k * npages + i + 1]):
                _mark(marks, base_starts[r] >> low)
        for j in range(n):
            w = w0[e0 + j]
            _mark(marks, (w & _OFFSET_MASK) >> low)
            _mark(marks, ((w >> _OFFSET_BITS) & _OFFSET_MASK) >> low)
        nb = 0
        for x in range(words):
            ranks[x] = nb
            m = marks[x]
            while m:
                bit = m & (~m + np.uint64(1))           # (the lowest set bit)
                bounds[nb] = ((x << 6) + _popcount(bit - np.uint64(1))) << low
                nb += 1
                m ^= bit
        for j in range(n):
            w = w0[e0 + j]
            ia[j] = _rank(marks, ranks, (w & _OFFSET_MASK) >> low)
            ib[j] = _rank(marks, ranks, ((w >> _OFFSET_BITS) & _OFFSET_MASK) >> low)
        marks[:words] = 0
        return nb
    c = 0
    edges[c] = 0
    edges[c + 1] = page_len << _TAG_BITS
    c += 2
    for j in range(n):
        w = w0[e0 + j]
        edges[c] = (w & _OFFSET_MASK) << _TAG_BITS | (2 * j + 1)
        edges[c + 1] = ((w >> _OFFSET_BITS) & _OFFSET_MASK) << _TAG_BITS | (2 * j + 2)
        c += 2
    for k in range(nmaps):
        for r in range(base_at[k * npages + i], base_at[k * npages + i + 1]):
            edges[c] = base_starts[r] << _TAG_BITS
            c += 1
    _sort_offsets(edges, c, spare, counts)
    nb = 0
    for x in range(c):
        off = edges[x] >> _TAG_BITS
        if nb == 0 or off != bounds[nb - 1]:
            bounds[nb] = off
            nb += 1
        tag = edges[x] & _TAG_MASK
        if tag:
            if tag & 1:
                ia[(tag - 1) >> 1] = nb - 1
            else:
                ib[(tag - 1) >> 1] = nb - 1
    return nb


@njit(cache=True)
def _mark(marks, pos):
    """Set bit ``pos`` of the bitmap ``marks`` (uint64 words)."""
    marks[pos >> 6] |= np.uint64(1) << np.uint64(pos & 63)


@njit(cache=True)
def _rank(marks, ranks, pos):
    """How many bits of ``marks`` are set below bit ``pos`` (``ranks[x]``:
    how many in the words before word ``x``)."""
    x = pos >> 6
    below = marks[x] & ((np.uint64(1) << np.uint64(pos & 63)) - np.uint64(1))
    return ranks[x] + _popcount(below)


@njit(cache=True)
def _popcount(v):
    """The number of bits set in the uint64 ``v``."""
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True)
def _sort_offsets(x, n, spare, counts):
    """Sort ``x[:n]`` in place by the page-relative offsets (below
    ``2**27``) above their ``_TAG_BITS`` low bits: a radix sort of the
    bits in which the offsets differ (from the lowest bit any of them has
    set to the highest bit of the largest) in as few digits of at most
    :data:`_RADIX_BITS` bits as they take, of equal widths (``spare``
    holds at least ``n``, ``counts`` ``_RADIX + 1``): linear, where a
    comparison sort or a binary search per entry cost several times more.
    A guest's 4 KiB writes leave offsets on 4 KiB: 15 bits, two digits of
    8 bits, where three of 9 bits over all 27 cost half as much again
    (each digit's pass clears and sums its counts, a few hundred edges a
    page).  A few edges (a page a scattered guest wrote a few times) are
    sorted by insertion: the radix sort's passes over its digits' counts
    cost more there.  Either way stable; the settle needs no more than
    the offsets in order (edges at the same offset make one bound)."""
    if n <= _INSERTION_MAX:
        for i in range(1, n):
            v = x[i]
            key = v >> _TAG_BITS
            j = i
            while j > 0 and (x[j - 1] >> _TAG_BITS) > key:
                x[j] = x[j - 1]
                j -= 1
            x[j] = v
        return
    ored = 0
    top = 0
    for i in range(n):
        off = x[i] >> _TAG_BITS
        ored |= off
        if off > top:
            top = off
    if ored == 0:                       # (every offset 0: in order already)
        return
    low = 0
    while not (ored >> low) & 1:
        low += 1
    high = 0
    while top >> (high + 1):
        high += 1
    bits = high - low + 1
    digits = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    width = (bits + digits - 1) // digits
    radix = 1 << width
    mask = radix - 1
    a = x
    b = spare
    for digit in range(digits):
        sh = _TAG_BITS + low + digit * width
        counts[:radix + 1] = 0
        for i in range(n):
            counts[((a[i] >> sh) & mask) + 1] += 1
        for d in range(radix):
            counts[d + 1] += counts[d]
        for i in range(n):
            d = (a[i] >> sh) & mask
            b[counts[d]] = a[i]
            counts[d] += 1
        a, b = b, a
    if digits & 1:                      # (the result is in spare)
        for i in range(n):
            x[i] = a[i]


@njit(cache=True)
def _by_page(rows, n, counts, met, words):
    """The first ``n`` staged rows' entries grouped by page, in order within
    each (a counting sort into ``words``, each entry one word or two:
    :func:`_compact`); the pages met, ascending, and where each one's words
    end.  ``counts`` (one per page of the disk) is zero on entry and on
    return, and only the entries of the pages met are touched (``met``
    holds at least ``n``): a flush costs by the pages it meets, not by the
    disk's size, unless it meets so many that walking the whole of
    ``counts`` is cheaper than sorting them."""
    m = 0
    for i in range(n):
        p = rows[i, 0]
        if counts[p] == 0:
            met[m] = p
            m += 1
        counts[p] += 1 if _compact(rows[i, 1], rows[i, 2]) >= 0 else 2
    npages = len(counts)
    if m * _SORT_FACTOR < npages:
        pages = np.sort(met[:m])
    else:                               # (as many as the disk's pages, nearly)
        pages = np.empty(m, dtype=np.int64)
        k = 0
        for p in range(npages):
            if counts[p]:
                pages[k] = p
                k += 1
    ends = np.empty(m, dtype=np.int64)
    at = 0
    for k in range(m):                  # (counts: where each page's words start)
        p = pages[k]
        c = counts[p]
        counts[p] = at
        at += c
        ends[k] = at
    for i in range(n):
        p = rows[i, 0]
        at = counts[p]
        w = _compact(rows[i, 1], rows[i, 2])
        if w >= 0:
            words[at] = w
            counts[p] = at + 1
        else:
            words[at] = rows[i, 1] | _WIDE
            words[at + 1] = rows[i, 2]
            counts[p] = at + 2
    for k in range(m):
        counts[pages[k]] = 0
    return pages, ends


@njit(cache=True)
def _compact(word, value):
    """An entry (``a | b << 27 | map << 54``, value) as the one word of a
    page's log that holds it, or -1 if it takes two."""
    a = word & _OFFSET_MASK
    b = (word >> _OFFSET_BITS) & _OFFSET_MASK
    mi = word >> _MAP_SHIFT
    unit = (1 << _C_UNIT) - 1
    if ((a | b) & unit or b <= a or mi >= _C_MAPS
            or value < -_C_BIAS or value >= _C_BIAS):
        return -1
    return ((a >> _C_UNIT) | (((b - a) >> _C_UNIT) - 1) << _C_OFF_BITS
            | mi << _C_MAP_SHIFT | (value + _C_BIAS) << _C_VALUE_SHIFT)


@njit(cache=True)
def _unpack(words, bounds):
    """The entries of the logs ``words[bounds[i]:bounds[i + 1]]`` (one or two
    words each, :func:`_compact`) as two arrays, ``a | b << 27 | map << 54``
    and the value; and where each log's entries start (one more than there
    are logs: the last is how many in all)."""
    nlogs = len(bounds) - 1
    w0 = np.empty(len(words), dtype=np.int64)
    val = np.empty(len(words), dtype=np.int64)
    first = np.empty(nlogs + 1, dtype=np.int64)
    n = 0
    for k in range(nlogs):
        first[k] = n
        i = bounds[k]
        end = bounds[k + 1]
        while i < end:
            w = words[i]
            if w < 0:
                w0[n] = w & _WORD_MASK
                val[n] = words[i + 1]
                i += 2
            else:
                a = (w & _C_OFF_MASK) << _C_UNIT
                b = a + ((((w >> _C_OFF_BITS) & _C_OFF_MASK) + 1) << _C_UNIT)
                w0[n] = a | b << _OFFSET_BITS | ((w >> _C_MAP_SHIFT) & (_C_MAPS - 1)) << _MAP_SHIFT
                val[n] = (w >> _C_VALUE_SHIFT) - _C_BIAS
                i += 1
            n += 1
    first[nlogs] = n
    return w0[:n], val[:n], first


@njit(cache=True)
def _merge_logs(ppage, pa, pb, sbeg, words):
    """Logs joined page by page from streams of parts: stream ``s`` is parts
    ``sbeg[s]:sbeg[s + 1]``, part ``i`` page ``ppage[i]``'s words
    ``words[pa[i]:pb[i]]``, its pages increasing (each once).  A page's
    words are those of its part in each stream, in the streams' order.
    The pages of any, increasing; their words; where each one's start (one
    more than there are pages)."""
    nstreams = sbeg.shape[0] - 1
    nparts = sbeg[nstreams]
    total = 0
    for i in range(nparts):
        total += pb[i] - pa[i]
    heads = sbeg[:nstreams].copy()
    pages = np.empty(nparts, dtype=np.int64)
    bounds = np.empty(nparts + 1, dtype=np.int64)
    out = np.empty(total, dtype=np.int64)
    k = 0
    w = 0
    while True:
        p = -1
        for s in range(nstreams):
            h = heads[s]
            if h < sbeg[s + 1] and (p < 0 or ppage[h] < p):
                p = ppage[h]
        if p < 0:
            break
        pages[k] = p
        bounds[k] = w
        for s in range(nstreams):
            h = heads[s]
            if h < sbeg[s + 1] and ppage[h] == p:
                for x in range(pa[h], pb[h]):
                    out[w] = words[x]
                    w += 1
                heads[s] = h + 1
        k += 1
    bounds[k] = w
    return pages[:k], out, bounds[:k + 1]


def _unpack_logs(logs: list):
    """:func:`_unpack` of a list of logs (``array('q')``)."""
    bounds = np.zeros(len(logs) + 1, dtype=np.int64)
    np.cumsum([len(log) for log in logs], out=bounds[1:])
    # (a writable buffer either way: one compiled signature, not two)
    words = np.frombuffer(logs[0] if len(logs) == 1 else bytearray().join(logs),
                          dtype=np.int64)
    return _unpack(words, bounds)


def _unpack_log(log: array) -> np.ndarray:
    """One log's entries, a row of two words each."""
    w0, val, _ = _unpack_logs([log])
    return np.stack((w0, val), axis=1)


@njit(cache=True, _nrt=False)
def _copy_runs(rows, staged, loglen, pending, zeroing, known, runs, k, a, pages, tag, src,
               shift):
    """ContentJournal.copy_runs' loop: from ``a`` in ``runs[k]``, each
    page's piece staged as :meth:`ContentJournal.copy` logs it, while its
    page is known to hold data and the stage has room; the pages met (a new
    one each time it changes) into ``pages``.  Returns where it stopped, the
    staged rows, the copies and the pages."""
    cap = rows.shape[0]
    n = runs.shape[0]
    copies = 0
    npages = 0
    while k < n:
        end = runs[k, 1]
        while a < end:
            p = a >> shift
            new = npages == 0 or pages[npages - 1] != p
            if known[p] != 2 or staged == cap or (new and npages == pages.shape[0]):
                return k, a, staged, copies, npages
            ps = p << shift
            b = (p + 1) << shift
            if b > end:
                b = end
            rows[staged, 0] = p
            rows[staged, 1] = tag | (a - ps) | ((b - ps) << _OFFSET_BITS)
            rows[staged, 2] = -1 - (((loglen[p] >> 1) << _MAP_BITS | src) << 1)
            staged += 1
            loglen[p] += 2
            pending[p] = 1
            zeroing[p] = 1
            copies += 1
            if new:
                pages[npages] = p
                npages += 1
            a = b
        k += 1
        if k < n:
            a = runs[k, 0]
    return k, a, staged, copies, npages


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

