"""``blocksim explore``: search fault schedules for broken properties and
shrink what it finds (issue 22).

A front end above :mod:`blocksim.analysis` (it reuses the sweep's process
pool); it may import every layer below the CLI.

- ``properties.py``: checking the ``[explore]`` properties on a run.
- ``space.py``: the search space as Hypothesis strategies; a case as a scenario (TOML).
- ``search.py``: the seeded Hypothesis search and shrink, one worker per seed, pool or Dask.
- ``report.py``: counterexample scenarios, their results folders, report.md/report.json.
- :func:`replay`: run a saved counterexample (the regression folder).

The ``[explore]`` table itself is validated by :mod:`blocksim.scenario.explore`.
"""

from .properties import broken, check_fields
from .report import write_report
from .search import ExploreError, explore, load_spec

__all__ = ["explore", "write_report", "load_spec", "broken", "check_fields", "ExploreError", "replay"]


def replay(path):
    """Run a saved counterexample and return ``(expected broken, broken)``:
    the property texts its ``[explore]`` names and those the run breaks."""
    from ..scenario import load_scenario
    from ..simulation import run
    from .properties import broken as _broken
    from ..scenario.explore import parse_property
    scenario = load_scenario(path)
    props = [parse_property(t) for t in scenario.explore.properties]
    result = run(scenario)
    return scenario.explore.properties, [props[i].text for i, _ in _broken(props, result.summary, result.events)]
