"""blocksim export (blocksim/qemu/export.py): the scenario as a
qemu-storage-daemon session (--qsd) and as libvirt <disk> elements
(--libvirt).  The --qsd session is run on real QEMU where it is installed."""

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from blocksim import load_scenario
from blocksim.qemu import check as check_mod
from blocksim.qemu.export import image_commands, libvirt_disks, qsd_script
from blocksim.qemu.translate import translate

ROOT = Path(__file__).resolve().parents[2]
HAVE_QEMU = all(shutil.which(b) for b in ("qemu-storage-daemon", "qemu-img", "qemu-io"))
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="QEMU is not installed")

CHAIN = {
    "duration": "4s",
    "images": {"base": {"size": "4MiB", "data": "full"},
               "mid": {"size": "4MiB", "backing": "base",
                       "data": [{"offset": "0", "length": "1MiB"}],
                       "bitmaps": [{"name": "b0", "dirty": [{"offset": "512KiB",
                                                             "length": "1MiB"}]}]},
               "top": {"size": "4MiB", "backing": "mid", "capacity": "8MiB"},
               "tgt": {"size": "4MiB"}},
    "drives": {"vda": {"image": "top", "rerror": "stop", "werror": "stop"}},
    "faults": [{"image": "base", "operation": "write", "errno": "ENOSPC", "offset": "512KiB",
                "length": "512", "count": "once"},
               {"image": "mid", "type": "flakey", "up": "1s", "down": "1s"}],
    "workloads": {"guest": {"drive": "vda", "rate-iops": 10}},
    "jobs": {"c1": {"type": "commit", "device": "vda", "top": "mid", "base": "base",
                    "on-error": "enospc"}},
    "actions": [{"at": "1s", "command": "thin-extend", "arguments": {"image": "top", "by": "1MiB"}},
                {"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"}, "delay": "300ms",
                 "command": "block-job-resume", "arguments": {"device": "c1"}}],
}


def qmp_lines(script: str) -> list[dict]:
    body = script.split("cat <<'QMP'\n", 1)[1].split("\nQMP\n", 1)[0]
    return [json.loads(line) for line in body.splitlines() if not line.startswith("#")]


# -- --qsd ---------------------------------------------------------------------------------
def test_qsd_script_lists_images_daemon_nodes_jobs_and_actions_in_order():
    script = qsd_script(load_scenario(CHAIN))
    lines = script.splitlines()
    creates = [l for l in lines if l.startswith("qemu-img create")]
    assert [l.split()[-2] for l in creates] == ["base.qcow2", "mid.qcow2", "top.qcow2", "tgt.qcow2"]
    assert "-b mid.qcow2 -F qcow2 top.qcow2" in creates[2]
    assert "qemu-img bitmap --add -g 65536 mid.qcow2 b0" in lines
    daemon = [l for l in lines if l.startswith("qemu-storage-daemon ")]
    assert len(daemon) == 1
    assert daemon[0].startswith("qemu-storage-daemon --chardev socket,id=qmp0,path=blocksim-qmp.sock")
    # connected to once its pid file exists (qemu-check's StorageDaemon does the same)
    assert "--pidfile qemu-storage-daemon.pid" in daemon[0]
    assert lines[lines.index(daemon[0]) + 2] == \
        "while [ ! -e qemu-storage-daemon.pid ]; do sleep 0.01; done"
    msgs = qmp_lines(script)
    assert [m["execute"] for m in msgs] == ["qmp_capabilities", "blockdev-add", "blockdev-add",
                                            "blockdev-add", "blockdev-add", "block-commit",
                                            "block-job-resume"]
    base = msgs[1]["arguments"]      # the faulty base behind blkdebug
    assert base["driver"] == "blkdebug" and base["node-name"] == "base"
    assert base["inject-error"] == [{"event": "none", "iotype": "write", "errno": 28,
                                     "once": True, "immediately": False, "sector": 1024}]
    assert msgs[5]["arguments"] == {"job-id": "c1", "device": "top", "top-node": "mid",
                                    "base-node": "base", "speed": 0, "on-error": "enospc",
                                    "auto-finalize": True, "auto-dismiss": True}
    # when each is due, and the original action index (actions.0 is skipped)
    assert '# actions.1: on BLOCK_JOB_ERROR {"action": "stop"}, 300ms later' in lines
    # what it leaves out, and why
    skipped = script.split("# Not expressed", 1)[1]
    for what in ("images.top.capacity", "workloads.guest", "actions.0 (thin-extend)",
                 "faults.1: dm-flakey"):
        assert what in skipped


def test_image_commands_are_what_qemu_check_runs(tmp_path, monkeypatch):
    """The export builds images exactly as qemu-check does (no drift)."""
    plan = translate(load_scenario(CHAIN))
    ran = []
    monkeypatch.setattr(check_mod, "_run_tool", lambda args, what, **kw: ran.append(list(args)))
    tools = check_mod.Tools("qsd", "qemu-img", "qemu-io", "test")
    runner = check_mod._QemuRun(plan, tools, tmp_path, 1.0)
    runner.make_images()
    made = [a for a in ran if a[1] != "convert"]          # qemu-check's reference copies
    paths = {name: str(tmp_path / img.filename) for name, img in plan.images.items()}
    assert made == image_commands(plan, paths)
    assert len(made) == 8      # 4 creates, 2 data writes, a bitmap and its dirty ranges


@needs_qemu
def test_qsd_session_sets_up_on_real_qemu(tmp_path):
    """The images and the QMP commands, run on qemu-storage-daemon: every
    command is accepted, and the commit (its base failing once with ENOSPC
    under enospc) stops as blocksim says, then completes after the resume."""
    from blocksim.qemu.daemon import StorageDaemon
    script = qsd_script(load_scenario(CHAIN))
    setup = script.split("# 2. The daemon", 1)[0]
    subprocess.run(["sh", "-c", setup], cwd=tmp_path, check=True, capture_output=True)
    msgs = qmp_lines(script)
    with StorageDaemon(workdir=str(tmp_path), timeout=10.0) as daemon:
        events = []
        for msg in msgs[1:6]:                               # nodes and the job
            daemon.qmp.execute(msg["execute"], msg.get("arguments", {}))
        for _ in range(200):
            event = daemon.qmp.get_event(0.05)
            if event is not None:
                events.append(event)
                if event["event"] == "BLOCK_JOB_ERROR":
                    daemon.qmp.execute(msgs[6]["execute"], msgs[6]["arguments"])
                if event["event"] == "BLOCK_JOB_COMPLETED":
                    break
    names = [(e["event"], e["data"].get("action")) for e in events
             if e["event"] in ("BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED")]
    assert names == [("BLOCK_JOB_ERROR", "stop"), ("BLOCK_JOB_COMPLETED", None)]
    assert "error" not in events[-1]["data"]


# -- --libvirt -----------------------------------------------------------------------------
def disks(xml: str) -> list[ET.Element]:
    return list(ET.fromstring(f"<devices>{xml}</devices>").iter("disk"))


def test_libvirt_disk_carries_the_policies_and_the_backing_chain():
    xml = libvirt_disks(load_scenario(CHAIN), image_dir="/images")
    (disk,) = disks(xml)
    driver = disk.find("driver")
    assert driver.attrib == {"name": "qemu", "type": "qcow2", "error_policy": "stop",
                             "rerror_policy": "stop"}
    assert disk.find("source").get("file") == "/images/top.qcow2"
    chain, node = [], disk
    while (node := node.find("backingStore")) is not None and node.find("source") is not None:
        chain.append(node.find("source").get("file"))
    assert chain == ["/images/mid.qcow2", "/images/base.qcow2"]
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert "virsh blockcommit vda, top /images/mid.qcow2, base /images/base.qcow2" in xml
    assert "--" not in xml.replace("<!--", "").replace("-->", "")
    assert "thin volumes" in xml and "top (8MiB)" in xml
    assert "2 fault rule(s) not expressed" in xml


@pytest.mark.parametrize("rerror, werror, error_policy, rerror_policy", [
    ("report", "enospc", "enospace", "report"),
    ("auto", "auto", "enospace", "report"),       # QEMU's defaults, written out
    ("ignore", "report", "report", "ignore"),
    ("enospc", "stop", "stop", None),             # libvirt has no read enospace
])
def test_libvirt_policy_names(rerror, werror, error_policy, rerror_policy):
    xml = libvirt_disks(load_scenario({
        "images": {"d": {"size": "1MiB"}},
        "drives": {"disk0": {"image": "d", "rerror": rerror, "werror": werror}}}))
    (disk,) = disks(xml)
    driver = disk.find("driver")
    assert driver.get("error_policy") == error_policy
    assert driver.get("rerror_policy") == rerror_policy
    assert disk.find("target").get("dev") == "vda"        # disk0 is no device name
    if rerror_policy is None:
        assert "libvirt has no such read policy" in xml


def test_export_every_library_scenario():
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        scenario = load_scenario(path)
        assert qmp_lines(qsd_script(scenario))[0] == {"execute": "qmp_capabilities"}
        assert len(disks(libvirt_disks(scenario))) == len(scenario.drives)


def test_qsd_script_makes_the_guest_writes_qemu_check_makes():
    """A guest-burst qemu-check can carry out: an NBD export of the drive's
    node, and the writes as qemu-io over it."""
    scenario = load_scenario(ROOT / "scenarios" / "qemu" / "backup-cbw-target-eio-guest-write-fails.toml")
    script = qsd_script(scenario)
    msgs = qmp_lines(script)
    assert msgs[3] == {"execute": "nbd-server-start", "arguments": {
        "addr": {"type": "unix", "data": {"path": "blocksim-nbd.sock"}}}}
    assert msgs[4]["arguments"] == {"type": "nbd", "id": "export-vda", "node-name": "src",
                                    "name": "vda", "writable": True}
    assert ("#   the guest's writes, one after the other: qemu-io -f raw "
            "'nbd+unix:///vda?socket=blocksim-nbd.sock' -c 'write -P 0x81 2097152 65536'") in script
    assert "guest-burst" not in "".join(json.dumps(m) for m in msgs)   # not a QMP command


def test_each_bitmap_is_dirtied_alone_and_disabled_after_its_writes():
    """Two bitmaps, the second disabled: each one's dirty ranges are written
    while it alone records (the others disabled), and a disabled bitmap is
    disabled only after its own writes, else QEMU's b0 holds b1's ranges
    too and a disabled bitmap none of its own (found by running QEMU:
    grammar 7, fz7-16)."""
    spec = {"duration": "1s",
            "images": {"src": {"size": "4MiB",
                               "bitmaps": [{"name": "b0", "dirty": [{"offset": "0", "length": "64KiB"}]},
                                           {"name": "b1", "recording": False,
                                            "dirty": [{"offset": "1MiB", "length": "64KiB"}]}]}},
            "drives": {"vda": {"image": "src"}}}
    cmds = [" ".join(c) for c in image_commands(translate(load_scenario(spec)))]
    bitmap_cmds = [c for c in cmds if " bitmap " in c or c.startswith("qemu-io")]
    assert bitmap_cmds == [
        "qemu-img bitmap --add -g 65536 src.qcow2 b0",
        "qemu-io -f qcow2 -c discard -q 0 65536 src.qcow2",
        "qemu-img bitmap --disable src.qcow2 b0",
        "qemu-img bitmap --add -g 65536 src.qcow2 b1",
        "qemu-io -f qcow2 -c discard -q 1048576 65536 src.qcow2",
        "qemu-img bitmap --disable src.qcow2 b1",
        "qemu-img bitmap --enable src.qcow2 b0"]


def test_bitmap_commands_go_to_the_format_node_below_blkdebug():
    """A bitmap command on an image with faults names its format node, not
    the blkdebug node over it: QEMU refuses a persistent bitmap on blkdebug
    ("Can't store persistent bitmaps to tgt: Operation not supported",
    dirty-bitmap.c bdrv_can_store_new_dirty_bitmap), where blocksim's image
    takes it (found by running QEMU: grammar 7, fz7-11)."""
    spec = {"duration": "1s",
            "images": {"src": {"size": "4MiB"}, "tgt": {"size": "4MiB"}},
            "drives": {"vda": {"image": "src"}},
            "faults": [{"image": "tgt", "operation": "write", "errno": "EIO",
                        "offset": "0", "length": "512"}],
            "actions": [{"at": "0s", "command": "block-dirty-bitmap-add",
                         "arguments": {"node": "tgt", "name": "p0", "persistent": True}},
                        {"at": "0s", "command": "block-dirty-bitmap-add",
                         "arguments": {"node": "vda", "name": "b0"}}]}
    msgs = [m for m in qmp_lines(qsd_script(load_scenario(spec)))
            if m["execute"] == "block-dirty-bitmap-add"]
    assert [m["arguments"]["node"] for m in msgs] == ["tgt-fmt", "src"]


def test_a_transaction_carries_its_backup_and_names_format_nodes():
    """A transaction's blockdev-backup is the job's start command inside it
    (not sent again on its own), its bitmap actions name format nodes as the
    commands alone do."""
    spec = {"duration": "1s",
            "images": {"src": {"size": "4MiB", "format": "qcow2"},
                       "tgt": {"size": "4MiB", "format": "qcow2"}},
            "drives": {"vda": {"image": "src"}},
            "faults": [{"image": "src", "operation": "read", "errno": "EIO",
                        "offset": "0", "length": "512"}],
            "jobs": {"b": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                           "start": "manual"}},
            "actions": [{"at": "100ms", "command": "transaction", "arguments": {"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "vda", "name": "c1"}},
                {"type": "blockdev-backup", "data": {"job-id": "b"}}]}}]}
    scenario = load_scenario(spec)
    msgs = qmp_lines(qsd_script(scenario))
    assert [m["execute"] for m in msgs].count("blockdev-backup") == 0
    (tx,) = [m["arguments"] for m in msgs if m["execute"] == "transaction"]
    add, backup = tx["actions"]
    assert add["data"]["node"] == "src-fmt"
    assert backup["data"] == translate(scenario).jobs["b"].arguments
    assert backup["data"]["device"] == "src" and backup["data"]["job-id"] == "b"
