"""Local factory: every JSON shape fioctl reads has the field names and types of the reference
(reference/foundries-api.md §1.2-1.6, fioctl's Go structs)."""

from __future__ import annotations

import pytest

from tests.helpers.factory import F, new_factory

STR, INT, BOOL, LIST, DICT, NULLABLE_STR = str, int, bool, list, dict, (str, type(None))

CHANGE_META = {"created-by": STR, "created-at": STR, "updated-by": STR, "updated-at": STR}
ROLLOUT_GROUP = {"group-id": INT, "group-name": STR, "created-at": STR, "created-by": STR}
HISTORY = {
    "group-name": STR,
    "rollout-by": STR,
    "rollout-at": STR,
    "is-full-group": BOOL,
    "is-factory-wide": BOOL,
    "num-devices": INT,
}
WAVE = {
    "name": STR,
    "version": STR,
    "tag": STR,
    "status": STR,
    "rollout-groups": DICT,
    "rollout-history": LIST,
    "change-meta": CHANGE_META,
}
WAVE_LIST = {"waves": LIST, "total": INT, "next": NULLABLE_STR}
ROLLOUT_RESULT = {**WAVE, "device-num": INT, "device-uuids": LIST, "device-names": LIST}
TARGET_STATUS = {"version": INT, "devices": INT, "is-orphan": BOOL}
GROUP_STATUS = {
    "name": STR,
    "rollout-at": STR,
    "devices-total": INT,
    "devices-online": INT,
    "devices-on-wave-version": INT,
    "devices-on-newer-version": INT,
    "devices-on-older-version": INT,
    "devices-scheduled-for-update": INT,
    "targets": LIST,
}
WAVE_STATUS = {
    "name": STR,
    "version": INT,
    "tag": STR,
    "status": STR,
    "created-at": STR,
    "finished-at": STR,
    "total-devices": INT,
    "updated-devices": INT,
    "scheduled-devices": INT,
    "unscheduled-devices": INT,
    "rollout-groups": LIST,
    "other-groups": LIST,
}
SIGNATURE = {"keyid": STR, "method": STR, "sig": STR}
TARGETS_SIGNED = {"_type": STR, "expires": STR, "targets": DICT, "version": INT}
FILE_META = {"length": INT, "hashes": {"sha256": STR}, "custom": DICT}
DEVICE = {
    "uuid": STR,
    "name": STR,
    "owner": STR,
    "factory": STR,
    "device-group": STR,
    "created-at": STR,
    "last-seen": STR,
    "ostree-hash": STR,
    "tag": STR,
    "target-name": STR,
    "status": STR,
    "current-update": STR,
    "up-to-date": BOOL,
    "public-key": STR,
    "is-prod": BOOL,
    "is-wave": BOOL,
    "change-meta": CHANGE_META,
}
DEVICE_LIST = {"devices": LIST, "total": INT, "next": NULLABLE_STR, "page": INT, "pages": INT, "limit": INT}
GROUP = {"id": INT, "name": STR, "description": STR, "change-meta": CHANGE_META}
TAG_STATUS = {
    "name": STR,
    "devices-total": INT,
    "devices-online": INT,
    "devices-on-latest": INT,
    "devices-on-orphan": INT,
    "latest-target": INT,
    "targets": LIST,
    "device-groups": LIST,
}
FACTORY_STATUS = {"total-devices": INT, "tags": LIST, "prod-tags": LIST, "wave-tags": LIST}
ERROR = {"message": STR, "errors": LIST}


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def check(obj, spec, where="$"):
    """Every field of ``spec`` is present with its exact JSON type (a bool is not an int)."""
    assert isinstance(obj, dict), f"{where}: expected an object, got {type(obj).__name__}"
    for key, kind in spec.items():
        assert key in obj, f"{where}: missing {key!r}"
        value = obj[key]
        if isinstance(kind, dict):
            check(value, kind, f"{where}.{key}")
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        assert type(value) in kinds, f"{where}.{key}: {type(value).__name__} is not {kinds}"


def check_wave(w: dict, spec=WAVE):
    check(w, spec)
    assert w["status"] in ("active", "complete", "canceled")
    for name, group in w["rollout-groups"].items():
        check(group, ROLLOUT_GROUP, f"rollout-groups.{name}")
        assert group["group-name"] == name
    for h in w["rollout-history"]:
        check(h, HISTORY, "rollout-history[]")


def check_envelope(env: dict):
    check(env, {"signed": TARGETS_SIGNED, "signatures": LIST})
    for sig in env["signatures"]:
        check(sig, SIGNATURE)
    for meta in env["signed"]["targets"].values():
        check(meta, FILE_META)
        assert type(meta["custom"]["version"]) is str


def test_wave_and_wave_list(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    check_wave(factory.wave("v42"))
    shown = factory.wave("v42", show_targets=True)
    check_wave(shown)
    check_envelope(shown["targets"])
    listing = factory.ok(factory.http.get(f"{F}/waves/", params={"limit": 20, "page": 1}))
    check(listing, WAVE_LIST)
    for w in listing["waves"]:
        check_wave(w)


def test_rollout_result(factory):
    factory.create_wave("v42", 42)
    for options in (
        {"group": "beta", "limit": 3, "return_uuids": True, "return_names": True},
        {"limit": 2, "dry_run": True},
        {"group": "canary"},
    ):
        r = factory.rollout("v42", **options)
        check_wave(r, ROLLOUT_RESULT)
        assert all(type(u) is str for u in r["device-uuids"] + r["device-names"])
        assert len(r["device-uuids"]) in (0, r["device-num"])


def test_wave_status_and_group_status(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    factory.advance(3600)
    s = factory.status("v42")
    check(s, WAVE_STATUS)
    assert s["rollout-groups"] and s["other-groups"]
    for g in s["rollout-groups"] + s["other-groups"]:
        check(g, GROUP_STATUS)
        for t in g["targets"]:
            check(t, TARGET_STATUS)


def test_prod_targets_map_and_wave_targets(factory):
    prod = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))
    assert list(prod) == ["production"]
    check_envelope(prod["production"])
    factory.create_wave("v42", 42)
    for env in factory.ok(factory.http.get(f"{F}/wave-targets/?name=")).values():
        check_envelope(env)
    ci = factory.ok(factory.http.get(f"{F}/targets/", params={"version": 42}))
    for meta in ci.values():
        check(meta, FILE_META)
    check(factory.ok(factory.http.get(f"{F}/ci-targets.pub")), {"keytype": STR, "keyval": {"public": STR}})


def test_device_list_device_and_groups(factory):
    listing = factory.ok(factory.http.get("/ota/devices/", params={"factory": "demo", "limit": 50}))
    check(listing, DEVICE_LIST)
    for d in listing["devices"]:
        check(d, DEVICE)
    one = factory.ok(factory.http.get(f"/ota/devices/{listing['devices'][-1]['name']}/", params={"factory": "demo"}))
    check(one, DEVICE)
    check(one["group"], {"id": INT, "name": STR, "description": STR})
    groups = factory.ok(factory.http.get(f"{F}/device-groups/"))
    check(groups, {"groups": LIST})
    for g in groups["groups"]:
        check(g, GROUP)
    updates = factory.ok(factory.http.get(f"/ota/devices/{one['name']}/updates/", params={"factory": "demo"}))
    check(updates, {"updates": LIST, "total": INT, "next": NULLABLE_STR})


def test_factory_status(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    s = factory.ok(factory.http.get(f"{F}/status/"))
    check(s, FACTORY_STATUS)
    for section in ("tags", "prod-tags", "wave-tags"):
        assert s[section]
        for t in s[section]:
            check(t, TAG_STATUS)
            for x in t["targets"]:
                check(x, TARGET_STATUS)
            for g in t["device-groups"]:
                check(
                    g,
                    {
                        k: TAG_STATUS[k]
                        for k in ("name", "devices-total", "devices-online", "devices-on-latest", "devices-on-orphan")
                    },
                )


def test_error_bodies(factory):
    for r in (
        factory.http.get(f"{F}/waves/nope/"),
        factory.http.post(f"{F}/waves/", json={}),
        factory.post_wave(factory.wave_body("populate-targets", 42)),
        factory.http.delete(f"{F}/waves/"),
    ):
        assert r.status_code in (400, 404, 405, 409)
        assert r.headers["content-type"].startswith("application/json")
        check(r.json(), ERROR)
