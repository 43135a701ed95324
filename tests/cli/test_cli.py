"""The command line: run, validate, list, plot, schema, errors and exit codes."""

import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import blocksim.record.plot
import blocksim.simulation
from blocksim.cli.commands import Progress, main, parse_sets, result_folder_name
from blocksim.errors import BlocksimError
from blocksim.record.results import FILES, load_result

# A 64 MiB mirror with a one-shot target write fault under a guest workload.
MIRROR = """\
name = "mirror-small"
description = "A 64 MiB mirror with a one-shot target write fault"
duration = "1s"
seed = 3

[images.src]
size = "64M"
data = "full"

[images.tgt]
size = "64M"
capacity = "96M"

[drives.vda]
image = "src"

[workloads.guest]
drive = "vda"
rate-iops = 200

[jobs.job0]
type = "mirror"
device = "vda"
target = "tgt"
on-target-error = "stop"

[[faults]]
image = "tgt"
operation = "write"
count = "once"

[[actions]]
on = "BLOCK_JOB_ERROR"
delay = "0.2s"
command = "block-job-resume"
arguments = { device = "job0" }

[[actions]]
on = "BLOCK_JOB_READY"
command = "block-job-complete"
arguments = { device = "job0" }
"""

# A real invariant violation: a mirror with sync = "none" copies only the
# guest's new writes, so pivoting to a target without the source as backing
# file leaves a target that does not read as the source (QEMU lets you do
# this; the "mirror-target-identical" invariant catches it).
SYNC_NONE = """\
name = "mirror-sync-none"
duration = "1s"

[images.src]
size = "16M"
data = "full"

[images.tgt]
size = "16M"

[drives.vda]
image = "src"

[jobs.job0]
type = "mirror"
device = "vda"
target = "tgt"
sync = "none"

[[actions]]
on = "BLOCK_JOB_READY"
command = "block-job-complete"
arguments = { device = "job0" }
"""

QUIET = """\
name = "quiet"
description = "Nothing happens"
duration = "0.5s"

[images.disk]
size = "1M"
"""


@pytest.fixture
def runner():
    return CliRunner()


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def assert_clean_error(result, *needles):
    """Exit 2, no traceback, one line per problem on stderr, naming ``needles``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines
    for needle in needles:
        assert any(needle in line for line in lines), (needle, lines)
    return lines


# -- run ------------------------------------------------------------------------------------
def test_run_writes_the_folder_and_prints_the_table(runner, tmp_path):
    path = write(tmp_path, "mirror.toml", MIRROR)
    out = tmp_path / "results"
    result = runner.invoke(main, ["run", path, "--out", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "mirror-small"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    text = result.stdout
    assert "mirror-small: profile qemu, seed 3" in text
    assert str(folder) in text
    for word in ("VM:", "job0", "mirror", "completed", "ready", "finished", "stop 1",
                 "integrity", "identical", "vda", "guest errors", "writes lost",
                 "invariants: all 7 hold"):
        assert word in text, word
    assert result.stderr == ""                   # no progress bar off a terminal
    loaded = load_result(folder)
    assert loaded.summary["jobs"]["job0"]["outcome"] == "completed"


def test_run_default_out_is_results(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", "quiet.toml"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "quiet" / "summary.json").is_file()


def test_run_seed_profile_and_set(runner, tmp_path):
    path = write(tmp_path, "mirror.toml", MIRROR)
    out = tmp_path / "r"
    result = runner.invoke(main, ["run", path, "--out", str(out), "--seed", "7",
                                  "--profile", "rfc-2012", "--set", "duration=0.5s",
                                  "--set", "jobs.job0.on-target-error=report"])
    assert result.exit_code == 0, result.output
    folder = out / "mirror-small-seed7-rfc-2012"
    summary = load_result(folder).summary
    assert summary["seed"] == 7 and summary["profile"] == "rfc-2012"
    assert summary["simulated_seconds"] == 0.5
    assert summary["jobs"]["job0"]["errors_by_action"]["report"] == 1
    assert "error:" in result.stdout            # the job failed: its error string is shown


def test_run_shows_why_a_job_was_refused(runner, tmp_path):
    # in 2012 a job's stop policy needs a drive that stops too: the start is refused
    path = write(tmp_path, "mirror.toml", MIRROR)
    result = runner.invoke(main, ["run", path, "--out", str(tmp_path), "--profile", "rfc-2012"])
    assert result.exit_code == 0, result.output
    assert "refused: drive-mirror: Invalid parameter 'on-target-error'" in result.stdout
    assert "1 refused (see commands.jsonl)" in result.stdout


def test_run_with_seed_only(runner, tmp_path):
    path = write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", path, "--out", str(tmp_path), "--seed", "11"])
    assert result.exit_code == 0, result.output
    assert load_result(tmp_path / "quiet-seed11").seed == 11


def test_run_several_scenarios(runner, tmp_path):
    a = write(tmp_path, "a.toml", QUIET)
    b = write(tmp_path, "b.toml", QUIET.replace('name = "quiet"', 'name = "quiet2"'))
    result = runner.invoke(main, ["run", a, b, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"quiet", "quiet2"}
    assert result.stdout.count("invariants: all") == 2


def test_run_exit_1_on_an_invariant_violation(runner, tmp_path):
    path = write(tmp_path, "none.toml", SYNC_NONE)
    result = runner.invoke(main, ["run", path, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "mirror-target-identical" in result.stdout
    assert "VIOLATION" in result.stdout
    folder = tmp_path / "o" / "mirror-sync-none"
    assert load_result(folder).violations               # results are still written


def test_run_exit_1_when_the_summary_reports_a_violation(runner, tmp_path, monkeypatch):
    real = blocksim.simulation.run

    def violating(*args, **kwargs):
        result = real(*args, **kwargs)
        result.summary["invariants"]["violations"].append(
            {"invariant": "guest-writes-durable", "subject": "disk", "time": 0.5,
             "detail": "planted by the test"})
        return result
    monkeypatch.setattr(blocksim.simulation, "run", violating)
    path = write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", path, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "planted by the test" in result.stdout


BAD_CASES = {
    "malformed-toml": ("[images.src\nsize = 1\n", "invalid TOML"),
    "unknown-key": (MIRROR.replace('on-target-error = "stop"', 'on-target-eror = "stop"'),
                    "jobs.job0.on-target-eror"),
    "unknown-policy": (MIRROR.replace('image = "src"\n\n[workloads',
                                      'image = "src"\nwerror = "explode"\n\n[workloads'),
                       "drives.vda.werror"),
    "negative-size": (MIRROR.replace('size = "64M"\ndata', 'size = -512\ndata'),
                      "images.src.size"),
    "missing-drive": (MIRROR.replace('device = "vda"', 'device = "vdz"'), "jobs.job0.device"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_run_bad_scenario(runner, tmp_path, case):
    text, key = BAD_CASES[case]
    path = write(tmp_path, f"{case}.toml", text)
    out = tmp_path / "out"
    result = runner.invoke(main, ["run", path, "--out", str(out)])
    lines = assert_clean_error(result, key)
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert not out.exists()                       # nothing ran, nothing was written


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_validate_bad_scenario(runner, tmp_path, case):
    text, key = BAD_CASES[case]
    path = write(tmp_path, f"{case}.toml", text)
    result = runner.invoke(main, ["validate", path])
    assert_clean_error(result, key)
    assert "OK" not in result.stdout


def test_run_reports_every_problem_and_runs_nothing(runner, tmp_path):
    good = write(tmp_path, "good.toml", MIRROR)
    bad = write(tmp_path, "bad.toml", BAD_CASES["missing-drive"][0])
    out = tmp_path / "out"
    result = runner.invoke(main, ["run", good, bad, str(tmp_path / "nope.toml"),
                                  "--profile", "qemu-9000", "--set", "oops",
                                  "--out", str(out)])
    lines = assert_clean_error(result, "jobs.job0.device", "nope.toml: no such file",
                               "--profile", "--set 'oops'")
    assert len(lines) == 4
    assert not out.exists()


def test_run_unknown_profile(runner, tmp_path):
    path = write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", path, "--profile", "kvm", "--out", str(tmp_path)])
    lines = assert_clean_error(result, "unknown profile 'kvm'")
    assert lines == ["--profile: unknown profile 'kvm'; allowed: qemu, rfc-2012"]


@pytest.mark.parametrize("item", ["duration", "=5s", "a b=1"])
def test_run_bad_set_syntax(runner, tmp_path, item):
    path = write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", path, "--set", item, "--out", str(tmp_path / "o")])
    assert_clean_error(result, "--set", "expected key.path=value")


def test_run_set_with_a_bad_value_names_the_key(runner, tmp_path):
    path = write(tmp_path, "quiet.toml", QUIET)
    result = runner.invoke(main, ["run", path, "--set", "images.disk.size=-1",
                                  "--out", str(tmp_path / "o")])
    assert_clean_error(result, "images.disk.size")


def test_run_missing_file(runner, tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert_clean_error(result, "nope.toml: no such file")


def test_run_two_scenarios_with_one_name(runner, tmp_path):
    a = write(tmp_path, "a.toml", QUIET)
    b = write(tmp_path, "b.toml", QUIET)
    result = runner.invoke(main, ["run", a, b, "--out", str(tmp_path / "o")])
    assert_clean_error(result, "same results folder")


def test_parse_sets():
    assert parse_sets(["a.b=1", "c= x=y "]) == {"a.b": "1", "c": " x=y "}
    with pytest.raises(BlocksimError):
        parse_sets(["novalue"])


def test_result_folder_name():
    assert result_folder_name("m") == "m"
    assert result_folder_name("m", seed=0) == "m-seed0"
    assert result_folder_name("m", seed=2, profile="qemu") == "m-seed2-qemu"
    assert result_folder_name("../a b") == "_a_b"


# -- atomicity through the command line ----------------------------------------------------
def test_a_run_that_fails_midway_writes_nothing(runner, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("the engine failed")
    monkeypatch.setattr(blocksim.simulation, "run", boom)
    path = write(tmp_path, "quiet.toml", QUIET)
    out = tmp_path / "o"
    result = runner.invoke(main, ["run", path, "--out", str(out)])
    assert isinstance(result.exception, RuntimeError)
    assert not (out / "quiet").exists()


def test_a_failed_plot_keeps_the_older_folder(runner, tmp_path, monkeypatch):
    path = write(tmp_path, "quiet.toml", QUIET)
    out = tmp_path / "o"
    assert runner.invoke(main, ["run", path, "--out", str(out)]).exit_code == 0
    before = (out / "quiet" / "summary.json").read_text()

    def failing(*args, **kwargs):
        raise RuntimeError("the plot step failed")
    monkeypatch.setattr(blocksim.record.plot, "save_timeline", failing)
    result = runner.invoke(main, ["run", path, "--out", str(out), "--set", "duration=0.25s"])
    assert isinstance(result.exception, RuntimeError)
    assert sorted(p.name for p in out.iterdir()) == ["quiet"]     # no temporary left
    assert (out / "quiet" / "summary.json").read_text() == before
    assert load_result(out / "quiet").summary["simulated_seconds"] == 0.5


# -- validate, list, schema -----------------------------------------------------------------
def test_validate(runner, tmp_path):
    good = write(tmp_path, "good.toml", MIRROR)
    assert runner.invoke(main, ["validate", good]).stdout == f"OK {good}\n"
    bad = write(tmp_path, "bad.toml", BAD_CASES["unknown-key"][0])
    result = runner.invoke(main, ["validate", good, bad])
    assert result.exit_code == 2
    assert result.stdout == f"OK {good}\n"
    assert result.stderr.startswith(f"{bad}: jobs.job0.on-target-eror: unknown key")


def test_validate_reports_every_problem(runner, tmp_path):
    text = MIRROR.replace('device = "vda"', 'device = "vdz"').replace(
        'size = "64M"\ndata', 'size = -512\ndata')
    path = write(tmp_path, "two.toml", text)
    result = runner.invoke(main, ["validate", path])
    lines = assert_clean_error(result, "jobs.job0.device", "images.src.size")
    assert len(lines) == 2


def test_list(runner, tmp_path, monkeypatch):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    write(folder, "b.toml", MIRROR)
    write(folder, "a.toml", QUIET)
    write(folder, "notes.txt", "not a scenario")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["scenarios/a.toml", "quiet"]
    assert lines[0].endswith("Nothing happens")
    assert "mirror-small" in lines[1]
    assert lines[1].endswith("A 64 MiB mirror with a one-shot target write fault")
    assert runner.invoke(main, ["list", str(folder)]).stdout.count(".toml") == 2


def test_list_with_a_bad_file_and_a_missing_dir(runner, tmp_path):
    write(tmp_path, "good.toml", QUIET)
    write(tmp_path, "bad.toml", BAD_CASES["malformed-toml"][0])
    result = runner.invoke(main, ["list", str(tmp_path)])
    assert result.exit_code == 2
    assert "quiet" in result.stdout
    assert "invalid TOML" in result.stderr
    assert_clean_error(runner.invoke(main, ["list", str(tmp_path / "nope")]), "no such directory")


def test_schema(runner):
    result = runner.invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert {"name", "description", "profile", "seed", "duration", "images", "drives", "faults",
            "workloads", "jobs", "actions"} <= set(schema["properties"])
    assert result.stdout.startswith('{\n  "')                 # indent=2


# -- plot ---------------------------------------------------------------------------------------
def test_plot_redraws(runner, tmp_path):
    path = write(tmp_path, "mirror.toml", MIRROR)
    out = tmp_path / "o"
    assert runner.invoke(main, ["run", path, "--out", str(out)]).exit_code == 0
    folder = out / "mirror-small"
    (folder / "timeline.png").unlink()
    result = runner.invoke(main, ["plot", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    svg = tmp_path / "figure.svg"
    result = runner.invoke(main, ["plot", str(folder), "-o", str(svg)])
    assert result.exit_code == 0, result.output
    assert svg.read_text().startswith("<?xml")


def test_plot_bad_input(runner, tmp_path):
    assert_clean_error(runner.invoke(main, ["plot", str(tmp_path / "nope")]), "nope")
    path = write(tmp_path, "quiet.toml", QUIET)
    assert runner.invoke(main, ["run", path, "--out", str(tmp_path)]).exit_code == 0
    folder = tmp_path / "quiet"
    assert_clean_error(runner.invoke(main, ["plot", str(folder), "-o", "x.nope"]),
                       "unknown figure format")
    (folder / "series.csv").unlink()
    assert_clean_error(runner.invoke(main, ["plot", str(folder)]), str(folder), "series.csv")


# -- help, entry points, progress --------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["list"], ["plot"], ["schema"]])
def test_help_has_an_example(runner, command):
    result = runner.invoke(main, command + ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "blocksim" in result.stdout


def test_python_dash_m(tmp_path):
    done = subprocess.run([sys.executable, "-m", "blocksim", "validate",
                           write(tmp_path, "q.toml", QUIET)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK ")
    done = subprocess.run([sys.executable, "-m", "blocksim", "validate", "missing.toml"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "missing.toml: no such file\n"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_after_a_moment():
    now = [0.0]
    clock = lambda: now[0]                              # noqa: E731
    quiet = io.StringIO()
    bar = Progress("quiet", stream=quiet, clock=clock)
    now[0] = 5.0
    bar(0.5)
    bar.close()
    assert quiet.getvalue() == ""                       # not a terminal

    fast = FakeTerminal()
    bar = Progress("fast", stream=fast, clock=clock)
    for i in range(1, 101):
        bar(i / 100)                                    # the clock does not move
    bar.close()
    assert fast.getvalue() == ""                        # done in a moment: no bar

    slow = FakeTerminal()
    bar = Progress("slow", stream=slow, clock=clock)
    bar(0.1)
    now[0] += 2.0
    bar(0.5)
    bar(1.0)
    bar.close()
    assert "slow" in slow.getvalue() and "100%" in slow.getvalue()
