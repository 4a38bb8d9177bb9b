"""Which marked comments and issues are ours, pagination that keeps the token home, and body caps.

Driven through what the action's Report step runs (``python -m reconciler.github plan-comment`` and
``stuck-issues``, or the functions behind them) against the GitHub stand-in, which answers as
GitHub's REST description says (newest issues first, authors on everything, 422s).
"""

from __future__ import annotations

import json

import httpx
import pytest

from reconciler.github import main
from reconciler.github._comment import marker as plan_marker
from reconciler.github._comment import post_plan_comment
from reconciler.github._issues import marker, post_stuck_issues
from tests.helpers.github import (
    ACTIONS_BOT,
    APP_BOT,
    APP_TOKEN,
    DRIFTED,
    MALLORY,
    PERSON,
    PERSONAL_TOKEN,
    WRITER_TOKEN,
    GitHubAPI,
    op,
    plan,
    wave,
)

MOVING = plan([wave("v46", "releases/v46.yaml")], [op("v46", "releases/v46.yaml", 3, status="ready", reason="")])


@pytest.fixture
def api():
    server = GitHubAPI()
    server.start()
    yield server
    server.stop()


def env(api: GitHubAPI, tmp_path, token: str = WRITER_TOKEN, pr: int = 4, **extra: str) -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": pr}}))
    return {
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": api.repository,
        "GITHUB_TOKEN": token,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "5",
        **extra,
    }


def run_cli(args: list[str], environment: dict[str, str], monkeypatch, capsys) -> tuple[int, list[str]]:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code = main(args)
    return code, capsys.readouterr().out.splitlines()


def plan_comment_args(tmp_path, markdown: str = "## Plan\n1 to roll out\n", factory: str = "demo") -> list[str]:
    (tmp_path / "plan.json").write_text(json.dumps({"factory": factory, "changes": True}))
    (tmp_path / "plan.md").write_text(markdown)
    return [
        "plan-comment",
        "--plan-json",
        str(tmp_path / "plan.json"),
        "--markdown",
        str(tmp_path / "plan.md"),
        "--factory",
        factory,
    ]


# --- the plan comment ---------------------------------------------------------------------------


def test_a_users_comment_with_the_plan_marker_is_left_alone_and_reported(api, tmp_path, monkeypatch, capsys):
    forged = api.add_comment(4, plan_marker("demo") + "\nApproved by the release team.\n", user=MALLORY)
    code, out = run_cli(plan_comment_args(tmp_path), env(api, tmp_path), monkeypatch, capsys)
    assert code == 0
    assert forged["body"] == plan_marker("demo") + "\nApproved by the release team.\n"  # never edited
    [ours] = [c for c in api.comments[4] if c is not forged]
    assert ours["user"] == ACTIONS_BOT and ours["body"].startswith(plan_marker("demo") + "\n## Plan")
    assert out == [
        f"::warning::{forged['html_url']} by mallory (User) carries the plan comment marker but was not written "
        "by github-actions[bot] (the token's account, from an installation token (GET /user refused): "
        "GitHub Actions' GITHUB_TOKEN): ignored",
        f"::notice::plan comment created on pull request #4 (comment {ours['id']})",
    ]
    # the next run edits its own comment, and still reports the other
    _, out = run_cli(plan_comment_args(tmp_path, "## Plan\nNo changes.\n"), env(api, tmp_path), monkeypatch, capsys)
    assert out[0].startswith(f"::warning::{forged['html_url']} by mallory") and "updated" in out[1]
    assert len(api.comments[4]) == 2 and "No changes." in ours["body"]


def test_a_hostile_authors_name_cannot_forge_a_workflow_command(api, tmp_path):
    hostile = {"login": "eve\n::error::forged 100%", "type": "User", "id": 7}
    api.add_comment(4, plan_marker("demo") + "\n", user=hostile)
    lines = post_plan_comment("## Plan\n", "demo", env(api, tmp_path))
    assert lines[0].startswith("::warning::") and "eve%0A::error::forged 100%25 (User)" in lines[0]
    assert all("\n" not in line for line in lines)


def test_a_personal_token_owns_its_users_comments_only(api, tmp_path):
    bot = api.add_comment(4, plan_marker("demo") + "\nold plan by the Actions bot\n", user=ACTIONS_BOT)
    mine = api.add_comment(4, plan_marker("demo") + "\nold plan by octocat\n", user=PERSON)
    lines = post_plan_comment("## Plan\n", "demo", env(api, tmp_path, PERSONAL_TOKEN))
    assert lines[0].startswith(f"::warning::{bot['html_url']} by github-actions[bot] (Bot) carries")
    assert "not written by octocat (the token's account, from GET /user)" in lines[0]
    assert lines[1] == f"::notice::plan comment updated on pull request #4 (comment {mine['id']})"
    assert bot["body"].endswith("old plan by the Actions bot\n") and mine["body"].endswith("## Plan\n")


def test_an_app_token_is_recognised_when_the_workflow_names_its_bot(api, tmp_path):
    # Unnamed, the app's bot is taken for someone else: a new comment, and a warning saying what to set.
    lines = post_plan_comment("## Plan\n", "demo", env(api, tmp_path, APP_TOKEN))
    [created] = api.comments[4]
    assert created["user"] == APP_BOT
    assert lines[0] == (
        f"::warning::GitHub wrote {created['html_url']} as release-helper[bot] (Bot), not as github-actions[bot] "
        "(an installation token (GET /user refused): GitHub Actions' GITHUB_TOKEN): later runs will not find it; "
        "give the action github-identity: release-helper[bot] (or set RECONCILE_GITHUB_IDENTITY=release-helper[bot] in the job's env)"
    )
    named = env(api, tmp_path, APP_TOKEN, RECONCILE_GITHUB_IDENTITY="Release-Helper[bot]")  # logins ignore case
    assert post_plan_comment("## Plan\nv2\n", "demo", named) == [
        f"::notice::plan comment updated on pull request #4 (comment {created['id']})"
    ]
    # a person cannot pass for the bot: a [bot] login must be of type Bot
    api.comments[4][0]["user"] = {"login": "release-helper[bot]", "type": "User", "id": 1}
    assert post_plan_comment("## Plan\nv3\n", "demo", named)[0].startswith("::warning::")
    assert len(api.comments[4]) == 2


def test_a_next_page_on_another_origin_is_not_followed(api, tmp_path):
    elsewhere = GitHubAPI()
    elsewhere.start()
    try:
        api.page_size, api.link_base = 1, elsewhere.url  # same host, another port: another origin
        api.add_comment(4, "first")
        api.add_comment(4, "second")
        api.add_issue("first", None)
        api.add_issue("second", None)
        lines = post_plan_comment("## Plan\n", "demo", env(api, tmp_path))
        assert lines == [
            "::warning::could not comment on pull request #4: GitHub's next page is at another origin "
            f"({elsewhere.url}), not the API's: not followed, the token is not sent there; "
            "the plan is in the job summary"
        ]
        issue_lines = post_stuck_issues(DRIFTED, env(api, tmp_path))
        assert issue_lines == [
            "::warning::could not update the stuck-wave issues: GitHub's next page is at another origin "
            f"({elsewhere.url}), not the API's: not followed, the token is not sent there"
        ]
        assert elsewhere.requests == []  # the token never went there
        assert api.writes() == []  # a list known in part changes nothing
    finally:
        elsewhere.stop()


# --- the stuck-wave issues ----------------------------------------------------------------------


def test_a_users_marked_issue_is_neither_closed_nor_overwritten(api, tmp_path, monkeypatch, capsys):
    text = marker("acme", "v46") + "\nPlease do not touch v46.\n"
    forged = api.add_issue("v46 looks fine", text, user=MALLORY)
    lines = post_stuck_issues(MOVING, env(api, tmp_path))  # v46 is healthy: nothing of ours to close
    assert lines == [
        f"::warning::{forged['html_url']} by mallory (User) carries the stuck-wave issue marker but was not "
        "written by github-actions[bot] (the token's account, from an installation token (GET /user refused): "
        "GitHub Actions' GITHUB_TOKEN): ignored"
    ]
    assert forged["state"] == "open" and api.writes() == []

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(DRIFTED))  # v46 is stuck: our own issue, the user's untouched
    code, out = run_cli(["stuck-issues", "--plan-json", str(plan_file)], env(api, tmp_path), monkeypatch, capsys)
    assert code == 1
    [ours] = [i for i in api.issues.values() if i is not forged]
    assert ours["user"] == ACTIONS_BOT and ours["body"].startswith(marker("acme", "v46") + "\n")
    assert forged["body"] == text and forged["state"] == "open"
    assert out[0].startswith(f"::warning::{forged['html_url']} by mallory (User)")
    assert out[1] == f"::notice::wave v46 is stuck: opened issue #{ours['number']}"


def test_duplicate_issues_of_ours_are_closed_in_favour_of_the_oldest(api, tmp_path):
    oldest = api.add_issue("Wave v46 is stuck (factory acme)", marker("acme", "v46") + "\nold\n")
    newer = api.add_issue("Wave v46 is stuck (factory acme)", marker("acme", "v46") + "\nnewer\n")
    newest = api.add_issue("Wave v46 is stuck (factory acme)", marker("acme", "v46") + "\nnewest\n")
    lines = post_stuck_issues(DRIFTED, env(api, tmp_path))
    assert lines == [
        f"::notice::wave v46: closed issue #{newer['number']}, a duplicate of #{oldest['number']}",
        f"::notice::wave v46: closed issue #{newest['number']}, a duplicate of #{oldest['number']}",
        f"::notice::wave v46 is still stuck: updated issue #{oldest['number']}",
    ]
    for duplicate in (newer, newest):
        assert (duplicate["state"], duplicate["state_reason"]) == ("closed", "duplicate")
        assert duplicate["duplicate_issue_id"] == oldest["id"]
        assert api.comments[duplicate["number"]][0]["body"].startswith(f"Duplicate of #{oldest['number']}: ")
    assert oldest["state"] == "open" and "drift: " in oldest["body"]

    assert post_stuck_issues(MOVING, env(api, tmp_path)) == [
        f"::notice::wave v46 moves again: closed issue #{oldest['number']}"
    ]
    assert (oldest["state"], oldest["state_reason"]) == ("closed", "completed")
    assert all(issue["state"] == "closed" for issue in api.issues.values())


def test_thousands_of_errors_still_open_an_issue_under_githubs_limit(api, tmp_path):
    errors = [
        {"file": "releases/v46.yaml", "line": i, "col": 3, "message": f"wave 'v46': unknown group 'beta-{i}'"}
        for i in range(1, 3001)
    ]
    errors.append({"file": "releases/v46.yaml", "line": 1, "col": 1, "message": "wave 'v46': " + "x" * 100_000})
    lines = post_stuck_issues(plan([wave("v46", "releases/v46.yaml")], errors=errors), env(api, tmp_path))
    [issue] = api.issues.values()
    assert lines == [f"::notice::wave v46 is stuck: opened issue #{issue['number']}"]
    body = issue["body"]
    assert len(body) <= 65536 and body.startswith(marker("acme", "v46") + "\n")
    assert "unknown group 'beta-50'" in body and "unknown group 'beta-51'" not in body
    assert "- ... and 2,951 more reasons (the first 50 are shown)" in body
    assert body.endswith("closing the issue by hand does not unblock the wave.\n")


def test_a_single_huge_reason_is_cut(api, tmp_path):
    huge = {"file": "releases/v46.yaml", "line": 1, "col": 1, "message": "wave 'v46': " + "\x1b" * 70_000}
    post_stuck_issues(plan([wave("v46", "releases/v46.yaml")], errors=[huge]), env(api, tmp_path))
    [issue] = api.issues.values()
    assert len(issue["body"]) < 2000 and "\\u001b\\u001b" in issue["body"] and "…`" in issue["body"]


# --- the stand-in itself ------------------------------------------------------------------------


def test_the_stand_in_answers_as_githubs_rest_description(api):
    for i in range(3):
        api.add_issue(f"issue {i}", None)
    headers = {"Authorization": f"Bearer {WRITER_TOKEN}"}
    with httpx.Client(base_url=api.url, headers=headers) as client:
        issues = f"/repos/{api.repository}/issues"
        assert [i["title"] for i in client.get(issues).json()] == ["issue 2", "issue 1", "issue 0"]  # newest first
        assert [i["title"] for i in client.get(issues + "?direction=asc").json()] == ["issue 0", "issue 1", "issue 2"]
        assert all(set(i["user"]) >= {"login", "type", "id"} for i in client.get(issues).json())
        assert client.post(f"{issues}/1/comments", json={}).status_code == 422  # body is required
        assert client.patch(f"{issues}/1", json={"state": "closed", "state_reason": "fixed"}).status_code == 422
        assert client.get("/user").status_code == 403  # GITHUB_TOKEN is an installation token
        person = client.get("/user", headers={"Authorization": f"Bearer {PERSONAL_TOKEN}"}).json()
        assert (person["login"], person["type"]) == ("octocat", "User")
        for i in range(150):
            api.add_comment(1, f"c{i}")
        first = client.get(f"{issues}/1/comments?per_page=500")
        assert len(first.json()) == 100 and 'rel="next"' in first.headers["Link"]  # at most 100 a page
