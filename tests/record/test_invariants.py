"""End-of-run invariants: each violation, constructed honestly, is reported by
name in ``summary["invariants"]["violations"]``; normal runs have none."""

import pytest

import blocksim
from blocksim.record import invariants
from blocksim.record.invariants import CHECKED, guest_write_audit
from blocksim.model.iostatus import IoStatus
from blocksim.jobs.mirror import MirrorJob
from blocksim.jobs.stream import StreamJob

KiB = 1024
MS = 1_000_000

GUEST = {
    "duration": "10ms",
    "images": {"disk": {"size": "1MiB"}},
    "drives": {"d0": {"image": "disk", "werror": "stop"}},
    "faults": [{"image": "disk", "operation": "write", "count": 2}],
    "workloads": {"w": {"drive": "d0", "rw": "randwrite", "iodepth": 2}},
    "actions": [{"on": "STOP", "delay": "1ms", "command": "cont", "repeat": True}],
}

MIRROR = {
    "duration": "50ms",
    "images": {"src": {"size": "1MiB", "data": [{"offset": 0, "length": "512KiB"}]},
               "dst": {"size": "1MiB"}},
    "drives": {"d0": {"image": "src"}},
    "workloads": {"w": {"drive": "d0", "rw": "randwrite", "rate-iops": 2000}},
    "jobs": {"m": {"type": "mirror", "device": "d0", "target": "dst"}},
    "actions": [{"on": "BLOCK_JOB_READY", "delay": "5ms", "command": "block-job-complete",
                 "arguments": {"device": "m"}}],
}

STREAM = {
    "duration": "50ms",
    "images": {"base": {"size": "2MiB", "data": "full"},
               "top": {"size": "2MiB", "backing": "base"}},
    "drives": {"d0": {"image": "top"}},
    "workloads": {"w": {"drive": "d0", "rw": "randrw", "rate-iops": 2000}},
    "jobs": {"s": {"type": "stream", "device": "d0"}},
}


def build(sc, **kw):
    return blocksim.Simulation(blocksim.load_scenario(sc), **kw)


def at(sim, t, fn):
    """Call ``fn(sim)`` at simulated time ``t`` during the run."""
    def proc():
        yield sim.env.timeout(t)
        fn(sim)
    sim.env.process(proc())


def names(violations):
    return [v["invariant"] for v in violations]


@pytest.mark.parametrize("sc", [GUEST, MIRROR, STREAM], ids=["guest", "mirror", "stream"])
def test_normal_runs_have_no_violations(sc):
    r = blocksim.run(sc)
    assert r.summary["invariants"] == {"checked": list(CHECKED), "violations": []}
    assert r.ok


def test_normal_runs_really_exercise_what_is_checked():
    g = blocksim.run(GUEST)
    # Both requests in flight fail together: two errors, one STOP (after
    # both: the main loop serves the stop request), one RESUME.
    assert g.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert g.summary["drives"]["d0"]["writes"] > 50
    m = blocksim.run(MIRROR)
    assert m.summary["jobs"]["m"]["outcome"] == "completed"
    assert m.summary["jobs"]["m"]["integrity"] == "identical"
    assert m.summary["jobs"]["m"]["pivoted"] is True
    s = blocksim.run(STREAM)
    assert s.summary["jobs"]["s"]["outcome"] == "completed"
    assert s.summary["jobs"]["s"]["integrity"] == "identical"


def test_checked_invariants():
    assert CHECKED == ("legal-job-transitions", "iostatus-sticky", "guest-writes-durable",
                       "mirror-target-identical", "stream-independent", "commit-base-holds-top",
                       "backup-point-in-time")


# -- guest-writes-durable ---------------------------------------------------------------

def test_corrupted_disk_after_the_run_is_caught_by_the_audit():
    sim = build(GUEST)
    r = sim.run()
    assert r.violations == []
    drive = sim.drives["d0"]
    expected = drive.expected_content()
    # Pick an acknowledged write and overwrite its bytes behind the guest's back.
    a, b, gen = next((a, b, g) for a, b, g in expected.runs() if g)
    drive.node.content.set(a, a + 512, 10**9)
    audit = guest_write_audit(drive)
    assert audit == {"lost_bytes": 0, "lost_writes_visible": 0, "corrupt_bytes": 512,
                     "first_corrupt_offset": a}
    violations = invariants.check(sim, {"d0": audit})
    assert names(violations) == ["guest-writes-durable"]
    assert violations[0]["subject"] == "d0"
    assert f"first at offset {a}" in violations[0]["detail"]
    assert "512 acknowledged bytes" in violations[0]["detail"]


@pytest.mark.parametrize("stale", [False, True])
def test_a_corrupt_write_is_found_at_its_offset_when_generations_count_up(monkeypatch, stale):
    """The ledger's blocks sorted compiled (as a long run's, _RADIX_FROM
    writes or more) with generations that count up by one: each block's
    expected generation comes from its last write's index
    (BlockOrder._counting), and a block holding another generation, a
    foreign one or that of an earlier write to the same block (``stale``),
    is corrupt, found at its offset, the lowest of two."""
    from blocksim.model import ledger as ledger_mod
    monkeypatch.setattr(ledger_mod, "_RADIX_FROM", 1)
    sim = build({"duration": "40ms", "images": {"disk": {"size": "1MiB"}},
                 "drives": {"d0": {"image": "disk"}},
                 "workloads": {"w": {"drive": "d0", "rw": "randwrite", "bs": "4KiB",
                                     "rate-iops": 20000}}})
    assert sim.run().violations == []
    drive = sim.drives["d0"]
    order = drive.expected_blocks()
    assert order._counting
    rows = list(drive._ledger.rows())
    last = {}
    for a, b, gen in rows:
        last.setdefault(a, []).append(gen)
    twice = sorted(a for a, gens in last.items() if len(gens) > 1)
    assert twice and len(last) > 8
    a = twice[0] if stale else sorted(last)[len(last) // 2]
    b = sorted(last)[-1]
    value = last[a][-2] if stale else 10**9
    drive.node.content.set(a, a + 4096, value)
    drive.node.content.set(b, b + 512, 10**9 + 1)
    assert guest_write_audit(drive) == {"lost_bytes": 0, "lost_writes_visible": 0,
                                        "corrupt_bytes": 4096 + 512, "first_corrupt_offset": a}


def test_a_write_landed_and_not_acknowledged_at_the_end_is_not_corruption():
    """An active mirror's guest write lands on the source, then goes to
    the target before the guest is told: a run ending in between finds the
    source holding a write the ledger does not have yet.  Either content is
    what the guest may find; anything else still is corruption."""
    sim = build(GUEST)
    sim.run()
    drive = sim.drives["d0"]
    a, b, gen = next((a, b, g) for a, b, g in drive.expected_content().runs() if g)
    drive.node.content.set(a, a + 512, 10**9)        # "landed", not acknowledged
    drive.landed.add(10**9)
    assert guest_write_audit(drive)["corrupt_bytes"] == 0
    drive.landed.clear()
    assert guest_write_audit(drive)["corrupt_bytes"] == 512


def test_corruption_during_the_run_is_in_the_summary():
    def corrupt(s):
        # Forget an acknowledged write: the node reads zeros where the guest wrote.
        d = s.drives["d0"]
        a, b, _g = next(run for run in d.expected_content().runs() if run[2])
        d.node.content.set(a, b, 0)

    # Eight writes, all done long before the corruption at 5 ms.
    sim = build({**GUEST, "faults": [], "actions": [],
                 "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 8}}})
    at(sim, 5 * MS, corrupt)
    r = sim.run()
    assert names(r.violations) == ["guest-writes-durable"]
    assert r.summary["drives"]["d0"]["corrupt_bytes"] == 4 * KiB
    assert not r.ok


def test_recorded_losses_are_not_corruption():
    sim = build({**GUEST, "drives": {"d0": {"image": "disk", "werror": "ignore"}},
                 "actions": [],
                 "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 8}}})
    r = sim.run()
    d = r.summary["drives"]["d0"]
    assert (d["writes_lost"], d["lost_bytes"], d["corrupt_bytes"]) == (2, 8 * KiB, 0)
    assert r.violations == []
    # Forgetting the record turns the same state into a violation.
    drive = sim.drives["d0"]
    drive.lost.clear()
    audit = guest_write_audit(drive)
    assert (audit["lost_bytes"], audit["corrupt_bytes"], audit["first_corrupt_offset"]) == \
        (0, 8 * KiB, 0)
    assert names(invariants.check(sim, {"d0": audit})) == ["guest-writes-durable"]


# -- iostatus-sticky ----------------------------------------------------------------------

def test_iostatus_change_without_reset_is_a_violation():
    sim = build(GUEST)

    def overwrite(s):
        st = s.drives["d0"].iostatus
        st._change("nospace", "set")      # ok -> nospace: legal
        st._change("failed", "set")       # nospace -> failed without a reset: illegal

    at(sim, 5 * MS, overwrite)
    r = sim.run()
    assert names(r.violations) == ["iostatus-sticky"]
    v = r.violations[0]
    assert v["subject"] == "drive d0"
    assert v["time"] == 0.005
    assert v["detail"] == "io-status changed from nospace to failed without a reset"


def test_iostatus_set_err_never_violates_stickiness():
    st = IoStatus(lambda: 0)
    st.set_err(28)
    st.set_err(5)
    assert st.value == "nospace"
    st.reset()
    st.set_err(5)
    st.set_err(28)
    assert st.value == "failed"
    assert [(o, n, w) for _t, o, n, w in st.history] == [
        ("ok", "nospace", "set"), ("nospace", "ok", "reset"), ("ok", "failed", "set")]


def test_ranked_iostatus_may_only_move_up():
    sim = build(MIRROR, profile="rfc-2012")

    def mess(s):
        st = s.jobs["m"].iostatus
        assert st.ranked
        st.set_err(5)                    # ok -> failed
        st.set_err(28)                   # failed -> nospace: legal when ranked (the enum's order)
        st._change("failed", "set")      # nospace -> failed: down, illegal

    at(sim, 1 * MS, mess)
    r = sim.run()
    assert names(r.violations) == ["iostatus-sticky"]
    assert r.violations[0]["subject"] == "job m"
    assert r.violations[0]["detail"] == "io-status changed from nospace to failed without a reset"


# -- legal-job-transitions ----------------------------------------------------------------

def test_illegal_job_transition_is_a_violation():
    sim = build(MIRROR)
    at(sim, 40 * MS, lambda s: s.jobs["m"]._transition("running"))    # null -> running
    r = sim.run()
    assert r.summary["jobs"]["m"]["final_status"] == "running"
    assert names(r.violations) == ["legal-job-transitions"]
    assert r.violations[0]["subject"] == "m"
    assert r.violations[0]["detail"] == "null -> running"
    assert r.violations[0]["time"] == 0.04


def test_illegal_transition_mid_job():
    sim = build(STREAM)
    seen = []

    def skip(s):
        job = s.jobs["s"]
        seen.append(job.status)
        job._transition("ready")          # running -> ready is legal, but...
        job._transition("running")        # ready -> running is not

    at(sim, 1 * MS, skip)
    r = sim.run()
    assert seen == ["running"]
    assert [v["detail"] for v in r.violations] == ["ready -> running"]


def test_legal_transitions_pass():
    sim = build(MIRROR)
    r = sim.run()
    job = sim.jobs["m"]
    assert [new for _t, _old, new in job.transitions] == [
        "created", "running", "ready", "waiting", "pending", "concluded", "null"]
    assert job.illegal_transitions == []
    assert r.violations == []


# -- mirror-target-identical and stream-independent ------------------------------------

def test_mirror_target_made_to_differ_before_prepare(monkeypatch):
    original = MirrorJob.prepare

    def corrupt_then_prepare(self):
        self.target.content.set(4 * KiB, 8 * KiB, 10**9)
        original(self)

    monkeypatch.setattr(MirrorJob, "prepare", corrupt_then_prepare)
    r = blocksim.run(MIRROR)
    job = r.summary["jobs"]["m"]
    assert job["outcome"] == "completed"
    assert job["integrity"] == "differs"
    assert job["integrity_detail"] == "target differs from source in 4096 bytes, first at offset 4096"
    assert names(r.violations) == ["mirror-target-identical"]
    assert r.violations[0]["subject"] == "m"
    assert r.violations[0]["detail"] == job["integrity_detail"]
    assert r.violations[0]["time"] == job["finished_at"]


def test_stream_that_copies_nothing_is_not_independent(monkeypatch):
    monkeypatch.setattr(StreamJob, "_next_run",
                        lambda self, offset, size: (min(size - offset, 512 * 1024), False))
    r = blocksim.run({**STREAM, "workloads": {}})
    job = r.summary["jobs"]["s"]
    assert job["outcome"] == "completed"
    assert job["integrity"] == "differs"
    assert names(r.violations) == ["stream-independent"]
    assert r.violations[0]["detail"] == ("after dropping the backing file the disk differs "
                                         "at offset 0")


def test_integrity_is_not_a_violation_for_jobs_that_did_not_complete():
    # A cancelled mirror's target is not expected to match.
    r = blocksim.run({**MIRROR, "actions": [
        {"on": "BLOCK_JOB_READY", "command": "block-job-cancel",
         "arguments": {"device": "m", "force": True}}]})
    assert r.summary["jobs"]["m"]["outcome"] == "cancelled"
    assert r.violations == []


# -- the audit's fast path against the algorithm it replaced ------------------------------

import random

from blocksim.model.ledger import Ledger
from blocksim.model.extents import ExtentMap, diff_ranges


def audit_by_maps(drive) -> dict:
    """guest_write_audit as it was before its vectorised path: the ledger replayed
    into maps a page at a time and diffed run by run.  The reference the audit
    must match exactly, on every drive."""
    layers = drive.node.layers()
    lost_bytes = corrupt_bytes = 0
    lost_gens = set()
    first_corrupt = None
    for expected, start, end in drive.expected_parts():
        for a, b, want, _got in diff_ranges([expected], layers, start, end):
            if want == 0:
                continue
            if want in drive.lost:
                lost_bytes += b - a
                lost_gens.add(want)
            else:
                corrupt_bytes += b - a
                if first_corrupt is None:
                    first_corrupt = a
    return {"lost_bytes": lost_bytes, "lost_writes_visible": len(lost_gens),
            "corrupt_bytes": corrupt_bytes, "first_corrupt_offset": first_corrupt}


def audit_bytewise(drive) -> dict:
    """The audit's definition, a byte at a time (small disks only)."""
    import numpy as np
    size = drive.node.size
    want = np.zeros(size, dtype=np.int64)
    for a, b, g in drive._ledger.rows():
        want[a:b] = g
    got = np.zeros(size, dtype=np.int64)
    for a, b, g in drive.node.read_content(0, size):
        got[a:b] = g
    bad = (want != 0) & (want != got)
    lost = np.array([w in drive.lost for w in want.tolist()], dtype=bool)
    corrupt = np.flatnonzero(bad & ~lost)
    return {"lost_bytes": int((bad & lost).sum()),
            "lost_writes_visible": len(set(want[bad & lost].tolist())),
            "corrupt_bytes": len(corrupt),
            "first_corrupt_offset": int(corrupt[0]) if len(corrupt) else None}


def tampered_drive(seed: int, size: int, bs: int, page_shift: int, n: int, big_gens=False):
    """A drive whose ledger holds ``n`` random aligned ``bs`` writes (repeats
    included) and whose disk (a map of ``page_shift`` pages) got them all,
    then was changed behind the guest's back: whole blocks and parts of blocks
    overwritten by other generations (new ones and stale ones of the ledger),
    ranges zeroed, ranges across page edges rewritten; some generations are
    recorded as lost, some of them still visible."""
    rng = random.Random(seed)
    sim = build({**GUEST, "faults": [], "actions": [], "workloads": {}})
    drive = sim.drives["d0"]
    drive.node.size = size
    disk = drive.node.content = ExtentMap(size, page_shift)
    drive._ledger = Ledger()
    base = 1 << 40 if big_gens else 1
    nblocks = size // bs
    hot = rng.sample(range(nblocks), min(nblocks, max(1, n // 3)))   # repeats happen
    gens = []
    latest = {}                               # block offset -> the generation that won it
    for i in range(n):
        a = (rng.choice(hot) if rng.random() < 0.5 else rng.randrange(nblocks)) * bs
        g = base + i * 3 + rng.randrange(3)
        drive._ledger.append(a, bs, g)
        disk.set(a, a + bs, g)
        gens.append(g)
        latest[a] = g
    # writes lost on record: some dropped (the block reads what was there
    # before, here zeros), some that landed anyway
    for a, g in rng.sample(sorted(latest.items()), min(len(latest), rng.randrange(0, 4))):
        drive.lost[g] = "test"
        if rng.random() < 0.7:
            disk.set(a, a + rng.choice([bs, bs // 2]), 0)
    page = 1 << page_shift
    for _ in range(rng.choice([0, 0, rng.randrange(1, 12)])):
        kind = rng.random()
        a = rng.randrange(size)
        if kind < 0.25:                       # a stale generation comes back
            a -= a % bs
            disk.set(a, min(a + bs, size), rng.choice(gens))
        elif kind < 0.5:                      # part of a block, another generation
            b = min(size, a + rng.randrange(1, bs + 1))
            disk.set(a, b, rng.choice([10**6, 7, base - 1, 0]))
        elif kind < 0.7:                      # a zeroed range, maybe many blocks
            disk.set(a, min(size, a + rng.randrange(1, 8 * bs)), 0)
        else:                                 # across a page edge
            edge = max(page, (a // page) * page)
            if edge < size:
                lo = max(0, edge - rng.randrange(1, 2 * bs))
                disk.set(lo, min(size, edge + rng.randrange(1, 2 * bs)), rng.choice([9, 0]))
    for g in rng.sample(gens, min(len(gens), rng.randrange(0, 3))):
        drive.lost[g] = "test"                # any generation, maybe overwritten since
    drive.lost[10**12] = "a generation the ledger never saw"
    disk.check()
    return drive


@pytest.mark.parametrize("seed", range(40))
def test_fast_audit_equals_the_previous_algorithm_on_tampered_disks(seed):
    rng = random.Random(1000 + seed)
    bs = rng.choice([512, 4096, 3 * 1024, 24 * 1024])
    page_shift = rng.choice([9, 12, 13, 16, 26])
    size = rng.choice([1 << 20, (1 << 20) + 7 * 512, 3 << 18])
    n = rng.choice([1, 5, 60, 400])
    drive = tampered_drive(seed, size, bs, page_shift, n, big_gens=seed % 5 == 0)
    assert drive.expected_blocks() is not None        # the fast path is the one taken
    got = guest_write_audit(drive)
    assert got == audit_by_maps(drive)
    assert got == audit_bytewise(drive)


def test_tampered_disks_exercise_every_outcome():
    seen = set()
    for seed in range(40):
        a = guest_write_audit(tampered_drive(seed, 1 << 20, 4096, 12, 200))
        seen.add((a["lost_bytes"] > 0, a["corrupt_bytes"] > 0))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_fast_audit_with_small_steps_crosses_step_edges(monkeypatch):
    # Steps of a few writes, runs and pages: blocks and runs cut by step edges.
    for name, value in (("_STEP_WRITES", 3), ("_STEP_RUNS", 5), ("_STEP_PAGES", 2)):
        monkeypatch.setattr(invariants, name, value)
        for seed in range(10):
            drive = tampered_drive(seed, (1 << 20) + 3 * 512, 3 * 1024, 12, 300)
            assert guest_write_audit(drive) == audit_by_maps(drive)


def test_a_block_partly_overwritten_counts_exactly_the_bytes_that_differ():
    drive = tampered_drive(0, 1 << 20, 4096, 12, 0)
    for i, a in enumerate((8192, 4096 * 40, 4096 * 41, 4096 * 200)):
        drive._ledger.append(a, 4096, 100 + i)
        drive.node.content.set(a, a + 4096, 100 + i)
    disk = drive.node.content
    disk.set(8192 + 100, 8192 + 300, 5)               # 200 bytes, another generation
    disk.set(4096 * 41 - 10, 4096 * 41 + 10, 0)       # 10 + 10 bytes across two blocks
    disk.set(4096 * 200 + 4000, 4096 * 201 + 50, 101)  # a stale copy of the block at 40
    drive.lost[101] = "test"
    audit = guest_write_audit(drive)
    assert audit == audit_by_maps(drive) == {
        "lost_bytes": 10, "lost_writes_visible": 1,
        "corrupt_bytes": 200 + 10 + 96, "first_corrupt_offset": 8192 + 100}


def test_chains_and_mixed_sizes_take_the_map_path():
    # A backing file: 0 in the top layer reads through, so only the map path knows.
    sim = build({**STREAM, "jobs": {}, "workloads": {"w": {
        "drive": "d0", "rw": "randwrite", "number-ios": 200}}})
    sim.run()
    drive = sim.drives["d0"]
    top, base = drive.node.layers()
    a, b, g = next(r for r in top.runs() if r[2])
    top.set(a, a + 1024, 0)                  # reads the base's data through the hole
    base.set(a, a + 512, g)                  # ... which partly happens to be right
    audit = guest_write_audit(drive)
    assert audit == audit_by_maps(drive) == audit_bytewise(drive)
    assert audit["corrupt_bytes"] == 512
    drive = tampered_drive(3, 1 << 20, 4096, 12, 100)
    drive._ledger.append(4096 * 7 + 512, 1024, 77)    # an odd write: no block order
    assert drive.expected_blocks() is None
    assert guest_write_audit(drive) == audit_by_maps(drive) == audit_bytewise(drive)


def test_an_empty_ledger_audits_clean():
    drive = tampered_drive(0, 1 << 20, 4096, 12, 0)
    drive.node.content.set(0, 8192, 5)
    assert guest_write_audit(drive) == {"lost_bytes": 0, "lost_writes_visible": 0,
                                        "corrupt_bytes": 0, "first_corrupt_offset": None}


def test_a_ledger_generation_of_0_is_never_checked():
    # A guest write always has a generation; a ledger filled by hand may not.
    # The map path reads generation 0 as "never written", and so must the other.
    drive = tampered_drive(0, 1 << 20, 4096, 12, 0)
    drive._ledger.append(0, 4096, 5)
    drive._ledger.append(8192, 4096, 6)
    drive._ledger.append(8192, 4096, 0)               # the block's last write: 0
    drive.node.content.set(0, 4096, 5)
    drive.node.content.set(8192, 12288, 9)
    audit = guest_write_audit(drive)
    assert audit == audit_by_maps(drive) == audit_bytewise(drive)
    assert audit["corrupt_bytes"] == 0


def test_a_chain_under_a_top_holding_no_zero_takes_the_block_path(monkeypatch):
    """An active commit's top written throughout reads as itself alone: the
    vectorised path audits it (ExtentMap.holds_no_zero), with the figures
    of the map path; one 0 left in the top sends it back to the map path,
    where the base answers through the hole."""
    sim = build({**STREAM, "jobs": {}, "workloads": {"w": {
        "drive": "d0", "rw": "randwrite", "number-ios": 200}}})
    sim.run()
    drive = sim.drives["d0"]
    top, base = drive.node.layers()
    top.set(0, top.size, 999)               # the top written throughout ...
    for a, b, g in drive._ledger.rows():
        top.set(a, b, g)
    top.set(8192, 8192 + 512, 7)            # ... with a corrupt piece
    paths = []
    real = invariants._audit_blocks
    monkeypatch.setattr(invariants, "_audit_blocks",
                        lambda *args: paths.append("blocks") or real(*args))
    audit = guest_write_audit(drive)
    assert paths == ["blocks"]
    assert audit == audit_by_maps(drive) == audit_bytewise(drive)
    # a hole in the top: the base's data reads through it, only the map path knows
    a, b, g = next(r for r in drive._ledger.rows() if r[0] >= 16384)
    top.set(a, a + 1024, 0)
    base.set(a, a + 512, g)
    paths.clear()
    audit = guest_write_audit(drive)
    assert paths == []
    assert audit == audit_by_maps(drive) == audit_bytewise(drive)
    assert audit["corrupt_bytes"] == 512 + 512


class _CountingPages(dict):
    """A map's page dict that counts the pages read (issue 19 item 4)."""
    reads = 0

    def get(self, key, default=None):
        _CountingPages.reads += 1
        return super().get(key, default)


def test_fast_audit_reads_the_pages_written_not_the_disk():
    # A 1 TiB disk of 4 KiB pages (2**28 of them) with 200 writes far apart:
    # the audit reads the pages the writes touched, not every page between
    # them, and still equals the map path.
    drive = tampered_drive(3, 1 << 40, 4096, 12, 200)
    disk = drive.node.content
    disk._pages = _CountingPages(disk._pages)
    _CountingPages.reads = 0
    got = guest_write_audit(drive)
    assert _CountingPages.reads <= 2 * 200
    assert got == audit_by_maps(drive)
