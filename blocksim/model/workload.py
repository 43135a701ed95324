"""Guest workloads: fio-like request streams issued by the guest.

A :class:`GuestWorkload` runs ``iodepth`` worker processes against one drive.
Like fio it has a read/write mix (``rw``, ``rwmixread``), random or sequential
offsets inside a region (``offset``, ``size``) in blocks of ``bs``, and either
an open-loop rate (``rate-iops``: request *i* is due at ``start + i / rate``
and is issued as soon as it is due and a worker is free) or a closed loop
(each worker issues, waits for completion, thinks ``think-time``, repeats).
``number-ios`` caps the total, ``end`` stops issuing, ``fsync`` flushes after
every N writes (a flush failure goes through ``werror``, as a write).

Offsets and read/write choices come from the workload's own seeded stream,
drawn with numpy in batches; each write carries a fresh generation so the
ledger can later prove it survived.  Workers wait while the VM is stopped
(its vCPUs are paused), which is how ``stop`` quiets the guest.

A one-worker guest paced by ``rate-iops`` may also be run by a mirror's
compiled copy loop for a while (:mod:`blocksim.engine.burst_kernel`): it takes
the worker's wait for its next due time out of SimPy's queue, runs its
requests among the copies, and hands the worker back where it left it,
waiting for a due time or for a request to complete (:data:`AT_DUE`,
:meth:`GuestWorkload._worker`'s ``resume``).

**Rate phases.** A paced workload may vary its rate over time: ``burst``
(on at ``rate-iops``, off with no request, repeated) or ``trace`` (a rate
from each row's time until the next row's).  :class:`RateSchedule` turns
those phases into the due time of every request: within a phase of rate
``r`` request *i* is due at ``S + int(i * 1e9 / r)``, the same formula as a
constant rate, with ``S`` chosen so that the phase's first request is due
when the phase starts, or, right after another phase with requests, when
that phase's pacing would have issued it (so a trace whose rate does not
change is exactly the constant-rate workload).  A phase with rate 0 has no
request: the next one is due when the next phase with requests starts.

The exact shortcuts compute due times with the constant-rate formula from
the workload's fields ``start_at``, ``interval`` and ``end``
(:func:`blocksim.engine.advance`, the compiled copy loop).  For a phased
workload those fields are a *view* of the phase of the next request, set
at the top of the worker's loop: ``end`` is where that phase ends, so a
quiet stretch stops at the phase's end (its next request may belong to the
next phase, due by another formula) and the one-by-one path, which asks
:meth:`RateSchedule.due`, carries on.  The compiled copy loop computes the
due time of the request after the last it runs before handing the guest
back: it may run a phased guest only while that request is due by the
view's formula too, that is while the phase is followed by another with
requests (or never ends) (:attr:`GuestWorkload.runs_alone`).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from ..engine import AT_DUE, NEVER, advance

_BATCH = 4096


class RateSchedule:
    """The due time of each request of a workload whose rate changes.

    ``phases`` is an iterator of ``(start_ns, iops)`` in time order, each
    phase lasting until the next one starts (the last one forever).  The
    phases with requests are laid out lazily, as requests reach them, as
    ``(first, S, interval, end, next_has_requests)``: requests
    ``first <= i < next first`` are due at ``S + int(i * interval)``, and
    the phase ends at ``end`` (ns, :data:`NEVER` for the last one).
    """

    def __init__(self, phases):
        self._phases = iter(phases)
        self._next = next(self._phases, None)
        self._count = 0             # requests in the phases laid out so far
        self._carry = None          # the first due of a phase right after one with requests
        self.laid: list[tuple[int, int, float, int, bool]] = []
        self.firsts: list[int] = []
        self.exhausted = False

    def _lay_one(self) -> bool:
        """Lay out the next phase with requests; False when there is none."""
        while self._next is not None:
            start, iops = self._next
            following = next(self._phases, None)
            self._next = following
            if iops <= 0:
                self._carry = None
                continue
            interval = 1e9 / iops
            first = self._count
            begin = self._carry if self._carry is not None else start
            s_at = begin - int(first * interval)
            if following is None:
                end, after, more = NEVER, NEVER, True
            else:
                end = following[0]
                # the first request due at or after the phase's end
                after = max(first, int((end - s_at) / interval))
                while after > first and s_at + int((after - 1) * interval) >= end:
                    after -= 1
                while s_at + int(after * interval) < end:
                    after += 1
                more = following[1] > 0
                self._carry = s_at + int(after * interval) if more else None
            self.laid.append((first, s_at, interval, end, more))
            self.firsts.append(first)
            self._count = after
            return True
        self.exhausted = True
        return False

    def phase_of(self, i: int):
        """The laid-out phase request ``i`` belongs to, or None if no phase
        has requests left."""
        while not self.laid or (self._count <= i and not self.exhausted):
            if not self._lay_one():
                break
        if self._count <= i and self.exhausted:
            return None
        return self.laid[bisect_right(self.firsts, i) - 1]

    def due(self, i: int):
        """When request ``i`` is due (ns), or None if it never is."""
        phase = self.phase_of(i)
        if phase is None:
            return None
        return phase[1] + int(i * phase[2])


def burst_phases(start: int, rate: float, burst, rng: np.random.Generator | None):
    """``(start, iops)`` of on/off phases from ``start``, forever; random
    lengths (exponential, of the given means) when ``rng`` is given."""
    t = start
    while True:
        yield t, rate
        t += max(1, int(rng.exponential(burst.on))) if rng is not None else burst.on
        yield t, 0.0
        t += max(1, int(rng.exponential(burst.off))) if rng is not None else burst.off


def trace_phases(start: int, rows):
    """``(start, iops)`` of a trace's rows (times from ``start``); no
    request before the first row."""
    if rows[0][0] > 0:
        yield start, 0.0
    for t, iops in rows:
        yield start + t, iops


class GuestWorkload:
    def __init__(self, sim, name: str, spec, rng: np.random.Generator,
                 start: int | None = None, phase_rng: np.random.Generator | None = None):
        self.sim = sim
        self.env = sim.env
        self.name = name
        self.drive = sim.drives[spec.drive]
        self.bs: int = spec.bs
        self.iodepth: int = spec.iodepth
        region_start = spec.offset
        region_size = spec.size if spec.size is not None else self.drive.node.size - region_start
        self.region_start = region_start
        self.nblocks = max(1, region_size // self.bs)
        rw = spec.rw
        self.random = rw.startswith("rand")
        kind = rw[4:] if self.random else rw
        self.read_fraction = {"read": 1.0, "write": 0.0}.get(kind, spec.rwmixread / 100.0)
        #: what its requests can be, for the fault rules that could match them
        self.operations = frozenset(op for op, share in (
            ("read", self.read_fraction), ("write", 1.0 - self.read_fraction)) if share > 0)
        self.region = (region_start, region_start + self.nblocks * self.bs)
        self.rate = spec.rate_iops
        self.interval = 1e9 / self.rate if self.rate else 0.0     # ns between requests
        self.think = spec.think_time
        self.start_at = spec.start if start is None else start
        #: when the workload starts, and when it stops issuing (``start_at``
        #: and ``end`` are the pacing's view for the shortcuts: see the module doc)
        self.begin = self.start_at
        self.end = self.stop_at = spec.end
        self.schedule: RateSchedule | None = None
        self._view_until = NEVER        # the view holds for requests before this one
        self._view_more = True
        burst, trace = getattr(spec, "burst", None), getattr(spec, "trace", None)
        if burst is not None:
            self.schedule = RateSchedule(burst_phases(
                self.begin, spec.rate_iops, burst, phase_rng if burst.random else None))
        elif trace is not None:
            self.schedule = RateSchedule(trace_phases(self.begin, trace))
        self.limit = spec.number_ios
        self.fsync = spec.fsync
        self._writes_since_flush = 0
        self.rng = rng
        self.issued = 0
        self.completed = 0
        self.errors = 0
        self.in_stretches = 0       # requests done in quiet stretches (a figure)
        self.in_kernel = 0          # ... and run by a mirror's compiled loop (a figure)
        self._seq = 0
        # the current batch: offsets and read flags as arrays (a quiet
        # stretch, compiled code) and as lists (one request at a time: made
        # when the worker first issues one), its length and the next one's index
        self._ops: list | None = None
        self._offs: list | None = None
        self._offs_array = self._reads_array = None
        self._n = 0
        self._k = 0
        #: the SimPy process of a one-worker guest, and the timeout its worker
        #: waits on for its next due time (what compiled code may take over)
        self.process = None
        self.due_event = None
        if self.schedule is not None:
            self._set_view()

    def start(self) -> None:
        for _ in range(self.iodepth):
            self.process = self.env.process(self._worker())

    @property
    def runs_alone(self) -> bool:
        """Whether compiled code may run this guest's requests for a while
        (blocksim.engine.burst_kernel): one worker, paced, no think time, no fsync,
        blocks that never straddle two content pages; with rate phases,
        only while the view's phase is followed by one with requests (see
        the module doc)."""
        return bool(self.iodepth == 1 and self.rate and not self.think and not self.fsync
                    and self._view_more)

    def _set_view(self) -> None:
        """The pacing fields the shortcuts read, for the phase of the next
        request (``issued``): its formula and where it ends."""
        phase = self.schedule.phase_of(self.issued)
        if phase is None:               # no request is ever due again
            self.end = self.begin
            self._view_until = NEVER
            self._view_more = False
            return
        first, s_at, interval, end, _more = phase
        self.start_at, self.interval = s_at, interval
        self.rate = 1e9 / interval
        self.end = end if self.stop_at is None else min(end, self.stop_at)
        at = bisect_right(self.schedule.firsts, first)
        until = self._view_until = (self.schedule.firsts[at] if at < len(self.schedule.firsts)
                                    else self.schedule._count)
        # the compiled copy loop may compute the next phase's first due by
        # this phase's formula: only where both agree
        self._view_more = until >= NEVER or self.schedule.due(until) == s_at + int(until * interval)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch of offsets and read flags, from the workload's
        own stream (nothing else draws from it: drawing a batch early draws
        the same requests)."""
        rng = self.rng
        if self.random:
            blocks = rng.integers(0, self.nblocks, _BATCH)
        else:
            blocks = (np.arange(_BATCH) + self._seq) % self.nblocks
            self._seq = int((self._seq + _BATCH) % self.nblocks)
        offs = (blocks * self.bs + self.region_start).astype(np.int64)
        if self.read_fraction in (0.0, 1.0):
            reads = np.full(_BATCH, self.read_fraction == 1.0)
        else:
            reads = rng.random(_BATCH) < self.read_fraction
        return offs, reads

    def _refill(self) -> None:
        self._set_batch(*self._draw())

    def _set_batch(self, offs: np.ndarray, reads: np.ndarray) -> None:
        self._offs_array, self._reads_array = offs, reads
        self._offs = self._ops = None
        self._n = len(offs)
        self._k = 0

    def ahead(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """:meth:`drawn`, with at least ``n`` requests left in the batch
        (the next batches drawn now and joined to it)."""
        left = self._n - self._k
        if left < n:
            offs, reads = [self._offs_array[self._k:]], [self._reads_array[self._k:]]
            while left < n:
                more = self._draw()
                offs.append(more[0])
                reads.append(more[1])
                left += len(more[0])
            self._set_batch(np.concatenate(offs), np.concatenate(reads))
        return self._offs_array, self._reads_array, self._k

    # -- quiet stretches (blocksim.engine.stretch) ---------------------------------------
    def drawn(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The current batch of drawn requests, offsets (int64) and read
        flags (bool) as arrays, and the index of the next one to issue
        (drawing a new batch if needed)."""
        if self._k >= self._n:
            self._refill()
        return self._offs_array, self._reads_array, self._k

    def account_stretch(self, n: int) -> None:
        """``n`` requests of the batch were issued and completed in bulk."""
        self.issued += n
        self.completed += n
        self.in_stretches += n
        self._k += n

    def _worker(self, resume=None):
        """One worker's loop (a SimPy process).

        ``resume``: the worker is handed back by compiled code that ran its
        requests (blocksim.engine.burst_kernel), and the event that resumes it is
        either its next request's due time (:data:`AT_DUE`) or the
        completion of a request in flight, given as the arguments of
        :meth:`Drive.finish <blocksim.model.drive.Drive.finish>`.  All else it
        needs is in the workload's own fields."""
        env = self.env
        drive = self.drive
        rate, end, limit, bs = self.rate, self.stop_at, self.limit, self.bs
        interval = self.interval
        schedule = self.schedule
        # A one-worker guest does its quiet stretches in bulk
        # (blocksim.engine.stretch); the worker is at the top of its loop, resumed
        # by its own event, as that requires.
        quiet = self.iodepth == 1 and not self.fsync
        if resume is None:
            if self.begin > env.now:
                yield env.timeout(self.begin - env.now)
        elif resume is not AT_DUE:
            drive.finish(*resume)
            self.completed += 1
        at_due = resume is AT_DUE
        # (the last request was resumed by an event others wait for too, with
        # no wait of its own since: Drive.woken_shared; then nothing is
        # skipped nor done in bulk at this instant)
        shared = False
        while True:
            if not at_due:
                if schedule is not None and self.issued >= self._view_until:
                    self._set_view()
                if quiet and not shared:
                    advance(self)
                if limit is not None and self.issued >= limit:
                    return
                i = self.issued
                self.issued += 1
                if rate:
                    if schedule is None:
                        due = self.start_at + int(i * interval)
                    else:
                        due = schedule.due(i)
                        if due is None:         # no phase with requests is left
                            return
                    # A worker is resumed only by its own events (its start, its
                    # timeouts; see Drive.request), so it may skip a wait that
                    # nothing else would interrupt (blocksim.engine.clock);
                    # not after a write its filter broke (shared, above).
                    if due > env.now and (shared or not env.skip_to(due)):
                        event = self.due_event = env.timeout(due - env.now)
                        yield event
                        shared = False
            at_due = False
            if end is not None and env.now >= end:
                return
            if self._k >= self._n:
                self._refill()
            if self._offs is None:
                self._offs, self._ops = self._offs_array.tolist(), self._reads_array.tolist()
            k = self._k
            self._k = k + 1
            if self._ops[k]:
                err = yield from drive.request("read", self._offs[k], bs)
            else:
                # (the counter is looked up each time: compiled code that ran
                # the guest's writes replaces it)
                err = yield from drive.request("write", self._offs[k], bs,
                                               next(self.sim.generations))
                if self.fsync:
                    self._writes_since_flush += 1
                    if self._writes_since_flush >= self.fsync:
                        self._writes_since_flush = 0
                        if (yield from drive.request("flush", 0, 0)):
                            self.errors += 1
            self.completed += 1
            if err:
                self.errors += 1
            shared = drive.woken_shared
            if self.think and (shared or not env.skip_to(env.now + self.think)):
                yield env.timeout(self.think)
                shared = False
