"""What one ``reconcile`` run in the action left behind, turned into what GitHub shows.

The action's reconcile step saves stdout (the plan as JSON or Markdown) and stderr (the log)
to files. Usually the plan is there. When reconcile stops before planning (a manifest that
does not validate, an unreachable backend) only the log says why, so the report falls back
to the problems it finds there: the job summary, the PR comment and the annotations then
still tell a reviewer what is wrong and where.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from msgspec import Struct

from reconciler.errors import UserError
from reconciler.github._workflow import Json
from reconciler.safetext import md_code, printable

# How reconcile prints a problem on stderr (errors.Problem.__str__): file:line:col: [warning: ]message
# The file name may hold colons (``::error::x.yaml`` prints as ``./::error::x.yaml``): it ends at the
# first ``:line:col: ``.
_PROBLEM = re.compile(r"^(?P<file>\S.*?):(?P<line>\d+):(?P<col>\d+): (?P<warning>warning: )?(?P<message>.+)$")


def problems_from_log(log: str) -> dict[str, list[Json]]:
    """Errors and warnings from reconcile's stderr, for runs that ended before a plan existed.

    A manifest that does not validate, or a backend that cannot be reached, stops reconcile
    before it prints a plan; its messages are then the only account of what went wrong.
    """
    found: dict[str, list[Json]] = {"errors": [], "warnings": []}
    for line in log.splitlines():
        m = _PROBLEM.match(line)
        if m:
            key = "warnings" if m["warning"] else "errors"
            found[key].append(
                {"file": m["file"], "line": int(m["line"]), "col": int(m["col"]), "message": m["message"]}
            )
        elif line.startswith("error: "):
            found["errors"].append({"message": line[len("error: ") :]})
        elif line.startswith("warning: "):
            found["warnings"].append({"message": line[len("warning: ") :]})
        elif line.startswith("... and "):  # errors.more_line: the count of problems not printed
            found["warnings" if line.split(" (")[0].endswith(" warnings") else "errors"].append({"message": line})
    return found


class Report(Struct, frozen=True):
    """What one reconcile run left: its plan (None if it failed before planning), Markdown and log."""

    plan: Json | None
    markdown: str
    log: str

    @property
    def problems(self) -> Json:
        return self.plan if self.plan is not None else problems_from_log(self.log)


def _read_optional(path: str | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def read_report(plan_json: str | None, markdown: str | None = None, log: str | None = None) -> Report:
    """Read the files the action's reconcile step wrote; missing or empty ones mean "no output"."""
    text = _read_optional(plan_json)
    plan = None
    if text.strip():
        try:
            plan = json.loads(text)
        except ValueError:
            plan = None
        if not isinstance(plan, dict):
            raise UserError(f"{plan_json}: not a plan: expected the JSON object reconcile --format json prints")
    return Report(plan, _read_optional(markdown), _read_optional(log))


def _fenced(text: str, info: str = "text") -> str:
    """A code block that the text cannot close early, however many backticks it holds, with control
    and bidi characters shown as escapes (a log may hold what a hostile manifest or server sent)."""
    text = printable(text.rstrip(), newlines=True)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}\n"


def report_markdown(report: Report) -> str:
    """The plan as Markdown, or, when reconcile stopped before planning, what stopped it."""
    if report.markdown.strip():
        return report.markdown
    problems = report.problems
    lines = ["### Wave plan: reconcile failed", ""]
    for item in problems.get("errors") or []:
        if not isinstance(item, dict):
            item = {"message": str(item)}
        where = f"{item['file']}:{item.get('line', 1)}:{item.get('col', 1)}: " if item.get("file") else ""
        message = str(item.get("message", ""))
        lines.append(f"- {md_code(where + message)}")
    if not problems.get("errors"):
        lines += ["reconcile printed no plan; its log:", "", _fenced(report.log or "(no output)")]
    return "\n".join(lines) + "\n"


def summary_markdown(report: Report, heading: str | None = None, log_first: bool = False) -> str:
    """The job summary: an optional heading, the plan (or failure) and reconcile's log.

    A plan's log is detail, folded below it. An apply's log is the record of what was done,
    so ``log_first`` shows it unfolded above the plan of what remains.
    """
    log = ""
    if report.log.strip():
        log = f"<details{' open' if log_first else ''}><summary>reconcile log</summary>\n\n{_fenced(report.log)}\n</details>\n"
    body = report_markdown(report)
    sections = [body] if not log else [log, body] if log_first else [body, log]
    return (f"## {heading}\n\n" if heading else "") + "\n".join(sections)


def plan_outputs(report: Report, plan_file: str) -> dict[str, str]:
    """The action's outputs: whether operations were ready (to apply, or applied), and the plan."""
    plan = report.plan or {}
    return {
        "changes": "true" if plan.get("changes") else "false",
        "plan-json": json.dumps(plan, separators=(",", ":"), sort_keys=True) if report.plan is not None else "",
        "plan-file": os.path.abspath(plan_file) if report.plan is not None else "",
    }
