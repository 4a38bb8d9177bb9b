"""Local factory: the demo factory is exactly what notes/contracts.md promises, and open_embedded."""

from __future__ import annotations

import io
import tarfile
import uuid

import httpx
import pytest

from reconciler import signing
from reconciler.localfactory import demo, open_embedded, store
from reconciler.localfactory import devices as store_devices
from tests.helpers.factory import T0, F

HWIDS = ("intel-corei7-64", "raspberrypi4-64")


@pytest.fixture(scope="module")
def demo_factory(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "factory"
    demo.init_factory(path, devices_n=250, seed=42, start=T0)
    emb = open_embedded(path)
    http = httpx.Client(transport=httpx.WSGITransport(app=emb.app), base_url="http://lf")
    yield emb, http
    http.close()
    emb.store.close()


def all_devices(http) -> list[dict]:
    return http.get("/ota/devices/", params={"factory": "demo", "limit": 1000}).json()["devices"]


def test_devices_follow_the_contract(demo_factory):
    emb, http = demo_factory
    assert emb.factory == "demo" and emb.created is False
    devices = {d["name"]: d for d in all_devices(http)}
    prod = [devices[f"demo-{i:06d}"] for i in range(250)]
    for i, d in enumerate(prod):
        assert d["uuid"] == str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler-demo:42:{i}"))
        assert d["tag"] == "production" and d["is-prod"] is True
        assert d["target-name"] == f"{HWIDS[i % 2]}-lmp-40"
        expected = (
            "canary"
            if i < 10
            else "beta"
            if i < 60
            else ["us-east"] * 3 + ["us-west"] * 2 + ["eu-emea"] * 3 + ["apac", ""]
        )
        assert d["device-group"] == (expected if isinstance(expected, str) else expected[i % 10])
    ci = [d for n, d in devices.items() if n.startswith("ci-")]
    assert sorted(d["name"] for d in ci) == [f"ci-{j:04d}" for j in range(5)]  # max(5, N // 100)
    assert all(
        d["tag"] == "main" and not d["is-prod"] and d["device-group"] == "" and d["target-name"].endswith("-lmp-60")
        for d in ci
    )
    assert len(devices) == 255


def test_targets_groups_and_production(demo_factory):
    _, http = demo_factory
    files = http.get(f"{F}/targets/").json()
    assert sorted(files) == sorted(f"{h}-lmp-{v}" for h in HWIDS for v in range(40, 61))
    for name, meta in files.items():
        v = int(meta["custom"]["version"])
        assert name.endswith(f"-lmp-{v}") and meta["custom"]["targetFormat"] == "OSTREE" and meta["length"] == 0
        assert meta["custom"]["tags"] == (["main", "devel"] if v >= 50 else ["main"])
        assert meta["custom"]["hardwareIds"] == [name.rsplit("-lmp-", 1)[0]]
    groups = [g["name"] for g in http.get(f"{F}/device-groups/").json()["groups"]]
    assert sorted(groups) == sorted(["canary", "beta", "us-east", "us-west", "eu-emea", "apac"])
    prod = http.get(f"{F}/prod-targets/", params={"tag": "production"}).json()["production"]
    assert prod["signed"]["version"] == 40
    assert sorted(prod["signed"]["targets"]) == [f"{h}-lmp-40" for h in HWIDS]
    waves = http.get(f"{F}/waves/").json()["waves"]
    assert [(w["name"], w["status"], w["version"]) for w in waves] == [("populate-targets", "complete", "40")]
    assert http.get(f"{F}/waves/", params={"status": "active"}).json()["total"] == 0
    assert http.get(f"{F}/waves/").headers["date"] == store.http_date(T0)


def test_operator_key_archive(demo_factory):
    emb, http = demo_factory
    data = emb.keys_archive.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert len(names) == 2 and names[0].startswith("tufrepo/keys/fioctl-targets-")
    assert names[0].endswith(".pub") and names[1] == names[0][:-4] + ".sec"
    assert emb.keys_archive.stat().st_mode & 0o077 == 0
    root = http.get("/ota/repo/demo/api/v1/user_repo/root.json").json()
    online = http.get(f"{F}/ci-targets.pub").json()
    signer = signing.find_offline_signer(root, signing.load_key_archive(data), online)
    assert names[0] == f"tufrepo/keys/fioctl-targets-{signer.keyid}.pub"
    assert root["signed"]["roles"]["targets"]["keyids"] == [signing.key_id(online), signer.keyid]
    with emb.store.read() as conn:  # the factory never holds the offline private key
        assert conn.execute("SELECT private FROM tuf_keys WHERE keyid = ?", (signer.keyid,)).fetchone() == (None,)


def test_open_embedded_default_location_and_creation(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    first = open_embedded()
    assert first.created is True and first.path == tmp_path / "state" / "reconciler" / "factory"
    assert first.keys_archive == first.path / "targets.only.key.tgz" and first.keys_archive.exists()
    http = httpx.Client(transport=httpx.WSGITransport(app=first.app), base_url="http://x")
    assert http.get("/ota/devices/", params={"factory": "demo"}).json()["total"] == 2000 + 20
    http.close()
    first.store.close()
    again = open_embedded()
    assert again.created is False and again.factory == "demo"
    again.store.close()
    monkeypatch.setenv("RECONCILE_LOCAL", str(tmp_path / "elsewhere"))
    other = open_embedded()
    assert other.path == tmp_path / "elsewhere" and other.created is True
    other.store.close()


def test_init_refuses_an_existing_factory(tmp_path):
    demo.init_factory(tmp_path / "f", devices_n=0, start=T0)
    with pytest.raises(demo.FactoryExists):
        demo.init_factory(tmp_path / "f", devices_n=0, start=T0)


def test_demo_uuid_matches_uuid5():
    for seed, i in ((42, 0), (7, 123456), (0, 999999)):
        assert demo.demo_uuid(seed, i) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler-demo:{seed}:{i}"))


def test_a_tags_device_list_is_read_page_by_page_in_its_order_not_sorted_per_page(tmp_path):
    """The device list's default order within a tag's production devices is an index (``devices_list``):
    a page is read in order up to its limit, where SQLite sorted all the tag's devices for every page
    (81,000 devices, 81 pages: 16 s). A factory made before the index gets it, as it gets the wave index,
    when it is opened."""
    path = tmp_path / "factory"
    demo.init_factory(path, devices_n=50, seed=42, start=T0)
    emb = open_embedded(path)
    with emb.store.write() as conn:
        conn.execute("DROP INDEX devices_list")
        conn.execute("DROP INDEX waves_tag_version")
    emb.store.close()
    emb = open_embedded(path)  # as a factory made before the indexes
    try:
        with emb.store.read() as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert {"devices_list", "waves_tag_version"} <= names
            filters = store_devices.parse_filters({"match_tag": "production", "prod": "1", "page": "2", "limit": "10"})
            statements: list[str] = []
            conn.set_trace_callback(statements.append)  # the statements as run, their values filled in
            try:
                page, total = store_devices.list_devices(conn, filters)
            finally:
                conn.set_trace_callback(None)
            listing = next(s for s in statements if "LIMIT" in s)
            plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {listing}"))
        assert total == 50 and [d["name"] for d in page] == [f"demo-{i:06d}" for i in range(10, 20)]
        assert "USING INDEX devices_list" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        emb.store.close()
