"""The data of each event an action can react to, and the check of an
action's ``match`` (and ``after-match``) against it.

QEMU's events carry the fields its QAPI schema declares (QEMU 7.2,
``qapi/block-core.json``, ``qapi/job.json``, ``qapi/run-state.json``);
blocksim's own events (a thin volume's extends, blocksim.model.thin) those
blocksim emits.  A ``match`` is an equality filter on the event's data
(blocksim.management.actions.Trigger): a key the event does not carry, or a
value that field never takes, can never match, so the action would never
fire.  That is an error naming what the event carries.

Each field maps to what it takes: a tuple of the values (an enum), or a
Python type (``str``, ``int``, ``bool``).
"""

from collections.abc import Mapping
from typing import Any

from .fields import EVENTS, JOB_TYPES, OPERATIONS, Loc
from .problems import _did_you_mean

#: qapi/block-core.json IoOperationType (a flush is reported as a write)
_IO_OPERATIONS = ("read", "write")
#: qapi/block-core.json BlockErrorAction
_ERROR_ACTIONS = ("ignore", "report", "stop")
#: qapi/job.json JobStatus
_JOB_STATUSES = ("undefined", "created", "running", "paused", "ready", "standby", "waiting",
                 "pending", "aborting", "concluded", "null")

_JOB_PROGRESS = {"type": JOB_TYPES, "device": str, "len": int, "offset": int, "speed": int}

#: event name -> {data field -> the values it takes (a tuple) or its type}
EVENT_FIELDS: dict[str, dict[str, Any]] = {
    # qapi/block-core.json
    "BLOCK_JOB_ERROR": {"device": str, "operation": _IO_OPERATIONS, "action": _ERROR_ACTIONS},
    "BLOCK_IO_ERROR": {"device": str, "node-name": str, "operation": _IO_OPERATIONS,
                       "action": _ERROR_ACTIONS, "nospace": bool, "reason": str},
    "BLOCK_JOB_READY": dict(_JOB_PROGRESS),
    "BLOCK_JOB_PENDING": {"type": JOB_TYPES, "id": str},
    "BLOCK_JOB_COMPLETED": {**_JOB_PROGRESS, "error": str},
    "BLOCK_JOB_CANCELLED": dict(_JOB_PROGRESS),
    "BLOCK_WRITE_THRESHOLD": {"node-name": str, "amount-exceeded": int, "write-threshold": int},
    # qapi/job.json
    "JOB_STATUS_CHANGE": {"id": str, "status": _JOB_STATUSES},
    # qapi/run-state.json: no data
    "STOP": {},
    "RESUME": {},
    # blocksim's own (blocksim.model.thin.VolumeGroup._extend)
    "VOLUME_EXTENDED": {"image": str, "size": int},
    "VOLUME_EXTEND_FAILED": {"image": str, "size": int, "reason": str},
}
assert set(EVENT_FIELDS) == set(EVENTS), "every event of fields.EVENTS has its data here"
assert set(_IO_OPERATIONS) <= set(OPERATIONS)

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _takes(kind: Any, value: Any) -> bool:
    if isinstance(kind, tuple):
        return isinstance(value, str) and value in kind
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def match_problems(loc: Loc, event: str, match: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Problems of a ``match`` table at ``loc`` for events named ``event``:
    a key the event does not carry, or a value its field never takes."""
    fields = EVENT_FIELDS.get(event)
    if fields is None:
        return []
    problems: list[tuple[Loc, str]] = []
    for key, value in match.items():
        kind = fields.get(key)
        if kind is None:
            carries = (f"{event} carries no data" if not fields else
                       f"{event} carries: {', '.join(fields)}")
            problems.append((loc + (key,), f"{event} has no field '{key}'"
                                           f"{_did_you_mean(key, list(fields))}, so this action can "
                                           f"never fire; {carries}"))
        elif not _takes(kind, value):
            allowed = (", ".join(f"'{v}'" for v in kind) if isinstance(kind, tuple)
                       else _TYPE_NAMES.get(kind, kind.__name__))
            problems.append((loc + (key,), f"{event}'s '{key}' is never {_show(value)}, so this action "
                                           f"can never fire; it is {allowed}"))
    return problems
