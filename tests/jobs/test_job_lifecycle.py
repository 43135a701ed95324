"""The job life cycle of today's QEMU: statuses, management verbs and refusals.

SEMANTICS.md: every transition emits JOB_STATUS_CHANGE and must be legal;
each verb is accepted only in some statuses and a refusal is part of the
record, with QEMU's wording.  Cancel before ready aborts; a plain cancel of a
ready mirror completes it without the pivot; a forced cancel aborts; a job
paused by an error refuses a plain cancel and a second pause.
"""

import pytest

import blocksim

from jobcases import (
    EIO, JOB, KiB, MiB, SIZE, at, backup_case, cancelled, commands, completed, err, event, event_time, fault,
    illegal_transitions, job_summary, mirror_case, on, pending, ready, refusals, simulate, st,
    statuses, stream_case, timeline, violations,
)

SLOW = MiB                                    # 4 MiB at 1 MiB/s: ready after ~4 s
COMPLETE_ON_READY = on("BLOCK_JOB_READY", "block-job-complete", device=JOB)
GUEST = {"g": {"drive": "vda", "rw": "randwrite", "bs": 4096, "rate-iops": 100}}
ABORT_TAIL = [*st("aborting"), cancelled(), *st("concluded", "null")]
SUCCESS_TAIL = [*st("waiting", "pending"), completed(None), *st("concluded", "null")]


def paused_by_error(**job):
    """A mirror whose target fails one write: paused (stop) at about 4 ms."""
    return dict(on_target_error="stop", faults=[fault("dst", "write", count="once")], **job)


# -- cancel ------------------------------------------------------------------------------

def test_cancel_before_ready_aborts():
    # (buf-size 1 MiB: one 1 MiB copy per iteration, then a 1 s sleep; with
    # the default 16 MiB the whole 4 MiB goes in the first iteration)
    sim, r = simulate(mirror_case(speed=SLOW, buf_size=MiB,
                                  actions=[at("1.5s", "block-job-cancel", device=JOB)]))
    assert timeline(r) == [*st("created", "running")] + ABORT_TAIL
    data = event(r, "BLOCK_JOB_CANCELLED")
    assert (data["device"], data["type"], data["len"], data["speed"]) == (JOB, "mirror", SIZE, SLOW)
    assert data["offset"] == 2 * MiB
    assert event_time(r, "BLOCK_JOB_CANCELLED") == pytest.approx(1.5)
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"]) == ("cancelled", False, "not-checked")
    assert sim.drives["vda"].node is sim.devices["src"]


def test_plain_cancel_of_a_ready_mirror_completes_without_pivot():
    sim, r = simulate(mirror_case(actions=[on("BLOCK_JOB_READY", "block-job-cancel", delay="1s",
                                              device=JOB)]))
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"]) == ("completed", False, "identical")
    assert sim.drives["vda"].node is sim.devices["src"]
    assert violations(r) == []


def test_plain_cancel_of_a_ready_mirror_copies_the_last_guest_writes():
    sim, r = simulate(mirror_case(workloads=GUEST, actions=[at("3s", "block-job-cancel",
                                                                device=JOB)]))
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    job = job_summary(r)
    assert (job["pivoted"], job["integrity"]) == (False, "identical")
    assert job["bytes_copied"] > SIZE
    assert sim.drives["vda"].node is sim.devices["src"]


def test_complete_after_a_plain_cancel_is_refused():
    # QEMU's job_complete refuses a job whose cancel was requested
    # (job_cancel_requested): the cancel still ends it without the pivot.
    sim, r = simulate(mirror_case(workloads=GUEST, actions=[
        at("3s", "block-job-cancel", device=JOB), at("3s", "block-job-complete", device=JOB)]))
    assert refusals(r) == [("block-job-complete", "The active block job 'job0' cannot be completed")]
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"]) == ("completed", False, "identical")
    assert sim.drives["vda"].node is sim.devices["src"]


def test_force_cancel_of_a_ready_mirror_aborts():
    sim, r = simulate(mirror_case(actions=[on("BLOCK_JOB_READY", "block-job-cancel", delay="1s",
                                              device=JOB, force=True)]))
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + ABORT_TAIL
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"]) == ("cancelled", False)
    assert sim.drives["vda"].node is sim.devices["src"]


def test_cancel_of_a_stream_aborts():
    r = simulate(stream_case(speed=SLOW, actions=[at("1s", "job-cancel", id=JOB)]))[1]
    assert timeline(r) == [*st("created", "running")] + ABORT_TAIL
    assert job_summary(r)["outcome"] == "cancelled"


def test_job_paused_by_an_error_refuses_plain_cancel_and_second_pause():
    r = simulate(mirror_case(**paused_by_error(), actions=[
        on("BLOCK_JOB_ERROR", "block-job-cancel", delay="1s", device=JOB),
        on("BLOCK_JOB_ERROR", "block-job-pause", delay="1s", device=JOB),
        on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1.5s"),
        on("BLOCK_JOB_ERROR", "block-job-cancel", delay="2s", device=JOB, force=True)]))[1]
    assert refusals(r) == [
        ("block-job-cancel", "The block job for device 'job0' is currently paused"),
        ("block-job-pause", "Job is already paused"),
    ]
    # The refusals changed nothing: still paused until the forced cancel.
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["paused"], info["io-status"]) == ("paused", True, "failed")
    assert timeline(r) == [*st("created", "running"), err("write", "stop"),
                           *st("paused", "running")] + ABORT_TAIL
    assert event_time(r, "BLOCK_JOB_CANCELLED") == pytest.approx(2.0, abs=0.01)
    assert job_summary(r)["outcome"] == "cancelled"
    assert not illegal_transitions(r)


def test_ready_job_stopped_by_an_error_refuses_plain_cancel_force_works():
    r = simulate(mirror_case(
        workloads=GUEST, on_target_error="stop",
        faults=[fault("dst", "write", start="1s", count="once")],
        actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="1s", device=JOB),
                 on("BLOCK_JOB_ERROR", "block-job-cancel", delay="2s", device=JOB, force=True)]))[1]
    assert refusals(r) == [("block-job-cancel",
                            "The block job for device 'job0' is currently paused")]
    assert timeline(r) == [*st("created", "running", "ready"), ready(), err("write", "stop"),
                           *st("standby", "ready")] + ABORT_TAIL
    assert job_summary(r)["pivoted"] is False


def test_force_cancel_of_a_stream_paused_by_an_error():
    sim, r = simulate(stream_case(on_error="stop", faults=[fault("base", "read", count="once")],
                                  actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="1s",
                                              device=JOB, force=True)]))
    assert timeline(r) == [*st("created", "running"), err("read", "stop"),
                           *st("paused", "running")] + ABORT_TAIL
    assert sim.devices["top"].backing is sim.devices["base"]


def test_cancel_while_pending_aborts():
    r = simulate(stream_case(auto_finalize=False, actions=[at("1s", "block-job-cancel",
                                                             device=JOB)]))[1]
    assert timeline(r) == [*st("created", "running", "waiting", "pending"), pending()] + ABORT_TAIL
    assert job_summary(r)["outcome"] == "cancelled"


# -- pause and resume -------------------------------------------------------------------------

def test_user_pause_and_resume():
    # One 1 MiB copy per iteration and a 1 s sleep after it.  The pause at
    # 1.5 s ends the second sleep early; resumed at 3 s the job goes on at
    # once (QEMU 7.2's job_sleep_ns does not sleep off the rest).
    r = simulate(mirror_case(speed=SLOW, buf_size=MiB, actions=[
        at("1.5s", "block-job-pause", device=JOB), at("1.7s", "query-block-jobs"),
        at("2s", "block-job-pause", device=JOB),
        at("3s", "block-job-resume", device=JOB), at("3.5s", "block-job-resume", device=JOB),
        COMPLETE_ON_READY]))[1]
    assert refusals(r) == [("block-job-pause", "Job is already paused"),
                           ("block-job-resume", "Can't resume a job that was not paused")]
    assert timeline(r) == [*st("created", "running", "paused", "running", "ready"), ready()] \
        + SUCCESS_TAIL
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["paused"], info["busy"], info["io-status"]) == \
        ("paused", True, False, "ok")
    job = job_summary(r)
    assert job["time_paused"] == pytest.approx(1.5)
    assert 5.0 <= job["finished_at"] <= 5.01     # 4 s of copying + 1.5 s paused - 0.5 s
    assert job["integrity"] == "identical"


def test_resume_of_a_running_job_is_refused():
    r = simulate(mirror_case(speed=SLOW, actions=[at("1s", "block-job-resume", device=JOB)]))[1]
    assert refusals(r) == [("block-job-resume", "Can't resume a job that was not paused")]
    assert statuses(r) == ["created", "running", "ready"]


def test_resume_of_a_job_that_is_not_paused_says_so_in_any_status():
    # QEMU's job_user_resume checks "not paused" before the verb table, so a
    # job waiting in pending gets that answer, not a verb refusal.
    r = simulate(mirror_case(auto_finalize=False, actions=[
        on("BLOCK_JOB_READY", "block-job-complete", device=JOB),
        on("BLOCK_JOB_PENDING", "block-job-resume", device=JOB),
        on("BLOCK_JOB_PENDING", "block-job-finalize", delay="0.5s", id=JOB)]))[1]
    assert refusals(r) == [("block-job-resume", "Can't resume a job that was not paused")]
    assert job_summary(r)["outcome"] == "completed"


# -- complete, finalize, dismiss -----------------------------------------------------------------

def test_complete_before_ready_is_refused():
    r = simulate(mirror_case(speed=SLOW, actions=[at("1s", "block-job-complete", device=JOB)]))[1]
    assert refusals(r) == [("block-job-complete",
                            "Job 'job0' in state 'running' cannot accept command verb 'complete'")]
    # Refused, not remembered: the job becomes ready and stays ready.
    assert timeline(r) == [*st("created", "running", "ready"), ready()]
    assert job_summary(r)["pivoted"] is False


def test_complete_of_a_stream_is_refused():
    r = simulate(stream_case(speed=SLOW, actions=[at("1s", "block-job-complete", device=JOB)]))[1]
    assert refusals(r) == [("block-job-complete",
                            "Job 'job0' in state 'running' cannot accept command verb 'complete'")]
    assert job_summary(r)["outcome"] == "completed"


def test_finalize_and_dismiss_outside_their_status_are_refused():
    r = simulate(mirror_case(speed=SLOW, actions=[
        at("1s", "block-job-finalize", id=JOB), at("1s", "block-job-dismiss", id=JOB),
        at("1s", "job-finalize", id=JOB)]))[1]
    assert refusals(r) == [
        ("block-job-finalize", "Job 'job0' in state 'running' cannot accept command verb 'finalize'"),
        ("block-job-dismiss", "Job 'job0' in state 'running' cannot accept command verb 'dismiss'"),
        ("job-finalize", "Job 'job0' in state 'running' cannot accept command verb 'finalize'"),
    ]


def test_commands_to_finished_or_unknown_jobs_are_refused():
    r = simulate(stream_case(actions=[
        at("1s", "block-job-cancel", device=JOB), at("1s", "block-job-pause", device=JOB),
        at("1s", "block-job-set-speed", device=JOB, speed=MiB),
        at("1s", "block-job-dismiss", id=JOB), at("1s", "job-cancel", id=JOB),
        at("1s", "block-job-cancel", device="nope"), at("1s", "job-pause", id="nope"),
        at("1s", "query-block-jobs")]))[1]
    assert refusals(r) == [
        ("block-job-cancel", "Block job 'job0' not found"),
        ("block-job-pause", "Block job 'job0' not found"),
        ("block-job-set-speed", "Block job 'job0' not found"),
        ("block-job-dismiss", "Block job 'job0' not found"),
        ("job-cancel", "Job not found"),
        ("block-job-cancel", "Block job 'nope' not found"),
        ("job-pause", "Job not found"),
    ]
    assert [c["error"]["class"] for c in r.commands if "error" in c][:1] == ["DeviceNotActive"]
    assert commands(r, "query-block-jobs")[0]["return"] == []
    assert r.summary["commands"] == {"executed": 9, "refused": 7}
    assert job_summary(r)["outcome"] == "completed"


@pytest.mark.parametrize("case", ["stream", "mirror"])
def test_auto_finalize_false_waits_in_pending_until_finalize(case):
    if case == "stream":
        scenario = stream_case(auto_finalize=False, duration="5s", actions=[
            at("1s", "query-block-jobs"), at("2s", "block-job-finalize", id=JOB)])
        head = st("created", "running")
    else:
        scenario = mirror_case(auto_finalize=False, duration="5s", actions=[
            COMPLETE_ON_READY, at("1s", "query-block-jobs"),
            at("2s", "block-job-finalize", id=JOB)])
        head = [*st("created", "running", "ready"), ready()]
    sim, r = simulate(scenario)
    # BLOCK_JOB_PENDING tells the management layer that a finalize is awaited.
    assert timeline(r) == head + [*st("waiting", "pending"), pending(), completed(None),
                                  *st("concluded", "null")]
    assert event(r, "BLOCK_JOB_PENDING") == {"type": case, "id": JOB}
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["auto-finalize"]) == ("pending", False)
    # The job's graph changes and BLOCK_JOB_COMPLETED wait for the finalize.
    assert event_time(r, "BLOCK_JOB_COMPLETED") == pytest.approx(2.0)
    assert job_summary(r)["integrity"] == "identical"


def test_without_finalize_a_mirror_does_not_pivot():
    sim, r = simulate(mirror_case(auto_finalize=False, duration="2s", actions=[COMPLETE_ON_READY]))
    assert statuses(r) == ["created", "running", "ready", "waiting", "pending"]
    assert r.event_names()[-1] == "BLOCK_JOB_PENDING"
    assert "BLOCK_JOB_COMPLETED" not in r.event_names()
    assert job_summary(r)["final_status"] == "pending"
    assert sim.drives["vda"].node is sim.devices["src"]


@pytest.mark.parametrize("failing", [False, True])
def test_auto_dismiss_false_waits_in_concluded_until_dismiss(failing):
    faults = [fault("base", "read")] if failing else []
    r = simulate(stream_case(auto_dismiss=False, faults=faults, actions=[
        at("1s", "query-block-jobs"), at("2s", "block-job-dismiss", id=JOB)]))[1]
    error = EIO if failing else None
    assert timeline(r)[-3:] == [completed(error), *st("concluded", "null")]
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["auto-dismiss"], info.get("error")) == ("concluded", False, error)
    null_at = [e for e in r.events if e["data"].get("status") == "null"][0]["timestamp"]
    assert null_at == {"seconds": 2, "microseconds": 0}
    assert refusals(r) == []


# -- starting ------------------------------------------------------------------------------------

def test_manual_start_a_second_start_refused_while_it_runs_and_a_new_job_once_gone():
    # job.c:job_create: an ID is refused only while a job holds it (checked
    # on QEMU 7.2: scenarios/qemu/job-id-free-again-once-gone.toml)
    r = simulate(stream_case(start="manual", actions=[
        at("1s", "job-start", id=JOB), at("1001ms", "job-start", id=JOB),
        at("2s", "job-start", id=JOB), at("2s", "job-start", id="other")]))[1]
    assert [(c["arguments"], c.get("error", {}).get("desc")) for c in r.commands] == [
        ({"id": JOB}, None),
        ({"id": JOB}, "Node 'top' is busy: block device is in use by block job: stream"),
        ({"id": JOB}, None),
        ({"id": "other"}, "No job declared with id 'other'"),
    ]
    assert event_time(r, "JOB_STATUS_CHANGE") == pytest.approx(1.0)
    assert statuses(r).count("created") == 2
    # the summary shows the last run
    assert job_summary(r)["started_at"] == pytest.approx(2.0)
    assert job_summary(r)["outcome"] == "completed"


def test_manual_job_never_started():
    r = simulate(stream_case(start="manual"))[1]
    assert r.events == []
    assert (job_summary(r)["outcome"], job_summary(r)["final_status"]) == ("not-started", "none")


# -- set-speed -----------------------------------------------------------------------------------

@pytest.mark.parametrize("at_s, expected", [("1s", 2.625), ("2s", 3.375), ("3s", 4.125)])
def test_set_speed_changes_the_rate(at_s, expected):
    # 64 KiB copies (buf-size 64 KiB: one per iteration): 512 KiB/s until the
    # set-speed at t, then 2 MiB/s for the rest: 4 MiB at those rates is
    # ready at 2 + 0.75 t; the limiter lets each slice's quota go at the
    # slice's start (one 64 KiB copy at 512 KiB/s, then 256 KiB at 2 MiB/s),
    # which puts the copy 1/8 s ahead.
    r = simulate(mirror_case(speed=512 * 1024, buf_size=64 * 1024, actions=[
        at(at_s, "block-job-set-speed", device=JOB, speed=2 * MiB)]))[1]
    assert job_summary(r)["ready_at"] == pytest.approx(expected, abs=0.02)
    assert event(r, "BLOCK_JOB_READY")["speed"] == 2 * MiB
    assert [c["return"] for c in commands(r, "block-job-set-speed")] == [{}]


def test_set_speed_while_sleeping_in_a_stretched_slice():
    # A 1 MiB copy at 512 KiB/s (one per iteration with buf-size 1 MiB)
    # stretches the slice to 2 s; raising the speed then leaves that slice
    # ending in the past: the job goes on at once (as QEMU's timer in the
    # past does) instead of waiting a negative time.
    r = simulate(mirror_case(speed=512 * 1024, buf_size=MiB, actions=[
        at("2s", "block-job-set-speed", device=JOB, speed=2 * MiB), COMPLETE_ON_READY]))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    assert 2.9 <= job_summary(r)["ready_at"] <= 3.6
    assert job_summary(r)["integrity"] == "identical"


def test_set_speed_zero_removes_the_limit():
    r = simulate(stream_case(speed=512 * 1024, actions=[
        at("1s", "block-job-set-speed", device=JOB, speed=0)]))[1]
    assert 1.0 <= job_summary(r)["finished_at"] < 1.1


# -- every status change is legal ------------------------------------------------------------------

SCENARIOS = {
    "stream": stream_case(),
    "stream-report": stream_case(faults=[fault("base", "read")]),
    "stream-ignore": stream_case(on_error="ignore", faults=[fault("base", "read", count=1)]),
    "stream-stop-resume": stream_case(
        on_error="stop", faults=[fault("top", "write", count=1)],
        actions=[on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB)]),
    "stream-cancel": stream_case(speed=SLOW, actions=[at("1s", "block-job-cancel", device=JOB)]),
    "mirror-complete": mirror_case(actions=[COMPLETE_ON_READY]),
    "mirror-report": mirror_case(faults=[fault("dst", "write")]),
    "mirror-stop-resume": mirror_case(
        **paused_by_error(), actions=[COMPLETE_ON_READY,
                                      on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s",
                                         device=JOB)]),
    "mirror-standby": mirror_case(
        workloads=GUEST, on_target_error="stop",
        faults=[fault("dst", "write", start="1s", count=1)],
        actions=[on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 at("3s", "block-job-complete", device=JOB)]),
    "mirror-cancel-ready": mirror_case(actions=[on("BLOCK_JOB_READY", "block-job-cancel",
                                                   device=JOB)]),
    "mirror-force-cancel-paused": mirror_case(
        **paused_by_error(), actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="1s",
                                         device=JOB, force=True)]),
    "mirror-pause-ready": mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-pause", device=JOB),
        on("BLOCK_JOB_READY", "block-job-resume", delay="1s", device=JOB),
        on("BLOCK_JOB_READY", "block-job-complete", delay="2s", device=JOB)]),
    "mirror-manual-finalize-dismiss": mirror_case(
        auto_finalize=False, auto_dismiss=False,
        actions=[COMPLETE_ON_READY, at("1s", "block-job-finalize", id=JOB),
                 at("2s", "block-job-dismiss", id=JOB)]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_status_change_is_legal(name):
    r = simulate(SCENARIOS[name])[1]
    seq = statuses(r)
    assert seq[:2] == ["created", "running"]
    assert seq[-2:] == ["concluded", "null"]        # every case ends
    assert illegal_transitions(r) == []
    assert [v for v in violations(r) if v["invariant"] == "legal-job-transitions"] == []
    assert violations(r) == []
    assert all(e["data"]["id"] == JOB for e in r.events if e["event"] == "JOB_STATUS_CHANGE")


def test_a_management_layer_can_finalize_on_block_job_pending():
    r = blocksim.run({
        "duration": "2s",
        "images": {"src": {"size": "4MiB", "data": "full"}, "dst": {"size": "4MiB"}},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"j": {"type": "mirror", "device": "vda", "target": "dst", "auto-finalize": False}},
        "actions": [
            {"on": "BLOCK_JOB_READY", "command": "block-job-complete", "arguments": {"device": "j"}},
            {"on": "BLOCK_JOB_PENDING", "delay": "100ms", "command": "block-job-finalize",
             "arguments": {"id": "j"}}]})
    statuses = [e["data"]["status"] for e in r.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert statuses == ["created", "running", "ready", "waiting", "pending", "concluded", "null"]
    names = r.event_names("BLOCK_JOB_PENDING", "BLOCK_JOB_COMPLETED")
    assert names == ["BLOCK_JOB_PENDING", "BLOCK_JOB_COMPLETED"]
    pending, completed = (e for e in r.events if e["event"] in names)
    assert pending["data"] == {"type": "mirror", "id": "j"}
    gap = (completed["timestamp"]["seconds"] - pending["timestamp"]["seconds"]) * 10**6 + \
        completed["timestamp"]["microseconds"] - pending["timestamp"]["microseconds"]
    assert gap == 100_000
    assert r.summary["jobs"]["j"]["pivoted"] is True


# -- one job per disk ------------------------------------------------------------------

def _mirror_then_stream(second_start: str, profile: str | None = None) -> dict:
    """A mirror of vda (image ``src`` over ``base``) at 1 MiB/s, and a
    stream of the same drive starting at ``second_start``."""
    scenario = mirror_case(speed=MiB, duration="10s", profile=profile, data="none")
    scenario["images"]["base"] = {"size": SIZE, "data": "full"}
    scenario["images"]["src"].update({"format": "qcow2", "backing": "base"})
    scenario["jobs"]["s0"] = {"type": "stream", "device": "vda", "start": second_start}
    return scenario


def test_a_second_job_on_a_busy_disk_is_refused():
    # QEMU's op blockers: the mirror holds its nodes until it concludes, so a
    # stream of the same disk is refused, naming the node (real QEMU 7.2
    # agrees: scenarios/qemu/mirror-then-stream-one-drive.toml).
    r = simulate(_mirror_then_stream("1s"))[1]
    assert refusals(r) == [("block-stream", "Node 'src' is busy: block device is in use "
                                            "by block job: mirror")]
    assert job_summary(r, "s0")["outcome"] == "refused"
    assert timeline(r, "JOB_STATUS_CHANGE") == st("created", "running", "ready")
    assert job_summary(r)["outcome"] == "ready"


def test_the_2012_profile_says_the_device_is_in_use():
    r = simulate(_mirror_then_stream("1s"), profile="rfc-2012")[1]
    assert refusals(r) == [("block-stream", "Device 'vda' is in use")]


def _stream_then(kind: str, start: str = "500ms") -> dict:
    """A stream of vda (``top`` over ``base``) at 1 MiB/s, then a job of
    ``kind`` on the same drive at ``start``."""
    scenario = stream_case(speed=MiB, duration="10s")
    second = {"mirror": {"type": "mirror", "device": "vda", "target": "dst"},
              "commit": {"type": "commit", "device": "vda"},
              "backup": {"type": "backup", "device": "vda", "target": "dst", "sync": "full"}}
    scenario["images"]["dst"] = {"size": SIZE}
    scenario["jobs"]["j2"] = {**second[kind], "start": start}
    return scenario


@pytest.mark.parametrize("kind,command", [("mirror", "blockdev-mirror"),
                                          ("commit", "block-commit")])
def test_mirror_or_commit_under_a_streams_filter_needs_a_root_node(kind, command):
    # blockdev.c:qmp_get_root_bs, which block-commit and blockdev-mirror call
    # before any op blocker: the stream's copy-on-read filter sits above
    # 'top' (real QEMU 7.2 agrees: scenarios/qemu/stream-then-mirror-one-drive,
    # backup-then-commit-mirror-root-node).
    r = simulate(_stream_then(kind))[1]
    assert refusals(r) == [(command, "Need a root block node")]
    assert [c["error"]["class"] for c in commands(r, command)] == ["GenericError"]
    assert job_summary(r, "j2")["outcome"] == "refused"
    assert job_summary(r)["outcome"] == "completed"


def test_a_backup_of_a_streamed_disk_meets_the_op_blocker():
    # block-stream op-blocks its node; blockdev-backup has no root check
    r = simulate(_stream_then("backup"))[1]
    assert refusals(r) == [("blockdev-backup", "Node 'top' is busy: block device is in use "
                                               "by block job: stream")]


def test_the_root_node_rule_is_gone_once_the_filter_is():
    # the stream (4 MiB at 1 MiB/s) has concluded by 6 s: its filter is gone
    r = simulate(_stream_then("mirror", start="6s"))[1]
    assert refusals(r) == []
    assert job_summary(r, "j2")["outcome"] == "ready"


def test_the_2012_profile_has_no_filter_nodes():
    r = simulate(_stream_then("mirror"), profile="rfc-2012")[1]
    assert refusals(r) == [("drive-mirror", "Device 'vda' is in use")]


def test_a_disk_is_free_again_once_its_job_has_concluded():
    # Both copy from base into src.  A mirror cancelled at 1 s (forced, not
    # ready) concludes at once; the stream at 2 s then runs to completion.
    scenario = _mirror_then_stream("2s")
    scenario["actions"] = [at("1s", "block-job-cancel", device=JOB)]
    r = simulate(scenario)[1]
    assert refusals(r) == []
    assert job_summary(r)["outcome"] == "cancelled"
    assert job_summary(r, "s0")["outcome"] == "completed"


# -- the job ID is checked last (block_job_create -> job_create) -------------------------------

def test_a_running_job_started_again_meets_its_node_check_before_its_job_id():
    # qmp_block_stream asks the op blockers before stream_start's
    # block_job_create checks the ID (real QEMU 7.2 agrees:
    # scenarios/qemu/job-id-check-after-node-checks)
    r = simulate(stream_case(speed=MiB, start="manual", actions=[
        at("0s", "job-start", id=JOB), at("1s", "job-start", id=JOB)]))[1]
    assert refusals(r) == [("job-start", "Node 'top' is busy: block device is in use "
                                         "by block job: stream")]
    assert job_summary(r)["outcome"] == "completed"


def test_a_running_backup_started_again_meets_its_targets_op_blocker():
    r = simulate(backup_case(speed=MiB, start="manual", actions=[
        at("0s", "job-start", id=JOB), at("1s", "job-start", id=JOB)]))[1]
    assert refusals(r) == [("job-start", "Node 'tgt' is busy: block device is in use "
                                         "by block job: backup")]
    # its own drained sections blip it twice, the refusal's included
    assert statuses(r)[:8] == ["created", "running"] + ["paused", "running"] * 3


def test_a_concluded_job_waiting_for_dismiss_still_holds_its_id():
    # a mirror lets go of its nodes as it ends (mirror_exit_common), so its
    # start again meets job_create's ID check (checked on QEMU 7.2)
    r = simulate(mirror_case(auto_dismiss=False, start="manual", actions=[
        at("0s", "job-start", id=JOB), on("BLOCK_JOB_READY", "block-job-complete", device=JOB),
        at("3s", "job-start", id=JOB)]))[1]
    assert refusals(r) == [("job-start", "Job ID 'job0' already in use")]


def test_a_concluded_stream_waiting_for_dismiss_still_holds_its_nodes():
    # a stream keeps them until block_job_free: its op blocker answers first
    # (checked on QEMU 7.2: stream-concluded-holds-its-nodes)
    r = simulate(stream_case(auto_dismiss=False, start="manual", actions=[
        at("0s", "job-start", id=JOB), at("3s", "job-start", id=JOB)]))[1]
    assert refusals(r) == [
        ("job-start", "Node 'top' is busy: block device is in use by block job: stream")]


# -- what query-block-jobs shows (job.c, blockjob.c) -------------------------------------------
def test_query_lists_the_newest_job_first():
    # job_create: QLIST_INSERT_HEAD of the global job list
    scenario = mirror_case(speed=MiB, actions=[at("10ms", "query-block-jobs")])
    scenario["images"]["base"] = {"size": SIZE, "data": "full"}
    scenario["images"]["top"] = {"size": SIZE, "backing": "base"}
    scenario["drives"]["vdb"] = {"image": "top"}
    scenario["jobs"]["second"] = {"type": "stream", "device": "vdb", "speed": MiB,
                                  "start": "5ms"}
    sim, r = simulate(scenario)
    listed = commands(r, "query-block-jobs")[0]["return"]
    assert [j["device"] for j in listed] == ["second", JOB]


@pytest.mark.parametrize("verb", ["block-job-complete", "block-job-cancel"])
def test_a_completed_mirror_waiting_for_finalize_is_listed_paused(verb):
    # mirror_run ends in bdrv_drained_begin of its source, which pauses the
    # job itself until mirror_exit_common at finalization
    sim, r = simulate(mirror_case(
        auto_finalize=False,
        actions=[on("BLOCK_JOB_READY", verb, device=JOB),
                 on("JOB_STATUS_CHANGE", "query-block-jobs", match={"status": "pending"}),
                 on("JOB_STATUS_CHANGE", "query-block-jobs", match={"status": "pending"},
                    delay="50ms"),
                 on("JOB_STATUS_CHANGE", "block-job-finalize", delay="100ms",
                    match={"status": "pending"}, id=JOB)]))
    shown = [(j["status"], j["paused"], j["ready"])
             for c in commands(r, "query-block-jobs") for j in c["return"]]
    assert shown == [("pending", True, False)] * 2
    assert job_summary(r)["outcome"] == "completed"


# -- a cancelled job's error and io-status in query-block-jobs (job.c, blockjob.c) -------------
def _concluded_query(r) -> dict:
    [info] = [j for c in commands(r, "query-block-jobs") for j in c["return"]
              if j["status"] == "concluded"]
    return info


def test_a_job_force_cancelled_while_paused_by_an_error_shows_ok_and_operation_canceled():
    # job_cancel_async_locked -> block_job_user_resume resets the io-status;
    # job_update_rc_locked: ret 0 -> -ECANCELED, err "Operation canceled"
    r = simulate(mirror_case(
        speed=MiB, auto_dismiss=False, on_target_error="enospc",
        faults=[fault("dst", "write", "ENOSPC", offset=MiB, length=512)],
        actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="200ms", device=JOB, force=True),
                 on("JOB_STATUS_CHANGE", "query-block-jobs", delay="100ms",
                    match={"status": "concluded"})]))[1]
    info = _concluded_query(r)
    assert (info["io-status"], info.get("error")) == ("ok", "Operation canceled")
    assert job_summary(r)["outcome"] == "cancelled"
    assert "error" not in event(r, "BLOCK_JOB_CANCELLED")


def test_a_job_cancelled_after_an_ignored_error_shows_that_error():
    # stream_run returns the first error it ignored even when cancelled, and
    # job_update_rc_locked keeps a ret that is not 0
    r = simulate(stream_case(
        speed=MiB, auto_dismiss=False, on_error="ignore",
        faults=[fault("base", "read", offset=512 * KiB, length=512, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="500ms", device=JOB),
                 on("JOB_STATUS_CHANGE", "query-block-jobs", delay="100ms",
                    match={"status": "concluded"})]))[1]
    assert _concluded_query(r).get("error") == EIO
    assert job_summary(r)["outcome"] == "cancelled"


def test_a_job_cancelled_while_pending_shows_operation_canceled():
    # job_cancel_locked -> job_completed_txn_abort_locked ->
    # job_finalize_single_locked -> job_update_rc_locked
    r = simulate(mirror_case(
        speed=4 * MiB, auto_finalize=False, auto_dismiss=False,
        actions=[on("BLOCK_JOB_READY", "block-job-complete", device=JOB),
                 on("JOB_STATUS_CHANGE", "job-cancel", delay="100ms",
                    match={"status": "pending"}, id=JOB),
                 on("JOB_STATUS_CHANGE", "query-block-jobs", delay="100ms",
                    match={"status": "concluded"})]))[1]
    assert _concluded_query(r).get("error") == "Operation canceled"


def test_a_job_that_failed_shows_its_error_not_a_cancel():
    r = simulate(mirror_case(
        speed=MiB, auto_dismiss=False, on_target_error="report",
        faults=[fault("dst", "write", offset=MiB, length=512)],
        actions=[on("JOB_STATUS_CHANGE", "query-block-jobs", delay="100ms",
                    match={"status": "concluded"})]))[1]
    assert _concluded_query(r).get("error") == EIO


# -- which nodes a job holds, and until when (blockjob.c, block-backend.c) ------------------------
def _commit_chain(**c0) -> dict:
    return {"duration": "5s",
            "images": {"base": {"size": SIZE}, "mid": {"size": SIZE, "backing": "base", "data": "full"},
                       "top": {"size": SIZE, "backing": "mid"}, "dst": {"size": SIZE},
                       "tgt": {"size": SIZE}},
            "drives": {"vda": {"image": "top"}},
            "jobs": {"c0": {"type": "commit", "device": "vda", "top": "mid", "base": "base", **c0}},
            "actions": []}


def test_an_intermediate_commit_makes_its_drive_no_root_node():
    # commit_start: block_job_create(..., bs) makes the job a child_job parent
    # of the drive's node, so qmp_get_root_bs refuses it before any op blocker
    s = _commit_chain(speed=2 * MiB)
    s["jobs"]["c1"] = {"type": "commit", "device": "vda", "start": "300ms"}
    s["jobs"]["m0"] = {"type": "mirror", "device": "vda", "target": "dst", "start": "400ms"}
    s["jobs"]["b0"] = {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                       "start": "500ms"}
    r = simulate(s)[1]
    busy = "Node 'top' is busy: block device is in use by block job: commit"
    assert refusals(r) == [("block-commit", "Need a root block node"),
                           ("blockdev-mirror", "Need a root block node"),
                           ("blockdev-backup", busy)]
    assert job_summary(r, "c0")["outcome"] == "completed"


def test_a_completed_intermediate_commit_holds_its_drive_until_dismissed():
    # commit_prepare keeps the job's nodes; block_job_free lets them go
    s = _commit_chain(speed=8 * MiB, **{"auto-dismiss": False})
    s["jobs"]["m0"] = {"type": "mirror", "device": "vda", "target": "dst", "start": "1500ms"}
    s["jobs"]["s0"] = {"type": "stream", "device": "vda", "start": "1600ms"}
    s["jobs"]["m1"] = {"type": "mirror", "device": "vda", "target": "tgt", "start": "2000ms",
                       "speed": 8 * MiB}
    s["actions"] = [at("1800ms", "job-dismiss", id="c0"),
                    on("BLOCK_JOB_READY", "block-job-complete", delay="100ms", device="m1")]
    r = simulate(s)[1]
    assert refusals(r) == [
        ("blockdev-mirror", "Need a root block node"),
        ("block-stream", "Node 'top' is busy: block device is in use by block job: commit")]
    assert job_summary(r, "m1")["outcome"] == "completed"


def test_a_cancelled_intermediate_commit_lets_go_of_its_drive_at_once():
    # commit_abort: block_job_remove_all_bdrv
    s = _commit_chain(speed=MiB, **{"auto-dismiss": False})
    s["jobs"]["m0"] = {"type": "mirror", "device": "vda", "target": "dst", "start": "1s",
                       "speed": 8 * MiB}
    s["actions"] = [at("500ms", "block-job-cancel", device="c0"),
                    on("BLOCK_JOB_READY", "block-job-complete", delay="100ms", device="m0")]
    r = simulate(s)[1]
    assert refusals(r) == []
    assert (job_summary(r, "c0")["outcome"], job_summary(r, "m0")["outcome"]) == (
        "cancelled", "completed")


def test_a_stream_holds_its_drive_until_dismissed_even_cancelled():
    # stream.c never calls block_job_remove_all_bdrv
    s = stream_case(speed=MiB, auto_dismiss=False, duration="5s",
                    actions=[at("500ms", "block-job-cancel", device=JOB),
                             at("1300ms", "job-dismiss", id=JOB),
                             on("BLOCK_JOB_READY", "block-job-complete", delay="100ms",
                                device="m1")])
    s["images"].update({"dst": {"size": SIZE}, "tgt": {"size": SIZE}})
    s["jobs"]["m0"] = {"type": "mirror", "device": "vda", "target": "dst", "start": "1s"}
    s["jobs"]["b0"] = {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                       "start": "1100ms"}
    s["jobs"]["m1"] = {"type": "mirror", "device": "vda", "target": "dst", "start": "1500ms",
                       "speed": 8 * MiB}
    r = simulate(s)[1]
    assert refusals(r) == [
        ("blockdev-mirror", "Need a root block node"),
        ("blockdev-backup", "Node 'top' is busy: block device is in use by block job: stream")]
    assert job_summary(r, "m1")["outcome"] == "completed"
