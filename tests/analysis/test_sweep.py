"""Sweeps: rows, order, tables, resume, failing runs, the ``sweep`` command."""

import json
import math
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

import blocksim.simulation
from blocksim.cli.analysis import register, split_values
from blocksim.errors import ScenarioError
from blocksim.analysis.sweep import AGGREGATE_CSV, COMPARISON_PNG, DEFINITION, JOURNAL, RUNS_CSV, SweepError, flatten_summary, load_sweep, sweep

# A mirror of an 8 MiB disk onto a target whose writes fail at random.
TINY = """
name = "tiny-mirror"
duration = "2s"
seed = 3

[images.disk]
size = "8MiB"
data = "full"

[images.copy]
size = "8MiB"
latency = "200us"
bandwidth = "200MiB"

[drives.vda]
image = "disk"

[[faults]]
image = "copy"
type = "error"
operation = "write"
probability = 0.05

[workloads.guest]
drive = "vda"
rw = "randwrite"
rate-iops = 200
size = "4MiB"

[jobs.job0]
type = "mirror"
device = "vda"
target = "copy"
speed = "16MiB"

[[actions]]
on = "BLOCK_JOB_READY"
command = "block-job-complete"
arguments = { device = "job0" }
"""

#: 2 policies x 2 fault probabilities
VARY = {"jobs.job0.on-target-error": ["report", "ignore"], "faults.0.probability": ["0.01", "0.2"]}


def write_tiny(folder: Path) -> Path:
    path = Path(folder) / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path)


def test_rows_in_combination_then_seed_order(tiny, tmp_path):
    result = sweep(tiny, VARY, seeds=3, workers=2, out=tmp_path / "s")
    assert result.complete and result.ran == 12 and result.resumed == 0
    keys = [(r["jobs.job0.on-target-error"], r["faults.0.probability"], r["seed"]) for r in result.rows]
    assert keys == [(p, q, s) for p in ("report", "ignore") for q in (0.01, 0.2) for s in (3, 4, 5)]
    row = result.rows[0]
    for column in ("jobs.job0.outcome", "jobs.job0.bytes_copied", "jobs.job0.ready_at",
                   "vm.time_paused", "drives.vda.writes_lost", "invariants.violations", "error"):
        assert column in row
    assert all(r["error"] is None for r in result.rows)
    assert result.columns()[:3] == ["jobs.job0.on-target-error", "faults.0.probability", "seed"]
    assert result.columns()[-1] == "error"
    # the same sweep inline gives the same table
    inline = sweep(tiny, VARY, seeds=3, workers=1)
    assert inline.rows == result.rows
    assert inline.frame().equals(result.frame())


def test_folder_tables(tiny, tmp_path):
    folder = tmp_path / "s"
    result = sweep(tiny, VARY, seeds=3, workers=1, out=folder)
    for name in (DEFINITION, JOURNAL, RUNS_CSV, AGGREGATE_CSV, COMPARISON_PNG, "scenario.toml"):
        assert (folder / name).is_file(), name
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]   # no temp file left
    runs = pd.read_csv(folder / RUNS_CSV)
    assert list(runs.columns) == result.columns()
    assert len(runs) == 12
    assert list(runs["jobs.job0.outcome"]) == [r["jobs.job0.outcome"] for r in result.rows]
    definition = json.loads((folder / DEFINITION).read_text())
    assert definition["vary"] == {"jobs.job0.on-target-error": ["report", "ignore"],
                                  "faults.0.probability": [0.01, 0.2]}
    assert definition["seeds"] == 3 and definition["base_seed"] == 3 and definition["runs"] == 12

    agg = pd.read_csv(folder / AGGREGATE_CSV)
    assert len(agg) == 4 and list(agg["runs"]) == [3, 3, 3, 3]
    shares = agg[[c for c in agg.columns if c.startswith("jobs.job0.outcome.")]]
    assert all(math.isclose(s, 1.0) for s in shares.sum(axis=1))
    for stat in ("mean", "ci_low", "ci_high"):
        assert f"jobs.job0.bytes_copied.{stat}" in agg.columns
    first = [r["jobs.job0.bytes_copied"] for r in result.rows[:3]]
    assert math.isclose(agg["jobs.job0.bytes_copied.mean"][0], sum(first) / 3)
    assert agg["jobs.job0.bytes_copied.ci_low"][0] <= agg["jobs.job0.bytes_copied.mean"][0] \
        <= agg["jobs.job0.bytes_copied.ci_high"][0]

    loaded = load_sweep(folder)
    assert loaded.rows == result.rows and loaded.complete
    assert loaded.plot().axes


def test_confidence_interval_is_student_t(tiny):
    from scipy import stats
    result = sweep(tiny, {}, seeds=4, workers=1)
    values = [r["jobs.job0.bytes_copied"] for r in result.rows]
    agg = result.aggregate()
    mean = sum(values) / 4
    sd = pd.Series(values).std()
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert math.isclose(agg["jobs.job0.bytes_copied.mean"][0], mean)
    assert math.isclose(agg["jobs.job0.bytes_copied.ci_high"][0], mean + half, rel_tol=1e-9)


class Stop(Exception):
    pass


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_interruption(tiny, tmp_path, workers):
    folder = tmp_path / "s"
    seen = []

    def stop_after_five(done, total):
        seen.append((done, total))
        if done >= 5:
            raise Stop()

    with pytest.raises(Stop):
        sweep(tiny, VARY, seeds=3, workers=workers, out=folder, progress=stop_after_five)
    assert seen[0] == (0, 12)
    assert len((folder / JOURNAL).read_text().splitlines()) == 5
    assert not (folder / RUNS_CSV).exists()
    partial = load_sweep(folder)
    assert len(partial.rows) == 5 and not partial.complete

    calls = []
    resumed = sweep(tiny, VARY, seeds=3, workers=workers, out=folder,
                    progress=lambda d, t: calls.append(d))
    assert resumed.resumed == 5 and resumed.ran == 7
    assert calls[0] == 5 and calls[-1] == 12 and len(calls) == 8
    whole = sweep(tiny, VARY, seeds=3, workers=1, out=tmp_path / "whole")
    assert resumed.rows == whole.rows
    assert (folder / RUNS_CSV).read_bytes() == (tmp_path / "whole" / RUNS_CSV).read_bytes()
    assert (folder / AGGREGATE_CSV).read_bytes() == (tmp_path / "whole" / AGGREGATE_CSV).read_bytes()
    # once more: nothing left to run
    again = sweep(tiny, VARY, seeds=3, workers=workers, out=folder)
    assert again.ran == 0 and again.resumed == 12 and again.rows == whole.rows


def test_torn_journal_line_is_run_again(tiny, tmp_path):
    folder = tmp_path / "s"
    whole = sweep(tiny, VARY, seeds=1, workers=1, out=folder)
    lines = (folder / JOURNAL).read_text().splitlines(keepends=True)
    (folder / JOURNAL).write_text("".join(lines[:2]) + lines[2][:25])   # killed mid-write
    resumed = sweep(tiny, VARY, seeds=1, workers=1, out=folder)
    assert resumed.resumed == 2 and resumed.ran == 2
    assert resumed.rows == whole.rows


def test_other_definition_in_the_same_folder_is_an_error(tiny, tmp_path):
    folder = tmp_path / "s"
    sweep(tiny, VARY, seeds=1, workers=1, out=folder)
    with pytest.raises(SweepError, match="holds a different sweep.*seeds 1 vs 2"):
        sweep(tiny, VARY, seeds=2, workers=1, out=folder)
    with pytest.raises(SweepError, match="different sweep.*vary"):
        sweep(tiny, {"jobs.job0.on-target-error": ["stop"]}, seeds=1, workers=1, out=folder)
    tiny.write_text(TINY.replace('speed = "16MiB"', 'speed = "8MiB"'))
    with pytest.raises(SweepError, match="different sweep.*scenario"):
        sweep(tiny, VARY, seeds=1, workers=1, out=folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not empty"):
        sweep(tiny, VARY, seeds=1, workers=1, out=other)


def test_invalid_variant_is_a_row(tiny):
    result = sweep(tiny, {"jobs.job0.on-target-error": ["report", "bogus"]}, seeds=2, workers=2)
    assert [r["error"] is None for r in result.rows] == [True, True, False, False]
    assert "on-target-error" in result.rows[2]["error"]
    assert "jobs.job0.outcome" not in result.rows[2]
    agg = result.aggregate()
    assert list(agg["failed"]) == [0, 2]
    assert result.frame()["error"].notna().sum() == 2


def test_failing_run_is_a_row(tiny, tmp_path, monkeypatch):
    real = blocksim.simulation.run

    def flaky(scenario, seed=None, profile=None, progress=None):
        if seed == 4:
            raise RuntimeError("engine exploded")
        return real(scenario, seed=seed, profile=profile)

    monkeypatch.setattr(blocksim.simulation, "run", flaky)
    result = sweep(tiny, {"faults.0.probability": [0.01, 0.2]}, seeds=3, workers=1, out=tmp_path / "s")
    assert result.complete and len(result.rows) == 6
    errors = [r["error"] for r in result.rows]
    assert errors == [None, "RuntimeError: engine exploded", None] * 2
    assert result.failed == 2
    assert "engine exploded" in (tmp_path / "s" / RUNS_CSV).read_text()


def test_bad_definitions(tiny, tmp_path):
    with pytest.raises(ScenarioError, match="on-target-eror"):          # a typo: every variant fails
        sweep(tiny, {"jobs.job0.on-target-eror": ["report", "stop"]}, workers=1)
    with pytest.raises(ScenarioError, match="out of range"):
        sweep(tiny, {"faults.5.probability": [0.1]}, workers=1)
    with pytest.raises(SweepError, match="seed"):
        sweep(tiny, {"seed": [1, 2]}, workers=1)
    with pytest.raises(SweepError, match="seeds"):
        sweep(tiny, VARY, seeds=0)
    with pytest.raises(SweepError, match="twice"):
        sweep(tiny, {"faults.0.probability": ["0.1", 0.1]})
    with pytest.raises(SweepError, match="no values"):
        sweep(tiny, {"faults.0.probability": []})
    with pytest.raises(ScenarioError, match="no such file"):
        sweep(tmp_path / "nope.toml", VARY)


def test_flatten_summary():
    flat = flatten_summary({"scenario": "x", "seed": 1, "blocksim_version": "0", "profile": "qemu",
                            "vm": {"final_state": "paused", "time_paused": 1.5},
                            "jobs": {"j": {"errors_by_action": {"stop": 2}}},
                            "invariants": {"checked": ["a", "b"],
                                           "violations": [{"invariant": "b"}, {"invariant": "a"},
                                                          {"invariant": "b"}]}})
    assert flat == {"vm.final_state": "paused", "vm.time_paused": 1.5,
                    "jobs.j.errors_by_action.stop": 2, "invariants.violations": 3,
                    "invariants.violated": "a;b"}


# -- the command -----------------------------------------------------------------------------
@pytest.fixture
def cli():
    group = click.Group()
    register(group)
    return group


def test_sweep_command(tiny, tmp_path, cli):
    out = tmp_path / "s"
    args = ["sweep", str(tiny), "--vary", "jobs.job0.on-target-error=report,ignore",
            "--vary", "faults.0.probability=0.01,0.2", "--seeds", "2", "--workers", "1", "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("tiny-mirror: 4 combinations x 2 seeds (seeds 3..4) = 8 runs")
    assert "job0 outcomes" in lines[1] and len(lines) == 6
    assert (out / RUNS_CSV).is_file()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "8 already done, 0 run now" in again.output


def test_sweep_command_default_folder(tiny, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["sweep", str(tiny), "--seeds", "2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    folders = list((tmp_path / "results").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("tiny-mirror-sweep-")
    assert "1 combination x 2 seeds" in r.output


def test_sweep_command_failed_run_exits_1(tiny, tmp_path, cli):
    r = CliRunner().invoke(cli, ["sweep", str(tiny), "--vary", "jobs.job0.on-target-error=report,bogus",
                                 "--workers", "1", "--out", str(tmp_path / "s")])
    assert r.exit_code == 1
    assert "1 run failed" in r.output


@pytest.mark.parametrize("args, message", [
    (["--vary", "nokey"], "--vary 'nokey': expected KEY.PATH=V1,V2,..."),
    (["--vary", "faults.0.probability=0.1,,0.2"], "empty value"),
    (["--vary", "faults.0.probability=0.1", "--vary", "faults.0.probability=0.2"], "given twice"),
    (["--vary", "jobs.job0.on-target-eror=stop"], "unknown key (did you mean 'on-target-error'?)"),
    (["--seeds", "0"], "Invalid value for '--seeds'"),
])
def test_sweep_command_bad_input(tiny, tmp_path, cli, args, message):
    r = CliRunner().invoke(cli, ["sweep", str(tiny), "--out", str(tmp_path / "s"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_sweep_command_other_sweep_in_folder(tiny, tmp_path, cli):
    out = str(tmp_path / "s")
    assert CliRunner().invoke(cli, ["sweep", str(tiny), "--workers", "1", "--out", out]).exit_code == 0
    r = CliRunner().invoke(cli, ["sweep", str(tiny), "--seeds", "2", "--workers", "1", "--out", out])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "holds a different sweep" in r.output


def test_split_values():
    assert split_values("report,stop") == ["report", "stop"]
    assert split_values("[1, 2],[3]") == ["[1, 2]", "[3]"]
    assert split_values('"a,b", c') == ['"a,b"', "c"]


def test_sweep_help(cli):
    r = CliRunner().invoke(cli, ["sweep", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "--vary" in r.output


def test_parquet_when_pyarrow_is_importable(tiny, tmp_path):
    pytest.importorskip("pyarrow")
    result = sweep(tiny, {"jobs.job0.on-target-error": ["report", "bogus"]}, seeds=2, workers=1,
                   out=tmp_path / "s")
    frame = pd.read_parquet(tmp_path / "s" / "runs.parquet")
    assert list(frame.columns) == result.columns() and len(frame) == 4
    assert frame["error"].notna().tolist() == [False, False, True, True]


def test_progress_bar_on_a_terminal():
    import io
    from blocksim.cli.analysis import _Bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock = iter([0.0, 0.1, 1.0, 1.1, 1.2, 1.3, 1.4]).__next__
    stream = Tty()
    bar = _Bar("sweep x", stream=stream, clock=clock)
    for done in (2, 3, 4, 5):            # 2 runs found in the journal, then 3 run now
        bar(done, 5)
    bar.close()
    out = stream.getvalue()
    assert "sweep x" in out and "3/3" in out
    quiet = io.StringIO()
    silent = _Bar("sweep x", stream=quiet)
    silent(1, 2)
    silent.close()
    assert quiet.getvalue() == ""


def test_profile_is_part_of_the_definition(tiny, tmp_path):
    folder = tmp_path / "s"
    result = sweep(tiny, {}, seeds=1, workers=1, out=folder, profile="rfc-2012")
    assert result.definition["profile"] == "rfc-2012"
    with pytest.raises(SweepError, match="profile rfc-2012 vs default"):
        sweep(tiny, {}, seeds=1, workers=1, out=folder)
