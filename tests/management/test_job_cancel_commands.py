"""What each cancel command asks of a job, as QEMU 7.2's QMP handlers do.

- ``job-cancel`` is always a forced cancel (job-qmp.c ``qmp_job_cancel`` calls
  ``job_user_cancel_locked(job, true, errp)``): it cancels a job paused by an
  error or by the user, and aborts a READY mirror (BLOCK_JOB_CANCELLED)
  instead of completing it;
- ``block-job-cancel`` takes ``force`` (default false) and, unforced, is
  refused while the job is user-paused (blockdev.c ``qmp_block_job_cancel``,
  ahead of the verb check);
- ``block-job-set-speed`` with a negative speed is refused with
  ``QERR_INVALID_PARAMETER_VALUE`` (blockjob.c ``block_job_set_speed_locked``).

Checked against QEMU 7.2 by scenarios/qemu/mirror-job-cancel-*.toml.
"""

import blocksim

from jobcases import (
    JOB, MiB, cancelled, commands, completed, err, fault, job_summary, mirror_case, on,
    ready, refusals, simulate, st, stream_case, timeline,
)

ABORT_TAIL = [*st("aborting"), cancelled(), *st("concluded", "null")]


def paused_by_error(**job):
    return dict(on_target_error="stop", faults=[fault("dst", "write", count="once")], **job)


def test_job_cancel_of_a_job_paused_by_an_error_is_forced():
    r = simulate(mirror_case(**paused_by_error(), actions=[
        on("BLOCK_JOB_ERROR", "job-cancel", delay="1s", id=JOB)]))[1]
    assert refusals(r) == []
    assert timeline(r) == [*st("created", "running"), err("write", "stop"),
                           *st("paused", "running")] + ABORT_TAIL
    assert job_summary(r)["outcome"] == "cancelled"


def test_job_cancel_of_a_stream_paused_by_an_error_is_forced():
    sim, r = simulate(stream_case(on_error="stop", faults=[fault("base", "read", count="once")],
                                  actions=[on("BLOCK_JOB_ERROR", "job-cancel", delay="1s",
                                              id=JOB)]))
    assert refusals(r) == []
    assert timeline(r) == [*st("created", "running"), err("read", "stop"),
                           *st("paused", "running")] + ABORT_TAIL
    assert sim.devices["top"].backing is sim.devices["base"]


def test_job_cancel_of_a_ready_mirror_aborts_without_pivot():
    r = simulate(mirror_case(actions=[on("BLOCK_JOB_READY", "job-cancel", delay="1s", id=JOB)]))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready()] + ABORT_TAIL
    assert (job_summary(r)["outcome"], job_summary(r)["pivoted"]) == ("cancelled", False)


def test_plain_block_job_cancel_of_a_ready_mirror_still_completes():
    r = simulate(mirror_case(actions=[on("BLOCK_JOB_READY", "block-job-cancel", delay="1s",
                                         device=JOB)]))[1]
    assert timeline(r) == [*st("created", "running", "ready"), ready(),
                           *st("waiting", "pending"), completed(None), *st("concluded", "null")]


def test_user_paused_standby_mirror_refuses_block_job_cancel_and_takes_job_cancel():
    # QEMU 7.2 (E1e): the plain block-job-cancel is refused; job-cancel takes
    # the job out of standby before its reply, then aborts it
    r = simulate(mirror_case(actions=[
        on("BLOCK_JOB_READY", "block-job-pause", delay="0.5s", device=JOB),
        on("BLOCK_JOB_READY", "block-job-cancel", delay="1s", device=JOB),
        on("BLOCK_JOB_READY", "job-cancel", delay="1.5s", id=JOB)]))[1]
    assert refusals(r) == [("block-job-cancel",
                            "The block job for device 'job0' is currently paused")]
    assert timeline(r) == [*st("created", "running", "ready"), ready(),
                           *st("standby", "ready")] + ABORT_TAIL


def _run_with_command_at(scenario: dict, t_ns: int, command: str, arguments: dict):
    sim = blocksim.Simulation(blocksim.load_scenario(scenario))

    def send():
        yield sim.env.timeout(t_ns)
        sim.monitor.execute(command, arguments)
    sim.env.process(send())
    return sim.run()


def test_negative_speed_is_refused_with_qemu_wording():
    r = _run_with_command_at(mirror_case(speed=MiB), 500_000_000,
                             "block-job-set-speed", {"device": JOB, "speed": -1})
    [record] = commands(r, "block-job-set-speed")
    assert record["error"] == {"class": "GenericError",
                               "desc": "Parameter 'speed' expects a non-negative value"}
    assert job_summary(r)["outcome"] == "ready"


def test_negative_speed_on_a_job_that_refuses_the_verb_gives_the_verb_refusal():
    # the verb check comes first (block_job_set_speed_locked)
    sim = blocksim.Simulation(blocksim.load_scenario(stream_case(auto_dismiss=False)))
    sim.run()
    assert sim.monitor.execute("block-job-set-speed", {"device": JOB, "speed": -1}) is None
    assert sim.monitor.commands[-1]["error"]["desc"] == \
        "Job 'job0' in state 'concluded' cannot accept command verb 'set-speed'"
