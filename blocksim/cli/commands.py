"""The ``blocksim`` command line: run, validate, list, plot, schema, sweep,
compare, qemu-check and export.

Exit status: 0 when everything went well, 1 when a run violated an invariant,
2 on bad input (a malformed scenario, a missing file, an unknown profile, a
bad ``--set``, a folder that is not a complete results folder).  Bad input is
reported as one line per problem on stderr, never as a traceback: every
:class:`~blocksim.errors.BlocksimError` is caught at the top.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click

from ..errors import BlocksimError, ScenarioError
from ..model.profile import PROFILES
from ..record.summary import VERSION as __version__
from ..record.summary import never_lines
from .inputs import BadInput, limit_options, parse_sets, scenario_file

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PROFILE_NAMES = tuple(PROFILES)


class _Group(click.Group):
    """Turns every BlocksimError, and click's usage errors, into clean lines
    on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BlocksimError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            _usage_error(exc)
            ctx.exit(2)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:     # an option of the group itself
            _usage_error(exc)
            sys.exit(2)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(exc: click.UsageError) -> None:
    """One line, like every other bad input: ``blocksim run: Invalid value
    for '--seed': -1 is not in the range x>=0. (blocksim run --help)``
    instead of click's usage block."""
    if isinstance(exc, _NO_ARGS_IS_HELP):        # bare `blocksim`: the help, as before
        exc.show()
        return
    path = exc.ctx.command_path if exc.ctx is not None else "blocksim"
    message = " ".join(exc.format_message().split())
    click.echo(f"{path}: {message} (see {path} --help)", err=True)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="blocksim")
def main():
    """Simulate a VM's block layer (QEMU's error policies, block jobs, thin
    devices) under I/O faults.

    \b
    Examples:
      blocksim list
      blocksim validate scenarios/*.toml
      blocksim run scenarios/mirror-thin-target-enospc.toml
      blocksim plot results/mirror-thin-target-enospc
    """


# -- loading scenarios -------------------------------------------------------------
def _load(path: str, overrides: dict | None = None, limits=None):
    """``(scenario, [])`` or ``(None, problem lines)`` for one scenario file
    (or library NAME), within ``limits`` (blocksim.scenario.limits)."""
    from ..scenario import load_scenario
    argument, path = path, scenario_file(path)
    if not Path(path).exists() and not argument.endswith(".toml"):
        return None, [f"{argument}: no such file, nor a library scenario of that name "
                      "(blocksim list names them)"]
    try:                            # a missing file or a directory is a ScenarioError too
        return load_scenario(path, overrides=overrides or None, limits=limits), []
    except ScenarioError as exc:
        return None, exc.lines() or [f"{path}: invalid scenario"]
    except BlocksimError as exc:
        return None, [f"{path}: {line}" for line in exc.lines()]
    except OSError as exc:
        return None, [f"{path}: {exc.strerror or exc}"]


def _check_profile(profile: str | None) -> None:
    if profile is not None:
        from ..model.profile import get_profile
        try:
            get_profile(profile)
        except BlocksimError as exc:
            raise BadInput([f"--profile: {exc}"]) from None


def result_folder_name(name: str, seed: int | None = None,
                       profile: str | None = None) -> str:
    """The folder a run writes under ``--out``: the scenario's name, then
    ``-seed<N>`` when a seed was given and ``-<profile>`` when a profile was.
    A name longer than 100 characters is cut and given a hash of the whole
    name (:func:`blocksim.record.results.folder_name`): a file name is at
    most 255 bytes on most file systems, and the temporary folder's
    ``.NAME.tmp-PID-XXXXXXXX`` needs room too."""
    from ..record.results import folder_name
    folder = folder_name(name)
    if seed is not None:
        folder += f"-seed{seed}"
    if profile is not None:
        folder += f"-{profile}"
    return folder


# -- the outcome table ---------------------------------------------------------------
def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return [indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]


def _secs(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _actions(counts: dict) -> str:
    order = ["ignore", "report", "stop"] + sorted(set(counts) - {"ignore", "report", "stop"})
    parts = [f"{a} {counts[a]}" for a in order if counts.get(a)]
    return ", ".join(parts) or "none"


def _refusal(commands: list[dict], job_id: str) -> str | None:
    """Why the command that should have started ``job_id`` was refused."""
    for record in commands:
        if "error" in record and (record.get("source") == f"jobs.{job_id}"
                                  or record.get("arguments", {}).get("job-id") == job_id):
            return f"{record.get('execute')}: {record['error'].get('desc')}"
    return None


def _thin_lines(s: dict) -> list[str]:
    """The thin-provisioning figures (record.summary.thin_provisioning), when
    the run has any: pauses, ENOSPC errors, extends, thin images."""
    pauses, enospc, extends = s.get("pauses") or {}, s.get("enospc") or {}, s.get("extends") or {}
    thin = s.get("thin_images") or {}
    if not (thin or pauses.get("count") or enospc.get("guest") or enospc.get("jobs")
            or extends.get("count") or extends.get("failed")):
        return []
    mib = 1024 * 1024
    lines = [f"  thin: {pauses.get('count', 0)} pause(s), longest {_secs(pauses.get('longest'))};"
             f" ENOSPC guest {enospc.get('guest', 0)}, jobs {enospc.get('jobs', 0)};"
             f" extends {extends.get('count', 0)} (+{extends.get('bytes', 0) / mib:g} MiB),"
             f" {extends.get('failed', 0)} failed"]
    for name, t in thin.items():
        over = t.get("overallocation")
        lines.append(f"    {name}: {t['physical'] / mib:g} MiB physical, "
                     f"{t['allocated'] / mib:g} MiB allocated, {t['written'] / mib:g} MiB written"
                     + (f", overallocation x{over:.2f}" if over is not None else ""))
    return lines


def _stop_reason(result) -> str:
    """Why a truncated run stopped, in a few words."""
    s = result.summary
    scenario = result.scenario
    at = f"stopped at {s.get('simulated_seconds', 0):g} s of {scenario.get('duration', 0):g} s"
    why = {"max-events": f"the event log reached max-events ({scenario.get('max-events')})",
           "max-requests": "the guest requests reached max-requests",
           "max-samples": "the time series reached --max-samples",
           "interrupted": "interrupted (Ctrl-C)"}
    return f"{at}: {why.get(s.get('stopped_by', 'max-events'), s.get('stopped_by'))}"


def format_outcome(result, folder=None) -> str:
    """A short, human-readable table of a run's outcome."""
    s = result.summary
    head = (f"{s.get('scenario')}: profile {result.profile}, seed {result.seed}, "
            f"{s.get('simulated_seconds', 0):g} s simulated, {s.get('events', 0)} events")
    if folder is not None:
        head += f" -> {folder}"
    lines = [head]
    if s.get("truncated"):
        lines.append(f"  warning: {_stop_reason(result)}")
    vm = s.get("vm", {})
    stops = vm.get("stops", 0)
    lines.append(f"  VM: {vm.get('final_state')} at the end, paused {_secs(vm.get('time_paused'))}"
                 f" over {stops} stop{'' if stops == 1 else 's'}")
    lines.extend(_thin_lines(s))
    lines.extend(f"  warning: {line}" for line in never_lines(s))
    jobs = s.get("jobs", {})
    if jobs:
        rows = [["job", "type", "outcome", "ready", "finished", "paused", "errors",
                 "io-status", "integrity"]]
        notes: dict[int, list[str]] = {}
        for job_id, j in jobs.items():
            rows.append([job_id, j.get("type", "?"), j.get("outcome", "?"),
                         _secs(j.get("ready_at")), _secs(j.get("finished_at")),
                         _secs(j.get("time_paused")), _actions(j.get("errors_by_action", {})),
                         j.get("io_status", "?"), j.get("integrity", "?")])
            extra = []
            if j.get("outcome") == "refused":
                why = _refusal(result.commands, job_id)
                if why:
                    extra.append(f"refused: {why}")
            if j.get("error"):
                extra.append(f"error: {j['error']}")
            if j.get("integrity_detail"):
                extra.append(f"integrity: {j['integrity_detail']}")
            notes[len(rows) - 1] = extra
        table = _table(rows)
        for i, line in enumerate(table):
            lines.append(line)
            for note in notes.get(i, []):
                lines.append(f"      {note}")
    drives = s.get("drives", {})
    if drives:
        rows = [["drive", "requests", "guest errors", "writes lost", "lost bytes",
                 "errors", "io-status"]]
        for name, d in drives.items():
            rows.append([name, str(d.get("requests", 0)), str(d.get("guest_errors", 0)),
                         str(d.get("writes_lost", 0)), str(d.get("lost_bytes", 0)),
                         _actions(d.get("errors_by_action", {})), d.get("io_status", "?")])
        lines.extend(_table(rows))
    refused = s.get("commands", {}).get("refused", 0)
    if refused:
        lines.append(f"  commands: {s['commands'].get('executed', 0)} executed, "
                     f"{refused} refused (see commands.jsonl)")
    inv = s.get("invariants", {})
    violations = inv.get("violations", [])
    checked = len(inv.get("checked", []))
    if not violations:
        lines.append(f"  invariants: all {checked} hold")
    else:
        lines.append(f"  invariants: {len(violations)} VIOLATION"
                     f"{'' if len(violations) == 1 else 'S'}")
        for v in violations:
            lines.append(f"    {v.get('invariant')} ({v.get('subject')}, at "
                         f"{_secs(v.get('time'))}): {v.get('detail')}")
    return "\n".join(lines)


# -- progress -----------------------------------------------------------------------------
class Progress:
    """The ``progress`` callback of a run: a bar on ``stream`` (stderr), drawn
    only when it is a terminal and the run lasts longer than ``delay`` seconds."""

    def __init__(self, label: str, stream=None, delay: float = 0.5, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.delay = delay
        self.clock = clock
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.start = clock()
        self.bar = None
        self.done = 0

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        steps = max(0, min(100, int(round(fraction * 100))))
        if self.bar is None:
            if self.clock() - self.start < self.delay or steps >= 100:
                return
            self.bar = click.progressbar(length=100, label=self.label, file=self.stream,
                                         show_eta=True, show_percent=True)
            self.bar.__enter__()
        if steps > self.done:
            self.bar.update(steps - self.done)
            self.done = steps

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


# -- commands -----------------------------------------------------------------------------
@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO...")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the random draws (default: the scenario's own seed).")
@click.option("--out", "out", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Folder under which each run writes its results folder.")
@click.option("--profile", default=None, metavar="|".join(PROFILE_NAMES),
              help="Semantics profile: today's QEMU or the 2012 design note "
                   "(default: the scenario's own).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override one scenario key (repeatable).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object a run (its folder and summary) instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but problems.")
@limit_options
def run(scenarios, seed, out, profile, sets, as_json, quiet, limits):
    """Run one or more scenarios and write a results folder for each.

    SCENARIO is a file, or the NAME of a library scenario (`blocksim list`).
    Each run writes OUT/NAME/ (NAME is the scenario's name), or
    OUT/NAME-seedN/ with --seed N, with -PROFILE appended when --profile is
    given.  An older folder of the same name is replaced once the new one is
    complete.  A short outcome table is printed per run.  A run that reaches
    a bound (max-events, max-requests, --max-samples) stops there with a
    warning; Ctrl-C stops it at its next sample: either way its results
    folder is complete, marked "truncated" with "stopped_by" in
    summary.json (a second Ctrl-C leaves nothing half-written).  Exit
    status: 1 if a run violated an invariant, 2 on bad input, 130 when
    interrupted.

    \b
    Examples:
      blocksim run scenarios/mirror-thin-target-enospc.toml
      blocksim run mirror-thin-target-enospc
      blocksim run scenarios/*.toml --out /tmp/results
      blocksim run scenarios/mirror-thin-target-enospc.toml --seed 7 \\
          --profile rfc-2012 --set jobs.mirror0.speed=64M --set duration=30s
      blocksim run mirror-thin-target-enospc --json | jq .summary.jobs
    """
    from ..record.results import save_result
    from ..simulation import run as simulate

    problems: list[str] = []
    try:
        overrides = parse_sets(sets)
    except BadInput as exc:
        problems += exc.problems
        overrides = {}
    try:
        _check_profile(profile)
    except BadInput as exc:
        problems += exc.problems
    loaded = []
    for path in scenarios:
        scenario, errs = _load(path, overrides, limits)
        problems += errs
        if scenario is not None:
            loaded.append((path, scenario))
    targets: dict[str, str] = {}
    for path, scenario in loaded:
        folder = result_folder_name(scenario.name, seed, profile)
        if folder in targets:
            problems.append(f"{path}: scenario {scenario.name!r} would write the same results "
                            f"folder as {targets[folder]}; give them different names")
        targets.setdefault(folder, path)
    if problems:
        raise BadInput(problems)

    violated = False
    for index, (path, scenario) in enumerate(loaded):
        progress = Progress(scenario.name)
        try:
            result = simulate(scenario, seed=seed, profile=profile, progress=progress,
                              limits=limits, interruptible=True)
        finally:
            progress.close()
        folder = Path(out) / result_folder_name(scenario.name, seed, profile)
        try:
            save_result(result, folder)
        except OSError as exc:
            raise BadInput([f"{folder}: cannot write the results folder (named after {path}'s "
                            f"'name' key): {exc.strerror or exc}"]) from None
        stopped = result.summary.get("stopped_by")
        if stopped:
            click.echo(f"{path}: warning: {_stop_reason(result)}; {folder} is complete "
                       "and marked truncated", err=True)
        if as_json:
            # one line a run (JSON Lines), for scripts
            click.echo(json.dumps({"scenario": result.summary.get("scenario"), "folder": str(folder),
                                   "seed": result.seed, "profile": result.profile,
                                   "summary": result.summary}, sort_keys=True))
        elif not quiet:
            if index:
                click.echo()
            click.echo(format_outcome(result, folder))
        violated = violated or bool(result.summary["invariants"]["violations"])
        if stopped == "interrupted":
            sys.exit(130)               # (the runs after it are not started)
    if violated:
        sys.exit(1)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO...")
@limit_options
def validate(scenarios, limits):
    """Check scenario files without running them.

    Prints "OK FILE" for each good file and every problem of a bad one as a
    "file: key.path: message" line on stderr; exit status 2 if any is bad.
    A scenario must also keep within the limits (docs/scenario-format.md,
    "Limits"): what its run is estimated to hold and do.

    \b
    Example:
      blocksim validate scenarios/*.toml
    """
    bad = False
    for path in scenarios:
        scenario, problems = _load(path, limits=limits)
        if scenario is None:
            bad = True
            for line in problems:
                click.echo(line, err=True)
        else:
            click.echo(f"OK {path}")
    if bad:
        sys.exit(2)


@main.command("list", context_settings=CONTEXT_SETTINGS,
              short_help="List scenario files with their names and descriptions.")
@click.argument("directory", required=False, default=None, metavar="[DIR]")
def list_(directory):
    """List the scenario files (*.toml) of DIR with their names and one-line
    descriptions.  Without DIR: ./scenarios/ if there is one (a clone of the
    repository), else the library installed with blocksim, whose scenarios
    `blocksim run NAME` runs from any directory.

    \b
    Examples:
      blocksim list
      blocksim list my-scenarios/
    """
    library = directory is None and not Path("scenarios").is_dir()
    if directory is None:
        from ..scenario.library import library_dir
        directory = str(library_dir()) if library else "scenarios"
    folder = Path(directory)
    if not folder.is_dir():
        raise BadInput([f"{directory}: no such directory"])
    rows, bad = [], False
    for path in sorted(folder.glob("*.toml")):
        scenario, problems = _load(str(path))
        if scenario is None:
            bad = True
            for line in problems:
                click.echo(line, err=True)
            continue
        description = (scenario.description or "").strip().splitlines()
        # the library's scenarios are listed by the NAME `blocksim run` takes
        rows.append([path.stem if library else str(path), scenario.name,
                     description[0].strip() if description else ""])
    if rows:
        for line in _table(rows, indent=""):
            click.echo(line)
    elif not bad:
        click.echo(f"no scenario files (*.toml) in {directory}", err=True)
    if bad:
        sys.exit(2)


@main.command(context_settings=CONTEXT_SETTINGS,
              short_help="Write a commented starting scenario from a template.")
@click.argument("template", metavar="TEMPLATE")
@click.argument("path", metavar="PATH")
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def new(template, path, force):
    """Write a commented starting scenario (TEMPLATE: guest, mirror, stream, commit)
    to PATH, ready to run and to edit.

    \b
    Examples:
      blocksim new mirror my-mirror.toml
      blocksim run my-mirror.toml
    """
    from ..record.atomic import write_text
    from ..scenario.library import template_text, templates
    text = template_text(template)
    if text is None:
        raise BadInput([f"TEMPLATE: unknown template {template!r}; "
                        f"expected one of: {', '.join(templates())}"])
    target = Path(path)
    if target.suffix != ".toml":
        raise BadInput([f"{path}: a scenario file's name ends in .toml"])
    if target.exists() and not force:
        raise BadInput([f"{path}: already exists (--force replaces it)"])
    if not target.parent.is_dir():
        raise BadInput([f"{path}: no such directory: {target.parent}"])
    # the scenario is named after its file, as a scenario without a name is
    name = json.dumps(target.stem)
    write_text(target, re.sub(r'(?m)^name = "[^"]*"', lambda _: f"name = {name}", text, count=1))
    click.echo(f"wrote {path} (template {template}); run it with: blocksim run {path}")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("result_dir", metavar="RESULT_DIR")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Where to draw the figure (default RESULT_DIR/timeline.png); "
                   "the format follows the suffix (png, svg, pdf...; html: the interactive "
                   "timeline, with the [html] extra).")
def plot(result_dir, output):
    """Redraw the timeline figure of a finished run.

    \b
    Examples:
      blocksim plot results/mirror-thin-target-enospc
      blocksim plot results/mirror-thin-target-enospc -o mirror.svg
      blocksim plot results/mirror-thin-target-enospc -o mirror.html
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from ..record.plot import save_timeline
    from ..record.results import TIMELINE, load_result

    result = load_result(result_dir, figure=False)      # the figure is what we redraw
    target = Path(output) if output else Path(result_dir) / TIMELINE
    fmt = target.suffix[1:].lower() or "png"
    formats = {**FigureCanvasBase.get_supported_filetypes(), "html": "interactive"}
    if fmt not in formats:
        raise BadInput([f"{target}: unknown figure format {fmt!r}; "
                        f"use one of {', '.join(sorted(formats))}"])
    if not target.parent.is_dir():
        raise BadInput([f"{target}: no such directory {str(target.parent)!r}"])
    try:
        if fmt == "html":
            from ..record.html import save_timeline_html
            save_timeline_html(result, target)
        else:
            save_timeline(result, target)
    except OSError as exc:
        raise BadInput([f"{target}: cannot write: {exc.strerror or exc}"]) from None
    click.echo(f"wrote {target}")


@main.command(context_settings=CONTEXT_SETTINGS)
def schema():
    """Print the JSON Schema of the scenario format.

    \b
    Example:
      blocksim schema > scenario.schema.json
    """
    from ..scenario import scenario_json_schema
    click.echo(json.dumps(scenario_json_schema(), indent=2))


# -- commands that live with their subject ---------------------------------------------
def _register_commands() -> None:
    from ..qemu.cli import register as register_qemu
    from .analysis import register as register_analysis
    register_analysis(main)        # sweep, compare
    register_qemu(main)            # qemu-check
    from ..serve.cli import register as register_serve
    register_serve(main)           # serve
    from .export import register as register_export
    register_export(main)          # export
    from .explore import register as register_explore
    register_explore(main)         # explore


_register_commands()
