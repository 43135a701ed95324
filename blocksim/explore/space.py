"""The search space of an explore spec as Hypothesis strategies, and a case
as a scenario.

A *case* is JSON-able data::

    {"kinds": [...],            # the kinds this case may use (swarm testing)
     "faults": [{...}, ...],    # [[faults]] entries in the file's spelling
     "set": {"KEY.PATH": value}}  # capacity, extend-latency and vary draws

Each case first draws which of the allowed kinds it enables (a random subset,
as in swarm testing: a case with only ``error`` faults reaches schedules that
a case mixing every kind rarely does), then at most ``max-faults`` faults of
the enabled fault kinds, then a value for ``capacity`` / ``extend-latency``
when enabled and one value for each ``vary`` key.  Every draw shrinks
towards the low end of its range, a fault list towards fewer faults, a
fault's count towards persistent (no ``count``) when allowed, its end towards
none, so a shrunk case is small and reads simply.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from ..scenario import apply_overrides
from ..scenario.explore import FAULT_KINDS, Explore

__all__ = ["case_strategy", "case_scenario", "case_key", "fault_count", "to_toml", "MS"]

MS = 1_000_000
DEFAULT_LENGTHS = (4096, 1024 * 1024)
DEFAULT_DELAYS = (1 * MS, 1000 * MS)
DEFAULT_FLAKEY = (100 * MS, 5000 * MS)


def format_size(n: int) -> str:
    """``n`` bytes exactly, in the largest binary unit that divides it."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def format_duration(ns: int) -> str:
    """``ns`` exactly, in the largest unit that divides it."""
    for unit, factor in (("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns and ns % factor == 0:
            return f"{ns // factor}{unit}"
    return f"{ns}ns"


def case_key(case: Mapping[str, Any]) -> str:
    """A case's canonical text (its identity in caches and statistics)."""
    return json.dumps(case, sort_keys=True, separators=(",", ":"))


def fault_count(case: Mapping[str, Any]) -> int:
    """How many fault-like items a case adds: its faults and its settings."""
    return len(case["faults"]) + len(case["set"])


def _ms(lo: int, hi: int):
    """A duration in whole milliseconds in ``[lo, hi]`` (ns), shrinking to lo."""
    a, b = -(-lo // MS), hi // MS
    return st.integers(a, max(a, b)).map(lambda v: v * MS)


def case_strategy(spec: Explore, base: Mapping[str, Any], duration: int, image_sizes: Mapping[str, int],
                  pools: list[str]):
    """The Hypothesis strategy of the cases of ``spec`` on the scenario ``base``
    (raw data; ``duration`` in ns, ``image_sizes`` in bytes)."""
    images = list(spec.images or image_sizes)
    window = spec.window or (0, duration)
    lengths = spec.lengths or DEFAULT_LENGTHS
    align = spec.align

    @st.composite
    def fault(draw, kind: str) -> dict:
        image = draw(st.sampled_from(images))
        size = image_sizes[image]
        out: dict[str, Any] = {"image": image}
        if kind != "error":
            out["type"] = kind
        lo, hi = spec.offsets or (0, size)
        hi = min(hi, size - align)
        offset = draw(st.integers(lo // align, max(lo // align, hi // align))) * align
        if kind == "dust":
            blocks = draw(st.lists(st.integers(0, 15), min_size=1, max_size=4, unique=True))
            out["blocks"] = sorted(offset // 512 + b for b in blocks)
        else:
            out["operation"] = draw(st.sampled_from(spec.operations))
            if kind in ("error", "flakey"):
                out["errno"] = draw(st.sampled_from(spec.errnos))
            out["offset"] = format_size(offset)
            units = draw(st.integers(max(1, lengths[0] // align), max(1, lengths[1] // align)))
            out["length"] = format_size(min(units * align, size - offset))
        start = draw(_ms(*window))
        if start:
            out["start"] = format_duration(start)
        end = draw(st.one_of(st.none(), _ms(start + MS, max(start + MS, window[1]))))
        if end is not None:
            out["end"] = format_duration(end)
        if kind == "error":
            choices = []
            if spec.persistent:
                choices.append(st.none())
            if spec.counts is not None:
                choices.append(st.integers(*spec.counts))
            count = draw(st.one_of(*choices))
            if count is not None:
                out["count"] = count
        if kind == "flakey":
            out["up"] = format_duration(draw(_ms(*(spec.flakey_up or DEFAULT_FLAKEY))))
            out["down"] = format_duration(draw(_ms(*(spec.flakey_down or DEFAULT_FLAKEY))))
            if draw(st.booleans()):
                out["drop-writes"] = True
        if kind == "delay":
            out["delay"] = format_duration(draw(_ms(*(spec.delays or DEFAULT_DELAYS))))
        return out

    @st.composite
    def case(draw) -> dict:
        enabled = [k for k in spec.kinds if draw(st.booleans())] or [spec.kinds[0]]
        fault_kinds = [k for k in enabled if k in FAULT_KINDS]
        faults = []
        if fault_kinds:
            faults = draw(st.lists(st.sampled_from(fault_kinds).flatmap(fault),
                                   max_size=spec.max_faults))
        settings: dict[str, Any] = {}
        if "capacity" in enabled:
            image = draw(st.sampled_from(images))
            lo, hi = spec.capacity
            settings[f"images.{image}.capacity"] = format_size(
                draw(st.integers(lo // align, max(lo // align, hi // align))) * align)
        if "extend-latency" in enabled:
            pool = draw(st.sampled_from(pools))
            settings[f"pools.{pool}.extend-latency"] = format_duration(draw(_ms(*spec.extend_latency)))
        for key, values in spec.vary.items():
            settings[key] = draw(st.sampled_from(values))
        return {"kinds": enabled, "faults": faults, "set": settings}

    return case()


def case_scenario(base: Mapping[str, Any], case: Mapping[str, Any], name: str | None = None,
                  properties: list[str] | None = None) -> dict[str, Any]:
    """The raw scenario of ``case``: the base with the case's faults appended
    and its settings applied.  Without ``properties`` the ``[explore]`` table
    is dropped; with them it is kept with only those properties (a
    counterexample states what it breaks)."""
    raw = copy.deepcopy(dict(base))
    explore = raw.pop("explore", None)
    raw["faults"] = list(raw.get("faults", [])) + [dict(f) for f in case["faults"]]
    if not raw["faults"]:
        del raw["faults"]
    raw = apply_overrides(raw, dict(case["set"]))
    if name is not None:
        raw["name"] = name
    if properties is not None and explore is not None:
        kept = dict(explore)
        kept["properties"] = list(properties)
        kept["expect"] = "broken"
        raw["explore"] = kept
    return raw


# -- TOML ------------------------------------------------------------------------------
def _key(key: str) -> str:
    import re
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table_of_tables(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, Mapping) for v in value.values())


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def to_toml(raw: Mapping[str, Any], header: str = "") -> str:
    """``raw`` (a scenario's data) as TOML text: scalars first, then one
    ``[table]`` / ``[table.NAME]`` / ``[[array]]`` section each."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    simple = {k: v for k, v in raw.items() if not isinstance(v, Mapping) and not _is_array_of_tables(v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in simple.items()]
    for key, value in raw.items():
        if key in simple:
            continue
        if _is_array_of_tables(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]"] + [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
        elif _is_table_of_tables(value) and key not in ("explore", "thin-provisioning", "thin_provisioning"):
            for name, table in value.items():
                lines += ["", f"[{_key(key)}.{_key(name)}]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        else:
            lines += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
