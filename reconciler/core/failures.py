"""Failure bounds (``require.failed``) and what a wave does when one is exceeded (``onFailure``).

Pure, like the planner that uses it. When a bound is in force, and so when it is evaluated:

- A bound belongs to the gate of a step (a phase, or complete). It comes into force when that step
  becomes the wave's next one and stays in force until the wave is completed or canceled, so a bound
  is evaluated continuously, on every run, not only once before its step: a build that starts failing
  after its phase rolled out still halts the wave. A bound of a later step is not in force yet, so a
  canary phase may tolerate more failures than the phases after it.
- Of the bounds in force the strictest decides (the lowest percentage; ``<`` before ``<=``).
- Exceeded means *failed / reached* is not below (``<P%``) or not at most (``<=P%``) the bound, where
  *reached* is the devices the wave's rollouts reached (the sum of the history's ``num-devices``, the
  same denominator as ``require.updated``) and *failed* the devices ``reconcile status --devices WAVE
  --failed`` lists (``core/status.py``: online, staged by the wave, not on its version, newest update to
  its version reported a failed event). Before any rollout nothing has failed.
- ``onFailure: halt`` (the default) holds every further step of the wave with an error at the bound's
  line, so the run exits 1 and the stuck-wave issue opens; ``onFailure: cancel`` plans the wave's
  cancel, with the bound and the numbers as the step's reason.

As a gate, a failure bound also needs a count made after the previous rollout: a step whose previous
rollout happens in the same plan waits for the next run, as ``require.updated`` does (``core/gates.py``
evaluates both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from msgspec import Struct

from reconciler.core import ledger
from reconciler.core.spec import FailureBound, Gate, WaveSpec
from reconciler.core.state import ObservedWave, WaveFailures, WaveStatus


class Breach(Struct, frozen=True):
    """A failure bound in force that the wave's numbers exceed."""

    step: str  # "phase 'beta'" or "complete": whose gate the bound belongs to
    bound: FailureBound
    failures: WaveFailures
    version: int

    def text(self) -> str:
        """``failed 30.0% of the devices reached (3 of 10 failed to install version 46), over the bound <2%
        of phase 'beta'``."""
        counted = self.failures
        share = 100.0 * counted.failed / counted.reached
        return (
            f"failed {share:.1f}% of the devices reached ({counted.failed} of {counted.reached} failed to "
            f"install version {self.version}), over the bound {self.bound} of {self.step}"
        )


def bounds_in_force(spec: WaveSpec, rollouts: int) -> list[tuple[str, FailureBound]]:
    """The failure bounds of the steps reached so far: the phases rolled out, the next phase, and the
    complete gate once every phase is rolled out. Each with the step it belongs to."""
    reached, _ = ledger.position(spec.phases, rollouts)  # a phase of several parts is one step (core/ledger.py)
    gates: list[tuple[str, Gate]] = [(f"phase '{phase.name}'", phase.gate) for phase in spec.phases[: reached + 1]]
    if rollouts >= ledger.total(spec.phases) and spec.complete is not None:
        gates.append(("complete", spec.complete.gate))
    return [(step, gate.failed) for step, gate in gates if gate.failed is not None]


def strictest(bounds: Iterable[tuple[str, FailureBound]]) -> tuple[str, FailureBound] | None:
    return min(bounds, key=lambda item: (item[1].percent, item[1].inclusive), default=None)


def waves_needing_failures(specs: Iterable[WaveSpec], waves: Mapping[str, ObservedWave]) -> set[str]:
    """Active waves whose failures must be counted: a manifest that does not cancel them, at least one
    rollout (before one nothing can have failed) and a failure bound in force. Only these cost the
    per-device requests of a count (``factory/wavedevices.py``)."""
    return {
        spec.name
        for spec in specs
        if not spec.cancel
        and (wave := waves.get(spec.name)) is not None
        and wave.status is WaveStatus.ACTIVE
        and wave.history
        and bounds_in_force(spec, len(wave.history))
    }


def breach(spec: WaveSpec, rollouts: int, failures: WaveFailures | None) -> Breach | None:
    """The strictest bound in force after ``rollouts`` rollouts, if the wave's counted failures exceed it
    (see the module docstring)."""
    if failures is None or not failures.reached:
        return None
    found = strictest(bounds_in_force(spec, rollouts))
    if found is None or found[1].allows(failures.failed, failures.reached):
        return None
    return Breach(found[0], found[1], failures, spec.target)
