"""The background pass's loop (blocksim.engine.copyloop) leaves the run the
steps give one at a time, and the one SimPy gives without shortcuts:
backups whose pool fills (64 tasks of 1 MiB in flight, the pass waiting
for a slot) under a guest whose copy-before-writes come among the tasks,
compared byte for byte (equivalence.outcome) with the loop switched off
and without shortcuts, and checked to run in the loop."""

from __future__ import annotations

import pytest
from simpy.events import PENDING

import blocksim
from blocksim.engine import copyloop, copyrows
from blocksim.simulation import Simulation
from equivalence import outcome

MiB = 1 << 20


def backup(guest: dict | None = None, job: dict | None = None, src: dict | None = None,
           tgt: dict | None = None, **extra) -> dict:
    scenario = {
        "name": "copyloop", "duration": "1.2s", "sample-interval": "100ms",
        "images": {"src": {"size": "512MiB", "data": "full", "bandwidth": "4GiB",
                           "latency": "50us"} | (src or {}),
                   "tgt": {"size": "512MiB", "bandwidth": "2GiB", "latency": "80us"}
                   | (tgt or {})},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"job0": {"type": "backup", "device": "vda", "target": "tgt",
                          "sync": "full", "speed": "1GiB"} | (job or {})},
        "workloads": {"g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
                            "rate-iops": 1000} | (guest or {})},
    }
    scenario.update(extra)
    return scenario


CASES = {
    # (d)'s shape: the pool fills at each slice's start, the guest's first
    # write of the slice waits for its copy behind the pool's reads
    "a rate-limited backup under a paced guest": backup(),
    "a busier guest": backup(guest={"rate-iops": 5000}),
    "no rate limit": backup(job={"speed": 0}, duration="400ms"),
    "a slow target: writes queue behind reads": backup(tgt={"bandwidth": "512MiB"}),
    "a qcow2 target with 128 KiB clusters": backup(tgt={"format": "qcow2",
                                                        "cluster-size": "128KiB"}),
    "a thin target": backup(tgt={"capacity": "1GiB"}),
    "compress: one-cluster tasks": backup(job={"compress": True, "speed": "256MiB"}),
    "a source partly zero": backup(src={"data": [{"offset": "8MiB", "length": "300MiB"}]}),
    # (a zero cluster run after each 63 MiB of data: the task that waits for
    # a slot is a write-zeroes now and then, its start left to the steps)
    "a source with a zero MiB every 64": backup(src={"data": [
        {"offset": f"{o}MiB", "length": "63MiB"} for o in range(0, 512, 64)]}),
    "a disk not a whole number of chunks": backup(src={"size": "300MiB", "data": "full"},
                                                    tgt={"size": "300MiB"}),
    "tasks across pages, out of line": backup(
        guest={"offset": "60MiB", "size": "72MiB", "rate-iops": 4000}),
    "bitmap sync": backup(job={"sync": "bitmap", "bitmap": "b0", "bitmap-mode": "always"},
                          src={"bitmaps": [{"name": "b0", "dirty": [
                              {"offset": "8MiB", "length": "200MiB"},
                              {"offset": "300MiB", "length": "100MiB"}]}]}),
    "pause, set-speed, stop, cont, cancel": backup(actions=[
        {"at": "150ms", "command": "block-job-pause", "arguments": {"device": "job0"}},
        {"at": "330ms", "command": "block-job-resume", "arguments": {"device": "job0"}},
        {"at": "420ms", "command": "block-job-set-speed",
         "arguments": {"device": "job0", "speed": 300 * MiB}},
        {"at": "610ms", "command": "stop"}, {"at": "640ms", "command": "cont"},
        {"at": "1010ms", "command": "block-job-cancel", "arguments": {"device": "job0"}}]),
    "a fault window on the target": backup(
        faults=[{"image": "tgt", "operation": "write", "errno": "EIO", "offset": 0,
                 "length": "512MiB", "start": "250ms", "end": "260ms"}],
        job={"on-target-error": "ignore"}),
    # (the pool's fill at a slice's start inside the window: its tasks'
    # reads fail, so their starts are not run at once, copyloop._start)
    "a read fault window on the source across slices": backup(
        faults=[{"image": "src", "operation": "read", "errno": "EIO", "offset": 0,
                 "length": "512MiB", "start": "240ms", "end": "420ms"}],
        job={"on-source-error": "ignore"}),
    # (guest writes over the clusters of tasks in flight, from where the
    # pass is when they start: a hundred copy-before-writes wait for a task
    # in flight among the compiled steps' rows, copyrows)
    "a guest hammering the clusters in flight": backup(
        guest={"offset": "300MiB", "size": "200MiB", "start": "280ms", "rate-iops": 100000,
               "iodepth": 32}),
    # (sequential guest writes of 2 MiB just behind the pass: some overlap
    # two tasks in flight, rows of the compiled steps, and wait for the
    # first in the job's list, its object made then)
    "guest writes over several tasks in flight": backup(
        guest={"rw": "write", "bs": "2MiB", "rate-iops": 400, "start": "3ms",
               "offset": "16MiB"}),
    "a second guest with reads": backup(workloads={
        "g": {"drive": "vda", "rw": "randwrite", "bs": "4KiB", "iodepth": 1,
              "rate-iops": 1000},
        "h": {"drive": "vda", "rw": "randrw", "bs": "64KiB", "iodepth": 4,
              "rate-iops": 300, "start": "200ms"}}),
    # (every time a whole number of milliseconds: a task's write completes
    # at the instant a guest's write does, over clusters copied already,
    # so the done event must wait for SimPy's event due then, which
    # queues the guest's next write before the pass's next read)
    "SimPy's events at the instants of the tasks": backup(
        src={"bandwidth": "1000MiB", "latency": "1ms"},
        tgt={"bandwidth": "1000MiB", "latency": "1ms"},
        job={"speed": "2GiB"}, guest={"think-time": "1ms", "bs": "1MiB", "size": "8MiB"}),
}

#: cases where the loop need not run at all (a fault rule on a node)
NO_LOOP = {"a fault window on the target", "a read fault window on the source across slices"}


def _same_switched_off(fast, loaded, monkeypatch) -> None:
    """``fast``, the outcome of ``loaded`` with every shortcut, is the one
    with the loop's parts switched off in turn, and without shortcuts."""
    # (the loop with the Python search for its next tasks, not the compiled
    # one: backup_kernel.plan)
    monkeypatch.setattr(copyloop, "PLAN", False)
    assert fast == outcome(Simulation(loaded))
    # (the Python loop: the pass's tasks' steps not compiled, copyrows)
    monkeypatch.setattr(copyloop, "KERNEL", False)
    assert fast == outcome(Simulation(loaded))
    monkeypatch.setattr(copyloop, "PLAN", True)
    assert fast == outcome(Simulation(loaded))
    monkeypatch.setattr(copyloop, "ENABLED", False)
    assert fast == outcome(Simulation(loaded))
    assert fast == outcome(Simulation(loaded, shortcuts=False))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_backup_with_the_loop_is_the_same_without_it(name, monkeypatch):
    ran = []
    real = copyloop.run

    def counting(job, entry):
        r = real(job, entry)
        ran.append(r)
        return r
    monkeypatch.setattr(copyloop, "run", counting)
    scenario = CASES[name]
    for w in scenario["workloads"].values():
        if "think-time" in w:
            w.pop("rate-iops", None)
    compiled = []
    real_step = copyrows.step

    def stepping(st, *arrays):
        why = real_step(st, *arrays)
        compiled.append(int(st[copyrows.RAN]))
        return why
    monkeypatch.setattr(copyrows, "step", stepping)
    loaded = blocksim.load_scenario(scenario)
    fast = outcome(Simulation(loaded))
    monkeypatch.setattr(copyloop, "run", real)
    monkeypatch.setattr(copyrows, "step", real_step)
    _same_switched_off(fast, loaded, monkeypatch)
    if name not in NO_LOOP:
        assert sum(ran) > 5               # the loop did run
        assert sum(compiled) > 20         # and its compiled steps


def test_the_loop_takes_most_tasks(monkeypatch):
    """In (d)'s shape the loop runs nearly every task's steps: few are left
    to the job's step methods."""
    from blocksim.jobs import backup as backup_module
    written = []
    real = backup_module.BackupJob._task_written

    def counting(self, arg):
        written.append(arg)
        return real(self, arg)
    monkeypatch.setattr(backup_module.BackupJob, "_task_written", counting)
    sim = Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"]))
    result = sim.run()
    copied = result.summary["jobs"]["job0"]["bytes_copied"]
    assert copied > 500 * MiB
    assert len(written) < copied // MiB // 4


def test_the_compiled_search_is_the_bitmaps(monkeypatch):
    """backup_kernel.plan's search (find, dirty_run) against DirtyBitmap's
    on random bitmaps of blocks all clean, mixed and all dirty, with every
    page known to hold data: the tasks the Python search makes, in order."""
    import numpy as np

    from blocksim.engine import backup_kernel
    from blocksim.model.bitmap import BLOCK, DirtyBitmap
    rng = np.random.default_rng(11)
    for trial in range(40):
        nbits = int(rng.integers(1, 9 * BLOCK))
        bm = DirtyBitmap(nbits, 1)
        for _ in range(int(rng.integers(0, 30))):
            a = int(rng.integers(0, nbits))
            bm.mark(a, min(nbits, a + int(rng.integers(1, 3 * BLOCK))))
            if rng.random() < 0.5:
                a = int(rng.integers(0, nbits))
                bm.clear_bits(a, min(nbits, a + int(rng.integers(1, BLOCK))))
        chunk = int(rng.integers(1, 40))
        start = int(rng.integers(0, nbits))
        expected, pos = [], start
        while True:
            b = bm.find(pos, nbits)
            if b < 0:
                break
            n = bm.dirty_run(b, min(chunk, nbits - b))
            expected.append((b, b + n))
            pos = b + n
        known = np.full(1, 2, dtype=np.uint8)
        out = np.empty((7, 2), dtype=np.int64)
        got, pos = [], start
        while True:
            k, why = backup_kernel.plan(*bm.arrays(), nbits, bm.count, nbits, nbits, chunk, 1,
                                        nbits, 40, known, out, pos)
            got += [tuple(r) for r in out[:k].tolist()]
            if why == 1:
                break
            assert why == 0 and k == 7
            pos = got[-1][1]
        assert got == expected, trial


def test_the_starts_run_where_the_tasks_are_made(monkeypatch):
    """In (d)'s shape the pool's fill runs its tasks' starts (their reads)
    at once, as the loop would run them next: nearly no start is left in
    the steps' heap after a fill (the equivalence is the cases above)."""
    real = copyloop._start
    fills, queued = [], []

    def counting(job, pooled, first_id, spans, waiting, now):
        n = len(spans)
        real(job, pooled, first_id, spans, waiting, now)
        fills.append(n)
        queued.append(sum(e[3] is job._begin_step for e in job._steps.heap))
    monkeypatch.setattr(copyloop, "_start", counting)
    Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"])).run()
    assert sum(fills) > 300
    assert sum(queued) < sum(fills) // 20


@pytest.mark.parametrize("name", ["pause, set-speed, stop, cont, cancel"])
def test_rows_are_made_entries_again(name, monkeypatch):
    """The rows of the compiled steps (copyrows) are made the steps' entries
    again when the loop may not run them (a pause, a cancel): the runs above
    compare the outcome; here, that it happens, rows in flight."""
    real = copyrows.Rows.materialize_all
    made = []

    def counting(self, heap):
        made.append(len(self))
        return real(self, heap)
    monkeypatch.setattr(copyrows.Rows, "materialize_all", counting)
    Simulation(blocksim.load_scenario(CASES[name])).run()
    assert sum(n > 0 for n in made) >= 1


def test_no_row_is_lost(monkeypatch):
    """Every row's slot comes back (copyrows.Rows): a slot taken for the
    pass's waiting task is given back when the pass's generator takes that
    task itself (at each slice's sleep); lost, the rows ran out after some
    380 slices of (d)'s hour. Here, at each call of the compiled steps, the
    slots in use are the rows queued and at most the waiting task's."""
    real = copyrows.step
    lost = []

    def stepping(st, *arrays):
        used = copyrows.CAPACITY - st[copyrows.FREE_N] - st[copyrows.FREED_N]
        lost.append(int(used - st[copyrows.HEAP_N]))
        return real(st, *arrays)
    monkeypatch.setattr(copyrows, "step", stepping)
    Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"])).run()
    assert len(lost) > 20
    assert max(lost) <= 1


def _in_flight_rows(rows) -> list:
    """The rows' tasks in flight: (start, end, seq)."""
    live = (rows.stage >= copyrows.MADE) & (rows.stage <= copyrows.WRITE)
    return list(zip(rows.start[live].tolist(), rows.end[live].tolist(),
                    rows.seq[live].tolist()))


@pytest.mark.parametrize("name", ["a guest hammering the clusters in flight",
                                  "guest writes over several tasks in flight"])
def test_a_guest_write_waits_for_the_newest_task_in_flight_rows_or_not(name, monkeypatch):
    """The pass's tasks are rows with no object (copyrows): the job's list
    holds only Python's, and _in_flight asks both.  At every call: each
    task in flight is in exactly one of them (the bytes in flight add up),
    and the answer is the newest overlapping task (the highest seq: QEMU's
    reqlist is newest first), with its object made on demand for a
    row (in the pool, its pool's check first among its done's callbacks).
    Several calls meet two or more tasks, rows among them."""
    from blocksim.jobs.backup import BackupJob
    real = BackupJob._in_flight
    met = {"calls": 0, "several": 0, "rows": 0}

    def checking(self, start, end):
        rows = self._rows
        live = [(t.start, t.end, t.seq) for t in self._tasks] + _in_flight_rows(rows)
        assert len({q for _a, _e, q in live}) == len(live)
        assert self.in_flight_bytes == sum(e - a for a, e, _q in live)
        over = sorted((q, a, e) for a, e, q in live if a < end and start < e)
        task = real(self, start, end)
        met["calls"] += 1
        if not over:
            assert task is None
            return task
        assert (task.seq, task.start, task.end) == over[-1]
        met["several"] += len(over) > 1
        if task not in self._tasks:
            met["rows"] += 1
            if task.pool is not None:
                assert task.done.callbacks[0].func == self._pool_check
        return task
    monkeypatch.setattr(BackupJob, "_in_flight", checking)
    sim = Simulation(blocksim.load_scenario(CASES[name]))
    result = sim.run()
    assert result.summary["jobs"]["job0"]["integrity"] == "identical"
    assert met["calls"] > 100
    if name.startswith("guest writes over several"):
        # (rare: the first such wait leaves the rest of the burst to Python)
        assert met["rows"] >= 2 and met["several"] >= 2


def test_the_pool_is_counted_once(monkeypatch):
    """The pass's pool is a count (backup._Pool): at each of the pass's
    waits for a slot, the pool's tasks Python holds, the rows in the pool
    and the rows' ended tasks not taken out yet add up to it (and where the
    wait is over at once without one: BackupJob._unpool's calls)."""
    from blocksim.jobs.backup import BackupJob
    real = BackupJob._pool_wait
    real_unpool = BackupJob._unpool
    seen = []

    def check(self, pooled):
        rows = self._rows
        n = 0
        if rows.pooled is pooled:
            heap = rows.heap[:len(rows), 3].tolist()
            n = sum(1 for s in heap if rows.inpool[s]
                    and copyrows.BEGIN <= rows.stage[s] <= copyrows.WRITE)
        assert pooled.count == len(pooled.tasks) + n + pooled.ended_rows
        assert pooled.count == 64
        seen.append(n)

    def checking(self, pooled):
        check(self, pooled)
        return real(self, pooled)

    def unpooling(self, pooled):
        if pooled.count == 64:
            check(self, pooled)
        return real_unpool(self, pooled)
    monkeypatch.setattr(BackupJob, "_pool_wait", checking)
    monkeypatch.setattr(BackupJob, "_unpool", unpooling)
    Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"])).run()
    assert len(seen) > 10 and max(seen) > 32


def test_the_limiters_sleep_makes_no_task(monkeypatch):
    """With steps, a sleep the rate limiter asks for before the pass's next
    task is taken without the task QEMU makes and ends with EAGAIN
    (BackupJob._next_task): in (d)'s shape every sleep of the pass is one
    (the equivalence cases compare the runs), and no task ends with EAGAIN."""
    import errno

    from blocksim.jobs.backup import BackupJob
    sleeps, eagain = [], []
    real_sleep, real_end = BackupJob._call_sleep, BackupJob._task_end
    real_again = BackupJob._sleeps_again

    def sleeping(self, call, ns):
        sleeps.append(ns)
        return real_sleep(self, call, ns)

    def again(self, call, now):
        # (a sleep re-armed without resuming the pass: BackupJob._sleep_over)
        ns = real_again(self, call, now)
        if ns:
            sleeps.append(ns)
        return ns

    def ending(self, task, err, last=False):
        if err == errno.EAGAIN:
            eagain.append(task)
        return real_end(self, task, err, last)
    monkeypatch.setattr(BackupJob, "_call_sleep", sleeping)
    monkeypatch.setattr(BackupJob, "_sleeps_again", again)
    monkeypatch.setattr(BackupJob, "_task_end", ending)
    Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"])).run()
    assert len(sleeps) >= 8 and not eagain


def test_without_shortcuts_a_call_waits_for_the_newest_task_it_overlaps(monkeypatch):
    """block/reqlist.c: reqlist_init_req puts each task at the head of the
    list and reqlist_find_conflict returns the first it meets, so a
    block-copy call (a guest's copy-before-write) waits for the newest task
    in flight it overlaps.  Without shortcuts every task is Python's: the
    answer is the overlapping task of the highest seq, and some calls meet
    two or more."""
    from blocksim.jobs.backup import BackupJob
    real = BackupJob._in_flight
    met = {"several": 0}

    def checking(self, start, end):
        over = sorted((t.seq, t.start, t.end) for t in self._tasks
                      if t.start < end and start < t.end)
        task = real(self, start, end)
        if not over:
            assert task is None
        else:
            assert (task.seq, task.start, task.end) == over[-1]
            met["several"] += len(over) > 1
        return task
    monkeypatch.setattr(BackupJob, "_in_flight", checking)
    sim = Simulation(blocksim.load_scenario(CASES["guest writes over several tasks in flight"]),
                     shortcuts=False)
    result = sim.run()
    assert result.summary["jobs"]["job0"]["integrity"] == "identical"
    assert met["several"] >= 2


# -- session 18: the loop's entries cheap ------------------------------------------------

def test_a_kept_plan_is_cut_where_a_guests_copy_changed_it(monkeypatch):
    """The plan of the pass's next tasks is kept from one entry of the loop
    to the next (copyloop._kept_plan); a guest's copy-before-write between
    two entries clears clusters of tasks it holds, and the next entry keeps
    it only up to the first task found otherwise (backup_kernel.agree).
    Here that happens, rows dropped, and the run is the one without the
    kept plan's shortcuts (the compiled steps and the compiled search off,
    the loop off, no shortcuts)."""
    from blocksim.engine import backup_kernel
    real = backup_kernel.Planner.agree
    checked = []

    def counting(self, rows, taken, n, pos):
        k = real(self, rows, taken, n, pos)
        checked.append((n - taken, k))
        return k
    monkeypatch.setattr(backup_kernel.Planner, "agree", counting)
    loaded = blocksim.load_scenario(CASES["a busier guest"])
    fast = outcome(Simulation(loaded))
    assert any(k < n for n, k in checked)           # rows dropped
    assert any(k == n > 0 for n, k in checked)      # and kept whole
    monkeypatch.setattr(backup_kernel.Planner, "agree", real)
    _same_switched_off(fast, loaded, monkeypatch)


def test_agree_is_the_plan_found_again():
    """backup_kernel.agree on random bitmaps changed after a plan was made
    (granules cleared and marked, pages' cache knowing less): the length of
    the plan's prefix a new plan from the same place finds again."""
    import numpy as np

    from blocksim.engine import backup_kernel
    from blocksim.model.bitmap import BLOCK, DirtyBitmap
    rng = np.random.default_rng(18)
    cut = whole = 0
    for trial in range(60):
        nbits = int(rng.integers(BLOCK, 6 * BLOCK))
        bm = DirtyBitmap(nbits, 1)
        bm.mark(0, nbits)
        for _ in range(int(rng.integers(0, 20))):
            a = int(rng.integers(0, nbits))
            bm.clear_bits(a, min(nbits, a + int(rng.integers(1, BLOCK // 4))))
        chunk = int(rng.integers(1, 40))
        start = int(rng.integers(0, nbits // 2))
        # pages of 8 granules, all known to hold data
        known = np.full(nbits // 8 + 1, 2, dtype=np.uint8)

        def plan(pos):
            out = np.empty((nbits + 1, 2), dtype=np.int64)
            k, _why = backup_kernel.plan(*bm.arrays(), nbits, bm.count, nbits, nbits, chunk,
                                         1, nbits, 3, known, out, pos)
            return out[:k]
        kept = plan(start)
        taken = int(rng.integers(0, max(len(kept) // 4, 1)))
        pos = int(kept[taken - 1, 1]) if taken else start
        for _ in range(int(rng.integers(0, 4))):
            b = int(rng.integers(pos, nbits))
            if rng.random() < 0.5:
                bm.clear_bits(b, min(nbits, b + int(rng.integers(1, 30))))
            else:
                bm.mark(b, min(nbits, b + int(rng.integers(1, 30))))
        if rng.random() < 0.3:
            known[int(rng.integers(pos // 8, nbits // 8 + 1))] = 0
        again = plan(pos)
        k = backup_kernel.agree(*bm.arrays(), nbits, bm.count, nbits, nbits, chunk, 1, nbits,
                                3, known, kept, taken, len(kept), pos)
        same = 0
        while (same < len(kept) - taken and same < len(again)
               and tuple(kept[taken + same]) == tuple(again[same])):
            same += 1
        assert k == same, trial
        cut += k < len(kept) - taken
        whole += k == len(kept) - taken
    assert cut > 10 and whole > 5


def test_the_bitmaps_version_counts_its_changes():
    """DirtyBitmap.version moves with every change of the dirty granules
    (what tells the loop a kept plan may not hold), whichever way made:
    one granule, a range, whole blocks, a guest's writes, a compiled
    change handing its count in; and not on a clear of clean granules."""
    import numpy as np

    from blocksim.model.bitmap import BLOCK, DirtyBitmap
    bm = DirtyBitmap(12 * BLOCK, 1)
    versions = [bm.version]
    for change in (lambda: bm.mark(3, 4), lambda: bm.mark(10, 11 * BLOCK + 7),
                   lambda: bm.clear_bits(2, 12), lambda: bm.clear_bits(BLOCK, BLOCK + 1),
                   lambda: bm.mark_writes(np.array([11 * BLOCK + 9], dtype=np.int64), 1),
                   lambda: bm.clear_bits(0, 12 * BLOCK),
                   lambda: setattr(bm, "count", bm.count)):
        change()
        versions.append(bm.version)
    assert all(a < b for a, b in zip(versions, versions[1:])), versions
    assert bm.count == 0
    bm.clear_bits(7, 8)                 # (clean already: nothing changed)
    assert bm.version == versions[-1]


def test_the_compiled_steps_pass_the_steps_markers(monkeypatch):
    """A marker of the steps in SimPy's queue (of a step run already) no
    longer stops the compiled steps (copyrows.step drops it as the steps'
    loop would): in (d)'s shape some are dropped there, and none is left
    in the steps' record while out of SimPy's queue."""
    real = copyrows.step
    dropped = []

    def stepping(st, *arrays):
        why = real(st, *arrays)
        dropped.append(int(st[copyrows.QI]))
        return why
    monkeypatch.setattr(copyrows, "step", stepping)
    sim = Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"]))
    sim.run()
    assert sum(dropped) > 3
    steps = sim.jobs["job0"]._steps
    queued = {e[:3] for e in sim.env._queue}
    assert all(key in queued for key in steps._markers)


def test_the_runs_arrays_grow(monkeypatch):
    """An entry's runs (pasted and allocated when it stops) outgrow the
    compiled steps' arrays: they grow, rows kept (copyrows.Rows.grow); the
    run is the one without the loop."""
    grown = []
    real = copyrows.Rows.grow

    def growing(self):
        grown.append(len(self.pastes))
        return real(self)
    monkeypatch.setattr(copyrows, "_RUNS", 3)
    monkeypatch.setattr(copyrows.Rows, "grow", growing)
    loaded = blocksim.load_scenario(CASES["no rate limit"])
    fast = outcome(Simulation(loaded))
    assert grown and grown[0] == 3          # (grown from 3 rows, kept grown)
    _same_switched_off(fast, loaded, monkeypatch)


@pytest.mark.parametrize("kernel", [False, True])
def test_a_refused_write_runs_where_the_loop_stops(monkeypatch, kernel):
    """A write of the pass's whose wake-up the loop leaves to the steps (the
    pass would sleep: about once a slice) is run where the loop stops, as the
    plain step the steps would run after entering the loop at it again only
    to have it refused again: the loop is never entered at it, and such
    writes do run there (the equivalence is the cases above).  A row's such
    write (the compiled steps) is done by the compiled steps up to the
    wait's event, whose callbacks (the pass resumed) run where the loop
    stops (``copyrows.WAKE``, ``copyloop._wake``): no plain step then."""
    monkeypatch.setattr(copyloop, "KERNEL", kernel)
    real_run, real_step, real_wake = copyloop._run, copyloop._step, copyloop._wake
    entered, stepped, woken = [], [], []

    def entering(job, entry, rows):
        entered.append(entry[3] is job._write_step)
        return real_run(job, entry, rows)

    def stepping(env, callback, arg):
        stepped.append(callback.__name__)
        return real_step(env, callback, arg)

    def waking(env, ev):
        # (the pass waits for a slot on that very event, nothing else does)
        woken.append(ev._value is PENDING and len(ev.callbacks) == 1)
        return real_wake(env, ev)
    monkeypatch.setattr(copyloop, "_run", entering)
    monkeypatch.setattr(copyloop, "_step", stepping)
    monkeypatch.setattr(copyloop, "_wake", waking)
    Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"])).run()
    if kernel:
        assert len(woken) >= 4 and all(woken)           # (a dozen slices)
        assert stepped.count("_task_written") < len(woken)
        # (entered at the rows' proxy only: the Python loop's writes are
        # entries of the steps, at which it is entered as at any other)
        assert len(entered) > 20 and not any(entered)
    else:
        assert stepped.count("_task_written") >= 4 and not woken


def test_another_calls_steps_are_no_entries_of_the_loop(monkeypatch):
    """The steps of another call's tasks (a guest's copy-before-writes: a
    start, a read, a write) are left to the steps without entering the loop,
    which would run the start and the read as those plain steps and stop at
    the write: the loop is entered only at the pass's own tasks' steps or at
    the rows' proxy, and the guest's copy-before-writes do come among them."""
    from blocksim.jobs import backup as backup_module
    real_run, real_begin = copyloop._run, backup_module.BackupJob._task_begin
    entered, others = [], []

    def entering(job, entry, rows):
        entered.append(entry is job._rows.proxy or entry[4][0] is job._pass.call)
        return real_run(job, entry, rows)

    def beginning(self, arg):
        others.append(self._pass is not None and arg[0] is not self._pass.call)
        return real_begin(self, arg)
    monkeypatch.setattr(copyloop, "_run", entering)
    monkeypatch.setattr(backup_module.BackupJob, "_task_begin", beginning)
    Simulation(blocksim.load_scenario(CASES["a busier guest"])).run()
    assert sum(others) > 20
    assert len(entered) > 20 and all(entered)


def test_a_nodes_queue_goes_into_the_compiled_steps_and_back_as_it_is():
    """copyrows.Rows.ring_in and ring_out: a node's queue (busy-until times,
    oldest first) and pipe handed to the compiled steps' ring and back, as
    ``Device._service_done`` leaves them, whether its requests are issued in
    Python (between entries of the loop) or compiled (copyrows._service),
    across the ring's wrap (a queue 4 deep: a ring of 5); loaded again only
    when the node changed since the state last held its queue, loaded or
    left by the compiled steps."""
    import random
    from collections import deque
    from types import SimpleNamespace

    from blocksim.model.device import BlockDevice

    class Node:                             # (a device's queue, as _service_done keeps it)
        def __init__(self):
            self._slots, self._pipe_free, self.queue_depth = deque(), 0, 4
            self.latency, self.bandwidth, self.jitter = 50_000, 1 << 30, 0
    node = Node
    rows = copyrows.Rows(SimpleNamespace())
    H = copyrows.S_H
    mine, model = node(), node()
    rng = random.Random(5)
    now, loads, kept = 0, 0, 0
    for _ in range(3000):
        now += rng.choice((0, 1_000, 20_000, 300_000))
        nbytes = rng.choice((4096, 65536, 1 << 20))
        how = rng.random()
        if how < 0.3:                       # (a guest's request, in Python)
            BlockDevice._service_done(mine, now, nbytes)
        elif how < 0.45:                    # (an entry that issues nothing on it)
            before = rows.st[H:H + 6].tolist()
            ring = rows.ring_in(mine, H)
            loads += rows.st[H:H + 6].tolist() != before
            rows.ring_out(mine, H, rows.st.tolist())
            continue
        else:                               # (the compiled steps' request)
            before = rows.st[H:H + 6].tolist()
            ring = rows.ring_in(mine, H)
            kept += rows.st[H:H + 6].tolist() == before
            done = copyrows._service(ring, rows.st, H, now, nbytes)
            rows.ring_out(mine, H, rows.st.tolist())
            assert done == BlockDevice._service_done(model, now, nbytes)
            assert (list(mine._slots), mine._pipe_free) == (list(model._slots),
                                                            model._pipe_free)
            continue
        BlockDevice._service_done(model, now, nbytes)
        assert (list(mine._slots), mine._pipe_free) == (list(model._slots), model._pipe_free)
    assert kept > 500 and loads > 100


def test_runs_past_the_sources_end_are_pasted_one_by_one(monkeypatch):
    """BackupJob._paste_runs pastes the copy loop's runs (its tasks' writes,
    inside the job's size) in compiled calls without reading their ends; a
    run past the source's end (a job larger than its source, as no loop
    makes one) is pasted one run at a time (_paste), as before."""
    import numpy as np
    sim = Simulation(blocksim.load_scenario(CASES["a rate-limited backup under a paced guest"]))
    sim.run()
    job = sim.jobs["job0"]
    size = job.source.content.size
    pasted = []
    monkeypatch.setattr(job, "_paste", lambda a, b: pasted.append((a, b)))
    runs = np.array([[0, MiB], [size - MiB, size + MiB]], dtype=np.int64)
    monkeypatch.setattr(job, "size", size + MiB)
    job._paste_runs(runs)
    assert pasted == [(0, MiB), (size - MiB, size + MiB)]
    pasted.clear()
    job._paste_runs(runs[:1].copy())
    monkeypatch.setattr(job, "size", size)
    job._paste_runs(runs[:1].copy())
    assert pasted == []


def test_machine_code_is_the_compiled_function_for_those_types():
    """``machine_code(fn, args)``: the machine code numba compiled for the
    types of ``args`` (called without its dispatch: the copy loop's steps,
    the backup's planner), giving what the dispatcher gives; for types it
    was not compiled for, or for a function that is not compiled, ``fn``."""
    import numpy as np

    from blocksim.engine import bitmap_blocks
    from blocksim.engine.compiled import machine_code

    def same(a):
        return a

    assert machine_code(same, (1,)) is same
    flags = np.zeros(64, dtype=np.uint8)
    words = np.frombuffer(flags, dtype=np.uint64)
    flags[37] = 1
    assert bitmap_blocks._find(flags, words, 0, 64) == 37
    find = bitmap_blocks._find               # (its dispatcher, loaded now)
    narrow = flags.astype(np.int32)             # (a second signature compiled)
    assert find(narrow, words, 0, 64) == 37
    fast = machine_code(find, (flags, words, 0, 64))
    assert fast is not find and fast(flags, words, 3, 64) == 37 == find(flags, words, 3, 64)
    assert fast(flags, words, 38, 64) == find(flags, words, 38, 64)
    assert machine_code(find, (narrow, words, 0, 64)) is not fast
    assert machine_code(find, (flags.astype(np.int16), words, 0, 64)) is find
