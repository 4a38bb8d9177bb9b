"""The forecast (core/forecast.py): each remaining step's earliest time from waits, windows and freezes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core.forecast import Bound, forecast, to_dict
from reconciler.core.spec import CompleteSpec, Gate
from reconciler.core.state import WaveProgress
from reconciler.core.windows import Freeze, Schedule, Window
from tests.helpers.planning import HOUR, NOW, phase, record, wave

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
DAY = 24 * HOUR

V46 = wave(
    "v46",
    46,
    [
        phase("canary", group="canary"),
        phase("beta", group="beta", wait=DAY, updated=90),
        phase("eu", group="eu", wait=12 * HOUR, updated=95),
    ],
    complete=CompleteSpec(Gate(wait_seconds=2 * DAY)),
)


def test_a_new_wave_chains_its_waits_from_now():
    result = forecast(V46, now=NOW)
    assert [(s.step, s.at, s.bound) for s in result.steps] == [
        ("rollout canary", NOW, Bound.NOW),
        ("rollout beta", NOW + timedelta(days=1), Bound.WAIT),
        ("rollout eu", NOW + timedelta(days=1, hours=12), Bound.WAIT),
        ("complete", NOW + timedelta(days=3, hours=12), Bound.WAIT),
    ]
    assert result.done_at == NOW + timedelta(days=3, hours=12)
    assert result.done_text() == "done no earlier than Fri 2026-11-27 00:00 UTC"
    assert result.step_text(result.steps[1]) == "rollout beta no earlier than Tue 2026-11-24 12:00 UTC (wait 24h)"


def test_an_active_wave_counts_the_next_wait_from_its_last_rollout():
    canary_at = NOW - timedelta(hours=20)
    result = forecast(
        V46,
        now=NOW,
        history=(record("canary", canary_at, full=True),),
        created_at=NOW - timedelta(days=1),
        progress=WaveProgress(updated=3, rolled_out=10, total=400),  # short of 90%, but the wait has 4h to go
    )
    assert [s.step for s in result.steps] == ["rollout beta", "rollout eu", "complete"]
    assert result.steps[0].at == canary_at + timedelta(days=1)
    assert result.steps[0].start == canary_at


def test_a_device_gate_not_met_once_its_wait_is_over_is_shown_not_forecast_away():
    result = forecast(
        V46,
        now=NOW,
        history=(record("canary", NOW - timedelta(days=2), full=True),),
        created_at=NOW - timedelta(days=3),
        progress=WaveProgress(updated=8, rolled_out=10, total=400),
    )
    beta, eu, complete = result.steps
    assert beta.at is None and beta.unmet == "updated 90%: 80.0% (8 of 10 devices)"
    assert (eu.at, eu.unmet) == (None, "after rollout beta")
    assert (complete.at, complete.unmet) == (None, "after rollout eu")
    assert result.done_at is None and result.within_expiry is None
    assert result.done_text() == "done: not forecast (rollout beta: waits on updated 90%: 80.0% (8 of 10 devices))"


def test_the_gate_met_lets_the_next_step_run_now():
    result = forecast(
        V46,
        now=NOW,
        history=(record("canary", NOW - timedelta(days=2), full=True),),
        created_at=NOW - timedelta(days=3),
        progress=WaveProgress(updated=9, rolled_out=10, total=400),
    )
    assert (result.steps[0].at, result.steps[0].bound) == (NOW, Bound.NOW)


def test_drift_or_a_halt_holds_every_step():
    result = forecast(V46, now=NOW, created_at=NOW, stopped="drift: entry 1 is not phase 'canary'")
    assert [s.unmet for s in result.steps] == [
        "drift: entry 1 is not phase 'canary'",
        "after rollout canary",
        "after rollout beta",
        "after rollout eu",
    ]


def test_a_freeze_and_a_window_name_what_held_each_step_in_the_calendar_zone():
    # Mon-Thu 09:00-16:00 Berlin, and a freeze over the Tuesday; NOW is Mon 2026-11-23 13:00 CET.
    window = Window(frozenset({0, 1, 2, 3}), 9 * 60, 16 * 60, BERLIN, "w.yaml:7:5")
    freeze = Freeze(
        datetime(2026, 11, 23, 23, tzinfo=UTC), datetime(2026, 11, 24, 23, tzinfo=UTC), "audit", BERLIN, "w.yaml:9:5"
    )
    spec = replace(V46, schedule=Schedule((window,), (freeze,)))
    result = forecast(spec, now=NOW)
    canary, beta, eu, complete = result.steps
    assert (canary.at, canary.bound) == (NOW, Bound.NOW)
    # beta's wait ends Tue 13:00 CET, inside the freeze; it ends at midnight, and the window opens Wed 09:00.
    assert (beta.at, beta.bound) == (datetime(2026, 11, 25, 8, tzinfo=UTC), Bound.WINDOW)
    assert beta.hold is not None and "frozen until Wed 2026-11-25 00:00 CET: audit (w.yaml:9:5)" in beta.hold
    assert "outside the rollout windows (Mon-Thu 09:00-16:00 Europe/Berlin at w.yaml:7:5)" in beta.hold
    # eu: Wed 21:00 CET is after hours: Thu 09:00; complete: Sat 09:00 is not a window day: Mon 09:00.
    assert eu.at == datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert complete.at == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert result.done_text() == "done no earlier than Mon 2026-11-30 09:00 CET"
    assert result.scheduled


def test_a_freeze_alone_sets_the_time_at_its_end():
    freeze = Freeze(NOW - timedelta(hours=1), NOW + timedelta(hours=30), "release party", UTC)
    result = forecast(replace(V46, schedule=Schedule((), (freeze,))), now=NOW)
    assert (result.steps[0].at, result.steps[0].bound) == (freeze.end, Bound.FREEZE)


def test_expiry_is_judged_on_the_last_step():
    done = NOW + timedelta(days=3, hours=12)
    assert forecast(V46, now=NOW, expires=done).within_expiry is False
    assert forecast(V46, now=NOW, expires=done).done_text().endswith("00:00 UTC, after its targets expire")
    assert forecast(V46, now=NOW, expires=done + timedelta(seconds=1)).within_expiry is True


def test_a_wave_without_complete_is_done_at_its_last_rollout():
    result = forecast(replace(V46, complete=None), now=NOW)
    assert not result.completes
    assert result.done_text() == "last rollout no earlier than Wed 2026-11-25 00:00 UTC"


def test_the_json_shape():
    data = to_dict(forecast(V46, now=NOW, expires=NOW + timedelta(days=30)))
    assert data["zone"] == "UTC" and data["done_at"] == "2026-11-27T00:00:00Z" and data["within_expiry"] is True
    assert data["steps"][1] == {
        "step": "rollout beta",
        "phase": "beta",
        "start": "2026-11-23T12:00:00Z",
        "at": "2026-11-24T12:00:00Z",
        "wait": 86400,
        "bound": "wait",
        "hold": None,
        "unmet": None,
    }
    assert data["steps"][-1]["phase"] is None and len(data["assumptions"]) == 2


# -- properties -------------------------------------------------------------------------------------

waits = st.lists(st.one_of(st.none(), st.integers(1, 5 * DAY)), min_size=1, max_size=4)


@st.composite
def schedules(draw) -> Schedule:
    windows = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.integers(0, 24 * 60 - 1))
        end = draw(st.integers(1, 24 * 60))
        if start == end % (24 * 60):
            end = (start + 1) % (24 * 60) or 24 * 60
        days = draw(st.frozensets(st.integers(0, 6), min_size=1))
        windows.append(Window(days, start, end, draw(st.sampled_from([BERLIN, UTC]))))
    freezes = []
    for _ in range(draw(st.integers(0, 2))):
        start = NOW + timedelta(minutes=draw(st.integers(-60 * 24, 60 * 24 * 20)))
        freezes.append(Freeze(start, start + timedelta(minutes=draw(st.integers(1, 60 * 24 * 5))), "f", UTC))
    return Schedule(tuple(windows), tuple(freezes))


def _spec(wait_list, schedule):
    phases = [phase(f"p{i}", group="g", wait=w) for i, w in enumerate(wait_list)]
    return replace(wave("v", 46, phases, complete=CompleteSpec(Gate())), schedule=schedule)


@settings(max_examples=30, deadline=None)
@given(waits, schedules(), st.integers(0, 3 * DAY))
def test_steps_are_never_before_now_nor_each_other_and_each_is_allowed(wait_list, schedule, ago):
    spec = _spec(wait_list, schedule)
    history = (record("g", NOW - timedelta(seconds=ago), full=True),)
    result = forecast(spec, now=NOW, history=history, created_at=NOW - timedelta(days=4))
    times = [s.at for s in result.steps]
    assert all(t is not None for t in times)
    assert all(t >= NOW for t in times)
    assert times == sorted(times)
    assert all(schedule.allows(t) for t in times)
    for step in result.steps:  # each step waits its own wait after the previous one
        assert step.at >= step.start + timedelta(seconds=step.wait_seconds)


@settings(max_examples=25, deadline=None)
@given(waits, schedules(), st.integers(0, 3 * DAY), st.integers(0, 3 * DAY))
def test_later_is_never_earlier_and_a_longer_wait_never_makes_it_earlier(wait_list, schedule, later, longer):
    """Monotone: a forecast made later, or with a step waiting longer, moves no step earlier."""
    spec = _spec(wait_list, schedule)
    base = [s.at for s in forecast(spec, now=NOW).steps]
    moved = [s.at for s in forecast(spec, now=NOW + timedelta(seconds=later)).steps]
    assert all(b <= m for b, m in zip(base, moved, strict=True))
    slower = _spec([(wait_list[0] or 0) + longer or None, *wait_list[1:]], schedule)
    assert all(b <= m for b, m in zip(base, [s.at for s in forecast(slower, now=NOW).steps], strict=True))


@settings(max_examples=25, deadline=None)
@given(waits, st.integers(0, 10 * DAY), st.integers(1, 10 * DAY))
def test_a_freeze_pushes_a_step_it_covers_to_its_end(wait_list, start, length):
    spec = _spec(wait_list, Schedule())
    freeze = Freeze(NOW + timedelta(seconds=start), NOW + timedelta(seconds=start + length), "f", UTC)
    free = forecast(spec, now=NOW).steps
    frozen = forecast(replace(spec, schedule=Schedule((), (freeze,))), now=NOW).steps
    for before, after in zip(free, frozen, strict=True):
        assert not freeze.contains(after.at)
        if freeze.contains(before.at):
            assert after.at >= freeze.end
        assert after.at >= before.at


# -- the plan: the expiry check, the forecast under the plan -----------------------------------------


def test_a_new_wave_whose_freeze_pushes_its_complete_past_its_expiry_is_an_error_at_the_wave():
    from reconciler.core import build_plan
    from tests.helpers.planning import observed

    freeze = Freeze(NOW + timedelta(days=1), NOW + timedelta(days=20), "year-end", UTC, "reconcile.yaml:4:5")
    spec = replace(V46, expires_in_seconds=10 * DAY, schedule=Schedule((), (freeze,)))  # the waits: 3d12h
    plan = build_plan([spec], observed())
    (error,) = plan.errors
    assert (error.file, error.line, error.col) == ("v46.yaml", 3, 1)
    assert error.message == (
        "wave 'v46' would expire (10d from now, 2026-12-03T12:00:00Z) before it can be done: with its waits, "
        "windows and freezes its complete runs no earlier than Wed 2026-12-16 00:00 UTC (rollout beta held: frozen "
        "until Sun 2026-12-13 12:00 UTC: year-end (reconcile.yaml:4:5); allowed again Sun 2026-12-13 12:00 UTC): "
        "an expired wave cannot be rolled out or completed; set expires well beyond that (e.g. expires: 365d)"
    )
    assert not plan.changes
    assert build_plan([replace(spec, schedule=Schedule())], observed()).errors == ()


def test_an_active_wave_whose_window_comes_after_its_expiry_is_an_error():
    from reconciler.core import build_plan
    from tests.helpers.planning import active, observed

    window = Window(frozenset({5}), 9 * 60, 10 * 60, UTC, "w.yaml:7:5")  # Saturdays 09:00-10:00 only
    spec = replace(V46, schedule=Schedule((window,), ()))
    state = replace(
        observed([active("v46", 46, [record("canary", NOW - timedelta(days=2), full=True)])]),
        wave_expires={"v46": NOW + timedelta(days=4)},
    )
    errors = [e.message for e in build_plan([spec], state).errors]
    assert errors == [
        "wave 'v46' expires at 2026-11-27T12:00:00Z, in 4d, but with its waits, windows and freezes its complete "
        "runs no earlier than Sat 2026-12-12 09:00 UTC (complete held: outside the rollout windows (Sat 09:00-10:00 "
        "UTC at w.yaml:7:5); the next window opens Sat 2026-12-12 09:00 UTC); cancel it (cancel: true) and promote "
        "the build again in a new wave, with a new name and an expiry longer than its waits"
    ]


def test_the_plan_shows_the_forecast_under_it_in_every_format():
    import json

    from jsonschema import Draft202012Validator

    from reconciler.core import build_plan
    from reconciler.render.plan import to_dict, to_markdown, to_text
    from tests.helpers.planning import observed

    plan = build_plan([V46], observed())
    text = to_text(plan)
    assert (
        "Forecast (each gate passing as soon as its wait ends):\n  v46: done no earlier than Fri 2026-11-27 00:00 UTC"
        in text
    )
    data = to_dict(plan)
    assert data["waves"][0]["forecast"]["done_at"] == "2026-11-27T00:00:00Z"
    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "plan.schema.json").read_text())
    Draft202012Validator(schema).validate(data)
    markdown = to_markdown(plan)
    assert "#### Forecast (each gate passing as soon as its wait ends)" in markdown
    assert "```mermaid\ngantt\n" in markdown
    assert "  rollout beta :s1, 2026-11-23 12:00, 2026-11-24 12:00" in markdown
    assert "  rollout canary :milestone, s0, 2026-11-23 12:00, 0m" in markdown


def test_gantt_names_cannot_break_the_chart():
    from reconciler.render.plan import gantt_text

    assert gantt_text("eu: canaries #1; a\nb`c,d") == "eu_ canaries _1_ a_b_c_d"
    assert gantt_text("ünïcode") == "_n_code"


# -- reconcile status ------------------------------------------------------------------------------


def test_status_forecasts_active_waves_with_steps_left_and_says_what_stops_one():
    from tests.helpers.status import SPEC, counts, entry, facts, report

    canary = entry("canary", NOW - timedelta(hours=2), 10)
    (wave_report,) = report([SPEC], [facts("v46", 46, history=[canary])], {"v46": counts(3, 7)}).waves
    result = wave_report.forecast
    assert result is not None and [s.step for s in result.steps] == ["rollout us-east", "complete"]
    assert result.steps[0].at == canary.at + timedelta(days=1)  # 30% updated, but its wait has 22h to go

    drifted = facts("v46", 46, history=[entry("beta", NOW - timedelta(hours=2), 10)])
    (wave_report,) = report([SPEC], [drifted]).waves
    assert wave_report.forecast is not None
    assert wave_report.forecast.steps[0].unmet.startswith("drift: ")
    assert wave_report.forecast.done_at is None

    (wave_report,) = report([replace(SPEC, cancel=True)], [facts("v46", 46, history=[canary])]).waves
    assert wave_report.forecast is None, "a cancel is next"
    (wave_report,) = report([SPEC], [facts("v46", 46, status="complete", history=[canary], finished=NOW)]).waves
    assert wave_report.forecast is None, "nothing is left"
