"""The mirror job (QEMU's blockdev-mirror, background mode) under I/O faults.

SEMANTICS.md: mirror applies ``on-source-error`` to read failures and
``on-target-error`` to write failures.  ``report`` fails the job once the
operations in flight are done; ``ignore`` re-dirties the range and retries it
(a one-shot fault still ends identical, a persistent one never gets READY);
``stop`` pauses only the job (``paused``, or ``standby`` when ready) with
io-status ``failed``/``nospace``, and resume retries the same range; an error
while ready never takes the job out of ready (no second BLOCK_JOB_READY).
"""

import pytest

import blocksim

from jobcases import (
    EIO, ENOSPC, JOB, KiB, MiB, SIZE, at, cancelled, collapse, commands, completed, err, event,
    event_time, fault, job_summary, mirror_case, on, ready, refusals, simulate, st, timeline, violations,
)

FAULT_AT = MiB + 4096                   # inside the second 1 MiB copy operation
ERRNO_TEXT = {"EIO": EIO, "ENOSPC": ENOSPC}
# (image with the fault, its operation, the job parameter that applies)
SIDES = {"source": ("src", "read", "on-source-error"),
         "target": ("dst", "write", "on-target-error")}
COMPLETE_ON_READY = on("BLOCK_JOB_READY", "block-job-complete", device=JOB)
GUEST = {"g": {"drive": "vda", "rw": "randwrite", "bs": 4096, "rate-iops": 100}}
SUCCESS_TAIL = [*st("waiting", "pending"), completed(None), *st("concluded", "null")]


def resolved(policy: str, errno: str) -> str:
    if policy == "enospc":
        return "stop" if errno == "ENOSPC" else "report"
    return policy


def with_backing_chain(scenario: dict, top_data) -> dict:
    """Put ``src`` over a fully written ``base``; ``top_data`` is src's own."""
    scenario["images"]["base"] = {"size": SIZE, "data": "full"}
    scenario["images"]["src"].update(backing="base", data=top_data)
    return scenario


@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("policy", ["report", "ignore", "stop", "enospc"])
@pytest.mark.parametrize("side", sorted(SIDES))
def test_error_policy(side, policy, errno):
    image, operation, param = SIDES[side]
    sim, r = simulate(mirror_case(
        **{param.replace("-", "_"): policy},
        faults=[fault(image, operation, errno, offset=FAULT_AT, length=4096, count="once")],
        actions=[COMPLETE_ON_READY,
                 on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1.0001s")]))
    action = resolved(policy, errno)
    text = ERRNO_TEXT[errno]
    job = job_summary(r)
    queries = [c["return"] for c in commands(r, "query-block-jobs")]
    head = [*st("created", "running"), err(operation, action)]

    assert job["errors_by_action"] == {"report": 0, "ignore": 0, "stop": 0, action: 1}
    assert "STOP" not in r.event_names()
    assert r.summary["vm"]["final_state"] == "running"
    assert violations(r) == []
    if action == "report":
        assert timeline(r) == head + [*st("aborting"), completed(text), *st("concluded", "null")]
        # The three other copies in flight finish before the job does.
        assert event(r, "BLOCK_JOB_COMPLETED") == {
            "type": "mirror", "device": JOB, "len": SIZE, "offset": SIZE - MiB, "speed": 0,
            "error": text}
        assert (job["outcome"], job["error"], job["pivoted"]) == ("completed-with-error", text, False)
        assert sim.drives["vda"].node is sim.devices["src"]
        assert queries == [[], []]
        return
    if action == "ignore":
        # The failed range was retried at once and the job converged.
        assert timeline(r) == head + [*st("ready"), ready()] + SUCCESS_TAIL
        assert queries == [[], []]
    else:
        assert timeline(r) == head + [*st("paused", "running", "ready"), ready()] + SUCCESS_TAIL
        status = "nospace" if errno == "ENOSPC" else "failed"
        paused, resumed = queries
        assert [(q["status"], q["paused"], q["ready"], q["io-status"]) for q in paused] == \
            [("paused", True, False, status)]
        assert [(q["status"], q["paused"], q["io-status"]) for q in resumed] == \
            [("running", False, "ok")]
        history = [(old, new, why) for _t, old, new, why in sim.jobs[JOB].iostatus.history]
        assert history == [("ok", status, "set"), (status, "ok", "reset")]
        # paused once the copies in flight are done (mirror_pause), resumed 1 s after the error
        assert job["time_paused"] == pytest.approx(1.0, abs=0.01)
    # Every range copied exactly once in the end (the failed one on its
    # retry), the drive now on the target, which reads as the source.
    assert event(r, "BLOCK_JOB_COMPLETED") == {
        "type": "mirror", "device": JOB, "len": SIZE, "offset": SIZE, "speed": 0}
    assert (job["outcome"], job["integrity"], job["pivoted"], job["bytes_copied"]) == \
        ("completed", "identical", True, SIZE)
    assert job["io_status"] == "ok"
    assert sim.drives["vda"].node is sim.devices["dst"]


def test_parallel_failures_each_emit_an_event():
    # The target fails every write: the four 1 MiB copies in flight fail
    # together, one BLOCK_JOB_ERROR each, and the job fails once.
    r = simulate(mirror_case(faults=[fault("dst", "write")]))[1]
    assert timeline(r) == [*st("created", "running"), *[err("write", "report")] * 4,
                           *st("aborting"), completed(EIO), *st("concluded", "null")]
    assert job_summary(r)["errors_by_action"]["report"] == 4


def test_a_stop_waits_for_the_copies_in_flight_before_pausing():
    # QEMU's mirror_pause waits for every operation in flight before the job
    # pauses: the four 1 MiB writes in flight all fail, and all report,
    # before JOB_STATUS_CHANGE paused (real QEMU 7.2 agrees:
    # scenarios/qemu/mirror-write-eio-stop-parallel.toml).
    faults = [fault("dst", "write", offset=k * MiB, length=512, count=1) for k in range(4)]
    r = simulate(mirror_case(faults=faults, on_target_error="stop", actions=[
        on("BLOCK_JOB_ERROR", "block-job-resume", delay="300ms", device=JOB),
        COMPLETE_ON_READY]))[1]
    assert timeline(r) == [*st("created", "running"), *[err("write", "stop")] * 4,
                           *st("paused", "running", "ready"), ready()] + SUCCESS_TAIL
    assert event_time(r, "JOB_STATUS_CHANGE", 2) >= event_time(r, "BLOCK_JOB_ERROR", 3)
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["time_paused"]) == \
        ("completed", "identical", pytest.approx(0.3, abs=0.01))


def test_success_sequence_and_pivot():
    sim, r = simulate(mirror_case(actions=[COMPLETE_ON_READY]))
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    assert event(r, "BLOCK_JOB_READY") == {
        "type": "mirror", "device": JOB, "len": SIZE, "offset": SIZE, "speed": 0}
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"]) == ("completed", True, "identical")
    assert r.summary["drives"]["vda"]["node"] == "dst"
    assert sim.drives["vda"].node is sim.devices["dst"]
    assert violations(r) == []


def test_ready_mirror_without_complete_stays_ready():
    r = simulate(mirror_case(duration="5s"))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready()]
    job = job_summary(r)
    assert (job["outcome"], job["final_status"], job["pivoted"]) == ("ready", "ready", False)


# -- stop -> resume -> complete on a thin target --------------------------------------

def test_thin_target_enospc_extend_resume_complete():
    # The target volume holds 2 MiB of the 4 MiB: the two copies beyond fail
    # with ENOSPC (one event each, both `stop` under enospc).  The admin grows
    # the volume, resumes the job, and completes it when ready.
    sim, r = simulate(mirror_case(
        target_image={"capacity": 2 * MiB}, on_target_error="enospc",
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "thin-extend", delay="1s", image="dst", capacity=SIZE),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="2s", device=JOB),
                 COMPLETE_ON_READY]))
    # both fail while in flight together: both report before the job pauses
    assert timeline(r) == [*st("created", "running"), err("write", "stop"), err("write", "stop"),
                           *st("paused", "running", "ready"), ready()] + SUCCESS_TAIL
    assert [(c["execute"], c.get("return")) for c in commands(r)] == [
        ("blockdev-mirror", {}),
        ("query-block-jobs", [{
            "type": "mirror", "device": JOB, "len": SIZE, "offset": 2 * MiB, "busy": False,
            "paused": True, "speed": 0, "io-status": "nospace", "ready": False,
            "status": "paused", "auto-finalize": True, "auto-dismiss": True}]),
        ("thin-extend", {"capacity": SIZE}),
        ("block-job-resume", {}),
        ("block-job-complete", {}),
    ]
    job = job_summary(r)
    assert (job["outcome"], job["pivoted"], job["integrity"], job["io_status"]) == \
        ("completed", True, "identical", "ok")
    assert job["errors_by_action"] == {"report": 0, "ignore": 0, "stop": 2}
    assert sim.drives["vda"].node is sim.devices["dst"]
    assert r.summary["images"]["dst"]["allocated"] == SIZE
    assert r.summary["vm"]["stops"] == 0
    assert violations(r) == []


# -- persistent fault under ignore --------------------------------------------------

def persistent_ignore(speed, actions=(), duration="20s"):
    # 64 KiB copies, one per iteration (buf-size 64 KiB); the target fails
    # writes of its second MiB forever.
    return mirror_case(speed=speed, buf_size=64 * KiB, on_target_error="ignore", duration=duration,
                       faults=[fault("dst", "write", offset=MiB, length=4096)],
                       actions=list(actions))


@pytest.mark.parametrize("speed", [2 * MiB, 4 * MiB])
def test_persistent_ignore_never_ready_until_cancelled(speed):
    r = simulate(persistent_ignore(speed, [at("5s", "query-block-jobs"),
                                           at("10s", "block-job-cancel", device=JOB)]))[1]
    assert collapse(timeline(r)) == [*st("created", "running"), err("write", "ignore"),
                                     *st("aborting"), cancelled(), *st("concluded", "null")]
    errors = timeline(r, "BLOCK_JOB_ERROR")
    assert set(errors) == {err("write", "ignore")}
    # The same 64 KiB range is retried for ever, throttled by the speed: after
    # the first pass (SIZE / speed seconds) about speed / 64 KiB per second.
    expected = (10 - SIZE / speed) * speed / (64 * KiB)
    assert 0.9 * expected <= len(errors) <= 1.1 * expected + 2
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["ready"], info["len"] - info["offset"]) == \
        ("running", False, 64 * KiB)
    job = job_summary(r)
    assert (job["outcome"], job["ready_at"], job["pivoted"]) == ("cancelled", None, False)


def test_persistent_ignore_outcome_is_never_ready():
    r = simulate(persistent_ignore(4 * MiB, duration="5s"))[1]
    assert "BLOCK_JOB_READY" not in r.event_names()
    job = job_summary(r)
    assert (job["outcome"], job["final_status"]) == ("never-ready", "running")
    assert job["errors_by_action"]["ignore"] > 200   # (64 KiB retried at 4 MiB/s for 4 s)
    assert set(timeline(r, "BLOCK_JOB_ERROR")) == {err("write", "ignore")}


# -- ready and standby ---------------------------------------------------------------

def test_stop_while_ready_goes_standby_and_back_without_second_ready():
    sim, r = simulate(mirror_case(
        on_target_error="stop", workloads=GUEST,
        faults=[fault("dst", "write", start="2s", count="once")],
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.5s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="1s", device=JOB),
                 at("5s", "block-job-complete", device=JOB)]))
    assert timeline(r) == [*st("created", "running", "ready"), ready(), err("write", "stop"),
                           *st("standby", "ready")] + SUCCESS_TAIL
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["ready"], info["paused"], info["io-status"]) == \
        ("standby", True, True, "failed")
    job = job_summary(r)
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)
    assert r.event_names().count("BLOCK_JOB_READY") == 1
    assert "STOP" not in r.event_names()
    assert violations(r) == []


def test_ignore_while_ready_stays_ready():
    r = simulate(mirror_case(
        on_target_error="ignore", workloads=GUEST,
        faults=[fault("dst", "write", start="2s", count=3)],
        actions=[at("5s", "block-job-complete", device=JOB)]))[1]
    assert collapse(timeline(r)) == [*st("created", "running", "ready"), ready(),
                                     err("write", "ignore")] + SUCCESS_TAIL
    job = job_summary(r)
    assert job["errors_by_action"]["ignore"] == 3
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")


def test_user_pause_while_ready_is_standby_and_complete_waits_for_resume():
    r = simulate(mirror_case(workloads=GUEST, actions=[
        at("1s", "block-job-pause", device=JOB), at("2s", "block-job-complete", device=JOB),
        at("2.5s", "query-block-jobs"), at("3s", "block-job-resume", device=JOB)]))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready(),
                           *st("standby", "ready")] + SUCCESS_TAIL
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["paused"], info["io-status"]) == ("standby", True, "ok")
    job = job_summary(r)
    assert 3.0 <= job["finished_at"] < 3.1
    assert (job["integrity"], job["time_paused"]) == ("identical", pytest.approx(2.0))


def test_guest_writes_while_ready_are_mirrored():
    sim, r = simulate(mirror_case(workloads=GUEST, actions=[at("5s", "block-job-complete",
                                                                device=JOB)]))
    job = job_summary(r)
    assert job["ready_at"] < 0.1
    # Every guest write after READY re-dirtied a 64 KiB granule that was copied again.
    assert job["bytes_copied"] > SIZE + 100 * 64 * KiB
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)
    drive = r.summary["drives"]["vda"]
    assert (drive["corrupt_bytes"], drive["lost_bytes"]) == (0, 0)
    assert violations(r) == []


# -- a guest writing during the copy -----------------------------------------------------

def test_rate_limited_mirror_converges_under_a_slow_guest():
    # 5 writes/s re-dirty 320 KiB/s of 64 KiB granules; the job copies 1 MiB/s.
    guest = {"g": {**GUEST["g"], "rate-iops": 5}}
    r = simulate(mirror_case(speed=MiB, workloads=guest, actions=[COMPLETE_ON_READY]))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    job = job_summary(r)
    assert job["bytes_copied"] > SIZE               # re-dirtied ranges were copied again
    assert event(r, "BLOCK_JOB_COMPLETED")["offset"] == job["bytes_copied"]
    assert job["ready_at"] > SIZE / MiB             # and that took longer than one pass
    assert (job["outcome"], job["integrity"]) == ("completed", "identical")
    assert r.summary["drives"]["vda"]["corrupt_bytes"] == 0
    assert violations(r) == []


def test_guest_dirtying_faster_than_the_job_copies_never_gets_ready():
    # 200 writes/s re-dirty 12.5 MiB/s; the job copies 1 MiB/s.
    guest = {"g": {**GUEST["g"], "rate-iops": 200}}
    r = simulate(mirror_case(speed=MiB, workloads=guest, duration="10s",
                             actions=[COMPLETE_ON_READY]))[1]
    assert timeline(r) == st("created", "running")
    job = job_summary(r)
    assert (job["outcome"], job["final_status"], job["ready_at"]) == ("never-ready", "running", None)
    assert job["len"] > job["offset"] > SIZE
    assert refusals(r) == []


# -- sync modes ------------------------------------------------------------------------------

def test_sync_full_copies_the_whole_chain():
    sim, r = simulate(with_backing_chain(
        mirror_case(sync="full", actions=[COMPLETE_ON_READY]), [{"offset": 0, "length": MiB}]))
    job = job_summary(r)
    assert (job["bytes_copied"], job["len"]) == (SIZE, SIZE)
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)
    assert sim.devices["dst"].backing is None
    assert r.summary["images"]["dst"]["allocated"] == SIZE


def test_sync_top_copies_only_the_top_layer():
    scenario = with_backing_chain(mirror_case(sync="top", actions=[COMPLETE_ON_READY]),
                                  [{"offset": 0, "length": MiB}])
    scenario["images"]["dst"]["backing"] = "base"      # the target shares the source's backing
    sim, r = simulate(scenario)
    job = job_summary(r)
    assert (job["bytes_copied"], job["len"]) == (MiB, MiB)
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)
    assert sim.devices["dst"].backing is sim.devices["base"]
    assert r.summary["images"]["dst"]["allocated"] == MiB
    assert sim.drives["vda"].node.chain() == [sim.devices["dst"], sim.devices["base"]]
    assert violations(r) == []


def test_sync_none_copies_only_new_writes():
    # The target is an overlay of the source; only what the guest writes
    # after the job started (ten 64 KiB writes) is copied.
    scenario = mirror_case(sync="none", actions=[
        at("1s", "guest-burst", drive="vda", rw="write", bs=64 * KiB, **{"number-ios": 10}),
        at("2s", "block-job-complete", device=JOB)])
    scenario["images"]["dst"]["backing"] = "src"
    sim, r = simulate(scenario)
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + SUCCESS_TAIL
    assert event(r, "BLOCK_JOB_READY")["len"] == 0            # nothing to copy at the start
    job = job_summary(r)
    assert job["bytes_copied"] == 10 * 64 * KiB
    assert r.summary["images"]["dst"]["allocated"] == 10 * 64 * KiB
    assert (job["outcome"], job["integrity"], job["pivoted"]) == ("completed", "identical", True)
    assert violations(r) == []


# -- rate limiting ------------------------------------------------------------------------------

@pytest.mark.parametrize("speed, seconds", [(MiB, 4.0), (2 * MiB, 2.0), (512 * KiB, 8.0)])
def test_speed_limits_the_copy_rate(speed, seconds):
    r = simulate(mirror_case(speed=speed, duration="30s"))[1]
    assert seconds * 0.9 <= job_summary(r)["ready_at"] <= seconds * 1.1
    assert event(r, "BLOCK_JOB_READY")["speed"] == speed


def test_speed_applies_to_small_copies_too():
    # 4 KiB granules and 64 KiB of buffer: many small operations, same rate.
    r = simulate(mirror_case(speed=MiB, granularity=4096, buf_size=64 * KiB, duration="30s"))[1]
    assert 3.6 <= job_summary(r)["ready_at"] <= 4.4


def test_a_ready_mirror_copies_at_the_devices_speed_whatever_its_speed():
    # QEMU's mirror_run sleeps off ``speed`` only before READY: at 1 MiB/s the
    # 4 MiB take 4 s to get ready, but the 4 MiB the guest rewrites at 5 s
    # are copied again within one 100 ms poll, and a complete then pivots at
    # once.  Throttled, the re-copy alone would take until 9 s.
    r = simulate(mirror_case(speed=MiB, duration="12s", actions=[
        at("5s", "guest-burst", drive="vda", rw="write", bs=64 * KiB, **{"number-ios": 64}),
        at("5.3s", "query-block-jobs"),
        at("5.5s", "block-job-complete", device=JOB)]))[1]
    job = job_summary(r)
    assert 3.6 <= job["ready_at"] <= 4.4
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["offset"], info["len"]) == ("ready", 2 * SIZE, 2 * SIZE)
    assert 5.5 <= job["finished_at"] < 5.51
    assert (job["outcome"], job["integrity"], job["bytes_copied"]) == ("completed", "identical",
                                                                      2 * SIZE)
    assert violations(r) == []


def test_writes_landing_during_the_flush_before_ready_are_copied_at_once():
    # The target's flush before READY takes 300 ms while the guest writes:
    # mirror_run then finds data dirty again and copies it rather than
    # sleeping its 100 ms poll first.
    r = simulate(mirror_case(
        workloads=GUEST, faults=[{"image": "dst", "operation": "flush", "type": "delay",
                                  "delay": "300ms"}],
        actions=[on("BLOCK_JOB_READY", "query-block-jobs", delay="20ms")], duration="2s"))[1]
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert info["status"] == "ready"
    assert info["offset"] >= SIZE + 16 * 64 * KiB       # ~30 writes during the flush, ~24 granules
    assert info["len"] - info["offset"] <= 3 * 64 * KiB  # (a few land in those 20 ms)


def test_a_mirror_resumed_early_copies_at_once():
    # At 1 MiB/s the first 1 MiB copy (one per iteration with buf-size 1 MiB)
    # stretches the slice to 1 s.  Paused at 0.1 s (once that copy is done)
    # and resumed at 0.2 s, the mirror copies its next MiB at once: QEMU
    # 7.2's job_sleep_ns ends early and nothing asks the limiter again
    # (block_job_ratelimit_sleep, which sleeps off the rest, is QEMU 8.0's).
    # That copy stretches the slice to 2 s, so READY still comes at 4 s.
    r = simulate(mirror_case(speed=MiB, buf_size=MiB, duration="10s", actions=[
        at("100ms", "block-job-pause", device=JOB), at("200ms", "block-job-resume", device=JOB),
        at("900ms", "query-block-jobs"), at("1100ms", "query-block-jobs")]))[1]
    offsets = [c["return"][0]["offset"] for c in commands(r, "query-block-jobs")]
    assert offsets == [2 * MiB, 2 * MiB]
    job = job_summary(r)
    assert job["time_paused"] == pytest.approx(0.1, abs=0.001)
    assert 3.6 <= job["ready_at"] <= 4.4


def test_unthrottled_mirror_is_fast():
    assert job_summary(simulate(mirror_case())[1])["ready_at"] < 0.1


def test_stop_error_pauses_a_job_sleeping_in_the_rate_limit():
    # At 1 MiB/s the job sleeps about 1 s after issuing each 1 MiB copy (one
    # per iteration with buf-size 1 MiB).  The second copy fails with `stop`
    # during that sleep: as QEMU's job_pause enters the job, it pauses right
    # away (not when the sleep would have ended), so a resume 0.5 s later
    # finds it paused.
    sim, r = simulate(mirror_case(
        speed=MiB, buf_size=MiB, on_target_error="stop",
        faults=[fault("dst", "write", offset=FAULT_AT, length=4096, count="once")],
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.1s"),
                 on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.5s", device=JOB),
                 COMPLETE_ON_READY]))
    assert timeline(r) == [*st("created", "running"), err("write", "stop"),
                           *st("paused", "running", "ready"), ready()] + SUCCESS_TAIL
    error_at = [e["timestamp"] for e in r.events if e["event"] == "BLOCK_JOB_ERROR"][0]
    paused_at = [e["timestamp"] for e in r.events if e["data"].get("status") == "paused"][0]
    assert paused_at == error_at
    [info] = commands(r, "query-block-jobs")[0]["return"]
    assert (info["status"], info["paused"], info["io-status"]) == ("paused", True, "failed")
    job = job_summary(r)
    assert job["time_paused"] == pytest.approx(0.5, abs=0.01)
    assert (job["integrity"], job["bytes_copied"]) == ("identical", SIZE)
    assert not r.violations


@pytest.mark.parametrize("bursts", [False, True])
def test_operations_in_flight_never_overlap(bursts, monkeypatch):
    """A guest rewriting the ranges being copied re-dirties them while their
    operations are in flight; the mirror must wait for those operations
    rather than copy the same range twice at once (as mirror.c does), both
    one operation at a time and in copy bursts (blocksim.engine.burst)."""
    import blocksim
    from blocksim.engine import burst
    from blocksim.jobs import mirror

    seen = {"issued": 0, "waited": 0, "job": None}

    class Checked(mirror.CopyOperation):
        __slots__ = ()

        def __init__(self, job, bit, end_bit, *args):
            assert bit not in job._ops       # (the same first bit: a shared key)
            ranges = sorted([(b, other.end_bit) for b, other in job._ops.items()]
                            + [(bit, end_bit)])
            for (_a, a_end), (b, _b_end) in zip(ranges, ranges[1:]):
                assert a_end <= b, f"operations overlap: {ranges}"
            seen["issued"] += 1
            seen["job"] = job
            super().__init__(job, bit, end_bit, *args)

    real_start = mirror.MirrorJob._start_iteration

    def watched_start(job):
        # the dirty run the iteration looks at overlaps an operation in flight
        bm = job.bitmap
        b = bm.next_dirty(job._cursor)
        n = bm.dirty_run(b, job.claim_bits)
        if any(op.bit < b + n and b < op.end_bit for op in job._ops.values()):
            seen["waited"] += 1
        return real_start(job)

    monkeypatch.setattr(mirror, "CopyOperation", Checked)
    monkeypatch.setattr(mirror.MirrorJob, "_start_iteration", watched_start)
    if not bursts:
        monkeypatch.setattr(burst, "applies", lambda job: False)
    # (the compiled bursts make no operation objects: the test of their
    # overlap rule is test_the_compiled_bursts_wait_for_overlaps_alike)
    monkeypatch.setattr(burst, "KERNEL", False)
    scenario = HOT_GRANULES
    result = blocksim.run(scenario)
    assert seen["issued"] > 100
    assert seen["waited"] > 0           # the overlap rule was exercised
    assert result.ok


def test_the_compiled_bursts_wait_for_overlaps_alike(monkeypatch):
    """The compiled bursts (blocksim.engine.burst_kernel) follow the overlap rule
    of the Python loop: the same run, byte for byte, in a scenario that
    exercises it (above)."""
    import blocksim
    from blocksim.engine import burst
    from equivalence import outcome

    from blocksim.engine import burst_kernel

    copies, runs = [], []
    real = burst_kernel._run

    def counting(st, *args):
        before = int(st[burst_kernel.TGT_WRITES])
        out = real(st, *args)
        copies.append(int(st[burst_kernel.TGT_WRITES]) - before)
        runs.append(out)
        return out
    with monkeypatch.context() as m:
        m.setattr(burst_kernel, "_run", counting)
        compiled = outcome(blocksim.Simulation(blocksim.load_scenario(HOT_GRANULES)))
    # the kernel ran the bursts, with the guest among its copies (it hands
    # them back where a copy waits for its buffer, 4 MiB of it: a queued
    # copy is the Python loop's, MirrorJob._queued)
    assert sum(copies) > 100 and burst_kernel.HAND_BACK in runs
    monkeypatch.setattr(burst, "KERNEL", False)
    python = outcome(blocksim.Simulation(blocksim.load_scenario(HOT_GRANULES)))
    assert compiled == python


HOT_GRANULES = {
    "name": "hot-granules", "duration": "3s",
    "images": {"src": {"size": "8MiB", "data": "full"},
               "dst": {"size": "8MiB", "latency": "2ms", "bandwidth": "50MiB"}},
    "drives": {"vda": {"image": "src"}},
    # a hot region of 32 granules, rewritten far faster than the target
    # copies it: its dirty runs are short, several copies are in flight at
    # once (4 MiB of buffer), and the next iteration often starts on one
    "workloads": {"g": {"drive": "vda", "rw": "randwrite", "bs": 4096,
                        "rate-iops": 5000, "size": "2MiB"}},
    "jobs": {JOB: {"type": "mirror", "device": "vda", "target": "dst",
                   "granularity": "64KiB", "buf-size": "4MiB"}},
}


# -- QEMU 7.2's mirror_iteration: operation sizes, the whole-disk bitmap -------------------

def _operations(scenario: dict) -> list[tuple[int, int, bool]]:
    """``(start, bytes, write-zeroes)`` of each operation a mirror issues,
    in order (one at a time: ``shortcuts=False``)."""
    import blocksim
    from blocksim.jobs import mirror

    ops = []
    real = mirror.MirrorJob._next_operation

    def recording(job):
        op = real(job)
        if op:
            ops.append((op.start, op.end - op.start, op.zero))
        return op
    mp = pytest.MonkeyPatch()
    mp.setattr(mirror.MirrorJob, "_next_operation", recording)
    try:
        blocksim.Simulation(blocksim.load_scenario(scenario), shortcuts=False).run()
    finally:
        mp.undo()
    return ops


# (buf-size, granularity, the copies' sizes), measured on QEMU 7.2 (research-fixes.md,
# item 3: trace mirror_one_iteration over a fully allocated 8 MiB source)
OPERATION_SIZES = [
    (16 * MiB, 64 * KiB, [MiB] * 8),
    (64 * MiB, 64 * KiB, [4 * MiB] * 2),
    (2 * MiB, MiB, [MiB] * 8),
    (MiB, 64 * KiB, [MiB] * 8),                   # MAX_IO_BYTES, not buf-size / 16
    (256 * KiB, 64 * KiB, [256 * KiB] * 32),
    (64 * KiB, 4 * KiB, [64 * KiB] * 128),
    (4 * KiB, MiB, [MiB] * 8),       # rounded up to a granule (mirror_start_job), not refused
]


@pytest.mark.parametrize("buf_size, granularity, sizes", OPERATION_SIZES,
                         ids=[f"buf{b // KiB}K-g{g // KiB}K" for b, g, _ in OPERATION_SIZES])
def test_copy_operation_sizes_follow_qemu(buf_size, granularity, sizes):
    # mirror_iteration copies a data extent in operations of MAX(buf-size / 16,
    # 1 MiB), no more than buf-size (mirror_co_read)
    ops = _operations(mirror_case(size=8 * MiB, buf_size=buf_size, granularity=granularity))
    assert [n for _start, n, zero in ops] == sizes
    assert not any(zero for *_rest, zero in ops)


def test_copies_take_at_most_granularity_times_iov_max():
    # mirror_co_read: MIN(buf_size, granularity * max_iov), max_iov being
    # IOV_MAX (1024, block/io.c) for file nodes: at a granularity of 512
    # bytes a copy is 512 KiB, not 1 MiB (from QEMU's source; not measured)
    ops = _operations(mirror_case(size=4 * MiB, granularity=512))
    assert [n for _start, n, _zero in ops] == [512 * KiB] * 8


def test_an_iteration_of_one_and_a_half_mib_copies_one_mib_then_half():
    # buf-size 1.5 MiB: each iteration claims 1.5 MiB, a 1 MiB copy (max_io)
    # then 512 KiB; QEMU measured 5 x 1 MiB and 6 x 512 KiB over 8 MiB (a
    # claim stops at granules still in flight)
    ops = _operations(mirror_case(size=8 * MiB, buf_size=3 * MiB // 2))
    sizes = [n for _start, n, _zero in ops]
    assert sum(sizes) == 8 * MiB
    assert (sizes.count(MiB), sizes.count(MiB // 2)) == (5, 6)


def test_copies_split_at_the_source_extents():
    # three 192 KiB extents: one 192 KiB copy each (block status), the
    # ranges between them written as zeroes
    extents = [{"offset": 0, "length": 192 * KiB}, {"offset": MiB, "length": 192 * KiB},
               {"offset": 2 * MiB, "length": 192 * KiB}]
    ops = _operations(mirror_case(size=4 * MiB, data=extents))
    assert [(s, n) for s, n, zero in ops if not zero] == [
        (0, 192 * KiB), (MiB, 192 * KiB), (2 * MiB, 192 * KiB)]


# 8 MiB, 1 MiB of data at 0 and at 4 MiB (research-fixes.md item 4)
PARTLY_ALLOCATED = [{"offset": 0, "length": MiB}, {"offset": 4 * MiB, "length": MiB}]


@pytest.mark.parametrize("discard, ready_len, ops", [
    # QEMU's default: mirror_dirty_init dirties the whole device, the unallocated
    # ranges become write-zeroes (no read)
    ("ignore", 8 * MiB, [(0, MiB, False), (MiB, 3 * MiB, True),
                         (4 * MiB, MiB, False), (5 * MiB, 3 * MiB, True)]),
    # the target can write zeroes with unmap: zeroed first, then only what is
    # allocated is copied
    ("unmap", 2 * MiB, [(0, MiB, False), (4 * MiB, MiB, False)]),
])
def test_full_mirror_len_depends_on_target_discard(discard, ready_len, ops):
    case = mirror_case(size=8 * MiB, data=PARTLY_ALLOCATED, target_image={"discard": discard},
                       actions=[at(0, "query-block-jobs")])
    r = simulate(case)[1]
    assert event(r, "BLOCK_JOB_READY")["len"] == ready_len
    assert _operations(case) == ops
    sim, r = simulate({**case, "actions": [on("BLOCK_JOB_READY", "block-job-complete",
                                              device=JOB)]})
    assert job_summary(r)["integrity"] == "identical"


@pytest.mark.parametrize("discard, ready_at", [("ignore", 8.0), ("unmap", 2.0)])
def test_zeroes_count_against_the_speed_unless_the_target_unmaps(discard, ready_at):
    # at 1 MiB/s: 8 MiB counted (QEMU measured READY after 8.0 s), or only
    # the 2 MiB copied (2.0 s); mirror_iteration's write_zeroes_ok
    r = simulate(mirror_case(size=8 * MiB, data=PARTLY_ALLOCATED, speed=MiB,
                             target_image={"discard": discard}))[1]
    assert job_summary(r)["ready_at"] == pytest.approx(ready_at, abs=0.02)


def test_an_unmap_target_is_zeroed_before_the_copy():
    # the zeroing pass (mirror_dirty_init) writes zeroes over the whole
    # target: a target write-zeroes fault anywhere fails it, with on-target-error
    r = simulate(mirror_case(size=8 * MiB, data=PARTLY_ALLOCATED, speed=MiB,
                             target_image={"discard": "unmap"}, on_target_error="ignore",
                             faults=[fault("dst", "write-zeroes", offset=6 * MiB, length=4096,
                                           count="once")]))[1]
    assert timeline(r, "BLOCK_JOB_ERROR") == [err("write", "ignore")]
    # (blkdebug fails the write-zeroes on the main loop's next turn)
    from blocksim.model.faults import MAIN_LOOP_TURN_NS
    assert event_time(r, "BLOCK_JOB_ERROR") == MAIN_LOOP_TURN_NS / 1e9
    # the failed piece dirties its range: the whole disk is then copied,
    # its unallocated 6 MiB as write-zeroes that do not count against the
    # speed (write_zeroes_ok): READY after the 2 MiB of data, at 1 MiB/s
    assert event(r, "BLOCK_JOB_READY")["len"] == 8 * MiB
    assert job_summary(r)["ready_at"] == pytest.approx(2.0, abs=0.02)


def test_rate_limited_mirror_issues_a_whole_iteration_before_sleeping():
    # 4 MiB at 4 MiB/s, the target failing a write at 2 MiB: QEMU 7.2 issues
    # the whole 16 MiB iteration at once and reports the error after 9 ms;
    # with buf-size 1 MiB one 1 MiB copy per iteration, after 510 ms
    # (research-fixes.md item 3, exp_ratelimit_burst)
    def first_error(**job):
        r = simulate(mirror_case(speed=4 * MiB, on_target_error="report", **job,
                                 faults=[fault("dst", "write", offset=2 * MiB, length=4096)]))[1]
        return event_time(r, "BLOCK_JOB_ERROR")
    assert first_error() < 0.05
    assert 0.5 <= first_error(buf_size=MiB) < 0.55


# -- the default granularity is the target's (mirror.c:mirror_start_job) ------------

SCATTERED = [{"offset": i * 256 * 1024, "length": 4096} for i in range(16)]


@pytest.mark.parametrize("target,granularity", [
    ({"cluster-size": "32KiB"}, 32 * 1024),
    ({"cluster-size": "4KiB"}, 4096),
    ({"cluster-size": "1KiB"}, 4096),           # clamped up to 4 KiB
    ({"cluster-size": "128KiB"}, 64 * 1024),    # clamped down to 64 KiB
    ({"format": "raw"}, 64 * 1024),             # raw reports no cluster size
])
def test_a_mirror_without_granularity_takes_the_targets_default(target, granularity):
    # bdrv_get_default_bitmap_granularity(target); real QEMU 7.2 agrees on
    # the 32 KiB case (scenarios/qemu/mirror-default-granularity-from-target:
    # READY's len 524288, ready at 3 s).  Each scattered 4 KiB extent of the
    # source dirties one granule of the bitmap.
    scenario = mirror_case(data=SCATTERED, source_image={"cluster-size": "4KiB"},
                           target_image={"discard": "unmap", **target}, speed="256KiB")
    sim, r = simulate(scenario)
    assert sim.jobs[JOB].granularity == granularity
    assert event(r, "BLOCK_JOB_READY")["len"] == 16 * granularity


def test_a_given_granularity_wins_over_the_targets():
    scenario = mirror_case(data=SCATTERED, source_image={"cluster-size": "4KiB"},
                           target_image={"discard": "unmap", "cluster-size": "32KiB"},
                           granularity="64KiB")
    sim, r = simulate(scenario)
    assert sim.jobs[JOB].granularity == 64 * 1024
    assert event(r, "BLOCK_JOB_READY")["len"] == 16 * 64 * 1024


# -- a target fault on the zeroes a mirror writes (blkdebug's iotypes) -------------------------
@pytest.mark.parametrize("operation, fails", [("write", False), ("write-zeroes", True)])
def test_a_write_rule_does_not_see_the_zeroes_a_full_mirror_writes(operation, fails):
    # a full mirror onto a target that cannot unmap writes zeroes where the
    # source holds nothing (mirror_iteration: MIRROR_METHOD_ZERO ->
    # blk_co_pwrite_zeroes); blkdebug fails them only under a write-zeroes rule
    sim, r = simulate(mirror_case(
        data=[{"offset": 0, "length": MiB}], on_target_error="report",
        faults=[fault("dst", operation, "EIO", offset=3 * MiB, length=512)],
        actions=[on("BLOCK_JOB_READY", "block-job-complete", device=JOB)]))
    job = job_summary(r)
    if fails:
        assert timeline(r)[2] == err("write", "report")
        assert (job["outcome"], job["error"]) == ("completed-with-error", EIO)
    else:
        assert "BLOCK_JOB_ERROR" not in r.event_names()
        assert (job["outcome"], job["integrity"]) == ("completed", "identical")


def _stop_then_report(shortcuts: bool):
    """A 16 MiB copy in flight (buf-size 256 MiB: operations of up to
    16 MiB), a 64 KiB copy whose read fails (stop) and a 64 KiB copy whose
    write fails (report), both failing long before the 16 MiB copy is done
    (scenarios/qemu/mirror-stop-then-report-waits-for-oldest-copy)."""
    scenario = mirror_case(
        size=17 * MiB, data=[{"offset": 0, "length": 16 * MiB + 64 * KiB},
                             {"offset": 16 * MiB + 128 * KiB, "length": 64 * KiB}],
        buf_size=256 * MiB, on_source_error="stop", on_target_error="report", duration="3s",
        faults=[fault("src", "read", offset=16 * MiB, length=512),
                fault("dst", "write", offset=16 * MiB + 128 * KiB, length=512)])
    return blocksim.Simulation(blocksim.load_scenario(scenario), shortcuts=shortcuts).run()


@pytest.mark.parametrize("shortcuts", [True, False])
def test_the_loop_waits_for_its_oldest_copy_so_a_report_after_a_stop_ends_the_job(shortcuts):
    # QEMU's mirror_wait_for_free_in_flight_slot waits on the first copy of
    # ops_in_flight: the failed copies wake nobody, the stop's pause is never
    # reached (s->ret is checked first at the loop's top) and the job aborts.
    # A loop woken by any copy would pause at the first error (and only fail
    # after a resume).  Real QEMU 7.2 agrees.
    r = _stop_then_report(shortcuts)
    assert timeline(r) == [*st("created", "running"), err("read", "stop"),
                           err("write", "report"), *st("aborting"), completed(EIO),
                           *st("concluded", "null")]
    # it ended when the 16 MiB copy was done, well after both errors
    assert event_time(r, "JOB_STATUS_CHANGE", 2) > event_time(r, "BLOCK_JOB_ERROR", 1) + 0.005


@pytest.mark.parametrize("target_size", [2 * MiB, 8 * MiB])
@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
def test_a_target_of_another_size_fails_the_job_as_it_starts(target_size, copy_mode):
    # mirror_run compares the lengths: blockdev-mirror succeeds, the job
    # fails at once with errp's message (real QEMU 7.2 agrees:
    # scenarios/qemu/mirror-target-size-differs)
    scenario = mirror_case(size=4 * MiB, copy_mode=copy_mode, duration="1s")
    scenario["images"]["dst"]["size"] = target_size
    r = simulate(scenario)[1]
    message = "Source and target image have different sizes"
    assert timeline(r) == [*st("created", "running", "aborting"), completed(message),
                           *st("concluded", "null")]
    assert event_time(r, "BLOCK_JOB_COMPLETED") == 0
    assert job_summary(r)["error"] == message


# -- QEMU 7.2's main loop: blkdebug fails on the next turn, the loop sleeps 0 ns --------------
def _copies_issued(scenario: dict, shortcuts: bool) -> tuple[list[int], object]:
    """The start of each operation a mirror issues (a copy's read or a
    write-zeroes submitted), in order, and the run's result.  (The faults
    make the nodes never quiet: every operation goes through these.)"""
    from blocksim.jobs import mirror
    starts = []
    reals = mirror.CopyOperation.submit_read, mirror.CopyOperation.submit_zero

    def recording(real):
        def submit(op):
            starts.append(op.start)
            return real(op)
        return submit
    mirror.CopyOperation.submit_read, mirror.CopyOperation.submit_zero = map(recording, reals)
    try:
        result = blocksim.Simulation(blocksim.load_scenario(scenario),
                                     shortcuts=shortcuts).run()
    finally:
        mirror.CopyOperation.submit_read, mirror.CopyOperation.submit_zero = reals
    return starts, result


def _report_then_later_fault() -> dict:
    """scenarios/qemu/mirror-report-on-first-iteration-lets-a-second-out:
    iterations of 2 MiB; the first one's copy at 232 KiB fails its read
    (EIO: enospc reports it), the fourth's would fail with ENOSPC (stop)."""
    return mirror_case(
        size=8 * MiB, data=[{"offset": 32 * KiB, "length": 200 * KiB},
                            {"offset": 8088 * KiB, "length": 104 * KiB}],
        source_image={"cluster-size": "4KiB"},
        target_image={"cluster-size": "16KiB"}, granularity="4KiB", buf_size=2 * MiB,
        on_source_error="enospc", on_target_error="ignore", duration="3s",
        faults=[fault("src", "read", "EIO", offset=1152 * KiB, length=512, count="once"),
                fault("src", "read", "ENOSPC", offset=6804 * KiB, length=512, count="once")])


@pytest.mark.parametrize("shortcuts", [True, False])
def test_a_reported_error_lets_one_more_iteration_out(shortcuts):
    # The job runs from a command: its first sleep of 0 ns ends in the same
    # turn of the main loop, and the second iteration (2-4 MiB) goes out;
    # the second sleep, from the timers, ends on the next turn, after the
    # failed read (blkdebug's next turn) has set s->ret.  The third and
    # fourth iterations never go out.  Real QEMU 7.2 agrees (its trace:
    # two mirror_before_sleep, then the failed read).
    starts, r = _copies_issued(_report_then_later_fault(), shortcuts)
    assert timeline(r) == [*st("created", "running"), err("read", "report"), *st("aborting"),
                           completed(EIO), *st("concluded", "null")]
    assert max(starts) < 4 * MiB and any(s >= 2 * MiB for s in starts)
    # the failure came a main loop's turn after the read was issued
    from blocksim.model.faults import MAIN_LOOP_TURN_NS
    assert event_time(r, "BLOCK_JOB_ERROR") == MAIN_LOOP_TURN_NS / 1e9


def _buffer_short() -> dict:
    """scenarios/qemu/mirror-buffer-wait-lets-iterations-go-on: a 2 MiB
    buffer, copies of 1 MiB; the copy at 6016 KiB fails its write with
    ENOSPC (stop), the one at 11264 KiB with EIO (report)."""
    return mirror_case(
        size=16 * MiB, data=[{"offset": 4144 * KiB, "length": 200 * KiB},
                             {"offset": 5548 * KiB, "length": 64 * KiB},
                             {"offset": 6040 * KiB, "length": 10344 * KiB}],
        source_image={"cluster-size": "64KiB"},
        target_image={"cluster-size": "16KiB", "discard": "unmap"}, granularity="64KiB",
        buf_size=2 * MiB, on_source_error="enospc", on_target_error="enospc", duration="4s",
        faults=[fault("dst", "write", "ENOSPC", offset=6504 * KiB, length=512, count="once"),
                fault("dst", "write", "EIO", offset=11800 * KiB, length=512, count="once")])


@pytest.mark.parametrize("shortcuts", [True, False])
def test_copies_waiting_for_the_buffer_do_not_hold_the_loop(shortcuts):
    # mirror_co_read waits for its buffer in its own coroutine, not in
    # flight: the loop claims the whole disk meanwhile, and the pause after
    # the stop error waits for every copy, queued ones included, so the
    # later range's write fails too.  Real QEMU 7.2 agrees.
    from blocksim.jobs import mirror
    queued = []
    real = mirror.MirrorJob._next_operation

    def next_operation(job):
        op = real(job)
        if op not in (None, False) and op.awaits >= 0:
            queued.append((job.env.now, op.start))
        return op
    mirror.MirrorJob._next_operation = next_operation
    try:
        starts, r = _copies_issued(_buffer_short(), shortcuts)
    finally:
        mirror.MirrorJob._next_operation = real
    assert timeline(r) == [*st("created", "running"), err("write", "stop"),
                           err("write", "report"), *st("paused")]
    # every copy was booked before the first error, most of them queued
    first_error = event_time(r, "BLOCK_JOB_ERROR") * 1e9
    assert len(queued) >= 8 and max(t for t, _ in queued) < first_error
    assert max(starts) >= 15 * MiB
    assert sorted(starts) == sorted(set(starts))        # each issued once
