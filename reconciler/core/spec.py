"""The desired state: what a wave manifest means, independent of YAML.

``reconciler.manifest`` turns files into these objects; the planner (``core/plan``) reads them. Durations are
whole seconds, shares are percentages (0-100], positions are ``Location``s so that the
planner can point back at the manifest line a problem comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from msgspec import Struct, field

from reconciler.core.windows import Schedule


class Location(Struct, frozen=True):
    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class FailureBound(Struct, frozen=True):
    """``require.failed``: the share of the devices the wave reached whose install of it failed must stay
    below ``percent`` (``"<2%"``), or at most ``percent`` with ``inclusive`` (``"<=2%"``).

    Unlike the other conditions of a gate it is not only checked once before its step: from the moment
    its step is the wave's next one it holds for the rest of the wave's life (``core/failures.py``)."""

    percent: float  # 0..100
    inclusive: bool = False
    location: Location = field(default_factory=lambda: Location(""))

    def __str__(self) -> str:
        return f"{'<=' if self.inclusive else '<'}{self.percent:g}%"

    def allows(self, failed: int, reached: int) -> bool:
        """Whether ``failed`` of ``reached`` devices is within the bound (nothing reached: nothing failed)."""
        if reached <= 0:
            return True
        share = 100.0 * failed / reached
        return share <= self.percent if self.inclusive else share < self.percent


class OnFailure(StrEnum):
    """``onFailure``: what the reconciler does when a failure bound of an active wave is exceeded."""

    HALT = "halt"  # hold every further step of the wave with an error
    CANCEL = "cancel"  # cancel the wave


class Gate(Struct, frozen=True):
    """Conditions that must hold before a step runs; an empty gate always passes."""

    wait_seconds: int | None = None  # minimum time since the previous rollout
    updated_percent: float | None = None  # share of devices rolled out so far on the wave version or newer
    online_within_seconds: int | None = None  # require.onlineWithin: count only devices seen this recently
    failed: FailureBound | None = None  # require.failed: a bound on the share of devices reached that failed

    @property
    def empty(self) -> bool:
        return self.wait_seconds is None and self.updated_percent is None and self.failed is None


class Limit(Struct, frozen=True):
    value: int  # 1..10000 devices, or 1..100 percent
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


class PhaseSpec(Struct, frozen=True):
    name: str
    group: str | None = None  # None: factory-wide
    limit: Limit | None = None
    uuids: tuple[str, ...] | None = None  # canonical lower-case UUIDs, in file order
    uuids_file: str | None = None  # the file they came from (as written in the manifest), if any
    gate: Gate = field(default_factory=Gate)
    location: Location = field(default_factory=lambda: Location(""))
    positions: dict[str, Location] = field(default_factory=dict)  # group/limit/uuids -> its value
    uuid_locations: Sequence[Location] | None = field(default=None)  # each UUID's own line

    def at(self, *keys: str) -> Location:
        """Where the first of these keys is written in the phase, else the phase itself."""
        return next((self.positions[k] for k in keys if k in self.positions), self.location)

    def uuid_location(self, index: int) -> Location:
        """Where the phase's ``index``-th UUID is written (its file's line), else the ``uuids:`` key."""
        if self.uuid_locations is not None and index < len(self.uuid_locations):
            return self.uuid_locations[index]
        return self.at("uuids")

    @property
    def full_group(self) -> bool:
        """A group rollout with no limit and no UUIDs: the whole group, including later joiners."""
        return self.group is not None and self.limit is None and self.uuids is None

    @property
    def factory_wide(self) -> bool:
        return self.group is None


class CompleteSpec(Struct, frozen=True):
    """When to complete the wave: after every phase is rolled out and the gate passes."""

    gate: Gate = field(default_factory=Gate)
    location: Location = field(default_factory=lambda: Location(""))


class WaveSpec(Struct, frozen=True):
    name: str
    target: int
    tag: str
    location: Location
    factory: str | None = None
    source_tag: str | None = None
    expires_in_seconds: int | None = 365 * 86400  # relative expiry; ignored when expires_at is set
    expires_at: datetime | None = None  # absolute expiry (UTC)
    prune: tuple[int, ...] = ()
    phases: tuple[PhaseSpec, ...] = ()
    complete: CompleteSpec | None = None  # None: stay active after the phases
    cancel: bool = False
    # A complete block written beside cancel: true, which cancel wins over: the plan warns while the cancel
    # is still to do (not on every run after it, when the block no longer matters).
    ignored_complete: Location | None = None
    on_failure: OnFailure = OnFailure.HALT  # when a failure bound (require.failed) is exceeded
    positions: dict[str, Location] = field(default_factory=dict)  # top-level key -> its value
    schedule: Schedule = field(
        default_factory=Schedule
    )  # windows and freezes in force (the wave's and reconcile.yaml's)

    def at(self, *keys: str) -> Location:
        """Where the first of these keys is written, so a plan error points at the offending value."""
        return next((self.positions[k] for k in keys if k in self.positions), self.location)

    @property
    def manifest(self) -> str:
        return self.location.file

    @property
    def open_ended(self) -> bool:
        """Neither completed nor canceled by its manifest: it wants to stay active."""
        return self.complete is None and not self.cancel


class ManifestChange(StrEnum):
    """How a commit took a wave's manifest away: the file deleted, or its ``name:`` changed (a rename)."""

    DELETED = "deleted"
    RENAMED = "renamed"


class LostManifest(Struct, frozen=True):
    """A wave the release repository once managed: the commit that renamed or deleted its manifest.

    The loader finds it in git for an active wave that no manifest names; the planner makes it an error,
    since a managed wave must not stall silently behind a manifest that is gone."""

    wave: str
    commit: str  # full hex id
    subject: str  # the commit's first line
    path: str  # the manifest, repository-relative, as that commit's parent had it
    change: ManifestChange

    @property
    def short(self) -> str:
        return self.commit[:8]
