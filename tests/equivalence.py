"""What the shortcut tests compare: everything a run leaves behind.

A shortcut (the clock's skips, quiet stretches, the mirror's agenda and copy
bursts) must give exactly the run SimPy would give without it, so the tests
run a scenario both ways and compare :func:`outcome` byte for byte.
"""

from __future__ import annotations

import hashlib
import json

from blocksim.simulation import Simulation


def outcome(sim: Simulation, counters: bool = True) -> str:
    """Run ``sim``; its events, commands, series and summary as one string,
    with the devices' own counters (which the summary does not all report)
    and what each device holds at the end (:func:`disks`)."""
    result = sim.run()
    parts = [result.commands, result.series, result.summary, disks(sim)]
    if counters:
        parts.append({name: [dev.reads, dev.writes, dev.bytes_read, dev.bytes_written,
                             dev.failed, dev.flushes, dev.alloc.count]
                      for name, dev in sim.devices.items()})
    return result.events_jsonl() + json.dumps(parts, sort_keys=True, default=str)


def disks(sim: Simulation) -> dict[str, str]:
    """A digest of each device's content (its runs of generations, the data
    of every write it holds) and allocation (its allocated clusters): two
    runs leave a device in the same state exactly when the digests agree.
    The summary alone would miss a difference nothing verifies, such as the
    target of a mirror that never completes."""
    out = {}
    for name, dev in sorted(sim.devices.items()):
        h = hashlib.sha256()
        for run in dev.content.iter_runs():
            h.update(b"%d,%d,%d;" % run)
        h.update(b"|")
        for run in dev.alloc.runs():
            h.update(b"%d,%d;" % run)
        out[name] = h.hexdigest()
    return out
