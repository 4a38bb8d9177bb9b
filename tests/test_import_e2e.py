"""Issue 24: ``reconcile import`` adopts waves made with raw API calls (as fioctl makes them, never with
our own apply) on a local factory; ``reconcile --dry-run --detailed-exitcode`` right after finds no drift
and nothing to do, and a phase appended to an imported manifest plans as the next rollout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler import signing
from reconciler.resources import load_schema
from tests.helpers.e2e import commit, init_demo_factory, production_uuids, reconcile
from tests.helpers.factory import F, Factory


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A 400-device factory with a history of every shape the ledger knows, by raw API calls: a completed
    wave (full group, limit), a canceled one (percentage, factory-wide limit), an active one (full group,
    UUIDs in a group, percentage, factory-wide limit, factory-wide UUIDs, one group twice)."""
    path = init_demo_factory(tmp_path_factory.mktemp("shapes") / "factory", devices=400)
    f = Factory(path)
    try:
        f.create_wave("v41", 41)
        f.rollout("v41", group="canary")
        f.rollout("v41", group="beta", limit=5)
        f.ok(f.http.post(f"{F}/waves/v41/complete/"))
        f.create_wave("v42", 42)
        f.rollout("v42", group="us-east", percentage=50)
        f.rollout("v42", limit=3)
        f.ok(f.http.post(f"{F}/waves/v42/cancel/"))
        f.create_wave("v43", 43)
        beta = [d["uuid"] for d in f.devices(group="beta", match_tag="production", prod=1)]
        apac = [d["uuid"] for d in f.devices(group="apac", match_tag="production", prod=1)]
        f.rollout("v43", group="canary")
        f.rollout("v43", group="beta", uuids=beta[:3])
        f.rollout("v43", group="us-west", percentage=10)
        f.rollout("v43", limit=4)
        f.rollout("v43", uuids=apac[:2])
        f.rollout("v43", group="eu-emea", limit=2)
        f.rollout("v43", group="eu-emea", limit=2)
    finally:
        f.close()
    return path


@pytest.fixture
def factory(shapes, tmp_path) -> Path:
    path = tmp_path / "factory"
    shutil.copytree(shapes, path, ignore=shutil.ignore_patterns(".lock"))
    return path


def import_(factory: Path, directory: Path, *args: str) -> tuple[int, str, str]:
    return reconcile("import", *args, "--local", str(factory), str(directory))


def plan(repo: Path, factory: Path, *args: str) -> tuple[int, str, str]:
    return reconcile("--dry-run", "--detailed-exitcode", str(repo), "--local", str(factory), *args)


def history(factory: Path, wave: str) -> list[dict]:
    f = Factory(factory)
    try:
        return f.wave(wave)["rollout-history"]
    finally:
        f.close()


def test_every_history_shape_round_trips_and_an_appended_phase_is_the_next_rollout(factory, release_repo):
    releases = release_repo / "releases"
    code, out, err = import_(factory, releases, "--all", "--format", "json")
    assert code == 0, err
    written = json.loads(out)
    assert [(w["wave"], w["status"], w["phases"]) for w in written["written"]] == [
        ("populate-targets", "complete", 0),
        ("v41", "complete", 2),
        ("v42", "canceled", 2),
        ("v43", "active", 7),
    ]
    assert written["errors"] == [] and written["factory"] == "demo"
    schema = Draft202012Validator(load_schema("wave.schema.json"))
    for entry in written["written"]:
        text = Path(entry["file"]).read_text()
        schema.validate(yaml.safe_load(text))
        assert text.startswith("# Imported by `reconcile import` from factory 'demo'")

    v43 = yaml.safe_load((releases / "v43.yaml").read_text())
    assert v43["phases"] == [
        {"name": "canary", "group": "canary"},
        {"name": "beta", "group": "beta", "limit": 3},
        {"name": "us-west", "group": "us-west", "limit": history(factory, "v43")[2]["num-devices"]},
        {"name": "phase-4", "limit": 4},
        {"name": "phase-5", "limit": 2},
        {"name": "phase-6", "group": "eu-emea", "limit": 2},
        {"name": "phase-7", "group": "eu-emea", "limit": 2},
    ]
    assert "complete" not in v43 and "cancel" not in v43 and v43["expiresAt"] == "2027-11-01T08:00:00Z"
    assert yaml.safe_load((releases / "v41.yaml").read_text())["complete"] is True
    assert yaml.safe_load((releases / "v42.yaml").read_text())["cancel"] is True
    text = (releases / "v43.yaml").read_text()
    assert "# Rollout 2, by local-operator at 2026-11-01T08:00:00Z: part of group beta; it reached 3 devices" in text
    assert "Next: append a phase" in text

    commit(release_repo, {}, "Import the factory's waves")
    assert reconcile("--check", str(release_repo))[0] == 0
    code, out, err = plan(release_repo, factory)
    assert code == 0, out + err
    assert "No changes. The factory matches the manifests." in out
    assert "drift" not in out + err and "warning" not in err

    # The next phase of the active wave: appended after the imported ones, it is the plan's next rollout.
    (releases / "v43.yaml").write_text(text + "  - name: apac\n    group: apac\n")
    code, out, err = plan(release_repo, factory, "--format", "json")
    assert code == 2, err
    operations = json.loads(out)["operations"]
    assert [(o["op"], o["wave"], o.get("phase"), o["status"]) for o in operations] == [
        ("rollout", "v43", "apac", "ready")
    ]


def test_a_phase_of_more_than_10000_uuids_in_parts_round_trips(tmp_path, release_repo):
    factory = init_demo_factory(tmp_path / "factory", devices=10_050)
    uuids = production_uuids(factory)
    f = Factory(factory)
    try:
        f.create_wave("fleet", 41)
        f.rollout("fleet", uuids=uuids[:10_000])  # part 1 of a 10,050-UUID phase, as the ledger sends it
        f.rollout("fleet", uuids=uuids[10_000:])
    finally:
        f.close()
    code, out, err = import_(factory, release_repo)
    assert code == 0, err
    assert "wrote" in out and "wave 'fleet' (version 41, tag production, active, 2 phases)" in out
    phases = yaml.safe_load((release_repo / "fleet.yaml").read_text())["phases"]
    assert phases == [{"name": "phase-1", "limit": 10_000}, {"name": "phase-2", "limit": 50}]
    code, out, err = plan(release_repo, factory)
    assert (code, "drift" in out + err) == (0, False), out + err


def test_a_wave_signed_by_several_keys_round_trips(tmp_path, release_repo):
    factory = init_demo_factory(tmp_path / "factory", devices=200, offline_keys=2)
    f = Factory(factory)
    try:
        f.create_wave("v46", 46)  # signed by the first offline key, as fioctl waves init signs
        root = f.ok(f.http.get("/ota/repo/demo/api/v1/user_repo/root.json"))
        online = f.ok(f.http.get(f"{F}/ci-targets.pub"))
        second = signing.find_offline_signer(
            root, signing.load_key_archive_file(factory / "targets.only.2.key.tgz"), online
        )
        signed = f.wave("v46", show_targets=True)["targets"]["signed"]
        f.ok(f.http.post(f"{F}/waves/v46/sign/", json={"signatures": [second.sign(signed)]}))
        f.rollout("v46", group="canary")
    finally:
        f.close()
    code, out, err = import_(factory, release_repo, "--wave", "v46")
    assert code == 0, err
    text = (release_repo / "v46.yaml").read_text()
    assert "# Signed by 3 of the production root's targets keys (it needs 3): offline " in text
    assert "and the online key." in text
    code, out, err = plan(release_repo, factory)
    assert code == 0, out + err
    (release_repo / "v46.yaml").write_text(text + "  - name: beta\n    group: beta\n")
    code, out, err = plan(release_repo, factory, "--format", "json")
    assert code == 2, err
    assert [(o["op"], o.get("phase"), o["status"]) for o in json.loads(out)["operations"]] == [
        ("rollout", "beta", "ready")
    ]


# -- refusals: each writes nothing and says why, one error line per reason ---------------------------------


def test_an_existing_file_is_never_overwritten_without_overwrite(factory, tmp_path):
    releases = tmp_path / "releases"
    releases.mkdir()
    mine = "apiVersion: reconciler/v1\nkind: Wave\nname: other\ntarget: 50\ntag: staging\ncomplete: true\n"
    (releases / "v43.yaml").write_text(mine)
    code, out, err = import_(factory, releases)
    assert code == 1
    assert f"error: {releases / 'v43.yaml'} exists: not overwritten" in err
    assert "nothing was written" in err and out == ""
    assert sorted(p.name for p in releases.iterdir()) == ["v43.yaml"]
    assert (releases / "v43.yaml").read_text() == mine

    code, out, err = import_(factory, releases, "--overwrite")
    assert code == 0, err
    assert yaml.safe_load((releases / "v43.yaml").read_text())["name"] == "v43"

    # Imported again over its own manifest: --overwrite replaces the file that manages the wave, no other.
    (releases / "v43.yaml").write_text((releases / "v43.yaml").read_text() + "  - name: more\n    group: apac\n")
    code, _, err = import_(factory, releases, "--wave", "v43", "--overwrite")
    assert code == 0, err
    assert "more" not in (releases / "v43.yaml").read_text()
    code, _, err = import_(factory, releases, "--wave", "v43")
    assert code == 1 and "error: wave 'v43' is already managed by" in err


def test_a_symlink_out_of_the_directory_is_never_followed(factory, tmp_path):
    """A link at the file's name that leads out of DIR: the manifests there are invalid (the loader refuses
    the link), so nothing is written, with or without --overwrite, and the link's target is never touched."""
    releases, outside = tmp_path / "releases", tmp_path / "outside.yaml"
    releases.mkdir()
    outside.write_text("# not ours\n")
    (releases / "v43.yaml").symlink_to(outside)
    for extra in ((), ("--overwrite",)):
        code, out, err = import_(factory, releases, *extra)
        assert code == 1 and out == ""
        assert "v43.yaml:1:1: cannot read the file: a symbolic link that leaves the release repository" in err
        assert outside.read_text() == "# not ours\n"
        assert (releases / "v43.yaml").is_symlink() and sorted(p.name for p in releases.iterdir()) == ["v43.yaml"]


def test_a_wave_a_manifest_manages_is_refused_by_name_and_skipped_by_selection(factory, tmp_path):
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "mine.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: v43\ntarget: 43\ntag: production\nphases: []\n"
    )
    code, out, err = import_(factory, releases, "--wave", "v43")
    assert code == 1
    assert f"error: wave 'v43' is already managed by {releases / 'mine.yaml'}:3:1" in err
    code, out, err = import_(factory, releases)
    assert code == 0 and out == "", err
    assert f"skipped wave 'v43': already managed by {releases / 'mine.yaml'}:3:1" in err
    assert "nothing to import" in err
    assert sorted(p.name for p in releases.iterdir()) == ["mine.yaml"]


def test_a_clash_with_an_existing_manifest_writes_nothing(factory, tmp_path):
    """A manifest queued for the tag, left active, and the imported active wave would both stay active:
    the loader's rule, found before anything is written."""
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "next.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: v50\ntarget: 50\ntag: production\n"
    )
    code, _, err = import_(factory, releases)
    assert code == 1
    assert "would both stay active on tag 'production'" in err and "nothing was written" in err
    assert sorted(p.name for p in releases.iterdir()) == ["next.yaml"]


def test_a_rollout_to_a_deleted_group_cannot_be_represented(factory, tmp_path):
    f = Factory(factory)
    try:
        f.ok(f.http.post(f"{F}/device-groups/", json={"name": "gone"}), 201)
        f.ok(f.http.post(f"{F}/waves/v43/cancel/"))
        f.create_wave("v44", 44)
        f.rollout("v44", group="canary")
        f.rollout("v44", group="gone")
        assert f.http.delete(f"{F}/device-groups/gone/").status_code in (200, 204)
    finally:
        f.close()
    releases = tmp_path / "releases"
    code, out, err = import_(factory, releases, "--wave", "v44", "--wave", "nope")
    assert code == 1 and out == ""
    assert "error: wave 'nope' does not exist in the factory" in err
    assert "error: wave 'v44': rollout 2 went to a device group that has been deleted" in err
    assert not releases.exists()


def test_options_that_contradict_each_other(factory, tmp_path):
    code, _, err = import_(factory, tmp_path / "r", "--wave", "v43", "--all")
    assert code == 1 and "cannot be combined with --active or --all" in err
    code, _, err = import_(factory, tmp_path / "r", "--since", "yesterday")
    assert code == 1 and "error: --since must be an RFC 3339 date-time" in err
    code, _, err = import_(factory, tmp_path / "r", "--all", "--since", "2030-01-01")
    assert code == 0 and "nothing to import" in err


def test_the_unmanaged_warning_gives_the_import_command(factory, release_repo):
    commit(release_repo, {"README.md": "releases\n"}, "Start")
    (release_repo / "v41.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: v41\ntarget: 41\ntag: production\nphases:\n"
        "  - {name: canary, group: canary}\n  - {name: beta, group: beta, limit: 5}\ncomplete: true\n"
    )
    code, out, err = reconcile("--dry-run", str(release_repo), "--local", str(factory))
    assert code == 0, err
    warning = next(line for line in (out + err).splitlines() if "unmanaged active wave" in line)
    assert warning.endswith(
        "warning: unmanaged active wave 'v43' (version 43, tag 'production') has no manifest; it is left "
        f"untouched. To adopt it, write its manifest with: reconcile import --factory demo --wave v43 {release_repo}"
    ), warning


def test_over_http_the_import_only_reads(factory, tmp_path):
    """Against the API (the local factory over real HTTP, as the Foundries API is reached): GET requests
    only, the ones factory/adopt.py lists, and the same manifests as through the embedded factory."""
    from tests.helpers.serving import FactoryFront

    class Recording(FactoryFront):
        def relay(self, command, path, body, headers):
            requests.append((command, path.split("?")[0]))
            return self.forward(command, path, body, headers)

    requests: list[tuple[str, str]] = []
    front = Recording(factory)
    try:
        code, out, err = reconcile(
            "import", "--all", "--api-url", front.url, "--factory", "demo", str(tmp_path / "api")
        )
    finally:
        front.close()
    assert code == 0, err
    assert out.count("wrote ") == 4
    assert {command for command, _ in requests} == {"GET"}
    assert sorted({path for _, path in requests}) == [
        f"{F}/ci-targets.pub",
        f"{F}/waves/",
        f"{F}/waves/populate-targets/",
        f"{F}/waves/v41/",
        f"{F}/waves/v42/",
        f"{F}/waves/v43/",
        "/ota/repo/demo/api/v1/user_repo/root.json",
    ]
    code, _, err = import_(factory, tmp_path / "local", "--all")
    assert code == 0, err
    for name in ("populate-targets", "v41", "v42", "v43"):
        assert (tmp_path / "api" / f"{name}.yaml").read_text() == (tmp_path / "local" / f"{name}.yaml").read_text()


def test_a_mistake_in_the_manifests_under_dir_is_reported_before_the_options_and_nothing_is_written(tmp_path):
    """Against an API the wave list is read while the manifests already under DIR load (cli/importcmd.py);
    their mistakes still come first: here plain HTTP to another machine, which the run refuses, is not
    what it reports, and it writes nothing."""
    directory = tmp_path / "releases"
    directory.mkdir()
    (directory / "broken.yaml").write_text("name: [\n")
    code, out, err = reconcile("import", "--api-url", "http://factory.example", "--factory", "demo", str(directory))
    assert code == 1 and out == ""
    assert "broken.yaml:" in err and "insecure" not in err.lower()
    assert sorted(path.name for path in directory.iterdir()) == ["broken.yaml"]


def test_an_import_that_stops_before_its_client_closes_the_connections_it_opened_early(tmp_path, monkeypatch):
    """The connections an import opens as its command line is read are closed when it stops before a client
    claimed them (here its options contradict each other): none is left for a later run in the process."""
    from reconciler import connections
    from tests.helpers.serving import FactoryFront

    front = FactoryFront(init_demo_factory(tmp_path / "factory", devices=10))
    try:
        monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
        code, _, err = reconcile("import", "--wave", "v1", "--all", "--api-url", front.url, "--factory", "demo", "x")
    finally:
        front.close()
    assert code == 1 and "--wave names the waves to import" in err
    assert connections._early == {}
