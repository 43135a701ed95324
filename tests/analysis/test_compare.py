"""Regression comparisons: normalised events, planted changes, sweeps, baseline, the command."""

import json
import shutil

import click
import pytest
from click.testing import CliRunner

import blocksim
from blocksim.cli.analysis import register
from blocksim.analysis.compare import baseline_record, check_against_baseline, compare, event_token, normalise_events, update_baseline
from blocksim.errors import ResultsError
from blocksim.record.results import save_result
from blocksim.analysis.sweep import JOURNAL, sweep
from analysis.test_sweep import TINY, write_tiny


def ev(name, t=0, **data):
    return {"event": name, "data": data, "timestamp": {"seconds": t, "microseconds": 0}}


# -- normalisation ------------------------------------------------------------------------------
def test_token_ignores_timestamps_and_key_order():
    a = {"event": "BLOCK_JOB_ERROR", "data": {"device": "j", "operation": "write", "action": "stop"},
         "timestamp": {"seconds": 1, "microseconds": 5}}
    b = {"event": "BLOCK_JOB_ERROR", "data": {"action": "stop", "operation": "write", "device": "j"},
         "timestamp": {"seconds": 9, "microseconds": 0}}
    assert event_token(a) == event_token(b) == "BLOCK_JOB_ERROR action=stop device=j operation=write"
    assert event_token(ev("X", error="Input/output error")) == 'X error="Input/output error"'


def test_consecutive_identical_events_count_once():
    storm = [ev("JOB_STATUS_CHANGE", id="j", status="running")]
    storm += [ev("BLOCK_JOB_ERROR", t, device="j", operation="write", action="ignore") for t in range(500)]
    storm += [ev("BLOCK_JOB_READY", 600, device="j")]
    assert normalise_events(storm) == ["JOB_STATUS_CHANGE id=j status=running",
                                       "BLOCK_JOB_ERROR action=ignore device=j operation=write",
                                       "BLOCK_JOB_READY device=j"]
    # a different action is a different event
    other = storm[:3] + [ev("BLOCK_JOB_ERROR", device="j", operation="write", action="report")]
    assert len(normalise_events(other)) == 3


def test_retry_storm_cycles_collapse_and_status_changes_are_kept():
    def cycle(t):
        return [ev("BLOCK_JOB_ERROR", t, device="j", operation="write", action="stop"),
                ev("JOB_STATUS_CHANGE", t, id="j", status="paused"),
                ev("JOB_STATUS_CHANGE", t + 1, id="j", status="running")]
    head = [ev("JOB_STATUS_CHANGE", id="j", status="created"), ev("JOB_STATUS_CHANGE", id="j", status="running")]
    tail = [ev("BLOCK_JOB_READY", 99, device="j")]
    once = normalise_events(head + cycle(1) + tail)
    many = normalise_events(head + [e for t in range(40) for e in cycle(t)] + tail)
    assert many == once
    assert once == ["JOB_STATUS_CHANGE id=j status=created", "JOB_STATUS_CHANGE id=j status=running",
                    "BLOCK_JOB_ERROR action=stop device=j operation=write",
                    "JOB_STATUS_CHANGE id=j status=paused", "JOB_STATUS_CHANGE id=j status=running",
                    "BLOCK_JOB_READY device=j"]
    # one storm or none is a difference
    assert normalise_events(head + tail) != once


def test_real_ignore_storm_collapses(tmp_path):
    tiny = write_tiny(tmp_path)
    scenario = blocksim.load_scenario(tiny, {"jobs.job0.on-target-error": "ignore",
                                             "faults.0.probability": 0.5})
    result = blocksim.run(scenario)
    errors = result.event_names("BLOCK_JOB_ERROR")
    assert len(errors) > 20
    normalised = normalise_events(result.events)
    assert sum(1 for t in normalised if t.startswith("BLOCK_JOB_ERROR")) < 5


# -- single runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    tiny = write_tiny(folder)
    scenario = blocksim.load_scenario(tiny)
    save_result(blocksim.run(scenario), folder / "a" / "tiny-mirror")
    save_result(blocksim.run(scenario), folder / "b" / "tiny-mirror")
    other = blocksim.load_scenario(tiny, {"jobs.job0.on-target-error": "ignore",
                                          "faults.0.probability": 0.5})
    save_result(blocksim.run(other), folder / "c" / "tiny-mirror")
    return folder


@pytest.fixture
def runs(run_folders, tmp_path):
    """Two results folders of the same run (a, b) and a run with another policy (c), to edit."""
    for name in ("a", "b", "c"):
        shutil.copytree(run_folders / name, tmp_path / name)
    return tmp_path


def test_identical_runs_nothing_changed(runs):
    for a, b in [(runs / "a", runs / "b"), (runs / "a" / "tiny-mirror", runs / "b" / "tiny-mirror"),
                 (runs / "a" / "tiny-mirror" / "summary.json", runs / "b" / "tiny-mirror")]:
        report = compare(a, b)
        assert not report.regressed, report.text()
        assert [c.status for c in report.cases] == ["same"]
        assert "OK: nothing changed (1 compared)" in report.text()


def _edit_events(folder, edit):
    path = folder / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(e) + "\n" for e in edit(events)))


def _edit_summary(folder, edit):
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(summary))


def test_planted_event_change_is_found(runs):
    new = runs / "b" / "tiny-mirror"

    def plant(events):
        for e in events:
            if e["event"] == "BLOCK_JOB_ERROR":
                e["data"]["action"] = "stop"
        return events

    _edit_events(new, plant)
    report = compare(runs / "a", runs / "b")
    assert report.regressed
    [case] = report.cases
    [change] = case.changes
    assert change.section == "events"
    assert "-BLOCK_JOB_ERROR action=report device=job0 operation=write" in change.diff
    assert "+BLOCK_JOB_ERROR action=stop device=job0 operation=write" in change.diff
    text = report.text()
    assert "CHANGED  tiny-mirror" in text and "normalised event sequence changed" in text
    assert text.rstrip().endswith("REGRESSED: 1 of 1 compared changed")


def test_timestamps_alone_are_no_change(runs):
    def shift(events):
        for e in events:
            e["timestamp"]["seconds"] += 1
        return events

    _edit_events(runs / "b" / "tiny-mirror", shift)
    assert not compare(runs / "a", runs / "b").regressed


def test_planted_figure_change_is_found(runs):
    new = runs / "b" / "tiny-mirror"
    _edit_summary(new, lambda s: s["jobs"]["job0"].update(bytes_copied=s["jobs"]["job0"]["bytes_copied"] * 2))
    report = compare(runs / "a", runs / "b")
    assert report.regressed
    [change] = report.changes
    assert (change.section, change.subject) == ("figure", "jobs.job0.bytes_copied")
    assert change.new == 2 * change.baseline
    assert "+100.0%" in change.detail
    # within the tolerance: no change
    _edit_summary(new, lambda s: s["jobs"]["job0"].update(bytes_copied=int(s["jobs"]["job0"]["bytes_copied"] / 2 * 1.04)))
    assert not compare(runs / "a", runs / "b").regressed
    assert compare(runs / "a", runs / "b", tolerance=0.01).regressed


def test_outcome_vm_and_invariant_changes(runs):
    def plant(s):
        s["jobs"]["job0"]["outcome"] = "never-ready"
        s["vm"]["final_state"] = "paused"
        s["invariants"]["violations"] = [{"invariant": "guest-writes-durable", "subject": "vda",
                                          "time": 1.0, "detail": "lost"}]
    _edit_summary(runs / "b" / "tiny-mirror", plant)
    report = compare(runs / "a", runs / "b")
    sections = {c.section: c for c in report.changes}
    assert sections["outcome"].detail.endswith("-> never-ready")
    assert sections["vm"].detail == "vm.final_state: running -> paused"
    assert "guest-writes-durable" in sections["invariants"].detail or \
        any("guest-writes-durable" in c.detail for c in report.changes if c.section == "invariants")


def test_real_behaviour_change(runs):
    report = compare(runs / "a", runs / "c")
    sections = {c.section for c in report.changes}
    assert {"outcome", "events", "figure"} <= sections
    data = json.loads(report.to_json())
    assert data["regressed"] is True and data["cases"][0]["status"] == "changed"


def test_collections_match_by_name(runs):
    extra = runs / "b" / "another"
    shutil.copytree(runs / "b" / "tiny-mirror", extra)
    _edit_summary(extra, lambda s: s.update(scenario="another"))
    report = compare(runs / "a", runs / "b")
    assert [(c.key, c.status) for c in report.cases] == [("tiny-mirror", "same"), ("another", "only-new")]
    assert report.regressed


def test_bad_sides(tmp_path, runs):
    with pytest.raises(ResultsError, match="no such file"):
        compare(tmp_path / "nope", runs / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="holds no results"):
        compare(tmp_path / "empty", runs / "a")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not JSON"):
        compare(tmp_path / "x.json", runs / "a")


# -- sweeps ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweeps")
    tiny = write_tiny(folder)
    vary = {"jobs.job0.on-target-error": ["report", "ignore"]}
    sweep(tiny, vary, seeds=8, workers=1, out=folder / "s1")
    sweep(tiny, vary, seeds=8, workers=1, out=folder / "s2")
    return folder


@pytest.fixture
def sweeps(sweep_pair, tmp_path):
    """Two sweep folders of the same sweep (8 seeds of 2 policies), to edit."""
    for name in ("s1", "s2"):
        shutil.copytree(sweep_pair / name, tmp_path / name)
    return tmp_path


def _edit_journal(folder, edit):
    path = folder / JOURNAL
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        edit(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_identical_sweeps(sweeps):
    report = compare(sweeps / "s1", sweeps / "s2")
    assert not report.regressed
    assert [c.key for c in report.cases] == ["jobs.job0.on-target-error=report",
                                             "jobs.job0.on-target-error=ignore"]


def test_sweep_shifted_figure_is_significant(sweeps):
    def shift(record):
        if record["row"]["jobs.job0.on-target-error"] == "ignore":
            record["row"]["jobs.job0.bytes_copied"] *= 3
    _edit_journal(sweeps / "s2", shift)
    report = compare(sweeps / "s1", sweeps / "s2")
    assert report.regressed
    [case] = report.changed_cases
    assert case.key == "jobs.job0.on-target-error=ignore"
    [change] = [c for c in case.changes if c.significant]
    assert change.subject == "jobs.job0.bytes_copied" and "Mann-Whitney U" in change.detail


def test_sweep_small_wobble_is_a_note(sweeps):
    seen = []

    def wobble(record):
        row = record["row"]
        if row["jobs.job0.on-target-error"] == "ignore" and row["seed"] == 3:
            seen.append(1)
            row["jobs.job0.bytes_copied"] += 1
    _edit_journal(sweeps / "s2", wobble)
    report = compare(sweeps / "s1", sweeps / "s2")
    assert seen and not report.regressed
    notes = [c for case in report.cases for c in case.changes if not c.significant]
    assert notes and "Mann-Whitney U" in notes[0].detail
    assert "(note)" in report.text(verbose=True)


def test_sweep_planted_event_change(sweeps):
    def plant(record):
        if record["row"]["jobs.job0.on-target-error"] == "report":
            record["events"] = [t.replace("status=running", "status=waiting") for t in record["events"]]
    _edit_journal(sweeps / "s2", plant)
    report = compare(sweeps / "s1", sweeps / "s2")
    [case] = report.changed_cases
    assert case.key == "jobs.job0.on-target-error=report"
    [change] = case.changes
    assert change.section == "events" and change.significant
    assert "8 of 8 seeds differ (first: seed 3)" in change.detail
    assert "+JOB_STATUS_CHANGE id=job0 status=waiting" in change.diff


def test_sweep_outcome_shift(sweeps):
    def flip(record):
        if record["row"]["jobs.job0.on-target-error"] == "report":
            record["row"]["jobs.job0.outcome"] = "never-ready"
    _edit_journal(sweeps / "s2", flip)
    report = compare(sweeps / "s1", sweeps / "s2")
    changes = [c for c in report.changes if c.subject == "jobs.job0.outcome"]
    assert changes and changes[0].section == "outcome"


def test_sweep_newly_failing_run(sweeps):
    def fail(record):
        if record["index"] == 0:
            record["row"] = {k: v for k, v in record["row"].items()
                             if k in ("jobs.job0.on-target-error", "seed")}
            record["row"]["error"] = "RuntimeError: boom"
    _edit_journal(sweeps / "s2", fail)
    report = compare(sweeps / "s1", sweeps / "s2")
    assert report.regressed
    assert any(c.section == "error" and "boom" in c.detail for c in report.changes)


# -- baseline ---------------------------------------------------------------------------------------
@pytest.fixture
def library(tmp_path):
    lib = tmp_path / "scenarios"
    lib.mkdir()
    write_tiny(lib)
    (lib / "tiny-ignore.toml").write_text(TINY.replace('name = "tiny-mirror"', 'name = "tiny-ignore"')
                                          .replace('speed = "16MiB"', 'speed = "16MiB"\non-target-error = "ignore"'))
    return lib


def test_update_baseline(library, tmp_path):
    base = tmp_path / "baseline"
    written = update_baseline(library, base)
    assert [p.name for p in written] == ["tiny-ignore.json", "tiny-mirror.json"]
    record = json.loads((base / "tiny-mirror.json").read_text())
    assert record["scenario"] == "tiny-mirror" and record["seed"] == 3 and record["file"] == "tiny.toml"
    assert "blocksim_version" not in record["summary"]
    assert all(isinstance(t, str) for t in record["events"])
    assert record == baseline_record(library / "tiny.toml")          # deterministic
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    update_baseline(library, base)
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before
    assert not compare(base, base).regressed
    (library / "tiny-ignore.toml").unlink()
    (base / "notes.json").write_text('{"mine": 1}')
    update_baseline(library, base)
    assert sorted(p.name for p in base.iterdir()) == ["notes.json", "tiny-mirror.json"]


def test_check_against_baseline(library, tmp_path):
    base = tmp_path / "baseline"
    update_baseline(library, base)
    assert not check_against_baseline(library / "tiny.toml", base).regressed
    (library / "tiny.toml").write_text(TINY.replace('speed = "16MiB"', 'speed = "16MiB"\non-target-error = "stop"'))
    report = check_against_baseline(library / "tiny.toml", base)
    assert report.regressed and "CHANGED  tiny-mirror" in report.text()
    (base / "tiny-mirror.json").unlink()
    report = check_against_baseline(library / "tiny.toml", base)
    assert report.regressed and "no baseline record" in report.text()


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture
def cli():
    group = click.Group()
    register(group)
    return group


def test_compare_command_exit_codes(runs, cli):
    same = CliRunner().invoke(cli, ["compare", str(runs / "a"), str(runs / "b")])
    assert same.exit_code == 0 and "OK: nothing changed" in same.output
    changed = CliRunner().invoke(cli, ["compare", str(runs / "a"), str(runs / "c")])
    assert changed.exit_code == 1 and "REGRESSED" in changed.output
    as_json = CliRunner().invoke(cli, ["compare", str(runs / "a"), str(runs / "c"), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.output)["regressed"] is True
    loose = CliRunner().invoke(cli, ["compare", str(runs / "a"), str(runs / "b"), "--tolerance", "0.5"])
    assert loose.exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["compare", "nope", "nope2"], "nope: no such file or folder"),
    (["compare", "--tolerance", "-1", "a", "b"], "Invalid value for '--tolerance'"),
    (["compare", "a"], "expected BASELINE and NEW (or --update)"),
    (["compare", "--update", "a", "b"], "takes no BASELINE or NEW"),
    (["compare", "--update", "--scenarios", "missing"], "missing: no such scenarios folder"),
])
def test_compare_command_bad_input(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_compare_command_update(library, tmp_path, cli):
    base = tmp_path / "baseline"
    args = ["compare", "--update", "--scenarios", str(library), "--baseline", str(base)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "wrote 2 baseline records" in first.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "no behaviour change" in again.output
    (library / "tiny.toml").write_text(TINY.replace("probability = 0.05", "probability = 0.5"))
    changed = CliRunner().invoke(cli, args)
    assert changed.exit_code == 0 and "changes accepted into the baseline" in changed.output
    assert "CHANGED  tiny-mirror" in changed.output


def test_compare_help(cli):
    r = CliRunner().invoke(cli, ["compare", "--help"])
    assert r.exit_code == 0 and "--update" in r.output and "Examples:" in r.output
