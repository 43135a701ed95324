"""``blocksim serve``: a scenario's simulated QEMU, over QMP.

Wired into the main command group by :func:`register` (``blocksim.cli``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ..errors import ScenarioError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def parse_tcp(value: str) -> tuple[str, int]:
    """``PORT`` (loopback) or ``HOST:PORT``."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give PORT or HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise click.BadParameter(f"{value!r}: the port must be 0..65535")
    return host, number


@click.command("serve", context_settings=CONTEXT_SETTINGS)
@click.argument("scenario", metavar="SCENARIO")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), default=None,
              help="Unix socket to listen on (created owner-only, 0600).")
@click.option("--tcp", default=None, metavar="[HOST:]PORT",
              help="TCP address to listen on (loopback unless HOST is given).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="X", help="Real-time mode: simulated time runs X times the wall clock. "
                                "Default: virtual time, advanced by x-blocksim-advance.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the random draws (default: the scenario's own seed).")
@click.option("--out", "out", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Folder under which the session writes its results "
                                      "folder (OUT/NAME-served) when a client goes.")
@click.option("--no-x-commands", "no_x", is_flag=True,
              help="Refuse the x-blocksim-* commands that change the run (thin extends, "
                   "guest bursts; in real-time mode the clock commands too).")
@click.option("--replay", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="COMMANDS.JSONL", help="Serve no socket: run a recorded session's "
              "commands (a results folder's commands.jsonl) again and write its results folder.")
def serve(scenario, socket_path, tcp, speed, seed, out, no_x, replay):
    """Serve SCENARIO's simulated VM over QMP, as QEMU 7.2 speaks it.

    A QMP client (qemu.qmp, qmp-shell, libvirt-like management code)
    connects, negotiates with qmp_capabilities and runs commands:
    query-status, stop, cont, query-block, query-block-jobs, query-jobs,
    blockdev-mirror, block-stream, block-commit, blockdev-backup,
    block-job-*, job-*, block-dirty-bitmap-*, quit.  In virtual time
    (default) simulated time moves only with x-blocksim-advance
    {"seconds": N} or {"until-event": "BLOCK_JOB_READY"}.  See docs/serve.md.

    \b
    Examples:
      blocksim serve examples/serve/mirror-flaky-target.toml --socket /tmp/qmp.sock
      blocksim serve guest-thin-disk-enospc-pause --tcp 4444 --speed 10
    """
    from ..scenario import load_scenario
    from ..scenario.library import find_in_library
    from .server import Server
    from .session import Session

    if not socket_path and not tcp and not replay:
        raise click.UsageError("give --socket PATH or --tcp [HOST:]PORT (or both), or --replay")
    address = parse_tcp(tcp) if tcp else None
    found = None if Path(scenario).exists() else find_in_library(scenario)
    path = str(found) if found is not None else scenario
    if not Path(path).exists() and not scenario.endswith(".toml"):
        raise ScenarioError(scenario, [("", "no such file, nor a library scenario of that "
                                            "name (blocksim list names them)")])
    loaded = load_scenario(path)
    folder = Path(out) / (f"{loaded.name}-served" if seed is None
                          else f"{loaded.name}-seed{seed}-served")
    if replay:
        import json

        from ..record.results import save_result
        from .session import replay as replay_session
        with open(replay) as stream:
            commands = [json.loads(line) for line in stream if line.strip()]
        session = replay_session(loaded, commands, seed=seed)
        save_result(session.result(), folder)
        click.echo(f"replayed {len(commands)} commands; wrote {folder}")
        return
    session = Session(loaded, seed=seed)
    server = Server(session, socket_path=socket_path, tcp=address, speed=speed,
                    extensions=not no_x, output=str(folder),
                    log=lambda line: click.echo(line, err=True))
    try:
        asyncio.run(server.run())
    except KeyboardInterrupt:
        server._save()
    except OSError as exc:
        where = socket_path if socket_path and exc.filename in (None, socket_path) else tcp
        raise click.ClickException(f"{where}: cannot listen: {exc.strerror or exc}") from None


def register(group) -> None:
    group.add_command(serve)
