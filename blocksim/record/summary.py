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
    out = {
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
    }
    thin = thin_summary(sim)
    if thin:
        out["thin"] = thin
    return out


def thin_summary(sim) -> dict:
    """Thin volumes, their pools and the management controllers (issue 18),
    only for a run that has any: per volume its virtual size, the volume's
    final size, the qcow2 file's physical size and the data it holds; per
    pool its extends (done, failed, bytes); per controller what it did."""
    volumes = {name: {"virtual": dev.size, "lv_size": dev.lv_size,
                      "physical": dev.physical_size, "data": dev.allocated_bytes}
               for name, dev in sim.devices.items() if dev.lv_size is not None}
    pools = {name: {"size": pool.size, "extends": pool.extends, "failed": pool.failed,
                    "bytes_extended": pool.bytes_extended}
             for name, pool in getattr(sim, "pools", {}).items()}
    controllers = {c.source: c.stats() for c in getattr(sim, "controllers", [])}
    thresholds = sum(1 for e in sim.log.events if e["event"] == "BLOCK_WRITE_THRESHOLD")
    if not (volumes or pools or controllers or thresholds):
        return {}
    return {"volumes": volumes, "pools": pools, "controllers": controllers,
            "threshold_events": thresholds}
