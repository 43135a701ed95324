"""``[[actions]]``: management commands at a time or in reaction to an event,
one model per ``command`` with QMP's argument names.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional, Union, get_args

from pydantic import (AfterValidator, Discriminator, Field, PlainSerializer, Tag, ValidationInfo,
                      create_model, field_validator)

from ..model.named_bitmap import EMPTY_MERGE
from .fields import (
    EVENTS,
    RW_MODES,
    Duration,
    KiB,
    OptionalDuration,
    OptionalPositiveSize,
    OptionalSize,
    Rate,
    SectorSize,
    Size,
    _duration_default,
    _Model,
    _whole,
)


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
    """Grow the physical capacity of ``image`` to ``capacity`` or ``by`` an
    amount; the new space is usable ``latency`` later (the storage's extend),
    and with ``if-free-below`` only when the free space (capacity, plus
    extends still under way, minus what is allocated) is below that; with
    ``cont``, a VM paused on an I/O error is continued once the space is
    usable."""

    image: str
    capacity: OptionalSize = Field(None, description="the new capacity")
    by: OptionalPositiveSize = Field(None, validate_default=True, description="the increase of capacity")
    # (absent unless given: a plain thin-extend's record stays as it was)
    latency: OptionalDuration = Field(None, description="how long the extend takes before the "
                                                        "space is usable (absent: at once)")
    if_free_below: OptionalSize = Field(None, description="extend only when the free space is below this")
    cont: Optional[bool] = Field(None, description="send cont once the space is usable, if the VM is "
                                                   "paused on an I/O error (a manager's 'extend, then cont')")

    @field_validator("by")
    @classmethod
    def _one_of(cls, by: Optional[int], info: ValidationInfo) -> Optional[int]:
        if "capacity" in info.data and (by is None) == (info.data["capacity"] is None):
            raise _whole("give exactly one of 'capacity' (the new capacity) or 'by' (the increase)")
        return by


class WriteThresholdArguments(_Arguments):
    """block-set-write-threshold: ``node-name`` (an image: its format node,
    or ``IMAGE-file``: its protocol node) and ``write-threshold`` (bytes; 0
    disarms)."""

    node_name: str = Field(description="IMAGE (format node) or IMAGE-file (protocol node)")
    write_threshold: Size = Field(description="bytes; 0 disarms")


class LvExtendArguments(_Arguments):
    """Ask the pool to grow the volume of ``image`` to ``size`` or ``by`` an amount."""

    image: str
    size: OptionalSize = Field(None, description="the new volume size")
    by: OptionalPositiveSize = Field(None, validate_default=True, description="the increase")

    @field_validator("by")
    @classmethod
    def _one_of(cls, by: Optional[int], info: ValidationInfo) -> Optional[int]:
        if "size" in info.data and (by is None) == (info.data["size"] is None):
            raise _whole("give exactly one of 'size' (the new size) or 'by' (the increase)")
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


class BitmapArguments(_Arguments):
    """``node``: an image (or a drive: its top image); ``name``: the bitmap."""

    node: str = Field(description="an image, or a drive (its top image)")
    name: str


class BitmapAddArguments(BitmapArguments):
    """block-dirty-bitmap-add: ``node``, ``name``; ``granularity`` (default:
    the cluster size clamped to 4-64 KiB), ``persistent``, ``disabled``."""

    granularity: OptionalSize = Field(None, description="absent = the node's default")
    persistent: bool = False
    disabled: bool = False


class ExternalBitmap(_Arguments):
    """A bitmap of another node: ``{node, name}`` (QAPI's ``BlockDirtyBitmap``)."""

    node: str = Field(description="an image, or a drive (its top image)")
    name: str


class BitmapMergeArguments(_Arguments):
    """block-dirty-bitmap-merge: ``node``, ``target`` (a bitmap of ``node``)
    and ``bitmaps``, each a name of ``node``'s bitmaps or ``{node, name}``
    (QAPI's ``BlockDirtyBitmapOrStr``)."""

    node: str = Field(description="an image, or a drive (its top image)")
    target: str
    bitmaps: list[Union[str, ExternalBitmap]]

    @field_validator("bitmaps")
    @classmethod
    def _not_empty(cls, bitmaps: list) -> list:
        if not bitmaps:
            raise ValueError(EMPTY_MERGE)
        return bitmaps


def _argument_dict(arguments: _Arguments) -> dict[str, Any]:
    return arguments.model_dump(by_alias=True, exclude_none=True)


def _arguments_type(model: type[_Arguments]) -> Any:
    return Annotated[model, AfterValidator(_argument_dict), PlainSerializer(dict, return_type=dict)]


class Action(_Model):
    """A management command issued ``at`` a time or ``on`` an event (+ ``delay``).

    An ``on`` action reacts to the events of that name whose data match
    ``match``: the first one, or the ``nth`` one; with ``repeat`` every one
    (every ``nth`` one: the count restarts at each reaction).  With ``after``
    it counts and reacts only while *armed*: an ``after`` event matching
    ``after-match`` arms it, each reaction disarms it, and the arming event
    itself never counts (``on = after = X`` reacts to the second X).
    :class:`blocksim.management.actions.Trigger` is this rule at run time.

    ``arguments`` is a plain dict (QMP key spelling, sizes as ints, defaults
    filled in)."""

    at: OptionalDuration = Field(None, description="when to act (exclusive with 'on')")
    on: Optional[Literal[EVENTS]] = Field(None, validate_default=True,
                                          description="the event to react to (exclusive with 'at')")
    match: dict[str, Any] = Field(default_factory=dict, description="event data equality filters (only with 'on')")
    delay: Duration = _duration_default(0, "wait this long after the trigger")
    repeat: bool = Field(False, description="react every time, not once (only with 'on')")
    nth: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="react to the nth matching event only (only with 'on'); "
                          "with 'repeat', to every nth")
    after: Optional[Literal[EVENTS]] = Field(
        None, description="react only once this event has been seen since the action "
                          "last reacted (only with 'on')")
    after_match: dict[str, Any] = Field(
        default_factory=dict, description="event data equality filters for 'after' (only with 'after')")
    every: OptionalDuration = Field(None, description="repeat every this long from 'at' until the "
                                                      "end of the run (only with 'at'): a poll")
    command: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("every")
    @classmethod
    def _every_needs_at(cls, every: Optional[int], info: ValidationInfo) -> Optional[int]:
        if every is not None:
            if every <= 0:
                raise ValueError("must be greater than 0")
            if "at" in info.data and info.data["at"] is None:
                raise ValueError("only allowed with 'at' (a time): the first poll")
        return every

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

    @field_validator("nth")
    @classmethod
    def _nth_needs_on(cls, nth: Optional[int], info: ValidationInfo) -> Optional[int]:
        if nth is not None and "on" in info.data and info.data["on"] is None:
            raise ValueError("only allowed with 'on' (an event trigger)")
        return nth

    @field_validator("after")
    @classmethod
    def _after_needs_on(cls, after: Optional[str], info: ValidationInfo) -> Optional[str]:
        if after is not None and "on" in info.data and info.data["on"] is None:
            raise ValueError("only allowed with 'on' (an event trigger); "
                             "for a time after an event use 'on' with 'delay'")
        return after

    @field_validator("after_match")
    @classmethod
    def _after_match_needs_after(cls, after_match: dict[str, Any],
                                 info: ValidationInfo) -> dict[str, Any]:
        if after_match and "after" in info.data and info.data["after"] is None:
            raise ValueError("only allowed with 'after'")
        return after_match


def _default_arguments(model: type[_Arguments]) -> Any:
    return Field(default_factory=dict, validate_default=True, description=model.__doc__)


class TransactionBackupArguments(_Arguments):
    """A transaction's ``blockdev-backup``: ``job-id``, a backup job the
    scenario declares (``[jobs.ID]``, usually ``start = "manual"``), whose
    table gives the command's other arguments."""

    job_id: str = Field(description="a backup job of [jobs]")


class _TransactionEntry(_Model):
    """One action of a ``transaction`` (QAPI's ``TransactionAction``):
    ``type``, a command, and ``data``, its arguments."""


def _entry(kind: str, arguments: type[_Arguments]) -> type[_TransactionEntry]:
    """The model of a transaction's action ``kind`` with ``arguments``
    (named after its kind: the tag pydantic puts in an error's location)."""
    return create_model(kind, __base__=_TransactionEntry, type=(Literal[kind], ...),
                        data=(_arguments_type(arguments), _default_arguments(arguments)))


#: a transaction's action types blocksim models (blockdev.c's ``actions[]``
#: but the snapshots and drive-backup), each with its ``data``
TRANSACTION_ACTIONS = {kind: _entry(kind, arguments) for kind, arguments in (
    ("abort", NoArguments),
    ("block-dirty-bitmap-add", BitmapAddArguments),
    ("block-dirty-bitmap-clear", BitmapArguments),
    ("block-dirty-bitmap-disable", BitmapArguments),
    ("block-dirty-bitmap-enable", BitmapArguments),
    ("block-dirty-bitmap-merge", BitmapMergeArguments),
    ("block-dirty-bitmap-remove", BitmapArguments),
    ("blockdev-backup", TransactionBackupArguments))}


def _entry_tag(value: Any) -> Optional[str]:
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    return kind if isinstance(kind, str) and kind in TRANSACTION_ACTIONS else None


class TransactionProperties(_Model):
    """``completion-mode``: ``individual`` (each job on its own) or
    ``grouped`` (QEMU refuses it with bitmap actions; with backups, jobs
    that finish or fail together, which blocksim does not model)."""

    completion_mode: Literal["individual", "grouped"] = "individual"


class TransactionArguments(_Arguments):
    """transaction: ``actions``, each ``{type, data}`` (a bitmap command and
    its arguments, a ``blockdev-backup`` of a declared job, or ``abort``),
    all prepared in order after every node is drained, then committed, or
    all rolled back at the first refusal; ``properties``."""

    actions: list[Annotated[Union[tuple(Annotated[cls, Tag(kind)]
                                        for kind, cls in TRANSACTION_ACTIONS.items())],
                            Discriminator(_entry_tag)]]
    properties: TransactionProperties = Field(default_factory=TransactionProperties)

    @field_validator("properties")
    @classmethod
    def _grouped_backups(cls, props: TransactionProperties,
                         info: ValidationInfo) -> TransactionProperties:
        if (props.completion_mode == "grouped"
                and all(entry.type == "blockdev-backup" for entry in info.data.get("actions", ()))
                and info.data.get("actions")):
            raise ValueError("completion-mode 'grouped' of backups (jobs that finish or fail "
                             "together, job_txn) is not modelled; use 'individual'")
        return props


class TransactionAction(Action):
    command: Literal["transaction"]
    arguments: _arguments_type(TransactionArguments) = _default_arguments(TransactionArguments)


class NoArgumentsAction(Action):
    command: Literal["stop", "cont", "query-block-jobs", "query-jobs",
                     "query-named-block-nodes", "query-block"]
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


class WriteThresholdAction(Action):
    command: Literal["block-set-write-threshold"]
    arguments: _arguments_type(WriteThresholdArguments) = _default_arguments(WriteThresholdArguments)


class LvExtendAction(Action):
    command: Literal["lv-extend"]
    arguments: _arguments_type(LvExtendArguments) = _default_arguments(LvExtendArguments)


class GuestBurstAction(Action):
    command: Literal["guest-burst"]
    arguments: _arguments_type(GuestBurstArguments) = _default_arguments(GuestBurstArguments)


class BitmapAction(Action):
    """A ``block-dirty-bitmap-*`` command (see :class:`BitmapAddAction` for add)."""

    command: Literal["block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
                     "block-dirty-bitmap-enable", "block-dirty-bitmap-disable"]
    arguments: _arguments_type(BitmapArguments) = _default_arguments(BitmapArguments)


class BitmapAddAction(BitmapAction):
    command: Literal["block-dirty-bitmap-add"]
    arguments: _arguments_type(BitmapAddArguments) = _default_arguments(BitmapAddArguments)


class BitmapMergeAction(BitmapAction):
    command: Literal["block-dirty-bitmap-merge"]
    arguments: _arguments_type(BitmapMergeArguments) = _default_arguments(BitmapMergeArguments)


_ACTION_CLASSES: dict[str, type[Action]] = {
    cls.__name__: cls for cls in (NoArgumentsAction, JobDeviceAction, BlockJobCancelAction,
                                  BlockJobSetSpeedAction, JobIdAction, ThinExtendAction, GuestBurstAction,
                                  BitmapAction, BitmapAddAction, BitmapMergeAction, TransactionAction,
                                  WriteThresholdAction,
                                  LvExtendAction)}
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
