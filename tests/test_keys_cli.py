"""Key archives through the command line (issue 23.6): every key error names the archive and what it
holds, an apply's JSON carries the error, a ``--keys`` that cannot be read stops the run before anything
else, and the key id each archive holds is shown by ``reconcile keys``, ``--keys`` and
``reconcile-factory init --offline-keys N``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler import signing
from reconciler.localfactory.cli import main as factory_main
from reconciler.resources import load_schema
from tests.helpers.e2e import CANARY_WAVE, api, commit, reconcile


def waves(factory_dir: Path) -> list[dict]:
    with api(factory_dir) as client:
        return client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]


def stranger_archive(tmp_path: Path) -> tuple[Path, str]:
    pair = signing.generate_keypair()
    path = tmp_path / "other-factory.tgz"
    path.write_bytes(signing.key_archive_bytes([pair]))
    return path, pair.keyid


def test_another_factorys_archive_is_named_with_the_key_it_holds_and_json_carries_the_error(
    release_repo, factory_dir, tmp_path
):
    archive, keyid = stranger_archive(tmp_path)
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    before = waves(factory_dir)
    code, out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--keys", str(archive))
    assert code == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: No private key found for key IDs: [")
    assert f"in key archive {archive}, which holds ED25519 key {keyid};" in last

    code, out, err = reconcile(
        str(release_repo), "--local", str(factory_dir), "--keys", str(archive), "--format", "json"
    )
    assert code == 1
    data = json.loads(out)
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert data["error"]["message"] == last.removeprefix("error: ")
    assert [op["op"] for op in data["operations"]][:1] == ["init"]
    assert waves(factory_dir) == before


def test_a_keys_file_that_is_no_archive_is_an_error_naming_it_even_when_no_step_needs_a_key(
    release_repo, factory_dir, tmp_path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a key archive\n")
    commit(release_repo, {"README.md": "no waves yet\n"}, "Start")
    for mode in (["--dry-run"], [], ["--check"]):
        code, out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--keys", str(notes), *mode)
        assert (code, out) == (1, ""), err
        assert err.strip().splitlines() == [f"error: key archive {notes} is not a gzip'd tar file"]


def test_a_plan_with_keys_says_which_key_id_the_file_holds(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    archive = factory_dir / "targets.only.key.tgz"
    keyid = signing.archive_keys(signing.load_key_archive_file(archive))[0].keyid
    code, _out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--keys", str(archive), "--dry-run")
    assert code == 0, err
    assert f"--keys {archive} holds ED25519 key {keyid}" in err.splitlines()


def test_reconcile_keys_lists_each_key_id_and_type_of_any_archive(tmp_path):
    ed, rsa = signing.generate_keypair(), signing.generate_keypair("RSA", 2048)
    archive = tmp_path / "keys.tgz"
    archive.write_bytes(signing.key_archive_bytes([ed, rsa]))
    code, out, err = reconcile("keys", str(archive))
    assert code == 0, err
    assert sorted(out.splitlines()) == sorted([f"{ed.keyid}  ED25519", f"{rsa.keyid}  RSA"])
    assert ed.private["keyval"]["private"] not in out

    (tmp_path / "notes.txt").write_text("hello\n")
    code, out, err = reconcile("keys", str(tmp_path / "notes.txt"))
    assert (code, out) == (1, "")
    assert err.strip() == f"error: key archive {tmp_path / 'notes.txt'} is not a gzip'd tar file"


def test_init_with_offline_keys_prints_the_key_id_each_archive_holds(tmp_path):
    path = tmp_path / "f"
    result = CliRunner().invoke(
        factory_main, ["--local", str(path), "init", "--demo", "--devices", "20", "--offline-keys", "2"]
    )
    assert result.exit_code == 0, result.output
    for n, name in ((1, "targets.only.key.tgz"), (2, "targets.only.2.key.tgz")):
        code, out, _ = reconcile("keys", str(path / name))
        keyid = out.split()[0]
        assert code == 0 and f"  key {n}: {path / name} (key id {keyid})" in result.output.splitlines()
