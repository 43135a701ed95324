"""Guest I/O through a drive's rerror/werror policies (report, ignore, stop, enospc).

SEMANTICS.md, "What each action does", guest I/O:
- report: the guest request completes with an error;
- ignore: the request completes as if it had succeeded and the data was not
  written (a silently lost write, recorded);
- stop: BLOCK_IO_ERROR, then STOP (run state io-error); the request is parked
  and resubmitted on cont (RESUME);
- enospc: stop on ENOSPC, report otherwise.  Defaults werror=enospc, rerror=report.
"""

import pytest

import blocksim
from blocksim.record.invariants import guest_write_audit

KiB = 1024
BS = 4 * KiB


def scenario(*, rerror=None, werror=None, faults=(), rw="write", number_ios=4, bs=BS,
             capacity=None, actions=(), duration=0.01, **workload):
    image = {"size": "1MiB", "cluster-size": "64KiB", "latency": "100us"}
    if capacity is not None:
        image["capacity"] = capacity
    drive = {"image": "disk"}
    if rerror is not None:
        drive["rerror"] = rerror
    if werror is not None:
        drive["werror"] = werror
    return {
        "duration": duration, "sample-interval": "500us",
        "images": {"disk": image},
        "drives": {"d0": drive},
        "faults": [{"image": "disk", **f} for f in faults],
        "workloads": {"w": {"drive": "d0", "rw": rw, "bs": bs, "number-ios": number_ios,
                            **workload}},
        "actions": list(actions),
    }


def simulate(sc, **kw):
    sim = blocksim.Simulation(blocksim.load_scenario(sc), **kw)
    return sim, sim.run()


def io_error(operation, action, errno_name="EIO", iostatus=True):
    """BLOCK_IO_ERROR's data; ``nospace`` only on a drive with an io-status
    (werror stop/enospc or rerror stop: send_qmp_error_event)."""
    nospace = errno_name == "ENOSPC"
    data = {"device": "d0", "node-name": "disk", "operation": operation, "action": action,
            "nospace": nospace,
            "reason": "No space left on device" if nospace else "Input/output error"}
    if not iostatus:
        del data["nospace"]
    return data


# -- defaults ---------------------------------------------------------------------------

def test_drive_defaults_are_werror_enospc_rerror_report():
    s = blocksim.load_scenario(scenario())
    assert (s.drives["d0"].rerror, s.drives["d0"].werror) == ("report", "enospc")


def test_default_werror_reports_eio():
    sim, r = simulate(scenario(faults=[{"operation": "write", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("write", "report")
    assert sim.workloads["w"].errors == 1


def test_default_werror_stops_on_enospc():
    sim, r = simulate(scenario(capacity="64KiB", bs="64KiB", number_ios=2))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP"]
    assert r.events[0]["data"] == io_error("write", "stop", "ENOSPC")
    assert r.summary["vm"]["final_state"] == "io-error"
    assert r.summary["drives"]["d0"]["io_status"] == "nospace"


def test_default_rerror_reports_even_enospc():
    sim, r = simulate(scenario(rw="read", faults=[{"operation": "read", "errno": "ENOSPC",
                                                   "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("read", "report", "ENOSPC")
    assert r.summary["vm"]["final_state"] == "running"


# -- report -------------------------------------------------------------------------------

def test_report_write_fails_the_guest_request_and_the_vm_keeps_running():
    # The second write (offset 4 KiB) fails once.
    sim, r = simulate(scenario(werror="report",
                               faults=[{"operation": "write", "offset": BS, "length": BS,
                                        "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("write", "report", iostatus=False)
    # the first write's 100 us plus its 4 KiB transfer, then the main loop's
    # next turn (blkdebug fails the write 10 us after it is issued)
    assert r.events[0]["timestamp"] == {"seconds": 0, "microseconds": 103 + 10}
    w = sim.workloads["w"]
    assert (w.completed, w.errors) == (4, 1)
    d = r.summary["drives"]["d0"]
    assert d["guest_errors"] == 1
    assert d["errors_by_action"] == {"ignore": 0, "report": 1, "stop": 0}
    assert d["writes"] == 4 and d["writes_lost"] == 0 and d["io_status"] == "ok"
    assert r.summary["vm"] == {"final_state": "running", "time_paused": 0.0, "stops": 0}
    # The failed write was not carried out: the block still reads as never written.
    node = sim.devices["disk"]
    assert node.read_content(BS, 2 * BS) == [(BS, 2 * BS, 0)]
    assert [v for _a, _b, v in node.read_content(0, BS)] != [0]
    assert r.violations == []


def test_report_read_fails_the_guest_request():
    sim, r = simulate(scenario(rerror="report", rw="read",
                               faults=[{"operation": "read", "count": 2}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR"]
    assert all(e["data"] == io_error("read", "report") for e in r.events)
    assert sim.workloads["w"].errors == 2
    assert r.summary["drives"]["d0"]["guest_errors"] == 2
    assert r.summary["drives"]["d0"]["reads"] == 4
    assert r.summary["vm"]["final_state"] == "running"


# -- ignore -------------------------------------------------------------------------------

def test_ignore_write_looks_successful_and_is_recorded_as_lost():
    sim, r = simulate(scenario(werror="ignore",
                               faults=[{"operation": "write", "offset": 2 * BS, "length": BS}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("write", "ignore", iostatus=False)
    assert sim.workloads["w"].errors == 0            # the guest saw success
    d = r.summary["drives"]["d0"]
    assert d["guest_errors"] == 0
    assert d["errors_by_action"] == {"ignore": 1, "report": 0, "stop": 0}
    assert d["writes"] == 4
    assert d["writes_lost"] == 1
    assert d["lost_bytes"] == BS
    assert d["corrupt_bytes"] == 0
    # Nothing was written there...
    assert sim.devices["disk"].read_content(2 * BS, 3 * BS) == [(2 * BS, 3 * BS, 0)]
    # ... and because the loss is on record it is not a violation.
    assert r.violations == []
    assert list(sim.drives["d0"].lost.values()) == ["ignored by werror=ignore"]


def test_ignored_write_later_overwritten_is_no_longer_visible():
    # Sequential writes wrap around a 2-block region: the first write of block 0
    # is ignored, the third one rewrites block 0 successfully.
    sim, r = simulate(scenario(werror="ignore", number_ios=3, size=2 * BS,
                               faults=[{"operation": "write", "count": 1}]))
    d = r.summary["drives"]["d0"]
    assert (d["writes_lost"], d["lost_bytes"], d["corrupt_bytes"]) == (1, 0, 0)
    assert r.violations == []


def test_ignore_read_looks_successful():
    sim, r = simulate(scenario(rerror="ignore", rw="read",
                               faults=[{"operation": "read", "count": 3}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"] * 3
    assert all(e["data"]["action"] == "ignore" for e in r.events)
    assert sim.workloads["w"].errors == 0
    d = r.summary["drives"]["d0"]
    assert (d["reads"], d["guest_errors"], d["writes_lost"]) == (4, 0, 0)


# -- stop ---------------------------------------------------------------------------------

def test_stop_write_parks_the_request_and_cont_resubmits_it():
    sim, r = simulate(scenario(
        werror="stop", number_ios=3,
        faults=[{"operation": "write", "offset": BS, "length": BS, "count": 1}],
        actions=[{"on": "STOP", "delay": "2ms", "command": "cont"}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.events[0]["data"] == io_error("write", "stop")
    t_err = r.events[0]["timestamp"]
    assert r.events[1]["timestamp"] == t_err
    assert r.events[2]["timestamp"]["microseconds"] == t_err["microseconds"] + 2000
    # io-status while stopped, back to ok after cont
    states = list(zip(r.series["vm.state"], r.series["drive.d0.io-status"]))
    assert ("io-error", "failed") in states
    assert all(io == "failed" for vm, io in states if vm == "io-error")
    assert states[-1] == ("running", "ok")
    # First write: 100 us latency + 4 KiB at 1 GiB/s = 3814 ns; blkdebug
    # fails the second on the main loop's next turn, 10 us later.
    t_ns = 100_000 + 3814 + 10_000
    assert sim.drives["d0"].iostatus.history == [
        (t_ns, "ok", "failed", "set"), (t_ns + 2_000_000, "failed", "ok", "reset")]
    # The guest never saw an error; the resubmitted write landed.
    assert sim.workloads["w"].errors == 0
    d = r.summary["drives"]["d0"]
    assert d["writes"] == 3 and d["guest_errors"] == 0 and d["writes_lost"] == 0
    assert d["errors_by_action"] == {"ignore": 0, "report": 0, "stop": 1}
    assert r.summary["vm"] == {"final_state": "running", "time_paused": 0.002, "stops": 1}
    node = sim.devices["disk"]
    assert all(v != 0 for _a, _b, v in node.read_content(0, 3 * BS))
    audit = guest_write_audit(sim.drives["d0"])
    assert audit["corrupt_bytes"] == 0 and audit["lost_bytes"] == 0
    assert r.violations == []


def test_stop_read_stops_the_vm_until_cont():
    sim, r = simulate(scenario(
        rerror="stop", rw="read", number_ios=2,
        faults=[{"operation": "read", "count": 1}],
        actions=[{"on": "STOP", "delay": "1ms", "command": "cont"}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.events[0]["data"] == io_error("read", "stop")
    assert sim.workloads["w"].errors == 0
    assert r.summary["drives"]["d0"]["reads"] == 2


def test_stop_without_cont_stays_stopped_and_is_not_a_lost_write():
    sim, r = simulate(scenario(werror="stop", faults=[{"operation": "write", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP"]
    assert r.summary["vm"]["final_state"] == "io-error"
    assert r.summary["vm"]["time_paused"] > 0.009
    d = r.summary["drives"]["d0"]
    assert d["io_status"] == "failed"
    assert d["writes"] == 0            # never acknowledged: parked
    assert sim.workloads["w"].completed == 0
    assert r.violations == []


def test_stop_again_while_the_fault_persists():
    # The write fails twice: each cont resubmits it and it stops the VM again.
    sim, r = simulate(scenario(
        werror="stop", number_ios=1,
        faults=[{"operation": "write", "count": 2}],
        actions=[{"on": "STOP", "delay": "1ms", "command": "cont", "repeat": True}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME",
                               "BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.summary["vm"]["stops"] == 2
    assert r.summary["drives"]["d0"]["errors_by_action"]["stop"] == 2
    assert r.summary["drives"]["d0"]["writes"] == 1
    assert sim.devices["disk"].read_content(0, BS)[0][2] != 0
    assert r.violations == []


# -- enospc -------------------------------------------------------------------------------

def test_enospc_policy_stops_on_a_full_thin_disk_and_extend_plus_cont_recovers():
    sim, r = simulate(scenario(
        werror="enospc", bs="64KiB", number_ios=4, capacity="128KiB",
        actions=[{"on": "STOP", "delay": "1ms", "command": "thin-extend",
                  "arguments": {"image": "disk", "by": "128KiB"}},
                 {"on": "STOP", "delay": "2ms", "command": "cont"}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.events[0]["data"] == io_error("write", "stop", "ENOSPC")
    states = list(zip(r.series["vm.state"], r.series["drive.d0.io-status"]))
    assert ("io-error", "nospace") in states
    assert r.summary["images"]["disk"]["allocated"] == 256 * KiB
    assert r.summary["images"]["disk"]["capacity"] == 256 * KiB
    d = r.summary["drives"]["d0"]
    assert d["writes"] == 4 and d["guest_errors"] == 0 and d["io_status"] == "ok"
    assert r.violations == []


def test_enospc_policy_reports_eio():
    sim, r = simulate(scenario(werror="enospc", faults=[{"operation": "write", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("write", "report")
    assert sim.workloads["w"].errors == 1
    assert r.summary["vm"]["final_state"] == "running"


def test_rfc_2012_block_io_error_has_only_device_operation_action():
    sim, r = simulate(scenario(werror="report", faults=[{"operation": "write", "count": 1}]),
                      profile="rfc-2012")
    assert r.events[0]["data"] == {"device": "d0", "operation": "write", "action": "report"}


# -- auto: the drive's default -------------------------------------------------------------

def test_werror_auto_behaves_as_the_default_enospc():
    sim, r = simulate(scenario(werror="auto", capacity="64KiB", bs="64KiB", number_ios=2))
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP"]
    assert r.events[0]["data"] == io_error("write", "stop", "ENOSPC")
    sim, r = simulate(scenario(werror="auto", faults=[{"operation": "write", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR"]
    assert r.events[0]["data"] == io_error("write", "report")


def test_rerror_auto_behaves_as_the_default_report():
    sim, r = simulate(scenario(rerror="auto", rw="read",
                               faults=[{"operation": "read", "errno": "ENOSPC", "count": 1},
                                       {"operation": "read", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR"]
    assert [e["data"] for e in r.events] == [io_error("read", "report", "ENOSPC"),
                                             io_error("read", "report")]
    assert sim.workloads["w"].errors == 2


def test_rerror_enospc_stops_on_enospc_reads_only():
    sim, r = simulate(scenario(rerror="enospc", rw="read",
                               faults=[{"operation": "read", "count": 1},
                                       {"operation": "read", "errno": "ENOSPC", "count": 1}]))
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP"]
    assert [e["data"] for e in r.events[:2]] == [io_error("read", "report"),
                                                 io_error("read", "stop", "ENOSPC")]


# -- workloads ------------------------------------------------------------------------------

def recorded(sc, seed=None):
    """Run ``sc`` recording every guest request as (time, op, offset, length).

    Without shortcuts: a quiet stretch does its requests without calling
    Drive.request (with the same outcome, see tests/engine/test_stretch.py)."""
    sim = blocksim.Simulation(blocksim.load_scenario(sc), seed=seed, shortcuts=False)
    log = []
    for drive in sim.drives.values():
        real = drive.request

        def request(op, offset, length, gen=0, _real=real):
            log.append((sim.env.now, op, offset, length))
            return (yield from _real(op, offset, length, gen))

        drive.request = request
    r = sim.run()
    return sim, r, log


def workload(duration="20ms", **w):
    return {"duration": duration,
            "images": {"disk": {"size": "1MiB", "latency": "100us"}},
            "drives": {"d0": {"image": "disk"}},
            "workloads": {"w": {"drive": "d0", **w}}}


@pytest.mark.parametrize("rw, ops", [("read", {"read"}), ("randread", {"read"}),
                                     ("write", {"write"}), ("randwrite", {"write"})])
def test_rw_modes(rw, ops):
    sim, r, log = recorded(workload(rw=rw, duration="2ms"))
    assert log and {op for _t, op, _o, _n in log} == ops
    d = r.summary["drives"]["d0"]
    assert (d["reads"] > 0) == ("read" in ops) and (d["writes"] > 0) == ("write" in ops)


@pytest.mark.parametrize("rw", ["rw", "randrw"])
@pytest.mark.parametrize("mix", [0, 30, 70, 100])
def test_rwmixread_proportion(rw, mix):
    sim, r, log = recorded(workload(rw=rw, rwmixread=mix, duration="200ms", iodepth=4))
    reads = sum(op == "read" for _t, op, _o, _n in log)
    assert len(log) > 5000
    assert reads / len(log) == pytest.approx(mix / 100, abs=0.02)


def test_sequential_offsets_are_sequential_and_wrap_in_the_region():
    sim, r, log = recorded(workload(rw="write", bs="8KiB", offset="64KiB", size="64KiB",
                                    **{"number-ios": 20}))
    assert [o for _t, _op, o, _n in log] == [64 * KiB + (i % 8) * 8 * KiB for i in range(20)]
    assert {n for *_x, n in log} == {8 * KiB}


def test_sequential_mixed_offsets_are_sequential_across_reads_and_writes():
    sim, r, log = recorded(workload(rw="rw", **{"number-ios": 50}))
    assert [o for _t, _op, o, _n in log] == [i * BS for i in range(50)]
    assert {op for _t, op, _o, _n in log} == {"read", "write"}


def test_random_offsets_stay_aligned_inside_the_region():
    sim, r, log = recorded(workload(rw="randrw", bs="4KiB", offset="256KiB", size="128KiB",
                                    duration="50ms"))
    offsets = [o for _t, _op, o, _n in log]
    assert all(256 * KiB <= o <= 384 * KiB - BS and o % BS == 0 for o in offsets)
    assert len(set(offsets)) == 32                     # every block of the region is hit
    assert offsets != sorted(offsets)
    # The disk was written only inside the region.
    runs = sim.devices["disk"].read_content(0, 1024 * KiB)
    assert all(v == 0 for a, b, v in runs if b <= 256 * KiB or a >= 384 * KiB)


def test_rate_iops_gives_the_requested_rate():
    sim, r, log = recorded(workload(rw="randwrite", iodepth=4, duration="100ms",
                                    **{"rate-iops": 5000}))
    # Request i is due at i / rate: 500 requests in 100 ms.
    assert len(log) == 500
    assert [t for t, *_x in log] == [i * 200_000 for i in range(500)]
    assert r.summary["drives"]["d0"]["requests"] == 500
    iops = [x for x in r.series["drive.d0.iops"][2:]]
    assert all(x == pytest.approx(5000, rel=0.05) for x in iops)


def test_rate_iops_below_capacity_is_not_exceeded_by_depth():
    # Closed loop would do ~9600 iops; the rate caps it.
    sim, r, log = recorded(workload(rw="read", iodepth=8, duration="50ms", **{"rate-iops": 1000}))
    assert len(log) == 50


def test_number_ios_caps_the_total():
    sim, r, log = recorded(workload(rw="randwrite", iodepth=4, **{"number-ios": 37}))
    assert len(log) == 37
    assert sim.workloads["w"].completed == 37
    assert r.summary["drives"]["d0"]["writes"] == 37


def test_start_and_end():
    sim, r, log = recorded(workload(rw="write", start="2ms", end="5ms", duration="10ms"))
    times = [t for t, *_x in log]
    assert times[0] == 2_000_000
    assert max(times) < 5_000_000
    # Closed loop, ~104 us per request: about 29 requests in 3 ms.
    assert 27 <= len(times) <= 30
    assert r.summary["drives"]["d0"]["requests"] == len(times)


def test_think_time_slows_a_closed_loop():
    busy = recorded(workload(rw="write", duration="10ms"))[1].summary["drives"]["d0"]["requests"]
    slow = recorded(workload(rw="write", duration="10ms",
                             **{"think-time": "100us"}))[1].summary["drives"]["d0"]["requests"]
    # Each request takes ~104 us; thinking 100 us after each halves the rate.
    assert busy == 10_000_000 // 103_814         # 96
    assert slow == pytest.approx(busy / 2, abs=2)


def test_iodepth_keeps_that_many_requests_in_flight():
    sim = blocksim.Simulation(blocksim.load_scenario(workload(rw="randread", iodepth=6,
                                                              duration="5ms")))
    seen = []

    def probe():
        for _ in range(40):
            yield sim.env.timeout(101_000)
            seen.append(sim.drives["d0"].in_flight)

    sim.env.process(probe())
    sim.run()
    assert max(seen) == 6
    assert set(seen) <= {5, 6}


# -- guest-burst ----------------------------------------------------------------------------

def test_guest_burst_action_issues_a_one_off_burst():
    sc = workload(rw="read", duration="5ms", **{"number-ios": 1})
    sc["actions"] = [{"at": "1ms", "command": "guest-burst",
                      "arguments": {"drive": "d0", "rw": "write", "bs": "8KiB",
                                    "number-ios": 5, "offset": "64KiB", "size": "64KiB"}}]
    sim, r, log = recorded(sc)
    burst = [x for x in log if x[1] == "write"]
    assert [(t, o, n) for t, _op, o, n in burst][:1] == [(1_000_000, 64 * KiB, 8 * KiB)]
    assert [o for _t, _op, o, _n in burst] == [64 * KiB + i * 8 * KiB for i in range(5)]
    assert r.summary["drives"]["d0"]["writes"] == 5
    assert r.commands[0]["execute"] == "guest-burst"
    assert r.commands[0]["return"] == {}
    assert r.violations == []


def test_guest_burst_defaults_and_iodepth():
    sc = workload(rw="read", duration="5ms", **{"number-ios": 1})
    sc["actions"] = [{"at": "1ms", "command": "guest-burst",
                      "arguments": {"drive": "d0", "iodepth": 4, "number-ios": 8}}]
    sim, r, log = recorded(sc)
    burst = [x for x in log if x[1] == "write"]       # default rw: randwrite, bs 4 KiB
    assert len(burst) == 8
    assert {n for *_x, n in burst} == {BS}
    assert [t for t, *_x in burst[:4]] == [1_000_000] * 4


def test_guest_burst_waits_while_the_vm_is_stopped():
    sc = workload(rw="read", duration="5ms", **{"number-ios": 1})
    sc["actions"] = [{"at": "1ms", "command": "stop"},
                     {"at": "2ms", "command": "guest-burst",
                      "arguments": {"drive": "d0", "number-ios": 3}},
                     {"at": "3ms", "command": "cont"}]
    sim = blocksim.Simulation(blocksim.load_scenario(sc))
    counts = []

    def probe():
        yield sim.env.timeout(2_900_000)
        counts.append(sim.drives["d0"].writes)

    sim.env.process(probe())
    r = sim.run()
    assert counts == [0]
    assert r.summary["drives"]["d0"]["writes"] == 3
