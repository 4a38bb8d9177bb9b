"""Local factory: wave rules, targets and roots, through the HTTP API in-process."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from reconciler import signing
from tests.helpers.factory import F, new_factory


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def test_create_wave_returns_201_and_adds_the_online_signature(factory):
    wave = factory.create_wave("v42", 42)
    assert wave["name"] == "v42" and wave["version"] == "42" and wave["status"] == "active"
    assert "targets" not in wave and "targets" not in factory.wave("v42")
    env = factory.wave("v42", show_targets=True)["targets"]
    prod_root = factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/root.json", params={"production": 1}))
    online = signing.key_id(factory.ok(factory.http.get(f"{F}/ci-targets.pub")))
    valid = signing.verify_threshold(prod_root, "targets", env["signed"], env["signatures"])
    assert online in valid and len(valid) == 2  # online + offline: the production threshold


def test_wave_targets_are_production_plus_retagged_ci_targets(factory):
    factory.create_wave("v42", 42)
    files = factory.wave("v42", show_targets=True)["targets"]["signed"]["targets"]
    assert sorted(files) == sorted(f"{h}-lmp-{v}" for h in ("intel-corei7-64", "raspberrypi4-64") for v in (40, 42))
    ci = factory.ok(factory.http.get(f"{F}/targets/", params={"version": 42}))
    for name, meta in ci.items():
        assert meta["custom"]["tags"] == ["main"]
        assert files[name]["custom"]["tags"] == ["production"]
        assert {**files[name], "custom": {**files[name]["custom"], "tags": ["main"]}} == meta
    prod = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
    for name, meta in prod["signed"]["targets"].items():
        assert files[name] == meta


def test_served_signed_is_in_canonical_key_order(factory):
    factory.create_wave("v42", 42)
    r = factory.http.get(f"{F}/waves/v42/", params={"show-targets": 1})
    raw = r.text
    signed = r.json()["targets"]["signed"]
    start = raw.index('"signed":') + len('"signed":')
    assert raw[start:].startswith(signing.canonical_json(signed).decode())  # what `fioctl waves sign` re-signs


def test_duplicate_wave_name_is_409(factory):
    factory.create_wave("v42", 42)
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    r = factory.post_wave(factory.wave_body("v42", 43))
    assert r.status_code == 409 and "already exists" in r.json()["message"]


def test_one_active_wave_per_tag(factory):
    factory.create_wave("v42", 42)
    r = factory.post_wave(factory.wave_body("v43", 43))
    assert r.status_code == 409
    body = r.json()
    assert "v42" in body["message"] and "active" in body["message"] and body["errors"] == []
    factory.create_wave("other-tag", 43, tag="beta-fleet")  # another tag may have its own
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    factory.create_wave("v43", 43)  # once the first is finished


def test_version_must_exceed_the_production_version(factory):
    factory.create_wave("v42", 42)
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    for version in (42, 41):
        ci = factory.ok(factory.http.get(f"{F}/targets/", params={"version": version}))
        signed = {
            "_type": "Targets",
            "expires": "2027-01-01T00:00:00Z",
            "targets": {n: {**m, "custom": {**m["custom"], "tags": ["production"]}} for n, m in ci.items()},
            "version": version,
        }
        body = {
            "name": f"old-{version}",
            "version": str(version),
            "tag": "production",
            "targets": {"signed": signed, "signatures": [factory.offline_signer().sign(signed)]},
        }
        r = factory.post_wave(body)
        assert r.status_code == 400
        assert "lower than or equal to production Targets" in r.json()["message"]


def test_unknown_ci_version_is_400(factory):
    signed = {"_type": "Targets", "expires": "2027-01-01T00:00:00Z", "targets": {}, "version": 99}
    body = {
        "name": "v99",
        "version": "99",
        "tag": "production",
        "targets": {"signed": signed, "signatures": [factory.offline_signer().sign(signed)]},
    }
    r = factory.post_wave(body)
    assert r.status_code == 400 and r.json()["message"] == "No targets found for version 99"


def test_tampered_wave_is_rejected(factory):
    body = factory.wave_body("v42", 42)
    body["targets"]["signed"]["expires"] = "2030-01-01T00:00:00Z"  # changed after signing
    r = factory.post_wave(body)
    assert r.status_code == 400
    assert "signature verification failed" in r.json()["message"] and r.json()["errors"]
    assert factory.ok(factory.http.get(f"{F}/waves/"))["total"] == 1  # nothing was written


def test_wave_signed_by_a_stranger_key_is_rejected(factory):
    body = factory.wave_body("v42", 42, sign=False)
    stranger = signing.generate_keypair()
    body["targets"]["signatures"] = [signing.signer_for_keypair(stranger).sign(body["targets"]["signed"])]
    r = factory.post_wave(body)
    assert r.status_code == 400 and "not a targets key in root" in r.json()["errors"][0]


def test_wave_without_offline_signature_is_rejected(factory):
    r = factory.post_wave(factory.wave_body("v42", 42, sign=False))
    assert r.status_code == 400 and "no signature" in r.json()["message"]


def test_wave_with_a_changed_ci_target_is_rejected_even_when_signed(factory):
    body = factory.wave_body("v42", 42, sign=False)
    signed = body["targets"]["signed"]
    signed["targets"]["intel-corei7-64-lmp-42"]["hashes"]["sha256"] = "0" * 64
    body["targets"]["signatures"] = [factory.offline_signer().sign(signed)]
    r = factory.post_wave(body)
    assert r.status_code == 400
    assert r.json()["message"] == "Targets validation failed"
    assert r.json()["errors"] == [
        "CI Target differs for target intel-corei7-64-lmp-42: hashes differs from the CI target"
    ]


def test_wave_must_retag_ci_targets_and_may_not_add_foreign_ones(factory):
    body = factory.wave_body("v42", 42, sign=False)
    signed = body["targets"]["signed"]
    signed["targets"]["raspberrypi4-64-lmp-42"]["custom"]["tags"] = ["main"]
    ci50 = factory.ok(factory.http.get(f"{F}/targets/", params={"version": 50}))
    signed["targets"]["intel-corei7-64-lmp-50"] = ci50["intel-corei7-64-lmp-50"]
    body["targets"]["signatures"] = [factory.offline_signer().sign(signed)]
    errors = factory.post_wave(body).json()["errors"]
    assert any("raspberrypi4-64-lmp-42" in e and "custom.tags" in e for e in errors)
    assert any("intel-corei7-64-lmp-50" in e and "not a CI target of version 42" in e for e in errors)


def test_hardware_id_conflict_is_rejected(factory):
    body = factory.wave_body("v42", 42, sign=False)
    signed = body["targets"]["signed"]
    copy_ = copy.deepcopy(signed["targets"]["intel-corei7-64-lmp-40"])
    signed["targets"]["intel-corei7-64-lmp-40-copy"] = copy_
    body["targets"]["signatures"] = [factory.offline_signer().sign(signed)]
    errors = factory.post_wave(body).json()["errors"]
    assert any("is not a CI target" in e for e in errors)
    assert any("conflict with each other's hardwareIds: intel-corei7-64" in e for e in errors)


def test_invalid_bodies_are_400_with_field_errors(factory):
    for body in ({}, {"name": "bad name", "version": "x", "tag": "", "targets": {}}, [1, 2]):
        r = factory.http.post(f"{F}/waves/", json=body)
        assert r.status_code == 400 and r.json()["message"]
    r = factory.http.post(f"{F}/waves/", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    errors = factory.http.post(f"{F}/waves/", json={"name": "a b", "version": "x"}).json()["errors"]
    assert [e.split(":")[0] for e in errors] == ["name", "version", "tag", "targets"]


def test_expired_or_mismatched_signed_is_rejected(factory):
    body = factory.wave_body("v42", 42, expires=factory.now() - timedelta(days=1))
    r = factory.post_wave(body)
    assert r.status_code == 400 and "not in the future" in r.json()["errors"][0]
    body = factory.wave_body("v42", 42)
    body["version"] = "43"
    assert factory.post_wave(body).status_code == 400
    body = factory.wave_body("v42", 42, sign=False)
    body["targets"]["signed"]["delegations"] = {}
    r = factory.post_wave(body)
    assert r.status_code == 400 and "exactly _type, expires, targets and version" in r.json()["errors"][0]


def test_prune_removes_versions_and_complete_publishes_them(factory):
    factory.create_wave("v42", 42, prune=[40])
    files = factory.wave("v42", show_targets=True)["targets"]["signed"]["targets"]
    assert sorted(files) == ["intel-corei7-64-lmp-42", "raspberrypi4-64-lmp-42"]
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    prod = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
    assert sorted(prod["signed"]["targets"]) == sorted(files) and prod["signed"]["version"] == 42


def test_complete_copies_the_wave_targets_into_production(factory):
    factory.create_wave("v42", 42)
    env = factory.wave("v42", show_targets=True)["targets"]
    done = factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    assert done["status"] == "complete" and done["change-meta"]["updated-at"] == "2026-01-05T12:00:00Z"
    prod = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
    assert prod == env
    r = factory.http.post(f"{F}/waves/v42/cancel/")
    assert r.status_code == 409 and "completed" in r.json()["message"]
    assert factory.http.post(f"{F}/waves/v42/complete/").status_code == 409
    assert factory.rollout("v42", expect=409, group="canary")["message"].startswith("Cannot roll out wave v42")


def test_cancel_leaves_production_targets_alone(factory):
    before = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))
    factory.create_wave("v42", 42)
    assert factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))["status"] == "canceled"
    assert factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"})) == before
    assert factory.http.post(f"{F}/waves/v42/cancel/").status_code == 409
    assert factory.http.post(f"{F}/waves/v42/rollout/", json={"group": "canary"}).status_code == 409


def test_unknown_wave_factory_and_path_are_404(factory):
    for path in (f"{F}/waves/nope/", f"{F}/waves/nope/status/", "/ota/factories/other/waves/", "/nowhere"):
        r = factory.http.get(path)
        assert r.status_code == 404 and isinstance(r.json()["message"], str) and r.json()["errors"] == []
    assert factory.http.post(f"{F}/waves/nope/complete/").status_code == 404


def test_list_pages_and_filters(factory):
    factory.create_wave("v41", 41)
    factory.ok(factory.http.post(f"{F}/waves/v41/cancel/"))
    factory.create_wave("v42", 42)
    factory.create_wave("b43", 43, tag="beta-fleet")
    everything = factory.ok(factory.http.get(f"{F}/waves/", params={"limit": 20, "page": 1}))
    assert everything["total"] == 4 and everything["next"] is None
    assert [w["name"] for w in everything["waves"]] == ["b43", "v42", "v41", "populate-targets"]  # newest first
    page1 = factory.ok(factory.http.get(f"{F}/waves/", params={"limit": 3, "page": 1}))
    assert len(page1["waves"]) == 3 and page1["total"] == 4 and "page=2" in page1["next"]
    page2 = factory.ok(factory.http.get(page1["next"].replace("http://lf", "")))
    assert [w["name"] for w in page2["waves"]] == ["populate-targets"] and page2["next"] is None
    active = factory.ok(factory.http.get(f"{F}/waves/", params={"status": "active"}))
    assert {w["name"] for w in active["waves"]} == {"v42", "b43"}
    prod = factory.ok(factory.http.get(f"{F}/waves/", params={"tag": "production", "status": "canceled"}))
    assert [w["name"] for w in prod["waves"]] == ["v41"]
    assert all("targets" not in w for w in everything["waves"])
    assert factory.http.get(f"{F}/waves/", params={"status": "bogus"}).status_code == 400


def test_prod_targets_404_for_a_single_tag_without_any(factory):
    r = factory.http.get(f"{F}/prod-targets/", params={"tag": "nothing-here"})
    assert r.status_code == 404
    both = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production,nothing-here"}))
    assert list(both) == ["production"]
    assert list(factory.ok(factory.http.get(f"{F}/prod-targets/?tag="))) == ["production"]


def test_wave_targets_serve_active_waves_only(factory):
    assert factory.http.get(f"{F}/wave-targets/?name=").status_code == 404
    factory.create_wave("v42", 42)
    got = factory.ok(factory.http.get(f"{F}/wave-targets/?name="))
    assert list(got) == ["v42"] and got["v42"] == factory.wave("v42", show_targets=True)["targets"]
    assert factory.http.get(f"{F}/wave-targets/", params={"name": "populate-targets"}).status_code == 404


def test_ci_targets_by_version_and_name(factory):
    v50 = factory.ok(factory.http.get(f"{F}/targets/", params={"version": 50}))
    assert sorted(v50) == ["intel-corei7-64-lmp-50", "raspberrypi4-64-lmp-50"]
    meta = v50["intel-corei7-64-lmp-50"]
    assert meta["length"] == 0 and len(meta["hashes"]["sha256"]) == 64
    assert meta["custom"]["version"] == "50" and meta["custom"]["targetFormat"] == "OSTREE"
    assert meta["custom"]["tags"] == ["main", "devel"] and meta["custom"]["hardwareIds"] == ["intel-corei7-64"]
    assert factory.ok(factory.http.get(f"{F}/targets/", params={"version": 99})) == {}
    assert len(factory.ok(factory.http.get(f"{F}/targets/"))) == 42
    assert factory.ok(factory.http.get(f"{F}/targets/intel-corei7-64-lmp-50")) == meta
    assert factory.http.get(f"{F}/targets/nope").status_code == 404


def test_production_and_ci_targets_are_isolated(factory):
    ci_before = factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json"))
    factory.create_wave("v42", 42)
    factory.ok(factory.http.post(f"{F}/waves/v42/complete/"))
    assert factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json")) == ci_before
    prod = factory.ok(
        factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json", params={"production": 1, "tag": "production"})
    )
    assert all(m["custom"]["tags"] == ["production"] for m in prod["signed"]["targets"].values())
    assert all("production" not in m["custom"]["tags"] for m in ci_before["signed"]["targets"].values())
    # A CI tag has no production targets, and the same tag name in production would not see CI builds.
    assert factory.http.get(f"{F}/prod-targets/", params={"tag": "main"}).status_code == 404


def test_roots_and_online_key(factory):
    repo = "/ota/repo/demo/api/v1/user_repo"
    ci = factory.ok(factory.http.get(f"{repo}/root.json"))
    prod = factory.ok(factory.http.get(f"{repo}/root.json", params={"production": 1}))
    online = signing.key_id(factory.ok(factory.http.get(f"{F}/ci-targets.pub")))
    offline = factory.offline_signer().keyid
    for root, threshold in ((ci, 1), (prod, 2)):
        assert root["signed"]["_type"] == "Root" and root["signed"]["version"] == 2
        assert root["signed"]["roles"]["targets"] == {"keyids": [online, offline], "threshold": threshold}
        for kid, key in root["signed"]["keys"].items():
            assert signing.key_id(key) == kid
    first = factory.ok(factory.http.get(f"{repo}/1.root.json", params={"production": 1}))
    assert first["signed"]["version"] == 1 and first["signed"]["roles"]["targets"]["keyids"] == [online]
    assert factory.ok(factory.http.get(f"{repo}/2.root.json", params={"production": 1})) == prod
    signing.verify_threshold(first, "root", prod["signed"], prod["signatures"])  # the chain 1 -> 2
    assert factory.http.get(f"{repo}/3.root.json").status_code == 404
    ci_targets = factory.ok(factory.http.get(f"{repo}/targets.json"))
    signing.verify_threshold(ci, "targets", ci_targets["signed"], ci_targets["signatures"])


def test_sign_adds_valid_signatures_and_refuses_bad_ones(factory):
    factory.create_wave("v42", 42)
    env = factory.wave("v42", show_targets=True)["targets"]
    sig = factory.offline_signer().sign(env["signed"])
    again = factory.ok(factory.http.post(f"{F}/waves/v42/sign/", json={"signatures": [sig]}))
    assert again["name"] == "v42"
    assert len(factory.wave("v42", show_targets=True)["targets"]["signatures"]) == 2
    bad = dict(sig, sig=sig["sig"][:-4] + "AAA=")
    r = factory.http.post(f"{F}/waves/v42/sign/", json={"signatures": [bad]})
    assert r.status_code == 400
    assert factory.http.post(f"{F}/waves/v42/sign/", json={}).status_code == 400


def test_date_header_is_the_simulated_clock(factory):
    r = factory.http.get(f"{F}/waves/")
    assert r.headers["date"] == "Mon, 05 Jan 2026 12:00:00 GMT"
    factory.advance(90 * 60)
    assert factory.http.get(f"{F}/nope").headers["date"] == "Mon, 05 Jan 2026 13:30:00 GMT"


@pytest.mark.parametrize("name", [".", "..", "v42\n", "a/b", ""])
def test_a_name_that_is_no_path_segment_is_400(factory, name):
    """Stricter than the API where it is silent: as a URL path segment ``.`` and ``..`` are steps, and a
    trailing newline or a slash is no name; a wave so named could never be addressed again."""
    r = factory.post_wave(factory.wave_body(name, 42))
    assert r.status_code == 400
    assert name not in [w["name"] for w in factory.http.get(f"{F}/waves/").json()["waves"]]
