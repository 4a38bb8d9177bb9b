"""GitHub Actions integration: job summary, annotations, step outputs, secret masks, the PR comment.

``_workflow`` (a leaf: workflow commands, outputs, summary, escaping) <- ``_api`` (the GitHub REST
client: pagination within its origin, the token's identity that decides which markers are ours) and
``_report`` (the plan files a run left) <- ``_comment`` (the pull request's plan
comment) and ``_issues`` (one issue per stuck wave) <- ``_cli`` (``python -m reconciler.github``). No
module imports one to its right.
"""

from reconciler.github._cli import main
from reconciler.github._workflow import (
    SUMMARY_LIMIT,
    annotation_commands,
    append_summary,
    command,
    escape_data,
    escape_property,
    mask_lines,
    run_url,
    trim_markdown,
    workspace_path,
    write_outputs,
)

__all__ = [
    "SUMMARY_LIMIT",
    "annotation_commands",
    "append_summary",
    "command",
    "escape_data",
    "escape_property",
    "main",
    "mask_lines",
    "run_url",
    "trim_markdown",
    "workspace_path",
    "write_outputs",
]
