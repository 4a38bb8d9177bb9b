"""The status model (core/status.py): pure, from hand-built waves and counts; no network, no clock."""

from __future__ import annotations

from datetime import timedelta

from msgspec.structs import replace

from reconciler.core.spec import Gate, PhaseSpec
from reconciler.core.state import Device
from reconciler.core.status import (
    DeviceFacts,
    LastUpdate,
    ScopeCounts,
    build_status,
    classify,
    gate_text,
    needs_events,
    newest_completed,
    waves_needing_counts,
)
from tests.helpers.planning import NOW, wave
from tests.helpers.status import SPEC, counts, entry, facts, report

HOUR = 3600
OFFLINE = timedelta(hours=4)


def test_phases_carry_history_and_their_group_numbers():
    canary = ScopeCounts(devices=12, updated=9, pending=3, offline=1)
    state = report(
        [SPEC],
        [facts("v46", 46, history=[entry("canary", NOW - timedelta(hours=3), 10)])],
        {"v46": counts(9, 91, 5, {"canary": canary})},
    )
    (w,) = state.waves
    done, nxt = w.phases
    assert (done.name, done.state, done.reached, done.rollout_by, done.counts) == (
        "canary",
        "done",
        10,
        "alice",
        canary,
    )
    assert (nxt.name, nxt.scope, nxt.state, nxt.reached, nxt.counts) == (
        "us-east",
        "group us-east, limit 10",
        "next",
        None,
        None,
    )
    gate = w.next_step
    assert gate is not None and gate.step == "rollout us-east" and not gate.passed
    assert gate.wait_passes_at == NOW + timedelta(hours=21)
    assert (gate.updated, gate.reached) == (9, 10)
    assert gate_text(gate, NOW) == (
        "rollout us-east: waiting (wait 24h passes 2026-11-24T09:00:00Z (in 21h); updated 90%: 90.0% (9 of 10))"
    )


def test_the_gate_passes_when_wait_and_share_pass():
    state = report(
        [SPEC], [facts("v46", 46, history=[entry("canary", NOW - timedelta(hours=25), 10)])], {"v46": counts(9, 91)}
    )
    gate = state.waves[0].next_step
    assert gate is not None and gate.passed
    assert "passed 2026-11-23T11:00:00Z" in gate_text(gate, NOW)
    short = report(
        [SPEC], [facts("v46", 46, history=[entry("canary", NOW - timedelta(hours=25), 10)])], {"v46": counts(8, 92)}
    )
    assert short.waves[0].next_step is not None and not short.waves[0].next_step.passed


def test_complete_gate_counts_from_the_last_rollout():
    history = [entry("canary", NOW - timedelta(days=3), 10), entry("us-east", NOW - timedelta(hours=40), 10)]
    gate = report([SPEC], [facts("v46", 46, history=history)], {"v46": counts(20)}).waves[0].next_step
    assert gate is not None and gate.step == "complete" and gate.wait_passes_at == NOW + timedelta(hours=8)


def test_factory_wide_phases_count_the_whole_tag_and_unmanaged_waves_are_listed():
    tag_counts = counts(30, 70, 4)
    state = report(
        [],
        [
            facts("by-hand", 50, history=[entry(None, NOW, 40, wide=True)]),
            facts("old", 45, status="complete", finished=NOW - timedelta(days=9)),
        ],
        {"by-hand": tag_counts},
    )
    (w,) = state.waves  # a finished unmanaged wave is not shown
    assert w.manifest is None and w.next_step is None
    assert (w.phases[0].name, w.phases[0].scope, w.phases[0].counts) == ("rollout 1", "factory-wide", tag_counts.tag)


def test_absent_and_canceled_waves():
    canceled = facts(
        "v46",
        46,
        status="canceled",
        history=[entry("canary", NOW - timedelta(days=1), 10)],
        finished=NOW - timedelta(hours=1),
    )
    state = report(
        [SPEC, wave("v47", 47)],
        [canceled],
        {"v46": counts(12, 88, on_wave=7)},
        prod_expiry={"production": NOW + timedelta(days=20)},
        wave_expiry={"v46": NOW},
    )
    old, new = state.waves
    assert old.left_on_canceled == 7 and old.next_step is None and old.targets_expire is None
    assert [p.state for p in old.phases] == ["done", "skipped"]
    assert old.finished_by == "bob" and old.production_expire == NOW + timedelta(days=20)
    assert new.status == "absent" and new.created_at is None and new.production_expire == NOW + timedelta(days=20)


def test_status_calls_go_to_active_canceled_and_each_tags_latest_completed_wave():
    waves = {
        w.name: w
        for w in [
            facts("a", 50),
            facts("c", 49, status="canceled", finished=NOW),
            facts("old", 47, status="complete", finished=NOW - timedelta(days=9)),
            facts("new", 48, status="complete", finished=NOW - timedelta(days=2)),
            facts("lab", 30, status="complete", tag="lab", finished=NOW - timedelta(days=30)),
        ]
    }
    prod_versions = {"production": 48, "lab": 30}  # each tag's production targets: its latest completed wave
    assert waves_needing_counts(["a", "c", "old", "new", "lab", "absent"], waves, prod_versions) == [
        "a",
        "c",
        "new",
        "lab",
    ]
    assert waves_needing_counts(["new", "lab"], waves, {"production": 48, "lab": None}) == ["new"]


def test_each_tags_newest_completed_wave_is_the_guess_of_its_production_targets():
    waves = {
        w.name: w
        for w in [
            facts("a", 50),
            facts("old", 47, status="complete", finished=NOW - timedelta(days=9)),
            facts("new", 48, status="complete", finished=NOW - timedelta(days=2)),
            facts("c", 49, status="canceled", finished=NOW),
            facts("lab", 30, status="complete", tag="lab", finished=NOW - timedelta(days=30)),
        ]
    }
    assert newest_completed(["a", "old", "new", "c", "lab", "absent"], waves) == {"production": 48, "lab": 30}
    assert newest_completed(["old", "a"], waves) == {"production": 47}  # of the waves shown only
    guessed = newest_completed(list(waves), waves)
    assert waves_needing_counts(list(waves), waves, guessed) == waves_needing_counts(
        list(waves), waves, {"production": 48, "lab": 30}
    )


def device(version, seen=NOW - timedelta(minutes=5), in_wave=True):
    return DeviceFacts(
        uuid="u",
        name="d",
        group="canary",
        last_seen=seen,
        target_name=f"hw-lmp-{version}",
        version=version,
        in_wave=in_wave,
    )


def test_device_states():
    w = facts("v46", 46)
    failed = LastUpdate(version="46", target="hw-lmp-46", at="t", failed=True)
    assert classify(w, device(46), None, NOW, OFFLINE) == "updated"
    assert classify(w, device(47), None, NOW, OFFLINE) == "updated"
    assert classify(w, device(40), failed, NOW, OFFLINE) == "failed"
    assert classify(w, device(40), LastUpdate("45", "hw-lmp-45", "t", True), NOW, OFFLINE) == "pending"
    assert classify(w, device(40), None, NOW, OFFLINE) == "pending"
    assert classify(w, device(40, seen=NOW - timedelta(hours=5)), failed, NOW, OFFLINE) == "offline"
    assert classify(w, device(40, seen=None), None, NOW, OFFLINE) == "offline"
    assert needs_events(w, device(40), NOW, OFFLINE)
    assert not needs_events(w, device(40, in_wave=False), NOW, OFFLINE)
    assert not needs_events(w, device(46), NOW, OFFLINE)
    assert not needs_events(w, device(40, seen=None), NOW, OFFLINE)
    gone = facts("v46", 46, status="canceled", finished=NOW)
    assert classify(gone, device(46, in_wave=False), None, NOW, OFFLINE) == "left"
    assert not needs_events(gone, device(46), NOW, OFFLINE)


def test_a_drifted_wave_says_so_instead_of_a_gate():
    history = [entry(None, NOW - timedelta(days=2), 40, wide=True)]  # the manifest's first phase is group canary
    gate = report([SPEC], [facts("v46", 46, history=history)], {"v46": counts(40)}).waves[0].next_step
    assert gate is not None and not gate.passed and gate.blocked_by is not None
    assert gate.blocked_by.startswith("drift: rollout 1 in the factory was factory-wide, but phase 'canary'")
    assert gate_text(gate, NOW).startswith("rollout us-east: waiting (blocked: drift: ")


def test_online_within_leaves_the_offline_devices_out_as_the_plan_does():
    gated = PhaseSpec(
        name="us-east",
        group="us-east",
        gate=Gate(updated_percent=90, online_within_seconds=HOUR),
        location=SPEC.location,
    )
    spec = replace(SPEC, phases=(SPEC.phases[0], gated))
    stale = NOW - timedelta(hours=2)
    fleet = {u: Device(u, u, "canary", stale, in_wave=True, up_to_date=False) for u in ("d1", "d2")}
    state = build_status(
        [spec],
        factory="demo",
        backend="local:test",
        now=NOW,
        waves={"v46": facts("v46", 46, history=[entry("canary", NOW - timedelta(hours=3), 10)])},
        counts={"v46": counts(8, 2)},
        wave_expiry={},
        prod_expiry={},
        devices={"production": fleet},
    )
    gate = state.waves[0].next_step
    assert gate is not None and gate.passed
    assert gate_text(gate, NOW) == (
        "rollout us-east: ready (updated 90% of devices seen within 1h: 100.0% (8 of 8, 2 offline left out))"
    )
