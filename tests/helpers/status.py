"""Hand-built facts for the status model (core/status.py) and its renderer: no network, no clock."""

from __future__ import annotations

from datetime import timedelta

from reconciler.core.spec import CompleteSpec, Gate, Limit, Location
from reconciler.core.state import WaveStatus
from reconciler.core.status import ObservedWave, RolloutRecord, ScopeCounts, WaveCounts, build_status
from tests.helpers.planning import HOUR, NOW, phase, wave


def facts(name, version, status="active", history=(), tag="production", created=NOW - timedelta(days=2), finished=None):
    return ObservedWave(
        name=name,
        version=version,
        tag=tag,
        status=WaveStatus(status),
        created_at=created,
        created_by="alice",
        updated_at=finished,
        updated_by="bob" if finished else "",
        history=tuple(history),
    )


def entry(group, at, devices, by="alice", wide=False):
    return RolloutRecord(
        group=group or "", at=at, by=by, devices=devices, full_group=group is not None and not wide, factory_wide=wide
    )


def counts(updated, pending=0, offline=0, groups=None, on_wave=None):
    tag = ScopeCounts(devices=updated + pending, updated=updated, pending=pending, offline=offline)
    return WaveCounts(tag=tag, groups=groups or {}, on_wave_version=updated if on_wave is None else on_wave)


def report(specs, waves, wave_counts=None, **kw):
    return build_status(
        specs,
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={w.name: w for w in waves},
        counts=wave_counts or {},
        wave_expiry=kw.get("wave_expiry", {}),
        prod_expiry=kw.get("prod_expiry", {}),
    )


SPEC = wave(
    "v46",
    46,
    [phase("canary", group="canary"), phase("us-east", group="us-east", limit=Limit(10), wait=24 * HOUR, updated=90)],
    complete=CompleteSpec(gate=Gate(wait_seconds=48 * HOUR), location=Location("v46.yaml", 9, 1)),
)
