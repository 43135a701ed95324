"""Probes: the sampled time series of a run, for plotting and analysis.

Every ``sample-interval`` of simulated time (and once at the end) the
:class:`Sampler` records one row of plain values, in columns named after
what they measure:

- ``time`` (seconds), ``vm.state`` (running, paused, io-error);
- ``drive.NAME.iops`` and ``drive.NAME.latency`` (mean completion latency in
  seconds over the interval, NaN when nothing completed),
  ``drive.NAME.io-status``;
- ``job.ID.status`` (``none`` before the job exists), ``job.ID.offset``,
  ``job.ID.len``, ``job.ID.io-status``;
- ``image.NAME.allocated`` and ``image.NAME.capacity`` (bytes; capacity NaN
  when unlimited); for an image on a thin volume (``lv-size``) the qcow2
  file's physical size and the volume's size.
"""

from __future__ import annotations

import math


class Sampler:
    def __init__(self, sim):
        self.sim = sim
        self.interval = sim.scenario.sample_interval
        self.columns: dict[str, list] = {"time": [], "vm.state": []}
        for name in sim.drives:
            for key in ("iops", "latency", "io-status"):
                self.columns[f"drive.{name}.{key}"] = []
        for job_id in sim.jobs:
            for key in ("status", "offset", "len", "io-status"):
                self.columns[f"job.{job_id}.{key}"] = []
        for name in sim.devices:
            for key in ("allocated", "capacity"):
                self.columns[f"image.{name}.{key}"] = []
        self._last = {name: (0, 0) for name in sim.drives}   # (completed, latency_sum)
        self._last_time = 0
        self._last_sample = None

    def start(self) -> None:
        self.sim.env.process(self._run())

    def _run(self):
        env = self.sim.env
        journal = self.sim.journal
        while True:
            self.sample()
            if journal is not None:
                # (the sampler's tick is a convenient, regular moment; settling
                # changes no answer, so no run differs)
                journal.keep_within_budget()
            yield env.timeout(self.interval)

    def sample(self) -> None:
        sim = self.sim
        now = sim.env.now
        if self._last_sample == now:
            return
        self._last_sample = now
        c = self.columns
        c["time"].append(now / 1e9)
        c["vm.state"].append(sim.vm.state)
        span = (now - self._last_time) / 1e9
        for name, drive in sim.drives.items():
            done, lat = self._last[name]
            n = drive.completed - done
            c[f"drive.{name}.iops"].append(n / span if span > 0 else 0.0)
            c[f"drive.{name}.latency"].append(
                (drive.latency_sum - lat) / n / 1e9 if n else math.nan)
            c[f"drive.{name}.io-status"].append(drive.iostatus.value)
            self._last[name] = (drive.completed, drive.latency_sum)
        for job_id, job in sim.jobs.items():
            c[f"job.{job_id}.status"].append(job.status or "none")
            c[f"job.{job_id}.offset"].append(job.offset)
            c[f"job.{job_id}.len"].append(job.progress_len())
            c[f"job.{job_id}.io-status"].append(job.iostatus.value)
        for name, dev in sim.devices.items():
            if dev.lv_size is not None:     # a thin volume: the file, and the volume
                c[f"image.{name}.allocated"].append(dev.physical_size)
                c[f"image.{name}.capacity"].append(dev.lv_size)
                continue
            c[f"image.{name}.allocated"].append(dev.allocated_bytes)
            c[f"image.{name}.capacity"].append(
                dev.capacity if dev.capacity is not None else math.nan)
        self._last_time = now
