"""Key archives: read like fioctl reads targets.only.key.tgz / offline-creds.tgz, in memory, hostile ones refused."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler import signing
from reconciler.signing import TufError

EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)


def tgz(*entries: tuple[str, bytes | None, bytes]) -> bytes:
    """A gzip'd tar from (name, data or None for a non-file, tar type) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "/etc/passwd"
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue())


def key_entries(pair: signing.KeyPair, stem: str) -> list[tuple[str, bytes, bytes]]:
    return [
        (stem + ".pub", json.dumps(pair.public).encode(), tarfile.REGTYPE),
        (stem + ".sec", json.dumps(pair.private).encode(), tarfile.REGTYPE),
    ]


@pytest.fixture(scope="module")
def keys():
    online, offline, root_key = (signing.generate_keypair() for _ in range(3))
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[root_key],
        targets_public=[online.public, offline.public],
        targets_threshold=2,
    )
    return {"online": online, "offline": offline, "root_key": root_key, "root": root}


def signer_from(keys, data: bytes) -> signing.TargetsSigner:
    return signing.find_offline_signer(keys["root"], signing.load_key_archive(data), keys["online"].public)


def assert_signs_for_root(keys, signer):
    signed = {"_type": "Targets", "targets": {}, "version": 2}
    assert signing.verify_signature(keys["root"], "targets", signed, signer.sign(signed)) == keys["offline"].keyid


# --------------------------------------------------------------------------- reading


def test_archive_written_here_reads_back_in_fioctl_layout(keys):
    data = signing.key_archive_bytes([keys["offline"]])
    archive = signing.load_key_archive(data)
    kid = keys["offline"].keyid
    assert archive.names == [f"tufrepo/keys/fioctl-targets-{kid}.pub", f"tufrepo/keys/fioctl-targets-{kid}.sec"]
    assert repr(archive) == "KeyArchive(2 entries)"
    signer = signer_from(keys, data)
    assert signer.keyid == kid and signer.method == "ed25519"
    assert_signs_for_root(keys, signer)


def test_offline_creds_archive_with_root_keys_and_directories(keys):
    data = tgz(
        ("tufrepo", None, tarfile.DIRTYPE),
        ("tufrepo/keys", None, tarfile.DIRTYPE),
        *key_entries(keys["root_key"], "tufrepo/keys/first-root"),
        *key_entries(keys["root_key"], f"tufrepo/keys/fioctl-root-{keys['root_key'].keyid}"),
        ("tufrepo/keys/fioctl-targets-online.pub", json.dumps(keys["online"].public).encode(), tarfile.REGTYPE),
        *key_entries(keys["offline"], f"tufrepo/keys/fioctl-targets-{keys['offline'].keyid}"),
        ("tufrepo/roles/root.json", json.dumps(keys["root"]).encode(), tarfile.REGTYPE),
    )
    assert_signs_for_root(keys, signer_from(keys, data))


def test_any_pub_name_works_like_garage_sign_archives(keys):
    assert_signs_for_root(keys, signer_from(keys, tgz(*key_entries(keys["offline"], "keys/targets"))))


def test_go_64_byte_ed25519_private_key_is_accepted(keys):
    seed = bytes.fromhex(keys["offline"].private["keyval"]["private"])
    go_key = seed + ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    pair = signing.KeyPair(
        keys["offline"].public, {"keytype": "ED25519", "keyval": {"private": go_key.hex()}}, keys["offline"].keyid
    )
    assert_signs_for_root(keys, signer_from(keys, signing.key_archive_bytes([pair])))
    corrupt = signing.KeyPair(
        pair.public, {"keytype": "ED25519", "keyval": {"private": (seed + bytes(32)).hex()}}, pair.keyid
    )
    with pytest.raises(TufError, match="does not hold a valid ED25519 private key"):
        signer_from(keys, signing.key_archive_bytes([corrupt]))


def test_rsa_pkcs1_archive_key():
    online, offline, root_key = (
        signing.generate_keypair(),
        signing.generate_keypair("RSA", 2048),
        signing.generate_keypair(),
    )
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[root_key],
        targets_public=[online.public, offline.public],
        targets_threshold=2,
    )
    signer = signing.find_offline_signer(
        root, signing.load_key_archive(signing.key_archive_bytes([offline])), online.public
    )
    assert signer.keyid == offline.keyid and signer.method == "rsassa-pss-sha256"
    signed = {"_type": "Targets", "targets": {}, "version": 2}
    assert signing.verify_signature(root, "targets", signed, signer.sign(signed)) == offline.keyid


# --------------------------------------------------------------------------- matching errors


def test_no_matching_private_key_names_the_archive_and_the_keys_it_holds(keys, tmp_path):
    stranger = signing.generate_keypair()
    path = tmp_path / "other-factory.tgz"
    path.write_bytes(signing.key_archive_bytes([stranger, keys["root_key"]]))
    with pytest.raises(TufError) as caught:
        signing.find_offline_signer(keys["root"], signing.load_key_archive_file(path), keys["online"].public)
    assert str(caught.value) == (
        f"No private key found for key IDs: ['{keys['offline'].keyid}'] in key archive {path}, which holds "
        f"2 keys: {', '.join(f'ED25519 key {k}' for k in sorted([stranger.keyid, keys['root_key'].keyid]))}; "
        "give the archive of one of those key IDs"
    )


def test_every_archive_error_names_the_archive(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an archive")
    with pytest.raises(TufError, match=f"^key archive {path} is not a gzip'd tar file$"):
        signing.load_key_archive_file(path)
    with pytest.raises(TufError, match="^key archive RECONCILE_KEYS is not a gzip'd tar file$"):
        signing.load_key_archive_b64("bm90IGFuIGFyY2hpdmU=", source="RECONCILE_KEYS")
    path.write_bytes(tgz(("k.pub", b"{}", tarfile.REGTYPE)))
    with pytest.raises(TufError, match=f"^key archive {path} entry k.pub is not a public key"):
        signing.archive_keys(signing.load_key_archive_file(path))
    path.write_bytes(tgz(("readme", b"hi", tarfile.REGTYPE)))
    with pytest.raises(TufError, match=f"^key archive {path} holds no keys"):
        signing.archive_keys(signing.load_key_archive_file(path))


def test_archive_keys_lists_each_key_id_and_type(tmp_path):
    ed, rsa = signing.generate_keypair(), signing.generate_keypair("RSA", 2048)
    keys = signing.archive_keys(signing.load_key_archive(signing.key_archive_bytes([ed, rsa])))
    assert sorted(keys, key=lambda k: k.keytype) == [
        signing.ArchiveKey(ed.keyid, "ED25519"),
        signing.ArchiveKey(rsa.keyid, "RSA"),
    ]
    assert signing.describe_keys(keys[:1]) == f"{keys[0].keytype} key {keys[0].keyid}"


def test_several_matching_private_keys(keys):
    second = signing.generate_keypair()
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[keys["online"].public, keys["offline"].public, second.public],
        targets_threshold=2,
    )
    archive = signing.load_key_archive(signing.key_archive_bytes([keys["offline"], second]))
    with pytest.raises(TufError, match="more than one active private key.*unsupported and insecure"):
        signing.find_offline_signer(root, archive, keys["online"].public)


def test_the_same_key_twice_is_several_keys_like_fioctl(keys):
    data = tgz(*key_entries(keys["offline"], "a/targets"), *key_entries(keys["offline"], "b/targets"))
    with pytest.raises(TufError, match="more than one active private key"):
        signer_from(keys, data)


def test_key_type_must_equal_roots_exactly(keys):
    private = {"keytype": "ed25519", "keyval": keys["offline"].private["keyval"]}
    data = tgz(
        ("k.pub", json.dumps(keys["offline"].public).encode(), tarfile.REGTYPE),
        ("k.sec", json.dumps(private).encode(), tarfile.REGTYPE),
    )
    with pytest.raises(
        TufError, match="key type mismatch: key archive entry k.sec is 'ed25519' but root gives key .* as 'ED25519'"
    ):
        signer_from(keys, data)


def test_root_key_type_and_private_key_kind_must_agree(keys):
    rsa_private = signing.generate_keypair("RSA", 2048).private
    data = tgz(
        ("k.pub", json.dumps(keys["offline"].public).encode(), tarfile.REGTYPE),
        ("k.sec", json.dumps({"keytype": "ED25519", "keyval": rsa_private["keyval"]}).encode(), tarfile.REGTYPE),
    )
    with pytest.raises(TufError, match="k.sec does not hold a valid ED25519 private key"):
        signer_from(keys, data)


def test_private_key_must_match_its_public_key(keys):
    other = signing.generate_keypair()
    data = tgz(
        ("k.pub", json.dumps(keys["offline"].public).encode(), tarfile.REGTYPE),
        ("k.sec", json.dumps(other.private).encode(), tarfile.REGTYPE),
    )
    with pytest.raises(TufError, match="^key archive entry k.sec does not match its public key$"):
        signer_from(keys, data)


@pytest.mark.parametrize(
    "sec, message",
    [
        (None, "has k.pub but not its private key k.sec"),
        (b"{not json", "k.sec is not a private key"),
        (b'{"keytype": "ED25519"}', "k.sec is not a private key"),
        (b'{"keytype": "ED25519", "keyval": {"private": "xyz"}}', "k.sec does not hold a valid ED25519 private key"),
    ],
)
def test_broken_private_entries(keys, sec, message):
    entries = [("k.pub", json.dumps(keys["offline"].public).encode(), tarfile.REGTYPE)]
    if sec is not None:
        entries.append(("k.sec", sec, tarfile.REGTYPE))
    with pytest.raises(TufError, match=message):
        signer_from(keys, tgz(*entries))


def test_broken_public_entry(keys):
    with pytest.raises(TufError, match="k.pub is not a public key"):
        signer_from(keys, tgz(("k.pub", b"[]", tarfile.REGTYPE)))


def test_root_without_offline_targets_key(keys):
    root = signing.make_root(
        version=1,
        expires=EXPIRES,
        root_pairs=[keys["root_key"]],
        targets_public=[keys["online"].public],
        targets_threshold=1,
    )
    with pytest.raises(TufError, match="not configured to sign Targets offline.*rotate-offline-key --role=targets"):
        signing.find_offline_signer(
            root, signing.load_key_archive(signing.key_archive_bytes([keys["offline"]])), keys["online"].public
        )


def test_root_listing_an_unknown_key(keys):
    root = json.loads(json.dumps(keys["root"]))
    root["signed"]["roles"]["targets"]["keyids"].append("ff" * 32)
    with pytest.raises(TufError, match=f"^Unable to find key {'ff' * 32} in root.json$"):
        signing.find_offline_signer(
            root, signing.load_key_archive(signing.key_archive_bytes([keys["offline"]])), keys["online"].public
        )


# --------------------------------------------------------------------------- hostile archives


@pytest.mark.parametrize(
    "entry, message",
    [
        (("/etc/passwd", b"x", tarfile.REGTYPE), "absolute path"),
        (("C:/keys/x.pub", b"x", tarfile.REGTYPE), "absolute path"),
        (("tufrepo/../../x.pub", b"x", tarfile.REGTYPE), r"leaves the archive \(\.\.\)"),
        (("..", None, tarfile.DIRTYPE), r"leaves the archive"),
        (("a\\..\\x.pub", b"x", tarfile.REGTYPE), r"leaves the archive"),
        (("tufrepo/keys/x.pub", None, tarfile.SYMTYPE), "is a link"),
        (("tufrepo/keys/x.sec", None, tarfile.LNKTYPE), "is a link"),
        (("dev", None, tarfile.CHRTYPE), "not a regular file"),
        (("fifo", None, tarfile.FIFOTYPE), "not a regular file"),
        (("big.pub", bytes(signing.MAX_ARCHIVE_MEMBER + 1), tarfile.REGTYPE), "too large"),
    ],
)
def test_hostile_entries_are_refused(entry, message):
    with pytest.raises(TufError, match=message):
        signing.load_key_archive(tgz(("ok.pub", b"{}", tarfile.REGTYPE), entry))


def test_duplicate_entries_are_refused():
    with pytest.raises(TufError, match="has the entry k.sec twice"):
        signing.load_key_archive(tgz(("k.sec", b"1", tarfile.REGTYPE), ("k.sec", b"2", tarfile.REGTYPE)))


def test_too_many_entries_are_refused():
    entries = [(f"k{i}.pub", b"{}", tarfile.REGTYPE) for i in range(signing.MAX_ARCHIVE_MEMBERS + 1)]
    with pytest.raises(TufError, match="more than 256 entries"):
        signing.load_key_archive(tgz(*entries))


def test_gzip_bomb_is_refused_without_unpacking_it():
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros, about 64 KiB compressed
    assert len(bomb) < signing.MAX_ARCHIVE_BYTES
    with pytest.raises(TufError, match="gzip bomb"):
        signing.load_key_archive(bomb)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a gzip'd tar file"),
        (b"PK\x03\x04 a zip file", "not a gzip'd tar file"),
        (gzip.compress(b"plain text, not a tar")[:-1], "not a gzip'd tar file"),
        (gzip.compress(b"x" * 1024), "not a gzip'd tar file"),
        (bytes(signing.MAX_ARCHIVE_BYTES + 1), "too large"),
    ],
)
def test_not_an_archive(data, message):
    with pytest.raises(TufError, match=message):
        signing.load_key_archive(data)


def test_reading_an_archive_writes_nothing(tmp_path, monkeypatch, keys):
    monkeypatch.chdir(tmp_path)
    signer_from(keys, tgz(*key_entries(keys["offline"], "tufrepo/keys/x")))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- base64 (RECONCILE_KEYS)


def test_base64_archive_with_line_wrapping(keys):
    text = base64.encodebytes(signing.key_archive_bytes([keys["offline"]])).decode()
    assert "\n" in text.strip()
    archive = signing.load_key_archive_b64(text)
    assert_signs_for_root(keys, signing.find_offline_signer(keys["root"], archive, keys["online"].public))


@pytest.mark.parametrize("text", ["", "   \n", "not base64!", "abc", "YWJj*"])
def test_bad_base64_is_a_clear_error(text):
    with pytest.raises(TufError, match="^RECONCILE_KEYS is not valid base64"):
        signing.load_key_archive_b64(text, source="RECONCILE_KEYS")


def test_base64_of_something_else():
    with pytest.raises(TufError, match="not a gzip'd tar file"):
        signing.load_key_archive_b64(base64.b64encode(b"hello").decode())


def test_a_secret_in_the_sec_keytype_field_is_not_echoed():
    """A .sec whose keytype holds the private hex (a botched hand-made archive) must not print it."""
    online, offline = signing.generate_keypair(), signing.generate_keypair()
    root = signing.make_root(
        version=1,
        expires=datetime(2030, 1, 1, tzinfo=timezone.utc),
        root_pairs=[online],
        targets_public=[online.public, offline.public],
        targets_threshold=2,
    )
    secret = offline.private["keyval"]["private"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, doc in (("k.pub", offline.public), ("k.sec", {"keytype": secret, "keyval": {"private": secret}})):
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(signing.TufError) as caught:
        signing.find_offline_signer(root, signing.load_key_archive(buffer.getvalue()), online.public)
    assert "an unsupported key type" in str(caught.value) and secret not in str(caught.value)
