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
    } | thin_provisioning(sim)
    # (only what is not empty: a run where all happened records as before)
    never = {key: items for key, items in never_happened(sim).items() if items}
    if never:
        out["never"] = never
    thin = thin_summary(sim)
    if thin:
        out["thin"] = thin
    return out


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
    - ``extends``: the ``thin-extend`` commands and the thin volumes'
      extends (:func:`extend_records`): ``count`` that grew a device,
      ``bytes`` they added, ``failed`` (refused, or the pool was full);
    - ``thin_images``: per image with a capacity or on a thin volume, its
      ``physical`` size (the capacity, or the volume's size), ``allocated``
      (the bytes allocated, or on a volume the qcow2 file's size, metadata
      included), ``written`` (bytes written to it), ``free`` (physical -
      allocated) and ``overallocation`` (physical / allocated, None when
      nothing is allocated).
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
        if dev.lv_size is not None:     # the volume holds the qcow2 file, metadata too
            physical, allocated = dev.lv_size, dev.physical_size
        elif dev.capacity is not None:
            physical, allocated = dev.capacity, dev.allocated_bytes
        else:
            continue
        thin[name] = {"physical": physical, "allocated": allocated,
                      "written": dev.bytes_written, "free": physical - allocated,
                      "overallocation": physical / allocated if allocated else None}
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


def extend_records(sim) -> list[dict]:
    """Every extend of a thin device in the run, in time order, as ``{"time"
    (a QMP timestamp), "image", "bytes" (added), "failed" (bool)}``:

    - the ``thin-extend`` commands of the record (a refused one failed; the
      bytes are the capacity it set minus the one before, the scenario's at
      first; one with ``if-free-below`` that found enough free space is no
      extend);
    - a thin volume's extends as the storage answered them
      (blocksim.model.thin): ``VOLUME_EXTENDED`` (the bytes its size grew)
      and ``VOLUME_EXTEND_FAILED`` (the pool was full), whoever asked for
      them (an ``lv-extend`` action or a thin-provisioning controller).
    """
    size = {name: spec.lv_size if spec.lv_size is not None else spec.capacity
            for name, spec in sim.scenario.images.items()}
    timed = [(c["timestamp"], 0, c) for c in sim.monitor.commands
             if c.get("execute") == "thin-extend"]
    timed += [(e["timestamp"], 1, e) for e in sim.log.events
              if e["event"] in ("VOLUME_EXTENDED", "VOLUME_EXTEND_FAILED")]
    timed.sort(key=lambda t: (t[0]["seconds"], t[0]["microseconds"], t[1]))
    out = []
    for stamp, _, record in timed:
        if "event" in record:
            image = record["data"]["image"]
            entry = {"time": stamp, "image": image,
                     "failed": record["event"] == "VOLUME_EXTEND_FAILED", "bytes": 0}
            if not entry["failed"]:
                new = record["data"]["size"]
                before = size.get(image)
                entry["bytes"] = max(0, new - before) if before is not None else 0
                size[image] = new
            out.append(entry)
            continue
        image = record.get("arguments", {}).get("image")
        entry = {"time": stamp, "image": image, "failed": "error" in record, "bytes": 0}
        if not entry["failed"]:
            if record["return"].get("extended") is False:
                continue                # a poll that found enough free space
            new = record["return"]["capacity"]
            before = size.get(image)
            entry["bytes"] = new - before if before is not None else 0
            size[image] = new
        out.append(entry)
    return out


# -- what never happened (issue 20) -------------------------------------------------------
def never_happened(sim) -> dict:
    """The scenario's actions that never fired and fault rules that never
    matched a request, which explain a run that did not go as meant (a
    VM left paused because the action meant to continue it never fired):

    - ``actions``: ``{"index", "trigger" ("on EVENT" or "at 5s"),
      "command"}`` for each action whose trigger never came (its command
      never ran; a refused command did run);
    - ``faults``: ``{"index", "type", "image", "operation", "errno"}`` for
      each fault rule that never failed, dropped or delayed a request
      (a dust rule whose bad blocks writes healed did act).
    """
    scenario = sim.scenario
    actions = []
    fired = getattr(getattr(sim, "actions", None), "fired", None) or [0] * len(scenario.actions)
    for index, spec in enumerate(scenario.actions):
        if fired[index]:
            continue
        trigger = f"on {spec.on}" if spec.on is not None else f"at {spec.at / 1e9:g}s"
        actions.append({"index": index, "trigger": trigger, "command": spec.command})
    faults = []
    rank: dict[str, int] = {}
    for index, spec in enumerate(scenario.faults):
        k = rank[spec.image] = rank.get(spec.image, -1) + 1
        rules = sim.devices[spec.image].faults
        rule = rules[k] if k < len(rules) else None
        if rule is None or rule.fired:
            continue
        if spec.type == "dust" and len(rule.bad) < len(set(spec.blocks)):
            continue                    # writes healed bad blocks
        faults.append({"index": index, "type": spec.type, "image": spec.image,
                       "operation": list(spec.operation), "errno": spec.errno})
    return {"actions": actions, "faults": faults}


def never_lines(summary: dict) -> list[str]:
    """``summary``'s :func:`never_happened` as warnings, one line each:
    ``action 2 (on BLOCK_JOB_READY, cont) never fired``, ``fault 0 (target
    write EIO) never matched a request``."""
    never = summary.get("never") or {}
    lines = [f"action {a['index']} ({a['trigger']}, {a['command']}) never fired"
             for a in never.get("actions", [])]
    for f in never.get("faults", []):
        what = "delay" if f["type"] == "delay" else f["errno"]
        kind = "" if f["type"] == "error" else f"{f['type']} "
        lines.append(f"fault {f['index']} ({kind}{f['image']} {'/'.join(f['operation'])} {what}) "
                     "never matched a request")
    return lines
