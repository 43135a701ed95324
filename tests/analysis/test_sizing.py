"""The sizing sweep (scenarios/sweeps/thin-sizing.sweep.toml) and its tables
(blocksim.analysis.sizing), on the sweep file's [small] variant."""

import math
from pathlib import Path

import pandas as pd
import pytest

import blocksim
from blocksim.analysis.sizing import load_sweep_file, pause_table, recommend, run_sizing_sweep, safe_threshold
from blocksim.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "scenarios" / "sweeps" / "thin-sizing.sweep.toml"
GiB = 2**30


def test_the_sweep_file_reads_with_its_small_variant():
    full = load_sweep_file(SWEEP)
    assert full.scenario == ROOT / "scenarios" / "sweeps" / "thin-sizing.toml"
    assert full.runs == 81 * 4
    assert full.vary["duration"] == ["6h"]
    assert set(full.names.values()) == {"chunk", "threshold", "rate", "latency"}
    small = load_sweep_file(SWEEP, small=True)
    assert small.runs == 4 and small.vary["duration"] == ["10min"]
    # every varied key is a key of the scenario
    blocksim.load_scenario(full.scenario, {k: v[0] for k, v in full.vary.items()})


@pytest.mark.parametrize("text, key", [
    ('seeds = 2\n[vary]\n"duration" = ["1s"]\n', "scenario"),
    ('scenario = "x.toml"\n', "vary"),
    ('scenario = "x.toml"\nseeds = 0\n[vary]\n"duration" = ["1s"]\n', "seeds"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[small.vary]\n"seed" = [1]\n',
     "small.vary.seed"),
])
def test_bad_sweep_files_name_the_key(tmp_path, text, key):
    path = tmp_path / "s.sweep.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_sweep_file(path, small=True)
    assert info.value.problems[0][0] == key


@pytest.fixture(scope="module")
def small():
    return run_sizing_sweep(SWEEP, small=True, workers=1)


def test_the_small_sweep_pauses_only_where_the_extend_is_slow(small):
    plan, result = small
    table = pause_table(plan, result)
    assert list(table[["latency", "chunk"]].itertuples(index=False, name=None)) == [
        (2.0, 1.0), (2.0, 5.0), (30.0, 1.0), (30.0, 5.0)]
    # 100 MiB/s bursts, 0.5 GiB threshold: a 2 s extend always comes in
    # time, a 30 s one never does (the first burst outruns it)
    assert list(table["share_paused"]) == [0.0, 0.0, 1.0, 1.0]
    rows = {(r["actions.0.arguments.latency"], r["actions.0.arguments.by"]): r for r in result.rows}
    slow = rows[("30s", "1GiB")]
    assert table.loc[2, "pauses"] == slow["pauses.count"] > 0
    assert table.loc[2, "pauses_per_day"] == pytest.approx(slow["pauses.count"] / (600 / 86400))
    assert table.loc[2, "longest_max"] == slow["pauses.longest"] <= 30 + 2 + 1
    # no pause seen in 10 min: the upper bound is 3 pauses in 10 min
    assert table.loc[0, "pauses_per_day_upper"] == pytest.approx(3 * 144, rel=0.01)
    # the bigger chunk leaves more space unused
    assert table.loc[1, "free_gib"] > table.loc[0, "free_gib"]


def test_recommend_takes_the_cheapest_combination_under_the_target(small):
    plan, result = small
    rec = recommend(pause_table(plan, result))
    fast = rec[rec["latency"] == 2.0].iloc[0]
    assert (fast["chunk"], fast["threshold"]) == (1.0, 0.5)
    slow = rec[rec["latency"] == 30.0].iloc[0]
    assert math.isnan(slow["chunk"]) and slow["pauses_per_day"] > 1


def test_recommend_breaks_ties_by_free_space():
    table = pd.DataFrame([
        {"rate": 50.0, "latency": 5.0, "chunk": c, "threshold": t, "pauses_per_day": p,
         "pauses_per_day_upper": 3.0, "free_gib": f, "hours": 24.0}
        for c, t, p, f in [(1.0, 0.5, 4.0, 0.7), (2.5, 1.25, 0.0, 2.0), (5.0, 1.25, 0.0, 3.1),
                           (2.5, 2.5, 0.0, 2.4)]])
    rec = recommend(table)
    assert rec.loc[0, ["chunk", "threshold"]].tolist() == [2.5, 1.25]


def test_safe_threshold_is_what_a_burst_writes_until_the_extend_is_usable():
    assert safe_threshold(100 * 2**20, 30, 2) == 3.125 * GiB
