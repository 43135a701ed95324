"""Block device nodes: thin provisioning, cluster allocation, qcow2 copy-on-write,
backing-chain reads, raw images, and the service-time model."""

import errno

import pytest

import blocksim
from blocksim.errors import ScenarioError

KiB = 1024
CL = 64 * KiB


def node_sim(images, faults=(), seed=0):
    return blocksim.Simulation(blocksim.load_scenario(
        {"images": images, "faults": [dict(f) for f in faults]}), seed=seed)


def do(sim, gen):
    """Drive one request generator to completion; returns its value."""
    proc = sim.env.process(gen)
    sim.env.run(until=proc)
    return proc.value


def timed(sim, gen):
    """(value, completion time) of a request issued now."""
    out = {}

    def wrap():
        out["v"] = yield from gen
        out["t"] = sim.env.now

    proc = sim.env.process(wrap())
    sim.env.run(until=proc)
    return out["v"], out["t"]


def gen_at(dev, offset):
    return dev.read_content(offset, offset + 1)[0][2]


# -- thin provisioning ------------------------------------------------------------------

def thin(capacity="128KiB", **kw):
    sim = node_sim({"thin": {"size": "1MiB", "cluster-size": "64KiB", "capacity": capacity, **kw}})
    return sim, sim.devices["thin"]


def test_writes_needing_new_clusters_past_capacity_fail_enospc():
    sim, dev = thin()
    assert do(sim, dev.write(0, 4 * KiB, 11)) == 0
    assert do(sim, dev.write(CL, 4 * KiB, 12)) == 0
    assert dev.allocated_bytes == 2 * CL
    # A third cluster does not fit...
    assert do(sim, dev.write(2 * CL, 4 * KiB, 13)) == errno.ENOSPC
    # ... nor a write reaching into it from an allocated cluster.
    assert do(sim, dev.write(2 * CL - 4 * KiB, 8 * KiB, 14)) == errno.ENOSPC
    # Already allocated clusters still take writes, anywhere inside them.
    assert do(sim, dev.write(60 * KiB, 8 * KiB, 15)) == 0
    assert do(sim, dev.write(CL + 32 * KiB, 32 * KiB, 16)) == 0
    assert dev.allocated_bytes == 2 * CL
    # Failed writes were not carried out and allocated nothing.
    assert dev.read_content(2 * CL - 4 * KiB, 2 * CL + 4 * KiB) == [
        (2 * CL - 4 * KiB, 2 * CL, 16), (2 * CL, 2 * CL + 4 * KiB, 0)]
    assert not dev.is_allocated(2 * CL, 3 * CL)
    assert (dev.writes, dev.failed) == (4, 2)


def test_thin_extend_by_lets_writes_through():
    sim, dev = thin()
    do(sim, dev.write(0, 2 * CL, 1))
    assert do(sim, dev.write(2 * CL, 4 * KiB, 2)) == errno.ENOSPC
    assert sim.monitor.execute("thin-extend", {"image": "thin", "by": CL}) == {"capacity": 3 * CL}
    assert do(sim, dev.write(2 * CL, 4 * KiB, 2)) == 0
    assert do(sim, dev.write(3 * CL, 4 * KiB, 3)) == errno.ENOSPC
    assert sim.monitor.commands[-1]["return"] == {"capacity": 3 * CL}


def test_thin_extend_to_capacity_and_shrink_refused():
    sim, dev = thin()
    assert sim.monitor.execute("thin-extend", {"image": "thin", "capacity": 4 * CL}) == \
        {"capacity": 4 * CL}
    assert do(sim, dev.write(0, 4 * CL, 1)) == 0
    assert do(sim, dev.write(4 * CL, 512, 2)) == errno.ENOSPC
    assert sim.monitor.execute("thin-extend", {"image": "thin", "capacity": CL}) is None
    assert "Cannot shrink" in sim.monitor.commands[-1]["error"]["desc"]
    assert dev.capacity == 4 * CL


def test_thin_extend_by_on_unlimited_device_starts_from_allocation():
    sim = node_sim({"disk": {"size": "1MiB"}})
    dev = sim.devices["disk"]
    do(sim, dev.write(0, 4 * KiB, 1))
    assert sim.monitor.execute("thin-extend", {"image": "disk", "by": CL}) == {"capacity": 2 * CL}
    assert do(sim, dev.write(CL, 4 * KiB, 2)) == 0
    assert do(sim, dev.write(2 * CL, 4 * KiB, 3)) == errno.ENOSPC


def test_thin_extend_during_a_run_recovers_a_stopped_guest():
    r = blocksim.run({
        "duration": "10ms",
        "images": {"thin": {"size": "1MiB", "capacity": "64KiB"}},
        "drives": {"d0": {"image": "thin", "werror": "stop"}},
        "workloads": {"w": {"drive": "d0", "rw": "write", "bs": "64KiB", "number-ios": 3}},
        "actions": [{"on": "STOP", "command": "thin-extend",
                     "arguments": {"image": "thin", "capacity": "192KiB"}},
                    {"on": "STOP", "delay": "1ms", "command": "cont"}]})
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.events[0]["data"]["nospace"] is True
    img = r.summary["images"]["thin"]
    assert (img["allocated"], img["capacity"]) == (3 * CL, 3 * CL)
    assert r.summary["drives"]["d0"]["writes"] == 3
    assert r.violations == []


def test_allocation_is_per_cluster():
    sim, dev = thin(capacity="1MiB")
    assert do(sim, dev.write(CL + 512, 512, 7)) == 0
    assert dev.allocated_bytes == CL
    assert dev.is_allocated(CL, 2 * CL)
    assert not dev.is_allocated(0, CL)
    # Straddling a boundary allocates both clusters.
    assert do(sim, dev.write(3 * CL - 512, 1024, 8)) == 0
    assert dev.allocated_bytes == 3 * CL
    assert dev.is_allocated(2 * CL, 4 * CL)
    # A full device refuses even a single sector in a new cluster.
    sim2, small = thin(capacity="64KiB")
    assert do(sim2, small.write(0, 512, 1)) == 0
    assert do(sim2, small.write(CL - 512, 512, 2)) == 0
    assert do(sim2, small.write(CL, 512, 3)) == errno.ENOSPC


def test_concurrent_writes_cannot_overcommit_a_thin_device():
    sim, dev = thin(capacity="64KiB")
    procs = [sim.env.process(dev.write(i * CL, 4 * KiB, i + 1)) for i in range(3)]
    sim.env.run()
    assert [p.value for p in procs] == [0, errno.ENOSPC, errno.ENOSPC]
    assert dev.allocated_bytes == CL


# -- backing chains and qcow2 copy-on-write ---------------------------------------------

def chain():
    sim = node_sim({
        "base": {"size": "256KiB", "data": "full"},
        "mid": {"size": "256KiB", "backing": "base",
                "data": [{"offset": "64KiB", "length": "64KiB"}]},
        "top": {"size": "256KiB", "backing": "mid"},
    })
    return sim, sim.devices["base"], sim.devices["mid"], sim.devices["top"]


def test_reads_of_unallocated_clusters_read_through_the_backing_chain():
    sim, base, mid, top = chain()
    g_base, g_mid = gen_at(base, 0), gen_at(mid, CL)
    assert g_base and g_mid and g_base != g_mid
    assert top.content.runs() == [(0, 4 * CL, 0)]            # nothing in the top layer
    assert top.read_content(0, 4 * CL) == [(0, CL, g_base), (CL, 2 * CL, g_mid),
                                           (2 * CL, 4 * CL, g_base)]
    err, runs = do(sim, top.read(CL - 4 * KiB, 8 * KiB, want_data=True))
    assert err == 0
    assert runs == [(CL - 4 * KiB, CL, g_base), (CL, CL + 4 * KiB, g_mid)]
    assert [n.name for n in top.chain()] == ["top", "mid", "base"]


def test_partial_write_to_an_unallocated_cluster_copies_the_rest_from_backing():
    sim, base, mid, top = chain()
    g_base = gen_at(base, 0)
    assert do(sim, top.write(8 * KiB, 4 * KiB, 99)) == 0
    assert top.allocated_bytes == CL
    # The whole cluster now lives in the top layer: backing data outside the
    # written bytes, the new data inside.
    assert top.content.runs(0, CL) == [(0, 8 * KiB, g_base), (8 * KiB, 12 * KiB, 99),
                                       (12 * KiB, CL, g_base)]
    assert top.read_content(0, CL) == top.content.runs(0, CL)
    # Outside the written bytes, the top reads exactly as its backing.
    assert top.read_content(0, 8 * KiB) == mid.read_content(0, 8 * KiB)
    assert top.read_content(12 * KiB, 2 * CL) == mid.read_content(12 * KiB, 2 * CL)
    # A second partial write to the now allocated cluster copies nothing.
    assert do(sim, top.write(0, 4 * KiB, 100)) == 0
    assert top.content.runs(0, CL) == [(0, 4 * KiB, 100), (4 * KiB, 8 * KiB, g_base),
                                       (8 * KiB, 12 * KiB, 99), (12 * KiB, CL, g_base)]


def test_copy_on_write_from_a_middle_layer():
    sim, base, mid, top = chain()
    g_mid = gen_at(mid, CL)
    assert do(sim, top.write(CL + 60 * KiB, 8 * KiB, 5)) == 0    # straddles clusters 1 and 2
    assert top.allocated_bytes == 2 * CL
    assert top.content.runs(CL, 3 * CL) == [
        (CL, CL + 60 * KiB, g_mid), (CL + 60 * KiB, 2 * CL + 4 * KiB, 5),
        (2 * CL + 4 * KiB, 3 * CL, gen_at(base, 2 * CL))]


def test_copy_on_write_never_overwrites_a_later_write_to_the_same_cluster():
    # Write A allocates cluster 0 (copy-on-write of the rest of it) but is
    # delayed; write B to the same cluster is issued next and completes first.
    # A's copy-on-write must fill only what nobody wrote: B's data survives.
    sim = node_sim({"base": {"size": "256KiB", "data": "full"},
                    "top": {"size": "256KiB", "backing": "base"}},
                   faults=[{"image": "top", "type": "delay", "delay": "1ms",
                            "operation": "write", "offset": 0, "length": "4KiB"}])
    top = sim.devices["top"]
    g_base = gen_at(sim.devices["base"], 0)
    done = []

    def write(offset, gen):
        err = yield from top.write(offset, 4 * KiB, gen)
        done.append((gen, err))

    sim.env.process(write(0, 100))
    sim.env.process(write(8 * KiB, 200))
    sim.env.run()
    assert done == [(200, 0), (100, 0)]                   # B completed first
    assert top.content.runs(0, CL) == [(0, 4 * KiB, 100), (4 * KiB, 8 * KiB, g_base),
                                       (8 * KiB, 12 * KiB, 200), (12 * KiB, CL, g_base)]


def test_partial_write_without_backing_data_keeps_zeros():
    sim = node_sim({"base": {"size": "256KiB"}, "top": {"size": "256KiB", "backing": "base"}})
    top = sim.devices["top"]
    assert do(sim, top.write(4 * KiB, 4 * KiB, 3)) == 0
    assert top.read_content(0, CL) == [(0, 4 * KiB, 0), (4 * KiB, 8 * KiB, 3), (8 * KiB, CL, 0)]


def test_failed_write_to_a_chain_is_not_carried_out():
    sim = node_sim({"base": {"size": "256KiB", "data": "full"},
                    "top": {"size": "256KiB", "backing": "base", "capacity": 0}})
    top = sim.devices["top"]
    before = top.read_content(0, 4 * CL)
    assert do(sim, top.write(4 * KiB, 4 * KiB, 50)) == errno.ENOSPC
    assert top.read_content(0, 4 * CL) == before
    assert top.content.runs() == [(0, 4 * CL, 0)]
    assert top.allocated_bytes == 0


# -- raw images -------------------------------------------------------------------------

def test_raw_image_reads_its_own_content_and_zeros():
    sim = node_sim({"raw": {"size": "256KiB", "format": "raw",
                            "data": [{"offset": 0, "length": "64KiB"}]}})
    raw = sim.devices["raw"]
    assert raw.format == "raw" and raw.backing is None
    g = gen_at(raw, 0)
    assert raw.read_content(0, 2 * CL) == [(0, CL, g), (CL, 2 * CL, 0)]
    assert do(sim, raw.write(CL, 512, 9)) == 0
    assert raw.read_content(CL, CL + 1024) == [(CL, CL + 512, 9), (CL + 512, CL + 1024, 0)]


def test_raw_thin_volume_runs_out_of_space():
    sim = node_sim({"raw": {"size": "256KiB", "format": "raw", "capacity": "64KiB"}})
    raw = sim.devices["raw"]
    assert do(sim, raw.write(0, 4 * KiB, 1)) == 0
    assert do(sim, raw.write(CL, 4 * KiB, 2)) == errno.ENOSPC


def test_raw_image_cannot_have_a_backing_file():
    with pytest.raises(ScenarioError, match="only qcow2 images can have a backing image"):
        blocksim.load_scenario({"images": {"b": {"size": "64KiB"},
                                           "r": {"size": "64KiB", "format": "raw",
                                                 "backing": "b"}}})


# -- service time ---------------------------------------------------------------------------

GB = 1_000_000_000      # 1 byte per ns


def timing(**kw):
    spec = {"size": "1MiB", "latency": "100us", "bandwidth": GB, **kw}
    sim = node_sim({"disk": spec})
    return sim, sim.devices["disk"]


def test_service_time_is_latency_plus_size_over_bandwidth():
    sim, dev = timing()
    assert timed(sim, dev.write(0, 4096, 1)) == (0, 100_000 + 4096)
    t0 = sim.env.now
    (err, _), t = timed(sim, dev.read(0, 65536))
    assert (err, t - t0) == (0, 100_000 + 65536)
    sim2, slow = timing(bandwidth="1MiB")
    assert timed(sim2, slow.write(0, 4096, 1)) == (0, 100_000 + 4096 * GB // (1 << 20))


def test_queue_depth_limits_concurrency():
    sim, dev = timing(**{"queue-depth": 2})
    done = []

    def one(i):
        yield from dev.write(i * 4096, 4096, i + 1)
        done.append(sim.env.now)

    for i in range(4):
        sim.env.process(one(i))
    sim.env.run()
    # Two slots: the third and fourth request wait for a slot to free up; the
    # shared transfer pipe serialises the 4096 ns transfers.
    assert done == [104_096, 108_192, 208_192, 212_288]


def test_blkdebug_error_fails_on_the_next_turn():
    """blkdebug's inject_error reschedules the request's coroutine and fails
    it on the main loop's next turn: no latency, no transfer, for every
    iotype (QEMU 7.2 blkdebug.c)."""
    from blocksim.model.faults import MAIN_LOOP_TURN_NS as TURN
    sim = node_sim({"disk": {"size": "1MiB", "latency": "100us", "bandwidth": GB}},
                   faults=[{"image": "disk", "operation": ["read", "write", "flush",
                                                           "write-zeroes"]}])
    dev = sim.devices["disk"]
    assert timed(sim, dev.write(0, 65536, 1)) == (errno.EIO, TURN)
    assert timed(sim, dev.read(0, 65536)) == ((errno.EIO, None), 2 * TURN)
    assert timed(sim, dev.write_zeroes(0, 65536)) == (errno.EIO, 3 * TURN)
    assert timed(sim, dev.flush()) == (errno.EIO, 4 * TURN)
    assert dev.failed == 4


def test_device_mapper_error_costs_the_latency():
    """A dm-dust device fails a read of a bad block in the kernel: after
    the latency, without the transfer."""
    sim = node_sim({"disk": {"size": "1MiB", "latency": "100us", "bandwidth": GB}},
                   faults=[{"image": "disk", "type": "dust", "operation": "read",
                            "blocks": [0]}])
    dev = sim.devices["disk"]
    assert timed(sim, dev.read(0, 65536)) == ((errno.EIO, None), 100_000)


def test_backing_error_on_the_next_turn_only_for_a_read_it_serves_whole():
    """A read of the top failing in its backing file's blkdebug fails on the
    next turn when the backing file serves all of it; with part of it
    allocated in the top, qcow2 waits for that part's read too."""
    sim = node_sim({"base": {"size": "1MiB", "latency": "100us", "bandwidth": GB},
                    "top": {"size": "1MiB", "latency": "100us", "bandwidth": GB,
                            "backing": "base", "cluster-size": "64KiB",
                            "data": [{"offset": "0", "length": "64KiB"}]}},
                   faults=[{"image": "base", "operation": "read"}])
    from blocksim.model.faults import MAIN_LOOP_TURN_NS as TURN
    top = sim.devices["top"]
    assert timed(sim, top.read(65536, 65536)) == ((errno.EIO, None), TURN)
    t0 = sim.env.now
    err, t = timed(sim, top.read(0, 131072))
    assert err == (errno.EIO, None) and t - t0 == 100_000


def guest_iops(iodepth, queue_depth, bs="4KiB", bandwidth=GB, duration="20ms"):
    r = blocksim.run({
        "duration": duration,
        "images": {"disk": {"size": "16MiB", "latency": "100us", "bandwidth": bandwidth,
                            "queue-depth": queue_depth}},
        "drives": {"d0": {"image": "disk"}},
        "workloads": {"w": {"drive": "d0", "rw": "randread", "bs": bs, "iodepth": iodepth}}})
    return r.summary["drives"]["d0"]["requests"] / r.summary["simulated_seconds"]


def test_throughput_saturates_at_the_queue_depth():
    one = guest_iops(1, 2)
    two = guest_iops(2, 2)
    eight = guest_iops(8, 2)
    assert one == pytest.approx(1e9 / 104_096, rel=0.02)
    assert two == pytest.approx(2 * one, rel=0.03)
    assert eight == pytest.approx(two, rel=0.03)         # more iodepth does not help
    assert guest_iops(8, 8) == pytest.approx(4 * two, rel=0.05)


def test_throughput_saturates_at_the_bandwidth():
    # 1 MiB requests on a 100 MiB/s device: about 100 per second however deep.
    iops = guest_iops(8, 32, bs="1MiB", bandwidth="100MiB", duration="1s")
    assert iops == pytest.approx(100, abs=2)


def jittered_latencies(seed, n=200, jitter=0.5):
    sim = node_sim({"disk": {"size": "1MiB", "latency": "100us", "bandwidth": GB,
                             "jitter": jitter}}, seed=seed)
    dev = sim.devices["disk"]
    out = []
    for i in range(n):
        t0 = sim.env.now
        _, t = timed(sim, dev.read(0, 512))
        out.append(t - t0 - 512)
    return out


def test_jitter_is_seeded():
    a, b, c = jittered_latencies(1), jittered_latencies(1), jittered_latencies(2)
    assert a == b
    assert a != c
    assert len(set(a)) > 150                      # latencies really vary
    assert min(a) > 0
    assert sum(a) / len(a) == pytest.approx(100_000, rel=0.1)   # mean is the latency
    assert set(jittered_latencies(1, n=20, jitter=0.0)) == {100_000}


def test_a_copy_on_write_read_failure_fails_the_guest_write():
    # qcow2: a 4 KiB write into a new 64 KiB cluster first reads the rest of
    # the cluster from the backing file; if that read fails, the write fails.
    scenario = {
        "duration": "1s",
        "images": {"base": {"size": "1MiB", "data": "full"},
                   "top": {"size": "1MiB", "backing": "base"}},
        "drives": {"vda": {"image": "top", "werror": "report"}},
        "faults": [{"image": "base", "operation": "read", "offset": "32KiB",
                    "length": "4KiB", "count": 1}],
        "workloads": {"w": {"drive": "vda", "rw": "write", "bs": "4KiB", "number-ios": 2}},
    }
    r = blocksim.run(scenario)
    errors = [e["data"] for e in r.events if e["event"] == "BLOCK_IO_ERROR"]
    assert [(d["operation"], d["action"]) for d in errors] == [("write", "report")]
    assert r.summary["drives"]["vda"]["guest_errors"] == 1
    assert r.ok


def test_a_write_failed_for_space_still_takes_its_dm_delay():
    # dm-delay sits below the thin volume: a write refused with ENOSPC is
    # still delayed by the delay rule before the guest sees the error.
    r = blocksim.run({
        "duration": "1s",
        "images": {"disk": {"size": "1MiB", "capacity": "64KiB", "latency": "100us"}},
        "drives": {"vda": {"image": "disk", "werror": "report"}},
        "faults": [{"image": "disk", "type": "delay", "operation": "write", "delay": "5ms"}],
        "workloads": {"w": {"drive": "vda", "rw": "write", "bs": "64KiB", "number-ios": 2}},
    })
    drive = r.summary["drives"]["vda"]
    assert drive["guest_errors"] == 1                  # the second write: no space
    failed = next(e for e in r.events if e["event"] == "BLOCK_IO_ERROR")
    # (werror=report: no io-status, so no nospace; the reason says it)
    assert failed["data"]["reason"] == "No space left on device"
    assert "nospace" not in failed["data"]
    ts = failed["timestamp"]
    # first write: 100us + 64KiB/1GiB/s (~61us) + 5ms; second: 100us + 5ms
    assert ts["seconds"] * 10**6 + ts["microseconds"] >= 10_000


def test_a_dropped_write_is_lost_only_for_the_drive_that_wrote_it():
    r = blocksim.run({
        "duration": "1s",
        "images": {"a": {"size": "1MiB"}, "b": {"size": "1MiB"}},
        "drives": {"vda": {"image": "a"}, "vdb": {"image": "b"}},
        "faults": [{"image": "a", "type": "flakey", "up": "1us", "down": "10s",
                    "drop-writes": True}],
        "workloads": {"wa": {"drive": "vda", "rw": "write", "number-ios": 5, "start": "1ms"},
                      "wb": {"drive": "vdb", "rw": "write", "number-ios": 5, "start": "1ms"}},
    })
    assert r.summary["drives"]["vda"]["writes_lost"] == 5
    assert r.summary["drives"]["vdb"]["writes_lost"] == 0
    assert r.ok


def test_a_copy_on_write_failing_in_blkdebug_fails_the_write_on_the_next_turn():
    """qcow2's perform_cow reads the head of a new cluster, then its tail,
    from the backing file: a head failing in the backing file's blkdebug
    fails the write on the next turn; a tail failing after a head read from
    the storage fails it after the storage's latency."""
    from blocksim.model.faults import MAIN_LOOP_TURN_NS as TURN
    images = {"base": {"size": "1MiB", "latency": "100us", "bandwidth": GB, "data": "full"},
              "top": {"size": "1MiB", "latency": "100us", "bandwidth": GB,
                      "backing": "base", "cluster-size": "64KiB"}}
    sim = node_sim(images, faults=[{"image": "base", "operation": "read",
                                    "offset": "0", "length": "4KiB"}])
    top = sim.devices["top"]
    # cluster 0: a write at 8 KiB needs its head [0, 8 KiB), which fails
    assert timed(sim, top.write(8192, 4096, 7)) == (errno.EIO, TURN)
    sim = node_sim(images, faults=[{"image": "base", "operation": "read",
                                    "offset": "60KiB", "length": "4KiB"}])
    top = sim.devices["top"]
    # its head reads from the storage, its tail [12 KiB, 64 KiB) fails
    assert timed(sim, top.write(8192, 4096, 7)) == (errno.EIO, 100_000)
