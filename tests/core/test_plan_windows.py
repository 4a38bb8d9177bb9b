"""The planner and rollout windows: rollout and complete are held, with the reason and the opening; init
and cancel never are; a gate and a window both show."""

from __future__ import annotations

from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

from msgspec.structs import replace

from reconciler.core import CancelOp, CompleteOp, InitOp, RolloutOp, build_plan
from reconciler.core.plan.model import StepStatus
from reconciler.core.spec import CompleteSpec
from reconciler.core.windows import Freeze, Schedule, Window
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave

BERLIN = ZoneInfo("Europe/Berlin")
# NOW is Monday 2026-11-23 12:00 UTC (13:00 CET).
CLOSED = Schedule((Window(frozenset({5, 6}), 9 * 60, 16 * 60, BERLIN, "w.yaml:7:5"),))  # weekends only
OPEN = Schedule((Window(frozenset(range(5)), 9 * 60, 16 * 60, BERLIN, "w.yaml:7:5"),))  # weekdays
FROZEN = Schedule((), (Freeze(NOW - timedelta(days=1), NOW + timedelta(days=2), "audit", timezone.utc, "r.yaml:5:5"),))
OPENS = "the next window opens Sat 2026-11-28 09:00 CET = 2026-11-28T08:00:00Z"


def test_a_new_wave_is_created_outside_its_windows_but_does_not_roll_out():
    spec = replace(wave("v46", 46, [phase("canary", group="canary")], complete=CompleteSpec()), schedule=CLOSED)
    plan = build_plan([spec], observed())
    init, rollout, complete = plan.operations
    assert isinstance(init, InitOp) and init.ready
    assert isinstance(rollout, RolloutOp) and rollout.status is StepStatus.BLOCKED
    assert rollout.reason == f"outside the rollout windows (Sat,Sun 09:00-16:00 Europe/Berlin at w.yaml:7:5); {OPENS}"
    assert rollout.opens_at is not None and rollout.opens_at.isoformat() == "2026-11-28T08:00:00+00:00"
    assert isinstance(complete, CompleteOp) and complete.reason == "after phase 'canary'" and complete.opens_at is None
    assert not plan.errors


def test_inside_its_window_a_wave_rolls_out_as_before():
    spec = replace(wave("v46", 46, [phase("canary", group="canary")]), schedule=OPEN)
    assert all(op.ready for op in build_plan([spec], observed()).operations)


def test_a_freeze_holds_the_complete_of_an_active_wave_but_never_its_cancel():
    history = [record("canary", NOW - timedelta(days=1), full=True)]
    current = active("v46", 46, history)
    completing = replace(wave("v46", 46, [phase("canary", group="canary")], complete=CompleteSpec()), schedule=FROZEN)
    (complete,) = build_plan([completing], observed([current])).operations
    assert isinstance(complete, CompleteOp) and not complete.ready
    assert complete.reason is not None and complete.reason.startswith(
        "frozen until Wed 2026-11-25 12:00 UTC: audit (r.yaml:5:5)"
    )
    canceling = replace(completing, cancel=True, complete=None)
    (cancel,) = build_plan([canceling], observed([current])).operations
    assert isinstance(cancel, CancelOp) and cancel.ready


def test_a_gate_and_a_window_both_give_their_reason():
    history = [record("canary", NOW - timedelta(hours=1), full=True)]
    spec = replace(
        wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", wait=24 * HOUR)]), schedule=CLOSED
    )
    (beta,) = build_plan([spec], observed([active("v46", 46, history)])).operations
    assert beta.reason == (
        f"wait 24h: 23h left; outside the rollout windows (Sat,Sun 09:00-16:00 Europe/Berlin at w.yaml:7:5); {OPENS}"
    )


def test_a_step_blocked_behind_another_carries_no_opening():
    spec = replace(wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta")]), schedule=CLOSED)
    _, canary, beta = build_plan([spec], observed()).operations
    assert canary.opens_at is not None
    assert beta.reason == "after phase 'canary'" and beta.opens_at is None
