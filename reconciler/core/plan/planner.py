"""The planner: (desired waves, observed factory, its clock) -> an ordered plan.

Pure: no I/O, no clock, no network. The rules of planning (``docs/architecture.md``, "Planning") live
here so they can be tested with hand-built states:

- the factory's rollout history is the ledger: phase *i* is done when history entry *i*
  exists and matches it; a history that does not match is drift and blocks that wave (``core/drift.py``);
- waves are immutable once created (target and tag);
- per tag: cancel or complete of the older wave, then init of the newer one, then its
  rollouts in phase order, then its complete; one active wave per tag and the version rule
  are simulated across the whole plan;
- gates (``wait``, ``require.updated``, ``require.failed``, windows and freezes; ``core/gates.py``)
  block a step with a human reason, and every later step of that wave is blocked behind it;
- a failure bound in force (``require.failed``, ``core/failures.py``) that the wave's failed
  devices exceed halts the wave with an error or, with ``onFailure: cancel``, plans its cancel.

Errors (user mistakes such as a changed target or a version below production, ``plan/checks.py``) make
the plan refuse to apply; blocked steps are normal and wait for a later run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from msgspec import Struct, field
from msgspec.structs import replace

from reconciler.core import failures, gates, ledger
from reconciler.core import signatures as sigs
from reconciler.core.deltas import missing_deltas_warning
from reconciler.core.drift import drift_problems, ledger_drift
from reconciler.core.forecast import Forecast, forecast
from reconciler.core.gates import GateResult
from reconciler.core.plan import checks
from reconciler.core.plan.model import (
    CancelOp,
    CompleteOp,
    Held,
    InitOp,
    Operation,
    PhaseState,
    Plan,
    SignOp,
    StepStatus,
    SummaryStatus,
    WaveSummary,
    rollout_op,
    step_status,
)
from reconciler.core.plan.reads import active_tags, selected_specs
from reconciler.core.spec import Gate, Location, LostManifest, ManifestChange, OnFailure, WaveSpec
from reconciler.core.state import ObservedState, ObservedWave, RolloutRecord, WaveProgress, WaveStatus
from reconciler.core.text import counted
from reconciler.core.windows import Hold
from reconciler.errors import Problem, Severity


def build_plan(specs: list[WaveSpec], observed: ObservedState, lost: Mapping[str, LostManifest] | None = None) -> Plan:
    """``lost``: active waves no manifest names whose manifest a commit renamed or deleted (by wave name)."""
    chosen = selected_specs(specs, observed.factory)
    planner = _Planner(observed, lost or {})
    for tag in sorted({s.tag for s in chosen} | active_tags(observed.waves.values())):
        planner.plan_tag(tag, [s for s in chosen if s.tag == tag])
    planner.report_unmanaged({s.name for s in chosen}, _manifest_directory(specs))
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


class _SummaryDraft(Struct):
    """A wave's summary while the planner fills in its phases; frozen into a ``WaveSummary`` at the end."""

    spec: WaveSpec
    status: SummaryStatus
    phases_done: int
    drift: list[str]
    phases: list[tuple[str, PhaseState]] = field(default_factory=list)
    updated: int | None = None
    rolled_out: int | None = None
    total: int | None = None
    forecast: Forecast | None = None

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
            forecast=self.forecast,
        )


class _TagState(Struct):
    """A tag as it will be at the current point of the plan."""

    busy_with: str | None  # the wave that is active at this point, if any
    busy_reason: str  # why that wave stays active (for the blocked init's reason)
    prod_version: int | None
    prod_versions: frozenset[int]


class _Planner:
    def __init__(self, observed: ObservedState, lost: Mapping[str, LostManifest]):
        self.observed = observed
        self.lost = lost
        self.now = observed.now
        self.ops: list[Operation] = []
        self.summaries: list[_SummaryDraft] = []
        self.warnings: list[Problem] = []
        self.errors: list[Problem] = []
        self.held: list[Held] = []

    # -- per tag -----------------------------------------------------------------------------

    def plan_tag(self, tag: str, specs: list[WaveSpec]) -> None:
        prod = self.observed.prod_targets.get(tag)
        if (warning := checks.production_expiry_warning(tag, prod, specs, self.now)) is not None:
            self._warn(*warning)
        active = [w for w in self.observed.waves.values() if w.tag == tag and w.status is WaveStatus.ACTIVE]
        state = _TagState(
            busy_with=active[0].name if active else None,
            busy_reason="",
            prod_version=prod.version if prod else None,
            prod_versions=prod.versions if prod else frozenset(),
        )
        managed = {s.name for s in specs}
        hold_from: int | None = None
        holder = ""
        if active and active[0].name not in managed:
            if (lost := self.lost.get(active[0].name)) is not None:
                self._lost_manifest(active[0], lost)
                state.busy_reason = f"its manifest was {lost.change} by commit {lost.short}"
                hold_from, holder = len(self.ops), active[0].name
            else:
                state.busy_reason = "not managed by any manifest; complete or cancel it by hand"

        existing = sorted(
            (s for s in specs if s.name in self.observed.waves),
            key=lambda s: self.observed.waves[s.name].created_at,
        )
        new = sorted((s for s in specs if s.name not in self.observed.waves), key=lambda s: (s.target, s.name))
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

    def _lost_manifest(self, wave: ObservedWave, lost: LostManifest) -> None:
        """A managed wave whose manifest is gone would stall its tag in silence: an error that says which
        commit took the manifest away and how to bring the wave back under a manifest."""
        what = "deleted" if lost.change is ManifestChange.DELETED else "renamed the wave in"
        restore = "restore the file" if lost.change is ManifestChange.DELETED else f"set name: {wave.name} again"
        self._error(
            Location(""),
            f"active wave '{wave.name}' (version {wave.version}, tag '{wave.tag}') lost its manifest: commit "
            f"{lost.short} ({lost.subject}) {what} {lost.path}; a wave's name is how its manifest finds it. "
            f"Bring it back (git revert {lost.short}, or {restore}), then finish the wave there with "
            f"cancel: true or complete: true before the next wave of tag '{wave.tag}' starts",
        )
        self.held.append(
            Held(wave.name, wave.tag, f"its manifest was {lost.change} by commit {lost.short} ({lost.subject})")
        )

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
            if spec.ignored_complete is not None:
                self._warn(spec.ignored_complete, "cancel: true wins: the complete block is ignored")
            state.busy_with = None
            return
        if drift:
            for where, message in drift_problems(spec, wave.history):
                self._error(where, message)
            self._block_rest(spec, len(wave.history), "drift: " + "; ".join(drift), summary)
            state.busy_reason = f"wave '{spec.name}' has drifted from its manifest"
            return
        if (exceeded := failures.breach(spec, len(wave.history), self.observed.failures.get(spec.name))) is not None:
            self._on_failure(spec, wave, state, summary, exceeded)
            return
        for where, message in checks.phase_problems(spec, done, self.observed) + checks.expiry_problems(
            spec, wave, self.observed
        ):
            self._error(where, message)
        summary.forecast = forecast(
            spec,
            now=self.now,
            history=wave.history,
            created_at=wave.created_at,
            expires=self.observed.wave_expires.get(spec.name),
            progress=progress,
            fleet=self.observed.devices.get(spec.tag),
            failures=self.observed.failures.get(spec.name),
        )
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
        self._block_rest(spec, len(wave.history), f"halted: {exceeded.text()}", summary, behind_first=True)
        state.busy_reason = f"wave '{spec.name}' is halted by a failure bound"

    # -- new waves ---------------------------------------------------------------------------

    def _plan_new(self, spec: WaveSpec, state: _TagState) -> None:
        summary = _SummaryDraft(spec, "absent", 0, [])
        self.summaries.append(summary)
        if spec.cancel:
            self._warn(spec.location, f"wave '{spec.name}' does not exist in the factory; nothing to cancel")
            return

        problems = checks.init_problems(spec, self.observed, state.prod_version, state.prod_versions)
        for where, message in problems:
            self._error(where, message)
        expires, expiry = checks.new_wave_expiry(spec, self.now)
        if expiry is not None:
            (self.errors if expiry.severity is Severity.ERROR else self.warnings).append(expiry)
        reason = None
        if problems:
            reason = problems[0][1]
        elif state.busy_with is not None:
            why = f" ({state.busy_reason})" if state.busy_reason else ""
            reason = f"tag '{spec.tag}' has active wave '{state.busy_with}'{why}"
        init = InitOp(
            wave=spec.name,
            tag=spec.tag,
            status=step_status(reason),
            location=spec.location,
            reason=reason,
            target=spec.target,
            prune=spec.prune,
            expires=expires,
            source_tag=spec.source_tag,
        )
        self._add(init)
        if init.ready:  # created now: its steps count from now
            summary.forecast = forecast(spec, now=self.now, expires=expires)
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
        for slot in ledger.slots(spec.phases, done):
            phase = spec.phases[slot.phase_index]
            since = created_at if slot.entry == 0 else (history[slot.entry - 1].at if slot.entry - 1 < done else None)
            gate = phase.gate if slot.first else Gate()  # the later parts of a phase follow its first
            reason = blocked or self._gate(spec, gate, since, progress, done, pending_before, window).reason()
            self._add(rollout_op(spec, phase, slot, reason, None if blocked else window))
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
            reason = self._gate(spec, spec.complete.gate, since, progress, done, pending_before, window).reason()
        self._add(
            CompleteOp(
                wave=spec.name,
                tag=spec.tag,
                status=step_status(reason),
                location=spec.complete.location,
                reason=reason,
                opens_at=None if blocked or window is None else window.opens_at,
            )
        )
        return reason is None

    def _gate(
        self,
        spec: WaveSpec,
        gate: Gate,
        since: datetime | None,
        progress: WaveProgress | None,
        rollouts: int,
        pending_before: bool,
        window: Hold | None,
    ) -> GateResult:
        """A step's gate, as ``reconcile status`` evaluates it too (``core/gates.py``)."""
        return gates.evaluate(
            gate,
            now=self.now,
            since=since,
            rollouts=rollouts,
            progress=progress,
            fleet=self.observed.devices.get(spec.tag),
            failures=self.observed.failures.get(spec.name),
            pending_before=pending_before,
            hold=window,
        )

    def _sign(self, spec: WaveSpec, short: sigs.Shortfall, reason: str | None) -> None:
        """Add the wave's sign step (at its manifest's first line), ready unless ``reason`` says why not."""
        self._add(
            SignOp(
                wave=spec.name,
                tag=spec.tag,
                status=step_status(reason),
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

    def _block_rest(
        self, spec: WaveSpec, entries: int, reason: str, summary: _SummaryDraft, behind_first: bool = False
    ) -> None:
        """Block every rollout after the history's ``entries`` entries, and the complete. ``behind_first``:
        only the first carries ``reason``; the later steps wait behind it (``after phase '...'``)."""
        for position, slot in enumerate(ledger.slots(spec.phases, entries)):
            phase = spec.phases[slot.phase_index]
            self._add(rollout_op(spec, phase, slot, reason))
            summary.phases[slot.phase_index] = (phase.name, "blocked")
            if behind_first and position == 0:
                reason = f"after phase '{phase.name}'"
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

    def report_unmanaged(self, managed: set[str], directory: str | None) -> None:
        """Warn of each active wave no manifest manages, with the exact ``reconcile import`` that adopts it
        (into ``directory``, the manifests' own; ``DIR`` when there are none to tell it)."""
        into = _shell_word(directory) if directory is not None else "DIR (DIR: the directory of your manifests)"
        for wave in sorted(self.observed.waves.values(), key=lambda w: w.name):
            if wave.status is WaveStatus.ACTIVE and wave.name not in managed and wave.name not in self.lost:
                self._warn(
                    Location(""),
                    f"unmanaged active wave '{wave.name}' (version {wave.version}, tag "
                    f"'{wave.tag}') has no manifest; it is left untouched. To adopt it, write its manifest "
                    f"with: reconcile import --factory {_shell_word(self.observed.factory)} --wave "
                    f"{_shell_word(wave.name)} {into}",
                )

    def _add(self, op: Operation) -> None:
        self.ops.append(op)

    def _error(self, where: Location, message: str) -> None:
        self.errors.append(Problem(where.file, where.line, where.col, message))

    def _warn(self, where: Location, message: str) -> None:
        self.warnings.append(Problem(where.file, where.line, where.col, message, Severity.WARNING))


def _manifest_directory(specs: list[WaveSpec]) -> str | None:
    """The directory holding every manifest (their deepest common one, as the files are named in messages),
    where ``reconcile import`` should write the manifests it adopts; None without a manifest. String work
    on the names only: the core reads no file system."""
    folders = [spec.location.file.split("/")[:-1] for spec in specs if spec.location.file]
    if not folders:
        return None
    common = folders[0]
    for parts in folders[1:]:
        same = 0
        while same < min(len(common), len(parts)) and common[same] == parts[same]:
            same += 1
        common = common[:same]
    return "/".join(common) or ("/" if folders[0][:1] == [""] else ".")


def _shell_word(text: str) -> str:
    """``text`` as one shell word, for the import command the unmanaged-wave warning gives to copy: a
    factory's names are untrusted, so anything but name and path characters is single-quoted."""
    return text if re.fullmatch(r"[A-Za-z0-9_./+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _why_still_active(spec: WaveSpec) -> str:
    if spec.complete is None:
        return "its manifest keeps it active; set complete or cancel"
    return "it completes once its phases and gates pass"
