"""Small scenario builders and event-log views for the block-job tests.

Scenarios are plain dicts in the file format (hyphenated keys), a few MiB in
size, so that every run takes milliseconds.  :func:`timeline` turns a run's
events into ``(event, key data...)`` tuples; the ``st``/``err``/``ready``/...
helpers build the expected tuples, so a test states an exact sequence as::

    assert timeline(r) == [*st("created", "running"), err("read", "report"),
                           *st("aborting"), completed(EIO), *st("concluded", "null")]
"""

from __future__ import annotations

import copy

import blocksim

KiB = 1024
MiB = 1024 * KiB
SIZE = 4 * MiB                   # the default image size of these cases
EIO = "Input/output error"
ENOSPC = "No space left on device"

JOB = "job0"


# -- builders ------------------------------------------------------------------------

def mirror_case(*, size: int = SIZE, data="full", faults=(), actions=(), workloads=None,
                target_image: dict | None = None, source_image: dict | None = None,
                drive: dict | None = None, duration="20s", profile=None, **job) -> dict:
    """A mirror of drive ``vda`` (image ``src``) onto image ``dst``; ``job``
    holds job keys in Python spelling (``on_target_error="stop"``)."""
    scenario = {
        "duration": duration,
        "images": {
            "src": {"size": size, "data": data, **(source_image or {})},
            "dst": {"size": size, **(target_image or {})},
        },
        "drives": {"vda": {"image": "src", **(drive or {})}},
        "faults": [dict(f) for f in faults],
        "jobs": {JOB: {"type": "mirror", "device": "vda", "target": "dst",
                       **{k.replace("_", "-"): v for k, v in job.items()}}},
        "actions": [dict(a) for a in actions],
    }
    if workloads:
        scenario["workloads"] = copy.deepcopy(workloads)
    if profile:
        scenario["profile"] = profile
    return scenario


def backup_case(*, size: int = SIZE, data=((0, MiB), (2 * MiB, MiB // 2)), faults=(), actions=(),
                workloads=None, source_image: dict | None = None, target_image: dict | None = None,
                drive: dict | None = None, duration="20s", profile=None, sync="full", **job) -> dict:
    """A backup of drive ``vda`` (image ``src``: data in [0, 1 MiB) and
    [2 MiB, 2.5 MiB) by default, as the QEMU experiments) onto image ``tgt``."""
    scenario = {
        "duration": duration,
        "images": {
            "src": {"size": size, "data": [{"offset": o, "length": n} for o, n in data],
                    **(source_image or {})},
            "tgt": {"size": size, **(target_image or {})},
        },
        "drives": {"vda": {"image": "src", **(drive or {})}},
        "faults": [dict(f) for f in faults],
        "jobs": {JOB: {"type": "backup", "device": "vda", "target": "tgt", "sync": sync,
                       **{k.replace("_", "-"): v for k, v in job.items()}}},
        "actions": [dict(a) for a in actions],
    }
    if workloads:
        scenario["workloads"] = copy.deepcopy(workloads)
    if profile:
        scenario["profile"] = profile
    return scenario


def stream_case(*, size: int = SIZE, base_data="full", top_data=(), faults=(), actions=(),
                workloads=None, base_image: dict | None = None, top_image: dict | None = None,
                drive: dict | None = None, duration="20s", profile=None, **job) -> dict:
    """A stream of drive ``vda`` (image ``top`` over ``base``, both ``size``)."""
    scenario = {
        "duration": duration,
        "images": {
            "base": {"size": size, "data": base_data, **(base_image or {})},
            "top": {"size": size, "backing": "base",
                    "data": [{"offset": o, "length": n} for o, n in top_data], **(top_image or {})},
        },
        "drives": {"vda": {"image": "top", **(drive or {})}},
        "faults": [dict(f) for f in faults],
        "jobs": {JOB: {"type": "stream", "device": "vda",
                       **{k.replace("_", "-"): v for k, v in job.items()}}},
        "actions": [dict(a) for a in actions],
    }
    if workloads:
        scenario["workloads"] = copy.deepcopy(workloads)
    if profile:
        scenario["profile"] = profile
    return scenario


def fault(image: str, operation: str, errno: str = "EIO", **keys) -> dict:
    return {"image": image, "operation": operation, "errno": errno,
            **{k.replace("_", "-"): v for k, v in keys.items()}}


def at(time, command: str, **arguments) -> dict:
    return {"at": time, "command": command, "arguments": arguments}


def on(event: str, command: str, *, delay=0, match=None, repeat=False, **arguments) -> dict:
    action = {"on": event, "delay": delay, "command": command, "arguments": arguments}
    if match:
        action["match"] = match
    if repeat:
        action["repeat"] = True
    return action


def simulate(scenario: dict, profile: str | None = None, seed: int = 0):
    """Run and keep the :class:`~blocksim.Simulation` to inspect its objects."""
    sim = blocksim.Simulation(blocksim.load_scenario(scenario), seed=seed, profile=profile)
    return sim, sim.run()


# -- views of a result ----------------------------------------------------------------

def timeline(result, *names: str) -> list[tuple]:
    """Every event (or those named) as a tuple of its name and key data."""
    out = []
    for e in result.events:
        name, d = e["event"], e["data"]
        if names and name not in names:
            continue
        if name == "JOB_STATUS_CHANGE":
            out.append((name, d["id"], d["status"]))
        elif name in ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR"):
            out.append((name, d["device"], d["operation"], d["action"]))
        elif name == "BLOCK_JOB_COMPLETED":
            out.append((name, d["device"], d.get("error")))
        elif name in ("BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED"):
            out.append((name, d["device"]))
        elif name == "BLOCK_JOB_PENDING":
            out.append((name, d["id"]))
        else:
            out.append((name,))
    return out


def collapse(items: list) -> list:
    """Consecutive repeats of one item become one (for runs of identical errors)."""
    out = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def st(*statuses: str, job: str = JOB) -> list[tuple]:
    return [("JOB_STATUS_CHANGE", job, s) for s in statuses]


def err(operation: str, action: str, device: str = JOB) -> tuple:
    return ("BLOCK_JOB_ERROR", device, operation, action)


def ready(device: str = JOB) -> tuple:
    return ("BLOCK_JOB_READY", device)


def completed(error: str | None = None, device: str = JOB) -> tuple:
    return ("BLOCK_JOB_COMPLETED", device, error)


def cancelled(device: str = JOB) -> tuple:
    return ("BLOCK_JOB_CANCELLED", device)


def pending(job: str = JOB) -> tuple:
    """BLOCK_JOB_PENDING: only for a job with auto-finalize=false."""
    return ("BLOCK_JOB_PENDING", job)


def event(result, name: str, n: int = 0) -> dict:
    """The data of the ``n``-th event called ``name``."""
    return [e["data"] for e in result.events if e["event"] == name][n]


def event_time(result, name: str, n: int = 0) -> float:
    ts = [e["timestamp"] for e in result.events if e["event"] == name][n]
    return ts["seconds"] + ts["microseconds"] / 1e6


def commands(result, execute: str | None = None) -> list[dict]:
    """The command record, optionally one command only, without timestamps."""
    return [{k: v for k, v in c.items() if k != "timestamp"}
            for c in result.commands if execute is None or c["execute"] == execute]


def refusals(result) -> list[tuple[str, str]]:
    """``(command, error description)`` of every refused command."""
    return [(c["execute"], c["error"]["desc"]) for c in result.commands if "error" in c]


def job_summary(result, job: str = JOB) -> dict:
    return result.summary["jobs"][job]


def violations(result) -> list[dict]:
    return result.summary["invariants"]["violations"]


# -- the job status machine, as SEMANTICS.md states it ----------------------------------

#: Legal transitions of today's QEMU (qapi/job.json), written out here rather
#: than imported, so that the tests check the engine against the spec.
LEGAL = {
    None: {"created"},
    "created": {"running", "aborting", "null"},
    "running": {"paused", "ready", "waiting", "aborting"},
    "paused": {"running"},
    "ready": {"standby", "waiting", "aborting"},
    "standby": {"ready"},
    "waiting": {"pending", "aborting"},
    "pending": {"aborting", "concluded"},
    "aborting": {"aborting", "concluded"},
    "concluded": {"null"},
    "null": set(),
}


def statuses(result, job: str = JOB) -> list[str]:
    return [e["data"]["status"] for e in result.events
            if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job]


def illegal_transitions(result, job: str = JOB) -> list[tuple]:
    """Status changes of ``job`` that SEMANTICS.md does not allow."""
    seq = statuses(result, job)
    return [(a, b) for a, b in zip([None, *seq], seq) if b not in LEGAL[a]]
