"""block-commit: intermediate and active, as QEMU 7.2 runs them.

The chain is the one of /tmp/work/research-commit.md's experiments: base
(4 MiB, full), mid (data at [0,1M), [2M,2.5M), [3M,3M+64K)), top (data at
[512K,1.5M)).  Figures (len 4194304, offset 2097152 at the error, active len
2162688) are those real QEMU printed.
"""

import pytest

import blocksim
from blocksim.errors import ScenarioError
from blocksim.jobs import ActiveCommitJob, CommitJob
from blocksim.simulation import Simulation
from equivalence import outcome

MiB = 1 << 20
EIO = "Input/output error"


def chain(job: dict, faults=(), actions=(), workloads=None, duration="5s", **images) -> dict:
    return {"name": "t", "duration": duration,
            "images": {"base": {"size": "4MiB", "data": "full"},
                       "mid": {"size": "4MiB", "backing": "base",
                               "data": [{"offset": "0", "length": "1MiB"},
                                        {"offset": "2MiB", "length": "512KiB"},
                                        {"offset": "3MiB", "length": "64KiB"}]},
                       "top": {"size": "4MiB", "backing": "mid",
                               "data": [{"offset": "512KiB", "length": "1MiB"}]}} | images,
            "drives": {"vda": {"image": "top"}},
            "jobs": {"c1": {"type": "commit", "device": "vda"} | job},
            "faults": list(faults), "actions": list(actions), "workloads": workloads or {}}


def once(image, op, offset, errno="EIO", persistent=False):
    f = {"image": image, "operation": op, "errno": errno, "offset": offset, "length": "512"}
    return f if persistent else f | {"count": 1}


def run(scenario, profile=None, sim=False):
    s = Simulation(blocksim.load_scenario(scenario), profile=profile)
    r = s.run()
    return (r, s) if sim else r


def seq(r):
    out = []
    for e in r.events:
        d = e["data"]
        if e["event"] == "JOB_STATUS_CHANGE":
            out.append(d["status"])
        elif e["event"] == "BLOCK_JOB_ERROR":
            out.append(f"ERROR {d['operation']} {d['action']}")
        else:
            out.append(e["event"] + (f" error={d['error']}" if "error" in d else ""))
    return out


def resume(delay="200ms"):
    return {"on": "BLOCK_JOB_ERROR", "delay": delay, "command": "block-job-resume",
            "arguments": {"device": "c1"}}


SUCCESS = ["created", "running", "waiting", "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"]


# -- intermediate ---------------------------------------------------------------------
def test_intermediate_commit_drops_the_committed_layers():
    r, sim = run(chain({"top": "mid"}), sim=True)
    assert isinstance(sim.jobs["c1"], CommitJob)
    assert seq(r) == SUCCESS
    done = r.events[-3]["data"]
    assert (done["type"], done["device"], done["len"], done["offset"]) == ("commit", "c1", 4 * MiB, 4 * MiB)
    assert sim.devices["top"].backing is sim.devices["base"]
    job = r.summary["jobs"]["c1"]
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")
    assert job["bytes_copied"] == MiB + 512 * 1024 + 64 * 1024     # mid's allocation only
    assert r.summary["invariants"]["violations"] == []
    # the base now reads as mid did (mid's data over the base's own)
    base, mid = sim.devices["base"], sim.devices["mid"]
    assert base.read_content(0, 4 * MiB) == mid.read_content(0, 4 * MiB)


@pytest.mark.parametrize("image, op", [("mid", "read"), ("base", "write")])
def test_report_names_the_operation_that_failed(image, op):
    r, sim = run(chain({"top": "mid", "on-error": "report"}, faults=[once(image, op, "2MiB")]),
                 sim=True)
    assert seq(r) == ["created", "running", f"ERROR {op} report", "aborting",
                      f"BLOCK_JOB_COMPLETED error={EIO}", "concluded", "null"]
    # the chunk that failed is the allocation run at 2 MiB: offset stops there
    assert r.events[-3]["data"]["offset"] == 2 * MiB
    assert sim.devices["top"].backing is sim.devices["mid"]        # chain unchanged


def test_chunks_follow_allocation_runs_of_at_most_512k():
    _r, sim = run(chain({"top": "mid", "start": "manual"}), sim=True)
    job = sim.jobs["c1"]
    job.size = 4 * MiB
    job._layers = [sim.devices["mid"]]
    assert [job._chunk(o) for o in (0, 512 * 1024, MiB, 1536 * 1024, 2 * MiB, 3 * MiB,
                                    3 * MiB + 64 * 1024)] == [
        (True, 512 * 1024), (True, 512 * 1024), (False, 512 * 1024), (False, 512 * 1024),
        (True, 512 * 1024), (True, 64 * 1024), (False, 512 * 1024)]
    # a layer above shortens an unallocated run to its own
    job._layers = [sim.devices["top"], sim.devices["mid"]]
    assert job._chunk(MiB + 512 * 1024) == (False, 512 * 1024)
    assert job._chunk(1280 * 1024) == (True, 256 * 1024)


@pytest.mark.parametrize("image, op", [("mid", "read"), ("base", "write")])
def test_stop_retries_the_same_chunk_after_resume(image, op):
    r = run(chain({"top": "mid", "on-error": "stop"}, faults=[once(image, op, "2MiB")],
                  actions=[resume()]))
    assert seq(r) == ["created", "running", f"ERROR {op} stop", "paused", "running", "waiting",
                      "pending", "BLOCK_JOB_COMPLETED", "concluded", "null"]
    job = r.summary["jobs"]["c1"]
    assert (job["outcome"], job["integrity"], job["io_status"]) == ("completed", "identical", "ok")


def test_enospc_stops_on_enospc_and_reports_eio():
    r = run(chain({"top": "mid", "on-error": "enospc"},
                  faults=[once("base", "write", "2MiB", "ENOSPC")],
                  actions=[{"on": "BLOCK_JOB_ERROR", "delay": "100ms",
                            "command": "query-block-jobs"}, resume()]))
    assert "ERROR write stop" in seq(r)
    assert r.commands[1]["return"][0]["io-status"] == "nospace"
    r = run(chain({"top": "mid", "on-error": "auto"}, faults=[once("base", "write", "2MiB")]))
    assert "ERROR write report" in seq(r)


def test_ignore_retries_at_once_and_completes_cleanly():
    r = run(chain({"top": "mid", "on-error": "ignore"}, faults=[once("base", "write", "2MiB")]))
    assert seq(r) == ["created", "running", "ERROR write ignore", "waiting", "pending",
                      "BLOCK_JOB_COMPLETED", "concluded", "null"]
    assert r.summary["jobs"]["c1"]["error"] is None


def test_persistent_ignore_retries_until_cancelled():
    r = run(chain({"top": "mid", "on-error": "ignore"},
                  faults=[once("base", "write", "2MiB", persistent=True)],
                  actions=[{"at": "200ms", "command": "block-job-cancel",
                            "arguments": {"device": "c1", "force": True}}]))
    job = r.summary["jobs"]["c1"]
    assert job["errors_by_action"]["ignore"] > 100
    assert (job["outcome"], job["offset"]) == ("cancelled", 2 * MiB)


def test_plain_cancel_is_forced_and_base_keeps_what_was_copied():
    r, sim = run(chain({"top": "mid", "speed": "512KiB"},
                       actions=[{"at": "1100ms", "command": "block-job-cancel",
                                 "arguments": {"device": "c1"}}]), sim=True)
    assert seq(r)[-4:] == ["aborting", "BLOCK_JOB_CANCELLED", "concluded", "null"]
    assert sim.devices["top"].backing is sim.devices["mid"]
    base, mid = sim.devices["base"], sim.devices["mid"]
    # mid's first MiB went to the base before the cancel; the rest did not
    assert base.read_content(0, MiB) == mid.read_content(0, MiB)
    assert base.read_content(2 * MiB, 2 * MiB + 512 * 1024) != mid.read_content(2 * MiB, 2 * MiB + 512 * 1024)


def test_complete_is_refused_on_an_intermediate_commit():
    r = run(chain({"top": "mid", "speed": "512KiB"},
                  actions=[{"at": "500ms", "command": "block-job-complete",
                            "arguments": {"device": "c1"}}]))
    assert r.commands[1]["error"]["desc"] == \
        "Job 'c1' in state 'running' cannot accept command verb 'complete'"


def test_guest_writes_to_the_active_layer_do_not_reach_the_base():
    r, sim = run(chain({"top": "mid", "speed": "1MiB"},
                       workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB",
                                        "rate-iops": 500}}), sim=True)
    assert r.summary["jobs"]["c1"]["integrity"] == "identical"
    assert r.summary["drives"]["vda"]["corrupt_bytes"] == 0
    assert r.summary["invariants"]["violations"] == []


def test_the_invariant_catches_a_base_that_was_not_written(monkeypatch):
    monkeypatch.setattr(CommitJob, "_chunk", lambda self, offset: (False, min(512 * 1024, self.size - offset)))
    r = run(chain({"top": "mid"}))
    assert r.summary["jobs"]["c1"]["integrity"] == "differs"
    assert [v["invariant"] for v in r.summary["invariants"]["violations"]] == ["commit-base-holds-top"]


def test_intermediate_commit_is_the_same_without_shortcuts():
    s = blocksim.load_scenario(chain(
        {"top": "mid", "on-error": "stop", "speed": "2MiB"}, faults=[once("base", "write", "2MiB")],
        actions=[resume("300ms")],
        workloads={"g": {"drive": "vda", "rw": "randrw", "bs": "4KiB", "rate-iops": 800}}))
    assert outcome(Simulation(s, seed=3)) == outcome(Simulation(s, seed=3, shortcuts=False))


# -- active -----------------------------------------------------------------------------
def complete():
    return {"on": "BLOCK_JOB_READY", "delay": "100ms", "command": "block-job-complete",
            "arguments": {"device": "c1"}}


def test_active_commit_is_a_mirror_of_type_commit_that_pivots_to_the_base():
    r, sim = run(chain({}, actions=[complete()]), sim=True)
    assert isinstance(sim.jobs["c1"], ActiveCommitJob)
    assert seq(r) == ["created", "running", "ready", "BLOCK_JOB_READY", "waiting", "pending",
                      "BLOCK_JOB_COMPLETED", "concluded", "null"]
    ready = r.events[3]["data"]
    # what is allocated above the base, as QEMU printed it
    assert (ready["type"], ready["len"], ready["offset"]) == ("commit", 2162688, 2162688)
    assert sim.drives["vda"].node is sim.devices["base"]
    job = r.summary["jobs"]["c1"]
    assert (job["integrity"], job["pivoted"]) == ("identical", True)
    assert r.commands[0]["execute"] == "block-commit"
    assert r.commands[0]["arguments"]["base-node"] == "base"


def test_active_commit_uses_on_error_for_both_sides():
    for image, op in (("top", "read"), ("base", "write")):
        r = run(chain({"on-error": "stop"}, faults=[once(image, op, "1MiB")],
                      actions=[resume(), complete()]))
        assert seq(r)[2:6] == [f"ERROR {op} stop", "paused", "running", "ready"], op
        assert r.summary["jobs"]["c1"]["outcome"] == "completed"


def test_plain_cancel_of_a_ready_active_commit_completes_without_pivot():
    r, sim = run(chain({}, actions=[{"on": "BLOCK_JOB_READY", "delay": "100ms",
                                     "command": "block-job-cancel",
                                     "arguments": {"device": "c1"}}]), sim=True)
    assert "BLOCK_JOB_COMPLETED" in seq(r) and "BLOCK_JOB_CANCELLED" not in seq(r)
    assert sim.drives["vda"].node is sim.devices["top"]
    assert r.summary["jobs"]["c1"]["integrity"] == "identical"


def test_active_commit_into_mid_leaves_the_base_alone():
    r, sim = run(chain({"base": "mid"}, actions=[complete()]), sim=True)
    assert sim.drives["vda"].node is sim.devices["mid"]
    assert r.events[3]["data"]["len"] == MiB        # top's allocation only
    assert sim.devices["base"].bytes_written == 0


# -- refusals ----------------------------------------------------------------------------
def test_backing_file_is_refused_on_an_active_commit():
    r = run(chain({"backing-file": "base.qcow2"}))
    assert r.commands[0]["error"] == {
        "class": "GenericError", "desc": "'backing-file' specified, but 'top' is the active layer"}
    assert r.events == [] and r.summary["jobs"]["c1"]["outcome"] == "refused"


def test_a_layer_already_dropped_is_not_in_the_chain_any_more():
    s = chain({"top": "mid"})
    s["jobs"]["c2"] = {"type": "commit", "device": "vda", "top": "mid", "start": "manual"}
    s["actions"] = [{"on": "BLOCK_JOB_COMPLETED", "command": "job-start", "arguments": {"id": "c2"}}]
    r = run(s)
    assert r.commands[1]["error"]["desc"] == "'mid' is not in this backing file chain"


@pytest.mark.parametrize("job, key, text", [
    ({"top": "nosuch"}, "jobs.c1.top", "unknown image 'nosuch'"),
    ({"top": "mid", "base": "mid"}, "jobs.c1.base", "cannot commit an image into itself"),
    ({"top": "mid", "base": "top"}, "jobs.c1.base", "'top' is not in this backing file chain"),
    ({"top": "base"}, "jobs.c1.top", "cannot commit an image into itself"),
])
def test_bad_chains_are_one_line_errors(job, key, text):
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(chain(job))
    lines = info.value.lines()
    assert len(lines) == 1 and key in lines[0] and text in lines[0], lines


def test_top_outside_the_drive_chain_and_a_small_base_are_errors():
    s = chain({"top": "other"})
    s["images"]["other"] = {"size": "4MiB"}
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(s)
    assert "'other' is not in the drive's backing chain (top -> mid -> base)" in str(info.value)
    s = chain({"top": "mid"})
    s["images"]["base"]["size"] = "2MiB"
    s["images"]["base"]["data"] = "none"
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(s)
    assert "smaller than top 'mid'" in str(info.value)


def test_defaults_are_qemus():
    s = blocksim.load_scenario(chain({}))
    assert (s.jobs["c1"].top, s.jobs["c1"].base, s.jobs["c1"].on_error) == ("top", "base", "report")


# -- the rfc-2012 profile: 2012's block-commit (QEMU 1.3) --------------------------------
def test_rfc2012_refuses_active_commit():
    r = run(chain({}), profile="rfc-2012")
    assert r.commands[0]["error"]["desc"] == "Top image as the active layer is currently unsupported"


def test_rfc2012_refuses_an_on_error_block_commit_did_not_take():
    r = run(chain({"top": "mid", "on-error": "stop"}), profile="rfc-2012")
    assert r.commands[0]["error"]["desc"] == "Invalid parameter 'on-error'"


def test_rfc2012_reports_every_commit_error_as_a_read_and_announces_a_cancel():
    r = run(chain({"top": "mid"}, faults=[once("base", "write", "2MiB")]), profile="rfc-2012")
    assert seq(r) == ["ERROR read report", "BLOCK_JOB_CANCELLED"]
    assert r.events[0]["data"]["device"] == "vda"
    r = run(chain({"top": "mid"}), profile="rfc-2012")
    assert seq(r) == ["BLOCK_JOB_COMPLETED"]
    assert r.summary["jobs"]["c1"]["integrity"] == "identical"
