"""Drift: a wave's rollout history in the factory that its manifest's phases do not explain.

The factory's rollout history is the ledger (``docs/architecture.md``, "The ledger"): history entry
*i* is the rollout of the slot *i* of the manifest's phases (``core/ledger.py``). An entry whose scope
differs from its phase's, or that reached more devices than its phase can send to, was not made from
the manifest as it is now; the planner blocks the wave on it and ``reconcile status`` shows it, both
from ``ledger_drift``.
"""

from __future__ import annotations

from reconciler.core import ledger
from reconciler.core.ledger import Slot
from reconciler.core.spec import Location, PhaseSpec, WaveSpec
from reconciler.core.state import RolloutRecord


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


def drift_problems(spec: WaveSpec, history: tuple[RolloutRecord, ...]) -> list[tuple[Location, str]]:
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
