"""The command line under issue 19: usage errors on one line, limits as
options, long names, a truncated run's warning."""

import json

import pytest
from click.testing import CliRunner

import blocksim.record.results
from blocksim.cli.commands import main, result_folder_name

GUEST = """\
name = "guest"
duration = "10s"
max-requests = 3000

[images.a]
size = "1G"

[drives.d]
image = "a"

[workloads.w]
drive = "d"
rate-iops = 1000
"""


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("args, line", [
    (["run", "--seed", "-1", "x.toml"],
     "blocksim run: Invalid value for '--seed': -1 is not in the range x>=0. (see blocksim run --help)"),
    (["frobnicate"], "blocksim: No such command 'frobnicate'. (see blocksim --help)"),
    (["--frob"], "blocksim: No such option '--frob'. (see blocksim --help)"),
    (["validate"], "blocksim validate: Missing argument 'SCENARIO...'. (see blocksim validate --help)"),
    (["validate", "--max-samples", "many", "x.toml"],
     "--max-samples 'many': expected a whole number of at least 1, such as 1000000 or 1e6"),
])
def test_usage_errors_are_one_line(runner, args, line):
    result = runner.invoke(main, args, prog_name="blocksim")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line]
    assert "Usage:" not in result.output


def test_limits_are_options_of_validate(runner, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GUEST.replace('"10s"', '"1h"').replace('max-requests = 3000\n', '')
                    .replace("1000", "1e6"))
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}: workloads.w: 3.6e9 guest requests over duration 1h (rate-iops 1e6 for 1h); "
        "at most 1e8 (lower the rate, the duration or number-ios, set max-requests to stop the "
        "run there, or --max-requests)"]
    assert runner.invoke(main, ["validate", "--max-requests", "1e10", str(path)]).exit_code == 0
    result = runner.invoke(main, ["validate", "--max-samples", "100", str(path)])
    assert result.stderr.splitlines() == [
        f"{path}: sample-interval: 36002 samples over duration 1h; at most 100 (raise "
        "sample-interval, or --max-samples)",
        f"{path}: workloads.w: 3.6e9 guest requests over duration 1h (rate-iops 1e6 for 1h); "
        "at most 1e8 (lower the rate, the duration or number-ios, set max-requests to stop the "
        "run there, or --max-requests)"]


def test_a_run_reaching_max_requests_warns_and_writes_a_marked_folder(runner, tmp_path):
    path = tmp_path / "guest.toml"
    path.write_text(GUEST)
    result = runner.invoke(main, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "guest"
    assert result.stderr.splitlines() == [
        f"{path}: warning: stopped at 3 s of 10 s: the guest requests reached max-requests; "
        f"{folder} is complete and marked truncated"]
    assert "warning: stopped at 3 s of 10 s" in result.stdout
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["truncated"] and summary["stopped_by"] == "max-requests"


def test_a_long_name_gives_a_short_deterministic_folder(runner, tmp_path):
    long = "x" * 1000
    folder = result_folder_name(long, seed=7, profile="rfc-2012")
    assert folder == result_folder_name(long, seed=7, profile="rfc-2012")
    assert len(folder) == 100 + len("-seed7-rfc-2012") and folder.startswith("x" * 87 + "-")
    assert result_folder_name(long + "y") != result_folder_name(long)
    assert result_folder_name("x" * 100) == "x" * 100
    path = tmp_path / "long.toml"
    path.write_text(GUEST.replace('name = "guest"', f'name = "{long}"'))
    result = runner.invoke(main, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == [result_folder_name(long)]


def test_a_folder_that_cannot_be_written_names_the_key(runner, tmp_path, monkeypatch):
    def too_long(result, directory):
        raise OSError(36, "File name too long")
    monkeypatch.setattr(blocksim.record.results, "save_result", too_long)
    path = tmp_path / "guest.toml"
    path.write_text(GUEST)
    result = runner.invoke(main, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'out' / 'guest'}: cannot write the results folder (named after {path}'s "
        "'name' key): File name too long"]


def test_a_bare_blocksim_still_prints_the_help(runner):
    result = runner.invoke(main, [], prog_name="blocksim")
    assert result.exit_code == 2 and "Commands:" in result.stderr
