"""The plan's model: its typed steps (init, sign, rollout, complete, cancel), the wave summaries and the plan.

What the planner (``plan/planner.py``) builds and the renderers and ``reconciler.apply`` read. A step is
frozen; the shell changes a plan only through ``Plan.with_operation`` (device counts, a refused rollout).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal, Self

from msgspec import Struct
from msgspec.structs import replace

from reconciler.core import ledger
from reconciler.core import signatures as sigs
from reconciler.core.forecast import Forecast
from reconciler.core.ledger import Slot
from reconciler.core.spec import Location, PhaseSpec, WaveSpec
from reconciler.core.state import WaveStatus
from reconciler.core.text import counted, scope_text
from reconciler.core.windows import Hold
from reconciler.errors import Problem


class OpKind(StrEnum):
    """What a step does to a wave; the plan symbol and the JSON ``op`` follow from it."""

    INIT = "init"
    SIGN = "sign"
    ROLLOUT = "rollout"
    COMPLETE = "complete"
    CANCEL = "cancel"


class StepStatus(StrEnum):
    """``ready`` runs in this apply; ``blocked`` waits (a gate, an earlier step) or is refused (an error)."""

    READY = "ready"
    BLOCKED = "blocked"


PhaseState = Literal["done", "ready", "blocked", "pending"]
SummaryStatus = Literal["absent"] | WaveStatus  # absent: the wave does not exist in the factory yet
StepKey = tuple[OpKind, str, int | None]


class _Step(Struct, frozen=True, kw_only=True):
    """What every step has: the wave, its tag, whether it runs now and where in a manifest it comes from."""

    kind: ClassVar[OpKind]
    wave: str
    tag: str
    status: StepStatus
    location: Location
    reason: str | None = None
    opens_at: datetime | None = None  # a rollout window or freeze holds the step until then (core/windows.py)

    @property
    def op(self) -> OpKind:
        return self.kind

    @property
    def ready(self) -> bool:
        return self.status is StepStatus.READY

    @property
    def key(self) -> StepKey:
        """Identifies the step across re-plans, so apply can find it again after re-observing."""
        return (self.kind, self.wave, None)

    def describe(self) -> str:
        """A short human name, e.g. ``complete v46``."""
        return f"{self.kind} {self.wave}"

    def blocked(self, reason: str) -> Self:
        return replace(self, status=StepStatus.BLOCKED, reason=reason)


class InitOp(_Step, frozen=True, kw_only=True):
    """Create the wave: sign its targets (the offline key) and send them."""

    kind: ClassVar[OpKind] = OpKind.INIT
    target: int
    expires: datetime
    prune: tuple[int, ...] = ()
    source_tag: str | None = None

    def describe(self) -> str:
        extra = f", prune {', '.join(map(str, self.prune))}" if self.prune else ""
        return f"init {self.wave} (target {self.target}, tag {self.tag}{extra})"


class RolloutOp(_Step, frozen=True, kw_only=True):
    """Roll the wave out to one phase's devices, or to one part of a phase of more than 10,000 UUIDs:
    one entry of the wave's rollout history (core/ledger.py maps entries to phases and parts)."""

    kind: ClassVar[OpKind] = OpKind.ROLLOUT
    phase: str
    phase_index: int  # 0-based position of the phase in the manifest
    history_index: int  # 0-based entry of the wave's rollout history this rollout makes
    part: int = 1  # 1-based part of the phase; a phase of at most 10,000 UUIDs is one part
    parts: int = 1
    group: str | None = None  # None: factory-wide
    limit: int | None = None
    percentage: int | None = None
    uuids: tuple[str, ...] | None = None  # the UUIDs this rollout sends (its part's share of the phase's)
    devices: int | None = None  # from a dry-run rollout, filled in by the shell

    @property
    def key(self) -> StepKey:
        return (self.kind, self.wave, self.history_index)

    @property
    def part_label(self) -> str:
        """`` part 2 of 3`` for a part of a phase of more than 10,000 UUIDs, else nothing."""
        return ledger.part_label(self.part, self.parts)

    def describe(self) -> str:
        """``rollout v46 phase 'beta' (group beta, limit 10)``; ``phase 'big' part 2 of 3 (factory-wide, 10000 uuids)``."""
        return f"rollout {self.wave} phase '{self.phase}'{self.part_label} ({rollout_scope(self)})"


class SignOp(_Step, frozen=True, kw_only=True):
    """Add this run's offline signature to the wave's targets through the wave sign API (``fioctl
    waves sign``): the production root needs more signatures than init gave before anything rolls out."""

    kind: ClassVar[OpKind] = OpKind.SIGN
    signatures: int  # valid signatures the wave has (for a wave still to be created: once init made it)
    threshold: int  # what the production root's targets role needs
    keyids: tuple[str, ...]  # offline keys that have not signed it: the run's key must be one of them

    @property
    def shortfall(self) -> sigs.Shortfall:
        return sigs.Shortfall(self.signatures, self.threshold, self.keyids)

    def describe(self) -> str:
        """``sign v46 (2 of 3 signatures)``."""
        return f"sign {self.wave} ({self.signatures} of {self.threshold} signatures)"


class CompleteOp(_Step, frozen=True, kw_only=True):
    """Make the wave's targets the tag's production targets."""

    kind: ClassVar[OpKind] = OpKind.COMPLETE


class CancelOp(_Step, frozen=True, kw_only=True):
    """Stop the wave; devices already updated stay where they are (orphans), the others keep production."""

    kind: ClassVar[OpKind] = OpKind.CANCEL
    version: int | None = None  # the canceled wave's version
    orphans: int | None = None  # devices already on it: they stay there, on a version no longer offered
    keep_previous: int | None = None  # devices of the tag not on it: they keep the production version
    previous_version: int | None = None  # the tag's production version (None: the tag has none)

    def leaves_behind(self) -> str:
        """What a cancel leaves: ``12 devices stay on 46 (orphans), 388 keep production version 45``."""
        previous = (
            f"production version {self.previous_version}"
            if self.previous_version is not None
            else "no production version (the tag has none)"
        )
        stay = "stays" if self.orphans == 1 else "stay"
        keep = "keeps" if self.keep_previous == 1 else "keep"
        return (
            f"{counted(self.orphans or 0, 'device')} {stay} on {self.version} (orphans: a version no longer "
            f"offered), {self.keep_previous} {keep} {previous}"
        )


Operation = InitOp | SignOp | RolloutOp | CompleteOp | CancelOp


def rollout_scope(op: RolloutOp) -> str:
    limit = f"{op.percentage}%" if op.percentage is not None else None if op.limit is None else str(op.limit)
    return scope_text(op.group, limit, None if op.uuids is None else len(op.uuids))


class WaveSummary(Struct, frozen=True):
    name: str
    manifest: str
    tag: str
    target: int
    status: SummaryStatus  # as observed
    phases: tuple[tuple[str, PhaseState], ...]
    phases_done: int
    drift: tuple[str, ...] = ()
    updated: int | None = None
    rolled_out: int | None = None
    total: int | None = None
    forecast: Forecast | None = None  # an active wave's or a wave created in this plan's (core/forecast.py)

    def with_phase(self, index: int, state: PhaseState) -> WaveSummary:
        phases = list(self.phases)
        phases[index] = (phases[index][0], state)
        return replace(self, phases=tuple(phases))


class Held(Struct, frozen=True):
    """A wave held by an error in its manifest: its steps and the later steps of its tag wait."""

    wave: str
    tag: str
    reason: str


class Plan(Struct, frozen=True):
    factory: str
    backend: str
    now: datetime
    operations: tuple[Operation, ...]
    waves: tuple[WaveSummary, ...]
    warnings: tuple[Problem, ...]
    errors: tuple[Problem, ...]
    skipped_manifests: int = 0  # waves for another factory
    held: tuple[Held, ...] = ()  # waves whose errors hold them (and the later steps of their tag)

    @property
    def changes(self) -> bool:
        return any(op.ready for op in self.operations)

    @property
    def ready(self) -> list[Operation]:
        return [op for op in self.operations if op.ready]

    def find(self, key: StepKey) -> Operation | None:
        return next((op for op in self.operations if op.key == key), None)

    def restricted_to(self, names: set[str]) -> Plan:
        """The same plan showing only these waves' steps (``--base``); problems are kept, they block apply."""
        return replace(
            self,
            operations=tuple(op for op in self.operations if op.wave in names),
            waves=tuple(w for w in self.waves if w.name in names),
        )

    def with_operation(self, old: Operation, new: Operation) -> Plan:
        """This plan with one step replaced (the shell adds device counts or blocks a refused rollout)."""
        operations = tuple(new if op is old else op for op in self.operations)
        waves = self.waves
        if isinstance(new, RolloutOp) and new.status != old.status:
            state: PhaseState = "ready" if new.ready else "blocked"
            waves = tuple(w.with_phase(new.phase_index, state) if w.name == new.wave else w for w in waves)
        return replace(self, operations=operations, waves=waves)


def step_status(reason: str | None) -> StepStatus:
    """A step with a reason waits; one without runs."""
    return StepStatus.BLOCKED if reason else StepStatus.READY


def rollout_op(
    spec: WaveSpec, phase: PhaseSpec, slot: Slot, reason: str | None, window: Hold | None = None
) -> RolloutOp:
    """The rollout of one slot of a phase (a phase, or one part of a phase of more than 10,000 UUIDs);
    ``window`` is the schedule's hold when a window or freeze is what holds it."""
    limit = phase.limit
    return RolloutOp(
        wave=spec.name,
        tag=spec.tag,
        status=step_status(reason),
        location=phase.location,
        reason=reason,
        opens_at=None if window is None else window.opens_at,
        phase=phase.name,
        phase_index=slot.phase_index,
        history_index=slot.entry,
        part=slot.part,
        parts=slot.parts,
        group=phase.group,
        limit=limit.value if limit and not limit.percent else None,
        percentage=limit.value if limit and limit.percent else None,
        uuids=ledger.part_uuids(phase, slot.part),
    )
