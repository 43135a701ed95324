"""The command line for scripts: --json and --quiet on run and sweep, sweep --set."""

import json

from click.testing import CliRunner

import blocksim
from blocksim.cli.commands import main
from blocksim.record.results import load_result

NAME = "mirror-cancel-when-ready"          # a library scenario, run by name


def test_run_json_is_one_line_a_run_with_the_summary(tmp_path):
    out = CliRunner().invoke(main, ["run", NAME, NAME, "--out", str(tmp_path), "--seed", "4",
                                    "--json"], catch_exceptions=False)
    # the same scenario twice would write one folder twice: refused, nothing runs
    assert out.exit_code == 2
    out = CliRunner().invoke(main, ["run", NAME, "--out", str(tmp_path), "--seed", "4", "--json"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    saved = load_result(record["folder"])
    assert record["summary"] == saved.summary
    assert (record["scenario"], record["seed"], record["profile"]) == (NAME, 4, "qemu")
    assert record["summary"]["jobs"]["mirror0"]["outcome"] == \
        blocksim.run(blocksim.load_scenario(f"scenarios/{NAME}.toml"), seed=4).summary["jobs"][
            "mirror0"]["outcome"]


def test_run_quiet_prints_nothing_but_still_writes_and_fails_loudly(tmp_path):
    out = CliRunner().invoke(main, ["run", NAME, "--out", str(tmp_path), "-q"])
    assert out.exit_code == 0 and out.output == ""
    assert load_result(tmp_path / NAME).summary["scenario"] == NAME
    bad = CliRunner().invoke(main, ["run", "no-such", "-q"])
    assert bad.exit_code == 2 and "no-such" in bad.output


def test_sweep_set_fixes_a_key_for_every_run_and_json_reports_the_sweep(tmp_path):
    out = CliRunner().invoke(main, ["sweep", NAME, "--set", "duration=5s",
                                    "--vary", "jobs.mirror0.speed=16M,64M", "--out",
                                    str(tmp_path / "s"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["runs"] == 2 and report["failed"] == 0
    assert report["vary"] == {"duration": ["5s"], "jobs.mirror0.speed": ["16M", "64M"]}
    assert [c["jobs.mirror0.speed"] for c in report["combinations"]] == ["16M", "64M"]
    assert all(c["duration"] == "5s" and c["runs"] == 1 for c in report["combinations"])
    assert all(v is None or isinstance(v, (int, float, str)) for c in report["combinations"]
               for v in c.values())                             # NaN became null


def test_sweep_quiet_and_a_set_that_clashes_with_a_vary(tmp_path):
    out = CliRunner().invoke(main, ["sweep", NAME, "--out", str(tmp_path / "q"), "-q"])
    assert out.exit_code == 0 and out.output == ""
    clash = CliRunner().invoke(main, ["sweep", NAME, "--set", "duration=5s",
                                      "--vary", "duration=1s,2s", "--out", str(tmp_path / "c")])
    assert clash.exit_code == 2
    assert clash.output.strip() == "--set duration: also varied by --vary; give it one of the two"
