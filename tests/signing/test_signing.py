"""reconciler.signing: keys, signatures, roots, threshold verification, wave targets, URI signers."""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib
import io
import json
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from reconciler import signing
from reconciler.errors import UserError
from reconciler.signing import TufError

EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def rsa_pair() -> signing.KeyPair:
    """One RSA-4096 key for the whole session: generating it is slow."""
    return signing.generate_keypair("RSA", 4096)


@pytest.fixture(scope="module")
def keys():
    """Online, offline and root ED25519 keys plus a threshold-2 production root."""
    online, offline, root_key = (signing.generate_keypair() for _ in range(3))
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[root_key],
        targets_public=[online.public, offline.public],
        targets_threshold=2,
    )
    return {"online": online, "offline": offline, "root_key": root_key, "root": root}


def ci_target(hwid: str, version: int, **custom) -> tuple[str, dict]:
    meta = {
        "length": 0,
        "hashes": {"sha256": hashlib.sha256(f"{hwid}{version}".encode()).hexdigest()},
        "custom": {
            "hardwareIds": [hwid],
            "tags": ["main"],
            "targetFormat": "OSTREE",
            "version": str(version),
            **custom,
        },
    }
    return f"{hwid}-lmp-{version}", meta


def ci_targets(version: int, **custom) -> dict:
    return dict(ci_target(hw, version, **custom) for hw in ("intel-corei7-64", "raspberrypi4-64"))


# --------------------------------------------------------------------------- keys


def test_error_is_a_user_error():
    assert issubclass(TufError, UserError)


def test_ed25519_keypair_is_fioctl_shaped_and_repr_hides_private():
    pair = signing.generate_keypair()
    secret = pair.private["keyval"]["private"]
    assert pair.public["keytype"] == "ED25519" and len(bytes.fromhex(pair.public["keyval"]["public"])) == 32
    assert pair.private["keytype"] == "ED25519" and len(bytes.fromhex(secret)) == 32
    assert secret not in repr(pair) and secret not in str(pair)


def test_key_id_is_sha256_of_der_spki():
    pair = signing.generate_keypair()
    pub = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(pair.public["keyval"]["public"]))
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pair.keyid == signing.key_id(pair.public) == hashlib.sha256(der).hexdigest()


def test_rsa_keypair_is_pkcs1_private_and_spki_public(rsa_pair):
    assert rsa_pair.private["keyval"]["private"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    public_pem = rsa_pair.public["keyval"]["public"]
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    der = serialization.load_pem_public_key(public_pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert rsa_pair.keyid == hashlib.sha256(der).hexdigest()
    assert rsa_pair.private["keyval"]["private"] not in repr(rsa_pair)
    # white space around a PEM does not change the key id
    padded = {"keytype": "RSA", "keyval": {"public": "\n" + public_pem.strip() + "\n\n"}}
    assert signing.key_id(padded) == rsa_pair.keyid


@pytest.mark.parametrize(
    "public",
    [
        {"keytype": "ED25519", "keyval": {"public": "zz"}},
        {"keytype": "ED25519", "keyval": {"public": "00" * 31}},
        {"keytype": "RSA", "keyval": {"public": "not a pem"}},
        {"keytype": "ECDSA", "keyval": {"public": "00"}},
        {"keytype": "ED25519", "keyval": {}},
    ],
)
def test_key_id_refuses_bad_public_keys(public):
    with pytest.raises(TufError):
        signing.key_id(public)


# --------------------------------------------------------------------------- signatures


def test_ed25519_signature_verifies_with_cryptography():
    pair = signing.generate_keypair()
    signed = {"_type": "Targets", "version": 1}
    sig = signing.signer_for_keypair(pair).sign(signed)
    assert sig["keyid"] == pair.keyid and sig["method"] == "ed25519"
    pub = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(pair.public["keyval"]["public"]))
    pub.verify(base64.b64decode(sig["sig"], validate=True), signing.canonical_json(signed))


def test_rsa_signature_is_pss_sha256_with_a_32_byte_salt(rsa_pair):
    signed = {"_type": "Targets", "targets": {}, "version": 7}
    signer = signing.signer_for_keypair(rsa_pair)
    sig = signer.sign(signed)
    assert sig["method"] == "rsassa-pss-sha256" and sig["keyid"] == rsa_pair.keyid == signer.keyid
    raw = base64.b64decode(sig["sig"], validate=True)
    assert len(raw) == 512
    pub = serialization.load_pem_public_key(rsa_pair.public["keyval"]["public"].encode())
    payload = signing.canonical_json(signed)
    pub.verify(raw, payload, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        pub.verify(raw, payload, padding.PSS(padding.MGF1(hashes.SHA256()), 64), hashes.SHA256())


def test_signer_repr_shows_no_key_material():
    pair = signing.generate_keypair()
    signer = signing.signer_for_keypair(pair)
    assert repr(signer) == f"TargetsSigner(keyid={pair.keyid!r}, method='ed25519')"


def test_signer_for_keypair_refuses_a_private_key_of_another_public_key():
    a, b = signing.generate_keypair(), signing.generate_keypair()
    with pytest.raises(TufError, match="does not match its public key"):
        signing.signer_for_keypair(signing.KeyPair(a.public, b.private, a.keyid))


# --------------------------------------------------------------------------- root and verification


def test_make_root_shape_and_root_signature(keys):
    root = keys["root"]
    signed = root["signed"]
    assert signed["_type"] == "Root" and signed["version"] == 1 and signed["expires"] == "2030-01-02T03:04:05Z"
    assert signed["roles"]["targets"] == {"keyids": [keys["online"].keyid, keys["offline"].keyid], "threshold": 2}
    assert signed["keys"][keys["offline"].keyid] == keys["offline"].public
    assert signing.verify_threshold(root, "root", signed, root["signatures"]) == [keys["root_key"].keyid]


@pytest.mark.parametrize("threshold", [0, 3])
def test_make_root_refuses_impossible_thresholds(keys, threshold):
    with pytest.raises(TufError, match="threshold"):
        signing.make_root(
            version=1,
            expires=EXPIRES,
            root_pairs=[keys["root_key"]],
            targets_public=[keys["online"].public, keys["offline"].public],
            targets_threshold=threshold,
        )


def sign_all(signed, *pairs):
    return [signing.signer_for_keypair(p).sign(signed) for p in pairs]


def test_verify_threshold_needs_online_and_offline(keys):
    signed = {"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "targets": {}, "version": 42}
    both = sign_all(signed, keys["offline"], keys["online"])
    assert signing.verify_threshold(keys["root"], "targets", signed, both) == [
        keys["offline"].keyid,
        keys["online"].keyid,
    ]
    assert signing.verify_threshold(keys["root"]["signed"], "targets", signed, both)  # signed part accepted too
    with pytest.raises(TufError, match="1 valid signature.* of the 2"):
        signing.verify_threshold(keys["root"], "targets", signed, both[:1])


def test_verify_threshold_counts_a_key_once(keys):
    signed = {"_type": "Targets", "targets": {}, "version": 1}
    sig = signing.signer_for_keypair(keys["offline"]).sign(signed)
    with pytest.raises(TufError, match="1 valid"):
        signing.verify_threshold(keys["root"], "targets", signed, [sig, sig, dict(sig)])


def test_verify_threshold_counts_one_public_key_under_two_keyids_once(keys):
    root = copy.deepcopy(keys["root"]["signed"])
    alias = "ab" * 32
    root["keys"][alias] = copy.deepcopy(root["keys"][keys["offline"].keyid])
    root["roles"]["targets"]["keyids"].append(alias)
    signed = {"_type": "Targets", "targets": {}, "version": 1}
    sig = signing.signer_for_keypair(keys["offline"]).sign(signed)
    with pytest.raises(TufError, match="1 valid"):
        signing.verify_threshold(root, "targets", signed, [sig, {**sig, "keyid": alias}])


def test_verify_threshold_ignores_bad_signatures(keys):
    signed = {"_type": "Targets", "targets": {}, "version": 1}
    good_online, good_offline = sign_all(signed, keys["online"], keys["offline"])
    stranger = signing.generate_keypair()
    bad = [
        {**good_offline, "method": "rsassa-pss-sha256"},  # method does not fit the key type
        {**good_offline, "sig": "not base64!"},
        {**good_offline, "sig": good_online["sig"]},  # another key's signature
        {**good_offline, "keyid": keys["root_key"].keyid},  # a key of another role
        signing.signer_for_keypair(stranger).sign(signed),  # a key root does not know
        {"keyid": keys["offline"].keyid},  # no sig
        "not a dict",
    ]
    with pytest.raises(TufError, match="1 valid"):
        signing.verify_threshold(keys["root"], "targets", signed, [good_online, *bad])


def test_verify_threshold_refuses_broken_roots(keys):
    signed = {"_type": "Targets", "version": 1}
    with pytest.raises(TufError, match="no snapshots role"):
        signing.verify_threshold(keys["root"], "snapshots", signed, [])
    zero = copy.deepcopy(keys["root"])
    zero["signed"]["roles"]["targets"]["threshold"] = 0
    with pytest.raises(TufError, match="invalid threshold 0"):
        signing.verify_threshold(zero, "targets", signed, [])
    with pytest.raises(TufError, match="no keys"):
        signing.verify_threshold({"signed": {}}, "targets", signed, [])


def test_verify_signature_checks_one_signature_whatever_the_threshold(keys):
    signed = {"_type": "Targets", "targets": {}, "version": 3}
    sig = signing.signer_for_keypair(keys["offline"]).sign(signed)
    assert signing.verify_signature(keys["root"], "targets", signed, sig) == keys["offline"].keyid
    with pytest.raises(TufError, match="does not verify"):
        signing.verify_signature(keys["root"], "targets", {**signed, "version": 4}, sig)
    with pytest.raises(TufError, match="not a targets key"):
        signing.verify_signature(
            keys["root"], "targets", signed, signing.signer_for_keypair(keys["root_key"]).sign(signed)
        )


@pytest.fixture(scope="module")
def rsa_root(keys, rsa_pair):
    """A production root whose targets role needs the online ED25519 key and the RSA key."""
    return signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[keys["online"].public, rsa_pair.public],
        targets_threshold=2,
    )


def test_any_changed_byte_of_signed_wave_targets_is_refused(keys, rsa_pair, rsa_root):
    root = rsa_root
    signed = signing.build_wave_targets(
        ci_targets=ci_targets(42), prod_targets=None, version=42, tag="production", expires=EXPIRES
    )
    sigs = sign_all(signed, keys["online"], rsa_pair)
    assert len(signing.verify_threshold(root, "targets", signed, sigs)) == 2
    payload = signing.canonical_json(signed)
    parsed = 0
    for i in range(len(payload)):
        for replacement in {payload[i] ^ 0x01, ord("0") if payload[i] != ord("0") else ord("1")}:
            changed = payload[:i] + bytes([replacement]) + payload[i + 1 :]
            try:
                doc = json.loads(changed)
            except ValueError:
                continue  # not JSON any more: nothing to present as `signed`
            parsed += 1
            with pytest.raises(TufError):
                signing.verify_threshold(root, "targets", doc, sigs)
    assert parsed > len(payload) // 2


# --------------------------------------------------------------------------- expiry


@pytest.mark.parametrize(
    "dt, text",
    [
        (datetime(2030, 1, 1, 0, 0, 0, 499_999, tzinfo=timezone.utc), "2030-01-01T00:00:00Z"),
        (datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=timezone.utc), "2030-01-01T00:00:01Z"),
        (datetime(2030, 12, 31, 23, 59, 59, 600_000, tzinfo=timezone.utc), "2031-01-01T00:00:00Z"),
        (datetime(2030, 1, 1, 2, 0, 0, tzinfo=timezone(timedelta(hours=2))), "2030-01-01T00:00:00Z"),
        (datetime(2030, 1, 1, 0, 0, 0), "2030-01-01T00:00:00Z"),  # noqa: DTZ001  # a naive time is taken as UTC
    ],
)
def test_format_expires_is_utc_whole_seconds_half_up(dt, text):
    assert signing.format_expires(dt) == text


def test_default_expires_is_365_days():
    now = datetime(2030, 1, 1, 12, 0, 0, 700_000, tzinfo=timezone.utc)
    assert signing.format_expires(signing.default_expires(now)) == "2031-01-01T12:00:01Z"


# --------------------------------------------------------------------------- wave targets


def test_wave_targets_from_scratch_retag_and_keep_unknown_custom_keys():
    ci = ci_targets(42, cliUploaded=True, **{"delta-stats": {"sha256": "x", "size": 3}})
    signed = signing.build_wave_targets(ci_targets=ci, prod_targets=None, version=42, tag="production", expires=EXPIRES)
    assert list(signed) == ["_type", "expires", "targets", "version"]
    assert signed["_type"] == "Targets" and signed["version"] == 42 and signed["expires"] == "2030-01-02T03:04:05Z"
    assert set(signed["targets"]) == set(ci)
    for name, meta in signed["targets"].items():
        assert meta["custom"]["tags"] == ["production"]
        assert meta["custom"]["cliUploaded"] is True and meta["custom"]["delta-stats"]["size"] == 3
        assert {k: v for k, v in meta.items() if k != "custom"} == {k: v for k, v in ci[name].items() if k != "custom"}
    assert all(meta["custom"]["tags"] == ["main"] for meta in ci.values())  # input untouched


def prod(version: int, *versions: int) -> dict:
    targets = {}
    for v in versions:
        for name, meta in ci_targets(v).items():
            targets[name] = {**meta, "custom": {**meta["custom"], "tags": ["production"]}}
    return {
        "signatures": [],
        "signed": {"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "targets": targets, "version": version},
    }


def test_wave_targets_add_to_current_production_targets():
    current = prod(41, 40, 41)
    before = copy.deepcopy(current)
    signed = signing.build_wave_targets(
        ci_targets=ci_targets(42), prod_targets=current, version=42, tag="production", expires=EXPIRES
    )
    assert sorted(signed["targets"]) == sorted([*current["signed"]["targets"], *ci_targets(42)])
    assert current == before
    # the signed part of the production targets is accepted as well as the envelope
    assert (
        signing.build_wave_targets(
            ci_targets=ci_targets(42), prod_targets=current["signed"], version=42, tag="production", expires=EXPIRES
        )
        == signed
    )


@pytest.mark.parametrize("version", [40, 41])
def test_wave_version_must_be_above_production(version):
    with pytest.raises(
        TufError,
        match="^Cannot create a Wave for a version lower than or equal to production Targets for the same tag$",
    ):
        signing.build_wave_targets(
            ci_targets=ci_targets(version),
            prod_targets=prod(41, 40),
            version=version,
            tag="production",
            expires=EXPIRES,
        )


def test_wave_needs_ci_targets():
    with pytest.raises(TufError, match="^No targets found for version 42$"):
        signing.build_wave_targets(ci_targets={}, prod_targets=None, version=42, tag="production", expires=EXPIRES)


@pytest.mark.parametrize("version", [-1, 1 << 31, "42", 42.0, True])
def test_wave_version_must_be_a_32_bit_integer(version):
    with pytest.raises(TufError, match="32-bit"):
        signing.build_wave_targets(
            ci_targets=ci_targets(42), prod_targets=None, version=version, tag="production", expires=EXPIRES
        )


def test_wave_target_already_in_production_is_refused_even_if_source_tag_skips_it():
    current = prod(41, 40)
    name, meta = ci_target("intel-corei7-64", 40)
    ci = {name: {**meta, "custom": {**meta["custom"], "tags": ["devel"]}}, **ci_targets(43)}
    with pytest.raises(TufError, match=f"^Target {name} already exists in production Targets for tag production$"):
        signing.build_wave_targets(
            ci_targets=ci, prod_targets=current, version=43, tag="production", source_tag="main", expires=EXPIRES
        )


def test_wave_source_tag_keeps_only_targets_with_that_tag():
    ci = ci_targets(50)
    devel_name = next(iter(ci))
    ci[devel_name] = {**ci[devel_name], "custom": {**ci[devel_name]["custom"], "tags": ["main", "devel"]}}
    signed = signing.build_wave_targets(
        ci_targets=ci, prod_targets=None, version=50, tag="production", source_tag="devel", expires=EXPIRES
    )
    assert list(signed["targets"]) == [devel_name]
    assert signed["targets"][devel_name]["custom"]["tags"] == ["production"]


def test_wave_target_without_custom_is_refused():
    with pytest.raises(TufError, match="has no custom metadata"):
        signing.build_wave_targets(
            ci_targets={"x": {"length": 0, "hashes": {}}},
            prod_targets=None,
            version=42,
            tag="production",
            expires=EXPIRES,
        )


def test_wave_prune_removes_old_versions():
    signed = signing.build_wave_targets(
        ci_targets=ci_targets(43),
        prod_targets=prod(42, 40, 41, 42),
        version=43,
        tag="production",
        prune=[40, 41],
        expires=EXPIRES,
    )
    assert sorted(signed["targets"]) == sorted([*ci_targets(42), *ci_targets(43)])


def test_wave_prune_refuses_the_current_version():
    with pytest.raises(TufError, match="^Cannot prune current version$"):
        signing.build_wave_targets(
            ci_targets=ci_targets(43),
            prod_targets=prod(42, 42),
            version=43,
            tag="production",
            prune=[42, 43],
            expires=EXPIRES,
        )


def test_wave_prune_refuses_versions_that_match_nothing():
    with pytest.raises(TufError, match="^Unable to prune the following versions: 38,39$"):
        signing.build_wave_targets(
            ci_targets=ci_targets(43),
            prod_targets=prod(42, 40),
            version=43,
            tag="production",
            prune=[38, 40, 39],
            expires=EXPIRES,
        )


# --------------------------------------------------------------------------- signers from archives and URIs


def pkcs8_file(path, pair: signing.KeyPair):
    """Write ``pair``'s private key as the PKCS#8 PEM that securesystemslib's file2: scheme reads."""
    secret = pair.private["keyval"]["private"]
    if pair.public["keytype"] == "ED25519":
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    else:
        key = serialization.load_pem_private_key(secret.encode(), None)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def assert_offline_signature(root, signer, keyid):
    signed = {"_type": "Targets", "targets": {}, "version": 9}
    assert signer.keyid == keyid
    assert signing.verify_signature(root, "targets", signed, signer.sign(signed)) == keyid


def test_rsa_4096_archive_signer(keys, rsa_pair):
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[keys["online"].public, rsa_pair.public],
        targets_threshold=2,
    )
    archive = signing.load_key_archive(signing.key_archive_bytes([rsa_pair]))
    signer = signing.find_offline_signer(root, archive, keys["online"].public)
    assert signer.method == "rsassa-pss-sha256"
    assert_offline_signature(root, signer, rsa_pair.keyid)


def test_signer_from_envvar_uri(keys, monkeypatch):
    monkeypatch.setenv("RECONCILE_KEYS", base64.b64encode(signing.key_archive_bytes([keys["offline"]])).decode())
    signer = signing.signer_from_uri("envvar:RECONCILE_KEYS", keys["root"], keys["online"].public)
    assert_offline_signature(keys["root"], signer, keys["offline"].keyid)
    monkeypatch.setenv("RECONCILE_KEYS", "%%%")
    with pytest.raises(TufError, match="^RECONCILE_KEYS is not valid base64"):
        signing.signer_from_uri("envvar:RECONCILE_KEYS", keys["root"], keys["online"].public)
    monkeypatch.delenv("RECONCILE_KEYS")
    with pytest.raises(TufError, match="environment variable RECONCILE_KEYS is not set"):
        signing.signer_from_uri("envvar:RECONCILE_KEYS", keys["root"], keys["online"].public)


def test_signer_from_archive_uri(keys, tmp_path):
    path = tmp_path / "targets.only.key.tgz"
    path.write_bytes(signing.key_archive_bytes([keys["offline"]]))
    signer = signing.signer_from_uri(f"archive:{path}", keys["root"], keys["online"].public)
    assert_offline_signature(keys["root"], signer, keys["offline"].keyid)
    with pytest.raises(TufError, match="cannot read key archive .*missing.tgz"):
        signing.signer_from_uri(f"archive:{tmp_path / 'missing.tgz'}", keys["root"], keys["online"].public)


def test_signer_from_file2_uri_ed25519_and_rsa(keys, rsa_pair, tmp_path):
    signer = signing.signer_from_uri(
        f"file2:{pkcs8_file(tmp_path / 'ed.pem', keys['offline'])}", keys["root"], keys["online"].public
    )
    assert_offline_signature(keys["root"], signer, keys["offline"].keyid)
    # root with two offline keys: the probe signature tells which one the URI holds
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[keys["online"].public, keys["offline"].public, rsa_pair.public],
        targets_threshold=2,
    )
    signer = signing.signer_from_uri(f"file2:{pkcs8_file(tmp_path / 'rsa.pem', rsa_pair)}", root, keys["online"].public)
    assert signer.method == "rsassa-pss-sha256"
    assert_offline_signature(root, signer, rsa_pair.keyid)


def test_file2_uri_with_a_key_root_does_not_know(keys, tmp_path):
    uri = f"file2:{pkcs8_file(tmp_path / 'other.pem', signing.generate_keypair())}"
    with pytest.raises(TufError, match="cannot sign for any offline targets key in root.*KeyMismatchError"):
        signing.signer_from_uri(uri, keys["root"], keys["online"].public)
    with pytest.raises(TufError, match="FileNotFoundError"):
        signing.signer_from_uri(f"file2:{tmp_path / 'missing.pem'}", keys["root"], keys["online"].public)


def test_kms_uri_without_its_client_library_is_a_clear_error(keys):
    with pytest.raises(TufError, match="^gcpkms:projects/p/.* cannot sign for any offline targets key.*Error"):
        signing.signer_from_uri(
            "gcpkms:projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            keys["root"],
            keys["online"].public,
        )


@pytest.mark.parametrize(
    "uri, message",
    [
        ("/path/to/keys.tgz", "has no scheme"),
        ("ftp://x", "unsupported key URI scheme 'ftp'.*archive.*awskms.*envvar.*file2.*gcpkms.*hsm"),
    ],
)
def test_bad_uris(keys, uri, message):
    with pytest.raises(TufError, match=message):
        signing.signer_from_uri(uri, keys["root"], keys["online"].public)


# --------------------------------------------------------------------------- secret hygiene


def secret_forms(pair: signing.KeyPair) -> list[str]:
    """Readable forms of a private key that must never appear in any output."""
    secret = pair.private["keyval"]["private"]
    if pair.public["keytype"] == "ED25519":
        raw = bytes.fromhex(secret)
        return [secret, secret.upper(), base64.b64encode(raw).decode(), repr(raw)[2:-1], raw.hex(" ")]
    numbers = serialization.load_pem_private_key(secret.encode(), None).private_numbers()
    body = "".join(secret.splitlines()[1:-1])
    # the PEM starts with the public modulus; from 1,000 characters on it is private (d, p, q, ...)
    chunks = [body[i : i + 48] for i in range(1000, len(body) - 48, 300)]
    return [*chunks, format(numbers.d, "x")[:64], str(numbers.d)[:64], format(numbers.p, "x")[:64]]


def exception_texts(exc: BaseException | None, depth: int = 0):
    """str, repr and attributes of an exception and of everything chained to it."""
    if exc is None or depth > 10:
        return
    yield str(exc)
    yield repr(exc)
    yield repr(exc.args)
    yield repr(vars(exc))
    yield from exception_texts(exc.__cause__, depth + 1)
    yield from exception_texts(exc.__context__, depth + 1)


def test_no_signing_path_leaks_key_material(keys, rsa_pair, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level("DEBUG")
    monkeypatch.chdir(tmp_path)
    known = _known_ed25519()
    online = keys["online"]
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[known],
        targets_public=[online.public, known.public, rsa_pair.public],
        targets_threshold=2,
    )
    rsa_root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[online.public, rsa_pair.public],
        targets_threshold=2,
    )
    ed_root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[online.public, known.public],
        targets_threshold=2,
    )
    archives = {p.keyid: signing.key_archive_bytes([p]) for p in (known, rsa_pair)}
    b64 = {kid: base64.b64encode(data).decode() for kid, data in archives.items()}
    inputs = {tmp_path / "ed.pem", tmp_path / "rsa.pem", tmp_path / "ed.tgz", tmp_path / "rsa.tgz"}
    pkcs8_file(tmp_path / "ed.pem", known)
    pkcs8_file(tmp_path / "rsa.pem", rsa_pair)
    (tmp_path / "ed.tgz").write_bytes(archives[known.keyid])
    (tmp_path / "rsa.tgz").write_bytes(archives[rsa_pair.keyid])
    signed = signing.build_wave_targets(
        ci_targets=ci_targets(42), prod_targets=None, version=42, tag="production", expires=EXPIRES
    )
    outputs: list[str] = [repr(known), str(known), repr(rsa_pair), json.dumps(root)]

    def run(fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            outputs.extend(exception_texts(e))
            return None
        outputs.append(repr(result))
        if isinstance(result, signing.TargetsSigner):
            sig = result.sign(signed)
            outputs.extend([repr(sig), repr(result.public), repr(vars(result))])
            run(signing.verify_signature, root, "targets", signed, sig)
        return result

    for target_root, pair in ((ed_root, known), (rsa_root, rsa_pair)):
        name = "ed" if pair is known else "rsa"
        run(signing.signer_for_keypair, pair)
        archive = run(signing.load_key_archive, archives[pair.keyid])
        run(signing.find_offline_signer, target_root, archive, online.public)
        run(signing.load_key_archive_b64, b64[pair.keyid])
        monkeypatch.setenv("RECONCILE_KEYS", b64[pair.keyid])
        run(signing.signer_from_uri, "envvar:RECONCILE_KEYS", target_root, online.public)
        run(signing.signer_from_uri, f"archive:{tmp_path / (name + '.tgz')}", target_root, online.public)
        run(signing.signer_from_uri, f"file2:{tmp_path / (name + '.pem')}", target_root, online.public)
        # failures that handle the secret: wrong root, corrupt archives, broken base64
        run(signing.signer_from_uri, f"file2:{tmp_path / (name + '.pem')}", keys["root"], online.public)
        run(signing.find_offline_signer, keys["root"], archive, online.public)
        run(signing.load_key_archive_b64, b64[pair.keyid] + "!")
        run(signing.load_key_archive_b64, b64[pair.keyid][:-7])
        monkeypatch.setenv("RECONCILE_KEYS", b64[pair.keyid][1:])
        run(signing.signer_from_uri, "envvar:RECONCILE_KEYS", target_root, online.public)
        run(signing.load_key_archive, archives[pair.keyid][:-20])
        secret = pair.private["keyval"]["private"]
        for sec in (
            json.dumps(pair.private)[:-3],  # truncated JSON
            json.dumps({"keytype": "ed25519" if pair is known else "rsa", "keyval": pair.private["keyval"]}),
            json.dumps({**pair.private, "keyval": {"private": secret[:-4] + "zzzz"}}),  # corrupt key
            json.dumps({**pair.private, "keyval": {"private": secret + secret}}),
        ):
            data = _tgz_of({"k.pub": json.dumps(pair.public), "k.sec": sec})
            run(signing.find_offline_signer, target_root, run(signing.load_key_archive, data), online.public)
        mismatched = _tgz_of({"k.pub": json.dumps(keys["offline"].public), "k.sec": json.dumps(pair.private)})
        run(signing.find_offline_signer, keys["root"], run(signing.load_key_archive, mismatched), online.public)
        run(signing.signer_for_keypair, signing.KeyPair(keys["offline"].public, pair.private, keys["offline"].keyid))

    captured = capsys.readouterr()
    outputs += [captured.out, captured.err, *(r.getMessage() for r in caplog.records), *map(repr, caplog.records)]
    written = [p for p in tmp_path.rglob("*") if p not in inputs]
    outputs += [p.read_bytes().decode("latin-1") for p in written if p.is_file()]
    text = "\n".join(outputs)
    assert "TufError" in text and "KeyMismatchError" in text  # the failures did run
    for pair in (known, rsa_pair):
        for form in secret_forms(pair):
            assert form not in text
    for archive_b64 in b64.values():
        for i in range(0, len(archive_b64) - 40, 200):
            assert archive_b64[i : i + 40] not in text
    assert written == []


def _known_ed25519() -> signing.KeyPair:
    """A fixed ED25519 key, so the test looks for known bytes."""
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = {"keytype": "ED25519", "keyval": {"public": priv.public_key().public_bytes_raw().hex()}}
    return signing.KeyPair(
        public, {"keytype": "ED25519", "keyval": {"private": bytes(range(32)).hex()}}, signing.key_id(public)
    )


def _tgz_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def test_every_public_name_comes_from_its_module():
    """``signing`` loads its modules as their names are asked for: each name of ``__all__`` is there, the
    very object of the module that defines it, and no name is listed for a module that lacks it."""
    for name in signing.__all__:
        value = getattr(signing, name)
        home = signing._HOMES.get(name)
        if home is not None:
            assert value is getattr(importlib.import_module(f"reconciler.signing.{home}"), name), name
    assert set(signing._HOMES) <= set(signing.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        signing.nothing_here  # noqa: B018


def test_checking_a_wave_signature_loads_neither_signers_nor_archives(keys, rsa_pair, rsa_root):
    """What a plan does with a wave's signatures (``valid_keyids``) loads only the checks: not the signers,
    the key archives, nor (for ED25519 keys) cryptography's serialization with its SSH keys and ciphers
    (25-30 ms of a plan's CPU), in a fresh interpreter as ``reconcile`` runs. An RSA key's PEM then loads
    serialization where it is read, and its signature verifies."""
    signed = {"_type": "Targets", "version": 2, "targets": {}}
    script = (
        "import json, sys\n"
        "from reconciler import signing\n"
        "ed25519_root, rsa_root, signed, signatures = json.load(sys.stdin)\n"
        "print(signing.valid_keyids(ed25519_root, 'targets', signed, signatures[:2]))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('reconciler.signing.', 'cryptography.hazmat.primitives.ser'))))\n"
        "print(signing.valid_keyids(rsa_root, 'targets', signed, signatures[::2]))\n"
    )
    signatures = sign_all(signed, keys["online"], keys["offline"], rsa_pair)
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([keys["root"], rsa_root, signed, signatures]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    ed25519_valid, loaded, rsa_valid = done.stdout.splitlines()
    assert ed25519_valid == str([keys["online"].keyid, keys["offline"].keyid])
    modules = ["_canonical", "_errors", "_keys", "_verify"]
    assert loaded == str([f"reconciler.signing.{module}" for module in modules])
    assert rsa_valid == str([keys["online"].keyid, rsa_pair.keyid])
