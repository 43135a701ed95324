"""The table that ``match`` is checked against (blocksim.scenario.events)
holds every field, and every value, that a run's events carry: an action
the validator accepts can fire, and one it refuses could not."""

from pathlib import Path

import pytest

import blocksim
from blocksim.scenario.events import EVENT_FIELDS, _takes

ROOT = Path(__file__).resolve().parents[2]
# between them: every event but BLOCK_JOB_PENDING, which the job tests cover
CASES = ["backup-flaky-target-which-policy-finishes", "backup-target-fails-guest-writes-break",
         "commit-active-converges-under-guest-writes", "guest-thin-disk-enospc-pause",
         "thin-guest-disk-outruns-extend", "thin-pool-shared-runs-out"]


@pytest.mark.parametrize("profile", ["qemu", "rfc-2012"])
def test_events_carry_only_the_fields_the_table_names(profile):
    seen = set()
    for name in CASES:
        scenario = blocksim.load_scenario(ROOT / "scenarios" / f"{name}.toml")
        if profile == "rfc-2012" and any(getattr(j, "type", "") in ("backup", "commit")
                                         for j in scenario.jobs.values()):
            continue
        for event in blocksim.run(scenario, profile=profile).events:
            fields = EVENT_FIELDS[event["event"]]
            for key, value in event["data"].items():
                assert key in fields and _takes(fields[key], value), (name, event)
            seen.add(event["event"])
    assert {"STOP", "RESUME", "BLOCK_IO_ERROR"} <= seen
