"""Scenario files: the input format, its validation and its resolved form.

A scenario is a TOML file (or a plain dict, e.g. from a notebook) describing
images, drives, injected faults, guest workloads, block jobs and timed or
event-triggered management actions.  :func:`load_scenario` validates it and
returns a frozen :class:`Scenario` in which every size is an ``int`` number of
bytes and every duration an ``int`` number of nanoseconds.  Bad input raises
:class:`~blocksim.errors.ScenarioError` listing *every* problem found, each as
``(key_path, message)`` with a dotted TOML key path such as
``jobs.job0.on-target-error`` or ``faults.2.errno``.

The format is documented in ``docs/scenario-format.md``.

Resolved forms (what the engine sees):

* sizes -> ``int`` bytes, durations -> ``int`` ns; an absent optional value is
  ``None`` (``capacity`` = unlimited, ``end`` = never, ``count`` = persistent,
  ``number_ios`` = unlimited, ``rate_iops`` = closed loop ...);
* ``Image.data`` -> ``list[tuple[int, int]]`` of ``(offset, length)``;
* ``Fault.operation`` -> sorted ``tuple`` of ``"flush"``, ``"read"``, ``"write"``;
* ``Fault.length`` and ``Workload.size`` -> ``int`` (a missing value is resolved
  to "up to the end of the image");
* ``Job.start`` -> ``int`` ns, or ``None`` for ``"manual"``;
* ``Action.arguments`` -> ``dict`` with the QMP spelling of the keys (hyphens),
  sizes as ``int``, defaults filled in.

Faults, jobs and actions are instances of per-type subclasses
(:class:`FlakeyFault`, :class:`MirrorJob`, :class:`GuestBurstAction`, ...) of
:class:`Fault`, :class:`Job` and :class:`Action`; use ``.type`` / ``.command``
or ``isinstance`` to tell them apart.
"""

import copy
import difflib
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import CommandError, ScenarioError
from ..model.policy import POLICIES
from ..model.profile import PROFILES as _PROFILE_TABLE
from .units import format_duration, format_size, ns_to_seconds, parse_duration, parse_rate, parse_size

__all__ = [
    "Scenario", "Image", "Extent", "Drive", "Workload",
    "Fault", "ErrorFault", "FlakeyFault", "DustFault", "DelayFault",
    "Job", "MirrorJob", "StreamJob",
    "Action", "NoArgumentsAction", "JobDeviceAction", "BlockJobCancelAction",
    "BlockJobSetSpeedAction", "JobIdAction", "ThinExtendAction", "GuestBurstAction",
    "load_scenario", "apply_overrides", "scenario_json_schema", "burst_workload_spec",
    "PROFILES", "IMAGE_FORMATS", "READ_POLICIES", "WRITE_POLICIES", "JOB_POLICIES",
    "FAULT_TYPES", "OPERATIONS", "ERRNOS", "RW_MODES", "JOB_TYPES", "SYNC_MODES",
    "EVENTS", "COMMANDS",
]

# --------------------------------------------------------------------------
# Vocabulary

PROFILES = tuple(_PROFILE_TABLE)
IMAGE_FORMATS = ("qcow2", "raw")
# QEMU's legacy -drive rerror= accepts ignore/stop/report and werror= also
# enospc, but a drive here is the -drive and the guest device in one, and the
# device's rerror/werror properties take any BlockdevOnError (``auto``
# inheriting the drive default, see blocksim.model.policy).  Jobs take all five.
READ_POLICIES = WRITE_POLICIES = JOB_POLICIES = POLICIES
FAULT_TYPES = ("error", "flakey", "dust", "delay")
OPERATIONS = ("flush", "read", "write")  # concrete operations, sorted
ERRNOS = ("EIO", "ENOSPC", "EPERM", "EACCES", "EINVAL", "EROFS", "ETIMEDOUT",
          "ENOMEDIUM", "EDQUOT", "ECANCELED")
RW_MODES = ("read", "write", "randread", "randwrite", "rw", "randrw")
JOB_TYPES = ("mirror", "stream")
SYNC_MODES = ("full", "top", "none")
EVENTS = ("BLOCK_JOB_ERROR", "BLOCK_IO_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_PENDING",
          "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE", "STOP", "RESUME")

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


# --------------------------------------------------------------------------
# Images and drives

class Extent(_Model):
    """One allocated extent of an image's initial data."""

    offset: Size
    length: PositiveSize


def _data_input(value: Any) -> Any:
    if value == "none":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError("must be 'none', 'full' or an array of {offset, length} tables")


def _extent_pairs(extents: list[Extent]) -> list[tuple[int, int]]:
    return [(e.offset, e.length) for e in extents]


def _extent_tables(pairs: list[tuple[int, int]]) -> list[dict[str, int]]:
    return [{"offset": o, "length": n} for o, n in pairs]


class Image(_Model):
    """A disk image (a node of the block graph)."""

    size: SectorSize = Field(description="virtual size, a multiple of 512 bytes")
    cluster_size: _size_type(pow2=(512, 2 * MiB)) = Field(64 * KiB, description="qcow2 cluster size")
    format: Literal[IMAGE_FORMATS] = "qcow2"
    backing: Optional[str] = Field(None, description="name of the backing image (qcow2 only)")
    capacity: OptionalSize = Field(None, description="thin-provisioned physical capacity; absent = unlimited")
    latency: Duration = _duration_default(100_000, "per-operation latency")
    bandwidth: PositiveRate = Field(1 * GiB, description="bytes per second")
    queue_depth: int = Field(32, ge=1)
    jitter: float = Field(0.0, ge=0, allow_inf_nan=False, description="relative standard deviation of latency")
    data: Annotated[list[Extent], BeforeValidator(_data_input), AfterValidator(_extent_pairs),
                    PlainSerializer(_extent_tables, return_type=list),
                    WithJsonSchema({"anyOf": [
                        {"enum": ["none", "full"]},
                        {"type": "array", "items": {
                            "type": "object", "additionalProperties": False, "required": ["length"],
                            "properties": {"offset": _SIZE_JSON, "length": _SIZE_JSON}}}],
                        "description": "initially allocated data", "default": "none"})] = []

    @model_validator(mode="before")
    @classmethod
    def _expand_full(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and raw.get("data") == "full":
            try:
                size = parse_size(raw.get("size"))
            except ValueError:
                size = 0
            raw = {**raw, "data": [{"offset": 0, "length": size}] if size > 0 else []}
        return raw

    @field_validator("backing")
    @classmethod
    def _backing_needs_qcow2(cls, backing: Optional[str], info: ValidationInfo) -> Optional[str]:
        if backing is not None and info.data.get("format") == "raw":
            raise ValueError("only qcow2 images can have a backing image (format is 'raw')")
        return backing

    @field_validator("data")
    @classmethod
    def _data_inside(cls, data: list[tuple[int, int]], info: ValidationInfo) -> list[tuple[int, int]]:
        size = info.data.get("size")
        if isinstance(size, int):
            for i, (offset, length) in enumerate(data):
                if offset + length > size:
                    raise ValueError(f"extent {i} (offset {offset}, length {length}) ends beyond "
                                     f"the image size ({size})")
        return data


class Drive(_Model):
    """A guest drive (a BlockBackend) on top of an image, with its error policies."""

    image: str
    rerror: Literal[READ_POLICIES] = "report"
    werror: Literal[WRITE_POLICIES] = "enospc"


# --------------------------------------------------------------------------
# Faults

def _operations(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    allowed = (*OPERATIONS, "any")
    if (not isinstance(items, (list, tuple)) or not items
            or any(not isinstance(x, str) or x not in allowed for x in items)):
        raise ValueError("must be 'read', 'write', 'flush' or 'any', or a non-empty array of those")
    ops: set[str] = set()
    for item in items:
        ops.update(OPERATIONS if item == "any" else (item,))
    return tuple(sorted(ops))


def _count(value: Any) -> Any:
    if value is None:
        return None
    if value == "once":
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be an integer >= 1 or 'once' (absent = persistent)")
    return value


class Fault(_Model):
    """Common part of an injected fault rule (see the subclasses)."""

    image: str
    type: Literal[FAULT_TYPES] = "error"
    operation: Annotated[tuple[Literal[OPERATIONS], ...], BeforeValidator(_operations),
                         PlainSerializer(list, return_type=list),
                         WithJsonSchema({"anyOf": [
                             {"enum": [*OPERATIONS, "any"]},
                             {"type": "array", "items": {"enum": [*OPERATIONS, "any"]}, "minItems": 1}],
                             "default": "any"})] = OPERATIONS
    errno: Literal[ERRNOS] = "EIO"
    offset: Size = 0
    length: OptionalPositiveSize = Field(None, description="absent = to the end of the image")
    count: Annotated[Optional[int], BeforeValidator(_count),
                     WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "once"}]})] = \
        Field(None, description="fire at most N times; absent = persistent")
    skip: int = Field(0, ge=0, description="let the first N matching requests through")
    start: Duration = _duration_default(0, "start of the active window")
    end: OptionalDuration = Field(None, description="end of the active window; absent = never")
    probability: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)

    _check_end = field_validator("end")(_check_end)


class ErrorFault(Fault):
    """Matching requests fail with ``errno``."""

    type: Literal["error"] = "error"


class FlakeyFault(Fault):
    """dm-flakey: periodic ``up`` then ``down`` windows; requests fail while down
    (or writes are silently dropped with ``drop_writes``)."""

    type: Literal["flakey"] = "flakey"
    up: PositiveDuration
    down: PositiveDuration
    drop_writes: bool = False


class DustFault(Fault):
    """dm-dust: reads of the listed bad blocks fail."""

    type: Literal["dust"] = "dust"
    blocks: list[Annotated[int, Field(ge=0)]]
    block_size: _size_type(pow2=(512, None)) = 512


class DelayFault(Fault):
    """dm-delay: matching requests are delayed by ``delay``."""

    type: Literal["delay"] = "delay"
    delay: PositiveDuration


def _tag_of(key: str, default: Optional[str] = None):
    def tag(value: Any) -> Optional[str]:
        found = value.get(key, default) if isinstance(value, Mapping) else getattr(value, key, None)
        return found if isinstance(found, str) else None
    return tag


AnyFault = Annotated[Union[Annotated[ErrorFault, Tag("error")], Annotated[FlakeyFault, Tag("flakey")],
                           Annotated[DustFault, Tag("dust")], Annotated[DelayFault, Tag("delay")]],
                     Discriminator(_tag_of("type", "error"))]


# --------------------------------------------------------------------------
# Workloads

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

    _check_end = field_validator("end")(_check_end)


# --------------------------------------------------------------------------
# Jobs

def _job_start(value: Any) -> Any:
    if value is None or value == "manual":
        return None
    return parse_duration(value)


class Job(_Model):
    """Common part of a block job (see :class:`MirrorJob`, :class:`StreamJob`)."""

    type: Literal[JOB_TYPES]
    device: str = Field(description="the drive the job runs on")
    speed: Rate = Field(0, description="bytes per second; 0 = unlimited")
    start: Annotated[Optional[int], BeforeValidator(_job_start),
                     PlainSerializer(lambda ns: "manual" if ns is None else ns_to_seconds(ns)),
                     WithJsonSchema({"anyOf": [_DURATION_JSON, {"const": "manual"}]})] = \
        Field(0, description="when the job is created; 'manual' = by a job-start action",
              json_schema_extra={"default": "0s"})
    auto_finalize: bool = True
    auto_dismiss: bool = True


class MirrorJob(Job):
    """blockdev-mirror / drive-mirror from the device's image to ``target``."""

    type: Literal["mirror"] = "mirror"
    target: str
    sync: Literal[SYNC_MODES] = "full"
    granularity: _size_type(pow2=(512, 64 * MiB)) = 64 * KiB
    buf_size: _size_type(positive=True) = 16 * MiB
    on_source_error: Literal[JOB_POLICIES] = "report"
    on_target_error: Literal[JOB_POLICIES] = "report"

    @field_validator("buf_size")
    @classmethod
    def _buf_holds_a_chunk(cls, buf_size: int, info: ValidationInfo) -> int:
        granularity = info.data.get("granularity")
        if isinstance(granularity, int) and buf_size < granularity:
            raise ValueError(f"must be at least the granularity ({format_size(granularity)}), got {buf_size}")
        return buf_size


class StreamJob(Job):
    """block-stream: copy the backing chain (down to ``base``) into the top image."""

    type: Literal["stream"] = "stream"
    on_error: Literal[JOB_POLICIES] = "report"
    base: Optional[str] = None


AnyJob = Annotated[Union[Annotated[MirrorJob, Tag("mirror")], Annotated[StreamJob, Tag("stream")]],
                   Discriminator(_tag_of("type"))]


# --------------------------------------------------------------------------
# Actions

class _Arguments(_Model):
    """Arguments of a command; validated, then stored as a plain dict."""


class NoArguments(_Arguments):
    """The command takes no arguments."""


class JobDeviceArguments(_Arguments):
    """``device``: the id of the job."""

    device: str = Field(description="a job id")


class BlockJobCancelArguments(_Arguments):
    """``device``: the id of the job; ``force``: cancel even a READY mirror without completing."""

    device: str = Field(description="a job id")
    force: bool = False


class BlockJobSetSpeedArguments(_Arguments):
    """``device``: the id of the job; ``speed``: the new limit in bytes per second (0 = none)."""

    device: str = Field(description="a job id")
    speed: Rate


class JobIdArguments(_Arguments):
    """``id``: the id of the job."""

    id: str = Field(description="a job id")


class ThinExtendArguments(_Arguments):
    """Grow the physical capacity of ``image`` to ``capacity`` or ``by`` an amount."""

    image: str
    capacity: OptionalSize = Field(None, description="the new capacity")
    by: OptionalPositiveSize = Field(None, validate_default=True, description="the increase of capacity")

    @field_validator("by")
    @classmethod
    def _one_of(cls, by: Optional[int], info: ValidationInfo) -> Optional[int]:
        if "capacity" in info.data and (by is None) == (info.data["capacity"] is None):
            raise _whole("give exactly one of 'capacity' (the new capacity) or 'by' (the increase)")
        return by


class GuestBurstArguments(_Arguments):
    """A one-off burst of guest I/O on ``drive`` (keys as in a workload)."""

    drive: str
    rw: Literal[RW_MODES] = "randwrite"
    bs: SectorSize = 4 * KiB
    iodepth: int = Field(1, ge=1)
    number_ios: int = Field(1, ge=1)
    offset: Size = 0
    size: OptionalPositiveSize = Field(None, description="absent = to the end of the drive's image")


def _argument_dict(arguments: _Arguments) -> dict[str, Any]:
    return arguments.model_dump(by_alias=True, exclude_none=True)


def _arguments_type(model: type[_Arguments]) -> Any:
    return Annotated[model, AfterValidator(_argument_dict), PlainSerializer(dict, return_type=dict)]


class Action(_Model):
    """A management command issued ``at`` a time or ``on`` an event (+ ``delay``).

    ``arguments`` is a plain dict (QMP key spelling, sizes as ints, defaults
    filled in)."""

    at: OptionalDuration = Field(None, description="when to act (exclusive with 'on')")
    on: Optional[Literal[EVENTS]] = Field(None, validate_default=True,
                                          description="the event to react to (exclusive with 'at')")
    match: dict[str, Any] = Field(default_factory=dict, description="event data equality filters (only with 'on')")
    delay: Duration = _duration_default(0, "wait this long after the trigger")
    repeat: bool = Field(False, description="react every time, not once (only with 'on')")
    command: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("on")
    @classmethod
    def _one_trigger(cls, on: Optional[str], info: ValidationInfo) -> Optional[str]:
        if "at" in info.data and (on is None) == (info.data["at"] is None):
            if on is None:
                raise _whole("needs a trigger: give 'at' (a time) or 'on' (an event name)")
            raise _whole("give either 'at' (a time) or 'on' (an event name), not both")
        return on

    @field_validator("match")
    @classmethod
    def _match_needs_on(cls, match: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if match and "on" in info.data and info.data["on"] is None:
            raise ValueError("only allowed with 'on' (an event trigger)")
        return match

    @field_validator("repeat")
    @classmethod
    def _repeat_needs_on(cls, repeat: bool, info: ValidationInfo) -> bool:
        if repeat and "on" in info.data and info.data["on"] is None:
            raise ValueError("only allowed with 'on' (an event trigger)")
        return repeat


def _default_arguments(model: type[_Arguments]) -> Any:
    return Field(default_factory=dict, validate_default=True, description=model.__doc__)


class NoArgumentsAction(Action):
    command: Literal["stop", "cont", "query-block-jobs"]
    arguments: _arguments_type(NoArguments) = _default_arguments(NoArguments)


class JobDeviceAction(Action):
    command: Literal["block-job-pause", "block-job-resume", "block-job-complete"]
    arguments: _arguments_type(JobDeviceArguments) = _default_arguments(JobDeviceArguments)


class BlockJobCancelAction(Action):
    command: Literal["block-job-cancel"]
    arguments: _arguments_type(BlockJobCancelArguments) = _default_arguments(BlockJobCancelArguments)


class BlockJobSetSpeedAction(Action):
    command: Literal["block-job-set-speed"]
    arguments: _arguments_type(BlockJobSetSpeedArguments) = _default_arguments(BlockJobSetSpeedArguments)


class JobIdAction(Action):
    command: Literal["block-job-finalize", "block-job-dismiss",  # these take 'id' in QMP too
                     "job-pause", "job-resume", "job-cancel", "job-complete", "job-finalize",
                     "job-dismiss", "job-start"]
    arguments: _arguments_type(JobIdArguments) = _default_arguments(JobIdArguments)


class ThinExtendAction(Action):
    command: Literal["thin-extend"]
    arguments: _arguments_type(ThinExtendArguments) = _default_arguments(ThinExtendArguments)


class GuestBurstAction(Action):
    command: Literal["guest-burst"]
    arguments: _arguments_type(GuestBurstArguments) = _default_arguments(GuestBurstArguments)


_ACTION_CLASSES: dict[str, type[Action]] = {
    cls.__name__: cls for cls in (NoArgumentsAction, JobDeviceAction, BlockJobCancelAction,
                                  BlockJobSetSpeedAction, JobIdAction, ThinExtendAction, GuestBurstAction)}
#: command name -> the Action subclass (its discriminator tag is the class name)
_COMMAND_CLASS: dict[str, type[Action]] = {
    command: cls for cls in _ACTION_CLASSES.values()
    for command in get_args(cls.model_fields["command"].annotation)}
COMMANDS = tuple(_COMMAND_CLASS)


def _action_tag(value: Any) -> Optional[str]:
    command = value.get("command") if isinstance(value, Mapping) else getattr(value, "command", None)
    if not isinstance(command, str):
        return None
    cls = _COMMAND_CLASS.get(command)
    return cls.__name__ if cls else command


AnyAction = Annotated[Union[tuple(Annotated[cls, Tag(name)] for name, cls in _ACTION_CLASSES.items())],
                      Discriminator(_action_tag)]


# --------------------------------------------------------------------------
# The scenario

class _Settings(_Model):
    """The scalar top-level keys."""

    name: str = Field("scenario", description="default: the file name without extension")
    description: str = ""
    profile: Literal[PROFILES] = "qemu"
    duration: PositiveDuration = _duration_default(60 * SECOND, "simulated time to run")
    seed: int = Field(0, ge=0)
    sample_interval: PositiveDuration = _duration_default(100_000_000, "metrics sampling period")
    max_events: int = Field(1_000_000, gt=0, description="safety cap on the number of events of a run")


class Scenario(_Settings):
    """A validated, resolved scenario (see the module docstring).

    Build it with :func:`load_scenario`, which reports problems with key
    paths; ``source`` is the file it came from (or ``"<dict>"``) and takes no
    part in equality."""

    images: dict[str, Image] = Field(min_length=1)
    drives: dict[str, Drive] = Field(default_factory=dict)
    faults: list[AnyFault] = Field(default_factory=list)
    workloads: dict[str, Workload] = Field(default_factory=dict)
    jobs: dict[str, AnyJob] = Field(default_factory=dict)
    actions: list[AnyAction] = Field(default_factory=list)

    _source: str = PrivateAttr("<dict>")

    @property
    def source(self) -> str:
        return self._source

    @model_validator(mode="after")
    def _check_and_resolve(self) -> "Scenario":
        problems = _cross_check(self.images, self.drives, self.faults, self.workloads, self.jobs,
                                self.actions)
        if problems:
            raise ValueError("; ".join(f"{_key_path(loc)}: {msg}" for loc, msg in problems))
        _resolve(self)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]  # holds dicts and lists

    def backing_chain(self, image: str) -> list[str]:
        """``image`` followed by its backing images, top first."""
        return _chain(self.images, image)

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as JSON-able data in the file's key spelling:
        sizes in bytes, durations in float seconds, absent values omitted.
        ``load_scenario(s.to_dict()) == s``."""
        return _drop_none(self.model_dump(mode="json", by_alias=True))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Cross-references

Loc = tuple[Union[str, int], ...]


def _names(kind: str, names: Mapping[str, Any]) -> str:
    if not names:
        return f"no {kind}s are defined"
    return f"defined {kind}s: " + ", ".join(names)


def _chain(images: Mapping[str, Optional[Image]], top: str) -> list[str]:
    """``top`` and its backing images (stops at a missing or repeated image)."""
    chain = [top]
    image = images.get(top)
    while image is not None and image.backing is not None and image.backing not in chain:
        chain.append(image.backing)
        image = images.get(image.backing)
    return chain


def _cross_check(images: Mapping[str, Optional[Image]], drives: Mapping[str, Optional[Drive]],
                 faults: list[Optional[Fault]], workloads: Mapping[str, Optional[Workload]],
                 jobs: Mapping[str, Optional[Job]], actions: list[Optional[Action]]) -> list[tuple[Loc, str]]:
    """Checks between tables.  ``None`` stands for an entry that exists but is
    itself invalid: its name resolves, nothing else is checked against it."""
    problems: list[tuple[Loc, str]] = []

    def image_ref(loc: Loc, name: str) -> Optional[Image]:
        if name not in images:
            problems.append((loc, f"unknown image '{name}'; {_names('image', images)}"))
        return images.get(name)

    def drive_image(loc: Loc, name: str) -> Optional[Image]:
        if name not in drives:
            problems.append((loc, f"unknown drive '{name}'; {_names('drive', drives)}"))
            return None
        drive = drives[name]
        return images.get(drive.image) if drive is not None else None

    def region(loc: Loc, image: Image, offset: int, length: Optional[int], what: str) -> None:
        if offset >= image.size:
            problems.append((loc + ("offset",), f"{what} starts at or beyond the end of the image "
                                                f"(offset {offset}, image size {image.size})"))
        elif length is not None and offset + length > image.size:
            problems.append((loc + (what_key[what],), f"{what} ends beyond the end of the image "
                             f"(offset {offset} + {what_key[what]} {length} > image size {image.size})"))

    what_key = {"fault range": "length", "workload region": "size", "burst region": "size"}

    for name, image in images.items():
        if image is None or image.backing is None:
            continue
        loc: Loc = ("images", name, "backing")
        if image_ref(loc, image.backing) is None:
            continue
        seen, current = [name], image.backing
        while current in images and images[current] is not None:
            if current == name:
                problems.append((loc, "backing chain loops back to this image: "
                                      + " -> ".join([*seen, name])))
                break
            if current in seen:
                break
            seen.append(current)
            current = images[current].backing
            if current is None:
                break

    for name, drive in drives.items():
        if drive is not None:
            image_ref(("drives", name, "image"), drive.image)

    for i, fault in enumerate(faults):
        if fault is None:
            continue
        image = image_ref(("faults", i, "image"), fault.image)
        if image is None:
            continue
        region(("faults", i), image, fault.offset, fault.length, "fault range")
        if isinstance(fault, DustFault):
            blocks = image.size // fault.block_size
            outside = [b for b in fault.blocks if b >= blocks]
            if outside:
                problems.append((("faults", i, "blocks"),
                                 f"block(s) {', '.join(map(str, outside))} beyond the end of image "
                                 f"'{fault.image}' ({blocks} blocks of {format_size(fault.block_size)})"))

    for name, workload in workloads.items():
        if workload is None:
            continue
        image = drive_image(("workloads", name, "drive"), workload.drive)
        if image is None:
            continue
        region(("workloads", name), image, workload.offset, workload.size, "workload region")
        if workload.offset < image.size:
            span = workload.size if workload.size is not None else image.size - workload.offset
            if span < workload.bs:
                problems.append((("workloads", name, "size" if workload.size is not None else "offset"),
                                 f"the region ({span} bytes) is smaller than bs ({workload.bs})"))

    for job_id, job in jobs.items():
        if job is None:
            continue
        top = None
        if job.device not in drives:
            problems.append((("jobs", job_id, "device"),
                             f"unknown drive '{job.device}'; {_names('drive', drives)}"))
        elif drives[job.device] is not None:
            top = drives[job.device].image
        chain = _chain(images, top) if top is not None and images.get(top) is not None else None
        if isinstance(job, MirrorJob):
            loc = ("jobs", job_id, "target")
            target = image_ref(loc, job.target)
            if target is None or chain is None:
                continue
            if job.target == top:
                problems.append((loc, f"the target must not be the source image '{top}'"))
            elif job.target in chain:
                problems.append((loc, f"the target '{job.target}' is in the source's backing chain ("
                                      + " -> ".join(chain) + ")"))
            elif target.size != images[top].size:
                problems.append((loc, f"source and target have different sizes (source '{top}': "
                                      f"{images[top].size}, target '{job.target}': {target.size})"))
        elif isinstance(job, StreamJob) and job.base is not None:
            loc = ("jobs", job_id, "base")
            if image_ref(loc, job.base) is None or chain is None:
                continue
            if job.base not in chain[1:]:
                below = " -> ".join(chain[1:]) if len(chain) > 1 else "none"
                problems.append((loc, f"'{job.base}' is not below '{top}' in its backing chain "
                                      f"(images below '{top}': {below})"))

    for i, action in enumerate(actions):
        if action is None:
            continue
        loc = ("actions", i, "arguments")
        if isinstance(action, ThinExtendAction):
            image_ref(loc + ("image",), action.arguments["image"])
        elif isinstance(action, GuestBurstAction):
            args = action.arguments
            image = drive_image(loc + ("drive",), args["drive"])
            if image is not None:
                region(loc, image, args["offset"], args.get("size"), "burst region")
    return problems


def _resolve(scenario: Scenario) -> None:
    """Fill in the defaults that depend on other tables (called once the
    cross-references are known to be good)."""
    images = scenario.images

    def drive_size(drive: str) -> int:
        return images[scenario.drives[drive].image].size

    for i, fault in enumerate(scenario.faults):
        if fault.length is None:
            length = images[fault.image].size - fault.offset
            scenario.faults[i] = fault.model_copy(update={"length": length})
    for name, workload in scenario.workloads.items():
        if workload.size is None:
            size = drive_size(workload.drive) - workload.offset
            scenario.workloads[name] = workload.model_copy(update={"size": size})
    for i, action in enumerate(scenario.actions):
        if isinstance(action, GuestBurstAction) and "size" not in action.arguments:
            args = action.arguments
            size = drive_size(args["drive"]) - args["offset"]
            scenario.actions[i] = action.model_copy(update={"arguments": {**args, "size": size}})


# --------------------------------------------------------------------------
# Turning pydantic's errors into (key path, message)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key_path(loc: Loc) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int) or _BARE_KEY.match(part):
            parts.append(str(part))
        else:
            parts.append(json.dumps(part))
    return ".".join(parts)


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _field(model: type[BaseModel], key: Any) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _model_at(model: type[BaseModel], loc: Loc) -> Optional[type[BaseModel]]:
    """The model class that validates the table at ``loc`` under ``model``."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = _field(tp, part)
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


class _Variants:
    """A discriminated union of models: which key selects the model, and how."""

    def __init__(self, kind: str, key: str, classes: dict[str, type[BaseModel]], choices: tuple[str, ...],
                 adapter: TypeAdapter):
        self.kind, self.key, self.classes, self.choices = kind, key, classes, choices
        self.adapter = adapter


_FAULTS = _Variants("fault", "type", {"error": ErrorFault, "flakey": FlakeyFault, "dust": DustFault,
                                      "delay": DelayFault}, FAULT_TYPES, TypeAdapter(AnyFault))
_JOBS = _Variants("job", "type", {"mirror": MirrorJob, "stream": StreamJob}, JOB_TYPES, TypeAdapter(AnyJob))
_ACTIONS = _Variants("action", "command", dict(_ACTION_CLASSES), COMMANDS, TypeAdapter(AnyAction))

_SCALAR_ERRORS = ("_type", "_parsing", "literal_error", "greater_than", "less_than", "finite_number",
                  "multiple_of", "too_short", "too_long")


def _choices(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _describe(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _did_you_mean(key: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _got(value: Any) -> str:
    return f" (got {_describe(value)})"


def _problems(error: ValidationError, prefix: Loc, root: Any, raw: Any) -> list[tuple[Loc, str]]:
    """Convert a pydantic error for ``raw`` (validated as ``root``, a model or
    :class:`_Variants`) into problems located under ``prefix``."""
    out: list[tuple[Loc, str]] = []
    for e in error.errors(include_url=False):
        loc: list[Any] = list(e["loc"])
        kind, msg = e["type"], e["msg"]
        model, variants, tag = root, None, None
        if isinstance(root, _Variants):
            variants = root
            if kind in ("union_tag_invalid", "union_tag_not_found") and not loc:
                if not isinstance(raw, Mapping):
                    out.append((prefix, f"must be a table{_got(raw)}"))
                elif root.key not in raw:
                    out.append((prefix + (root.key,), f"required key is missing; "
                                                      f"allowed: {_choices(root.choices)}"))
                else:
                    out.append((prefix + (root.key,), f"Input should be {_choices(root.choices)}"
                                                      f"{_got(raw[root.key])}"))
                continue
            tag = loc.pop(0)
            model = root.classes[tag]
        if kind == "extra_forbidden":
            key = loc[-1]
            owner = _model_at(model, tuple(loc[:-1]))
            allowed = ", ".join(_keys(owner)) if owner else "?"
            if owner is not None and issubclass(owner, _Arguments):
                command = raw.get("command") if isinstance(raw, Mapping) else "?"
                msg = (f"command '{command}' takes no arguments" if not owner.model_fields else
                       f"unknown argument for command '{command}'; allowed arguments: {allowed}")
            else:
                others = [t for t, cls in (variants.classes.items() if variants and not loc[:-1] else ())
                          if t != tag and _field(cls, key) is not None]
                if others:
                    msg = (f"not allowed for a {variants.kind} of {variants.key} '{tag}' (only for "
                           f"{variants.key} {_choices(tuple(others))}); allowed keys: {allowed}")
                else:
                    msg = f"unknown key{_did_you_mean(key, _keys(owner) if owner else [])}; allowed keys: {allowed}"
        elif kind == "missing":
            msg = "required key is missing"
            owner = _model_at(model, tuple(loc[:-1]))
            if (variants and len(loc) == 1 and owner is not None and variants.kind != "action"
                    and _field(Fault if variants is _FAULTS else Job, loc[0]) is None):
                msg = f"required for a {variants.kind} of {variants.key} '{tag}'"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif kind == "whole_item":
            loc = loc[:-1]
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"must be a table{_got(e.get('input'))}"
        elif kind in ("list_type", "tuple_type"):
            msg = f"must be an array{_got(e.get('input'))}"
        elif any(part in kind for part in _SCALAR_ERRORS):
            msg += _got(e.get("input"))
        out.append((prefix + tuple(loc), msg))
    return out


# --------------------------------------------------------------------------
# Loading

_SETTINGS_KEYS = {k for name, f in _Settings.model_fields.items() for k in (name, f.alias)}
_TOP_KEYS = _keys(Scenario)
_TABLES = {"images": (Image, "image"), "drives": (Drive, "drive"), "workloads": (Workload, "workload"),
           "jobs": (_JOBS, "job")}
_ARRAYS = {"faults": _FAULTS, "actions": _ACTIONS}


def _validate_parts(raw: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Validate ``raw`` table by table, so that every problem is found, even
    a reference problem next to an invalid entry elsewhere."""
    problems: list[tuple[Loc, str]] = []
    for key in raw:
        if not isinstance(key, str) or key not in _SETTINGS_KEYS and key not in _TOP_KEYS:
            problems.append(((str(key),), f"unknown key{_did_you_mean(key, _TOP_KEYS)}; "
                                          f"allowed keys: {', '.join(_TOP_KEYS)}"))
    try:
        _Settings.model_validate({k: v for k, v in raw.items() if k in _SETTINGS_KEYS})
    except ValidationError as error:
        problems += _problems(error, (), _Settings, raw)

    def validate(loc: Loc, root: Any, item: Any) -> Any:
        try:
            if isinstance(root, _Variants):
                return root.adapter.validate_python(item)
            return root.model_validate(item)
        except ValidationError as error:
            problems.extend(_problems(error, loc, root, item))
            return None

    parts: dict[str, Any] = {}
    for section, (root, kind) in _TABLES.items():
        table = raw.get(section, {})
        parts[section] = {}
        if section == "images" and section not in raw:
            problems.append(((section,), "required key is missing: define at least one image "
                                         "as an [images.NAME] table"))
        elif not isinstance(table, Mapping):
            problems.append(((section,), f"must be a table of {kind}s ([{section}.NAME]){_got(table)}"))
        else:
            if section == "images" and not table:
                problems.append(((section,), "at least one image is required"))
            for name, item in table.items():
                if not isinstance(name, str):
                    problems.append(((section, str(name)), f"{kind} names must be strings{_got(name)}"))
                    continue
                parts[section][name] = validate((section, name), root, item)
    for section, root in _ARRAYS.items():
        array = raw.get(section, [])
        parts[section] = []
        if not isinstance(array, (list, tuple)):
            problems.append(((section,), f"must be an array of tables ([[{section}]]){_got(array)}"))
            continue
        for i, item in enumerate(array):
            parts[section].append(validate((section, i), root, item))
    problems += _cross_check(parts["images"], parts["drives"], parts["faults"], parts["workloads"],
                             parts["jobs"], parts["actions"])
    return problems


def read_scenario_file(path: Union[str, os.PathLike]) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a scenario file and its raw (unvalidated) TOML data.

    Errors name the file: missing, a directory, unreadable, not UTF-8, or
    not TOML (with tomllib's line and column)."""
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ScenarioError(source, [("", "no such file")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [("", "is a directory, not a scenario file")]) from None
    except OSError as exc:
        raise ScenarioError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        return data, tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [("", f"invalid TOML: {exc}")]) from None


def load_scenario(source: Union[str, os.PathLike, Mapping[str, Any]],
                  overrides: Optional[Mapping[str, Any]] = None) -> Scenario:
    """Load and validate a scenario from a TOML file path or a dict.

    ``overrides`` (dotted key path -> value) are applied to the raw data
    first, see :func:`apply_overrides`.  Raises :class:`ScenarioError` with
    every problem found."""
    if isinstance(source, Mapping):
        name, default_name = "<dict>", "scenario"
        raw: Any = copy.deepcopy(dict(source))
    elif isinstance(source, (str, os.PathLike)):
        name, default_name = os.fspath(source), Path(source).stem
        raw = read_scenario_file(source)[1]
    else:
        raise ScenarioError(repr(source)[:60], [("", "a scenario is a path to a TOML file or a dict, "
                                                     f"not {type(source).__name__}")])
    if overrides:
        raw = apply_overrides(raw, overrides, source=name)
    if "name" not in raw:
        raw = {"name": default_name, **raw}
    problems = _validate_parts(raw)
    if not problems:
        try:
            scenario = Scenario.model_validate(raw)
        except ValidationError as error:  # pragma: no cover - _validate_parts checks the same
            problems = _problems(error, (), Scenario, raw)
    if problems:
        raise ScenarioError(name, [(_key_path(loc), msg) for loc, msg in problems])
    scenario._source = name
    return scenario


# --------------------------------------------------------------------------
# guest-burst at run time

def burst_workload_spec(scenario: Scenario, arguments: Mapping[str, Any]) -> Workload:
    """The :class:`Workload` that a ``guest-burst`` command starts.

    ``arguments`` may come from a validated action (already resolved) or
    straight from a notebook's ``monitor.execute``; bad arguments are refused
    with :class:`~blocksim.errors.CommandError`, like QMP refuses them."""
    try:
        args = GuestBurstArguments.model_validate(dict(arguments or {}))
    except ValidationError as error:
        detail = "; ".join(f"{_key_path(loc)}: {msg}" for loc, msg in
                           _problems(error, (), GuestBurstArguments, {"command": "guest-burst"}))
        raise CommandError(f"Invalid parameters for 'guest-burst': {detail}") from None
    drive = scenario.drives.get(args.drive)
    if drive is None:
        raise CommandError(f"Drive '{args.drive}' not found", "DeviceNotFound")
    image_size = scenario.images[drive.image].size
    size = args.size if args.size is not None else image_size - args.offset
    if args.offset >= image_size or size <= 0 or args.offset + size > image_size:
        raise CommandError(f"guest-burst region (offset {args.offset}, size {size}) is not inside "
                           f"drive '{args.drive}' (size {image_size})")
    return Workload(drive=args.drive, rw=args.rw, bs=args.bs, iodepth=args.iodepth,
                    number_ios=args.number_ios, offset=args.offset, size=size)


# --------------------------------------------------------------------------
# Overrides

def _split_key(key: str) -> Optional[list[str]]:
    """Split a dotted key path; segments may be "double-quoted"."""
    parts, i = [], 0
    while i <= len(key):
        if key.startswith('"', i):
            end = key.find('"', i + 1)
            if end < 0:
                return None
            parts.append(key[i + 1:end])
            i = end + 1
            if i < len(key) and key[i] != ".":
                return None
        else:
            end = key.find(".", i)
            end = len(key) if end < 0 else end
            segment = key[i:end].strip()
            if not segment:
                return None
            parts.append(segment)
            i = end
        i += 1
    return parts


def _override_value(text: str) -> Any:
    if "\n" in text or "\r" in text:
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any],
                    source: str = "<overrides>") -> dict[str, Any]:
    """Return a copy of ``raw`` with ``overrides`` applied.

    Keys are dotted paths (``jobs.job0.on-target-error``, ``faults.0.probability``;
    quote a segment containing dots: ``images."a.b".size``); missing tables
    are created; an array index may be one past the end to append an entry.
    A ``str`` value is read as a TOML value when it is one (``"0.5"`` -> 0.5,
    ``"true"`` -> True, ``"[1, 2]"`` -> a list), else kept as a string.
    Raises :class:`ScenarioError` naming every key that cannot be set."""
    result = copy.deepcopy(dict(raw))
    problems: list[tuple[str, str]] = []
    for key, value in overrides.items():
        if isinstance(value, str):
            value = _override_value(value)
        parts = _split_key(key) if isinstance(key, str) else None
        if not parts:
            problems.append((str(key), f"invalid key path {str(key)!r}: expected dotted keys such as "
                                       "jobs.job0.speed or faults.0.probability"))
            continue
        node: Any = result
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = _key_path(tuple(parts[:depth])) or "the top level"
            if isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            elif isinstance(node, list):
                if not part.isdigit():
                    problems.append((key, f"'{where}' is an array: expected an index (0 to {len(node)}), "
                                          f"got '{part}'"))
                    break
                index = int(part)
                if index > len(node):
                    entries = "1 entry" if len(node) == 1 else f"{len(node)} entries"
                    problems.append((key, f"index {index} is out of range: '{where}' has {entries} "
                                          f"(use {len(node)} to append one)"))
                    break
                if index == len(node):
                    node.append(value if last else {})
                if last:
                    node[index] = value
                else:
                    node = node[index]
            else:
                problems.append((key, f"cannot set a key inside '{where}', which is "
                                      f"{_describe(node)}, not a table"))
                break
    if problems:
        raise ScenarioError(source, problems)
    return result


# --------------------------------------------------------------------------
# JSON schema

def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of the input format (keys in the file's spelling)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    schema["properties"]["name"]["description"] = "default: the file name without extension"
    schema["description"] = ("A blocksim scenario: images, drives, faults, workloads, block jobs "
                             "and actions. Sizes are bytes or strings such as '4KiB'; durations "
                             "are seconds or strings such as '10ms'.")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "blocksim scenario",
            **{k: v for k, v in schema.items() if k != "title"}}
