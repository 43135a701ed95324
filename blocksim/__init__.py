"""blocksim: a discrete-event simulator of a VM block layer under I/O faults.

The public API is small::

    import blocksim
    scenario = blocksim.load_scenario("scenarios/mirror-thin-target-enospc.toml")
    result = blocksim.run(scenario, seed=7)          # or run("file.toml")
    result.events          # QMP-shaped events, in simulated time
    result.summary         # outcomes per job, drive, image and VM
    result.series_frame()  # sampled time series as a pandas DataFrame

Everything else lives in private-by-convention modules named after the
concept they model (device, drive, vm, policy, job, mirror, stream, ...).
"""

__version__ = "0.1.0"

from .errors import BlocksimError, CommandError, ResultsError, ScenarioError  # noqa: E402
from .model.profile import PROFILES, Profile  # noqa: E402
from .record.result import Result  # noqa: E402
from .scenario.document import Scenario, load_scenario  # noqa: E402
from .simulation import Simulation, run  # noqa: E402

__all__ = [
    "BlocksimError", "CommandError", "PROFILES", "Profile", "Result", "ResultsError",
    "Scenario", "ScenarioError", "Simulation", "load_scenario", "run", "__version__",
]
