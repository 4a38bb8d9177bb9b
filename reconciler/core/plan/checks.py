"""The plan-time checks: what makes a step an error before anything is sent to the factory.

A new wave's target, prune list, tag, sourceTag and expiry; the groups and UUIDs of the phases still to
roll out; an active wave whose targets expired or will before its remaining steps can run (their waits,
windows and freezes: ``core/forecast.py``); a tag whose production targets expire soon; a rollout whose
dry run reaches no device (``empty_rollout_warnings``, once the shell has counted). Each check returns its findings at the manifest line they concern; the
planner (``plan/planner.py``) turns them into errors or warnings and holds the steps they concern.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta

from msgspec.structs import replace

from reconciler.core import ledger
from reconciler.core.forecast import Forecast, forecast
from reconciler.core.plan.model import Plan, RolloutOp, rollout_scope
from reconciler.core.spec import Location, PhaseSpec, WaveSpec
from reconciler.core.state import Device, ObservedState, ObservedWave, ProdTargets
from reconciler.core.text import EXPIRY_WARNING, counted, format_duration
from reconciler.errors import Problem, Severity

MAX_REPORTED_UUIDS = 10  # unknown UUIDs reported one by one per phase; the rest get one summary line

Finding = tuple[Location, str]  # a problem's place in a manifest and its message


def init_problems(
    spec: WaveSpec, observed: ObservedState, prod_version: int | None, prod_versions: frozenset[int]
) -> list[Finding]:
    """Why a wave cannot be created: its target, prune list, tag or sourceTag, or a phase (``phase_problems``).
    ``prod_version`` and ``prod_versions`` are the tag's as they will be at this point of the plan."""
    problems: list[Finding] = []
    if prod_version is not None and spec.target <= prod_version:
        problems.append(
            (
                spec.at("target"),
                f"target {spec.target} must be above the production version of tag '{spec.tag}' "
                f"({prod_version} at this point of the plan)",
            )
        )
    if observed.ci_versions.get(spec.target) is False:
        problems.append(
            (
                spec.at("target"),
                f"no CI targets for version {spec.target}: build {spec.target} does not exist in the factory",
            )
        )
    if spec.target in spec.prune:
        problems.append((spec.at("prune"), f"cannot prune the wave's own version {spec.target}"))
    tags = observed.tag_devices
    if tags is not None and not tags.get(spec.tag):
        ranked = sorted(((t, n) for t, n in tags.items() if n), key=lambda item: (-item[1], item[0]))
        listing = ", ".join(f"'{t}' ({n} devices)" for t, n in ranked) or "none"
        problems.append(
            (
                spec.at("tag"),
                f"no production device follows tag '{spec.tag}'; production tags in "
                f"factory '{observed.factory}': {listing}; "
                f"{_did_you_mean(spec.tag, [t for t, _ in ranked]) or 'fix the tag'}",
            )
        )
    ci_tags = observed.ci_tags.get(spec.target)
    if (
        spec.source_tag is not None
        and ci_tags is not None
        and observed.ci_versions.get(spec.target)
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
    problems += phase_problems(spec, 0, observed)
    missing = [v for v in spec.prune if v != spec.target and v not in prod_versions]
    if missing:
        have = ", ".join(map(str, sorted(prod_versions))) or "none"
        problems.append(
            (
                spec.at("prune"),
                f"cannot prune {', '.join(map(str, missing))}: not in the production targets of tag "
                f"'{spec.tag}' (versions: {have})",
            )
        )
    return problems


def phase_problems(spec: WaveSpec, start: int, observed: ObservedState) -> list[Finding]:
    """Phases still to roll out: their groups exist, their UUIDs are production devices of the tag (and group)."""
    problems: list[Finding] = []
    groups = observed.groups
    fleet = observed.devices.get(spec.tag, observed.named_devices.get(spec.tag))
    for phase in spec.phases[start:]:
        if groups is not None and phase.group and phase.group not in groups:
            problems.append(
                (
                    phase.at("group"),
                    f"phase '{phase.name}': device group '{phase.group}' does not exist in "
                    f"factory '{observed.factory}'; "
                    f"{_did_you_mean(phase.group, sorted(groups)) or 'create it or fix the group name'}",
                )
            )
        if phase.uuids and fleet is not None:
            problems += _uuid_problems(spec, phase, fleet)
    return problems


def expiry_problems(spec: WaveSpec, wave: ObservedWave, observed: ObservedState) -> list[Finding]:
    """An active wave whose targets expired, or will before its remaining steps can run (their waits, windows
    and freezes: ``core/forecast.py``, every gate assumed to pass at once), cannot go on."""
    expires = observed.wave_expires.get(spec.name)
    done, _ = ledger.position(spec.phases, len(wave.history))
    if expires is None or (done >= len(spec.phases) and spec.complete is None):
        return []
    where = spec.at("expiresAt", "expires")
    stamp = f"{expires:%Y-%m-%dT%H:%M:%SZ}"
    advice = (
        "cancel it (cancel: true) and promote the build again in a new wave, with a new name and an expiry "
        "longer than its waits"
    )
    if expires <= observed.now:
        return [
            (
                where,
                f"wave '{spec.name}' expired at {stamp}: its targets can no longer be rolled out or "
                f"completed; {advice}",
            )
        ]
    result = forecast(spec, now=observed.now, history=wave.history, created_at=wave.created_at, expires=expires)
    last = result.done_at
    if last is None or last <= expires:
        return []
    left = f"in {format_duration(expires - observed.now)}"
    if not result.scheduled:
        return [
            (
                where,
                f"wave '{spec.name}' expires at {stamp}, {left}, but its remaining waits take "
                f"{format_duration(last - observed.now)}; {advice}",
            )
        ]
    return [(where, f"wave '{spec.name}' expires at {stamp}, {left}, but {_held_text(result)}; {advice}")]


def new_wave_expiry(spec: WaveSpec, now: datetime) -> tuple[datetime, Problem | None]:
    """The expiry a new wave's targets get, with an error when it is past or comes before the wave's last
    step can run (its waits, windows and freezes, from its creation now: ``core/forecast.py``), or a
    warning when it is near (``EXPIRY_WARNING``)."""
    if spec.expires_at is not None:
        expires = spec.expires_at
    else:
        expires = now + timedelta(seconds=spec.expires_in_seconds or 0)
    where = spec.at("expiresAt", "expires")
    key = "expiresAt" if spec.expires_at is not None else "expires"
    result = forecast(spec, now=now, expires=expires)
    last = result.done_at
    if expires <= now:
        return expires, _problem(
            where,
            f"expiry {expires:%Y-%m-%dT%H:%M:%SZ} is in the past; set a later expiresAt",
        )
    elif last is not None and now < last and expires <= last and not result.scheduled:
        return expires, _problem(
            where,
            f"wave '{spec.name}' would expire ({format_duration(expires - now)} "
            f"from now) before its waits are over ({format_duration(last - now)} in all): an expired wave cannot "
            f"be rolled out or completed; set {key} well beyond the waits (e.g. expires: 365d)",
        )
    elif last is not None and expires <= last:
        return expires, _problem(
            where,
            f"wave '{spec.name}' would expire ({format_duration(expires - now)} from now, "
            f"{expires:%Y-%m-%dT%H:%M:%SZ}) before it can be done: {_held_text(result)}: an expired wave cannot "
            f"be rolled out or completed; set {key} well beyond that (e.g. expires: 365d)",
        )
    elif expires - now < EXPIRY_WARNING:
        return expires, _problem(
            where,
            f"wave '{spec.name}' targets would expire within 30 days ({expires:%Y-%m-%dT%H:%M:%SZ})",
            Severity.WARNING,
        )
    return expires, None


def _held_text(result: Forecast) -> str:
    """``with its waits, windows and freezes its complete runs no earlier than Mon 2026-11-30 09:00 CET
    (held: frozen until ...)``: the last step and the last hold that pushed a step later."""
    last = result.steps[-1]
    assert last.at is not None  # only a forecast that reaches its end is compared with the expiry
    held = next((step for step in reversed(result.steps) if step.hold is not None), None)
    because = f" ({held.step} held: {held.hold})" if held is not None else ""
    return f"with its waits, windows and freezes its {last.step} runs no earlier than {result.local(last.at)}{because}"


def production_expiry_warning(
    tag: str, prod: ProdTargets | None, specs: list[WaveSpec], now: datetime
) -> Finding | None:
    """A warning, at the tag's first manifest, when the tag's production targets expired or expire soon."""
    if prod is None or not specs:
        return None
    left = prod.expires - now
    where = specs[0].location
    if left <= timedelta(0):
        return where, f"production targets of tag '{tag}' expired at {prod.expires:%Y-%m-%dT%H:%M:%SZ}"
    elif left < EXPIRY_WARNING:
        return (
            where,
            f"production targets of tag '{tag}' expire in {format_duration(left)} "
            f"({prod.expires:%Y-%m-%dT%H:%M:%SZ}); complete a new wave to renew them",
        )
    return None


def _problem(where: Location, message: str, severity: Severity = Severity.ERROR) -> Problem:
    return Problem(where.file, where.line, where.col, message, severity)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def _uuid_problems(spec: WaveSpec, phase: PhaseSpec, fleet: dict[str, Device]) -> list[Finding]:
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


def empty_rollout_warnings(plan: Plan, observed: ObservedState) -> Plan:
    """The plan with a warning at each rollout whose dry run reaches 0 devices, and why when the observation
    knows: a phase that stages nothing goes by silently otherwise (its rollout still makes a history entry)."""
    found = [
        Problem(
            op.location.file,
            op.location.line,
            op.location.col,
            f"phase '{op.phase}'{op.part_label} of wave '{op.wave}' ({rollout_scope(op)}) reaches 0 devices "
            f"now: {_why_no_device(op, observed)}",
            Severity.WARNING,
        )
        for op in plan.operations
        if isinstance(op, RolloutOp) and op.devices == 0
    ]
    return replace(plan, warnings=tuple(sorted([*plan.warnings, *found]))) if found else plan


def _why_no_device(op: RolloutOp, observed: ObservedState) -> str:
    """Why a rollout's dry run reaches no device, from the devices of its scope when they were read."""
    scope = _scope_devices(op, observed)
    if scope is None:
        return (
            "its devices may be staged by the wave already, offline or on its version or newer, or there is no "
            "device in its scope (this run did not read the device list)"
        )
    if not scope:
        where = f"in group '{op.group}'" if op.group is not None else "on the tag"
        return f"no production device of tag '{op.tag}' is {where}"
    staged, devices = sum(device.in_wave for device in scope), counted(len(scope), "device")
    elsewhere = "on its version or newer, or left out by the factory"
    if 0 < staged < len(scope):
        return f"of the {devices} in its scope, {staged} {'is' if staged == 1 else 'are'} staged by the wave already, the other {len(scope) - staged} {elsewhere}"
    are = "is" if len(scope) == 1 else "are"
    return f"the {devices} in its scope {are} {'staged by the wave already' if staged else elsewhere}"


def _scope_devices(op: RolloutOp, observed: ObservedState) -> list[Device] | None:
    """The production devices of a rollout's scope, when the observation read them (None: not read)."""
    if op.uuids is not None:
        known = {**observed.devices.get(op.tag, {}), **observed.named_devices.get(op.tag, {})}
        if any(uuid not in known for uuid in op.uuids):
            return None
        return [known[uuid] for uuid in op.uuids]
    if op.tag not in observed.devices:
        return None
    return [d for d in observed.devices[op.tag].values() if op.group is None or d.group == op.group]
