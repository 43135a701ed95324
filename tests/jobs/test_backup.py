"""The backup job (QEMU 7.2's blockdev-backup) and its copy-before-write filter.

Facts from /tmp/work/research-backup.md (QEMU source and experiments on
qemu-storage-daemon 7.2.22; each is also a scenarios/qemu/backup-* case):
the start blip (created, running, paused, running), one BLOCK_JOB_ERROR per
failed block-copy call, ``ignore`` retrying at once, ``stop`` + resume
copying what is still dirty from offset 0, a cancel always forced, the
filter copying old data before a guest write and breaking the guest write
when that copy fails (no job event), and the bitmap modes.
"""

import pytest

from jobcases import (
    EIO, JOB, SIZE, MiB, at, backup_case, cancelled, commands, completed, err, event, event_time,
    fault, job_summary, on, refusals, simulate, st, timeline, violations,
)

KiB = 1024
CLUSTER = 64 * KiB
START = st("created", "running", "paused", "running")
SUCCESS_END = st("waiting", "pending") + [completed()] + st("concluded", "null")


def burst(offset: int, time: str = "0.5s") -> dict:
    """One 4 KiB guest write at ``offset``, at ``time``."""
    return at(time, "guest-burst", drive="vda", rw="write", bs="4KiB", offset=offset,
              number_ios=1)


def gen_at(sim, image: str, offset: int) -> int:
    return sim.devices[image].read_content(offset, offset + 1)[0][2]


def job_timeline(r):
    return [e for e in timeline(r) if e[0] != "BLOCK_IO_ERROR"]


def test_a_full_backup_blips_at_start_and_copies_zeroes_without_reading():
    sim, r = simulate(backup_case())
    assert job_timeline(r) == START + SUCCESS_END
    done = event(r, "BLOCK_JOB_COMPLETED")
    assert done["type"] == "backup" and done["len"] == done["offset"] == 4 * MiB
    assert job_summary(r)["integrity"] == "identical"
    # the 2.5 MiB of zeros were written as zeroes: only the 1.5 MiB of data was read
    assert sim.devices["src"].bytes_read == MiB + MiB // 2
    assert not violations(r)


def test_a_guest_write_copies_the_old_data_first_and_the_target_keeps_it():
    sim, r = simulate(backup_case(speed="1MiB", actions=[burst(2 * MiB), burst(3 * MiB)]))
    job = job_summary(r)
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    # both clusters were copied before the writes, whole (64 KiB each)
    assert job["copy_before_write"] == {"writes": 2, "bytes": 2 * CLUSTER, "failed": 0}
    src_old = gen_at(sim, "tgt", 2 * MiB)
    assert src_old != 0 and gen_at(sim, "src", 2 * MiB) != src_old   # the source moved on
    assert gen_at(sim, "tgt", 3 * MiB) == 0                           # zeros at the time
    assert r.summary["drives"]["vda"]["guest_errors"] == 0


def test_the_point_in_time_check_fails_when_no_copy_before_write_is_done(monkeypatch):
    from blocksim.jobs.backup import BackupJob

    def no_copy(self, offset, length):
        return 0
        yield  # pragma: no cover

    # (the witness is write_passes', done before)
    monkeypatch.setattr(BackupJob, "copy_before_write", no_copy)
    _sim, r = simulate(backup_case(speed="1MiB", actions=[burst(2 * MiB)]))
    assert job_summary(r)["integrity"] == "differs"
    assert [v["invariant"] for v in violations(r)] == ["backup-point-in-time"]


def test_a_failed_copy_before_write_breaks_the_guest_write_and_the_job_sees_nothing():
    case = backup_case(speed="1MiB", drive={"werror": "report"},
                       faults=[fault("tgt", "write", offset=2 * MiB, length=512)],
                       actions=[burst(2 * MiB)])
    sim, r = simulate(case)
    io_errors = timeline(r, "BLOCK_IO_ERROR")
    assert io_errors == [("BLOCK_IO_ERROR", "vda", "write", "report")]
    # the source is unchanged at 2 MiB; the job's own copy fails later
    assert gen_at(sim, "src", 2 * MiB) == gen_at(sim, "src", 2 * MiB + CLUSTER)
    assert event_time(r, "BLOCK_JOB_ERROR") > event_time(r, "BLOCK_IO_ERROR") + 1.0
    assert job_timeline(r) == START + [err("write", "report")] + st("aborting") + [
        completed(EIO)] + st("concluded", "null")
    assert job_summary(r)["copy_before_write"]["failed"] == 1


def test_sync_none_copies_only_on_guest_writes_and_runs_until_cancelled():
    case = backup_case(sync="none", drive={"werror": "report"},
                       faults=[fault("tgt", "write", offset=2 * MiB, length=512)],
                       actions=[burst(2 * MiB), burst(0, "0.6s"),
                                at("1s", "block-job-cancel", device=JOB),
                                burst(2 * MiB, "1.5s")])
    sim, r = simulate(case)
    assert job_timeline(r) == START + st("aborting") + [cancelled()] + st("concluded", "null")
    done = event(r, "BLOCK_JOB_CANCELLED")
    assert (done["len"], done["offset"]) == (4 * MiB, CLUSTER)
    # the first write to 2 MiB broke; after the cancel the filter is gone
    assert timeline(r, "BLOCK_IO_ERROR") == [("BLOCK_IO_ERROR", "vda", "write", "report")]
    assert gen_at(sim, "src", 2 * MiB) != gen_at(sim, "src", 2 * MiB + CLUSTER)
    assert gen_at(sim, "tgt", 0) != 0 and gen_at(sim, "tgt", 0) != gen_at(sim, "src", 0)


def test_ignore_retries_a_persistent_fault_at_once_until_cancelled():
    case = backup_case(on_target_error="ignore",
                       faults=[fault("tgt", "write", offset=2 * MiB, length=512)],
                       actions=[on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.1s",
                                   device=JOB)])
    _sim, r = simulate(case)
    job = job_summary(r)
    assert job["outcome"] == "cancelled"
    assert job["errors_by_action"]["ignore"] > 100        # no delay between retries
    errors = timeline(r, "BLOCK_JOB_ERROR")
    assert set(errors) == {("BLOCK_JOB_ERROR", JOB, "write", "ignore")}


def test_one_error_per_failed_call_and_the_resume_copies_what_is_dirty_from_offset_0():
    # two copies fail in the same pass (64 KiB and 2 MiB are in flight
    # together): one BLOCK_JOB_ERROR; the new pass after the resume copies
    # both again, the one below the failure too
    case = backup_case(on_target_error="stop",
                       faults=[fault("tgt", "write", offset=64 * KiB, length=512, count=1),
                               fault("tgt", "write", "ENOSPC", offset=2 * MiB, length=512,
                                     count=1)],
                       actions=[on("BLOCK_JOB_ERROR", "query-block-jobs", delay="0.1s"),
                                on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.2s",
                                   device=JOB)])
    _sim, r = simulate(case)
    assert job_timeline(r) == START + [err("write", "stop")] + st("paused", "running") + SUCCESS_END
    query = commands(r, "query-block-jobs")[0]["return"][0]
    assert query["status"] == "paused" and query["io-status"] == "failed"
    assert job_summary(r)["integrity"] == "identical"


def test_a_plain_cancel_is_forced_but_refused_while_stopped_and_complete_is_refused():
    case = backup_case(on_target_error="stop",
                       faults=[fault("tgt", "write", offset=2 * MiB, length=512)],
                       actions=[at("0s", "block-job-complete", device=JOB),
                                on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.1s",
                                   device=JOB),
                                on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.2s",
                                   device=JOB, force=True)])
    _sim, r = simulate(case)
    assert refusals(r) == [
        ("block-job-complete", "Job 'job0' in state 'running' cannot accept command verb 'complete'"),
        ("block-job-cancel", "The block job for device 'job0' is currently paused")]
    assert job_timeline(r)[-5:] == st("running", "aborting") + [cancelled()] + st("concluded", "null")


def test_a_plain_cancel_of_a_running_backup_ends_it_at_once():
    case = backup_case(speed="1MiB", actions=[at("1s", "block-job-cancel", device=JOB)])
    _sim, r = simulate(case)
    assert job_timeline(r) == START + st("aborting") + [cancelled()] + st("concluded", "null")
    assert event_time(r, "BLOCK_JOB_CANCELLED") == 1.0


def test_sync_top_copies_only_the_top_image():
    case = {"duration": "5s",
            "images": {"base": {"size": 4 * MiB, "data": [{"offset": 0, "length": MiB}]},
                       "top": {"size": 4 * MiB, "backing": "base",
                               "data": [{"offset": 2 * MiB, "length": MiB // 2}]},
                       "tgt": {"size": 4 * MiB}},
            "drives": {"vda": {"image": "top"}},
            "jobs": {JOB: {"type": "backup", "device": "vda", "target": "tgt", "sync": "top"}}}
    sim, r = simulate(case)
    done = event(r, "BLOCK_JOB_COMPLETED")
    assert done["len"] == done["offset"] == MiB // 2
    assert gen_at(sim, "tgt", 0) == 0 and gen_at(sim, "tgt", 2 * MiB) != 0



def test_a_task_ends_where_a_layer_of_the_chain_changes_its_allocation():
    # The data reads on without a break across the two layers ([0, 512 KiB)
    # in the base, [512 KiB, 1 MiB) in the top), but block_copy_block_status
    # is bdrv_block_status_above, whose extent stops where the top's
    # unallocated run ends: two tasks of 512 KiB, not one of 1 MiB (found by
    # running QEMU 7.2: fz8-268; scenarios/qemu/backup-task-ends-where-a-
    # layer-allocation-changes)
    case = {"duration": "6s",
            "images": {"base": {"size": 4 * MiB, "data": [{"offset": 0, "length": MiB // 2}]},
                       "top": {"size": 4 * MiB, "backing": "base",
                               "data": [{"offset": MiB // 2, "length": MiB // 2}]},
                       "tgt": {"size": 4 * MiB}},
            "drives": {"vda": {"image": "top"}},
            "jobs": {JOB: {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                           "speed": "1MiB"}},
            "actions": [at("0s", "block-set-write-threshold", **{"node-name": "tgt",
                                                                 "write-threshold": MiB // 4})]}
    sim, r = simulate(case)
    assert job_summary(r)["outcome"] == "completed"
    assert job_summary(r)["integrity"] == "identical"
    tgt = sim.devices["tgt"]
    assert tgt.writes == 2 and tgt.bytes_written == MiB       # two data tasks
    crossed = event(r, "BLOCK_WRITE_THRESHOLD")
    assert crossed["amount-exceeded"] == MiB // 2 - MiB // 4    # the first task's write


def bitmap_case(mode: str, fail: bool) -> dict:
    """Bitmap b0 with 3 clusters dirty (0-128 KiB, 2 MiB), a throttled
    sync=bitmap backup, a guest write at 3 MiB meanwhile (to the successor),
    and (``fail``) a target write fault at 2 MiB."""
    faults = [fault("tgt", "write", offset=2 * MiB, length=512)] if fail else []
    return backup_case(
        sync="bitmap", bitmap="b0", bitmap_mode=mode, speed="64KiB", faults=faults,
        source_image={"bitmaps": [{"name": "b0", "dirty": [
            {"offset": 0, "length": 128 * KiB}, {"offset": 2 * MiB, "length": CLUSTER}]}]},
        actions=[burst(3 * MiB), at("1s", "block-dirty-bitmap-remove", node="src", name="b0"),
                 at("1s", "block-dirty-bitmap-clear", node="vda", name="b0")])


@pytest.mark.parametrize("mode,fail,count", [
    ("on-success", False, CLUSTER),            # only the write during the job
    ("on-success", True, 4 * CLUSTER),         # nothing lost: original + successor
    ("always", False, CLUSTER),
    ("always", True, 2 * CLUSTER),             # successor + the cluster not copied
    ("never", False, 4 * CLUSTER),
    ("never", True, 4 * CLUSTER),
])
def test_bitmap_modes(mode, fail, count):
    sim, r = simulate(bitmap_case(mode, fail))
    job = job_summary(r)
    assert job["outcome"] == ("completed-with-error" if fail else "completed")
    assert event(r, "BLOCK_JOB_COMPLETED")["len"] == 3 * CLUSTER
    busy = "Bitmap 'b0' is currently in use by another operation and cannot be used"
    assert refusals(r) == [("block-dirty-bitmap-remove", busy), ("block-dirty-bitmap-clear", busy)]
    [bitmap] = r.summary["images"]["src"]["bitmaps"]
    assert bitmap == {"name": "b0", "recording": True, "persistent": True, "busy": False,
                      "granularity": CLUSTER, "count": count}
    if not fail:
        # only the bitmap's clusters were copied
        assert gen_at(sim, "tgt", 2 * MiB) != 0 and gen_at(sim, "tgt", 512 * KiB) == 0
        assert job["integrity"] == "identical"


def test_bitmap_commands_and_their_refusals():
    case = backup_case(actions=[
        at("0s", "block-dirty-bitmap-add", node="src", name="b0"),
        at("0s", "block-dirty-bitmap-add", node="src", name="b0"),
        at("0s", "block-dirty-bitmap-add", node="src", name=""),
        at("0s", "block-dirty-bitmap-add", node="src", name="b1", granularity=1000),
        at("0s", "block-dirty-bitmap-add", node="tgt", name="b2", granularity=4096,
           disabled=True),
        burst(100 * KiB, "0.1s"),
        at("0.2s", "block-dirty-bitmap-remove", node="src", name="nosuch")])
    case["jobs"] = {}
    _sim, r = simulate(case)
    assert refusals(r) == [
        ("block-dirty-bitmap-add", "Bitmap already exists: b0"),
        ("block-dirty-bitmap-add", "Bitmap name cannot be empty"),
        ("block-dirty-bitmap-add", "Granularity must be power of 2 and at least 512"),
        ("block-dirty-bitmap-remove", "Dirty bitmap 'nosuch' not found")]
    # default granularity: the 64 KiB cluster; a 4 KiB write dirties one granule
    assert r.summary["images"]["src"]["bitmaps"] == [
        {"name": "b0", "recording": True, "persistent": False, "busy": False,
         "granularity": CLUSTER, "count": CLUSTER}]
    assert r.summary["images"]["tgt"]["bitmaps"][0]["recording"] is False


def test_bitmap_merge_unites_granules_all_or_nothing():
    """``block-dirty-bitmap-merge`` (bitmap-qmp-cmds.c): sources of other
    granularities and nodes, into a disabled target; a failing source (a
    missing bitmap, another size, a busy one) leaves the target as it was.
    Checked on QEMU 7.2: backup-bitmap-merge-checkpoints."""
    case = backup_case(
        sync="bitmap", bitmap="tmp", bitmap_mode="never", speed="64KiB", start="manual",
        source_image={"bitmaps": [
            {"name": "c1", "dirty": [{"offset": 0, "length": 4 * KiB}]},
            {"name": "c2", "granularity": 2 * CLUSTER,
             "dirty": [{"offset": 2 * MiB, "length": 4 * KiB}]}]},
        actions=[at("0s", "block-dirty-bitmap-add", node="src", name="tmp", disabled=True),
                 at("0.1s", "block-dirty-bitmap-merge", node="src", target="tmp",
                    bitmaps=["c1", {"node": "small", "name": "s"}]),
                 at("0.1s", "block-dirty-bitmap-merge", node="src", target="tmp",
                    bitmaps=["c1", "nosuch"]),
                 at("0.2s", "block-dirty-bitmap-merge", node="vda", target="tmp",
                    bitmaps=["c2", {"node": "src", "name": "c1"}]),
                 at("0.3s", "job-start", id=JOB),
                 at("0.4s", "block-dirty-bitmap-merge", node="src", target="c1",
                    bitmaps=["tmp"])])
    case["images"]["small"] = {"size": MiB, "bitmaps": [{"name": "s", "dirty": [
        {"offset": 0, "length": MiB}]}]}
    sim, r = simulate(case)
    assert refusals(r) == [
        ("block-dirty-bitmap-merge", "Bitmaps are of different sizes (destination size is "
                                     f"{SIZE}, source size is {MiB}) and can't be merged"),
        ("block-dirty-bitmap-merge", "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-merge", "Bitmap 'tmp' is currently in use by another operation "
                                     "and cannot be used")]
    # c1's granule and c2's 128 KiB granule (two of tmp's): three clusters,
    # and the backup copied those (bitmap-mode never keeps the count)
    assert event(r, "BLOCK_JOB_COMPLETED")["len"] == 3 * CLUSTER
    tmp = next(b for b in r.summary["images"]["src"]["bitmaps"] if b["name"] == "tmp")
    assert (tmp["recording"], tmp["count"]) == (False, 3 * CLUSTER)
    assert gen_at(sim, "tgt", 2 * MiB + CLUSTER) != 0 and gen_at(sim, "tgt", MiB) == 0


def test_rfc_2012_has_no_backup_nor_bitmaps():
    case = backup_case(actions=[at("0s", "block-dirty-bitmap-add", node="src", name="b0")])
    _sim, r = simulate(case, profile="rfc-2012")
    assert job_summary(r)["outcome"] == "refused"
    errors = [c["error"] for c in commands(r) if "error" in c]
    assert errors == [
        {"class": "CommandNotFound", "desc": "The command blockdev-backup has not been found"},
        {"class": "CommandNotFound",
         "desc": "The command block-dirty-bitmap-add has not been found"}]


@pytest.mark.parametrize("job,message", [
    ({"sync": "bitmap"}, "must provide a valid bitmap name for 'bitmap' sync mode"),
    ({"sync": "incremental", "bitmap": "b0", "bitmap-mode": "always"},
     "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"),
    ({"sync": "full", "bitmap": "b0"}, "Bitmap sync mode must be given when providing a bitmap"),
    ({"sync": "none", "bitmap": "b0", "bitmap-mode": "always"},
     "sync mode 'none' does not produce meaningful bitmap outputs"),
    ({"sync": "full", "bitmap": "b0", "bitmap-mode": "never"},
     "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'"),
    ({"sync": "full", "bitmap-mode": "always"}, "Cannot specify bitmap sync mode without a bitmap"),
    ({"sync": "full", "target": "src"}, "Source and target cannot be the same"),
    ({"sync": "full", "target": "small"}, "Source and target image have different sizes"),
    ({}, "jobs.job0.sync"),
])
def test_static_refusals_are_validation_errors(job, message):
    import blocksim
    case = backup_case()
    case["images"]["small"] = {"size": MiB}
    spec = {"type": "backup", "device": "vda", "target": "tgt", **job}
    case["jobs"] = {JOB: spec}
    with pytest.raises(blocksim.ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        blocksim.load_scenario(case)


CASES = {
    "guest-during-backup": backup_case(
        size=16 * MiB, data=((0, 8 * MiB),), speed="8MiB", duration="4s",
        workloads={"g": {"drive": "vda", "rw": "randrw", "bs": "4KiB", "rate-iops": 400,
                         "end": "3s"}}),
    "failing-target-one-worker": backup_case(
        size=16 * MiB, data=((0, 8 * MiB),), speed="4MiB", duration="6s",
        on_target_error="stop", drive={"werror": "report"},
        faults=[fault("tgt", "write", offset=5 * MiB, length=512)],
        workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "rate-iops": 200,
                         "iodepth": 1, "end": "5s"}},
        actions=[on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.5s", device=JOB),
                 at("5.5s", "block-job-cancel", device=JOB, force=True)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_are_the_same_without_shortcuts(name):
    import blocksim
    from equivalence import outcome
    scenario = blocksim.load_scenario(CASES[name])
    fast = outcome(blocksim.Simulation(scenario))
    slow = outcome(blocksim.Simulation(scenario, shortcuts=False))
    assert fast == slow


@pytest.mark.parametrize("shortcuts", [True, False])
@pytest.mark.parametrize("size,data,speed", [
    (16 * MiB, ((0, 12 * MiB),), "8MiB"),
    # (eight 64 MiB pages: steps cut at a map's runs, between pages)
    (512 * MiB, ((0, 12 * MiB), (100 * MiB, 40 * MiB), (300 * MiB, 8 * MiB)), "256MiB")])
def test_the_point_in_time_check_as_arrays_counts_what_the_chain_walk_counts(
        shortcuts, size, data, speed):
    """BackupJob._mismatch (run arrays, single-layer nodes) gives exactly
    _mismatch_by_chains' bytes and lowest offset, on targets changed behind
    the job's back: in witnessed ranges and not, across steps and page edges."""
    import random

    import blocksim
    scenario = blocksim.load_scenario(backup_case(
        size=size, data=data, speed=speed, duration="3s",
        workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "rate-iops": 500}}))
    sim, job = _run_keeping_the_job(scenario, shortcuts)
    assert job.integrity == "identical" and job.cbw_copies > 50
    # (the guest wrote on after the job: the source moved on since)
    assert job._mismatch() == job._mismatch_by_chains()
    rng = random.Random(5)
    tgt = sim.devices["tgt"].content
    seen = [e for e in timeline_ranges(job)]
    differs = 0
    for trial in range(30):
        for _ in range(rng.randrange(1, 6)):
            if seen and rng.random() < 0.5:     # inside a witnessed range
                a, b = rng.choice(seen)
                a = rng.randrange(a, b)
            else:
                a = rng.randrange(size)
            b = min(size, a + rng.choice([1, 512, 4096, 70000, 3 * MiB, 70 * MiB]))
            tgt.set(a, b, rng.choice([0, 7, 10**6, job._pit.runs(a, a + 1)[0][2]]))
        job.VERIFY_STEP = rng.choice([1 << 36, 1 << 30, 1 << 20,
                                      3 * 4096 if size <= 16 * MiB else 5 * MiB + 4096])
        # (a step cut where one map's runs reach the bound: a page's worth)
        job.VERIFY_RUNS = rng.choice([1 << 18, 1, 3, 40])
        got = job._mismatch()
        assert got == job._mismatch_by_chains()
        differs += got[1] is not None
    assert differs > 20


@pytest.mark.parametrize("fragmented", ["target", "witness"])
def test_a_check_step_ends_where_its_most_fragmented_map_stops(fragmented):
    """BackupJob._mismatch reads each map of a step only up to where the
    maps before it stopped, and ends the step where the last one read
    stopped: a target (or a witness, outside the witnessed ranges, where
    nothing reads it) fragmented on one page stops its step there, and
    the pages after it, read by the source, are compared in the next step
    with the target's (the witness's) own runs.  The same bytes and lowest
    offset as the chain walk."""
    import bisect
    import random

    import blocksim
    size = 512 * MiB
    scenario = blocksim.load_scenario(backup_case(
        size=size, data=((0, 12 * MiB), (100 * MiB, 40 * MiB)), speed="256MiB",
        duration="3s",
        workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "rate-iops": 500}}))
    sim, job = _run_keeping_the_job(scenario)
    seen = timeline_ranges(job)
    page = 64 * MiB
    # (witnessed ranges past the fragmented page, in the pages a step of
    # the source's would also read)
    assert any(page <= a < 4 * page for a, _ in seen)
    rng = random.Random(11)
    m = sim.devices["tgt"].content if fragmented == "target" else job._pit
    ends = [b for _, b in seen]
    for k in range(1500):
        a = rng.randrange(page // 4096) * 4096
        i = bisect.bisect_right(ends, a)
        if fragmented == "witness" and i < len(seen) and seen[i][0] < a + 4096:
            continue                    # (the witness is read only in witnessed ranges)
        m.set(a, a + 4096, 10**6 + k)
    job.VERIFY_RUNS = 1000              # (the source's first pages: fewer runs than that)
    got = job._mismatch()
    assert got == job._mismatch_by_chains()
    # (the fragmented map stops after its first page, the source later)
    from blocksim.model.extents import run_arrays
    assert run_arrays(m, 0, size, 1000)[0] == page
    assert run_arrays(sim.devices["src"].content, 0, size, 1000)[0] > page


def _run_keeping_the_job(scenario, shortcuts: bool = True):
    """Run ``scenario``: the simulation and its backup job, as it was once
    prepared (its check done)."""
    import blocksim
    from blocksim.jobs.backup import BackupJob
    prepared = []
    real = BackupJob.prepare

    def keep(job):
        real(job)
        prepared.append(job)
    BackupJob.prepare = keep
    try:
        sim = blocksim.Simulation(scenario, shortcuts=shortcuts)
        sim.run()
    finally:
        BackupJob.prepare = real
    job, = prepared
    return sim, job


def timeline_ranges(job):
    from blocksim.model.named_bitmap import dirty_ranges
    return list(dirty_ranges(job._seen))


def test_what_the_task_step_knows_of_a_source_page_goes_with_its_changes():
    """BackupJob._holds_data remembers ExtentMap.holds_data per page only
    while the map's pages and its zeroing logs stay the same: zeros logged
    onto a page of data make it a page that may read as zeros."""
    from types import SimpleNamespace

    from blocksim.engine import ContentJournal
    from blocksim.jobs.backup import BackupJob
    from blocksim.model.extents import ExtentMap
    journal = ContentJournal(16)
    content = ExtentMap(4 << 16, 16, journal=journal)
    content.set(0, 4 << 16, 5)
    job = SimpleNamespace(_data_pages=bytearray(), _data_stamp=None, _data_zeroed=None,
                          _data_map=None, _data_index=None)
    job._data_known = lambda content: BackupJob._data_known(job, content)
    assert BackupJob._holds_data(job, content, 1) is True
    content.set((1 << 16) + 4096, (1 << 16) + 8192, 0)         # logged, not settled
    assert BackupJob._holds_data(job, content, 1) is False
    assert BackupJob._holds_data(job, content, 2) is True


def test_a_backup_whose_copies_fail_leaves_no_read_open_in_the_journal():
    """A task's read is a journal Snap until its write pastes it; a write
    that fails forgets it (else the journal would hold it for good)."""
    import blocksim
    scenario = blocksim.load_scenario(backup_case(
        size=16 * MiB, data=((0, 16 * MiB),), speed="16MiB", duration="3s",
        on_target_error="ignore",
        faults=[{"type": "flakey", "image": "tgt", "operation": "write", "up": "30ms",
                 "down": "70ms"}]))
    sim = blocksim.Simulation(scenario)
    r = sim.run()
    job = job_summary(r)
    assert job["outcome"] == "completed" and job["errors_by_action"]["ignore"] > 3
    journal = sim.devices["src"].content._journal
    assert not journal._open and not journal._held


def test_the_pools_wait_sees_a_slot_freed_while_the_call_slept(monkeypatch):
    """64 tasks of 1 MiB issued at a slice's start, its whole quota at
    640 MiB/s: the call sleeps with its pool full, tasks finish during the
    sleep, and
    the next wait for a free slot must see them finished already (as
    AnyOf checks each event at its creation), not wait for another."""
    import blocksim
    from blocksim.jobs import backup
    from equivalence import outcome
    finished_before = []
    real = backup._any_done

    def watching(env, tasks):
        finished_before.append(sum(t.done.callbacks is None for t in tasks))
        return real(env, tasks)
    monkeypatch.setattr(backup, "_any_done", watching)
    scenario = blocksim.load_scenario(backup_case(
        size=256 * MiB, data=((0, 256 * MiB),), speed="640MiB", duration="1s",
        source_image={"bandwidth": "2GiB"}, target_image={"bandwidth": "1GiB"}))
    # (_any_done is the pool's wait without shortcuts; with them, _Pool's)
    exact = outcome(blocksim.Simulation(scenario, shortcuts=False))
    assert max(finished_before) > 0
    assert outcome(blocksim.Simulation(scenario)) == exact


def test_a_guest_write_over_a_task_in_flight_waits_for_its_copy():
    """A guest write to a cluster the background call is copying (cleared
    from the copy bitmap, its read in flight) waits for that task
    (block_copy_common's reqlist_wait_one) before it reaches the source:
    the read, slowed by dm-delay, would otherwise find the new data."""
    sim, r = simulate(backup_case(
        faults=[{"type": "delay", "image": "src", "operation": "read", "delay": "20ms"}],
        actions=[burst(64 * KiB, time="5ms")]))
    job = job_summary(r)
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    # (the 1 MiB task at offset 0 held the cluster: no copy of the guest's own)
    assert job["copy_before_write"] == {"writes": 0, "bytes": 0, "failed": 0}
    drive = r.summary["drives"]["vda"]
    assert drive["requests"] == 1 and sim.drives["vda"].latency_sum > 15_000_000


def test_two_guest_writes_in_one_cluster_make_one_copy_the_second_waiting_for_it():
    """Two guest writes inside one dirty cluster at the same instant: the
    first one's block-copy call makes a task of the cluster
    (block_copy_common), the second finds it cleared and in flight, waits
    for it (reqlist_wait_one), then finds nothing to copy.  One copy, of the
    old data; the same run without shortcuts (with them the calls take
    BackupJob._copy_cluster, without a pass's pool)."""
    import blocksim
    from equivalence import outcome
    scenario = backup_case(speed="1MiB", actions=[burst(2 * MiB + 8 * KiB),
                                                 burst(2 * MiB + 16 * KiB)])
    old = gen_at(simulate(backup_case(speed="1MiB", duration="0.4s"))[0], "src", 2 * MiB)
    sim, r = simulate(scenario)
    job = job_summary(r)
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    assert job["copy_before_write"] == {"writes": 1, "bytes": CLUSTER, "failed": 0}
    assert r.summary["drives"]["vda"]["requests"] == 2
    assert gen_at(sim, "tgt", 2 * MiB + 8 * KiB) == old != 0
    assert gen_at(sim, "src", 2 * MiB + 8 * KiB) not in (0, old)
    assert gen_at(sim, "src", 2 * MiB + 16 * KiB) not in (0, old)
    loaded = blocksim.load_scenario(scenario)
    exact = outcome(blocksim.Simulation(loaded, shortcuts=False))
    assert outcome(blocksim.Simulation(loaded)) == exact


# -- a second backup of the same source (QEMU stacks a second filter) ------------

def _two_backups(second_target: str = "tgt2", actions=()) -> dict:
    scenario = backup_case(speed="2MiB", actions=list(actions))
    scenario["images"]["tgt2"] = {"size": 4 * MiB}
    scenario["jobs"]["b2"] = {"type": "backup", "device": "vda", "target": second_target,
                              "sync": "full", "speed": "2MiB", "start": "200ms"}
    return scenario


def test_a_second_backup_of_the_same_disk_stacks_and_both_keep_the_point_in_time():
    # backup.c:backup_job_create op-blocks its filter and its target, not the
    # source: the second backup is accepted (real QEMU 7.2 agrees:
    # scenarios/qemu/backup-twice-one-drive).  A guest write to a cluster
    # neither has copied goes through both filters: the old data reaches
    # both targets before the write lands.
    sim, r = simulate(_two_backups(actions=[burst(2 * MiB + 512 * KiB - 4 * KiB)]))
    assert refusals(r) == []
    for job in (JOB, "b2"):
        summary = job_summary(r, job)
        assert summary["outcome"] == "completed" and summary["integrity"] == "identical"
        assert summary["copy_before_write"]["writes"] == 1
    old = gen_at(sim, "tgt", 2 * MiB)
    assert old != 0 and gen_at(sim, "tgt2", 2 * MiB + 500 * KiB) == old
    assert gen_at(sim, "src", 2 * MiB + 508 * KiB) != old
    assert not violations(r)


def test_a_second_backup_to_the_same_target_meets_its_op_blocker():
    r = simulate(_two_backups(second_target="tgt"))[1]
    assert refusals(r) == [("blockdev-backup", "Node 'tgt' is busy: block device is in use "
                                               "by block job: backup")]


# -- a target fault on the zeroes a backup writes (blkdebug's iotypes) -------------------------
@pytest.mark.parametrize("operation, fails", [("write", False), ("write-zeroes", True)])
def test_a_write_rule_does_not_see_the_zeroes_a_full_backup_writes(operation, fails):
    # block-copy writes a cluster reading as zeros with bdrv_co_pwrite_zeroes
    # (block_copy_do_copy); blkdebug fails it only under a write-zeroes rule
    sim, r = simulate(backup_case(
        on_target_error="report",
        faults=[fault("tgt", operation, "EIO", offset=3 * MiB, length=512)]))
    job = job_summary(r)
    if fails:
        assert err("write", "report") in timeline(r)
        assert (job["outcome"], job["error"]) == ("completed-with-error", EIO)
    else:
        assert "BLOCK_JOB_ERROR" not in r.event_names()
        assert (job["outcome"], job["integrity"]) == ("completed", "identical")


def test_the_witnessed_ranges_as_arrays_are_dirty_ranges():
    """backup._range_arrays (the point-in-time check's witnessed ranges)
    gives dirty_ranges' ranges: scattered granules, whole dirty blocks, runs
    across the slices it makes dense, a partial last block, a bitmap's end
    short of a granule, an empty bitmap."""
    import random

    from blocksim.jobs.backup import _DENSE_BLOCKS, _range_arrays, _range_arrays_dense
    from blocksim.model.bitmap import BLOCK, DirtyBitmap
    from blocksim.model.named_bitmap import dirty_ranges
    g = 4096
    nbits = (2 * _DENSE_BLOCKS + 300) * BLOCK + 100
    rng = random.Random(7)
    for case in range(4):
        size = nbits * g - (0 if case % 2 else 1000)
        bits = DirtyBitmap(size, g)
        if case:
            edge = _DENSE_BLOCKS * BLOCK * g
            bits.mark(edge - 5 * g, edge + 3 * g)                   # across a slice
            bits.mark(3 * BLOCK * g, 9 * BLOCK * g)                 # whole blocks
            bits.mark(2 * edge - BLOCK * g, 2 * edge + BLOCK * g)   # whole, across
            bits.mark(size - 3 * g, size)                           # the end
            for _ in range(3000):
                a = rng.randrange(0, size - g)
                bits.mark(a, a + rng.choice((1, g, 5 * g)))
            # (runs of whole words of the pool and across them: _dirty_runs
            # reads eight granules at a time where they are all alike)
            for _ in range(400):
                a = rng.randrange(0, size - 80 * g) // (8 * g) * (8 * g) + rng.choice((0, 0, 3)) * g
                bits.mark(a, a + rng.choice((8, 9, 15, 16, 24, 70)) * g)
            bits.clear_bits(4 * BLOCK, 4 * BLOCK + 7)               # a hole in whole blocks
            bits.clear_bits(9 * BLOCK - 16, 9 * BLOCK - 8)          # a clean word in dirty ones
        expected = list(dirty_ranges(bits))
        for ranges in (_range_arrays, _range_arrays_dense):     # (compiled, numpy)
            starts, ends = ranges(bits)
            assert list(zip(starts.tolist(), ends.tolist())) == expected
        assert len(expected) > 1000 or not case


def test_a_write_in_flight_at_the_start_lands_in_the_frozen_bitmap():
    """The backup's drained start lets a guest write in flight land first,
    in the bitmap itself; the bitmap is frozen after it (backup_job_create
    after the drain): the backup copies the write's granule, and on success
    the bitmap keeps only the later write.  Checked on QEMU 7.2:
    backup-bitmap-write-in-flight-at-start."""
    case = backup_case(
        data=((MiB, MiB // 2),), sync="incremental", bitmap="b0", speed="512KiB",
        start="manual", duration="4s",
        source_image={"bitmaps": [{"name": "b0", "dirty": [
            {"offset": 3 * MiB, "length": CLUSTER}]}]},
        actions=[burst(0, "0.3s"), at("300100us", "job-start", id=JOB),
                 burst(3 * MiB + 768 * KiB, "3s")])
    sim, r = simulate(case)
    assert event(r, "BLOCK_JOB_COMPLETED")["len"] == 2 * CLUSTER
    [bitmap] = r.summary["images"]["src"]["bitmaps"]
    assert bitmap["count"] == CLUSTER
    assert gen_at(sim, "tgt", 0) != 0


def test_the_witnessed_ranges_fall_back_to_numpy_when_rows_run_short():
    """backup._dirty_runs says so (-1) when its rows cannot hold every run,
    whether the run it cannot hold ends in a mixed block, at a clean block
    or at the end; _range_arrays then takes the numpy walk: the same
    ranges."""
    import numpy as np

    from blocksim.jobs.backup import _dirty_runs, _range_arrays
    from blocksim.model.bitmap import BLOCK, DirtyBitmap
    from blocksim.model.named_bitmap import dirty_ranges
    g = 4096
    bits = DirtyBitmap(6 * BLOCK * g, g)
    bits.mark(3 * g, 4 * g)                                 # in a mixed block
    bits.mark(BLOCK * g, 2 * BLOCK * g)                     # up to a clean block
    bits.mark(3 * BLOCK * g, 4 * BLOCK * g)                 # again
    bits.mark((5 * BLOCK + 5) * g, 6 * BLOCK * g)           # to the end
    granules, words, summary, _blocks, _bw = bits.arrays()
    for room in range(4):
        rows = np.empty(room, np.int64), np.empty(room, np.int64)
        assert _dirty_runs(granules, words, summary, bits.nbits, *rows) == -1
    rows = np.empty(4, np.int64), np.empty(4, np.int64)
    assert _dirty_runs(granules, words, summary, bits.nbits, *rows) == 4
    bits.count = 2                      # (fewer rows than runs)
    starts, ends = _range_arrays(bits)
    assert list(zip(starts.tolist(), ends.tolist())) == list(dirty_ranges(bits)) == [
        (3 * g, 4 * g), (BLOCK * g, 2 * BLOCK * g), (3 * BLOCK * g, 4 * BLOCK * g),
        ((5 * BLOCK + 5) * g, 6 * BLOCK * g)]


def test_the_checks_walk_is_a_byte_by_byte_comparison():
    """backup._mismatch_step (the point-in-time check's walk over a step)
    against the check done byte by byte, on random runs of few values (so
    that neighbouring runs of different maps often hold the same value and
    an edge of one alone decides) and random witnessed ranges: the same
    bytes that differ, the same first one."""
    import numpy as np

    from blocksim.jobs.backup import _mismatch_step
    rng = np.random.default_rng(11)
    size = 200

    def runs():
        starts = np.unique(np.concatenate(([0], rng.integers(1, size, rng.integers(0, 12)))))
        return starts.astype(np.int64), rng.integers(0, 3, len(starts)).astype(np.int64)

    def bytes_of(starts, values):
        return np.repeat(values, np.diff(np.append(starts, size)))
    for _ in range(3000):
        maps = [runs() for _ in range(3)]           # source, target, witness
        cuts = np.unique(rng.integers(0, size + 1, 2 * rng.integers(0, 5)))
        cuts = cuts[:len(cuts) // 2 * 2]
        seen_starts, seen_ends = cuts[0::2].astype(np.int64), cuts[1::2].astype(np.int64)
        if not len(seen_starts):
            seen_starts = seen_ends = np.zeros(1, dtype=np.int64)
        x0, x1 = sorted(rng.choice(size + 1, 2, replace=False).tolist())
        src, tgt, pit = (bytes_of(*m) for m in maps)
        witnessed = np.zeros(size, dtype=bool)
        for s, e in zip(seen_starts.tolist(), seen_ends.tolist()):
            witnessed[s:e] = True
        bad = np.flatnonzero(np.where(witnessed, pit, src)[x0:x1] != tgt[x0:x1])
        # (each map's runs from x0, as run_arrays gives them)
        arrays = []
        for starts, values in maps:
            i = int(np.searchsorted(starts, x0, "right")) - 1
            j = int(np.searchsorted(starts, x1, "left"))
            s = starts[i:j].copy()
            s[0] = x0
            arrays += [s, values[i:j]]
        w = int(np.searchsorted(seen_ends, x0, "right"))
        total, first = _mismatch_step(x0, x1, *arrays, seen_starts, seen_ends, w)
        assert (total, first) == (len(bad), x0 + int(bad[0]) if len(bad) else -1)
