"""The content journal (blocksim.engine.journal) against changes applied at once.

Random sequences of writes, copies (snapshot then paste, possibly far
apart, possibly never pasted), write-zeroes, copy-on-read fills and reads,
on several maps sharing pages, are played on journaled maps and on plain
ones: every read must answer the same, and at the end every page must be
stored identically (canonical pages make equal content equal storage).
Both ways of applying a log (the maps' own splices for short logs, numpy
segments for long ones) are forced in turn.
"""

from __future__ import annotations

import random
from array import array

import pytest

from blocksim.engine import journal as journal_mod
from blocksim.model import extents as extents_mod
from blocksim.model.extents import ExtentMap, Span
from blocksim.engine.journal import ContentJournal, Snap

SHIFT = 16                  # 64 KiB pages: many page edges in a small map
PAGE = 1 << SHIFT


@pytest.fixture(autouse=True)
def _bulk_pages(monkeypatch):
    """Small maps store a settle's pages in bulk too (extents._Bulk), as a
    disk of many pages does (a few tests switch it off), in arrays that
    start small, so that they grow, with garbage and without."""
    monkeypatch.setattr(extents_mod, "BULK_MIN_PAGES", 0)
    monkeypatch.setattr(extents_mod, "BULK_MIN_ROWS", 4)


def _pages(m: ExtentMap) -> dict:
    m.settle()
    return {p: (v if v.__class__ is int else (list(v[0]), list(v[1])))
            for p, v in sorted(m._pages.items())}


def _as_runs(x) -> list:
    if x.__class__ is Span or x.__class__ is Snap:
        return x.runs()
    return list(x)


def _entries_held(j: ContentJournal) -> int:
    """The entries in the pages' logs, in the chunks (parts not pulled
    yet) and on the stage, counted one by one."""
    n = sum(len(journal_mod._unpack_log(log)) for log in j._logs.values())
    for seq, pages, ends, words in j._chunks:
        a = 0
        for p, b in zip(pages.tolist(), ends.tolist()):
            if j._pulled[p] <= seq:
                n += len(journal_mod._unpack_log(array("q", words[a:b].tobytes())))
            a = b
    return n + j.staged


def _play(seed: int, steps: int, sizes: tuple, first_gen: int = 1,
          settle_all: float = 0.0) -> None:
    """One random sequence, journaled and plain side by side; with
    ``settle_all``, the whole journal is also settled between steps with
    that probability (as the budget's check does), copies in flight."""
    rng = random.Random(seed)
    rng_all = random.Random(-1 - seed)
    j = ContentJournal(SHIFT)
    lazy = [ExtentMap(s, SHIFT, journal=j) for s in sizes]
    plain = [ExtentMap(s, SHIFT) for s in sizes]
    gen = first_gen
    copies = []                 # (target index, lazy snapshot, plain snapshot)
    unit = rng.choice((512, 4096))

    def rand_range(size, max_len):
        a = rng.randrange(0, size // unit) * unit
        n = rng.randint(1, max_len // unit) * unit
        return a, min(a + n, size)

    for _ in range(steps):
        op = rng.random()
        i = rng.randrange(len(sizes))
        size = sizes[i]
        if op < 0.40:                                   # a guest write, mostly in one page
            a, b = rand_range(size, PAGE // 4 if rng.random() < 0.9 else 3 * PAGE)
            gen += 1
            lazy[i].set(a, b, gen)
            plain[i].set(a, b, gen)
        elif op < 0.45:                                 # write-zeroes
            a, b = rand_range(size, PAGE // 2)
            lazy[i].set(a, b, 0)
            plain[i].set(a, b, 0)
        elif op < 0.70:                                 # a copy's read
            t = rng.randrange(len(sizes))
            limit = min(size, sizes[t])
            a, b = rand_range(limit, PAGE // 2 if rng.random() < 0.9 else 2 * PAGE)
            ls, ps = lazy[i].snapshot(a, b), plain[i].snapshot(a, b)
            zero = ps.__class__ is list and len(ps) == 1 and not ps[0][2]
            assert (ls.__class__ is list and len(ls) == 1 and not ls[0][2]) == zero
            if not zero or rng.random() < 0.5:
                copies.append((t, ls, ps))
        elif op < 0.88 and copies:                      # a copy's write, in any order
            t, ls, ps = copies.pop(rng.randrange(len(copies)))
            if rng.random() < 0.1:                      # the write failed
                if ls.__class__ is Snap:
                    ls.forget()
                continue
            lazy[t].set_runs(ls)
            plain[t].set_runs(ps)
        elif op < 0.91:                                 # a copy-on-read fill
            a, b = rand_range(size, PAGE // 4)
            gen += 1
            lazy[i].fill_runs([(a, b, gen)])
            plain[i].fill_runs([(a, b, gen)])
        elif op < 0.93 and copies:                      # someone reads a pending copy
            _t, ls, ps = rng.choice(copies)
            assert _as_runs(ls) == _as_runs(ps)
        else:                                           # a read
            a, b = rand_range(size, 2 * PAGE)
            assert lazy[i].runs(a, b) == plain[i].runs(a, b)
        if settle_all and rng_all.random() < settle_all:
            j.settle_all()
            assert not j.entries() and not j._logs.keys() - {
                s.start >> SHIFT for s in j._open.values()}
        # the count the budget watches is the logs', the chunks' and the stage's
        assert j.entries() == _entries_held(j)
    for t, ls, ps in copies:                            # the copies still in flight land
        lazy[t].set_runs(ls)
        plain[t].set_runs(ps)
    for lm, pm in zip(lazy, plain):
        # (extent_count first: it reads pages in bulk as they are, _pages
        # takes them out)
        assert lm.extent_count() == pm.extent_count()
        assert _pages(lm) == _pages(pm)
        lm.check()
    assert not j.logs and not j._held and not j._open


@pytest.mark.parametrize("small_log, bulk", [(0, True), (3, True), (0, False),
                                             (3, False), (10_000, True)])
@pytest.mark.parametrize("seed", range(40))
def test_a_journal_gives_what_changes_applied_at_once_give(monkeypatch, seed, small_log, bulk):
    monkeypatch.setattr(journal_mod, "SMALL_LOG", small_log)
    monkeypatch.setattr(journal_mod, "BULK", bulk)
    _play(seed, 400, (8 * PAGE, 8 * PAGE, 5 * PAGE + 12288))


@pytest.mark.parametrize("chunks", [None, (1, 3), (4, 100)])
@pytest.mark.parametrize("small_log, bulk", [(0, True), (3, True), (10_000, True), (0, False)])
@pytest.mark.parametrize("seed", range(40))
def test_the_whole_journal_settled_mid_run_gives_the_same(monkeypatch, seed, small_log, bulk,
                                                          chunks):
    """settle_all (the budget's check, the end of a run) merges every
    page's log with its staged entries in one go (_settle_all_bulk); the
    pages of copies in flight and of reads held take the page-by-page
    settle: settled often, with copies in flight, the content must not
    change."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", small_log)
    monkeypatch.setattr(journal_mod, "BULK", bulk)
    if chunks:
        _small_chunks(monkeypatch, *chunks)
    _play(seed, 400, (8 * PAGE, 8 * PAGE, 5 * PAGE + 12288), settle_all=0.05)


def _small_chunks(monkeypatch, entries: int, most: int) -> None:
    """Flushes of ``entries`` or more kept as chunks, at most ``most`` of
    them, on a stage of five entries (handed out between most steps)."""
    monkeypatch.setattr(journal_mod, "CHUNK_ENTRIES", entries)
    monkeypatch.setattr(journal_mod, "MAX_CHUNKS", most)
    monkeypatch.setattr(journal_mod, "STAGE_ENTRIES", 5)
    monkeypatch.setattr(journal_mod, "STAGE_PER_PAGE", 0)


@pytest.mark.parametrize("chunks", [(1, 3), (3, 2), (4, 100)])
@pytest.mark.parametrize("small_log, bulk", [(0, True), (3, True), (0, False)])
@pytest.mark.parametrize("seed", range(40))
def test_flushes_kept_as_chunks_give_the_same(monkeypatch, seed, small_log, bulk, chunks):
    """A flush of many entries keeps them as one chunk, pulled into a
    page's log when the page settles (ContentJournal._pull); past
    MAX_CHUNKS a flush hands its entries out, after the page's entries
    in chunks: chunks of a few entries, a few or many of them, and the
    content must not change."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", small_log)
    monkeypatch.setattr(journal_mod, "BULK", bulk)
    _small_chunks(monkeypatch, *chunks)
    _play(seed, 400, (8 * PAGE, 8 * PAGE, 5 * PAGE + 12288))


@pytest.mark.parametrize("small_log, bulk", [(3, True), (0, False)])
@pytest.mark.parametrize("seed", range(40))
def test_a_small_stage_handed_out_often_gives_the_same(monkeypatch, seed, small_log, bulk):
    """Entries wait on the stage until it is full or something settles: a
    stage of five entries hands them out to the pages' logs between any
    two steps, and the content must not change."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", small_log)
    monkeypatch.setattr(journal_mod, "BULK", bulk)
    monkeypatch.setattr(journal_mod, "STAGE_ENTRIES", 5)
    monkeypatch.setattr(journal_mod, "STAGE_PER_PAGE", 0)        # (that stage, whatever the disk)
    _play(seed, 400, (8 * PAGE, 8 * PAGE, 5 * PAGE + 12288))


@pytest.mark.parametrize("first_gen", [(1 << 31) - 150, (1 << 32) - 150])
@pytest.mark.parametrize("small_log, bulk", [(0, True), (0, False)])
@pytest.mark.parametrize("seed", range(20))
def test_entries_a_word_cannot_hold_give_the_same(monkeypatch, seed, small_log, bulk, first_gen):
    """A log entry takes one word when its offsets are on 4 KiB, its map is
    one of the first eight and its value fits 32 bits, two otherwise
    (``journal._compact``): ten maps, writes on 512 or 4096 bytes, and
    generations crossing ``2**31``, mixed in the same logs; and crossing
    ``2**32``, so that settled pages of 4-byte values (``'I'``) and of
    8-byte ones are read, copied and written into each other."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", small_log)
    monkeypatch.setattr(journal_mod, "BULK", bulk)
    _play(seed, 400, (4 * PAGE,) * 9 + (5 * PAGE + 12288,), first_gen=first_gen)


def test_a_log_entry_takes_one_word_when_it_can():
    """Guest writes of 4 KiB and copies of clusters are one word each; an
    entry is two words past the first eight maps, off 4 KiB, or with a
    value beyond 32 bits, and reads back the same either way."""
    j = ContentJournal(SHIFT)
    maps = [ExtentMap(4 * PAGE, SHIFT, journal=j) for _ in range(9)]
    maps[0].set(4096, 8192, 5)                  # one word
    maps[1].set(0, PAGE, (1 << 31) - 1)         # one word: the largest value
    maps[7].set(PAGE - 4096, PAGE, 0)           # one word: the eighth map
    maps[8].set(4096, 8192, 6)                  # two: the ninth map
    maps[0].set(512, 4096, 7)                   # two: off 4 KiB
    maps[0].set(8192, 12288, 1 << 31)           # two: a value beyond 32 bits
    maps[0].set(8192, 12288, 1 << 40)           # two: far beyond
    j.flush()
    assert len(j._logs[0]) == 3 + 2 * 4
    rows = [(w & journal_mod._OFFSET_MASK, (w >> journal_mod._OFFSET_BITS) & journal_mod._OFFSET_MASK,
             w >> journal_mod._MAP_SHIFT, v) for w, v in journal_mod._unpack_log(j._logs[0]).tolist()]
    assert rows == [(4096, 8192, 0, 5), (0, PAGE, 1, (1 << 31) - 1),
                    (PAGE - 4096, PAGE, 7, 0), (4096, 8192, 8, 6), (512, 4096, 0, 7),
                    (8192, 12288, 0, 1 << 31), (8192, 12288, 0, 1 << 40)]
    assert j.entries() == 7
    # (a paste's value is negative: the smallest that fits, and one below)
    word = 4096 | 8192 << journal_mod._OFFSET_BITS
    assert journal_mod._compact(word, -(1 << 31)) >= 0
    assert journal_mod._compact(word, -(1 << 31) - 1) == -1


@pytest.mark.parametrize("stage", [5, 64])
@pytest.mark.parametrize("seed", range(20))
def test_a_flush_meeting_few_of_many_pages_gives_the_same(monkeypatch, seed, stage):
    """A flush that meets few of the disk's pages sorts them instead of
    walking every page's count (``_by_page``): a 400-page map next to two
    small ones, with stages small enough to take that way, and content
    must not change."""
    monkeypatch.setattr(journal_mod, "STAGE_ENTRIES", stage)
    monkeypatch.setattr(journal_mod, "STAGE_PER_PAGE", 0)        # (that stage, whatever the disk)
    _play(seed, 400, (8 * PAGE, 8 * PAGE, 400 * PAGE))


def test_a_flush_touches_only_the_pages_it_meets():
    """The flush's per-page counts persist between flushes, zero: a flush
    that met three pages of 16384 reads and resets only those three.  The
    others' counts are poisoned here: a flush that walked every page (or
    zeroed them) would hand out logs to pages nobody wrote, or clear them."""
    j = ContentJournal(SHIFT)
    m = ExtentMap(1 << 30, SHIFT, journal=j)        # 16384 pages
    m.set(5 * PAGE, 5 * PAGE + 100, 1)
    m.set(9000 * PAGE + 4096, 9000 * PAGE + 8192, 2)
    m.set(5 * PAGE + 200, 5 * PAGE + 300, 3)
    m.set(16383 * PAGE, 16383 * PAGE + 512, 4)
    counts = j._counts
    assert len(counts) >= 16384 and not counts.any()
    poison = [0, 6, 8999, 16382]
    counts[poison] = 7
    logs = j.logs                                    # (flushes)
    assert sorted(logs) == [5, 9000, 16383]
    assert list(logs[5])[1::2] == [1, 3] and list(logs[9000])[1::2] == [2]
    assert list(counts[poison]) == [7] * 4           # never looked at
    counts[poison] = 0
    assert not counts.any()                          # the pages met reset
    assert m.value_at(5 * PAGE + 250) == 3 and m.value_at(9000 * PAGE + 5000) == 2


def test_staged_entries_reach_their_pages_logs_in_order():
    j = ContentJournal(SHIFT)
    m = ExtentMap(4 * PAGE, SHIFT, journal=j)
    m.set(0, 100, 1)
    m.set(PAGE, PAGE + 100, 2)
    m.set(200, 300, 3)
    assert j.staged == 3 and not j._logs             # nothing handed out yet
    assert list(j.loglen[:2]) == [4, 2]              # staged entries counted
    logs = j.logs                                    # (hands them out)
    assert j.staged == 0 and sorted(logs) == [0, 1]
    assert list(logs[0])[1::2] == [1, 3] and list(logs[1])[1::2] == [2]
    assert m.value_at(250) == 3 and m.value_at(PAGE + 50) == 2


def test_long_logs_take_the_numpy_path_and_short_ones_the_splices(monkeypatch):
    calls = {"small": 0, "bulk": 0}
    for name, key in (("_replay_small", "small"), ("_replay_bulk", "bulk")):
        inner = getattr(ContentJournal, name)

        def counted(self, p, log, *more, inner=inner, key=key):
            calls[key] += 1
            return inner(self, p, log, *more)
        monkeypatch.setattr(ContentJournal, name, counted)
    j = ContentJournal(SHIFT)
    m = ExtentMap(4 * PAGE, SHIFT, journal=j)
    for k in range(journal_mod.SMALL_LOG + 1):           # page 0: one entry too many
        m.set(k * 512, k * 512 + 100, k + 1)
    m.set(PAGE + 4096, PAGE + 8192, 7)                  # page 1: one entry
    assert len(j.logs) == 2 and m._pages == {}          # nothing applied yet
    assert m.runs(0, PAGE)[:2] == [(0, 100, 1), (100, 512, 0)]
    assert m.value_at(PAGE + 4096) == 7
    assert calls == {"small": 1, "bulk": 1}
    for k in range(3):                                  # pages 1 to 3, read together
        m.set(PAGE * (k + 1), PAGE * (k + 1) + 512, 9)
    assert m.runs(PAGE, 4 * PAGE)[:3] == [(PAGE, PAGE + 512, 9), (PAGE + 512, PAGE + 4096, 0),
                                         (PAGE + 4096, PAGE + 8192, 7)]
    assert calls == {"small": 1, "bulk": 2}


def test_a_copy_pasted_after_its_page_settled_keeps_what_it_read():
    j = ContentJournal(SHIFT)
    src, tgt = ExtentMap(2 * PAGE, SHIFT, journal=j), ExtentMap(2 * PAGE, SHIFT, journal=j)
    src.set(0, 8192, 5)
    src.set(4096, 8192, 6)
    snap = src.snapshot(0, 8192)
    assert snap.__class__ is Snap
    src.set(0, 8192, 9)                     # the source changes after the read
    assert src.runs(0, 8192) == [(0, 8192, 9)]          # a read settles the page
    assert not j.logs and snap.sid in j._held
    tgt.set_runs(snap)
    assert tgt.runs(0, 8192) == [(0, 4096, 5), (4096, 8192, 6)]
    assert not j._held


def test_a_range_reading_as_zeros_is_known_without_settling_when_it_can_be():
    j = ContentJournal(SHIFT)
    m = ExtentMap(2 * PAGE, SHIFT, journal=j)
    m.set(0, PAGE, 3)                       # a whole page, logged
    m.settle()
    m.set(4096, 8192, 4)                    # a non-zero write logged on page 0
    # stored data under the range: not zeros, whatever is logged
    assert m.snapshot(0, 4096).__class__ is Snap and 0 in j.logs
    # page 1 holds nothing, nothing logged there: zeros, nothing settled
    assert m.snapshot(PAGE, PAGE + 4096) == [(PAGE, PAGE + 4096, 0)] and 0 in j.logs
    m.set(PAGE + 8192, PAGE + 12288, 0)     # a logged write-zeroes: settle to know
    assert m.snapshot(PAGE, PAGE + 4096) == [(PAGE, PAGE + 4096, 0)]
    assert 1 not in j.logs


def test_a_forgotten_copy_leaves_nothing_behind():
    j = ContentJournal(SHIFT)
    src, tgt = ExtentMap(PAGE, SHIFT, journal=j), ExtentMap(PAGE, SHIFT, journal=j)
    src.set(0, 4096, 2)
    held = src.snapshot(0, 4096)
    src.settle()                            # read before the failure is known
    dropped = src.snapshot(0, 4096)
    held.forget()
    dropped.forget()
    tgt.settle()
    assert not j.logs and not j._held and not j._open
    assert tgt.runs() == [(0, PAGE, 0)]


def test_pages_settled_together_each_keep_their_first_run(monkeypatch):
    """Two neighbouring pages settled in one go, the first ending with the
    value the second starts with: each is still stored from its own start."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 0)
    j = ContentJournal(SHIFT)
    lazy, plain = ExtentMap(3 * PAGE, SHIFT, journal=j), ExtentMap(3 * PAGE, SHIFT)
    for m in (lazy, plain):
        m.set(0, 512, 3)
        m.set(PAGE - 4096, PAGE, 5)
        m.set(PAGE, PAGE + 4096, 5)
        m.set(PAGE + 8192, PAGE + 9000, 6)
        m.set(2 * PAGE, 2 * PAGE + 100, 5)
    assert len(j.logs) == 3
    lazy.settle()
    assert lazy._pages == plain._pages
    lazy.check()


def test_a_journal_over_its_budget_settles_whole(monkeypatch):
    monkeypatch.setattr(journal_mod, "BUDGET_ENTRIES", 100)
    j = ContentJournal(SHIFT)
    lazy, plain = ExtentMap(4 * PAGE, SHIFT, journal=j), ExtentMap(4 * PAGE, SHIFT)
    for k in range(100):
        for m in (lazy, plain):
            m.set((k * 7919 * 512) % (4 * PAGE - 512), (k * 7919 * 512) % (4 * PAGE - 512) + 512,
                  k + 1)
    assert not j.keep_within_budget() and j.logs     # 100 entries: within
    lazy.set(0, 512, 1000)
    plain.set(0, 512, 1000)
    assert j.keep_within_budget() and not j.logs     # 101: settled
    assert lazy._pages == plain._pages


@pytest.mark.parametrize("bulk", [False, True])
@pytest.mark.parametrize("write", ["set", "set_runs"])
@pytest.mark.parametrize("later", ["target", "source"])
def test_a_target_settled_into_its_sources_runs_shares_them_until_written(monkeypatch, later,
                                                                         write, bulk):
    """A copy that leaves the target holding what the source holds on a
    page: the settle stores that page once for both maps (a mirror in
    sync), and a later write to either map changes only that map.  Maps
    that store a settle's pages in bulk (extents._Bulk) give the target
    the source's rows instead, and the same holds."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 0)        # the bulk settle
    if not bulk:
        monkeypatch.setattr(extents_mod, "BULK_MAX_PAGES", 0)
    j = ContentJournal(SHIFT)
    src, tgt = ExtentMap(3 * PAGE, SHIFT, journal=j), ExtentMap(3 * PAGE, SHIFT, journal=j)
    plain_src, plain_tgt = ExtentMap(3 * PAGE, SHIFT), ExtentMap(3 * PAGE, SHIFT)
    for m in (src, plain_src):
        m.set(0, 3 * PAGE, 1)
    src.settle()
    for k in range(8):                          # the guest writes pages 0 and 1
        for m in (src, plain_src):
            m.set(k * 4096, k * 4096 + 512, 10 + k)
            m.set(PAGE + k * 8192, PAGE + k * 8192 + 4096, 20 + k)
    for a, b in ((0, PAGE), (PAGE, 2 * PAGE), (2 * PAGE, 3 * PAGE)):   # copied whole
        tgt.set_runs(src.snapshot(a, b))
        plain_tgt.set_runs(plain_src.snapshot(a, b))
    tgt.set(PAGE + 100, PAGE + 200, 99)         # page 1 differs again
    plain_tgt.set(PAGE + 100, PAGE + 200, 99)
    for m, v in ((src, 55), (tgt, 56), (plain_src, 55), (plain_tgt, 56)):
        m.set(2 * PAGE, 2 * PAGE + 512, v)      # page 2: the same edges, not the same values
    tgt.settle()
    if bulk:
        assert tgt._bulk.count == src._bulk.count == 3      # every page in bulk
        assert tgt._get(0) == src._get(0)
    else:
        assert tgt._pages[0] is src._pages[0]       # in sync: one page for both
    assert tgt._pages[1] != src._pages[1]
    assert tgt._pages[2] != src._pages[2]
    for m, plain in ((tgt, plain_tgt), (src, plain_src)):
        assert _pages(m) == _pages(plain)
    written, other = (tgt, src) if later == "target" else (src, tgt)
    plain_written, plain_other = ((plain_tgt, plain_src) if later == "target"
                                  else (plain_src, plain_tgt))
    # a short log, applied with the maps' splices: the writer's own copy
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 10_000)
    for m in (written, plain_written):
        if write == "set":
            m.set(4096 + 1000, 4096 + 1100, 77)
        else:
            m.set_runs([(100, 200, 5), (200, 300, 6)])
    for m, plain in ((written, plain_written), (other, plain_other)):
        assert _pages(m) == _pages(plain)
        m.check()
    assert written._pages[0] is not other._pages[0]


@pytest.mark.parametrize("unit, writes", [
    (4096, 600),    # 4 KiB positions, many edges a page: marked in a bitmap
    (4096, 40),     # too few edges for a bitmap of 257 words: 15 bits, two digits
    (4096, 9),      # a few edges: by insertion
    (512, 600),     # 18 bits: two digits of 9
    (1, 300),       # all 27 bits: three digits
    (3 * 4096, 200)])   # (offsets on 4 KiB, not all on 8 KiB: 15 bits)
@pytest.mark.parametrize("seed", range(3))
def test_a_bulk_settle_of_64_mib_pages_orders_edges_across_the_whole_page(monkeypatch, seed,
                                                                          unit, writes):
    """The settle finds a page's segments by marking its edges' positions
    in a bitmap where they are few (offsets on 4 KiB, many edges), else by
    sorting the edges digit by digit, over the bits in which the offsets
    differ (journal._page_bounds): on 64 MiB pages (the default) offsets
    use up to 27 bits, so writes and copies spread over whole pages, on
    any unit, must come out as when applied at once."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 0)
    rng = random.Random(seed)
    shift = 26
    page = 1 << shift
    j = ContentJournal(shift)
    src, tgt = (ExtentMap(2 * page + 3 * 4096, shift, journal=j) for _ in range(2))
    plain_src, plain_tgt = (ExtentMap(2 * page + 3 * 4096, shift) for _ in range(2))
    for k in range(writes):
        a = rng.randrange(0, (2 * page) // unit) * unit
        b = a + unit * rng.choice((1, 2, 7))
        for m in (src, plain_src):
            m.set(a, b, k + 1)
        if k % 3 == 0:
            g = a & ~0xFFFF
            tgt.set_runs(src.snapshot(g, g + 0x10000))
            plain_tgt.set_runs(plain_src.snapshot(g, g + 0x10000))
    assert _pages(src) == _pages(plain_src) and _pages(tgt) == _pages(plain_tgt)


@pytest.mark.parametrize("base", [0, 3])
def test_whole_pages_set_to_the_default_leave_the_bulk(monkeypatch, base):
    """A write over many whole pages of the map's default (a write-zeroes
    across the disk, ExtentMap._clear_pages) drops them from the bulk and
    the dict at once: the pages in bulk among them must read the default
    after, and the pages at the range's edges keep the rest of their runs."""
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 0)
    j = ContentJournal(SHIFT)
    lazy, plain = ExtentMap(40 * PAGE, SHIFT, journal=j), ExtentMap(40 * PAGE, SHIFT)
    for m in (lazy, plain):
        if base:
            m.set(0, 40 * PAGE, base)
        for p in range(0, 40, 2):               # pages of two runs and more
            m.set(p * PAGE + 512, p * PAGE + 4096, 10 + p)
            m.set(p * PAGE + 8192, p * PAGE + 12288, 60 + p)
        m.set(5 * PAGE, 6 * PAGE, 7)            # a page of one value
    lazy.settle()
    assert lazy._bulk is not None and lazy._bulk.count >= 20
    for m in (lazy, plain):
        m.set(3 * PAGE + 1000, 33 * PAGE + 6000, base)     # whole pages 4 to 32, and two edges
    assert lazy.extent_count() == plain.extent_count()
    assert _pages(lazy) == _pages(plain)
    lazy.check()


@pytest.mark.parametrize("seed", range(6))
def test_run_arrays_reads_pages_in_bulk_as_page_objects(monkeypatch, seed):
    """extents.run_arrays over pages stored in bulk (_run_arrays_bulk) gives
    the arrays it gives over page objects: the same runs, the same stop
    when it ends after max_runs (at the page where they reach it), with
    listed pages or every page."""
    from blocksim.model.extents import run_arrays
    monkeypatch.setattr(journal_mod, "SMALL_LOG", 0)
    rng = random.Random(seed)
    j = ContentJournal(SHIFT)
    lazy, plain = ExtentMap(24 * PAGE, SHIFT, journal=j), ExtentMap(24 * PAGE, SHIFT)
    for _ in range(300):
        a = rng.randrange(24 * PAGE // 512) * 512
        b = min(a + rng.choice((512, 4096, PAGE // 3)), 24 * PAGE)
        v = rng.choice((0, rng.randrange(1, 1 << 20)))
        lazy.set(a, b, v)
        plain.set(a, b, v)
    lazy.settle(0, 12 * PAGE)                   # half in bulk, half pages with logs
    assert lazy._bulk is not None
    lazy.value_at(3 * PAGE + 5)                 # a page taken out of the bulk
    for max_runs in (None, 1, 7, 40, 10_000):
        for listed in (None, [1, 2, 5, 9, 13, 20], [7]):
            for start, end in ((0, 24 * PAGE), (PAGE + 999, 17 * PAGE - 5)):
                got = run_arrays(lazy, start, end, max_runs=max_runs, pages=listed)
                want = run_arrays(plain, start, end, max_runs=max_runs, pages=listed)
                assert got[0] == want[0]
                assert got[1].tolist() == want[1].tolist()
                assert got[2].tolist() == want[2].tolist()
