"""blocksim: a discrete-event simulator of a VM block layer under I/O faults.

The public API is small::

    import blocksim
    scenario = blocksim.load_scenario("scenarios/mirror-thin-target-enospc.toml")
    result = blocksim.run(scenario, seed=7)          # or run("file.toml")
    result.events          # QMP-shaped events, in simulated time
    result.summary         # outcomes per job, drive, image and VM
    result.series_frame()  # sampled time series as a pandas DataFrame

Behind it, the package is laid out in layers, each a subpackage whose
``__init__`` says what lives there and what it may import; from the bottom:

- ``engine/``: SimPy's clock and the exact shortcuts (same run, faster);
- ``model/``: devices, faults, the error-policy engine, VM, drives, guests;
- ``jobs/``: the block-job life cycle and one module per job type;
- ``record/``: event log, probes, invariants, summary, results, the figure;
- ``scenario/``: the input format and its validation;
- ``management/``: QMP-like commands and event-driven actions;
- ``simulation.py``: the run assembly, which may use every layer above;
- ``analysis/``, ``qemu/``, ``cli/``: sweeps and comparisons, qemu-check,
  the command line.

``errors.py`` holds the exception tree every layer raises from.  A lower
layer never imports a higher one (``tests/system/test_layers.py``).
"""

from .errors import BlocksimError, CommandError, ResultsError, ScenarioError  # noqa: E402
from .model.profile import PROFILES, Profile  # noqa: E402
from .record.result import Result  # noqa: E402
from .record.summary import VERSION  # noqa: E402
from .scenario import Scenario, load_scenario  # noqa: E402
from .simulation import Simulation, run  # noqa: E402

__version__ = VERSION

__all__ = [
    "BlocksimError", "CommandError", "PROFILES", "Profile", "Result", "ResultsError",
    "Scenario", "ScenarioError", "Simulation", "load_scenario", "run", "__version__",
]
