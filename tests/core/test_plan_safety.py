"""Issue 10 in the pure planner: scoped errors, drift edits, offline devices, expiry and cancel counts."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import CancelOp, build_plan
from reconciler.core.spec import CompleteSpec, Gate, Location
from reconciler.core.state import Device, WaveProgress
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave

DAY = 24 * HOUR


def device(uuid, *, group="canary", seen_hours_ago=1.0, in_wave=True, up_to_date=False):
    return Device(
        uuid=uuid,
        name=f"dev-{uuid[:4]}",
        group=group,
        last_seen=NOW - timedelta(hours=seen_hours_ago),
        in_wave=in_wave,
        up_to_date=up_to_date,
    )


def test_an_error_holds_its_wave_and_the_later_steps_of_its_tag_only():
    broken = wave("prod-47", 47, [phase("canary", group="canary")], tag="production")
    broken = replace(broken, source_tag="mian")
    lab = wave("lab-47", 47, [phase("all", group="lab")], tag="lab")
    state = observed(ci={47: True})
    state.ci_tags = {47: frozenset({"main"})}
    state.prod_targets["lab"] = None
    plan = build_plan([broken, lab], state)
    by_wave = {(op.wave, op.op): op for op in plan.operations}
    assert by_wave[("lab-47", "init")].ready and by_wave[("lab-47", "rollout")].ready
    assert not by_wave[("prod-47", "init")].ready and not by_wave[("prod-47", "rollout")].ready
    assert [h.wave for h in plan.held] == ["prod-47"]
    assert [e.message for e in plan.errors] == [
        "sourceTag 'mian': no CI target of version 47 carries it (its tags: 'main'); did you mean 'main'?"
    ]


def test_a_tag_without_production_devices_names_the_tags_that_have_some():
    state = observed()
    state.tag_devices = {"production": 400, "qa": 12, "empty": 0}
    plan = build_plan([wave("v46", 46, [phase("canary", group="canary")], tag="prodution")], state)
    assert [e.message for e in plan.errors] == [
        "no production device follows tag 'prodution'; production tags in factory 'demo': 'production' (400 devices), "
        "'qa' (12 devices); did you mean 'production'?"
    ]


def test_drift_beyond_the_manifest_says_which_phases_to_append():
    spec = wave("v46", 46, [phase("canary", group="canary")])
    history = [
        record("canary", NOW - timedelta(days=1), full=True),
        record("apac", NOW - timedelta(hours=1), full=True),
        record("", NOW - timedelta(hours=1), wide=True),
    ]
    plan = build_plan([spec], observed([active("v46", 46, history)]))
    (error,) = plan.errors
    assert error.message == (
        "wave 'v46': the factory has 3 rollouts but the manifest only 1 phases (rollouts made outside the "
        "manifests); to adopt them, append these phases: a phase with `group: apac` with no limit and no uuids; "
        "a phase with no group, with the limit or uuids that was used"
    )


def test_a_uuid_outside_the_phase_group_is_reported_at_its_own_line():
    uuids = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b")
    p = replace(
        phase("canary", group="canary", uuids=uuids), uuid_locations=(Location("c.lst", 1, 1), Location("c.lst", 2, 1))
    )
    state = observed()
    state.devices = {"production": {uuids[0]: device(uuids[0]), uuids[1]: device(uuids[1], group="beta")}}
    plan = build_plan([wave("v46", 46, [p])], state)
    (error,) = plan.errors
    assert (error.file, error.line) == ("c.lst", 2)
    assert "is in 'beta', not in the phase's group 'canary'" in error.message


def test_online_within_leaves_long_offline_devices_out_of_the_share():
    devices = {f"u{i:02d}": device(f"u{i:02d}", up_to_date=True) for i in range(15)}
    devices["u99"] = device("u99", seen_hours_ago=24 * 21)
    progress = {"v46": WaveProgress(updated=15, rolled_out=16)}
    history = [record("canary", NOW - timedelta(days=1), full=True)]

    def reason(gate):
        spec = wave("v46", 46, [phase("canary", group="canary"), replace(phase("beta", group="beta"), gate=gate)])
        state = observed([active("v46", 46, history)], progress=progress)
        state.devices = {"production": devices}
        (op,) = build_plan([spec], state).operations
        return op.reason

    assert reason(Gate(updated_percent=95)) == (
        "updated 95%: 93.8% (15 of 16 devices rolled out are updated, 1 waiting offline for more than 4h: dev-u99 "
        "(u99); to leave offline devices out, add onlineWithin to require)"
    )
    assert reason(Gate(updated_percent=95, online_within_seconds=DAY)) is None
    assert reason(Gate(updated_percent=95, online_within_seconds=30 * DAY)).startswith(
        "updated 95% of devices seen within 30d: 93.8%"
    )


@settings(max_examples=60, deadline=None)
@given(
    waits=st.lists(st.integers(min_value=0, max_value=10 * DAY), max_size=4),
    expires=st.integers(min_value=HOUR, max_value=20 * DAY),
)
def test_a_new_wave_is_refused_exactly_when_its_waits_reach_its_expiry(waits, expires):
    phases = [phase(f"p{i}", group="canary", wait=w or None) for i, w in enumerate(waits)]
    spec = replace(wave("v46", 46, phases, complete=CompleteSpec(Gate())), expires_in_seconds=expires)
    plan = build_plan([spec], observed())
    refused = any("before its waits are over" in e.message for e in plan.errors)
    assert refused == (0 < sum(waits) >= expires)
    assert refused == (not plan.changes)


def test_cancel_says_what_stays_behind():
    spec = wave("v46", 46, [phase("canary", group="canary")], cancel=True)
    state = observed(
        [active("v46", 46, [record("canary", NOW - timedelta(days=1), full=True)])],
        progress={"v46": WaveProgress(updated=9, rolled_out=10, total=400)},
    )
    (op,) = build_plan([spec], state).operations
    assert isinstance(op, CancelOp) and op.ready
    assert op.leaves_behind() == (
        "9 devices stay on 46 (orphans: a version no longer offered), 391 keep production version 40"
    )
    assert op.describe() == "cancel v46", "the apply line adds what stays behind once, after the outcome"
