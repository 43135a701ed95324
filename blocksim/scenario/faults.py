"""``[[faults]]``: blkdebug-style errors, dm-flakey windows, dm-dust bad blocks,
dm-delay latency, one model per ``type``.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Discriminator, Field, PlainSerializer, Tag, WithJsonSchema, field_validator

from .fields import (
    ERRNOS,
    FAULT_TYPES,
    OPERATIONS,
    Duration,
    OptionalDuration,
    OptionalPositiveSize,
    PositiveDuration,
    Size,
    _check_end,
    _duration_default,
    _Model,
    _size_type,
)


def _operations(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    allowed = (*OPERATIONS, "any")
    if (not isinstance(items, (list, tuple)) or not items
            or any(not isinstance(x, str) or x not in allowed for x in items)):
        raise ValueError("must be 'read', 'write', 'write-zeroes', 'flush' or 'any', "
                         "or a non-empty array of those")
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
