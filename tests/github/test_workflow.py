"""GitHub Actions integration: workflow commands, runner files, and the PR comment over HTTP."""

from __future__ import annotations

import json

import pytest

from reconciler import github
from reconciler.github import _comment as github_comment
from reconciler.github import _report as github_report
from tests.helpers.github import ACTIONS_BOT, READ_ONLY_TOKEN, GitHubAPI, parse_output_file


@pytest.fixture
def api():
    server = GitHubAPI()
    server.start()
    yield server
    server.stop()


def test_escaping_follows_the_runner_rules():
    assert github.escape_data("100%\r\nnext") == "100%25%0D%0Anext"
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = github.command("error", "bad: value, 50%\nsecond", file="dir/a,b:c.yaml", line=3, col=7)
    assert line == "::error file=dir/a%2Cb%3Ac.yaml,line=3,col=7::bad: value, 50%25%0Asecond"
    assert github.command("warning", "plain") == "::warning::plain"


def test_annotations_errors_first_relative_to_the_workspace(tmp_path):
    plan = {
        "warnings": [
            "production targets expire in 12 days",
            {"file": str(tmp_path / "w.yaml"), "line": 2, "message": "w"},
        ],
        "errors": [{"file": str(tmp_path / "releases/a.yaml"), "line": 4, "col": 9, "message": "unknown key: foo"}],
    }
    lines = github.annotation_commands(plan, str(tmp_path))
    assert lines == [
        "::error file=releases/a.yaml,line=4,col=9::unknown key: foo",
        "::warning::production targets expire in 12 days",
        "::warning file=w.yaml,line=2::w",
    ]
    # outside the workspace, or with no workspace, the path is left as reconcile wrote it
    assert github.workspace_path("/elsewhere/a.yaml", str(tmp_path)) == "/elsewhere/a.yaml"
    assert github.workspace_path("rel/a.yaml", None) == "rel/a.yaml"


def test_mask_registers_a_wrapped_secret_line_by_line():
    secret = "QUJD" * 19 + "\n" + "REVG" * 5 + "\n"
    assert github.mask_lines(secret) == [
        "::add-mask::" + secret.strip().replace("\n", "%0A"),
        "::add-mask::" + "QUJD" * 19,
        "::add-mask::" + "REVG" * 5,
    ]
    assert github.mask_lines("") == []


def test_outputs_use_a_heredoc_with_a_delimiter_not_in_the_value(tmp_path):
    out = tmp_path / "out"
    value = 'line one\nEOF\nghadelimiter_x\n{"a": 1}'
    github.write_outputs({"changes": "true", "plan-json": value}, out)
    text = out.read_text()
    assert text.startswith("changes=true\nplan-json<<ghadelimiter_")
    assert parse_output_file(text) == {"changes": "true", "plan-json": value}


def test_trim_markdown_closes_open_blocks_and_adds_the_note():
    text = "# Plan\n<details><summary>ops</summary>\n\n```diff\n" + "+ line\n" * 1000 + "```\n</details>\n"
    trimmed = github.trim_markdown(text, 600, "NOTE")
    assert len(trimmed) <= 600
    assert trimmed.endswith("```\n</details>\n\nNOTE\n")
    assert trimmed.count("```") == 2
    assert github.trim_markdown("short\n", 600, "NOTE") == "short\n"


def test_summary_stays_under_one_mebibyte_counting_what_the_step_wrote(tmp_path):
    summary = tmp_path / "summary"
    summary.write_text("x" * 1000 + "\n")
    github.append_summary("## Plan\n" + "é row of the plan\n" * 100_000, summary)
    data = summary.read_bytes()
    assert len(data) <= github.SUMMARY_LIMIT
    assert data.decode().rstrip().endswith("The full plan is in the `plan-json` output._")
    small = tmp_path / "small"
    github.append_summary("## Plan\nNo changes.", small)
    assert small.read_text() == "## Plan\nNo changes.\n"


def test_cli_outputs_annotate_and_mask(tmp_path, monkeypatch, capsys):
    plan = {"changes": True, "operations": [], "errors": [{"file": "a.yaml", "line": 1, "col": 2, "message": "m"}]}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    out = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)
    assert github.main(["outputs", "--plan-json", str(plan_file)]) == 0
    outputs = parse_output_file(out.read_text())
    assert outputs["changes"] == "true"
    assert json.loads(outputs["plan-json"]) == plan
    assert outputs["plan-file"] == str(plan_file)
    assert github.main(["annotate", "--plan-json", str(plan_file)]) == 0
    monkeypatch.setenv("SECRET_VALUE", "s3cr3t")
    assert github.main(["mask", "SECRET_VALUE", "UNSET_VARIABLE"]) == 0
    assert capsys.readouterr().out == "::error file=a.yaml,line=1,col=2::m\n::add-mask::s3cr3t\n"


LOG = """Using the embedded local factory at /tmp/f (created the demo factory).
releases/a.yaml:3:5: unknown key 'phaze'
releases/b.yaml:1:1: warning: factory 'acme' skipped
error: cannot reach https://api.foundries.io: connection refused
"""


def test_a_run_that_printed_no_plan_is_reported_from_its_log(tmp_path, monkeypatch, capsys):
    (tmp_path / "plan.json").write_text("")
    (tmp_path / "reconcile.log").write_text(LOG)
    report = github_report.read_report(
        str(tmp_path / "plan.json"), str(tmp_path / "missing.md"), str(tmp_path / "reconcile.log")
    )
    assert report.plan is None
    assert report.problems == {
        "errors": [
            {"file": "releases/a.yaml", "line": 3, "col": 5, "message": "unknown key 'phaze'"},
            {"message": "cannot reach https://api.foundries.io: connection refused"},
        ],
        "warnings": [{"file": "releases/b.yaml", "line": 1, "col": 1, "message": "factory 'acme' skipped"}],
    }
    assert github_report.report_markdown(report) == (
        "### Wave plan: reconcile failed\n\n- `releases/a.yaml:3:5: unknown key 'phaze'`\n"
        "- `cannot reach https://api.foundries.io: connection refused`\n"
    )
    assert github_report.plan_outputs(report, "plan.json") == {"changes": "false", "plan-json": "", "plan-file": ""}
    assert (
        github.main(["annotate", "--plan-json", str(tmp_path / "plan.json"), "--log", str(tmp_path / "reconcile.log")])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "::error file=releases/a.yaml,line=3,col=5::unknown key 'phaze'",
        "::error::cannot reach https://api.foundries.io: connection refused",
        "::warning file=releases/b.yaml,line=1,col=1::factory 'acme' skipped",
    ]


def test_summary_has_the_plan_then_the_log_that_cannot_break_out_of_its_block(tmp_path):
    log = "a ``` b ```` c\n"
    report = github_report.Report({"changes": False}, "### Wave plan\nNo changes.\n", log)
    assert github_report.summary_markdown(report) == (
        "### Wave plan\nNo changes.\n\n<details><summary>reconcile log</summary>\n\n"
        "`````text\na ``` b ```` c\n`````\n\n</details>\n"
    )
    assert github_report.summary_markdown(report, heading="Apply: done", log_first=True) == (
        "## Apply: done\n\n<details open><summary>reconcile log</summary>\n\n"
        "`````text\na ``` b ```` c\n`````\n\n</details>\n\n### Wave plan\nNo changes.\n"
    )
    silent = github_report.Report(None, "", "")
    assert "reconcile printed no plan; its log:\n\n```text\n(no output)\n```" in github_report.report_markdown(silent)


def test_cli_errors_are_one_annotation_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (tmp_path / "plan.md").write_text("# Plan\n")
    assert (
        github.main(["summary", "--plan-json", str(tmp_path / "none.json"), "--markdown", str(tmp_path / "plan.md")])
        == 1
    )
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert github.main(["annotate", "--plan-json", str(tmp_path / "bad.json")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "::error::GITHUB_STEP_SUMMARY is not set: this command runs inside a GitHub Actions step",
        f"::error::{tmp_path}/bad.json: not a plan: expected the JSON object reconcile --format json prints",
    ]


def test_pull_request_number_from_event_payloads():
    assert github_comment.pull_request_number({"pull_request": {"number": 7}}) == 7
    assert github_comment.pull_request_number({"issue": {"number": 8, "pull_request": {"url": "x"}}}) == 8
    assert github_comment.pull_request_number({"issue": {"number": 9}}) is None
    assert github_comment.pull_request_number({"ref": "refs/heads/main"}) is None


def _env(api: GitHubAPI, tmp_path, event: dict, token: str = "ghs_writer") -> dict:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event))
    return {
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": api.repository,
        "GITHUB_TOKEN": token,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "1",
    }


def test_comment_is_created_then_updated_in_place(api, tmp_path):
    env = _env(api, tmp_path, {"pull_request": {"number": 5}})
    api.add_comment(5, "LGTM")
    [first] = github_comment.post_plan_comment("## Plan\n1 to init\n", "acme", env)
    assert first.startswith("::notice::plan comment created on pull request #5")
    [second] = github_comment.post_plan_comment("## Plan\nNo changes.\n", "acme", env)
    assert second.startswith("::notice::plan comment updated on pull request #5")
    [third] = github_comment.post_plan_comment("## Plan\nNo changes.\n", "acme", env)
    assert third.startswith("::notice::plan comment unchanged")
    bodies = [c["body"] for c in api.comments[5]]
    assert bodies == ["LGTM", "<!-- reconcile-plan:acme -->\n## Plan\nNo changes.\n"]
    assert [(r.method, r.authorization) for r in api.writes()] == [
        ("POST", "Bearer ghs_writer"),
        ("PATCH", "Bearer ghs_writer"),
    ]
    # another factory's plan gets its own comment
    github_comment.post_plan_comment("## Plan\n", "staging", env)
    assert len(api.comments[5]) == 3


def test_comment_found_on_a_later_page(api, tmp_path):
    api.page_size = 2
    for i in range(5):
        api.add_comment(3, f"comment {i}")
    api.add_comment(3, "<!-- reconcile-plan:acme -->\nold plan", user=ACTIONS_BOT)
    api.add_comment(3, "trailing")
    env = _env(api, tmp_path, {"pull_request": {"number": 3}})
    [line] = github_comment.post_plan_comment("new plan\n", "acme", env)
    assert "updated" in line
    pages = [r for r in api.requests if r.method == "GET" and r.path.endswith("/comments")]
    assert len(pages) == 4
    assert api.comments[3][5]["body"] == "<!-- reconcile-plan:acme -->\nnew plan\n"


def test_long_plan_is_trimmed_with_a_link_to_the_job_summary(api, tmp_path):
    env = _env(api, tmp_path, {"pull_request": {"number": 1}})
    markdown = "## Plan\n" + "".join(f"- rollout phase-{i}\n" for i in range(10_000))
    github_comment.post_plan_comment(markdown, "acme", env)
    body = api.comments[1][0]["body"]
    assert len(body) <= github_comment.COMMENT_LIMIT
    assert body.endswith("[the job summary](https://github.example/acme/releases/actions/runs/42/attempts/1)._\n")


def test_fork_token_refusal_is_a_warning_and_never_shows_the_token(api, tmp_path):
    env = _env(api, tmp_path, {"pull_request": {"number": 2}}, token=READ_ONLY_TOKEN)
    [line] = github_comment.post_plan_comment("## Plan\n", "acme", env)
    assert line.startswith("::warning::could not comment on pull request #2: Resource not accessible")
    assert READ_ONLY_TOKEN not in line
    assert api.comments.get(2) is None


def test_no_pull_request_or_no_token_skips_the_comment(api, tmp_path):
    env = _env(api, tmp_path, {"ref": "refs/heads/main"})
    assert github_comment.post_plan_comment("x", "acme", env) == ["::notice::not a pull request: no plan comment"]
    env = _env(api, tmp_path, {"pull_request": {"number": 2}}, token="")
    [line] = github_comment.post_plan_comment("x", "acme", env)
    assert line.startswith("::warning::no GitHub token")
    assert api.requests == []


def test_unreachable_api_is_a_warning(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 2}}))
    env = {
        "GITHUB_API_URL": "http://127.0.0.1:9",
        "GITHUB_REPOSITORY": "a/b",
        "GITHUB_TOKEN": "t",
        "GITHUB_EVENT_PATH": str(event),
    }
    assert github_comment.post_plan_comment("x", "acme", env) == [
        "::warning::could not comment on pull request #2: ConnectError; the plan is in the job summary"
    ]


def test_cli_plan_comment_is_keyed_by_the_configured_factory(api, tmp_path, monkeypatch, capsys):
    for key, value in _env(api, tmp_path, {"pull_request": {"number": 4}}).items():
        monkeypatch.setenv(key, value)
    (tmp_path / "plan.json").write_text(json.dumps({"factory": "demo", "changes": False}))
    (tmp_path / "plan.md").write_text("## Plan\nNo changes.\n")
    args = ["plan-comment", "--plan-json", str(tmp_path / "plan.json"), "--markdown", str(tmp_path / "plan.md")]
    assert github.main(args) == 0
    assert github.main([*args, "--factory", "acme"]) == 0
    assert [c["body"].split("\n")[0] for c in api.comments[4]] == [
        "<!-- reconcile-plan:default -->",
        "<!-- reconcile-plan:acme -->",
    ]
    assert "ghs_writer" not in capsys.readouterr().out
