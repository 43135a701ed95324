"""blocksim explore (issue 22): the hazard specs find and shrink their
hazard, the counterexample reproduces with a plain run, a second search is
byte-identical, the spec that should find nothing finds nothing, bad specs
get located one-line errors, and the saved counterexamples still reproduce.
Small budgets (each search takes a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocksim.errors import ScenarioError
from blocksim.explore import ExploreError, explore, replay, write_report
from blocksim.scenario import load_scenario
from blocksim.scenario.explore import parse_property

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "scenarios" / "explore"
FOUND = SPECS / "found"

HAZARDS = {
    "werror-ignore-loses-writes": ("no-lost-writes", 1),
    "mirror-ignore-never-ready": ('job.mirror0.outcome in ["completed"]', 1),
    "stop-resumed-once-stays-paused": ("no job paused longer than 5s", 2),
    "thin-extend-slower-than-chunk": ("vm-paused-total < 10ms", 1),
}


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_hazard_spec_finds_and_shrinks(name, tmp_path):
    prop, faults = HAZARDS[name]
    outcome = explore(SPECS / f"{name}.toml", runs=30, seed=1)
    report = write_report(outcome, tmp_path / "out", results=False)
    found = {b["property"]: b for b in report["broken"]}
    assert prop in found, report["held"]
    assert found[prop]["faults_after"] <= faults
    expected, broken = replay(tmp_path / "out" / found[prop]["scenario"])
    assert expected == [prop] and broken == [prop]


def test_same_command_same_bytes(tmp_path):
    spec = SPECS / "werror-ignore-loses-writes.toml"
    texts = []
    for i in range(2):
        write_report(explore(spec, runs=30, seed=1), tmp_path / str(i), results=False)
        texts.append({p.name: p.read_bytes() for p in sorted((tmp_path / str(i)).iterdir())})
    assert texts[0] == texts[1]
    assert any(name.endswith(".toml") for name in texts[0])


def test_another_seed_searches_other_cases():
    spec = SPECS / "werror-ignore-loses-writes.toml"
    a, b = explore(spec, runs=10, seed=1), explore(spec, runs=10, seed=2)
    assert set(a["cases"]) != set(b["cases"])


def test_process_pool_is_deterministic():
    spec = SPECS / "werror-ignore-loses-writes.toml"
    a = explore(spec, runs=8, seed=1, workers=2)
    b = explore(spec, runs=8, seed=1, workers=2)
    assert a["found"] == b["found"] and a["cases"] == b["cases"]
    assert a["found"]["1"]["after"] == 1


def test_report_spec_finds_nothing(tmp_path):
    outcome = explore(SPECS / "report-never-loses-writes.toml", runs=25, seed=1)
    report = write_report(outcome, tmp_path / "out", results=False)
    assert report["broken"] == [] and report["cases_generated"] >= 20
    assert "None within the budget." in (tmp_path / "out" / "report.md").read_text()
    assert {k["kind"] for k in report["kinds"]} == {"error", "dust", "delay"}


@pytest.mark.parametrize("path", sorted(FOUND.glob("*.toml")), ids=lambda p: p.stem)
def test_regressions_still_break(path):
    expected, broken = replay(path)
    assert load_scenario(path).explore.expect == "broken"
    assert broken == expected


@pytest.mark.parametrize("text, message", [
    ("vm.time_paused << 3", "cannot read the value"),
    ("every FOO is followed by resume within 3s", "unknown event 'FOO'"),
    ("no job paused longer than soon", "is not a duration"),
    ("jobs.mirror0.outcome in 'completed'", "takes an array"),
    ("lost writes please", "cannot read the property"),
])
def test_bad_property(text, message):
    with pytest.raises(ValueError, match=message):
        parse_property(text)


def test_property_forms():
    p = parse_property("job.mirror0.outcome in [\"completed\"]")
    assert (p.kind, p.field, p.op, p.value) == ("compare", "jobs.mirror0.outcome", "in", ["completed"])
    p = parse_property("vm-paused-total < 60s")
    assert (p.field, p.op, p.value) == ("vm.time_paused", "<", 60.0)
    p = parse_property("every BLOCK_JOB_ERROR with action stop is followed by a resume within 30s")
    assert (p.event, p.where, p.then, p.bound) == ("BLOCK_JOB_ERROR", (("action", "stop"),), "resume",
                                                   30_000_000_000)
    assert parse_property("no job paused longer than 5min").bound == 300_000_000_000


def _spec(tmp_path, explore_table: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text('duration = "1s"\n[images.disk]\nsize = "16MiB"\n[drives.vda]\nimage = "disk"\n'
                    + explore_table)
    return path


def test_bad_explore_table_is_located(tmp_path):
    path = _spec(tmp_path, '[explore]\nkinds = ["error", "bogus"]\nimages = ["nope"]\n'
                           'properties = ["no-lost-writes"]\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    lines = info.value.lines()
    assert any("explore.kinds.1" in line and "'capacity'" in line for line in lines), lines
    path = _spec(tmp_path, '[explore]\nkinds = ["capacity"]\nproperties = ["no-lost-writes"]\n')
    with pytest.raises(ScenarioError, match="needs capacity"):
        load_scenario(path)


def test_unknown_field_is_named(tmp_path):
    path = _spec(tmp_path, '[explore]\nkinds = ["error"]\nproperties = ["jobs.mirro0.outcome == 1"]\n')
    with pytest.raises(ExploreError, match="unknown field 'jobs.mirro0.outcome'"):
        explore(path, runs=2)


def test_a_spec_without_explore_is_refused(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text('[images.disk]\nsize = "16MiB"\n')
    with pytest.raises(ExploreError, match=r"no \[explore\] table"):
        explore(path, runs=2)


def test_dask_local_cluster_finds_the_same():
    distributed = pytest.importorskip("distributed")
    spec = SPECS / "werror-ignore-loses-writes.toml"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        on_dask = explore(spec, runs=8, seed=1, workers=2, scheduler=client)
    in_pool = explore(spec, runs=8, seed=1, workers=2)        # two tasks on one Dask worker
    assert on_dask["found"] == in_pool["found"] and on_dask["cases"] == in_pool["cases"]


def test_time_limit_stops_generating():
    outcome = explore(SPECS / "werror-ignore-loses-writes.toml", runs=50, seed=1, time_limit=1e-6)
    assert outcome["cases"] == {} and outcome["found"] == {}


def test_command_line(tmp_path):
    from click.testing import CliRunner

    from blocksim.cli import main
    out, saved = tmp_path / "out", tmp_path / "found"
    result = CliRunner().invoke(main, ["explore", str(SPECS / "werror-ignore-loses-writes.toml"),
                                       "--runs", "20", "--seed", "1", "--out", str(out),
                                       "--save-regression", str(saved)])
    assert result.exit_code == 1, result.output
    assert "BROKEN no-lost-writes" in result.output and "held   no-invariant-violations" in result.output
    name = "werror-ignore-loses-writes-no-lost-writes"
    assert (out / f"{name}.toml").read_bytes() == (saved / f"{name}.toml").read_bytes()
    assert (out / name / "timeline.png").exists() and (out / "report.md").exists()
    result = CliRunner().invoke(main, ["run", str(saved / f"{name}.toml"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and "writes lost" in result.output


def test_every_kind_and_vary_make_valid_cases(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('duration = "1s"\nseed = 1\n[images.disk]\nsize = "16MiB"\n[drives.vda]\nimage = "disk"\n'
                    '[workloads.guest]\ndrive = "vda"\nrw = "randrw"\nbs = "4KiB"\nrate-iops = 20\n'
                    '[explore]\nkinds = ["error", "flakey", "dust", "delay", "capacity"]\n'
                    'capacity = ["1MiB", "8MiB"]\nmax-faults = 4\ncounts = [1, 3]\n'
                    'vary = { "workloads.guest.rate-iops" = [5, 50] }\nproperties = ["vm.stops >= 0"]\n')
    outcome = explore(path, runs=30, seed=3)
    cases = [__import__("json").loads(k) for k in outcome["cases"]]
    assert len(cases) >= 25                       # hardly any case rejected as invalid
    assert all(c["set"]["workloads.guest.rate-iops"] in (5, 50) for c in cases)
    kinds = {f.get("type", "error") for c in cases for f in c["faults"]}
    assert kinds == {"error", "flakey", "dust", "delay"}
    assert any("images.disk.capacity" in c["set"] for c in cases)
