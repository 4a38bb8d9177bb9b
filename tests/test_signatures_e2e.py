"""End to end through the CLI: a factory whose production root needs two offline signatures
(``reconcile-factory init --demo --offline-keys 2``). Init signs with the key it has and the plan then
needs one more signature; a run with the other key signs through the wave sign API and rolls out in
the same run; a key that signed already, or one root does not know, is one clear line and no write."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler import signing
from reconciler.resources import load_schema
from tests.helpers.e2e import CANARY_WAVE, api, commit, init_demo_factory, reconcile, wave

WAVE = (
    CANARY_WAVE
    + """\
  - name: beta
    group: beta
    wait: 1h
complete: true
"""
)


@pytest.fixture
def two_keys(tmp_path) -> Path:
    return init_demo_factory(tmp_path / "factory", devices=200, offline_keys=2)


def signed_by(factory_dir: Path, name: str) -> list[str]:
    with api(factory_dir) as client:
        data = client.get(f"/ota/factories/demo/waves/{name}/", params={"show-targets": 1}).json()
    return [s["keyid"] for s in data["targets"]["signatures"]]


def keyid(archive: Path) -> str:
    keys = signing.load_key_archive_file(archive)
    return signing.key_id(next(pub for _, pub in keys.public_entries()))


def secrets_of(*archives: Path) -> list[str]:
    out = []
    for archive in archives:
        keys = signing.load_key_archive_file(archive)
        for name, _ in keys.public_entries():
            out.append(keys.private_entry(name)[1]["keyval"]["private"])
    return out


def plan_json(repo: Path, *args: str) -> dict:
    code, out, err = reconcile("--dry-run", "--format", "json", str(repo), *args)
    assert code == 0, err
    data = json.loads(out)
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    return data


def test_init_with_one_key_then_the_other_key_signs_and_rolls_out(release_repo, two_keys):
    local = ["--local", str(two_keys)]
    key1, key2 = two_keys / "targets.only.key.tgz", two_keys / "targets.only.2.key.tgz"
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    outputs = []

    code, out, err = reconcile(str(release_repo), *local, "--keys", str(key1))
    outputs += [out, err]
    assert code == 0, err
    assert f"+ init rel-46 (target 46, tag production): created with 4 targets, signed by key {keyid(key1)[:12]}" in err
    assert "blocked: needs 1 more signature after init (offline keys other than init's)" in out
    assert wave(two_keys, "rel-46")["rollout-history"] == []
    assert len(signed_by(two_keys, "rel-46")) == 2

    # The plan now names the key it still needs, and a keyless run holds the rollouts with that reason.
    plan = plan_json(release_repo, *local)
    sign = plan["operations"][0]
    assert sign["op"] == "sign" and sign["status"] == "ready"
    assert (sign["signatures"], sign["threshold"], sign["keyids"]) == (2, 3, [keyid(key2)])
    code, out, err = reconcile(str(release_repo), *local, "--without-key")
    outputs += [out, err]
    assert code == 0, err
    needs = f"needs 1 more signature (key id {keyid(key2)[:12]})"
    assert f"# sign     rel-46  {needs}: 2 of 3 signatures, needs the offline key" in out
    assert f"~ rollout  rel-46  phase 'canary' (group canary)\n      blocked: {needs}" in out
    assert "Applying" not in err and wave(two_keys, "rel-46")["rollout-history"] == []

    # The key that signed at init: the wave waits for the other key holder (a wait, not an error, so the
    # keyed job of every merge goes on with the other tags), and nothing is written to it.
    code, out, err = reconcile(str(release_repo), *local, "--keys", str(key1))
    outputs += [out, err]
    assert code == 0, err
    assert (
        f"# sign     rel-46  {needs}: 2 of 3 signatures, needs the offline key\n      blocked: this run's offline key (key id "
        f"{keyid(key1)[:12]}) has signed it already and a key counts once; {needs}: run with that key (--keys "
        "FILE or --signer URI)"
    ) in out
    assert f"~ rollout  rel-46  phase 'canary' (group canary)\n      blocked: {needs}" in out
    assert "Applying" not in err and "Traceback" not in err and len(signed_by(two_keys, "rel-46")) == 2
    assert wave(two_keys, "rel-46")["rollout-history"] == []

    # The other key (as a signer URI): it signs first, then the canary phase rolls out in the same run.
    code, out, err = reconcile(str(release_repo), *local, "--signer", f"archive:{key2}")
    outputs += [out, err]
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("  ")]
    assert lines[0].endswith(
        f"# sign rel-46 (2 of 3 signatures): signed by key {keyid(key2)[:12]}; the wave meets "
        "the threshold (3 of 3 signatures)"
    )
    assert "~ rollout rel-46 phase 'canary' (group canary): rolled out to 10 devices" in lines[1]
    assert {keyid(key1), keyid(key2)} < set(signed_by(two_keys, "rel-46"))
    assert len(signed_by(two_keys, "rel-46")) == 3  # and the online key's
    assert [h["group-name"] for h in wave(two_keys, "rel-46")["rollout-history"]] == ["canary"]

    plan = plan_json(release_repo, *local)
    assert [op["op"] for op in plan["operations"]] == ["rollout", "complete"], "signed: no sign step any more"
    for text in outputs:
        for secret in secrets_of(key1, key2):
            assert secret not in text


def test_a_key_that_is_not_an_offline_key_of_root_is_one_line_and_writes_nothing(
    release_repo, two_keys, tmp_path, monkeypatch
):
    local = ["--local", str(two_keys)]
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    assert reconcile(str(release_repo), *local, "--keys", str(two_keys / "targets.only.key.tgz"))[0] == 0
    stranger = tmp_path / "stranger.tgz"
    stranger.write_bytes(signing.key_archive_bytes([signing.generate_keypair()]))
    code, _, err = reconcile(str(release_repo), *local, "--keys", str(stranger))
    assert code == 1
    assert "error: No private key found for key IDs: [" in err and "Traceback" not in err
    assert len(signed_by(two_keys, "rel-46")) == 2 and wave(two_keys, "rel-46")["rollout-history"] == []

    # RECONCILE_KEYS (base64, in memory) with the second key works like --keys.
    monkeypatch.setenv("RECONCILE_KEYS", base64.b64encode((two_keys / "targets.only.2.key.tgz").read_bytes()).decode())
    code, _, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "# sign rel-46 (2 of 3 signatures)" in err and len(signed_by(two_keys, "rel-46")) == 3


def test_the_default_key_that_signed_at_init_waits_for_the_second(release_repo, two_keys):
    """The embedded factory's first key is the default key; the sign step needs the second."""
    local = ["--local", str(two_keys)]
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    assert reconcile(str(release_repo), *local)[0] == 0  # init with the default (first) operator key
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "has signed it already" in out and "Applying" not in err


def test_a_keyed_observation_reads_the_online_key_once(release_repo, two_keys):
    """A root needing three signatures makes the plan read the online key (which offline keys may sign); a
    keyed apply's observation reads it anyway, in the same round, and the plan uses that answer."""
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe
    from reconciler.manifest import load

    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    assert (
        reconcile(str(release_repo), "--local", str(two_keys), "--keys", str(two_keys / "targets.only.key.tgz"))[0] == 0
    )
    specs = load([str(release_repo)]).specs
    counts = {}
    for signing_run in (False, True):
        with FactoryClient(select_backend(api_url=None, factory=None, local=str(two_keys))) as client:
            observed = observe(client, specs, signing=signing_run)
            counts[signing_run] = client.requests
        assert observed.targets_keys is not None and observed.targets_keys.threshold == 3
        assert len(observed.targets_keys.offline) == 2
    assert counts[True] == counts[False] + 1, "root in the same round; the online key not read twice"
