"""The library travels with the package: `blocksim list`, `blocksim run NAME`
and `blocksim new TEMPLATE PATH` from any directory."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import blocksim
from blocksim.cli.commands import main
from blocksim.record.results import load_result
from blocksim.scenario.library import find_in_library, library_dir, library_names, templates

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory with no scenarios/ folder, as after pip install."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_installed_library_is_the_repository_s_scenarios():
    assert sorted(p.name for p in library_dir().glob("*.toml")) == \
        sorted(p.name for p in (ROOT / "scenarios").glob("*.toml"))
    assert "mirror-thin-target-enospc" in library_names()
    assert find_in_library("qemu/mirror-cancel-ready").name == "mirror-cancel-ready.toml"
    for bad in ("", "../scenarios/x", "/etc/passwd", "nope", "a/b/c", "x.toml", "other/mirror"):
        assert find_in_library(bad) is None, bad


def test_list_outside_the_repository_lists_the_library_by_name(elsewhere):
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    first = [line.split()[0] for line in result.output.splitlines()]
    assert first == library_names()


def test_run_name_from_any_directory(elsewhere):
    result = CliRunner().invoke(main, ["run", "mirror-cancel-when-ready", "--out", "out"])
    assert result.exit_code == 0, result.output
    saved = load_result(elsewhere / "out" / "mirror-cancel-when-ready")
    direct = blocksim.run(str(ROOT / "scenarios" / "mirror-cancel-when-ready.toml"))
    assert saved.events == direct.events


def test_an_unknown_name_is_one_line(elsewhere):
    result = CliRunner().invoke(main, ["run", "no-such-scenario"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "no-such-scenario: no such file, nor a library scenario of that name "
        "(blocksim list names them)"]


def test_a_file_of_the_same_name_comes_before_the_library(elsewhere):
    (elsewhere / "mirror-cancel-when-ready").mkdir()          # a directory, not a scenario
    result = CliRunner().invoke(main, ["validate", "mirror-cancel-when-ready"])
    assert result.exit_code == 2 and "mirror-cancel-when-ready" in result.output


@pytest.mark.parametrize("template", templates())
def test_new_writes_a_scenario_that_runs(elsewhere, template):
    result = CliRunner().invoke(main, ["new", template, "mine.toml"])
    assert result.exit_code == 0, result.output
    text = (elsewhere / "mine.toml").read_text()
    assert text.count("\n#") + text.count(" # ") > 5              # commented for a newcomer
    scenario = blocksim.load_scenario(elsewhere / "mine.toml")
    assert scenario.name == "mine"
    run = blocksim.run(scenario)
    assert run.summary["invariants"]["violations"] == []
    if template == "guest":       # pauses on ENOSPC, extended, continued, nothing lost
        assert {"STOP", "RESUME"} <= set(run.event_names())
        assert run.summary["drives"]["vda"]["writes_lost"] == 0
    else:                         # the job stops on its fault, is resumed, and completes
        job = next(iter(run.summary["jobs"].values()))
        assert job["outcome"] == "completed"
        assert "BLOCK_JOB_ERROR" in run.event_names()


def test_new_refuses_what_it_cannot_do(elsewhere):
    runner = CliRunner()
    out = runner.invoke(main, ["new", "nope", "a.toml"])
    assert out.exit_code == 2 and "unknown template 'nope'; expected one of: " in out.output
    assert runner.invoke(main, ["new", "mirror", "a.toml"]).exit_code == 0
    again = runner.invoke(main, ["new", "mirror", "a.toml"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(main, ["new", "mirror", "a.toml", "--force"]).exit_code == 0
    assert runner.invoke(main, ["new", "mirror", "a.txt"]).exit_code == 2
    assert runner.invoke(main, ["new", "mirror", "no/such/dir/a.toml"]).exit_code == 2


def test_the_wheel_carries_the_library_and_the_templates(tmp_path):
    # built offline from this tree, as pip would for an install
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("blocksim-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "scenarios").rglob("*.toml"):
        assert f"blocksim/library/{path.relative_to(ROOT / 'scenarios')}" in names, path
    assert {f"blocksim/scenario/templates/{t}.toml" for t in templates()} <= names
