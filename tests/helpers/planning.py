"""Hand-built desired and observed states for planner and renderer tests: no network, no clock, no key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from reconciler.core.spec import Gate, Location, PhaseSpec, WaveSpec
from reconciler.core.state import ObservedState, ObservedWave, ProdTargets, RolloutRecord, WaveStatus

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
HOUR = 3600


def phase(name, group=None, limit=None, uuids=None, wait=None, updated=None, line=10):
    return PhaseSpec(
        name=name,
        group=group,
        limit=limit,
        uuids=uuids,
        gate=Gate(wait_seconds=wait, updated_percent=updated),
        location=Location("w.yaml", line, 5),
    )


def wave(name, target, phases=(), complete=None, cancel=False, tag="production", prune=(), factory=None):
    return WaveSpec(
        name=name,
        target=target,
        tag=tag,
        location=Location(f"{name}.yaml", 3, 1),
        phases=tuple(phases),
        complete=complete,
        cancel=cancel,
        prune=tuple(prune),
        factory=factory,
    )


def observed(waves=(), prod_version=40, versions=(40,), progress=None, ci=None, expires=None):
    prod = ProdTargets(prod_version, expires or NOW + timedelta(days=300), frozenset(versions))
    return ObservedState(
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={w.name: w for w in waves},
        prod_targets={"production": prod},
        progress=progress or {},
        ci_versions=ci or {},
    )


def active(name, version, history=(), created=NOW - timedelta(days=2), status="active", tag="production"):
    return ObservedWave(
        name=name, version=version, tag=tag, status=WaveStatus(status), created_at=created, history=tuple(history)
    )


def record(group, at, full=False, wide=False):
    return RolloutRecord(group=group or "", at=at, full_group=full, factory_wide=wide)
