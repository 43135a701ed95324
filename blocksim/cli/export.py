"""``blocksim export``: print a scenario as a qemu-storage-daemon session
(``--qsd``) or as libvirt ``<disk>`` elements (``--libvirt``), so a
simulated failure can be taken to a real stack (blocksim/qemu/export.py).
"""

from __future__ import annotations

import click

from ..errors import ScenarioError
from .inputs import BadInput, parse_sets, scenario_file

__all__ = ["export", "register"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("scenario", metavar="SCENARIO")
@click.option("--qsd", "form", flag_value="qsd",
              help="qemu-storage-daemon: the images, the daemon's command line, the QMP commands.")
@click.option("--libvirt", "form", flag_value="libvirt",
              help="libvirt: the domain XML <disk> elements with error_policy/rerror_policy.")
@click.option("--image-dir", default="/var/lib/libvirt/images", show_default=True,
              metavar="DIR", help="With --libvirt: where the image files are.")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a scenario value first (repeatable), as for run.")
def export(scenario, form, image_dir, sets):
    """Print SCENARIO (a file or a library NAME) for a real stack: --qsd as
    a qemu-storage-daemon session (what qemu-check runs: images, daemon,
    QMP commands, with what it leaves out), --libvirt as the <disk>
    elements of its drives.

    \b
    Examples:
      blocksim export commit-live-merge-thin-base-enospc --qsd > merge.sh
      blocksim export scenarios/mirror-thin-target-enospc.toml --libvirt
    """
    from ..qemu.export import libvirt_disks, qsd_script
    from ..scenario import load_scenario
    if form is None:
        raise BadInput(["export: say which form: --qsd or --libvirt"])
    path = scenario_file(scenario)
    overrides = parse_sets(sets) if sets else None
    try:
        loaded = load_scenario(path, overrides=overrides)
    except OSError as exc:
        raise ScenarioError(path, [("", exc.strerror or str(exc))]) from None
    click.echo(qsd_script(loaded) if form == "qsd" else libvirt_disks(loaded, image_dir), nl=False)


def register(group: click.Group) -> None:
    """Add ``export`` to the ``blocksim`` command group."""
    group.add_command(export)
