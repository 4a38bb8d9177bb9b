"""What `reconcile status` reports: a typed model of each wave's history, progress, next gate and expiry.

Pure, like the planner: the shell (``reconciler/factory/status.py``) reads the factory into the inputs
below and renders the ``StatusReport`` this module computes; nothing here does I/O or reads a clock.

Numbers and their sources (reference/foundries-api.md §1.2, §2.3):

- a phase's *reached* devices are its ``rollout-history`` entry's ``num-devices``; when and by whom
  it rolled out are the entry's ``rollout-at`` and ``rollout-by``. A phase of more than 10,000 UUIDs
  is several entries (core/ledger.py): it is reported as one row per part, "part 2 of 3" in its scope;
- a phase's *updated*, *pending* and *offline* devices are those of its scope in the wave status:
  the phase's group (its ``RolloutGroupStatus``: on the wave version or newer, on an older version,
  total minus online), or the whole tag for a factory-wide phase. They are the scope's numbers, not
  the phase's own: the API does not say which devices of a group a ``limit`` rollout reached;
- the next step's gate is evaluated by the planner's own ``core/gates.py`` on the planner's numbers
  (``WaveProgress``: devices on the wave version or newer over the history's ``num-devices``; for
  ``onlineWithin``, the tag's device list the plan reads too; failure counts; windows and freezes), so
  status and plan never disagree on whether it has passed;
- after a cancel, the devices *left on the canceled version* are the status's devices on the wave
  version (a canceled wave counts devices as they are now, reference §2.3);
- *failed* devices (only when asked: it costs requests per device, ``reconciler/factory/status.py``) are
  counted for the phase's scope like the other numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from msgspec import Struct, field

from reconciler.core import failures, gates, ledger
from reconciler.core.drift import ledger_drift
from reconciler.core.forecast import Forecast, forecast
from reconciler.core.gates import GateResult, UpdatedCheck
from reconciler.core.ledger import Slot
from reconciler.core.plan.reads import selected_specs
from reconciler.core.spec import Gate, OnFailure, PhaseSpec, WaveSpec
from reconciler.core.state import Device, ObservedWave, RolloutRecord, WaveFailures, WaveProgress, WaveStatus
from reconciler.core.text import format_duration, scope_text

ReportStatus = WaveStatus | Literal["absent"]
PhaseState = Literal["done", "next", "pending", "skipped"]


# -- inputs (read from the factory by the shell) ----------------------------------------------------


# A wave and its history entries, as the report reads them: the planner's model (core/state.py), one
# model of one API object; the names stay for the report's callers.


class ScopeCounts(Struct, frozen=True):
    """Production devices of the wave's tag in one scope (a group, or the whole tag), as of now."""

    devices: int
    updated: int  # on the wave version or newer
    pending: int  # on an older version
    offline: int  # not seen within the offline threshold


class WaveCounts(Struct, frozen=True):
    """The parts of a wave's ``status`` answer that the report uses."""

    tag: ScopeCounts  # every group together, devices in no group included
    groups: dict[str, ScopeCounts]  # by group name
    on_wave_version: int  # devices on exactly the wave version


# -- the report -------------------------------------------------------------------------------------


class PhaseReport(Struct, frozen=True):
    name: str
    scope: str  # "group canary", "group us-east, limit 10", "factory-wide"
    group: str | None
    state: PhaseState  # done (rolled out), next (the next step), pending, skipped (the wave finished without it)
    rollout_at: datetime | None = None
    rollout_by: str | None = None
    reached: int | None = None
    counts: ScopeCounts | None = None  # the scope's devices now (see the module docstring)
    failed: int | None = None  # the scope's devices whose update to the wave failed, when asked for


class GateReport(Struct, frozen=True):
    """The next step's gate, evaluated as the planner evaluates it (``core/gates.py``): each condition
    with its numbers, and whether the step may run."""

    step: str  # "rollout <phase>", "complete" or "cancel"
    result: GateResult = field(default_factory=GateResult)
    reached: int | None = None  # devices the rollouts reached, when a condition counts against them
    stopped_by: str | None = None  # why the step cannot run whatever its gate says: drift, or a halt
    because: str | None = None  # why the step is one the reconciler decided on (a cancel by onFailure: cancel)

    @property
    def passed(self) -> bool:
        return self.stopped_by is None and self.result.passed

    @property
    def blocked_by(self) -> str | None:
        """Drift, a halt, a window or a freeze: what holds the step whatever its conditions say."""
        hold = self.result.hold
        return "; ".join(why for why in (self.stopped_by, hold.reason if hold else None) if why) or None

    @property
    def wait_seconds(self) -> int | None:
        return self.result.wait.seconds if self.result.wait else None

    @property
    def wait_passes_at(self) -> datetime | None:
        return self.result.wait.passes_at if self.result.wait else None

    @property
    def updated_required(self) -> float | None:
        return self.result.updated.percent if self.result.updated else None

    @property
    def updated(self) -> int | None:
        check = self.result.updated
        return check.progress.updated if check is not None and check.progress is not None else None

    @property
    def failed_bound(self) -> str | None:
        return str(self.result.failed.bound) if self.result.failed else None

    @property
    def failed(self) -> int | None:
        check = self.result.failed
        return check.failures.failed if check is not None and check.failures is not None else None


class WaveReport(Struct, frozen=True):
    name: str
    tag: str
    version: int
    status: ReportStatus
    manifest: str | None  # None: an unmanaged wave
    created_at: datetime | None = None
    created_by: str | None = None
    finished_at: datetime | None = None
    finished_by: str | None = None
    phases: tuple[PhaseReport, ...] = ()
    next_step: GateReport | None = None
    totals: ScopeCounts | None = None  # the whole tag, when the wave's status was read
    targets_expire: datetime | None = None  # the wave's own targets (active waves)
    production_expire: datetime | None = None  # the tag's production targets
    left_on_canceled: int | None = None  # canceled waves: devices still on the wave version
    forecast: Forecast | None = None  # active managed waves with steps left (core/forecast.py)


class StatusReport(Struct, frozen=True):
    factory: str
    backend: str
    now: datetime
    waves: tuple[WaveReport, ...]


# -- which waves need which calls ------------------------------------------------------------------


def waves_to_report(specs: list[WaveSpec], factory: str, waves: dict[str, ObservedWave]) -> list[str]:
    """Managed waves (in manifest order, absent ones included), then unmanaged active waves by name."""
    managed = [s.name for s in selected_specs(specs, factory)]
    unmanaged = sorted(w.name for w in waves.values() if w.status is WaveStatus.ACTIVE and w.name not in managed)
    return managed + unmanaged


def waves_needing_counts(
    names: list[str], waves: Mapping[str, ObservedWave], prod_versions: Mapping[str, int | None]
) -> list[str]:
    """The waves whose status call is worth its cost: active and canceled ones, and the latest completed
    wave of each tag (the tag's current release). Older completed waves show their history only.

    The latest completed wave of a tag is the one its production targets hold (``prod_versions``: the
    version of each tag's production targets, None for none): completing a wave publishes its targets
    as the tag's, at the wave's version, and a tag's next wave must have a higher version (reference
    §2.1), so no other completed wave of the tag has that version. Known so without reading the tag's
    history, which can hold thousands of waves no manifest names."""
    return [
        name
        for name in names
        if name in waves
        and (
            waves[name].status is not WaveStatus.COMPLETE
            or (
                prod_versions.get(waves[name].tag) is not None and waves[name].version == prod_versions[waves[name].tag]
            )
        )
    ]


def newest_completed(names: list[str], waves: Mapping[str, ObservedWave]) -> dict[str, int]:
    """Each tag's highest version among the completed waves of ``names``: what its production targets
    most likely hold (``waves_needing_counts``), so a status can read that wave's status in the round that
    reads the production targets, instead of in the round after them. Only a guess: production targets
    set outside a wave, or a completed wave beyond ``names``, hold another version."""
    newest: dict[str, int] = {}
    for name in names:
        wave = waves.get(name)
        if wave is not None and wave.status is WaveStatus.COMPLETE and wave.version > newest.get(wave.tag, -1):
            newest[wave.tag] = wave.version
    return newest


# -- building the report ----------------------------------------------------------------------------


def build_status(
    specs: list[WaveSpec],
    *,
    factory: str,
    backend: str,
    now: datetime,
    waves: dict[str, ObservedWave],
    counts: dict[str, WaveCounts],
    wave_expiry: dict[str, datetime],
    prod_expiry: dict[str, datetime],
    failed: dict[str, dict[str, int]] | None = None,
    devices: Mapping[str, Mapping[str, Device]] | None = None,
) -> StatusReport:
    """The report for the waves ``waves_to_report`` names, from what the shell read. ``failed``: per wave
    that was asked for, its failed devices by group name ("" for none). ``devices``: per tag the plan
    would list (``tags_needing_devices``: an ``onlineWithin`` gate), its production devices by UUID."""
    by_name = {s.name: s for s in selected_specs(specs, factory)}
    reports = []
    for name in waves_to_report(specs, factory, waves):
        spec, wave = by_name.get(name), waves.get(name)
        if wave is None:
            assert spec is not None  # only managed waves can be absent
            reports.append(
                WaveReport(
                    name=name,
                    tag=spec.tag,
                    version=spec.target,
                    status="absent",
                    manifest=spec.manifest,
                    production_expire=prod_expiry.get(spec.tag),
                    phases=tuple(_phase(spec.phases[s.phase_index], s, "pending") for s in ledger.slots(spec.phases)),
                )
            )
            continue
        reports.append(
            _wave_report(
                spec,
                wave,
                counts.get(name),
                wave_expiry.get(name),
                prod_expiry.get(wave.tag),
                now,
                (failed or {}).get(name),
                (devices or {}).get(wave.tag),
            )
        )
    return StatusReport(factory=factory, backend=backend, now=now, waves=tuple(reports))


def _wave_report(
    spec: WaveSpec | None,
    wave: ObservedWave,
    counts: WaveCounts | None,
    targets_expire: datetime | None,
    production_expire: datetime | None,
    now: datetime,
    failed: dict[str, int] | None,
    fleet: Mapping[str, Device] | None,
) -> WaveReport:
    planned = spec.phases if spec is not None else ()
    phases = []
    slots = ledger.slots(planned)
    for index, entry in enumerate(wave.history):
        slot = next(slots, None)
        scope_counts = None
        if counts is not None:
            scope_counts = counts.tag if entry.factory_wide else counts.groups.get(entry.group)
        phases.append(
            PhaseReport(
                name=planned[slot.phase_index].name if slot is not None else f"rollout {index + 1}",
                scope=phase_scope(planned[slot.phase_index], slot) if slot is not None else _entry_scope(entry),
                group=entry.group or None,
                state="done",
                rollout_at=entry.at,
                rollout_by=entry.by,
                reached=entry.devices,
                counts=scope_counts,
                failed=None
                if failed is None
                else (sum(failed.values()) if entry.factory_wide else failed.get(entry.group, 0)),
            )
        )
    active = wave.status is WaveStatus.ACTIVE
    for slot in ledger.slots(planned, len(wave.history)):
        state: PhaseState = ("next" if slot.entry == len(wave.history) else "pending") if active else "skipped"
        phases.append(_phase(planned[slot.phase_index], slot, state))
    return WaveReport(
        name=wave.name,
        tag=wave.tag,
        version=wave.version,
        status=wave.status,
        manifest=spec.manifest if spec is not None else None,
        created_at=wave.created_at,
        created_by=wave.created_by,
        finished_at=wave.finished_at,
        finished_by=wave.finished_by or None,
        phases=tuple(phases),
        next_step=_next_step(spec, wave, counts, now, failed, fleet) if active and spec is not None else None,
        forecast=_forecast(spec, wave, counts, now, failed, fleet, targets_expire) if active and spec else None,
        totals=counts.tag if counts is not None else None,
        targets_expire=targets_expire if active else None,
        production_expire=production_expire,
        left_on_canceled=counts.on_wave_version if counts is not None and wave.status is WaveStatus.CANCELED else None,
    )


def _phase(phase: PhaseSpec, slot: Slot, state: PhaseState) -> PhaseReport:
    return PhaseReport(name=phase.name, scope=phase_scope(phase, slot), group=phase.group, state=state)


def phase_scope(phase: PhaseSpec, slot: Slot) -> str:
    """The scope of one rollout of a phase: ``group canary``, or ``factory-wide, 5000 uuids, part 3 of 3``."""
    limit = None if phase.limit is None else str(phase.limit)
    uuids = ledger.part_uuids(phase, slot.part)
    text = scope_text(phase.group, limit, None if uuids is None else len(uuids))
    return text + (f", part {slot.part} of {slot.parts}" if slot.parts > 1 else "")


def _entry_scope(entry: RolloutRecord) -> str:
    if entry.factory_wide:
        return "factory-wide"
    if not entry.group:
        return "a deleted group"
    return f"group {entry.group}" if entry.full_group else f"group {entry.group}, part"


class _Numbers(Struct, frozen=True):
    """What the next step's gate and the forecast read of an active wave, computed once for both."""

    reached: int  # devices the rollouts reached
    counted: WaveFailures | None  # its failed devices, when counted
    exceeded: failures.Breach | None  # a failure bound in force that they exceed
    stopped: str | None  # drift or a halt: no step runs whatever its gate says
    progress: WaveProgress | None  # the require.updated numbers, when the wave's status was read


def _numbers(spec: WaveSpec, wave: ObservedWave, counts: WaveCounts | None, failed: dict[str, int] | None) -> _Numbers:
    done = len(wave.history)
    reached = sum(e.devices for e in wave.history)
    counted = None if failed is None else WaveFailures(failed=sum(failed.values()), reached=reached, rollouts=done)
    exceeded = failures.breach(spec, done, counted)
    drift = ledger_drift(spec.phases, wave.history)  # the planner's own comparison: status and plan agree
    stopped = "drift: " + "; ".join(drift) if drift else (f"halted: {exceeded.text()}" if exceeded else None)
    progress = None if counts is None else WaveProgress(counts.tag.updated, reached, counts.tag.devices)
    return _Numbers(reached, counted, exceeded, stopped, progress)


def _next_step(
    spec: WaveSpec,
    wave: ObservedWave,
    counts: WaveCounts | None,
    now: datetime,
    failed: dict[str, int] | None,
    fleet: Mapping[str, Device] | None,
) -> GateReport | None:
    """The gate of the manifest's next step for an active wave, evaluated as the planner evaluates it
    (``core/gates.py``): failure bounds (``core/failures.py``) when the wave's failed devices were
    counted, ``onlineWithin`` on the tag's devices (``fleet``) when they were listed."""
    done = len(wave.history)
    if spec.cancel:
        return GateReport(step="cancel")
    numbers = _numbers(spec, wave, counts, failed)
    if numbers.exceeded is not None and spec.on_failure is OnFailure.CANCEL:
        return GateReport(step="cancel", because=f"onFailure: cancel: {numbers.exceeded.text()}")
    slot = next(ledger.slots(spec.phases, done), None)
    if slot is not None:
        phase = spec.phases[slot.phase_index]
        # a later part of a phase follows its first part without a gate
        step, gate = f"rollout {phase.name}{slot.label()}", phase.gate if slot.first else Gate()
    elif spec.complete is not None:
        step, gate = "complete", spec.complete.gate
    else:
        return None
    result = gates.evaluate(
        gate,
        now=now,
        since=wave.history[-1].at if wave.history else wave.created_at,
        rollouts=done,
        progress=numbers.progress,
        fleet=fleet,
        failures=numbers.counted,
        hold=None if spec.schedule.empty else spec.schedule.hold(now),  # a window or freeze, as the plan holds it
    )
    counts_devices = gate.updated_percent is not None or gate.failed is not None
    return GateReport(
        step=step, result=result, reached=numbers.reached if counts_devices else None, stopped_by=numbers.stopped
    )


def _forecast(
    spec: WaveSpec,
    wave: ObservedWave,
    counts: WaveCounts | None,
    now: datetime,
    failed: dict[str, int] | None,
    fleet: Mapping[str, Device] | None,
    expires: datetime | None,
) -> Forecast | None:
    """When the wave's remaining steps can run at the earliest (``core/forecast.py``), on the numbers the
    next step's gate reads; None when none is left or a cancel is next."""
    numbers = _numbers(spec, wave, counts, failed)
    if spec.cancel or (numbers.exceeded is not None and spec.on_failure is OnFailure.CANCEL):
        return None
    result = forecast(
        spec,
        now=now,
        history=wave.history,
        created_at=wave.created_at,
        expires=expires,
        progress=numbers.progress,
        fleet=fleet,
        failures=numbers.counted,
        stopped=numbers.stopped,
    )
    return result if result.steps else None


def _share(need: str, count: int | None, reached: int | None, unread: str) -> str:
    """A share condition with its numbers: ``updated 90%: 45.0% (45 of 100)``."""
    if count is None:
        return f"{need}: {unread}"
    if not reached:
        return f"{need}: no devices reached yet"
    return f"{need}: {100.0 * count / reached:.1f}% ({count} of {reached})"


def _updated(check: UpdatedCheck) -> str:
    """``updated 90%: 45.0% (45 of 100)``; with ``onlineWithin``, the offline devices it leaves out:
    ``updated 90% of devices seen within 1h: 100.0% (8 of 8, 2 offline left out)``."""
    need = f"updated {check.percent:g}%"
    progress = check.progress
    if check.online_within is None or progress is None or not progress.rolled_out:
        return _share(need, None if progress is None else progress.updated, check.counted, "unknown")
    need += f" of devices seen within {format_duration(check.online_within)}"
    left_out = f"{progress.rolled_out - check.counted} offline left out"
    if not check.counted:
        return f"{need}: no online device reached yet ({left_out})"
    return f"{need}: {check.share:.1f}% ({progress.updated} of {check.counted}, {left_out})"


def gate_text(gate: GateReport, now: datetime) -> str:
    """``rollout eu: wait 24h passes 2026-11-02T08:00:00Z (in 13h12m); updated 90%: 45.0% (9 of 20)``."""
    parts = []
    if gate.blocked_by:
        parts.append(f"blocked: {gate.blocked_by}")
    if gate.wait_seconds and gate.wait_passes_at is not None:
        when = gate.wait_passes_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        left = gate.wait_passes_at - now
        parts.append(
            f"wait {format_duration(gate.wait_seconds)} "
            + (f"passes {when} (in {format_duration(left)})" if left > timedelta(0) else f"passed {when}")
        )
    if (updated := gate.result.updated) is not None:
        parts.append(_updated(updated))
    if gate.failed_bound is not None:
        parts.append(_share(f"failed {gate.failed_bound}", gate.failed, gate.reached, "not counted"))
    if gate.because:
        parts.append(f"because {gate.because}")
    verdict = "ready" if gate.passed else "waiting"
    return f"{gate.step}: {verdict}" + (f" ({'; '.join(parts)})" if parts else "")


# -- devices of a wave (``reconcile status --devices WAVE``) ----------------------------------------

DeviceState = Literal["updated", "failed", "offline", "pending", "left"]


class DeviceFacts(Struct, frozen=True):
    """One device from the device list, with the version its ``target-name`` names (None: unknown)."""

    uuid: str
    name: str
    group: str
    last_seen: datetime | None
    target_name: str
    version: int | None
    in_wave: bool  # ``is-wave``: an active wave staged it


class LastUpdate(Struct, frozen=True):
    """A device's newest update (``devices updates``) and, when read, whether its events report a failure."""

    version: str
    target: str
    at: str  # as the API wrote it (the JSON output keeps it)
    failed: bool | None  # None: events not read
    at_utc: datetime | None = None  # ``at`` read as UTC, None when unreadable


class DeviceRow(Struct, frozen=True):
    device: DeviceFacts
    state: DeviceState
    last_update: LastUpdate | None = None


def reached(wave: ObservedWave, device: DeviceFacts) -> bool:
    """Devices a wave is about: staged by the active wave (``is-wave``); every production device of
    the tag for a completed wave; for a canceled wave, the devices it left on its version."""
    if wave.status is WaveStatus.ACTIVE:
        return device.in_wave
    if wave.status is WaveStatus.COMPLETE:
        return True
    return device.version == wave.version


def is_updated(wave: ObservedWave, device: DeviceFacts) -> bool:
    return device.version is not None and device.version >= wave.version


def is_offline(device: DeviceFacts, now: datetime, threshold: timedelta) -> bool:
    return device.last_seen is None or now - device.last_seen > threshold


def needs_events(wave: ObservedWave, device: DeviceFacts, now: datetime, threshold: timedelta) -> bool:
    """Only an online device the wave reached that is not on its version can have failed to update to it."""
    return (
        wave.status is not WaveStatus.CANCELED
        and reached(wave, device)
        and not is_updated(wave, device)
        and not is_offline(device, now, threshold)
    )


def classify(
    wave: ObservedWave, device: DeviceFacts, last: LastUpdate | None, now: datetime, threshold: timedelta
) -> DeviceState:
    """updated (on the wave version or newer), offline (not seen within the threshold), failed (online,
    and its newest update, to the wave version, reported a failed event), else pending. After a cancel
    the devices it left behind are "left"."""
    if wave.status is WaveStatus.CANCELED:
        return "left"
    if is_updated(wave, device):
        return "updated"
    if is_offline(device, now, threshold):
        return "offline"
    if last is not None and last.failed and last.version == str(wave.version):
        return "failed"
    return "pending"
