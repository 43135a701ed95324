"""``blocksim qemu-check``: compare blocksim with real QEMU.

The lead engineer wires it into the main command group with
:func:`register`; until then it runs standalone as
``python -m blocksim.qemu.cli SCENARIO...``.

Exit status: 0 when every scenario agrees (or differs only where its file
documents it), 1 when one disagrees or its QEMU run failed, 2 on bad input
(a malformed scenario, a missing QEMU binary).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BlocksimError, ScenarioError
from .check import check_scenarios, find_tools
from .report import render_json, render_text

__all__ = ["qemu_check", "register", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _expand(paths) -> list[str]:
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.glob("*.toml"))
            if not found:
                raise ScenarioError(str(path), [("", "directory holds no *.toml scenario")])
            out.extend(found)
        else:
            out.append(str(path))
    return out


@click.command("qemu-check", context_settings=CONTEXT_SETTINGS)
@click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO...")
@click.option("--qemu-storage-daemon", "qsd", default=None, metavar="PATH",
              help="qemu-storage-daemon binary (default: from PATH).")
@click.option("--qemu-img", "qemu_img", default=None, metavar="PATH",
              help="qemu-img binary (default: from PATH); qemu-io is looked for beside it.")
@click.option("--qemu-io", "qemu_io", default=None, metavar="PATH",
              help="qemu-io binary (default: beside qemu-img, else from PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="Deadline of each QMP command.")
@click.option("--keep", is_flag=True, help="Keep the QEMU working directories (for debugging).")
@click.option("--vm", is_flag=True,
              help="Check the guest side on a real VM (qemu-system-x86_64, TCG): rerror/werror, "
                   "STOP/RESUME, cont, query-block (scenarios/qemu-vm/).")
@click.pass_context
def qemu_check(ctx, scenarios, qsd, qemu_img, qemu_io, as_json, timeout, keep, vm):
    """Run each SCENARIO (a file, or a directory of *.toml) on blocksim and
    on real QEMU (qemu-storage-daemon, no guest), and compare the events,
    job outcomes, errors and data integrity side by side.

    Parts QEMU cannot run without a guest (workloads, stop/cont,
    guest-burst, thin storage, non-blkdebug faults) are skipped and named in
    the report.  Exit status 1 on any disagreement.

    With --vm, each SCENARIO's guest runs on a real VM instead
    (qemu-system-x86_64 under TCG, a busybox guest doing O_DIRECT I/O): the
    events (BLOCK_IO_ERROR, STOP, RESUME), the on-event commands' answers
    (query-block's io-status), what the guest saw and the data are compared.

    \b
    Example:
      blocksim qemu-check scenarios/qemu/
      blocksim qemu-check --vm scenarios/qemu-vm/
    """
    if vm:
        ctx.exit(_vm_check(_expand(scenarios), as_json, keep))
    tools = find_tools(qsd, qemu_img, qemu_io)
    paths = _expand(scenarios)

    def progress(check):
        took = check.qemu.seconds + check.blocksim.seconds
        click.echo(f"{check.name}: {check.status} ({took:.1f}s)", err=True)

    def log(message):
        click.echo(message, err=True)

    checks = check_scenarios(paths, tools, qmp_timeout=timeout, keep=keep, log=log,
                             progress=progress)
    if as_json:
        click.echo(json.dumps(render_json(checks, tools), indent=2, default=str))
    else:
        click.echo(render_text(checks, tools), nl=False)
    ctx.exit(0 if all(c.ok for c in checks) else 1)


def _vm_check(paths: list[str], as_json: bool, keep: bool) -> int:
    """``--vm``: each scenario on blocksim and on a QEMU VM
    (:mod:`blocksim.qemu.vmcheck`); 0 when all agree, else 1."""
    from .vm import find_vm_tools
    from .vmcheck import check_vm_scenario, render_vm_check, vm_check_dict

    tools = find_vm_tools()
    checks = []
    for path in paths:
        check = check_vm_scenario(path, tools, keep=keep)
        click.echo(f"{check.name}: {'agrees' if check.ok else 'DIFFERS'} "
                   f"({check.qemu.seconds + check.blocksim.seconds:.1f}s)", err=True)
        checks.append(check)
    if as_json:
        click.echo(json.dumps([vm_check_dict(c) for c in checks], indent=2, default=str))
    else:
        for check in checks:
            click.echo(render_vm_check(check))
        agree = sum(c.ok for c in checks)
        click.echo(f"{agree}/{len(checks)} scenarios agree with the QEMU VM")
    return 0 if all(c.ok for c in checks) else 1


def register(group: click.Group) -> None:
    """Add ``qemu-check`` to the ``blocksim`` command group."""
    group.add_command(qemu_check)


def main(argv=None) -> int:
    """Standalone entry point (same exit statuses as under ``blocksim``)."""
    try:
        rc = qemu_check.main(args=argv, prog_name="blocksim qemu-check", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 130
    except BlocksimError as exc:
        for line in exc.lines() or [type(exc).__name__]:
            click.echo(line, err=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
