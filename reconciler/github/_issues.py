"""One GitHub issue per stuck wave: opened when a wave is held, kept up to date, closed when it moves.

A scheduled apply that finds a wave held by drift, an error or expired targets must not stay
silent. Each stuck wave gets one issue whose body starts with a hidden marker,
``<!-- reconcile-stuck:<factory>:<wave> -->``; later runs find it by that marker among the open
issues, edit it in place while the wave stays stuck, and close it with a comment once a run
finds the wave unstuck. A run that printed no plan (it stopped before planning) knows nothing
about the waves, so it leaves every issue as it is.

What counts as stuck is read from the plan JSON (schemas/plan.schema.json): a wave's ``drift``,
an error or an "expired" warning that belongs to a wave (by name in the message, else by its
manifest and line), and any entry of a top-level list of held waves (``held``) a plan may carry.
Gates that have simply not passed yet (a soak time, a share of devices) are normal and never
open an issue.

Only issues the token's own account opened are ours (``_api`` says how that account is found): a
marked issue by anyone else is neither closed nor overwritten, it is reported with a warning, and
while the wave is stuck we open our own. When a factory's wave has more than one issue of ours (two
runs that raced, a list that was cut short once), the oldest is kept: it is the one people have been
watching, linking to and commenting on since the wave first stuck. Issue numbers grow in creation
order, so the lowest number is the oldest, whatever order GitHub lists them in (newest first by
default). The others are closed as duplicates with a comment naming the one kept.

A body lists at most ``errors.MAX_SHOWN`` reasons, each cut to ``REASON_CHARS``, then a line
counting the rest, so it stays under GitHub's 65,536 characters (3,000 errors would otherwise be
refused with 422, and no issue opened).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from msgspec import Struct, field

from reconciler.errors import MAX_SHOWN, error_text, more_line
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
from reconciler.github._workflow import Json, command, run_url, trim_markdown, workspace_path
from reconciler.safetext import md_code, printable

if TYPE_CHECKING:
    import httpx

_EXPIRED = re.compile(r"\bexpired\b")
_MARKER = re.compile(r"^<!-- reconcile-stuck:(?P<factory>[^:]*):(?P<wave>.+) -->$")
_HELD_KEYS = ("held", "held_waves")
# MAX_SHOWN reasons of this many characters (as shown) fill at most ~51,000 of a body's 65,536.
REASON_CHARS = 500


def marker(factory: str, wave: str) -> str:
    return f"<!-- reconcile-stuck:{factory}:{wave} -->"


class StuckWave(Struct):
    name: str
    manifest: str | None = None
    line: int | None = None
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        if reason and reason not in self.reasons:
            self.reasons.append(reason)


def _wave_lines(plan: Json) -> dict[str, tuple[str | None, int | None]]:
    """Each wave's manifest and the line its document starts at, when its steps or problems say."""
    where: dict[str, tuple[str | None, int | None]] = {}
    for wave in plan.get("waves") or []:
        if isinstance(wave, dict) and isinstance(wave.get("name"), str):
            where[wave["name"]] = (wave.get("manifest"), None)
    for op in plan.get("operations") or []:
        if isinstance(op, dict) and op.get("wave") in where and where[op["wave"]][1] is None:
            where[op["wave"]] = (op.get("manifest") or where[op["wave"]][0], op.get("line"))
    # A wave with no step left (drifted after its last phase) is located by a problem naming it.
    for problem in [*(plan.get("errors") or []), *(plan.get("warnings") or [])]:
        if not isinstance(problem, dict):
            continue
        for name, (manifest, line) in where.items():
            if line is None and problem.get("file") == manifest and f"wave '{name}'" in str(problem.get("message")):
                where[name] = (manifest, problem.get("line"))
    return where


def _owner(problem: Json, where: dict[str, tuple[str | None, int | None]]) -> str | None:
    """The wave a problem is about: named in its message, else the wave document its line falls in."""
    message = problem.get("message") or ""
    for name in where:
        if f"wave '{name}'" in message:
            return name
    file = problem.get("file")
    in_file = [(line, name) for name, (manifest, line) in where.items() if file and manifest == file]
    if len(in_file) == 1:
        return in_file[0][1]
    line = problem.get("line") or 1
    starts = sorted((start, name) for start, name in in_file if start is not None and start <= line)
    return starts[-1][1] if starts else None


def stuck_waves(plan: Json) -> dict[str, StuckWave]:
    """The waves of a plan that will not move without a person, with why, by name."""
    where = _wave_lines(plan)
    stuck: dict[str, StuckWave] = {}

    def hold(name: str, reason: str, problem: Json | None = None) -> None:
        manifest, line = where.get(name, (None, None))
        wave = stuck.setdefault(name, StuckWave(name, manifest, line))
        wave.add(reason)
        if wave.line is None and problem and problem.get("file") == wave.manifest:  # annotate the first line at fault
            wave.line = problem.get("line")

    for wave in plan.get("waves") or []:
        if isinstance(wave, dict) and wave.get("drift"):
            hold(wave["name"], "drift: " + "; ".join(str(d) for d in wave["drift"]))
    expired = [p for p in plan.get("warnings") or [] if isinstance(p, dict) and _EXPIRED.search(str(p.get("message")))]
    for problem in [*(plan.get("errors") or []), *expired]:
        owner = _owner(problem, where) if isinstance(problem, dict) else None
        if owner is not None:
            hold(owner, _located(problem), problem)
    for key in _HELD_KEYS:  # a plan that lists its held waves itself
        for item in plan.get(key) or []:
            details = item if isinstance(item, dict) else {"wave": item}
            name = details.get("wave") or details.get("name")
            if not isinstance(name, str):
                continue
            hold(
                name,
                _located(
                    {
                        "message": details.get("reason") or details.get("message") or "held",
                        "file": details.get("file"),
                        "line": details.get("line"),
                    }
                ),
            )
            if details.get("file") and stuck[name].manifest is None:
                stuck[name].manifest, stuck[name].line = details["file"], details.get("line")
    return stuck


def _located(problem: Json) -> str:
    file = problem.get("file")
    where = f"{file}:{problem.get('line') or 1}: " if file else ""
    return f"{where}{problem.get('message', '')}"


def issue_title(factory: str, stuck: StuckWave) -> str:
    return f"Wave {stuck.name} is stuck (factory {factory})"


def issue_body(factory: str, stuck: StuckWave, summary_url: str | None, workspace: str | None = None) -> str:
    """The marker, why the wave is held, where its manifest is, and what happens next."""
    lines = [
        marker(factory, stuck.name),
        f"The reconciler cannot advance wave {md_code(stuck.name)} of factory {md_code(factory)}:",
        "",
    ]
    for reason in stuck.reasons[:MAX_SHOWN]:  # messages quote the factory: kept literal
        shown = printable(reason)
        lines.append(f"- {md_code(shown if len(shown) <= REASON_CHARS else shown[: REASON_CHARS - 1] + '…')}")
    if len(stuck.reasons) > MAX_SHOWN:
        lines.append(f"- {more_line(len(stuck.reasons) - MAX_SHOWN, 'reasons')}")
    if stuck.manifest:
        at = workspace_path(stuck.manifest, workspace) + (f", line {stuck.line}" if stuck.line else "")
        lines += ["", f"Manifest: {md_code(at)}."]
    if summary_url:
        lines += ["", f"Last seen by [this run]({summary_url})."]
    lines += [
        "",
        "This issue is updated by every run while the wave is held, and closed by the first run that finds "
        "it moving again. Fix the manifest or the factory; closing the issue by hand does not unblock the wave.",
    ]
    # A wave name or manifest path long enough to pass the cap anyway is cut, marker line first kept.
    return trim_markdown("\n".join(lines) + "\n", BODY_LIMIT, "_The rest is cut: see the run's annotations._")


def _open_issues(
    client: httpx.Client, repository: str, factory: str, identity: Identity
) -> tuple[dict[str, list[Json]], list[str]]:
    """This factory's open marked issues of ours by wave, oldest first; a warning for each of anyone else's.

    Pull requests share the list and are skipped.
    """
    ours: dict[str, list[Json]] = {}
    warnings = []
    for page in pages(client, f"/repos/{repository}/issues?state=open&per_page=100"):
        for issue in page:
            if issue.get("pull_request"):
                continue
            m = _MARKER.match((issue.get("body") or "").split("\n", 1)[0].strip())
            if not m or m["factory"] != factory:
                continue
            if identity.wrote(issue):
                ours.setdefault(m["wave"], []).append(issue)
            else:
                warnings.append(not_ours(issue, "stuck-wave issue", identity))
    for issues in ours.values():
        issues.sort(key=lambda issue: int(issue["number"]))
    return ours, warnings


# How an issue was closed: the ``state_reason`` values GitHub accepts on ``PATCH /repos/R/issues/N``.
StateReason = Literal["completed", "not_planned", "duplicate", "reopened"]


def _close(
    client: httpx.Client, repository: str, issue: Json, comment: str, reason: StateReason, kept: Json | None = None
) -> None:
    """Comment on an issue, then close it; a duplicate names the issue ``kept`` (``duplicate_issue_id``)."""
    number = issue["number"]
    client.post(f"/repos/{repository}/issues/{number}/comments", json={"body": comment}).raise_for_status()
    change: Json = {"state": "closed", "state_reason": reason}
    if kept is not None and isinstance(kept.get("id"), int):
        change["duplicate_issue_id"] = kept["id"]
    client.patch(f"/repos/{repository}/issues/{number}", json=change).raise_for_status()


def sync_issues(
    client: httpx.Client,
    repository: str,
    factory: str,
    stuck: dict[str, StuckWave],
    identity: Identity,
    summary_url: str | None,
    workspace: str | None = None,
) -> list[str]:
    """Open, update or close this factory's stuck-wave issues to match ``stuck``; one log line each."""
    found, lines = _open_issues(client, repository, factory, identity)
    existing: dict[str, Json] = {}
    for name, (kept, *duplicates) in sorted(found.items()):
        existing[name] = kept
        for duplicate in duplicates:
            tracked = f"wave {md_code(name)} of factory {md_code(factory)} is tracked there"
            _close(client, repository, duplicate, f"Duplicate of #{kept['number']}: {tracked}.", "duplicate", kept)
            lines.append(
                command("notice", f"wave {name}: closed issue #{duplicate['number']}, a duplicate of #{kept['number']}")
            )
    for name in sorted(stuck):
        body = issue_body(factory, stuck[name], summary_url, workspace)
        issue = existing.get(name)
        if issue is None:
            response = client.post(
                f"/repos/{repository}/issues", json={"title": issue_title(factory, stuck[name]), "body": body}
            )
            response.raise_for_status()
            created = response.json()
            lines.append(command("notice", f"wave {name} is stuck: opened issue #{created['number']}"))
            lines += check_created(created, identity)
        elif issue.get("body") != body:
            client.patch(f"/repos/{repository}/issues/{issue['number']}", json={"body": body}).raise_for_status()
            lines.append(command("notice", f"wave {name} is still stuck: updated issue #{issue['number']}"))
        else:
            lines.append(command("notice", f"wave {name} is still stuck: issue #{issue['number']} unchanged"))
    for name in sorted(set(existing) - set(stuck)):
        number = existing[name]["number"]
        where = f" ([run]({summary_url}))" if summary_url else ""
        _close(
            client,
            repository,
            existing[name],
            f"Wave {md_code(name)} is no longer held{where}: closing.",
            "completed",
        )
        lines.append(command("notice", f"wave {name} moves again: closed issue #{number}"))
    return lines


def stuck_annotations(stuck: dict[str, StuckWave], workspace: str | None) -> Iterable[str]:
    """One ``::error`` per stuck wave, on its manifest when known: the job fails visibly."""
    for name in sorted(stuck):
        wave = stuck[name]
        yield command(
            "error",
            f"wave '{name}' is stuck: " + "; ".join(wave.reasons),
            file=workspace_path(wave.manifest, workspace) if wave.manifest else None,
            line=wave.line,
        )


def post_stuck_issues(plan: Json, env: dict[str, str]) -> list[str]:
    """Bring the repository's stuck-wave issues in line with a plan; log lines of what was done.

    Refusals (no token, a token without ``issues: write``) are warnings: the job fails on the
    stuck waves anyway, through their annotations.
    """
    import httpx

    factory = str(plan.get("factory") or "default")
    stuck = stuck_waves(plan)
    token, repository = env.get("GITHUB_TOKEN"), env.get("GITHUB_REPOSITORY")
    if not token or not repository:
        return [command("warning", "no GitHub token or repository: stuck waves open no issue")]
    try:
        with github_client(env, token) as client:
            identity = token_identity(client, env)
            return sync_issues(client, repository, factory, stuck, identity, run_url(env), env.get("GITHUB_WORKSPACE"))
    except httpx.HTTPStatusError as exc:
        hint = " (the job needs `issues: write` permission)" if exc.response.status_code in (403, 404) else ""
        return [command("warning", f"could not update the stuck-wave issues: {error_text(exc.response)}{hint}")]
    except httpx.HTTPError as exc:
        return [command("warning", f"could not update the stuck-wave issues: {type(exc).__name__}")]
    except UnusableAnswer as exc:
        return [command("warning", f"could not update the stuck-wave issues: {exc}")]
