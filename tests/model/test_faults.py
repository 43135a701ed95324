"""Fault rules: blkdebug-style errors, dm-flakey, dm-dust, dm-delay, and
faults on backing images."""

import errno

import pytest

import blocksim

KiB = 1024
CL = 64 * KiB
US = 1000
MS = 1_000_000


def node_sim(faults, images=None, seed=0):
    images = images or {"disk": {"size": "1MiB", "latency": "100us"}}
    return blocksim.Simulation(blocksim.load_scenario(
        {"images": images, "faults": [{"image": "disk", **f} for f in faults]}), seed=seed)


def do(sim, gen):
    proc = sim.env.process(gen)
    sim.env.run(until=proc)
    return proc.value


def err_of(value):
    """The errno of a read (errno, runs) or of a write/flush (errno)."""
    return value[0] if isinstance(value, tuple) else value


def at_times(sim, times, make):
    """Issue ``make(i)`` at each time; returns the errnos, in issue order."""
    out = {}

    def one(i, t):
        yield sim.env.timeout(t - sim.env.now)
        out[i] = err_of((yield from make(i)))

    for i, t in enumerate(times):
        sim.env.process(one(i, t))
    sim.env.run()
    return [out[i] for i in range(len(times))]


# -- blkdebug-style error rules -------------------------------------------------------------

@pytest.mark.parametrize("ops, fails", [
    ("read", {"read"}),
    # blkdebug's iotypes: a write rule does not see a write-zeroes
    # (blkdebug_co_pwrite_zeroes checks BLKDEBUG_IO_TYPE_WRITE_ZEROES)
    ("write", {"write"}),
    ("write-zeroes", {"write-zeroes"}),
    ("flush", {"flush"}),
    (["read", "flush"], {"read", "flush"}),
    ("any", {"read", "write", "write-zeroes", "flush"}),
])
def test_operation_filter(ops, fails):
    sim = node_sim([{"operation": ops}])
    dev = sim.devices["disk"]
    got = {"read": err_of(do(sim, dev.read(0, 4096))),
           "write": do(sim, dev.write(0, 4096, 1)),
           "write-zeroes": do(sim, dev.write_zeroes(0, 4096)),
           "flush": do(sim, dev.flush())}
    assert got == {op: (errno.EIO if op in fails else 0) for op in got}


@pytest.mark.parametrize("kind", [{"type": "flakey", "up": "1ms", "down": "1s"},
                                  {"type": "delay", "delay": "5ms"}])
def test_device_level_write_rules_see_write_zeroes(kind):
    # below the image format a write-zeroes is written: dm-flakey fails it,
    # dm-delay delays it, as any write
    sim = node_sim([{**kind, "operation": "write"}])
    dev = sim.devices["disk"]
    sim.env.run(until=2 * MS)                   # into flakey's down window
    t0 = sim.env.now
    err = do(sim, dev.write_zeroes(0, 4096))
    if kind["type"] == "flakey":
        assert err == errno.EIO
    else:
        assert (err, sim.env.now - t0) == (0, 5 * MS + 100 * US)


@pytest.mark.parametrize("name", ["EIO", "ENOSPC", "EPERM", "EACCES", "EINVAL", "EROFS",
                                  "ETIMEDOUT", "ENOMEDIUM", "EDQUOT", "ECANCELED"])
def test_errno_names(name):
    sim = node_sim([{"operation": "write", "errno": name}])
    assert do(sim, sim.devices["disk"].write(0, 512, 1)) == getattr(errno, name)


def test_unknown_errno_is_refused():
    with pytest.raises(blocksim.ScenarioError, match="faults.0.errno"):
        node_sim([{"errno": "EAGAIN"}])


@pytest.mark.parametrize("offset, length, fails", [
    (60 * KiB, 4 * KiB, False),      # ends exactly where the range starts
    (68 * KiB, 4 * KiB, False),      # starts exactly where it ends
    (62 * KiB, 4 * KiB, True),       # overlaps the start
    (67 * KiB, 2 * KiB, True),       # overlaps the end
    (65 * KiB, 1 * KiB, True),       # inside
    (0, 256 * KiB, True),            # covers it
    (68 * KiB - 512, 512, True),     # the last sector
])
def test_offset_range_overlap(offset, length, fails):
    sim = node_sim([{"offset": "64KiB", "length": "4KiB"}])
    dev = sim.devices["disk"]
    expected = errno.EIO if fails else 0
    assert do(sim, dev.write(offset, length, 1)) == expected
    assert err_of(do(sim, dev.read(offset, length))) == expected


def test_flush_matches_only_rules_without_a_range():
    # blkdebug: a flush has no offset, so only a rule not tied to a sector
    # (here: covering the whole image) fails it.
    # (a write first: a flush reaches the disk only after one)
    sim = node_sim([{"operation": "flush", "offset": "64KiB", "length": "4KiB"}])
    do(sim, sim.devices["disk"].write(0, 4096, 1))
    assert do(sim, sim.devices["disk"].flush()) == 0
    sim = node_sim([{"operation": "flush"}])
    do(sim, sim.devices["disk"].write(0, 4096, 1))
    assert do(sim, sim.devices["disk"].flush()) == errno.EIO


def run_n(sim, n, op="write"):
    dev = sim.devices["disk"]
    if op == "write":
        return [do(sim, dev.write(0, 512, i + 1)) for i in range(n)]
    return [err_of(do(sim, dev.read(0, 512))) for _ in range(n)]


@pytest.mark.parametrize("count, expected", [
    (1, [5, 0, 0, 0, 0]),
    ("once", [5, 0, 0, 0, 0]),
    (3, [5, 5, 5, 0, 0]),
    (None, [5, 5, 5, 5, 5]),
])
def test_count(count, expected):
    fault = {"operation": "write"}
    if count is not None:
        fault["count"] = count
    assert run_n(node_sim([fault]), 5) == expected


def test_skip_fails_the_nth_time():
    # skip = 2: the first two matching requests go through, the third fails.
    assert run_n(node_sim([{"operation": "write", "skip": 2, "count": 1}]), 5) == [0, 0, 5, 0, 0]
    assert run_n(node_sim([{"operation": "write", "skip": 1, "count": 2}]), 5) == [0, 5, 5, 0, 0]
    assert run_n(node_sim([{"operation": "write", "skip": 3}]), 5) == [0, 0, 0, 5, 5]


def test_skip_counts_only_matching_requests():
    sim = node_sim([{"operation": "write", "offset": "64KiB", "length": "4KiB", "skip": 1,
                     "count": 1}])
    dev = sim.devices["disk"]
    results = [do(sim, dev.write(0, 512, 1)),             # does not match
               err_of(do(sim, dev.read(CL, 512))),       # does not match (a read)
               do(sim, dev.write(CL, 512, 2)),            # first match: skipped
               do(sim, dev.write(0, 512, 3)),
               do(sim, dev.write(CL, 512, 4)),            # second match: fails
               do(sim, dev.write(CL, 512, 5))]            # count exhausted
    assert results == [0, 0, 0, 0, errno.EIO, 0]


def test_time_window():
    sim = node_sim([{"operation": "write", "start": "1ms", "end": "2ms"}])
    dev = sim.devices["disk"]
    times = [0, 999 * US, 1 * MS, 1500 * US, 2 * MS - 1, 2 * MS, 3 * MS]
    got = at_times(sim, times, lambda i: dev.write(i * 4096, 4096, i + 1))
    assert got == [0, 0, errno.EIO, errno.EIO, errno.EIO, 0, 0]


def probabilistic(seed, p=0.3, n=3000):
    sim = node_sim([{"operation": "write", "probability": p}], seed=seed)
    return [e != 0 for e in run_n(sim, n)]


def test_probability_is_about_p_and_reproducible_per_seed():
    a, b, c = probabilistic(1), probabilistic(1), probabilistic(2)
    assert a == b
    assert a != c
    for fails in (a, c):
        assert sum(fails) / len(fails) == pytest.approx(0.3, abs=0.03)
    assert sum(probabilistic(3, p=0.05)) / 3000 == pytest.approx(0.05, abs=0.015)


def test_probability_with_count_stops_after_count_failures():
    fails = probabilistic(4, p=0.5, n=200)
    sim = node_sim([{"operation": "write", "probability": 0.5, "count": 3}], seed=4)
    limited = [e != 0 for e in run_n(sim, 200)]
    assert sum(limited) == 3
    # Same draws while the rule is armed: the first three failures coincide.
    k = [i for i, f in enumerate(fails) if f][2]
    assert limited[:k + 1] == fails[:k + 1]


def test_a_failed_request_is_not_carried_out():
    sim = node_sim([{"operation": "write", "offset": "4KiB", "length": "4KiB"}])
    dev = sim.devices["disk"]
    assert do(sim, dev.write(0, 4096, 1)) == 0
    assert do(sim, dev.write(4096, 4096, 2)) == errno.EIO
    assert do(sim, dev.write(0, 12288, 3)) == errno.EIO     # overlapping: not even partly done
    assert dev.read_content(0, 12288) == [(0, 4096, 1), (4096, 12288, 0)]
    assert dev.allocated_bytes == CL
    assert (dev.writes, dev.failed, dev.bytes_written) == (1, 2, 4096)


def test_first_failing_rule_decides_the_errno():
    sim = node_sim([{"operation": "write", "errno": "ENOSPC", "count": 1},
                    {"operation": "write", "errno": "EROFS"}])
    assert run_n(sim, 3) == [errno.ENOSPC, errno.EROFS, errno.EROFS]


def test_fault_rules_in_a_guest_run_are_counted():
    r = blocksim.run({
        "duration": "10ms",
        "images": {"disk": {"size": "1MiB"}},
        "drives": {"d0": {"image": "disk", "werror": "report"}},
        "faults": [{"image": "disk", "operation": "write", "skip": 4, "count": 2}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 10}}})
    assert r.event_names() == ["BLOCK_IO_ERROR"] * 2
    d = r.summary["drives"]["d0"]
    assert (d["writes"], d["guest_errors"]) == (10, 2)
    assert r.violations == []


# -- dm-flakey -----------------------------------------------------------------------------

def test_flakey_fails_only_in_down_windows():
    # Up 1 ms, down 1 ms, repeating from the window start (0).
    sim = node_sim([{"type": "flakey", "up": "1ms", "down": "1ms"}])
    dev = sim.devices["disk"]
    times = [t * 250 * US for t in range(24)]          # 0 .. 5.75 ms
    got = at_times(sim, times, lambda i: dev.write(i * 4096, 4096, i + 1))
    expected = [errno.EIO if (t // MS) % 2 else 0 for t in times]
    assert got == expected
    reads = node_sim([{"type": "flakey", "up": "1ms", "down": "1ms", "operation": "read"}])
    rdev = reads.devices["disk"]
    assert at_times(reads, [500 * US, 1500 * US], lambda i: rdev.write(0, 512, 1)) == [0, 0]
    assert at_times(reads, [2500 * US, 3500 * US], lambda i: rdev.read(0, 512)) == \
        [0, errno.EIO]


def test_flakey_window_starts_at_start():
    sim = node_sim([{"type": "flakey", "up": "1ms", "down": "1ms", "start": "10ms"}])
    dev = sim.devices["disk"]
    got = at_times(sim, [1500 * US, 10_500 * US, 11_500 * US],
                   lambda i: dev.write(0, 512, i + 1))
    assert got == [0, 0, errno.EIO]


def flakey_drop_run():
    return blocksim.Simulation(blocksim.load_scenario({
        "duration": "4ms",
        "images": {"disk": {"size": "1MiB", "latency": "100us"}},
        "drives": {"d0": {"image": "disk"}},
        "faults": [{"image": "disk", "type": "flakey", "up": "1ms", "down": "1ms",
                    "drop-writes": True}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "rate-iops": 4000, "size": "64KiB"},
                      "r": {"drive": "d0", "rw": "read", "rate-iops": 4000}}}))


def test_flakey_drop_writes_loses_writes_silently_on_record():
    sim = flakey_drop_run()
    r = sim.run()
    assert r.events == []                          # nothing was reported
    d = r.summary["drives"]["d0"]
    assert d["guest_errors"] == 0 and sim.workloads["w"].errors == 0
    assert sim.workloads["r"].errors == 0          # reads are not affected
    # Writes issued at 1.0, 1.25, 1.5, 1.75, 3.0 ... 3.75 ms were dropped.
    assert d["writes_lost"] == 8
    assert set(sim.drives["d0"].lost.values()) == {"dropped by a device fault"}
    # 16 writes went to a 16-block region: the dropped blocks were never
    # rewritten, so the loss is visible, and on record, not a violation.
    assert d["lost_bytes"] == 8 * 4096
    assert d["corrupt_bytes"] == 0
    assert r.violations == []
    dev = sim.devices["disk"]
    assert [dev.content.value_at(i * 4096) == 0 for i in range(16)] == \
        [False] * 4 + [True] * 4 + [False] * 4 + [True] * 4


# -- dm-dust --------------------------------------------------------------------------------

def test_dust_bad_blocks_fail_reads_until_written():
    sim = node_sim([{"type": "dust", "blocks": [2, 5], "block-size": "4KiB"}])
    dev = sim.devices["disk"]

    def read(block, n=1):
        return err_of(do(sim, dev.read(block * 4096, n * 4096)))

    assert [read(b) for b in range(7)] == [0, 0, errno.EIO, 0, 0, errno.EIO, 0]
    assert read(1, 2) == errno.EIO                   # a read touching a bad block
    assert read(3, 2) == 0                           # blocks 3-4 are good
    # A write to block 2 heals it (and succeeds).
    assert do(sim, dev.write(2 * 4096 + 512, 512, 7)) == 0
    assert read(2) == 0
    assert read(5) == errno.EIO                      # still bad
    # A write spanning several blocks heals every bad one in it.
    assert do(sim, dev.write(4 * 4096, 8192, 8)) == 0
    assert [read(b) for b in range(7)] == [0] * 7
    assert dev.faults[0].bad == []


def test_dust_only_affects_reads_and_writes_not_flush():
    sim = node_sim([{"type": "dust", "blocks": [0]}])
    dev = sim.devices["disk"]
    assert do(sim, dev.flush()) == 0
    assert err_of(do(sim, dev.read(0, 512))) == errno.EIO


# -- dm-delay --------------------------------------------------------------------------------

def mean_latency(faults, rw="randrw"):
    r = blocksim.run({
        "duration": "20ms",
        "images": {"disk": {"size": "1MiB", "latency": "100us"}},
        "drives": {"d0": {"image": "disk"}},
        "faults": [{"image": "disk", **f} for f in faults],
        "workloads": {"w": {"drive": "d0", "rw": rw}}})
    return r.summary["drives"]["d0"]["mean_latency"]


def test_delay_adds_latency():
    base = mean_latency([])
    delayed = mean_latency([{"type": "delay", "delay": "1ms"}])
    assert delayed - base == pytest.approx(0.001, rel=0.01)
    # Only on the operations it names.
    assert mean_latency([{"type": "delay", "delay": "1ms", "operation": "read"}], rw="write") == \
        pytest.approx(base, rel=0.01)
    # Delays of several rules add up.
    two = mean_latency([{"type": "delay", "delay": "1ms"}, {"type": "delay", "delay": "500us"}])
    assert two - base == pytest.approx(0.0015, rel=0.01)


def test_delay_on_a_single_request():
    sim = node_sim([{"type": "delay", "delay": "2ms", "offset": "64KiB", "length": "64KiB"}],
                   images={"disk": {"size": "1MiB", "latency": "100us",
                                    "bandwidth": 1_000_000_000}})
    dev = sim.devices["disk"]
    do(sim, dev.write(0, 4096, 1))
    assert sim.env.now == 100 * US + 4096
    t0 = sim.env.now
    do(sim, dev.write(CL, 4096, 2))
    assert sim.env.now - t0 == 2 * MS + 100 * US + 4096


# -- faults on a backing image ------------------------------------------------------------

def chain(fault, top_data="none"):
    images = {"disk": {"size": "256KiB", "data": "full"},
              "top": {"size": "256KiB", "backing": "disk", "data": top_data}}
    sim = node_sim([fault], images=images)
    return sim, sim.devices["top"]


def test_backing_faults_hit_reads_that_fall_through():
    sim, top = chain({"operation": "read"}, top_data=[{"offset": 0, "length": "64KiB"}])
    assert err_of(do(sim, top.read(0, CL))) == 0                      # served by top
    assert err_of(do(sim, top.read(CL, 4096))) == errno.EIO           # falls through
    assert err_of(do(sim, top.read(CL - 4096, 8192))) == errno.EIO    # partly falls through
    # Writes to the top are unaffected by the backing file's read fault when
    # they cover whole clusters (no copy-on-write read needed).
    assert do(sim, top.write(CL, CL, 9)) == 0
    assert err_of(do(sim, top.read(CL, 4096))) == 0


def test_backing_fault_range_is_the_backing_files():
    sim, top = chain({"operation": "read", "offset": "128KiB", "length": "4KiB"})
    assert err_of(do(sim, top.read(0, 2 * CL))) == 0
    assert err_of(do(sim, top.read(2 * CL, 4096))) == errno.EIO


def test_backing_write_faults_do_not_affect_top_reads_or_writes():
    sim, top = chain({"operation": "write"})
    assert err_of(do(sim, top.read(0, 4 * CL))) == 0
    assert do(sim, top.write(0, 4096, 5)) == 0


def test_backing_delay_applies_to_reads_that_fall_through():
    images = {"disk": {"size": "256KiB", "data": "full"},
              "top": {"size": "256KiB", "backing": "disk", "latency": "100us",
                      "bandwidth": 1_000_000_000, "data": [{"offset": 0, "length": "64KiB"}]}}
    sim = node_sim([{"type": "delay", "delay": "1ms"}], images=images)
    top = sim.devices["top"]
    t0 = sim.env.now
    do(sim, top.read(0, 4096))
    assert sim.env.now - t0 == 100 * US + 4096
    t0 = sim.env.now
    do(sim, top.read(CL, 4096))
    assert sim.env.now - t0 == 1 * MS + 100 * US + 4096


def test_guest_reads_through_a_faulty_backing_file():
    r = blocksim.run({
        "duration": "20ms",
        "images": {"disk": {"size": "256KiB", "data": "full"},
                   "top": {"size": "256KiB", "backing": "disk",
                           "data": [{"offset": 0, "length": "128KiB"}]}},
        "drives": {"d0": {"image": "top"}},
        "faults": [{"image": "disk", "operation": "read"}],
        "workloads": {"w": {"drive": "d0", "rw": "read", "number-ios": 64, "bs": "8KiB"}}})
    # Sequential 8 KiB reads over 256 KiB: the first half is in top, the
    # second half falls through to the faulty backing file.
    assert r.event_names() == ["BLOCK_IO_ERROR"] * 32
    assert {e["data"]["node-name"] for e in r.events} == {"top"}
    assert r.summary["drives"]["d0"]["guest_errors"] == 32


def test_backing_faults_spare_the_rest_of_a_cluster_allocated_in_top():
    # qcow2 allocates whole clusters: once a write allocated cluster 0 in the
    # top image, every read of that cluster is served by the top image, so the
    # backing file's read fault no longer applies to it.  (The write covers the
    # whole cluster: a partial one would need a copy-on-write read from the
    # backing file, which the fault would fail - see tests/model/test_flush.py.)
    sim, top = chain({"operation": "read"})
    sim2 = node_sim([{"operation": "read"}],
                    images={"disk": {"size": "256KiB"},
                            "top": {"size": "256KiB", "backing": "disk"}})
    top2 = sim2.devices["top"]
    for s, t in ((sim, top), (sim2, top2)):
        assert do(s, t.write(0, CL, 9)) == 0
        assert t.is_allocated(0, CL)
        assert err_of(do(s, t.read(16 * KiB, 4096))) == 0
        assert err_of(do(s, t.read(0, CL))) == 0
        assert err_of(do(s, t.read(CL, 4096))) == errno.EIO
        assert err_of(do(s, t.read(CL - 4096, 8192))) == errno.EIO
    assert top2.read_content(0, CL) == [(0, CL, 9)]


# -- which rules a quiet stretch or a copy burst may leave out ------------------

R, W = frozenset({"read"}), frozenset({"write"})


def rule(**fault):
    return node_sim([fault]).devices["disk"].faults[0]


@pytest.mark.parametrize("fault, ops, lo, hi, t0, t1, quiet", [
    ({"operation": "read"}, W, 0, CL, 0, MS, True),                  # other operation
    ({"operation": "read"}, R, 0, CL, 0, MS, False),
    ({"offset": "512KiB", "length": "64KiB"}, W, 0, 512 * KiB, 0, MS, True),   # other range
    ({"offset": "512KiB", "length": "64KiB"}, W, 0, 513 * KiB, 0, MS, False),
    ({"start": "5ms"}, W, 0, CL, 0, 5 * MS, True),                   # window not open yet
    ({"start": "5ms"}, W, 0, CL, 0, 5 * MS + 1, False),
    ({"end": "5ms"}, W, 0, CL, 5 * MS, 9 * MS, True),                # window closed
    ({"end": "5ms"}, W, 0, CL, 5 * MS - 1, 9 * MS, False),
    ({"type": "delay", "delay": "1ms"}, W, 0, CL, 0, MS, False),
    # dm-flakey: up 10 ms, down 2 ms, from 1 ms: [1, 11) up, [11, 13) down, [13, 23) up
    ({"type": "flakey", "up": "10ms", "down": "2ms", "start": "1ms"}, W, 0, CL, 0, 11 * MS, True),
    ({"type": "flakey", "up": "10ms", "down": "2ms", "start": "1ms"}, W, 0, CL, 0, 11 * MS + 1, False),
    ({"type": "flakey", "up": "10ms", "down": "2ms", "start": "1ms"}, W, 0, CL, 13 * MS, 23 * MS, True),
    ({"type": "flakey", "up": "10ms", "down": "2ms", "start": "1ms"}, W, 0, CL, 12 * MS, 14 * MS, False),
    ({"type": "dust", "blocks": [3]}, W, 0, CL, 0, MS, False),
])
def test_a_rule_is_quiet_only_where_no_request_can_match_it(fault, ops, lo, hi, t0, t1, quiet):
    assert rule(**fault).quiet_for(ops, lo, hi, t0, t1) is quiet


def test_a_spent_count_and_a_healed_dust_list_are_quiet():
    sim = node_sim([{"operation": "write", "count": 1}])
    r = sim.devices["disk"].faults[0]
    assert not r.quiet_for(W, 0, CL, 0, MS)
    assert err_of(do(sim, sim.devices["disk"].write(0, 4096, 7))) == errno.EIO
    assert r.quiet_for(W, 0, CL, 0, MS)
    sim = node_sim([{"type": "dust", "blocks": [1]}])
    r = sim.devices["disk"].faults[0]
    assert not r.quiet_for(R, 0, CL, 0, MS)
    do(sim, sim.devices["disk"].write(0, CL, 7))          # the write heals block 1
    assert r.quiet_for(R, 0, CL, 0, MS)
