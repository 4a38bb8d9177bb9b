"""The GitHub Action and the example workflow: schema-valid, and their steps run as GitHub runs them.

The end-to-end tests execute action.yml's ``run:`` scripts with bash, GitHub's variables and
files, against the embedded local factory (real planning, real signing) and a stand-in for
GitHub's REST API that records the plan comment. Only the package install step is left out:
the package under test is put on PATH the way pip would install it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.github import READ_ONLY_TOKEN, Expressions, GitHubAPI, run_action

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "examples/workflows/release.yml"

AUTHOR = {"GIT_AUTHOR_NAME": "Release Bot", "GIT_AUTHOR_EMAIL": "release@example.com",
          "GIT_COMMITTER_NAME": "Release Bot", "GIT_COMMITTER_EMAIL": "release@example.com",
          "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}

WAVE = """apiVersion: reconciler/v1
kind: Wave
name: v41-update
target: 41
tag: production
phases:
  - name: canary
    group: canary
  - name: beta
    group: beta
    wait: 24h
"""


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, check=False, timeout=60)


def test_action_metadata_is_valid():
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_is_valid_and_serialises_applies():
    result = check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the `on` key as true
    assert set(triggers) >= {"pull_request", "push", "schedule"}
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["schedule"][0]["cron"]
    plan, apply = workflow["jobs"]["plan"], workflow["jobs"]["apply"]
    assert plan["permissions"]["pull-requests"] == "write"
    assert apply["environment"] == "production"
    assert apply["concurrency"]["cancel-in-progress"] is False
    modes = {job: next(s["with"]["mode"] for s in spec["steps"] if "reconciler" in s.get("uses", ""))
             for job, spec in workflow["jobs"].items()}
    assert modes == {"plan": "plan", "apply": "apply"}
    assert "keys" not in str(plan)


def test_secrets_reach_only_the_steps_that_need_them():
    action = yaml.safe_load(ACTION.read_text())
    assert set(action["inputs"]) >= {"mode", "paths", "factory", "api-url", "api-token", "keys", "base-ref",
                                     "python-version"}
    assert all("value" in output for output in action["outputs"].values())
    steps = {step.get("id", step["name"]): step for step in action["runs"]["steps"]}
    for step in steps.values():
        if "run" in step:
            assert step["shell"] == "bash"
            assert "${{" not in step["run"], f"{step['name']}: expressions belong in env:, not in the script"
    assert "RECONCILE_KEYS" not in steps["plan"]["env"]
    assert steps["apply"]["env"]["RECONCILE_KEYS"] == "${{ inputs.keys }}"
    assert "--keys" not in steps["apply"]["run"]
    assert '"$GITHUB_ACTION_PATH"' in steps["install"]["run"]


def test_expression_subset_used_by_the_action():
    expr = Expressions({"inputs": {"mode": "plan", "base-ref": ""}, "steps": {"apply": {"outputs": {"dir": "/d"}}}})
    assert expr.condition("inputs.mode == 'plan'")
    assert not expr.condition("${{ inputs.mode == 'APPLY' }}")
    assert expr.condition("inputs.base-ref == '' && !(inputs.mode != 'plan')")
    assert expr.substitute("${{ steps.plan.outputs.dir || steps.apply.outputs.dir }}") == "/d"


# --- running the action ---------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **AUTHOR}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def api():
    server = GitHubAPI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def runner_env(tmp_path, monkeypatch):
    """PATH with ``reconcile`` and ``python`` as ``pip install`` would leave them, and a git setup."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper that execs this interpreter, not a symlink to it: started through a symlink in
    # another directory, a virtual environment's python no longer finds its pyvenv.cfg and runs as
    # the base interpreter, without our dependencies.
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    script = bin_dir / "reconcile"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom reconciler.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RECONCILE_LOCAL": str(tmp_path / "factory"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }


@pytest.fixture
def release_repo(tmp_path):
    """A release repository whose pull request adds a wave; returns (work tree, base commit)."""
    repo = tmp_path / "workspace"
    (repo / "releases").mkdir(parents=True)
    (repo / "releases/README.md").write_text("Wave manifests.\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release repository")
    base = git(repo, "rev-parse", "HEAD")
    (repo / "releases/v41.yaml").write_text(WAVE)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release v41")
    return repo, base


def github_env(api: GitHubAPI, runner_env: dict, token: str = "ghs_writer") -> dict:
    return {**runner_env, "GITHUB_API_URL": api.url, "GITHUB_REPOSITORY": api.repository, "GITHUB_TOKEN": token,
            "GITHUB_EVENT_NAME": "pull_request", "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "1"}


def run(tmp_path, name, inputs, workspace, event, env):
    return run_action(ROOT, inputs, workspace=workspace, event=event, env=env, tmp=tmp_path / name,
                      skip=frozenset({"install"}))


def pull_request(number: int, base: str) -> dict:
    return {"number": number, "pull_request": {"number": number, "base": {"sha": base}}}


def test_plan_on_a_pull_request_comments_once_and_updates_in_place(tmp_path, api, runner_env, release_repo):
    repo, base = release_repo
    env = github_env(api, runner_env)
    inputs = {"mode": "plan", "paths": "releases"}
    first = run(tmp_path, "first", inputs, repo, pull_request(7, base), env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.outputs["changes"] == "true"
    plan = json.loads(first.outputs["plan-json"])
    assert plan["factory"] == "demo"
    assert [op["op"] for op in plan["operations"]][:2] == ["init", "rollout"]
    assert json.loads(Path(first.outputs["plan-file"]).read_text()) == plan
    assert "Wave plan for factory `demo`" in first.summary
    assert "::error" not in first.stdout
    [created] = api.writes()
    assert created.method == "POST" and created.path == "/repos/acme/releases/issues/7/comments"
    assert created.body["body"].startswith("<!-- reconcile-plan:default -->\n")
    assert "v41-update" in created.body["body"]

    (repo / "releases/v41.yaml").write_text(WAVE.replace("wait: 24h", "wait: 48h"))
    git(repo, "commit", "-q", "-am", "longer soak")
    second = run(tmp_path, "second", inputs, repo, pull_request(7, base), env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert [r.method for r in api.writes()] == ["POST", "PATCH"]
    assert len(api.comments[7]) == 1




def test_base_ref_plans_only_the_waves_the_pull_request_changes(tmp_path, api, runner_env, release_repo):
    repo, base = release_repo
    env = github_env(api, runner_env)
    adds_wave = run(tmp_path, "adds", {"paths": "releases", "base-ref": base}, repo, pull_request(5, base), env)
    assert adds_wave.returncode == 0, adds_wave.stdout + adds_wave.stderr
    assert {op["wave"] for op in json.loads(adds_wave.outputs["plan-json"])["operations"]} == {"v41-update"}
    head = git(repo, "rev-parse", "HEAD")
    (repo / "releases/README.md").write_text("Wave manifests, one file per wave.\n")
    git(repo, "commit", "-q", "-am", "docs")
    docs_only = run(tmp_path, "docs", {"paths": "releases", "base-ref": head}, repo, pull_request(6, head), env)
    assert docs_only.returncode == 0, docs_only.stdout + docs_only.stderr
    assert docs_only.outputs["changes"] == "false"
    assert json.loads(docs_only.outputs["plan-json"])["operations"] == []


def test_invalid_manifest_fails_with_annotations_then_the_fix_updates_the_same_comment(
        tmp_path, api, runner_env, release_repo):
    repo, base = release_repo
    (repo / "releases/v41.yaml").write_text(WAVE.replace("    group: beta\n", "    group: beta\n    soak: 1h\n"))
    git(repo, "commit", "-q", "-am", "typo")
    env = github_env(api, runner_env)
    result = run(tmp_path, "bad", {"paths": "releases"}, repo, pull_request(8, base), env)
    assert result.returncode == 1
    assert "::error file=releases/v41.yaml,line=11,col=5::unknown key 'soak'" in result.stdout
    assert "::error::reconcile plan failed (exit 1); see the job summary" in result.stdout
    assert result.outputs["changes"] == "false"
    assert "### Wave plan: reconcile failed" in result.summary
    [comment] = api.comments[8]
    assert "unknown key 'soak'" in comment["body"]

    (repo / "releases/v41.yaml").write_text(WAVE)
    git(repo, "commit", "-q", "-am", "fix the typo")
    fixed = run(tmp_path, "fixed", {"paths": "releases"}, repo, pull_request(8, base), env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    [comment] = api.comments[8]
    assert "Wave plan for factory `demo`: changes pending" in comment["body"]


def test_fork_pull_request_plans_without_secrets(tmp_path, api, runner_env, release_repo):
    """No api-token, no keys, a read-only GitHub token: the plan still runs, the comment is a warning."""
    repo, base = release_repo
    result = run(tmp_path, "fork", {"paths": "releases"}, repo, pull_request(9, base),
                 github_env(api, runner_env, token=READ_ONLY_TOKEN))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.outputs["changes"] == "true"
    assert "Wave plan for factory `demo`" in result.summary
    assert "::warning::could not comment on pull request #9: " in result.stdout and "(HTTP 403)" in result.stdout
    assert READ_ONLY_TOKEN not in result.stdout + result.stderr + result.summary
    assert api.comments.get(9) is None


def test_apply_masks_the_key_and_hands_it_over_in_the_environment_only(tmp_path, api, runner_env, release_repo):
    repo, _ = release_repo
    env = {**github_env(api, runner_env), "GITHUB_EVENT_NAME": "push"}
    # the plan creates the embedded demo factory, which writes its offline key archive
    planned = run(tmp_path, "plan", {"paths": "releases"}, repo, {"ref": "refs/heads/main"}, env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    archive = Path(runner_env["RECONCILE_LOCAL"]) / "targets.only.key.tgz"
    key_b64 = base64.b64encode(archive.read_bytes()).decode()
    archive.rename(archive.with_suffix(".moved"))  # so only the input can provide the key
    applied = run(tmp_path, "apply", {"mode": "apply", "paths": "releases", "keys": key_b64}, repo,
                  {"ref": "refs/heads/main"}, env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"::add-mask::{key_b64}" in applied.stdout
    assert applied.stdout.count(key_b64) == 1 and key_b64 not in applied.stderr + applied.summary
    for written in (tmp_path / "apply").rglob("*"):
        if written.is_file() and written.name != "event.json":
            assert key_b64 not in written.read_text(errors="replace"), written
    assert applied.outputs["changes"] == "true"
    assert "## Apply: done" in applied.summary
    assert api.requests == []  # apply never comments
    again = run(tmp_path, "again", {"mode": "apply", "paths": "releases", "keys": key_b64}, repo,
                {"ref": "refs/heads/main"}, env)
    assert again.returncode == 0, again.stdout + again.stderr
    ready = [op for op in json.loads(again.outputs["plan-json"])["operations"] if op["status"] == "ready"]
    assert ready == []  # the phase behind `wait: 24h` is blocked until the factory's clock moves


def test_unknown_mode_is_refused(tmp_path, api, runner_env, release_repo):
    repo, _ = release_repo
    result = run(tmp_path, "mode", {"mode": "destroy", "paths": "releases"}, repo, {}, github_env(api, runner_env))
    assert result.returncode == 1
    assert "::error::mode must be plan or apply, not 'destroy'" in result.stdout


@pytest.mark.slow
def test_install_step_installs_the_package_from_the_action_path(tmp_path):
    """The one step the other tests leave out, run for real in a fresh virtual environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    action = yaml.safe_load(ACTION.read_text())
    [install] = [step for step in action["runs"]["steps"] if step.get("id") == "install"]
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "GITHUB_ACTION_PATH": str(ROOT)}
    subprocess.run(["bash", "-eo", "pipefail", "-c", install["run"]], env=env, check=True, timeout=600, cwd=tmp_path)
    result = subprocess.run([str(venv / "bin/reconcile"), "--help"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and "--dry-run" in result.stdout
