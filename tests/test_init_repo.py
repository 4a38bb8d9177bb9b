"""``reconcile init-repo``: a release repository that validates, with a workflow GitHub accepts."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.localfactory.cli import main as factory_main
from tests.helpers.e2e import git, reconcile

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_init_repo_writes_a_repository_that_checks_and_a_workflow_github_accepts(tmp_path):
    repo = tmp_path / "acme-releases"
    code, out, err = reconcile("init-repo", str(repo), "--factory", "acme", "--action", f"acme/reconciler@{SHA}")
    assert code == 0, err
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts) == [
        ".github/workflows/release.yml",
        ".gitignore",
        "README.md",
        "releases/first-wave.yaml",
        "schemas/wave.schema.json",
    ]
    assert out.count("wrote ") == 5 and "warning" not in err and "error" not in err

    manifest = (repo / "releases/first-wave.yaml").read_text()
    first = manifest.splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/wave.schema.json"
    assert (repo / "releases" / first.split("=", 1)[1]).resolve() == repo / "schemas/wave.schema.json"
    assert (repo / "schemas/wave.schema.json").read_text() == (ROOT / "schemas/wave.schema.json").read_text()
    assert yaml.safe_load(manifest)["factory"] == "acme"
    assert reconcile("--check", str(repo / "releases")) == (0, "1 manifest, 1 wave: ok\n", "")

    workflow = repo / ".github/workflows/release.yml"
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    uses = [
        step["uses"]
        for job in yaml.safe_load(workflow.read_text())["jobs"].values()
        for step in job["steps"]
        if "reconciler" in step["uses"]
    ]
    assert uses == [f"acme/reconciler@{SHA}"] * 3
    readme = (repo / "README.md").read_text()
    assert "`FACTORY` = `acme`" in readme and "python3 -m base64 -e targets.only.key.tgz | tr -d '\\n'" in readme


def test_without_action_the_placeholder_is_named(tmp_path):
    code, _, err = reconcile("init-repo", str(tmp_path / "r"), "--factory", "acme")
    assert code == 0
    assert "next: replace OWNER/reconciler@COMMIT_SHA" in err
    assert "OWNER/reconciler@COMMIT_SHA" in (tmp_path / "r/.github/workflows/release.yml").read_text()


def test_init_repo_refuses_before_writing_anything(tmp_path):
    repo = tmp_path / "existing"
    repo.mkdir()
    (repo / "README.md").write_text("ours\n")
    code, out, err = reconcile("init-repo", str(repo), "--factory", "acme")
    assert code == 1 and out == ""
    assert err == (
        f"error: {repo / 'README.md'} already exists; init-repo never overwrites: move it away or choose "
        "another directory\n"
    )
    assert [p.name for p in repo.iterdir()] == ["README.md"]
    for args, message in [
        (["--factory", "ac me"], "factory name 'ac me' may contain only"),
        (["--factory", "acme", "--action", "reconciler"], "--action 'reconciler' must name"),
    ]:
        code, _, err = reconcile("init-repo", str(tmp_path / "new"), *args)
        assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()
    code, _, err = reconcile("init-repo", str(tmp_path / "new"))
    assert code == 1 and "Missing option '--factory'" in err


@pytest.mark.parametrize("action", ["acme/reconciler@main", "acme/reconciler@v1.2.0", "a/b@0123abc"])
def test_an_action_not_pinned_by_a_full_sha_is_written_with_a_warning(tmp_path, action):
    code, _, err = reconcile("init-repo", str(tmp_path / "r"), "--factory", "demo", "--action", action)
    assert code == 0
    assert "warning: --action" in err and "not pinned by a full commit SHA" in err
    assert f"uses: {action}\n" in (tmp_path / "r/.github/workflows/release.yml").read_text()


def test_a_full_sha_pin_is_written_whole_without_a_warning_or_the_placeholder_exemption(tmp_path):
    action = "acme/reconciler@" + "a" * 40
    code, _, err = reconcile("init-repo", str(tmp_path / "r"), "--factory", "demo", "--action", action)
    assert code == 0 and "warning" not in err
    workflow = (tmp_path / "r/.github/workflows/release.yml").read_text()
    assert workflow.count(f"uses: {action}\n") == 3
    assert "zizmor: ignore[unpinned-uses]" not in workflow


def test_an_action_with_a_trailing_newline_is_refused(tmp_path):
    code, _, err = reconcile(
        "init-repo", str(tmp_path / "r"), "--factory", "demo", "--action", "acme/reconciler@" + "a" * 40 + "\n"
    )
    assert code == 1 and "must name where action.yml lives" in err
    assert not (tmp_path / "r").exists()


def test_the_repository_is_a_git_repository_and_the_printed_first_plan_shows_the_example_wave(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile("init-repo", "acme-releases", "--factory", "acme")
    assert code == 0, err
    assert "initialized a git repository in acme-releases (git init)" in out.splitlines()
    assert git(tmp_path / "acme-releases", "rev-parse", "--show-toplevel").strip() == str(tmp_path / "acme-releases")
    commands = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert commands == [
        "reconcile-factory --local acme-releases/.demo-factory init --demo --name acme",
        "reconcile --dry-run --local acme-releases/.demo-factory acme-releases/releases",
    ]
    assert "next: an apply reads committed manifests: git -C acme-releases add -A && git -C acme-releases commit" in err

    # the commands as printed: the demo factory, then the plan, which shows the example wave ready
    made = CliRunner().invoke(factory_main, shlex.split(commands[0])[1:])
    assert made.exit_code == 0, made.output
    code, out, err = reconcile(*shlex.split(commands[1])[1:])
    assert code == 0, err
    assert "+ init     first-wave  target 41, tag production" in out and "skipped" not in out
    assert "Plan: 1 to init, 1 to roll out" in out
    assert git(tmp_path / "acme-releases", "status", "--porcelain", "--ignored=no").count(".demo-factory") == 0


def test_inside_a_git_work_tree_it_runs_no_git_init(release_repo):
    code, out, _ = reconcile("init-repo", str(release_repo / "ops"), "--factory", "acme")
    assert code == 0 and "git init" not in out
    assert not (release_repo / "ops" / ".git").exists()
