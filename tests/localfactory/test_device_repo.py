"""The device-facing TUF repository (issue 11, item 4): every view serves root chain, timestamp,
snapshot and targets signed with the online keys; a device running the full client flow over HTTP
accepts them and refuses replays; the simulated fleet refuses rollbacks too."""

from __future__ import annotations

import itertools

import pytest

from reconciler import signing
from reconciler.localfactory import store, tufclient
from tests.helpers.factory import F, new_factory

GATEWAY = "/ota/gateway/demo/repo"
DAY = 86400


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def uuid_of(factory, name: str) -> str:
    return factory.ok(factory.http.get(f"/ota/devices/{name}/", params={"factory": "demo"}))["uuid"]


def fetcher(factory, uuid: str, replace: dict | None = None):
    """What a device downloads from the gateway; ``replace`` swaps files as a replaying attacker would."""

    def fetch(name: str) -> dict | None:
        if replace and name in replace:
            return replace[name]
        r = factory.http.get(f"{GATEWAY}/{name}", headers={"x-ats-device-uuid": uuid})
        if r.status_code == 404:
            return None
        return factory.ok(r)

    return fetch


def files(factory, uuid: str) -> dict[str, dict]:
    fetch = fetcher(factory, uuid)
    return {n: fetch(f"{n}.json") for n in ("root", "timestamp", "snapshot", "targets")}


def new_device(factory, uuid: str) -> tufclient.Device:
    return tufclient.Device(fetcher(factory, uuid)("1.root.json"))


def now(factory) -> int:
    return int(factory.now().timestamp())


def test_every_view_serves_timestamp_and_snapshot_signed_by_the_online_key(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    online = factory.ok(factory.http.get(f"{F}/ci-targets.pub"))
    for name, targets_version in (("ci-0000", None), ("demo-000001", 42), ("demo-000100", 40)):
        uuid = uuid_of(factory, name)
        got = files(factory, uuid)
        root = got["root"]
        for role in ("timestamp", "snapshot"):
            assert got[role] is not None, f"{name}: no {role}.json"
            assert got[role]["signed"]["_type"] == role.capitalize()
            keyids = signing.verify_threshold(root, role, got[role]["signed"], got[role]["signatures"])
            assert root["signed"]["keys"][keyids[0]]["keyval"]["public"] == online["keyval"]["public"]
        version = got["targets"]["signed"]["version"]
        if targets_version is not None:
            assert version == targets_version
        assert got["snapshot"]["signed"]["version"] == version
        assert got["snapshot"]["signed"]["meta"] == {"targets.json": {"version": version}}
        assert got["timestamp"]["signed"]["version"] == version * 1000
        assert got["timestamp"]["signed"]["meta"] == {"snapshot.json": {"version": version}}
        device = new_device(factory, uuid)
        assert device.refresh(fetcher(factory, uuid), now(factory)) == got["targets"]
        assert device.trusted.root["signed"]["version"] == 2
        assert (device.trusted.timestamp, device.trusted.snapshot, device.trusted.targets) == (
            version * 1000,
            version,
            version,
        )


def test_versions_increase_on_every_change_and_the_timestamp_is_resigned_before_it_expires(factory):
    from reconciler.localfactory import targets

    ci, prod = uuid_of(factory, "ci-0000"), uuid_of(factory, "demo-000001")
    ci_device, prod_device = new_device(factory, ci), new_device(factory, prod)
    seen: dict[str, list[tuple[int, int, int]]] = {ci: [], prod: []}

    def refresh_both():
        for uuid, device in ((ci, ci_device), (prod, prod_device)):
            device.refresh(fetcher(factory, uuid), now(factory))
            t = device.trusted
            seen[uuid].append((t.timestamp, t.snapshot, t.targets))

    refresh_both()
    with factory.embedded.store.write() as conn:
        targets.add_ci_build(conn, 61, ["intel-corei7-64"], ["main"])
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")  # demo-000001 is in canary: now the wave's view
    refresh_both()
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    refresh_both()
    expires = store.parse_time(files(factory, prod)["timestamp"]["signed"]["expires"])
    factory.advance(3 * DAY)
    refresh_both()
    factory.advance(10 * DAY)  # longer than a timestamp lives: a new one was signed meanwhile
    refresh_both()
    later = files(factory, prod)["timestamp"]["signed"]
    assert store.parse_time(later["expires"]) > expires and store.parse_time(later["expires"]) > now(factory)
    ci_seen, prod_seen = seen[ci], seen[prod]
    assert ci_seen[1][2] == ci_seen[0][2] + 1 and ci_seen[1][0] > ci_seen[0][0]  # a CI build
    assert prod_seen[1] == (42000, 42, 42)  # the wave
    assert prod_seen[2] == (42000, 42, 42)  # complete: the same targets, now the tag's production ones
    assert prod_seen[3][0] == 42001 and prod_seen[4][0] > 42001  # re-signed as time passes
    for history in seen.values():
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(history))


def test_a_device_refuses_replayed_older_metadata(factory):
    from reconciler.localfactory import targets

    uuid = uuid_of(factory, "ci-0000")
    device = new_device(factory, uuid)
    device.refresh(fetcher(factory, uuid), now(factory))
    old = files(factory, uuid)
    with factory.embedded.store.write() as conn:
        targets.add_ci_build(conn, 61, ["intel-corei7-64"], ["main"])
    device.refresh(fetcher(factory, uuid), now(factory))
    trusted = device.trusted
    assert trusted.targets == old["targets"]["signed"]["version"] + 1
    replays = {
        "an older targets.json": {"targets.json": old["targets"]},
        "an older snapshot.json": {"snapshot.json": old["snapshot"]},
        "an older timestamp, snapshot and targets": {f"{n}.json": old[n] for n in ("timestamp", "snapshot", "targets")},
    }
    for what, replace in replays.items():
        with pytest.raises(tufclient.Refused) as refused:
            device.refresh(fetcher(factory, uuid, replace), now(factory))
        assert device.trusted == trusted, what
        assert "version" in str(refused.value), (what, str(refused.value))
    # a fresh device accepts the old set (nothing to compare with) but not once it expired
    fresh = new_device(factory, uuid)
    fresh.refresh(
        fetcher(factory, uuid, {f"{n}.json": old[n] for n in ("timestamp", "snapshot", "targets")}), now(factory)
    )
    with pytest.raises(tufclient.Refused, match="timestamp metadata has expired"):
        new_device(factory, uuid).refresh(
            fetcher(factory, uuid, {f"{n}.json": old[n] for n in ("timestamp", "snapshot", "targets")}),
            now(factory) + 8 * DAY,
        )


def test_a_device_refuses_metadata_signed_by_the_wrong_key_or_below_threshold(factory):
    uuid = uuid_of(factory, "demo-000100")
    good = files(factory, uuid)
    forged = {"signed": dict(good["timestamp"]["signed"], version=99999), "signatures": good["timestamp"]["signatures"]}
    with pytest.raises(tufclient.Refused, match="timestamp metadata has 0 valid"):
        new_device(factory, uuid).refresh(fetcher(factory, uuid, {"timestamp.json": forged}), now(factory))
    online_only = {"signed": good["targets"]["signed"], "signatures": good["targets"]["signatures"][:1]}
    with pytest.raises(tufclient.Refused, match="targets metadata has 1 valid signature"):
        new_device(factory, uuid).refresh(fetcher(factory, uuid, {"targets.json": online_only}), now(factory))


def test_fleet_devices_refuse_a_targets_rollback_after_a_cancel(factory):
    """Canary devices fetch wave 42 (every install fails), the wave is canceled and a wave for 41
    follows: the canary devices trust targets version 42 and refuse 41; beta devices update."""
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    with factory.embedded.store.write() as conn:
        store.set_meta(conn, "install_failure_bp", 10000)
    factory.advance(3600)
    with factory.embedded.store.write() as conn:
        store.set_meta(conn, "install_failure_bp", 0)
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    factory.create_wave("v41", 41)
    factory.rollout("v41", group="canary")
    factory.rollout("v41", group="beta")
    factory.advance(DAY)
    fetched_42 = {
        d
        for (d,) in factory.sql(
            "SELECT DISTINCT d.name FROM update_events e JOIN devices d ON d.id = e.device_id "
            "WHERE e.to_version = 42 AND e.ok = 0"
        )
    }
    assert len(fetched_42) >= 8
    versions = {d["name"]: d["version"] for d in factory.devices(group="canary") + factory.devices(group="beta")}
    assert all(versions[name] == 40 for name in fetched_42)
    beta = [v for name, v in versions.items() if name not in fetched_42 and v == 41]
    assert len(beta) >= 45


def test_a_factory_made_before_devices_recorded_trust_gets_the_columns(tmp_path_factory, tmp_path):
    import shutil
    import sqlite3

    from tests.helpers.factory import Factory, make_template

    path = tmp_path / "old"
    shutil.copytree(make_template(tmp_path_factory), path)
    with sqlite3.connect(path / "factory.db") as conn:
        conn.execute("DROP INDEX devices_trust")
        for column in store.TRUST_COLUMNS:
            conn.execute(f"ALTER TABLE devices DROP COLUMN {column}")
    factory = Factory(path)
    try:
        factory.create_wave("v42", 42)
        factory.rollout("v42", group="canary")
        assert factory.advance(3600)["updated"] >= 8
        assert factory.sql("SELECT count(*) FROM devices WHERE tuf_targets = 42")[0][0] >= 8
        assert factory.sql("SELECT 1 FROM sqlite_master WHERE name = 'devices_trust'")
    finally:
        factory.close()
