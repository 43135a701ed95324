"""``[workloads.NAME]``: fio-like guest request streams.
"""

from typing import Literal, Optional

from pydantic import Field, field_validator

from .fields import (
    RW_MODES,
    Duration,
    KiB,
    OptionalDuration,
    OptionalPositiveSize,
    SectorSize,
    Size,
    _check_end,
    _duration_default,
    _Model,
)


class Workload(_Model):
    """An fio-like guest workload on a drive."""

    drive: str
    rw: Literal[RW_MODES] = "randwrite"
    rwmixread: int = Field(50, ge=0, le=100, description="percentage of reads for rw/randrw")
    bs: SectorSize = 4 * KiB
    iodepth: int = Field(1, ge=1)
    rate_iops: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description="absent = closed loop")
    think_time: Duration = _duration_default(0, "pause between a completion and the next request")
    offset: Size = 0
    size: OptionalPositiveSize = Field(None, description="absent = to the end of the drive's image")
    start: Duration = _duration_default(0, "when the workload starts")
    end: OptionalDuration = None
    number_ios: Optional[int] = Field(None, ge=1, description="stop after N requests")
    fsync: Optional[int] = Field(None, ge=1, description="flush after every N writes (as fio's fsync)")

    _check_end = field_validator("end")(_check_end)
