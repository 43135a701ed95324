"""A backup's background block-copy pass as one plain loop over the steps.

A backup's block-copy call (``blocksim.jobs.backup``, QEMU's
``block_copy_dirty_clusters``) keeps 64 tasks of 1 MiB in flight: each task
is a start, a source read, a target write and a ``done`` event
(:mod:`blocksim.engine.steps` keeps them out of SimPy's queue), and each
``done`` wakes the pass, which takes the next dirty clusters out of the copy
bitmap, asks their block status and the rate limiter, and starts the next
task.  Done one step at a time that is some forty Python calls a task: the
steps' heap, the callbacks, the events, the pass's generator resumed.

:func:`run` does the same steps in one loop over the steps' own heap, in
the same order, drawing the same ids from SimPy's counter at the same
moments:

1. **When it applies.**  The steps' loop hands it an entry of one of the
   job's task steps (start, read, write).  The background call's pass waits
   for a free slot of its pool (``_Pool.task`` made, ``_Pool.ev`` pending),
   no other call waits for a task of its pool, the call has neither failed
   nor been cancelled, the source has no backing file and a content
   journal, and both nodes are quiet up to SimPy's next event
   (:func:`blocksim.engine.burst._quiet`: no fault rule that could match,
   no jitter, no threshold, no write listener or backing file on the
   target, room for the whole disk): every read and write succeeds after
   the devices' queue and pipe.
2. **What it does**, entry by entry, as the steps would: a task's start
   issues its read (``Device._service_done``), its read completes (the
   counters) and issues the write (``submit_write`` on a quiet target:
   allocation, queue and pipe), its write completes (the counters; ``_task_end``: progress, the
   task out of the job's list, into the pool's ended list; its ``done``
   succeeded *last*, as ``Steps.succeed`` does: its callbacks run at once
   when nothing else is due at that instant, else a step of its own).  The
   pool's check (``BackupJob._pool_check``) and the pass's wake-up are done
   here too: where the generator would resume after its wait for a slot,
   the loop carries the pass on as the generator's code does (the tasks
   ended out of the pool, the waiting task in, then the next tasks: copy
   bitmap, block status, rate limit, until the pool is full again and a
   task waits for a slot), on the pass's state kept in its ``_Pool``.  The
   generator itself stays suspended on its wait, whose event is the same
   object throughout; when it resumes it finds the pass as it would have
   left it.
   Another call's task (a guest's copy-before-write) has its start and its
   read run here too, by its own step methods, as the steps would run them
   (the target's allocation deferred so far is set first: its write asks
   it), when the loop meets them on its way; the loop is not entered at
   one (:func:`run` leaves them to the steps, which run the same plain
   steps).
3. **Where it stops**: before the first entry SimPy's queue does not come
   after (a marker of a step already run is dropped, as the steps do, and
   so do the compiled steps: ``copyrows.step``'s ``qkeys``),
   before any other entry (another call's write, which resumes the call
   waiting for it; a write-zeroes; a failed request; a ``done`` event with
   a waiter of its own), and before a step after which the pass would do
   anything but start tasks and wait for a slot again (the rate limiter
   asks for a sleep, nothing left to copy, a task whose block status is not
   data throughout: checked without side effects first, on a plan of the
   next tasks).  A write of the pass's it stops before because its
   wake-up is not feasible is run where it stops, as the plain step the
   steps would run next (they would enter the loop at it, to the same
   refusal, first).  A row's such write (the compiled steps, below) is
   done by the compiled steps themselves, up to its task's end and the
   wait's event succeeded at once, and only that event's callbacks (the
   pass's generator resumed, to sleep: once a rate-limit slice) are run
   where the loop stops (``copyrows.WAKE``, :func:`_wake`): no object for
   its task, no plain step.
4. **What it leaves**: what a task read is pasted into the target when the
   loop stops instead of at each write (in compiled calls:
   ``ContentJournal.copy_runs``) (the source cannot change meanwhile:
   no guest request runs inside the loop, and a guest write waits for any
   task over its clusters), in runs as long as the tasks allow; a task whose
   read completed and whose write has not takes its read then (the same
   content).  So are the copy bitmap's bits of the tasks made here (cleared
   when it stops: only the pass's own search, from past them, reads the
   bitmap meanwhile) and the target's allocation of the writes issued here.
   Everything else is done as it goes.  The plan of the pass's next tasks
   is kept for the next entry, as far as it still holds then
   (:func:`_kept_plan`).

:func:`fill` is the pass's fill of its pool after a sleep (64 tasks made at
once at each rate-limit slice's start), made in one go by the generator's
own call, with the same checks: the compiled planner's rows, admitted by
the limiter in one compiled call (``copyrows.admit``), made rows at once
when their starts run at once (no object: :func:`_start`).

A task's start that is sure to be the next step run (nothing in the steps'
heap nor SimPy's queue due first, the loop's conditions holding) is run
where the task is made, at a wake-up (:func:`run`'s ``resume``) or by the
fill when the pool is full (:func:`_start`): its read issued, the read's
step queued, each id drawn where the steps would draw it.  The devices' and
the job's counters are added up while the loop runs and handed in when it
stops (nothing it runs reads them).

The pass's own tasks' steps are compiled (:mod:`blocksim.engine.copyrows`,
``KERNEL``): a task whose read the fill or the loop issues becomes a *row*
whose steps (read, write, done, the wake-up and the next tasks made) run in
compiled code, behind one proxy entry in the steps' heap; the loop here
hands the rows to it whenever a row's step comes first, runs every other
entry itself as before, and makes a row the steps' entry again where the
Python loop must run it.  With ``KERNEL = False`` the loop is the plain
Python one (about 4 µs a step).

``tests/engine/test_copyloop.py`` and the backups of
``tests/engine/test_filtered.py`` and ``tests/system/test_shortcuts_random.py``
compare runs with it, without it (``copyloop.ENABLED = False``) and without
shortcuts; ``test_copyloop.py`` also with the Python loop (``KERNEL = False``).
"""

from __future__ import annotations

import struct
from functools import partial
from heapq import heappop, heappush
from itertools import count

import numpy as np
from simpy.events import NORMAL, PENDING, URGENT, Event

from . import backup_kernel, copyrows
from .burst import _quiet
from .compiled import machine_code

#: tests switch the loop off to compare (the steps one at a time)
ENABLED = True
#: and the compiled search for the pass's next tasks (backup_kernel.plan)
PLAN = True
#: and the compiled steps of the pass's own tasks (blocksim.engine.copyrows)
KERNEL = True

_MAX_WORKERS = 64           # BLOCK_COPY_MAX_WORKERS (backup.MAX_WORKERS)
#: the plan's rows found ahead at a time for the compiled steps (an entry
#: at a slice's start makes some 40 tasks: with 16 or 32 rows ahead, (d)'s
#: hour had 8,200 or 4,800 more entries of the steps back for NEED_PLAN
#: each 360 simulated s, with 64 none)
_PLAN_AHEAD = _MAX_WORKERS
#: the pass's waiting task while it is a row (``_Pool.task``)
ROW = copyrows.ROW
_NEVER = copyrows._NEVER
_NOTHING = (_NEVER, 0, 0)    # (an empty heap's head, for the compiled steps)
(NOW, OTHER_T, OTHER_P, OTHER_ID, Q_T, Q_P, Q_ID, EID, WAITING, FIRED, WAIT, PROCESSED,
 POOL_LEN, N_ENDED, TASK, NO_RESUME, PLAN_N, TAKEN, PLAN_FINAL, SPEED, QUOTA, SL_START,
 SL_END, DISPATCHED, POS, SIZE, TCS, N_READS, N_READ, N_WRITES, N_WRITTEN, N_COPIED,
 IN_FLIGHT, PASTE_N, ALLOC_N, RAN, MADE_N, DONE_N, FREE_N, FREED_N, HEAP_N, RESUMED, SEQ,
 Q_MARK, QI) = (
    copyrows.NOW, copyrows.OTHER_T, copyrows.OTHER_P, copyrows.OTHER_ID, copyrows.Q_T,
    copyrows.Q_P, copyrows.Q_ID, copyrows.EID, copyrows.WAITING, copyrows.FIRED,
    copyrows.WAIT, copyrows.PROCESSED, copyrows.POOL_LEN, copyrows.N_ENDED, copyrows.TASK,
    copyrows.NO_RESUME, copyrows.PLAN_N, copyrows.TAKEN, copyrows.PLAN_FINAL,
    copyrows.SPEED, copyrows.QUOTA, copyrows.SL_START, copyrows.SL_END, copyrows.DISPATCHED,
    copyrows.POS, copyrows.SIZE, copyrows.TCS, copyrows.N_READS, copyrows.N_READ,
    copyrows.N_WRITES, copyrows.N_WRITTEN, copyrows.N_COPIED, copyrows.IN_FLIGHT,
    copyrows.PASTE_N, copyrows.ALLOC_N, copyrows.RAN, copyrows.MADE_N, copyrows.DONE_N,
    copyrows.FREE_N, copyrows.FREED_N, copyrows.HEAP_N, copyrows.RESUMED, copyrows.SEQ,
    copyrows.Q_MARK, copyrows.QI)
QUEUE_AHEAD = copyrows.QUEUE_AHEAD
#: the state's fields kernel() hands the compiled steps, up to HEAP_N, in
#: one call on its bytes (numpy converts a tuple's items one at a time:
#: some 2 µs an entry)
_HAND_IN = struct.Struct(f"={HEAP_N}q")
#: the compiled steps' function -> its machine code for kernel()'s
#: arguments (compiled.machine_code: the same arrays' types at every call)
_MACHINE_CODE: dict = {}


def attach(job, steps) -> None:
    """Hand ``steps`` the loop for ``job``'s task steps."""
    loop = partial(run, job)
    job._rows = rows = copyrows.Rows(job)
    for callback in (job._begin_step, job._read_step, job._write_step, rows.fire):
        steps.loop_for[callback] = loop


def run(job, entry) -> bool:
    """Run the steps from ``entry`` (the head of the steps' heap, due before
    SimPy's next event) while the module's doc says so; whether it ran any."""
    rows = job._rows
    if entry is not rows.proxy:
        # a task's step (start, read, write): another call's (a guest's
        # copy-before-write) is left to the steps, with no entry of the
        # loop: its start and read run as the plain steps the loop would
        # run them as (_run's BEGIN and READ branches: _step), where the
        # loop, entered for them, would stop right after as often as not;
        # its write resumes the call waiting for it (the loop stops before
        # it: the module's doc, 3)
        pooled = job._pass
        arg = entry[4]
        if pooled is None or arg[0] is not pooled.call or arg[1].pool is not pooled:
            return False
    if not ENABLED or not _runnable(job, entry):
        if rows is not None and entry is rows.proxy:
            # (the rows' steps left to the steps, one at a time)
            rows.materialize_all(job._steps.heap)
            return True
        return False
    return _run(job, entry, rows if KERNEL else None)


def _runnable(job, entry) -> bool:
    """Whether the loop may run from ``entry`` (the module's doc, 1)."""
    pooled = job._pass
    if pooled is None:
        return False
    call = pooled.call
    if call is not job._call or call.err or call.cancelled:
        return False
    for t in pooled.waited:
        if t.pool is pooled:
            return False
    src, tgt = job.source, job.target
    queue = job.env._queue
    return not (src.backing is not None or src.content._journal is None or src.faults
                or tgt.faults
                or not _quiet(src, tgt, entry[0], queue[0][0] if queue else float("inf")))


def _run(job, entry, rows) -> bool:
    """:func:`run`'s loop, its conditions met; ``rows``: the pass's own
    tasks' steps run compiled (blocksim.engine.copyrows), or None."""
    pooled = job._pass
    call = pooled.call
    ev = pooled.ev
    # the pass waits for a slot (else it sleeps, and no task's end wakes it:
    # the pool's check only counts, BackupJob._pool_check)
    waiting = pooled.task is not None and ev is not None and ev._value is PENDING
    src, tgt = job.source, job.target
    env = job.env
    queue = env._queue
    steps = job._steps
    heap = steps.heap
    markers = steps._markers
    eid = env._eid
    BEGIN, READ, WRITE = job._begin_step, job._read_step, job._write_step
    pool, ended = pooled.tasks, pooled.ended
    tasks = job._tasks
    size = job.size
    pool_check = job._pool_check
    limit = job.limit
    # rows [start, end) read and written here, not pasted yet (``npaste``),
    # and [c0, c1) of the target the writes here allocate (``nalloc``):
    # the compiled steps' arrays, which they add to (KERNEL or not)
    arrays = job._rows
    pastes, allocs = arrays.pastes, arrays.allocs
    npaste = nalloc = 0
    later: dict = {}            # task -> its write's entry, read here, not written yet
    tcs = tgt.cluster_size
    Task = job.Task
    seq = job._seq              # (each task's place in the job's list)
    fired = False               # the wait's event succeeded here, as a step
    ran = 0

    cs, bcs = job.cluster, job.bcs
    end = pooled.end
    last = -(-end // cs)
    chunk = job._chunk()
    # the pass's next tasks, rows (start, end) of ``plan`` (the array the
    # compiled steps read: never a Python list, whose rows cost more to make
    # than the search), ``plan_n`` of them, found ahead without changing the
    # bitmap (the bits are cleared when the loop stops: until then only the
    # pass's own search, from past them, reads it); plan[taken:] not made yet
    plan = arrays.plan
    plan_n = taken = 0
    ahead = None                # the planner of a pool's worth (kernel())
    # (the plan the last entry left, as far as it still holds: _kept_plan)
    known = job._data_known(src.content)
    version = bcs.version
    kept = rows.kept if rows is not None else None
    if kept is not None and kept[0] is pooled and kept[1] == pooled.pos:
        plan_n, taken = kept[4], kept[5]
        if kept[2] != version or kept[3] is not known:
            # (the bitmap or the cache changed since: the rows found again)
            k = 0
            if PLAN and plan_n > taken:
                ahead = backup_kernel.planner(job, end, last, chunk, _PLAN_AHEAD)
                if ahead.args is not None:
                    k = ahead.agree(plan, taken, plan_n, pooled.pos)
            plan_n = taken + k
    # (where its search goes on)
    planned = int(plan[plan_n - 1, 1]) if plan_n > taken else pooled.pos
    first = -1                  # the first cluster taken out of the bitmap here

    planner = None

    def put(found) -> None:
        """Rows ``found`` (an array of start and end) at the plan's end."""
        nonlocal plan, plan_n
        n = plan_n + len(found)
        if n > len(plan):
            grown = np.empty((2 * n, 2), dtype=np.int64)
            grown[:plan_n] = plan[:plan_n]
            plan = arrays.plan = grown
        plan[plan_n:n] = found
        plan_n = n

    def feasible(k: int, now: int) -> bool:
        """Whether the pass, woken now, makes its next ``k`` tasks without
        a sleep, a shrink or an end (nothing changed but the plan)."""
        if not extend(k):
            return False
        if limit.speed:
            # RateLimit.delay(now, 0), then (now, e - a), for each
            quota = limit.slice_quota
            start, slice_end, dispatched = limit.slice_start, limit.slice_end, limit.dispatched
            for a, e in plan[taken:taken + k].tolist():
                if slice_end <= now:
                    start, slice_end, dispatched = now, now + _SLICE_NS, 0
                if dispatched >= quota:
                    return False
                dispatched += e - a
                if dispatched >= quota:
                    slice_end = start + int(dispatched / max(quota, 1) * _SLICE_NS)
        return True

    def extend(k: int) -> bool:
        """Whether the plan holds the pass's next ``k`` tasks, all of data
        throughout, found as the pass would find them (the plan extended)."""
        nonlocal planned, planner
        while plan_n - taken < k:
            pos = planned
            if pos >= end:
                return False
            if PLAN:
                # (the next tasks of data throughout, compiled; a task whose
                # status Python must ask, as below)
                if planner is None:
                    planner = backup_kernel.planner(job, end, last, chunk, 16)
                if planner.args is not None:
                    got, why = planner(pos)
                    if got:
                        put(planner.out[:got])
                        planned = int(plan[plan_n - 1, 1])
                        continue
                    if why == 1:
                        return False
                    a, e = planner.out[0].tolist()
                    zero, num = job._status(a, e)
                    planner.known()
                    if zero or a + num < e:
                        return False
                    put(((a, e),))
                    planned = e
                    continue
            b = bcs.find(pos // cs, last)
            if b < 0:
                return False
            n = bcs.dirty_run(b, min(chunk, last - b))
            a, e = b * cs, (b + n) * cs
            zero, num = job._status(a, e)
            if zero or a + num < e:
                return False
            put(((a, e),))
            planned = e
        return True

    def resume(now: int) -> None:
        """The pass's generator resumed after its wait for a slot
        (``BackupJob._dirty_clusters_steps``), up to its next wait: the
        tasks the plan says, as _task_create, _block_status (data
        throughout: the task as made) and the limiter's delays would."""
        nonlocal fired, taken, first
        fired = False
        job._unpool(pooled)
        task = pooled.task
        if task is ROW:
            task = job._rows.take_waiting()
        speed = limit.speed
        begin = None            # the only start so far: (its id, its task)
        while True:
            pool.append(task)
            pooled.count += 1
            task.pool = pooled
            task.done.callbacks.append(partial(pool_check, task))
            if begin is None:
                begin = (next(eid), task)
            elif begin:
                heappush(heap, (now, URGENT, begin[0], BEGIN, (call, begin[1])))
                heappush(heap, (now, URGENT, next(eid), BEGIN, (call, task)))
                begin = False
            else:
                heappush(heap, (now, URGENT, next(eid), BEGIN, (call, task)))
            a, e = plan[taken].tolist()
            taken += 1
            if first < 0:
                first = a // cs
            task = Task(env, a, e, next(seq))
            job.in_flight_bytes += e - a
            tasks.append(task)
            if speed:
                if limit.slice_end <= now:
                    limit.slice_start, limit.slice_end, limit.dispatched = now, now + _SLICE_NS, 0
                dispatched = limit.dispatched = limit.dispatched + e - a
                if dispatched >= limit.slice_quota:
                    limit.slice_end = limit.slice_start + int(
                        dispatched / max(limit.slice_quota, 1) * _SLICE_NS)
            pooled.pos = e
            if pooled.count >= _MAX_WORKERS:
                # _pool_wait: nothing processed yet, no task waited for
                pooled.wait += 1
                pooled.task = task
                if begin:
                    # the one start made: run at once if nothing else is
                    # due first (the loop's next entry then: its BEGIN
                    # branch) and it is a read's (the task that waited for
                    # a slot may be a write-zeroes, made by the pass's
                    # generator: the loop leaves its start to the steps),
                    # else queued
                    i, task = begin
                    key = (now, URGENT, i)
                    if (not task.zero and (not heap or heap[0] > key)
                            and (not queue or queue[0] > key) and (rt is None or rt > key)):
                        start = task.start
                        done = src._service_done(now, min(task.end, size) - start)
                        heappush(heap, (done, NORMAL, next(eid), READ, (call, task, 0)))
                    else:
                        heappush(heap, (now, URGENT, i, BEGIN, (call, task)))
                return

    # the counters the steps add to, added up here and handed in when the
    # loop stops (only added to meanwhile: the steps run here and the
    # job's step methods called here read none of them)
    n_reads = n_read = n_writes = n_written = n_copied = 0
    plan_final = False          # (the plan cannot grow: extend() said so)

    def kernel() -> int:
        """The rows' steps run compiled (copyrows.step) from the state
        here, which takes back what they did; why it stopped."""
        nonlocal fired, taken, first, ran, eid, rt, n_reads, n_read, n_writes, n_written
        nonlocal n_copied, planned, ahead, seq, npaste, nalloc
        st = rows.st
        task = pooled.task
        s = rows.tslot
        if task is None:
            s = -1
            no_resume = 1
        else:
            if task is not ROW:
                # (the waiting task Python made becomes a row: its object
                # kept only if it is a write-zeroes or a call waits for it,
                # which the compiled resume leaves to Python)
                rows.wait_row(task.start, task.end, task.seq)
                s = rows.tslot
                if tasks[-1] is task:
                    del tasks[-1]
                else:
                    tasks.remove(task)
                if task.zero or task.done.callbacks:
                    rows.objs[s] = (task, copyrows.MADE)
            got = rows.objs.get(s)
            # (a write-zeroes, or a task a call waits for: the Python resume)
            no_resume = got is not None and (got[0].zero or len(got[0].done.callbacks) != 0)
        if PLAN and plan_n - taken < 16 and planned < end:
            # (the plan's next tasks of data throughout, compiled, some
            # ahead: a task whose status Python must ask is left to
            # extend(), on demand)
            if ahead is None:
                ahead = backup_kernel.planner(job, end, last, chunk, _PLAN_AHEAD)
            while ahead.args is not None and plan_n - taken < 16:
                got, _why = ahead(planned)
                if not got:
                    break
                put(ahead.out[:got])
                planned = int(plan[plan_n - 1, 1])
                if planned >= end:
                    break
        other = heap[0] if heap else _NOTHING
        # SimPy's queue ahead: the steps' markers at its head (of steps
        # run already when the next row comes after them, as the loop
        # drops them: the compiled steps drop them too), out of the queue
        # meanwhile, then the first other event
        head = queue[0] if queue else _NOTHING
        marks = None
        if queue and markers.get(head[:3]) is head[3]:
            marks = [heappop(queue)]
            qkeys = rows.qkeys
            while True:
                head = queue[0] if queue else _NOTHING
                mark = (len(marks) < QUEUE_AHEAD and head is not _NOTHING
                        and markers.get(head[:3]) is head[3])
                qkeys[len(marks)] = (head[0], head[1], head[2], mark)
                if not mark:
                    break
                marks.append(heappop(queue))
            head = marks[0]
        # (the fields up to HEAP_N: those after it up to RAN, the rows'
        # own, hold already what they would be given)
        values = (env._now, other[0], other[1], other[2], head[0], head[1], head[2],
                  next(eid), waiting, fired, pooled.wait, pooled.processed, pooled.count,
                  len(ended) + pooled.ended_rows, s, no_resume, plan_n, taken, plan_final,
                  0, 1 if limit.speed else 0, limit.slice_quota, limit.slice_start,
                  limit.slice_end, limit.dispatched, pooled.pos, size, tcs,
                  0, 0, 0, 0, 0, 0, 0, npaste, nalloc)
        try:
            _HAND_IN.pack_into(rows.st_bytes, 0, *values)
        except struct.error:
            st[:HEAP_N] = values    # (a value not an int: numpy converts it)
        st[RAN] = st[MADE_N] = st[QI] = 0
        st[Q_MARK] = marks is not None
        st[SEQ] = next(seq)
        step = copyrows.step
        fast = _MACHINE_CODE.get(step)
        if fast is not None:
            why = fast(st, rows.heap, rows.stage, rows.start, rows.end, rows.inpool, rows.seq,
                       rows.free, rows.freed, rows.dslots, plan, pastes, allocs,
                       rows.ring_in(src, copyrows.S_H), rows.ring_in(tgt, copyrows.T_H),
                       rows.qkeys)
        else:
            args = (st, rows.heap, rows.stage, rows.start, rows.end, rows.inpool, rows.seq,
                    rows.free, rows.freed, rows.dslots, plan, pastes, allocs,
                    rows.ring_in(src, copyrows.S_H), rows.ring_in(tgt, copyrows.T_H),
                    rows.qkeys)
            why = step(*args)
            _MACHINE_CODE[step] = machine_code(step, args)
        v = st.tolist()
        if marks is not None:
            # (the markers it dropped out of the steps' record, the others
            # back in the queue)
            k = v[QI]
            for mark in marks[:k]:
                del markers[mark[:3]]
            for mark in marks[k:]:
                heappush(queue, mark)
        env._eid = eid = count(v[EID])
        job._seq = seq = count(v[SEQ])
        env._now = v[NOW]
        rows.ring_out(src, copyrows.S_H, v)
        rows.ring_out(tgt, copyrows.T_H, v)
        if rows.objs:
            rows.forget()
        if v[RESUMED]:
            # (the compiled resume took the pool's ended tasks out, Python's
            # own ones too: only rows end there)
            for t in ended:
                pool.remove(t)
                t.pool = None
            ended.clear()
        pooled.count = v[POOL_LEN]
        pooled.ended_rows = v[N_ENDED] - len(ended)
        fired = bool(v[FIRED])
        pooled.wait = v[WAIT]
        pooled.processed = v[PROCESSED]
        pooled.pos = v[POS]
        rows.tslot = v[TASK]
        limit.slice_start, limit.slice_end, limit.dispatched = v[SL_START:DISPATCHED + 1]
        k = v[TAKEN] - taken
        if k:
            if first < 0:
                first = int(plan[taken, 0]) // cs
            taken += k
        if v[RAN]:
            ran += v[RAN]
            n_reads += v[N_READS]
            n_read += v[N_READ]
            n_writes += v[N_WRITES]
            n_written += v[N_WRITTEN]
            n_copied += v[N_COPIED]
            job.in_flight_bytes += v[IN_FLIGHT]
            npaste, nalloc = v[PASTE_N], v[ALLOC_N]
        rt = rows.top() if v[HEAP_N] else None
        return why

    rt = None                   # the first row's key (rows: the compiled steps)
    refused = None              # a write whose wake-up the loop left to the steps
    woken = False               # a row's write woke the pass, its wait's callbacks to run
    # (the steps' loop reads its heap again only if told something ran: so
    # when the heap changed, the proxy taken out or rows made entries)
    touched = rows is not None and entry is rows.proxy
    if rows is not None:
        if rows.pooled is not pooled:
            rows.materialize_all(heap)
            rows.pooled = pooled
        rows.unpark(heap)
        rt = rows.top()
    try:
        while True:
            # the next step: a row's (the compiled steps) or the heap's head
            row = rt is not None and (not heap or heap[0] > rt)
            if row:
                entry = rt
            elif heap:
                entry = heap[0]
            else:
                break
            if queue:
                head = queue[0]
                if entry[2] != head[2] and entry > head:
                    key = head[:3]
                    if markers.get(key) is head[3]:
                        heappop(queue)
                        del markers[key]
                        continue
                    break
            if row:
                why = kernel()
                if why == copyrows.PYTHON:
                    rows.materialize_top(heap)
                    rt = rows.top()
                    touched = True
                elif why == copyrows.NEED_PLAN:
                    if not extend(int(rows.st[copyrows.NEED_K])):
                        plan_final = True
                elif why == copyrows.WAKE:
                    woken = True
                    break
                elif why == copyrows.FULL:
                    if npaste + 2 > len(pastes) or nalloc + 2 > len(allocs):
                        # (the runs' arrays full: grown)
                        pastes, allocs = arrays.grow()
                    elif not rows.st[copyrows.RAN]:
                        # (no room left for the rows: the steps as entries)
                        rows.materialize_all(heap)
                        rt = None
                        touched = True
                continue
            callback, arg = entry[3], entry[4]
            now = entry[0]
            if callback is BEGIN:
                task = arg[1]
                if task.zero:
                    break
                if arg[0] is not call or task.pool is not pooled:
                    # another call's task (a guest's copy-before-write):
                    # its start issues its read, as the steps run it
                    heappop(heap)
                    env._now = now
                    _step(env, callback, arg)
                    ran += 1
                    continue
                heappop(heap)
                env._now = now
                start = task.start
                done = src._service_done(now, min(task.end, size) - start)
                if rows is not None and len(task.done.callbacks) == 1 and not task.waited:
                    # (its read as a row: the compiled steps go on with it)
                    rows.add(copyrows.READ, done, NORMAL, next(eid), task)
                    rt = rows.top()
                else:
                    heappush(heap, (done, NORMAL, next(eid), READ, (call, task, 0)))
            elif callback is READ:
                task = arg[1]
                if arg[2]:
                    break
                if arg[0] is not call or task.pool is not pooled:
                    # another call's task: its read completes and issues its
                    # write (which reads the target's allocation: ours first)
                    _allocate(tgt.alloc, allocs[:nalloc])
                    nalloc = 0
                    heappop(heap)
                    env._now = now
                    _step(env, callback, arg)
                    ran += 1
                    continue
                heappop(heap)
                env._now = now
                start = task.start
                length = min(task.end, size) - start
                n_reads += 1                        # complete_read (added up)
                n_read += length
                # submit_write on a quiet target: its clusters allocated
                # (when the loop stops: nothing reads the map meanwhile),
                # the queue and pipe
                c0, c1 = start // tcs, -(-(start + length) // tcs)
                if nalloc and allocs[nalloc - 1, 1] >= c0:
                    if c1 > allocs[nalloc - 1, 1]:
                        allocs[nalloc - 1, 1] = c1
                else:
                    if nalloc == len(allocs):
                        pastes, allocs = arrays.grow()
                    allocs[nalloc] = (c0, c1)
                    nalloc += 1
                done = tgt._service_done(now, length)
                if rows is not None and len(task.done.callbacks) == 1 and not task.waited:
                    # (its write as a row: the compiled steps go on with it)
                    rows.add(copyrows.WRITE, done, NORMAL, next(eid), task)
                    rt = rows.top()
                else:
                    # (what it read: taken when the loop stops)
                    later[task] = entry = (done, NORMAL, next(eid), WRITE,
                                           (call, task, 0, None, None))
                    heappush(heap, entry)
            elif callback is WRITE:
                task = arg[1]
                if (arg[0] is not call or task.pool is not pooled or arg[2]
                        or arg[3] is not None or task.waited
                        or len(task.done.callbacks) != 1):
                    break
                heappop(heap)
                at_once = ((not heap or heap[0][0] > now)
                           and (not queue or queue[0][0] > now) and (rt is None or rt[0] > now))
                wakes = waiting and not fired and task.checked != pooled.wait
                if at_once and wakes and not feasible(len(ended) + 1, now):
                    heappush(heap, entry)
                    refused = entry
                    break
                env._now = now
                start = task.start
                length = min(task.end, size) - start
                runs = arg[4]
                if runs is None:
                    del later[task]
                    n_writes += 1                   # complete_write (added up)
                    n_written += length
                    if npaste and pastes[npaste - 1, 1] == start:
                        pastes[npaste - 1, 1] = start + length
                    else:
                        if npaste == len(pastes):
                            pastes, allocs = arrays.grow()
                        pastes[npaste] = (start, start + length)
                        npaste += 1
                else:
                    job._write_done(task, None, runs)
                # _task_finish, _task_end
                n_copied += task.end - start    # (added up, as the counters)
                tasks.remove(task)
                ended.append(task)
                done = task.done
                done._ok = True
                done._value = None
                i = next(eid)
                if at_once:
                    # Steps.succeed(done, last=True): its callbacks at once,
                    # the pool's check only (no call waits for the task)
                    done.callbacks = None
                    pooled.processed += 1
                    if wakes:
                        next(eid)           # Steps.succeed(ev, last=True), at once
                        resume(now)
                else:
                    heappush(heap, (now, NORMAL, i, None, done))
            elif callback is None:
                if arg is ev:
                    if not fired or not feasible(len(ended), now):
                        break
                    heappop(heap)
                    env._now = now
                    resume(now)
                else:
                    # a task's done event: only the pool's check waits on it
                    callbacks = arg.callbacks
                    if (callbacks is None or len(callbacks) != 1
                            or callbacks[0].__class__ is not partial
                            or callbacks[0].func != pool_check):
                        break
                    task = callbacks[0].args[0]
                    if task.done is not arg:
                        break
                    heappop(heap)
                    at_once = ((not heap or heap[0][0] > now) and (not queue or queue[0][0] > now)
                               and (rt is None or rt[0] > now))
                    wakes = (task.pool is not None and waiting and not fired
                             and task.checked != pooled.wait)
                    if wakes and at_once and not feasible(len(ended), now):
                        heappush(heap, entry)
                        break
                    env._now = now
                    arg.callbacks = None
                    if task.pool is not None:
                        pooled.processed += 1
                        if wakes:
                            # Steps.succeed(ev, last=True)
                            if at_once:
                                next(eid)
                                resume(now)
                            else:
                                fired = True
                                heappush(heap, (now, NORMAL, next(eid), None, ev))
            else:
                break
            ran += 1
    finally:
        if n_reads or n_copied:
            src.reads += n_reads
            src.bytes_read += n_read
            tgt.writes += n_writes
            tgt.bytes_written += n_written
            call.copied += n_copied
            job.in_flight_bytes -= n_copied
            job.offset += n_copied
            job.bytes_copied += n_copied
        # (the plan holds for the next entry if nothing but the taken
        # tasks' clearing changed the bitmap: _kept_plan)
        holds = bcs.version == version
        if ran:
            if first >= 0:
                bcs.clear_bits(first, int(plan[taken - 1, 1]) // cs)
            _allocate(tgt.alloc, allocs[:nalloc])
            _leave(job, src, heap, pastes[:npaste], later, ev, fired, call)
        if rows is not None:
            rows.kept = _kept_plan(job, pooled, plan, plan_n, taken, known, holds)
            rows.materialize_evs(heap)
            rows.park(heap)
            if touched and not ran and heap and heap[0] is rows.proxy:
                # (nothing ran from the proxy: its rows' steps as entries)
                rows.materialize_all(heap)
    if woken:
        # A row's write whose task's end wakes the pass where it would not
        # just make tasks and wait again (a sleep: once a slice), done by
        # the compiled steps up to the wait's event (copyrows.step's WAKE):
        # its callbacks, the pass's generator resumed, run last, as the
        # write's plain step runs them (``_task_end``, ``_pool_check``:
        # ``Steps.succeed(ev, last=True)`` with nothing due at this instant),
        # after what the loop deferred (the pastes, the bitmap, the
        # allocation, the counters), as for a refused write (below).
        # (QEMU, block/block-copy.c: the task's end in block_copy_task_entry
        # frees the slot block_copy_task_run waits for, aio_task_pool_wait_slot;
        # block_copy_dirty_clusters then sleeps on the rate limit.)
        _wake(env, ev)
        return True
    if (refused is not None and heap and heap[0] is refused
            and (not queue or refused[2] == queue[0][2] or refused < queue[0])):
        # The loop stopped at a write of the pass's whose wake-up it leaves
        # to the steps (not feasible: the pass would sleep), at the steps'
        # head, before SimPy's: the steps' loop would hand it to this loop
        # again at once, nothing run meanwhile, which would refuse it again
        # (the same state: what the loop left when it stopped changes none
        # of its conditions), and then run it as a plain step
        # (Steps._fire).  It is run so here, without that second entry.
        heappop(heap)
        env._now = refused[0]
        _step(env, WRITE, refused[4])
        return True
    return bool(ran) or touched


_SLICE_NS = 100_000_000     # BLOCK_JOB_SLICE_TIME (model.ratelimit.SLICE_NS)
#: taken rows of a kept plan dropped from its head at once (_kept_plan)
_PLAN_TRIM = 256


def _kept_plan(job, pooled, plan: np.ndarray, plan_n: int, taken: int, known, holds: bool):
    """The plan of the pass's next tasks an entry of the loop leaves for the
    next one (``Rows.kept``).

    A plan is the tasks the pass's search finds from ``pooled.pos`` on with
    the copy bitmap as it stands (``extend``, ``backup_kernel.plan``): a
    pure function of the bitmap's dirty granules past ``pooled.pos``, the
    job's cache of the source's pages (``BackupJob._data_known``: a page
    of a planned task, known to hold data, stays so until the cache is
    made again) and the pass's bounds.  Found again at each entry it cost
    some 10 µs (the planner's call, its rows copied into the compiled
    steps' array, ``plan``, which holds the plan: rows ``[taken, plan_n)``
    not made yet).  The next entry of the same pass at the
    same ``pos`` takes it as it is if the bitmap's ``version`` (every
    change of its granules bumps it: a guest's copy-before-write, the
    pass's fill, a failed task's clusters marked again) is the one after
    this entry's own clearing of the tasks it took (granules before
    ``pos``; ``holds``: nothing else changed the bitmap during this entry)
    and the cache the same; else it keeps the rows found again from ``pos``
    with the bitmap and cache as they are then (``backup_kernel.agree``: up
    to the first row found otherwise, as each row's search starts at the
    end of the one before).  The taken rows are dropped from its head now
    and then."""
    version = job.bcs.version if holds else -1
    if job._data_known(job.source.content) is not known:
        known = None
    if taken >= _PLAN_TRIM:
        if plan_n > taken:
            plan[:plan_n - taken] = plan[taken:plan_n].copy()
        plan_n -= taken
        taken = 0
    return (pooled, pooled.pos, version, known, plan_n, taken)


def _allocate(alloc, allocs: np.ndarray) -> None:
    """``alloc.set_range(c0, c1)`` for each row ``c0, c1`` of ``allocs``:
    one compiled call for them all (``set_ranges``; nothing is allocated on
    a full map)."""
    n = len(allocs)
    if not n or alloc.count == alloc.nclusters:
        return
    if n == 1:
        c0, c1 = allocs[0].tolist()
        alloc.set_range(c0, c1)
    else:
        alloc.set_ranges(allocs)


def _step(env, callback, arg) -> None:
    """A plain step run as ``Steps._fire`` runs it: an exception fails the
    process (an event scheduled at once, raising when processed)."""
    try:
        callback(arg)
    except BaseException as error:
        failed = Event(env)
        failed._ok = False
        failed._value = error
        env.schedule(failed)


def _wake(env, ev) -> None:
    """``Steps.succeed(ev, last=True)`` at once (its id drawn already), in
    a step run as ``Steps._fire`` runs one (:func:`_step`)."""
    ev._ok = True
    ev._value = None
    _step(env, _callbacks, ev)


def _callbacks(event) -> None:
    """An event's callbacks, as ``Environment.step`` runs them."""
    callbacks, event.callbacks = event.callbacks, None
    for cb in callbacks:
        cb(event)


def fill(job, pooled, woke: bool = False) -> int:
    """The background pass's loop (``BackupJob._dirty_clusters_steps``)
    run now for the tasks it makes and starts without a sleep, a shrink or
    an end, until the pool is full (the last task made then waits for a
    slot: ``pooled.task``) or the next task is not such a one (left to the
    pass's own code): ``_task_create``, ``_block_status`` (data throughout:
    the task as made), the limiter's two delays, the task into the pool and
    its start as a step.  The bitmap's bits are cleared once, at the end
    (only this search, from past them, reads them meanwhile).  How many
    tasks it made.

    ``woke``: the pass was resumed from its rate-limit sleep and has not
    yielded since (``_dirty_clusters_steps``).  Then a full pool some of
    whose tasks ended while it slept (``_Pool.processed``) does not stop
    the fill at its first task: the pass's wait for a slot would be over at
    once and be the very next step run when nothing is due at this instant
    (``BackupJob._next_now``), so the wait's id is drawn, the ended tasks
    leave the pool (``BackupJob._unpool``), and the fill goes on, the task
    that waited first into the pool, as the pass would have gone on."""
    if not ENABLED:
        return 0
    env = job.env
    now = env._now
    cs, bcs = job.cluster, job.bcs
    end = pooled.end
    last = -(-end // cs)
    chunk = job._chunk()
    limit = job.limit
    speed = limit.speed
    if speed and (limit.slice_quota <= 0 if limit.slice_end <= now
                  else limit.dispatched >= limit.slice_quota):
        # RateLimit.delay(now, 0) asks for a sleep before the first task:
        # none made here, whatever the search would find (it changes
        # nothing but the caches the pass's own search fills the same)
        return 0
    seq = job._seq
    pos = pooled.pos
    # the tasks made, in order, rows of (start, end, seq) in ``made``:
    # batches of the planner's rows (or of one task found here), each
    # admitted by the limiter up to the pool's room and the one that then
    # waits for a slot (copyrows.admit)
    rows = job._rows
    made, lim = rows.made, rows.lim
    n = 0
    room = _MAX_WORKERS - pooled.count
    q = next(seq)
    lim[:] = (limit.slice_start, limit.slice_end, limit.dispatched, 0)
    quota = limit.slice_quota if speed else 0
    # (the next tasks of data throughout found ahead, compiled)
    planner = backup_kernel.planner(job, end, last, chunk, _MAX_WORKERS + 1) if PLAN else None
    if planner is not None and planner.args is None:
        planner = None
    while pos < end:
        got, why = planner(pos) if planner is not None else (0, 3)
        if got:
            batch = planner.out[:got]
        elif why == 1:
            break
        else:
            if why == 2:
                # (a task whose status Python must ask)
                a, e = planner.out[0].tolist()
            else:
                b = bcs.find(pos // cs, last)
                if b < 0:
                    break
                k = bcs.dirty_run(b, min(chunk, last - b))
                a, e = b * cs, (b + k) * cs
            zero, num = job._status(a, e)
            if planner is not None:
                planner.known()
            if zero or a + num < e:
                break
            batch = np.array(((a, e),), dtype=np.int64)
        k = copyrows.admit(batch, made, n, lim, now, quota, speed, room + 1 - n, q)
        if k:
            n += k
            pos = int(batch[k - 1, 1])
        if n > room == 0 and woke and pooled.processed and job._next_now():
            # (the first task made waits for a slot, a wait over at once:
            # BackupJob._pool_wait's id, _unpool, then on; see above)
            pooled.wait += 1
            next(env._eid)
            job._unpool(pooled)
            room = _MAX_WORKERS - pooled.count
            continue
        if k < len(batch) or n > room:
            break
    # (their places in the job's list: seq q on)
    job._seq = count(q + n)
    if not n:
        return 0
    slice_start, slice_end, dispatched, nbytes = lim.tolist()
    if speed:
        limit.slice_start, limit.slice_end, limit.dispatched = slice_start, slice_end, dispatched
    bcs.clear_bits(int(made[0, 0]) // cs, pos // cs)
    job.in_flight_bytes += nbytes
    pooled.pos = pos
    # the pool's starts' ids (steps.at(0, begin, (call, task), urgent=True):
    # queued by _start)
    into = min(n, room)
    pooled.count += into
    waiting = None
    if n > room:
        waiting = tuple(made[room].tolist())
    first_id = 0
    if into:
        first_id = next(env._eid)
        env._eid = count(first_id + into)
    _start(job, pooled, first_id, made[:into], waiting, now)
    return n


def _start(job, pooled, first_id: int, spans: np.ndarray, waiting, now: int) -> None:
    """The tasks :func:`fill` made: the pool's, ``spans`` (rows of start,
    end and seq, in order; their starts' ids ``first_id`` on), and the one
    that waits for a slot, ``(start, end, seq)`` or None.  Their starts
    queued as ``steps.at`` queues them, or, when they are sure to be the
    next steps run, run at once, in order, as the loop's BEGIN branch runs
    them.  They are when the pool is full (the pass's generator then waits
    for a slot, drawing no id: nothing processed yet), nothing in the
    steps' heap nor in SimPy's queue is due before the first, and the loop
    would take them (:func:`run`'s conditions, up to SimPy's next event);
    a start's read then only takes the source's queue and pipe.  Run at
    once by the compiled steps, the tasks are rows from the start
    (blocksim.engine.copyrows: no object); else each is a ``_Task`` in the
    job's list and the pool's, as the pass's generator holds them."""
    steps = job._steps
    heap = steps.heap
    env = job.env
    queue = env._queue
    call = pooled.call
    src, tgt = job.source, job.target
    at_once = rows = lead_task = None
    n = len(spans)
    if waiting is not None and n:
        key = (now, URGENT, first_id)
        lead = heap[0] if heap else None
        if (lead is not None and lead[0] == now and lead[1] == URGENT
                and lead[3] is job._begin_step and lead[4][0] is call
                and not lead[4][1].zero):
            # (the start of the task the pass took into its pool just
            # before, due first: run with them, first)
            heappop(heap)
            if heap and heap[0] < key:
                heappush(heap, lead)
            else:
                lead_task = lead[4][1]
                key = lead[:3]
        at_once = (not pooled.processed
                   and (not heap or heap[0] > key) and (not queue or queue[0] > key)
                   and src.backing is None and src.content._journal is not None
                   and not src.faults and not tgt.faults
                   and _quiet(src, tgt, now, queue[0][0] if queue else float("inf")))
        if at_once and KERNEL:
            rows = job._rows
            if not ((rows.pooled is pooled or not len(rows))
                    and (lead_task is None or len(lead_task.done.callbacks) == 1)):
                rows = None
    if rows is not None:
        # the reads as rows (blocksim.engine.copyrows): the compiled steps
        # run them; the waiting task a row too
        if rows.pooled is not pooled:
            rows.clear()
            rows.pooled = pooled
        rows.unpark(heap)
        rows.start_reads(src, spans, lead_task, now, job.size)
        rows.wait_row(*waiting)
        rows.park(heap)
    else:
        # the tasks' objects, in the job's list and the pool's, in order
        Task = job.Task
        tasks = job._tasks
        pool = pooled.tasks
        pool_check = job._pool_check
        made = [] if lead_task is None else [(key[2], lead_task)]
        i = first_id
        for a, e, q in spans.tolist():
            task = Task(env, a, e, q)
            tasks.append(task)
            pool.append(task)
            task.pool = pooled
            task.done.callbacks.append(partial(pool_check, task))
            made.append((i, task))
            i += 1
        if waiting is not None:
            task = pooled.task = Task(env, *waiting)
            tasks.append(task)
        if at_once:
            eid = env._eid
            size = job.size
            service_done = src._service_done
            read = job._read_step
            for _i, task in made:
                start = task.start
                done = service_done(now, min(task.end, size) - start)
                heappush(heap, (done, NORMAL, next(eid), read, (call, task, 0)))
        else:
            begin = job._begin_step
            for i, task in made:
                heappush(heap, (now, URGENT, i, begin, (call, task)))
    if n and not steps._running:
        steps._marker()


def _leave(job, src, heap, pastes, later, ev, fired, call) -> None:
    """What the loop deferred: the target's content of the writes done
    here, the reads of the writes still to come, the wait's event."""
    if len(pastes):
        job._paste_runs(pastes)
    size = job.size
    for task, entry in later.items():
        i = heap.index(entry)
        arg = entry[4]
        runs = job._read_for_copy(src, task.start, min(task.end, size))
        heap[i] = entry[:4] + ((call, task, 0, arg[3], runs),)
    if fired:
        ev._ok = True
        ev._value = None
