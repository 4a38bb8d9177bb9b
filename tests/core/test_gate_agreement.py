"""The plan and ``reconcile status`` agree on every wave's next gate (core/gates.py evaluates it for both).

Random active waves: a manifest of gated phases and a complete, a rollout history that follows it, the
wave status's updated count, the tag's devices online or not, failure counts; the plan's next step of
the wave is ready exactly when the status report says its next gate passed.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import build_plan, build_status
from reconciler.core.spec import CompleteSpec, FailureBound, Gate, Location, PhaseSpec
from reconciler.core.state import (
    Device,
    ObservedState,
    ObservedWave,
    ProdTargets,
    RolloutRecord,
    WaveFailures,
    WaveProgress,
    WaveStatus,
)
from reconciler.core.status import ScopeCounts, WaveCounts
from tests.helpers.planning import NOW, wave

HOUR = 3600

gates = st.builds(
    Gate,
    wait_seconds=st.sampled_from([None, HOUR, 24 * HOUR]),
    updated_percent=st.sampled_from([None, 50.0, 90.0, 100.0]),
    online_within_seconds=st.sampled_from([None, HOUR, 24 * HOUR]),
    failed=st.sampled_from([None, FailureBound(10.0), FailureBound(0.0, inclusive=True)]),
)


@st.composite
def wave_states(draw):
    phases = tuple(
        PhaseSpec(name=f"p{i}", group=f"g{i}", gate=draw(gates), location=Location("w.yaml", 10 + i, 5))
        for i in range(draw(st.integers(1, 3)))
    )
    complete = draw(st.none() | gates.map(lambda g: CompleteSpec(gate=g, location=Location("w.yaml", 20, 1))))
    spec = wave("v46", 46, phases, complete=complete)
    rollouts = draw(st.integers(0, len(phases)))
    ages = sorted(draw(st.lists(st.integers(0, 72), min_size=rollouts + 1, max_size=rollouts + 1)), reverse=True)
    created = NOW - timedelta(hours=ages[0], minutes=1)
    history = tuple((f"g{i}", NOW - timedelta(hours=ages[i + 1]), draw(st.integers(0, 6))) for i in range(rollouts))
    reached = sum(devices for _, _, devices in history)
    updated = draw(st.integers(0, reached + 1))
    devices = draw(
        st.lists(
            st.tuples(st.booleans(), st.booleans(), st.none() | st.integers(0, 48 * 60)),
            max_size=8,
        )
    )
    fleet = {
        f"uuid-{i}": Device(
            uuid=f"uuid-{i}",
            name=f"d{i}",
            group="g0",
            last_seen=None if minutes is None else NOW - timedelta(minutes=minutes),
            in_wave=in_wave,
            up_to_date=up_to_date,
        )
        for i, (in_wave, up_to_date, minutes) in enumerate(devices)
    }
    failed = draw(st.integers(0, reached))
    return spec, created, history, updated, fleet, failed


def plan_readiness(spec, created, history, updated, fleet, failed):
    reached = sum(devices for _, _, devices in history)
    records = tuple(
        RolloutRecord(group=group, at=at, full_group=True, factory_wide=False, devices=devices)
        for group, at, devices in history
    )
    observed = ObservedState(
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={"v46": ObservedWave("v46", 46, "production", WaveStatus.ACTIVE, created, records)},
        prod_targets={"production": ProdTargets(40, NOW + timedelta(days=300), frozenset({40}))},
        progress={"v46": WaveProgress(updated=updated, rolled_out=reached, total=reached + 5)},
        devices={"production": fleet},
        failures={"v46": WaveFailures(failed=failed, reached=reached, rollouts=len(history))},
    )
    steps = [op for op in build_plan([spec], observed).operations if op.wave == "v46"]
    return steps[0].ready if steps else None


def status_readiness(spec, created, history, updated, fleet, failed):
    entries = tuple(
        RolloutRecord(group=group, at=at, by="alice", devices=devices, full_group=True, factory_wide=False)
        for group, at, devices in history
    )
    facts = ObservedWave("v46", 46, "production", WaveStatus.ACTIVE, created, entries, created_by="alice")
    tag = ScopeCounts(devices=updated + 5, updated=updated, pending=5, offline=0)
    report = build_status(
        [spec],
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={"v46": facts},
        counts={"v46": WaveCounts(tag=tag, groups={}, on_wave_version=updated)},
        wave_expiry={},
        prod_expiry={},
        failed={"v46": {"g0": failed}},
        devices={"production": fleet},
    )
    gate = report.waves[0].next_step
    return None if gate is None else gate.passed


@settings(max_examples=400, deadline=None)
@given(wave_states())
def test_the_plan_and_status_agree_on_the_next_gate(state):
    assert plan_readiness(*state) == status_readiness(*state)


def test_online_within_leaves_offline_devices_out_in_both():
    """The issue's example: ``updated: 90%, onlineWithin: 1h``, 10 reached, 8 updated, 2 offline."""
    spec = wave(
        "v46",
        46,
        [
            PhaseSpec(name="p0", group="g0", location=Location("w.yaml", 10, 5)),
            PhaseSpec(
                name="p1",
                group="g1",
                gate=Gate(updated_percent=90.0, online_within_seconds=HOUR),
                location=Location("w.yaml", 11, 5),
            ),
        ],
    )
    offline = {
        f"uuid-{i}": Device(f"uuid-{i}", f"d{i}", "g0", NOW - timedelta(hours=5), in_wave=True, up_to_date=False)
        for i in range(2)
    }
    state = (spec, NOW - timedelta(days=1), (("g0", NOW - timedelta(hours=2), 10),), 8, offline, 0)
    assert plan_readiness(*state) is True
    assert status_readiness(*state) is True
