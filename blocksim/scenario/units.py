"""Sizes and durations: parsing the user's spelling, printing for humans.

Inside blocksim a size is always an ``int`` number of bytes and a duration an
``int`` number of nanoseconds (simulated time).  Scenario files may spell them
the way people do:

* sizes: ``4096``, ``"512"``, ``"4KiB"``, ``"4K"``, ``"64 KiB"``, ``"1.5GiB"``,
  ``"100B"``.  Every unit is *binary* (powers of 1024), as in ``qemu-img``:
  ``K`` = ``KiB`` = ``KB`` = 1024, ``M`` = ``MiB`` = ``MB`` = 1024², and so on
  up to ``E``.  Units are case-insensitive.  The result must be a whole number
  of bytes (``"1.5K"`` is fine, ``"0.3K"`` is not).
* durations: a bare number is seconds (``2``, ``0.25``, ``"0.5"``); a string
  may carry a unit ``ns``, ``us`` (or ``µs``), ``ms``, ``s``, ``min`` or ``h``:
  ``"100ns"``, ``"5us"``, ``"10ms"``, ``"2s"``, ``"1.5min"``, ``"1h"``.  The
  result is rounded to the nearest nanosecond.

Negative values, booleans and anything else raise :class:`ValueError` with a
message that says what is accepted.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

__all__ = [
    "SIZE_UNITS",
    "DURATION_UNITS",
    "parse_size",
    "parse_rate",
    "parse_duration",
    "format_size",
    "format_duration",
    "ns_to_seconds",
    "NS_PER_SECOND",
]

NS_PER_SECOND = 1_000_000_000

#: Size unit (lower case) -> bytes.  All binary, like qemu-img.
SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    for _suffix in ("", "b", "ib"):
        SIZE_UNITS[_p + _suffix] = 1024**_i

#: Duration unit -> nanoseconds.
DURATION_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # greek small letter mu
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "min": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
}

_NUMBER_UNIT = re.compile(
    r"^\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[^\d\s.+-][^\s]*)?\s*$"
)

_SIZE_HELP = ("expected a whole number of bytes or a number with a unit "
              "B, K/KiB/KB, M/MiB/MB, G/GiB/GB, T/TiB/TB (binary: 1K = 1024), e.g. '4KiB'")
_DURATION_HELP = ("expected a number of seconds or a number with a unit "
                  "ns, us, ms, s, min or h, e.g. '10ms'")


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _exact(value: int | float | str) -> Fraction:
    """An exact rational for a number as the user wrote it (floats by repr)."""
    if isinstance(value, int):
        return Fraction(value)
    try:
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError) as exc:  # pragma: no cover - regex guards this
        raise ValueError(f"invalid number {_show(value)}") from exc
    if number and not -_EXPONENT <= number.adjusted() <= _EXPONENT:
        # (an exact rational of 1e999999999 would take GiBs: refuse it first)
        raise ValueError(f"invalid number {_show(value)}: out of range (exponent beyond "
                         f"+-{_EXPONENT})")
    return Fraction(number)


#: Decimal exponents a number may have (sizes and durations need far less).
_EXPONENT = 40


def parse_size(value: object) -> int:
    """Return ``value`` as a number of bytes (see the module docstring)."""
    what = f"invalid size {_show(value)}"
    if isinstance(value, bool):
        raise ValueError(f"{what}: {_SIZE_HELP}, not a boolean")
    if isinstance(value, int):
        amount = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {_SIZE_HELP}")
        amount = _exact(value)
    elif isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        unit = (match.group("unit") or "").lower() if match else None
        if match is None or unit not in SIZE_UNITS:
            raise ValueError(f"{what}: {_SIZE_HELP}")
        amount = _exact(match.group("num")) * SIZE_UNITS[unit]
    else:
        raise ValueError(f"{what}: {_SIZE_HELP}")
    if amount < 0:
        raise ValueError(f"{what}: must not be negative")
    if amount.denominator != 1:
        raise ValueError(f"{what}: not a whole number of bytes")
    return int(amount)


def parse_rate(value: object) -> int:
    """A size per second, in bytes per second; accepts an optional ``/s``
    suffix (``"100MiB/s"``) besides everything :func:`parse_size` accepts."""
    size = value
    if isinstance(value, str) and value.strip().endswith("/s"):
        size = value.strip()[:-2]
    try:
        return parse_size(size)
    except ValueError as exc:
        reason = str(exc)[len(f"invalid size {_show(size)}: "):]
        if reason.startswith("expected"):
            reason = ("expected bytes per second: a number, or a size such as '100MiB' or "
                      "'100MiB/s' (binary units: 1K = 1024)")
        raise ValueError(f"invalid rate {_show(value)}: {reason}") from None


def parse_duration(value: object) -> int:
    """Return ``value`` as a number of nanoseconds (see the module docstring)."""
    what = f"invalid duration {_show(value)}"
    if isinstance(value, bool):
        raise ValueError(f"{what}: {_DURATION_HELP}, not a boolean")
    if isinstance(value, int):
        amount = Fraction(value) * NS_PER_SECOND
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {_DURATION_HELP}")
        amount = _exact(value) * NS_PER_SECOND
    elif isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        unit = (match.group("unit") or "s") if match else None
        if match is None or unit not in DURATION_UNITS:
            hint = ""
            if match is not None and unit in ("m", "M"):
                hint = " ('m' is ambiguous: write 'min' or 'ms')"
            raise ValueError(f"{what}: {_DURATION_HELP}{hint}")
        amount = _exact(match.group("num")) * DURATION_UNITS[unit]
    else:
        raise ValueError(f"{what}: {_DURATION_HELP}")
    if amount < 0:
        raise ValueError(f"{what}: must not be negative")
    return round(amount)  # Fraction rounding: to the nearest, ties to even


def ns_to_seconds(ns: int) -> float:
    """Nanoseconds to (float) seconds."""
    return ns / NS_PER_SECOND


def _trim(value: Fraction, decimals: int) -> str:
    """``value`` rounded to ``decimals`` decimals, without trailing zeros."""
    scaled = round(value * 10**decimals)
    whole, frac = divmod(scaled, 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return text


_SIZE_NAMES = [("EiB", 1024**6), ("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3),
               ("MiB", 1024**2), ("KiB", 1024), ("B", 1)]


def format_size(n: int) -> str:
    """A compact human spelling of ``n`` bytes: ``4KiB``, ``1.5GiB``, ``100B``.

    Exact when the value is a whole or short decimal multiple of the unit (so
    :func:`parse_size` reads it back), otherwise rounded to two decimals."""
    sign, n = ("-", -n) if n < 0 else ("", n)
    for name, unit in _SIZE_NAMES:
        if n >= unit:
            break
    else:
        return "0B"
    return f"{sign}{_trim(Fraction(n, unit), 2)}{name}"


_DURATION_NAMES = [("h", 3600 * NS_PER_SECOND), ("min", 60 * NS_PER_SECOND),
                   ("s", NS_PER_SECOND), ("ms", 1_000_000), ("us", 1_000), ("ns", 1)]


def format_duration(ns: int) -> str:
    """A compact human spelling of ``ns`` nanoseconds: ``100ns``, ``10ms``,
    ``2s``, ``1.5min``, ``1h``.

    Uses the largest unit in which the value is below 1000 and exact with at
    most three decimals (``61s`` rather than ``1.017min``); if there is none,
    the largest unit not above the value, rounded to three decimals."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    fitting = [(name, unit) for name, unit in _DURATION_NAMES if ns >= unit]
    for name, unit in fitting:
        if name != "h" and ns >= 1000 * unit:
            break
        if (ns * 1000) % unit == 0:
            return f"{sign}{_trim(Fraction(ns, unit), 3)}{name}"
    name, unit = fitting[0]
    return f"{sign}{_trim(Fraction(ns, unit), 3)}{name}"
