"""Scenarios: the TOML input format, its validation and its resolved form.

A scenario is a TOML file (or a plain dict, e.g. from a notebook) describing
images, drives, injected faults, guest workloads, block jobs and timed or
event-triggered management actions.  :func:`load_scenario` validates it and
returns a frozen :class:`Scenario` in which every size is an ``int`` number of
bytes and every duration an ``int`` number of nanoseconds.  Bad input raises
:class:`~blocksim.errors.ScenarioError` listing *every* problem found, each as
``(key_path, message)`` with a dotted TOML key path such as
``jobs.job0.on-target-error`` or ``faults.2.errno``.  The format is documented
in ``docs/scenario-format.md``.

One module per part of the document (read ``document.py`` first):

- ``fields.py``: the vocabulary (policies, errnos, events, ...) and the size
  and duration field types; ``units.py``: ``"64KiB"``, ``"1.5min"`` and back;
- ``images.py`` (images and drives), ``faults.py``, ``workloads.py``,
  ``jobs.py``, ``actions.py``: one pydantic model per table, and per ``type``
  or ``command`` where a table has variants;
- ``document.py``: :class:`Scenario`, the whole document;
- ``references.py``: names that point at other tables, backing chains;
  ``events.py``: the data each event carries, which ``match`` is checked against;
- ``problems.py``: pydantic's errors as key paths and messages a user can act
  on; ``load.py``: :func:`load_scenario`; ``overrides.py``: ``--set``;
  ``schema.py``: the JSON Schema.

Resolved forms (what the run sees):

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

Imports: the model's vocabularies (policies, profiles) and
``blocksim.errors``; nothing that runs.
"""

from .actions import (
    COMMANDS,
    Action,
    BitmapAction,
    TransactionAction,
    BitmapAddAction,
    BlockJobCancelAction,
    BlockJobSetSpeedAction,
    GuestBurstAction,
    JobDeviceAction,
    JobIdAction,
    NoArgumentsAction,
    ThinExtendAction,
    WriteThresholdAction,
    LvExtendAction,
)
from .thin import Latency, Pool, ThinProvisioning, managed_images
from .document import Scenario
from .faults import DelayFault, DustFault, ErrorFault, Fault, FlakeyFault
from .fields import (
    ERRNOS,
    EVENTS,
    FAULT_TYPES,
    IMAGE_FORMATS,
    JOB_POLICIES,
    JOB_TYPES,
    OPERATIONS,
    PROFILES,
    READ_POLICIES,
    RW_MODES,
    SYNC_MODES,
    WRITE_POLICIES,
)
from .images import Drive, Extent, Image, ImageBitmap
from .jobs import BackupJob, CommitJob, Job, MirrorJob, StreamJob
from .load import burst_workload_spec, load_scenario
from .overrides import apply_overrides
from .schema import scenario_json_schema
from .workloads import Workload

__all__ = [
    "Scenario", "Image", "Extent", "Drive", "Workload", "Fault", "ErrorFault", "FlakeyFault",
    "DustFault", "DelayFault", "Job", "MirrorJob", "StreamJob", "CommitJob", "BackupJob", "Action", "NoArgumentsAction",
    "JobDeviceAction", "BlockJobCancelAction", "BlockJobSetSpeedAction", "JobIdAction",
    "ThinExtendAction", "GuestBurstAction", "BitmapAction", "BitmapAddAction", "TransactionAction", "ImageBitmap",
    "load_scenario", "apply_overrides",
    "scenario_json_schema", "burst_workload_spec", "PROFILES", "IMAGE_FORMATS", "READ_POLICIES",
    "WRITE_POLICIES", "JOB_POLICIES", "FAULT_TYPES", "OPERATIONS", "ERRNOS", "RW_MODES",
    "JOB_TYPES", "SYNC_MODES", "EVENTS", "COMMANDS",
    "WriteThresholdAction", "LvExtendAction", "Latency", "Pool", "ThinProvisioning",
    "managed_images",
]
