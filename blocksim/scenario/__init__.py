"""Scenarios: the TOML input format, its validation and its resolved form.

- ``document.py``: the pydantic models of every table (images, drives,
  faults, workloads, jobs, actions), cross-references between them,
  overrides (``--set``) and :func:`load_scenario`, which reports every
  problem at once as ``file: key.path: message``.
- ``units.py``: sizes and durations as users write them (``"64KiB"``,
  ``"1.5min"``) and back.

The format is documented in ``docs/scenario-format.md``.

Imports: the model's vocabularies (policies, profiles) and
``blocksim.errors``; nothing that runs.
"""

from .document import *  # noqa: F401,F403
from .document import __all__  # noqa: F401
