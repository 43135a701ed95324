"""The compiled bursts' own steps against the Python ones they restate.

Whole runs are compared in ``tests/engine/test_burst.py`` (kernel, Python loop,
agenda alone, no shortcut) and by ``benchmarks/fingerprint.py``; these tests
pin the steps whose edge cases a run may not reach: the eight-bytes-at-a-time
search at every alignment, the bitmap search across blocks and around the
cursor, and the device's ring of busy slots when it wraps.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from equivalence import outcome

import blocksim
from blocksim.engine import burst, burst_kernel
from blocksim.jobs.base import BlockJob
from blocksim.model.bitmap import BLOCK, GROUP_SHIFT, DirtyBitmap


def _words(buf) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint64, count=len(buf) >> 3)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 63, 64, 1000, 4099])
def test_find_is_bytearray_find(size):
    rng = np.random.default_rng(size)
    for density in (0.0, 0.01, 0.3):
        buf = bytearray((rng.random(size) < density).astype(np.uint8).tobytes())
        flags = np.frombuffer(buf, dtype=np.uint8)
        for _ in range(200):
            a = int(rng.integers(0, size + 1))
            b = int(rng.integers(a, size + 1))
            assert burst_kernel._find(flags, _words(buf), a, b) == buf.find(1, a, b), (a, b)


def test_search_is_the_bitmaps_search():
    rng = np.random.default_rng(5)
    nbits = 5 * BLOCK + 123                 # blocks, and a tail that is no whole word
    bm = DirtyBitmap(nbits * 4096, 4096)
    for b in rng.choice(nbits, 40, replace=False).tolist():
        bm.mark(b * 4096, b * 4096 + 1)
    # a whole dirty block (no bytes), and a clean one whose slot went back
    # to the pool, then taken by another block (stale bytes left there)
    bm.mark(BLOCK * 4096, 2 * BLOCK * 4096)
    bm.mark(3 * BLOCK * 4096, 4 * BLOCK * 4096)
    bm.clear_bits(3 * BLOCK + 7, 3 * BLOCK + 8)
    bm.clear_bits(3 * BLOCK, 4 * BLOCK)
    bm.clear_bits(1, 2)
    bits, bit_words, summary, blocks, block_words = bm.arrays()
    assert summary[1] == BLOCK and summary[3] == 0
    for _ in range(3000):
        a = int(rng.integers(0, nbits + 1))
        b = int(rng.integers(a, nbits + 1))
        got = burst_kernel._search(bits, bit_words, summary, blocks, block_words, a, b)
        assert got == bm._search(a, b), (a, b)
        assert got == (min((i for i in range(a, b) if bm.is_dirty(i)), default=-1)), (a, b)


def test_the_kernels_mark_and_claim_keep_the_states():
    # _mark (the guest's write in the loop) and _start_iteration's clear
    # against DirtyBitmap's own mark and clear_bits, on blocks of each state
    nbits = 6 * BLOCK + 9
    for seed in range(20):
        rng = np.random.default_rng(seed)
        bm, ref = DirtyBitmap(nbits * 512, 512), DirtyBitmap(nbits * 512, 512)
        for each in (bm, ref):
            each.mark(BLOCK * 512, 3 * BLOCK * 512)     # blocks 1, 2 whole
            each.mark(5 * BLOCK * 512, 5 * BLOCK * 512 + 512)
        bits, bit_words, summary, blocks, block_words = bm.arrays()
        st = np.zeros(burst_kernel.NSTATE, dtype=np.int64)
        ops = np.zeros((burst_kernel.MAX_IN_FLIGHT, burst_kernel.NCOLS), dtype=np.int64)
        st[burst_kernel.NBITS] = nbits
        st[burst_kernel.BM_COUNT] = bm.count
        for _ in range(60):
            if rng.random() < 0.5:
                b = int(rng.integers(0, nbits))
                st[burst_kernel.BM_COUNT] += burst_kernel._mark(bits, summary, blocks, b)
                ref.mark(b * 512, b * 512 + 1)
            elif st[burst_kernel.BM_COUNT]:
                st[burst_kernel.CURSOR] = int(rng.integers(0, nbits))
                st[burst_kernel.CLAIM_BITS] = int(rng.choice([1, 7, BLOCK, 3 * BLOCK]))
                b = ref.next_dirty(int(st[burst_kernel.CURSOR]))
                n = ref.dirty_run(b, int(st[burst_kernel.CLAIM_BITS]))
                assert burst_kernel._start_iteration(st, bits, bit_words, summary, blocks,
                                                     block_words, ops)
                assert (st[burst_kernel.IT_BIT], st[burst_kernel.IT_END]) == (b, b + n)
                ref.clear_bits(b, b + n)
            bm.count = int(st[burst_kernel.BM_COUNT])
            assert bm.count == ref.count
            assert list(summary) == list(ref.summary) and bm.blocks == ref.blocks
            assert bm.granules[:8] == ref.granules[:8]      # the pool's free list
            assert [bm.is_dirty(i) for i in range(nbits)] == [ref.is_dirty(i) for i in range(nbits)]


def test_a_devices_slots_survive_the_ring():
    slots = np.array([5, 6, 7, 1, 2, 3, 4], dtype=np.int64)
    assert burst_kernel._ring(slots, 3, 4) == deque([1, 2, 3, 4])
    assert burst_kernel._ring(slots, 5, 4) == deque([3, 4, 5, 6])
    assert burst_kernel._ring(slots, 0, 0) == deque()


def _mirror(source_data, duration="2s", iops=500):
    return {
        "name": "kernel", "duration": duration,
        "images": {"src": {"size": "64MiB", "data": source_data},
                   "tgt": {"size": "64MiB", "latency": "300us"}},
        "drives": {"d": {"image": "src"}},
        "workloads": {"g": {"drive": "d", "rw": "randwrite", "bs": "4KiB",
                            "rate-iops": iops}},
        "jobs": {"j": {"type": "mirror", "device": "d", "target": "tgt",
                       "granularity": "64KiB", "speed": "200MiB"}},
        "actions": [{"on": "BLOCK_JOB_READY", "delay": "300ms",
                     "command": "block-job-complete", "arguments": {"device": "j"}}],
    }


@pytest.mark.parametrize("data", ["full", [{"offset": 0, "length": "20MiB"},
                                           {"offset": "40MiB", "length": "1MiB"}]])
def test_the_kernel_gives_the_python_loops_run(data, monkeypatch):
    """A rate-limited mirror to completion, with a source full of data (every
    read known not to be zeros) and a sparse one (the kernel hands the reads
    of unknown pages back to the Python loop): the same run either way, and
    the kernel did run."""
    scenario = blocksim.load_scenario(_mirror(data))
    copies = []
    real = burst_kernel._run

    def counting(st, *args):
        before = int(st[burst_kernel.TGT_WRITES])
        out = real(st, *args)
        copies.append(int(st[burst_kernel.TGT_WRITES]) - before)
        return out
    with monkeypatch.context() as m:
        m.setattr(burst_kernel, "_run", counting)
        compiled = outcome(blocksim.Simulation(scenario, seed=3))
    assert sum(copies) > 20                 # the kernel copied
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=3)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=3, shortcuts=False)) == compiled


def test_the_kernel_with_shallow_device_queues(monkeypatch):
    """Queues of 4 slots, shallower than the mirror's 16 operations in
    flight: requests wait for a slot (BlockDevice._service_done's FIFO), the
    same in the kernel's ring."""
    spec = _mirror("full")
    spec["images"]["src"]["queue-depth"] = 4
    spec["images"]["tgt"]["queue-depth"] = 3
    scenario = blocksim.load_scenario(spec)
    compiled = outcome(blocksim.Simulation(scenario, seed=3))
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=3)) == compiled


def test_the_kernel_writes_the_journal_the_python_loop_writes(monkeypatch):
    """Before anything settles, the content journal's logs (every guest write,
    every paste and the log position of the read it pastes) are byte for byte
    those of the Python loop: the kernel's positions count the entries it
    stages itself.  (The source's initial data is settled first: the Python
    loop's read settles a page whose stored runs hold zeros, to tell whether
    the range reads as zeros, where the kernel takes the read as it is,
    test_a_sparse_source_in_the_kernel.)"""
    from blocksim.engine.journal import ContentJournal

    # (a guest busy enough that the mirror is never ready: no completion
    # settles the journal before the end)
    scenario = blocksim.load_scenario({**_mirror("full", "1500ms", iops=3000), "actions": []})
    real = ContentJournal.settle_all

    def logs_at_end(kernel: bool) -> dict:
        seen = {}

        def settle_all(journal):
            # the end of the run: the first settle of this scenario
            seen.setdefault("logs", {p: bytes(log) for p, log in journal.logs.items()})
            real(journal)
        with monkeypatch.context() as m:
            m.setattr(burst, "KERNEL", kernel)
            sim = blocksim.Simulation(scenario, seed=3)
            sim.devices["src"].content._journal.settle_all()
            m.setattr(ContentJournal, "settle_all", settle_all)
            result = sim.run()
        assert result.summary["jobs"]["j"]["bytes_copied"] > 64 << 20
        return seen["logs"]

    compiled = logs_at_end(True)
    pastes = sum(1 for log in compiled.values()
                 for value in memoryview(log).cast("q")[1::2] if value < 0)
    assert pastes > 1000
    assert compiled == logs_at_end(False)


@pytest.mark.parametrize("zeros", [(60, 68), (100, 104)], ids=["across-pages", "logged"])
def test_zeros_landing_on_a_source_page_of_data_are_read_as_zeros(zeros, monkeypatch):
    """What the kernel knows of a source page (data all over it, so no read
    there is zeros) holds only while the page is unchanged and has no zero
    logged: here zeros land on the source mid-run, across two pages (a
    change the journal cannot log, applied at once) or inside one (logged),
    and the copies of that range must copy those zeros (as data: QEMU's
    mirror_read_complete), in the kernel as in the Python loop."""
    from equivalence import disks

    spec = _mirror("full", duration="2s")
    spec["images"]["src"]["size"] = spec["images"]["tgt"]["size"] = "192MiB"
    spec["workloads"]["g"]["size"] = "1MiB"        # the guest keeps off the range
    scenario = blocksim.load_scenario(spec)
    mib = 1 << 20

    def run(kernel: bool) -> str:
        monkeypatch.setattr(burst, "KERNEL", kernel)
        sim = blocksim.Simulation(scenario, seed=3)
        src = sim.devices["src"].content

        def progress(fraction):
            if fraction == 0.1:             # the first copy pass is under way
                src.set(zeros[0] * mib, zeros[1] * mib, 0)
        result = sim.run(progress=progress)
        return result.events_jsonl() + repr(result.summary) + repr(disks(sim)) + repr(
            [sim.devices["tgt"].writes, sim.devices["tgt"].bytes_written])

    assert run(True) == run(False)


def test_a_finished_mirror_leaves_nothing_in_the_journal():
    sim = blocksim.Simulation(blocksim.load_scenario(_mirror("full")), seed=3)
    result = sim.run()
    assert result.summary["jobs"]["j"]["final_status"] in ("null", "concluded")
    journal = sim.devices["src"].content._journal
    assert journal._before_settle == []
    assert not sim.jobs["j"]._agenda.kernel.active


def test_the_kernel_restates_the_model_constants_it_compiles_in():
    # the engine imports no model module: what compiled code takes as
    # constants is restated there, and must agree with its source
    from blocksim.jobs import mirror
    from blocksim.model import bitmap, faults, ratelimit
    assert burst_kernel.MAX_IN_FLIGHT == mirror.MAX_IN_FLIGHT == mirror.MirrorJob.max_in_flight
    assert burst_kernel.BLOCK_SHIFT == bitmap.BLOCK_SHIFT
    assert burst_kernel.COUNT_BITS == bitmap.COUNT_BITS
    assert burst_kernel.SLICE_NS == ratelimit.SLICE_NS
    assert burst_kernel.TURN_NS == faults.MAIN_LOOP_TURN_NS
    assert mirror.MirrorJob.copy_operation is mirror.CopyOperation


# -- the guest run by the kernel --------------------------------------------------
GUEST_CASES = {
    "random writes": {},
    "reads and writes": {"rw": "randrw", "rwmixread": 30},
    "sequential writes": {"rw": "write"},
    "number-ios": {"number-ios": 700},
    "end": {"end": "700ms"},
    "late start": {"start": "150ms"},
}


def _guest_mirror(workload: dict) -> dict:
    spec = _mirror("full", duration="1200ms", iops=800)
    spec["sample-interval"] = "20ms"
    spec["workloads"]["g"].update(workload)
    return spec


def _watch(monkeypatch) -> dict:
    """Count the kernel's takeovers, its hand-backs by what the worker then
    waits for, and the outcomes of its calls."""
    seen = {"adopted": 0, "at due": 0, "in flight": 0, "outcomes": set(), "spans": []}
    adopt, release, run = (burst_kernel.Kernel._adopt, burst_kernel.Kernel._release,
                           burst_kernel._run)

    def adopting(self, queue):
        took = adopt(self, queue)
        seen["adopted"] += took
        if took:        # from when to when it runs the guest at most
            seen["spans"].append((int(self.st[burst_kernel.NOW]),
                                  int(self.st[burst_kernel.HEAD_T])))
        return took

    def releasing(self):
        n = int(self.st[burst_kernel.HEAP_N])
        kinds = self.heap[:n, burst_kernel.KIND].tolist()
        seen["in flight" if burst_kernel.GUEST_DONE in kinds else "at due"] += 1
        release(self)

    def running(*args):
        got = run(*args)
        seen["outcomes"].add(int(got) if got < 0 else 0)
        return got
    monkeypatch.setattr(burst_kernel.Kernel, "_adopt", adopting)
    monkeypatch.setattr(burst_kernel.Kernel, "_release", releasing)
    monkeypatch.setattr(burst_kernel, "_run", running)
    return seen


@pytest.mark.parametrize("case", sorted(GUEST_CASES))
def test_the_kernel_runs_the_guest_as_simpy_would(case, monkeypatch):
    """A paced guest on the mirror's source whose next due time is SimPy's
    next event runs inside the kernel, among the copies, and is handed back
    waiting for a due time or for a request in flight: the same run as the
    Python loop's (which leaves the guest to SimPy) and as no shortcut's."""
    scenario = blocksim.load_scenario(_guest_mirror(GUEST_CASES[case]))
    with monkeypatch.context() as m:
        seen = _watch(m)
        compiled = outcome(blocksim.Simulation(scenario, seed=5))
    assert seen["adopted"] > 0 and seen["at due"] + seen["in flight"] > 0
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=5, shortcuts=False)) == compiled


def test_the_guest_in_the_kernel_with_small_batches_stage_and_ledger(monkeypatch):
    """Batches of 16 requests, a journal stage of 96 entries and 64 ledger
    rows: the kernel stops for more requests drawn (NEED_BATCH), for the
    stage handed out and the ledger rows given to the drive (OUT_FULL), and
    the run is the same."""
    from blocksim.engine import journal
    from blocksim.model import workload
    monkeypatch.setattr(workload, "_BATCH", 16)
    monkeypatch.setattr(journal, "STAGE_ENTRIES", 96)
    monkeypatch.setattr(journal, "STAGE_PER_PAGE", 0)        # (that stage, whatever the disk)
    monkeypatch.setattr(burst_kernel.Kernel, "LEDGER_ROWS", 64)
    scenario = blocksim.load_scenario(_guest_mirror({}))
    with monkeypatch.context() as m:
        seen = _watch(m)
        compiled = outcome(blocksim.Simulation(scenario, seed=5))
    assert seen["adopted"] > 0
    assert {burst_kernel.NEED_BATCH, burst_kernel.OUT_FULL} <= seen["outcomes"]
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled


def test_a_guest_whose_requests_could_fail_stays_with_simpy(monkeypatch):
    """A fault rule on the source that could match the guest's writes (an
    open time window) keeps the guest out of the kernel while it is open,
    and the run is the same."""
    spec = _guest_mirror({})
    spec["faults"] = [{"image": "src", "operation": "write", "errno": "EIO",
                       "start": "200ms", "end": "400ms", "probability": 0.5}]
    spec["drives"]["d"]["werror"] = "ignore"
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        compiled = outcome(blocksim.Simulation(scenario, seed=5))
    ms = 1_000_000
    assert seen["adopted"] > 0
    assert all(end < 200 * ms or start >= 400 * ms for start, end in seen["spans"])
    assert any(start < 200 * ms for start, _ in seen["spans"])
    assert any(start >= 400 * ms for start, _ in seen["spans"])
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled


def test_a_guest_completion_at_a_samples_instant_waits_for_it(monkeypatch):
    """The guest's requests start so that each completes on a whole
    millisecond (while the source's pipe is free, between a ready mirror's
    polls), some exactly at a sample tick: the clock's shortcut only skips
    to a time strictly before SimPy's next event, so the sample, queued
    first, sees the run before that completion, in the kernel as in SimPy."""
    spec = _guest_mirror({"rate-iops": 1000})
    node = blocksim.Simulation(blocksim.load_scenario(spec)).devices["src"]
    service = node.latency + 4096 * 10**9 // node.bandwidth
    spec["workloads"]["g"]["start"] = f"{(-service) % 1_000_000}ns"
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        sim = blocksim.Simulation(scenario, seed=5)
        compiled = outcome(sim)
    assert seen["adopted"] > 0 and sim.jobs["j"].ready_at is not None
    monkeypatch.setattr(burst_kernel, "GUEST", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled


def test_a_completing_mirror_drains_a_guest_the_kernel_ran(monkeypatch):
    """`block-job-complete` drains the drive: a guest request the kernel
    has in flight must count in the drive's requests in flight and finish
    (2 ms of latency on the source every 5 ms: one is in flight 40 % of
    the time),
    so the guest goes back to SimPy before the drain, and the run is
    SimPy's: the job completes, at the same instant."""
    spec = _guest_mirror({"rate-iops": 200})
    spec["images"]["src"]["latency"] = "2ms"
    spec["duration"] = "4s"
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        sim = blocksim.Simulation(scenario, seed=5)
        compiled = outcome(sim)
    assert seen["adopted"] > 0 and sim.jobs["j"].status == "null"
    monkeypatch.setattr(burst_kernel, "GUEST", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled


def test_a_failed_request_in_flight_stays_with_simpy(monkeypatch):
    """A guest write fails (a one-shot fault rule, then spent) and waits for
    its completion while the rule no longer matches anything: the kernel
    must not take that request over as a success; the guest sees its error
    as in SimPy's run."""
    spec = _guest_mirror({"rate-iops": 200})
    spec["images"]["src"]["latency"] = "2ms"     # the error comes back 2 ms later
    spec["faults"] = [{"image": "src", "operation": "write", "errno": "EIO",
                       "skip": 64, "count": 1}]
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        sim = blocksim.Simulation(scenario, seed=5)
        compiled = outcome(sim)
    assert seen["adopted"] > 0 and sim.drives["d"].guest_errors == 1
    monkeypatch.setattr(burst_kernel, "GUEST", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled


def test_a_second_guest_on_the_drive_is_not_taken_for_the_first(monkeypatch):
    """Two workloads on the mirror's source drive: the paced one-worker
    guest the kernel may run, and a four-worker one it may not.  The drive
    remembers the last request's completion, whoever issued it: the kernel
    takes over only the worker that waits on SimPy's next event itself
    (here the paced guest starts late: until then only the other's
    requests are in flight)."""
    spec = _guest_mirror({"start": "600ms"})
    spec["workloads"]["other"] = {"drive": "d", "rw": "randwrite", "bs": "4KiB",
                                  "iodepth": 4, "rate-iops": 300}
    scenario = blocksim.load_scenario(spec)
    with monkeypatch.context() as m:
        seen = _watch(m)
        compiled = outcome(blocksim.Simulation(scenario, seed=5))
    assert seen["adopted"] > 0
    monkeypatch.setattr(burst_kernel, "GUEST", False)
    assert outcome(blocksim.Simulation(scenario, seed=5)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=5, shortcuts=False)) == compiled


def _small_mirror(size, tgt_latency, job=None, faults=(), actions=(), iops=1000):
    return {
        "name": "kernel-edges", "duration": "1s", "sample-interval": "100ms",
        "images": {"src": {"size": size, "data": "full", "latency": "50us",
                           "bandwidth": "1GiB"},
                   "tgt": {"size": size, "latency": tgt_latency, "bandwidth": "512MiB"}},
        "drives": {"d": {"image": "src"}},
        "workloads": {"g": {"drive": "d", "rw": "randwrite", "bs": "4KiB", "rate-iops": iops}},
        "jobs": {"j": {"type": "mirror", "device": "d", "target": "tgt"} | (job or {})},
        "faults": list(faults), "actions": list(actions),
    }


def test_a_claim_stops_at_an_operation_in_flight_in_the_kernel(monkeypatch):
    """A ready mirror of a 2 MiB disk (32 granules of 64 KiB, a 1 MiB
    buffer) under 20000 guest writes a second onto a slow target: the
    guest re-dirties granules of the copies in flight, so a claim's dirty
    run reaches one of them, where MirrorJob._start_iteration stops it (and
    the compiled _start_iteration must too)."""
    from blocksim.jobs.mirror import MirrorJob
    scenario = blocksim.load_scenario(_small_mirror(
        "2MiB", "2ms", {"granularity": "64KiB", "buf-size": "1MiB"}, iops=20000))
    compiled = outcome(blocksim.Simulation(scenario, seed=7))
    stopped = []
    real = MirrorJob._start_iteration

    def watching(job):
        started = real(job)
        if started and job._it_end in job._ops and job.bitmap.is_dirty(job._it_end):
            stopped.append(job._it_end)     # dirty on, but an operation there
        return started
    monkeypatch.setattr(MirrorJob, "_start_iteration", watching)
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=7)) == compiled
    assert stopped
    assert outcome(blocksim.Simulation(scenario, seed=7, shortcuts=False)) == compiled


@pytest.mark.parametrize("image,operation,policy", [("tgt", "write", "on-target-error"),
                                                    ("src", "read", "on-source-error")])
def test_a_failure_before_the_kernel_call_drops_the_rest_of_the_claim(
        image, operation, policy, monkeypatch):
    """A one-shot fault fails a copy under ``report`` while the loop waits
    for a free slot in the middle of an iteration; an action reacts to
    BLOCK_JOB_ERROR at once, so SimPy's next event comes before the loop's
    wake-up and the burst stops there.  The next call runs compiled (the
    rule spent, the nodes quiet) and must drop the rest of the claim, as
    MirrorJob._next_operation checks the job's failure before a copy."""
    scenario = blocksim.load_scenario(_small_mirror(
        "64MiB", "100us", {policy: "report"},
        faults=[{"image": image, "operation": operation, "offset": "30MiB",
                 "length": "64KiB", "count": 1}],
        actions=[{"on": "BLOCK_JOB_ERROR", "delay": "0s", "command": "query-block-jobs"}]))
    seen = []
    real = burst_kernel.Kernel.copy

    def watching(kernel, *args, **kwargs):
        job = kernel.job
        if job.ret and job._it_bit < job._it_end:
            seen.append(job.env.now)
        return real(kernel, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(burst_kernel.Kernel, "copy", watching)
        compiled = outcome(blocksim.Simulation(scenario, seed=7))
    assert seen                       # the kernel met the failure mid-claim
    assert outcome(blocksim.Simulation(scenario, seed=7, shortcuts=False)) == compiled
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=7)) == compiled


# -- the loop's sleeps run by the kernel ------------------------------------------------
def test_the_kernel_runs_the_loops_sleeps_as_simpy_would(monkeypatch):
    """The rate limit's sleeps of a mirror's initial copy and a ready
    mirror's polls run inside the kernel, the guest's requests and the
    copies in flight among them, and go back to SimPy under their timers'
    keys when SimPy's next event comes first (the samples, a set-speed and
    a pause during a sleep, the completion): the same run as the Python
    loop's and as no shortcut's, with far fewer sleeps left to SimPy."""
    spec = _mirror("full", duration="3s", iops=800)
    spec["sample-interval"] = "500ms"
    spec["actions"] = [
        {"at": "150ms", "command": "block-job-set-speed",
         "arguments": {"device": "j", "speed": 150 << 20}},
        {"at": "260ms", "command": "block-job-pause", "arguments": {"device": "j"}},
        {"at": "330ms", "command": "block-job-resume", "arguments": {"device": "j"}},
        {"on": "BLOCK_JOB_READY", "delay": "2s", "command": "block-job-complete",
         "arguments": {"device": "j"}}]
    scenario = blocksim.load_scenario(spec)
    sleeps, asleep = [], []
    real_sleep, real_copy = BlockJob.sleep, burst_kernel.Kernel.copy

    def sleep(job, ns, timer=None):
        sleeps.append(timer is not None)
        return real_sleep(job, ns, timer)

    def copy(kernel, *args):
        out = real_copy(kernel, *args)
        if out[0] == burst.SLEEPING:
            asleep.append(kernel.timer[3])
        return out
    with monkeypatch.context() as m:
        m.setattr(BlockJob, "sleep", sleep)
        m.setattr(burst_kernel.Kernel, "copy", copy)
        compiled = outcome(blocksim.Simulation(scenario, seed=3))
        in_kernel = len(sleeps)
        assert True in asleep and False in asleep     # a poll's and the rate limit's
        sleeps.clear()
        m.setattr(burst, "KERNEL", False)
        assert outcome(blocksim.Simulation(scenario, seed=3)) == compiled
    # (the Python loop sleeps in SimPy: a sleep per slice, a poll per 100 ms)
    assert len(sleeps) > 20 and in_kernel < len(sleeps) / 2
    assert outcome(blocksim.Simulation(scenario, seed=3, shortcuts=False)) == compiled


@pytest.mark.parametrize("command", ["block-job-pause", "block-job-cancel"])
def test_a_slice_cut_by_a_command_ends_at_the_pause_point_alike(command, monkeypatch):
    """A pause or a cancel asked while the kernel issues a rate-limited
    claim (16 MiB, as the copies before it free the buffer, at 128 MiB/s,
    for 12 MiB a slice): the loop does not sleep
    off the rate limit at the slice's end (Job.sleep, ratelimit_sleep) but
    goes to its pause point, or ends; the kernel leaves that to SimPy
    (MirrorJob.sleeps_through).  The same run as the Python loop's and as
    no shortcut's."""
    spec = _mirror("full", duration="1s")
    spec["workloads"] = {}      # (nothing else cuts the kernel's sleeps short)
    spec["sample-interval"] = "1s"
    spec["images"]["src"]["bandwidth"] = "128MiB"
    spec["jobs"]["j"]["speed"] = "120MiB"
    spec["actions"] = [{"at": "250ms", "command": command, "arguments": {"device": "j"}},
                       {"at": "450ms", "command": "block-job-resume", "arguments": {"device": "j"}}]
    if command == "block-job-cancel":
        spec["actions"].pop()
    scenario = blocksim.load_scenario(spec)
    compiled = outcome(blocksim.Simulation(scenario, seed=3))
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=3)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=3, shortcuts=False)) == compiled


# -- a source not fully allocated ---------------------------------------------------
def _sparse_mirror(**changes) -> dict:
    """A mirror of a thin source (a fifth allocated, in two extents) onto a
    target that writes zeroes with unmap, so only what is allocated is
    copied (mirror_dirty_init), under a guest writing all over the disk:
    its writes allocate new clusters, and the ready mirror re-copies them."""
    spec = _mirror([{"offset": 0, "length": "40MiB"}, {"offset": "100MiB", "length": "10MiB"}],
                   duration="1500ms", iops=800)
    for image in ("src", "tgt"):
        spec["images"][image]["size"] = "256MiB"
    spec["images"]["tgt"]["discard"] = "unmap"
    spec["sample-interval"] = "50ms"
    spec["actions"][0]["delay"] = "800ms"
    for key, value in changes.items():
        where, _, name = key.partition(".")
        spec[where][name].update(value)
    return spec


SPARSE_CASES = {
    # the kernel plans the claims (all allocated) and runs the guest,
    # whose writes allocate clusters
    "unmap target": ({}, True),
    # every granule dirty (the target cannot write zeroes with unmap): the
    # claims' block status is Python's, zeros in write-zeroes
    "ignore target": ({"images.tgt": {"discard": "ignore"}}, False),
    # granules of two clusters: a write dirties a granule half unallocated
    "granule of two clusters": ({"jobs.j": {"granularity": "128KiB"}}, False),
    # a failed write-zeroes of the zeroing pass dirties unallocated ranges
    "zeroing pass fails": ({"jobs.j": {"on-target-error": "ignore"}}, False),
}


def _sparse_case(case: str) -> tuple[dict, bool]:
    changes, claims = SPARSE_CASES[case]
    spec = _sparse_mirror(**changes)
    if case == "zeroing pass fails":
        spec["faults"] = [{"image": "tgt", "operation": "write-zeroes", "count": 1}]
    return spec, claims


@pytest.mark.parametrize("case", sorted(SPARSE_CASES))
def test_a_sparse_source_in_the_kernel(case, monkeypatch):
    """A source not fully allocated: where every dirty granule lies in
    allocated clusters (MirrorJob.dirty_allocated) the kernel plans its
    claims as data, reads pages holding zeros (Snaps: the same content as
    the Python loop's zero runs) and runs the guest, allocating its writes'
    clusters; elsewhere it hands the claims back.  The same run as the
    Python loop's and as no shortcut's, in each case."""
    spec, claims = _sparse_case(case)
    scenario = blocksim.load_scenario(spec)
    planned = []
    real = burst_kernel.Kernel.claims_data
    with monkeypatch.context() as m:
        m.setattr(burst_kernel.Kernel, "claims_data",
                  staticmethod(lambda job: planned.append(real(job)) or planned[-1]))
        sim = blocksim.Simulation(scenario, seed=4)
        compiled = outcome(sim)
    src = sim.devices["src"]
    assert not src.fully_allocated() and src.alloc.count > (50 << 20) // src.cluster_size
    assert planned and any(planned) == claims and sim.jobs["j"].dirty_allocated == claims
    # (where it cannot plan them the kernel hands the claims back; the guest
    # may still run there while the loop sleeps in the kernel)
    if claims:
        assert sim.workloads["g"].in_kernel > 500
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=4)) == compiled
    assert outcome(blocksim.Simulation(scenario, seed=4, shortcuts=False)) == compiled


def test_a_thin_source_without_room_keeps_its_guest_in_simpy(monkeypatch):
    """A source whose capacity runs out: a write needing a new cluster past
    it fails with ENOSPC (the VM stops, werror=enospc), so the guest stays
    with SimPy (its allocation decided write by write) while the kernel
    copies."""
    spec = _sparse_mirror(**{"images.src": {"capacity": "60MiB"}})
    scenario = blocksim.load_scenario(spec)
    sim = blocksim.Simulation(scenario, seed=4)
    compiled = outcome(sim)
    assert sim.workloads["g"].in_kernel == 0 and sim.jobs["j"].dirty_allocated
    assert '"BLOCK_IO_ERROR"' in compiled and "nospace" in compiled
    monkeypatch.setattr(burst, "KERNEL", False)
    assert outcome(blocksim.Simulation(scenario, seed=4)) == compiled


@pytest.mark.parametrize("seed", range(3))
def test_the_search_by_groups_finds_what_the_flags_say(seed):
    # a bitmap of many groups of blocks (1 << GROUP_SHIFT): granules marked and cleared by
    # the kernel and by Python, whole blocks marked, and searches between
    # them that clear the bytes of groups left with no flagged block; each
    # search against the bitmap's own (bytearray.find over the flags)
    rng = np.random.default_rng(seed)
    g = 512
    nblocks = (40 << GROUP_SHIFT) + 17
    nbits = nblocks * BLOCK - 5
    bm = DirtyBitmap(nbits * g, g)
    bits, bit_words, summary, blocks, block_words = bm.arrays()
    for step in range(400):
        kind = rng.integers(0, 6)
        b = int(rng.integers(0, nbits))
        if kind == 0:
            bm.count += burst_kernel._mark(bits, summary, blocks, b)
        elif kind == 1:
            bm.mark(b * g, b * g + 1)
        elif kind == 2:
            bm.clear_bits(b, min(b + int(rng.choice([1, 3, BLOCK, 70 * BLOCK])), nbits))
        elif kind == 3:                     # a range: in one block, or whole blocks
            bm.mark(b * g, min(b + int(rng.choice([2, 5, 2 * BLOCK, 70 * BLOCK])), nbits) * g)
        for _ in range(5):
            a = int(rng.integers(0, nbits))
            e = int(rng.integers(a, nbits + 1)) if rng.random() < 0.5 else nbits
            got = burst_kernel._search(bits, bit_words, summary, blocks, block_words, a, e)
            assert got == bm._search(a, e) if a < e else True, (step, a, e)
        # every flagged block's group byte is set
        flagged = np.flatnonzero(blocks)
        assert bits[bm._groups + (flagged >> GROUP_SHIFT)].all()


def test_whole_blocks_marked_at_once_are_found_by_the_groups():
    # a mark of many whole blocks sets their counts and flags with numpy
    # (DirtyBitmap._assign): their groups' bytes too, on a fresh bitmap and
    # after a search found those groups empty
    g = 512
    per = (1 << GROUP_SHIFT) // 64      # (blocks 200 to 300 of groups of 64: 3.1 to 4.7 groups)
    nbits = 64 * 10 * per * BLOCK
    bm = DirtyBitmap(nbits * g, g)
    bits, bit_words, summary, blocks, block_words = bm.arrays()
    search = burst_kernel._search
    bm.mark(200 * per * BLOCK * g, 300 * per * BLOCK * g)
    assert search(bits, bit_words, summary, blocks, block_words, 0, nbits) == 200 * per * BLOCK
    bm.clear_bits(0, nbits)
    assert search(bits, bit_words, summary, blocks, block_words, 0, nbits) == -1
    bm.mark(230 * per * BLOCK * g, 250 * per * BLOCK * g)
    assert search(bits, bit_words, summary, blocks, block_words, 5, nbits) == 230 * per * BLOCK
