"""``qemu-check --vm``: the guest's error policies against a real QEMU 7.2 VM.

The cases of scenarios/qemu-vm/ run on blocksim and on a TCG guest
(blocksim.qemu.vm) and must agree: events, query-block's io-status, what the
guest saw, the data.  They are skipped, with the reason, only where
qemu-system-x86_64, a kernel or a static busybox is not installed
(blocksim/qemu/install.sh installs them; CI runs it).  The planning, the
initramfs and the comparison are tested everywhere.
"""

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner

from blocksim import load_scenario
from blocksim.qemu.cli import qemu_check
from blocksim.qemu.errors import QemuNotFoundError
from blocksim.qemu.vm import _cpio, _module_order, build_initramfs, drive_options, find_vm_tools
from blocksim.qemu.vmcheck import (VMSide, VMUnsupported, check_vm_scenario, compare_vm,
                                   normalise_command, normalise_event, plan_vm)

ROOT = Path(__file__).resolve().parents[2]
VM_SCENARIOS = sorted((ROOT / "scenarios" / "qemu-vm").glob("*.toml"))

try:
    TOOLS = find_vm_tools()
    NO_VM = ""
except QemuNotFoundError as exc:
    TOOLS = None
    NO_VM = str(exc)
needs_vm = pytest.mark.skipif(TOOLS is None, reason=NO_VM or "no VM")


def scenario(**kw):
    sc = {
        "duration": "3s",
        "images": {"disk": {"size": "16MiB", "format": "raw"}},
        "drives": {"vda": {"image": "disk", "werror": "stop"}},
        "faults": [{"image": "disk", "operation": "write", "errno": "EIO", "offset": "1MiB",
                    "length": 512, "count": 1}],
        "actions": [{"at": "0.1s", "command": "guest-burst",
                     "arguments": {"drive": "vda", "rw": "write", "bs": "4KiB",
                                   "offset": "1MiB", "number-ios": 2}},
                    {"on": "STOP", "delay": "0.5s", "command": "cont"}],
    }
    sc.update(kw)
    return load_scenario(sc)


# -- planning (everywhere) -------------------------------------------------------------------

def test_every_vm_scenario_is_planned():
    assert len(VM_SCENARIOS) >= 17
    for path in VM_SCENARIOS:
        plan = plan_vm(load_scenario(path))
        assert plan.steps and all(line[0] in "wrfm" for line in plan.ops())


def test_a_burst_becomes_one_step_per_write_and_the_fault_a_blkdebug_rule():
    plan = plan_vm(scenario())
    assert plan.ops() == ["w 1048576 4096 1", "w 1052672 4096 2"]
    assert plan.rules == [{"event": "none", "iotype": "write", "errno": 5, "once": True,
                           "immediately": False, "sector": 2048}]
    assert plan.device_options() == ("virtio-blk-pci,drive=vda,id=vda-dev,werror=stop,"
                                     "rerror=report,request-merging=off")
    opts = drive_options("vda", "disk", Path("/x/disk.raw"), "raw", plan.rules)
    assert opts.startswith("if=none,id=vda,node-name=disk,driver=blkdebug,image.driver=raw,")
    assert "inject-error.0.sector=2048" in opts and "inject-error.0.once=on" in opts


def test_writes_issued_together_become_one_write_that_linux_splits():
    sc = scenario(actions=[{"at": "0.1s", "command": "guest-burst",
                            "arguments": {"drive": "vda", "rw": "write", "bs": "4KiB",
                                          "offset": "1MiB", "number-ios": 2, "iodepth": 2}}])
    assert plan_vm(sc).ops() == ["m 4", "w 1048576 8192 1", "m 0"]


def test_a_workload_with_fsync_flushes_after_each_write():
    sc = scenario(actions=[], workloads={"w": {"drive": "vda", "rw": "write", "bs": "4KiB",
                                               "offset": "1MiB", "number-ios": 2, "fsync": 1}})
    assert plan_vm(sc).ops() == ["w 1048576 4096 1", "f", "w 1052672 4096 2", "f"]


@pytest.mark.parametrize("change, why", [
    ({"faults": [{"image": "disk", "operation": "write", "offset": 0, "length": 512}]},
     "Linux reads the disk's first and last"),
    ({"faults": [{"image": "disk", "operation": "write", "offset": "1MiB", "length": "4KiB"}]},
     "one-sector range"),
    ({"faults": [{"image": "disk", "type": "delay", "operation": "write", "delay": "1ms"}]},
     "only error faults"),
    ({"actions": [{"at": "1s", "command": "cont"}]}, "other commands on events"),
    ({"actions": [{"at": "0.1s", "command": "guest-burst",
                   "arguments": {"drive": "vda", "rw": "randwrite", "number-ios": 2}}]},
     "sequential reads or writes"),
])
def test_what_the_vm_cannot_run_is_refused_with_the_reason(change, why):
    with pytest.raises(VMUnsupported, match=why):
        plan_vm(scenario(**change))


# -- the guest's initramfs (everywhere) ----------------------------------------------------------

def _unpack(archive: bytes) -> dict[str, bytes]:
    files, at = {}, 0
    while True:
        head = archive[at:at + 110]
        assert head[:6] == b"070701"
        size, namesize = int(head[54:62], 16), int(head[94:102], 16)
        name = archive[at + 110:at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) // 4 * 4
        if name == "TRAILER!!!":
            return files
        files[name] = archive[at:at + size]
        at = (at + size + 3) // 4 * 4


def test_cpio_is_newc_with_padding():
    files = _unpack(_cpio([("init", 0o100755, b"#!/bin/sh\n"), ("ops", 0o100644, b"f\n"),
                           ("dir", 0o040755, b"")]))
    assert files == {"init": b"#!/bin/sh\n", "ops": b"f\n", "dir": b""}


def test_modules_come_after_their_dependencies(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko "
        "kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko "
        "kernel/drivers/virtio/virtio_ring.ko\n")
    assert [n for n, _p in _module_order(tmp_path)] == ["virtio_ring", "virtio", "virtio_pci",
                                                         "virtio_blk"]


@needs_vm
def test_the_initramfs_holds_busybox_modules_init_and_the_program(tmp_path):
    path = build_initramfs(TOOLS, ["w 1048576 4096 1", "f"], tmp_path / "initrd.gz")
    files = _unpack(gzip.decompress(path.read_bytes()))
    assert files["ops"] == b"w 1048576 4096 1\nf\n"
    assert files["init"].startswith(b"#!/bin/busybox sh")
    assert files["modules"].split()[-1] == b"virtio_blk"
    assert files["bin/busybox"][:4] == b"\x7fELF"


# -- the comparison (everywhere) -----------------------------------------------------------------

def test_events_are_compared_with_their_whole_payload():
    stop = {"event": "BLOCK_IO_ERROR", "data": {"device": "vda", "node-name": "disk",
                                                "operation": "write", "action": "report",
                                                "reason": "Input/output error"}}
    assert normalise_event(stop) == ("BLOCK_IO_ERROR device=vda node-name=disk operation=write "
                                     "action=report reason=Input/output error")
    assert normalise_event({"event": "STOP"}) == "STOP"
    assert normalise_command({"execute": "query-block", "return": [{"device": "vda"}]}) == \
        "query-block: vda io-status=absent"
    a = VMSide(events=["BLOCK_IO_ERROR x", "STOP"], guest=["write 1MiB+4KiB: ok"])
    b = VMSide(events=["BLOCK_IO_ERROR x", "BLOCK_IO_ERROR x", "STOP"],
               guest=["write 1MiB+4KiB: ok"])
    assert compare_vm(a, b) == ["events: first difference at #1: blocksim 'STOP', "
                                "QEMU 'BLOCK_IO_ERROR x'"]
    assert compare_vm(a, a) == []


# -- the VM ---------------------------------------------------------------------------------------

@needs_vm
@pytest.mark.parametrize("path", VM_SCENARIOS, ids=[p.stem for p in VM_SCENARIOS])
def test_scenario_agrees_with_the_vm(path):
    check = check_vm_scenario(path, TOOLS)
    assert check.ok, "\n".join(check.differences)
    # every case does something: an error event, and the guest's requests all accounted for
    assert any(e.startswith("BLOCK_IO_ERROR") for e in check.qemu.events)
    assert check.qemu.guest and check.qemu.data is not None


@needs_vm
def test_two_requests_failing_together_give_one_stop_after_both_errors():
    path = ROOT / "scenarios" / "qemu-vm" / "werror-stop-two-requests-fail-at-once.toml"
    check = check_vm_scenario(path, TOOLS)
    assert [e.split()[0] for e in check.qemu.events] == ["BLOCK_IO_ERROR", "BLOCK_IO_ERROR",
                                                         "STOP", "RESUME"]
    assert check.qemu.commands == ["query-block: vda io-status=failed", "cont: ok",
                                   "query-block: vda io-status=ok"]
    assert check.ok


@needs_vm
def test_the_cli_runs_the_vm_check():
    path = ROOT / "scenarios" / "qemu-vm" / "werror-report-write-eio.toml"
    result = CliRunner().invoke(qemu_check, ["--vm", str(path)])
    assert result.exit_code == 0, result.output
    assert "1/1 scenarios agree with the QEMU VM" in result.output
    assert "action=report reason=Input/output error" in result.output
