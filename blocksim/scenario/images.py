"""``[images.NAME]`` and ``[drives.NAME]``: block device nodes and what the guest sees.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .fields import (
    _SIZE_JSON,
    IMAGE_FORMATS,
    READ_POLICIES,
    WRITE_POLICIES,
    Duration,
    GiB,
    KiB,
    MiB,
    OptionalSize,
    PositiveRate,
    PositiveSize,
    SectorSize,
    Size,
    _duration_default,
    _Model,
    _size_type,
)
from .units import parse_size


class Extent(_Model):
    """One allocated extent of an image's initial data."""

    offset: Size
    length: PositiveSize


def _data_input(value: Any) -> Any:
    if value == "none":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError("must be 'none', 'full' or an array of {offset, length} tables")


def _extent_pairs(extents: list[Extent]) -> list[tuple[int, int]]:
    return [(e.offset, e.length) for e in extents]


def _extent_tables(pairs: list[tuple[int, int]]) -> list[dict[str, int]]:
    return [{"offset": o, "length": n} for o, n in pairs]


class ImageBitmap(_Model):
    """A named dirty bitmap the image has when the run starts (a persistent
    qcow2 bitmap, as ``qemu-img bitmap --add``)."""

    name: str = Field(min_length=1)
    granularity: Optional[_size_type(pow2=(512, None))] = Field(
        None, description="absent = the cluster size clamped to 4-64 KiB")
    recording: bool = Field(True, description="false = disabled: records no writes")
    dirty: Annotated[list[Extent], AfterValidator(_extent_pairs),
                     PlainSerializer(_extent_tables, return_type=list)] = Field(
        [], description="the ranges dirty at the start")


class Image(_Model):
    """A disk image (a node of the block graph)."""

    size: SectorSize = Field(description="virtual size, a multiple of 512 bytes")
    cluster_size: _size_type(pow2=(512, 2 * MiB)) = Field(64 * KiB, description="qcow2 cluster size")
    format: Literal[IMAGE_FORMATS] = "qcow2"
    backing: Optional[str] = Field(None, description="name of the backing image (qcow2 only)")
    capacity: OptionalSize = Field(None, description="thin-provisioned physical capacity; absent = unlimited")
    latency: Duration = _duration_default(100_000, "per-operation latency")
    bandwidth: PositiveRate = Field(1 * GiB, description="bytes per second")
    queue_depth: int = Field(32, ge=1)
    jitter: float = Field(0.0, ge=0, allow_inf_nan=False, description="relative standard deviation of latency")
    discard: Literal["ignore", "unmap"] = Field(
        "ignore", description="the node's discard option (QEMU's default 'ignore'); a full mirror "
                              "onto an 'unmap' target zeroes it and copies only allocated data")
    data: Annotated[list[Extent], BeforeValidator(_data_input), AfterValidator(_extent_pairs),
                    PlainSerializer(_extent_tables, return_type=list),
                    WithJsonSchema({"anyOf": [
                        {"enum": ["none", "full"]},
                        {"type": "array", "items": {
                            "type": "object", "additionalProperties": False, "required": ["length"],
                            "properties": {"offset": _SIZE_JSON, "length": _SIZE_JSON}}}],
                        "description": "initially allocated data", "default": "none"})] = []
    bitmaps: list[ImageBitmap] = Field([], description="named dirty bitmaps at the start (qcow2)")
    lv_size: OptionalSize = Field(None, description="a thin volume: the size of the block "
                                  "volume (LV) the qcow2 file sits on; absent = not on one")
    pool: Optional[str] = Field(None, description="the pool (volume group) extending the volume")

    @model_validator(mode="before")
    @classmethod
    def _expand_full(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and raw.get("data") == "full":
            try:
                size = parse_size(raw.get("size"))
            except ValueError:
                size = 0
            raw = {**raw, "data": [{"offset": 0, "length": size}] if size > 0 else []}
        return raw

    @field_validator("backing")
    @classmethod
    def _backing_needs_qcow2(cls, backing: Optional[str], info: ValidationInfo) -> Optional[str]:
        if backing is not None and info.data.get("format") == "raw":
            raise ValueError("only qcow2 images can have a backing image (format is 'raw')")
        return backing

    @field_validator("data")
    @classmethod
    def _data_inside(cls, data: list[tuple[int, int]], info: ValidationInfo) -> list[tuple[int, int]]:
        size = info.data.get("size")
        if isinstance(size, int):
            for i, (offset, length) in enumerate(data):
                if offset + length > size:
                    raise ValueError(f"extent {i} (offset {offset}, length {length}) ends beyond "
                                     f"the image size ({size})")
        return data


    @field_validator("bitmaps")
    @classmethod
    def _bitmaps_fit(cls, bitmaps: list[ImageBitmap], info: ValidationInfo) -> list[ImageBitmap]:
        if bitmaps and info.data.get("format") == "raw":
            raise ValueError("only qcow2 images store bitmaps (format is 'raw')")
        names = [b.name for b in bitmaps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"bitmap name(s) used twice: {', '.join(twice)}")
        size = info.data.get("size")
        if isinstance(size, int):
            for b in bitmaps:
                for offset, length in b.dirty:
                    if offset + length > size:
                        raise ValueError(f"bitmap '{b.name}': dirty range (offset {offset}, length "
                                         f"{length}) ends beyond the image size ({size})")
        return bitmaps


class Drive(_Model):
    """A guest drive (a BlockBackend) on top of an image, with its error policies."""

    image: str
    rerror: Literal[READ_POLICIES] = "report"
    werror: Literal[WRITE_POLICIES] = "enospc"
