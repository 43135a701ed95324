""":func:`load_scenario`: a TOML file or a dict to a :class:`Scenario`, every
problem reported at once; and a ``guest-burst`` command's arguments at run time.
"""

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ValidationError

from ..errors import CommandError, ScenarioError
from .actions import GuestBurstArguments
from .document import Scenario, _Settings
from .fields import Loc
from . import limits as limits_mod
from .images import Drive, Image
from .limits import Limits
from .overrides import apply_overrides
from .problems import in_file_order, _ACTIONS, _FAULTS, _JOBS, _did_you_mean, _got, _key_path, _keys, _problems, _Variants
from .references import _cross_check, check_invalid_entries
from .thin import check_parts as _thin_check_parts
from .workloads import Workload, resolve_trace_paths

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
    problems += _thin_check_parts(parts["images"], parts["actions"], raw)
    problems += check_invalid_entries(raw, parts, problems)
    return in_file_order(problems, raw)


def read_scenario_file(path: Union[str, os.PathLike]) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a scenario file and its raw (unvalidated) TOML data.

    Errors name the file: missing, a directory, unreadable, too large
    (:data:`~blocksim.scenario.limits_mod.MAX_FILE_BYTES`, refused before it is
    read), a byte order mark, not UTF-8, or not TOML (with tomllib's line
    and column)."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            too_large = limits_mod.file_problems(size)
            if too_large:
                raise ScenarioError(source, [("", too_large[0])])
            # (read at most one byte past the limit: a file that grows meanwhile)
            data = f.read(limits_mod.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(source, [("", "no such file")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [("", "is a directory, not a scenario file")]) from None
    except OSError as exc:
        raise ScenarioError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(data) > limits_mod.MAX_FILE_BYTES:
        raise ScenarioError(source, [("", limits_mod.file_problems(len(data))[0])])
    for bom, what in _BOMS:
        if data.startswith(bom):
            raise ScenarioError(source, [("", f"starts with a {what} byte order mark (BOM), which "
                                              "TOML does not allow: save it as UTF-8 without BOM")])
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [("", f"invalid TOML: {exc}")]) from None
    except RecursionError:
        raise ScenarioError(source, [("", f"invalid TOML: arrays or tables nested too deeply "
                                          f"(a scenario nests at most {limits_mod.MAX_DEPTH})")]) from None
    except ValueError as exc:       # e.g. an integer of more than 4300 digits
        raise ScenarioError(source, [("", f"invalid TOML: {exc}")]) from None
    # a workload's trace file is relative to the scenario file
    resolve_trace_paths(raw, Path(path).parent)
    return data, raw


_BOMS = ((b"\xef\xbb\xbf", "UTF-8"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def load_scenario(source: Union[str, os.PathLike, Mapping[str, Any]],
                  overrides: Optional[Mapping[str, Any]] = None,
                  limits: Optional[Limits] = None) -> Scenario:
    """Load and validate a scenario from a TOML file path or a dict.

    ``overrides`` (dotted key path -> value) are applied to the raw data
    first, see :func:`apply_overrides`.  The scenario must keep within
    ``limits`` (:mod:`blocksim.scenario.limits`; default
    :data:`~blocksim.scenario.limits.DEFAULT`): the file's size and
    nesting, what QEMU accepts, and what the run would cost.  Raises
    :class:`ScenarioError` with every problem found."""
    if isinstance(source, Mapping):
        name, default_name = "<dict>", "scenario"
        try:
            raw: Any = copy.deepcopy(dict(source))
        except RecursionError:
            raise ScenarioError(name, [("", f"nested too deeply (a scenario nests at most "
                                            f"{limits_mod.MAX_DEPTH})")]) from None
    elif isinstance(source, (str, os.PathLike)):
        name, default_name = os.fspath(source), Path(source).stem
        raw = read_scenario_file(source)[1]
    else:
        raise ScenarioError(repr(source)[:60], [("", "a scenario is a path to a TOML file or a dict, "
                                                     f"not {type(source).__name__}")])
    if overrides:
        raw = apply_overrides(raw, overrides, source=name)
    if not isinstance(raw, Mapping):
        raise ScenarioError(name, [("", f"a scenario is a table{_got(raw)}")])
    if "name" not in raw:
        raw = {"name": default_name, **raw}
    problems = limits_mod.raw_problems(raw)     # first: the rest may recurse, or take long
    if not problems:
        problems = _validate_parts(raw)
    if not problems:
        try:
            scenario = Scenario.model_validate(raw)
        except ValidationError as error:  # pragma: no cover - _validate_parts checks the same
            problems = _problems(error, (), Scenario, raw)
        else:
            problems = (limits_mod.qemu_problems(scenario)
                        or limits_mod.cost_problems(scenario, limits))
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
