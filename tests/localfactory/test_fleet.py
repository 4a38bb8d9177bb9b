"""Local factory: the simulated fleet (check-ins, verification, updates, failures) and the device gateway."""

from __future__ import annotations

import json

import pytest

from reconciler import signing
from reconciler.localfactory import devices as dev
from tests.helpers.factory import F, new_factory

GATEWAY = "/ota/gateway/demo/repo"


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def gateway(factory, uuid: str, file: str = "targets.json"):
    return factory.http.get(f"{GATEWAY}/{file}", headers={"x-ats-device-uuid": uuid})


def device(factory, name: str) -> dict:
    return factory.ok(factory.http.get(f"/ota/devices/{name}/", params={"factory": "demo"}))


def test_time_moves_only_when_told(factory):
    before = factory.devices()
    assert factory.http.get(f"{F}/waves/").headers["date"] == factory.http.get(f"{F}/status/").headers["date"]
    assert factory.devices() == before
    stats = factory.advance(3600)
    assert stats["updated"] == 0 and stats["online"] > 350  # nothing to update, most devices online
    assert factory.now().isoformat() == "2026-01-05T13:00:00+00:00"


def test_what_each_device_fetches(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    ci_dev, staged, plain = device(factory, "ci-0000"), device(factory, "demo-000001"), device(factory, "demo-000100")
    ci_meta = factory.ok(gateway(factory, ci_dev["uuid"]))
    assert ci_meta == factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json"))
    wave_meta = factory.ok(gateway(factory, staged["uuid"]))
    assert wave_meta == factory.wave("v42", show_targets=True)["targets"]
    prod_meta = factory.ok(gateway(factory, plain["uuid"]))
    assert prod_meta == factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
    # the root chain each one verifies with: production root for production devices
    for d, production, meta in ((ci_dev, False, ci_meta), (staged, True, wave_meta), (plain, True, prod_meta)):
        first = factory.ok(gateway(factory, d["uuid"], "1.root.json"))
        latest = factory.ok(gateway(factory, d["uuid"], "root.json"))
        signing.verify_threshold(first, "root", latest["signed"], latest["signatures"])
        assert latest["signed"]["roles"]["targets"]["threshold"] == (2 if production else 1)
        signing.verify_threshold(latest, "targets", meta["signed"], meta["signatures"])
    assert factory.http.get(f"{GATEWAY}/targets.json").status_code == 400
    assert gateway(factory, "00000000-0000-4000-8000-000000000000").status_code == 404


def test_production_device_on_a_tag_without_targets_gets_404(factory):
    with factory.embedded.store.write() as conn:
        dev.add_devices(conn, [dev.NewDevice("lonely", "", "nothing-yet", "intel-corei7-64", 40, True)])
    assert gateway(factory, device(factory, "lonely")["uuid"]).status_code == 404


def test_staged_devices_update_others_do_not(factory):
    factory.create_wave("v42", 42)
    picked = set(factory.rollout("v42", group="us-west", limit=20, return_uuids=True)["device-uuids"])
    factory.advance(86400)
    versions = {d["uuid"]: d["version"] for d in factory.devices(prod=1)}
    assert {u for u, v in versions.items() if v == 42} <= picked
    assert sum(1 for u in picked if versions[u] == 42) >= 17
    ci_versions = {d["version"] for d in factory.devices(prod=0)}
    assert ci_versions == {60}  # CI devices never see production targets


def test_ci_devices_follow_ci_builds_of_their_tag_and_hardware(factory):
    from reconciler.localfactory import targets

    with factory.embedded.store.write() as conn:
        dev.add_devices(
            conn,
            [
                dev.NewDevice("ci-devel", "", "devel", "raspberrypi4-64", 50, False),
                dev.NewDevice("prod-main", "", "main", "raspberrypi4-64", 40, True),
            ],
        )
        targets.add_ci_build(conn, 61, ["raspberrypi4-64"], ["main"])
    factory.advance(86400)
    got = {d["name"]: d["version"] for d in factory.devices()}
    assert got["ci-0001"] == 61 and got["ci-0003"] == 61  # raspberrypi4-64 CI devices on main
    assert got["ci-0000"] == 60  # intel: no build 61 for its hardware
    assert got["ci-devel"] == 60  # devel: build 61 is not tagged devel
    assert got["prod-main"] == 40  # a production device never installs a CI build, whatever its tag


def test_never_downgrades(factory):
    factory.create_wave("v45", 45)
    factory.rollout("v45", group="canary")
    factory.advance(86400)
    on_45 = {d["uuid"] for d in factory.devices(group="canary") if d["version"] == 45}
    assert on_45
    factory.ok(factory.http.post(f"{F}/waves/v45/cancel/"))
    factory.create_wave("v42", 42)
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    factory.advance(2 * 86400)
    after = {d["uuid"]: d["version"] for d in factory.devices(group="canary")}
    assert all(after[u] == 45 for u in on_45)
    s = factory.status("v42")
    canary = {g["name"]: g for g in s["other-groups"]}["canary"]
    assert canary["devices-on-newer-version"] == len(on_45)
    assert {t["version"]: t["is-orphan"] for t in canary["targets"]}[45] is True


def test_failed_installs_are_recorded_and_devices_stay(factory):
    with factory.embedded.store.write() as conn:
        conn.execute("UPDATE meta SET value = '5000' WHERE key = 'install_failure_bp'")  # 50% fail
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="eu-emea")
    stats = factory.advance(3600)
    assert stats["failed"] > 10 and stats["updated"] > 10
    failed = factory.sql(
        "SELECT d.name, d.version, e.from_version, e.to_version FROM update_events e "
        "JOIN devices d ON d.id = e.device_id WHERE e.ok = 0"
    )
    assert len(failed) == stats["failed"]
    assert all(version == 40 and frm == 40 and to == 42 for _, version, frm, to in failed)
    name = failed[0][0]
    updates = factory.ok(factory.http.get(f"/ota/devices/{name}/updates/", params={"factory": "demo"}))
    assert updates["updates"][0]["success"] is False and updates["updates"][0]["version"] == "42"
    factory.advance(3600)  # one attempt per device, version and day
    assert factory.sql("SELECT count(*) FROM update_events WHERE ok = 0")[0][0] == stats["failed"]
    factory.advance(86400)  # retried the next day
    assert factory.sql("SELECT count(*) FROM update_events WHERE ok = 0")[0][0] > stats["failed"]


def test_devices_refuse_metadata_that_does_not_verify(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    with factory.embedded.store.write() as conn:  # the stored wave targets are tampered with
        signed = json.loads(conn.execute("SELECT signed FROM waves WHERE name = 'v42'").fetchone()[0])
        signed["targets"]["intel-corei7-64-lmp-42"]["hashes"]["sha256"] = "f" * 64
        conn.execute("UPDATE waves SET signed = ? WHERE name = 'v42'", (signing.canonical_json(signed).decode(),))
    stats = factory.advance(86400)
    assert stats["updated"] == 0
    assert {d["version"] for d in factory.devices(group="canary")} == {40}


def test_devices_refuse_expired_metadata(factory):
    from datetime import timedelta

    factory.create_wave("v42", 42, expires=factory.now() + timedelta(seconds=1))
    factory.rollout("v42", group="canary")  # the last moment it may: an expired wave is not rolled out
    factory.advance(1)  # now the wave's targets have expired
    assert factory.advance(86400)["updated"] == 0
    assert {d["version"] for d in factory.devices(group="canary")} == {40}


def test_offline_devices_update_when_they_come_back(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="us-east")
    factory.advance(3600)
    behind = {d["uuid"] for d in factory.devices(group="us-east") if d["version"] == 40}
    assert behind
    factory.advance(5 * 86400)
    still = {d["uuid"] for d in factory.devices(group="us-east") if d["version"] == 40}
    assert len(still) < len(behind)


def test_device_list_filters_and_paging(factory):
    page = factory.ok(factory.http.get("/ota/devices/", params={"factory": "demo", "limit": 10, "page": 2}))
    assert page["total"] == 405 and page["page"] == 2 and page["pages"] == 41 and page["limit"] == 10
    assert [d["name"] for d in page["devices"]] == [f"demo-{i:06d}" for i in range(5, 15)]  # by name
    assert "page=3" in page["next"]
    assert len(factory.devices(group="canary")) == 10
    assert len(factory.devices(prod=0)) == 5
    assert [d["name"] for d in factory.devices(name="demo-00000*")] == [f"demo-{i:06d}" for i in range(10)]
    assert len(factory.devices(match_tag="main")) == 5
    one = factory.devices(uuid=factory.devices(group="beta")[0]["uuid"])
    assert len(one) == 1 and one[0]["device-group"] == "beta"
    assert all(
        d["target-name"] == "raspberrypi4-64-lmp-60" for d in factory.devices(target_name="raspberrypi4-64-lmp-60")
    )
    newest = factory.ok(
        factory.http.get("/ota/devices/", params={"factory": "demo", "sortby": "-last_seen", "limit": 5})
    )["devices"]
    assert [d["last-seen"] for d in newest] == sorted((d["last-seen"] for d in newest), reverse=True)
    assert factory.http.get("/ota/devices/", params={"limit": 5000}).status_code == 400
    by_uuid = factory.ok(factory.http.get(f"/ota/devices/{one[0]['uuid']}/", params={"factory": "demo", "by-uuid": 1}))
    assert by_uuid["name"] == one[0]["name"]


def test_device_groups_api(factory):
    groups = factory.ok(factory.http.get(f"{F}/device-groups/"))["groups"]
    assert [g["name"] for g in groups] == sorted(["canary", "beta", "us-east", "us-west", "eu-emea", "apac"])
    made = factory.ok(factory.http.post(f"{F}/device-groups/", json={"name": "lab", "description": "x"}), 201)
    assert made["name"] == "lab" and isinstance(made["id"], int)
    assert factory.http.post(f"{F}/device-groups/", json={"name": "lab"}).status_code == 409
    assert factory.http.post(f"{F}/device-groups/", json={"name": "bad name"}).status_code == 400
    renamed = factory.ok(factory.http.patch(f"{F}/device-groups/lab/", json={"name": "lab2"}))
    assert renamed["name"] == "lab2" and renamed["description"] == "x"
    assert factory.http.delete(f"{F}/device-groups/canary/").status_code == 409  # devices assigned
    assert factory.http.delete(f"{F}/device-groups/lab2/").status_code == 200
    assert factory.http.delete(f"{F}/device-groups/lab2/").status_code == 404


def test_the_fleet_replays_identically_from_its_seed(tmp_path):
    from reconciler.localfactory import demo
    from tests.helpers.factory import T0, Factory

    runs = []
    for name in ("a", "b"):
        demo.init_factory(tmp_path / name, devices_n=120, seed=11, start=T0)
        f = Factory(tmp_path / name)
        f.create_wave("v42", 42)
        f.rollout("v42", group="us-east", limit=15)
        f.rollout("v42", percentage=20)
        f.advance(36 * 3600)
        runs.append(
            (
                {d["name"]: (d["version"], d["last-seen"]) for d in f.devices()},
                f.sql("SELECT device_id, at, from_version, to_version, ok FROM update_events ORDER BY id"),
            )
        )
        f.close()
    assert runs[0] == runs[1]
