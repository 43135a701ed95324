"""The thin-provisioning figures of a summary: pauses, ENOSPC errors,
extends and physical size against what was written (issue 18 item 4)."""

import json

import pytest
from click.testing import CliRunner

import blocksim
from blocksim.analysis.sweep import sweep
from blocksim.cli.commands import main

MiB = 1024 * 1024


def guest_on_thin_disk(actions, duration="2s", capacity="1MiB", **workload) -> dict:
    """A guest writing 64 KiB sequentially at 100 IOPS onto a thin disk of
    ``capacity``: it needs a new cluster every write, so 1 MiB lasts 16
    writes (160 ms) before ENOSPC stops the VM."""
    return {
        "name": "thin-summary", "duration": duration,
        "images": {"disk": {"size": "64MiB", "capacity": capacity, "cluster-size": "64KiB",
                            "latency": "100us"}},
        "drives": {"vda": {"image": "disk", "werror": "enospc"}},
        "workloads": {"g": {"drive": "vda", "rw": "write", "bs": "64KiB", "rate-iops": 100}
                      | workload},
        "actions": actions,
    }


def extend_then_cont(nth, by, delay):
    match = {"nth": nth} if nth else {"repeat": True}
    return [{"on": "BLOCK_IO_ERROR", "delay": delay, "command": "thin-extend",
             "arguments": {"image": "disk", "by": by}} | match,
            {"on": "BLOCK_IO_ERROR", "delay": delay, "command": "cont"} | match]


def test_pauses_enospc_and_extends_are_counted():
    # 1 MiB full at 160 ms: paused 300 ms, +4 MiB (64 clusters: the guest
    # catches up, then writes the 80th at 800 ms); paused 500 ms, +8 MiB; then
    # a user stop of 100 ms
    actions = (extend_then_cont(1, "4MiB", "300ms") + extend_then_cont(2, "8MiB", "500ms")
               + [{"at": "1800ms", "command": "stop"}, {"at": "1900ms", "command": "cont"}])
    r = blocksim.run(blocksim.load_scenario(guest_on_thin_disk(actions)))
    s = r.summary
    assert s["pauses"] == {"count": 3, "io_error": 2, "total": pytest.approx(0.9),
                           "longest": pytest.approx(0.5)}
    assert s["vm"]["stops"] == 3 and s["vm"]["time_paused"] == pytest.approx(0.9)
    assert s["enospc"] == {"guest": 2, "jobs": 0, "by_drive": {"vda": 2}, "by_job": {}}
    assert s["extends"] == {"count": 2, "bytes": 12 * MiB, "failed": 0,
                            "by_image": {"disk": {"count": 2, "bytes": 12 * MiB, "failed": 0}}}
    disk = s["thin_images"]["disk"]
    # 200 writes due in 2 s, one 64 KiB cluster each, of 13 MiB
    assert s["drives"]["vda"]["writes"] == 200
    assert disk["physical"] == 13 * MiB and disk["allocated"] == 200 * 64 * 1024
    assert disk["free"] == 8 * 64 * 1024
    assert disk["overallocation"] == pytest.approx(208 / 200)
    assert disk["written"] == s["drives"]["vda"]["writes"] * 64 * 1024


def test_a_pause_going_on_at_the_end_counts_up_to_the_end():
    r = blocksim.run(blocksim.load_scenario(guest_on_thin_disk([], duration="1s")))
    # full after 16 writes: the 17th, issued at 160 ms, fails 100 us later
    # and stops the VM for good
    assert r.summary["pauses"] == {"count": 1, "io_error": 1, "total": pytest.approx(0.8399),
                                   "longest": pytest.approx(0.8399)}
    assert r.summary["extends"]["count"] == 0


def test_overallocation_and_a_refused_extend():
    actions = [{"at": "100ms", "command": "thin-extend",
                "arguments": {"image": "disk", "capacity": "8MiB"}},
               {"at": "200ms", "command": "thin-extend",          # a shrink: refused
                "arguments": {"image": "disk", "capacity": "2MiB"}}]
    r = blocksim.run(blocksim.load_scenario(guest_on_thin_disk(
        actions, duration="1s", **{"number-ios": 32})))
    s = r.summary
    assert s["pauses"]["count"] == 0
    assert s["extends"] == {"count": 1, "bytes": 7 * MiB, "failed": 1,
                            "by_image": {"disk": {"count": 1, "bytes": 7 * MiB, "failed": 1}}}
    assert s["thin_images"]["disk"] == {"physical": 8 * MiB, "allocated": 2 * MiB,
                                        "written": 2 * MiB, "free": 6 * MiB,
                                        "overallocation": 4.0}


def test_a_jobs_enospc_errors_are_counted_apart():
    r = blocksim.run(blocksim.load_scenario("scenarios/mirror-thin-target-extend-once-then-give-up.toml"))
    s = r.summary
    assert s["enospc"]["guest"] == 0
    assert s["enospc"]["jobs"] == s["enospc"]["by_job"]["mirror0"] > 0
    assert s["enospc"]["jobs"] == sum(s["jobs"]["mirror0"]["errors_by_action"].values())
    assert s["extends"]["count"] == 1 and s["extends"]["failed"] == 0


def test_the_figures_are_sweep_columns(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'duration = "1s"\n[images.disk]\nsize = "64MiB"\ncapacity = "1MiB"\n'
        '[drives.vda]\nimage = "disk"\n'
        '[workloads.g]\ndrive = "vda"\nrw = "write"\nbs = "64KiB"\nrate-iops = 100\n'
        '[[actions]]\non = "BLOCK_IO_ERROR"\nrepeat = true\ndelay = "300ms"\n'
        'command = "thin-extend"\narguments = { image = "disk", by = "1MiB" }\n'
        '[[actions]]\non = "BLOCK_IO_ERROR"\nrepeat = true\ndelay = "300ms"\ncommand = "cont"\n')
    vary = {"actions.1.delay": ["300ms", "700ms"]}
    result = sweep(path, vary, seeds=1, workers=1)
    rows = result.rows
    for row, delay in zip(rows, vary["actions.1.delay"]):
        alone = blocksim.run(blocksim.load_scenario(path, {"actions.1.delay": delay}))
        for column in ("pauses.count", "pauses.longest", "pauses.total", "enospc.guest",
                       "extends.count", "extends.bytes", "thin_images.disk.overallocation"):
            group, *key = column.split(".")
            value = alone.summary[group]
            for k in key:
                value = value[k]
            assert row[column] == value, column
    # the longer the wait for cont, the longer each pause and the fewer of them
    assert rows[0]["pauses.longest"] == pytest.approx(0.3)
    assert rows[1]["pauses.longest"] == pytest.approx(0.7)
    assert rows[0]["pauses.count"] > rows[1]["pauses.count"]


def test_blocksim_run_shows_them(tmp_path):
    path = tmp_path / "s.json"
    out = CliRunner().invoke(main, ["run", "scenarios/guest-thin-disk-enospc-pause.toml",
                                    "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert ("thin: 1 pause(s), longest 6.000 s; ENOSPC guest 1, jobs 0; extends 1 (+48 MiB), "
            "0 failed") in out.output
    assert "disk: 64 MiB physical, 64 MiB allocated, 93.75 MiB written, overallocation x1.00" \
        in out.output
    summary = json.loads((tmp_path / "guest-thin-disk-enospc-pause" / "summary.json").read_text())
    assert summary["pauses"]["longest"] == 6.0
