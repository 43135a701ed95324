"""The clock's shortcut: skipping a wait nothing could interrupt changes nothing."""

from pathlib import Path

import pytest

import blocksim
from blocksim.engine.clock import Clock
from blocksim.simulation import Simulation
from equivalence import outcome

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = sorted((ROOT / "scenarios").glob("*.toml"))


def test_skip_only_strictly_before_the_next_event():
    env = Clock()
    env.timeout(100)
    assert not env.skip_to(100)          # the queued event at 100 runs first
    assert env.now == 0
    assert env.skip_to(99)
    assert env.now == 99 and env.skipped == 1


def test_skip_stops_at_the_end_of_the_run():
    env = Clock()
    seen = []

    def waiter():
        for t in (10, 20, 30):
            if not env.skip_to(t):
                yield env.timeout(t - env.now)
            seen.append(env.now)

    env.process(waiter())
    env.run(until=25)
    assert seen == [10, 20]              # the stop at 25 bounds every skip
    assert env.now == 25


def test_shortcuts_can_be_turned_off():
    env = Clock(shortcuts=False)
    assert not env.skip_to(5)
    assert env.now == 0 and env.skipped == 0




GUEST_ONLY = {
    "name": "guest-only", "duration": "20s",
    "images": {"disk": {"size": "1GiB", "jitter": 0.3}},
    "drives": {"d0": {"image": "disk"}},
    "workloads": {
        "paced": {"drive": "d0", "rw": "randrw", "bs": "4KiB", "rate-iops": 500, "fsync": 7},
        "thinker": {"drive": "d0", "rw": "write", "bs": "64KiB", "think-time": "3ms"},
    },
}


# Several workers parked on the VM's restart wake up on one event: the first
# one resumed must not skip ahead of the others.
STOP_CONT = {
    "name": "stop-cont", "duration": "3s",
    "images": {"disk": {"size": "1GiB"}, "data": {"size": "1GiB", "latency": "1ms"}},
    "drives": {"d0": {"image": "disk"}, "d1": {"image": "data"}},
    "workloads": {
        "paced": {"drive": "d0", "rw": "randwrite", "bs": "4KiB", "rate-iops": 2000,
                  "iodepth": 4},
        "other": {"drive": "d1", "rw": "randread", "bs": "4KiB", "rate-iops": 700},
    },
    "actions": [{"at": "1s", "command": "stop"}, {"at": "2s", "command": "cont"}],
}


# A stream job alone, rate-limited, paused and resumed by commands meanwhile:
# its own reads and writes are the only events, so most of its waits skip.
STREAM_ALONE = {
    "name": "stream-alone", "duration": "5s",
    "images": {"base": {"size": "256MiB", "format": "raw", "data": "full",
                        "latency": "300us"},
               "top": {"size": "256MiB", "backing": "base"}},
    "drives": {"vda": {"image": "top"}},
    "jobs": {"job0": {"type": "stream", "device": "vda", "speed": "200MiB"}},
    "actions": [{"at": "0.3s", "command": "block-job-pause", "arguments": {"device": "job0"}},
                {"at": "0.5s", "command": "block-job-resume", "arguments": {"device": "job0"}}],
}


@pytest.mark.parametrize("source", LIBRARY + [GUEST_ONLY, STOP_CONT, STREAM_ALONE],
                         ids=[p.stem for p in LIBRARY] + ["guest-only", "stop-cont",
                                                          "stream-alone"])
def test_a_run_is_the_same_with_and_without_the_shortcut(source):
    scenario = blocksim.load_scenario(source)
    fast = Simulation(scenario, seed=7)
    exact = Simulation(scenario, seed=7, shortcuts=False)
    assert outcome(fast) == outcome(exact)
    assert exact.env.skipped == 0


def test_the_shortcut_is_taken_where_nothing_else_happens():
    sim = Simulation(blocksim.load_scenario(GUEST_ONLY))
    sim.run()
    assert sim.env.skipped > 1000


def test_a_stream_job_skips_the_waits_of_its_own_requests():
    sim = Simulation(blocksim.load_scenario(STREAM_ALONE))
    result = sim.run()
    assert result.summary["jobs"]["job0"]["final_status"] == "null"
    chunks = 256 * 2        # 512 KiB chunks, each a read and a write
    assert sim.env.skipped > 1.5 * chunks


def _stop_cont_by_timer(shortcuts: bool) -> str:
    """STOP at 1 s and cont at 2 s from bare timer callbacks, so that nothing
    else is queued when the parked requests wake together on the restart."""
    sim = Simulation(blocksim.load_scenario(STOP_CONT | {"actions": []}), seed=3,
                     shortcuts=shortcuts)
    sim.env.timeout(1_000_000_000).callbacks.append(lambda _e: sim.vm.stop())
    sim.env.timeout(2_000_000_000).callbacks.append(lambda _e: sim.vm.cont())
    return outcome(sim)


def test_requests_woken_together_do_not_skip_ahead_of_each_other():
    assert _stop_cont_by_timer(True) == _stop_cont_by_timer(False)


MiB = 1 << 20

#: A backup whose copies of the guest's cluster always fail on the target
#: (on-target-error=ignore: the job retries at once), under a guest writing
#: that cluster (werror=ignore): a guest write's copy-before-write waits on
#: the job's task, then makes its own task, which the job's next call waits
#: on too; when it fails, the guest is resumed first among its waiters.
CBW_FAILING = {
    "name": "cbw-failing", "duration": "60ms", "seed": 1, "sample-interval": "10ms",
    "images": {"top": {"size": 2 * MiB, "latency": "0.2ms", "bandwidth": "1GiB",
                       "data": "full"},
               "tgt": {"size": 2 * MiB, "latency": "0.194ms", "bandwidth": "4GiB"}},
    "drives": {"vda": {"image": "top", "werror": "ignore"}},
    "jobs": {"job0": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                      "on-target-error": "ignore"}},
    "faults": [{"image": "tgt", "offset": 4096, "length": 512, "operation": "write",
                "errno": "EIO"}],
    "workloads": {"g0": {"drive": "vda", "rw": "write", "bs": "4KiB", "iodepth": 1,
                         "rate-iops": 3000, "size": "64KiB"}},
}


@pytest.mark.parametrize("pace", [{"rate-iops": 3000}, {"think-time": "0.3ms"}],
                         ids=["rate", "think"])
def test_a_write_its_filter_broke_does_not_skip_ahead_of_the_job(pace):
    """The guest's write fails in the filter when the task it waited on
    fails: the worker was resumed by that task's done event, which the
    backup's next call also waits on, so it must not skip to its next due
    time (nor do a stretch) before the job's call has run at that instant
    (Drive.woken_shared).  Without steps the task process's end, queued at
    that instant, kept the skip from happening; steps leave it out."""
    source = CBW_FAILING | {"workloads": {"g0": CBW_FAILING["workloads"]["g0"] | pace}}
    if "think-time" in pace:
        del source["workloads"]["g0"]["rate-iops"]
    scenario = blocksim.load_scenario(source)
    fast = Simulation(scenario)
    result = fast.run()
    assert result.summary["jobs"]["job0"]["outcome"] == "running"
    assert fast.drives["vda"].errors_by_action["ignore"] > 50
    assert outcome(Simulation(scenario)) == outcome(Simulation(scenario, shortcuts=False))



@pytest.mark.parametrize("pace", [{"rate-iops": 3000}, {"think-time": "0.3ms"}],
                         ids=["rate", "think"])
@pytest.mark.parametrize("up, down", [("1ms", "1ms"), ("0.3ms", "0.3ms")])
def test_a_write_whose_copy_waited_does_not_skip_ahead_of_the_job(pace, up, down):
    """CBW_FAILING's guest and backup with a target that fails its writes
    now and then: a guest write's copy-before-write makes a task of its
    own, which the job's next call waits on too; when that task is done,
    the guest is resumed first among its waiters, so its node's wait must
    not be skipped before the job's call has run at that instant
    (Drive.request: the copy marks the wake shared), though a write the
    filter lets pass without a wait may skip it (BackupJob.write_passes)."""
    source = CBW_FAILING | {
        "faults": [{"type": "flakey", "image": "tgt", "operation": "write", "up": up,
                    "down": down}],
        "workloads": {"g0": CBW_FAILING["workloads"]["g0"] | pace}}
    if "think-time" in pace:
        del source["workloads"]["g0"]["rate-iops"]
    scenario = blocksim.load_scenario(source)
    assert outcome(Simulation(scenario)) == outcome(Simulation(scenario, shortcuts=False))


#: A backup at 256 MiB/s under a guest writing at random over the disk:
#: while the pass's tasks are in flight the guest's writes go one by one,
#: some waiting for a copy (a cluster dirty or in flight), others passing
#: the filter without a wait (a cluster copied already: BackupJob.write_passes,
#: their node's wait then skipped if nothing comes before its end).
CBW_RACING = {
    "name": "cbw-racing", "duration": "300ms", "sample-interval": "10ms", "seed": 1,
    "images": {"top": {"size": 64 * MiB, "latency": "0.05ms", "bandwidth": "1GiB",
                       "data": "full"},
               "tgt": {"size": 64 * MiB, "latency": "0.05ms", "bandwidth": "1GiB"}},
    "drives": {"vda": {"image": "top"}},
    "jobs": {"job0": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                      "speed": "256MiB"}},
    "workloads": {"g0": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
                         "rate-iops": 3000}},
}


@pytest.mark.parametrize("size", [64, 256])
def test_writes_the_filter_lets_pass_among_copies_that_wait(size, monkeypatch):
    """Both kinds of one-by-one writes through a backup's filter happen
    (counted), and the run is the one without shortcuts."""
    from blocksim.jobs.backup import BackupJob
    waited, passed = [0], [0]
    copy, passes = BackupJob.copy_before_write, BackupJob.write_passes

    def counted_copy(self, offset, length):
        gen = copy(self, offset, length)
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        waited[0] += 1
        while True:
            try:
                event = gen.send((yield event))
            except StopIteration as stop:
                return stop.value

    def counted_passes(self, offset, length):
        ok = passes(self, offset, length)
        passed[0] += ok
        return ok

    monkeypatch.setattr(BackupJob, "copy_before_write", counted_copy)
    monkeypatch.setattr(BackupJob, "write_passes", counted_passes)
    images = {name: image | {"size": size * MiB}
              for name, image in CBW_RACING["images"].items()}
    scenario = blocksim.load_scenario(CBW_RACING | {"images": images})
    got = outcome(Simulation(scenario))
    assert waited[0] >= 3 and passed[0] >= 3
    assert got == outcome(Simulation(scenario, shortcuts=False))
