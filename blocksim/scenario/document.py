"""The scenario as a whole: top-level settings and every table, validated and
resolved (:class:`Scenario`).
"""

from typing import Any, Literal, Optional

from pydantic import Field, PrivateAttr, model_validator

from .actions import AnyAction
from .faults import AnyFault
from .fields import PROFILES, SECOND, PositiveDuration, _duration_default, _Model
from .images import Drive, Image
from .jobs import AnyJob
from .problems import _key_path
from .references import _chain, _cross_check, _resolve
from .thin import Pool, ThinProvisioning
from .thin import check as _check_thin
from .explore import Explore
from .explore import check as _check_explore
from .workloads import Workload


class _Settings(_Model):
    """The scalar top-level keys."""

    name: str = Field("scenario", description="default: the file name without extension")
    description: str = ""
    profile: Literal[PROFILES] = "qemu"
    duration: PositiveDuration = _duration_default(60 * SECOND, "simulated time to run")
    seed: int = Field(0, ge=0)
    sample_interval: PositiveDuration = _duration_default(100_000_000, "metrics sampling period")
    max_events: int = Field(1_000_000, gt=0, description="safety cap on the number of events of a run")
    max_requests: Optional[int] = Field(
        None, gt=0, description="stop the run (truncated) at the first sample with at least this "
                                "many guest requests done; absent = the limit (--max-requests)")


class Scenario(_Settings):
    """A validated, resolved scenario (see the module docstring).

    Build it with :func:`load_scenario`, which reports problems with key
    paths; ``source`` is the file it came from (or ``"<dict>"``) and takes no
    part in equality."""

    images: dict[str, Image] = Field(min_length=1)
    drives: dict[str, Drive] = Field(default_factory=dict)
    faults: list[AnyFault] = Field(default_factory=list)
    workloads: dict[str, Workload] = Field(default_factory=dict)
    jobs: dict[str, AnyJob] = Field(default_factory=dict)
    actions: list[AnyAction] = Field(default_factory=list)
    pools: dict[str, Pool] = Field(default_factory=dict)
    thin_provisioning: ThinProvisioning | None = None
    explore: Explore | None = None

    _source: str = PrivateAttr("<dict>")

    @property
    def source(self) -> str:
        return self._source

    @model_validator(mode="after")
    def _check_and_resolve(self) -> "Scenario":
        problems = _cross_check(self.images, self.drives, self.faults, self.workloads, self.jobs,
                                self.actions)
        problems = problems or _check_thin(self)
        problems = problems or _check_explore(self)
        if problems:
            raise ValueError("; ".join(f"{_key_path(loc)}: {msg}" for loc, msg in problems))
        _resolve(self)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]  # holds dicts and lists

    def backing_chain(self, image: str) -> list[str]:
        """``image`` followed by its backing images, top first."""
        return _chain(self.images, image)

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as JSON-able data in the file's key spelling:
        sizes in bytes, durations in float seconds, absent values omitted.
        ``load_scenario(s.to_dict()) == s``."""
        return _drop_none(self.model_dump(mode="json", by_alias=True))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
