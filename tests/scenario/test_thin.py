"""``[pools.NAME]``, ``lv-size`` / ``pool`` and ``[thin-provisioning]``:
what validates, and the located one-line errors of bad settings."""

import pytest

from blocksim import load_scenario
from blocksim.errors import ScenarioError


def raw(**extra):
    sc = {"images": {"disk": {"size": "4GiB", "lv-size": "1GiB", "pool": "vg"}},
          "pools": {"vg": {"size": "8GiB"}},
          "drives": {"vda": {"image": "disk"}},
          "thin-provisioning": {}}
    for key, value in extra.items():
        if value is None:
            sc.pop(key)
        else:
            sc[key] = value
    return sc


def problems(sc):
    with pytest.raises(ScenarioError) as info:
        load_scenario(sc)
    return info.value.problems


def test_defaults_after_vdsm():
    sc = load_scenario(raw())
    tp = sc.thin_provisioning
    assert (tp.chunk, tp.utilization_percent, tp.mode, tp.interval, tp.max_extends, tp.resume) \
        == (1 << 30, 50, "event", 2_000_000_000, 1, True)
    assert tp.free_limit == 512 << 20
    pool = sc.pools["vg"]
    assert pool.extend_latency.distribution == "fixed" and pool.extend_latency.value == 2 * 10**9
    assert load_scenario(sc.to_dict()) == sc


@pytest.mark.parametrize("latency, kind", [
    ("3s", "fixed"),
    ({"distribution": "uniform", "low": "1s", "high": "4s"}, "uniform"),
    ({"distribution": "lognormal", "median": "2s", "sigma": 0.7}, "lognormal"),
    ({"distribution": "samples", "samples": ["1s", "2.5s", "9s"]}, "samples"),
])
def test_latency_forms(latency, kind):
    sc = load_scenario(raw(pools={"vg": {"extend-latency": latency}}))
    assert sc.pools["vg"].extend_latency.distribution == kind
    assert load_scenario(sc.to_dict()) == sc


@pytest.mark.parametrize("changes, path, words", [
    ({"thin-provisioning": {"chunk": 0}}, "thin-provisioning.chunk", "must be greater than 0"),
    ({"thin-provisioning": {"chunk": "4GiB"}}, "thin-provisioning.chunk",
     "the threshold would be beyond the volume of 'disk'"),
    ({"thin-provisioning": {"utilization-percent": 0}}, "thin-provisioning.utilization-percent",
     "greater than 0"),
    ({"thin-provisioning": {"mode": "push"}}, "thin-provisioning.mode", "'event' or 'poll'"),
    ({"thin-provisioning": {"images": ["nope"]}}, "thin-provisioning.images.0",
     "no image named 'nope'"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "uniform", "low": "5s", "high": "1s"}}}},
     "pools.vg.extend-latency", "low (5s) must not exceed high (1s)"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "lognormal", "median": "1s"}}}},
     "pools.vg.extend-latency", "missing sigma"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "lognormal", "median": "1s",
                                          "sigma": -1.0}}}},
     "pools.vg.extend-latency", "sigma >= 0"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "samples", "samples": []}}}},
     "pools.vg.extend-latency", "at least one duration"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "lognormal", "median": "0s",
                                          "sigma": 0.5}}}},
     "pools.vg.extend-latency", "median must be > 0"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "uniform", "low": "1s"}}}},
     "pools.vg.extend-latency", "takes low, high (missing high)"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "uniform", "low": "-1s", "high": "1s"}}}},
     "pools.vg.extend-latency.low", "must not be negative"),
    ({"pools": {"vg": {"extend-latency": "-2s"}}}, "pools.vg.extend-latency",
     "must not be negative"),
    ({"pools": {"vg": {"concurrency": 0}}}, "pools.vg.concurrency", "greater than or equal to 1"),
    ({"thin-provisioning": {"utilization-percent": 101}}, "thin-provisioning.utilization-percent",
     "less than or equal to 100"),
    ({"thin-provisioning": {"chunk": "-1GiB"}}, "thin-provisioning.chunk", "must not be negative"),
    ({"thin-provisioning": {"interval": "0s"}}, "thin-provisioning.interval", "greater than 0"),
    ({"thin-provisioning": {"max-extends": 0}}, "thin-provisioning.max-extends",
     "greater than or equal to 1"),
    ({"thin-provisioning": {"replica-mult": 0}}, "thin-provisioning.replica-mult",
     "greater than or equal to 1"),
    ({"pools": {"vg": {"extend-latency": {"distribution": "gamma", "value": "1s"}}}},
     "pools.vg.extend-latency.distribution", "'fixed', 'uniform', 'lognormal' or 'samples'"),
    ({"pools": {"vg": {"size": "512MiB"}}}, "pools.vg.size", "cannot hold its volumes"),
    ({"pools": {}}, "images.disk.pool", "no pool named 'vg'"),
    ({"images": {"disk": {"size": "4GiB", "format": "raw", "lv-size": "1GiB"}}},
     "images.disk.lv-size", "only a qcow2 image"),
    ({"images": {"disk": {"size": "4GiB", "lv-size": "1GiB", "capacity": "1GiB"}}},
     "images.disk.lv-size", "not both"),
    ({"actions": [{"at": "1s", "command": "lv-extend", "arguments": {"image": "disk"}}]},
     "actions.0.arguments", "exactly one of 'size'"),
])
def test_bad_settings_are_located(changes, path, words):
    found = problems(raw(**changes))
    assert [p for p, _ in found] == [path], found
    assert words in found[0][1], found[0][1]
    assert "\n" not in found[0][1]


def test_library_pool_scenario_runs_out_and_stays_paused():
    from pathlib import Path

    from blocksim.simulation import Simulation
    root = Path(__file__).resolve().parents[2]
    r = Simulation(load_scenario(root / "scenarios" / "thin-pool-shared-runs-out.toml")).run()
    names = [e["event"] for e in r.events]
    assert names.count("VOLUME_EXTENDED") == 2            # 1 GiB + 2 x 512 MiB = the 3 GiB group
    assert "VOLUME_EXTEND_FAILED" in names
    assert names.index("VOLUME_EXTEND_FAILED") < names.index("STOP")
    assert "RESUME" not in names and r.summary["vm"]["final_state"] == "io-error"
    assert r.summary["thin"]["pools"]["vg"] == {"size": 3 << 30, "extends": 2,
                                                "failed": r.summary["thin"]["pools"]["vg"]["failed"],
                                                "bytes_extended": 1 << 30}
    assert r.summary["thin"]["pools"]["vg"]["failed"] >= 5
