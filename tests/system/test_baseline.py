"""Every scenario of the library behaves as recorded in results/baseline/.

A failure prints the readable comparison report.  When the change is
intended, accept it with ``blocksim compare --update`` and commit
results/baseline/.
"""

import json
from pathlib import Path

import pytest

from blocksim.analysis.compare import baseline_file_name, check_against_baseline

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
BASELINE = ROOT / "results" / "baseline"
HOW_TO_UPDATE = ("If this change of behaviour is intended, update the baseline with\n"
                 "    blocksim compare --update\n"
                 "(from the repository root) and commit results/baseline/.")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_matches_baseline(path):
    report = check_against_baseline(path, BASELINE)
    if report.regressed:
        pytest.fail(f"{path.name} no longer behaves as its baseline records:\n\n"
                    f"{report.text()}\n\n{HOW_TO_UPDATE}", pytrace=False)


def test_no_stale_baseline_records():
    import tomllib
    names = set()
    for path in SCENARIOS:
        with open(path, "rb") as f:
            names.add(baseline_file_name(tomllib.load(f).get("name", path.stem)))
    records = {p.name for p in BASELINE.glob("*.json")
               if "blocksim_baseline" in json.loads(p.read_text(encoding="utf-8"))}
    stale = sorted(records - names)
    assert not stale, (f"baseline records without a scenario in scenarios/: {', '.join(stale)}\n"
                       + HOW_TO_UPDATE)
