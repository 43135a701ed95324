"""Analysis: many runs at once, regressions, and notebook helpers.

- ``sweep.py``: a scenario's parameters crossed, run on a process pool or a
  Dask cluster, written as a sweep folder (``runs.csv``, ``aggregate.csv``).
- ``compare.py``: two sweeps or results folders side by side, and the
  regression check against ``results/baseline``.
- ``notebook.py``: pandas frames and plots of results for Jupyter; its names
  are re-exported here (``from blocksim import analysis;
  analysis.events_frame(result)``).

Imports: the run assembly (``blocksim.simulation``) and every layer below it;
never the front ends.
"""

from .notebook import *  # noqa: F401,F403
from .notebook import __all__  # noqa: F401
