"""The stream job (QEMU's block-stream) under I/O faults.

SEMANTICS.md: stream has a single ``on-error`` and always reports
``operation: read``, even when the write into the top image failed.
``report`` fails the job (aborting, BLOCK_JOB_COMPLETED with the error);
``ignore`` skips the chunk, runs to the end and completes *with* the first
error, keeping the backing file; ``stop`` pauses only the job (io-status
``failed`` or ``nospace``), and a resume retries the same chunk; ``enospc``
stops on ENOSPC and reports anything else.
"""

import pytest

from jobcases import (
    EIO, ENOSPC, JOB, MiB, SIZE, at, commands, completed, err, event, event_time, fault,
    job_summary, on, refusals, simulate, st, stream_case, timeline, violations,
)

CHUNK = 512 * 1024                     # blocksim.jobs.stream.STREAM_CHUNK, as in QEMU
FAULT_AT = MiB + 4096                  # inside the third chunk, [1 MiB, 1.5 MiB)
ERRNO_TEXT = {"EIO": EIO, "ENOSPC": ENOSPC}

# Where the fault is: a read of the backing image, or the copy's write into
# the top image.  Both are reported as `read`.
SITES = {"backing-read": ("base", "read"), "top-write": ("top", "write")}


def resolved(policy: str, errno: str) -> str:
    if policy == "enospc":
        return "stop" if errno == "ENOSPC" else "report"
    return policy


def policy_case(site: str, policy: str, errno: str) -> dict:
    image, operation = SITES[site]
    return stream_case(
        on_error=policy,
        faults=[fault(image, operation, errno, offset=FAULT_AT, length=4096, count="once")],
        actions=[
            # what a management layer would see while the job is paused ...
            on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
            on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
            # ... and right after resuming it
            on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1.0001s"),
        ])


@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("policy", ["report", "ignore", "stop", "enospc"])
@pytest.mark.parametrize("site", sorted(SITES))
def test_on_error_policy(site, policy, errno):
    sim, r = simulate(policy_case(site, policy, errno))
    action = resolved(policy, errno)
    text = ERRNO_TEXT[errno]
    job = job_summary(r)
    top = sim.devices["top"]
    queries = [c["return"] for c in commands(r, "query-block-jobs")]

    # The error is announced first, with the job id, `read` and the action
    # actually taken, never "enospc"; then the action's consequences.
    head = [*st("created", "running"), err("read", action)]
    if action == "report":
        tail = [*st("aborting"), completed(text), *st("concluded", "null")]
    elif action == "ignore":
        tail = [*st("aborting"), completed(text), *st("concluded", "null")]
    else:
        tail = [*st("paused", "running", "waiting", "pending"), completed(None),
                *st("concluded", "null")]
    assert timeline(r) == head + tail
    assert job["errors_by_action"] == {"report": 0, "ignore": 0, "stop": 0, action: 1}
    # Only the job reacts: the VM never stops.
    assert "STOP" not in r.event_names()
    assert r.summary["vm"] == {"final_state": "running", "time_paused": 0.0, "stops": 0}
    assert violations(r) == []

    if action == "report":
        # The job stops at the failing chunk and keeps its backing file.
        assert event(r, "BLOCK_JOB_COMPLETED") == {
            "type": "stream", "device": JOB, "len": SIZE, "offset": MiB, "speed": 0, "error": text}
        assert (job["outcome"], job["error"], job["bytes_copied"]) == \
            ("completed-with-error", text, MiB)
        assert top.backing is sim.devices["base"]
        assert queries == [[], []]                      # gone before anyone looked
    elif action == "ignore":
        # It ran to the end, skipping the chunk, then failed with the error.
        assert event(r, "BLOCK_JOB_COMPLETED") == {
            "type": "stream", "device": JOB, "len": SIZE, "offset": SIZE, "speed": 0, "error": text}
        assert (job["outcome"], job["error"], job["bytes_copied"]) == \
            ("completed-with-error", text, SIZE - CHUNK)
        assert top.backing is sim.devices["base"]       # the backing file stays
        assert not top.alloc.any_set(MiB // top.cluster_size, (MiB + CHUNK) // top.cluster_size)
        assert top.is_allocated(MiB + CHUNK, SIZE)
    else:
        status = "nospace" if errno == "ENOSPC" else "failed"
        paused, resumed = queries
        # Paused at the failing chunk with the error's io-status ...
        assert [(q["status"], q["paused"], q["io-status"], q["offset"]) for q in paused] == \
            [("paused", True, status, MiB)]
        # ... and after resume io-status is ok again and the offset did not move.
        assert [(q["status"], q["paused"], q["io-status"], q["offset"]) for q in resumed] == \
            [("running", False, "ok", MiB)]
        # The failed chunk was copied after the resume: every chunk exactly once,
        # the backing file dropped, the disk reading as before.
        assert job["bytes_copied"] == SIZE
        assert top.is_allocated(0, SIZE)
        assert top.backing is None
        assert (job["outcome"], job["error"], job["integrity"], job["io_status"]) == \
            ("completed", None, "identical", "ok")
        assert job["time_paused"] == pytest.approx(1.0)
        history = [(old, new, why) for _t, old, new, why in sim.jobs[JOB].iostatus.history]
        assert history == [("ok", status, "set"), (status, "ok", "reset")]
        assert event(r, "BLOCK_JOB_COMPLETED") == {
            "type": "stream", "device": JOB, "len": SIZE, "offset": SIZE, "speed": 0}


def test_success_status_sequence_and_dropped_backing_file():
    sim, r = simulate(stream_case())
    assert timeline(r) == [*st("created", "running", "waiting", "pending"), completed(None),
                           *st("concluded", "null")]
    assert event(r, "BLOCK_JOB_COMPLETED") == {
        "type": "stream", "device": JOB, "len": SIZE, "offset": SIZE, "speed": 0}
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["bytes_copied"]) == ("completed", "identical", SIZE)
    assert sim.devices["top"].backing is None
    assert sim.drives["vda"].node is sim.devices["top"]
    assert violations(r) == []


def test_only_chunks_not_in_the_top_image_are_copied():
    # The top image holds [3 MiB, 4 MiB) already: only 3 MiB are pulled up.
    sim, r = simulate(stream_case(top_data=[(3 * MiB, MiB)]))
    job = job_summary(r)
    assert (job["outcome"], job["bytes_copied"], job["offset"]) == ("completed", 3 * MiB, SIZE)
    assert job["integrity"] == "identical"


def test_base_keeps_the_layers_below_it():
    # top -> mid -> base; streaming down to `base` copies mid's data only and
    # leaves `base` as the new backing file.
    scenario = stream_case(base_data=[{"offset": 0, "length": MiB}], top_data=[(3 * MiB, MiB)],
                           base="base")
    scenario["images"]["mid"] = {"size": SIZE, "backing": "base",
                                 "data": [{"offset": MiB, "length": MiB}]}
    scenario["images"]["top"]["backing"] = "mid"
    sim, r = simulate(scenario)
    top = sim.devices["top"]
    job = job_summary(r)
    assert (job["outcome"], job["bytes_copied"], job["integrity"]) == ("completed", MiB, "identical")
    assert top.backing is sim.devices["base"]
    assert list(top.alloc.runs()) == [(16, 32), (48, 64)]     # mid's MiB and the top's own
    assert violations(r) == []


def test_thin_top_runs_out_of_space_then_extend_and_resume():
    # The top image's volume holds 1 MiB: the third chunk's copy fails with
    # ENOSPC.  enospc -> stop (reported as a read), io-status nospace; the
    # admin grows the volume, the job is resumed and finishes the copy.
    sim, r = simulate(stream_case(
        top_image={"capacity": MiB}, on_error="enospc",
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "thin-extend", delay="1s", image="top", capacity=SIZE),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="2s", device=JOB)]))
    assert timeline(r) == [*st("created", "running"), err("read", "stop"),
                           *st("paused", "running", "waiting", "pending"), completed(None),
                           *st("concluded", "null")]
    [paused] = commands(r, "query-block-jobs")[0]["return"]
    assert (paused["status"], paused["io-status"], paused["offset"]) == ("paused", "nospace", MiB)
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["bytes_copied"], job["io_status"]) == \
        ("completed", "identical", SIZE, "ok")
    assert sim.devices["top"].backing is None
    assert r.summary["images"]["top"]["allocated"] == SIZE
    assert "STOP" not in r.event_names()
    assert violations(r) == []


def test_persistent_fault_under_ignore_skips_every_failing_chunk():
    # Reads of the backing image fail over [1 MiB, 2 MiB): two chunks, two
    # errors, each `ignore`; the first error is the one the job ends with.
    sim, r = simulate(stream_case(on_error="ignore",
                                  faults=[fault("base", "read", offset=MiB, length=MiB)]))
    assert timeline(r) == [*st("created", "running"), err("read", "ignore"), err("read", "ignore"),
                           *st("aborting"), completed(EIO), *st("concluded", "null")]
    job = job_summary(r)
    assert (job["bytes_copied"], job["offset"]) == (SIZE - MiB, SIZE)
    assert sim.devices["top"].backing is sim.devices["base"]


def test_first_error_is_the_one_reported_under_ignore():
    # ENOSPC on the top image first, EIO on the backing image later: the
    # job completes with the first one.
    sim, r = simulate(stream_case(on_error="ignore", faults=[
        fault("top", "write", "ENOSPC", offset=0, length=4096, count="once"),
        fault("base", "read", "EIO", offset=3 * MiB, length=4096, count="once")]))
    assert timeline(r, "BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED") == [
        err("read", "ignore"), err("read", "ignore"), completed(ENOSPC)]


def test_guest_writes_during_the_stream_survive():
    # The guest keeps writing into the top image; the copy-on-read never
    # overwrites what the guest wrote, and the disk reads the same without
    # the backing file.
    workloads = {"g": {"drive": "vda", "rw": "randwrite", "bs": 4096, "rate-iops": 200}}
    sim, r = simulate(stream_case(speed=MiB, workloads=workloads))
    job = job_summary(r)
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")
    drive = r.summary["drives"]["vda"]
    assert drive["writes"] > 0
    assert (drive["corrupt_bytes"], drive["lost_bytes"]) == (0, 0)
    assert sim.devices["top"].backing is None
    assert violations(r) == []


# -- rate limiting ----------------------------------------------------------------------

@pytest.mark.parametrize("speed, seconds", [(MiB, 3.5), (2 * MiB, 1.75), (512 * 1024, 7.0)])
def test_speed_limits_the_copy_rate(speed, seconds):
    # QEMU's stream_run sleeps off the rate limit at the start of each
    # iteration, for what the chunks before it dispatched: the first of the
    # 8 chunks goes at once and nothing is slept after the last, so the 4 MiB
    # take 7 chunks' worth of time.  Unthrottled they take about 10 ms.
    r = simulate(stream_case(speed=speed, duration="30s"))[1]
    took = job_summary(r)["finished_at"]
    assert seconds <= took <= seconds * 1.02
    assert event(r, "BLOCK_JOB_COMPLETED")["speed"] == speed


def test_a_stream_resumed_early_copies_its_next_chunk_at_once():
    # At 1 MiB/s the first 512 KiB chunk stretches the rate limit's slice to
    # 0.5 s.  Paused at 0.1 s and resumed at 0.2 s, the stream copies its
    # next chunk at once: QEMU 7.2's stream_run sleeps once per chunk
    # (job_sleep_ns), an early wake ends that sleep, and nothing asks the
    # limiter again (block_job_ratelimit_sleep, which would, is QEMU 8.0's).
    # That chunk stretches the slice to 1 s, so the pause costs nothing.
    half = MiB // 2
    r = simulate(stream_case(speed=MiB, duration="10s", actions=[
        at("100ms", "block-job-pause", device=JOB), at("200ms", "block-job-resume", device=JOB),
        at("450ms", "query-block-jobs"), at("550ms", "query-block-jobs")]))[1]
    offsets = [c["return"][0]["offset"] for c in commands(r, "query-block-jobs")]
    assert offsets == [2 * half, 2 * half]
    job = job_summary(r)
    assert job["time_paused"] == pytest.approx(0.1)
    assert 3.5 <= job["finished_at"] <= 3.5 * 1.02
    assert timeline(r)[:4] == st("created", "running", "paused", "running")


def test_unthrottled_stream_is_fast():
    r = simulate(stream_case(duration="30s"))[1]
    assert job_summary(r)["finished_at"] < 0.1


def test_ignored_chunks_still_count_against_the_speed():
    # QEMU's stream_run charges a chunk it tried to copy to the rate limit even
    # when the copy failed and was ignored, so a run of failing chunks does not
    # speed the job up: 4 MiB at 1 MiB/s still take 3.5 s (seven chunks'
    # worth, see test_speed_limits_the_copy_rate).
    r = simulate(stream_case(speed=MiB, on_error="ignore", duration="30s",
                             faults=[fault("base", "read", offset=MiB, length=MiB)]))[1]
    job = job_summary(r)
    assert job["errors_by_action"]["ignore"] == 2
    assert 3.5 <= job["finished_at"] <= 3.57
    assert event_time(r, "BLOCK_JOB_COMPLETED") == pytest.approx(job["finished_at"], abs=1e-6)


def test_stop_then_resume_keeps_the_rate():
    # Paused 1 s by an error at about 1 s: the 4 MiB at 1 MiB/s end after ~5 s.
    r = simulate(stream_case(speed=MiB, on_error="stop", duration="30s",
                             faults=[fault("base", "read", offset=FAULT_AT, length=4096,
                                           count="once")],
                             actions=[on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s",
                                         device=JOB)]))[1]
    job = job_summary(r)
    assert job["time_paused"] == pytest.approx(1.0)
    assert 4.5 <= job["finished_at"] <= 5.5
    assert job["integrity"] == "identical"


def test_cancel_midway_keeps_the_backing_file():
    sim, r = simulate(stream_case(speed=MiB, actions=[at("1.5s", "block-job-cancel", device=JOB)]))
    assert timeline(r) == [*st("created", "running", "aborting"), ("BLOCK_JOB_CANCELLED", JOB),
                           *st("concluded", "null")]
    data = event(r, "BLOCK_JOB_CANCELLED")
    assert (data["len"], data["type"]) == (SIZE, "stream")
    assert 0 < data["offset"] < SIZE
    assert job_summary(r)["outcome"] == "cancelled"
    assert sim.devices["top"].backing is sim.devices["base"]


def test_a_cancel_during_a_chunk_ends_the_stream_when_the_chunk_does():
    # QEMU's job_sleep_ns returns at once for a cancelled job: a stream
    # cancelled while a chunk is in flight (50 ms reads and writes here)
    # ends when that chunk completes, without sleeping out the rate limit
    # that chunk earned (125 ms at 4 MiB/s).
    sim, r = simulate(stream_case(speed=4 * MiB, top_image={"latency": "50ms"},
                                  actions=[at("0.05s", "block-job-cancel", device=JOB)]))
    chunk_done = 2 * 0.050 + 2 * CHUNK / sim.devices["top"].bandwidth
    assert event_time(r, "BLOCK_JOB_CANCELLED") == pytest.approx(chunk_done, abs=1e-5)
    assert event(r, "BLOCK_JOB_CANCELLED")["offset"] == CHUNK
    assert job_summary(r)["outcome"] == "cancelled"


@pytest.mark.parametrize("new_speed, offset_after", [(2 * MiB, CHUNK), (8 * MiB, 2 * CHUNK)])
def test_a_lower_speed_lets_the_current_sleep_run_out(new_speed, offset_after):
    # After its first chunk, a stream at 4 MiB/s sleeps until 125 ms.  QEMU's
    # block_job_set_speed kicks the sleeping job only when the limit is raised
    # (or lifted): lowered at 50 ms, the job copies nothing more before
    # 125 ms; raised, it goes on at once.
    r = simulate(stream_case(speed=4 * MiB, actions=[
        at("0.05s", "block-job-set-speed", device=JOB, speed=new_speed),
        at("0.06s", "query-block-jobs")]))[1]
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["offset"], info["speed"]) == (offset_after, new_speed)


# -- what the job reads: runs of one allocation status (stream_run) ----------------------------
KiB = 1024


def test_a_fault_where_the_chain_holds_nothing_is_never_read():
    # the 512 KiB window [2 MiB, 2.5 MiB): the top holds its first 64 KiB,
    # the base its last 128 KiB, nothing holds what lies between.  QEMU asks
    # the top, then the base, for runs and reads only the base's run
    sim, r = simulate(stream_case(
        base_data=[{"offset": 2 * MiB + 384 * KiB, "length": 128 * KiB}],
        top_data=[(2 * MiB, 64 * KiB)],
        faults=[fault("base", "read", "EIO", offset=2 * MiB + 192 * KiB, length=512),
                fault("top", "read", "EIO", offset=2 * MiB, length=512)]))
    assert timeline(r) == [*st("created", "running", "waiting", "pending"), completed(None),
                           *st("concluded", "null")]
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["bytes_copied"]) == \
        ("completed", "identical", 128 * KiB)
    assert sim.devices["top"].backing is None


def test_a_fault_in_the_held_run_is_met_and_the_run_retried_after_resume():
    # the run copied is the base's [2.5 MiB, 3 MiB); a stop retries from its start
    sim, r = simulate(stream_case(
        base_data=[{"offset": 2 * MiB + 512 * KiB, "length": 512 * KiB}],
        faults=[fault("base", "read", "EIO", offset=2 * MiB + 768 * KiB, length=512,
                      count="once")],
        on_error="stop",
        actions=[on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB)]))
    assert timeline(r) == [*st("created", "running"), err("read", "stop"),
                           *st("paused", "running", "waiting", "pending"), completed(None),
                           *st("concluded", "null")]
    job = job_summary(r)
    assert (job["integrity"], job["bytes_copied"]) == ("identical", 512 * KiB)


def test_ignore_skips_only_the_failing_run():
    # base holds [0, 64 KiB) and [128 KiB, 192 KiB): two runs in the first
    # window; the first fails and is skipped, the second is copied
    sim, r = simulate(stream_case(
        base_data=[{"offset": 0, "length": 64 * KiB}, {"offset": 128 * KiB, "length": 64 * KiB}],
        faults=[fault("base", "read", "EIO", offset=0, length=512, count="once")],
        on_error="ignore"))
    job = job_summary(r)
    assert (job["outcome"], job["error"], job["bytes_copied"]) == \
        ("completed-with-error", EIO, 64 * KiB)
    top = sim.devices["top"]
    assert not top.is_allocated(0, 64 * KiB) and top.is_allocated(128 * KiB, 192 * KiB)
    assert top.backing is sim.devices["base"]


def test_the_rate_limit_counts_the_bytes_of_each_run():
    # four 64 KiB runs at 64 KiB/s: a second's sleep after each (the last
    # one's too, more of the disk follows), not 8 s for one 512 KiB window
    extents = [{"offset": k * 128 * KiB, "length": 64 * KiB} for k in range(4)]
    sim, r = simulate(stream_case(base_data=extents, speed=64 * KiB, duration="20s"))
    job = job_summary(r)
    assert job["outcome"] == "completed" and job["bytes_copied"] == 256 * KiB
    assert 3.9 < event_time(r, "BLOCK_JOB_COMPLETED") < 4.5


def test_a_stream_to_a_base_an_earlier_stream_dropped_is_refused():
    """blockdev.c qmp_block_stream: the base-node must be in the device's
    chain when the command runs; a full stream dropped it, so the second is
    refused (QEMU 7.2's text) and the top keeps no backing file (found by
    running QEMU: grammar 8, fz8-153; blocksim gave the top 'mid' again)."""
    scenario = stream_case(speed="4MiB")
    scenario["images"]["mid"] = {"size": 4 * MiB, "backing": "base"}
    scenario["images"]["top"]["backing"] = "mid"
    scenario["jobs"]["s2"] = {"type": "stream", "device": "vda", "base": "mid",
                              "start": "manual"}
    scenario["actions"] = [at("2s", "job-start", id="s2")]
    sim, r = simulate(scenario)
    assert job_summary(r)["outcome"] == "completed"
    assert job_summary(r, "s2")["outcome"] == "refused"
    assert refusals(r) == [("job-start", "Node 'mid' is not a backing image of 'top'")]
    assert sim.devices["top"].backing is None
