"""What the user typed on the command line, read once for every command:
bad input as one line a problem (:class:`BadInput`), ``--set`` options, and a
SCENARIO argument that may be a library NAME."""

from __future__ import annotations

from pathlib import Path

from ..errors import BlocksimError

__all__ = ["BadInput", "parse_sets", "scenario_file"]


class BadInput(BlocksimError):
    """One or more problems with what the user gave us, one line each."""

    def __init__(self, lines: list[str]):
        self.problems = list(lines)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


def parse_sets(items) -> dict[str, str]:
    """``--set key.path=value`` options as the overrides of ``load_scenario``."""
    overrides: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            problems.append(f"--set {item!r}: expected key.path=value "
                            "(for example --set jobs.job0.speed=10M)")
            continue
        overrides[key] = value
    if problems:
        raise BadInput(problems)
    return overrides


def scenario_file(argument: str) -> str:
    """A scenario argument as a file: itself when it exists, else the library
    scenario a bare NAME stands for (``blocksim run mirror-thin-target-enospc``
    from any directory), else itself (its error names it)."""
    if Path(argument).exists():
        return argument
    from ..scenario.library import find_in_library
    found = find_in_library(argument)
    return str(found) if found is not None else argument


# -- limits (blocksim.scenario.limits) -------------------------------------------------
def _count(option: str):
    """A click callback reading a count such as ``1000000`` or ``1e6``."""
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            number = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            number = None
        if number is None or number != number or number < 1 or number != int(number):
            raise BadInput([f"{option} {value!r}: expected a whole number of at least 1, "
                            "such as 1000000 or 1e6"])
        return int(number)
    return convert


def _memory(ctx, param, value):
    if value is None:
        return None
    from ..scenario.units import parse_size
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise BadInput([f"--max-memory: {exc}"]) from None
    if n < 1:
        raise BadInput(["--max-memory: must be greater than 0"])
    return n


def limit_options(command):
    """Add ``--max-samples``, ``--max-requests`` and ``--max-memory`` to a
    click command, handed to it as one ``limits`` argument
    (:class:`~blocksim.scenario.limits.Limits`)."""
    import functools

    import click

    from ..scenario.limits import DEFAULT, count, Limits

    @functools.wraps(command)
    def wrapper(*args, max_samples=None, max_requests=None, max_memory=None, **kwargs):
        given = {k: v for k, v in (("max_samples", max_samples), ("max_requests", max_requests),
                                   ("max_memory", max_memory)) if v is not None}
        return command(*args, limits=Limits(**given) if given else DEFAULT, **kwargs)

    from ..scenario.units import format_size
    options = [
        click.option("--max-memory", "max_memory", default=None, metavar="SIZE", callback=_memory,
                     help=f"Refuse a scenario whose run would hold more for its disks' virtual "
                          f"sizes (estimated; default {format_size(DEFAULT.max_memory)})."),
        click.option("--max-requests", "max_requests", default=None, metavar="N",
                     callback=_count("--max-requests"),
                     help=f"Refuse a scenario estimated to do more guest requests, and stop a run "
                          f"(truncated) that does (default {count(DEFAULT.max_requests)})."),
        click.option("--max-samples", "max_samples", default=None, metavar="N",
                     callback=_count("--max-samples"),
                     help=f"Refuse a scenario whose time series would have more samples "
                          f"(duration / sample-interval; default {count(DEFAULT.max_samples)})."),
    ]
    for option in options:
        wrapper = option(wrapper)
    return wrapper
