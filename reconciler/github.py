"""GitHub Actions integration: what the action's ``run:`` steps call between ``reconcile`` runs.

The composite action (``action.yml``) runs ``reconcile`` to get a plan as JSON and Markdown,
then calls ``python -m reconciler.github <subcommand>`` to hand those files to GitHub: the job
summary, step outputs, ``::error`` annotations on manifest lines, secret masks and the
pull-request comment (``github_comment.py``). Doing this in Python rather than in shell keeps
the escaping rules, the size caps and the heredoc delimiters in one tested place.

Secrets are read from the environment only, never from arguments (arguments show up in
process listings and ``set -x`` traces), and are never printed except inside ``::add-mask::``.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from reconciler.errors import UserError
from reconciler.github_report import (
    plan_outputs,
    read_report,
    report_markdown,
    summary_markdown,
)

# The runner refuses a step summary over 1024k ("upload aborted, supports content up to a
# size of 1024k"); the cap counts what the step already wrote to the file.
SUMMARY_LIMIT = 1024 * 1024


def escape_data(value: str) -> str:
    """Escape a workflow command's message, as the runner's ``escapeData`` does."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a workflow command's property value: ``:`` and ``,`` delimit properties."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    """Format one workflow command line, e.g. ``::error file=a.yml,line=3::bad``."""
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v not in (None, ""))
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def mask_lines(value: str) -> list[str]:
    """``::add-mask::`` commands hiding a secret, line by line as well as whole.

    The runner masks a registered value only where it appears in full on one log line, so a
    multi-line secret (a base64 archive wrapped at 76 columns) needs each line registered.
    """
    parts = [value.strip()] + [line.strip() for line in value.splitlines()]
    seen: dict[str, None] = dict.fromkeys(p for p in parts if p)
    return [f"::add-mask::{escape_data(p)}" for p in seen]


def workspace_path(file: str, workspace: str | None) -> str:
    """The path GitHub needs for an annotation: relative to the checkout (``GITHUB_WORKSPACE``)."""
    if not workspace:
        return file
    absolute = os.path.abspath(file)
    root = os.path.abspath(workspace)
    if absolute == root or not absolute.startswith(root + os.sep):
        return file
    return os.path.relpath(absolute, root).replace(os.sep, "/")


def annotations(problems: dict, workspace: str | None = None) -> list[str]:
    """Annotation commands for the errors, then the warnings, of a plan (or of ``problems_from_log``).

    GitHub shows only the first few annotations of each kind per step, so errors come first;
    the full list is in the job summary.
    """
    lines = []
    for level, key in (("error", "errors"), ("warning", "warnings")):
        for item in problems.get(key) or []:
            if isinstance(item, str):
                lines.append(command(level, item))
                continue
            file = item.get("file")
            lines.append(
                command(
                    level,
                    item.get("message", ""),
                    file=workspace_path(file, workspace) if file else None,
                    line=item.get("line"),
                    col=item.get("col"),
                )
            )
    return lines


def trim_markdown(text: str, limit: int, note: str, size: Callable[[str], int] = len) -> str:
    """Cut Markdown to fit ``limit`` (as measured by ``size``) at a line boundary, then add ``note``.

    A cut can leave a code fence or a ``<details>`` block open, which would swallow the note
    and everything GitHub renders after it, so those are closed before the note.
    """
    if size(text) <= limit:
        return text
    lines = text.splitlines(keepends=True)
    # Room for the closers a cut may need (one fence, a few </details>) and the note.
    reserve = size(note) + size("\n```\n") + 16 * size("</details>\n") + 2
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + size(line) > limit - reserve:
            break
        kept.append(line)
        used += size(line)
    closers = []
    if sum(1 for line in kept if line.lstrip().startswith("```")) % 2:
        closers.append("```\n")
    opened = sum(line.count("<details") for line in kept) - sum(line.count("</details>") for line in kept)
    closers.extend("</details>\n" for _ in range(min(max(opened, 0), 16)))
    body = "".join(kept)
    if body and not body.endswith("\n"):
        body += "\n"
    return body + "".join(closers) + "\n" + note + "\n"


def run_url(env: dict[str, str]) -> str | None:
    """Link to this workflow run, where the job summary is; None outside Actions."""
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repo, run = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if not (repo and run):
        return None
    attempt = env.get("GITHUB_RUN_ATTEMPT")
    return f"{server}/{repo}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")


def _runner_file(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        raise UserError(f"{variable} is not set: this command runs inside a GitHub Actions step")
    return Path(value)


def append_summary(markdown: str, summary_file: Path) -> None:
    """Append Markdown to the step summary, trimmed so the step stays under the runner's cap."""
    existing = summary_file.stat().st_size if summary_file.exists() else 0
    note = "_The rest is cut: a job summary holds at most 1 MiB. The full plan is in the `plan-json` output._"
    text = trim_markdown(markdown, SUMMARY_LIMIT - existing, note, size=lambda s: len(s.encode("utf-8")))
    with summary_file.open("a", encoding="utf-8") as out:
        out.write(text if text.endswith("\n") else text + "\n")


def format_output(name: str, value: str) -> str:
    """One ``$GITHUB_OUTPUT`` entry; multi-line values use a heredoc with an unguessable delimiter.

    A fixed delimiter such as ``EOF`` would let a value that contains it (a manifest quoted in
    a plan) end the block early and inject further outputs.
    """
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    while delimiter in value:
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def write_outputs(outputs: dict[str, str], output_file: Path) -> None:
    with output_file.open("a", encoding="utf-8") as out:
        for name, value in outputs.items():
            out.write(format_output(name, value))


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(line, flush=True)


def _cmd_summary(args: argparse.Namespace) -> int:
    report = read_report(args.plan_json, args.markdown, args.log)
    append_summary(summary_markdown(report, args.heading, args.log_first), _runner_file("GITHUB_STEP_SUMMARY"))
    return 0


def _cmd_outputs(args: argparse.Namespace) -> int:
    write_outputs(plan_outputs(read_report(args.plan_json), args.plan_json), _runner_file("GITHUB_OUTPUT"))
    return 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    report = read_report(args.plan_json, log=args.log)
    _print(annotations(report.problems, os.environ.get("GITHUB_WORKSPACE")))
    return 0


def _cmd_mask(args: argparse.Namespace) -> int:
    for variable in args.variables:
        _print(mask_lines(os.environ.get(variable, "")))
    return 0


def _cmd_plan_comment(args: argparse.Namespace) -> int:
    from reconciler import github_comment

    report = read_report(args.plan_json, args.markdown, args.log)
    _print([github_comment.post_plan_comment(report_markdown(report), args.factory, dict(os.environ))])
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reconciler.github", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def files(p: argparse.ArgumentParser, markdown: bool = True, log: bool = True) -> None:
        p.add_argument("--plan-json", required=True, help="what reconcile --format json printed")
        if markdown:
            p.add_argument("--markdown", help="what reconcile --format markdown printed")
        if log:
            p.add_argument("--log", help="reconcile's stderr, for problems when it printed no plan")

    p = sub.add_parser("summary", help="append the plan (or the failure) and the log to the job summary, max 1 MiB")
    files(p)
    p.add_argument("--heading", help="a heading above the plan")
    p.add_argument("--log-first", action="store_true", help="show the log expanded, above the plan (apply)")
    p.set_defaults(run=_cmd_summary)
    p = sub.add_parser("outputs", help="set the changes, plan-json and plan-file outputs")
    files(p, markdown=False, log=False)
    p.set_defaults(run=_cmd_outputs)
    p = sub.add_parser("annotate", help="print ::error/::warning annotations for the problems found")
    files(p, markdown=False)
    p.set_defaults(run=_cmd_annotate)
    p = sub.add_parser("mask", help="print ::add-mask:: for the values of environment variables")
    p.add_argument("variables", nargs="+", metavar="VARIABLE")
    p.set_defaults(run=_cmd_mask)
    p = sub.add_parser("plan-comment", help="create or update the pull request's plan comment")
    files(p)
    p.add_argument("--factory", default="default",
                   help="the action's factory input: one comment per factory (default: %(default)s)")
    p.set_defaults(run=_cmd_plan_comment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(command("error", str(exc)), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
