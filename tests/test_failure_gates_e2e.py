"""Failure gates through the real CLI on the local factory: a bad build (``reconcile-factory build 61
--failure-rate 30%``) reaches the canaries, and the wave's ``require.failed`` bound halts or cancels it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler.core.failures import waves_needing_failures
from reconciler.factory.client import FactoryClient, select_backend
from reconciler.factory.observe import observe
from reconciler.factory.wavedevices import MAX_EVENT_CHECKS
from reconciler.github._issues import stuck_waves
from reconciler.localfactory.cli import main as factory_main
from reconciler.manifest import load
from reconciler.resources import load_schema
from tests.helpers.e2e import advance, api, commit, reconcile

BAD_BUILD = """\
apiVersion: reconciler/v1
kind: Wave
name: rel-61
target: 61
tag: production
phases:
  - name: canary
    group: canary
  - name: us-east
    group: us-east
    require:
      failed: "<5%"
complete: true
"""
BOUND = "rel-61.yaml:12:15"


def factory(local: Path, *args: str) -> str:
    result = CliRunner().invoke(factory_main, ["--local", str(local), *args])
    assert result.exit_code == 0, result.output
    return result.output


def waves(local: Path) -> dict[str, dict]:
    with api(local) as client:
        listed = client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]
    return {w["name"]: w for w in listed if w["name"] != "populate-targets"}


def run(repo: Path, local: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(local))


def plan_json(repo: Path, local: Path) -> dict:
    _, out, _ = run(repo, local, "--dry-run", "--format", "json")
    data = json.loads(out)
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    return data


def failed_devices(local: Path) -> int:
    code, out, err = reconcile("status", "--devices", "rel-61", "--failed", "--local", str(local), "--format", "json")
    assert code == 0, err
    return len(json.loads(out)["devices"])


@pytest.fixture
def bad_canary(release_repo, factory_dir):
    """rel-61 (30% of installs fail) rolled out to the canaries a day ago; us-east is next, bounded at <5%."""
    assert "fail on 30% of devices" in factory(factory_dir, "build", "61", "--failure-rate", "30%")
    commit(release_repo, {"rel-61.yaml": BAD_BUILD}, "Release 61")
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, err
    # The bound of us-east cannot pass on a count made before the canary rollout of the same plan.
    assert "blocked: failed <5%: needs the failure count after the previous rollout" in out
    advance(factory_dir, "1d")
    return release_repo, factory_dir


def test_halt_exits_1_with_the_reason_and_holds_every_further_step(bad_canary):
    repo, local = bad_canary
    failed = failed_devices(local)
    assert failed >= 1, "the seed makes some canaries fail build 61"
    reason = (
        f"failed {100.0 * failed / 10:.1f}% of the devices reached ({failed} of 10 failed to install version 61), "
        f"over the bound <5% of phase 'us-east'"
    )
    code, out, err = run(repo, local)
    assert code == 1 and "Applying" not in err and "Traceback" not in out + err
    assert f"{repo / BOUND}: wave 'rel-61' halted (onFailure: halt): {reason}; its further steps are held." in out
    assert f"blocked: halted: {reason}" in out and "blocked: after phase 'us-east'" in out
    assert len(waves(local)["rel-61"]["rollout-history"]) == 1
    data = plan_json(repo, local)
    assert [(op["op"], op["status"], op["reason"]) for op in data["operations"]] == [
        ("rollout", "blocked", f"halted: {reason}"),
        ("complete", "blocked", "after phase 'us-east'"),
    ]
    assert [h["wave"] for h in data["held"]] == ["rel-61"]
    assert list(stuck_waves(data)) == ["rel-61"], "the stuck-wave issue opens for a halted wave"
    code, out, err = reconcile("status", str(repo), "--local", str(local))
    assert code == 0, err
    assert (
        f"next: rollout us-east: waiting (blocked: halted: {reason}; failed <5%: {100.0 * failed / 10:.1f}% "
        f"({failed} of 10))"
    ) in out, "status reads the bound as the plan does"


def test_status_json_reports_the_failure_bound_of_the_next_step(bad_canary):
    repo, local = bad_canary
    code, out, err = reconcile("status", str(repo), "--local", str(local), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    Draft202012Validator(load_schema("status.schema.json")).validate(data)
    step = data["waves"][0]["next_step"]
    assert (step["step"], step["passed"], step["failed_bound"], step["failed"], step["reached"]) == (
        "rollout us-east",
        False,
        "<5%",
        failed_devices(local),
        10,
    )
    assert step["blocked_by"].startswith("halted: failed ")


def test_cancel_cancels_through_apply_and_says_why(bad_canary):
    repo, local = bad_canary
    commit(
        repo,
        {"rel-61.yaml": BAD_BUILD.replace("tag: production\n", "tag: production\nonFailure: cancel\n")},
        "cancel rel-61 on failures",
    )
    failed = failed_devices(local)
    reason = (
        f"onFailure: cancel: failed {100.0 * failed / 10:.1f}% of the devices reached ({failed} of 10 failed "
        f"to install version 61), over the bound <5% of phase 'us-east'"
    )
    data = plan_json(repo, local)
    (cancel,) = data["operations"]
    assert (cancel["op"], cancel["status"], cancel["reason"], cancel["line"]) == ("cancel", "ready", reason, 6)
    assert data["errors"] == [] and stuck_waves(data) == {}
    code, out, err = reconcile("status", str(repo), "--local", str(local))
    assert code == 0 and f"next: cancel: ready (because {reason})" in out, err
    code, out, err = run(repo, local, "--dry-run", "--format", "markdown", "--detailed-exitcode")
    assert code == 2 and f"| ready: because {reason.replace('<', chr(92) + '<')} |" in out, err  # Markdown escapes <
    code, out, err = run(repo, local)
    assert code == 0, out + err
    assert f"      because {reason}" in out
    assert f"canceled because {reason}; " in err
    assert waves(local)["rel-61"]["status"] == "canceled"
    code, out, _ = run(repo, local)
    assert code == 0 and "wave 'rel-61' was canceled in the factory (by onFailure: cancel, or by hand)" in out


def test_a_wave_under_its_bound_proceeds(bad_canary):
    repo, local = bad_canary
    commit(repo, {"rel-61.yaml": BAD_BUILD.replace('"<5%"', '"<=50%"')}, "a tolerant bound")
    code, out, err = run(repo, local)
    assert code == 0, out + err
    assert [e["group-name"] for e in waves(local)["rel-61"]["rollout-history"]] == ["canary", "us-east"]


def test_only_waves_with_a_bound_in_force_pay_for_the_count(bad_canary, tmp_path):
    """The budget of observe.py: a bound in force adds 2 (targets to map versions) + one device page per
    rolled-out group + 2 per online canary not on 61; onFailure: cancel one status call more."""
    repo, local = bad_canary
    unbounded = tmp_path / "unbounded"
    unbounded.mkdir()
    (unbounded / "rel-61.yaml").write_text(BAD_BUILD.replace('    require:\n      failed: "<5%"\n', ""))
    canceling = tmp_path / "canceling"
    canceling.mkdir()
    (canceling / "rel-61.yaml").write_text(
        BAD_BUILD.replace("tag: production\n", "tag: production\nonFailure: cancel\n")
    )
    counts = {}
    for name, path in (("none", unbounded), ("halt", repo), ("cancel", canceling)):
        specs = load([str(path)]).specs
        with FactoryClient(select_backend(api_url=None, factory=None, local=str(local))) as client:
            state = observe(client, specs)
            counts[name] = client.requests
        expected = set() if name == "none" else {"rel-61"}
        assert set(state.failures) == waves_needing_failures(specs, state.waves) == expected
    code, out, err = reconcile("status", "--devices", "rel-61", "--local", str(local), "--format", "json")
    assert code == 0, err
    candidates = sum(1 for d in json.loads(out)["devices"] if d["state"] in ("failed", "pending"))
    assert 0 < candidates <= MAX_EVENT_CHECKS
    assert counts["halt"] - counts["none"] == 2 + 1 + 2 * candidates
    assert counts["cancel"] - counts["halt"] == 1
    assert state.failures["rel-61"].failed == failed_devices(local)


@pytest.mark.parametrize("bad", ["failed", "zero", "onFailure", "onlineWithin", "empty"])
def test_bad_input_for_every_new_key_is_one_line_and_writes_nothing(release_repo, factory_dir, bad):
    manifests = {
        "failed": (
            BAD_BUILD.replace('"<5%"', "2%"),
            '12:15: failed must be a bound such as "<2%" or "<=0.5%" '
            "(below, or at most, a percentage of the devices reached), got '2%'",
        ),
        "zero": (
            BAD_BUILD.replace('"<5%"', '"<0%"'),
            '12:15: failed must bound a percentage from 0% to 100% ("<0%" '
            "can never hold; \"<=0%\" allows no failure), got '<0%'",
        ),
        "onFailure": (
            BAD_BUILD.replace("tag: production\n", "tag: production\nonFailure: abort\n"),
            "6:12: onFailure must be halt or cancel, got 'abort'",
        ),
        "onlineWithin": (
            BAD_BUILD.replace('failed: "<5%"', 'failed: "<5%"\n      onlineWithin: 24h'),
            "13:21: onlineWithin only narrows require.updated; add updated (e.g. updated: 90%) or remove onlineWithin",
        ),
        "empty": (
            BAD_BUILD.replace('    require:\n      failed: "<5%"\n', "    require: {}\n"),
            '11:5: require needs updated, failed or both, e.g. {updated: 90%} or {failed: "<2%"}',
        ),
    }
    text, message = manifests[bad]
    commit(release_repo, {"rel-61.yaml": text}, "a mistake")
    for args in (("--check",), ("--dry-run",), ()):
        code, out, err = run(release_repo, factory_dir, *args)
        assert code == 1 and "Traceback" not in out + err
        assert (out + err).strip().splitlines() == [f"{release_repo / 'rel-61.yaml'}:{message}"]
    assert waves(factory_dir) == {}
