"""The active mirror: ``copy-mode = "write-blocking"`` (QEMU 7.2's
``MIRROR_COPY_MODE_WRITE_BLOCKING``, block/mirror.c).

Facts from mirror.c (bdrv_mirror_top_do_write, active_write_prepare,
do_sync_target_write, active_write_settle, mirror_start_job) and checked on
qemu-storage-daemon 7.2.22 (scenarios/qemu/mirror-active-*, guest writes by
qemu-io over an NBD export): a guest write reaches the target before it
completes, while the job runs, is paused, is ready; a target error in that
path is the job's (BLOCK_JOB_ERROR write <action>), the guest's write
succeeds; report fails the job, ignore leaves the area dirty for the copy
loop, stop pauses the job at once (standby when ready); the bitmap records
no guest writes.
"""

import pytest

import blocksim
from blocksim.errors import ScenarioError
from jobcases import (
    EIO, JOB, MiB, at, completed, err, event_time, job_summary, mirror_case, ready, refusals,
    simulate, st, timeline, violations,
)

KiB = 1024
G = 64 * KiB
OK_END = st("waiting", "pending") + [completed()] + st("concluded", "null")


def active(**keys) -> dict:
    keys.setdefault("copy_mode", "write-blocking")
    return mirror_case(**keys)


def writes(time: str, offset: int, n: int = 1, bs: str = "64KiB") -> dict:
    return at(time, "guest-burst", drive="vda", rw="write", bs=bs, offset=offset, number_ios=n)


def gen_at(sim, image: str, offset: int) -> int:
    return sim.devices[image].read_content(offset, offset + 1)[0][2]


def job_events(r):
    return [e for e in timeline(r) if e[0] != "BLOCK_IO_ERROR"]


def target_fault(policy_offset=MiB, count=1) -> dict:
    f = {"image": "dst", "operation": "write", "errno": "EIO", "offset": policy_offset,
         "length": G}
    if count:
        f["count"] = count
    return f


# -- the write path ---------------------------------------------------------------------

def test_a_guest_write_reaches_the_target_before_it_completes():
    """sync none, nothing to copy: READY at once; the guest's writes are on
    the target as soon as they complete (no copy loop involved: the
    bitmap records nothing)."""
    sim, r = simulate(active(data="none", sync="none",
                             actions=[writes("0.5s", MiB, 2), at("1s", "block-job-complete",
                                                                 device=JOB)]))
    assert job_events(r) == st("created", "running", "ready") + [ready()] + OK_END
    job = sim.jobs[JOB]
    assert job.bitmap.count == 0 and job.bytes_copied == 0
    assert job_summary(r)["active_writes"] == {"writes": 2, "bytes": 2 * G, "failed": 0}
    for off in (MiB, MiB + G):
        g = gen_at(sim, "src", off)
        assert g and gen_at(sim, "dst", off) == g
    assert job_summary(r)["integrity"] == "identical" and not violations(r)
    assert "active-mirror-in-sync" in r.summary["invariants"]["checked"]


def test_background_mode_leaves_the_write_to_the_copy_loop():
    """The same writes under the default copy mode dirty the bitmap and are
    copied by the loop at its next poll: the target does not have them when
    the guest's request completes (a query of the target right after)."""
    got = {}

    def probe(mode):
        sim = blocksim.Simulation(blocksim.load_scenario(mirror_case(
            data="none", sync="none", copy_mode=mode, duration="0.5004s",
            actions=[writes("0.5s", MiB)])))
        sim.run()
        got[mode] = (gen_at(sim, "src", MiB), gen_at(sim, "dst", MiB))

    probe("background")
    probe("write-blocking")
    src, dst = got["background"]
    assert src and dst == 0
    src, dst = got["write-blocking"]
    assert src and dst == src


def test_guest_latency_includes_the_target_write():
    """A slow target (5 ms a request): an active mirror's guest writes take
    the source's time plus the target's; a background mirror's only the
    source's."""
    def mean_latency(mode):
        _sim, r = simulate(mirror_case(
            data="none", sync="none", copy_mode=mode, target_image={"latency": "5ms"},
            actions=[writes("0.5s", MiB, 10)], duration="2s"))
        return r.summary["drives"]["vda"]["mean_latency"]

    background, blocking = mean_latency("background"), mean_latency("write-blocking")
    assert background < 0.001
    assert blocking > background + 0.005
    # the source's 100 us and the target's 5 ms, then bandwidth: nothing else
    assert blocking == pytest.approx(background + 0.005 + G / (1 << 30), rel=1e-3)


def test_write_during_the_initial_copy_waits_for_the_copy_in_flight():
    """A guest write to granules a copy is writing waits for it
    (active_write_prepare: mirror_wait_on_conflicts) before it even goes to
    the source, so the target ends with the guest's data, not the copy's
    older data."""
    case = active(size=16 * MiB, target_image={"latency": "20ms"},
                  actions=[writes("1ms", 0, 1)], duration="3s")
    sim, r = simulate(case)
    # The iteration claimed the whole 16 MiB buffer at once; the copy of
    # [0, 1 MiB) ends at about 22 ms (source 1.1 ms, target 20 ms + 1 ms of
    # bandwidth).  Only then does the write go to the source and the target:
    # 22 ms - 1 ms + 0.16 ms + 20 ms.  (Without the wait it would go at once
    # and only queue on the target behind the copies: about 35.8 ms.)
    assert r.summary["drives"]["vda"]["mean_latency"] == pytest.approx(0.0413, abs=0.0002)
    assert gen_at(sim, "dst", 0) == gen_at(sim, "src", 0) != gen_at(sim, "src", G)
    assert sim.jobs[JOB].ready_at is not None and not violations(r)


def test_dirty_unaligned_head_and_tail_are_left_to_the_copy_loop():
    """do_sync_target_write: a head or tail in a dirty granule is not
    written (the granule stays dirty), the granules covered whole are
    cleared; a clean unaligned edge is written."""
    sim, _r = simulate(active(size=16 * MiB, speed="1MiB", buf_size="1MiB", duration="0.1s",
                              actions=[writes("0.05s", 8 * MiB + 4 * KiB, 1, bs="132KiB")]))
    job = sim.jobs[JOB]
    bm = job.bitmap
    b = 8 * MiB // G
    # [8 MiB + 4 KiB, 8 MiB + 136 KiB): head in granule b, whole b + 1,
    # tail in b + 2; all three were dirty (not copied yet at 1 MiB/s)
    assert bm.is_dirty(b) and not bm.is_dirty(b + 1) and bm.is_dirty(b + 2)
    src = sim.devices["src"]
    assert gen_at(sim, "dst", 8 * MiB + G) == gen_at(sim, "src", 8 * MiB + G) != 0
    assert gen_at(sim, "dst", 8 * MiB + 4 * KiB) != src.read_content(
        8 * MiB + 4 * KiB, 8 * MiB + 4 * KiB + 1)[0][2]
    assert job_summary(_r)["active_writes"]["bytes"] == G


def test_no_copy_to_the_target_once_the_job_failed():
    """copy_to_target needs job->ret >= 0: after a reported error the
    guest's writes go to the source only."""
    sim, r = simulate(active(data="none", sync="none", faults=[target_fault()],
                             actions=[writes("0.5s", MiB, 1), writes("0.8s", 2 * MiB, 1)]))
    assert job_events(r) == (st("created", "running", "ready") + [ready(), err("write", "report")]
                             + st("aborting") + [completed(EIO)] + st("concluded", "null"))
    assert gen_at(sim, "dst", 2 * MiB) == 0 and gen_at(sim, "src", 2 * MiB) != 0
    assert r.summary["drives"]["vda"]["guest_errors"] == 0


# -- target errors under each policy -----------------------------------------------------

def test_target_error_report_fails_the_job_and_not_the_guest():
    sim, r = simulate(active(data="none", sync="none", faults=[target_fault()],
                             actions=[writes("0.5s", MiB, 2)]))
    assert job_events(r) == (st("created", "running", "ready") + [ready(), err("write", "report")]
                             + st("aborting") + [completed(EIO)] + st("concluded", "null"))
    # the error comes with the write, not at the loop's next poll
    assert event_time(r, "BLOCK_JOB_ERROR") == pytest.approx(0.5, abs=0.001)
    drive = r.summary["drives"]["vda"]
    assert drive["writes"] == 2 and drive["guest_errors"] == 0
    assert job_summary(r)["active_writes"]["failed"] == 1


def test_target_error_ignore_leaves_the_area_dirty_for_the_copy_loop():
    sim, r = simulate(active(data="none", sync="none", faults=[target_fault()],
                             on_target_error="ignore",
                             actions=[writes("0.5s", MiB, 1),
                                      at("1s", "block-job-complete", device=JOB)]))
    assert job_events(r) == (st("created", "running", "ready") + [ready(), err("write", "ignore")]
                             + OK_END)
    job = sim.jobs[JOB]
    assert job.bytes_copied == G            # the loop copied the granule again
    assert job_summary(r)["integrity"] == "identical" and not violations(r)


def test_target_error_stop_pauses_the_ready_job_at_once_and_writes_go_on():
    """stop: the ready job sleeping between polls is entered and stands by;
    a guest write while it is paused still goes to the target (the job has
    not failed); resumed, the loop copies the area and complete pivots."""
    sim, r = simulate(active(data="none", sync="none", faults=[target_fault()],
                             on_target_error="stop",
                             actions=[writes("0.5s", MiB, 1), at("0.505s", "query-block-jobs"),
                                      writes("0.7s", 3 * MiB, 1),
                                      at("1s", "block-job-resume", device=JOB),
                                      at("1.5s", "block-job-complete", device=JOB)]))
    assert job_events(r) == (st("created", "running", "ready")
                             + [ready(), err("write", "stop")] + st("standby", "ready") + OK_END)
    q = [c for c in r.commands if c["execute"] == "query-block-jobs"][0]["return"][0]
    assert q["status"] == "standby" and q["io-status"] == "failed"
    assert job_summary(r)["active_writes"]["writes"] == 2
    assert job_summary(r)["integrity"] == "identical" and not violations(r)


def test_target_error_clears_actively_synced_until_the_next_ready():
    sim, r = simulate(active(data="none", sync="none", faults=[target_fault()],
                             on_target_error="ignore", actions=[writes("0.5s", MiB, 1)],
                             duration="1s"))
    job = sim.jobs[JOB]
    # READY was reached once; the error (mirror_error_action) cleared the flag
    assert job.synced and not job.actively_synced


# -- cancel, complete, the 2012 profile, the scenario key -----------------------------------

def test_cancel_before_ready_is_forced_and_writes_stop_copying():
    sim, r = simulate(active(size=16 * MiB, speed="4MiB",
                             actions=[writes("0.5s", 12 * MiB, 2),
                                      at("1s", "block-job-cancel", device=JOB),
                                      writes("1.5s", 14 * MiB, 1)]))
    assert job_events(r) == (st("created", "running", "aborting")
                             + [("BLOCK_JOB_CANCELLED", JOB)] + st("concluded", "null"))
    assert gen_at(sim, "dst", 12 * MiB) == gen_at(sim, "src", 12 * MiB) != 0
    # after the job: the source only (the target keeps the initial copy)
    assert gen_at(sim, "dst", 14 * MiB) != gen_at(sim, "src", 14 * MiB)


def test_converges_under_a_write_rate_a_background_mirror_never_outruns():
    """A guest rewriting its disk faster than the copy loop can catch up:
    the background mirror never gets READY, the active one does (the loop
    only has the initial copy to do), and completes identical."""
    workloads = {"guest": {"drive": "vda", "rw": "randwrite", "bs": "64KiB", "rate-iops": 400,
                           "start": "0.1s"}}

    def run(mode):
        return simulate(mirror_case(size=64 * MiB, speed="16MiB", copy_mode=mode,
                                    workloads=workloads, duration="10s",
                                    actions=[{"on": "BLOCK_JOB_READY", "delay": "1s",
                                              "command": "block-job-complete",
                                              "arguments": {"device": JOB}}]))

    _sim, bg = run("background")
    assert job_summary(bg)["ready_at"] is None
    _sim, wb = run("write-blocking")
    job = job_summary(wb)
    assert job["ready_at"] is not None and job["ready_at"] < 6
    assert job["outcome"] == "completed" and job["integrity"] == "identical"
    assert not violations(wb)


def test_rfc2012_has_no_copy_mode():
    _sim, r = simulate(active(profile="rfc-2012"))
    assert refusals(r) == [("drive-mirror", "Invalid parameter 'copy-mode'")]
    assert not [e for e in r.events if e["event"] == "JOB_STATUS_CHANGE"]
    # background is what 2012 did: accepted
    _sim, r = simulate(mirror_case(profile="rfc-2012", copy_mode="background"))
    assert refusals(r) == []


def test_a_bad_copy_mode_is_a_located_one_line_error():
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(mirror_case(copy_mode="sync"))
    text = str(info.value)
    assert "jobs.job0.copy-mode" in text and "background" in text and "write-blocking" in text
    assert len([line for line in text.splitlines() if "copy-mode" in line]) == 1


# -- the invariant ------------------------------------------------------------------------

def test_the_in_sync_invariant_catches_a_write_that_skips_the_target(monkeypatch):
    """A broken write path (the target write dropped): the poll after the
    write finds the target behind the source."""
    from blocksim.jobs import mirror

    def skip(self, gen):
        return
        yield

    monkeypatch.setattr(mirror.ActiveWrite, "_sync_target_write", skip)
    _sim, r = simulate(active(data="none", sync="none", actions=[writes("0.5s", MiB, 1)],
                              duration="1s"))
    found = [v for v in violations(r) if v["invariant"] == "active-mirror-in-sync"]
    assert found and found[0]["time"] == pytest.approx(0.6, abs=0.1)
    assert f"offset {MiB}" in found[0]["detail"]


# -- shortcuts -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    active(size=16 * MiB, speed="8MiB", duration="5s",
           workloads={"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "rate-iops": 500}},
           actions=[{"on": "BLOCK_JOB_READY", "delay": "1s", "command": "block-job-complete",
                     "arguments": {"device": JOB}}]),
    active(size=16 * MiB, duration="3s", on_target_error="ignore",
           faults=[{"image": "dst", "operation": "write", "errno": "EIO", "probability": 0.01}],
           workloads={"g": {"drive": "vda", "rw": "randrw", "bs": "64KiB", "iodepth": 4}}),
    active(size=16 * MiB, duration="3s", on_target_error="stop",
           faults=[target_fault(count=None)],
           workloads={"g": {"drive": "vda", "rw": "write", "bs": "64KiB", "rate-iops": 200}},
           actions=[{"on": "BLOCK_JOB_ERROR", "delay": "0.2s", "command": "block-job-cancel",
                     "arguments": {"device": JOB, "force": True}}]),
], ids=["paced-guest-complete", "flaky-target-ignore", "stop-force-cancel"])
def test_shortcuts_change_nothing(case):
    def run(shortcuts):
        sim = blocksim.Simulation(blocksim.load_scenario(case), seed=3, shortcuts=shortcuts)
        return sim.run()

    a, b = run(True), run(False)
    assert a.events == b.events
    assert a.summary == b.summary
    assert a.series == b.series
    assert not violations(a)
