"""``[pools.NAME]`` and ``[thin-provisioning]``: thin volumes and their controller.

A pool is a volume group (:mod:`blocksim.model.thin`): its size, how long an
extend takes (``extend-latency``: a duration, or a table with
``distribution`` = ``fixed`` / ``uniform`` / ``lognormal`` / ``samples``),
how many extends it carries out at once and the refresh after each.  An
image on it has ``lv-size`` (the volume) and ``pool``.

``[thin-provisioning]`` configures the management layer's controller
(:mod:`blocksim.management.thin_provisioning`), after vdsm's settings
``volume_utilization_percent`` / ``volume_utilization_chunk_mb`` /
``vm_watermark_interval`` / ``enable_block_threshold_event``.
"""

from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from .fields import (
    Duration,
    GiB,
    MiB,
    OptionalSize,
    PositiveDuration,
    _duration_default,
    _duration_type,
    _Model,
)
from .units import format_duration, ns_to_seconds, parse_duration

LATENCY_DISTRIBUTIONS = ("fixed", "uniform", "lognormal", "samples")


def _latency_input(value: Any) -> Any:
    """A bare duration is a fixed latency (a bad one is reported at the key
    the file has, not at the table's ``value``)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        parse_duration(value)
        return {"distribution": "fixed", "value": value}
    return value


def _samples(value: Any) -> Any:
    if not isinstance(value, list):
        raise ValueError("must be an array of durations")
    return [parse_duration(v) for v in value]


class Latency(_Model):
    """How long an extend takes: ``fixed`` (``value``), ``uniform`` (``low``,
    ``high``), ``lognormal`` (``median``, ``sigma``), ``samples`` (a table)."""

    distribution: Literal[LATENCY_DISTRIBUTIONS] = "fixed"
    value: Optional[_duration_type(optional=True)] = None
    low: Optional[_duration_type(optional=True)] = None
    high: Optional[_duration_type(optional=True)] = None
    median: Optional[_duration_type(optional=True)] = None
    sigma: Optional[float] = Field(None, allow_inf_nan=False)
    samples: Optional[Annotated[list[int], BeforeValidator(_samples),
                                PlainSerializer(lambda v: [ns_to_seconds(x) for x in v],
                                                return_type=list)]] = None

    @model_validator(mode="after")
    def _parameters(self) -> "Latency":
        need = {"fixed": ("value",), "uniform": ("low", "high"), "lognormal": ("median", "sigma"),
                "samples": ("samples",)}[self.distribution]
        missing = [k for k in need if getattr(self, k) is None]
        extra = [k for k in ("value", "low", "high", "median", "sigma", "samples")
                 if k not in need and getattr(self, k) is not None]
        if missing or extra:
            raise ValueError(f"distribution '{self.distribution}' takes {', '.join(need)}"
                         + (f" (missing {', '.join(missing)})" if missing else "")
                         + (f" (not {', '.join(extra)})" if extra else ""))
        if self.distribution == "uniform" and self.low > self.high:
            raise ValueError(f"uniform: low ({format_duration(self.low)}) must not exceed high ({format_duration(self.high)})")
        if self.distribution == "lognormal" and (self.sigma < 0 or self.median <= 0):
            raise ValueError("lognormal: median must be > 0 and sigma >= 0")
        if self.distribution == "samples" and not self.samples:
            raise ValueError("samples: give at least one duration")
        return self


class Pool(_Model):
    """A volume group shared by thin volumes."""

    size: OptionalSize = Field(None, description="the group's size; absent = unlimited")
    extend_latency: Annotated[Latency, BeforeValidator(_latency_input)] = Field(
        default_factory=lambda: Latency(distribution="fixed", value="2s"),
        description="how long an extend takes (a duration, or a distribution table)")
    refresh: Duration = _duration_default(100_000_000, "the refresh on the host after an extend")
    concurrency: int = Field(1, ge=1, description="extends carried out at once")


class ThinProvisioning(_Model):
    """The thin-provisioning controller, after vdsm."""

    images: Optional[list[str]] = Field(None, description="absent = every image with lv-size")
    utilization_percent: int = Field(50, gt=0, le=100, description="vdsm volume_utilization_percent")
    chunk: OptionalSize = Field(1 * GiB, description="vdsm volume_utilization_chunk_mb")
    mode: Literal["event", "poll"] = Field("event", description="BLOCK_WRITE_THRESHOLD events, "
                                                                "or polling the allocation")
    interval: PositiveDuration = _duration_default(2_000_000_000, "the monitor cycle "
                                                   "(vdsm vm_watermark_interval)")
    max_extends: int = Field(1, ge=1, description="extends in flight at once")
    resume: bool = Field(True, description="cont after an extend when the VM paused with ENOSPC")
    replica_mult: int = Field(2, ge=1, description="chunk multiplier for the volumes of a mirror "
                                                   "in progress (vdsm VOLWM_CHUNK_REPLICATE_MULT)")

    @field_validator("chunk")
    @classmethod
    def _chunk(cls, chunk: Optional[int]) -> Optional[int]:
        if not chunk:
            raise ValueError("must be greater than 0 (vdsm volume_utilization_chunk_mb)")
        return chunk

    @property
    def free_limit(self) -> int:
        """The free space below which a volume is extended: vdsm's
        ``chunk * (100 - volume_utilization_percent) / 100``."""
        return self.chunk * (100 - self.utilization_percent) // 100


def managed_images(scenario) -> list[str]:
    tp = scenario.thin_provisioning
    if tp is None:
        return []
    if tp.images is not None:
        return list(tp.images)
    return [n for n, img in scenario.images.items() if img is not None and img.lv_size is not None]


def check_parts(images, actions, raw) -> list[tuple[tuple, str]]:
    """:func:`check` while loading (blocksim.scenario.load), on the tables
    validated one by one; nothing when ``pools`` or ``thin-provisioning``
    themselves are invalid (their own errors are reported then)."""
    from types import SimpleNamespace
    try:
        pools = {name: Pool.model_validate(p) for name, p in (raw.get("pools") or {}).items()}
        tp = raw.get("thin-provisioning", raw.get("thin_provisioning"))
        tp = None if tp is None else ThinProvisioning.model_validate(tp)
    except Exception:
        return []
    if any(img is None for img in images.values()) or any(a is None for a in actions):
        return []
    return check(SimpleNamespace(images=images, actions=actions, pools=pools,
                                 thin_provisioning=tp))


def check(scenario) -> list[tuple[tuple, str]]:
    """Cross-table problems of pools, lv-size and the controller."""
    out: list[tuple[tuple, str]] = []
    pools = scenario.pools
    for name, img in scenario.images.items():
        if img.pool is not None and img.pool not in pools:
            out.append((("images", name, "pool"), f"no pool named '{img.pool}' "
                        f"(pools: {', '.join(pools) or 'none'})"))
        if img.pool is not None and img.lv_size is None:
            out.append((("images", name, "pool"), "an image on a pool needs lv-size"))
        if img.lv_size is not None:
            if img.format != "qcow2":
                out.append((("images", name, "lv-size"), "only a qcow2 image sits on a thin "
                            "volume (a raw image on a block volume is preallocated)"))
            if img.capacity is not None:
                out.append((("images", name, "lv-size"), "give lv-size (the volume) or "
                            "capacity (data clusters), not both"))
    for pname, pool in pools.items():
        members = [n for n, i in scenario.images.items() if i.pool == pname]
        used = sum(scenario.images[n].lv_size or 0 for n in members)
        if pool.size is not None and used > pool.size:
            out.append((("pools", pname, "size"), f"{pool.size} bytes cannot hold its volumes' "
                        f"lv-size ({used} bytes: {', '.join(members)})"))
    for i, action in enumerate(scenario.actions):
        loc = ("actions", i, "arguments")
        # (block-set-write-threshold on an unknown node is QEMU's refusal
        # to model, "Device '%s' not found", not a bad scenario)
        if action.command == "lv-extend":
            image = action.arguments["image"]
            if scenario.images.get(image) is None or scenario.images[image].lv_size is None:
                out.append((loc + ("image",), f"'{image}' is not an image with lv-size"))
    tp = scenario.thin_provisioning
    if tp is not None:
        names = managed_images(scenario)
        for i, name in enumerate(names):
            img = scenario.images.get(name)
            where = ("thin-provisioning", "images", i)
            if img is None:
                out.append((where, f"no image named '{name}'"))
            elif img.lv_size is None:
                out.append((where, f"image '{name}' has no lv-size (not a thin volume)"))
            elif tp.free_limit >= img.lv_size:
                out.append((("thin-provisioning", "chunk"),
                            f"the threshold would be beyond the volume of '{name}': "
                            f"lv-size {img.lv_size} minus chunk x (100 - utilization-percent)% "
                            f"({tp.free_limit}) is not above 0"))
        if not names:
            out.append((("thin-provisioning",), "no image to manage: give an image lv-size"))
    return out


__all__ = ["Latency", "Pool", "ThinProvisioning", "check", "managed_images", "MiB",
           "LATENCY_DISTRIBUTIONS"]
