"""The command line: ``blocksim run/validate/list/plot/schema`` (``commands.py``),
``sweep`` and ``compare`` (``analysis.py``) and ``qemu-check``
(:mod:`blocksim.qemu.cli`).

Every :class:`~blocksim.errors.BlocksimError` is caught at the top and
printed as one line per problem.  Imports: any layer; nothing imports it.
"""

from .commands import main

__all__ = ["main"]
