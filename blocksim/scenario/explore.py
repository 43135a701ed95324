"""``[explore]``: the search space and the properties of ``blocksim explore``.

A scenario with an ``[explore]`` table is an *explore spec*: the scenario is
the base case (run as is by ``blocksim run``) and the table says which faults
``blocksim explore`` may add to it, within which ranges, which keys it may
vary, and which properties every run must keep (:mod:`blocksim.explore`
searches and shrinks; docs/explore.md describes the format).

The property language is parsed here, so that a malformed property is a
located one-line error like any other; which summary fields exist is known
only once the base case has run, so :mod:`blocksim.explore.properties`
checks the field names.

Properties (one string each)::

    no-lost-writes                    no drive lost a write (drives.*.writes_lost == 0)
    no-corrupt-writes                 no drive returned corrupt data (drives.*.corrupt_bytes == 0)
    no-guest-errors                   no guest request saw an error (drives.*.guest_errors == 0)
    no-invariant-violations           the run's invariants hold (always checked)
    FIELD OP VALUE                    a summary figure, e.g. vm.time_paused < 60s,
                                      jobs.mirror0.outcome in ["completed"]
    no job paused longer than D       no job stayed paused (JOB_STATUS_CHANGE) longer than D
    no vm paused longer than D        the VM never stayed stopped (STOP .. RESUME) longer than D
    every EVENT [with K V [and K V]] is followed by EVENT2|resume [with K V] within D
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from .fields import ERRNOS, EVENTS, OPERATIONS, _Model
from .units import parse_duration, parse_size

#: The kinds of fault ``blocksim explore`` may add: fault rules of each
#: ``[[faults]]`` type, an image's physical ``capacity`` and a pool's
#: ``extend-latency``.
EXPLORE_KINDS = ("error", "flakey", "dust", "delay", "capacity", "extend-latency")
FAULT_KINDS = ("error", "flakey", "dust", "delay")
NAMED_PROPERTIES = {
    "no-lost-writes": "drives.*.writes_lost",
    "no-corrupt-writes": "drives.*.corrupt_bytes",
    "no-guest-errors": "drives.*.guest_errors",
    "no-invariant-violations": None,
}
OPERATORS = ("<=", ">=", "==", "!=", "<", ">", "not in", "in")
#: Shorthands for summary fields: ``vm-paused-total`` and singular tables.
FIELD_ALIASES = {"vm-paused-total": "vm.time_paused", "vm-stops": "vm.stops"}
TABLE_ALIASES = {"job": "jobs", "drive": "drives", "image": "images"}


# -- the property language ----------------------------------------------------------------
@dataclass(frozen=True)
class Property:
    """One parsed property: ``kind`` is ``named``, ``compare``, ``longest``
    or ``follows``; ``text`` is what the user wrote."""

    text: str
    kind: str
    field: str = ""                     # compare: the dotted summary path (may hold *)
    op: str = ""
    value: Any = None
    subject: str = ""                   # longest: job / vm
    bound: int = 0                      # longest, follows: nanoseconds
    event: str = ""                     # follows
    where: tuple = ()                   # follows: ((key, value), ...)
    then: str = ""                      # follows: an event name or "resume"
    then_where: tuple = ()


_UNIT_NUMBER = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)$")
_DURATION_UNITS = ("ns", "us", "ms", "s", "min", "h")


def parse_value(text: str) -> Any:
    """A property's value: a TOML value (number, "string", [array], true),
    a duration (``60s``: compared in seconds) or a size (``1MiB``: bytes)."""
    text = text.strip()
    match = _UNIT_NUMBER.match(text)
    if match:
        if match.group(2) in _DURATION_UNITS:
            return parse_duration(text) / 1e9
        return parse_size(text)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ValueError(f"cannot read the value {text!r}: write a number, a duration (60s), "
                         "a size (1MiB), a \"string\" or an array [...]") from None


def _duration(text: str) -> int:
    try:
        return parse_duration(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text.strip()!r} is not a duration ({exc})") from None


def _conditions(text: str) -> tuple:
    """``key value [and key value]...`` after ``with``."""
    out = []
    for part in re.split(r"\s+and\s+", text.strip()):
        words = part.split(None, 1)
        if len(words) != 2:
            raise ValueError(f"'with {part}': write 'with KEY VALUE' (e.g. with action stop)")
        key, value = words
        value = value.strip()
        if value[:1] in "\"'[" or re.match(r"^-?[0-9.]+$", value) or value in ("true", "false"):
            value = parse_value(value)
        out.append((key, value))
    return tuple(out)


def _event(name: str, allow_resume: bool = False) -> str:
    if allow_resume and name == "resume":
        return name
    if name not in EVENTS:
        allowed = ", ".join(EVENTS) + (" or resume" if allow_resume else "")
        raise ValueError(f"unknown event {name!r}; events: {allowed}")
    return name


_FOLLOWS = re.compile(r"^every\s+(\S+)(?:\s+with\s+(.+?))?\s+is\s+followed\s+by\s+(?:an?\s+)?(\S+)"
                      r"(?:\s+with\s+(.+?))?\s+within\s+(.+)$")
_LONGEST = re.compile(r"^no\s+(job|vm)\s+paused\s+(?:for\s+)?longer\s+than\s+(.+)$")


def parse_property(text: str) -> Property:
    """Parse one property (see the module docstring); raises ``ValueError``
    with a message saying what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a property is a non-empty string")
    src = " ".join(text.split())
    if src in NAMED_PROPERTIES:
        return Property(src, "named", field=NAMED_PROPERTIES[src] or "")
    match = _LONGEST.match(src)
    if match:
        return Property(src, "longest", subject=match.group(1), bound=_duration(match.group(2)))
    match = _FOLLOWS.match(src)
    if match:
        event, where, then, then_where, within = match.groups()
        return Property(src, "follows", event=_event(event), where=_conditions(where) if where else (),
                        then=_event(then, allow_resume=True),
                        then_where=_conditions(then_where) if then_where else (),
                        bound=_duration(within))
    if src.startswith("every "):
        raise ValueError("write 'every EVENT [with KEY VALUE] is followed by EVENT|resume "
                         "[with KEY VALUE] within DURATION'")
    for op in OPERATORS:
        pattern = rf"^(\S+)\s+{op}\s+(.+)$" if op.isalpha() or " " in op else rf"^(\S+?)\s*{re.escape(op)}\s*(.+)$"
        match = re.match(pattern, src)
        if match:
            name, value = match.groups()
            if name.endswith("not") and op == "in":
                continue
            name = FIELD_ALIASES.get(name, name)
            head, _, rest = name.partition(".")
            name = f"{TABLE_ALIASES.get(head, head)}.{rest}" if rest else name
            parsed = parse_value(value)
            if op in ("in", "not in") and not isinstance(parsed, list):
                raise ValueError(f"'{op}' takes an array, e.g. {name} {op} [\"completed\"]")
            return Property(src, "compare", field=name, op=op, value=parsed)
    raise ValueError(f"cannot read the property {src!r}: write one of "
                     f"{', '.join(NAMED_PROPERTIES)}, 'FIELD OP VALUE' (OP: {', '.join(OPERATORS)}), "
                     "'no job|vm paused longer than DURATION' or 'every EVENT ... is followed by "
                     "EVENT within DURATION'")


def _properties(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be an array of property strings")
    errors = []
    for i, text in enumerate(value):
        try:
            parse_property(text)
        except ValueError as exc:
            errors.append(f"[{i}] {text!r}: {exc}")
    if errors:
        raise ValueError("; ".join(errors))
    return value


# -- ranges ---------------------------------------------------------------------------------
def _range(parse, what: str):
    def check(value: Any) -> Any:
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"must be an array [low, high] of {what}s")
        low, high = (parse(v) for v in value)
        if low > high:
            raise ValueError(f"low ({value[0]}) must not exceed high ({value[1]})")
        return (low, high)
    return check


def _as_list(value: Any) -> Any:
    return None if value is None else list(value)


def _size(value: Any) -> int:
    return parse_size(value)


def _dur(value: Any) -> int:
    return parse_duration(value)


SizeRange = Annotated[Optional[tuple[int, int]], BeforeValidator(_range(_size, "size")),
                      PlainSerializer(_as_list)]
DurationRange = Annotated[Optional[tuple[int, int]], BeforeValidator(_range(_dur, "duration")),
                          PlainSerializer(_as_list)]


def _count_range(value: Any) -> Any:
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
            or value[0] > value[1]):
        raise ValueError("must be an array [low, high] of integers >= 1, low <= high")
    return tuple(value)


class Explore(_Model):
    """The ``[explore]`` table (see the module docstring and docs/explore.md)."""

    kinds: list[Literal[EXPLORE_KINDS]] = Field(min_length=1)
    images: Optional[list[str]] = Field(None, min_length=1, description="default: every image")
    operations: list[Literal[OPERATIONS]] = Field(["flush", "read", "write"], min_length=1)
    errnos: list[Literal[ERRNOS]] = Field(["EIO"], min_length=1)
    max_faults: int = Field(3, ge=1, le=20)
    window: DurationRange = Field(None, description="when a fault starts (and ends); default [0, duration]")
    offsets: SizeRange = Field(None, description="where a fault's range starts; default the whole image")
    lengths: SizeRange = Field(None, description="a fault's range length; default [4KiB, 1MiB]")
    align: int = Field(4096, gt=0, description="offsets and lengths are multiples of this")
    counts: Annotated[Optional[tuple[int, int]], BeforeValidator(_count_range),
                      PlainSerializer(_as_list)] = Field(
        None, description="a fault's count (fires at most N times); absent: persistent only")
    persistent: bool = Field(True, description="a fault may be persistent (no count)")
    delays: DurationRange = Field(None, description="a delay fault's latency; default [1ms, 1s]")
    flakey_up: DurationRange = Field(None, description="default [100ms, 5s]")
    flakey_down: DurationRange = Field(None, description="default [100ms, 5s]")
    capacity: SizeRange = Field(None, description="kind capacity: an image's physical space")
    extend_latency: DurationRange = Field(None, description="kind extend-latency: a pool's fixed latency")
    vary: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="KEY.PATH = [values]: one value drawn per case")
    properties: Annotated[list[str], BeforeValidator(_properties)] = Field(min_length=1)
    runs: int = Field(200, ge=1, description="default budget of runs (--runs)")
    expect: Literal["holds", "broken"] = Field(
        "holds", description="for a saved counterexample: its properties are broken (replayed by the tests)")

    @model_validator(mode="after")
    def _needs(self) -> "Explore":
        if "capacity" in self.kinds and self.capacity is None:
            raise ValueError("kind 'capacity' needs capacity = [low, high]")
        if "extend-latency" in self.kinds and self.extend_latency is None:
            raise ValueError("kind 'extend-latency' needs extend-latency = [low, high]")
        if self.counts is None and not self.persistent:
            raise ValueError("give counts = [low, high] when persistent = false")
        for key, values in self.vary.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"vary.{key}: must be a non-empty array of values")
        return self

    def parsed_properties(self) -> list[Property]:
        return [parse_property(text) for text in self.properties]


def check(scenario) -> list[tuple[tuple, str]]:
    """Cross-table problems of ``[explore]``: images that do not exist, a pool
    needed by extend-latency."""
    spec = scenario.explore
    if spec is None:
        return []
    problems = []
    for i, name in enumerate(spec.images or ()):
        if name not in scenario.images:
            problems.append((("explore", "images", i), f"unknown image {name!r}; images: "
                             f"{', '.join(scenario.images)}"))
    if "extend-latency" in spec.kinds and not scenario.pools:
        problems.append((("explore", "kinds"), "kind 'extend-latency' needs a [pools.NAME] table"))
    return problems
