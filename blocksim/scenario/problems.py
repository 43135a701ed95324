"""Turning pydantic's errors into ``(key path, message)`` pairs a user can act
on: one per problem, with the allowed values and a did-you-mean.
"""

import difflib
import json
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from .actions import _ACTION_CLASSES, COMMANDS, AnyAction, _Arguments
from .faults import AnyFault, DelayFault, DustFault, ErrorFault, Fault, FlakeyFault
from .fields import FAULT_TYPES, JOB_TYPES, Loc
from .jobs import AnyJob, BackupJob, CommitJob, Job, MirrorJob, StreamJob

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


def _members(tp: Any) -> dict[str, type[BaseModel]]:
    """A tagged union's models by tag (the class names: a transaction's
    actions), or nothing."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    return {m.__name__: m for m in map(_unwrap, get_args(tp))
            if isinstance(m, type) and issubclass(m, BaseModel)}


def _untagged(model: Any, loc: Loc) -> tuple[Loc, Any]:
    """``loc`` without the tags pydantic puts in it after an item of a
    tagged union (what a user wrote has none), and the type at its end."""
    tp: Any = model
    out: list[Any] = []
    for part in loc:
        tp = _unwrap(tp)
        members = _members(tp)
        if part in members:
            tp = members[part]
            continue
        out.append(part)
        if tp is None:
            continue
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = _field(tp, part)
            tp = field.annotation if field is not None else None
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
    return tuple(out), _unwrap(tp)


def _model_at(model: type[BaseModel], loc: Loc) -> Optional[type[BaseModel]]:
    """The model class that validates the table at ``loc`` under ``model``."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        members = _members(tp)
        if part in members:
            tp = members[part]
            continue
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
_JOBS = _Variants("job", "type", {"mirror": MirrorJob, "stream": StreamJob,
                                  "commit": CommitJob, "backup": BackupJob}, JOB_TYPES,
                  TypeAdapter(AnyJob))
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
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            # a tagged union inside (a transaction's actions): its `type`
            where, union = _untagged(model, tuple(loc))
            kinds = sorted(str(t) for m in _members(union).values()
                           for t in get_args(_unwrap(m.model_fields["type"].annotation)))
            item = _value_at(raw, (tag,) if tag is not None else (), where)
            if not isinstance(item, Mapping):
                msg = f"must be a table{_got(item)}"
            elif "type" not in item:
                where, msg = where + ("type",), f"required key is missing; allowed: {_choices(tuple(kinds))}"
            else:
                where, msg = where + ("type",), (f"Input should be {_choices(tuple(kinds))}"
                                                 f"{_got(item['type'])}")
            out.append((prefix + where, msg))
            continue
        if kind == "extra_forbidden":
            key = loc[-1]
            owner = _model_at(model, tuple(loc[:-1]))
            allowed = ", ".join(_keys(owner)) if owner else "?"
            if owner is not None and issubclass(owner, _Arguments):
                command = raw.get("command") if isinstance(raw, Mapping) else "?"
                where = _untagged(model, tuple(loc))[0]
                if len(where) > 2 and where[-2] == "data":
                    # (an action of a transaction: its own command)
                    item = _value_at(raw, (), where[:-2])
                    command = item.get("type", command) if isinstance(item, Mapping) else command
                msg = (f"command '{command}' takes no arguments" if not owner.model_fields else
                       f"unknown argument for command '{command}'; allowed arguments: {allowed}")
            else:
                others = [t for t, cls in (variants.classes.items() if variants and not loc[:-1] else ())
                          if t != tag and _field(cls, key) is not None]
                if others:
                    msg = (f"not allowed for a {variants.kind} of {variants.key} '{tag}' (only for "
                           f"{variants.key} {_choices(tuple(others))}); allowed keys: {allowed}")
                elif key in getattr(owner, "not_options", ()):
                    msg = f"{owner.not_options[key]}; allowed keys: {allowed}"
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
            if kind == "literal_error" and isinstance(e.get("input"), str):
                msg += _did_you_mean(e["input"], re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", ""))))
        out.append((prefix + _untagged(model, tuple(loc))[0], msg))
    return out


def _value_at(raw: Any, skip: Loc, loc: Loc) -> Any:
    """What the user wrote at ``loc`` (a variant's tag in ``skip`` is not in it)."""
    value = raw
    for part in loc:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return None
    return value


def _positions(raw: Any) -> dict[Loc, tuple[int, int]]:
    """Every key path of ``raw`` (a scenario's data, as tomllib read it: in
    the order of the file) to its rank in that order and the rank of the
    last key inside it."""
    order: dict[Loc, tuple[int, int]] = {}
    count = 0

    def walk(value: Any, loc: Loc) -> None:
        nonlocal count
        first = count
        count += 1
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, loc + (key,))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, loc + (i,))
        order[loc] = (first, count - 1)

    walk(raw, ())
    return order


def in_file_order(problems: list[tuple[Loc, str]], raw: Any) -> list[tuple[Loc, str]]:
    """``problems`` sorted as their keys come in the file (``raw``'s order,
    which is tomllib's, the file's), so a user reads them top to bottom; a
    key the file lacks (a missing required key) sorts after the keys of the
    nearest table that holds it; problems at one place keep their order."""
    order = _positions(raw)

    def rank(item: tuple[Loc, str]) -> tuple[int, int]:
        loc = item[0]
        for n in range(len(loc), -1, -1):
            if loc[:n] in order:
                first, last = order[loc[:n]]
                return (first, 0) if n == len(loc) else (last, 1)
        return len(order), 1

    return sorted(problems, key=rank)
