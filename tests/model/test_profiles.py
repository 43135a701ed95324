"""Today's QEMU (profile ``qemu``) against the 2012 design note (``rfc-2012``).

SEMANTICS.md, "The rfc-2012 profile", checked against the note's code: after a
``report`` error the job ends with BLOCK_JOB_CANCELLED; BLOCK_JOB_ERROR names
the drive; a ``stop`` sets the job's io-status only for an error on the job's
own device (else that node's, first error sticking), ranked by the enum's
values ok < failed < nospace; ``stop``/``enospc`` job policies need a drive
with rerror=stop and werror=stop|enospc, else the job is refused at start; no
``auto`` policy and no job API of 2.12 (auto-finalize/dismiss, job-*,
block-job-finalize/dismiss); resume resets io-status even of a job that is not
paused; there is no status machine (no JOB_STATUS_CHANGE) and query-block-jobs
shows only type, device, len, offset, paused, speed, io-status.  A job's
``stop`` only pauses the job, the VM keeps running.
"""

import pytest

from jobcases import (
    EIO, ENOSPC, JOB, MiB, SIZE, at, cancelled, commands, completed, err, event, fault,
    job_summary, mirror_case, on, ready, refusals, simulate, st, stream_case, timeline, violations,
)

RFC = "rfc-2012"
PROFILES = [None, RFC]                           # None: the default, today's QEMU
STOP_DRIVE = {"rerror": "stop", "werror": "stop"}
COMPLETE_ON_READY = on("BLOCK_JOB_READY", "block-job-complete", device=JOB)


def test_default_profile_is_qemu():
    r = simulate(stream_case())[1]
    assert (r.profile, r.summary["profile"]) == ("qemu", "qemu")
    assert simulate(stream_case(), profile=RFC)[1].summary["profile"] == RFC
    # ... and a scenario can ask for it too.
    assert simulate(stream_case(profile=RFC))[1].profile == RFC


# -- report -------------------------------------------------------------------------------

@pytest.mark.parametrize("errno, text", [("EIO", EIO), ("ENOSPC", ENOSPC)])
def test_report_on_the_mirror_target(errno, text):
    scenario = mirror_case(faults=[fault("dst", "write", errno, offset=MiB, length=4096,
                                         count="once")])
    today = simulate(scenario)[1]
    assert timeline(today) == [*st("created", "running"), err("write", "report"),
                               *st("aborting"), completed(text), *st("concluded", "null")]
    rfc = simulate(scenario, profile=RFC)[1]
    # 2012: the job is cancelled, the events name the drive, no status changes.
    assert timeline(rfc) == [err("write", "report", device="vda"), cancelled(device="vda")]
    assert event(rfc, "BLOCK_JOB_CANCELLED") == {
        "type": "mirror", "device": "vda", "len": SIZE, "offset": SIZE - MiB, "speed": 0}
    assert "error" not in event(rfc, "BLOCK_JOB_CANCELLED")
    assert job_summary(rfc)["end_event"] == "BLOCK_JOB_CANCELLED"
    for r in (today, rfc):
        assert job_summary(r)["pivoted"] is False
        assert violations(r) == []


def test_report_on_a_stream_read():
    scenario = stream_case(faults=[fault("base", "read", offset=MiB, length=4096)])
    assert timeline(simulate(scenario)[1]) == [
        *st("created", "running"), err("read", "report"), *st("aborting"), completed(EIO),
        *st("concluded", "null")]
    assert timeline(simulate(scenario, profile=RFC)[1]) == [
        err("read", "report", device="vda"), cancelled(device="vda")]


def test_stream_ignore_completes_with_the_error_in_both():
    # The note: "For streaming, the job will complete with an error and the
    # backing file will be left in place."
    scenario = stream_case(on_error="ignore", faults=[fault("base", "read", offset=MiB,
                                                            length=4096)])
    sim, rfc = simulate(scenario, profile=RFC)
    assert timeline(rfc) == [err("read", "ignore", device="vda"), completed(EIO, device="vda")]
    assert sim.devices["top"].backing is sim.devices["base"]
    today = simulate(scenario)[1]
    assert timeline(today, "BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED") == [
        err("read", "ignore"), completed(EIO)]


# -- success and stop ----------------------------------------------------------------------

def test_successful_mirror_has_no_status_events_in_rfc():
    sim, r = simulate(mirror_case(actions=[COMPLETE_ON_READY]), profile=RFC)
    assert timeline(r) == [ready(device="vda"), completed(None, device="vda")]
    assert "JOB_STATUS_CHANGE" not in r.event_names()
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"]) == ("completed", True, "identical")
    assert sim.drives["vda"].node is sim.devices["dst"]


@pytest.mark.parametrize("profile", PROFILES)
def test_stop_pauses_only_the_job(profile):
    # (rfc-2012 needs a drive that can stop, see below.)  The note's event
    # documentation promises a STOP event; its behaviour and code only pause
    # the job, which is what both profiles do.
    sim, r = simulate(mirror_case(
        on_target_error="stop", drive=STOP_DRIVE,
        faults=[fault("dst", "write", offset=MiB, length=4096, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 COMPLETE_ON_READY]), profile=profile)
    [info] = commands(r, "query-block-jobs")[0]["return"]
    # The note's block_job_error_action sets the job's io-status only for an
    # error on the job's own device; a target error sets the target's.
    assert (info["paused"], info["io-status"]) == (True, "ok" if profile == RFC else "failed")
    if profile == RFC:
        assert r.summary["images"]["dst"]["io_status"] == "failed"      # until a cont
    else:
        assert "io_status" not in r.summary["images"]["dst"]
    assert "STOP" not in r.event_names()
    assert r.summary["vm"]["stops"] == 0
    device = "vda" if profile == RFC else JOB
    assert timeline(r, "BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED") == [
        err("write", "stop", device=device), ready(device=device), completed(None, device=device)]
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["io_status"]) == ("completed", "identical", "ok")
    assert violations(r) == []


@pytest.mark.parametrize("profile", PROFILES)
def test_a_plain_cancel_once_ready_still_pauses_on_stop_today(profile):
    # QEMU's job_pause_point returns early only for job_is_cancelled(), which
    # today means a forced cancel: a plain cancel of a ready mirror is only
    # requested (job_cancel_requested), so a stop during its final sync still
    # pauses it (standby) until resumed, and it then completes without the
    # pivot.  In 2012 any cancel kept a job from pausing.
    guest = {"guest": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "rate-iops": 2000}}
    sim, r = simulate(mirror_case(
        on_target_error="stop", drive=STOP_DRIVE, workloads=guest, duration="2s",
        faults=[fault("dst", "write", start="0.5s", count="once")],
        actions=[at("0.5s", "block-job-cancel", device=JOB),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.05s", device=JOB)]),
        profile=profile)
    if profile == RFC:
        assert timeline(r) == [ready("vda"), err("write", "stop", device="vda"),
                               completed(None, device="vda")]
        assert refusals(r) == [("block-job-resume", "Block job 'job0' not found")]
    else:
        assert timeline(r) == [*st("created", "running", "ready"), ready(),
                               err("write", "stop"), *st("standby", "ready", "waiting", "pending"),
                               completed(None), *st("concluded", "null")]
        assert refusals(r) == []
    job = job_summary(r)
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")
    assert sim.drives["vda"].node is sim.devices["src"]          # no pivot
    assert violations(r) == []


# -- io-status: first error sticks (today) vs ranked (2012) ------------------------------------

def two_errors(first: str, second: str, side: str = "target") -> dict:
    # 128 KiB copies, 16 in flight: the target writes (or source reads) at 0
    # and at 1 MiB fail in the same burst, the one at 0 first.  Both stop the
    # job before anyone resumes it.
    image, operation = ("dst", "write") if side == "target" else ("src", "read")
    return mirror_case(
        buf_size=2 * MiB, on_target_error="stop", on_source_error="stop",
        drive={"rerror": "stop", "werror": "enospc"},
        faults=[fault(image, operation, first, offset=0, length=4096, count="once"),
                fault(image, operation, second, offset=MiB, length=4096, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 COMPLETE_ON_READY])


SET_RESET = [("ok", "nospace", "set"), ("nospace", "ok", "reset")]
FAILED_RESET = [("ok", "failed", "set"), ("failed", "ok", "reset")]


@pytest.mark.parametrize("profile, side, first, second, expected, history", [
    # today: the first error sticks until the resume, whichever node failed
    (None, "target", "ENOSPC", "EIO", "nospace", SET_RESET),
    (None, "target", "EIO", "ENOSPC", "failed", FAILED_RESET),
    (None, "source", "ENOSPC", "EIO", "nospace", SET_RESET),
    (None, "source", "EIO", "ENOSPC", "failed", FAILED_RESET),
    # 2012, errors on the job's own device (the source): ranked by the enum's
    # values, ok < failed < nospace (the note's code, not its comment)
    (RFC, "source", "ENOSPC", "EIO", "nospace", SET_RESET),
    (RFC, "source", "EIO", "ENOSPC", "nospace", [("ok", "failed", "set"),
                                                 ("failed", "nospace", "set"),
                                                 ("nospace", "ok", "reset")]),
    # 2012, errors on the target: the job's io-status is never set
    (RFC, "target", "ENOSPC", "EIO", "ok", []),
    (RFC, "target", "EIO", "ENOSPC", "ok", []),
])
def test_job_iostatus_with_two_errors(profile, side, first, second, expected, history):
    sim, r = simulate(two_errors(first, second, side), profile=profile)
    device = "vda" if profile == RFC else JOB
    operation = "write" if side == "target" else "read"
    assert timeline(r, "BLOCK_JOB_ERROR") == [err(operation, "stop", device=device)] * 2
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["paused"], info["io-status"]) == (True, expected)
    assert [(old, new, why) for _t, old, new, why in sim.jobs[JOB].iostatus.history] == history
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["io_status"]) == ("completed", "identical", "ok")
    assert [v for v in violations(r) if v["invariant"] == "iostatus-sticky"] == []


@pytest.mark.parametrize("first, second, expected", [("ENOSPC", "EIO", "nospace"),
                                                     ("EIO", "ENOSPC", "failed")])
def test_a_2012_target_error_sets_the_targets_iostatus_first_error_sticking(
        first, second, expected):
    # bdrv_iostatus_set_err (the device rule): the first error sticks, and
    # the job's resume (block_job_resume) leaves it; only cont resets it.
    sim, r = simulate(two_errors(first, second, "target"), profile=RFC)
    target = sim.devices["dst"].iostatus
    assert [(old, new, why) for _t, old, new, why in target.history] == [("ok", expected, "set")]
    assert r.summary["images"]["dst"]["io_status"] == expected
    assert r.summary["images"]["src"]["io_status"] == "ok"
    assert r.summary["drives"]["vda"]["io_status"] == "ok"
    # ... and cont resets it (2012's qmp_cont reset every BlockDriverState).
    scenario = two_errors(first, second, "target")
    scenario["actions"].append(at("3s", "cont"))
    sim, r = simulate(scenario, profile=RFC)
    assert r.summary["images"]["dst"]["io_status"] == "ok"
    assert [why for _t, _o, _n, why in sim.devices["dst"].iostatus.history] == ["set", "reset"]


# -- the 2012 start check ---------------------------------------------------------------------

@pytest.mark.parametrize("job, param", [
    ({"type": "mirror", "on_target_error": "stop"}, "on-target-error"),
    ({"type": "mirror", "on_target_error": "enospc"}, "on-target-error"),
    ({"type": "mirror", "on_source_error": "stop"}, "on-source-error"),
    ({"type": "mirror", "on_source_error": "enospc"}, "on-source-error"),
    ({"type": "stream", "on_error": "stop"}, "on-error"),
    ({"type": "stream", "on_error": "enospc"}, "on-error"),
])
@pytest.mark.parametrize("drive", [
    {},                                                # rerror=report, werror=enospc
    {"rerror": "stop", "werror": "report"},
    {"rerror": "report", "werror": "stop"},
    {"rerror": "ignore", "werror": "enospc"},
])
def test_rfc_refuses_a_stop_policy_on_a_drive_that_cannot_stop(job, param, drive):
    job = dict(job)
    build = mirror_case if job.pop("type") == "mirror" else stream_case
    scenario = build(drive=drive, **job)
    r = simulate(scenario, profile=RFC)[1]
    [start] = r.commands
    assert start["execute"] == ("drive-mirror" if build is mirror_case else "block-stream")
    assert start["error"] == {"class": "GenericError", "desc": f"Invalid parameter '{param}'"}
    assert r.events == []                                      # the job never started
    summary = job_summary(r)
    assert (summary["outcome"], summary["final_status"], summary["bytes_copied"]) == \
        ("refused", "none", 0)
    # Today's QEMU takes the same job on the same drive.
    today = simulate(scenario)[1]
    assert "error" not in today.commands[0]
    assert job_summary(today)["outcome"] != "refused"


@pytest.mark.parametrize("werror", ["stop", "enospc"])
@pytest.mark.parametrize("policy", ["stop", "enospc"])
def test_rfc_accepts_a_stop_policy_on_a_drive_that_can_stop(policy, werror):
    r = simulate(mirror_case(on_target_error=policy, on_source_error=policy,
                             drive={"rerror": "stop", "werror": werror},
                             actions=[COMPLETE_ON_READY]), profile=RFC)[1]
    assert "error" not in r.commands[0]
    assert timeline(r) == [ready(device="vda"), completed(None, device="vda")]


def test_rfc_accepts_report_and_ignore_on_any_drive():
    r = simulate(mirror_case(on_target_error="ignore", on_source_error="report",
                             actions=[COMPLETE_ON_READY]), profile=RFC)[1]
    assert job_summary(r)["outcome"] == "completed"


# -- query-block-jobs -------------------------------------------------------------------------

@pytest.mark.parametrize("profile, expected", [
    # 1.25 s into a 1 MiB/s stream: three 512 KiB chunks done, sleeping in the
    # rate limit (not busy).
    (None, {"type": "stream", "device": JOB, "len": SIZE, "offset": 3 * MiB // 2, "busy": False,
            "paused": False, "speed": MiB, "io-status": "ok", "ready": False,
            "status": "running", "auto-finalize": True, "auto-dismiss": True}),
    (RFC, {"type": "stream", "device": "vda", "len": SIZE, "offset": 3 * MiB // 2, "paused": False,
           "speed": MiB, "io-status": "ok"}),
])
def test_query_block_jobs_fields(profile, expected):
    r = simulate(stream_case(speed=MiB, actions=[{"at": "1.25s", "command": "query-block-jobs"}]),
                 profile=profile)[1]
    assert commands(r, "query-block-jobs")[0]["return"] == [expected]


# -- rules of the note's code the profile follows (model/profile.py, one flag each) ----------

@pytest.mark.parametrize("build, job, param", [
    (mirror_case, {"on_target_error": "auto"}, "on-target-error"),
    (mirror_case, {"on_source_error": "auto"}, "on-source-error"),
    (stream_case, {"on_error": "auto"}, "on-error"),
])
def test_rfc_refuses_the_auto_policy(build, job, param):
    # job_policy_auto: the note's switch (on_err) knows enospc, stop, report
    # and ignore only; 2012's QAPI refused an unknown enum value.
    scenario = build(drive=STOP_DRIVE, **job)
    r = simulate(scenario, profile=RFC)[1]
    [start] = r.commands
    assert start["error"] == {"class": "GenericError", "desc": f"Invalid parameter '{param}'"}
    assert (r.events, job_summary(r)["outcome"]) == ([], "refused")
    assert "error" not in simulate(scenario)[1].commands[0]


@pytest.mark.parametrize("key", ["auto-finalize", "auto-dismiss"])
def test_rfc_refuses_the_job_api_of_2_12(key):
    # job_api_2_12: no auto-finalize / auto-dismiss options in 2012...
    r = simulate(mirror_case(**{key.replace("-", "_"): False}), profile=RFC)[1]
    assert r.commands[0]["error"]["desc"] == f"Invalid parameter '{key}'"
    assert job_summary(r)["outcome"] == "refused"


def test_rfc_has_no_job_commands_of_2_12():
    # ... and no job-* or block-job-finalize/dismiss commands: the 2012
    # monitor answered CommandNotFound.  block-job-pause/resume/cancel/
    # complete/set-speed came with the note's series and are there.
    names = ["job-pause", "job-resume", "job-cancel", "job-complete", "job-finalize",
             "job-dismiss", "block-job-finalize", "block-job-dismiss"]
    actions = [at("0.001s", name, id=JOB) for name in names]
    actions.append(at("0.001s", "block-job-pause", device=JOB))
    r = simulate(mirror_case(speed=MiB, actions=actions), profile=RFC)[1]
    assert refusals(r) == [(name, f"The command {name} has not been found") for name in names]
    assert [c["error"]["class"] for c in r.commands if "error" in c] == ["CommandNotFound"] * 8
    today = simulate(mirror_case(speed=MiB, actions=actions))[1]
    assert all(desc != f"The command {name} has not been found"
               for name, desc in refusals(today))


def test_rfc_has_no_commands_newer_than_qemu_1_3():
    # Profile.newer_commands: QEMU 1.3's monitor had no
    # query-named-block-nodes (2.0), block-set-write-threshold (2.3) nor
    # blockdev-mirror (2.6): CommandNotFound.  Its mirror starts with
    # drive-mirror, so the record names that command.
    names = ["query-named-block-nodes", "block-set-write-threshold"]
    actions = [at("0.001s", "query-named-block-nodes"),
               at("0.001s", "block-set-write-threshold", **{"node-name": "src",
                                                            "write-threshold": MiB})]
    sim, r = simulate(mirror_case(speed=MiB, actions=actions, start="manual"), profile=RFC)
    assert refusals(r) == [(name, f"The command {name} has not been found") for name in names]
    assert [c["error"]["class"] for c in r.commands if "error" in c] == ["CommandNotFound"] * 2
    assert sim.monitor.execute("blockdev-mirror", {"job-id": JOB}) is None
    assert sim.monitor.commands[-1]["error"] == {
        "class": "CommandNotFound", "desc": "The command blockdev-mirror has not been found"}
    sim.monitor.execute("drive-mirror", {"job-id": JOB})
    assert "error" not in sim.monitor.commands[-1] and sim.jobs[JOB].status == "running"
    r = simulate(mirror_case(speed=MiB), profile=RFC)[1]
    assert r.commands[0]["execute"] == "drive-mirror" and "error" not in r.commands[0]
    today = simulate(mirror_case(speed=MiB, actions=actions))[1]
    assert [c["execute"] for c in today.commands if "error" not in c] == [
        "blockdev-mirror", "query-named-block-nodes", "block-set-write-threshold"]


def test_rfc_resume_resets_the_iostatus_of_a_job_that_is_not_paused():
    # The note's block_job_resume sets io-status OK unconditionally: after a
    # cancel has unpaused an error-stopped job, a resume still resets it.
    sim, r = simulate(mirror_case(
        on_source_error="stop", drive=STOP_DRIVE,
        faults=[fault("src", "read", offset=MiB, length=4096, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.5s", device=JOB),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.5s", device=JOB),
                 on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s")]), profile=RFC)
    assert refusals(r) == []
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["paused"], info["io-status"]) == (False, "ok")
    assert [why for _t, _o, _n, why in sim.jobs[JOB].iostatus.history] == ["set", "reset"]
    assert timeline(r) == [err("read", "stop", device="vda"), cancelled(device="vda")]
