"""The planner: (desired waves, observed factory, its clock) -> an ordered plan.

Pure: no I/O, no clock, no network. Every rule of DESIGN.md §5 lives here so it can be
tested with hand-built states:

- the factory's rollout history is the ledger: phase *i* is done when history entry *i*
  exists and matches it; a history that does not match is drift and blocks that wave;
- waves are immutable once created (target and tag);
- per tag: cancel or complete of the older wave, then init of the newer one, then its
  rollouts in phase order, then its complete; one active wave per tag and the version rule
  are simulated across the whole plan;
- gates (``wait``, ``require.updated``) block a step with a human reason, and every later
  step of that wave is blocked behind it.
- a failure bound in force (``require.failed``, ``core/failures.py``) that the wave's failed
  devices exceed halts the wave with an error or, with ``onFailure: cancel``, plans its cancel.

Errors (user mistakes such as a changed target or a version below production) make the plan
refuse to apply; blocked steps are normal and wait for a later run.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal, Self

from reconciler.core import failures, ledger
from reconciler.core import signatures as sigs
from reconciler.core.deltas import missing_deltas_warning
from reconciler.core.ledger import Slot
from reconciler.core.spec import Gate, Location, OnFailure, PhaseSpec, WaveSpec
from reconciler.core.state import (
    Device,
    ObservedState,
    ObservedWave,
    ProdTargets,
    RolloutRecord,
    WaveProgress,
    WaveStatus,
)
from reconciler.core.windows import Hold
from reconciler.errors import Problem, Severity

EXPIRY_WARNING = timedelta(days=30)
OFFLINE_AFTER = timedelta(hours=4)  # a gate's reason calls a device offline after this (fioctl's default threshold)
MAX_REPORTED_UUIDS = 10  # unknown UUIDs reported one by one per phase; the rest get one summary line
MAX_NAMED_OFFLINE = 5  # offline devices named in a gate's reason


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


@dataclass(frozen=True, kw_only=True)
class _Step:
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


@dataclass(frozen=True, kw_only=True)
class InitOp(_Step):
    """Create the wave: sign its targets (the offline key) and send them."""

    kind: ClassVar[OpKind] = OpKind.INIT
    target: int
    expires: datetime
    prune: tuple[int, ...] = ()
    source_tag: str | None = None

    def describe(self) -> str:
        extra = f", prune {', '.join(map(str, self.prune))}" if self.prune else ""
        return f"init {self.wave} (target {self.target}, tag {self.tag}{extra})"


@dataclass(frozen=True, kw_only=True)
class RolloutOp(_Step):
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


@dataclass(frozen=True, kw_only=True)
class SignOp(_Step):
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


@dataclass(frozen=True, kw_only=True)
class CompleteOp(_Step):
    """Make the wave's targets the tag's production targets."""

    kind: ClassVar[OpKind] = OpKind.COMPLETE


@dataclass(frozen=True, kw_only=True)
class CancelOp(_Step):
    """Stop the wave; devices already updated stay where they are (orphans), the others keep production."""

    kind: ClassVar[OpKind] = OpKind.CANCEL
    version: int | None = None  # the canceled wave's version
    orphans: int | None = None  # devices already on it: they stay there, on a version no longer offered
    keep_previous: int | None = None  # devices of the tag not on it: they keep the production version
    previous_version: int | None = None  # the tag's production version (None: the tag has none)

    def describe(self) -> str:
        return f"cancel {self.wave}" + (f" ({self.leaves_behind()})" if self.orphans is not None else "")

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


def counted(count: int, noun: str) -> str:
    """``1 device``, ``2 devices``: a count and its noun in the right number (digits as they are)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def scope_text(group: str | None, limit: str | None, uuid_count: int | None) -> str:
    """Which devices a phase or rollout reaches, in words: ``group beta, limit 10%, 7 uuids``."""
    parts = [f"group {group}" if group else "factory-wide"]
    if limit is not None:
        parts.append(f"limit {limit}")
    if uuid_count is not None:
        parts.append(counted(uuid_count, "uuid"))
    return ", ".join(parts)


def rollout_scope(op: RolloutOp) -> str:
    limit = f"{op.percentage}%" if op.percentage is not None else None if op.limit is None else str(op.limit)
    return scope_text(op.group, limit, None if op.uuids is None else len(op.uuids))


@dataclass(frozen=True)
class WaveSummary:
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

    def with_phase(self, index: int, state: PhaseState) -> WaveSummary:
        phases = list(self.phases)
        phases[index] = (phases[index][0], state)
        return replace(self, phases=tuple(phases))


@dataclass(frozen=True)
class Held:
    """A wave held by an error in its manifest: its steps and the later steps of its tag wait."""

    wave: str
    tag: str
    reason: str


@dataclass(frozen=True)
class Plan:
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


# Why a keyless run (``reconcile --without-key``) leaves an init for later.
NEEDS_KEY = "needs the offline key; runs in the keyed apply job"


def without_keyed_steps(plan: Plan) -> Plan:
    """The plan as a run without the offline key sees it: ready inits and signs held, and the steps behind them.

    Only init and sign sign targets; rollouts, completes and cancels need an API token alone. A
    scheduled job that advances gated phases therefore needs no key and no approval, while
    creating a wave, or adding a signature the production root still needs, waits for the keyed
    apply job. A held init holds its own wave's later steps too, since the wave does not exist
    yet; a held sign holds them with what the wave still needs.
    """
    held: dict[str, str] = {}  # wave -> why its later steps wait
    for op in plan.operations:
        if op.ready and isinstance(op, (InitOp, SignOp)) and op.wave not in held:
            held[op.wave] = "after init" if isinstance(op, InitOp) else op.shortfall.text()
    for op in plan.operations:
        if op.wave in held and op.ready:
            reason = NEEDS_KEY if isinstance(op, (InitOp, SignOp)) else held[op.wave]
            plan = plan.with_operation(op, op.blocked(reason))
    return plan


def without_signs_by(plan: Plan, keyid: str) -> Plan:
    """The plan as a run whose offline key is ``keyid`` sees it: a wave that key has signed already waits
    for another key holder (a key counts once towards the threshold), with the steps behind its sign;
    the other waves and tags go on. Like ``without_keyed_steps``, a wait, not an error."""
    held: dict[str, str] = {}  # wave -> why its later steps wait
    for op in plan.operations:
        if op.ready and isinstance(op, SignOp) and keyid not in op.keyids:
            held[op.wave] = op.shortfall.text()
    for op in plan.operations:
        if op.wave in held and op.ready:
            reason = held[op.wave]
            if isinstance(op, SignOp):
                reason = (
                    f"this run's offline key (key id {sigs.short_keyid(keyid)}) has signed it already and a key "
                    f"counts once; {reason}: run with that key (--keys FILE or --signer URI)"
                )
            plan = plan.with_operation(op, op.blocked(reason))
    return plan


def _updated_gates(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> dict[str, Gate]:
    """Active managed waves whose next step has a ``require.updated`` gate, with that gate."""
    gates = {}
    for spec in specs:
        wave = observed_waves.get(spec.name)
        if wave is None or wave.status is not WaveStatus.ACTIVE:
            continue
        done, parts_done = ledger.position(spec.phases, len(wave.history))
        if parts_done:
            continue  # the next rollout is a later part of a phase: parts have no gate
        if done < len(spec.phases):
            gate = spec.phases[done].gate
        elif spec.complete is not None:
            gate = spec.complete.gate
        else:
            continue
        if gate.updated_percent is not None:
            gates[spec.name] = gate
    return gates


def waves_needing_status(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> set[str]:
    """Active managed waves whose next step has a ``require.updated`` gate: only they need a status call."""
    return set(_updated_gates(specs, observed_waves))


def waves_to_cancel(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> set[str]:
    """Active waves a manifest cancels: their status says what the cancel leaves behind."""
    return {
        s.name
        for s in specs
        if s.cancel and s.name in observed_waves and observed_waves[s.name].status is WaveStatus.ACTIVE
    }


def tags_needing_devices(
    specs: list[WaveSpec], observed_waves: dict[str, ObservedWave], progress: dict[str, WaveProgress] | None = None
) -> set[str]:
    """Tags whose whole device list the plan needs: ``onlineWithin`` gates (they count offline devices)
    and, once ``progress`` is known, gates short of their share on the counts alone (their reason names
    the offline devices). A gate that passes needs no device list: a tag's list is ceil(devices / 1000)
    requests, too many to read for an explanation nobody reads. UUIDs are checked apart
    (``uuids_to_check``)."""
    tags = set()
    for name, gate in _updated_gates(specs, observed_waves).items():
        counts = (progress or {}).get(name)
        short = counts is not None and (
            not counts.rolled_out or 100.0 * counts.updated / counts.rolled_out < (gate.updated_percent or 0)
        )
        if gate.online_within_seconds or short:
            tags.add(observed_waves[name].tag)
    return tags


def uuids_to_check(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> dict[str, frozenset[str]]:
    """Per tag, the UUIDs that phases still to roll out name: each must be a production device of the tag."""
    named: dict[str, set[str]] = {}
    for spec in specs:
        wave = observed_waves.get(spec.name)
        if spec.cancel or (wave is not None and wave.status is not WaveStatus.ACTIVE):
            continue
        done = ledger.phases_done(spec.phases, len(wave.history)) if wave is not None else 0
        for phase in spec.phases[done:]:
            if phase.uuids:
                named.setdefault(spec.tag, set()).update(phase.uuids)
    return {tag: frozenset(uuids) for tag, uuids in named.items()}


def next_rollouts(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> list[RolloutOp]:
    """The next rollout of each active managed wave that follows its manifest: the rollouts whose device
    counts a plan shows (a dry run reaches what the rollout would reach now; later ones cannot be
    counted, as the dry run does not know what the earlier ones will stage)."""
    rollouts = []
    for spec in specs:
        wave = observed_waves.get(spec.name)
        if (
            spec.cancel
            or wave is None
            or wave.status is not WaveStatus.ACTIVE
            or wave.tag != spec.tag
            or wave.version != spec.target
            or ledger_drift(spec.phases, wave.history)
        ):
            continue
        slot = next(ledger.slots(spec.phases, len(wave.history)), None)
        if slot is not None:
            rollouts.append(_rollout(spec, spec.phases[slot.phase_index], slot, None))
    return rollouts


def pending_groups(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> bool:
    """Whether a phase still to roll out names a group: only then is the group list read."""
    for spec in specs:
        wave = observed_waves.get(spec.name)
        if spec.cancel or (wave is not None and wave.status is not WaveStatus.ACTIVE):
            continue
        done = ledger.phases_done(spec.phases, len(wave.history)) if wave is not None else 0
        if any(phase.group for phase in spec.phases[done:]):
            return True
    return False


def selected_specs(specs: list[WaveSpec], factory: str) -> list[WaveSpec]:
    """The waves of this factory: those naming it and those naming none."""
    return [s for s in specs if s.factory in (None, factory)]


def build_plan(specs: list[WaveSpec], observed: ObservedState) -> Plan:
    chosen = selected_specs(specs, observed.factory)
    planner = _Planner(observed)
    for tag in sorted({s.tag for s in chosen} | active_tags(observed.waves.values())):
        planner.plan_tag(tag, [s for s in chosen if s.tag == tag])
    planner.report_unmanaged({s.name for s in chosen})
    return Plan(
        factory=observed.factory,
        backend=observed.backend,
        now=observed.now,
        operations=tuple(planner.ops),
        waves=tuple(draft.freeze() for draft in planner.summaries),
        warnings=tuple(sorted(planner.warnings)),
        errors=tuple(sorted(planner.errors)),
        skipped_manifests=len(specs) - len(chosen),
        held=tuple(planner.held),
    )


def active_tags(waves) -> set[str]:
    """Tags with an active wave in the factory: each is planned even without a manifest of its own."""
    return {w.tag for w in waves if w.status is WaveStatus.ACTIVE}


@dataclass
class _SummaryDraft:
    """A wave's summary while the planner fills in its phases; frozen into a ``WaveSummary`` at the end."""

    spec: WaveSpec
    status: SummaryStatus
    phases_done: int
    drift: list[str]
    phases: list[tuple[str, PhaseState]] = field(default_factory=list)
    updated: int | None = None
    rolled_out: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        self.phases = [(p.name, "done" if i < self.phases_done else "pending") for i, p in enumerate(self.spec.phases)]

    def freeze(self) -> WaveSummary:
        spec = self.spec
        return WaveSummary(
            name=spec.name,
            manifest=spec.manifest,
            tag=spec.tag,
            target=spec.target,
            status=self.status,
            phases=tuple(self.phases),
            phases_done=self.phases_done,
            drift=tuple(self.drift),
            updated=self.updated,
            rolled_out=self.rolled_out,
            total=self.total,
        )


@dataclass
class _TagState:
    """A tag as it will be at the current point of the plan."""

    busy_with: str | None  # the wave that is active at this point, if any
    busy_reason: str  # why that wave stays active (for the blocked init's reason)
    prod_version: int | None
    prod_versions: frozenset[int]


class _Planner:
    def __init__(self, observed: ObservedState):
        self.observed = observed
        self.now = observed.now
        self.ops: list[Operation] = []
        self.summaries: list[_SummaryDraft] = []
        self.warnings: list[Problem] = []
        self.errors: list[Problem] = []
        self.held: list[Held] = []

    # -- per tag -----------------------------------------------------------------------------

    def plan_tag(self, tag: str, specs: list[WaveSpec]) -> None:
        prod = self.observed.prod_targets.get(tag)
        self._warn_expiry(tag, prod, specs)
        active = [w for w in self.observed.waves.values() if w.tag == tag and w.status is WaveStatus.ACTIVE]
        state = _TagState(
            busy_with=active[0].name if active else None,
            busy_reason="",
            prod_version=prod.version if prod else None,
            prod_versions=prod.versions if prod else frozenset(),
        )
        managed = {s.name for s in specs}
        if active and active[0].name not in managed:
            state.busy_reason = "not managed by any manifest; complete or cancel it by hand"

        existing = sorted(
            (s for s in specs if s.name in self.observed.waves),
            key=lambda s: self.observed.waves[s.name].created_at,
        )
        new = sorted((s for s in specs if s.name not in self.observed.waves), key=lambda s: (s.target, s.name))
        hold_from: int | None = None
        holder = ""
        for spec in [*existing, *new]:
            start, errors_before = len(self.ops), len(self.errors)
            if spec.name in self.observed.waves:
                self._plan_existing(spec, self.observed.waves[spec.name], state)
            else:
                self._plan_new(spec, state)
            if len(self.errors) > errors_before:
                first = self.errors[errors_before]
                count = len(self.errors) - errors_before
                where = f"{first.file}:{first.line}:{first.col}" if first.file else "the plan"
                self.held.append(Held(spec.name, tag, f"{counted(count, 'error')}, the first at {where}"))
                if hold_from is None:
                    hold_from, holder = start, spec.name
        if hold_from is not None:
            self._hold(hold_from, holder)

    def _hold(self, start: int, holder: str) -> None:
        """Errors are scoped: the erring wave's steps and every later step of its tag wait; other tags go on."""
        for index in range(start, len(self.ops)):
            op = self.ops[index]
            if op.ready:
                why = (
                    "held: this wave has an error"
                    if op.wave == holder
                    else f"held behind wave '{holder}', which has an error"
                )
                self.ops[index] = op.blocked(why)

    # -- existing waves ----------------------------------------------------------------------

    def _plan_existing(self, spec: WaveSpec, wave: ObservedWave, state: _TagState) -> None:
        drift = ledger_drift(spec.phases, wave.history)
        done = ledger.phases_done(spec.phases, len(wave.history))
        summary = _SummaryDraft(spec, wave.status, done, drift)
        progress = self.observed.progress.get(spec.name)
        if progress is not None:
            summary.updated, summary.rolled_out, summary.total = progress.updated, progress.rolled_out, progress.total
        self.summaries.append(summary)

        conflicts = []
        if wave.version != spec.target:
            conflicts.append(
                (
                    "target",
                    f"target changed: the factory's wave '{spec.name}' promotes {wave.version}, the manifest says "
                    f"{spec.target}; waves are immutable, create a new wave instead",
                )
            )
        if wave.tag != spec.tag:
            conflicts.append(
                (
                    "tag",
                    f"tag changed: the factory's wave '{spec.name}' is on tag '{wave.tag}', the manifest says "
                    f"'{spec.tag}'; waves are immutable, create a new wave instead",
                )
            )
        for key, message in conflicts:
            self._error(spec.at(key), message)

        if wave.status is WaveStatus.COMPLETE:
            if spec.cancel:
                self._error(
                    spec.at("cancel"),
                    f"wave '{spec.name}' is complete and cannot be canceled; to take version "
                    f"{wave.version} out of production, prune it with a new wave",
                )
            elif done < len(spec.phases) or spec.complete is None:
                self._warn(spec.location, f"wave '{spec.name}' was completed in the factory outside the manifests")
            return
        if wave.status is WaveStatus.CANCELED:
            if not spec.cancel:
                by = " (by onFailure: cancel, or by hand)" if spec.on_failure is OnFailure.CANCEL else ""
                self._warn(
                    spec.location,
                    f"wave '{spec.name}' was canceled in the factory{by}; a canceled wave cannot "
                    f"resume, create a new wave to continue",
                )
            return

        # active
        if conflicts:
            state.busy_reason = f"wave '{spec.name}' has a conflict"
            return
        if spec.cancel:
            self._add(self._cancel(spec, wave, state))
            state.busy_with = None
            return
        if drift:
            for where, message in _drift_problems(spec, wave.history):
                self._error(where, message)
            self._block_rest(spec, len(wave.history), "drift: " + "; ".join(drift), summary)
            state.busy_reason = f"wave '{spec.name}' has drifted from its manifest"
            return
        if (exceeded := failures.breach(spec, len(wave.history), self.observed.failures.get(spec.name))) is not None:
            self._on_failure(spec, wave, state, summary, exceeded)
            return
        for where, message in self._phase_problems(spec, done) + self._expiry_problems(spec, wave, progress):
            self._error(where, message)
        short = sigs.shortfall(self.observed.targets_keys, self.observed.wave_signers.get(spec.name))
        blocked = None
        if short is not None and (done < len(spec.phases) or spec.complete is not None):
            self._sign(spec, short, None)  # runs first: with one signature missing, its later steps may follow
            if short.needed > 1:
                blocked = f"needs {sigs.signatures_text(short.needed - 1)} after this run's (one key signs per run)"
        completes = self._plan_steps(
            spec, summary, created_at=wave.created_at, history=wave.history, progress=progress, blocked=blocked
        )
        self._after_active(spec, state, completes)

    def _on_failure(
        self, spec: WaveSpec, wave: ObservedWave, state: _TagState, summary: _SummaryDraft, exceeded: failures.Breach
    ) -> None:
        """A failure bound in force is exceeded (``core/failures.py``): cancel the wave, or halt it with an error."""
        if spec.on_failure is OnFailure.CANCEL:
            cancel = self._cancel(spec, wave, state)
            self._add(replace(cancel, location=spec.at("onFailure"), reason=f"onFailure: cancel: {exceeded.text()}"))
            state.busy_with = None
            return
        where = exceeded.bound.location if exceeded.bound.location.file else spec.location
        self._error(
            where,
            f"wave '{spec.name}' halted (onFailure: halt): {exceeded.text()}; its further steps are held. "
            f"To stop it set cancel: true; to go on anyway, loosen the bound",
        )
        reason = f"halted: {exceeded.text()}"
        for position, slot in enumerate(ledger.slots(spec.phases, len(wave.history))):
            phase = spec.phases[slot.phase_index]
            self._add(_rollout(spec, phase, slot, reason))
            summary.phases[slot.phase_index] = (phase.name, "blocked")
            if position == 0:
                reason = f"after phase '{phase.name}'"  # the later steps wait behind the first
        if spec.complete is not None:
            self._add(
                CompleteOp(
                    wave=spec.name,
                    tag=spec.tag,
                    status=StepStatus.BLOCKED,
                    location=spec.complete.location,
                    reason=reason,
                )
            )
        state.busy_reason = f"wave '{spec.name}' is halted by a failure bound"

    # -- new waves ---------------------------------------------------------------------------

    def _plan_new(self, spec: WaveSpec, state: _TagState) -> None:
        summary = _SummaryDraft(spec, "absent", 0, [])
        self.summaries.append(summary)
        if spec.cancel:
            self._warn(spec.location, f"wave '{spec.name}' does not exist in the factory; nothing to cancel")
            return

        problems = self._init_problems(spec, state)
        for where, message in problems:
            self._error(where, message)
        expires = self._expiry(spec)
        reason = None
        if problems:
            reason = problems[0][1]
        elif state.busy_with is not None:
            why = f" ({state.busy_reason})" if state.busy_reason else ""
            reason = f"tag '{spec.tag}' has active wave '{state.busy_with}'{why}"
        init = InitOp(
            wave=spec.name,
            tag=spec.tag,
            status=_status(reason),
            location=spec.location,
            reason=reason,
            target=spec.target,
            prune=spec.prune,
            expires=expires,
            source_tag=spec.source_tag,
        )
        self._add(init)
        deltas = missing_deltas_warning(spec, self.observed.ci_without_deltas.get(spec.target), self.observed.backend)
        if deltas:
            self._warn(spec.at("target"), deltas)
        blocked = None if init.ready else "after init"
        short = sigs.after_init(self.observed.targets_keys)
        if short is not None and (spec.phases or spec.complete is not None):
            why = (
                f"init signs with one offline key and the production root needs {short.threshold} signatures "
                f"(the online key's and {short.threshold - 1} offline): once the wave exists, run again with "
                f"another offline key (--keys FILE or --signer URI)"
            )
            self._sign(spec, short, blocked or why)
            blocked = blocked or (
                f"needs {sigs.signatures_text(short.needed)} after init (offline keys other than init's)"
            )
        completes = self._plan_steps(spec, summary, created_at=None, history=(), progress=None, blocked=blocked)
        if problems:
            state.busy_with, state.busy_reason = spec.name, f"wave '{spec.name}' cannot be created"
            return
        self._after_active(spec, state, completes)

    def _init_problems(self, spec: WaveSpec, state: _TagState) -> list[tuple[Location, str]]:
        problems = []
        if state.prod_version is not None and spec.target <= state.prod_version:
            problems.append(
                (
                    spec.at("target"),
                    f"target {spec.target} must be above the production version of tag '{spec.tag}' "
                    f"({state.prod_version} at this point of the plan)",
                )
            )
        if self.observed.ci_versions.get(spec.target) is False:
            problems.append(
                (
                    spec.at("target"),
                    f"no CI targets for version {spec.target}: build {spec.target} does not exist in the factory",
                )
            )
        if spec.target in spec.prune:
            problems.append((spec.at("prune"), f"cannot prune the wave's own version {spec.target}"))
        tags = self.observed.tag_devices
        if tags is not None and not tags.get(spec.tag):
            ranked = sorted(((t, n) for t, n in tags.items() if n), key=lambda item: (-item[1], item[0]))
            listing = ", ".join(f"'{t}' ({n} devices)" for t, n in ranked) or "none"
            problems.append(
                (
                    spec.at("tag"),
                    f"no production device follows tag '{spec.tag}'; production tags in "
                    f"factory '{self.observed.factory}': {listing}; "
                    f"{_did_you_mean(spec.tag, [t for t, _ in ranked]) or 'fix the tag'}",
                )
            )
        ci_tags = self.observed.ci_tags.get(spec.target)
        if (
            spec.source_tag is not None
            and ci_tags is not None
            and self.observed.ci_versions.get(spec.target)
            and spec.source_tag not in ci_tags
        ):
            listing = ", ".join(f"'{t}'" for t in sorted(ci_tags)) or "none"
            problems.append(
                (
                    spec.at("sourceTag"),
                    f"sourceTag '{spec.source_tag}': no CI target of version {spec.target} "
                    f"carries it (its tags: {listing}); "
                    f"{_did_you_mean(spec.source_tag, sorted(ci_tags)) or 'fix sourceTag or remove it'}",
                )
            )
        problems += self._phase_problems(spec, 0)
        missing = [v for v in spec.prune if v != spec.target and v not in state.prod_versions]
        if missing:
            have = ", ".join(map(str, sorted(state.prod_versions))) or "none"
            problems.append(
                (
                    spec.at("prune"),
                    f"cannot prune {', '.join(map(str, missing))}: not in the production targets of tag "
                    f"'{spec.tag}' (versions: {have})",
                )
            )
        return problems

    def _phase_problems(self, spec: WaveSpec, start: int) -> list[tuple[Location, str]]:
        """Phases still to roll out: their groups exist, their UUIDs are production devices of the tag (and group)."""
        problems = []
        groups = self.observed.groups
        fleet = self.observed.devices.get(spec.tag, self.observed.named_devices.get(spec.tag))
        for phase in spec.phases[start:]:
            if groups is not None and phase.group and phase.group not in groups:
                problems.append(
                    (
                        phase.at("group"),
                        f"phase '{phase.name}': device group '{phase.group}' does not exist in "
                        f"factory '{self.observed.factory}'; "
                        f"{_did_you_mean(phase.group, sorted(groups)) or 'create it or fix the group name'}",
                    )
                )
            if phase.uuids and fleet is not None:
                problems += _uuid_problems(spec, phase, fleet)
        return problems

    def _expiry_problems(
        self, spec: WaveSpec, wave: ObservedWave, progress: WaveProgress | None
    ) -> list[tuple[Location, str]]:
        """An active wave whose targets expired, or will before its remaining waits are over, cannot go on."""
        expires = self.observed.wave_expires.get(spec.name)
        done, parts_done = ledger.position(spec.phases, len(wave.history))
        if expires is None or (done >= len(spec.phases) and spec.complete is None):
            return []
        where = spec.at("expiresAt", "expires")
        stamp = f"{expires:%Y-%m-%dT%H:%M:%SZ}"
        advice = (
            "cancel it (cancel: true) and promote the build again in a new wave, with a new name and an expiry "
            "longer than its waits"
        )
        if expires <= self.now:
            return [
                (
                    where,
                    f"wave '{spec.name}' expired at {stamp}: its targets can no longer be rolled out or "
                    f"completed; {advice}",
                )
            ]
        since: datetime | None = wave.history[-1].at if wave.history else wave.created_at
        if parts_done:  # mid-phase: its gate has passed, the next one counts from its last part
            done, since = done + 1, None
        left = _remaining_waits(spec, done, since, self.now)
        if self.now + left > expires:
            return [
                (
                    where,
                    f"wave '{spec.name}' expires at {stamp}, in {format_duration(expires - self.now)}, but its "
                    f"remaining waits take {format_duration(left)}; {advice}",
                )
            ]
        return []

    def _cancel(self, spec: WaveSpec, wave: ObservedWave, state: _TagState) -> CancelOp:
        progress = self.observed.progress.get(spec.name)
        return CancelOp(
            wave=spec.name,
            tag=spec.tag,
            status=StepStatus.READY,
            location=spec.at("cancel"),
            version=wave.version,
            previous_version=state.prod_version,
            orphans=None if progress is None else progress.updated,
            keep_previous=None if progress is None else max(progress.total - progress.updated, 0),
        )

    def _expiry(self, spec: WaveSpec) -> datetime:
        if spec.expires_at is not None:
            expires = spec.expires_at
        else:
            expires = self.now + timedelta(seconds=spec.expires_in_seconds or 0)
        waits = _remaining_waits(spec, 0, None, self.now)
        if expires <= self.now:
            self._error(
                spec.at("expiresAt", "expires"),
                f"expiry {expires:%Y-%m-%dT%H:%M:%SZ} is in the past; set a later expiresAt",
            )
        elif waits and expires - self.now <= waits:
            key = "expiresAt" if spec.expires_at is not None else "expires"
            self._error(
                spec.at("expiresAt", "expires"),
                f"wave '{spec.name}' would expire ({format_duration(expires - self.now)} "
                f"from now) before its waits are over ({format_duration(waits)} in all): an expired wave cannot "
                f"be rolled out or completed; set {key} well beyond the waits (e.g. expires: 365d)",
            )
        elif expires - self.now < EXPIRY_WARNING:
            self._warn(
                spec.at("expiresAt", "expires"),
                f"wave '{spec.name}' targets would expire within 30 days ({expires:%Y-%m-%dT%H:%M:%SZ})",
            )
        return expires

    # -- steps shared by new and existing waves -----------------------------------------------

    def _plan_steps(
        self,
        spec: WaveSpec,
        summary: _SummaryDraft,
        *,
        created_at: datetime | None,
        history: tuple[RolloutRecord, ...],
        progress: WaveProgress | None,
        blocked: str | None,
    ) -> bool:
        """Plan the remaining rollouts and the complete; return whether the wave completes in this plan.

        A phase of more than 10,000 UUIDs is several rollouts (core/ledger.py); its gate applies
        before its first part only, and the other parts follow in the same apply."""
        done = len(history)
        pending_before = False  # a rollout of this wave happens earlier in this plan
        # Rollouts and completes wait for a window and outside freezes; init and cancel never do.
        window = None if spec.schedule.empty else spec.schedule.hold(self.now)
        held_by = window.reason if window else None
        for slot in ledger.slots(spec.phases, done):
            phase = spec.phases[slot.phase_index]
            if slot.first:
                since = (
                    created_at if slot.entry == 0 else (history[slot.entry - 1].at if slot.entry - 1 < done else None)
                )
                reason = blocked or _joined(
                    _gate_reason(phase.gate, since, self.now, progress, pending_before, self._fleet(spec)),
                    self._failed_reason(spec, phase.gate, done, pending_before),
                    held_by,
                )
            else:
                reason = blocked or held_by
            self._add(_rollout(spec, phase, slot, reason, None if blocked else window))
            summary.phases[slot.phase_index] = (phase.name, "blocked" if reason else "ready")
            if reason:
                blocked = blocked or f"after phase '{phase.name}'{slot.label()}"
            pending_before = True
        if spec.complete is None:
            return False
        if blocked:
            reason = blocked
        else:
            if pending_before or created_at is None:
                since = None  # the previous step happens in this plan: the wait starts now
            else:
                since = history[-1].at if history else created_at
            reason = _joined(
                _gate_reason(spec.complete.gate, since, self.now, progress, pending_before, self._fleet(spec)),
                self._failed_reason(spec, spec.complete.gate, done, pending_before),
                held_by,
            )
        self._add(
            CompleteOp(
                wave=spec.name,
                tag=spec.tag,
                status=_status(reason),
                location=spec.complete.location,
                reason=reason,
                opens_at=None if blocked or window is None else window.opens_at,
            )
        )
        return reason is None

    def _failed_reason(self, spec: WaveSpec, gate: Gate, rollouts: int, pending_before: bool) -> str | None:
        return failures.gate_reason(
            gate, rollouts=rollouts, pending_before=pending_before, failures=self.observed.failures.get(spec.name)
        )

    def _fleet(self, spec: WaveSpec) -> dict[str, Device] | None:
        return self.observed.devices.get(spec.tag)

    def _sign(self, spec: WaveSpec, short: sigs.Shortfall, reason: str | None) -> None:
        """Add the wave's sign step (at its manifest's first line), ready unless ``reason`` says why not."""
        self._add(
            SignOp(
                wave=spec.name,
                tag=spec.tag,
                status=_status(reason),
                location=spec.location,
                reason=reason,
                signatures=short.signatures,
                threshold=short.threshold,
                keyids=short.keyids,
            )
        )

    def _after_active(self, spec: WaveSpec, state: _TagState, completes: bool) -> None:
        if completes:
            state.busy_with = None
            state.prod_version = spec.target
            state.prod_versions = (state.prod_versions - set(spec.prune)) | {spec.target}
        else:
            state.busy_with = spec.name
            state.busy_reason = _why_still_active(spec)

    def _block_rest(self, spec: WaveSpec, entries: int, reason: str, summary: _SummaryDraft) -> None:
        """Block every rollout after the history's ``entries`` entries, and the complete."""
        for slot in ledger.slots(spec.phases, entries):
            phase = spec.phases[slot.phase_index]
            self._add(_rollout(spec, phase, slot, reason))
            summary.phases[slot.phase_index] = (phase.name, "blocked")
        if spec.complete is not None:
            self._add(
                CompleteOp(
                    wave=spec.name,
                    tag=spec.tag,
                    status=StepStatus.BLOCKED,
                    location=spec.complete.location,
                    reason=reason,
                )
            )

    # -- reports -----------------------------------------------------------------------------

    def report_unmanaged(self, managed: set[str]) -> None:
        for wave in sorted(self.observed.waves.values(), key=lambda w: w.name):
            if wave.status is WaveStatus.ACTIVE and wave.name not in managed:
                self._warn(
                    Location(""),
                    f"unmanaged active wave '{wave.name}' (version {wave.version}, tag "
                    f"'{wave.tag}') has no manifest; it is left untouched",
                )

    def _warn_expiry(self, tag: str, prod: ProdTargets | None, specs: list[WaveSpec]) -> None:
        if prod is None or not specs:
            return
        left = prod.expires - self.now
        where = specs[0].location
        if left <= timedelta(0):
            self._warn(where, f"production targets of tag '{tag}' expired at {prod.expires:%Y-%m-%dT%H:%M:%SZ}")
        elif left < EXPIRY_WARNING:
            self._warn(
                where,
                f"production targets of tag '{tag}' expire in {format_duration(left)} "
                f"({prod.expires:%Y-%m-%dT%H:%M:%SZ}); complete a new wave to renew them",
            )

    def _add(self, op: Operation) -> None:
        self.ops.append(op)

    def _error(self, where: Location, message: str) -> None:
        self.errors.append(Problem(where.file, where.line, where.col, message))

    def _warn(self, where: Location, message: str) -> None:
        self.warnings.append(Problem(where.file, where.line, where.col, message, Severity.WARNING))


def _joined(*reasons: str | None) -> str | None:
    return "; ".join(reason for reason in reasons if reason) or None


def _status(reason: str | None) -> StepStatus:
    return StepStatus.BLOCKED if reason else StepStatus.READY


def _rollout(spec: WaveSpec, phase: PhaseSpec, slot: Slot, reason: str | None, window: Hold | None = None) -> RolloutOp:
    limit = phase.limit
    return RolloutOp(
        wave=spec.name,
        tag=spec.tag,
        status=_status(reason),
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


def _why_still_active(spec: WaveSpec) -> str:
    if spec.complete is None:
        return "its manifest keeps it active; set complete or cancel"
    return "it completes once its phases and gates pass"


def ledger_drift(phases: tuple[PhaseSpec, ...], history: tuple[RolloutRecord, ...]) -> list[str]:
    """Compare the rollout history with the manifest's phases, entry by entry (core/ledger.py maps
    the entries of a phase of more than 10,000 UUIDs to its parts)."""
    drift = []
    slots = ledger.slots(phases)
    for index, record in enumerate(history):
        slot = next(slots, None)
        if slot is None:
            drift.append(f"rollout {index + 1} in the factory ({_record_scope(record)}) has no phase in the manifest")
            continue
        phase = phases[slot.phase_index]
        if not _same_scope(record, phase):
            drift.append(
                f"rollout {index + 1} in the factory was {_record_scope(record)}, but phase "
                f"'{phase.name}'{slot.label()} is {_phase_scope(phase)}"
            )
        elif (sent := _uuids_sent(phase, slot)) is not None and record.devices > sent:
            drift.append(
                f"rollout {index + 1} in the factory reached {record.devices} devices, but phase "
                f"'{phase.name}'{slot.label()} sends {sent} UUIDs"
            )
        elif (cap := _count_limit(phase)) is not None and record.devices > cap:
            drift.append(
                f"rollout {index + 1} in the factory reached {record.devices} devices, but phase "
                f"'{phase.name}'{slot.label()} has limit {cap}"
            )
    return drift


def _drift_problems(spec: WaveSpec, history: tuple[RolloutRecord, ...]) -> list[tuple[Location, str]]:
    """Drift as errors at the differing lines, each with the manifest edit that would adopt the factory's history."""
    problems = []
    slots = ledger.slots(spec.phases)
    for index, record in enumerate(history):
        slot = next(slots, None)
        if slot is None:
            extra = [f"a phase with {_adopting_scope(r)}" for r in history[index:]]
            where = spec.phases[-1].location if spec.phases else spec.at("phases")
            made = (
                f"the manifest only {len(spec.phases)} phases"
                if index == len(spec.phases)
                else f"the manifest's {len(spec.phases)} phases make only {index} (one per 10000 UUIDs of a phase)"
            )
            problems.append(
                (
                    where,
                    f"wave '{spec.name}': the factory has {len(history)} rollouts but {made} "
                    f"(rollouts made outside the manifests); to adopt them, append "
                    f"{'these phases' if len(extra) > 1 else 'this phase'}: {'; '.join(extra)}",
                )
            )
            break
        phase = spec.phases[slot.phase_index]
        name = f"phase '{phase.name}'{slot.label()}"
        if _same_scope(record, phase):
            sent = _uuids_sent(phase, slot)
            if sent is not None and record.devices > sent:
                problems.append(
                    (
                        phase.at("uuids"),
                        f"{name} sends {sent} UUIDs, but rollout {index + 1} in the "
                        f"factory reached {record.devices} devices: it was not made from this list (the "
                        f"list changed, or the rollout was made by hand); a phase that rolled out cannot "
                        f"change: restore the UUID list it was rolled out with",
                    )
                )
            elif (cap := _count_limit(phase)) is not None and record.devices > cap:
                problems.append(
                    (
                        phase.at("limit"),
                        f"{name} has limit {cap}, but rollout {index + 1} in the factory "
                        f"reached {record.devices} devices: it was rolled out with a larger limit (or by "
                        f"hand); a phase that rolled out cannot change: to adopt the factory's history set "
                        f"the limit back to the one it was rolled out with (at least {record.devices}), and "
                        f"add a new phase for anything more",
                    )
                )
            continue
        if (record.group or None) != phase.group:
            where = phase.at("group", "limit", "uuids")
        else:
            where = phase.at("limit", "uuids", "group")
        problems.append(
            (
                where,
                f"{name} differs from rollout {index + 1} in the factory, which was "
                f"{_record_scope(record)} (the manifest says {_phase_scope(phase)}); a phase that rolled out "
                f"cannot change: to adopt the factory's history set phase '{phase.name}' to "
                f"{_adopting_scope(record)}, and add a new phase for anything more",
            )
        )
    return problems


def _same_scope(record: RolloutRecord, phase: PhaseSpec) -> bool:
    """What a history entry can say about a phase: its group, full group or not, factory-wide or not.
    Every part of a split phase has its phase's scope: a UUID rollout is never a full-group one."""
    return (
        (record.group or None) == phase.group
        and record.full_group == phase.full_group
        and record.factory_wide == phase.factory_wide
    )


def _uuids_sent(phase: PhaseSpec, slot: Slot) -> int | None:
    """How many UUIDs the slot's rollout sends: an upper bound of the devices its history entry can
    have reached (the entry records no UUIDs, only ``num-devices``). None without a UUID list."""
    sent = ledger.part_uuids(phase, slot.part)
    return None if sent is None else len(sent)


def _count_limit(phase: PhaseSpec) -> int | None:
    """A phase's ``limit`` as a device count (not a percentage): the most devices its rollout can reach,
    so a history entry that reached more was not made with this limit. None without one."""
    return phase.limit.value if phase.limit is not None and not phase.limit.percent else None


def _adopting_scope(record: RolloutRecord) -> str:
    if record.factory_wide:
        return "no group, with the limit or uuids that was used"
    if not record.group:
        return "the group that was deleted (its name is gone from the factory), or cancel the wave"
    if record.full_group:
        return f"`group: {record.group}` with no limit and no uuids"
    return f"`group: {record.group}` with the limit or uuids that was used"


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def _uuid_problems(spec: WaveSpec, phase: PhaseSpec, fleet: dict[str, Device]) -> list[tuple[Location, str]]:
    """UUIDs the factory would refuse: not a production device of the wave's tag, or outside the phase's group."""
    bad = []
    for index, uuid in enumerate(phase.uuids or ()):
        device = fleet.get(uuid)
        if device is None:
            bad.append(
                (
                    index,
                    f"phase '{phase.name}': UUID {uuid} is not a production device on tag '{spec.tag}'; "
                    f"remove it from the list or fix it",
                )
            )
        elif phase.group and device.group != phase.group:
            bad.append(
                (
                    index,
                    f"phase '{phase.name}': device {uuid} ({device.name}) is in "
                    f"{repr(device.group) if device.group else 'no group'}, not in the phase's group "
                    f"'{phase.group}'; remove it from the list or move the device",
                )
            )
    problems = [(phase.uuid_location(index), message) for index, message in bad[:MAX_REPORTED_UUIDS]]
    if len(bad) > MAX_REPORTED_UUIDS:
        index = bad[MAX_REPORTED_UUIDS][0]
        problems.append(
            (
                phase.uuid_location(index),
                f"phase '{phase.name}': {len(bad) - MAX_REPORTED_UUIDS} more UUIDs "
                f"that the factory would refuse are not shown",
            )
        )
    return problems


def _remaining_waits(spec: WaveSpec, done: int, since: datetime | None, now: datetime) -> timedelta:
    """The least time the wave's remaining steps take: their waits, the first counted from ``since``."""
    gates = [phase.gate for phase in spec.phases[done:]]
    if spec.complete is not None:
        gates.append(spec.complete.gate)
    total = timedelta(0)
    for position, gate in enumerate(gates):
        wait = timedelta(seconds=gate.wait_seconds or 0)
        if position == 0 and since is not None:
            wait = max(since + wait - now, timedelta(0))
        total += wait
    return total


def _record_scope(record: RolloutRecord) -> str:
    if record.factory_wide:
        return "factory-wide"
    if not record.group:
        return "to a deleted group"
    return f"the whole group {record.group}" if record.full_group else f"part of group {record.group}"


def _phase_scope(phase: PhaseSpec) -> str:
    if phase.factory_wide:
        return "factory-wide"
    return f"the whole group {phase.group}" if phase.full_group else f"part of group {phase.group}"


def _gate_reason(
    gate: Gate,
    since: datetime | None,
    now: datetime,
    progress: WaveProgress | None,
    pending_before: bool,
    fleet: dict[str, Device] | None = None,
) -> str | None:
    """Why a gate has not passed yet, or None. ``since`` None means the previous step happens in this plan."""
    reasons = []
    if gate.wait_seconds:
        wait = timedelta(seconds=gate.wait_seconds)
        left = wait if since is None else since + wait - now
        if left > timedelta(0):
            reasons.append(f"wait {format_duration(wait)}: {format_duration(left)} left")
    if gate.updated_percent is not None:
        need = f"{gate.updated_percent:g}%"
        if pending_before or progress is None:
            reasons.append(f"updated {need}: needs the wave status after the previous rollout")
        elif progress.rolled_out == 0:
            reasons.append(f"updated {need}: no devices rolled out yet")
        else:
            reason = _updated_reason(gate, gate.updated_percent, need, now, progress, fleet)
            if reason:
                reasons.append(reason)
    return "; ".join(reasons) or None


def _updated_reason(
    gate: Gate, percent: float, need: str, now: datetime, progress: WaveProgress, fleet: dict[str, Device] | None
) -> str | None:
    """The ``require.updated`` gate: updated / rolled out, minus the offline devices when ``onlineWithin`` says so.

    A device counts as offline when it is staged by the wave, not yet updated, and not seen for
    ``onlineWithin`` (or, for the reason's sake only, for 4 hours, fioctl's offline threshold).
    """
    window = timedelta(seconds=gate.online_within_seconds) if gate.online_within_seconds else OFFLINE_AFTER
    offline = _offline(fleet, now, window) if fleet is not None else []
    counted = progress.rolled_out
    if gate.online_within_seconds:
        counted = max(progress.rolled_out - len(offline), 0)
        need += f" of devices seen within {format_duration(window)}"
    share = 100.0 * progress.updated / counted if counted else 0.0
    if counted and share >= percent:
        return None
    numbers = f"{progress.updated} of {progress.rolled_out} devices"
    if fleet is not None:
        numbers += f" rolled out are updated, {len(offline)} waiting offline for more than {format_duration(window)}"
        if offline:
            named = ", ".join(f"{d.name} ({d.uuid})" for d in offline[:MAX_NAMED_OFFLINE])
            more = f" and {len(offline) - MAX_NAMED_OFFLINE} more" if len(offline) > MAX_NAMED_OFFLINE else ""
            numbers += f": {named}{more}"
            if not gate.online_within_seconds:
                numbers += "; to leave offline devices out, add onlineWithin to require"
    if not counted:
        return f"updated {need}: no online device rolled out yet ({numbers})"
    return f"updated {need}: {share:.1f}% ({numbers})"


def _offline(fleet: dict[str, Device], now: datetime, window: timedelta) -> list[Device]:
    """Devices staged by the wave and not updated yet that have not been seen within ``window``, oldest first."""
    never = datetime.min.replace(tzinfo=now.tzinfo)
    waiting = [
        d
        for d in fleet.values()
        if d.in_wave and not d.up_to_date and (d.last_seen is None or now - d.last_seen > window)
    ]
    return sorted(waiting, key=lambda d: (d.last_seen or never, d.uuid))


def format_duration(delta: timedelta | int) -> str:
    """``13h12m``, ``3d4h``, ``45s``: the largest unit and the next one, truncated.

    Hours are used up to three days, because operators write gates as ``24h`` or ``48h``.
    """
    seconds = max(0, int(delta.total_seconds()) if isinstance(delta, timedelta) else int(delta))
    units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    if seconds < 3 * 86400:
        units = units[1:]
    for position, (name, size) in enumerate(units):
        if seconds >= size or name == "s":
            count, rest = divmod(seconds, size)
            text = f"{count}{name}"
            if position + 1 < len(units):
                next_name, next_size = units[position + 1]
                if rest // next_size:
                    text += f"{rest // next_size}{next_name}"
            return text
    raise AssertionError("unreachable: the seconds unit always matches")
