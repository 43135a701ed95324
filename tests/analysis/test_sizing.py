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
    # chunk x utilization-percent x rate x latency x 2 guest patterns, 1 seed
    assert full.runs == 54 * 2
    assert full.vary["duration"] == ["8h"]
    assert set(full.names.values()) == {"chunk", "utilization", "rate", "latency"}
    assert full.guests["bursty"][0] == 2.5 and full.guests["steady"] == (1.0, {})
    assert full.scale == {"rate": 64.0}
    small = load_sweep_file(SWEEP, small=True)
    assert small.runs == 8 and small.vary["duration"] == ["30min"]
    # every varied key and every guest's override is a key of the scenario,
    # which is driven by the thin-provisioning controller
    for _factor, overrides in full.guests.values():
        sc = blocksim.load_scenario(full.scenario, {k: v[0] for k, v in full.vary.items()}
                                    | overrides)
        assert sc.thin_provisioning is not None and sc.thin_provisioning.mode == "event"
        assert not sc.actions


@pytest.mark.parametrize("text, key", [
    ('seeds = 2\n[vary]\n"duration" = ["1s"]\n', "scenario"),
    ('scenario = "x.toml"\n', "vary"),
    ('scenario = "x.toml"\nseeds = 0\n[vary]\n"duration" = ["1s"]\n', "seeds"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[small.vary]\n"seed" = [1]\n',
     "small.vary.seed"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[guests.b]\nrate-factor = 0\n',
     "guests.b.rate-factor"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[guests.b]\nrate-factor = 2\n',
     "names"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[guests.b]\nspeed = 2\n', "guests.b"),
    ('scenario = "x.toml"\n[vary]\n"duration" = ["1s"]\n[scale]\nrate = -1\n', "scale"),
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


def test_the_small_sweep_runs_each_guest_pattern_at_the_same_mean_rate(small):
    plan, result = small
    assert result.failed == 0 and len(result.rows) == 8
    # the rows carry the mean rate; the bursty runs wrote at 2.5 times it
    assert {r["workloads.guest.rate-iops"] for r in result.rows} == {0.78125}
    assert {r["guest"] for r in result.rows} == {"steady", "bursty"}
    table = pause_table(plan, result)
    assert list(table[["guest", "latency", "chunk"]].itertuples(index=False, name=None)) == [
        ("bursty", 2.0, 0.5), ("bursty", 2.0, 2.5), ("bursty", 30.0, 0.5), ("bursty", 30.0, 2.5),
        ("steady", 2.0, 0.5), ("steady", 2.0, 2.5), ("steady", 30.0, 0.5), ("steady", 30.0, 2.5)]
    # rate in MiB/s (rate-iops x 64 MiB); threshold: the free space below
    # which the controller extends, chunk x (100 - utilization) / 100
    assert set(table["rate"]) == {50.0}
    assert table["threshold"].tolist() == [0.25, 1.25] * 4
    steady = table[table["guest"] == "steady"].reset_index(drop=True)
    # 50 MiB/s steadily: a 30 s extend always comes too late; a 2 s one with
    # 2.5 GiB chunks (1.25 GiB of threshold) always in time
    assert list(steady["share_paused"]) == [1.0, 0.0, 1.0, 1.0]
    slow = [r for r in result.rows if r["guest"] == "steady"
            and r["pools.vg.extend-latency.median"] == "30s"
            and r["thin-provisioning.chunk"] == "512MiB"][0]
    assert steady.loc[2, "pauses"] == slow["pauses.count"] > 0
    assert steady.loc[2, "pauses_per_day"] == pytest.approx(slow["pauses.count"] / (1800 / 86400))
    assert steady.loc[2, "longest_max"] == slow["pauses.longest"]
    # no pause seen in 30 min: the upper bound is 3 pauses in 30 min
    assert steady.loc[1, "pauses_per_day_upper"] == pytest.approx(3 * 48, rel=0.01)


def test_recommend_takes_the_cheapest_combination_under_the_target(small):
    plan, result = small
    rec = recommend(pause_table(plan, result))
    assert list(rec.columns[:3]) == ["guest", "rate", "latency"]
    fast = rec[(rec["guest"] == "steady") & (rec["latency"] == 2.0)].iloc[0]
    assert (fast["chunk"], fast["threshold"], fast["utilization"]) == (2.5, 1.25, 50)
    slow = rec[(rec["guest"] == "steady") & (rec["latency"] == 30.0)].iloc[0]
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
