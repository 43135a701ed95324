"""The public surface: what ``import blocksim`` offers, pinned in one place.

The layout behind it may move; these names and where they lead may not
without a deliberate change here (and in README's Python API section).
"""

import blocksim
from blocksim import analysis, cli, scenario


def test_the_root_exports_exactly_the_public_api():
    assert sorted(blocksim.__all__) == sorted([
        "BlocksimError", "CommandError", "PROFILES", "Profile", "Result", "ResultsError",
        "Scenario", "ScenarioError", "Simulation", "load_scenario", "run", "__version__",
    ])
    for name in blocksim.__all__:
        assert getattr(blocksim, name) is not None, name


def test_the_version_is_the_one_the_record_stamps():
    from blocksim.record.summary import VERSION
    assert blocksim.__version__ == VERSION
    result = blocksim.run({"duration": "1s", "images": {"disk": {"size": "1MiB"}}})
    assert result.summary["blocksim_version"] == VERSION


def test_the_entry_points_and_package_reexports_lead_where_users_expect():
    from blocksim.cli.commands import main
    assert cli.main is main                                 # pyproject's blocksim.cli:main
    assert blocksim.load_scenario is scenario.load_scenario
    assert {"events_frame", "runs_frame", "plot_outcomes"} <= set(analysis.__all__)
    assert all(hasattr(analysis, name) for name in analysis.__all__)
    assert callable(analysis.events_frame) and callable(analysis.runs_frame)
    assert set(scenario.__all__) >= {"Scenario", "load_scenario", "apply_overrides", "JOB_TYPES"}
    assert all(hasattr(scenario, name) for name in scenario.__all__)


def test_every_error_users_catch_is_a_blocksim_error():
    from blocksim.analysis.sweep import SweepError
    from blocksim.cli.commands import BadInput
    from blocksim.qemu.errors import QemuError
    from blocksim.record.eventlog import EventCapReached
    for error in (blocksim.ScenarioError, blocksim.CommandError, blocksim.ResultsError,
                  SweepError, BadInput, QemuError):
        assert issubclass(error, blocksim.BlocksimError), error
    # the run's internal signal is on purpose outside the tree
    assert not issubclass(EventCapReached, blocksim.BlocksimError)
