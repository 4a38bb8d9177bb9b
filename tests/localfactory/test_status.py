"""Local factory: wave status counts, ``$active$``, and factory status."""

from __future__ import annotations

import pytest

from reconciler.localfactory import devices as dev
from tests.helpers.factory import F, new_factory


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def by_name(groups: list[dict]) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


def test_active_wave_schedules_every_device_of_its_rollout_groups(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.rollout("v42", group="us-east", limit=20)
    factory.rollout("v42", limit=7)
    s = factory.status("v42")
    assert [g["name"] for g in s["rollout-groups"]] == ["canary", "us-east"]
    canary, us_east = s["rollout-groups"]
    assert s["total-devices"] == 400 and s["updated-devices"] == 0
    assert s["scheduled-devices"] == 10 + us_east["devices-total"]  # the whole group, not the 20 staged
    assert s["unscheduled-devices"] == 400 - 10 - us_east["devices-total"]
    assert canary["devices-scheduled-for-update"] == 10 == canary["devices-total"]
    assert us_east["devices-scheduled-for-update"] == us_east["devices-total"] == len(factory.devices(group="us-east"))
    assert us_east["rollout-at"] == "2026-01-05T12:00:00Z"
    others = s["other-groups"]
    assert [g["name"] for g in others] == ["apac", "beta", "eu-emea", "us-west", ""]  # "" = no group, last
    assert all(g["rollout-at"] == "" and g["devices-scheduled-for-update"] == 0 for g in others)
    assert sum(g["devices-total"] for g in s["rollout-groups"] + others) == 400


def test_counts_follow_updates(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="beta")
    factory.advance(86400)
    s = factory.status("v42")
    beta = by_name(s["rollout-groups"])["beta"]
    on_42 = sum(1 for d in factory.devices(group="beta") if d["version"] == 42)
    assert beta["devices-on-wave-version"] == on_42 == s["updated-devices"]
    assert beta["devices-on-older-version"] == 50 - on_42 == beta["devices-scheduled-for-update"]
    assert s["scheduled-devices"] == 50 - on_42
    expected = {42: on_42, 40: 50 - on_42} if on_42 < 50 else {42: 50}
    assert {t["version"]: t["devices"] for t in beta["targets"]} == expected
    assert all(t["is-orphan"] is False for t in beta["targets"])


def test_complete_and_cancel_counts(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.advance(3600)
    done = sum(1 for d in factory.devices(prod=1) if d["version"] == 42)
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    s = factory.status("v42")
    assert s["status"] == "canceled" and s["finished-at"] == "2026-01-05T13:00:00Z"
    assert s["updated-devices"] == done and s["scheduled-devices"] == 0
    assert s["unscheduled-devices"] == 400 - done
    canary = by_name(s["rollout-groups"])["canary"]
    assert {t["version"]: t["is-orphan"] for t in canary["targets"]}.get(42) is True  # canceled: an orphan
    factory.create_wave("v43", 43)
    factory.ok(factory.http.post(f"{F}/waves/v43/complete/"))
    s = factory.status("v43")
    assert s["status"] == "complete" and s["updated-devices"] == 0 and s["scheduled-devices"] == 400
    assert s["unscheduled-devices"] == 0


def test_offline_threshold_counts_devices_online(factory):
    factory.create_wave("v42", 42)
    s4 = factory.status("v42", **{"offline-threshold": 4})
    s_long = factory.status("v42", **{"offline-threshold": 24 * 400})
    online4 = sum(g["devices-online"] for g in s4["other-groups"])
    assert 0 < online4 < 400
    assert sum(g["devices-online"] for g in s_long["other-groups"]) > online4
    r = factory.http.get(f"{F}/waves/v42/status/", params={"offline-threshold": "x"})
    assert r.status_code == 400
    factory.advance(3 * 86400)  # a device offline for the last days drops out of the 4-hour window
    seen = [d["last-seen"] for d in factory.devices(prod=1)]
    online_devices = sum(1 for x in seen if x >= "2026-01-08T08:00:00")
    s = factory.status("v42")
    assert sum(g["devices-online"] for g in s["other-groups"]) == online_devices


def test_active_name_resolution(factory):
    assert factory.http.get(f"{F}/waves/$active$/status/").status_code == 404
    factory.create_wave("v42", 42)
    assert factory.status("$active$")["name"] == "v42"
    factory.create_wave("b42", 42, tag="beta-fleet")
    r = factory.http.get(f"{F}/waves/$active$/status/")
    assert r.status_code == 400 and "v42" in r.json()["message"] and "b42" in r.json()["message"]


def test_status_of_a_tag_without_devices(factory):
    factory.create_wave("b42", 42, tag="beta-fleet")
    s = factory.status("b42")
    assert s["total-devices"] == 0 and s["rollout-groups"] == [] and s["other-groups"] == []


def test_factory_status_sections(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    with factory.embedded.store.write() as conn:
        dev.add_devices(conn, [dev.NewDevice("ci-extra", "", "devel", "intel-corei7-64", 55, False)])
    s = factory.ok(factory.http.get(f"{F}/status/", params={"offline-threshold": 4}))
    assert s["total-devices"] == 406
    tags = {t["name"]: t for t in s["tags"]}
    assert tags["main"]["latest-target"] == 60 and tags["main"]["devices-on-latest"] == 5
    assert tags["devel"]["devices-total"] == 1 and tags["devel"]["latest-target"] == 60
    prod = {t["name"]: t for t in s["prod-tags"]}["production"]
    wave = {t["name"]: t for t in s["wave-tags"]}["production"]
    assert prod["devices-total"] == 390 and wave["devices-total"] == 10
    assert prod["latest-target"] == 40 and wave["latest-target"] == 42
    assert [g["name"] for g in wave["device-groups"]] == ["canary"]
    assert prod["targets"] == [{"version": 40, "devices": 390, "is-orphan": False}]
