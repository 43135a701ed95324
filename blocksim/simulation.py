"""Putting a scenario together and running it.

:class:`Simulation` builds the component tree of one run from a validated
:class:`~blocksim.scenario.Scenario`, in file order: images (block device
nodes, their backing links, initial data and fault rules), the VM and its
drives, block jobs, guest workloads, management actions and the sampler.
:meth:`Simulation.run` advances SimPy's clock to the scenario's duration and
returns a :class:`~blocksim.record.result.Result`.

Randomness: every component that draws random numbers gets its own numpy
generator, seeded from the run's seed and the component's kind and name (not
its position), so a run is a pure function of scenario and seed, and adding
a workload does not change the faults another one sees.

Shortcuts: ``shortcuts=True`` (the default) lets the clock skip waits that
nothing could interrupt (:mod:`blocksim.engine.clock`), one-worker guests do quiet
stretches in bulk (:mod:`blocksim.engine.stretch`), mirrors keep their copy
operations on an agenda (:mod:`blocksim.engine.agenda`) and run them in bursts
(:mod:`blocksim.engine.burst`), and content changes are logged per page and applied
when something reads them (:mod:`blocksim.engine.journal`).  Each gives exactly the
run SimPy would give without it; ``shortcuts=False`` is the reference the
tests compare against.
"""

from __future__ import annotations

import ctypes
import itertools
import signal
import threading
import zlib

import numpy as np

from .engine import Clock, ContentJournal
from .jobs import JOB_TYPES
from .management.actions import ActionScheduler
from .management.controller import make_controllers
from .management import thin_provisioning as _thin_provisioning  # noqa: F401  (registers it)
from .management.monitor import Monitor
from .model.device import BlockDevice
from .model.drive import Drive, RequestCount
from .model.extents import PAGE_SHIFT
from .model.faults import make_rule
from .model.named_bitmap import add_bitmap
from .model.policy import ErrorPolicyEngine
from .model.profile import get_profile
from .model.thin import Latency, VolumeGroup
from .model.vm import VM
from .model.workload import GuestWorkload
from .record import invariants
from .record import summary as summary_mod
from .record.eventlog import EventCapReached, EventLog
from .record.probes import Sampler
from .record.result import Result
from .scenario.limits import DEFAULT as DEFAULT_LIMITS

class Simulation:
    def __init__(self, scenario, seed: int | None = None, profile: str | None = None,
                 shortcuts: bool = True, limits=None):
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else int(seed)
        self.profile = get_profile(profile or scenario.profile)
        self.truncated = False
        self._init_bounds(limits or DEFAULT_LIMITS)
        env = self.env = Clock(shortcuts=shortcuts)
        self.log = EventLog(env, scenario.max_events)
        self.vm = VM(env, self.log)
        self.policy = ErrorPolicyEngine(self.log, self.profile, self.vm)
        self.generations = itertools.count(1)
        self.monitor = Monitor(self)
        self._bursts = 0

        # Content changes are logged and applied when read (blocksim.engine.journal)
        self.journal = ContentJournal(PAGE_SHIFT) if shortcuts else None
        self.devices: dict[str, BlockDevice] = {}
        for name, spec in scenario.images.items():
            self.devices[name] = BlockDevice(env, name, spec, self.rng("image", name),
                                             self.journal)
        for name, spec in scenario.images.items():
            if spec.backing:
                self.devices[name].backing = self.devices[spec.backing]
        for name, spec in scenario.images.items():
            self._initial_data(self.devices[name], spec.data)
        for name, spec in scenario.images.items():
            for bitmap in spec.bitmaps:     # persistent bitmaps the image has
                named = add_bitmap(self.devices[name], bitmap.name, bitmap.granularity,
                                   persistent=True, disabled=not bitmap.recording)
                for offset, length in bitmap.dirty:
                    named.bits.mark(offset, offset + length)
        for index, spec in enumerate(scenario.faults):
            dev = self.devices[spec.image]
            dev.faults.append(make_rule(spec, dev.size, self.rng("fault", str(index))))

        self.drives: dict[str, Drive] = {}
        for name, spec in scenario.drives.items():
            self.drives[name] = Drive(env, name, self.devices[spec.image], spec,
                                      self.vm, self.policy)
        self.vm.drives = self.drives
        self.vm.nodes = list(self.devices.values())
        for dev in self.devices.values():
            dev.on_drop = self._drop_recorder(dev)

        self.jobs = {job_id: JOB_TYPES[spec.type](self, job_id, spec)
                     for job_id, spec in scenario.jobs.items()}
        self._replaced: dict = {}       # job id -> the job a restart replaces (job_to_start)
        #: thin-extend commands under way (their ``latency``): image -> the
        #: capacity they will set (blocksim.management.monitor)
        self.pending_extends: dict[str, int] = {}
        self.workloads = {name: GuestWorkload(self, name, spec, self.rng("workload", name),
                                              phase_rng=self.rng("workload-phases", name))
                          for name, spec in scenario.workloads.items()}
        self.actions = ActionScheduler(self)
        self._install_thin()
        self.sampler = _BoundedSampler(self)
        self._guard_requests()

    def rng(self, kind: str, name: str) -> np.random.Generator:
        key = (zlib.crc32(kind.encode()), zlib.crc32(name.encode()))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def _initial_data(self, dev: BlockDevice, extents) -> None:
        cs = dev.cluster_size
        for offset, length in extents:
            dev.content.set(offset, offset + length, next(self.generations))
            dev.alloc.set_range(offset // cs, -(-(offset + length) // cs))

    def _drop_recorder(self, dev: BlockDevice):
        """What a device calls when a fault drops a write it acknowledged:
        the loss is recorded by the drive(s) whose disk the device is part
        of (a guest write's generation is its own, so only its writer cares)."""
        def record(gen) -> None:
            for drive in self.drives.values():
                if dev in drive.node.chain():
                    drive.record_drop(gen)
        return record

    # -- thin volumes, write thresholds, controllers (issue 18) -----------------------
    def _install_thin(self) -> None:
        self.pools = {name: VolumeGroup(self.env, name, spec.size,
                                        Latency(spec.extend_latency, self.rng("pool", name)),
                                        spec.refresh, spec.concurrency, self.log.emit)
                      for name, spec in self.scenario.pools.items()}
        self._free_pool = None
        for dev in self.devices.values():
            dev.on_threshold = self._emit_threshold
            if dev.lv_size is not None:
                self.volume_group(dev).volumes.append(dev)
        self.controllers = make_controllers(self)

    def _emit_threshold(self, node: str, amount: int, threshold: int) -> None:
        self.log.emit("BLOCK_WRITE_THRESHOLD", {"node-name": node, "amount-exceeded": amount,
                                                "write-threshold": threshold})

    def volume_group(self, dev: BlockDevice) -> VolumeGroup:
        """The pool extending ``dev``'s volume: its own, or one without a
        limit whose extends are immediate."""
        pool = self.scenario.images[dev.name].pool
        if pool is not None:
            return self.pools[pool]
        if self._free_pool is None:
            from .scenario import Latency as LatencySpec
            self._free_pool = VolumeGroup(self.env, "(none)", None,
                                          Latency(LatencySpec(value=0), self.rng("pool", "")),
                                          0, 1 << 30, self.log.emit)
        return self._free_pool

    # -- commands that need the component tree ------------------------------------
    def start_job(self, job_id: str) -> None:
        job = self.job_to_start(job_id)
        try:
            job.start()
        finally:
            self.settle_start(job_id)

    def job_to_start(self, job_id: str):
        """The job a start command of ``job_id`` starts: the declared one,
        or, once that one ran and is gone (``null``), a new job of the same
        table under its ID, as QEMU frees a job's ID then (``job_unref``;
        the first run stays in the event log, the summary shows the last).
        :meth:`settle_start` gives the ID back if the new one's start is
        refused."""
        job = self.jobs[job_id]
        if job.status == "null":
            self._replaced[job_id] = job
            spec = self.scenario.jobs[job_id]
            job = self.jobs[job_id] = JOB_TYPES[spec.type](self, job_id, spec)
        return job

    def settle_start(self, job_id: str) -> None:
        """After a start of ``job_id``: a new job never created (refused)
        gives the ID back to the job it replaced."""
        old = self._replaced.pop(job_id, None)
        if old is not None and self.jobs[job_id].status is None:
            self.jobs[job_id] = old

    def start_burst(self, args: dict) -> None:
        """``guest-burst``: a one-off workload, starting now."""
        from .scenario import burst_workload_spec
        spec = burst_workload_spec(self.scenario, args)
        self._bursts += 1
        name = f"burst{self._bursts}"
        GuestWorkload(self, name, spec, self.rng("burst", name), start=self.env.now).start()

    def _job_starter(self, job_id: str, at: int):
        env = self.env
        if at > env.now:
            yield env.timeout(at - env.now)
        job = self.jobs[job_id]
        self.monitor.execute(job.qmp_start_command(), job.qmp_start_arguments(),
                             source=f"jobs.{job_id}")

    # -- running -----------------------------------------------------------------------
    def run(self, progress=None, interruptible: bool = False) -> Result:
        """Run to the scenario's duration.  ``progress(fraction)`` is called
        as simulated time advances (for a progress bar), if given.

        The run ends early, truncated (:attr:`stopped_by` says why), when
        the event log is full (``max-events``), at the first sample with
        ``max-requests`` guest requests done or ``max_samples`` samples taken
        (:meth:`_bound_reached`), and with ``interruptible`` on Ctrl-C
        (SIGINT, at the next sample or progress step; a second Ctrl-C raises
        KeyboardInterrupt at once)."""
        with self._sigint(interruptible):
            return self._run(progress)

    def _run(self, progress) -> Result:
        _steady_allocator()
        env = self.env
        for job_id, spec in self.scenario.jobs.items():
            if spec.start is not None:
                env.process(self._job_starter(job_id, spec.start))
        for workload in self.workloads.values():
            workload.start()
        self.actions.install()
        for controller in self.controllers:
            controller.install()
        # Last, so that a sample at time t sees what was started at t.
        self.sampler.start()
        duration = self.scenario.duration
        try:
            if progress is None:
                env.run(until=duration)
            else:
                steps = 100
                for i in range(1, steps + 1):
                    until = duration * i // steps
                    if until > env.now:
                        env.run(until=until)
                    progress(i / steps)
                    if self._interrupted:
                        raise RunBounded("interrupted")
        except EventCapReached as stop:
            self.truncated = True
            self.stopped_by = stop.reason if isinstance(stop, RunBounded) else "max-events"
        self._bounding = False
        return self.result()

    def result(self) -> Result:
        """The record of the run as it stands now: a last sample, then the
        guest-write audits, the invariants and the summary (what
        :meth:`run` returns at its end; a served session asks for it when
        its client leaves)."""
        self.sampler.sample()
        if self.journal is not None:
            # Everything at the end reads the disks: apply the logs now, and
            # give the memory they held back before the audit's arrays.
            self.journal.settle_all()
            _release_freed_memory()
        audits = {name: invariants.guest_write_audit(d) for name, d in self.drives.items()}
        violations = invariants.check(self, audits)
        summary = summary_mod.build(self, audits, violations)
        if self.stopped_by is not None:
            summary["stopped_by"] = self.stopped_by
        return Result(self.scenario.to_dict(), self.seed, self.profile.name,
                      self.log.events, self.monitor.commands,
                      self.sampler.columns, summary)


    # -- bounds while running (issue 19) ---------------------------------------------
    def _init_bounds(self, limits) -> None:
        #: what ended the run early: "max-events", "max-requests",
        #: "max-samples" or "interrupted" (None: it ran its whole duration)
        self.stopped_by: str | None = None
        cap = self.scenario.max_requests
        self.max_requests = limits.max_requests if cap is None else min(cap, limits.max_requests)
        self.max_samples = limits.max_samples
        self._bounding = True
        self._interrupted = False

    def guest_requests(self) -> int:
        """Guest requests done so far, on every drive."""
        return sum(drive.completed for drive in self.drives.values())

    def _bound_reached(self) -> str | None:
        """Checked after each sample: the same state in runs with and
        without shortcuts, so both stop at the same sample."""
        if self._interrupted:
            return "interrupted"
        if self.guest_requests() >= self.max_requests:
            return "max-requests"
        if len(self.sampler.columns["time"]) >= self.max_samples:
            return "max-samples"
        return None

    def _guard_requests(self) -> None:
        """The bound on guest requests where simulated time stands still (a
        closed loop whose failing requests take no time never reaches the next
        sample): every 4096 requests issued one by one (the drives' shared
        :class:`~blocksim.model.drive.RequestCount`), more than twice
        ``max-requests`` done ends the run, and so does a pending Ctrl-C."""
        def check(calls: int) -> None:
            if not self._bounding:
                return
            if self._interrupted:
                raise RunBounded("interrupted")
            if max(calls, self.guest_requests()) >= 2 * self.max_requests:
                raise RunBounded("max-requests")
        count = RequestCount(check)
        for drive in self.drives.values():
            drive.request_count = count

    def _sigint(self, interruptible: bool):
        """A context: Ctrl-C asks the run to stop at its next sample."""
        import contextlib
        if (not interruptible or threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return contextlib.nullcontext()

        def on_sigint(signum, frame):
            if self._interrupted or not self._bounding:
                raise KeyboardInterrupt
            self._interrupted = True

        @contextlib.contextmanager
        def handler():
            signal.signal(signal.SIGINT, on_sigint)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        return handler()


class RunBounded(EventCapReached):
    """The run's internal signal that a bound was reached (``reason``:
    max-requests, max-samples, interrupted), like the event cap."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _BoundedSampler(Sampler):
    """The sampler, which also ends the run when a bound is reached
    (:meth:`Simulation._bound_reached`) once it has taken its sample."""

    def sample(self) -> None:
        super().sample()
        sim = self.sim
        if sim._bounding:
            reason = sim._bound_reached()
            if reason is not None:
                raise RunBounded(reason)


#: glibc's ``M_MMAP_THRESHOLD`` (mallopt's parameter -3) and the value set
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD = -3, 1 << 20


def _steady_allocator() -> None:
    """Have every allocation of 1 MiB or more mapped on its own, whatever
    was freed before (glibc's ``mallopt``; elsewhere nothing).  glibc
    raises that threshold each time it frees a mapped block, up to 32 MiB:
    after that, arrays that grow (the guest's ledger, a journal's logs)
    are reallocated inside the heap, whose holes stay with the process.
    Benchmark (b) peaked 27 MiB higher with glibc's default (415 against
    388 MiB), at the same CPU time."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def _release_freed_memory() -> None:
    """Hand memory freed in small blocks back to the system (glibc's
    ``malloc_trim``; elsewhere nothing).  The content journal's logs are
    thousands of small arrays: once applied, their memory would otherwise
    stay with the process and add to its peak."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def run(scenario, seed: int | None = None, profile: str | None = None,
        progress=None, limits=None, interruptible: bool = False) -> Result:
    """Run a scenario (a :class:`Scenario`, a dict or a TOML path) once,
    within ``limits`` (:class:`blocksim.scenario.limits.Limits`)."""
    from .scenario import Scenario, load_scenario
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, limits=limits)
    return Simulation(scenario, seed=seed, profile=profile,
                      limits=limits).run(progress=progress, interruptible=interruptible)
