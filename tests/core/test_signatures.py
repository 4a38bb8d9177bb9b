"""The planner and a production root that needs more than init's two signatures (issue 15 item 4)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import InitOp, RolloutOp, SignOp, build_plan, without_keyed_steps, without_signs_by
from reconciler.core.plan.model import StepStatus
from reconciler.core.spec import Gate, Location
from reconciler.core.state import TargetsKeys
from reconciler.render.plan import summary_line, to_dict, to_text
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave

ONLINE, K1, K2, K3 = "00" * 32, "11" * 32, "22" * 32, "33" * 32
TWO_OFFLINE = TargetsKeys(threshold=3, offline=(K1, K2))
PHASES = (phase("canary", group="canary"), phase("beta", group="beta", wait=HOUR))


def state(keys, signers=None, history=()):
    waves = [active("w", 46, history=history)] if signers is not None else []
    return replace(
        observed(waves=waves, ci={46: True}),
        targets_keys=keys,
        wave_signers={"w": frozenset(signers)} if signers is not None else {},
    )


def test_a_wave_short_of_one_signature_signs_first_then_rolls_out_in_the_same_plan():
    plan = build_plan([wave("w", 46, PHASES)], state(TWO_OFFLINE, {ONLINE, K1}))
    sign, canary, beta = plan.operations
    assert isinstance(sign, SignOp) and sign.ready
    assert (sign.signatures, sign.threshold, sign.keyids) == (2, 3, (K2,))
    assert sign.shortfall.text() == f"needs 1 more signature (key id {K2[:12]})"
    assert isinstance(canary, RolloutOp) and canary.ready  # the sign step runs first, in the same apply
    assert beta.reason == "wait 1h: 1h left"
    assert summary_line(plan) == "Plan: 0 to init, 1 to sign, 1 to roll out, 0 to complete, 0 to cancel; 1 blocked."


def test_a_keyless_run_holds_the_sign_step_and_the_rollouts_with_what_the_wave_needs():
    plan = without_keyed_steps(build_plan([wave("w", 46, PHASES)], state(TWO_OFFLINE, {ONLINE, K1})))
    sign, canary, beta = plan.operations
    assert sign.reason == "needs the offline key; runs in the keyed apply job"
    assert canary.reason == f"needs 1 more signature (key id {K2[:12]})"
    assert beta.reason == "wait 1h: 1h left"
    assert not plan.changes
    assert dict(plan.waves[0].phases) == {"canary": "blocked", "beta": "blocked"}


def test_a_run_whose_key_signed_already_waits_for_the_other_key_and_other_waves_go_on():
    specs = [wave("w", 46, PHASES), wave("lab", 47, PHASES, tag="lab")]
    waves = [active("w", 46), active("lab", 47, tag="lab")]
    base = replace(
        observed(waves=waves),
        targets_keys=TWO_OFFLINE,
        wave_signers={"w": frozenset({ONLINE, K1}), "lab": frozenset({ONLINE, K2})},
    )
    plan = without_signs_by(build_plan(specs, base), K1)
    by_wave = {(op.wave, op.op): op for op in plan.operations if not isinstance(op, RolloutOp) or op.phase == "canary"}
    assert by_wave[("w", "sign")].reason == (
        f"this run's offline key (key id {K1[:12]}) has signed it already and a "
        f"key counts once; needs 1 more signature (key id {K2[:12]}): run with "
        f"that key (--keys FILE or --signer URI)"
    )
    assert by_wave[("w", "rollout")].reason == f"needs 1 more signature (key id {K2[:12]})"
    assert by_wave[("lab", "sign")].ready and by_wave[("lab", "rollout")].ready, "K1 may sign the other wave"
    assert without_signs_by(build_plan(specs, base), K2).find(by_wave[("w", "sign")].key).ready


def test_a_wave_that_meets_the_threshold_or_a_default_root_has_no_sign_step():
    for keys, signers in ((TWO_OFFLINE, {ONLINE, K1, K2}), (TargetsKeys(2, (K1,)), {ONLINE, K1}), (None, {ONLINE})):
        plan = build_plan([wave("w", 46, PHASES)], state(keys, signers))
        assert [op.op for op in plan.operations] == ["rollout", "rollout"], keys
        assert "to sign" not in summary_line(plan)


def test_two_missing_signatures_hold_the_rollouts_after_this_runs_signature():
    keys = TargetsKeys(threshold=4, offline=(K1, K2, K3))
    sign, canary, _ = build_plan([wave("w", 46, PHASES)], state(keys, {ONLINE, K1})).operations
    assert sign.ready and sign.keyids == (K2, K3)
    assert sign.shortfall.text() == f"needs 2 more signatures (of key ids {K2[:12]}, {K3[:12]})"
    assert canary.reason == "needs 1 more signature after this run's (one key signs per run)"


def test_a_new_wave_plans_its_sign_step_blocked_behind_init():
    plan = build_plan([wave("w", 46, PHASES)], state(TWO_OFFLINE))
    init, sign, canary, beta = plan.operations
    assert isinstance(init, InitOp) and init.ready
    assert isinstance(sign, SignOp) and sign.status is StepStatus.BLOCKED and sign.keyids == (K1, K2)
    assert "run again with another offline key" in (sign.reason or "")
    assert canary.reason == beta.reason == "needs 1 more signature after init (offline keys other than init's)"


def test_an_active_wave_with_nothing_left_to_do_needs_no_signature():
    history = (
        record("canary", NOW - timedelta(hours=3), full=True),
        record("beta", NOW - timedelta(hours=2), full=True),
    )
    plan = build_plan([wave("w", 46, PHASES)], state(TWO_OFFLINE, {ONLINE, K1}, history))
    assert plan.operations == ()


def test_the_sign_step_waits_behind_an_error_of_its_wave():
    bad = wave("w", 46, PHASES)
    bad = replace(bad, phases=(replace(PHASES[0], group="nope"), PHASES[1]))
    plan = build_plan([bad], replace(state(TWO_OFFLINE, {ONLINE, K1}), groups=frozenset({"canary", "beta"})))
    assert plan.errors and not plan.changes
    assert plan.operations[0].op == "sign" and plan.operations[0].reason == "held: this wave has an error"


def test_json_and_text_of_a_sign_step():
    plan = build_plan([wave("w", 46, (PHASES[0], replace(PHASES[1], gate=Gate())))], state(TWO_OFFLINE, {ONLINE, K1}))
    op = to_dict(plan)["operations"][0]
    assert op == {
        "op": "sign",
        "wave": "w",
        "tag": "production",
        "status": "ready",
        "manifest": "w.yaml",
        "line": 3,
        "signatures": 2,
        "threshold": 3,
        "keyids": [K2],
        "needs_key": True,
    }
    text = to_text(plan)
    assert (
        f"  # sign     w  needs 1 more signature (key id {K2[:12]}): 2 of 3 signatures, needs the offline key"
        in text.splitlines()
    )
    assert plan.operations[0].location == Location("w.yaml", 3, 1)  # the wave's manifest line


@given(offline=st.integers(1, 5), signed_offline=st.integers(0, 5), online_signed=st.booleans())
def test_a_sign_step_exactly_when_short_and_rollouts_ready_exactly_when_one_signature_is_missing(
    offline, signed_offline, online_signed
):
    keys = tuple(f"{n:02d}" * 32 for n in range(1, offline + 1))
    signers = set(keys[: min(signed_offline, offline)]) | ({ONLINE} if online_signed else set())
    plan = build_plan([wave("w", 46, PHASES[:1])], state(TargetsKeys(1 + offline, keys), signers))
    missing = 1 + offline - len(signers)
    signs = [op for op in plan.operations if isinstance(op, SignOp)]
    (rollout,) = [op for op in plan.operations if isinstance(op, RolloutOp)]
    assert len(signs) == (1 if missing > 0 else 0)
    if signs:
        assert signs[0].ready and signs[0].shortfall.needed == missing
        assert set(signs[0].keyids) == set(keys) - signers
    assert rollout.ready == (missing <= 1)
    held = without_keyed_steps(plan)
    assert not held.changes if missing > 0 else held.changes
