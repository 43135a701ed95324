"""The sparse hour's settle paths, run whole: the same run without shortcuts.

A journal's settle stores pages in bulk (``extents._Bulk``) on disks of many
pages, merges the whole journal at once (``ContentJournal._settle_all_bulk``)
and keeps large flushes as chunks (``ContentJournal._pull``).  The library's
scenarios use small disks, where none of that happens by default: here the
thresholds are lowered so that every settle takes those paths, and mirrors
of sparse sources (onto ``discard = "unmap"`` targets and thin ones, under
a guest writing at random, with faults arriving mid-run, the journal
settled whole by its budget many times) must give exactly the run of
``Simulation(shortcuts=False)``.
"""

from __future__ import annotations

import random

import pytest

import blocksim
from blocksim.engine import journal as journal_mod
from blocksim.model import extents as extents_mod
from blocksim.simulation import Simulation
from equivalence import outcome

MiB = 1 << 20


def sparse_mirror(seed: int) -> dict:
    """A mirror of a sparse source (extents here and there), its target
    unmapping or thin, a guest writing and reading at random, faults that
    open mid-run on either side."""
    r = random.Random(seed)
    size = r.choice((256, 512, 1024)) * MiB
    extents = sorted(r.sample(range(size // (16 * MiB)), r.randint(1, 6)))
    data = [{"offset": f"{e * 16}MiB", "length": f"{r.choice((1, 4, 16))}MiB"} for e in extents]
    tgt: dict = {"size": size, "bandwidth": "2GiB"}
    if r.random() < 0.5:
        tgt["discard"] = "unmap"
    if r.random() < 0.3:
        tgt["capacity"] = f"{r.choice((64, 128, 512))}MiB"
    faults = []
    for image in ("src", "tgt"):
        if r.random() < 0.6:
            start = r.uniform(0.2, 1.5)
            faults.append({"image": image, "offset": r.randrange(size // MiB - 4) * MiB,
                           "length": r.choice((64 << 10, MiB, 4 * MiB)),
                           "operation": r.choice(("read", "write", "any")),
                           "errno": r.choice(("EIO", "ENOSPC")),
                           "start": f"{start:.3f}s", "end": f"{start + r.uniform(0.05, 1):.3f}s",
                           **({"count": r.randint(1, 4)} if r.random() < 0.5 else {})})
    policy = r.choice(("report", "ignore", "stop"))
    return {
        "name": f"bulk-{seed}", "duration": f"{r.choice((2, 3))}s", "seed": seed,
        "sample-interval": "100ms",
        "images": {"src": {"size": size, "data": data, "bandwidth": "2GiB"}, "tgt": tgt},
        "drives": {"drive0": {"image": "src", "werror": "report"}},
        "jobs": {"job0": {"type": "mirror", "device": "drive0", "target": "tgt",
                          "speed": r.choice(("256MiB", "1GiB", "0")),
                          "on-source-error": policy, "on-target-error": policy}},
        "faults": faults,
        "workloads": {"guest": {"drive": "drive0", "rw": r.choice(("randwrite", "randrw")),
                                "bs": r.choice(("4KiB", "64KiB")),
                                "rate-iops": r.choice((2000, 10000))}},
    }


@pytest.fixture
def bulk_everywhere(monkeypatch):
    """Every settle in bulk, flushes of 64 entries kept as chunks (a few at
    most), the journal settled whole past 20 000 entries, a small stage."""
    monkeypatch.setattr(extents_mod, "BULK_MIN_PAGES", 0)
    monkeypatch.setattr(extents_mod, "BULK_MIN_ROWS", 16)
    monkeypatch.setattr(journal_mod, "CHUNK_ENTRIES", 64)
    monkeypatch.setattr(journal_mod, "MAX_CHUNKS", 3)
    monkeypatch.setattr(journal_mod, "STAGE_ENTRIES", 256)
    monkeypatch.setattr(journal_mod, "STAGE_PER_PAGE", 0)
    monkeypatch.setattr(journal_mod, "BUDGET_ENTRIES", 20_000)


@pytest.mark.parametrize("seed", range(16))
def test_a_sparse_mirror_settled_in_bulk_is_the_same_without_shortcuts(bulk_everywhere, seed):
    loaded = blocksim.load_scenario(sparse_mirror(seed))
    fast = Simulation(loaded)
    exact = Simulation(loaded, shortcuts=False)
    assert outcome(fast) == outcome(exact)


def test_the_sparse_mirrors_take_the_bulk_paths(bulk_everywhere, monkeypatch):
    """Across the cases: pages stored in bulk, settle_all's merge, chunks
    pulled into pages' logs, and copies in flight at a settle_all."""
    seen = {"bulk": 0, "merge": 0, "pull": 0}
    put, merge, pull = (extents_mod.ExtentMap._put_pages, journal_mod.ContentJournal._settle_all_bulk,
                        journal_mod.ContentJournal._pull)

    def counting(key, inner):
        def wrapper(self, *args):
            inner(self, *args)
            if key != "bulk" or self._bulk is not None:
                seen[key] += 1
        return wrapper

    monkeypatch.setattr(extents_mod.ExtentMap, "_put_pages", counting("bulk", put))
    monkeypatch.setattr(journal_mod.ContentJournal, "_settle_all_bulk", counting("merge", merge))
    monkeypatch.setattr(journal_mod.ContentJournal, "_pull", counting("pull", pull))
    for seed in range(16):
        Simulation(blocksim.load_scenario(sparse_mirror(seed))).run()
    assert seen["bulk"] > 50 and seen["merge"] > 16 and seen["pull"] > 16, seen
