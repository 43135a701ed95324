"""qemu-check: translation, comparison, daemon life cycle, and the real thing.

The tests that need QEMU (qemu-storage-daemon, qemu-img, qemu-io) are
SKIPPED with the reason when those are not installed; everything else runs
everywhere, using a fake daemon script where a process is needed.
"""

import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from blocksim import load_scenario
from blocksim.errors import BlocksimError
from blocksim.qemu import check as check_mod
from blocksim.qemu.check import (AGREE, DISAGREE, DOCUMENTED, ERROR, NOTHING, Difference,
                                 SideResult, check_scenario, compare, documented_differences,
                                 find_tools, normalise_events)
from blocksim.qemu.cli import main as cli_main, qemu_check, register
from blocksim.qemu.daemon import StorageDaemon, find_binary
from blocksim.qemu.errors import DaemonError, QemuNotFoundError, QMPError
from blocksim.qemu.report import render_json, render_text
from blocksim.qemu.translate import translate

ROOT = Path(__file__).resolve().parents[2]
QEMU_SCENARIOS = sorted((ROOT / "scenarios" / "qemu").glob("*.toml"))
HAVE_QEMU = all(shutil.which(b) for b in ("qemu-storage-daemon", "qemu-img", "qemu-io"))
NO_QEMU = ("QEMU is not installed (qemu-storage-daemon, qemu-img and qemu-io are needed): "
           "apt-get install -y qemu-utils qemu-system-common")
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason=NO_QEMU)


# -- helpers -------------------------------------------------------------------------------
def gone(pid: int) -> bool:
    """The process no longer exists (reaped) -- checked without psutil."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # it exists: a zombie still counts as a stray process
    return False


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def assert_no_stray(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (gone(pid) and not group_members(pid)):
        time.sleep(0.05)
    assert gone(pid), f"process {pid} is still there"
    assert not group_members(pid), f"processes of group {pid} are still there"


FAKE_DAEMON = r'''
import json, os, signal, socket, sys, time
mode = os.environ.get("FAKE_QSD_MODE", "ok")
args = sys.argv[1:]
path = pidfile = None
for i, a in enumerate(args):
    if a == "--chardev":
        for part in args[i + 1].split(","):
            if part.startswith("path="):
                path = part[5:]
    if a == "--pidfile":
        pidfile = args[i + 1]
if mode == "exit":
    sys.stderr.write("fake-qsd: cannot open the blockdev\n")
    sys.exit(1)
if mode == "nosocket":
    time.sleep(600)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
if pidfile:
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
GREETING = {"QMP": {"version": {"qemu": {"major": 0, "minor": 0, "micro": 0}, "package": "fake"},
                    "capabilities": []}}
# the first connection can go wrong as QEMU 7.2's does when a client comes
# while the monitor is being set up: greeted twice, or never answered
first_goes_wrong = mode in ("greet-twice", "deaf-first")
while True:
    conn, _ = srv.accept()
    with open("fake-connections", "a") as f:
        f.write("connection\n")
    def send(obj):
        conn.sendall(json.dumps(obj).encode() + b"\r\n")
    send(GREETING)
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            if first_goes_wrong or mode == "deaf":
                first_goes_wrong = False
                break
            time.sleep(600 if mode == "ignore-term" else 0)
            sys.exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            if first_goes_wrong and mode == "greet-twice":
                send(GREETING)
            elif first_goes_wrong or mode == "deaf":
                pass
            elif req["execute"] == "qmp_capabilities":
                send({"return": {}, "id": req["id"]})
            elif mode == "die":
                os._exit(3)
            elif mode == "hang":
                time.sleep(600)
            elif req["execute"] == "quit" and mode != "ignore-term":
                send({"return": {}, "id": req["id"]})
                sys.exit(0)
            else:
                send({"return": {}, "id": req["id"]})
'''


@pytest.fixture
def fake_qsd():
    d = tempfile.mkdtemp(prefix="fakeqsd-", dir="/tmp")
    path = Path(d) / "qemu-storage-daemon"
    path.write_text(f"#!{sys.executable}\n{FAKE_DAEMON}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    yield str(path)
    shutil.rmtree(d, ignore_errors=True)


def wrapper(tmp_path, body: str) -> str:
    """A qemu-storage-daemon stand-in: a shell script ending in ``exec`` of
    the real daemon, with ``body`` run first (it may schedule mischief on
    ``$$``, which stays the daemon's pid after exec)."""
    real = shutil.which("qemu-storage-daemon")
    script = tmp_path / "qsd-wrapper"
    script.write_text(f"#!/bin/sh\n{body}\nexec {real} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


# -- translation -----------------------------------------------------------------------------
BASE = {
    "duration": "3s",
    "images": {"base": {"size": "4MiB", "data": "full"},
               "top": {"size": "4MiB", "backing": "base"},
               "src": {"size": "4MiB", "data": "full", "capacity": "64MiB"},
               "dst": {"size": "4MiB"}},
    "drives": {"vda": {"image": "top"}, "vdb": {"image": "src"}},
}


def scenario(**parts):
    return load_scenario({**BASE, **parts})


def test_a_fault_on_the_device_of_a_bitmap_backup_is_skipped():
    # blkdebug goes above the format node, which holds the bitmap: blockdev-backup
    # would not find it there (bdrv_find_dirty_bitmap on the filter node)
    images = {**BASE["images"], "src": {"size": "4MiB", "data": "full",
                                        "bitmaps": [{"name": "b0"}]}}
    s = load_scenario({**BASE, "images": images,
                       "faults": [{"image": "src", "operation": "read", "offset": "1MiB",
                                   "length": "512"},
                                  {"image": "dst", "operation": "write", "offset": "1MiB",
                                   "length": "512"}],
                       "jobs": {"b": {"type": "backup", "device": "vdb", "target": "dst",
                                      "sync": "bitmap", "bitmap": "b0",
                                      "bitmap-mode": "on-success"}}})
    plan = translate(s)
    skipped = {x.what: x.reason for x in plan.skipped}
    assert list(skipped) == ["faults.0"] and "hide the bitmap" in skipped["faults.0"]
    assert [f.image for f in plan.reduced.faults] == ["dst"]


def test_a_retried_bitmap_backup_has_no_copy_ranges_known_beforehand():
    """The second backup of one bitmap copies what the first left in it (a
    failed or cancelled backup with bitmap-mode always, say), not the
    bitmap at the start: qemu-check cannot judge its target from the start
    (it judged it against the start's bitmap: grammar 7, fz7-1)."""
    images = {**BASE["images"], "dst2": {"size": "4MiB"},
              "src": {"size": "4MiB", "data": "full",
                      "bitmaps": [{"name": "b0", "dirty": [{"offset": "0", "length": "1MiB"}]}]}}
    jobs = {"b": {"type": "backup", "device": "vdb", "target": "dst", "sync": "bitmap",
                  "bitmap": "b0", "bitmap-mode": "always"},
            "r": {"type": "backup", "device": "vdb", "target": "dst2", "sync": "incremental",
                  "bitmap": "b0", "start": "manual"}}
    plan = translate(load_scenario({**BASE, "images": images, "jobs": jobs}))
    assert plan.jobs["b"].copy_ranges == [(0, 1048576)]
    assert plan.jobs["r"].copy_ranges is None
    alone = translate(load_scenario({**BASE, "images": images, "jobs": {"r": jobs["r"]}}))
    assert alone.jobs["r"].copy_ranges == [(0, 1048576)]


def test_every_part_qemu_cannot_run_is_named_as_skipped():
    s = scenario(
        faults=[
            {"image": "src", "type": "flakey", "up": "1s", "down": "1s"},
            {"image": "src", "type": "dust", "blocks": [1]},
            {"image": "src", "type": "delay", "delay": "1ms"},
            {"image": "src", "operation": "read", "start": "1s"},
            {"image": "src", "operation": "read", "probability": 0.5},
            {"image": "src", "operation": "read", "count": 3},
            {"image": "src", "operation": "read", "skip": 2},
            {"image": "src", "operation": ["read", "write"], "count": "once"},
            {"image": "top", "operation": "write", "count": "once"},   # a stream's top
            {"image": "dst", "operation": "write", "count": "once", "offset": "1MiB",
             "length": "512"},                                          # kept
        ],
        workloads={"guest": {"drive": "vdb"}},
        jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst"},
              "s": {"type": "stream", "device": "vda"}},
        actions=[{"at": "1s", "command": "stop"}, {"at": "1s", "command": "cont"},
                 {"at": "1s", "command": "thin-extend", "arguments": {"image": "src", "by": "1MiB"}},
                 {"at": "1s", "command": "guest-burst", "arguments": {"drive": "vdb"}},
                 {"at": "2s", "command": "block-job-cancel", "arguments": {"device": "m"}}])
    plan = translate(s)
    skipped = {x.what.split(" ")[0]: x.reason for x in plan.skipped}
    assert set(skipped) == {f"faults.{i}" for i in range(9)} | {
        "workloads.guest", "images.src.capacity", "actions.0", "actions.1", "actions.2",
        "actions.3"}
    assert "dm-flakey" in skipped["faults.0"] and "dm-dust" in skipped["faults.1"]
    assert "time window" in skipped["faults.3"] and "probability" in skipped["faults.4"]
    assert "count 3" in skipped["faults.5"] and "skip 2" in skipped["faults.6"]
    assert "per rule" in skipped["faults.7"] and "top of a stream" in skipped["faults.8"]
    assert "guest" in skipped["workloads.guest"] and "thin" in skipped["images.src.capacity"]
    # the blocksim side runs exactly what QEMU runs
    r = plan.reduced
    assert len(r.faults) == 1 and not r.workloads and r.images["src"].capacity is None
    assert [a.command for a in r.actions] == ["block-job-cancel"]
    assert [a.command for a in plan.actions] == ["block-job-cancel"]
    assert plan.actions[0].original == 4 and plan.actions[0].index == 0
    assert plan.images["dst"].rules == [{"event": "none", "iotype": "write", "errno": 5,
                                         "once": True, "immediately": False, "sector": 2048}]


def test_fault_ranges_become_one_sector_and_blocksim_uses_the_same():
    s = scenario(faults=[{"image": "src", "operation": "read", "offset": "1000", "length": "64KiB"}],
                 jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst"}})
    plan = translate(s)
    assert plan.images["src"].rules[0]["sector"] == 1
    assert (plan.reduced.faults[0].offset, plan.reduced.faults[0].length) == (512, 512)
    assert any("narrowed to sector 1" in n for n in plan.notes)


def test_whole_image_and_persistent_write_faults():
    s = scenario(faults=[{"image": "dst", "operation": ["write", "flush"], "errno": "ENOSPC"}],
                 jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst"}})
    plan = translate(s)
    rules = plan.images["dst"].rules
    assert all("sector" not in r for r in rules)        # every request
    assert sorted(r["iotype"] for r in rules) == ["flush", "write"]   # not the zeroing pass
    assert {r["errno"] for r in rules} == {28} and not any(r["once"] for r in rules)
    assert not plan.notes


def test_nodes_are_opened_with_the_discard_option_of_their_image():
    # QEMU's default is discard=ignore; a full mirror onto an 'unmap' target
    # zeroes it and copies allocated data only (mirror_dirty_init), so the
    # check opens every node of an image as the scenario says
    images = {**BASE["images"], "dst": {**BASE["images"]["dst"], "discard": "unmap"}}
    plan = translate(scenario(images=images,
                              faults=[{"image": "dst", "operation": "write", "offset": "1MiB",
                                       "length": "512"}]))
    dst = plan.blockdev_options("dst", "/x/dst.qcow2")
    assert (dst["driver"], dst["discard"], dst["image"]["discard"],
            dst["image"]["file"]["discard"]) == ("blkdebug", "unmap", "unmap", "unmap")
    src = plan.blockdev_options("src", "/x/src.qcow2")
    assert (src["discard"], src["file"]["discard"]) == ("ignore", "ignore")


def test_nodes_and_job_arguments():
    s = scenario(faults=[{"image": "base", "operation": "read", "offset": "1MiB", "length": "512",
                          "count": "once"}],
                 jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst", "speed": "1MiB",
                             "on-target-error": "enospc", "auto-dismiss": False},
                       "s": {"type": "stream", "device": "vda", "on-error": "stop"}})
    plan = translate(s)
    assert plan.image_order().index("base") < plan.image_order().index("top")
    base = plan.blockdev_options("base", "/x/base.qcow2")
    assert base["driver"] == "blkdebug" and base["node-name"] == "base"
    assert base["image"]["node-name"] == "base-fmt" and base["image"]["driver"] == "qcow2"
    assert base["image"]["file"] == {"driver": "file", "filename": "/x/base.qcow2",
                                     "node-name": "base-fmt-file", "discard": "ignore"}
    top = plan.blockdev_options("top", "/x/top.qcow2")
    assert top["backing"] == "base" and top["node-name"] == "top"
    m, st = plan.jobs["m"].arguments, plan.jobs["s"].arguments
    assert (m["device"], m["target"], m["speed"], m["on-target-error"], m["auto-dismiss"]) == \
        ("src", "dst", 1024 * 1024, "enospc", False)
    assert (plan.jobs["m"].command, plan.jobs["s"].command) == ("blockdev-mirror", "block-stream")
    assert (st["device"], st["on-error"]) == ("top", "stop")


def test_guest_writes_become_qemu_io_writes_over_an_nbd_export():
    """A sequential write burst becomes its writes (block after block from
    the offset, wrapping round the size) on the drive's export; other
    bursts, and drives whose werror would stop the VM, are skipped."""
    s = scenario(
        drives={"vda": {"image": "top"}, "vdb": {"image": "src", "werror": "report"},
                "vdc": {"image": "dst", "werror": "stop"}},
        jobs={"m": {"type": "mirror", "device": "vdb", "target": "base", "sync": "none",
                    "copy-mode": "write-blocking"}},
        actions=[{"at": "1s", "command": "guest-burst",
                  "arguments": {"drive": "vdb", "rw": "write", "bs": "64KiB", "offset": "1MiB",
                                "size": "128KiB", "number-ios": 3}},
                 {"at": "1s", "command": "guest-burst",
                  "arguments": {"drive": "vdb", "rw": "randwrite", "bs": "64KiB"}},
                 {"at": "1s", "command": "guest-burst",
                  "arguments": {"drive": "vdb", "rw": "write", "number-ios": 65}},
                 {"at": "1s", "command": "guest-burst",
                  "arguments": {"drive": "vdc", "rw": "write"}}])
    plan = translate(s)
    K = 1024
    assert plan.actions[0].writes == [(1024 * K, 64 * K), (1088 * K, 64 * K), (1024 * K, 64 * K)]
    assert plan.exports == {"vdb": "src"}
    assert plan.jobs["m"].arguments["copy-mode"] == "write-blocking"
    skipped = {x.what.split(" ")[0]: x.reason for x in plan.skipped}
    assert set(skipped) == {"actions.1", "actions.2", "actions.3", "images.src.capacity"}
    assert "sequential" in skipped["actions.1"] and "at most 64" in skipped["actions.2"]
    assert 'werror = "stop"' in skipped["actions.3"]
    # the blocksim side runs the same burst
    assert [a.command for a in plan.reduced.actions] == ["guest-burst"]
    # a background mirror is started as before, without copy-mode
    plain = translate(scenario(jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst"}}))
    assert "copy-mode" not in plain.jobs["m"].arguments and plain.exports == {}


def test_compare_reports_guest_writes_and_their_ranges_on_the_target():
    s = scenario(drives={"vda": {"image": "top"}, "vdb": {"image": "src", "werror": "report"}},
                 jobs={"m": {"type": "mirror", "device": "vdb", "target": "dst",
                             "copy-mode": "write-blocking"}},
                 actions=[{"at": "1s", "command": "guest-burst",
                           "arguments": {"drive": "vdb", "rw": "write", "number-ios": 2}}])
    plan = translate(s)
    sim = check_mod.run_blocksim(plan)
    assert sim.guest == {"vdb": "2 written, 0 failed"}
    assert sim.jobs["m"]["guest_on_target"] == "all 2 guest writes' ranges as the source"
    other = SideResult(events=sim.events, commands=sim.commands,
                       jobs={"m": dict(sim.jobs["m"], guest_on_target="1 of 2 guest writes' "
                                                                     "ranges differ from the source")},
                       guest={"vdb": "1 written, 1 failed"})
    assert [d.key for d in compare(plan, sim, other)] == ["m.guest_on_target", "guest.vdb"]
    assert compare(plan, sim, sim) == []


def test_compare_reports_every_named_bitmap_at_the_end():
    """With named bitmaps in the run, each image's bitmaps and their dirty
    bytes at the end are compared (what a transaction or a bitmap command
    left), not only a backup's own bitmap."""
    s = scenario(images={"src": {"size": "4MiB", "format": "qcow2",
                                 "bitmaps": [{"name": "c0", "dirty": [{"offset": 0,
                                                                       "length": "64KiB"}]}]},
                         "dst": {"size": "4MiB"}},
                 drives={"vda": {"image": "src"}},
                 actions=[{"at": "100ms", "command": "transaction", "arguments": {"actions": [
                     {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "c1"}},
                     {"type": "block-dirty-bitmap-clear", "data": {"node": "src", "name": "c0"}},
                     {"type": "abort", "data": {}}]}}])
    plan = translate(s)
    assert plan.bitmaps
    sim = check_mod.run_blocksim(plan)
    # rolled back: c0 as it was, no c1
    assert sim.bitmaps == {"src": {"c0": 65536}}
    other = SideResult(events=sim.events, commands=sim.commands, jobs=sim.jobs,
                       bitmaps={"src": {"c0": 0, "c1": 0}})
    diffs = compare(plan, sim, other)
    assert [(d.key, d.text) for d in diffs] == [
        ("bitmaps.src", "blocksim {'c0': 65536}, QEMU {'c0': 0, 'c1': 0}")]
    assert compare(plan, sim, sim) == []
    assert not translate(scenario(jobs={"s": {"type": "stream", "device": "vda"}})).bitmaps


def test_profile_rfc2012_is_noted():
    s = scenario(profile="rfc-2012", jobs={"s": {"type": "stream", "device": "vda"}})
    plan = translate(s)
    assert plan.reduced.profile == "qemu"
    assert any("rfc-2012" in n for n in plan.notes)


# -- normalisation and comparison ------------------------------------------------------------
def ev(name, **data):
    return {"event": name, "data": data, "timestamp": {"seconds": 0, "microseconds": 0}}


def test_normalise_groups_by_job_collapses_storms_and_ignores_len_offset():
    events = [ev("JOB_STATUS_CHANGE", id="a", status="running"),
              ev("BLOCK_JOB_ERROR", device="a", operation="read", action="ignore"),
              ev("BLOCK_JOB_ERROR", device="a", operation="read", action="ignore"),
              ev("JOB_STATUS_CHANGE", id="b", status="running"),
              ev("BLOCK_JOB_ERROR", device="a", operation="read", action="ignore"),
              ev("BLOCK_JOB_ERROR", device="a", operation="write", action="ignore"),
              ev("BLOCK_JOB_COMPLETED", device="a", len=1, offset=2, speed=0, type="mirror",
                 error="Input/output error"),
              ev("BLOCK_JOB_CANCELLED", device="b", len=5, offset=0, speed=0, type="stream"),
              ev("BLOCK_IO_ERROR", device="vda", operation="read", action="report")]
    out = normalise_events(events, ["a", "b"])
    assert out == {"a": ["JOB_STATUS_CHANGE running", "BLOCK_JOB_ERROR read ignore",
                         "BLOCK_JOB_ERROR write ignore",
                         "BLOCK_JOB_COMPLETED error=Input/output error"],
                   "b": ["JOB_STATUS_CHANGE running", "BLOCK_JOB_CANCELLED"]}


def test_compare_reports_events_outcomes_and_commands():
    plan = translate(scenario(jobs={"s": {"type": "stream", "device": "vda"}}))
    a = SideResult(events=[ev("JOB_STATUS_CHANGE", id="s", status="running")],
                   commands=[{"execute": "block-job-complete", "error": {"class": "GenericError",
                                                                         "desc": "no"}}],
                   jobs={"s": {"outcome": "running", "error": None, "integrity": "not-checked",
                               "backing": "base"}})
    b = SideResult(events=[ev("JOB_STATUS_CHANGE", id="s", status="paused")],
                   commands=[{"execute": "block-job-complete", "return": {}}],
                   jobs={"s": {"outcome": "paused", "error": None, "integrity": "not-checked",
                               "backing": "base"}})
    diffs = compare(plan, a, b)
    assert [d.key for d in diffs] == ["s.events", "s.outcome", "commands"]
    assert "blocksim 'JOB_STATUS_CHANGE running', QEMU 'JOB_STATUS_CHANGE paused'" in diffs[0].text
    assert compare(plan, a, a) == []


def test_documented_differences_are_read_from_comments(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text(textwrap.dedent("""\
        # qemu-check: difference job0.events: QEMU emits one more event
        #     because of a reason that continues here.
        # qemu-check: difference commands: wording
        name = "x"
        """))
    assert documented_differences(str(f)) == {
        "job0.events": "QEMU emits one more event because of a reason that continues here.",
        "commands": "wording"}


# -- binaries and the command line -----------------------------------------------------------
def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(QemuNotFoundError, match="qemu-storage-daemon not found at /nonexistent"):
        find_binary("qemu-storage-daemon", "/nonexistent/qemu-storage-daemon")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QemuNotFoundError, match="not found on PATH; install it with: apt-get"):
        find_binary("qemu-img")
    assert issubclass(QemuNotFoundError, BlocksimError)
    not_exec = tmp_path / "qemu-img"
    not_exec.write_text("")
    with pytest.raises(QemuNotFoundError, match="not an executable"):
        find_binary("qemu-img", str(not_exec))


def test_cli_missing_binary_exits_2(capsys):
    rc = cli_main(["--qemu-storage-daemon", "/nonexistent/qsd", str(QEMU_SCENARIOS[0])])
    assert rc == 2
    err = capsys.readouterr().err
    assert "qemu-storage-daemon not found at /nonexistent/qsd" in err
    assert "Traceback" not in err


def test_register_adds_the_command():
    @click.group()
    def group():
        pass

    register(group)
    assert group.commands["qemu-check"] is qemu_check
    result = CliRunner().invoke(group, ["qemu-check", "--help"])
    assert result.exit_code == 0
    for option in ("--qemu-storage-daemon", "--qemu-img", "--json"):
        assert option in result.output


def test_nothing_to_check_without_jobs(tmp_path):
    tools = check_mod.Tools("/bin/true", "/bin/true", "/bin/true")
    s = load_scenario(ROOT / "scenarios" / "qemu" / "mirror-cancel-running.toml",
                      overrides={"jobs": {}, "actions": []})
    c = check_scenario(s, tools)
    assert c.status == NOTHING and c.ok
    assert "nothing to check" in render_text([c])


# -- the daemon life cycle (a fake daemon: no QEMU needed) ---------------------------------
def test_daemon_that_exits_at_start(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "exit")
    d = StorageDaemon(fake_qsd, timeout=1, start_timeout=5, grace=0.5)
    with pytest.raises(DaemonError, match="exited at start.*cannot open the blockdev"):
        d.start()
    assert_no_stray(d.pid)
    assert not d.dir.exists()


def test_daemon_without_socket_times_out(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "nosocket")
    d = StorageDaemon(fake_qsd, timeout=1, start_timeout=0.5, grace=0.3)
    with pytest.raises(DaemonError, match="did not open its QMP socket within 0.5s"):
        d.start()
    assert_no_stray(d.pid)


@pytest.mark.parametrize("mode", ["greet-twice", "deaf-first"])
def test_daemon_whose_first_connection_goes_wrong(fake_qsd, monkeypatch, mode):
    # QEMU 7.2's race between the monitor's set-up and the first client: a
    # new connection gets a new monitor session
    monkeypatch.setenv("FAKE_QSD_MODE", mode)
    with StorageDaemon(fake_qsd, timeout=5, grace=0.5) as d:
        pid = d.pid
        assert d.qmp.execute("query-block-jobs") == {}
        assert (d.dir / "fake-connections").read_text() == "connection\n" * 2
    assert d.proc.returncode == 0
    assert_no_stray(pid)


def test_daemon_never_answering_the_handshake_is_an_error(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "deaf")
    t0 = time.monotonic()
    d = StorageDaemon(fake_qsd, timeout=1.5, start_timeout=0.2, grace=0.3)
    with pytest.raises(DaemonError, match="is not responding.*qmp_capabilities"):
        d.start()
    # new connections while the QMP deadline allows (1 s, then what is left), no longer
    assert 1.4 < time.monotonic() - t0 < 5
    assert_no_stray(d.pid)


def test_daemon_that_dies_mid_run(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "die")
    with StorageDaemon(fake_qsd, timeout=2, grace=0.3) as d:
        pid = d.pid
        with pytest.raises(QMPError) as info:
            d.qmp.execute("query-block-jobs")
        err = d.explain(info.value)
    assert isinstance(err, DaemonError)
    assert "died (exit status 3)" in str(err)
    assert_no_stray(pid)


def test_daemon_that_hangs_is_killed(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "hang")
    t0 = time.monotonic()
    with StorageDaemon(fake_qsd, timeout=0.3, grace=0.3) as d:
        pid = d.pid
        with pytest.raises(QMPError) as info:
            d.qmp.execute("query-block-jobs")
        assert "is not responding" in str(d.explain(info.value))
    assert_no_stray(pid)
    assert time.monotonic() - t0 < 10


def test_daemon_ignoring_sigterm_gets_sigkill(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "ignore-term")
    d = StorageDaemon(fake_qsd, timeout=0.3, grace=0.3).start()
    pid = d.pid
    d.stop()
    assert_no_stray(pid)
    assert d.proc.returncode == -signal.SIGKILL


def test_ctrl_c_leaves_no_process(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "ok")
    with pytest.raises(KeyboardInterrupt):
        with StorageDaemon(fake_qsd, timeout=1, grace=0.5) as d:
            pid = d.pid
            raise KeyboardInterrupt
    assert_no_stray(pid)


def test_polite_quit(fake_qsd, monkeypatch):
    monkeypatch.setenv("FAKE_QSD_MODE", "ok")
    with StorageDaemon(fake_qsd, timeout=1, grace=2) as d:
        pid, workdir = d.pid, d.dir
        d.qmp.execute("query-block-jobs")
    assert d.proc.returncode == 0                     # quit, not killed
    assert_no_stray(pid)
    assert not workdir.exists()


# -- real QEMU -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools():
    if not HAVE_QEMU:
        pytest.skip(NO_QEMU)
    return find_tools()


#: Cases whose outcome in QEMU is a race of real time that blocksim does not
#: model (it models QEMU's usual order, docs/qemu-check.md): a disagreement
#: there is checked again, up to twice, so QEMU must show blocksim's order in
#: one of three runs; a model that left that order disagrees every time.
REAL_TIME_RACES = {
    # QEMU's loop claims the second fault's range before the first failed
    # write comes back, usually; not always on a busy machine (session 19:
    # 2 runs of 8 at 11800 KiB; session 20: once in a CI run at 9600 KiB,
    # 0 of 16 by hand, idle and beside three CPU burners)
    "mirror-buffer-wait-lets-iterations-go-on",
}


@needs_qemu
@pytest.mark.parametrize("path", QEMU_SCENARIOS, ids=[p.stem for p in QEMU_SCENARIOS])
def test_scenario_agrees_with_qemu(tools, path):
    c = check_scenario(str(path), tools)
    if c.status == ERROR and any(why in (c.qemu.error or "")
                                 for why in ("not responding", "did not open", "exited at start")):
        # the daemon did not come up (a loaded machine): no verdict was
        # reached, so the check runs once more; a disagreement does only
        # for a race of real time (REAL_TIME_RACES)
        c = check_scenario(str(path), tools)
    for _ in range(2 if path.stem in REAL_TIME_RACES else 0):
        if c.status != DISAGREE:
            break
        c = check_scenario(str(path), tools)
    assert c.status in (AGREE, DOCUMENTED), render_text([c])
    assert not c.plan.skipped, "scenarios/qemu/ should hold only what QEMU can run"


def test_real_time_races_are_cases():
    """Each case allowed a second look is one of scenarios/qemu/ (a renamed
    case would otherwise lose its mark silently, or keep one it no longer
    needs under another name)."""
    assert REAL_TIME_RACES <= {p.stem for p in QEMU_SCENARIOS}


@needs_qemu
def test_qemu_scenarios_exist():
    assert len(QEMU_SCENARIOS) >= 20


@needs_qemu
def test_real_daemon_killed_mid_run(tools):
    with StorageDaemon(tools.qemu_storage_daemon, timeout=2, grace=0.5) as d:
        pid = d.pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(QMPError) as info:
            d.qmp.execute("query-block-jobs")
        err = d.explain(info.value)
    assert "died (killed by SIGKILL)" in str(err)
    assert_no_stray(pid)


@needs_qemu
def test_real_daemon_hung(tools):
    with StorageDaemon(tools.qemu_storage_daemon, timeout=0.5, grace=0.3) as d:
        pid = d.pid
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(QMPError) as info:
            d.qmp.execute("query-block-jobs")
        assert "is not responding" in str(d.explain(info.value))
    assert_no_stray(pid)


@needs_qemu
def test_check_with_a_daemon_that_dies_mid_job(tools, tmp_path):
    qsd = wrapper(tmp_path, "(sleep 0.5; kill -9 $$) &")
    t = check_mod.Tools(qsd, tools.qemu_img, tools.qemu_io, tools.version)
    c = check_scenario(str(ROOT / "scenarios/qemu/mirror-cancel-ready.toml"), t, qmp_timeout=2)
    assert c.status == ERROR and not c.ok
    assert "died (killed by SIGKILL)" in c.first_difference
    assert "ERROR" in render_text([c], t)


@needs_qemu
def test_check_with_a_daemon_that_hangs_mid_job(tools, tmp_path):
    pidfile = tmp_path / "pid"
    qsd = wrapper(tmp_path, f"echo $$ > {pidfile}; (sleep 0.4; kill -STOP $$) &")
    t = check_mod.Tools(qsd, tools.qemu_img, tools.qemu_io, tools.version)
    t0 = time.monotonic()
    c = check_scenario(str(ROOT / "scenarios/qemu/mirror-cancel-ready.toml"), t, qmp_timeout=1)
    assert c.status == ERROR
    assert "not responding" in c.first_difference
    assert_no_stray(int(pidfile.read_text()))
    assert time.monotonic() - t0 < 20


@needs_qemu
def test_cli_json_and_exit_status(tools, monkeypatch):
    runner = CliRunner()
    path = str(ROOT / "scenarios/qemu/mirror-read-eio-report.toml")
    result = runner.invoke(qemu_check, ["--json", path])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["agree"] == 1 and data["summary"]["ok"] is True
    assert data["scenarios"][0]["normalised"]["qemu"]["job0"][-1] == "JOB_STATUS_CHANGE null"
    assert data["qemu"]["version"]

    # a disagreement makes the exit status 1
    monkeypatch.setattr(check_mod, "compare",
                        lambda plan, a, b: [Difference("job0.outcome", "blocksim 'x', QEMU 'y'")])
    result = runner.invoke(qemu_check, [path])
    assert result.exit_code == 1
    assert "DISAGREE" in result.stdout and "0 of 1 scenarios agree" in result.stdout


@needs_qemu
def test_documented_difference_is_not_a_failure(tools, monkeypatch, tmp_path):
    src = (ROOT / "scenarios/qemu/mirror-read-eio-report.toml").read_text()
    path = tmp_path / "documented.toml"
    path.write_text("# qemu-check: difference job0.outcome: a reason given here\n" + src)
    monkeypatch.setattr(check_mod, "compare",
                        lambda plan, a, b: [Difference("job0.outcome", "blocksim 'x', QEMU 'y'")])
    c = check_scenario(str(path), tools)
    assert c.status == DOCUMENTED and c.ok
    text = render_text([c], tools)
    assert "a reason given here" in text and "0 of 1 scenarios agree, 1 documented" in text
    # an undocumented difference next to it still fails
    monkeypatch.setattr(check_mod, "compare",
                        lambda plan, a, b: [Difference("job0.outcome", "x"),
                                            Difference("job0.events", "y")])
    assert check_scenario(str(path), tools).status == DISAGREE
    assert render_json([c], tools)["summary"]["ok"] is True


@needs_qemu
def test_skipped_parts_are_in_the_report(tools):
    c = check_scenario(str(ROOT / "scenarios/stream-read-error-stop-resume.toml"), tools)
    text = render_text([c], tools)
    assert "skipped: faults.0: a time window" in text
    assert "skipped: workloads.guest: guest I/O" in text


# -- integrity at a job's completion ------------------------------------------------------
def _run_with_images(source: bytes, target: bytes) -> check_mod._QemuRun:
    run = check_mod._QemuRun.__new__(check_mod._QemuRun)
    run._raw = {"src": source, "tgt": target}.__getitem__
    return run


def test_integrity_at_completion_leaves_out_only_the_later_writes_ranges():
    src = bytes(4096)
    # a later write of 0x81 at 1024+512 is on the target only: as at completion
    tgt = src[:1024] + b"\x81" * 512 + src[1536:]
    later = [(1024, 512, 0x81, True)]
    assert _run_with_images(src, tgt)._at_completion("src", "tgt", later, "target") is None
    # a difference outside the later writes' ranges is one at completion
    bad = tgt[:3000] + b"\x01" + tgt[3001:]
    detail = _run_with_images(src, bad)._at_completion("src", "tgt", later, "target")
    assert detail.startswith("target differs from source at offset 3000")
    # a later write that is not on the new active node is a difference
    detail = _run_with_images(src, src)._at_completion("src", "tgt", later, "target")
    assert detail == ("the guest's write at 1024+512 after the completion is not on the "
                      "target at offset 1024")
    # the last write of each byte counts; a failed write's range is not checked
    tgt2 = src[:1024] + b"\x81" * 256 + b"\x82" * 256 + src[1536:]
    later2 = [(1024, 512, 0x81, True), (1280, 256, 0x82, True), (2048, 512, 0x83, False)]
    assert _run_with_images(src, tgt2)._at_completion("src", "tgt", later2, "base") is None


def test_integrity_at_completion_without_a_pivot_looks_for_later_writes_on_the_source():
    """A READY mirror's plain cancel completes without a pivot: the guest's
    later writes are on the source, not the target (grammar 9, fz9-3)."""
    tgt = bytes(4096)
    src = tgt[:1024] + b"\x81" * 512 + tgt[1536:]
    later = [(1024, 512, 0x81, True)]
    assert _run_with_images(src, tgt)._at_completion("src", "tgt", later, "base",
                                                     pivot=False) is None
    detail = _run_with_images(src, tgt)._at_completion("src", "tgt", later, "base")
    assert detail == ("the guest's write at 1024+512 after the completion is not on the "
                      "base at offset 1024")
    detail = _run_with_images(tgt, tgt)._at_completion("src", "tgt", later, "base", pivot=False)
    assert detail == ("the guest's write at 1024+512 after the completion is not on the "
                      "source at offset 1024")


@needs_qemu
@pytest.mark.parametrize("path, job", [
    ("scenarios/mirror-dust-source-heals-on-write.toml", "mirror0"),
    ("scenarios/qemu/commit-active-error-while-ready-standby.toml", "c1")])
def test_integrity_is_taken_at_completion_despite_guest_writes(tools, path, job):
    """A guest write after a mirror's (an active commit's) completion goes
    to the target (the base) only, one before it is in the top and copied
    to the base: QEMU's side judges the images as they were at completion,
    as blocksim does, and the two agree with no documented difference."""
    assert not documented_differences(str(ROOT / path))
    c = check_scenario(str(ROOT / path), tools)
    assert c.qemu.jobs[job]["outcome"] == "completed"
    assert c.qemu.jobs[job]["integrity"] == "identical", c.qemu.jobs[job]["integrity_detail"]
    assert c.status == AGREE, render_text([c])


def test_compare_skips_an_integrity_qemu_could_not_judge():
    """A backup started after guest writes: QEMU's side has no copy of the
    disk at its point in time ("not-checked", with the reason), so
    blocksim's verdict is not a difference (grammar 7's retried backups);
    a plain not-checked (the job did not complete) still is."""
    plan = translate(scenario(jobs={"s": {"type": "stream", "device": "vda"}}))
    a = SideResult(jobs={"s": {"outcome": "completed", "error": None, "integrity": "identical"}})
    b = SideResult(jobs={"s": {"outcome": "completed", "error": None, "integrity": "not-checked",
                               "integrity_detail": "guest writes before the backup started"}})
    assert compare(plan, a, b) == []
    c = SideResult(jobs={"s": {"outcome": "completed", "error": None, "integrity": "not-checked"}})
    assert [d.key for d in compare(plan, a, c)] == ["s.integrity"]


def test_an_intermediate_commit_after_its_overlay_was_dropped_judges_the_image_above_it_now():
    # base <- m1 <- m2 <- top: an earlier commit of m2 into m1 dropped m2
    # (top is backed by m1), then m1 is committed into base.  QEMU rewrote
    # the dropped m2's header to name the base too (bdrv_drop_intermediate
    # updates every parent of m1, fz8-2063); blocksim leaves m2 as it was.
    # Either way the overlay judged is top, the image above m1 now.
    from types import SimpleNamespace
    from blocksim.qemu.check import overlay_backing
    job = SimpleNamespace(image="top", top="m1", base="base", overlay="m2")
    for m2_backing in ("base", "m1"):
        headers = {"top": "base", "m2": m2_backing, "m1": "base", "base": None}
        assert overlay_backing(job, headers.get) == "base"
    # the commit failed: top still backed by m1
    headers = {"top": "m1", "m2": "m1", "m1": "base", "base": None}
    assert overlay_backing(job, headers.get) == "m1"
    # no earlier job: the scenario's overlay, whatever the chain below it
    headers = {"top": "m2", "m2": "base", "m1": "base", "base": None}
    assert overlay_backing(job, headers.get) == "base"
    headers["m2"] = "m1"
    assert overlay_backing(job, headers.get) == "m1"
