"""The ``sweep`` and ``compare`` commands of the ``blocksim`` command line.

:func:`register` adds them to a click group (``blocksim.cli.main``).  Bad
input is reported as one line per problem on stderr with exit status 2;
``compare`` exits 1 when something regressed, ``sweep`` when a run failed or
violated an invariant.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ..errors import BlocksimError
from ..model.profile import PROFILES
from .inputs import limit_options

__all__ = ["register", "sweep_command", "compare_command", "parse_vary", "split_values"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _BadInput(click.ClickException):
    """Bad input: one line per problem on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, lines):
        self.lines = [line for line in lines if line.strip()] or ["bad input"]
        super().__init__("\n".join(self.lines))

    def show(self, file=None):
        for line in self.lines:
            click.echo(line, err=True)


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas that are not inside brackets,
    braces or quotes (so ``[1, 2],[3]`` is two values)."""
    values, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch in "[{":
            depth += 1
            current.append(ch)
        elif ch in "]}":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    values.append("".join(current).strip())
    return values


def parse_vary(items) -> dict[str, list[str]]:
    """``--vary KEY=V1,V2`` options as the ``vary`` of :func:`blocksim.analysis.sweep.sweep`."""
    vary: dict[str, list[str]] = {}
    problems = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            problems.append(f"--vary {item!r}: expected KEY.PATH=V1,V2,... "
                            "(for example --vary jobs.job0.on-target-error=report,stop)")
            continue
        values = split_values(text)
        if any(v == "" for v in values):
            problems.append(f"--vary {item!r}: empty value (values are separated by commas)")
            continue
        if key in vary:
            problems.append(f"--vary {key}: given twice; list all its values in one --vary")
            continue
        vary[key] = values
    if problems:
        raise _BadInput(problems)
    return vary


class _Bar:
    """``progress(done, total)`` drawing a bar with an ETA on a terminal."""

    def __init__(self, label: str, stream=None, delay: float = 0.5, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.label, self.delay, self.clock = label, delay, clock
        self.start = clock()
        self.bar = None
        self.base = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.base is None:
            self.base = done                # runs found in the journal: not part of the ETA
        if self.bar is None:
            if done >= total or self.clock() - self.start < self.delay:
                return
            self.bar = click.progressbar(length=total - self.base, label=self.label,
                                         file=self.stream, show_eta=True, show_pos=True,
                                         show_percent=False)
            self.bar.__enter__()
        step = done - self.base - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _as_bad_input(function):
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except BlocksimError as exc:
            raise _BadInput(exc.lines()) from None
    return wrapper


@click.command("sweep", context_settings=CONTEXT_SETTINGS)
@click.argument("scenario", metavar="SCENARIO")
@click.option("--vary", "vary", multiple=True, metavar="KEY.PATH=V1,V2,...",
              help="A scenario key and the values to try (repeatable); values are read like "
                   "--set values. The sweep runs every combination.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Runs per combination, with seeds S, S+1, ..., S+N-1 (S = the scenario's seed).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Local worker processes (default: one per core; 1 runs inline).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on a Dask distributed cluster instead, e.g. tcp://10.0.0.5:8786 "
                   "(its workers need blocksim installed; here: pip install 'blocksim[dask]').")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="The sweep folder (default results/NAME-sweep-HASH). A sweep started again "
                   "with the same folder resumes where it stopped.")
@click.option("--profile", default=None, metavar="|".join(PROFILES),
              help="Semantics profile of every run (default: the scenario's own).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Fix one scenario key for every run (repeatable): a --vary with one value, "
                   "so the tables show it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the sweep as one JSON object (folder, counts, one entry a combination).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but problems.")
@limit_options
@_as_bad_input
def sweep_command(scenario, vary, seeds, workers, scheduler, out, profile, sets, as_json, quiet,
                  limits):
    """Run a scenario for every combination of the varied keys, N seeds each.

    Writes DIR/runs.csv (one row a run: the varied values, the seed, every
    summary figure and the error of a failed run), DIR/aggregate.csv (per
    combination: mean and 95% confidence interval of every figure, share of
    each outcome class), DIR/comparison.png and DIR/sweep.json; prints one
    line a combination.  Finished runs are journaled in DIR/runs.jsonl, so an
    interrupted sweep started again skips them (Ctrl-C stops a sweep so,
    with exit status 130).  Exit status: 1 if a run failed or violated an
    invariant, 2 on bad input.

    \b
    Examples:
      blocksim sweep scenarios/mirror-thin-target-enospc.toml \\
          --vary jobs.mirror0.on-target-error=report,stop,enospc,ignore --seeds 10
      blocksim sweep scenarios/mirror-flakey-target-ignore.toml \\
          --vary faults.0.down=100ms,250ms,1s --vary jobs.mirror0.speed=16M,64M \\
          --seeds 20 --out results/flakey-sweep
      blocksim sweep my.toml --vary faults.0.probability=0.01,0.1 --seeds 50 \\
          --scheduler tcp://127.0.0.1:8786
    """
    from ..analysis.sweep import default_folder, sweep
    from .inputs import parse_sets, scenario_file

    scenario = scenario_file(scenario)           # a file, or a library NAME
    parsed = parse_vary(vary)
    for key, value in parse_sets(sets).items():
        if key in parsed:
            raise _BadInput([f"--set {key}: also varied by --vary; give it one of the two"])
        parsed[key] = [value]
    folder = Path(out) if out is not None else default_folder(scenario, parsed, seeds, profile=profile)
    if folder.exists() and not folder.is_dir():
        raise _BadInput([f"--out {folder}: exists and is not a folder"])
    bar = _Bar(f"sweep {Path(scenario).stem}", stream=_Silent() if quiet or as_json else None)
    try:
        result = sweep(scenario, parsed, seeds=seeds, workers=workers, scheduler=scheduler,
                       out=folder, progress=bar, profile=profile, limits=limits)
    except OSError as exc:
        raise _BadInput([f"{folder}: {exc.strerror or exc}"]) from None
    except KeyboardInterrupt:
        bar.close()
        from ..analysis.sweep import load_sweep
        try:
            n = len(load_sweep(folder).rows)
            done = f"{n} finished run{' is' if n == 1 else 's are'}"
        except BlocksimError:
            done = "the finished runs are"
        click.echo(f"{folder}: interrupted; {done} in its journal: the same command "
                   "resumes the sweep", err=True)
        sys.exit(130)
    finally:
        bar.close()
    d = result.definition
    combos = len(result.combinations())
    if as_json:
        click.echo(json.dumps({
            "scenario": d["scenario_name"], "folder": str(folder), "runs": result.total,
            "ran": result.ran, "resumed": result.resumed, "failed": result.failed,
            "violated": result.violated, "seeds": d["seeds"], "base_seed": d["base_seed"],
            "vary": d.get("vary", {}),
            "combinations": _json_safe(result.aggregate().to_dict(orient="records")),
        }, sort_keys=True))
        quiet = True
    head = (f"{d['scenario_name']}: {combos} combination{'' if combos == 1 else 's'} x {d['seeds']} seed"
            f"{'' if d['seeds'] == 1 else 's'} (seeds {d['base_seed']}..{d['base_seed'] + d['seeds'] - 1})"
            f" = {result.total} runs")
    if result.resumed:
        head += f", {result.resumed} already done, {result.ran} run now"
    if not quiet:
        click.echo(head + f" -> {folder}")
        for line in result.summary_lines():
            click.echo("  " + line)
    if result.failed and not quiet:
        click.echo(f"  {result.failed} run{'' if result.failed == 1 else 's'} failed "
                   f"(see the error column of {folder / 'runs.csv'})")
    if result.failed or result.violated:
        sys.exit(1)


@click.command("compare", context_settings=CONTEXT_SETTINGS)
@click.argument("baseline", required=False, metavar="BASELINE")
@click.argument("new", required=False, metavar="NEW")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              metavar="X", help="Relative change of a figure allowed between two single runs.")
@click.option("--alpha", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="Significance level of the tests across seeds (sweeps).")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show the differences that are not significant.")
@click.option("--update", is_flag=True,
              help="Rerun every scenario of --scenarios and rewrite the baseline in --baseline "
                   "(prints what changed).")
@click.option("--scenarios", "scenarios_dir", default="scenarios", show_default=True,
              metavar="DIR", help="With --update: the scenario library.")
@click.option("--baseline", "baseline_dir", default="results/baseline", show_default=True,
              metavar="DIR", help="With --update: the baseline folder.")
@_as_bad_input
def compare_command(baseline, new, as_json, tolerance, alpha, verbose, update, scenarios_dir,
                    baseline_dir):
    """Compare two sets of runs and report what changed.

    BASELINE and NEW are each a results folder, a sweep folder, a summary or
    baseline JSON file, or a folder of those; runs are matched by scenario
    name (sweeps: by combination).  Reported: job outcome classes, integrity
    verdicts, the VM's final state, normalised event sequences, invariant
    violations, and figures that moved beyond --tolerance (several seeds:
    a Mann-Whitney U test at --alpha).  Exit status: 0 nothing changed, 1
    something did, 2 on bad input.

    With --update, reruns scenarios/*.toml and rewrites results/baseline/
    (one JSON record a scenario); do this when a behaviour change is
    intended, and commit the result.

    \b
    Examples:
      blocksim compare results/baseline results/new
      blocksim compare results/run-a/mirror-enospc results/run-b/mirror-enospc --json
      blocksim compare results/sweep-old results/sweep-new --alpha 0.05
      blocksim compare --update
    """
    from ..analysis.compare import compare, update_baseline

    if update:
        if baseline or new:
            raise _BadInput(["compare --update takes no BASELINE or NEW argument "
                             "(use --scenarios DIR and --baseline DIR)"])
        _update(scenarios_dir, baseline_dir, update_baseline, compare, tolerance, alpha)
        return
    if not baseline or not new:
        raise click.UsageError("expected BASELINE and NEW (or --update)")
    report = compare(baseline, new, tolerance=tolerance, alpha=alpha)
    click.echo(report.to_json() if as_json else report.text(verbose=verbose))
    if report.regressed:
        sys.exit(1)


def _update(scenarios_dir, baseline_dir, update_baseline, compare, tolerance, alpha) -> None:
    import shutil
    import tempfile

    folder = Path(baseline_dir)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        had = folder.is_dir() and any(folder.glob("*.json"))
        if had:
            old.mkdir()
            for path in folder.glob("*.json"):
                shutil.copy2(path, old / path.name)
        written = update_baseline(scenarios_dir, baseline_dir)
        click.echo(f"wrote {len(written)} baseline record{'' if len(written) == 1 else 's'} "
                   f"in {folder} from {scenarios_dir}/*.toml")
        if had:
            report = compare(old, folder, tolerance=tolerance, alpha=alpha)
            if report.regressed:
                click.echo("changes accepted into the baseline:")
                click.echo(report.text())
            else:
                click.echo("no behaviour change")


class _Silent:
    """A stream that is not a terminal and keeps nothing (no progress bar)."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _json_safe(value):
    """NaN (a figure of a single run's interval) as null, numpy scalars as
    plain numbers: what json.dumps takes."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def register(group: click.Group) -> click.Group:
    """Add the ``sweep`` and ``compare`` commands to ``group``."""
    group.add_command(sweep_command, "sweep")
    group.add_command(compare_command, "compare")
    return group
