"""``[jobs.NAME]``: block jobs, one model per ``type``.
"""

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from .faults import _tag_of
from .fields import (
    _DURATION_JSON,
    BACKUP_SYNC_MODES,
    BITMAP_MODES,
    COPY_MODES,
    JOB_POLICIES,
    JOB_TYPES,
    SYNC_MODES,
    KiB,
    MiB,
    Rate,
    _Model,
    _size_type,
    _whole,
)
from .units import format_size, ns_to_seconds, parse_duration


def _job_start(value: Any) -> Any:
    if value is None or value == "manual":
        return None
    return parse_duration(value)


class Job(_Model):
    """Common part of a block job (see :class:`MirrorJob`, :class:`StreamJob`,
    :class:`CommitJob`)."""

    type: Literal[JOB_TYPES]
    device: str = Field(description="the drive the job runs on")
    speed: Rate = Field(0, description="bytes per second; 0 = unlimited")
    start: Annotated[Optional[int], BeforeValidator(_job_start),
                     PlainSerializer(lambda ns: "manual" if ns is None else ns_to_seconds(ns)),
                     WithJsonSchema({"anyOf": [_DURATION_JSON, {"const": "manual"}]})] = \
        Field(0, description="when the job is created; 'manual' = by a job-start action",
              json_schema_extra={"default": "0s"})
    auto_finalize: bool = True
    auto_dismiss: bool = True


class MirrorJob(Job):
    """blockdev-mirror / drive-mirror from the device's image to ``target``."""

    type: Literal["mirror"] = "mirror"
    target: str
    sync: Literal[SYNC_MODES] = "full"
    granularity: Optional[_size_type(pow2=(512, 64 * MiB))] = Field(
        None, description="absent = the target's default: its cluster size within "
                          "[4 KiB, 64 KiB], 64 KiB for raw (bdrv_get_default_bitmap_granularity)")
    buf_size: _size_type(positive=True) = 16 * MiB
    on_source_error: Literal[JOB_POLICIES] = "report"
    on_target_error: Literal[JOB_POLICIES] = "report"
    copy_mode: Literal[COPY_MODES] = Field(
        "background", description="write-blocking: guest writes reach the target before they "
                                  "complete (an active mirror)")

    # (a buf-size below the granularity is no error: mirror_start_job rounds
    # it up to a granule, ROUND_UP(buf_size, granularity); MirrorJob does too)


class StreamJob(Job):
    """block-stream: copy the backing chain (down to ``base``) into the top image."""

    type: Literal["stream"] = "stream"
    on_error: Literal[JOB_POLICIES] = "report"
    base: Optional[str] = None


class CommitJob(Job):
    """block-commit: merge ``top`` (and every layer between it and ``base``)
    into ``base``.  ``top`` defaults to the drive's active layer (an *active
    commit*, which runs as a mirror and needs ``block-job-complete``), ``base``
    to the bottom of ``top``'s backing chain, as QEMU's defaults."""

    type: Literal["commit"] = "commit"
    top: Optional[str] = None
    base: Optional[str] = None
    on_error: Literal[JOB_POLICIES] = "report"
    backing_file: Optional[str] = Field(
        None, description="intermediate commit: the backing file name written into the "
                          "overlay of 'top' (default: the base's filename)")


class BackupJob(Job):
    """blockdev-backup: a point-in-time copy of the device's image to ``target``.

    The bitmap rules QMP checks before it looks at any node are checked here,
    with QEMU's wording (``blockdev.c:do_backup_common``)."""

    type: Literal["backup"] = "backup"
    target: str
    sync: Literal[BACKUP_SYNC_MODES] = Field(description="required, as in QMP")
    bitmap: Optional[str] = Field(None, description="a named dirty bitmap of the device's image")
    bitmap_mode: Optional[Literal[BITMAP_MODES]] = Field(
        None, validate_default=True, description="what the job does to the bitmap; required with 'bitmap'")
    compress: bool = Field(False, description="accepted; only makes every copy task one cluster")
    on_source_error: Literal[JOB_POLICIES] = "report"
    on_target_error: Literal[JOB_POLICIES] = "report"

    #: keys users bring from QEMU's copy-before-write filter, which 7.2's
    #: blockdev-backup does not take (``bdrv_cbw_append`` passes neither)
    not_options: ClassVar[dict[str, str]] = dict.fromkeys(
        ("on-cbw-error", "cbw-timeout"),
        "not an option of QEMU 7.2's blockdev-backup (only of a copy-before-write node made "
        "with blockdev-add): a backup's copy-before-write always fails the guest's write when "
        "its copy fails (break-guest-write) and never times out")

    @field_validator("bitmap_mode")
    @classmethod
    def _bitmap_rules(cls, mode: Optional[str], info: ValidationInfo) -> Optional[str]:
        if "sync" not in info.data or "bitmap" not in info.data:
            return mode
        sync, bitmap = info.data["sync"], info.data["bitmap"]
        if sync in ("bitmap", "incremental"):
            if bitmap is None:
                raise _whole(f"must provide a valid bitmap name for '{sync}' sync mode "
                             "(give 'bitmap')")
            if sync == "incremental" and mode not in (None, "on-success"):
                raise ValueError("Bitmap sync mode must be 'on-success' when using sync mode "
                                 "'incremental'")
            if sync == "incremental":
                return mode
        if bitmap is not None:
            if mode is None:
                raise ValueError("Bitmap sync mode must be given when providing a bitmap "
                                 f"(allowed: {', '.join(BITMAP_MODES)})")
            if sync == "none":
                raise _whole("sync mode 'none' does not produce meaningful bitmap outputs "
                             "(drop 'bitmap')")
            if mode == "never" and sync != "bitmap":
                raise ValueError(f"Bitmap sync mode 'never' has no meaningful effect when "
                                 f"combined with sync mode '{sync}'")
        elif mode is not None:
            raise ValueError("Cannot specify bitmap sync mode without a bitmap")
        return mode


AnyJob = Annotated[Union[Annotated[MirrorJob, Tag("mirror")], Annotated[StreamJob, Tag("stream")],
                         Annotated[CommitJob, Tag("commit")], Annotated[BackupJob, Tag("backup")]],
                   Discriminator(_tag_of("type"))]
