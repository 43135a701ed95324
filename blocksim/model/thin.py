"""Thin volumes as block storage has them: a volume group that extends them.

oVirt keeps a thin disk's qcow2 image on an LVM logical volume (the
*volume*) carved out of a volume group (the *pool*) shared by many disks.
The image's virtual size is what the guest sees; the volume's size is how
far the qcow2 file may reach (:attr:`BlockDevice.lv_size
<blocksim.model.device.BlockDevice.lv_size>`, its physical layout in
:meth:`BlockDevice.physical_size <blocksim.model.device.BlockDevice.physical_size>`).
A write allocating past it fails with ENOSPC.

An extend (vdsm: a message to the SPM through the storage mailbox, which
runs ``lvextend``, then ``lvchange --refresh`` on the VM's host; see vdsm's
``doc/thin-provisioning.md``) is modelled as

1. a request queued at the pool, which carries out ``concurrency`` extends
   at once, first come first served;
2. a latency drawn from the pool's seeded distribution (fixed, uniform,
   lognormal, or one of a table of samples);
3. success if the pool has room for the growth (its ``size`` minus what
   its volumes take), else failure (``lvextend``: insufficient free space);
4. a refresh (``refresh``), after which the new size is usable.

The outcome is an event of the storage, not of QEMU:
``VOLUME_EXTENDED {image, size}`` or ``VOLUME_EXTEND_FAILED {image, size,
reason}`` (the management layer learns it from the mailbox's reply).

Imports: numpy and SimPy only (through the devices it is given).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

import numpy as np


class Latency:
    """A seeded latency distribution (ns): ``fixed`` (``value``), ``uniform``
    (``low``..``high``), ``lognormal`` (``median``, ``sigma``: the median
    times exp(sigma N(0,1))), ``samples`` (one of ``samples``, uniformly)."""

    def __init__(self, spec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng

    def draw(self) -> int:
        s = self.spec
        kind = s.distribution
        if kind == "fixed":
            return int(s.value)
        if kind == "uniform":
            return int(self.rng.uniform(s.low, s.high))
        if kind == "lognormal":
            return int(s.median * math.exp(s.sigma * self.rng.standard_normal()))
        return int(s.samples[int(self.rng.integers(len(s.samples)))])


class VolumeGroup:
    """A pool of space shared by thin volumes, extending them one request at
    a time per worker (see the module docstring)."""

    def __init__(self, env, name: str, size: int | None, latency: Latency, refresh: int,
                 concurrency: int, emit: Callable[[str, dict], None]):
        self.env = env
        self.name = name
        self.size = size
        self.latency = latency
        self.refresh = refresh
        self.concurrency = concurrency
        self.emit = emit
        self.volumes: list = []         # the BlockDevices on it
        self.queue: deque = deque()
        self.busy = 0
        self.extends = self.failed = 0
        self.bytes_extended = 0

    @property
    def used(self) -> int:
        """What the volumes take (their sizes, extends granted included)."""
        return sum(v.lv_size for v in self.volumes) + self._granted

    _granted = 0                        # granted, not yet refreshed (usable)

    @property
    def free(self) -> int | None:
        return None if self.size is None else self.size - self.used

    def request(self, device, new_size: int) -> None:
        """Ask to grow ``device``'s volume to ``new_size`` (queued)."""
        self.queue.append((device, new_size))
        self._next()

    def _next(self) -> None:
        while self.queue and self.busy < self.concurrency:
            device, new_size = self.queue.popleft()
            self.busy += 1
            self.env.process(self._extend(device, new_size))

    def _extend(self, device, new_size: int):
        env = self.env
        yield env.timeout(max(0, self.latency.draw()))
        grow = new_size - device.lv_size
        free = self.free
        if grow > 0 and free is not None and grow > free:
            self.failed += 1
            self.busy -= 1
            self.emit("VOLUME_EXTEND_FAILED", {"image": device.name, "size": new_size,
                                               "reason": "no space in volume group "
                                                         f"'{self.name}' ({free} bytes free)"})
            self._next()
            return
        grow = max(0, grow)
        self._granted += grow
        self.busy -= 1
        self._next()
        if self.refresh:
            yield env.timeout(self.refresh)
        self._granted -= grow
        device.lv_size = max(device.lv_size, new_size)
        self.extends += 1
        self.bytes_extended += grow
        self.emit("VOLUME_EXTENDED", {"image": device.name, "size": device.lv_size})
