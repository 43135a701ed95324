"""The VM's run state: stop drains in-flight requests, user stop/cont, time paused.

SEMANTICS.md: a `stop` action emits BLOCK_IO_ERROR then STOP (run state
io-error); stopping drains the requests in flight, and those can fail too, so
more BLOCK_IO_ERROR events can follow the first one.  No second STOP.
"""

import pytest

import blocksim

KiB = 1024
BS = 4 * KiB
US = 1000


def simulate(sc, probes=(), **kw):
    """Run ``sc``; ``probes`` are (time_ns, fn(sim) -> value) sampled mid-run."""
    sim = blocksim.Simulation(blocksim.load_scenario(sc), **kw)
    seen = []

    def probe(t, fn):
        yield sim.env.timeout(t)
        seen.append((t, fn(sim)))

    for t, fn in probes:
        sim.env.process(probe(t, fn))
    r = sim.run()
    return sim, r, seen


def device_requests(sim):
    dev = sim.devices["disk"]
    return dev.reads + dev.writes + dev.failed


def image(**kw):
    return {"size": "1MiB", "cluster-size": "64KiB", "latency": "100us", **kw}


def open_loop_scenario(cont_after="1ms"):
    # A request every 20 us, each taking ~100 us: about five in flight.  The
    # five writes issued from 1 ms to 1080 us fail, each after its latency: a
    # dm-flakey device down from 990 us to 1090 us (a blkdebug error would
    # fail each on the main loop's next turn, before the next is issued).
    sc = {
        "duration": "4ms", "sample-interval": "200us",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "type": "flakey", "operation": "write", "start": "990us",
                    "end": "1090us", "up": "1ns", "down": "1s"}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "iodepth": 8, "rate-iops": 50000}},
    }
    if cont_after is not None:
        sc["actions"] = [{"on": "STOP", "delay": cont_after, "command": "cont"}]
    return sc


def test_stop_drains_in_flight_requests_and_their_errors_follow_the_stop():
    sim, r, _ = simulate(open_loop_scenario())
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP"] + ["BLOCK_IO_ERROR"] * 4 + ["RESUME"]
    times = [e["timestamp"]["microseconds"] for e in r.events]
    # The request issued at 1000 us fails at 1100 us; those issued at 1020,
    # 1040, 1060 and 1080 us were in flight and fail during the drain.
    assert times == [1100, 1100, 1120, 1140, 1160, 1180, 2100]
    assert all(e["data"]["action"] == "stop" for e in r.events if e["event"] == "BLOCK_IO_ERROR")
    assert r.summary["vm"]["stops"] == 1
    d = r.summary["drives"]["d0"]
    assert d["errors_by_action"] == {"ignore": 0, "report": 0, "stop": 5}
    # io-status kept the first error; cont reset it once.
    hist = sim.drives["d0"].iostatus.history
    assert [(old, new, why) for _t, old, new, why in hist] == [("ok", "failed", "set"),
                                                              ("failed", "ok", "reset")]
    # Every parked write was resubmitted after cont and landed.
    assert d["guest_errors"] == 0 and d["writes_lost"] == 0 and d["corrupt_bytes"] == 0
    assert sim.workloads["w"].errors == 0
    assert r.violations == []


def test_no_new_guest_requests_while_stopped():
    probes = [(t * US, lambda s: (device_requests(s), s.drives["d0"].completed,
                                  s.drives["d0"].in_flight, s.vm.state))
              for t in (1200, 1500, 2000, 2500, 3500)]
    sim, r, seen = simulate(open_loop_scenario(cont_after=None), probes)
    # Once the drain is over (the last in-flight request failed at 1180 us)
    # nothing reaches the device, and nothing is in flight, until the end.
    assert {v for _t, v in seen} == {seen[0][1]}
    assert seen[0][1][2:] == (0, "io-error")
    assert device_requests(sim) == seen[0][1][0]
    # The sampled series agrees: no completion in an interval spent stopped.
    states, iops = r.series["vm.state"], r.series["drive.d0.iops"]
    stopped = [i for i in range(1, len(states)) if states[i - 1] == states[i] == "io-error"]
    assert len(stopped) >= 10
    assert all(iops[i] == 0.0 for i in stopped)
    assert all(iops[i] > 0 for i in range(2, len(states)) if states[i] == "running")
    assert r.summary["vm"]["final_state"] == "io-error"
    assert r.summary["vm"]["time_paused"] == pytest.approx(0.004 - 0.0011)


def test_successful_in_flight_requests_complete_during_the_drain():
    # Closed loop, iodepth 4, sequential: writes at 0, 4, 8 and 12 KiB are in
    # flight together; the two in [4 KiB, 12 KiB) fail on the main loop's
    # next turn (blkdebug: 10 us), both before the STOP (the main loop serves
    # the stop request once that moment's completions are done:
    # scenarios/qemu-vm/werror-stop-two-requests-fail-at-once), the others
    # complete after it.
    sc = {
        "duration": "2ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "operation": "write", "offset": BS, "length": 2 * BS}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "iodepth": 4}},
    }
    probes = [(100 * US, lambda s: s.drives["d0"].completed),
              (500 * US, lambda s: s.drives["d0"].completed)]
    sim, r, seen = simulate(sc, probes)
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP"]
    assert [e["timestamp"]["microseconds"] for e in r.events] == [10, 10, 10]
    assert [e["data"]["action"] for e in r.events if "action" in e["data"]] == ["stop", "stop"]
    assert seen == [(100 * US, 0), (500 * US, 2)]
    assert r.summary["drives"]["d0"]["writes"] == 2
    node = sim.devices["disk"]
    assert [v != 0 for _a, _b, v in node.read_content(0, 4 * BS)] == [True, False, True]
    assert r.violations == []


def test_request_failing_at_the_same_moment_under_report_comes_before_the_stop():
    # A writer (werror=stop) and a reader (rerror=report) fail at the same
    # time: the writer's error requests the stop, the reader's error is
    # reported, then the main loop stops the VM (STOP after both; in 2012's
    # QEMU, vm_stop at once: STOP between them).
    sc = {
        "duration": "1ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop", "rerror": "report"}},
        "faults": [{"image": "disk", "operation": ["read", "write"], "count": 2}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 1},
                      "r": {"drive": "d0", "rw": "read", "number-ios": 1}},
    }
    sim, r, _ = simulate(sc)
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP"]
    assert [(e["data"]["operation"], e["data"]["action"]) for e in r.events
            if e["event"] == "BLOCK_IO_ERROR"] == [("write", "stop"), ("read", "report")]
    assert sim.workloads["r"].errors == 1
    assert r.summary["drives"]["d0"]["io_status"] == "failed"
    _sim, r2012, _ = simulate(sc, profile="rfc-2012")
    assert r2012.event_names() == ["BLOCK_IO_ERROR", "STOP", "BLOCK_IO_ERROR"]


def test_user_stop_and_cont():
    sc = {
        "duration": "5ms", "sample-interval": "250us",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk"}},
        "workloads": {"w": {"drive": "d0", "rw": "randwrite", "iodepth": 2}},
        "actions": [{"at": "1ms", "command": "stop"}, {"at": "3ms", "command": "cont"}],
    }
    probes = [(t * US, lambda s: (s.drives["d0"].completed, s.vm.state))
              for t in (1500, 2000, 2900)]
    sim, r, seen = simulate(sc, probes)
    assert r.event_names() == ["STOP", "RESUME"]
    assert [e["timestamp"] for e in r.events] == [{"seconds": 0, "microseconds": 1000},
                                                  {"seconds": 0, "microseconds": 3000}]
    assert seen[0][1][1] == "paused"
    assert seen[0][1] == seen[1][1] == seen[2][1]
    states = r.series["vm.state"]
    assert states[:5] == ["running"] * 4 + ["paused"]      # 0 .. 1 ms
    assert "io-error" not in states
    assert states.count("paused") == 8                      # 1 ms .. 2.75 ms
    assert r.summary["vm"] == {"final_state": "running", "time_paused": 0.002, "stops": 1}
    assert [c["execute"] for c in r.commands] == ["stop", "cont"]
    assert all(c["return"] == {} for c in r.commands)
    assert r.summary["drives"]["d0"]["io_status"] == "ok"
    assert r.violations == []


def test_cont_while_running_is_a_noop_and_stop_while_stopped_too():
    sc = {
        "duration": "5ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk"}},
        "actions": [{"at": "1ms", "command": "cont"},
                    {"at": "2ms", "command": "stop"},
                    {"at": "3ms", "command": "stop"},
                    {"at": "4ms", "command": "cont"},
                    {"at": "4500us", "command": "cont"}],
    }
    sim, r, _ = simulate(sc)
    assert r.event_names() == ["STOP", "RESUME"]
    assert [e["timestamp"]["microseconds"] for e in r.events] == [2000, 4000]
    # Every command was accepted and recorded, even those that changed nothing.
    assert [c["execute"] for c in r.commands] == ["cont", "stop", "stop", "cont", "cont"]
    assert all("error" not in c for c in r.commands)
    assert r.summary["vm"] == {"final_state": "running", "time_paused": 0.002, "stops": 1}


def test_user_stop_then_io_error_keeps_paused_state_and_one_stop():
    # A user stop while a failing request is in flight: the drained failure is
    # announced, but the VM is already stopped (no second STOP, still paused).
    sc = {
        "duration": "1ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "operation": "write", "count": 1}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 1}},
        "actions": [{"at": "5us", "command": "stop"}],
    }
    sim, r, _ = simulate(sc)
    # (the write fails on the main loop's next turn, at 10 us)
    assert r.event_names() == ["STOP", "BLOCK_IO_ERROR"]
    assert r.summary["vm"]["final_state"] == "paused"
    assert r.summary["vm"]["stops"] == 1
    assert r.summary["drives"]["d0"]["io_status"] == "failed"


# -- management actions ---------------------------------------------------------------------

def errors_scenario(actions, duration="3ms"):
    # A writer and a reader, each failing every request from 1 ms on (report):
    # one write error and one read error every 10 us (blkdebug fails each on
    # the main loop's next turn).
    return {
        "duration": duration,
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "report", "rerror": "report"}},
        "faults": [{"image": "disk", "operation": ["read", "write"], "start": "1ms"}],
        "workloads": {"w": {"drive": "d0", "rw": "write"},
                      "r": {"drive": "d0", "rw": "read"}},
        "actions": actions,
    }


def test_at_runs_a_command_at_a_time_plus_delay():
    sim, r, _ = simulate(errors_scenario([{"at": "500us", "delay": "250us", "command": "stop"},
                                          {"at": "2ms", "command": "cont"}]))
    assert [(c["execute"], c["timestamp"]["microseconds"]) for c in r.commands] == [
        ("stop", 750), ("cont", 2000)]
    assert r.event_names("STOP", "RESUME") == ["STOP", "RESUME"]
    assert [c["source"] for c in r.commands] == ["actions.0", "actions.1"]


def test_on_reacts_once_to_the_first_matching_event():
    sim, r, _ = simulate(errors_scenario(
        [{"on": "BLOCK_IO_ERROR", "match": {"operation": "read"}, "command": "query-block-jobs"}]))
    reads = [e for e in r.events if e["event"] == "BLOCK_IO_ERROR"
             and e["data"]["operation"] == "read"]
    assert len(reads) > 10
    assert len(r.commands) == 1
    assert r.commands[0]["timestamp"] == reads[0]["timestamp"]
    assert r.commands[0]["return"] == []


def test_on_with_repeat_reacts_to_every_matching_event():
    sim, r, _ = simulate(errors_scenario(
        [{"on": "BLOCK_IO_ERROR", "match": {"operation": "write", "action": "report"},
          "repeat": True, "delay": "5us", "command": "query-block-jobs"}]))
    writes = [e["timestamp"]["microseconds"] for e in r.events
              if e["event"] == "BLOCK_IO_ERROR" and e["data"]["operation"] == "write"]
    # (a reaction due after the run's 3 ms does not run)
    due = [t + 5 for t in writes if t + 5 < 3000]
    assert len(writes) > 10 and len(due) >= len(writes) - 1
    assert [c["timestamp"]["microseconds"] for c in r.commands] == due


def test_match_that_never_matches_never_fires():
    sim, r, _ = simulate(errors_scenario(
        [{"on": "BLOCK_IO_ERROR", "match": {"action": "stop"}, "repeat": True,
          "command": "stop"}]))
    assert r.commands == []
    assert "STOP" not in r.event_names()


def test_reaction_with_zero_delay_runs_after_the_triggering_event():
    sim, r, _ = simulate({
        "duration": "2ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "operation": "write", "count": 1}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 2}},
        "actions": [{"on": "STOP", "command": "cont"}]})
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert len({str(e["timestamp"]) for e in r.events}) == 1
    assert r.summary["vm"]["time_paused"] == 0.0
    assert r.summary["drives"]["d0"]["writes"] == 2


def test_repeat_false_reacts_only_once_to_repeated_stops():
    sc = {
        "duration": "5ms",
        "images": {"disk": image()},
        "drives": {"d0": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "operation": "write", "count": 2}],
        "workloads": {"w": {"drive": "d0", "rw": "write", "number-ios": 1}},
        "actions": [{"on": "STOP", "delay": "1ms", "command": "cont"}]}
    sim, r, _ = simulate(sc)
    # The first cont resubmits the write, which fails again: nobody continues.
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME", "BLOCK_IO_ERROR", "STOP"]
    assert r.summary["vm"]["final_state"] == "io-error"
    assert len(r.commands) == 1


def test_unknown_command_is_refused_and_recorded():
    sim = blocksim.Simulation(blocksim.load_scenario(errors_scenario([])))
    assert sim.monitor.execute("frobnicate", {"x": 1}) is None
    assert sim.monitor.execute("block-job-complete", {"device": "nope"}) is None
    r = sim.run()
    assert r.commands[0] == {
        "timestamp": {"seconds": 0, "microseconds": 0}, "execute": "frobnicate",
        "arguments": {"x": 1},
        "error": {"class": "CommandNotFound",
                  "desc": "The command frobnicate has not been found"}}
    assert r.commands[1]["error"]["class"] == "DeviceNotActive"
    assert r.summary["commands"] == {"executed": 2, "refused": 2}


def test_unknown_command_in_a_scenario_is_a_scenario_error():
    with pytest.raises(blocksim.ScenarioError, match="actions.0"):
        blocksim.load_scenario(errors_scenario([{"at": "1ms", "command": "frobnicate"}]))


def test_refused_command_from_an_action_is_part_of_the_record():
    sim, r, _ = simulate(errors_scenario(
        [{"at": "1ms", "command": "thin-extend",
          "arguments": {"image": "disk", "capacity": "64KiB"}},
         {"at": "2ms", "command": "thin-extend",
          "arguments": {"image": "disk", "capacity": "32KiB"}}]))
    assert r.commands[0]["return"] == {"capacity": 64 * KiB}
    assert r.commands[1]["error"]["desc"].startswith("Cannot shrink thin device 'disk'")
    assert r.summary["commands"] == {"executed": 2, "refused": 1}


# -- max-events --------------------------------------------------------------------------------

def test_max_events_truncates_the_run():
    sc = errors_scenario([], duration="1s")
    sim, r, _ = simulate({**sc, "max-events": 25})
    assert len(r.events) == 25
    assert r.summary["events"] == 25
    assert r.summary["truncated"] is True
    assert r.summary["simulated_seconds"] < 0.01
    # What happened before the cap is intact.
    full = blocksim.run({**sc, "duration": "5ms"})
    assert r.events == full.events[:25]


def test_max_events_not_reached_is_not_truncated():
    sc = errors_scenario([], duration="2ms")
    n = len(blocksim.run(sc).events)
    r = blocksim.run({**sc, "max-events": n})
    assert len(r.events) == n
    assert r.summary["truncated"] is False
    assert r.summary["simulated_seconds"] == 0.002
