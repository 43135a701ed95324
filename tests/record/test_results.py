"""The results folder: five files, written atomically, read back unchanged."""

import json
import math

import pytest

import blocksim.record.plot
from blocksim import load_scenario, run
from blocksim.errors import ResultsError
from blocksim.record.result import Result
from blocksim.record.results import FILES, SCENARIO_KEY, is_results_folder, load_result, parse_series_csv, save_result, series_csv

# A 64 MiB mirror onto a thin target with a one-shot target write fault, while
# the guest writes: events, commands, NaN latencies, int and float columns.
MIRROR = {
    "name": "mirror-thin",
    "description": "64 MiB mirror onto a thin target with a one-shot write fault",
    "duration": "2s",
    "seed": 5,
    "images": {"src": {"size": "64M", "data": "full"},
               "tgt": {"size": "64M", "capacity": "96M"}},
    "drives": {"vda": {"image": "src"}},
    "workloads": {"guest": {"drive": "vda", "rate-iops": 200, "start": "0.5s"}},
    "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "tgt",
                      "on-target-error": "stop"}},
    "faults": [{"image": "tgt", "operation": "write", "count": "once"}],
    "actions": [
        {"on": "BLOCK_JOB_ERROR", "delay": "0.3s", "command": "block-job-resume",
         "arguments": {"device": "job0"}},
        {"on": "BLOCK_JOB_READY", "delay": "0.5s", "command": "block-job-complete",
         "arguments": {"device": "job0"}},
    ],
}

ATTRIBUTES = ("events", "commands", "summary", "scenario", "seed", "profile", "series")


@pytest.fixture(scope="module")
def result():
    return run(load_scenario(MIRROR))


def assert_same(a: Result, b: Result):
    for name in ATTRIBUTES:
        assert getattr(a, name) == getattr(b, name), name


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def failing_plot(*args, **kwargs):
    raise RuntimeError("the plot step failed")


# -- writing and reading --------------------------------------------------------------
def test_save_writes_the_five_files(result, tmp_path):
    folder = save_result(result, tmp_path / "out" / "mirror-thin")
    assert folder == tmp_path / "out" / "mirror-thin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert is_results_folder(folder)
    assert leftovers(folder.parent) == []
    assert (folder / "events.jsonl").read_text() == result.events_jsonl()
    commands = [json.loads(line) for line in (folder / "commands.jsonl").read_text().splitlines()]
    assert commands == result.commands
    assert (folder / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (folder / "series.csv").read_text().splitlines()[0]
    assert header.split(",") == list(result.series)


def test_summary_holds_the_resolved_scenario(result, tmp_path):
    folder = save_result(result, tmp_path / "r")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary[SCENARIO_KEY] == result.scenario
    assert load_scenario(summary[SCENARIO_KEY]) == load_scenario(MIRROR)
    assert summary["seed"] == 5 and summary["profile"] == "qemu"
    assert "blocksim_version" in summary


def test_load_result_round_trip(result, tmp_path):
    again = load_result(save_result(result, tmp_path / "r"))
    assert_same(result, again)
    # the types survive too: ints stay ints, NaN stays NaN, strings stay strings
    for name, column in result.series.items():
        for x, y in zip(column, again.series[name]):
            assert type(x) is type(y), name
    latency = again.series["drive.vda.latency"]
    assert any(isinstance(v, float) and math.isnan(v) for v in latency)
    assert all(type(v) is int for v in again.series["job.job0.offset"])
    assert again.series["vm.state"][0] == "running"
    assert again.ok == result.ok


def test_round_trip_of_a_run_with_a_drive_error_and_a_stop(tmp_path):
    scenario = {**MIRROR, "name": "guest-stop", "jobs": {}, "actions": [
        {"on": "STOP", "delay": "0.2s", "command": "cont"}],
        "drives": {"vda": {"image": "tgt", "werror": "stop"}},
        "workloads": {"guest": {"drive": "vda", "rate-iops": 500}}}
    first = run(load_scenario(scenario))
    assert "STOP" in first.event_names()
    assert_same(first, load_result(save_result(first, tmp_path / "g")))


def test_series_csv_is_exact():
    series = {
        "time": [0.0, 0.1, 0.30000000000000004],
        "vm.state": ["running", "io-error", "paused"],
        "drive.d.iops": [0.0, 1e-300, 12345.678901234567],
        "drive.d.latency": [math.nan, 0.1 + 0.2, 5e-7],
        "drive.d.io-status": ["ok", "nospace", "failed"],
        "job.j.status": ["none", "running", "ready"],
        "job.j.offset": [0, 2**62, 3],
        "job.j.len": [0, 2**63, 3],
        "job.j.io-status": ["ok", "ok", "ok"],
        "image.i.allocated": [0, 65536, 1 << 40],
        "image.i.capacity": [math.nan, 1 << 30, 1.5],
        "other.thing": [1, 2.5, "x"],
    }
    back = parse_series_csv(series_csv(series))
    assert list(back) == list(series)
    assert back == series                    # math.nan is read back as math.nan
    for name in series:
        assert [type(v) for v in back[name]] == [type(v) for v in series[name]], name


def test_series_csv_strings_that_look_like_numbers_stay_strings():
    series = {"time": [1.0], "job.j.status": ["1"], "vm.state": ["nan"]}
    assert parse_series_csv(series_csv(series)) == series


# -- incomplete folders ---------------------------------------------------------------------
@pytest.mark.parametrize("missing", FILES)
def test_a_missing_file_is_named(result, tmp_path, missing):
    folder = save_result(result, tmp_path / "r")
    (folder / missing).unlink()
    assert not is_results_folder(folder)
    with pytest.raises(ResultsError) as info:
        load_result(folder)
    assert str(folder) in str(info.value) and missing in str(info.value)


def test_a_missing_figure_can_be_accepted(result, tmp_path):
    folder = save_result(result, tmp_path / "r")
    (folder / "timeline.png").unlink()
    assert_same(result, load_result(folder, figure=False))


def test_not_a_folder(tmp_path):
    with pytest.raises(ResultsError, match="no such directory"):
        load_result(tmp_path / "nope")


def test_a_garbled_file_is_a_results_error(result, tmp_path):
    folder = save_result(result, tmp_path / "r")
    (folder / "events.jsonl").write_text("{not json\n")
    with pytest.raises(ResultsError, match="events.jsonl"):
        load_result(folder)
    folder = save_result(result, tmp_path / "s")
    (folder / "summary.json").write_text("{}")
    with pytest.raises(ResultsError, match="summary.json"):
        load_result(folder)


# -- atomicity ---------------------------------------------------------------------------------
def test_a_failed_plot_leaves_no_folder(result, tmp_path, monkeypatch):
    monkeypatch.setattr(blocksim.record.plot, "save_timeline", failing_plot)
    with pytest.raises(RuntimeError, match="plot step"):
        save_result(result, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []            # no folder, no temporary left


def test_an_interrupted_save_leaves_no_folder(result, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(blocksim.record.plot, "save_timeline", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_result(result, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_an_older_folder_survives_a_failed_rerun(result, tmp_path, monkeypatch):
    folder = save_result(result, tmp_path / "r")
    before = {name: (folder / name).read_bytes() for name in FILES}
    other = run(load_scenario(MIRROR), seed=6)
    monkeypatch.setattr(blocksim.record.plot, "save_timeline", failing_plot)
    with pytest.raises(RuntimeError):
        save_result(other, folder)
    assert {name: (folder / name).read_bytes() for name in FILES} == before
    assert leftovers(tmp_path) == []
    assert_same(result, load_result(folder))


def test_a_rerun_replaces_the_older_folder(result, tmp_path):
    folder = save_result(result, tmp_path / "r")
    (folder / "stale.txt").write_text("from an older run")
    other = run(load_scenario(MIRROR), seed=6)
    save_result(other, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert leftovers(tmp_path) == []
    assert load_result(folder).seed == 6
