"""Wave status as reference §2.3 defines each field (issue 11, item 2).

Each test compares the factory's WaveStatus with numbers worked out here from the device list
(``GET /ota/devices/``) and the reference's definitions, after a partial ``limit`` rollout, a full
group rollout, a factory-wide rollout, a complete and a cancel. The choices the reference leaves
open are the ones wavestatus.py's docstring states.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.helpers.factory import F, new_factory

TAG = "production"


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def seen_at(device: dict) -> datetime | None:
    return datetime.fromisoformat(device["last-seen"]) if device["last-seen"] else None


def expected(factory, version: int, rollout_groups: list[str], state: str, threshold: int = 4) -> dict:
    """The reference's WaveStatus numbers, from the devices of the tag (production ones only)."""
    cutoff = factory.now() - timedelta(hours=threshold)
    devices = [d for d in factory.devices(prod=1) if d["tag"] == TAG and d["is-prod"]]

    def counted(group: str) -> bool:
        return state != "active" or group in rollout_groups

    def scheduled(d: dict) -> bool:
        return d["version"] < version and state != "canceled" and counted(d["device-group"])

    groups: dict[str, dict] = {}
    for d in devices:
        g = groups.setdefault(
            d["device-group"],
            {
                "devices-total": 0,
                "devices-online": 0,
                "devices-on-wave-version": 0,
                "devices-on-newer-version": 0,
                "devices-on-older-version": 0,
                "devices-scheduled-for-update": 0,
                "versions": {},
            },
        )
        g["devices-total"] += 1
        g["devices-online"] += bool(seen_at(d) and seen_at(d) >= cutoff)
        key = (
            "devices-on-wave-version"
            if d["version"] == version
            else "devices-on-newer-version"
            if d["version"] > version
            else "devices-on-older-version"
        )
        g[key] += 1
        g["devices-scheduled-for-update"] += scheduled(d)
        g["versions"][d["version"]] = g["versions"].get(d["version"], 0) + 1
    updated = sum(1 for d in devices if d["version"] >= version and counted(d["device-group"]))
    n_scheduled = sum(1 for d in devices if scheduled(d))
    others = sorted(name for name in groups if name not in rollout_groups and name)
    return {
        "total-devices": len(devices),
        "updated-devices": updated,
        "scheduled-devices": n_scheduled,
        "unscheduled-devices": len(devices) - updated - n_scheduled,
        "rollout-groups": [(name, groups.get(name)) for name in rollout_groups],
        "other-groups": [(name, groups[name]) for name in others] + ([("", groups[""])] if "" in groups else []),
    }


def assert_status(factory, wave: str, version: int, rollout_groups: list[str], state: str) -> dict:
    for threshold in (4, 24 * 400):
        want = expected(factory, version, rollout_groups, state, threshold)
        got = factory.status(wave, **{"offline-threshold": threshold})
        assert (got["name"], got["version"], got["tag"], got["status"]) == (wave, version, TAG, state)
        for key in ("total-devices", "updated-devices", "scheduled-devices", "unscheduled-devices"):
            assert got[key] == want[key], (key, got[key], want[key])
        for section in ("rollout-groups", "other-groups"):
            assert [g["name"] for g in got[section]] == [name for name, _ in want[section]], section
            for g, (name, counts) in zip(got[section], want[section], strict=True):
                counts = counts or {"versions": {}}
                for key, value in counts.items():
                    if key != "versions":
                        assert g[key] == value, (section, name, key, g[key], value)
                assert {t["version"]: t["devices"] for t in g["targets"]} == counts["versions"], name
                assert [t["version"] for t in g["targets"]] == sorted(counts["versions"], reverse=True)
                assert (g["rollout-at"] != "") == (section == "rollout-groups")
    return got


def test_partial_limit_rollout_schedules_the_whole_group(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="us-east", limit=10)
    s = assert_status(factory, "v42", 42, ["us-east"], "active")
    (us_east,) = s["rollout-groups"]
    assert s["scheduled-devices"] == us_east["devices-total"] > 10
    factory.advance(86400)
    s = assert_status(factory, "v42", 42, ["us-east"], "active")
    assert 0 < s["updated-devices"] <= 10 and s["updated-devices"] + s["scheduled-devices"] > 10
    factory.rollout("v42", group="us-east", limit=5)  # a second rollout to the group adds no row
    s = assert_status(factory, "v42", 42, ["us-east"], "active")
    assert s["rollout-groups"][0]["rollout-at"] == "2026-01-05T12:00:00Z"


def test_full_group_rollout(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="beta")
    factory.advance(2 * 86400)
    s = assert_status(factory, "v42", 42, ["beta"], "active")
    assert s["updated-devices"] > 25 and s["updated-devices"] + s["scheduled-devices"] == 50
    assert all(t["is-orphan"] is False for g in s["rollout-groups"] + s["other-groups"] for t in g["targets"])


def test_factory_wide_rollout_adds_no_rollout_group(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.rollout("v42", limit=20)
    factory.advance(2 * 86400)
    reached_elsewhere = [d for d in factory.devices(prod=1) if d["version"] == 42 and d["device-group"] != "canary"]
    assert reached_elsewhere, "the factory-wide rollout reached devices outside canary, and they updated"
    s = assert_status(factory, "v42", 42, ["canary"], "active")
    on_42 = sum(g["devices-on-wave-version"] for g in s["rollout-groups"] + s["other-groups"])
    assert s["updated-devices"] == on_42 - len(reached_elsewhere)  # updated counts rollout groups only
    assert sum(g["devices-scheduled-for-update"] for g in s["other-groups"]) == 0


def test_after_complete_every_device_counts_as_of_now(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.advance(86400)
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    s = assert_status(factory, "v42", 42, ["canary"], "complete")
    assert s["finished-at"] == "2026-01-06T12:00:00Z" and s["unscheduled-devices"] == 0
    factory.advance(3 * 86400)  # devices keep updating after the wave finished: counted as of now
    later = assert_status(factory, "v42", 42, ["canary"], "complete")
    assert later["updated-devices"] > s["updated-devices"]


def test_after_cancel_nothing_is_scheduled(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.rollout("v42", limit=15)
    factory.advance(86400)
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    s = assert_status(factory, "v42", 42, ["canary"], "canceled")
    assert s["scheduled-devices"] == 0 and s["updated-devices"] == sum(
        1 for d in factory.devices(prod=1) if d["version"] >= 42
    )
    orphans = {t["version"] for g in s["rollout-groups"] + s["other-groups"] for t in g["targets"] if t["is-orphan"]}
    assert orphans == {42}  # canceled: 42 is in no targets list of the tag
