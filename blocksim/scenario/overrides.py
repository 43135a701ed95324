"""``--set key=value`` overrides (the command line's and a sweep's axes) applied
to a scenario's raw data.
"""

import copy
import tomllib
from collections.abc import Mapping
from typing import Any, Optional

from ..errors import ScenarioError
from .problems import _describe, _key_path


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
