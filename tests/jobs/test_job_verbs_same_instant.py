"""What a command changes, as the next command at the same instant sees it.

From a QMP handler QEMU enters the job coroutine synchronously
(``job_enter_cond_locked`` -> ``aio_co_wake`` -> ``aio_co_enter``), so the job
runs until it yields again before the command returns:

- a resume (``job_user_resume_locked``) or a cancel of a paused job
  (``job_cancel_async_locked``) takes the job out of its pause point:
  JOB_STATUS_CHANGE running/ready comes *before* the reply;
- a pause (``job_user_pause_locked``) of an idle job (sleeping, no I/O of its
  own in flight) reaches its pause point at once: paused/standby before the
  reply; a busy job (a mirror with copies in flight: ``mirror_pause`` waits for
  them) stays ``running`` with ``paused: true`` until they are done;
- complete, set-speed and a plain cancel change no status before the reply;
- finalize, dismiss and a cancel while pending do their whole work inside
  the command (``job_finalize_locked``, ``job_dismiss_locked``,
  ``job_cancel_locked`` -> ``job_completed_txn_abort_locked``).

"Before the reply" is checked by recording, for each JOB_STATUS_CHANGE, how
many commands the monitor had recorded when it was emitted (a command's
record is appended once its handler returns; the job's start is the first).

Seen on QEMU 7.2 with each command and a query-block-jobs sent in one write
(a busy pause with the target behind a throttle filter); checked by the
scenarios/qemu/*-same-instant.toml cases.
"""

import pytest

import blocksim

from jobcases import (
    JOB, MiB, at, backup_case, cancelled, commands, completed, fault, job_summary, mirror_case, on,
    pending, simulate, st, stream_case, timeline,
)

SLOW = MiB
ABORT_TAIL = [*st("aborting"), cancelled(), *st("concluded", "null")]


def paused_by_error(**job):
    return dict(on_target_error="stop", faults=[fault("dst", "write", count="once")], **job)


def run_marked(scenario: dict):
    """Run; returns (result, [(status, commands recorded when it was emitted)])."""
    sim = blocksim.Simulation(blocksim.load_scenario(scenario))
    marks = []
    sim.log.subscribe("JOB_STATUS_CHANGE",
                      lambda e: marks.append((e["data"]["status"], len(sim.monitor.commands))))
    return sim.run(), marks


def query(r, n: int = 0) -> dict:
    [info] = commands(r, "query-block-jobs")[n]["return"]
    return info


# -- resume ----------------------------------------------------------------------------

@pytest.mark.parametrize("command, key", [("block-job-resume", "device"), ("job-resume", "id")])
def test_resume_is_visible_to_a_query_at_the_same_instant(command, key):
    r, marks = run_marked(mirror_case(**paused_by_error(), actions=[
        on("BLOCK_JOB_ERROR", command, delay="1s", **{key: JOB}),
        on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1s")]))
    info = query(r)
    assert (info["status"], info["paused"], info["io-status"]) == ("running", False, "ok")
    # 'running' is emitted inside the resume, before its record (QEMU: before the reply)
    assert marks[3] == ("running", 1)


def test_resume_of_a_standby_mirror_is_ready_before_the_reply():
    r, marks = run_marked(mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-pause", delay="0.5s", device=JOB),
        on("BLOCK_JOB_READY", "block-job-resume", delay="1s", device=JOB),
        on("BLOCK_JOB_READY", "query-block-jobs", delay="1s")]))
    assert (query(r)["status"], query(r)["paused"]) == ("ready", False)
    assert marks[3:5] == [("standby", 1), ("ready", 2)]


# -- pause -----------------------------------------------------------------------------

def test_pause_of_an_idle_job_is_visible_to_a_query_at_the_same_instant():
    # 4 MiB at 1 MiB/s: at 0.5 s the mirror sleeps off its rate limit, nothing in flight
    r, marks = run_marked(mirror_case(speed=SLOW, actions=[
        at("0.5s", "block-job-pause", device=JOB), at("0.5s", "query-block-jobs"),
        at("1s", "block-job-resume", device=JOB), at("1s", "query-block-jobs")]))
    assert [(query(r, n)["status"], query(r, n)["paused"], query(r, n)["busy"])
            for n in (0, 1)] == [("paused", True, False), ("running", False, True)]
    assert marks[2:4] == [("paused", 1), ("running", 3)]


def test_pause_of_an_idle_ready_mirror_is_standby_before_the_reply():
    r, marks = run_marked(mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-pause", delay="0.5s", device=JOB),
        on("BLOCK_JOB_READY", "query-block-jobs", delay="0.5s")]))
    assert (query(r)["status"], query(r)["paused"], query(r)["busy"]) == ("standby", True, False)
    assert marks[3] == ("standby", 1)


def test_pause_of_an_idle_stream_is_visible_at_once():
    r, marks = run_marked(stream_case(speed=SLOW, actions=[
        at("0.25s", "job-pause", id=JOB), at("0.25s", "query-block-jobs")]))
    assert (query(r)["status"], query(r)["paused"]) == ("paused", True)
    assert marks[2] == ("paused", 1)


@pytest.mark.parametrize("speed", [0, SLOW])
def test_pause_of_a_busy_mirror_waits_for_its_copies(speed):
    # target writes take 300 ms: at 100 ms the first copies are in flight
    # (with a speed, while the job sleeps off its rate limit), the job stays
    # running (paused: true) until they are done (mirror_pause)
    r, marks = run_marked(mirror_case(speed=speed, target_image={"latency": "300ms"}, actions=[
        at("100ms", "block-job-pause", device=JOB), at("100ms", "query-block-jobs"),
        at("200ms", "query-block-jobs"), at("1s", "query-block-jobs"),
        at("1s", "block-job-resume", device=JOB)]))
    assert [(query(r, n)["status"], query(r, n)["paused"], query(r, n)["busy"])
            for n in range(3)] == [("running", True, True), ("running", True, True),
                                  ("paused", True, False)]
    assert marks[2] == ("paused", 4)            # after the 200 ms query, by the job itself
    assert timeline(r)[:4] == st("created", "running", "paused", "running")


def test_pause_of_a_stream_copying_a_chunk_takes_effect_when_the_chunk_is_done():
    # As job_sleep_ns: a job asked to pause does not sleep off its rate limit
    # first.  Each chunk's read and write take 100 ms each; the pause at 50 ms
    # takes effect when the first chunk is written (200 ms), not after the
    # 0.5 s the limit then asks for.
    r = simulate(stream_case(speed=SLOW, base_image={"latency": "100ms"},
                             top_image={"latency": "100ms"},
                             actions=[at("50ms", "block-job-pause", device=JOB)]))[1]
    [paused] = [e for e in r.events if e["event"] == "JOB_STATUS_CHANGE"
                and e["data"]["status"] == "paused"]
    t = paused["timestamp"]["seconds"] + paused["timestamp"]["microseconds"] / 1e6
    assert t == pytest.approx(0.2, abs=0.01)


def test_pause_of_a_backup_waits_for_its_background_copy():
    # backup_pause cancels the block-copy call and waits for it: a backup
    # whose call has copies in flight is busy; one with sync=none has no
    # call (the filter copies) and pauses at once
    busy, busy_marks = run_marked(backup_case(target_image={"latency": "300ms"}, actions=[
        at("100ms", "block-job-pause", device=JOB), at("100ms", "query-block-jobs")]))
    idle, idle_marks = run_marked(backup_case(sync="none", actions=[
        at("100ms", "block-job-pause", device=JOB), at("100ms", "query-block-jobs"),
        at("200ms", "job-cancel", id=JOB)]))
    assert (query(busy)["status"], query(busy)["paused"]) == ("running", True)
    assert (query(idle)["status"], query(idle)["paused"]) == ("paused", True)
    # (after the start's own paused/running blip, emitted once the start is recorded)
    assert [m for m in busy_marks if m[0] == "paused"][1:] == [("paused", 3)]
    assert [m for m in idle_marks if m[0] == "paused"][1:] == [("paused", 1)]


def test_resume_then_pause_at_the_same_instant_pauses_again():
    r = simulate(mirror_case(speed=SLOW, actions=[
        at("0.5s", "block-job-pause", device=JOB), at("1s", "block-job-resume", device=JOB),
        at("1s", "block-job-pause", device=JOB), at("1s", "query-block-jobs"),
        at("2s", "block-job-resume", device=JOB)]))[1]
    assert query(r)["paused"] is True
    assert timeline(r)[:6] == st("created", "running", "paused", "running", "paused", "running")
    assert job_summary(r)["outcome"] == "ready"


# -- cancel ----------------------------------------------------------------------------

def test_forced_cancel_of_a_paused_job_leaves_the_pause_before_the_reply():
    r, marks = run_marked(mirror_case(**paused_by_error(), actions=[
        on("BLOCK_JOB_ERROR", "block-job-cancel", delay="1s", device=JOB, force=True),
        on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1s")]))
    assert query(r)["status"] == "running"           # aborting comes after the reply
    assert marks[3:5] == [("running", 1), ("aborting", 3)]


def test_plain_cancel_changes_no_status_before_the_next_command():
    r, marks = run_marked(mirror_case(speed=SLOW, actions=[
        at("0.5s", "block-job-cancel", device=JOB), at("0.5s", "query-block-jobs")]))
    assert query(r)["status"] == "running"
    assert marks[2] == ("aborting", 3)


def test_cancel_while_pending_aborts_inside_the_command():
    r, marks = run_marked(stream_case(auto_finalize=False, actions=[
        on("BLOCK_JOB_PENDING", "block-job-cancel", delay="1s", device=JOB),
        on("BLOCK_JOB_PENDING", "query-block-jobs", delay="1s")]))
    assert commands(r, "query-block-jobs")[0]["return"] == []
    assert timeline(r) == [*st("created", "running", "waiting", "pending"), pending()] \
        + ABORT_TAIL
    assert marks[4:] == [("aborting", 1), ("concluded", 1), ("null", 1)]


# -- complete, set-speed, finalize, dismiss -------------------------------------------------

def test_complete_changes_no_status_before_the_next_command():
    r, marks = run_marked(mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-complete", delay="10ms", device=JOB),
        on("BLOCK_JOB_READY", "query-block-jobs", delay="10ms")]))
    assert query(r)["status"] == "ready"
    assert marks[3] == ("waiting", 3)


def test_complete_in_standby_takes_effect_on_resume():
    # QEMU (E2c): complete is accepted in standby and does not enter the
    # paused job; the resume brings it back to ready before its reply
    r, marks = run_marked(mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-pause", delay="0.5s", device=JOB),
        on("BLOCK_JOB_READY", "block-job-complete", delay="1s", device=JOB),
        on("BLOCK_JOB_READY", "query-block-jobs", delay="1s"),
        on("BLOCK_JOB_READY", "block-job-resume", delay="2s", device=JOB)]))
    assert (query(r)["status"], query(r)["paused"]) == ("standby", True)
    assert marks[3:6] == [("standby", 1), ("ready", 4), ("waiting", 5)]
    assert job_summary(r)["pivoted"] is True


def test_set_speed_changes_no_status_and_does_not_wake_a_paused_job():
    r, marks = run_marked(mirror_case(speed=SLOW, actions=[
        at("0.5s", "block-job-pause", device=JOB),
        at("1s", "block-job-set-speed", device=JOB, speed=64 * MiB), at("1s", "query-block-jobs"),
        at("2s", "block-job-resume", device=JOB)]))
    info = query(r)
    assert (info["status"], info["paused"], info["busy"], info["speed"]) == \
        ("paused", True, False, 64 * MiB)
    assert marks[2:4] == [("paused", 1), ("running", 4)]


def test_finalize_completes_the_job_inside_the_command():
    r, marks = run_marked(mirror_case(auto_finalize=False, actions=[
        on("BLOCK_JOB_READY", "block-job-complete", device=JOB),
        on("BLOCK_JOB_PENDING", "block-job-finalize", delay="0.5s", id=JOB),
        on("BLOCK_JOB_PENDING", "query-block-jobs", delay="0.5s")]))
    assert commands(r, "query-block-jobs")[0]["return"] == []
    assert timeline(r)[-3:] == [completed(None), *st("concluded", "null")]
    assert marks[-2:] == [("concluded", 2), ("null", 2)]
    assert job_summary(r)["pivoted"] is True


def test_dismiss_removes_the_job_inside_the_command():
    r, marks = run_marked(stream_case(auto_dismiss=False, actions=[
        on("BLOCK_JOB_COMPLETED", "job-dismiss", delay="0.5s", id=JOB),
        on("BLOCK_JOB_COMPLETED", "query-block-jobs", delay="0.5s")]))
    assert commands(r, "query-block-jobs")[0]["return"] == []
    assert marks[-1] == ("null", 1)


# -- the exact shortcuts give the same runs ---------------------------------------------------

GUEST = {"g": {"drive": "vda", "rw": "randwrite", "bs": 4096, "rate-iops": 200}}

SHORTCUT_CASES = {
    "idle-pause-resume": mirror_case(speed=SLOW, workloads=GUEST, actions=[
        at("0.5s", "block-job-pause", device=JOB), at("0.5s", "query-block-jobs"),
        at("1s", "block-job-resume", device=JOB), at("1s", "block-job-pause", device=JOB),
        at("1.5s", "job-resume", id=JOB), on("BLOCK_JOB_READY", "job-pause", delay="0.3s", id=JOB),
        on("BLOCK_JOB_READY", "job-cancel", delay="0.6s", id=JOB)]),
    "busy-pause": mirror_case(target_image={"latency": "300ms"}, workloads=GUEST, actions=[
        at("100ms", "block-job-pause", device=JOB), at("100ms", "query-block-jobs"),
        at("1s", "block-job-resume", device=JOB),
        on("BLOCK_JOB_READY", "block-job-complete", device=JOB)]),
    "error-paused-job-cancel": mirror_case(**paused_by_error(speed=SLOW), workloads=GUEST, actions=[
        on("BLOCK_JOB_ERROR", "job-cancel", delay="1s", id=JOB),
        on("BLOCK_JOB_ERROR", "query-block-jobs", delay="1s")]),
    "pending-cancel-finalize": mirror_case(auto_finalize=False, auto_dismiss=False,
                                           workloads=GUEST, actions=[
        on("BLOCK_JOB_READY", "block-job-complete", delay="0.2s", device=JOB),
        on("BLOCK_JOB_PENDING", "block-job-finalize", delay="0.5s", id=JOB),
        on("BLOCK_JOB_COMPLETED", "job-dismiss", delay="0.5s", id=JOB)]),
    "stream-pause-busy": stream_case(speed=SLOW, base_image={"latency": "100ms"}, actions=[
        at("50ms", "block-job-pause", device=JOB), at("1s", "block-job-set-speed", device=JOB,
                                                     speed=4 * MiB),
        at("1.2s", "block-job-resume", device=JOB)]),
}


@pytest.mark.parametrize("name", sorted(SHORTCUT_CASES))
def test_the_shortcuts_give_the_same_run(name):
    from equivalence import outcome
    scenario = blocksim.load_scenario(SHORTCUT_CASES[name])
    runs = [outcome(blocksim.Simulation(scenario, shortcuts=s)) for s in (True, False)]
    assert runs[0] == runs[1]


def _stop_error_queries(faults) -> dict:
    """A mirror copying 1 MiB per iteration at 1 MiB/s (or 4 at once with
    the default buf-size and no speed), on-target-error stop, a query on the
    first BLOCK_JOB_ERROR and one 200 ms later."""
    return mirror_case(
        on_target_error="stop", faults=faults, duration="3s",
        actions=[on("BLOCK_JOB_ERROR", "query-block-jobs"),
                 on("BLOCK_JOB_ERROR", "query-block-jobs", delay="200ms")],
        **({"speed": SLOW, "buf_size": MiB} if len(faults) == 1 else {}))


def test_a_stop_error_of_the_last_copy_in_flight_is_paused_before_the_next_command():
    # block_job_error_action -> job_pause enters the sleeping mirror; the
    # failed copy was the only one in flight, so it reaches its pause point
    # before the monitor reads the query sent on the event (real QEMU 7.2:
    # scenarios/qemu/mirror-stop-error-query-same-instant).
    r = simulate(_stop_error_queries([fault("dst", "write", offset=2 * MiB, length=512,
                                            count="once")]))[1]
    assert [(query(r, n)["status"], query(r, n)["paused"], query(r, n)["io-status"])
            for n in (0, 1)] == [("paused", True, "failed")] * 2


def test_a_stop_error_with_copies_still_in_flight_is_running_until_they_are_done():
    # mirror_pause waits for the other three copies (QEMU shows the same in
    # most runs: which copy fails first is a race there)
    r = simulate(_stop_error_queries([fault("dst", "write", offset=n * MiB, length=512,
                                            count="once") for n in range(4)]))[1]
    assert [(query(r, n)["status"], query(r, n)["paused"]) for n in (0, 1)] == \
        [("running", True), ("paused", True)]
