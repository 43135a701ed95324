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
