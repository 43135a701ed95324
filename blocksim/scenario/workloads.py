"""``[workloads.NAME]``: fio-like guest request streams.

A paced workload may vary its rate: ``burst`` (on/off phases at
``rate-iops``) or ``trace`` (a table of rates over time, inline or a CSV
file; see :func:`read_trace`).  A trace file's path is taken relative to the
scenario file (:func:`resolve_trace_paths`, called when the file is read)
and its rows are read when the scenario is validated, so the resolved
scenario (``Scenario.to_dict``, a results folder's copy) holds the rows
themselves and a run needs no file.
"""

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .limits import MAX_TRACE_BYTES
from .fields import (
    RW_MODES,
    Duration,
    KiB,
    OptionalDuration,
    OptionalPositiveSize,
    PositiveDuration,
    SectorSize,
    Size,
    _check_end,
    _duration_default,
    _Model,
    _whole,
)
from .units import parse_duration, parse_rate


class Workload(_Model):
    """An fio-like guest workload on a drive."""

    drive: str
    rw: Literal[RW_MODES] = "randwrite"
    rwmixread: int = Field(50, ge=0, le=100, description="percentage of reads for rw/randrw")
    bs: SectorSize = 4 * KiB
    iodepth: int = Field(1, ge=1)
    rate_iops: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description="absent = closed loop")
    think_time: Duration = _duration_default(0, "pause between a completion and the next request")
    offset: Size = 0
    size: OptionalPositiveSize = Field(None, description="absent = to the end of the drive's image")
    start: Duration = _duration_default(0, "when the workload starts")
    end: OptionalDuration = None
    number_ios: Optional[int] = Field(None, ge=1, description="stop after N requests")
    fsync: Optional[int] = Field(None, ge=1, description="flush after every N writes (as fio's fsync)")

    burst: Optional["Burst"] = Field(None, description="on/off phases at rate-iops (needs rate-iops)")
    trace: Optional[list[tuple[Duration, float]]] = Field(
        None, description="[time, rate-iops] rows from the workload's start (each rate holds until "
                          "the next row, the last one to the end), or a CSV file "
                          "(columns time and rate-iops or bytes-per-second) relative to the scenario file")

    _check_end = field_validator("end")(_check_end)

    @field_validator("trace", mode="before")
    @classmethod
    def _read_trace(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, (str, os.PathLike)):
            bs = info.data.get("bs")
            value = read_trace(value, bs if isinstance(bs, int) else None)
        if isinstance(value, list):     # (rows as tuples: strict types take no list for one)
            return [tuple(row) if isinstance(row, list) else row for row in value]
        return value

    @field_validator("trace")
    @classmethod
    def _check_trace(cls, rows: Optional[list]) -> Optional[list]:
        if rows is None:
            return None
        if not rows:
            raise ValueError("a trace needs at least one [time, rate-iops] row")
        last = -1
        for n, (t, rate) in enumerate(rows):
            if not math.isfinite(rate) or rate < 0:
                raise ValueError(f"row {n}: rate must be a finite number >= 0, got {rate}")
            if t <= last:
                raise ValueError(f"row {n}: times must increase, got {t / 1e9:g}s after {last / 1e9:g}s")
            last = t
        if not any(rate > 0 for _t, rate in rows):
            raise ValueError("every rate of the trace is 0: the workload would issue nothing")
        return rows

    @model_validator(mode="after")
    def _check_pacing(self) -> "Workload":
        if self.burst is not None and self.trace is not None:
            raise _whole("burst and trace exclude each other: give one")
        if self.burst is not None and self.rate_iops is None:
            raise _whole("burst needs rate-iops (the rate while on)")
        if self.trace is not None and self.rate_iops is not None:
            raise _whole("trace gives the rates itself: drop rate-iops")
        return self


class Burst(_Model):
    """On/off phases: ``on`` at the workload's ``rate-iops``, then ``off``
    with no request, repeated from the workload's start.  With ``random``
    each phase lasts an exponentially distributed time of that mean, drawn
    from the workload's own seeded stream of phases."""

    on: PositiveDuration
    off: PositiveDuration
    random: bool = False


Workload.model_rebuild()


# --------------------------------------------------------------------------
# trace files

#: The rate columns a trace file may have, and the factor to IOPS (bytes per
#: second are divided by the workload's ``bs``).
TRACE_RATE_COLUMNS = ("rate-iops", "bytes-per-second")


def read_trace(path, bs: Optional[int]) -> list[list[float]]:
    """The rows of a trace CSV file as ``[seconds, iops]`` pairs.

    The file has a header line naming two columns, ``time`` (seconds, or a
    duration such as ``"90s"``) and either ``rate-iops`` or
    ``bytes-per-second`` (a number, or a rate such as ``"40MiB"``; divided by
    the workload's ``bs``).  Blank lines and lines starting with ``#`` are
    skipped.  Every problem is one line naming the file and the line."""
    name = os.fspath(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_TRACE_BYTES:
            raise ValueError(f"trace file {name}: {size} bytes; at most {MAX_TRACE_BYTES} "
                             "(blocksim.scenario.limits.MAX_TRACE_BYTES)")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"trace file {name}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"trace file {name}: is a directory, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"trace file {name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"trace file {name}: cannot read it: {exc.strerror or exc}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"trace file {name}: empty (expected a header 'time,rate-iops' "
                         "or 'time,bytes-per-second' and rows)")
    n0, header_line = lines[0]
    header = [h.strip().lower() for h in next(csv.reader([header_line]))]
    if len(header) != 2 or header[0] != "time" or header[1] not in TRACE_RATE_COLUMNS:
        raise ValueError(f"trace file {name} line {n0}: header must be 'time,rate-iops' or "
                         f"'time,bytes-per-second', got {header_line.strip()!r}")
    in_bytes = header[1] == "bytes-per-second"
    if in_bytes and not bs:
        raise ValueError(f"trace file {name}: bytes-per-second needs a valid bs")
    rows: list[list[float]] = []
    for n, line in lines[1:]:
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
        if len(cells) != 2:
            raise ValueError(f"trace file {name} line {n}: expected 2 columns (time, {header[1]}), "
                             f"got {len(cells)}")
        try:
            seconds = parse_duration(_number(cells[0])) / 1e9
        except ValueError as exc:
            raise ValueError(f"trace file {name} line {n}: time: {exc}") from None
        try:
            rate = float(cells[1]) if not in_bytes else _bytes_rate(cells[1])
        except ValueError:
            raise ValueError(f"trace file {name} line {n}: {header[1]}: not a number: "
                             f"{cells[1]!r}") from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"trace file {name} line {n}: {header[1]} must be a finite number "
                             f">= 0, got {cells[1]}")
        if rows and seconds <= rows[-1][0]:
            raise ValueError(f"trace file {name} line {n}: times must increase, got {cells[0]} "
                             f"after {rows[-1][0]:g}s")
        rows.append([seconds, rate / bs if in_bytes else rate])
    if not rows:
        raise ValueError(f"trace file {name}: no rows after the header")
    return rows


def _number(cell: str) -> Any:
    """A CSV cell as a number when it is one (plain seconds), else the text."""
    try:
        return float(cell) if any(c in cell for c in ".eE") else int(cell)
    except ValueError:
        return cell


def _bytes_rate(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float(parse_rate(cell))


def resolve_trace_paths(raw: Any, folder: Path) -> None:
    """Make the trace file paths of a scenario file's raw data relative to
    the file's folder (in place; anything malformed is left to validation)."""
    workloads = raw.get("workloads") if isinstance(raw, dict) else None
    if not isinstance(workloads, dict):
        return
    for workload in workloads.values():
        if isinstance(workload, dict) and isinstance(workload.get("trace"), str):
            trace = Path(workload["trace"])
            if not trace.is_absolute():
                workload["trace"] = os.fspath(folder / trace)
