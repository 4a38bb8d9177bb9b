"""A factory whose production root needs two offline signatures: ``init --offline-keys 2`` and the wave
sign API (reference §2.3 ``sign``; fioctl subcommands/waves/sign.go), spoken over HTTP as fioctl does."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from reconciler import signing
from reconciler.localfactory import demo
from reconciler.localfactory.cli import main as factory_main
from tests.helpers.factory import SEED, T0, F, Factory

ROOT = "/ota/repo/demo/api/v1/user_repo/root.json"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("two-keys") / "f"
    demo.init_factory(path, devices_n=120, seed=SEED, start=T0, offline_keys=2)
    return path


@pytest.fixture
def factory(template, tmp_path):
    path = tmp_path / "factory"
    shutil.copytree(template, path)
    f = Factory(path)
    yield f
    f.close()


def signer(factory: Factory, n: int) -> signing.TargetsSigner:
    """The signer of offline key ``n``, found the way fioctl finds it (CI root, online key left out)."""
    archive = signing.load_key_archive_file(factory.path / demo.key_archive_name(n))
    root = factory.ok(factory.http.get(ROOT))
    return signing.find_offline_signer(root, archive, factory.ok(factory.http.get(f"{F}/ci-targets.pub")))


def fioctl_sign(factory: Factory, wave: str, key: signing.TargetsSigner, expect: int = 200):
    """``fioctl waves sign``: GET the wave with show-targets=1, sign canonical(signed), POST /sign/."""
    signed = factory.wave(wave, show_targets=True)["targets"]["signed"]
    r = factory.http.post(f"{F}/waves/{wave}/sign/", json={"signatures": [key.sign(signed)]})
    assert r.status_code == expect, r.text
    return r.json()


def keyids(factory: Factory, wave: str) -> list[str]:
    return [s["keyid"] for s in factory.wave(wave, show_targets=True)["targets"]["signatures"]]


def test_every_offline_key_has_its_own_archive_and_the_production_root_needs_them_all(factory):
    prod = factory.ok(factory.http.get(ROOT, params={"production": 1}))
    ci = factory.ok(factory.http.get(ROOT))
    assert prod["signed"]["roles"]["targets"]["threshold"] == 3
    assert ci["signed"]["roles"]["targets"]["threshold"] == 1  # fioctl finds keys in the CI root
    assert prod["signed"]["roles"]["targets"]["keyids"] == ci["signed"]["roles"]["targets"]["keyids"]
    first, second = signer(factory, 1), signer(factory, 2)
    assert first.keyid != second.keyid
    assert prod["signed"]["roles"]["targets"]["keyids"][1:] == [first.keyid, second.keyid]
    # the demo's production targets were published with all three signatures
    targets = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
    assert len(signing.verify_threshold(prod, "targets", targets["signed"], targets["signatures"])) == 3


def test_a_wave_short_of_the_threshold_refuses_rollout_and_complete_until_signed(factory):
    body = factory.wave_body("v42", 42, sign=False)
    body["targets"]["signatures"] = [signer(factory, 1).sign(body["targets"]["signed"])]
    factory.ok(factory.post_wave(body), 201)
    for action, options in (
        ("rollout", {"group": "canary", "dry-run": True}),
        ("rollout", {"group": "canary"}),
        ("complete", None),
    ):
        r = factory.http.post(f"{F}/waves/v42/{action}/", json=options)
        assert r.status_code == 409, r.text
        assert "2 valid signature(s) of the 3 root requires" in r.json()["message"]
        assert "fioctl waves sign" in r.json()["message"]
    assert factory.wave("v42")["rollout-history"] == []

    answer = fioctl_sign(factory, "v42", signer(factory, 2))
    assert answer["name"] == "v42"
    assert len(keyids(factory, "v42")) == 3
    assert factory.rollout("v42", group="canary")["device-num"] > 0


def test_a_wave_can_be_created_with_both_offline_signatures_at_once(factory):
    body = factory.wave_body("v42", 42, sign=False)
    signed = body["targets"]["signed"]
    body["targets"]["signatures"] = [signer(factory, 1).sign(signed), signer(factory, 2).sign(signed)]
    factory.ok(factory.post_wave(body), 201)
    factory.rollout("v42", group="canary")


def test_signing_again_with_the_same_key_keeps_one_signature_of_it(factory):
    body = factory.wave_body("v42", 42, sign=False)
    body["targets"]["signatures"] = [signer(factory, 1).sign(body["targets"]["signed"])]
    factory.ok(factory.post_wave(body), 201)
    before = keyids(factory, "v42")
    fioctl_sign(factory, "v42", signer(factory, 1))
    assert sorted(keyids(factory, "v42")) == sorted(before)
    factory.rollout("v42", group="canary", expect=409)  # still 2 of 3


def test_sign_refuses_a_stranger_key_a_bad_signature_and_a_malformed_body(factory):
    body = factory.wave_body("v42", 42, sign=False)
    body["targets"]["signatures"] = [signer(factory, 1).sign(body["targets"]["signed"])]
    factory.ok(factory.post_wave(body), 201)
    signed = factory.wave("v42", show_targets=True)["targets"]["signed"]
    stranger = signing.signer_for_keypair(signing.generate_keypair())
    r = factory.http.post(f"{F}/waves/v42/sign/", json={"signatures": [stranger.sign(signed)]})
    assert r.status_code == 400 and "not a targets key" in r.text
    tampered = dict(signed, expires="2030-01-01T00:00:00Z")  # signed over other bytes
    r = factory.http.post(f"{F}/waves/v42/sign/", json={"signatures": [signer(factory, 2).sign(tampered)]})
    assert r.status_code == 400 and "does not verify" in r.text
    for bad in ({}, {"signatures": []}, {"signatures": "x"}, ["x"]):
        r = factory.http.post(f"{F}/waves/v42/sign/", json=bad)
        assert r.status_code == 400, bad
    online = signing.key_id(factory.ok(factory.http.get(f"{F}/ci-targets.pub")))
    r = factory.http.post(
        f"{F}/waves/v42/sign/", json={"signatures": [{"keyid": online, "method": "ed25519", "sig": "AAAA"}]}
    )
    assert r.status_code == 400
    assert len(keyids(factory, "v42")) == 2  # nothing was added by any refused request
    factory.rollout("v42", group="canary", expect=409)


def test_sign_needs_an_active_wave(factory):
    r = factory.http.post(
        f"{F}/waves/nope/sign/", json={"signatures": [{"keyid": "x", "method": "ed25519", "sig": "AAAA"}]}
    )
    assert r.status_code == 404
    body = factory.wave_body("v42", 42, sign=False)
    body["targets"]["signatures"] = [signer(factory, 1).sign(body["targets"]["signed"])]
    factory.ok(factory.post_wave(body), 201)
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    fioctl_sign(factory, "v42", signer(factory, 2), expect=409)


def test_cli_init_with_two_offline_keys_prints_both_archives(tmp_path):
    path = tmp_path / "f"
    result = CliRunner().invoke(
        factory_main, ["--local", str(path), "init", "--demo", "--devices", "20", "--offline-keys", "2"]
    )
    assert result.exit_code == 0, result.output
    assert f"key 1: {path / 'targets.only.key.tgz'}" in result.output
    assert f"key 2: {path / 'targets.only.2.key.tgz'}" in result.output
    assert (path / "targets.only.2.key.tgz").stat().st_mode & 0o777 == 0o600
    for n in (1, 2):  # key material stays in the archives
        pair = signing.load_key_archive_file(path / demo.key_archive_name(n))
        for name, _ in pair.public_entries():
            _, sec = pair.private_entry(name)
            assert sec["keyval"]["private"] not in result.output


def test_cli_init_refuses_when_the_second_archive_exists_and_writes_nothing(tmp_path):
    path = tmp_path / "f"
    path.mkdir()
    (path / "targets.only.2.key.tgz").write_bytes(b"an operator's key")
    result = CliRunner().invoke(factory_main, ["--local", str(path), "init", "--offline-keys", "2"])
    assert result.exit_code == 1
    assert "targets.only.2.key.tgz already exists" in result.output
    assert sorted(p.name for p in path.iterdir()) == ["targets.only.2.key.tgz"]
    assert (path / "targets.only.2.key.tgz").read_bytes() == b"an operator's key"


@pytest.mark.parametrize("count", ["0", "10", "x"])
def test_cli_init_refuses_a_bad_number_of_offline_keys(tmp_path, count):
    result = CliRunner().invoke(factory_main, ["--local", str(tmp_path / "f"), "init", "--offline-keys", count])
    assert result.exit_code == 1 and "--offline-keys" in result.output
    assert not (tmp_path / "f").exists()
