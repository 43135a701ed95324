"""What the shortcut tests compare: everything a run leaves behind.

A shortcut (the clock's skips, quiet stretches, the mirror's agenda and copy
bursts) must give exactly the run SimPy would give without it, so the tests
run a scenario both ways and compare :func:`outcome` byte for byte.
"""

from __future__ import annotations

import json

from blocksim.simulation import Simulation


def outcome(sim: Simulation, counters: bool = True) -> str:
    """Run ``sim``; its events, commands, series and summary as one string,
    with the devices' own counters (which the summary does not all report)."""
    result = sim.run()
    parts = [result.commands, result.series, result.summary]
    if counters:
        parts.append({name: [dev.reads, dev.writes, dev.bytes_read, dev.bytes_written,
                             dev.failed, dev.flushes, dev.alloc.count]
                      for name, dev in sim.devices.items()})
    return result.events_jsonl() + json.dumps(parts, sort_keys=True, default=str)
