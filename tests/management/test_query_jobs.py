"""``query-jobs``, the job API's query (job-qmp.c ``qmp_query_jobs``): each
job's id, type, status and progress, newest first, and ``error`` once the job
has one.  Checked against QEMU 7.2 by
scenarios/qemu/query-jobs-through-a-commit-and-a-stream.toml."""

from jobcases import JOB, at, commands, fault, mirror_case, on, refusals, simulate


def _returns(result) -> list:
    return [c["return"] for c in commands(result, "query-jobs")]


def test_query_jobs_follows_a_mirror_through_an_error_pause_ready_and_cancel():
    scenario = mirror_case(on_target_error="stop", auto_dismiss=False,
                           faults=[fault("dst", "write", count="once")],
                           actions=[on("BLOCK_JOB_ERROR", "query-jobs", delay="10ms"),
                                    on("BLOCK_JOB_ERROR", "block-job-resume", delay="20ms",
                                       device=JOB),
                                    on("BLOCK_JOB_READY", "query-jobs", delay="10ms"),
                                    on("BLOCK_JOB_READY", "job-cancel", delay="20ms", id=JOB),
                                    on("BLOCK_JOB_CANCELLED", "query-jobs", delay="10ms")])
    infos = _returns(simulate(scenario)[1])
    assert [[(i["id"], i["type"], i["status"], i.get("error")) for i in r] for r in infos] == [
        [(JOB, "mirror", "paused", None)],
        [(JOB, "mirror", "ready", None)],
        [(JOB, "mirror", "concluded", "Operation canceled")]]
    ready = infos[1][0]
    assert ready["current-progress"] == ready["total-progress"] > 0


def test_query_jobs_matches_query_block_jobs_progress_and_order():
    scenario = mirror_case(speed=1024 * 1024, size=64 * 1024 * 1024,
                           actions=[at("300ms", "query-jobs"), at("300ms", "query-block-jobs")])
    result = simulate(scenario)[1]
    (info,), (block,) = _returns(result)[0], commands(result, "query-block-jobs")[0]["return"]
    assert (info["current-progress"], info["total-progress"]) == (block["offset"], block["len"])
    assert 0 < info["current-progress"] < info["total-progress"]


def test_query_jobs_is_not_in_the_2012_monitor():
    result = simulate(mirror_case(actions=[at("100ms", "query-jobs")], profile="rfc-2012"))[1]
    assert refusals(result) == [("query-jobs", "The command query-jobs has not been found")]
