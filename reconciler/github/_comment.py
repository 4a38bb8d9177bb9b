"""The pull request's plan comment: one comment per factory, created once, then edited in place.

Reviewers see the current plan at a fixed place instead of a trail of stale plans. The
comment is found again by a hidden marker, ``<!-- reconcile-plan:<factory> -->``, on its
first line, so plans for two factories in one repository keep two comments. The factory
is the one the workflow configured (``default`` when it names none), not the one a plan
reports: a run that fails before it reaches the factory must update the same comment. Only a
comment the token's own account wrote is ours (``_api`` says how that account is found): a marked
comment by anyone else is left alone with a warning, so nobody can have a plan appear under their
name, edit it afterwards, or make the step overwrite their words. Comments are listed oldest first,
and the oldest of ours is the one edited.

Commenting is a convenience: the job summary holds the plan whatever happens here. So a
refusal (a pull request from a fork gets a read-only token) is reported as a warning and the
step still succeeds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from reconciler.errors import error_text
from reconciler.github._api import (
    BODY_LIMIT,
    Identity,
    UnusableAnswer,
    check_created,
    github_client,
    not_ours,
    pages,
    token_identity,
)
from reconciler.github._workflow import Json, command, run_url, trim_markdown

if TYPE_CHECKING:
    import httpx

COMMENT_LIMIT = BODY_LIMIT


def marker(factory: str) -> str:
    return f"<!-- reconcile-plan:{factory} -->"


def pull_request_number(event: Json) -> int | None:
    """The pull request an event is about (pull_request*, or a comment on a pull request)."""
    pr = event.get("pull_request")
    if isinstance(pr, dict) and isinstance(number := pr.get("number"), int):
        return number
    issue = event.get("issue")
    if isinstance(issue, dict) and issue.get("pull_request") and isinstance(number := issue.get("number"), int):
        return number
    return None


def comment_body(markdown: str, factory: str, summary_url: str | None) -> str:
    """Marker, then the plan, trimmed with a pointer to the job summary when it is too long."""
    where = f"[the job summary]({summary_url})" if summary_url else "the job summary"
    note = f"_The plan is too long for a comment and is cut here; the full plan is in {where}._"
    head = marker(factory) + "\n"
    return head + trim_markdown(markdown, COMMENT_LIMIT - len(head), note)


def upsert_comment(
    client: httpx.Client, repository: str, number: int, body: str, identity: Identity
) -> tuple[str, int, list[str]]:
    """Edit our comment that starts with the body's marker line, or create one.

    Returns what was done (``created``, ``updated``, ``unchanged``), the comment id, and a warning
    for each marked comment someone else wrote. Every page is read (``Link: rel="next"``, a busy
    pull request has more than one), so each such comment is reported.
    """
    head = body.split("\n", 1)[0]
    ours: Json | None = None
    warnings = []
    for page in pages(client, f"/repos/{repository}/issues/{number}/comments?per_page=100"):
        for comment in page:
            if (comment.get("body") or "").split("\n", 1)[0].rstrip("\r") != head:
                continue
            if not identity.wrote(comment):
                warnings.append(not_ours(comment, "plan comment", identity))
            elif ours is None:  # the list is oldest first: keep the first of ours
                ours = comment
    if ours is None:
        response = client.post(f"/repos/{repository}/issues/{number}/comments", json={"body": body})
        response.raise_for_status()
        created = response.json()
        return "created", created["id"], warnings + check_created(created, identity)
    if ours["body"] == body:
        return "unchanged", ours["id"], warnings
    client.patch(f"/repos/{repository}/issues/comments/{ours['id']}", json={"body": body}).raise_for_status()
    return "updated", ours["id"], warnings


def post_plan_comment(markdown: str, factory: str, env: dict[str, str]) -> list[str]:
    """Create or update the plan comment of the pull request this workflow runs for.

    Returns log lines: a notice of what was done, or a ``::warning`` saying why nothing was (not a
    pull request, no token, GitHub refused), after a warning for each marked comment that is not
    ours. The token is sent only in the ``Authorization`` header and never appears in what is returned.
    """
    import httpx

    event_path = env.get("GITHUB_EVENT_PATH")
    try:
        with open(event_path or "", encoding="utf-8") as handle:
            event = json.load(handle)
    except (OSError, ValueError):
        event = {}
    number = pull_request_number(event) if isinstance(event, dict) else None
    if number is None:
        return [command("notice", "not a pull request: no plan comment")]
    token, repository = env.get("GITHUB_TOKEN"), env.get("GITHUB_REPOSITORY")
    if not token or not repository:
        return [command("warning", "no GitHub token or repository: the plan is in the job summary only")]
    body = comment_body(markdown, factory, run_url(env))
    failed = f"could not comment on pull request #{number}"
    try:
        with github_client(env, token) as client:
            done, comment_id, warnings = upsert_comment(client, repository, number, body, token_identity(client, env))
    except httpx.HTTPStatusError as exc:
        hint = " (a pull request from a fork gets a read-only token)" if exc.response.status_code in (403, 404) else ""
        return [command("warning", f"{failed}: {error_text(exc.response)}{hint}; the plan is in the job summary")]
    except httpx.HTTPError as exc:
        return [command("warning", f"{failed}: {type(exc).__name__}; the plan is in the job summary")]
    except UnusableAnswer as exc:
        return [command("warning", f"{failed}: {exc}; the plan is in the job summary")]
    return [*warnings, command("notice", f"plan comment {done} on pull request #{number} (comment {comment_id})")]
