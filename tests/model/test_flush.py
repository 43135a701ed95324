"""Flush failures are reported as writes (SEMANTICS.md), for guests and jobs."""

import blocksim


def guest_with_flushes(werror: str) -> dict:
    return {
        "duration": "1s",
        "images": {"disk": {"size": "16MiB"}},
        "drives": {"vda": {"image": "disk", "werror": werror}},
        "faults": [{"image": "disk", "operation": "flush", "count": 1}],
        "workloads": {"fio": {"drive": "vda", "rw": "write", "bs": "64KiB",
                              "number-ios": 8, "fsync": 4}},
    }


def test_a_failed_guest_flush_goes_through_werror_as_a_write():
    r = blocksim.run(guest_with_flushes("report"))
    errors = [e["data"] for e in r.events if e["event"] == "BLOCK_IO_ERROR"]
    assert [(d["operation"], d["action"], d["reason"]) for d in errors] == [
        ("write", "report", "Input/output error")]
    assert r.summary["drives"]["vda"]["guest_errors"] == 1
    # a flush carries no data: nothing is lost, nothing is corrupt
    assert r.summary["drives"]["vda"]["writes_lost"] == 0
    assert r.ok


def test_a_failed_guest_flush_under_stop_stops_the_vm_and_is_retried():
    scenario = guest_with_flushes("stop")
    scenario["actions"] = [{"on": "STOP", "delay": "10ms", "command": "cont"}]
    r = blocksim.run(scenario)
    assert r.event_names("BLOCK_IO_ERROR", "STOP", "RESUME") == [
        "BLOCK_IO_ERROR", "STOP", "RESUME"]
    assert r.events[0]["data"]["operation"] == "write"
    assert r.summary["drives"]["vda"]["guest_errors"] == 0
    assert r.summary["vm"]["final_state"] == "running"


def mirror_with_flush_fault(policy: str) -> dict:
    return {
        "duration": "2s",
        "images": {"src": {"size": "8MiB", "data": "full"}, "dst": {"size": "8MiB"}},
        "drives": {"vda": {"image": "src"}},
        "faults": [{"image": "dst", "operation": "flush", "count": 1}],
        "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "dst",
                          "on-target-error": policy}},
        "actions": [{"on": "BLOCK_JOB_READY", "command": "block-job-complete",
                     "arguments": {"device": "job0"}}],
    }


def test_mirror_flushes_the_target_before_ready_and_reports_a_failure_as_write():
    r = blocksim.run(mirror_with_flush_fault("report"))
    errors = [e["data"] for e in r.events if e["event"] == "BLOCK_JOB_ERROR"]
    assert errors == [{"device": "job0", "operation": "write", "action": "report"}]
    assert "BLOCK_JOB_READY" not in r.event_names()
    job = r.summary["jobs"]["job0"]
    assert (job["outcome"], job["error"]) == ("completed-with-error", "Input/output error")


def test_mirror_retries_a_flush_failed_under_ignore_and_completes():
    r = blocksim.run(mirror_with_flush_fault("ignore"))
    names = r.event_names("BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED")
    assert names == ["BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"]
    job = r.summary["jobs"]["job0"]
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)



# -- a flush reaches the disk only after a write (bdrv_co_flush: write_gen, flushed_gen) -------
def test_a_flush_with_nothing_written_since_the_last_one_meets_no_fault():
    sim = blocksim.Simulation(blocksim.load_scenario({
        "images": {"disk": {"size": "1MiB"}},
        "faults": [{"image": "disk", "operation": "flush"}]}))      # every flush that reaches it
    dev = sim.devices["disk"]

    def flushes():
        out = [(yield from dev.flush())]                 # nothing written yet
        err, delay, how = dev.submit_write(0, 4096)
        yield sim.env.timeout(delay)
        dev.complete_write(0, 4096, 7, how)
        out.append((yield from dev.flush()))              # a write since: the fault
        out.append((yield from dev.flush()))              # the failed one did not count
        return out
    proc = sim.env.process(flushes())
    sim.env.run(until=proc)
    assert proc.value == [0, 5, 5]                        # EIO, EIO
    assert (dev.flushes, dev.failed) == (1, 2)


def test_a_mirror_that_wrote_nothing_meets_no_target_flush_fault():
    # sync none and no guest: nothing is copied before READY, so the flush
    # mirror_run makes before it never reaches the target's disk
    scenario = mirror_with_flush_fault("report")
    scenario["jobs"]["job0"]["sync"] = "none"
    r = blocksim.run(scenario)
    assert r.event_names("BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED") == \
        ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"]
    assert r.summary["jobs"]["job0"]["outcome"] == "completed"
