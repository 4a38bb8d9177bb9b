"""Failure bounds (``require.failed``) and ``onFailure`` in the planner, with hand-built states."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import CancelOp, build_plan
from reconciler.core.failures import bounds_in_force, waves_needing_failures
from reconciler.core.spec import CompleteSpec, FailureBound, Gate, Location, OnFailure, PhaseSpec
from reconciler.core.state import RolloutRecord, WaveFailures, WaveProgress
from tests.helpers.planning import NOW, active, observed, wave

CANARY_AT = NOW - timedelta(hours=30)


def bound(text: str, line: int) -> FailureBound:
    inclusive = text.startswith("<=")
    return FailureBound(float(text.lstrip("<=").rstrip("%")), inclusive, Location("v46.yaml", line, 15))


def gated(name: str, group: str, failed: str | None = None, line: int = 10, **gate) -> PhaseSpec:
    return PhaseSpec(
        name=name,
        group=group,
        location=Location("v46.yaml", line, 5),
        gate=Gate(failed=None if failed is None else bound(failed, line + 2), **gate),
    )


def rel46(*phases: PhaseSpec, on_failure: OnFailure = OnFailure.HALT, complete: CompleteSpec | None = None):
    spec = wave("v46", 46, phases, complete=complete)
    return replace(spec, on_failure=on_failure, positions={"onFailure": Location("v46.yaml", 6, 12)})


def canary_done(devices: int = 100) -> list[RolloutRecord]:
    return [RolloutRecord(group="canary", at=CANARY_AT, full_group=True, factory_wide=False, devices=devices)]


def state(history, failed: int, reached: int = 100, rollouts: int = 1, unchecked: int = 0, **extra):
    return replace(
        observed([active("v46", 46, history)], **extra),
        failures={"v46": WaveFailures(failed=failed, reached=reached, rollouts=rollouts, unchecked=unchecked)},
    )


def steps(plan):
    return [(op.op, getattr(op, "phase", None), op.status, op.reason) for op in plan.operations]


BETA_HALT = (
    "halted: failed 12.0% of the devices reached (12 of 100 failed to install version 46), over the bound "
    "<2% of phase 'beta'"
)


def test_halt_holds_every_further_step_with_an_error_at_the_bound():
    spec = rel46(
        gated("canary", "canary"), gated("beta", "beta", "<2%", line=10), gated("eu", "eu"), complete=CompleteSpec()
    )
    plan = build_plan([spec], state(canary_done(), failed=12))
    assert steps(plan) == [
        ("rollout", "beta", "blocked", BETA_HALT),
        ("rollout", "eu", "blocked", "after phase 'beta'"),
        ("complete", None, "blocked", "after phase 'beta'"),
    ]
    (error,) = plan.errors
    assert (error.file, error.line, error.col) == ("v46.yaml", 12, 15)
    assert error.message.startswith(
        "wave 'v46' halted (onFailure: halt): failed 12.0% of the devices reached "
        "(12 of 100 failed to install version 46), over the bound <2% of phase 'beta'"
    )
    assert [h.wave for h in plan.held] == ["v46"] and not plan.changes


def test_halt_holds_the_later_waves_of_the_tag():
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<2%"), complete=CompleteSpec())
    later = wave("v48", 48, [gated("canary", "canary")], complete=CompleteSpec())
    plan = build_plan([spec, later], state(canary_done(), failed=12, ci={48: True}))
    assert all(not op.ready for op in plan.operations)
    assert [op.reason for op in plan.operations if op.wave == "v48"] == [
        "tag 'production' has active wave 'v46' (wave 'v46' is halted by a failure bound)",
        "after init",
        "after init",
    ]


def test_cancel_plans_the_cancel_with_the_reason_and_frees_the_tag():
    spec = rel46(
        gated("canary", "canary"), gated("beta", "beta", "<2%"), on_failure=OnFailure.CANCEL, complete=CompleteSpec()
    )
    later = wave("v48", 48, [gated("canary", "canary")])
    progress = {"v46": WaveProgress(updated=80, rolled_out=100, total=400)}
    plan = build_plan([spec, later], state(canary_done(), failed=12, progress=progress, ci={48: True}))
    cancel = plan.operations[0]
    assert isinstance(cancel, CancelOp) and cancel.ready and not plan.errors
    assert cancel.reason == "onFailure: cancel: " + BETA_HALT.removeprefix("halted: ")
    assert (cancel.location.line, cancel.orphans, cancel.keep_previous) == (6, 80, 320)
    assert [(op.op, op.wave, op.status) for op in plan.operations[1:]] == [
        ("init", "v48", "ready"),
        ("rollout", "v48", "ready"),
    ]


def test_a_wave_under_its_bound_proceeds():
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<2%"))
    assert steps(build_plan([spec], state(canary_done(), failed=1))) == [("rollout", "beta", "ready", None)]


def test_lt_excludes_the_bound_and_le_includes_it():
    for text, ready in (("<2%", False), ("<=2%", True)):
        spec = rel46(gated("canary", "canary"), gated("beta", "beta", text))
        assert build_plan([spec], state(canary_done(), failed=2)).changes is ready, text
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<=0%"))
    assert build_plan([spec], state(canary_done(), failed=0)).changes
    assert build_plan([spec], state(canary_done(), failed=1)).errors


def test_a_bound_of_a_later_step_is_not_in_force_yet():
    """Failures over beta's bound do not halt while canary is the next step (a canary may fail more)."""
    spec = rel46(gated("canary", "canary"), gated("second", "canary"), gated("beta", "beta", "<2%"))
    plan = build_plan([spec], state(canary_done(), failed=50))
    assert steps(plan)[0] == ("rollout", "second", "ready", None) and not plan.errors


def test_a_bound_stays_in_force_after_its_step_rolled_out():
    """Continuous: beta rolled out long ago, its bound still halts the wave when failures rise later."""
    history = [
        *canary_done(50),
        RolloutRecord(group="beta", at=CANARY_AT, full_group=True, factory_wide=False, devices=50),
    ]
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<2%"), gated("eu", "eu"))
    plan = build_plan([spec], state(history, failed=12, rollouts=2))
    assert plan.errors and steps(plan)[0][:3] == ("rollout", "eu", "blocked")


def test_the_complete_gate_bound_is_in_force_once_every_phase_rolled_out():
    spec = rel46(gated("canary", "canary"), complete=CompleteSpec(Gate(failed=bound("<5%", 20))))
    plan = build_plan([spec], state(canary_done(), failed=5))
    assert steps(plan) == [
        (
            "complete",
            None,
            "blocked",
            "halted: failed 5.0% of the devices reached (5 of 100 failed "
            "to install version 46), over the bound <5% of complete",
        )
    ]
    assert plan.errors[0].line == 20


def test_the_strictest_bound_in_force_decides():
    spec = rel46(
        gated("canary", "canary", "<=3%", line=10),
        gated("beta", "beta", "<3%", line=20),
        gated("eu", "eu", "<1%", line=30),
    )
    assert [b for _, b in bounds_in_force(spec, 1)] == [bound("<=3%", 12), bound("<3%", 22)]
    plan = build_plan([spec], state(canary_done(), failed=3))
    assert plan.errors[0].line == 22 and "over the bound <3% of phase 'beta'" in plan.errors[0].message


def test_a_count_from_before_the_previous_rollout_does_not_pass_the_gate():
    """Apply re-plans with the wave read anew but the failure count of the observation: not the next phase's."""
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<2%"))
    plan = build_plan([spec], state(canary_done(), failed=0, rollouts=0))
    assert steps(plan) == [
        ("rollout", "beta", "blocked", "failed <2%: needs the failure count after the previous rollout")
    ]


def test_a_step_after_a_rollout_of_the_same_plan_waits_for_the_count():
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<2%"))
    plan = build_plan([spec], observed())
    assert steps(plan)[1:] == [
        ("rollout", "canary", "ready", None),
        ("rollout", "beta", "blocked", "failed <2%: needs the failure count after the previous rollout"),
    ]


def test_a_first_phase_bound_passes_before_anything_rolled_out():
    spec = rel46(gated("canary", "canary", "<2%"))
    assert steps(build_plan([spec], observed([active("v46", 46)]))) == [("rollout", "canary", "ready", None)]


def test_unread_devices_hold_the_gate_only_when_they_could_exceed_the_bound():
    spec = rel46(gated("canary", "canary"), gated("beta", "beta", "<10%"))
    assert steps(build_plan([spec], state(canary_done(), failed=1, unchecked=3)))[0][2] == "ready"
    plan = build_plan([spec], state(canary_done(), failed=1, unchecked=20))
    assert steps(plan) == [
        (
            "rollout",
            "beta",
            "blocked",
            "failed <10%: 1 of 100 devices reached failed, but 20 more "
            "not on the wave version were not checked; waits until "
            "fewer are pending",
        )
    ]
    assert not plan.errors  # a lower bound under the bound is not a breach
    assert build_plan([spec], state(canary_done(), failed=10, unchecked=20)).errors  # a lower bound over it is


def test_a_manifest_cancel_wins_over_the_failure_bound():
    spec = replace(rel46(gated("canary", "canary"), gated("beta", "beta", "<2%")), cancel=True)
    plan = build_plan([spec], state(canary_done(), failed=50))
    assert [(op.op, op.reason) for op in plan.operations] == [("cancel", None)] and not plan.errors


def test_only_active_waves_with_a_rollout_and_a_bound_in_force_are_counted():
    with_bound = rel46(gated("canary", "canary", "<2%"))
    later_bound = replace(
        rel46(gated("canary", "canary"), gated("second", "canary"), gated("beta", "beta", "<2%")), name="later"
    )
    none = replace(rel46(gated("canary", "canary")), name="none")
    canceling = replace(with_bound, name="canceling", cancel=True)
    fresh = replace(with_bound, name="fresh")
    done = replace(with_bound, name="done")
    waves = {
        "v46": active("v46", 46, canary_done()),
        "later": active("later", 46, canary_done()),
        "none": active("none", 46, canary_done()),
        "canceling": active("canceling", 46, canary_done()),
        "fresh": active("fresh", 46),
        "done": active("done", 46, canary_done(), status="complete"),
    }
    assert waves_needing_failures([with_bound, later_bound, none, canceling, fresh, done], waves) == {"v46"}


@given(
    failed=st.integers(0, 200),
    reached=st.integers(1, 200),
    percent=st.integers(0, 100),
    inclusive=st.booleans(),
    cancel=st.booleans(),
)
def test_the_plan_halts_or_cancels_exactly_when_the_share_exceeds_the_bound(
    failed, reached, percent, inclusive, cancel
):
    failed = min(failed, reached)
    text = f"{'<=' if inclusive else '<'}{percent}%"
    spec = rel46(
        gated("canary", "canary"),
        gated("beta", "beta", text),
        on_failure=OnFailure.CANCEL if cancel else OnFailure.HALT,
    )
    plan = build_plan([spec], state(canary_done(reached), failed=failed, reached=reached))
    share = 100.0 * failed / reached
    within = share <= percent if inclusive else share < percent
    (op,) = plan.operations
    if within:
        assert (op.op, op.status, plan.errors) == ("rollout", "ready", ())
    elif cancel:
        assert (op.op, op.status, plan.errors) == ("cancel", "ready", ())
        assert f"({failed} of {reached} failed to install version 46)" in (op.reason or "")
    else:
        assert (op.op, op.status, len(plan.errors)) == ("rollout", "blocked", 1)
