"""Stuck waves: which waves of a plan are held, and their GitHub issues over HTTP (the local stand-in)."""

from __future__ import annotations

import json

import pytest

from reconciler.github import main
from reconciler.github._issues import marker, post_stuck_issues, stuck_waves
from tests.helpers.github import DRIFTED, READ_ONLY_TOKEN, GitHubAPI, op, plan, wave


def test_gates_that_have_not_passed_are_not_stuck():
    waiting = plan(
        [wave("v46", "releases/v46.yaml")],
        [op("v46", "releases/v46.yaml", 3)],
        warnings=[
            {
                "file": "releases/v46.yaml",
                "line": 9,
                "col": 5,
                "message": "wave 'v46' targets would expire within 30 days (2026-11-20T00:00:00Z)",
            }
        ],
    )
    assert stuck_waves(waiting) == {}


def test_drift_errors_and_expiry_hold_the_wave_they_belong_to():
    two = "releases/two.yaml"  # two wave documents in one file: the error's line picks the wave
    found = stuck_waves(
        plan(
            [
                wave("a", two),
                wave("b", two),
                wave("c", "releases/c.yaml", drift=["phase 1 'beta': the factory rolled out to group 'gamma'"]),
                wave("d", "releases/d.yaml"),
                wave("e", "releases/e.yaml"),
            ],
            [op("a", two, 1), op("b", two, 20), op("c", "releases/c.yaml", 1), op("d", "releases/d.yaml", 1)],
            errors=[
                {"file": two, "line": 25, "col": 3, "message": "unknown group 'betta'"},
                {"message": "no file: belongs to no wave"},
            ],
            warnings=[
                {
                    "file": "releases/d.yaml",
                    "line": 1,
                    "col": 1,
                    "message": "production targets of tag 'production' expired at 2026-10-01T00:00:00Z",
                },
                {"file": "releases/e.yaml", "line": 1, "col": 1, "message": "not about being stuck"},
            ],
        )
    )
    assert sorted(found) == ["b", "c", "d"]
    assert found["b"].reasons == ["releases/two.yaml:25: unknown group 'betta'"]
    assert (found["b"].manifest, found["b"].line) == (two, 20)
    assert found["c"].reasons == ["drift: phase 1 'beta': the factory rolled out to group 'gamma'"]
    assert "expired at" in found["d"].reasons[0]


def test_a_plans_own_list_of_held_waves_is_picked_up():
    found = stuck_waves(
        plan(
            [wave("v46", "releases/v46.yaml")],
            held=[
                {"wave": "v46", "reason": "the wave's targets expired", "file": "releases/v46.yaml", "line": 4},
                "v47",
            ],
        )
    )
    assert found["v46"].reasons == ["releases/v46.yaml:4: the wave's targets expired"]
    assert found["v47"].reasons == ["held"]


@pytest.fixture
def api():
    server = GitHubAPI()
    server.start()
    yield server
    server.stop()


def env(api: GitHubAPI, token: str = "ghs_writer") -> dict[str, str]:
    return {
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": api.repository,
        "GITHUB_TOKEN": token,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "5",
    }


def test_one_issue_per_stuck_wave_updated_in_place_then_closed_when_it_moves(api):
    api.page_size = 1  # the marker is found across pages
    api.add_issue("unrelated", "nothing to do with waves")
    api.add_issue("a pull request", marker("acme", "v46") + "\n", pull_request=True)
    other = api.add_issue("Wave v46 is stuck (factory beta)", marker("beta", "v46") + "\nanother factory\n")

    lines = post_stuck_issues(DRIFTED, env(api))
    [issue] = [i for i in api.issues.values() if i["title"] == "Wave v46 is stuck (factory acme)"]
    assert lines == [f"::notice::wave v46 is stuck: opened issue #{issue['number']}"]
    assert issue["body"].startswith(marker("acme", "v46") + "\n")
    assert "drift: phase 1: group 'gamma' instead of 'beta'" in issue["body"]
    assert "https://github.example/acme/releases/actions/runs/5" in issue["body"]

    assert post_stuck_issues(DRIFTED, env(api)) == [
        f"::notice::wave v46 is still stuck: issue #{issue['number']} unchanged"
    ]
    worse = plan([wave("v46", "releases/v46.yaml", drift=["phase 1: group 'delta' instead of 'beta'"])])
    assert post_stuck_issues(worse, env(api)) == [
        f"::notice::wave v46 is still stuck: updated issue #{issue['number']}"
    ]
    assert "'delta'" in issue["body"] and issue["state"] == "open"

    moving = plan([wave("v46", "releases/v46.yaml")], [op("v46", "releases/v46.yaml", 3, status="ready", reason="")])
    assert post_stuck_issues(moving, env(api)) == [f"::notice::wave v46 moves again: closed issue #{issue['number']}"]
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    assert "no longer held" in api.comments[issue["number"]][0]["body"]
    assert other["state"] == "open" and len(api.issues) == 4  # another factory's issue and the PR: untouched

    post_stuck_issues(DRIFTED, env(api))  # stuck again later: a new issue, the closed one stays closed
    assert sum(i["state"] == "open" and i["title"].endswith("(factory acme)") for i in api.issues.values()) == 1


def test_a_token_without_issue_permission_is_a_warning(api):
    lines = post_stuck_issues(DRIFTED, env(api, READ_ONLY_TOKEN))
    assert len(lines) == 1 and lines[0].startswith("::warning::could not update the stuck-wave issues: ")
    assert "issues: write" in lines[0] and READ_ONLY_TOKEN not in lines[0]
    assert api.issues == {}


def test_the_subcommand_fails_with_an_annotation_per_stuck_wave(api, tmp_path, monkeypatch, capsys):
    for name, value in env(api).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(DRIFTED))
    assert main(["stuck-issues", "--plan-json", str(plan_file)]) == 1
    out = capsys.readouterr().out
    assert "::error file=releases/v46.yaml::wave 'v46' is stuck: drift: phase 1: group 'gamma' instead of 'beta'" in out
    assert len(api.issues) == 1

    plan_file.write_text("")  # reconcile stopped before planning: nothing is known, nothing is closed
    assert main(["stuck-issues", "--plan-json", str(plan_file)]) == 0
    assert "left as they are" in capsys.readouterr().out
    assert next(iter(api.issues.values()))["state"] == "open"
