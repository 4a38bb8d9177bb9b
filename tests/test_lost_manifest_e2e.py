"""Issue 23.3: an active wave whose manifest a commit renamed or deleted is an error, not a silent stall.

Each test drives the real ``reconcile`` CLI against a local demo factory and a git release repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema

from reconciler.github._issues import stuck_waves
from tests.helpers.e2e import api, commit, git, reconcile

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

V46 = """\
apiVersion: reconciler/v1
kind: Wave
name: v46
target: 46
tag: production
phases:
  - name: canary
    group: canary
"""


def run(repo: Path, factory_dir: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(factory_dir))


def waves(factory_dir: Path) -> dict[str, dict]:
    with api(factory_dir) as client:
        listed = client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]
    return {w["name"]: w for w in listed if w["name"] != "populate-targets"}


def started(repo: Path, factory_dir: Path) -> None:
    commit(repo, {"v46.yaml": V46}, "Release 46")
    code, _, err = run(repo, factory_dir)
    assert code == 0, err
    assert waves(factory_dir)["v46"]["status"] == "active"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "--short=8", "HEAD").strip()


def test_renaming_an_active_wave_is_an_error_that_names_the_commit(release_repo, factory_dir):
    started(release_repo, factory_dir)
    commit(release_repo, {"v46.yaml": V46.replace("name: v46", "name: v46-final")}, "Rename v46 to v46-final")
    sha = head(release_repo)

    code, out, err = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 1, "a stalled wave fails the scheduled dry run"
    assert (
        f"Errors:\n  active wave 'v46' (version 46, tag 'production') lost its manifest: commit {sha} "
        f"(Rename v46 to v46-final) renamed the wave in v46.yaml; a wave's name is how its manifest finds it. "
        f"Bring it back (git revert {sha}, or set name: v46 again), then finish the wave there with cancel: true "
        f"or complete: true before the next wave of tag 'production' starts"
    ) in out
    assert "unmanaged active wave" not in out + err and "by hand" not in out
    assert f"blocked: tag 'production' has active wave 'v46' (its manifest was renamed by commit {sha})" in out
    assert f"v46 (tag production): its manifest was renamed by commit {sha} (Rename v46 to v46-final)" in out

    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and "Applying" not in err
    assert set(waves(factory_dir)) == {"v46"}, "the renamed wave is not created"


def test_deleting_an_active_waves_manifest_fails_every_mode_and_opens_a_stuck_wave_issue(release_repo, factory_dir):
    started(release_repo, factory_dir)
    git(release_repo, "rm", "-q", "v46.yaml")
    commit(release_repo, {"v47.yaml": V46.replace("v46", "v47").replace("46", "47")}, "Release 47")
    sha = head(release_repo)

    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode", "--format", "json")
    assert code == 1
    plan = json.loads(out)
    jsonschema.validate(plan, json.loads((SCHEMAS / "plan.schema.json").read_text()))
    (error,) = plan["errors"]
    assert error["message"].startswith(
        f"active wave 'v46' (version 46, tag 'production') lost its manifest: commit {sha} (Release 47) deleted "
        f"v46.yaml;"
    )
    assert f"git revert {sha}, or restore the file" in error["message"]
    assert plan["held"] == [
        {"wave": "v46", "tag": "production", "reason": f"its manifest was deleted by commit {sha} (Release 47)"}
    ]
    assert [(op["wave"], op["status"]) for op in plan["operations"]] == [("v47", "blocked"), ("v47", "blocked")]
    stuck = stuck_waves(plan)
    assert list(stuck) == ["v46"] and "deleted by commit" in stuck["v46"].reasons[0]

    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and "Applying" not in err and f"lost its manifest: commit {sha}" in out
    assert set(waves(factory_dir)) == {"v46"}

    # Restoring the manifest with cancel: true brings the wave back under it, and the next wave starts.
    commit(release_repo, {"v46.yaml": V46 + "cancel: true\n"}, "Cancel v46")
    code, _, err = run(release_repo, factory_dir)
    assert code == 0, err
    assert waves(factory_dir)["v46"]["status"] == "canceled" and "v47" in waves(factory_dir)


def test_outside_git_a_wave_without_manifest_stays_a_warning(release_repo, factory_dir, tmp_path):
    started(release_repo, factory_dir)
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(release_repo / "v46.yaml", plain / "v47.yaml")
    (plain / "v47.yaml").write_text(V46.replace("v46", "v47").replace("46", "47"))
    code, out, _ = reconcile("--dry-run", "--detailed-exitcode", str(plain), "--local", str(factory_dir))
    assert code == 0
    assert "warning: unmanaged active wave 'v46' (version 46, tag 'production') has no manifest" in out
