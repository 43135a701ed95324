"""What a real QEMU 7.2 VM showed of the guest's error policies
(``blocksim qemu-check --vm``, scenarios/qemu-vm/; docs/qemu-check.md, "The
guest side on a VM"), as rules of the model:

- a guest's ``stop`` error *requests* the VM stop, which QEMU's main loop
  carries out once the completions of that moment are done
  (block-backend.c:blk_error_action -> qemu_system_vmstop_request;
  runstate.c:main_loop_should_exit -> vm_stop): two requests failing
  together give BLOCK_IO_ERROR, BLOCK_IO_ERROR, STOP; a ``cont`` before the
  stop is carried out sends STOP then RESUME (cpus.c:vm_prepare_start);
- a drive publishes an io-status only when an error can stop the VM
  (blk_iostatus_is_enabled: werror stop/enospc, rerror stop): otherwise
  query-block has no ``io-status`` and BLOCK_IO_ERROR no ``nospace``;
- ``cont`` resets every block job's io-status too, leaving the job paused
  (monitor/qmp-cmds.c:qmp_cont -> block_job_iostatus_reset_locked).
"""

import blocksim

KiB = 1024


def run(sc, **kw):
    sim = blocksim.Simulation(blocksim.load_scenario(sc), **kw)
    return sim, sim.run()


def guest(werror="stop", rerror="report", faults=(), actions=(), **burst):
    return {
        "duration": "20ms",
        "images": {"disk": {"size": "4MiB", "format": "raw", "latency": "100us"}},
        "drives": {"vda": {"image": "disk", "werror": werror, "rerror": rerror}},
        "faults": [{"image": "disk", "operation": "write", "errno": "EIO", **f} for f in faults],
        "actions": [{"at": "1ms", "command": "guest-burst",
                     "arguments": {"drive": "vda", "rw": "write", "bs": "4KiB",
                                   "offset": "1MiB", **burst}}, *actions],
    }


TWO_AT_ONCE = guest(faults=[{"offset": "1MiB", "length": 512, "count": 1},
                            {"offset": "1028KiB", "length": 512, "count": 1}],
                    actions=[{"on": "STOP", "command": "query-block"},
                             {"on": "STOP", "delay": "2ms", "command": "cont"}],
                    **{"number-ios": 2, "iodepth": 2})


def test_two_requests_failing_together_then_one_stop():
    sim, r = run(TWO_AT_ONCE)
    assert r.event_names() == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert len({e["timestamp"]["microseconds"] for e in r.events[:3]}) == 1
    assert r.summary["vm"]["stops"] == 1
    # the stop took effect at once for the guest: both were parked, and retried
    assert sim.drives["vda"].guest_errors == 0 and r.summary["drives"]["vda"]["writes"] == 2
    query = next(c for c in r.commands if c["execute"] == "query-block")
    assert query["return"][0]["io-status"] == "failed"


def test_in_2012_the_stop_came_at_once():
    _sim, r = run(TWO_AT_ONCE, profile="rfc-2012")
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "BLOCK_IO_ERROR", "RESUME"]


def test_cont_before_the_stop_is_carried_out_sends_stop_then_resume():
    # The cont reacting to the error runs before the main loop's turn
    # (vm_prepare_start: a stop request pending, STOP then RESUME)
    sc = guest(faults=[{"offset": "1MiB", "length": 512, "count": 1}],
               actions=[{"on": "BLOCK_IO_ERROR", "command": "cont"}], **{"number-ios": 1})
    sim, r = run(sc)
    assert r.event_names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert len({e["timestamp"]["microseconds"] for e in r.events}) == 1
    assert sim.vm.state == "running" and r.summary["vm"]["stops"] == 1
    assert sim.drives["vda"].guest_errors == 0 and r.summary["drives"]["vda"]["writes"] == 1


def test_io_status_only_where_an_error_can_stop_the_vm():
    for werror, rerror, shown in (("report", "report", False), ("ignore", "report", False),
                                  ("report", "ignore", False), ("stop", "report", True),
                                  ("enospc", "report", True), ("auto", "auto", True),
                                  ("report", "stop", True), ("ignore", "stop", True)):
        sc = guest(werror, rerror, faults=[{"offset": "1MiB", "length": 512, "errno": "ENOSPC",
                                            "count": 1}],
                   actions=[{"on": "BLOCK_IO_ERROR", "command": "query-block"},
                            {"on": "STOP", "delay": "1ms", "command": "cont"}],
                   **{"number-ios": 1})
        _sim, r = run(sc)
        error = r.events[0]["data"]
        assert ("nospace" in error) is shown, (werror, rerror)
        assert error["reason"] == "No space left on device"
        query = next(c for c in r.commands if c["execute"] == "query-block")["return"][0]
        assert ("io-status" in query) is shown, (werror, rerror)


def test_the_served_query_block_shows_io_status_likewise():
    from blocksim.serve.commands import _query_block
    for werror, shown in (("report", False), ("stop", True)):
        sim = blocksim.Simulation(blocksim.load_scenario(guest(werror, **{"number-ios": 1})))
        sim.run()
        assert ("io-status" in _query_block(sim, {})[0]) is shown


def test_cont_resets_a_paused_jobs_io_status_and_leaves_it_paused():
    # Checked on QEMU 7.2 (qemu-system-x86_64 -S, a blockdev-mirror whose
    # target fails every write, on-target-error stop): after the error
    # query-block-jobs says paused / failed, after cont paused / ok.
    sc = {
        "duration": "200ms",
        "images": {"src": {"size": "4MiB", "data": "full"}, "dst": {"size": "4MiB"}},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"m": {"type": "mirror", "device": "vda", "target": "dst", "sync": "full",
                       "on-target-error": "stop"}},
        "faults": [{"image": "dst", "operation": "write", "errno": "EIO", "offset": "1MiB",
                    "length": 512}],
        "actions": [{"on": "BLOCK_JOB_ERROR", "delay": "20ms", "command": "query-block-jobs"},
                    {"on": "BLOCK_JOB_ERROR", "delay": "30ms", "command": "cont"},
                    {"on": "BLOCK_JOB_ERROR", "delay": "40ms", "command": "query-block-jobs"}],
    }
    _sim, r = run(sc)
    queries = [c["return"][0] for c in r.commands if c["execute"] == "query-block-jobs"]
    assert [(q["status"], q["io-status"]) for q in queries] == [("paused", "failed"),
                                                                ("paused", "ok")]
    # (the VM was running: cont changes no run state, sends no RESUME)
    assert "RESUME" not in r.event_names()
