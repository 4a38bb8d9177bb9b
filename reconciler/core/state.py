"""The observed state: what the factory says, reduced to what planning needs.

``reconciler.factory.observe`` builds it from API responses; the planner (``core/plan``) reads it. Keeping it separate from
both means the planner can be tested with hand-built states and no network.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from msgspec import Struct, field

JsonObject = dict[str, Any]  # a JSON object as the factory sent it, kept as it is to be signed or sent back


class WaveStatus(StrEnum):
    """A wave's ``status`` in the factory (reference/foundries-api.md §2.3)."""

    ACTIVE = "active"
    COMPLETE = "complete"
    CANCELED = "canceled"


class RolloutRecord(Struct, frozen=True):
    """One entry of a wave's ``rollout-history``: one rollout call (its API field in each comment)."""

    group: str  # ``group-name``: "" for a factory-wide rollout or a deleted group
    at: datetime  # ``rollout-at``
    full_group: bool  # ``is-full-group``
    factory_wide: bool  # ``is-factory-wide``
    devices: int = 0  # ``num-devices``: devices this call reached
    by: str = ""  # ``rollout-by``: who made it (the status report shows it; planning does not read it)


class ObservedWave(Struct, frozen=True):
    """A wave as the factory's wave list gives it (reference §2.3), the one model the planner and
    ``reconcile status`` read; ``reconciler.factory`` parses it once (``factory/wire.py``)."""

    name: str
    version: int
    tag: str
    status: WaveStatus
    created_at: datetime  # ``change-meta.created-at``
    history: tuple[RolloutRecord, ...] = ()  # ``rollout-history``
    created_by: str = ""  # ``change-meta.created-by``
    updated_at: datetime | None = None  # ``change-meta.updated-at``
    updated_by: str = ""  # ``change-meta.updated-by``

    @property
    def finished_at(self) -> datetime | None:
        """When a finished (completed or canceled) wave finished: its last change; None while active."""
        return None if self.status is WaveStatus.ACTIVE else self.updated_at

    @property
    def finished_by(self) -> str:
        """Who finished a finished wave; "" while active."""
        return "" if self.status is WaveStatus.ACTIVE else self.updated_by


class WaveProgress(Struct, frozen=True):
    """The ``require.updated`` gate's numbers (``docs/architecture.md``, "Planning"), from fields whose meaning the reference fixes.

    ``rolled_out``: devices the rollouts reached, the sum of ``num-devices`` over the wave's
    ``rollout-history``. ``updated``: devices on the wave version or newer. Not the status's
    ``scheduled-devices``: that is every device of a rollout group below the wave version, so a
    ``limit: 10`` phase in a 1,000-device group would make the gate wait for the whole group."""

    updated: int
    rolled_out: int
    total: int = 0


class WaveFailures(Struct, frozen=True):
    """``require.failed``'s numbers for one active wave (``core/failures.py``), from the device list and
    the devices' update events (the definition of ``reconcile status --devices WAVE --failed``).

    ``failed``: devices the wave staged that are online, not on its version, and whose newest update,
    to its version, reported a failed event. ``reached``: devices the rollouts reached (the sum of
    ``num-devices``). ``rollouts``: the length of the rollout history they were counted at, so a count
    made before a rollout never passes the gate of the step after it. ``unchecked``: devices that may
    have failed whose events were not read (more than a run reads); ``failed`` is then a lower bound."""

    failed: int
    reached: int
    rollouts: int
    unchecked: int = 0


class ProdTargets(Struct, frozen=True):
    """A tag's production targets: metadata version, expiry and the versions it contains."""

    version: int
    expires: datetime
    versions: frozenset[int] = frozenset()


class TargetsKeys(Struct, frozen=True):
    """The production root's targets role: how many signatures a wave needs before it may roll out or
    complete, and which offline keys may give them (reference §2.3 ``waves sign``, §4.1). The online
    key is one of the threshold's keys; the service signs with it at init."""

    threshold: int
    offline: tuple[str, ...]  # the offline key ids, in root's order


class Device(Struct, frozen=True):
    """A production device on a tag, from the device list: what the UUID checks and offline counts need."""

    uuid: str
    name: str
    group: str  # "" when in no group
    last_seen: datetime | None  # None: never seen
    in_wave: bool  # staged by the tag's active wave (``is-wave``)
    up_to_date: bool  # on the newest version it may run (``up-to-date``)


class SigningInputs(Struct, frozen=True):
    """What an init signs against, as the factory sent it, read with an apply's observation when a wave
    is to be created: the apply's first write then needs no read of its own."""

    root: JsonObject  # the TUF root the offline key must be a targets key of
    online_key: JsonObject  # the factory's online targets key
    prod_envelopes: dict[str, JsonObject]  # tag -> its production targets envelope (absent: the tag has none)
    ci_targets: dict[int, JsonObject]  # version -> its CI targets


class ObservedState(Struct):
    factory: str
    backend: str  # "local:<path>" or the API URL
    now: datetime  # the backend's clock (its Date header)
    waves: dict[str, ObservedWave] = field(default_factory=dict)
    prod_targets: dict[str, ProdTargets | None] = field(default_factory=dict)
    progress: dict[str, WaveProgress] = field(default_factory=dict)
    ci_versions: dict[int, bool] = field(default_factory=dict)  # version -> CI targets exist
    groups: frozenset[str] | None = None  # device groups, read only when a pending phase names one
    ci_tags: dict[int, frozenset[str]] = field(default_factory=dict)  # version -> tags its CI targets carry
    tag_devices: dict[str, int] | None = None  # production tag -> its production devices; None: not observed
    devices: dict[str, dict[str, Device]] = field(default_factory=dict)  # tag -> uuid -> device (when needed)
    # tag -> uuid -> device for the UUIDs pending phases name, when they were looked up one by one instead
    # of listing the tag: a named UUID absent here is not a production device of the tag.
    named_devices: dict[str, dict[str, Device]] = field(default_factory=dict)
    wave_expires: dict[str, datetime] = field(default_factory=dict)  # active wave -> its targets' expiry
    # (wave, phase index) -> devices a dry run of that rollout reaches now, or the factory's refusal
    rollout_counts: dict[tuple[str, int], int | str] = field(default_factory=dict)
    signing: SigningInputs | None = None  # read only for an apply with the key, when a wave is to be created
    # version -> {CI target name -> its custom.tags} for the targets with no custom.delta-stats (versions to init)
    ci_without_deltas: dict[int, dict[str, frozenset[str]]] = field(default_factory=dict)
    failures: dict[str, WaveFailures] = field(default_factory=dict)  # active wave with a failure bound in force
    targets_keys: TargetsKeys | None = None  # the production root's targets role; None: not read
    wave_signers: dict[str, frozenset[str]] = field(default_factory=dict)  # active wave -> key ids that signed it
