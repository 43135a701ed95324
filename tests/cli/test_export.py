"""``blocksim export``: the command line around blocksim/qemu/export.py."""

import json

from click.testing import CliRunner

from blocksim.cli.commands import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_export_qsd_of_a_library_scenario_by_name():
    r = invoke("export", "commit-live-merge-thin-base-enospc", "--qsd")
    assert r.exit_code == 0, r.output
    assert "qemu-storage-daemon --chardev socket,id=qmp0" in r.output
    body = r.output.split("cat <<'QMP'\n", 1)[1].split("\nQMP\n", 1)[0]
    commands = [json.loads(l)["execute"] for l in body.splitlines() if not l.startswith("#")]
    assert commands == ["qmp_capabilities", "blockdev-add", "blockdev-add", "block-commit",
                        "block-job-resume", "block-job-complete"]


def test_export_libvirt_with_overrides_and_image_dir():
    r = invoke("export", "scenarios/commit-live-merge-thin-base-enospc.toml", "--libvirt",
               "--image-dir", "/srv/vm", "--set", "drives.vda.werror=stop")
    assert r.exit_code == 0, r.output
    assert 'error_policy="stop" rerror_policy="report"' in r.output
    assert '<source file="/srv/vm/top.qcow2"/>' in r.output


def test_export_needs_a_form_and_a_scenario():
    r = invoke("export", "commit-live-merge-thin-base-enospc")
    assert r.exit_code == 2 and "--qsd or --libvirt" in r.output
    r = invoke("export", "no-such-scenario", "--qsd")
    assert r.exit_code == 2 and "no-such-scenario" in r.output
    r = invoke("export", "commit-live-merge-thin-base-enospc", "--qsd", "--set", "drives.vda.werror=x")
    assert r.exit_code == 2 and "drives.vda.werror" in r.output
