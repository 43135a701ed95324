"""The engine: SimPy's clock and every exact shortcut, below the model.

Everything here gives exactly the run plain SimPy would give one event at a
time, only faster; ``Simulation(shortcuts=False)`` switches it all off and
is the reference the tests compare against (``tests/equivalence.py``,
``benchmarks/fingerprint.py``).  A QEMU developer reading the model can skip
this layer.

Imports: the standard library, numpy, numba (on first use) and SimPy only; never the
model, the jobs or anything above (what it needs of them, the jobs hand it:
a mirror passes itself, with ``copy_operation`` and ``max_in_flight``).

The seam: the layers above reach the engine only through the names below
(``tests/system/test_layers.py`` checks it).

- :class:`Clock` (``clock.py``, read first): SimPy's environment with one
  shortcut, a wait that would be the run's next event is skipped; the only
  place besides the copy loops that touches SimPy's queue.  ``NEVER``.
- :class:`ContentJournal`, :class:`Snap` (``journal.py``): what devices hold,
  logged per page and applied when read.
- :func:`advance`, ``AT_DUE`` (``stretch.py``): a one-worker guest's quiet
  requests done in bulk.
- :class:`Agenda` (``agenda.py``): a mirror's copy operations kept out of
  SimPy's queue, in SimPy's order.
- ``burst`` (the mirror's issue-and-wait cycle as one plain loop, the
  meaning) and ``burst_kernel`` (the same cycle compiled): modules, so tests
  can switch them (``burst.KERNEL``, ``burst_kernel.GUEST``).
- ``filtered`` (``filtered.py``): a one-worker guest's quiet stretches through a
  backup's copy-before-write filter (the job hands it ``quiet_nodes`` and
  ``copy_before_quietly``), and ``backup_kernel`` (``backup_kernel.py``): the
  same requests compiled, for a write inside one cluster of a known page.
- :class:`Steps` (``steps.py``): a backup's block-copy task steps kept out of
  SimPy's queue, in SimPy's order; ``PENDING``, an untriggered event's value;
  ``Event``, SimPy's event (made without ``env.event()``'s lookup).
- :class:`Compiled` (``compiled.py``): ``njit`` that imports numba and
  compiles on first call, so that ``import blocksim`` does not load numba;
  ``prefetch``, a cache hint for compiled code.
- ``bitmap_blocks`` (``bitmap_blocks.py``): the dirty bitmap's block layout
  and its pool of slots as compiled helpers, one home for the copy loop and
  the model's ``DirtyBitmap``.
"""

from . import backup_kernel, bitmap_blocks, burst, burst_kernel, copyloop
from .agenda import Agenda
from .clock import NEVER, Clock
from .compiled import Compiled, prefetch
from .journal import ContentJournal, Snap
from .steps import PENDING, Event, Steps
from .stretch import AT_DUE, advance

__all__ = ["AT_DUE", "NEVER", "PENDING", "Event", "Agenda", "Clock", "Compiled", "ContentJournal", "Snap", "Steps", "advance", "prefetch",
           "backup_kernel", "bitmap_blocks", "burst", "burst_kernel", "copyloop"]
