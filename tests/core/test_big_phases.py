"""Phases of more than 10,000 UUIDs: the ledger's map from history entries to phase parts, and the
planner, drift and status built on it (core/ledger.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import RolloutOp, build_plan, ledger, uuids_to_check, waves_needing_status
from reconciler.core.drift import ledger_drift
from reconciler.core.spec import CompleteSpec, Gate
from reconciler.core.state import WaveProgress
from reconciler.core.status import ObservedWave, RolloutRecord, build_status
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave

POOL = tuple(str(uuid.UUID(int=n)) for n in range(1, 35_001))
BIG = POOL[:25_000]


def ids(count: int) -> tuple[str, ...]:
    return POOL[:count]


def big_wave(**kw):
    """canary (group), big (25,000 UUIDs factory-wide, 3 parts, gated), after (group, gated)."""
    return wave(
        "v46",
        46,
        [
            phase("canary", group="canary"),
            phase("big", uuids=BIG, wait=24 * HOUR, updated=90),
            phase("after", group="beta", wait=HOUR),
        ],
        **kw,
    )


def rollouts(plan):
    return [
        (op.phase, op.part, op.parts, op.history_index, len(op.uuids or ()), op.status, op.reason)
        for op in plan.operations
        if isinstance(op, RolloutOp)
    ]


# -- the map -----------------------------------------------------------------------------------------


def test_a_phase_takes_one_rollout_per_10000_uuids_cut_in_file_order():
    phases = (
        phase("a", group="canary"),
        phase("b", uuids=BIG),
        phase("c", uuids=ids(10_000)),
        phase("d", uuids=ids(1)),
    )
    assert [ledger.parts(p) for p in phases] == [1, 3, 1, 1]
    assert [(s.entry, s.phase_index, s.part, s.parts) for s in ledger.slots(phases)] == [
        (0, 0, 1, 1),
        (1, 1, 1, 3),
        (2, 1, 2, 3),
        (3, 1, 3, 3),
        (4, 2, 1, 1),
        (5, 3, 1, 1),
    ]
    assert ledger.part_uuids(phases[1], 1) == BIG[:10_000]
    assert ledger.part_uuids(phases[1], 2) == BIG[10_000:20_000]
    assert ledger.part_uuids(phases[1], 3) == BIG[20_000:]
    assert ledger.part_uuids(phases[0], 1) is None
    assert ledger.total(phases) == 6
    assert [ledger.position(phases, n) for n in range(8)] == [
        (0, 0),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (3, 0),
        (4, 0),
        (4, 0),
    ]


@given(st.lists(st.integers(min_value=0, max_value=35_000), max_size=6), st.integers(min_value=0, max_value=30))
def test_the_map_is_a_partition_of_the_history_in_phase_order(sizes, entries):
    phases = tuple(phase(f"p{i}", uuids=ids(n) if n else None, group=None if n else "g") for i, n in enumerate(sizes))
    slots = list(ledger.slots(phases))
    assert [s.entry for s in slots] == list(range(ledger.total(phases)))
    for index, p in enumerate(phases):  # phase k covers [start_k, start_k + parts_k), its parts 1..parts_k in order
        mine = [s for s in slots if s.phase_index == index]
        assert [s.part for s in mine] == list(range(1, ledger.parts(p) + 1))
        assert mine[-1].entry - mine[0].entry + 1 == ledger.parts(p)
        if p.uuids:
            assert sum((ledger.part_uuids(p, s.part) or () for s in mine), ()) == p.uuids
            assert all(0 < len(ledger.part_uuids(p, s.part) or ()) <= 10_000 for s in mine)
    assert list(ledger.slots(phases, entries)) == slots[entries:]
    index, done = ledger.position(phases, entries)
    if entries < len(slots):
        assert (slots[entries].phase_index, slots[entries].part - 1) == (index, done)
    else:
        assert (index, done) == (len(phases), 0)


# -- the planner -------------------------------------------------------------------------------------


def test_a_new_wave_plans_each_part_as_its_own_step_with_the_gate_before_the_first():
    plan = build_plan([big_wave()], observed())
    assert rollouts(plan) == [
        ("canary", 1, 1, 0, 0, "ready", None),
        (
            "big",
            1,
            3,
            1,
            10_000,
            "blocked",
            "wait 24h: 24h left; updated 90%: needs the wave status after the previous rollout",
        ),
        ("big", 2, 3, 2, 10_000, "blocked", "after phase 'big' part 1 of 3"),
        ("big", 3, 3, 3, 5_000, "blocked", "after phase 'big' part 1 of 3"),
        ("after", 1, 1, 4, 0, "blocked", "after phase 'big' part 1 of 3"),
    ]
    big = [op for op in plan.operations if isinstance(op, RolloutOp) and op.phase == "big"]
    assert [op.describe() for op in big] == [
        f"rollout v46 phase 'big' part {n} of 3 (factory-wide, {size} uuids)"
        for n, size in ((1, 10000), (2, 10000), (3, 5000))
    ]
    assert len({op.key for op in plan.operations}) == len(plan.operations)  # apply finds each part again


def test_once_the_gate_passes_all_parts_are_ready_in_one_apply_and_the_next_phase_waits_for_its_own_gate():
    history = [record("canary", NOW - timedelta(hours=25), full=True)]
    state = observed([active("v46", 46, history)], progress={"v46": WaveProgress(updated=10, rolled_out=10)})
    plan = build_plan([big_wave()], state)
    assert rollouts(plan) == [
        ("big", 1, 3, 1, 10_000, "ready", None),
        ("big", 2, 3, 2, 10_000, "ready", None),
        ("big", 3, 3, 3, 5_000, "ready", None),
        ("after", 1, 1, 4, 0, "blocked", "wait 1h: 1h left"),
    ]
    assert plan.waves[0].phases == (("canary", "done"), ("big", "ready"), ("after", "blocked"))


def test_a_partly_rolled_out_phase_continues_with_its_next_part_without_a_gate():
    """After a crash between parts: the gate of 'big' (24h, 90% updated) is long passed for its first
    part and is not asked again; parts 2 and 3 follow, even with no wave status read."""
    history = [record("canary", NOW - timedelta(hours=30), full=True), record("", NOW, wide=True)]
    spec = big_wave(complete=CompleteSpec())
    state = observed([active("v46", 46, history)])
    plan = build_plan([spec], state)
    assert rollouts(plan) == [
        ("big", 2, 3, 2, 10_000, "ready", None),
        ("big", 3, 3, 3, 5_000, "ready", None),
        ("after", 1, 1, 4, 0, "blocked", "wait 1h: 1h left"),
    ]
    assert not plan.errors and plan.waves[0].phases_done == 1 and not plan.waves[0].drift
    assert waves_needing_status([spec], state.waves) == set()  # the next step (a part) has no gate to count
    two_done = replace(state, waves={"v46": active("v46", 46, [*history, record("", NOW, wide=True)])})
    assert rollouts(build_plan([spec], two_done))[0][:4] == ("big", 3, 3, 3)


def test_every_part_done_completes_the_phase_and_the_next_gate_counts_from_the_last_part():
    at = NOW - timedelta(minutes=20)
    history = [record("canary", NOW - timedelta(hours=30), full=True)] + [record("", at, wide=True)] * 3
    spec = big_wave(complete=CompleteSpec())
    plan = build_plan([spec], observed([active("v46", 46, history)]))
    assert rollouts(plan) == [("after", 1, 1, 4, 0, "blocked", "wait 1h: 40m left")]
    assert plan.waves[0].phases_done == 2
    assert plan.waves[0].phases == (("canary", "done"), ("big", "done"), ("after", "blocked"))


def test_pending_parts_still_need_the_fleet_to_check_their_uuids():
    history = [record("canary", NOW, full=True), record("", NOW, wide=True)]
    state = observed([active("v46", 46, history)])
    assert set(uuids_to_check([big_wave()], state.waves)) == {"production"}
    done = replace(state, waves={"v46": active("v46", 46, [*history, *[record("", NOW, wide=True)] * 2])})
    assert uuids_to_check([big_wave()], done.waves) == {}


def test_a_gate_on_the_phase_after_a_big_one_counts_every_part():
    history = [record("canary", NOW - timedelta(hours=30), full=True)] + [
        record("", NOW - timedelta(hours=2), wide=True)
    ] * 3
    spec = replace(big_wave(), phases=(*big_wave().phases[:2], phase("after", group="beta", updated=50)))
    progress = {"v46": WaveProgress(updated=20_000, rolled_out=25_010)}
    assert rollouts(build_plan([spec], observed([active("v46", 46, history)], progress=progress)))[0][5] == "ready"
    progress = {"v46": WaveProgress(updated=10_000, rolled_out=25_010)}
    blocked = rollouts(build_plan([spec], observed([active("v46", 46, history)], progress=progress)))[0]
    assert blocked[5:] == ("blocked", "updated 50%: 40.0% (10000 of 25010 devices)")


def test_expiry_counts_the_waits_after_a_partly_rolled_out_phase_not_its_passed_gate():
    history = [record("canary", NOW - timedelta(hours=30), full=True), record("", NOW, wide=True)]
    spec = big_wave(complete=CompleteSpec(Gate(wait_seconds=2 * HOUR)))
    state = observed([active("v46", 46, history)])
    state.wave_expires["v46"] = NOW + timedelta(hours=2, minutes=30)  # 'after' 1h + complete 2h do not fit
    plan = build_plan([spec], state)
    assert [p.message for p in plan.errors] == [
        "wave 'v46' expires at 2026-11-23T14:30:00Z, in 2h30m, but its remaining waits take 3h; cancel it (cancel: "
        "true) and promote the build again in a new wave, with a new name and an expiry longer than its waits"
    ]
    state.wave_expires["v46"] = NOW + timedelta(hours=3, minutes=30)  # enough: big's own 24h gate has passed
    assert not build_plan([spec], state).errors


# -- drift -------------------------------------------------------------------------------------------


def test_each_part_is_compared_with_its_phase_scope():
    spec = big_wave()
    good = (record("canary", NOW, full=True), *[record("", NOW, wide=True)] * 3, record("beta", NOW, full=True))
    assert ledger_drift(spec.phases, good) == []
    wrong_part = (record("canary", NOW, full=True), record("", NOW, wide=True), record("beta", NOW, full=True))
    assert ledger_drift(spec.phases, wrong_part) == [
        "rollout 3 in the factory was the whole group beta, but phase 'big' part 2 of 3 is factory-wide"
    ]
    too_many = (*good, record("", NOW, wide=True))
    assert ledger_drift(spec.phases, too_many) == [
        "rollout 6 in the factory (factory-wide) has no phase in the manifest"
    ]


def test_a_part_that_reached_more_devices_than_it_sends_uuids_is_drift():
    """The history records no UUIDs, only how many devices a rollout reached: a part of 5,000 UUIDs
    cannot have reached 10,000 devices (the list shrank after its rollout, or a hand-made rollout)."""
    spec = big_wave()
    entries = [
        replace(record("canary", NOW, full=True), devices=10),
        *[replace(record("", NOW, wide=True), devices=10_000)] * 3,
    ]
    assert ledger_drift(spec.phases, tuple(entries)) == [
        "rollout 4 in the factory reached 10000 devices, but phase 'big' part 3 of 3 sends 5000 UUIDs"
    ]
    plan = build_plan([spec], observed([active("v46", 46, entries)]))
    assert [p.message for p in plan.errors] == [
        "phase 'big' part 3 of 3 sends 5000 UUIDs, but rollout 4 in the factory reached 10000 devices: it was not "
        "made from this list (the list changed, or the rollout was made by hand); a phase that rolled out cannot "
        "change: restore the UUID list it was rolled out with"
    ]
    assert all(op.status == "blocked" for op in plan.operations)


def test_extra_rollouts_name_the_rollouts_the_phases_make():
    spec = wave("v46", 46, [phase("big", uuids=ids(10_001))])
    history = [record("", NOW, wide=True)] * 3
    plan = build_plan([spec], observed([active("v46", 46, history)]))
    assert [p.message for p in plan.errors] == [
        "wave 'v46': the factory has 3 rollouts but the manifest's 1 phases make only 2 (one per 10000 UUIDs of a "
        "phase) (rollouts made outside the manifests); to adopt them, append this phase: a phase with no group, with "
        "the limit or uuids that was used"
    ]


# -- status ------------------------------------------------------------------------------------------


def test_status_shows_one_row_per_part_and_no_gate_before_a_later_part():
    history = (record("canary", NOW - timedelta(hours=30), full=True), record("", NOW, wide=True))
    facts = ObservedWave(
        name="v46",
        version=46,
        tag="production",
        status=active("v46", 46).status,
        created_at=NOW - timedelta(days=2),
        created_by="ci",
        history=tuple(_entry(r) for r in history),
    )
    report = build_status(
        [big_wave()],
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={"v46": facts},
        counts={},
        wave_expiry={},
        prod_expiry={},
    ).waves[0]
    assert [(p.name, p.scope, p.state) for p in report.phases] == [
        ("canary", "group canary", "done"),
        ("big", "factory-wide, 10000 uuids, part 1 of 3", "done"),
        ("big", "factory-wide, 10000 uuids, part 2 of 3", "next"),
        ("big", "factory-wide, 5000 uuids, part 3 of 3", "pending"),
        ("after", "group beta", "pending"),
    ]
    assert report.next_step is not None
    assert (report.next_step.step, report.next_step.passed) == ("rollout big part 2 of 3", True)


def _entry(r):
    return RolloutRecord(
        group=r.group, at=r.at, by="ci", devices=r.devices, full_group=r.full_group, factory_wide=r.factory_wide
    )


def test_a_failure_bound_comes_into_force_when_its_phase_is_next_not_after_as_many_rollouts():
    """A phase of three parts is one step: after its first part the next phase's bound is not in force yet."""
    from reconciler.core import failures
    from reconciler.core.spec import FailureBound

    strict = FailureBound(1.0)
    spec = wave(
        "v46",
        46,
        [
            phase("canary", group="canary"),
            phase("big", uuids=BIG),
            replace(phase("after", group="beta"), gate=Gate(failed=strict)),
        ],
        complete=CompleteSpec(gate=Gate(failed=FailureBound(0.5))),
    )
    assert [failures.bounds_in_force(spec, n) for n in (1, 2, 3)] == [[], [], []]
    assert failures.bounds_in_force(spec, 4) == [("phase 'after'", strict)]
    assert [step for step, _ in failures.bounds_in_force(spec, 5)] == ["phase 'after'", "complete"]
