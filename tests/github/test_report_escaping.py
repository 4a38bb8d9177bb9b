"""The Action's failure report, annotations and job summary with hostile file names, keys and messages
(issue 17, item 4): nothing breaks out of a code span, forges a workflow command or colours the log."""

from __future__ import annotations

import json
import os
import re

from reconciler import github
from reconciler.errors import MAX_SHOWN
from reconciler.github import _report as github_report
from reconciler.github._workflow import annotation_commands
from reconciler.safetext import unsafe_character
from tests.helpers.e2e import reconcile
from tests.helpers.markdown import markdown_syntax

WAVE = "apiVersion: reconciler/v1\nkind: Wave\nname: v46\ntarget: 46\ntag: production\n"
ANSI = "\x1b[31mred\x1b]0;pwned\x07"


def hostile_log(tmp_path, monkeypatch) -> str:
    """What reconcile --check really prints on stderr for a release directory a pull request filled."""
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "a`b``c.yaml").write_text(WAVE + "x``y: 1\n")
    (releases / "n\n::warning file=forged.yaml::owned.yaml").write_text(WAVE + "<img src=x>: 1\n")
    (releases / "rtl.yaml").write_text(WAVE + "group\u202e: 1\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile("--check", "releases")
    assert code == 1 and out == ""
    return err


def test_the_failure_report_keeps_every_problem_in_its_code_span(tmp_path, monkeypatch):
    log = hostile_log(tmp_path, monkeypatch)
    (tmp_path / "reconcile.log").write_text(log)
    report = github_report.read_report(str(tmp_path / "plan.json"), None, str(tmp_path / "reconcile.log"))
    markdown = github_report.report_markdown(report)
    bullets = [line for line in markdown.splitlines() if line.startswith("- ")]
    assert len(bullets) == 3
    for line in bullets:
        assert markdown_syntax(line) == "- ", line
        assert unsafe_character(line) is None
    assert "releases/a`b``c.yaml:6:1: unknown key 'x``y'" in markdown
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in markdown and "\u202e" not in markdown


def test_annotations_from_the_log_are_one_command_each_with_escaped_properties(tmp_path, monkeypatch, capsys):
    log = hostile_log(tmp_path, monkeypatch)
    (tmp_path / "reconcile.log").write_text(log)
    (tmp_path / "plan.json").write_text("")
    assert (
        github.main(["annotate", "--plan-json", str(tmp_path / "plan.json"), "--log", str(tmp_path / "reconcile.log")])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("::error file=") for line in lines)
    forged = next(line for line in lines if "forged" in line)
    # The name's newline reached the log as the text \u000a; its colons cannot end the property.
    assert forged.startswith(
        "::error file=releases/n\\u000a%3A%3Awarning file=forged.yaml%3A%3Aowned.yaml,line=6,col=1::"
    )


def test_annotations_of_a_plan_escape_controls_newlines_and_commas():
    problems = {
        "errors": [{"file": "a\n::warning::b.yaml", "line": 1, "col": 2, "message": f"bad {ANSI}\n::error::x"}],
        "warnings": [f"\u202e{ANSI}"],
    }
    lines = annotation_commands(problems)
    assert lines == [
        "::error file=a\\u000a%3A%3Awarning%3A%3Ab.yaml,line=1,col=2::bad \\u001b[31mred\\u001b]0;pwned\\u0007%0A::error::x",
        "::warning::\\u202e\\u001b[31mred\\u001b]0;pwned\\u0007",
    ]
    assert all(unsafe_character(line) is None for line in lines)


def test_annotations_stop_at_50_of_each_kind_with_a_count(tmp_path):
    problems = {"errors": [{"file": "w.yaml", "line": n, "col": 1, "message": "bad"} for n in range(1, 1001)]}
    lines = annotation_commands(problems)
    assert len(lines) == MAX_SHOWN + 1
    assert lines[0] == "::notice::950 more errors are not annotated; see the job summary"
    assert lines[1] == "::error file=w.yaml,line=1,col=1::bad"


def test_a_flood_in_the_log_is_reported_with_its_count(tmp_path, monkeypatch):
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "w.yaml").write_text(WAVE + "".join(f"k{n}: 1\n" for n in range(500)))
    monkeypatch.chdir(tmp_path)
    _, _, err = reconcile("--check", "releases")
    problems = github_report.problems_from_log(err)
    assert len(problems["errors"]) == MAX_SHOWN + 1
    assert problems["errors"][-1] == {"message": "... and 450 more errors (the first 50 are shown)"}


def test_the_summary_log_block_shows_controls_as_escapes(tmp_path):
    report = github_report.Report(None, "", f"warning: {ANSI}\u202e ```` x\nerror: y\n")
    summary = github_report.summary_markdown(report)
    assert unsafe_character(summary, lines=True) is None
    fence = re.search(r"^(`{3,})text$", summary, re.M).group(1)
    assert len(fence) == 5 and summary.count(f"\n{fence}\n") == 1


def test_a_plan_json_with_hostile_errors_is_reported_in_code_spans(tmp_path, monkeypatch, capsys):
    plan = {
        "changes": False,
        "errors": [{"file": "a`.yaml", "line": 1, "col": 1, "message": "``` <img src=x> |"}],
        "warnings": [],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    report = github_report.read_report(str(tmp_path / "plan.json"))
    [bullet] = [line for line in github_report.report_markdown(report).splitlines() if line.startswith("- ")]
    assert bullet == "- ````a`.yaml:1:1: ``` <img src=x> |````"
    assert markdown_syntax(bullet) == "- "
    summary_file = tmp_path / "summary.md"
    monkeypatch.setitem(os.environ, "GITHUB_STEP_SUMMARY", str(summary_file))
    assert github.main(["summary", "--plan-json", str(tmp_path / "plan.json")]) == 0
    assert bullet in summary_file.read_text()


def test_a_stuck_wave_issue_keeps_the_factorys_words_in_code_spans():
    """A stuck wave's reasons quote the factory (its error messages, rollout-by): nothing in them acts."""
    from reconciler.github._issues import StuckWave, issue_body

    stuck = StuckWave(
        "v46",
        "releases/a`b.yaml",
        3,
        [f"drift: phase 1 rolled out by <img src=x> ``` | {ANSI}\n::warning::forged \u202e"],
    )
    body = issue_body("acme", stuck, "https://github.example/acme/releases/actions/runs/5")
    lines = body.splitlines()
    assert lines[0] == "<!-- reconcile-stuck:acme:v46 -->"
    for line in lines[1:]:
        assert unsafe_character(line) is None and not line.startswith("::"), line
        syntax = markdown_syntax(line)
        assert "<" not in syntax and "`" not in syntax, line
    assert "- ````drift: phase 1 rolled out by <img src=x> ``` | \\u001b[31mred" in body
    assert "Manifest: ``releases/a`b.yaml, line 3``." in body
