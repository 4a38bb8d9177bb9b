"""Which reads a plan needs: pure answers to "does the observation have to read this?".

``reconciler.factory.observe`` asks these before it reads anything beyond the wave list, so a run reads
only what its plan uses: a status call for a ``require.updated`` gate, a tag's device list for
``onlineWithin``, the UUIDs pending phases name, the group list, dry runs of the next rollouts.
``reconcile status`` asks the same questions, so its gates read what the plan's read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from typing import Protocol

from reconciler.core import ledger
from reconciler.core.drift import ledger_drift
from reconciler.core.plan.model import RolloutOp, rollout_op
from reconciler.core.spec import Gate, WaveSpec
from reconciler.core.state import ObservedWave, WaveProgress, WaveStatus


class FactoryWave(Protocol):
    """A wave as the planner (``ObservedWave``) or ``reconcile status`` (``ObservedWave``) reads it: both ask
    which device lists a gate needs, so that status evaluates ``onlineWithin`` as the plan does."""

    @property
    def tag(self) -> str: ...

    @property
    def status(self) -> WaveStatus: ...

    @property
    def history(self) -> Sized: ...


def _updated_gates(specs: Iterable[WaveSpec], observed_waves: Mapping[str, FactoryWave]) -> dict[str, Gate]:
    """Active managed waves whose next step has a ``require.updated`` gate, with that gate."""
    gates: dict[str, Gate] = {}
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
    specs: Iterable[WaveSpec],
    observed_waves: Mapping[str, FactoryWave],
    progress: Mapping[str, WaveProgress] | None = None,
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
            rollouts.append(rollout_op(spec, spec.phases[slot.phase_index], slot, None))
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


def active_tags(waves: Iterable[ObservedWave]) -> set[str]:
    """Tags with an active wave in the factory: each is planned even without a manifest of its own."""
    return {w.tag for w in waves if w.status is WaveStatus.ACTIVE}
