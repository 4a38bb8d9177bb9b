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

Errors (user mistakes such as a changed target or a version below production) make the plan
refuse to apply; blocked steps are normal and wait for a later run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal, Self

from reconciler.core.spec import Gate, Location, PhaseSpec, WaveSpec
from reconciler.core.state import ObservedState, ObservedWave, ProdTargets, RolloutRecord, WaveProgress, WaveStatus
from reconciler.errors import Problem, Severity

EXPIRY_WARNING = timedelta(days=30)


class OpKind(StrEnum):
    """What a step does to a wave; the plan symbol and the JSON ``op`` follow from it."""

    INIT = "init"
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
    """Roll the wave out to one phase's devices: one entry of the wave's rollout history."""

    kind: ClassVar[OpKind] = OpKind.ROLLOUT
    phase: str
    phase_index: int  # 0-based position in the manifest and in the rollout history
    group: str | None = None  # None: factory-wide
    limit: int | None = None
    percentage: int | None = None
    uuids: tuple[str, ...] | None = None
    devices: int | None = None  # from a dry-run rollout, filled in by the shell

    @property
    def key(self) -> StepKey:
        return (self.kind, self.wave, self.phase_index)

    def describe(self) -> str:
        """``rollout v46 phase 'beta' (group beta, limit 10)``."""
        return f"rollout {self.wave} phase '{self.phase}' ({rollout_scope(self)})"


@dataclass(frozen=True, kw_only=True)
class CompleteOp(_Step):
    """Make the wave's targets the tag's production targets."""

    kind: ClassVar[OpKind] = OpKind.COMPLETE


@dataclass(frozen=True, kw_only=True)
class CancelOp(_Step):
    """Stop the wave; devices already updated stay where they are."""

    kind: ClassVar[OpKind] = OpKind.CANCEL


Operation = InitOp | RolloutOp | CompleteOp | CancelOp


def rollout_scope(op: RolloutOp) -> str:
    parts = [f"group {op.group}" if op.group else "factory-wide"]
    if op.limit is not None:
        parts.append(f"limit {op.limit}")
    if op.percentage is not None:
        parts.append(f"limit {op.percentage}%")
    if op.uuids is not None:
        parts.append(f"{len(op.uuids)} uuids")
    return ", ".join(parts)


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
class Plan:
    factory: str
    backend: str
    now: datetime
    operations: tuple[Operation, ...]
    waves: tuple[WaveSummary, ...]
    warnings: tuple[Problem, ...]
    errors: tuple[Problem, ...]
    skipped_manifests: int = 0  # waves for another factory

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
        return replace(self, operations=tuple(op for op in self.operations if op.wave in names),
                       waves=tuple(w for w in self.waves if w.name in names))

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
    """The plan as a run without the offline key sees it: ready inits held, and the steps behind them.

    Only init signs targets; rollouts, completes and cancels need an API token alone. A
    scheduled job that advances gated phases therefore needs no key and no approval, while
    creating a wave waits for the keyed apply job. A held init holds its own wave's later
    steps too, since the wave does not exist yet.
    """
    held = {op.wave for op in plan.operations if isinstance(op, InitOp) and op.ready}
    for op in plan.operations:
        if op.wave in held and op.ready:
            plan = plan.with_operation(op, op.blocked(NEEDS_KEY if isinstance(op, InitOp) else "after init"))
    return plan


def waves_needing_status(specs: list[WaveSpec], observed_waves: dict[str, ObservedWave]) -> set[str]:
    """Active managed waves whose next step has a ``require.updated`` gate: only they need a status call."""
    needed = set()
    for spec in specs:
        wave = observed_waves.get(spec.name)
        if wave is None or wave.status is not WaveStatus.ACTIVE:
            continue
        done = len(wave.history)
        if done < len(spec.phases):
            gate = spec.phases[done].gate
        elif spec.complete is not None:
            gate = spec.complete.gate
        else:
            continue
        if gate.updated_percent is not None:
            needed.add(spec.name)
    return needed


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
        return WaveSummary(name=spec.name, manifest=spec.manifest, tag=spec.tag, target=spec.target, status=self.status,
                           phases=tuple(self.phases), phases_done=self.phases_done, drift=tuple(self.drift),
                           updated=self.updated, rolled_out=self.rolled_out, total=self.total)


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
        for spec in existing:
            self._plan_existing(spec, self.observed.waves[spec.name], state)
        for spec in new:
            self._plan_new(spec, state)

    # -- existing waves ----------------------------------------------------------------------

    def _plan_existing(self, spec: WaveSpec, wave: ObservedWave, state: _TagState) -> None:
        drift = _ledger_drift(spec.phases, wave.history)
        done = min(len(wave.history), len(spec.phases))
        summary = _SummaryDraft(spec, wave.status, done, drift)
        progress = self.observed.progress.get(spec.name)
        if progress is not None:
            summary.updated, summary.rolled_out, summary.total = progress.updated, progress.rolled_out, progress.total
        self.summaries.append(summary)

        conflicts = []
        if wave.version != spec.target:
            conflicts.append(("target", f"target changed: the factory's wave '{spec.name}' promotes {wave.version}, the manifest says "
                             f"{spec.target}; waves are immutable, create a new wave instead"))
        if wave.tag != spec.tag:
            conflicts.append(("tag", f"tag changed: the factory's wave '{spec.name}' is on tag '{wave.tag}', the manifest says "
                             f"'{spec.tag}'; waves are immutable, create a new wave instead"))
        for key, message in conflicts:
            self._error(spec.at(key), message)

        if wave.status is WaveStatus.COMPLETE:
            if spec.cancel:
                self._error(spec.at("cancel"), f"wave '{spec.name}' is complete and cannot be canceled; to take version "
                                           f"{wave.version} out of production, prune it with a new wave")
            elif done < len(spec.phases) or spec.complete is None:
                self._warn(spec.location, f"wave '{spec.name}' was completed in the factory outside the manifests")
            return
        if wave.status is WaveStatus.CANCELED:
            if not spec.cancel:
                self._warn(spec.location, f"wave '{spec.name}' was canceled in the factory; a canceled wave cannot "
                                          f"resume, create a new wave to continue")
            return

        # active
        if conflicts:
            state.busy_reason = f"wave '{spec.name}' has a conflict"
            return
        if spec.cancel:
            self._add(CancelOp(wave=spec.name, tag=spec.tag, status=StepStatus.READY, location=spec.location))
            state.busy_with = None
            return
        if drift:
            reason = "drift: " + "; ".join(drift)
            self._warn(spec.location, f"wave '{spec.name}': {reason}")
            self._block_rest(spec, done, reason, summary)
            state.busy_reason = f"wave '{spec.name}' has drifted from its manifest"
            return
        completes = self._plan_steps(spec, summary, created_at=wave.created_at, history=wave.history,
                                     progress=progress, blocked=None)
        self._after_active(spec, state, completes)

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
        init = InitOp(wave=spec.name, tag=spec.tag, status=_status(reason), location=spec.location, reason=reason,
                      target=spec.target, prune=spec.prune, expires=expires, source_tag=spec.source_tag)
        self._add(init)
        completes = self._plan_steps(spec, summary, created_at=None, history=(), progress=None,
                                     blocked=None if init.ready else "after init")
        if problems:
            state.busy_with, state.busy_reason = spec.name, f"wave '{spec.name}' cannot be created"
            return
        self._after_active(spec, state, completes)

    def _init_problems(self, spec: WaveSpec, state: _TagState) -> list[tuple[Location, str]]:
        problems = []
        if state.prod_version is not None and spec.target <= state.prod_version:
            problems.append((spec.at("target"), f"target {spec.target} must be above the production version of tag '{spec.tag}' "
                            f"({state.prod_version} at this point of the plan)"))
        if self.observed.ci_versions.get(spec.target) is False:
            problems.append((spec.at("target"),
                             f"no CI targets for version {spec.target}: build {spec.target} does not exist in the factory"))
        if spec.target in spec.prune:
            problems.append((spec.at("prune"), f"cannot prune the wave's own version {spec.target}"))
        groups = self.observed.groups
        if groups is not None:
            problems.extend(
                (phase.location, f"phase '{phase.name}': device group '{phase.group}' does not exist in factory "
                                 f"'{self.observed.factory}'; create it or fix the group name")
                for phase in spec.phases if phase.group and phase.group not in groups
            )
        missing = [v for v in spec.prune if v != spec.target and v not in state.prod_versions]
        if missing:
            have = ", ".join(map(str, sorted(state.prod_versions))) or "none"
            problems.append((spec.at("prune"), f"cannot prune {', '.join(map(str, missing))}: not in the production targets of tag "
                            f"'{spec.tag}' (versions: {have})"))
        return problems

    def _expiry(self, spec: WaveSpec) -> datetime:
        if spec.expires_at is not None:
            expires = spec.expires_at
        else:
            expires = self.now + timedelta(seconds=spec.expires_in_seconds or 0)
        if expires <= self.now:
            self._error(spec.at("expiresAt", "expires"), f"expiry {expires:%Y-%m-%dT%H:%M:%SZ} is in the past; set a later expiresAt")
        elif expires - self.now < EXPIRY_WARNING:
            self._warn(spec.at("expiresAt", "expires"), f"wave '{spec.name}' targets would expire within 30 days "
                                      f"({expires:%Y-%m-%dT%H:%M:%SZ})")
        return expires

    # -- steps shared by new and existing waves -----------------------------------------------

    def _plan_steps(self, spec: WaveSpec, summary: _SummaryDraft, *, created_at: datetime | None,
                    history: tuple[RolloutRecord, ...], progress: WaveProgress | None, blocked: str | None) -> bool:
        """Plan the remaining rollouts and the complete; return whether the wave completes in this plan."""
        done = len(history)
        pending_before = False  # a rollout of this wave happens earlier in this plan
        for index in range(done, len(spec.phases)):
            phase = spec.phases[index]
            since = created_at if index == 0 else (history[index - 1].at if index - 1 < done else None)
            reason = blocked or _gate_reason(phase.gate, since, self.now, progress, pending_before)
            self._add(_rollout(spec, phase, index, reason))
            summary.phases[index] = (phase.name, "blocked" if reason else "ready")
            if reason:
                blocked = blocked or f"after phase '{phase.name}'"
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
            reason = _gate_reason(spec.complete.gate, since, self.now, progress, pending_before)
        self._add(CompleteOp(wave=spec.name, tag=spec.tag, status=_status(reason), location=spec.complete.location,
                             reason=reason))
        return reason is None

    def _after_active(self, spec: WaveSpec, state: _TagState, completes: bool) -> None:
        if completes:
            state.busy_with = None
            state.prod_version = spec.target
            state.prod_versions = (state.prod_versions - set(spec.prune)) | {spec.target}
        else:
            state.busy_with = spec.name
            state.busy_reason = _why_still_active(spec)

    def _block_rest(self, spec: WaveSpec, done: int, reason: str, summary: _SummaryDraft) -> None:
        for index in range(done, len(spec.phases)):
            self._add(_rollout(spec, spec.phases[index], index, reason))
            summary.phases[index] = (spec.phases[index].name, "blocked")
        if spec.complete is not None:
            self._add(CompleteOp(wave=spec.name, tag=spec.tag, status=StepStatus.BLOCKED,
                                 location=spec.complete.location, reason=reason))

    # -- reports -----------------------------------------------------------------------------

    def report_unmanaged(self, managed: set[str]) -> None:
        for wave in sorted(self.observed.waves.values(), key=lambda w: w.name):
            if wave.status is WaveStatus.ACTIVE and wave.name not in managed:
                self._warn(Location(""), f"unmanaged active wave '{wave.name}' (version {wave.version}, tag "
                                         f"'{wave.tag}') has no manifest; it is left untouched")

    def _warn_expiry(self, tag: str, prod: ProdTargets | None, specs: list[WaveSpec]) -> None:
        if prod is None or not specs:
            return
        left = prod.expires - self.now
        where = specs[0].location
        if left <= timedelta(0):
            self._warn(where, f"production targets of tag '{tag}' expired at {prod.expires:%Y-%m-%dT%H:%M:%SZ}")
        elif left < EXPIRY_WARNING:
            self._warn(where, f"production targets of tag '{tag}' expire in {format_duration(left)} "
                              f"({prod.expires:%Y-%m-%dT%H:%M:%SZ}); complete a new wave to renew them")

    def _add(self, op: Operation) -> None:
        self.ops.append(op)

    def _error(self, where: Location, message: str) -> None:
        self.errors.append(Problem(where.file, where.line, where.col, message))

    def _warn(self, where: Location, message: str) -> None:
        self.warnings.append(Problem(where.file, where.line, where.col, message, Severity.WARNING))


def _status(reason: str | None) -> StepStatus:
    return StepStatus.BLOCKED if reason else StepStatus.READY


def _rollout(spec: WaveSpec, phase: PhaseSpec, index: int, reason: str | None) -> RolloutOp:
    limit = phase.limit
    return RolloutOp(
        wave=spec.name, tag=spec.tag, status=_status(reason), location=phase.location, reason=reason,
        phase=phase.name, phase_index=index, group=phase.group,
        limit=limit.value if limit and not limit.percent else None,
        percentage=limit.value if limit and limit.percent else None,
        uuids=phase.uuids,
    )


def _why_still_active(spec: WaveSpec) -> str:
    if spec.complete is None:
        return "its manifest keeps it active; set complete or cancel"
    return "it completes once its phases and gates pass"


def _ledger_drift(phases: tuple[PhaseSpec, ...], history: tuple[RolloutRecord, ...]) -> list[str]:
    """Compare the rollout history with the manifest's phases, entry by entry."""
    drift = []
    for index, record in enumerate(history):
        if index >= len(phases):
            drift.append(f"rollout {index + 1} in the factory ({_record_scope(record)}) has no phase in the manifest")
            continue
        phase = phases[index]
        if (record.group or None) != phase.group or record.full_group != phase.full_group \
                or record.factory_wide != phase.factory_wide:
            drift.append(f"rollout {index + 1} in the factory was {_record_scope(record)}, but phase "
                         f"'{phase.name}' is {_phase_scope(phase)}")
    return drift


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


def _gate_reason(gate: Gate, since: datetime | None, now: datetime, progress: WaveProgress | None,
                 pending_before: bool) -> str | None:
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
            share = 100.0 * progress.updated / progress.rolled_out
            if share < gate.updated_percent:
                reasons.append(f"updated {need}: {share:.1f}% ({progress.updated} of {progress.rolled_out} devices)")
    return "; ".join(reasons) or None


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
