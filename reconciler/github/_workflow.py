"""GitHub Actions workflow commands, step outputs, the job summary and their escaping: a leaf module.

Everything the runner parses from our output or files is built here, so the escaping rules, the size
caps and the heredoc delimiters live in one tested place and nothing else in the package repeats them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.errors import MAX_SHOWN, UserError
from reconciler.safetext import printable

# The runner refuses a step summary over 1024k ("upload aborted, supports content up to a
# size of 1024k"); the cap counts what the step already wrote to the file.
SUMMARY_LIMIT = 1024 * 1024

Json = dict[str, Any]  # a JSON object: a plan (schemas/plan.schema.json), a webhook event, a REST answer


def escape_data(value: str) -> str:
    """Escape a workflow command's message, as the runner's ``escapeData`` does."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a workflow command's property value: ``:`` and ``,`` delimit properties."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    """Format one workflow command line, e.g. ``::error file=a.yml,line=3::bad``.

    Beyond the runner's own escaping, control and bidi characters (ANSI colours, which the log
    viewer renders) become visible ``\\u`` escapes; a message keeps its line feeds (the runner
    shows ``%0A`` as a new line of the annotation), a property is one line.
    """
    props = ",".join(f"{k}={escape_property(printable(str(v)))}" for k, v in properties.items() if v not in (None, ""))
    return f"::{name}{' ' + props if props else ''}::{escape_data(printable(message, newlines=True))}"


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


def annotation_commands(problems: Json, workspace: str | None = None) -> list[str]:
    """Annotation commands for the errors, then the warnings, of a plan (or of ``problems_from_log``).

    GitHub shows only the first few annotations of each kind per step, so errors come first, at
    most ``MAX_SHOWN`` of each kind, then a notice counting the others; the full list is in the
    job summary.
    """
    lines = []
    for level, key in (("error", "errors"), ("warning", "warnings")):
        items = problems.get(key) or []
        if len(items) > MAX_SHOWN:
            lines.append(
                command("notice", f"{len(items) - MAX_SHOWN:,} more {key} are not annotated; see the job summary")
            )
        for item in items[:MAX_SHOWN]:
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


def runner_file(variable: str) -> Path:
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
