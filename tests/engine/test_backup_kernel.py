"""The compiled copy-before-write stretches (blocksim.engine.backup_kernel)
give the run the Python loop gives (``filtered.KERNEL = False``) and the run
SimPy gives one event at a time (``Simulation(shortcuts=False)``): every
backup of ``tests/engine/test_filtered.py`` and a few aimed at the kernel's
hand-backs, compared byte for byte (equivalence.outcome)."""

from __future__ import annotations

import numpy as np
import pytest

import blocksim
from blocksim.engine import backup_kernel, bitmap_blocks, filtered, journal
from blocksim.model.bitmap import DirtyBitmap
from blocksim.simulation import Simulation
from equivalence import outcome
from tests.engine.test_filtered import CASES, _clean, backup

KERNEL_CASES = {
    # (d)'s shape, small: a full backup at a rate under 1000 IOPS of 4 KiB
    "the benchmark's shape": backup(
        src={"size": "512MiB", "bandwidth": "4GiB", "latency": "0us"},
        tgt={"size": "512MiB", "bandwidth": "4GiB", "latency": "0us"},
        job={"speed": "256MiB"}, duration="3s",
        guest={"size": "512MiB", "rate-iops": 1000}),
    "no rate limit": backup(job={"speed": 0}),
    "think time and reads": backup(guest={"rw": "randrw", "rate-iops": None,
                                          "think-time": "200us"}),
    "a rate-limited guest that ends": backup(guest={"end": "700ms"}),
    "a source of data and zeros by pages": backup(
        src={"size": "256MiB", "data": [{"offset": "64MiB", "length": "64MiB"},
                                        {"offset": "192MiB", "length": "64MiB"}]},
        tgt={"size": "256MiB"}, guest={"size": "256MiB"}),
    "a cancel mid-stretch": backup(actions=[
        {"at": "333ms", "command": "block-job-cancel", "arguments": {"device": "job0"}}]),
    # (64 pages of 64 MiB, none asked yet when the first stretches come:
    # each asks those its writes may reach at its first hand-back)
    "many pages not asked yet": backup(
        src={"size": "4GiB", "bandwidth": "4GiB", "latency": "0us"},
        tgt={"size": "4GiB", "bandwidth": "4GiB", "latency": "0us"},
        job={"speed": "512MiB"}, duration="600ms",
        guest={"size": "4GiB", "rate-iops": 4000}),
    # (each copy four target clusters: the kernel's allocation by ranges)
    "a qcow2 target with 16 KiB clusters": backup(tgt={"format": "qcow2",
                                                       "cluster-size": "16KiB"}),
    "a read fault window on the source": backup(faults=[
        {"image": "src", "operation": "read", "errno": "EIO", "offset": 0,
         "length": "64MiB", "start": "400ms", "end": "410ms"}],
        job={"on-source-error": "ignore"}),
}


#: the cases where the kernel must run (elsewhere the source is not fully
#: allocated: the Python loop allocates for the guest; or no stretch runs,
#: or the writes cross clusters)
KERNEL_RUNS = {"paced guest, rate-limited backup", "closed-loop guest with think time",
               "mixed reads and writes", "a qcow2 target with 128 KiB clusters",
               "pause, set-speed, stop and cont", "a guest that ends and a second guest",
               "sync=bitmap", "a target write fault in a window", "a bitmap recording the guest",
               "sync=none until cancelled", "tasks across two pages of data",
               "the benchmark's shape", "think time and reads", "a rate-limited guest that ends",
               "a cancel mid-stretch", "a read fault window on the source",
               "many pages not asked yet", "a qcow2 target with 16 KiB clusters"}


def _run(scenario: dict, kernel: bool, monkeypatch, shortcuts: bool = True) -> str:
    """The run's outcome, with shortcuts the clock's count of waits skipped
    too (the stretch counts those its requests would have waited)."""
    monkeypatch.setattr(filtered, "KERNEL", kernel)
    sim = Simulation(blocksim.load_scenario(_clean(scenario)), shortcuts=shortcuts)
    out = outcome(sim)
    return out + f"|skipped {sim.env.skipped}" if shortcuts else out


def _same(fast: str, slow: str) -> bool:
    """A run with shortcuts against one without (no waits skipped there)."""
    return fast.rsplit("|skipped ", 1)[0] == slow


def _counting(monkeypatch) -> list:
    """How many requests the kernel does, call by call."""
    done = []
    real = backup_kernel.advance

    def counting(job, offs, reads, n, *args):
        out = real(job, offs, reads, n, *args)
        if out is not None:
            done.append(out[0] - n)
        return out
    monkeypatch.setattr(backup_kernel, "advance", counting)
    return done


@pytest.mark.parametrize("name", sorted(CASES) + sorted(KERNEL_CASES))
def test_the_kernel_gives_the_python_loops_run(name, monkeypatch):
    scenario = CASES.get(name) or KERNEL_CASES[name]
    done = _counting(monkeypatch)
    fast = _run(scenario, True, monkeypatch)
    assert fast == _run(scenario, False, monkeypatch)
    if name in KERNEL_CASES:
        assert _same(fast, _run(scenario, True, monkeypatch, shortcuts=False))
    if name in KERNEL_RUNS:
        assert sum(done) > 20                   # the kernel did requests


@pytest.mark.parametrize("name", ["the benchmark's shape", "paced guest, rate-limited backup"])
def test_a_stage_with_little_room(name, monkeypatch):
    """A stage of 64 entries: the kernel hands back when it lacks room for a
    request's entries, the Python loop flushes the stage."""
    monkeypatch.setattr(journal, "STAGE_ENTRIES", 64)
    scenario = CASES.get(name) or KERNEL_CASES[name]
    done = _counting(monkeypatch)
    fast = _run(scenario, True, monkeypatch)
    assert sum(done) > 20
    assert fast == _run(scenario, False, monkeypatch)
    assert _same(fast, _run(scenario, True, monkeypatch, shortcuts=False))


def test_the_kernel_does_most_of_the_benchmarks_requests(monkeypatch):
    done = _counting(monkeypatch)
    sim = Simulation(blocksim.load_scenario(_clean(KERNEL_CASES["the benchmark's shape"])))
    result = sim.run()
    copies = result.summary["jobs"]["job0"]["copy_before_write"]["writes"]
    assert copies > 500 and sum(done) > copies


def test_one_granule_clear_is_the_bitmaps():
    """backup_kernel._clear against DirtyBitmap.clear_bits of one granule,
    and bitmap_blocks._mark against mark, on random sequences over blocks
    all clean, mixed and all dirty."""
    rng = np.random.default_rng(7)
    nbits = 4 * bitmap_blocks.BLOCK
    ref, test = DirtyBitmap(nbits, 1), DirtyBitmap(nbits, 1)
    for bm in (ref, test):
        bm.mark(0, bitmap_blocks.BLOCK)               # block 0 all dirty
        bm.mark(2 * bitmap_blocks.BLOCK + 5, 2 * bitmap_blocks.BLOCK + 300)
    bits, _w, summary, blocks, _bw = test.arrays()
    for _ in range(5000):
        b = int(rng.integers(0, nbits))
        if rng.random() < 0.5:
            ref.clear_bits(b, b + 1)
            test.count -= backup_kernel._clear(bits, summary, blocks, b)
        else:
            ref.mark(b, b + 1)
            test.count += bitmap_blocks._mark(bits, summary, blocks, b)
        assert ref.count == test.count
    assert list(ref.runs()) == list(test.runs())
    assert all(ref.is_dirty(b) == test.is_dirty(b) == bool(
        backup_kernel._is_dirty(bits, summary, b)) for b in range(nbits))


def test_a_page_not_asked_yet_is_asked_for_the_kernel(monkeypatch):
    """A write on a source page whose data the job has not asked yet is
    handed back by the kernel; the stretch asks the page
    (``BackupJob.learn_page``) and calls the kernel again, instead of doing
    the request, and the rest of the stretch, in Python: in the benchmark's
    shape no single-cluster write goes through the Python copy."""
    from blocksim.jobs.backup import BackupJob
    python = []
    real = BackupJob.copy_before_quietly

    def counting(self, offset, length, t, deadline):
        python.append(offset)
        return real(self, offset, length, t, deadline)
    monkeypatch.setattr(BackupJob, "copy_before_quietly", counting)
    done = _counting(monkeypatch)
    sim = Simulation(blocksim.load_scenario(_clean(KERNEL_CASES["the benchmark's shape"])))
    result = sim.run()
    assert result.summary["jobs"]["job0"]["copy_before_write"]["writes"] > 500
    assert sum(done) > 1000 and not python


def test_a_stretch_asks_the_pages_its_writes_may_reach_at_once(monkeypatch):
    """At the kernel's first hand-back on a page not asked yet, the stretch
    asks that page and those of the writes after it that it may reach
    (``BackupJob.learn_pages``, up to ``filtered._reach``): the kernel then
    hands back on a page not asked yet at most once per stretch, not once
    per page; and the run is the one without it (above)."""
    from blocksim.jobs.backup import BackupJob
    stretches = []
    real_advance, real_kernel = filtered.advance, backup_kernel.advance

    def stretch(workload, write_filter):
        stretches.append(0)
        return real_advance(workload, write_filter)

    def kernel(job, offs, reads, n, *args):
        out = real_kernel(job, offs, reads, n, *args)
        if out is not None and out[5] == backup_kernel.PYTHON and not reads[out[0]]:
            content = job.source.content
            if not job._data_known(content)[int(offs[out[0]]) >> content._shift]:
                stretches[-1] += 1
        return out
    learned = []
    real_learn = BackupJob.learn_pages

    def learn(self, offsets, length):
        learned.append(real_learn(self, offsets, length))
        return learned[-1]
    monkeypatch.setattr(filtered, "advance", stretch)
    monkeypatch.setattr(backup_kernel, "advance", kernel)
    monkeypatch.setattr(BackupJob, "learn_pages", learn)
    from blocksim.engine import stretch as plain
    monkeypatch.setattr(plain.filtered, "advance", stretch)
    sim = Simulation(blocksim.load_scenario(_clean(KERNEL_CASES["many pages not asked yet"])))
    sim.run()
    assert max(stretches) == 1 and sum(stretches) < 20
    assert sum(learned) > 40                    # (pages asked ahead)
