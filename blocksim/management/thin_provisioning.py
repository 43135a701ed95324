"""The thin-provisioning controller: vdsm's loop around thin volumes.

Configured by a scenario's ``[thin-provisioning]`` section
(:class:`blocksim.scenario.ThinProvisioning`), it manages every thin volume
(an image with ``lv-size``; mirror, commit and backup targets included) as
vdsm's volume monitor does (vdsm ``doc/thin-provisioning.md``, the
``thinp.py`` volume monitor):

- **Threshold placement.**  A volume is extended when its free space falls
  below ``chunk x (100 - utilization-percent) / 100`` (vdsm's
  ``volume_utilization_chunk_mb`` and ``volume_utilization_percent``;
  defaults 1 GiB and 50%: a 3 GiB volume gets a 2.5 GiB threshold).  In
  ``event`` mode the controller arms it with ``block-set-write-threshold`` on
  the volume's *protocol* node (``IMAGE-file``): the threshold is about
  where the qcow2 file reaches on the volume (host offsets), which only the
  protocol node sees; libvirt's ``virDomainSetBlockThreshold`` targets the
  storage node for this reason.  QEMU disarms it when it fires, so it is
  set again after each extend.
- **Event or polling.**  ``event``: BLOCK_WRITE_THRESHOLD marks the volume
  and the next monitor cycle (every ``interval``, vdsm's
  ``vm_watermark_interval``, 2 s) extends it.  ``poll``: each cycle reads
  the volume's allocation (the file's end, as ``virDomainGetBlockInfo``
  does) and extends a volume past its threshold.
- **Extend.**  ``lv-extend`` to ``lv-size + chunk`` (at most what a fully
  allocated image takes), at most ``max-extends`` in flight, the others
  waiting; a failed extend (the pool is full) is retried at the next cycle,
  as vdsm retries on its next monitoring cycle.  When VOLUME_EXTENDED
  arrives (the extend and the refresh are done), the new threshold is set.
- **ENOSPC.**  When the VM pauses on a write that ran out of space
  (BLOCK_IO_ERROR with ``nospace`` and action ``stop``), the volumes past
  their threshold are extended at once (vdsm's ``on_enospc``), and once no
  extend is in flight or waiting, ``cont`` resumes the VM (``resume``).
  A job paused on ENOSPC writing to an extended volume (io-status
  ``nospace``) gets ``block-job-resume``.

- **Replication.**  While a mirror (vdsm's live storage migration,
  ``diskReplicateStart`` .. ``diskReplicateFinish``) copies a drive, its
  source and target volumes are extended by ``chunk x replica-mult`` and
  their free-space limit grows alike: vdsm's ``Drive.volExtensionChunk``
  multiplies the chunk by ``VOLWM_CHUNK_REPLICATE_MULT = 2`` while
  ``diskReplicate`` is set, and ``watermarkLimit`` is computed from it
  (lib/vdsm/virt/vmdevices/storage.py).  The multiplier applies when a
  threshold is armed and when an extend is asked for.  (vdsm monitors the
  source drive and extends the replica first, to the same size; here each
  volume is monitored by its own threshold, which QEMU fires for the job's
  writes too.)

Not modelled: the pre-extension of a live merge's base (vdsm measures
the top and extends the base before ``blockCommit``; a scenario can size
the base itself, and the controller extends it from its threshold events
during the commit), reduce after a merge, and the delay of the libvirt and
mailbox round trips beyond the pool's extend latency.
"""

from __future__ import annotations

from typing import Any

from .controller import Controller, register


class _Volume:
    __slots__ = ("device", "threshold", "needs", "extending", "asked")

    def __init__(self, device):
        self.device = device
        self.threshold = 0
        self.needs = False
        self.extending = False
        self.asked = 0                  # when its last extend was asked for (turns)


@register("thin_provisioning")
class ThinProvisioningController(Controller):
    def __init__(self, sim, spec):
        super().__init__(sim, spec)
        from ..scenario import managed_images
        self.volumes = {name: _Volume(sim.devices[name]) for name in managed_images(sim.scenario)}
        self.enospc_paused = False
        self.threshold_events = 0
        self.extend_requests = 0
        self.extends_failed = 0
        self.resumes = 0

    # -- set-up -----------------------------------------------------------------------
    def install(self) -> None:
        spec = self.spec
        if spec.mode == "event":
            self.on("BLOCK_WRITE_THRESHOLD", self._on_threshold)
        self.on("BLOCK_IO_ERROR", self._on_io_error)
        self.on("RESUME", self._on_resume)
        self.on("VOLUME_EXTENDED", self._on_extended)
        self.on("VOLUME_EXTEND_FAILED", self._on_extend_failed)
        env = self.sim.env

        def start():
            for vol in self.volumes.values():   # vdsm: at VM start, set the thresholds
                self._arm(vol)
                if vol.threshold and vol.device.physical_size > vol.threshold:
                    vol.needs = True
            yield env.timeout(spec.interval)
            self.every(spec.interval, self._cycle)

        env.process(start())

    def stats(self) -> dict[str, Any]:
        return {"threshold-events": self.threshold_events,
                "extend-requests": self.extend_requests,
                "extends-failed": self.extends_failed, "resumes": self.resumes}

    # -- thresholds -------------------------------------------------------------------
    def _mult(self, vol: _Volume) -> int:
        """vdsm Drive.volExtensionChunk: ``replica-mult`` while a mirror in
        progress copies from or onto the volume, else 1."""
        dev = vol.device
        for job in self.sim.jobs.values():
            if job.job_type == "mirror" and job.status not in (None, "concluded", "null") \
                    and dev in (job.target, job.drive.node):
                return self.spec.replica_mult
        return 1

    def _threshold_for(self, vol: _Volume) -> int:
        dev = vol.device
        if dev.lv_size >= dev.max_physical_size():
            return 0                    # the volume holds the whole image
        return max(1, dev.lv_size - self.spec.free_limit * self._mult(vol))

    def _arm(self, vol: _Volume) -> None:
        vol.threshold = self._threshold_for(vol)
        if self.spec.mode == "event":
            self.execute("block-set-write-threshold",
                         {"node-name": f"{vol.device.name}-file",
                          "write-threshold": vol.threshold})

    # -- events -----------------------------------------------------------------------
    def _on_threshold(self, data: dict) -> None:
        node = data.get("node-name", "")
        vol = self.volumes.get(node[:-5]) if node.endswith("-file") else None
        if vol is not None:
            self.threshold_events += 1
            vol.needs = True            # extended at the next cycle

    def _on_io_error(self, data: dict) -> None:
        if not (data.get("nospace") and data.get("action") == "stop"):
            return
        self.enospc_paused = True
        node = data.get("node-name", "")
        hit = self.volumes.get(node[:-5] if node.endswith("-file") else node)
        for vol in self.volumes.values():   # vdsm on_enospc: extend what is full now
            if vol is hit or vol.device.physical_size >= vol.threshold or vol.needs:
                # vdsm Drive.on_enospc marks the drive EXCEEDED, and
                # VolumeMonitor._should_extend_volume extends a marked drive
                # "regardless of allocation": a write that failed just as an
                # extend landed (the file below its new threshold) still
                # gets one, and the VOLUME_EXTENDED that follows sends cont.
                # An extend already in flight serves instead.
                vol.needs = True
        self._extend_needed()

    def _on_resume(self, _data: dict) -> None:
        self.enospc_paused = False

    def _on_extended(self, data: dict) -> None:
        vol = self.volumes.get(data.get("image"))
        if vol is None:
            return
        vol.extending = False
        vol.needs = False
        self._arm(vol)
        if vol.threshold and vol.device.physical_size > vol.threshold:
            vol.needs = True            # the guest wrote past the new one meanwhile
        self._resume_jobs(vol.device)
        self._extend_needed()
        if self.spec.resume and self.enospc_paused and self.sim.vm.state == "io-error" \
                and not any(v.extending or v.needs for v in self.volumes.values()):
            self.resumes += 1
            self.execute("cont")

    def _on_extend_failed(self, data: dict) -> None:
        vol = self.volumes.get(data.get("image"))
        if vol is not None:
            vol.extending = False       # still needs it: retried at the next cycle
            self.extends_failed += 1

    def _resume_jobs(self, device) -> None:
        for job_id, job in self.sim.jobs.items():
            if device in (getattr(job, "target", None), getattr(job, "base", None)) \
                    and job.status == "paused" and job.iostatus.value == "nospace":
                self.execute("block-job-resume", {"device": job_id})

    # -- the monitor cycle ------------------------------------------------------------
    def _cycle(self) -> None:
        if self.spec.mode == "poll":
            for vol in self.volumes.values():
                if vol.threshold and vol.device.physical_size > vol.threshold:
                    vol.needs = True
        self._extend_needed()

    def _extend_needed(self) -> None:
        in_flight = sum(v.extending for v in self.volumes.values())
        # the volume asked for longest ago first: a failing extend does not
        # starve the others of the controller's slots
        self._turn = getattr(self, "_turn", 0)
        for vol in sorted(self.volumes.values(), key=lambda v: v.asked):
            if in_flight >= self.spec.max_extends:
                return
            if not vol.needs or vol.extending:
                continue
            dev = vol.device
            new = min(dev.lv_size + self.spec.chunk * self._mult(vol), dev.max_physical_size())
            if new <= dev.lv_size:
                vol.needs = False
                continue
            self.extend_requests += 1
            self._turn += 1
            vol.asked = self._turn
            if self.execute("lv-extend", {"image": dev.name, "size": new}) is not None:
                vol.extending = True
                in_flight += 1
