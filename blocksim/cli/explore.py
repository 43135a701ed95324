"""``blocksim explore``: search an explore spec's fault schedules for broken
properties and shrink what it finds (:mod:`blocksim.explore`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

__all__ = ["register", "explore_command"]


class _Bar:
    """A progress bar on stderr when it is a terminal: cases generated of the budget."""

    def __init__(self, label: str):
        self.enabled = sys.stderr.isatty()
        self.bar = None
        self.label = label
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         show_eta=True, show_pos=True)
            self.bar.__enter__()
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@click.command("explore", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Budget of generated cases (default: the spec's explore.runs).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the search (Hypothesis's seed for worker 0).")
@click.option("--time", "time_limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop generating after this long (a found case is still shrunk).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, each with its own seed and share of the budget.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the workers on a Dask cluster (tcp://host:port) instead of the pool.")
@click.option("--database", type=click.Path(file_okay=False), default=None,
              help="Keep Hypothesis's example database here (default: none, for reproducibility).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: results/explore/NAME-seedN).")
@click.option("--save-regression", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also copy each counterexample scenario into DIR (e.g. scenarios/explore/found).")
def explore_command(spec, runs, seed, time_limit, workers, scheduler, database, out, save_regression):
    """Search SPEC's fault schedules for broken properties and shrink them.

    SPEC is a scenario with an [explore] table (docs/explore.md).  Writes OUT
    with report.md, report.json and, per broken property, the shrunk
    counterexample as a scenario (blocksim run reproduces it) and its results
    folder.  The same SPEC, --seed, --runs and --workers give the same output
    byte for byte.  Exit status: 0 when every property held, 1 when one broke,
    2 on bad input.

    \b
    Examples:
      blocksim explore scenarios/explore/werror-ignore-loses-writes.toml --runs 200 --seed 1
      blocksim explore scenarios/explore/mirror-ignore-never-ready.toml --workers 2
    """
    from ..explore import explore, write_report
    bar = _Bar(Path(spec).stem)
    try:
        outcome = explore(spec, runs=runs, seed=seed, workers=workers, scheduler=scheduler,
                          time_limit=time_limit, database=database, progress=bar)
    finally:
        bar.close()
    folder = Path(out) if out else Path("results") / "explore" / f"{outcome['name']}-seed{seed}"
    report = write_report(outcome, folder)
    click.echo(f"{spec}: {report['cases_generated']} cases, {report['runs']} runs; "
               f"{len(report['broken'])} of {len(report['properties'])} properties broken")
    for b in report["broken"]:
        before = "" if b["faults_before"] is None else f", {b['faults_before']} before shrinking"
        click.echo(f"  BROKEN {b['property']}: {b['reason']} ({b['faults_after']} fault(s){before})")
        click.echo(f"    {folder / b['scenario']}")
        if save_regression:
            Path(save_regression).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / b["scenario"], Path(save_regression) / b["scenario"])
    for p in report["held"]:
        click.echo(f"  held   {p}")
    click.echo(f"report: {folder / 'report.md'}")
    if report["broken"]:
        sys.exit(1)


def register(group: click.Group) -> click.Group:
    group.add_command(explore_command)
    return group
