"""The scenario library (``scenarios/*.toml``): every file loads, runs, and ends
the way SEMANTICS.md says it should.

Each scenario answers one question; :data:`EXPECTATIONS` holds, per file stem,
what the run must show: per job the outcome, final status, end event, error
string, integrity verdict, io-status, errors by action and the exact sequence
of JOB_STATUS_CHANGE statuses; the order, absence and number of key events;
the VM's final state and time paused; per drive the guest-visible counters;
the management commands and whether each was accepted; and, always, no
invariant violation.  A scenario file without an entry fails the test, and
so does an entry without a file.

"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import blocksim

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.toml"))
STEMS = [p.stem for p in FILES]

EIO = "Input/output error"
ENOSPC = "No space left on device"


# --------------------------------------------------------------------------
# Matchers for values that depend on timing rather than on the semantics

@dataclass(frozen=True)
class Between:
    lo: float
    hi: float

    def __call__(self, value: Any) -> bool:
        return value is not None and self.lo <= value <= self.hi

    def __repr__(self) -> str:
        return f"between {self.lo} and {self.hi}"


@dataclass(frozen=True)
class AtLeast:
    lo: float

    def __call__(self, value: Any) -> bool:
        return value is not None and value >= self.lo

    def __repr__(self) -> str:
        return f">= {self.lo}"


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


#: In an event-data or query-result expectation: the key must not be there.
MISSING = _Missing()
#: A job that was paused for some time (strictly more than zero seconds).
PAUSED = AtLeast(1e-9)


def matches(expected: Any, actual: Any) -> bool:
    """Equality, except that matchers are called and dicts compared key by key
    (same keys, each value matched)."""
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and set(expected) == set(actual)
                and all(matches(v, actual[k]) for k, v in expected.items()))
    if callable(expected) and not isinstance(expected, type):
        return bool(expected(actual))
    return expected == actual


def check_value(where: str, expected: Any, actual: Any) -> None:
    assert matches(expected, actual), f"{where}: expected {expected!r}, got {actual!r}"


def check_subset(where: str, expected: dict, actual: dict) -> None:
    for key, want in expected.items():
        if want is MISSING:
            assert key not in actual, f"{where}: {key!r} should be absent, got {actual[key]!r}"
        else:
            assert key in actual, f"{where}: {key!r} is missing from {actual!r}"
            check_value(f"{where}.{key}", want, actual[key])


# --------------------------------------------------------------------------
# Events as short tokens: "BLOCK_JOB_ERROR write stop", "status ready", "STOP"

def token(event: dict) -> str:
    name, data = event["event"], event["data"]
    if name in ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR"):
        return f"{name} {data['operation']} {data['action']}"
    if name == "JOB_STATUS_CHANGE":
        return f"status {data['status']}"
    return name


def hits(pattern: str, event: dict) -> bool:
    """A pattern is a full token or a bare event name."""
    return pattern == token(event) or pattern == event["event"]


def seconds(event: dict) -> float:
    ts = event["timestamp"]
    return ts["seconds"] + ts["microseconds"] / 1e6


# --------------------------------------------------------------------------
# The expectations, one entry per scenario file

def job(**fields) -> dict:
    """Expected summary of one job.  Keys are summary keys (``outcome``,
    ``final_status``, ``end_event``, ``error``, ``integrity``, ``io_status``,
    ``pivoted``, ``time_paused`` ...) plus ``errors`` (errors by action, every
    action listed), ``ready`` (whether it ever became ready) and ``statuses``
    (the exact JOB_STATUS_CHANGE sequence)."""
    return fields


def refused(fragment: str) -> tuple[str, str]:
    return ("refused", fragment)


ACCEPTED = ("accepted", None)
NO_ERRORS = {"report": 0, "ignore": 0, "stop": 0}
STREAM_OK = ["created", "running", "waiting", "pending", "concluded", "null"]
MIRROR_COMPLETED = ["created", "running", "ready", "waiting", "pending", "concluded", "null"]
FAILED = ["created", "running", "aborting", "concluded", "null"]
QUIET_VM = {"final_state": "running", "stops": 0, "time_paused": 0.0}
QUIET_DRIVE = {"guest_errors": 0, "writes_lost": 0, "lost_bytes": 0, "corrupt_bytes": 0,
               "io_status": "ok", "errors_by_action": NO_ERRORS}

BACKUP_START = ["created", "running", "paused", "running"]
BACKUP_COMPLETED = BACKUP_START + ["waiting", "pending", "concluded", "null"]

#: Where a stream's run holding 40 MiB starts (block/stream.c: stream_run).
RUN_AT_40_MIB = Between(40 * 2**20 - 512 * 2**10 + 1, 40 * 2**20)

EXPECTATIONS: dict[str, dict] = {
    # ---- backup: the copy-before-write filter and bitmaps ----
    "backup-target-fails-guest-writes-break": {
        "jobs": {"backup0": job(
            outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
            # (force-cancelled while paused by the error: job_cancel_async_locked
            # -> block_job_user_resume resets the io-status)
            integrity="not-checked", io_status="ok", ready=False,
            errors={"report": 0, "ignore": 0, "stop": 1},
            copy_before_write={"writes": AtLeast(100), "bytes": AtLeast(100 * 65536),
                               "failed": AtLeast(10)},
            statuses=BACKUP_START + ["paused", "running", "aborting", "concluded", "null"])},
        # the guest's writes fail long before the job notices anything
        "order": ["BLOCK_IO_ERROR write report", "BLOCK_JOB_ERROR write stop",
                  "BLOCK_JOB_CANCELLED"],
        "gap": ("BLOCK_IO_ERROR", "BLOCK_JOB_ERROR", AtLeast(3.0)),
        "counts": {"BLOCK_JOB_ERROR": 1},
        "last_before": ("BLOCK_IO_ERROR", Between(5.0, 6.0)),    # none once the filter is gone
        "absent": ["BLOCK_JOB_COMPLETED", "STOP"],
        "same_count": ("BLOCK_IO_ERROR", ("drives", "vda", "guest_errors")),
        "vm": QUIET_VM,
        "drives": {"vda": {"node": "disk", "guest_errors": AtLeast(10), "writes_lost": 0,
                           "lost_bytes": 0, "corrupt_bytes": 0}},
        "commands": [("blockdev-backup", ACCEPTED), ("block-job-cancel", ACCEPTED)],
    },
    "backup-incremental-after-failed-full": {
        "jobs": {
            "full": job(outcome="completed-with-error", final_status="null",
                        end_event="BLOCK_JOB_COMPLETED", error=EIO, integrity="not-checked",
                        errors={"report": 1, "ignore": 0, "stop": 0},
                        statuses=BACKUP_START + ["aborting", "concluded", "null"]),
            # on-success merged b0 back: the incremental copies its 8 MiB
            "incr": job(outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
                        integrity="identical", errors=NO_ERRORS, len=8 * 1024 * 1024,
                        offset=8 * 1024 * 1024, statuses=BACKUP_COMPLETED)},
        "order": ["BLOCK_JOB_ERROR write report", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_COMPLETED"],
        "vm": QUIET_VM,
        "images": {"disk": {"bitmaps": [{"name": "b0", "recording": True, "persistent": True,
                                         "busy": False, "granularity": 65536, "count": 0}]}},
        "commands": [("blockdev-backup", ACCEPTED), ("job-start", ACCEPTED)],
    },
    "backup-checkpoints-incremental-retry": {
        "jobs": {
            "full0": job(outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
                         integrity="identical", errors=NO_ERRORS, len=64 * 1024 * 1024,
                         statuses=BACKUP_COMPLETED),
            "inc1": job(outcome="completed-with-error", final_status="null",
                        end_event="BLOCK_JOB_COMPLETED", error=EIO, integrity="not-checked",
                        errors={"report": 1, "ignore": 0, "stop": 0},
                        statuses=BACKUP_START + ["aborting", "concluded", "null"]),
            # c1 kept (bitmap-mode never): the retry copies as much again
            "inc2": job(outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
                        integrity="identical", errors=NO_ERRORS, len=16252928,
                        statuses=BACKUP_COMPLETED)},
        "order": ["BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR write report", "BLOCK_JOB_COMPLETED",
                  "BLOCK_JOB_COMPLETED"],
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        # c2, added by the failed attempt's transaction, records from then on;
        # c1, disabled by it, holds what the two incrementals copied
        "images": {"disk": {"bitmaps": [
            {"name": "c2", "recording": True, "persistent": True, "busy": False,
             "granularity": 65536, "count": 26148864},
            {"name": "c1", "recording": False, "persistent": True, "busy": False,
             "granularity": 65536, "count": 16252928}]}},
        "commands": [("transaction", ACCEPTED), ("transaction", ACCEPTED), ("job-start", ACCEPTED)],
    },
    "backup-flaky-target-which-policy-finishes": {
        "jobs": {"backup0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", io_status="ok", time_paused=0.0,
            errors={"report": 0, "ignore": AtLeast(2), "stop": 0}, statuses=BACKUP_COMPLETED)},
        "order": ["BLOCK_JOB_ERROR write ignore", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR write stop", "STOP"],
        "vm": QUIET_VM,
        "drives": {"vda": {"guest_errors": AtLeast(1), "writes_lost": 0, "corrupt_bytes": 0,
                           "errors_by_action": {"report": AtLeast(1), "ignore": 0, "stop": 0}}},
        "commands": [("blockdev-backup", ACCEPTED)],
    },
    # ---- 1. stream: backing-image read errors under each policy ----
    "stream-read-error-report": {
        "profile": "qemu",
        "jobs": {"stream0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, integrity="not-checked", io_status="ok", ready=False, time_paused=0.0,
            errors={"report": 1, "ignore": 0, "stop": 0}, statuses=FAILED,
            # the start of the failing run, which holds 40 MiB: runs are at most
            # 512 KiB from where the last one ended (stream_run), and the guest's
            # clusters in the first 16 MiB cut some short
            offset=RUN_AT_40_MIB)},
        "order": ["status running", "BLOCK_JOB_ERROR read report", "status aborting",
                  "BLOCK_JOB_COMPLETED", "status concluded", "status null"],
        "absent": ["BLOCK_JOB_CANCELLED", "BLOCK_JOB_READY", "STOP", "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "event_data": [("BLOCK_JOB_ERROR", {"device": "stream0"}),
                       ("BLOCK_JOB_COMPLETED", {"type": "stream", "device": "stream0", "error": EIO})],
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        "images": {"top": {"allocated": Between(1, 64 * 2**20 - 1)}},   # backing still needed
        "commands": [("block-stream", ACCEPTED)],
    },
    "stream-read-error-ignore": {
        "jobs": {"stream0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, integrity="not-checked", ready=False, time_paused=0.0,
            errors={"report": 0, "ignore": 1, "stop": 0}, statuses=FAILED,
            offset=64 * 2**20)},                       # walked to the very end
        "order": ["BLOCK_JOB_ERROR read ignore", "status aborting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "STOP", "status paused", "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "event_data": [("BLOCK_JOB_COMPLETED", {"error": EIO, "offset": 64 * 2**20})],
        # the job carried on for about 1.4 s after the error before ending
        "gap": ("BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED", Between(1.0, 2.0)),
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        # everything but the skipped 512 KiB chunk was copied: backing file kept
        "images": {"top": {"allocated": 64 * 2**20 - 512 * 2**10}},
    },
    "stream-read-error-stop-resume": {
        "jobs": {"stream0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=None, integrity="identical", io_status="ok", time_paused=Between(2.9, 3.1),
            errors={"report": 0, "ignore": 0, "stop": 1},
            statuses=["created", "running", "paused", "running", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR read stop", "status paused", "status running",
                  "BLOCK_JOB_COMPLETED"],
        "absent": ["STOP", "RESUME", "BLOCK_JOB_CANCELLED"],
        "event_data": [("BLOCK_JOB_COMPLETED", {"error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        "images": {"top": {"allocated": 64 * 2**20}},
        "commands": [("block-stream", ACCEPTED),
                     ("query-block-jobs", {"status": "paused", "paused": True,
                                           "io-status": "failed"}),
                     ("block-job-resume", ACCEPTED)],
    },
    "stream-read-eio-enospc-policy": {
        "jobs": {"stream0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, time_paused=0.0, errors={"report": 1, "ignore": 0, "stop": 0},
            statuses=FAILED)},
        "order": ["BLOCK_JOB_ERROR read report", "status aborting", "BLOCK_JOB_COMPLETED"],
        "absent": ["status paused", "BLOCK_JOB_CANCELLED", "STOP"],
        "event_data": [("BLOCK_JOB_ERROR", {"action": "report"})],
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        "commands": [("block-stream", ACCEPTED), ("block-job-resume", refused("not found"))],
    },
    "stream-thin-top-enospc-reported-as-read": {
        "jobs": {"stream0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=None, integrity="identical", io_status="ok", time_paused=Between(2.9, 3.1),
            errors={"report": 0, "ignore": 0, "stop": 1},
            statuses=["created", "running", "paused", "running", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR read stop", "status paused", "status running",
                  "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_ERROR write stop", "BLOCK_JOB_ERROR write report", "STOP",
                   "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "vm": QUIET_VM,
        "drives": {"vda": QUIET_DRIVE},
        "images": {"top": {"allocated": 64 * 2**20, "capacity": 64 * 2**20}},
        "commands": [("block-stream", ACCEPTED),
                     ("query-block-jobs", {"status": "paused", "io-status": "nospace",
                                           "offset": Between(32 * 2**20 - 512 * 2**10 + 1,
                                                             32 * 2**20)}),
                     ("thin-extend", ACCEPTED), ("block-job-resume", ACCEPTED)],
    },

    # ---- 2. mirror: source read errors under each policy ----
    "mirror-source-read-error-report": {
        "jobs": {"mirror0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, integrity="not-checked", pivoted=False, ready=False, time_paused=0.0,
            errors={"report": 1, "ignore": 0, "stop": 0}, statuses=FAILED)},
        "order": ["BLOCK_JOB_ERROR read report", "status aborting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR write",
                   "status paused", "STOP"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "event_data": [("BLOCK_JOB_ERROR", {"device": "mirror0"}),
                       ("BLOCK_JOB_COMPLETED", {"type": "mirror", "error": EIO})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("block-job-complete", refused("'mirror0' not found"))],
    },
    "mirror-source-read-error-ignore": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED", error=None,
            integrity="identical", pivoted=True, ready=True, time_paused=0.0,
            errors={"report": 0, "ignore": 1, "stop": 0}, statuses=MIRROR_COMPLETED)},
        "order": ["BLOCK_JOB_ERROR read ignore", "status ready", "BLOCK_JOB_READY",
                  "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "status paused", "STOP"],
        "counts": {"BLOCK_JOB_ERROR": 1, "BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_JOB_COMPLETED", {"error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy")},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    "mirror-source-read-error-stop-resume": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", pivoted=True, io_status="ok", time_paused=Between(1.8, 2.1),
            errors={"report": 0, "ignore": 0, "stop": 1},
            statuses=["created", "running", "paused", "running", "ready", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR read stop", "status paused", "status running",
                  "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"],
        "absent": ["STOP", "RESUME", "BLOCK_JOB_CANCELLED"],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy")},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-resume", ACCEPTED),
                     ("block-job-complete", ACCEPTED)],
    },
    "mirror-source-read-eio-enospc-policy": {
        "jobs": {"mirror0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, pivoted=False, ready=False, time_paused=0.0,
            errors={"report": 1, "ignore": 0, "stop": 0}, statuses=FAILED)},
        "order": ["BLOCK_JOB_ERROR read report", "status aborting", "BLOCK_JOB_COMPLETED"],
        "absent": ["status paused", "BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED", "STOP"],
        "event_data": [("BLOCK_JOB_ERROR", {"action": "report", "operation": "read"})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
    },

    # ---- 2. mirror: target write errors; 10. the same failure under both profiles ----
    "mirror-target-write-error-report-qemu": {
        "profile": "qemu",
        "jobs": {"mirror0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, pivoted=False, ready=False, errors={"report": 1, "ignore": 0, "stop": 0},
            statuses=FAILED)},
        "order": ["status running", "BLOCK_JOB_ERROR write report", "status aborting",
                  "BLOCK_JOB_COMPLETED", "status concluded", "status null"],
        "absent": ["BLOCK_JOB_CANCELLED", "BLOCK_JOB_READY", "STOP"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "event_data": [("BLOCK_JOB_ERROR", {"device": "mirror0", "operation": "write",
                                            "action": "report"}),
                       ("BLOCK_JOB_COMPLETED", {"device": "mirror0", "error": EIO})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
    },
    "mirror-target-write-error-report-rfc2012": {
        "profile": "rfc-2012",
        "jobs": {"mirror0": job(
            outcome="completed-with-error", end_event="BLOCK_JOB_CANCELLED", error=EIO,
            pivoted=False, ready=False, errors={"report": 1, "ignore": 0, "stop": 0},
            statuses=[])},                               # no status machine in 2012
        "order": ["BLOCK_JOB_ERROR write report", "BLOCK_JOB_CANCELLED"],
        "absent": ["BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE", "BLOCK_JOB_READY", "STOP"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "event_data": [("BLOCK_JOB_ERROR", {"device": "vda", "operation": "write",
                                            "action": "report"}),
                       ("BLOCK_JOB_CANCELLED", {"device": "vda", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
    },
    "mirror-target-error-while-ready-stop": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", pivoted=True, io_status="ok", time_paused=Between(2.9, 3.1),
            errors={"report": 0, "ignore": 0, "stop": Between(1, 16)},
            statuses=["created", "running", "ready", "standby", "ready", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["status ready", "BLOCK_JOB_READY", "BLOCK_JOB_ERROR write stop",
                  "status standby", "status ready", "BLOCK_JOB_COMPLETED"],
        "absent": ["status paused", "STOP", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR read"],
        "counts": {"BLOCK_JOB_READY": 1},              # no second READY after standby
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy")},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("query-block-jobs", {"status": "standby", "ready": True, "paused": True,
                                           "io-status": "failed"}),
                     ("block-job-resume", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    # ---- 3. ENOSPC on a thin mirror target, rescued ----
    # ---- commit: live merge, intermediate commit, active commit under load ----
    "commit-live-merge-thin-base-enospc": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical", pivoted=True,
            io_status="ok", time_paused=Between(1.3, 1.6),
            # one per copy operation in flight when the base filled up
            errors={"report": 0, "ignore": 0, "stop": AtLeast(1)},
            statuses=["created", "running", "paused", "running", "ready", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR write stop", "status paused", "status running",
                  "status ready", "BLOCK_JOB_READY", "status waiting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_ERROR write report", "BLOCK_JOB_ERROR read stop", "STOP",
                   "BLOCK_JOB_CANCELLED", "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_JOB_READY", {"type": "commit", "device": "merge"}),
                       ("BLOCK_JOB_COMPLETED", {"type": "commit", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="base")},
        "images": {"base": {"capacity": 224 * 2**20}},
        "commands": [("block-commit", ACCEPTED), ("thin-extend", ACCEPTED),
                     ("block-job-resume", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    "commit-intermediate-read-error-ignore-retries": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical",
            io_status="ok", ready=False, time_paused=0.0, len=128 * 2**20, offset=128 * 2**20,
            # the same chunk retried at once, three times, then copied
            errors={"report": 0, "ignore": 3, "stop": 0}, statuses=STREAM_OK)},
        "order": ["status running", "BLOCK_JOB_ERROR read ignore", "status waiting",
                  "BLOCK_JOB_COMPLETED", "status null"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED", "status aborting", "STOP",
                   "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_ERROR": 3},
        "event_data": [("BLOCK_JOB_ERROR", {"device": "merge", "operation": "read"}),
                       ("BLOCK_JOB_COMPLETED", {"type": "commit", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="top")},
        "commands": [("block-commit", ACCEPTED)],
    },
    "commit-active-converges-under-guest-writes": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical", pivoted=True,
            io_status="ok", time_paused=0.0, errors=NO_ERRORS, ready_at=Between(1.0, 2.0),
            statuses=MIRROR_COMPLETED)},
        "order": ["status running", "status ready", "BLOCK_JOB_READY", "status waiting",
                  "BLOCK_JOB_COMPLETED", "status null"],
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "STOP", "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_JOB_READY", {"type": "commit", "device": "merge"})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="base")},
        "commands": [("block-commit", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    "commit-intermediate-read-error-stop-resume": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical",
            io_status="ok", ready=False, len=128 * 2**20, offset=128 * 2**20,
            # the first resume's retry of the same chunk fails at once: one 4 s pause
            time_paused=Between(3.9, 4.1), errors={"report": 0, "ignore": 0, "stop": 2},
            statuses=["created", "running", "paused", "running", "paused", "running",
                      "waiting", "pending", "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR read stop", "status paused", "status running",
                  "BLOCK_JOB_ERROR read stop", "status paused", "status running",
                  "BLOCK_JOB_COMPLETED"],
        "gap": ("BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED", Between(5.0, 6.0)),
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED", "status aborting", "STOP",
                   "BLOCK_IO_ERROR", "BLOCK_JOB_ERROR write stop"],
        "counts": {"BLOCK_JOB_ERROR": 2},
        "event_data": [("BLOCK_JOB_COMPLETED", {"type": "commit", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="top")},
        "commands": [("block-commit", ACCEPTED), ("block-job-resume", ACCEPTED),
                     ("block-job-resume", ACCEPTED)],
    },
    "commit-active-cancel-when-ready": {
        # a plain cancel of a ready active commit: COMPLETED, no pivot
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical", pivoted=False,
            io_status="ok", time_paused=0.0, errors=NO_ERRORS, ready_at=Between(1.0, 2.0),
            finished_at=Between(5.0, 5.1), statuses=MIRROR_COMPLETED)},
        "order": ["status ready", "BLOCK_JOB_READY", "status waiting", "BLOCK_JOB_COMPLETED",
                  "status null"],
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "STOP", "BLOCK_IO_ERROR"],
        "counts": {"BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_JOB_COMPLETED", {"type": "commit", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="top")},
        "commands": [("block-commit", ACCEPTED), ("block-job-cancel", ACCEPTED)],
    },
    "commit-intermediate-thin-base-enospc-extend": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical",
            io_status="ok", ready=False, time_paused=Between(1.4, 1.6),
            errors={"report": 0, "ignore": 0, "stop": 1},
            statuses=["created", "running", "paused", "running", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR write stop", "status paused", "status running",
                  "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_ERROR read stop", "BLOCK_JOB_ERROR write report",
                   "STOP", "BLOCK_IO_ERROR", "BLOCK_JOB_CANCELLED"],
        "event_data": [("BLOCK_JOB_COMPLETED", {"type": "commit", "error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="top")},
        "images": {"base": {"capacity": 240 * 2**20, "allocated": 128 * 2**20}},
        "commands": [("block-commit", ACCEPTED), ("thin-extend", ACCEPTED),
                     ("block-job-resume", ACCEPTED)],
    },
    "backup-guest-write-latency-slow-target": {
        "jobs": {"backup0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", io_status="ok", time_paused=0.0, errors=NO_ERRORS,
            finished_at=Between(7.5, 8.5), len=256 * 2**20, offset=256 * 2**20,
            # the guest copies most of its 64 MiB working set itself
            copy_before_write={"writes": Between(600, 1024), "bytes": Between(600 * 2**16, 2**26),
                               "failed": 0},
            statuses=BACKUP_COMPLETED)},
        "order": ["BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "BLOCK_JOB_CANCELLED", "STOP"],
        "vm": QUIET_VM,
        # about 1.8 ms on average, against 0.1 ms without the backup
        "drives": {"vda": dict(QUIET_DRIVE, node="disk", mean_latency=Between(0.001, 0.003))},
        "commands": [("blockdev-backup", ACCEPTED)],
    },
    "backup-incremental-cancelled-then-retried": {
        "jobs": {
            "incr1": job(outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
                         integrity="not-checked", errors=NO_ERRORS, finished_at=2.0,
                         statuses=BACKUP_START + ["aborting", "concluded", "null"]),
            # on-success merged b0 back whole: the 16 MiB and what the guest wrote since
            "incr2": job(outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
                         integrity="identical", errors=NO_ERRORS,
                         len=Between(20 * 2**20, 28 * 2**20), statuses=BACKUP_COMPLETED)},
        "order": ["BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "STOP"],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-backup", ACCEPTED), ("block-job-cancel", ACCEPTED),
                     ("job-start", ACCEPTED)],
    },
    "backup-source-bad-sector-blocks-guest-repair": {
        "jobs": {"backup0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, integrity="not-checked", errors={"report": 1, "ignore": 0, "stop": 0},
            finished_at=Between(5.0, 5.4),
            copy_before_write={"writes": 0, "bytes": 0, "failed": 9},
            statuses=BACKUP_START + ["aborting", "concluded", "null"])},
        # the guest's repairs fail until the job's own read fails; none after
        "order": ["BLOCK_IO_ERROR write report", "BLOCK_JOB_ERROR read report",
                  "BLOCK_JOB_COMPLETED"],
        "last_before": ("BLOCK_IO_ERROR", Between(4.9, 5.2)),
        "counts": {"BLOCK_IO_ERROR": 9, "BLOCK_JOB_ERROR": 1},
        "absent": ["STOP", "BLOCK_JOB_CANCELLED"],
        "vm": QUIET_VM,
        "drives": {"vda": {"node": "disk", "requests": 18, "guest_errors": 9, "writes_lost": 0,
                           "lost_bytes": 0, "corrupt_bytes": 0}},
        "commands": [("blockdev-backup", ACCEPTED)],
    },
    "mirror-thin-target-enospc": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", pivoted=True, io_status="ok", time_paused=Between(2.5, 3.1),
            errors={"report": 0, "ignore": 0, "stop": AtLeast(1)},
            statuses=["created", "running", "paused", "running", "ready", "waiting", "pending",
                      "concluded", "null"])},
        "order": ["BLOCK_JOB_ERROR write stop", "status paused", "status running",
                  "status ready", "BLOCK_JOB_READY", "status waiting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_ERROR write report", "STOP", "BLOCK_JOB_CANCELLED"],
        "counts": {"BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_JOB_COMPLETED", {"error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy")},
        "images": {"copy": {"capacity": 128 * 2**20, "allocated": 96 * 2**20}},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("query-block-jobs", {"status": "paused", "io-status": "nospace"}),
                     ("thin-extend", ACCEPTED), ("block-job-resume", ACCEPTED),
                     ("block-job-complete", ACCEPTED)],
    },
    "mirror-thin-target-extend-once-then-give-up": {
        "jobs": {"mirror0": job(
            outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
            # (the cancel while paused resets the io-status: block_job_user_resume)
            pivoted=False, io_status="ok", offset=64 * 2**20,
            errors={"report": 0, "ignore": 0, "stop": 32},
            statuses=["created", "running", "paused", "running", "paused", "running",
                      "aborting", "concluded", "null"])},
        # sixteen errors at each fill-up (a whole iteration of copies in
        # flight, QEMU 7.2's mirror_iteration): only `after` tells "filled
        # up again"
        "order": ["BLOCK_JOB_ERROR write stop", "status paused", "status running",
                  "BLOCK_JOB_ERROR write stop", "status paused", "BLOCK_JOB_CANCELLED"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "STOP"],
        "counts": {"BLOCK_JOB_ERROR": 32},
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "images": {"copy": {"capacity": 64 * 2**20, "allocated": 64 * 2**20}},
        "commands": [("blockdev-mirror", ACCEPTED), ("thin-extend", ACCEPTED),
                     ("block-job-resume", ACCEPTED), ("block-job-cancel", ACCEPTED)],
    },
    "mirror-paused-cancel-needs-force": {
        "jobs": {"mirror0": job(
            outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
            # (the forced cancel resets the io-status: block_job_user_resume)
            error=None, pivoted=False, ready=False, io_status="ok",
            # the operations of the iteration in flight fail too, one event each
            time_paused=Between(2.9, 3.1), errors={"report": 0, "ignore": 0, "stop": 16},
            statuses=["created", "running", "paused", "running", "aborting", "concluded",
                      "null"])},
        "order": ["BLOCK_JOB_ERROR write stop", "status paused", "status aborting",
                  "BLOCK_JOB_CANCELLED"],
        "absent": ["BLOCK_JOB_COMPLETED", "BLOCK_JOB_READY", "STOP"],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("block-job-pause", refused("already paused")),
                     ("block-job-cancel", refused("currently paused")),
                     ("block-job-cancel", ACCEPTED)],
    },
    "mirror-iostatus-sticky-qemu": {
        "profile": "qemu",
        "jobs": {"mirror0": job(
            outcome="paused", final_status="paused", end_event=None, io_status="nospace",
            ready=False, errors={"report": 0, "ignore": 0, "stop": 16},
            statuses=["created", "running", "paused"])},
        # the job pauses once its operations in flight are done (QEMU's
        # mirror_pause): the read errors of those come first
        "order": ["BLOCK_JOB_ERROR write stop", "BLOCK_JOB_ERROR read stop", "status paused"],
        "absent": ["BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "STOP"],
        "event_data": [("BLOCK_JOB_ERROR", {"device": "mirror0"})],
        "vm": QUIET_VM,
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("query-block-jobs", {"status": "paused", "paused": True,
                                           "io-status": "nospace"})],
    },
    "mirror-iostatus-ranked-rfc2012": {
        "profile": "rfc-2012",
        "jobs": {"mirror0": job(
            outcome="paused", end_event=None, io_status="failed", ready=False,
            errors={"report": 0, "ignore": 0, "stop": 16}, statuses=[])},
        "order": ["BLOCK_JOB_ERROR write stop", "BLOCK_JOB_ERROR read stop"],
        "absent": ["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "STOP"],
        "event_data": [("BLOCK_JOB_ERROR", {"device": "vda"})],
        "vm": QUIET_VM,
        # the target's ENOSPC went to the target's io-status, not the job's
        "images": {"copy": {"io_status": "nospace"}, "disk": {"io_status": "ok"}},
        "commands": [("drive-mirror", ACCEPTED),
                     # the 2012 query-block-jobs shape: no status, ready, busy
                     ("query-block-jobs", {"device": "vda", "paused": True, "io-status": "failed",
                                           "status": MISSING, "ready": MISSING})],
    },
    "mirror-stop-policy-refused-rfc2012": {
        "profile": "rfc-2012",
        "jobs": {"mirror0": job(outcome="refused", final_status="none", end_event=None,
                                ready=False, errors=NO_ERRORS, statuses=[], bytes_copied=0)},
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED",
                   "JOB_STATUS_CHANGE", "STOP"],
        "counts": {"BLOCK_JOB_READY": 0},
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk", requests=500)},
        "images": {"copy": {"allocated": 0}},
        "commands": [("drive-mirror", refused("Invalid parameter 'on-target-error'"))],
    },

    # ---- 9. a persistent target fault under ignore, ended by a cancel ----
    "mirror-target-ignore-persistent-cancel": {
        "jobs": {"mirror0": job(
            outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
            error=None, pivoted=False, ready=False, time_paused=0.0,
            errors={"report": 0, "ignore": AtLeast(20), "stop": 0},
            statuses=["created", "running", "aborting", "concluded", "null"], finished_at=12.0)},
        "order": ["BLOCK_JOB_ERROR write ignore", "status aborting", "BLOCK_JOB_CANCELLED"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "status paused", "STOP",
                   "BLOCK_JOB_ERROR write report"],
        # the retries go on for the whole life of the job, not just once
        "counts": {"BLOCK_JOB_ERROR write ignore": AtLeast(20)},
        "last_before": ("BLOCK_JOB_ERROR", Between(11.0, 12.0)),
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("block-job-complete", refused("cannot accept command verb 'complete'")),
                     ("block-job-cancel", ACCEPTED)],
    },
    # ---- 7. a flaky target under ignore ----
    "mirror-flakey-target-ignore": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", pivoted=True, time_paused=0.0,
            errors={"report": 0, "ignore": AtLeast(2), "stop": 0}, statuses=MIRROR_COMPLETED)},
        "order": ["BLOCK_JOB_ERROR write ignore", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "status paused", "status standby", "STOP"],
        "counts": {"BLOCK_JOB_READY": 1},
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy")},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    # ---- 8. bad blocks that heal on write ----
    "mirror-dust-source-heals-on-write": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            integrity="identical", pivoted=True, ready_at=AtLeast(4.0),
            errors={"report": 0, "ignore": AtLeast(2), "stop": 0}, statuses=MIRROR_COMPLETED)},
        "order": ["BLOCK_JOB_ERROR read ignore", "BLOCK_IO_ERROR read report", "BLOCK_JOB_READY",
                  "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "status paused", "STOP"],
        "counts": {"BLOCK_IO_ERROR": 1},               # the read after the rewrite worked
        "last_before": ("BLOCK_JOB_ERROR", Between(2.0, 4.0)),   # none after both heals
        "vm": QUIET_VM,
        "drives": {"vda": {"node": "copy", "guest_errors": 1, "reads": 2, "writes": 3,
                           "writes_lost": 0, "corrupt_bytes": 0,
                           "errors_by_action": {"report": 1, "ignore": 0, "stop": 0}}},
        "commands": [("blockdev-mirror", ACCEPTED), ("guest-burst", ACCEPTED),
                     ("guest-burst", ACCEPTED), ("guest-burst", ACCEPTED),
                     ("guest-burst", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    # ---- 6. convergence under guest load, and a job the guest outpaces ----
    "mirror-converges-under-guest-load": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=None, integrity="identical", pivoted=True, time_paused=0.0,
            ready_at=Between(3.0, 6.0), errors=NO_ERRORS, statuses=MIRROR_COMPLETED)},
        "order": ["status running", "status ready", "BLOCK_JOB_READY", "status waiting",
                  "status pending", "BLOCK_JOB_COMPLETED", "status concluded", "status null"],
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "STOP"],
        "counts": {"BLOCK_JOB_READY": 1},
        "gap": ("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", Between(2.0, 2.1)),
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="copy", requests=4000)},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-complete", ACCEPTED)],
    },
    "mirror-never-ready-guest-outpaces": {
        "jobs": {"mirror0": job(
            outcome="never-ready", final_status="running", end_event=None, ready=False,
            pivoted=False, errors=NO_ERRORS, statuses=["created", "running"],
            bytes_copied=Between(60 * 2**20, 84 * 2**20))},      # about 4 MiB/s for 20 s
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED",
                   "BLOCK_JOB_ERROR", "STOP"],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk", requests=8000)},
        "commands": [("blockdev-mirror", ACCEPTED),
                     ("block-job-complete", refused("cannot accept command verb 'complete'"))],
    },
    # ---- 11. cancel when ready, plain vs force; fail the Nth time ----
    "mirror-cancel-when-ready": {
        "jobs": {"mirror0": job(
            outcome="completed", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=None, integrity="identical", pivoted=False, errors=NO_ERRORS,
            statuses=MIRROR_COMPLETED)},
        "order": ["BLOCK_JOB_READY", "status waiting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_CANCELLED", "status aborting", "BLOCK_JOB_ERROR"],
        "gap": ("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", Between(1.0, 1.1)),
        "event_data": [("BLOCK_JOB_COMPLETED", {"error": MISSING})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-cancel", ACCEPTED)],
    },
    "mirror-force-cancel-when-ready": {
        "jobs": {"mirror0": job(
            outcome="cancelled", final_status="null", end_event="BLOCK_JOB_CANCELLED",
            error=None, integrity="not-checked", pivoted=False, errors=NO_ERRORS,
            statuses=["created", "running", "ready", "aborting", "concluded", "null"])},
        "order": ["BLOCK_JOB_READY", "status aborting", "BLOCK_JOB_CANCELLED"],
        "absent": ["BLOCK_JOB_COMPLETED", "status waiting", "BLOCK_JOB_ERROR"],
        "gap": ("BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED", Between(1.0, 1.01)),
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="disk")},
        "commands": [("blockdev-mirror", ACCEPTED), ("block-job-cancel", ACCEPTED)],
    },
    "mirror-target-fail-nth-write": {
        "jobs": {"mirror0": job(
            outcome="completed-with-error", final_status="null", end_event="BLOCK_JOB_COMPLETED",
            error=EIO, ready=False, pivoted=False, errors={"report": 1, "ignore": 0, "stop": 0},
            # 20 writes pass, the 21st fails, the 22nd-32nd of its iteration land
            statuses=FAILED, bytes_copied=31 * 2**20, finished_at=Between(0.99, 1.05))},
        "order": ["BLOCK_JOB_ERROR write report", "status aborting", "BLOCK_JOB_COMPLETED"],
        "absent": ["BLOCK_JOB_READY", "BLOCK_JOB_CANCELLED"],
        "counts": {"BLOCK_JOB_ERROR": 1},
        "vm": QUIET_VM,
        "images": {"copy": {"allocated": 31 * 2**20}},
    },

    # ---- 4. a guest on a thin disk with werror=enospc ----
    "guest-thin-disk-enospc-pause": {
        "jobs": {},
        "order": ["BLOCK_IO_ERROR write stop", "STOP", "RESUME"],
        "absent": ["BLOCK_IO_ERROR write report", "BLOCK_IO_ERROR write ignore"],
        "counts": {"STOP": 1, "RESUME": 1, "BLOCK_IO_ERROR": 1},
        "event_data": [("BLOCK_IO_ERROR", {"device": "vda", "nospace": True, "reason": ENOSPC})],
        "gap": ("STOP", "RESUME", Between(5.99, 6.01)),
        "vm": {"final_state": "running", "stops": 1, "time_paused": Between(5.99, 6.01)},
        "drives": {"vda": {"writes_lost": 0, "lost_bytes": 0, "corrupt_bytes": 0,
                           "guest_errors": 0, "io_status": "ok", "requests": 1500,
                           "errors_by_action": {"report": 0, "ignore": 0, "stop": 1}}},
        "images": {"disk": {"capacity": 64 * 2**20}},
        "commands": [("thin-extend", ACCEPTED), ("cont", ACCEPTED)],
    },
    "guest-thin-disk-werror-ignore-loses-writes": {
        "jobs": {},
        "absent": ["STOP", "RESUME", "BLOCK_IO_ERROR write stop", "BLOCK_IO_ERROR write report"],
        "counts": {"BLOCK_IO_ERROR write ignore": Between(200, 260)},
        # (werror=ignore: no io-status, so no nospace; the reason says it)
        "event_data": [("BLOCK_IO_ERROR", {"nospace": MISSING, "reason": ENOSPC,
                                           "action": "ignore"})],
        "vm": QUIET_VM,
        "drives": {"vda": {"guest_errors": 0, "writes_lost": Between(200, 260),
                           "lost_bytes": AtLeast(200 * 64 * 2**10), "corrupt_bytes": 0,
                           "requests": 500}},
        "images": {"disk": {"allocated": 16 * 2**20, "capacity": 16 * 2**20}},
        "same_count": ("BLOCK_IO_ERROR write ignore", ("drives", "vda", "writes_lost")),
    },
    # ---- 5. VM stop draining in-flight requests that fail too ----
    "vm-stop-drains-failing-requests": {
        "jobs": {},
        "order": ["BLOCK_IO_ERROR", "STOP", "BLOCK_IO_ERROR", "RESUME"],
        "absent": ["BLOCK_IO_ERROR read report", "BLOCK_IO_ERROR write report"],
        "counts": {"STOP": 1, "RESUME": 1, "BLOCK_IO_ERROR": Between(2, 8)},
        "first_is": "BLOCK_IO_ERROR",
        # today's BLOCK_IO_ERROR carries node-name, nospace and reason
        "event_data": [("BLOCK_IO_ERROR", {"device": "vda", "node-name": "lun", "action": "stop",
                                           "nospace": False, "reason": EIO})],
        "gap": ("STOP", "RESUME", Between(0.99, 1.01)),
        "vm": {"final_state": "running", "stops": 1, "time_paused": Between(0.99, 1.01)},
        "drives": {"vda": {"guest_errors": 0, "writes_lost": 0, "corrupt_bytes": 0,
                           "io_status": "ok",
                           "errors_by_action": {"report": 0, "ignore": 0, "stop": Between(2, 8)}}},
        "commands": [("cont", ACCEPTED)],
    },
    # ---- active mirror (copy-mode write-blocking) against background ----
    "mirror-active-converges-where-background-never": {
        "jobs": {
            "background": job(outcome="never-ready", final_status="running", end_event=None,
                              ready=False, pivoted=False, errors=NO_ERRORS,
                              statuses=["created", "running"]),
            "active": job(outcome="completed", final_status="null",
                          end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical",
                          pivoted=True, time_paused=0.0, ready_at=Between(7.9, 8.5),
                          errors=NO_ERRORS, statuses=MIRROR_COMPLETED)},
        "counts": {"BLOCK_JOB_READY": 1},
        "absent": ["BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "STOP"],
        "gap": ("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", Between(2.0, 2.1)),
        "vm": QUIET_VM,
        # the active mirror's guest waits for the array (1 ms) too
        "drives": {"vda": dict(QUIET_DRIVE, node="disk-a", requests=15000,
                               mean_latency=Between(0.0001, 0.0002)),
                   "vdb": dict(QUIET_DRIVE, node="copy-b", requests=15000,
                               mean_latency=Between(0.0009, 0.0011))},
        "commands": [("blockdev-mirror", ACCEPTED), ("blockdev-mirror", ACCEPTED),
                     ("block-job-complete", ACCEPTED)],
    },
    # ---- issue 18: thin volumes and the thin-provisioning controller ----
    "thin-guest-disk-outruns-extend": {
        "jobs": {},
        "order": ["BLOCK_WRITE_THRESHOLD", "VOLUME_EXTENDED", "BLOCK_WRITE_THRESHOLD",
                  "BLOCK_IO_ERROR write stop", "STOP", "VOLUME_EXTENDED", "RESUME"],
        "absent": ["VOLUME_EXTEND_FAILED", "BLOCK_IO_ERROR write report"],
        "counts": {"STOP": 4, "RESUME": 4, "VOLUME_EXTENDED": 6, "BLOCK_WRITE_THRESHOLD": 7},
        "event_data": [("BLOCK_WRITE_THRESHOLD", {"node-name": "disk-file"}),
                       ("BLOCK_IO_ERROR", {"device": "vda", "nospace": True, "reason": ENOSPC})],
        "vm": {"final_state": "running", "stops": 4, "time_paused": Between(9, 11)},
        "drives": {"vda": {"writes_lost": 0, "lost_bytes": 0, "corrupt_bytes": 0,
                           "guest_errors": 0, "io_status": "ok", "requests": 4000}},
        "images": {"disk": {"allocated": 4000 * 2**20}},
    },
    "thin-mirror-onto-thin-target": {
        "jobs": {"mirror0": job(outcome="completed", final_status="null",
                                end_event="BLOCK_JOB_COMPLETED", integrity="identical",
                                ready=True)},
        "order": ["BLOCK_WRITE_THRESHOLD", "BLOCK_JOB_ERROR write stop", "VOLUME_EXTENDED",
                  "status running", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"],
        "absent": ["STOP", "BLOCK_IO_ERROR", "VOLUME_EXTEND_FAILED", "BLOCK_JOB_ERROR write report"],
        # 1 GiB extends: vdsm doubles the chunk while the drive replicates
        "counts": {"VOLUME_EXTENDED": 2},
        "event_data": [("BLOCK_WRITE_THRESHOLD", {"node-name": "dst-file"}),
                       ("VOLUME_EXTENDED", {"image": "dst"})],
        "vm": QUIET_VM,
    },
    "thin-live-merge-onto-thin-base": {
        "jobs": {"merge": job(
            type="commit", outcome="completed", final_status="null",
            end_event="BLOCK_JOB_COMPLETED", error=None, integrity="identical", pivoted=True,
            io_status="ok", ready=True, time_paused=Between(8, 16),
            # one per copy operation in flight each time the base filled up
            errors={"report": 0, "ignore": 0, "stop": AtLeast(3)})},
        "order": ["BLOCK_WRITE_THRESHOLD", "BLOCK_JOB_ERROR write stop", "VOLUME_EXTENDED",
                  "BLOCK_WRITE_THRESHOLD", "BLOCK_JOB_ERROR write stop", "VOLUME_EXTENDED",
                  "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"],
        "absent": ["STOP", "BLOCK_IO_ERROR", "VOLUME_EXTEND_FAILED", "BLOCK_JOB_ERROR write report",
                   "BLOCK_JOB_CANCELLED"],
        "counts": {"VOLUME_EXTENDED": 4, "BLOCK_JOB_READY": 1},
        "event_data": [("BLOCK_WRITE_THRESHOLD", {"node-name": "base-file"}),
                       ("BLOCK_JOB_ERROR", {"device": "merge", "operation": "write"}),
                       ("BLOCK_JOB_READY", {"type": "commit"})],
        "vm": QUIET_VM,
        "drives": {"vda": dict(QUIET_DRIVE, node="base")},
    },
    "thin-bursty-guest-outruns-extend": {
        "jobs": {},
        "order": ["BLOCK_WRITE_THRESHOLD", "VOLUME_EXTENDED", "BLOCK_IO_ERROR write stop", "STOP",
                  "VOLUME_EXTENDED", "RESUME", "BLOCK_IO_ERROR write stop", "STOP", "RESUME"],
        "absent": ["VOLUME_EXTEND_FAILED", "BLOCK_IO_ERROR write report"],
        "counts": {"STOP": 2, "RESUME": 2},
        # every ENOSPC is the bursty disk's; the steady one never runs out
        "event_data": [("BLOCK_IO_ERROR", {"device": "vda", "nospace": True, "reason": ENOSPC})],
        "vm": {"final_state": "running", "stops": 2, "time_paused": Between(2, 3)},
        "drives": {"vda": {"writes_lost": 0, "guest_errors": 0, "io_status": "ok",
                           "requests": 2400},
                   "vdb": dict(QUIET_DRIVE, requests=2400)},
    },
    "thin-poll-too-slow-vs-event": {
        "jobs": {},
        "order": ["BLOCK_IO_ERROR write stop", "STOP", "VOLUME_EXTENDED", "RESUME"],
        "absent": ["BLOCK_WRITE_THRESHOLD", "VOLUME_EXTEND_FAILED"],
        "counts": {"STOP": 5, "RESUME": 5, "VOLUME_EXTENDED": 5},
        "vm": {"final_state": "running", "stops": 5, "time_paused": Between(6, 9)},
        "drives": {"vda": {"writes_lost": 0, "guest_errors": 0, "io_status": "ok",
                           "requests": 6000}},
    },
    "thin-pool-shared-runs-out": {
        "jobs": {},
        "order": ["BLOCK_WRITE_THRESHOLD", "VOLUME_EXTENDED", "VOLUME_EXTENDED",
                  "VOLUME_EXTEND_FAILED", "BLOCK_IO_ERROR write stop", "STOP",
                  "VOLUME_EXTEND_FAILED"],
        "absent": ["RESUME"],
        "counts": {"VOLUME_EXTENDED": 2, "VOLUME_EXTEND_FAILED": AtLeast(5), "STOP": 1},
        "event_data": [("VOLUME_EXTEND_FAILED", {"size": 2 * 2**30})],
        "vm": {"final_state": "io-error", "stops": 1},
        "drives": {"vda": {"writes_lost": 0, "io_status": "nospace"},
                   "vdb": {"writes_lost": 0, "io_status": "nospace"}},
    },
}


# --------------------------------------------------------------------------
# Running (each scenario once per test session)

@functools.lru_cache(maxsize=None)
def result_of(stem: str):
    return blocksim.run(SCENARIOS / f"{stem}.toml")


def _job_statuses(result, job_id: str) -> list[str]:
    return [e["data"]["status"] for e in result.events
            if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job_id]


def check_result(stem: str, result, spec: dict) -> None:
    summary = result.summary
    events = result.events
    assert summary["invariants"]["violations"] == [], summary["invariants"]["violations"]
    assert not summary["truncated"], "the run hit max-events"
    if "profile" in spec:
        assert result.profile == spec["profile"]

    # jobs: exactly the expected ones
    assert set(summary["jobs"]) == set(spec["jobs"]), (
        f"jobs in the run {sorted(summary['jobs'])} != expected {sorted(spec['jobs'])}")
    for job_id, want in spec["jobs"].items():
        got = summary["jobs"][job_id]
        for key, value in want.items():
            where = f"jobs.{job_id}.{key}"
            if key == "errors":
                assert set(got["errors_by_action"]) == set(value), where
                for action, n in value.items():
                    check_value(f"{where}.{action}", n, got["errors_by_action"][action])
            elif key == "ready":
                check_value(where, value, got["ready_at"] is not None)
            elif key == "statuses":
                check_value(where, value, _job_statuses(result, job_id))
            else:
                assert key in got, f"{where}: no such summary key"
                check_value(where, value, got[key])

    # events
    for pattern in spec.get("absent", []):
        found = [token(e) for e in events if hits(pattern, e)]
        assert not found, f"{pattern!r} should not occur, got {found[:3]}"
    for pattern, n in spec.get("counts", {}).items():
        check_value(f"number of {pattern!r}", n, sum(1 for e in events if hits(pattern, e)))
    i = 0
    for pattern in spec.get("order", []):
        while i < len(events) and not hits(pattern, events[i]):
            i += 1
        assert i < len(events), (f"{pattern!r} missing in the expected order "
                                 f"{spec['order']}; events: {[token(e) for e in events][:40]}")
        i += 1
    for pattern, subset in spec.get("event_data", []):
        chosen = [e for e in events if hits(pattern, e)]
        assert chosen, f"no {pattern!r} event"
        for e in chosen:
            check_subset(f"{token(e)} data", subset, e["data"])
    if "first_is" in spec:
        assert events and hits(spec["first_is"], events[0]), token(events[0])
    if "gap" in spec:
        first, second, span = spec["gap"]
        a = next(e for e in events if hits(first, e))
        b = next(e for e in events if hits(second, e) and seconds(e) >= seconds(a))
        check_value(f"time from {first} to {second}", span, seconds(b) - seconds(a))
    if "last_before" in spec:
        pattern, when = spec["last_before"]
        last = [seconds(e) for e in events if hits(pattern, e)]
        assert last, f"no {pattern!r} event"
        check_value(f"time of the last {pattern!r}", when, last[-1])
    if "same_count" in spec:
        pattern, path = spec["same_count"]
        node: Any = summary
        for part in path:
            node = node[part]
        assert sum(1 for e in events if hits(pattern, e)) == node, (pattern, path, node)

    # VM, drives, images
    for key, value in spec.get("vm", {}).items():
        check_value(f"vm.{key}", value, summary["vm"][key])
    for name, want in spec.get("drives", {}).items():
        for key, value in want.items():
            check_value(f"drives.{name}.{key}", value, summary["drives"][name][key])
    for name, want in spec.get("images", {}).items():
        for key, value in want.items():
            check_value(f"images.{name}.{key}", value, summary["images"][name][key])

    # management commands, in order, accepted or refused
    if "commands" in spec:
        got = result.commands
        want = spec["commands"]
        assert [c["execute"] for c in got] == [name for name, _ in want], (
            [c["execute"] for c in got])
        for record, (name, outcome) in zip(got, want):
            where = f"command {name} at {record['timestamp']}"
            if isinstance(outcome, dict):
                assert "error" not in record, f"{where}: refused: {record['error']}"
                assert record["return"], f"{where}: empty return"
                check_subset(where, outcome, record["return"][0])
            elif outcome[0] == "accepted":
                assert "error" not in record, f"{where}: refused: {record['error']}"
            else:
                assert "error" in record, f"{where}: accepted, expected a refusal"
                assert outcome[1] in record["error"]["desc"], f"{where}: {record['error']}"


# --------------------------------------------------------------------------
# The tests

def test_library_is_not_empty():
    assert len(FILES) >= 16, f"only {len(FILES)} scenarios in {SCENARIOS}"


@pytest.mark.parametrize("path", FILES, ids=STEMS)
def test_scenario_loads(path: Path):
    scenario = blocksim.load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description.strip(), "description is empty"
    assert "\n" not in scenario.description.strip(), "description must be one line"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "a scenario file starts with a comment block"


@pytest.mark.parametrize("stem", STEMS)
def test_scenario_outcome(stem: str):
    assert stem in EXPECTATIONS, (
        f"scenarios/{stem}.toml has no entry in EXPECTATIONS (tests/system/test_library.py)")
    check_result(stem, result_of(stem), EXPECTATIONS[stem])


def test_every_expectation_has_a_file():
    stale = sorted(set(EXPECTATIONS) - set(STEMS))
    assert not stale, f"EXPECTATIONS entries without a scenario file: {stale}"


@pytest.mark.parametrize("pair", [
    ("mirror-target-write-error-report-qemu", "mirror-target-write-error-report-rfc2012"),
    ("mirror-iostatus-sticky-qemu", "mirror-iostatus-ranked-rfc2012"),
], ids=lambda pair: pair[0].removesuffix("-qemu"))
def test_profile_twins_differ_only_in_profile(pair):
    """The two files of a profile comparison describe the very same run."""
    a, b = (blocksim.load_scenario(SCENARIOS / f"{stem}.toml").to_dict() for stem in pair)
    assert (a.pop("profile"), b.pop("profile")) == ("qemu", "rfc-2012")
    for d in (a, b):
        del d["name"], d["description"]
    assert a == b


def test_stream_stop_retries_the_same_chunk():
    """After the resume the stream goes on from where it stopped (the start of
    the run holding 40 MiB), not from the next run: the disk reads the same
    once the backing is dropped, and the job copied all it did not skip."""
    result = result_of("stream-read-error-stop-resume")
    query = next(c for c in result.commands if c["execute"] == "query-block-jobs")
    assert matches(RUN_AT_40_MIB, query["return"][0]["offset"])
    job = result.summary["jobs"]["stream0"]
    assert job["integrity"] == "identical"
    # everything but the clusters the guest wrote ahead of the job
    assert 60 * 2**20 < job["bytes_copied"] < 64 * 2**20


@pytest.mark.parametrize("policy, healed", [("report", True), ("stop", False)])
def test_bad_sector_is_repaired_only_once_the_backup_lets_go(policy, healed):
    """The guest's rewrite repairs the dm-dust sector only after the backup's
    own read error ended the job (report); a job paused there (stop) keeps
    its copy-before-write filter, and every repair fails."""
    scenario = blocksim.load_scenario(
        SCENARIOS / "backup-source-bad-sector-blocks-guest-repair.toml",
        overrides={"jobs.backup0.on-source-error": policy})
    sim = blocksim.Simulation(scenario)
    result = sim.run()
    assert (sim.devices["disk"].faults[0].bad == []) is healed
    assert result.summary["drives"]["vda"]["guest_errors"] == (9 if healed else 18)


def test_drain_errors_follow_the_stop():
    """vm-stop-drains-failing-requests: exactly one BLOCK_IO_ERROR before STOP,
    the others after it and before RESUME (one event per failed request)."""
    result = result_of("vm-stop-drains-failing-requests")
    names = result.event_names("BLOCK_IO_ERROR", "STOP", "RESUME")
    stop, resume = names.index("STOP"), names.index("RESUME")
    assert names[:stop] == ["BLOCK_IO_ERROR"]
    assert len(names[stop + 1:resume]) >= 1
    assert set(names[stop + 1:resume]) == {"BLOCK_IO_ERROR"}
    failed = result.summary["drives"]["vda"]["errors_by_action"]["stop"]
    assert names.count("BLOCK_IO_ERROR") == failed


# --------------------------------------------------------------------------
# A job still paused when the run ends counts its ongoing pause (found by
# this library: the pause used to be added up only on resume).

@pytest.mark.parametrize("stem", ["mirror-iostatus-sticky-qemu", "mirror-iostatus-ranked-rfc2012"])
def test_job_paused_at_end_counts_its_pause(stem: str):
    result = result_of(stem)
    job = result.summary["jobs"]["mirror0"]
    assert job["final_status"] == "paused"
    errors = [seconds(e) for e in result.events if e["event"] == "BLOCK_JOB_ERROR"]
    # paused once the operations in flight at the first error were done
    # (QEMU's mirror_pause), their own errors first: from the last error, or
    # a moment after it, to the end of the run
    end = result.summary["simulated_seconds"]
    assert end - errors[-1] - 0.05 <= job["time_paused"] <= end - errors[-1]


def test_the_event_driven_controller_keeps_the_vm_running_where_the_poller_pauses():
    """thin-poll-too-slow-vs-event's comparison: the same scenario with the
    event-driven controller and its 2 s cycle never pauses."""
    polled = result_of("thin-poll-too-slow-vs-event")
    event = blocksim.run(blocksim.load_scenario(
        SCENARIOS / "thin-poll-too-slow-vs-event.toml",
        {"thin-provisioning.mode": "event", "thin-provisioning.interval": "2s"}))
    assert polled.summary["vm"]["stops"] == 5
    assert event.summary["vm"]["stops"] == 0
    names = [e["event"] for e in event.events]
    assert names.count("VOLUME_EXTENDED") == 5 and names.count("BLOCK_WRITE_THRESHOLD") >= 5
    assert "BLOCK_IO_ERROR" not in names
    assert event.summary["drives"]["vda"]["requests"] == 6000
