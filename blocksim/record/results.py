"""The results folder of a run: writing it atomically and reading it back.

A results folder holds five files:

- ``events.jsonl``: the QMP-shaped event log, one event per line;
- ``commands.jsonl``: the record of management commands, one per line;
- ``summary.json``: the run's summary, plus the fully resolved scenario under
  the key ``"scenario_resolved"``;
- ``series.csv``: the sampled time series, one column per probe, in the order
  of :attr:`Result.series <blocksim.record.result.Result.series>`;
- ``timeline.png``: the timeline figure (:mod:`blocksim.record.plot`).

:func:`save_result` builds the folder in a hidden temporary sibling
(``<parent>/.<name>.tmp-<pid>-<random>``) and renames it into place only once every
file is written, so an interrupted or failed save never leaves a folder that
looks complete, and an older folder of the same name is replaced only by a
complete new one.  A killed run may leave its hidden temporary folder
behind: the next save of the same folder removes it (a live writer's is
kept: the temporary name carries its PID).  :func:`load_result` gives back a
:class:`~blocksim.record.result.Result` equal to the one the run returned.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

from ..errors import ResultsError
from .atomic import fsync_dir, remove_leftovers, temporary_sibling, write_synced
from .result import Result

EVENTS = "events.jsonl"
COMMANDS = "commands.jsonl"
SUMMARY = "summary.json"
SERIES = "series.csv"
TIMELINE = "timeline.png"
#: Every file of a complete results folder, in the order they are written.
FILES = (EVENTS, COMMANDS, SUMMARY, SERIES, TIMELINE)

#: The key of ``summary.json`` that holds the resolved scenario.
SCENARIO_KEY = "scenario_resolved"

# Column types of series.csv, from the column name (see blocksim.record.probes).
_FLOAT_SUFFIXES = (".iops", ".latency", ".capacity")
_INT_SUFFIXES = (".offset", ".len", ".allocated")
_STR_SUFFIXES = (".status", ".io-status")
_INT_RE = re.compile(r"[+-]?\d+\Z")
_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def column_kind(name: str) -> str:
    """``"float"``, ``"int"``, ``"str"`` or ``"auto"`` for a series column."""
    if name == "time" or name.endswith(_FLOAT_SUFFIXES):
        return "float"
    if name.endswith(_INT_SUFFIXES):
        return "int"
    if name == "vm.state" or name.endswith(_STR_SUFFIXES):
        return "str"
    return "auto"


# -- series.csv -------------------------------------------------------------------
def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)                  # shortest exact form; nan, inf
    return str(value)


def _parse_number(text: str):
    # A float written with repr always has a '.', an exponent, nan or inf, so
    # an integer literal was an int (capacity may be an int or NaN).
    if _INT_RE.match(text):
        return int(text)
    special = _SPECIAL_FLOATS.get(text.lower())
    if special is not None:
        return special                      # math.nan itself, so lists compare equal
    return float(text)


def _parse_cell(kind: str, text: str):
    if kind == "str":
        return text
    if text == "":
        return None
    if kind in ("float", "int"):
        return _parse_number(text)
    try:
        return _parse_number(text)
    except ValueError:
        return text


def series_csv(series: dict[str, list]) -> str:
    """The time series as CSV text: a header of column names, one row a sample."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(series)
    writer.writerow(names)
    rows = max((len(v) for v in series.values()), default=0)
    for i in range(rows):
        writer.writerow([_format_cell(series[n][i]) if i < len(series[n]) else ""
                         for n in names])
    return out.getvalue()


def parse_series_csv(text: str) -> dict[str, list]:
    """Read back what :func:`series_csv` wrote, with the original types."""
    reader = csv.reader(io.StringIO(text))
    try:
        names = next(reader)
    except StopIteration:
        return {}
    kinds = [column_kind(n) for n in names]
    series: dict[str, list] = {n: [] for n in names}
    columns = [series[n] for n in names]
    for line, row in enumerate(reader, start=2):
        if len(row) != len(names):
            raise ValueError(f"line {line} has {len(row)} cells, expected {len(names)}")
        for column, kind, cell in zip(columns, kinds, row):
            column.append(_parse_cell(kind, cell))
    return series


# -- JSON -------------------------------------------------------------------------
def _json_constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def _loads(text: str):
    return json.loads(text, parse_constant=_json_constant)


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# -- writing ----------------------------------------------------------------------
def save_result(result: Result, directory) -> Path:
    """Write ``result`` as a complete results folder at ``directory``.

    Everything is built in a temporary sibling folder that is renamed into
    place at the end; a folder already at ``directory`` is replaced only then.
    If anything fails (or the process is interrupted) the temporary folder is
    removed, any older folder is left as it was, and the error propagates.
    Returns the folder's path.
    """
    from . import plot  # matplotlib is slow to import

    target = Path(directory)
    if not target.name or target.name in (".", ".."):
        target = target.resolve()
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)            # what an earlier, killed run left
    tmp = temporary_sibling(target)
    tmp.mkdir()
    try:
        write_synced(tmp / EVENTS, result.events_jsonl())
        write_synced(tmp / COMMANDS, _jsonl(result.commands))
        summary = dict(result.summary)
        summary.setdefault("seed", result.seed)
        summary.setdefault("profile", result.profile)
        summary[SCENARIO_KEY] = result.scenario
        write_synced(tmp / SUMMARY, json.dumps(summary, indent=2) + "\n")
        write_synced(tmp / SERIES, series_csv(result.series))
        plot.save_timeline(result, tmp / TIMELINE)
        fsync_dir(tmp)
        old = None
        if target.exists() or target.is_symlink():
            old = temporary_sibling(target, "old")
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None:
                os.rename(old, target)      # put the older folder back
            raise
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return target


# -- reading ----------------------------------------------------------------------
def load_result(directory, figure: bool = True) -> Result:
    """Read a results folder written by :func:`save_result`.

    Raises :class:`~blocksim.errors.ResultsError` (naming the folder and the
    file) when the folder does not exist, lacks a file or holds a file that
    is not what blocksim writes.  With ``figure=False`` a missing
    ``timeline.png`` is accepted (to redraw it).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: not a results folder (no such directory)")
    for name in FILES:
        if not figure and name == TIMELINE:
            continue
        if not (folder / name).is_file():
            raise ResultsError(f"{folder}: incomplete results folder: {name} is missing")

    def read(name: str) -> str:
        try:
            return (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultsError(f"{folder}: cannot read {name}: {exc}") from None

    def bad(name: str, why) -> ResultsError:
        return ResultsError(f"{folder}: {name} is not a blocksim results file: {why}")

    def records(name: str) -> list:
        out = []
        for number, line in enumerate(read(name).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = _loads(line)
            except ValueError as exc:
                raise bad(name, f"line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise bad(name, f"line {number}: not a JSON object")
            out.append(record)
        return out

    events = records(EVENTS)
    commands = records(COMMANDS)
    try:
        summary = _loads(read(SUMMARY))
    except ValueError as exc:
        raise bad(SUMMARY, exc) from None
    if not isinstance(summary, dict):
        raise bad(SUMMARY, "not a JSON object")
    missing = [k for k in (SCENARIO_KEY, "seed", "profile", "blocksim_version")
               if k not in summary]
    if missing:
        raise bad(SUMMARY, f"missing key {missing[0]!r}")
    scenario = summary.pop(SCENARIO_KEY)
    try:
        series = parse_series_csv(read(SERIES))
    except (ValueError, csv.Error) as exc:
        raise bad(SERIES, exc) from None
    return Result(scenario, summary["seed"], summary["profile"],
                  events, commands, series, summary)


def folder_name(name: str, longest: int = 100) -> str:
    """A file-system-safe folder name for a scenario ``name``: characters
    other than ``A-Za-z0-9._+-`` become ``_``, no leading dot, and a name
    longer than ``longest`` is cut and ends in a hash of the whole name
    (``<first longest-13 characters>-<12 hex digits>``): deterministic, and
    two long names that share their start still get two folders."""
    import hashlib
    folder = _UNSAFE.sub("_", name).lstrip(".") or "scenario"
    if len(folder) > longest:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        folder = f"{folder[:longest - 13]}-{digest}"
    return folder


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def is_results_folder(directory) -> bool:
    """True when ``directory`` holds every file of a complete results folder."""
    folder = Path(directory)
    return folder.is_dir() and all((folder / name).is_file() for name in FILES)
