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

AUTHOR = {
    "GIT_AUTHOR_NAME": "Release Bot",
    "GIT_AUTHOR_EMAIL": "release@example.com",
    "GIT_COMMITTER_NAME": "Release Bot",
    "GIT_COMMITTER_EMAIL": "release@example.com",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
}

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
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


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
    jobs = workflow["jobs"]
    plan, apply, advance = jobs["plan"], jobs["apply"], jobs["advance"]
    assert plan["permissions"]["pull-requests"] == "write" and "environment" not in plan
    assert apply["environment"] == "production"
    assert advance["environment"] != "production"  # an environment without reviewers: the schedule never waits
    assert apply["permissions"]["issues"] == advance["permissions"]["issues"] == "write"
    # Queued, never cancelled in progress; each its own group, so a scheduled run never replaces a
    # pending apply (tests/github/test_workflow_concurrency.py); the apply lease keeps them apart.
    assert apply["concurrency"] == {"group": "wave-apply-${{ github.repository }}", "cancel-in-progress": False}
    assert advance["concurrency"] == {"group": "wave-advance-${{ github.repository }}", "cancel-in-progress": False}
    modes = {job: action_step(spec)["with"]["mode"] for job, spec in jobs.items()}
    assert modes == {"plan": "plan", "apply": "apply", "advance": "advance"}
    for name, job in jobs.items():  # the key reaches the apply job only
        assert ("OFFLINE_TARGETS_KEY" in str(job)) == (name == "apply"), name
        assert action_step(job)["uses"].split("@")[1] == "COMMIT_SHA"
    for name in ("apply", "advance"):  # each uploads its status page, also after a failed run
        (upload,) = [step for step in jobs[name]["steps"] if "upload-artifact" in step.get("uses", "")]
        step_id = action_step(jobs[name])["id"]
        assert upload["with"]["path"] == f"${{{{ steps.{step_id}.outputs.report-file }}}}"
        assert upload["if"].startswith("${{ !cancelled() && ")


def action_step(job: dict) -> dict:
    return next(step for step in job["steps"] if "reconciler" in step.get("uses", ""))


def test_secrets_reach_only_the_steps_that_need_them():
    action = yaml.safe_load(ACTION.read_text())
    assert set(action["inputs"]) >= {
        "mode",
        "paths",
        "factory",
        "api-url",
        "api-token",
        "keys",
        "base-ref",
        "python-version",
    }
    assert all("value" in output for output in action["outputs"].values())
    steps = {step.get("id", step["name"]): step for step in action["runs"]["steps"]}
    for step in steps.values():
        if "run" in step:
            assert step["shell"] == "bash"
            assert "${{" not in step["run"], f"{step['name']}: expressions belong in env:, not in the script"
    assert "RECONCILE_KEYS" not in steps["plan"]["env"]
    assert steps["apply"]["env"]["RECONCILE_KEYS"] == "${{ inputs.keys }}"
    assert "--keys" not in steps["apply"]["run"]
    assert '"$GITHUB_ACTION_PATH' in steps["install"]["run"]


def test_expression_subset_used_by_the_action():
    expr = Expressions({"inputs": {"mode": "plan", "base-ref": ""}, "steps": {"apply": {"outputs": {"dir": "/d"}}}})
    assert expr.condition("inputs.mode == 'plan'")
    assert not expr.condition("${{ inputs.mode == 'APPLY' }}")
    assert expr.condition("inputs.base-ref == '' && !(inputs.mode != 'plan')")
    assert expr.substitute("${{ steps.plan.outputs.dir || steps.apply.outputs.dir }}") == "/d"


# --- running the action ---------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **AUTHOR}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


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
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom reconciler.cli.reconcile import main\nsys.exit(main())\n")
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
    return {
        **runner_env,
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": api.repository,
        "GITHUB_TOKEN": token,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "77",
        "GITHUB_RUN_ATTEMPT": "1",
    }


def run(tmp_path, name, inputs, workspace, event, env):
    return run_action(
        ROOT, inputs, workspace=workspace, event=event, env=env, tmp=tmp_path / name, skip=frozenset({"install"})
    )


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
    tmp_path, api, runner_env, release_repo
):
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
    result = run(
        tmp_path,
        "fork",
        {"paths": "releases"},
        repo,
        pull_request(9, base),
        github_env(api, runner_env, token=READ_ONLY_TOKEN),
    )
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
    applied = run(
        tmp_path,
        "apply",
        {"mode": "apply", "paths": "releases", "keys": key_b64},
        repo,
        {"ref": "refs/heads/main"},
        env,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"::add-mask::{key_b64}" in applied.stdout
    assert applied.stdout.count(key_b64) == 1 and key_b64 not in applied.stderr + applied.summary
    for written in (tmp_path / "apply").rglob("*"):
        if written.is_file() and written.name != "event.json":
            assert key_b64 not in written.read_text(errors="replace"), written
    assert applied.outputs["changes"] == "true"
    assert "## Apply: done" in applied.summary
    assert api.writes() == []  # apply never comments, and nothing is stuck: no issue
    again = run(
        tmp_path,
        "again",
        {"mode": "apply", "paths": "releases", "keys": key_b64},
        repo,
        {"ref": "refs/heads/main"},
        env,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    ready = [op for op in json.loads(again.outputs["plan-json"])["operations"] if op["status"] == "ready"]
    assert ready == []  # the phase behind `wait: 24h` is blocked until the factory's clock moves


def test_unknown_mode_is_refused(tmp_path, api, runner_env, release_repo):
    repo, _ = release_repo
    result = run(tmp_path, "mode", {"mode": "destroy", "paths": "releases"}, repo, {}, github_env(api, runner_env))
    assert result.returncode == 1
    assert "::error::mode must be plan, apply or advance, not 'destroy'" in result.stdout


@pytest.mark.slow
def test_install_step_installs_the_package_from_the_action_path(tmp_path):
    """The one step the other tests leave out, run for real in a fresh virtual environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    action = yaml.safe_load(ACTION.read_text())
    [install] = [step for step in action["runs"]["steps"] if step.get("id") == "install"]
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "GITHUB_ACTION_PATH": str(ROOT)}
    subprocess.run(["bash", "-eo", "pipefail", "-c", install["run"]], env=env, check=True, timeout=600, cwd=tmp_path)
    result = subprocess.run(
        [str(venv / "bin/reconcile"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "--dry-run" in result.stdout


def test_the_signer_extras_are_declared_and_the_install_step_passes_them_to_pip(tmp_path):
    """pyproject's extras name securesystemslib's own, and the action's `extras` input reaches pip as
    ``ACTION_PATH[gcpkms,awskms]`` or is refused before pip runs. pip itself is a stand-in here that
    prints its arguments (the slow test above runs the real install)."""
    import importlib.metadata
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    provided = set(importlib.metadata.metadata("securesystemslib").get_all("Provides-Extra") or [])
    for name in ("gcpkms", "awskms", "azurekms", "hsm"):
        [requirement] = extras[name]
        assert requirement.startswith(f"securesystemslib[{name}]") and name in provided, name

    action = yaml.safe_load(ACTION.read_text())
    [install] = [step for step in action["runs"]["steps"] if step.get("id") == "install"]
    assert install["env"]["EXTRAS"] == "${{ inputs.extras }}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "python").chmod(0o755)

    def install_with(extras: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "GITHUB_ACTION_PATH": "/action",
            "EXTRAS": extras,
        }
        return subprocess.run(
            ["bash", "-eo", "pipefail", "-c", install["run"]],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    assert install_with("gcpkms, awskms").stdout.splitlines()[-1] == "/action[gcpkms,awskms]"
    assert install_with("").stdout.splitlines()[-1] == "/action"
    refused = install_with("gcpkms] @ https://example.com/x")
    assert refused.returncode == 1 and refused.stdout.startswith("::error::extras must be names separated by commas")
    assert "install" not in refused.stdout  # pip never ran


# --- the example workflow's jobs, run through the action ------------------------------------

PRODUCTION_KEY = "production key"  # placeholder: replaced by the demo factory's key archive as base64


def workflow_secrets(key_b64: str) -> dict[str | None, dict[str, str]]:
    """Secrets as the README sets them up: per repository (None) and per environment."""
    return {
        None: {"FOUNDRIES_READ_TOKEN": "fio-read-token"},
        "production": {"FOUNDRIES_API_TOKEN": "fio-write-token", "OFFLINE_TARGETS_KEY": key_b64},
        "production-advance": {"FOUNDRIES_API_TOKEN": "fio-write-token"},
    }


def run_job(tmp_path, name, job_name, event_name, event, workspace, env, secrets_by_env):
    """Run the one job of release.yml that this event starts, resolving its `with:` as GitHub does.

    A job sees the repository's secrets and those of its own environment only; the test's
    vars leave FOUNDRIES_API_URL empty, so the action uses the embedded demo factory.
    """
    workflow = yaml.safe_load(WORKFLOW.read_text())
    github_context = {"event_name": event_name, "event": event, "repository": env["GITHUB_REPOSITORY"]}
    started = [
        job for job, spec in workflow["jobs"].items() if Expressions({"github": github_context}).condition(spec["if"])
    ]
    assert started == [job_name], started
    job = workflow["jobs"][job_name]
    secrets = {**secrets_by_env[None], **secrets_by_env.get(job.get("environment"), {})}
    expr = Expressions(
        {"secrets": secrets, "vars": {"FACTORY": "demo", "FOUNDRIES_API_URL": ""}, "github": github_context}
    )
    inputs = {key: expr.substitute(str(value)) for key, value in action_step(job)["with"].items()}
    result = run(tmp_path, name, inputs, workspace, event, {**env, "GITHUB_EVENT_NAME": event_name})
    return result, inputs


def demo_key(runner_env) -> tuple[Path, str]:
    """Move the demo factory's key archive out of its reach; return where it is now, and it as base64."""
    archive = Path(runner_env["RECONCILE_LOCAL"]) / "targets.only.key.tgz"
    moved = archive.with_suffix(".moved")
    archive.rename(moved)
    return moved, base64.b64encode(moved.read_bytes()).decode()


def assert_no_key(run_dir: Path, key_b64: str) -> None:
    for written in run_dir.rglob("*"):
        if written.is_file():
            assert key_b64 not in written.read_text(errors="replace"), written


def history(runner_env, wave: str) -> list[str] | None:
    """The groups a wave was rolled out to, in order; None when the factory has no such wave."""
    from tests.helpers.e2e import api as factory_api

    with factory_api(Path(runner_env["RECONCILE_LOCAL"])) as client:
        response = client.get(f"/ota/factories/demo/waves/{wave}/")
    if response.status_code == 404:
        return None
    return [h["group-name"] for h in response.json()["rollout-history"]]


def test_the_three_jobs_release_a_wave_with_the_key_in_the_apply_job_only(tmp_path, api, runner_env, release_repo):
    from tests.helpers.e2e import advance

    repo, base = release_repo
    env = github_env(api, runner_env)
    planned, inputs = run_job(
        tmp_path, "plan", "plan", "pull_request", pull_request(3, base), repo, env, workflow_secrets(PRODUCTION_KEY)
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert inputs["api-token"] == "fio-read-token" and "keys" not in inputs
    assert api.comments[3][0]["body"].startswith("<!-- reconcile-plan:demo -->")
    _, key_b64 = demo_key(runner_env)  # from here on, the key exists only as the production secret
    secrets = workflow_secrets(key_b64)
    schedule = {"schedule": "17 * * * *"}

    held, inputs = run_job(tmp_path, "advance-0", "advance", "schedule", schedule, repo, env, secrets)
    assert held.returncode == 0, held.stdout + held.stderr
    assert "keys" not in inputs and inputs["api-token"] == "fio-write-token"
    assert "## Advance (no key): done" in held.summary
    assert "needs the offline key; runs in the keyed apply job" in held.summary
    assert held.outputs["changes"] == "false"
    assert history(runner_env, "v41-update") is None  # not created: only the keyed job creates waves

    applied, inputs = run_job(tmp_path, "apply", "apply", "push", {"ref": "refs/heads/main"}, repo, env, secrets)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert inputs["keys"] == key_b64
    assert history(runner_env, "v41-update") == ["canary"]  # beta waits 24h

    advance(Path(runner_env["RECONCILE_LOCAL"]), "25h")
    advanced, _ = run_job(tmp_path, "advance-1", "advance", "schedule", schedule, repo, env, secrets)
    assert advanced.returncode == 0, advanced.stdout + advanced.stderr
    assert history(runner_env, "v41-update") == ["canary", "beta"]
    assert "rolled out to" in advanced.summary
    for result in (held, applied, advanced):  # the status page of each run, for its artifact
        report = Path(result.outputs["report-file"]).read_text()
        assert report.startswith("<!DOCTYPE html>") and "<code>v41-update</code>" in report
    assert "rolled out <code>beta</code>" in Path(advanced.outputs["report-file"]).read_text()
    for run_dir in ("plan", "advance-0", "advance-1"):
        assert_no_key(tmp_path / run_dir, key_b64)
    assert api.writes()[1:] == []  # the plan comment only: nothing was stuck


def test_a_stuck_wave_fails_the_schedule_and_keeps_one_issue_until_it_moves(tmp_path, api, runner_env, release_repo):
    from tests.helpers.e2e import api as factory_api

    repo, _ = release_repo
    env = github_env(api, runner_env)
    run(tmp_path, "create", {"paths": "releases"}, repo, {}, env)  # creates the demo factory
    _, key_b64 = demo_key(runner_env)
    secrets = workflow_secrets(key_b64)
    applied, _ = run_job(tmp_path, "apply", "apply", "push", {"ref": "refs/heads/main"}, repo, env, secrets)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    with factory_api(Path(runner_env["RECONCILE_LOCAL"])) as client:  # someone rolls out by hand
        response = client.post(
            "/ota/factories/demo/waves/v41-update/rollout/", json={"group": "us-east", "dry-run": False}
        )
        assert response.status_code == 200, response.text
    schedule = {"schedule": "17 * * * *"}

    stuck, _ = run_job(tmp_path, "stuck-1", "advance", "schedule", schedule, repo, env, secrets)
    assert stuck.returncode == 1
    assert "::error file=releases/v41.yaml,line=10::wave 'v41-update' is stuck: drift: " in stuck.stdout
    # drift is an error (exit 1, issue 10): the job fails on it, and the issue is opened all the same
    assert "::error::reconcile advance failed (exit 1); see the job summary" in stuck.stdout
    [issue] = api.issues.values()
    assert issue["body"].startswith("<!-- reconcile-stuck:demo:v41-update -->\n")
    assert issue["title"] == "Wave v41-update is stuck (factory demo)" and "us-east" in issue["body"]
    again, _ = run_job(tmp_path, "stuck-2", "advance", "schedule", schedule, repo, env, secrets)
    assert again.returncode == 1 and len(api.issues) == 1 and issue["state"] == "open"

    (repo / "releases/v41.yaml").write_text(WAVE.replace("group: beta", "group: us-east"))  # adopt the history
    git(repo, "commit", "-q", "-am", "adopt the us-east rollout")
    moved, _ = run_job(tmp_path, "moved", "advance", "schedule", schedule, repo, env, secrets)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert issue["state"] == "closed" and "no longer held" in api.comments[issue["number"]][0]["body"]
    for run_dir in ("stuck-1", "stuck-2", "moved"):
        assert_no_key(tmp_path / run_dir, key_b64)


def test_apply_signs_through_the_signer_input(tmp_path, api, runner_env, release_repo):
    """A securesystemslib URI signer that needs no cloud: file2: with the offline key as PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from reconciler import signing

    repo, _ = release_repo
    env = {**github_env(api, runner_env), "GITHUB_EVENT_NAME": "push"}
    run(tmp_path, "create", {"paths": "releases"}, repo, {}, env)
    moved, _ = demo_key(runner_env)
    archive = signing.load_key_archive_file(moved)
    [(public_name, _)] = list(archive.public_entries())
    _, secret = archive.private_entry(public_name)
    seed = bytes.fromhex(secret["keyval"]["private"])[:32]
    pem = tmp_path / "offline-key.pem"
    pem.write_bytes(
        ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    moved.unlink()  # the PEM behind the URI is the only copy of the key

    applied = run(
        tmp_path,
        "apply",
        {"mode": "apply", "paths": "releases", "signer": f"file2:{pem}"},
        repo,
        {"ref": "refs/heads/main"},
        env,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "created with" in applied.summary and "signed by key" in applied.summary
    assert history(runner_env, "v41-update") == ["canary"]


def test_advance_refuses_a_key_and_apply_refuses_two(tmp_path, api, runner_env, release_repo):
    repo, _ = release_repo
    env = github_env(api, runner_env)
    for name, inputs, message in [
        ("advance", {"mode": "advance", "keys": "a2V5"}, "mode advance never uses the offline key"),
        (
            "both",
            {"mode": "apply", "keys": "a2V5", "signer": "file2:x"},
            "give the offline key once: keys or signer, not both",
        ),
    ]:
        result = run(tmp_path, name, {"paths": "releases", **inputs}, repo, {}, env)
        assert result.returncode == 1 and f"::error::{message}" in result.stdout, result.stdout
        assert result.ran == ["Check inputs and mask secrets"]
