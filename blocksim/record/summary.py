"""The summary of a run: outcomes per job, drive, image and VM, as plain data.

Everything here is JSON-able (dicts, lists, str, int, float, bool, None) so a
summary can be written to ``summary.json``, compared across runs and turned
into a table.  Times are simulated seconds.
"""

from __future__ import annotations

from .invariants import CHECKED, checked_names  # noqa: F401 (CHECKED: the names, re-exported)

#: blocksim's version, stamped in every summary (``blocksim.__version__``,
#: kept here so the record needs nothing from the layers above it).
VERSION = "0.1.0"


def _seconds(ns):
    return None if ns is None else ns / 1e9


def job_outcome(job) -> str:
    """One word for where a job ended up (the classes sweeps count)."""
    if job.outcome is not None:
        return job.outcome
    if job.status is None:
        return "refused" if job.start_refused else "not-started"
    if job.status in ("paused", "standby"):
        return "paused"
    if job.status in ("waiting", "pending"):
        return "pending"           # waiting for block-job-finalize
    if job.completable and not job.synced:       # a mirror, an active commit
        return "never-ready"
    return "ready" if job.status == "ready" else "running"


def build(sim, audits: dict, violations: list[dict]) -> dict:
    now = sim.env.now
    jobs = {}
    for job_id, job in sim.jobs.items():
        paused = job.time_paused(now)
        entry = {
            "type": job.job_type,
            "outcome": job_outcome(job),
            "final_status": job.status or "none",
            "end_event": job.end_event,
            "error": job.error,
            "len": job.progress_len(),
            "offset": job.offset,
            "bytes_copied": job.bytes_copied,
            "time_paused": paused / 1e9,
            "started_at": _seconds(job.started_at),
            "ready_at": _seconds(job.ready_at),
            "finished_at": _seconds(job.finished_at),
            "errors_by_action": dict(job.errors_by_action),
            "io_status": job.iostatus.value,
            "integrity": job.integrity,
            "integrity_detail": job.integrity_detail,
        }
        if job.completable:
            entry["pivoted"] = job.pivoted
            if getattr(job, "copy_mode", "background") != "background":
                # guest writes copied to the target by an active mirror
                entry["active_writes"] = {"writes": job.active_writes,
                                          "bytes": job.active_bytes,
                                          "failed": job.active_failed}
        elif job.job_type == "backup":
            # guest writes that copied old data first, and those it broke
            entry["copy_before_write"] = {"writes": job.cbw_copies, "bytes": job.cbw_bytes,
                                          "failed": job.cbw_failures}
        jobs[job_id] = entry
    drives = {}
    for name, drive in sim.drives.items():
        audit = audits[name]
        drives[name] = {
            "node": drive.node.name,
            "requests": drive.completed,
            "reads": drive.reads,
            "writes": drive.writes,
            "mean_latency": (drive.latency_sum / drive.completed / 1e9
                             if drive.completed else None),
            "errors_by_action": dict(drive.errors_by_action),
            "guest_errors": drive.guest_errors,
            "writes_lost": drive.writes_lost,
            "lost_bytes": audit["lost_bytes"],
            "corrupt_bytes": audit["corrupt_bytes"],
            "io_status": drive.iostatus.value,
        }
    images = {name: {"allocated": dev.allocated_bytes, "capacity": dev.capacity,
                     "extents": dev.content.extent_count()}
              for name, dev in sim.devices.items()}
    for name, dev in sim.devices.items():
        if dev.bitmaps:     # newest first, as QMP lists them
            images[name]["bitmaps"] = [b.query() for b in reversed(dev.bitmaps.values())]
    if sim.profile.job_iostatus_own_device_only:
        # A node's io-status: a 2012 BlockDriverState had one, which a job's
        # stop on a node other than its own device set (profile rfc-2012).
        for name, dev in sim.devices.items():
            images[name]["io_status"] = dev.iostatus.value
    refused = sum(1 for c in sim.monitor.commands if "error" in c)
    return {
        "blocksim_version": VERSION,
        "scenario": sim.scenario.name,
        "profile": sim.profile.name,
        "seed": sim.seed,
        "simulated_seconds": now / 1e9,
        "events": len(sim.log.events),
        "truncated": sim.truncated,
        "vm": {"final_state": sim.vm.state, "time_paused": sim.vm.time_paused(now) / 1e9,
               "stops": sim.vm.stops},
        "jobs": jobs,
        "drives": drives,
        "images": images,
        "commands": {"executed": len(sim.monitor.commands), "refused": refused},
        "invariants": {"checked": checked_names(sim), "violations": violations},
    } | thin_provisioning(sim)


# -- thin provisioning: the figures that size it (issue 18) ------------------------------
def thin_provisioning(sim) -> dict:
    """What a thin-provisioning question asks of a run: how often and how
    long the VM paused, how many ENOSPC errors the guest and the jobs met,
    what the extends did, and how much physical space the thin images hold
    against what was written to them.

    - ``pauses``: every stop of the VM (``count``), those an error policy
      made (``io_error``), their ``total`` and ``longest`` (seconds; a pause
      still going on at the end counts up to then);
    - ``enospc``: ENOSPC errors decided by the error policies, for guest
      requests (``guest``) and block jobs (``jobs``), ``by_drive`` and ``by_job``;
    - ``extends``: the ``thin-extend`` commands (:func:`extend_records`):
      ``count`` that grew a device, ``bytes`` they added, ``failed`` (refused);
    - ``thin_images``: per image with a capacity, its ``physical`` size
      (the capacity), ``allocated`` bytes, ``written`` (bytes written to
      it), ``free`` (physical - allocated) and ``overallocation``
      (physical / allocated, None when nothing is allocated).
    """
    now = sim.env.now
    vm = sim.vm
    ongoing = now - vm._paused_since if vm._paused_since is not None else 0
    policy = sim.policy
    extends = {"count": 0, "bytes": 0, "failed": 0, "by_image": {}}
    for record in extend_records(sim):
        image = extends["by_image"].setdefault(record["image"], {"count": 0, "bytes": 0, "failed": 0})
        for entry in (extends, image):
            if record["failed"]:
                entry["failed"] += 1
            else:
                entry["count"] += 1
                entry["bytes"] += record["bytes"]
    thin = {}
    for name, dev in sim.devices.items():
        if dev.capacity is None:
            continue
        allocated = dev.allocated_bytes
        thin[name] = {"physical": dev.capacity, "allocated": allocated,
                      "written": dev.bytes_written, "free": dev.capacity - allocated,
                      "overallocation": dev.capacity / allocated if allocated else None}
    return {
        "pauses": {"count": vm.stops, "io_error": vm.io_error_stops,
                   "total": vm.time_paused(now) / 1e9,
                   "longest": max(vm.longest_pause_ns, ongoing) / 1e9},
        "enospc": {"guest": sum(policy.enospc_guest.values()),
                   "jobs": sum(policy.enospc_jobs.values()),
                   "by_drive": dict(policy.enospc_guest), "by_job": dict(policy.enospc_jobs)},
        "extends": extends,
        "thin_images": thin,
    }


def extend_records(sim) -> list[dict]:
    """Every extend of a thin device in the run, in order, as ``{"time"
    (a QMP timestamp), "image", "bytes" (added), "failed" (bool)}``: today the
    ``thin-extend`` commands of the record (a refused one failed; the bytes
    are the capacity it set minus the one before, the scenario's at first;
    one with ``if-free-below`` that found enough free space is no extend).
    A thin-provisioning controller that records its own extends adds them
    here."""
    capacity = {name: spec.capacity for name, spec in sim.scenario.images.items()}
    out = []
    for record in sim.monitor.commands:
        if record.get("execute") != "thin-extend":
            continue
        image = record.get("arguments", {}).get("image")
        entry = {"time": record["timestamp"], "image": image, "failed": "error" in record,
                 "bytes": 0}
        if not entry["failed"]:
            if record["return"].get("extended") is False:
                continue                # a poll that found enough free space
            new = record["return"]["capacity"]
            before = capacity.get(image)
            entry["bytes"] = new - before if before is not None else 0
            capacity[image] = new
        out.append(entry)
    return out
