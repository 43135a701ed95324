"""The format's vocabulary and the field types every table uses.

Sizes and durations as users write them (``"64KiB"``, ``"10ms"``) resolved
to ``int`` bytes and ``int`` ns, with their JSON Schema; the names each key
accepts (policies, errnos, job types, events, ...).
"""

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..model.policy import POLICIES
from ..model.profile import PROFILES as _PROFILE_TABLE
from .limits import BDRV_MAX_LENGTH, MAX_DURATION, MAX_RATE, count
from .units import format_duration, format_size, ns_to_seconds, parse_duration, parse_rate, parse_size

PROFILES = tuple(_PROFILE_TABLE)
IMAGE_FORMATS = ("qcow2", "raw")
# QEMU's legacy -drive rerror= accepts ignore/stop/report and werror= also
# enospc, but a drive here is the -drive and the guest device in one, and the
# device's rerror/werror properties take any BlockdevOnError (``auto``
# inheriting the drive default, see blocksim.model.policy).  Jobs take all five.
READ_POLICIES = WRITE_POLICIES = JOB_POLICIES = POLICIES
FAULT_TYPES = ("error", "flakey", "dust", "delay")
OPERATIONS = ("flush", "read", "write", "write-zeroes")  # concrete operations, sorted
ERRNOS = ("EIO", "ENOSPC", "EPERM", "EACCES", "EINVAL", "EROFS", "ETIMEDOUT",
          "ENOMEDIUM", "EDQUOT", "ECANCELED")
RW_MODES = ("read", "write", "randread", "randwrite", "rw", "randrw")
JOB_TYPES = ("backup", "commit", "mirror", "stream")
SYNC_MODES = ("full", "top", "none")
#: blockdev-mirror's copy-mode (qapi/block-core.json MirrorCopyMode)
COPY_MODES = ("background", "write-blocking")
BACKUP_SYNC_MODES = ("full", "top", "none", "bitmap", "incremental")
BITMAP_MODES = ("on-success", "always", "never")
EVENTS = ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_PENDING",
          "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE", "STOP", "RESUME",
          "BLOCK_WRITE_THRESHOLD", "VOLUME_EXTENDED", "VOLUME_EXTEND_FAILED")

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SECOND = 1_000_000_000


def _alias(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    """Common configuration: hyphenated keys (underscores accepted too), no
    unknown keys, strict types (no "5" for 5, no 1 for true), frozen."""

    model_config = ConfigDict(alias_generator=_alias, populate_by_name=True, frozen=True,
                              extra="forbid", strict=True)


def _whole(message: str) -> PydanticCustomError:
    """An error about the enclosing table rather than the field that found it
    (the loader reports it one key level up)."""
    return PydanticCustomError("whole_item", message)


# --------------------------------------------------------------------------
# Size and duration field types

_SIZE_JSON = {"anyOf": [{"type": "integer", "minimum": 0},
                        {"type": "string", "examples": ["4KiB", "64 KiB", "1.5GiB", "512"]}],
              "description": "bytes, or a string with a binary unit (K = KiB = KB = 1024)"}
_RATE_JSON = {"anyOf": [{"type": "integer", "minimum": 0},
                        {"type": "string", "examples": ["100MiB", "100MiB/s"]}],
              "description": "bytes per second, or a size string, optionally ending in /s"}
_DURATION_JSON = {"anyOf": [{"type": "number", "minimum": 0},
                            {"type": "string", "examples": ["100ns", "5us", "10ms", "2s", "1.5min", "1h"]}],
                  "description": "seconds, or a string with a unit ns, us, ms, s, min, h"}


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _size_type(*, positive: bool = False, sector: bool = False, pow2: tuple[int, Optional[int]] | None = None,
               optional: bool = False, rate: bool = False) -> Any:
    """An ``int`` field parsed by :func:`parse_size` (or :func:`parse_rate`)
    and checked here, so that messages speak in bytes."""
    parse = parse_rate if rate else parse_size

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        n = parse(value)
        top = MAX_RATE if rate else BDRV_MAX_LENGTH
        if n > top:     # (blocksim.scenario.limits)
            raise ValueError(f"{format_size(n)}{'/s' if rate else ''} is more than "
                             f"{'a rate' if rate else 'a size'} may be: at most "
                             + ("2**62 bytes/s" if rate else
                                "2**63 - 2**30 bytes (QEMU's BDRV_MAX_LENGTH)"))
        if positive and n <= 0:
            raise ValueError("must be greater than 0")
        if sector and n % 512:
            raise ValueError(f"must be a multiple of 512 bytes, got {n}")
        if pow2 is not None:
            lo, hi = pow2
            if not _is_pow2(n) or n < lo or (hi is not None and n > hi):
                span = f"from {format_size(lo)} to {format_size(hi)}" if hi else f"of at least {format_size(lo)}"
                raise ValueError(f"must be a power of two {span}, got {n}")
        return n

    return Annotated[Optional[int] if optional else int, BeforeValidator(check),
                     WithJsonSchema(_RATE_JSON if rate else _SIZE_JSON)]


def _seconds_or_none(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else ns_to_seconds(ns)


def _duration_type(*, positive: bool = False, optional: bool = False) -> Any:
    """An ``int`` ns field parsed by :func:`parse_duration`; serialized as
    float seconds (so that a dump validates back to the same value)."""

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        ns = parse_duration(value)
        if ns > MAX_DURATION:     # (blocksim.scenario.limits)
            raise ValueError(f"{count(ns / 3_600_000_000_000)}h is more than a duration may be: "
                             f"at most {format_duration(MAX_DURATION)} (ten years)")
        if positive and ns <= 0:
            raise ValueError("must be greater than 0")
        return ns

    return Annotated[Optional[int] if optional else int, BeforeValidator(check),
                     PlainSerializer(_seconds_or_none, return_type=Optional[float]),
                     WithJsonSchema(_DURATION_JSON)]


def _duration_default(ns: int, description: str) -> Any:
    """A duration field default, shown as a human string in the JSON schema."""
    return Field(ns, description=description, json_schema_extra={"default": format_duration(ns)})


Size = _size_type()
PositiveSize = _size_type(positive=True)
OptionalSize = _size_type(optional=True)
OptionalPositiveSize = _size_type(optional=True, positive=True)
SectorSize = _size_type(positive=True, sector=True)
Rate = _size_type(rate=True)
PositiveRate = _size_type(rate=True, positive=True)
Duration = _duration_type()
PositiveDuration = _duration_type(positive=True)
OptionalDuration = _duration_type(optional=True)


def _check_end(cls: type, end: Optional[int], info: ValidationInfo) -> Optional[int]:
    start = info.data.get("start")
    if end is not None and isinstance(start, int) and end <= start:
        raise ValueError(f"must be after start ({format_duration(start)}), got {format_duration(end)}")
    return end


#: Where a problem is: the keys (and array indexes) from the document's root.
Loc = tuple[Union[str, int], ...]
