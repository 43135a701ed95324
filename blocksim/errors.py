"""The exception hierarchy: what went wrong, in the user's terms.

Every error blocksim raises on purpose derives from :class:`BlocksimError`, so
a caller (the command line, a notebook) can catch one class and print a clean
one-line message instead of a traceback::

    BlocksimError
    +-- ScenarioError          a scenario file or dict is malformed (every problem)
    +-- CommandError           a QMP-like command was refused (part of the record)
    +-- ResultsError           a results folder is missing or not blocksim's
    +-- SweepError             blocksim.analysis.sweep: a sweep cannot run
    +-- BadInput               blocksim.cli.inputs: a bad command-line value
    +-- QemuError              blocksim.qemu.errors: qemu-check could not run
        +-- QemuNotFoundError, QemuToolError, DaemonError
        +-- QMPError: QMPConnectError, QMPProtocolError, QMPTimeoutError,
            QMPCommandError

:class:`~blocksim.record.eventlog.EventCapReached` is on purpose outside the
tree: it is the run's internal signal that the event log is full, turned
into a truncated result, never shown to a user; so is its subclass
:class:`~blocksim.simulation.RunBounded` (max-requests, the sample limit,
Ctrl-C).

This module sits below every layer (it imports nothing of blocksim), which is
why it stays at the package's top next to ``simulation.py``.
"""

from __future__ import annotations


class BlocksimError(Exception):
    """Base class of every error blocksim raises on purpose."""

    def lines(self) -> list[str]:
        """The error as one line per problem, as the command line prints it."""
        return [line for line in str(self).splitlines() if line.strip()] or [type(self).__name__]


class ScenarioError(BlocksimError):
    """A scenario file or dict is malformed or inconsistent.

    ``problems`` holds one ``(key_path, message)`` pair per problem found, so
    that a validator can report them all at once; ``source`` names the file
    (or ``"<dict>"``).  ``str(error)`` gives one line per problem in the form
    ``file: key.path: message``.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                for path, msg in self.problems]


class CommandError(BlocksimError):
    """A QMP-like management command was refused.

    Mirrors QMP's ``{"error": {"class": ..., "desc": ...}}``: refusals are part
    of a run's record, not a crash of the run.
    """

    def __init__(self, desc: str, error_class: str = "GenericError"):
        self.desc = desc
        self.error_class = error_class
        super().__init__(desc)


class ResultsError(BlocksimError):
    """A results folder is missing, incomplete or not blocksim's."""
