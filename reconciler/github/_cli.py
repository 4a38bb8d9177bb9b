"""``python -m reconciler.github``: what the action's ``run:`` steps call between ``reconcile`` runs.

The composite action (``action.yml``) runs ``reconcile`` to get a plan as JSON and Markdown, then
calls these subcommands to hand those files to GitHub: the job summary, step outputs, ``::error``
annotations on manifest lines, secret masks and the pull-request comment. Doing this in Python
rather than in shell keeps the escaping rules, the size caps and the heredoc delimiters in one
tested place (``_workflow``).

Secrets are read from the environment only, never from arguments (arguments show up in process
listings and ``set -x`` traces), and are never printed except inside ``::add-mask::``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import click

from reconciler.errors import UserError
from reconciler.github._report import plan_outputs, read_report, report_markdown, summary_markdown
from reconciler.github._workflow import (
    annotation_commands,
    append_summary,
    command,
    mask_lines,
    runner_file,
    write_outputs,
)

_PLAN_JSON = click.option("--plan-json", required=True, help="what reconcile --format json printed")
_MARKDOWN = click.option("--markdown", help="what reconcile --format markdown printed")
_LOG = click.option("--log", help="reconcile's stderr, for problems when it printed no plan")


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


@click.group(help="Hand reconcile's plan to GitHub Actions: summary, outputs, annotations, masks, PR comment.")
def cli() -> None:
    pass


@cli.command(help="Append the plan (or the failure) and the log to the job summary, max 1 MiB.")
@_PLAN_JSON
@_MARKDOWN
@_LOG
@click.option("--heading", help="a heading above the plan")
@click.option("--log-first", is_flag=True, help="show the log expanded, above the plan (apply)")
def summary(plan_json: str, markdown: str | None, log: str | None, heading: str | None, log_first: bool) -> None:
    report = read_report(plan_json, markdown, log)
    append_summary(summary_markdown(report, heading, log_first), runner_file("GITHUB_STEP_SUMMARY"))


@cli.command(help="Set the changes, plan-json and plan-file outputs.")
@_PLAN_JSON
def outputs(plan_json: str) -> None:
    write_outputs(plan_outputs(read_report(plan_json), plan_json), runner_file("GITHUB_OUTPUT"))


@cli.command(help="Print ::error/::warning annotations for the problems found.")
@_PLAN_JSON
@_LOG
def annotate(plan_json: str, log: str | None) -> None:
    report = read_report(plan_json, log=log)
    _print(annotation_commands(report.problems, os.environ.get("GITHUB_WORKSPACE")))


@cli.command(help="Print ::add-mask:: for the values of environment variables.")
@click.argument("variables", nargs=-1, required=True, metavar="VARIABLE...")
def mask(variables: tuple[str, ...]) -> None:
    for variable in variables:
        _print(mask_lines(os.environ.get(variable, "")))


@cli.command("plan-comment", help="Create or update the pull request's plan comment.")
@_PLAN_JSON
@_MARKDOWN
@_LOG
@click.option(
    "--factory", default="default", show_default=True, help="the action's factory input: one comment per factory"
)
def plan_comment(plan_json: str, markdown: str | None, log: str | None, factory: str) -> None:
    from reconciler.github._comment import post_plan_comment  # httpx: only when commenting

    report = read_report(plan_json, markdown, log)
    _print(post_plan_comment(report_markdown(report), factory, dict(os.environ)))


@cli.command(
    "stuck-issues",
    help="Fail on stuck waves: an ::error each, and one GitHub issue per stuck wave, "
    "updated in place and closed when the wave moves again.",
)
@_PLAN_JSON
@click.option("--no-issues", is_flag=True, help="annotate and fail only; leave the issues alone")
def stuck_issues(plan_json: str, no_issues: bool) -> None:
    from reconciler.github._issues import post_stuck_issues, stuck_annotations, stuck_waves  # httpx: only here

    report = read_report(plan_json)
    if report.plan is None:
        _print([command("notice", "reconcile printed no plan: the stuck-wave issues are left as they are")])
        return
    if not no_issues:
        _print(post_stuck_issues(report.plan, dict(os.environ)))
    stuck = stuck_waves(report.plan)
    _print(stuck_annotations(stuck, os.environ.get("GITHUB_WORKSPACE")))
    if stuck:
        raise click.exceptions.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a refusal is one ``::error::`` line and exit 1, a usage error exit 2."""
    try:
        # Without standalone mode click returns an Exit's code (stuck-issues' 1) instead of raising it.
        code = cli.main(args=argv, prog_name="python -m reconciler.github", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UserError as exc:
        click.echo(command("error", str(exc)))
        return 1
    return code if isinstance(code, int) else 0
