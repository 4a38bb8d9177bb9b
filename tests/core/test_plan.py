"""The planner with hand-built desired and observed states: no network, no clock, no key."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import (
    Device,
    LostManifest,
    ManifestChange,
    build_plan,
    empty_rollout_warnings,
    format_duration,
    waves_needing_status,
    without_keyed_steps,
)
from reconciler.core.plan.keys import NEEDS_KEY
from reconciler.core.spec import (
    CompleteSpec,
    Gate,
    Limit,
)
from reconciler.core.state import (
    WaveProgress,
)
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave


def summary(plan):
    return [(op.op, op.wave, getattr(op, "phase", None), op.status) for op in plan.operations]


def test_new_wave_is_initialised_then_rolled_out_in_phase_order_with_gates():
    spec = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", wait=24 * HOUR)])
    plan = build_plan([spec], observed())
    assert summary(plan) == [
        ("init", "v46", None, "ready"),
        ("rollout", "v46", "canary", "ready"),
        ("rollout", "v46", "beta", "blocked"),
    ]
    assert plan.operations[2].reason == "wait 24h: 24h left"
    assert plan.changes and not plan.errors


def test_ledger_marks_done_phases_and_counts_wait_from_the_previous_rollout():
    history = [record("canary", NOW - timedelta(hours=10, minutes=48), full=True)]
    spec = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", wait=24 * HOUR)])
    plan = build_plan([spec], observed([active("v46", 46, history)]))
    assert summary(plan) == [("rollout", "v46", "beta", "blocked")]
    assert plan.operations[0].reason == "wait 24h: 13h12m left"
    assert plan.waves[0].phases == (("canary", "done"), ("beta", "blocked"))


def test_later_phases_are_blocked_behind_a_blocked_gate():
    spec = wave(
        "v46",
        46,
        [phase("a", group="canary"), phase("b", group="beta", wait=HOUR), phase("c", group="x")],
        complete=CompleteSpec(),
    )
    plan = build_plan([spec], observed([active("v46", 46, [record("canary", NOW, full=True)])]))
    assert [(op.op, op.status, op.reason) for op in plan.operations] == [
        ("rollout", "blocked", "wait 1h: 1h left"),
        ("rollout", "blocked", "after phase 'b'"),
        ("complete", "blocked", "after phase 'b'"),
    ]


def test_first_phase_wait_counts_from_creation():
    spec = wave("v46", 46, [phase("canary", group="canary", wait=2 * HOUR)])
    plan = build_plan([spec], observed([active("v46", 46, created=NOW - timedelta(minutes=30))]))
    assert plan.operations[0].reason == "wait 2h: 1h30m left"


def test_require_updated_reads_the_wave_status():
    spec = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", updated=90)])
    state = observed(
        [active("v46", 46, [record("canary", NOW - timedelta(days=1), full=True)])],
        progress={"v46": WaveProgress(updated=8, rolled_out=10)},
    )
    plan = build_plan([spec], state)
    assert plan.operations[0].reason == "updated 90%: 80.0% (8 of 10 devices)"
    state.progress["v46"] = WaveProgress(updated=9, rolled_out=10)
    assert build_plan([spec], state).operations[0].ready


def test_only_waves_whose_next_step_has_an_updated_gate_need_a_status_call():
    gated = wave("a", 46, [phase("p1", group="canary"), phase("p2", group="beta", updated=90)])
    waiting = wave("b", 47, [phase("p1", group="canary"), phase("p2", group="beta", wait=HOUR)], tag="other")
    state = {
        "a": active("a", 46, [record("canary", NOW, full=True)]),
        "b": active("b", 47, [record("canary", NOW, full=True)], tag="other"),
    }
    assert waves_needing_status([gated, waiting], state) == {"a"}


def test_complete_true_completes_after_the_last_phase_in_the_same_run():
    spec = wave("v42", 42, [phase("canary", group="canary")], complete=CompleteSpec())
    plan = build_plan([spec], observed())
    assert summary(plan) == [
        ("init", "v42", None, "ready"),
        ("rollout", "v42", "canary", "ready"),
        ("complete", "v42", None, "ready"),
    ]


def test_gated_complete_waits_for_its_gate():
    spec = wave("v42", 42, [phase("canary", group="canary")], complete=CompleteSpec(gate=Gate(wait_seconds=48 * HOUR)))
    plan = build_plan([spec], observed([active("v42", 42, [record("canary", NOW - timedelta(hours=47), full=True)])]))
    assert plan.operations[0].op == "complete" and plan.operations[0].reason == "wait 48h: 1h left"


def test_per_tag_order_complete_then_init_then_rollouts_with_the_version_simulated():
    first = wave("v42", 42, [phase("canary", group="canary")], complete=CompleteSpec())
    prune = wave("v44", 44, complete=CompleteSpec(), prune=[42])
    last = wave("v46", 46, [phase("canary", group="canary")])
    plan = build_plan([last, prune, first], observed())
    assert summary(plan) == [
        ("init", "v42", None, "ready"),
        ("rollout", "v42", "canary", "ready"),
        ("complete", "v42", None, "ready"),
        ("init", "v44", None, "ready"),
        ("complete", "v44", None, "ready"),
        ("init", "v46", None, "ready"),
        ("rollout", "v46", "canary", "ready"),
    ]
    assert not plan.errors


def test_one_active_wave_per_tag_blocks_the_next_init():
    old = wave(
        "v42", 42, [phase("canary", group="canary"), phase("beta", group="beta", wait=HOUR)], complete=CompleteSpec()
    )
    new = wave("v46", 46, [phase("canary", group="canary")])
    plan = build_plan([old, new], observed([active("v42", 42, [record("canary", NOW, full=True)])]))
    init = next(op for op in plan.operations if op.op == "init")
    assert init.status == "blocked"
    assert init.reason.startswith("tag 'production' has active wave 'v42'")
    assert plan.operations[-1].reason == "after init"


def test_unmanaged_active_wave_blocks_new_waves_and_is_reported():
    plan = build_plan([wave("v46", 46)], observed([active("by-hand", 45)]))
    assert plan.operations[0].status == "blocked"
    assert "not managed by any manifest" in plan.operations[0].reason
    assert any("unmanaged active wave 'by-hand'" in w.message for w in plan.warnings)


def test_an_active_wave_whose_manifest_a_commit_took_away_is_an_error_that_holds_its_tag():
    lost = LostManifest("v45", "0123456789abcdef", "Release 46", "releases/v45.yaml", ManifestChange.DELETED)
    lab = wave("lab-46", 46, [phase("all")], tag="lab")
    plan = build_plan([wave("v46", 46), lab], observed([active("v45", 45)]), {"v45": lost})
    (error,) = plan.errors
    assert "commit 01234567 (Release 46) deleted releases/v45.yaml" in error.message
    assert "git revert 01234567, or restore the file" in error.message
    assert not any("unmanaged" in w.message for w in plan.warnings)
    assert [(h.wave, h.tag) for h in plan.held] == [("v45", "production")]
    assert [(op.wave, op.status) for op in plan.operations] == [
        ("lab-46", "ready"),
        ("lab-46", "ready"),
        ("v46", "blocked"),
    ]
    assert (
        plan.operations[-1].reason
        == "tag 'production' has active wave 'v45' (its manifest was deleted by commit 01234567)"
    )


def test_cancel_frees_the_tag_for_the_next_wave():
    old = wave("v45", 45, [phase("canary", group="canary")], cancel=True)
    new = wave("v46", 46, [phase("canary", group="canary")])
    plan = build_plan([new, old], observed([active("v45", 45, [record("canary", NOW, full=True)])]))
    assert summary(plan)[:2] == [("cancel", "v45", None, "ready"), ("init", "v46", None, "ready")]


def test_version_must_exceed_production_at_that_point_of_the_plan():
    completing = wave("v44", 44, [phase("canary", group="canary")], complete=CompleteSpec())
    second = wave("v43", 43, [phase("canary", group="canary")])
    plan = build_plan([completing, second], observed([active("v44", 44, [record("canary", NOW, full=True)])]))
    assert [str(p) for p in plan.errors] == [
        "v43.yaml:3:1: target 43 must be above the production version of tag 'production' (44 at this point of the plan)"
    ]


def test_prune_needs_existing_versions_and_not_the_target():
    plan = build_plan([wave("v46", 46, prune=[39, 46], complete=CompleteSpec())], observed())
    assert sorted(p.message for p in plan.errors) == [
        "cannot prune 39: not in the production targets of tag 'production' (versions: 40)",
        "cannot prune the wave's own version 46",
    ]


def test_missing_ci_build_is_an_error():
    plan = build_plan([wave("v99", 99)], observed(ci={99: False}))
    assert [p.message for p in plan.errors] == ["no CI targets for version 99: build 99 does not exist in the factory"]


def test_changed_target_of_an_existing_wave_is_a_conflict():
    plan = build_plan([wave("v46", 47)], observed([active("v46", 46)]))
    assert plan.errors and "target changed" in plan.errors[0].message
    assert not plan.changes


def test_history_that_does_not_match_is_drift_and_blocks_only_that_wave():
    drifted = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta")])
    other = wave("eu", 50, [phase("canary", group="canary")], tag="production-eu")
    state = observed([active("v46", 46, [record("us-east", NOW, full=False)])])
    state.prod_targets["production-eu"] = None
    plan = build_plan([drifted, other], state)
    assert plan.waves[0].name == "v46"
    assert list(plan.waves[0].drift) == [
        "rollout 1 in the factory was part of group us-east, but phase 'canary' is the whole group canary"
    ]
    blocked = [op for op in plan.operations if op.wave == "v46"]
    assert all(op.status == "blocked" and op.reason.startswith("drift: ") for op in blocked)
    assert [op.status for op in plan.operations if op.wave == "eu"] == ["ready", "ready"]


def test_extra_rollout_in_the_factory_is_drift():
    spec = wave("v46", 46, [phase("canary", group="canary")], complete=CompleteSpec())
    state = observed([active("v46", 46, [record("canary", NOW, full=True), record(None, NOW, wide=True)])])
    plan = build_plan([spec], state)
    assert list(plan.waves[0].drift) == ["rollout 2 in the factory (factory-wide) has no phase in the manifest"]
    assert plan.operations[0].status == "blocked"


def test_completed_wave_cannot_be_canceled():
    plan = build_plan([wave("v42", 42, cancel=True)], observed([active("v42", 42, status="complete")]))
    assert "cannot be canceled" in plan.errors[0].message


def test_factory_selection_skips_other_factories():
    plan = build_plan([wave("v46", 46, factory="other"), wave("v47", 47, factory="demo")], observed())
    assert [op.wave for op in plan.operations] == ["v47"]
    assert plan.skipped_manifests == 1


def test_nothing_to_do():
    spec = wave("v42", 42, [phase("canary", group="canary")], complete=CompleteSpec())
    plan = build_plan(
        [spec],
        observed(
            [active("v42", 42, [record("canary", NOW, full=True)], status="complete")],
            prod_version=42,
            versions=(40, 42),
        ),
    )
    assert plan.operations == () and not plan.changes and not plan.errors and not plan.warnings


def test_expiring_production_targets_are_warned_about():
    plan = build_plan([wave("v46", 46)], observed(expires=NOW + timedelta(days=3, hours=2)))
    assert [w.message for w in plan.warnings] == [
        "production targets of tag 'production' expire in 3d2h (2026-11-26T14:00:00Z); complete a new wave to renew them"
    ]


def test_limit_and_uuids_reach_the_operation():
    spec = wave("v46", 46, [phase("p", group="eu", limit=Limit(10, percent=True), uuids=("a", "b"))])
    op = build_plan([spec], observed()).operations[1]
    assert (op.group, op.percentage, op.limit, op.uuids) == ("eu", 10, None, ("a", "b"))


@settings(max_examples=200, deadline=None)
@given(
    done=st.integers(0, 4),
    waits=st.lists(st.one_of(st.none(), st.integers(1, 100 * HOUR)), min_size=4, max_size=4),
    ages=st.lists(st.integers(0, 100 * HOUR), min_size=4, max_size=4),
    complete=st.booleans(),
)
def test_planner_invariants(done, waits, ages, complete):
    """Whatever the gates and history: done phases never reappear, order is kept, nothing ready follows a block."""
    phases = [phase(f"p{i}", group=f"g{i}", wait=waits[i]) for i in range(4)]
    spec = wave("w", 46, phases, complete=CompleteSpec() if complete else None)
    history = [record(f"g{i}", NOW - timedelta(seconds=ages[i]), full=True) for i in range(done)]
    plan = build_plan([spec], observed([active("w", 46, history)]))
    rollouts = [op for op in plan.operations if op.op == "rollout"]
    assert [op.phase_index for op in rollouts] == list(range(done, 4))
    seen_block = False
    for op in plan.operations:
        assert not (seen_block and op.ready)
        seen_block = seen_block or not op.ready
    assert not plan.errors


def test_format_duration():
    assert [format_duration(s) for s in (0, 59, 60, 3600, 47520, 86400, 259200, 300000)] == [
        "0s",
        "59s",
        "1m",
        "1h",
        "13h12m",
        "24h",
        "3d",
        "3d11h",
    ]


def test_a_keyless_run_holds_inits_and_their_waves_but_advances_existing_waves():
    new = wave("v47", 47, [phase("canary", group="canary")], complete=CompleteSpec(), tag="staging")
    old = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", wait=HOUR)])
    state = observed([active("v46", 46, [record("canary", NOW - timedelta(hours=2), full=True)])])
    state = replace(state, prod_targets={**state.prod_targets, "staging": state.prod_targets["production"]})
    keyed = build_plan([old, new], state)
    assert {(op.op, op.wave) for op in keyed.ready} == {
        ("init", "v47"),
        ("rollout", "v47"),
        ("complete", "v47"),
        ("rollout", "v46"),
    }
    plan = without_keyed_steps(keyed)
    assert [(op.op, op.wave, op.status, op.reason) for op in plan.operations if op.wave == "v47"] == [
        ("init", "v47", "blocked", NEEDS_KEY),
        ("rollout", "v47", "blocked", "after init"),
        ("complete", "v47", "blocked", "after init"),
    ]
    assert [(op.op, op.wave) for op in plan.ready] == [("rollout", "v46")]
    assert [w.phases for w in plan.waves if w.name == "v47"] == [(("canary", "blocked"),)]
    assert without_keyed_steps(build_plan([old], state)) == build_plan([old], state)  # nothing to hold


@given(exists=st.lists(st.booleans(), min_size=1, max_size=3), done=st.lists(st.integers(0, 2), min_size=3, max_size=3))
@settings(max_examples=50)
def test_a_keyless_plan_changes_only_new_waves(exists, done):
    """Whatever exists: no init is ready, a new wave's steps are all held, everything else is as planned."""
    specs, waves = [], []
    for i, present in enumerate(exists):
        tag = f"tag{i}"
        specs.append(
            wave(f"w{i}", 46, [phase("a", group="a"), phase("b", group="b")], complete=CompleteSpec(), tag=tag)
        )
        if present:
            history = [record(g, NOW - timedelta(days=1), full=True) for g in ("a", "b")[: done[i]]]
            waves.append(active(f"w{i}", 46, history, tag=tag))
    state = observed(waves)
    state = replace(state, prod_targets={f"tag{i}": state.prod_targets["production"] for i in range(len(exists))})
    keyed = build_plan(specs, state)
    keyless = without_keyed_steps(keyed)
    new = {op.wave for op in keyed.operations if op.op == "init"}
    assert [op.key for op in keyless.operations] == [op.key for op in keyed.operations]
    for before, after in zip(keyed.operations, keyless.operations, strict=True):
        if before.wave in new and before.ready:
            assert not after.ready and after.reason in (NEEDS_KEY, "after init")
        else:
            assert after == before


def test_a_rollout_that_reaches_no_device_is_a_warning_with_why():
    spec = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta")])
    state = observed([active("v46", 46, [record("canary", NOW, full=True)])])

    def warning(devices):
        state.devices = {"production": {d.uuid: d for d in devices}}
        plan = build_plan([spec], state)
        (rollout,) = [op for op in plan.operations if op.op == "rollout"]
        counted = empty_rollout_warnings(plan.with_operation(rollout, replace(rollout, devices=0)), state)
        (found,) = counted.warnings
        assert (found.file, found.line) == (rollout.location.file, rollout.location.line)
        return found.message.removeprefix("phase 'beta' of wave 'v46' (group beta) reaches 0 devices now: ")

    def device(uuid, group, staged):
        return Device(uuid, uuid, group, NOW, in_wave=staged, up_to_date=False)

    assert warning([device("a", "canary", True)]) == "no production device of tag 'production' is in group 'beta'"
    assert warning([device("a", "beta", True)]) == "the 1 device in its scope is staged by the wave already"
    assert warning([device("a", "beta", True), device("b", "beta", False)]) == (
        "of the 2 devices in its scope, 1 is staged by the wave already, the other 1 on its version or newer, "
        "or left out by the factory"
    )
    plan = build_plan([spec], state)
    assert empty_rollout_warnings(plan, state) is plan, "a rollout not counted, or counted above 0, is no warning"
