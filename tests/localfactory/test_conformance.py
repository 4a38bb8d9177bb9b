"""Conformance: the served local factory against the wire contract (reference/foundries-api.md).

A plain httpx client, written from the reference and the seeds only (not ``reconciler.factory.client`` nor
``reconciler.signing``), drives ``reconcile-factory serve`` over real HTTP through the seed-002 sequence:
``waves init`` (built and signed as fioctl does, §2.1), rollouts to a group, ``--limit`` within a
group, factory-wide, by UUIDs, dry runs, ``waves status``, then ``complete``; init, rollout,
``cancel``; and the phased sequences of its advanced usage (limits accumulating in a group, then the
rest of it; UUID lists with and without a group and a limit; ``--print-uuids`` passed back; a
percentage), with ``fioctl status``. Every documented field, its JSON type and every status code fioctl acts on are checked,
so a change to the factory that breaks the contract fails here.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from reconciler.localfactory import cli
from tests.helpers.serving import serve_factory

REPO = Path(__file__).resolve().parents[2]
FACTORY = "demo"
F = f"/ota/factories/{FACTORY}"
TAG = "production"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
SUCCESS = (200, 201, 202, 204)  # fioctl's success codes (§1.1)


# ------------------------------------------------------------------------------------ the served factory


def factory_cli(path: Path, *args: str) -> str:
    result = CliRunner().invoke(cli.main, ["--local", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``reconcile-factory serve`` in its own process, and a token; yields (factory dir, client)."""
    path = tmp_path_factory.mktemp("conformance") / "factory"
    factory_cli(path, "init", "--demo", "--devices", "200", "--seed", "11", "--start", "2026-01-05T12:00:00Z")
    token = factory_cli(path, "token", "--name", "conformance").strip()
    # fioctl's headers (§1.1): the token, its own User-Agent; Content-Type only with a body.
    with (
        serve_factory(path) as url,
        httpx.Client(
            base_url=url, headers={"OSF-TOKEN": token, "User-Agent": "fioctl-conformance"}, timeout=30
        ) as client,
    ):
        yield path, client


# ------------------------------------------------------------------------------------ contract helpers


def ok(r: httpx.Response, status: int | None = None):
    assert r.status_code in SUCCESS, r.text
    if status is not None:
        assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def error(r: httpx.Response, status: int) -> dict:
    """An error body fioctl can show (§1.1): ``message`` (or ``msg``) and optional ``errors``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body.get("message") or body.get("msg"), str) and (body.get("message") or body.get("msg"))
    assert isinstance(body.get("errors", []), list | dict)
    return body


def is_time(value) -> bool:
    return isinstance(value, str) and bool(RFC3339.match(value))


def check_wave(w: dict, *, name: str, version: int, status: str, targets: bool = False) -> None:
    """``Wave`` (§1.2): every field and its type."""
    assert (w["name"], w["version"], w["tag"], w["status"]) == (name, str(version), TAG, status)
    assert ("targets" in w) == targets
    assert isinstance(w["rollout-groups"], dict) and isinstance(w["rollout-history"], list)
    for gname, g in w["rollout-groups"].items():
        assert g["group-name"] == gname and type(g["group-id"]) is int
        assert is_time(g["created-at"]) and isinstance(g["created-by"], str)
    for h in w["rollout-history"]:
        assert set(h) >= {"group-name", "rollout-by", "rollout-at", "is-full-group", "is-factory-wide", "num-devices"}
        assert isinstance(h["group-name"], str) and isinstance(h["rollout-by"], str) and is_time(h["rollout-at"])
        assert type(h["is-full-group"]) is bool and type(h["is-factory-wide"]) is bool and type(h["num-devices"]) is int
    meta = w["change-meta"]
    assert all(isinstance(meta[k], str) for k in ("created-at", "created-by", "updated-at", "updated-by"))
    assert is_time(meta["created-at"])
    assert is_time(meta["updated-at"]) == (status != "active")


def check_rollout_result(r: dict, *, listed: bool) -> int:
    """``WaveRolloutResult`` (§1.2): the Wave plus ``device-num`` and exactly that many UUIDs/names."""
    assert type(r["device-num"]) is int and r["device-num"] >= 0
    assert isinstance(r["device-uuids"], list) and isinstance(r["device-names"], list)
    if listed:
        assert len(r["device-uuids"]) == len(r["device-names"]) == r["device-num"]
    return r["device-num"]


def check_status(s: dict, *, name: str, version: int, status: str) -> None:
    """``WaveStatus`` and ``RolloutGroupStatus`` (§1.2, §2.3): fields, types, and the sums that bind them."""
    assert (s["name"], s["version"], s["tag"], s["status"]) == (name, version, TAG, status)
    assert is_time(s["created-at"]) and isinstance(s["finished-at"], str)
    assert is_time(s["finished-at"]) == (status != "active")
    counts = ("total-devices", "updated-devices", "scheduled-devices", "unscheduled-devices")
    assert all(type(s[k]) is int and s[k] >= 0 for k in counts)
    assert s["updated-devices"] + s["scheduled-devices"] + s["unscheduled-devices"] == s["total-devices"]
    groups = s["rollout-groups"] + s["other-groups"]
    for g in groups:
        assert isinstance(g["name"], str) and isinstance(g["rollout-at"], str)
        for k in (
            "devices-total",
            "devices-online",
            "devices-on-wave-version",
            "devices-on-newer-version",
            "devices-on-older-version",
            "devices-scheduled-for-update",
        ):
            assert type(g[k]) is int and g[k] >= 0, k
        assert (
            g["devices-on-wave-version"] + g["devices-on-newer-version"] + g["devices-on-older-version"]
            == g["devices-total"]
            == sum(t["devices"] for t in g["targets"])
        )
        assert g["devices-online"] <= g["devices-total"]
        assert g["devices-scheduled-for-update"] <= g["devices-on-older-version"]
        for t in g["targets"]:
            assert type(t["version"]) is int and type(t["devices"]) is int and type(t["is-orphan"]) is bool
        assert "(re-)installing" not in g  # removed from the API in 2024
    assert all(is_time(g["rollout-at"]) for g in s["rollout-groups"])
    assert all(g["rollout-at"] == "" for g in s["other-groups"])
    assert sum(g["devices-total"] for g in groups) == s["total-devices"]
    assert sum(g["devices-scheduled-for-update"] for g in groups) == s["scheduled-devices"]
    if any(g["name"] == "" for g in s["other-groups"]):
        assert s["other-groups"][-1]["name"] == ""  # "(No Group)" is the last row
    if status == "canceled":
        assert s["scheduled-devices"] == 0
    if status == "complete":
        assert s["unscheduled-devices"] == 0


def canonical(obj) -> bytes:
    """Canonical JSON as fioctl writes it (§4.3), enough for these ASCII, control-free documents."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def offline_signer(client: httpx.Client, archive: Path):
    """fioctl's FindOneTufSigner (§2.1 step 9, §3.2) for an ED25519 archive: (keyid, private key)."""
    root = ok(client.get(f"/ota/repo/{FACTORY}/api/v1/user_repo/root.json"))["signed"]  # the CI root
    online = ok(client.get(f"{F}/ci-targets.pub"))
    assert set(online) == {"keytype", "keyval"} and isinstance(online["keyval"]["public"], str)
    candidates = {
        kid: root["keys"][kid]["keyval"]["public"].strip()
        for kid in root["roles"]["targets"]["keyids"]
        if root["keys"][kid]["keyval"]["public"] != online["keyval"]["public"]
    }
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes()), mode="r:gz") as tar:
        entries = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    found = []
    for name, raw in entries.items():
        if not name.endswith(".pub"):
            continue
        public = json.loads(raw)["keyval"]["public"].strip()
        for kid, root_public in candidates.items():
            if public == root_public:
                sec = json.loads(entries[name.replace(".pub", ".sec", 1)])
                assert sec["keytype"] == root["keys"][kid]["keytype"] == "ED25519"
                found.append((kid, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sec["keyval"]["private"])[:32])))
    assert len(found) == 1
    return found[0]


def server_now(client: httpx.Client) -> datetime:
    return parsedate_to_datetime(client.get(f"{F}/waves/", params={"limit": 1, "page": 1}).headers["date"])


def init_wave(client: httpx.Client, path: Path, name: str, version: int) -> dict:
    """``fioctl waves init <name> <version> production -k targets.only.key.tgz`` (§2.1), over the API."""
    new = ok(client.get(f"{F}/targets/", params={"version": version}))
    assert new and isinstance(new, dict)
    for target_name, meta in new.items():
        assert type(meta["length"]) is int and isinstance(meta["hashes"]["sha256"], str)
        assert isinstance(meta["custom"]["version"], str) and meta["custom"]["version"] == str(version)
        assert isinstance(meta["custom"]["hardwareIds"], list) and isinstance(meta["custom"]["tags"], list)
        assert ok(client.get(f"{F}/targets/{target_name}")) == meta
    r = client.get(f"{F}/prod-targets/", params={"tag": TAG})
    current = ok(r)[TAG] if r.status_code != 404 else None
    expires = (server_now(client) + timedelta(days=365)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    targets = dict(current["signed"]["targets"]) if current else {}
    for target_name, meta in new.items():
        assert target_name not in targets
        targets[target_name] = {**meta, "custom": {**meta["custom"], "tags": [TAG]}}
    signed = {"_type": "Targets", "expires": expires, "targets": targets, "version": version}
    kid, key = offline_signer(client, path / "targets.only.key.tgz")
    payload = canonical(signed)
    sig = {"keyid": kid, "method": "ed25519", "sig": base64.b64encode(key.sign(payload)).decode()}
    body = (
        b'{"name":'
        + json.dumps(name).encode()
        + b',"version":"'
        + str(version).encode()
        + b'","tag":"'
        + TAG.encode()
        + b'","targets":{"signed":'
        + payload
        + b',"signatures":'
        + json.dumps([sig]).encode()
        + b"}}"
    )
    created = ok(client.post(f"{F}/waves/", content=body, headers={"Content-Type": "application/json"}), 201)
    check_wave(created, name=name, version=version, status="active")
    shown = ok(client.get(f"{F}/waves/{name}/", params={"show-targets": 1}))
    check_wave(shown, name=name, version=version, status="active", targets=True)
    assert shown["targets"]["signed"] == signed
    assert b'"signed":' + payload in client.get(f"{F}/waves/{name}/", params={"show-targets": 1}).content
    sigs = shown["targets"]["signatures"]
    assert sig in sigs and len(sigs) == 2, "the offline signature plus the service's online one"
    online_kid = next(
        k
        for k in ok(client.get(f"/ota/repo/{FACTORY}/api/v1/user_repo/root.json", params={"production": 1}))["signed"][
            "roles"
        ]["targets"]["keyids"]
        if k != kid
    )
    online = next(s for s in sigs if s["keyid"] == online_kid)
    public = bytes.fromhex(ok(client.get(f"{F}/ci-targets.pub"))["keyval"]["public"])
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(online["sig"]), payload)
    return signed


def rollout(client: httpx.Client, wave: str, expect: int = 200, **options) -> dict:
    """``WaveRolloutOptions`` as fioctl sends them: omitempty fields, the three flags always."""
    body = {k.replace("_", "-"): v for k, v in options.items() if k not in ("dry_run", "return_uuids")}
    body.update(
        {
            "dry-run": options.get("dry_run", False),
            "return-uuids": options.get("return_uuids", False),
            "return-names": options.get("return_uuids", False),
        }
    )
    r = client.post(f"{F}/waves/{wave}/rollout/", json=body)
    return error(r, expect) if expect >= 400 else ok(r, expect)


def next_version(client: httpx.Client) -> int:
    r = client.get(f"{F}/prod-targets/", params={"tag": TAG})
    return (ok(r)[TAG]["signed"]["version"] if r.status_code == 200 else 40) + 1


# ------------------------------------------------------------------------------------ the seed-002 sequence


def test_init_rollouts_status_complete(served):
    path, client = served
    version = next_version(client)
    name = f"v{version}-update"
    signed = init_wave(client, path, name, version)

    listed = ok(client.get(f"{F}/waves/", params={"limit": 20, "page": 1, "status": "active"}))
    assert type(listed["total"]) is int and (listed["next"] is None or isinstance(listed["next"], str))
    assert [w["name"] for w in listed["waves"]] == [name]
    check_wave(listed["waves"][0], name=name, version=version, status="active")
    assert ok(client.get(f"{F}/wave-targets/", params={"name": name}))[name]["signed"] == signed
    error(client.post(f"{F}/waves/", json={"name": name}), 400)

    # fioctl waves rollout <wave> canary
    full = rollout(client, name, group="canary")
    reached = [check_rollout_result(full, listed=False)]
    (h,) = full["rollout-history"]
    assert (h["group-name"], h["is-full-group"], h["is-factory-wide"], h["num-devices"]) == (
        "canary",
        True,
        False,
        reached[0],
    )
    assert set(full["rollout-groups"]) == {"canary"}

    # --group us-east --limit=10: a dry run with --print-uuids first, then the same for real
    dry = rollout(client, name, group="us-east", limit=10, dry_run=True, return_uuids=True)
    assert check_rollout_result(dry, listed=True) == 10 and len(dry["rollout-history"]) == 1
    real = rollout(client, name, group="us-east", limit=10, return_uuids=True)
    reached.append(check_rollout_result(real, listed=True))
    assert reached[-1] == 10 and not real["rollout-history"][-1]["is-full-group"]
    us_east = {
        d["uuid"]
        for d in ok(client.get("/ota/devices/", params={"factory": FACTORY, "group": "us-east", "limit": 500}))[
            "devices"
        ]
    }
    assert set(real["device-uuids"]) <= us_east

    # --limit=5 across the factory, then two UUIDs of the tag's production devices
    wide = rollout(client, name, limit=5, return_uuids=True)
    reached.append(check_rollout_result(wide, listed=True))
    assert wide["rollout-history"][-1]["is-factory-wide"] and wide["rollout-history"][-1]["group-name"] == ""
    devices = ok(client.get("/ota/devices/", params={"factory": FACTORY, "group": "apac", "limit": 500}))
    assert type(devices["total"]) is int and "next" in devices
    picks = [d["uuid"] for d in devices["devices"] if d["is-prod"] and d["tag"] == TAG][:2]
    by_uuid = rollout(client, name, uuids=picks, return_uuids=True)
    reached.append(check_rollout_result(by_uuid, listed=True))
    assert set(by_uuid["device-uuids"]) <= set(picks)
    history = ok(client.get(f"{F}/waves/{name}/"))["rollout-history"]
    assert [h["num-devices"] for h in history] == reached

    # What the server refuses: no selection, limit over 10,000, an unknown group, a foreign UUID.
    error(client.post(f"{F}/waves/{name}/rollout/", json={"dry-run": False}), 400)
    error(client.post(f"{F}/waves/{name}/rollout/", json={"limit": 10_001, "dry-run": False}), 400)
    error(client.post(f"{F}/waves/{name}/rollout/", json={"group": "nope", "dry-run": False}), 404)
    error(
        client.post(
            f"{F}/waves/{name}/rollout/", json={"uuids": ["00000000-0000-4000-8000-000000000000"], "dry-run": False}
        ),
        400,
    )

    factory_cli(path, "advance", "1d")
    for wave in (name, "$active$"):
        s = ok(client.get(f"{F}/waves/{wave}/status/", params={"offline-threshold": 4}))
        check_status(s, name=name, version=version, status="active")
    assert [g["name"] for g in s["rollout-groups"]] == ["canary", "us-east"]  # UUIDs without a group: none
    error(client.get(f"{F}/waves/{name}/status/", params={"offline-threshold": "x"}), 400)

    # fioctl waves complete: no body, no Content-Type
    r = client.post(f"{F}/waves/{name}/complete/")
    assert r.status_code in SUCCESS and "content-type" not in r.request.headers
    done = ok(client.get(f"{F}/waves/{name}/"))
    check_wave(done, name=name, version=version, status="complete")
    prod = ok(client.get(f"{F}/prod-targets/", params={"tag": TAG}))[TAG]
    assert prod["signed"] == signed and prod["signed"]["version"] == version
    s = ok(client.get(f"{F}/waves/{name}/status/"))
    check_status(s, name=name, version=version, status="complete")
    error(client.post(f"{F}/waves/{name}/complete/"), 409)
    error(client.post(f"{F}/waves/{name}/cancel/"), 409)  # a completed wave can't be canceled
    error(client.get(f"{F}/wave-targets/", params={"name": name}), 404)


def test_init_rollout_cancel(served):
    path, client = served
    version = next_version(client)
    name = f"v{version}-canceled"
    before = client.get(f"{F}/prod-targets/", params={"tag": TAG})
    init_wave(client, path, name, version)
    second = {"name": "second", "version": str(version + 1), "tag": TAG, "targets": {"signed": {}, "signatures": []}}
    error(client.post(f"{F}/waves/", json=second), 409)  # one active wave per tag
    check_rollout_result(rollout(client, name, group="beta"), listed=False)
    factory_cli(path, "advance", "6h")
    r = client.post(f"{F}/waves/{name}/cancel/")
    assert r.status_code in SUCCESS
    check_wave(ok(client.get(f"{F}/waves/{name}/")), name=name, version=version, status="canceled")
    s = ok(client.get(f"{F}/waves/{name}/status/", params={"offline-threshold": 4}))
    check_status(s, name=name, version=version, status="canceled")
    after = client.get(f"{F}/prod-targets/", params={"tag": TAG})
    assert after.status_code == before.status_code and after.content == before.content  # cancel publishes nothing
    error(client.get(f"{F}/wave-targets/", params={"name": name}), 404)
    error(client.post(f"{F}/waves/{name}/rollout/", json={"group": "beta", "dry-run": False}), 409)
    error(client.post(f"{F}/waves/{name}/complete/"), 409)
    listed = ok(client.get(f"{F}/waves/", params={"limit": 20, "page": 1, "status": "canceled"}))
    assert name in [w["name"] for w in listed["waves"]]


def test_transport_conventions(served):
    _, client = served
    error(client.get(f"{F}/waves/no-such-wave/"), 404)
    error(client.get(f"{F}/prod-targets/", params={"tag": "no-such-tag"}), 404)  # never 200 without the tag
    error(client.get("/ota/factories/other/waves/", params={"limit": 20, "page": 1}), 404)
    error(httpx.get(str(client.base_url.join(f"{F}/waves/"))), 401)
    r = client.post(f"{F}/waves/", content=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    error(r, 415)
    r = client.post(f"{F}/waves/", content=b" " * (16 * 1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    error(r, 413)
    assert parsedate_to_datetime(client.get(f"{F}/device-groups/").headers["date"]).tzinfo is not None
    groups = ok(client.get(f"{F}/device-groups/"))["groups"]
    assert all(type(g["id"]) is int and isinstance(g["name"], str) for g in groups)


def prod_uuids(client: httpx.Client, group: str) -> list[str]:
    """The production devices of the wave's tag in a group (fioctl devices list --group G)."""
    listed = ok(client.get("/ota/devices/", params={"factory": FACTORY, "group": group, "limit": 500}))
    return sorted(d["uuid"] for d in listed["devices"] if d["is-prod"] and d["tag"] == TAG)


def test_phased_rollouts_of_the_advanced_usage(served):
    """The seed's phased sequences: ``--group G --limit`` accumulating then the rest of the group,
    ``--group G --uuids @list``, ``--group G --limit N --uuids @list``, ``--limit N --uuids @list``
    across the factory, ``--limit N%``, ``--print-uuids`` into a file passed back as ``--uuids``;
    then ``fioctl status`` while the wave is active, and cancel."""
    path, client = served
    version = next_version(client)
    name = f"v{version}-phased"
    init_wave(client, path, name, version)
    staged: set[str] = set()

    def reach(expect_num: int | None = None, **options) -> set[str]:
        r = rollout(client, name, return_uuids=True, **options)
        num = check_rollout_result(r, listed=True)
        got = set(r["device-uuids"])
        assert len(got) == num and not got & staged, "a pick never repeats a staged device"
        if expect_num is not None:
            assert num == expect_num, (options, num)
        staged.update(got)
        return got

    # --group us-east --limit 10 ; --limit 20 (30 in total) ; --group us-east (the rest)
    us_east = set(prod_uuids(client, "us-east"))
    assert len(us_east) > 30
    first, second = reach(10, group="us-east", limit=10), reach(20, group="us-east", limit=20)
    assert first | second <= us_east
    rest = reach(group="us-east")
    assert first | second | rest == us_east

    # --group eu-emea --uuids @canary.lst ; --group eu-emea --limit 4 --uuids @phase1.lst
    eu_emea = prod_uuids(client, "eu-emea")
    canary_lst, phase1 = eu_emea[:3], eu_emea[3:11]
    assert reach(3, group="eu-emea", uuids=canary_lst) == set(canary_lst)
    assert reach(4, group="eu-emea", limit=4, uuids=phase1) <= set(phase1)
    foreign = prod_uuids(client, "us-west")[:1]
    error(client.post(f"{F}/waves/{name}/rollout/", json={"group": "eu-emea", "uuids": foreign, "dry-run": False}), 400)

    # --limit 3 --uuids @pre-selected.lst across the factory ; --limit 10% in a group
    pre_selected = prod_uuids(client, "us-west")[:6]
    assert reach(3, limit=3, uuids=pre_selected) <= set(pre_selected)
    assert reach(group="apac", percentage=10) <= set(prod_uuids(client, "apac"))

    # --limit 5 --print-uuids > pre-selected.lst, then --uuids @pre-selected.lst
    dry = rollout(client, name, limit=5, dry_run=True, return_uuids=True)
    assert check_rollout_result(dry, listed=True) == 5
    assert reach(5, uuids=dry["device-uuids"]) == set(dry["device-uuids"])

    history = ok(client.get(f"{F}/waves/{name}/"))["rollout-history"]
    assert [(h["group-name"], h["is-full-group"], h["is-factory-wide"]) for h in history] == [
        ("us-east", False, False),
        ("us-east", False, False),
        ("us-east", True, False),
        ("eu-emea", False, False),
        ("eu-emea", False, False),
        ("", False, True),
        ("apac", False, False),
        ("", False, True),
    ]
    assert sum(h["num-devices"] for h in history) == len(staged)

    s = ok(client.get(f"{F}/waves/{name}/status/", params={"offline-threshold": 4}))
    check_status(s, name=name, version=version, status="active")
    assert "us-east" in [g["name"] for g in s["rollout-groups"]]  # a full-group rollout makes a rollout group
    assert [g["rollout-at"] for g in s["rollout-groups"]] == sorted(g["rollout-at"] for g in s["rollout-groups"])

    # fioctl status (§1.6): the tag's production devices, those in the active wave under "<tag> (wave)"
    fs = ok(client.get(f"{F}/status/", params={"offline-threshold": 4}))
    assert type(fs["total-devices"]) is int
    for kind in ("tags", "prod-tags", "wave-tags"):
        for t in fs[kind]:
            assert isinstance(t["name"], str) and type(t["latest-target"]) is int
            for k in ("devices-total", "devices-online", "devices-on-latest", "devices-on-orphan"):
                assert type(t[k]) is int and 0 <= t[k] <= t["devices-total"], (kind, k)
            for target in t["targets"]:
                assert type(target["version"]) is int and type(target["devices"]) is int
                assert type(target["is-orphan"]) is bool
            for g in t["device-groups"]:
                assert isinstance(g["name"], str)
                assert all(
                    type(g[k]) is int
                    for k in ("devices-total", "devices-online", "devices-on-latest", "devices-on-orphan")
                )
    prod_tag = next(t for t in fs["prod-tags"] if t["name"] == TAG)
    assert 0 < prod_tag["devices-total"] <= s["total-devices"]
    assert TAG in [t["name"] for t in fs["wave-tags"]]

    assert client.post(f"{F}/waves/{name}/cancel/").status_code in SUCCESS
    fs = ok(client.get(f"{F}/status/", params={"offline-threshold": 4}))
    assert TAG not in [t["name"] for t in fs["wave-tags"]]
