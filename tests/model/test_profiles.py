"""Today's QEMU (profile ``qemu``) against the 2012 design note (``rfc-2012``).

SEMANTICS.md, "The rfc-2012 profile": after a ``report`` error the job ends
with BLOCK_JOB_CANCELLED; BLOCK_JOB_ERROR names the drive; job io-status ranks
ok < nospace < failed; ``stop``/``enospc`` job policies need a drive with
rerror=stop and werror=stop|enospc, else the job is refused at start; there is
no status machine (no JOB_STATUS_CHANGE) and query-block-jobs shows only type,
device, len, offset, paused, speed, io-status.  A job's ``stop`` only pauses
the job, the VM keeps running.
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
    assert (info["paused"], info["io-status"]) == (True, "failed")
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

def two_errors(first: str, second: str) -> dict:
    # 128 KiB copies, 16 in flight: the writes at 0 and at 1 MiB fail in the
    # same burst, the one at 0 first.  Both stop the job before anyone resumes it.
    return mirror_case(
        buf_size=2 * MiB, on_target_error="stop", drive={"rerror": "stop", "werror": "enospc"},
        faults=[fault("dst", "write", first, offset=0, length=4096, count="once"),
                fault("dst", "write", second, offset=MiB, length=4096, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 COMPLETE_ON_READY])


@pytest.mark.parametrize("profile, first, second, expected, history", [
    # today: the first error sticks until the resume
    (None, "ENOSPC", "EIO", "nospace", [("ok", "nospace", "set"), ("nospace", "ok", "reset")]),
    (None, "EIO", "ENOSPC", "failed", [("ok", "failed", "set"), ("failed", "ok", "reset")]),
    # 2012: ranked, only moving up
    (RFC, "ENOSPC", "EIO", "failed", [("ok", "nospace", "set"), ("nospace", "failed", "set"),
                                      ("failed", "ok", "reset")]),
    (RFC, "EIO", "ENOSPC", "failed", [("ok", "failed", "set"), ("failed", "ok", "reset")]),
])
def test_job_iostatus_with_two_errors(profile, first, second, expected, history):
    sim, r = simulate(two_errors(first, second), profile=profile)
    device = "vda" if profile == RFC else JOB
    assert timeline(r, "BLOCK_JOB_ERROR") == [err("write", "stop", device=device)] * 2
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["paused"], info["io-status"]) == (True, expected)
    assert [(old, new, why) for _t, old, new, why in sim.jobs[JOB].iostatus.history] == history
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["io_status"]) == ("completed", "identical", "ok")
    assert [v for v in violations(r) if v["invariant"] == "iostatus-sticky"] == []


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
    assert start["execute"] == ("blockdev-mirror" if build is mirror_case else "block-stream")
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
