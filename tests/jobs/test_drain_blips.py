"""Drained sections of one job's start or end, as the other jobs show them.

QEMU 7.2 pauses every job above a drained node (blockjob.c:
child_job_drained_begin -> job_pause) and resumes it when the section ends
(child_job_drained_end -> job_resume), inside one command: a running job
blips ``paused``/``running``, a ready one ``standby``/``ready``.  Counts
found by running QEMU 7.2 (/tmp/work/fid17b-exp/exp2.py, exp3.py), each
also a scenarios/qemu/ case: a blockdev-backup drains every node
(qmp_transaction's bdrv_drain_all) and then its source, refused or not; a
backup's end drains its filter (the filters above it); a stream's start
drains the node once, its end three times (four on success).
"""

import pytest

import blocksim

from jobcases import (
    JOB, MiB, at, backup_case, err, job_summary, mirror_case, refusals, simulate, st,
    statuses, stream_case, timeline,
)

BLIP = ["paused", "running"]
OWN_START = ["created", "running", "paused", "running"]     # a backup's own start
SUCCESS = ["waiting", "pending", "concluded", "null"]


def _two_backups(first_speed: str, second_speed: str | None) -> dict:
    scenario = backup_case(speed=first_speed)
    scenario["images"]["tgt2"] = {"size": 4 * MiB}
    second = {"type": "backup", "device": "vda", "target": "tgt2", "sync": "full",
              "start": "200ms"}
    if second_speed:
        second["speed"] = second_speed
    scenario["jobs"]["b2"] = second
    return scenario


def test_a_stacked_backup_blips_the_first_twice_at_its_start_and_once_at_its_end():
    r = simulate(_two_backups("1MiB", None))[1]
    assert refusals(r) == []
    assert statuses(r) == OWN_START + BLIP + BLIP + BLIP + SUCCESS
    # the first one's end does not reach the second's filter (it is below)
    assert statuses(r, "b2") == OWN_START + SUCCESS


def test_the_upper_backup_ending_first_does_not_blip_the_lower_one():
    r = simulate(_two_backups("8MiB", "1MiB"))[1]
    assert statuses(r) == OWN_START + BLIP + BLIP + SUCCESS
    assert statuses(r, "b2") == OWN_START + SUCCESS


def _backup_then_stream(actions=()) -> dict:
    scenario = stream_case(speed=MiB, start="300ms", actions=list(actions))
    stream = scenario["jobs"].pop(JOB)
    scenario["jobs"]["s0"] = stream
    scenario["images"]["tgt"] = {"size": 4 * MiB}
    scenario["jobs"][JOB] = {"type": "backup", "device": "vda", "target": "tgt",
                             "sync": "full", "speed": "512KiB"}
    return scenario


def test_a_stream_of_a_backed_up_disk_blips_it_once_at_start_and_four_times_at_success():
    r = simulate(_backup_then_stream())[1]
    assert job_summary(r, "s0")["outcome"] == "completed"
    assert statuses(r) == OWN_START + BLIP + BLIP * 4 + SUCCESS


def test_a_cancelled_stream_blips_the_backup_three_times_at_its_end():
    r = simulate(_backup_then_stream([at("600ms", "block-job-cancel", device="s0")]))[1]
    assert job_summary(r, "s0")["outcome"] == "cancelled"
    assert statuses(r) == OWN_START + BLIP + BLIP * 3 + SUCCESS


def _mirror_and_backup_elsewhere(actions=(), device="vdb") -> dict:
    scenario = mirror_case(actions=list(actions), duration="3s")
    scenario["images"]["other"] = {"size": 4 * MiB, "data": "full"}
    scenario["images"]["tgt"] = {"size": 4 * MiB}
    scenario["drives"]["vdb"] = {"image": "other"}
    scenario["jobs"]["b1"] = {"type": "backup", "device": device, "target": "tgt",
                              "sync": "full", "start": "1s"}
    return scenario


def test_a_backup_anywhere_blips_a_ready_mirror_on_another_disk():
    # qmp_transaction: bdrv_drain_all() drains every node
    r = simulate(_mirror_and_backup_elsewhere())[1]
    assert statuses(r) == ["created", "running", "ready", "standby", "ready"]


def test_a_refused_backup_of_a_mirrored_disk_blips_the_mirror_twice():
    # the op blocker answers inside blockdev_backup_prepare's drained section
    r = simulate(_mirror_and_backup_elsewhere(device="vda"))[1]
    assert refusals(r) == [("blockdev-backup", "Node 'src' is busy: block device is in use "
                                               "by block job: mirror")]
    assert statuses(r) == ["created", "running", "ready"] + ["standby", "ready"] * 2


def test_a_paused_job_shows_no_blip():
    # job_pause of a paused job only counts; job_resume does not leave it
    r = simulate(_mirror_and_backup_elsewhere([at("500ms", "block-job-pause", device=JOB)]))[1]
    assert statuses(r) == ["created", "running", "ready", "standby"]



def test_a_drain_while_the_backup_sleeps_drops_the_error_its_call_held():
    """The first task (1 MiB) fails on the target at once, but the call
    reports it only after its rate-limit sleep (1 s); a refused backup's
    drain at 300 ms pauses the job for real (backup_pause cancels the call),
    and backup_loop starts a new call from 0: the error is dropped and the
    clusters copied again (QEMU 7.2, backup.c backup_pause / backup_loop;
    scenarios/qemu/backup-drain-drops-held-error).  Without the drain the
    error ends the job at 1 s."""
    fault = {"image": "tgt", "operation": "write", "errno": "EIO", "offset": "448KiB",
             "length": "512", "count": "once"}
    alone = backup_case(data=((0, 4 * MiB),), faults=[fault], speed="1MiB",
                        on_target_error="report")
    r = simulate(alone)[1]
    assert job_summary(r)["outcome"] == "completed-with-error"
    drained = backup_case(data=((0, 4 * MiB),), faults=[fault], speed="1MiB",
                          on_target_error="report",
                          actions=[at("300ms", "job-start", id="k")])
    drained["images"]["tgt2"] = {"size": 4 * MiB}
    drained["jobs"]["k"] = {"type": "backup", "device": "vda", "target": "tgt2",
                            "sync": "incremental", "bitmap": "nosuch", "start": "manual"}
    r = simulate(drained)[1]
    assert [e["event"] for e in r.events if e["event"] == "BLOCK_JOB_ERROR"] == []
    assert statuses(r) == OWN_START + BLIP + BLIP + SUCCESS
    assert job_summary(r)["outcome"] == "completed"
    assert job_summary(r)["integrity"] == "identical"


def _active_commit(refused_backup_at: str | None, shortcuts: bool = True):
    """An active commit of 4 MiB at 512 KiB/s (all issued at once, then
    about 8 s of rate-limit sleep before READY), a guest write of 128 KiB at
    700 ms, and perhaps a refused blockdev-backup of its disk (two drained
    sections)."""
    scenario = {
        "duration": "4s",
        "images": {"base": {"size": 4 * MiB}, "tgt": {"size": 4 * MiB},
                   "top": {"size": 4 * MiB, "backing": "base", "data": "full"}},
        "drives": {"vda": {"image": "top"}},
        "jobs": {JOB: {"type": "commit", "device": "vda", "base": "base", "speed": "512KiB",
                       "start": "100ms"},
                 "k": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                       "start": "manual"}},
        "actions": [at("700ms", "guest-burst", drive="vda", rw="write", bs="64KiB",
                       offset=2 * MiB, **{"number-ios": 2})],
    }
    if refused_backup_at:
        scenario["actions"].append(at(refused_backup_at, "job-start", id="k"))
    sim = blocksim.Simulation(blocksim.load_scenario(scenario), shortcuts=shortcuts)
    return sim.run()


@pytest.mark.parametrize("shortcuts", [True, False])
def test_drained_sections_cut_a_rate_limited_jobs_sleeps(shortcuts):
    """job_pause enters a sleeping job (job_enter_cond_locked deletes its
    timer), and job_resume runs it inside the command: the first drained
    section cuts the commit's sleep, it copies the guest's 128 KiB and
    sleeps again, and the second cuts that sleep too: READY at once (QEMU
    7.2, scenarios/qemu/commit-active-drain-cuts-its-sleep).  Without the
    drains it sleeps past the end of the run."""
    alone = _active_commit(None, shortcuts)
    assert job_summary(alone)["outcome"] == "never-ready"
    r = _active_commit("1s", shortcuts)
    assert statuses(r) == ["created", "running"] + BLIP + BLIP + ["ready"]
    ready = next(e for e in r.events if e["event"] == "BLOCK_JOB_READY")
    t = ready["timestamp"]["seconds"] + ready["timestamp"]["microseconds"] / 1e6
    assert 1.0 < t < 1.01


def _paced_mirror(drain: bool, shortcuts: bool):
    """A 64 MiB mirror at 8 MiB/s (iterations of the 16 MiB buffer, then
    2 s of sleep each: the last issued at 6 s, READY after its sleep, at
    8 s), perhaps a refused blockdev-backup of its disk at 7 s."""
    scenario = mirror_case(size=64 * MiB, speed="8MiB", duration="12s")
    scenario["sample-interval"] = "20s"     # (nothing in SimPy's queue to stop the compiled loop)
    scenario["images"]["tgt"] = {"size": 64 * MiB}
    scenario["jobs"]["k"] = {"type": "backup", "device": "vda", "target": "tgt",
                             "sync": "full", "start": "manual"}
    if drain:
        scenario["actions"].append(at("5s", "job-start", id="k"))
    sim = blocksim.Simulation(blocksim.load_scenario(scenario), shortcuts=shortcuts)
    r = sim.run()
    return [(e["event"], e["timestamp"], e.get("data")) for e in r.events]


def test_a_cut_sleep_is_the_same_with_and_without_shortcuts():
    """The refused backup's drained sections cut the sleep after the
    mirror's last iteration: READY at 7 s, not 8 s; the compiled loop hands
    such a sleep back (MirrorJob.sleeps_through)."""
    def ready_at(events):
        return next((t["seconds"], t["microseconds"]) for name, t, _ in events
                    if name == "BLOCK_JOB_READY")
    cut = _paced_mirror(True, True)
    assert cut == _paced_mirror(True, False)
    assert ready_at(_paced_mirror(False, True)) == (8, 107)
    assert (5, 0) < ready_at(cut) < (5, 20_000)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_an_error_in_the_chunk_a_drain_lets_out_comes_between_the_blips(shortcuts):
    """The first drained section ends the intermediate commit's sleep and
    its end runs the commit inside the command: it copies its next chunk,
    which fails on the base; the second section waits for that I/O, so the
    error comes between the blips, and the commit, taking that pause where
    it would sleep, retries at once (QEMU 7.2,
    scenarios/qemu/commit-intermediate-error-between-drain-blips)."""
    scenario = {
        "duration": "1500ms",
        "images": {"base": {"size": 4 * MiB}, "tgt": {"size": 4 * MiB},
                   "mid": {"size": 4 * MiB, "backing": "base",
                           "data": [{"offset": MiB, "length": MiB}]},
                   "top": {"size": 4 * MiB, "backing": "mid"}},
        "drives": {"vda": {"image": "top"}},
        "faults": [{"image": "base", "operation": "write", "offset": "1600KiB",
                    "length": "512"}],
        "jobs": {JOB: {"type": "commit", "device": "vda", "top": "mid", "base": "base",
                       "speed": "512KiB", "on-error": "ignore", "start": "100ms"},
                 "k": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                       "start": "manual"}},
        "actions": [at("200ms", "job-start", id="k")],
    }
    sim = blocksim.Simulation(blocksim.load_scenario(scenario), shortcuts=shortcuts)
    r = sim.run()
    assert timeline(r, "JOB_STATUS_CHANGE", "BLOCK_JOB_ERROR")[:8] == [
        *st("created", "running", "paused", "running"), err("write", "ignore"),
        *st("paused", "running"), err("write", "ignore")]
    errors = [e["timestamp"] for e in r.events if e["event"] == "BLOCK_JOB_ERROR"]
    assert [t["seconds"] for t in errors] == [0, 0, 1]
