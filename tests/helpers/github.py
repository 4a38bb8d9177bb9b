"""Test support (no tests here): a stand-in for GitHub's REST API, and a runner for action.yml.

``GitHubAPI`` serves the few endpoints the plan comment and the stuck-wave issues use (``GET /user``;
issue comments: list, create, edit; issues: list, create, update, close), on 127.0.0.1 in a thread,
answering as GitHub's published REST description (the ``@octokit/openapi`` package,
``api.github.com.json``) says:

- ``GET /repos/R/issues`` lists newest first (``sort=created``, ``direction=desc`` by default), issue
  comments by ascending id; at most 100 per page (``per_page``, 30 by default), with ``Link`` headers;
- a comment without ``body`` and an issue without ``title`` are 422, so is a body over 65,536
  characters; ``state_reason`` is one of ``completed``, ``not_planned``, ``reopened``, ``duplicate``;
- every issue and comment carries its author, ``user`` {login, type, id}: whoever the token is.
  ``tokens`` maps each token to its account; an installation token (``GITHUB_TOKEN``, a GitHub
  App's) writes as the app's bot and is refused ``GET /user`` (403 "Resource not accessible by
  integration"), a personal token writes as its user, whom ``GET /user`` returns.

Issues and pull requests share one numbering, and the issue list includes pull requests (marked by
a ``pull_request`` key), as on GitHub. The read-only token a fork's pull request gets is refused
every write (403). It records every request so tests can check what the action sent.

``plan``, ``wave`` and ``op`` build the plan JSON (schemas/plan.schema.json) the stuck-wave tests feed in.

``ActionRunner`` executes a composite action's steps the way the runner does: inputs with
defaults, ``${{ }}`` expressions in ``env:``/``if:``/outputs, one ``$GITHUB_OUTPUT`` and one
``$GITHUB_STEP_SUMMARY`` file per step, ``bash --noprofile --norc -eo pipefail {0}``.
``uses:`` steps (setup-python) are skipped: the test's Python is already set up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

READ_ONLY_TOKEN = "ghs_read_only_fork_token"
WRITER_TOKEN = "ghs_writer"  # the job's GITHUB_TOKEN
APP_TOKEN = "ghs_app_installation"  # an installation token of another GitHub App
PERSONAL_TOKEN = "ghp_personal"  # a person's token

# Accounts as GitHub's ``simple-user`` shows them (login, type, id). The Actions bot's id is GitHub's.
ACTIONS_BOT = {"login": "github-actions[bot]", "type": "Bot", "id": 41898282}
APP_BOT = {"login": "release-helper[bot]", "type": "Bot", "id": 900001}
PERSON = {"login": "octocat", "type": "User", "id": 583231}
MALLORY = {"login": "mallory", "type": "User", "id": 666}

STATE_REASONS = ("completed", "not_planned", "reopened", "duplicate")
BODY_LIMIT = 65536
MAX_PER_PAGE = 100


@dataclass(frozen=True)
class Account:
    """Who a token acts as; ``installation`` tokens (GitHub Apps, ``GITHUB_TOKEN``) are refused ``GET /user``."""

    user: dict
    installation: bool


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: dict | None


def default_tokens() -> dict[str, Account]:
    return {
        WRITER_TOKEN: Account(ACTIONS_BOT, installation=True),
        READ_ONLY_TOKEN: Account(ACTIONS_BOT, installation=True),
        APP_TOKEN: Account(APP_BOT, installation=True),
        PERSONAL_TOKEN: Account(PERSON, installation=False),
    }


@dataclass
class GitHubAPI:
    """Issues and issue comments of one repository, kept in memory."""

    repository: str = "acme/releases"
    page_size: int | None = None  # force small pages to exercise pagination
    link_base: str | None = None  # where ``Link`` headers point (another origin, to test that it is not followed)
    tokens: dict[str, Account] = field(default_factory=default_tokens)
    comments: dict[int, list[dict]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    issues: dict[int, dict] = field(default_factory=dict)
    next_id: int = 1000
    next_number: int = 1
    clock: int = 0  # seconds after 2026-01-01T00:00:00Z; each item created one second after the last

    def _created_at(self) -> str:
        self.clock += 1
        return f"2026-01-01T{self.clock // 3600:02d}:{self.clock // 60 % 60:02d}:{self.clock % 60:02d}Z"

    def add_issue(
        self, title: str, body: str | None, *, user: dict = ACTIONS_BOT, pull_request: bool = False, state: str = "open"
    ) -> dict:
        number = self.next_number
        self.next_number += 1
        self.next_id += 1
        kind = "pull" if pull_request else "issues"
        issue = {
            "id": self.next_id,
            "number": number,
            "title": title,
            "body": body,
            "user": dict(user),
            "state": state,
            "state_reason": None,
            "created_at": self._created_at(),
            "html_url": f"https://github.example/{self.repository}/{kind}/{number}",
        }
        if pull_request:
            issue["pull_request"] = {"url": f"https://api.github.example/repos/{self.repository}/pulls/{number}"}
        self.issues[number] = issue
        return issue

    def add_comment(self, number: int, body: str, *, user: dict = MALLORY) -> dict:
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "body": body,
            "user": dict(user),
            "created_at": self._created_at(),
            "html_url": f"https://github.example/{self.repository}/issues/{number}#issuecomment-{self.next_id}",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def start(self) -> None:
        api = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, payload, headers: dict | None = None) -> bool:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
                return True  # handled

            def _invalid(self, message: str) -> bool:
                return self._reply(422, {"message": "Validation Failed", "errors": [message]})

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("Authorization")
                with lock:
                    api.requests.append(Recorded(self.command, parts.path, auth, body))
                    self._route(parts, body, auth)

            def _page(self, parts, items: list) -> bool:
                query = parse_qs(parts.query)
                size = api.page_size or min(int(query.get("per_page", ["30"])[0]), MAX_PER_PAGE)
                page = int(query.get("page", ["1"])[0])
                headers = {}
                if page * size < len(items):
                    keep = "".join(f"{k}={v[0]}&" for k, v in query.items() if k not in ("page", "per_page"))
                    base = (api.link_base or f"http://{self.headers['Host']}") + parts.path
                    headers["Link"] = f'<{base}?{keep}per_page={size}&page={page + 1}>; rel="next"'
                return self._reply(200, items[(page - 1) * size : page * size], headers)

            def _issues(self, parts, body, account: Account) -> bool:
                """GET/POST /repos/R/issues and PATCH /repos/R/issues/N; False when the request is not one."""
                path = f"/repos/{api.repository}/issues"
                if parts.path == path and self.command == "GET":
                    query = parse_qs(parts.query)
                    state = query.get("state", ["open"])[0]
                    listed = [i for i in api.issues.values() if state in ("all", i["state"])]
                    if query.get("sort", ["created"])[0] != "created":
                        return self._invalid("the stand-in sorts by created only")
                    newest_first = query.get("direction", ["desc"])[0] == "desc"
                    return self._page(parts, sorted(listed, key=lambda i: i["number"], reverse=newest_first))
                if parts.path == path and self.command == "POST":
                    if not isinstance((body or {}).get("title"), str | int):
                        return self._invalid("title is missing")
                    return self._reply(201, api.add_issue(str(body["title"]), body.get("body"), user=account.user))
                m = re.fullmatch(re.escape(path) + r"/(\d+)", parts.path)
                if m and self.command == "PATCH" and int(m.group(1)) in api.issues:
                    issue = api.issues[int(m.group(1))]
                    if body.get("state") not in (None, "open", "closed"):
                        return self._invalid("state is not open or closed")
                    if body.get("state_reason") not in (None, *STATE_REASONS):
                        return self._invalid("state_reason is not one of " + ", ".join(STATE_REASONS))
                    if body.get("state_reason") == "duplicate" and "duplicate_issue_id" in body:
                        if body["duplicate_issue_id"] not in {i["id"] for i in api.issues.values()}:
                            return self._invalid("duplicate_issue_id names no issue")
                        issue["duplicate_issue_id"] = body["duplicate_issue_id"]
                    if body.get("state") not in (None, issue["state"]):  # "Ignored unless `state` is changed."
                        reopened = "reopened" if body["state"] == "open" else "completed"
                        issue["state_reason"] = body.get("state_reason") or reopened
                    issue.update({k: body[k] for k in ("title", "body", "state") if k in body})
                    return self._reply(200, issue)
                return False

            def _route(self, parts, body, auth) -> bool:
                account = api.tokens.get((auth or "").removeprefix("Bearer "))
                if not auth or not auth.startswith("Bearer ") or account is None:
                    return self._reply(401, {"message": "Bad credentials"})
                if parts.path == "/user" and self.command == "GET":
                    if account.installation:
                        return self._reply(403, {"message": "Resource not accessible by integration"})
                    return self._reply(200, {**account.user, "name": None})
                writes = self.command in ("POST", "PATCH")
                if writes and auth == f"Bearer {READ_ONLY_TOKEN}":
                    return self._reply(403, {"message": "Resource not accessible by integration"})
                if writes and len((body or {}).get("body") or "") > BODY_LIMIT:
                    return self._invalid("Body is too long (maximum is 65536 characters)")
                if self._issues(parts, body, account):
                    return True
                prefix = f"/repos/{api.repository}/issues/"
                m = re.fullmatch(re.escape(prefix) + r"(\d+)/comments", parts.path)
                if m and self.command == "GET":
                    return self._page(parts, sorted(api.comments.get(int(m.group(1)), []), key=lambda c: c["id"]))
                if writes and not isinstance((body or {}).get("body"), str):
                    return self._invalid("body is missing")
                if m and self.command == "POST":
                    return self._reply(201, api.add_comment(int(m.group(1)), body["body"], user=account.user))
                m = re.fullmatch(re.escape(prefix) + r"comments/(\d+)", parts.path)
                if m and self.command == "PATCH":
                    for comments in api.comments.values():
                        for comment in comments:
                            if comment["id"] == int(m.group(1)):
                                comment["body"] = body["body"]
                                return self._reply(200, comment)
                return self._reply(404, {"message": "Not Found"})

            do_GET = do_POST = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("POST", "PATCH")]


# --- plans with stuck waves (the plan JSON of schemas/plan.schema.json) -------------------


def wave(name, manifest, drift=(), status="active"):
    return {
        "name": name,
        "manifest": manifest,
        "tag": "production",
        "target": 46,
        "status": status,
        "phases_done": 1,
        "phases_total": 2,
        "phases": [],
        "drift": list(drift),
    }


def op(wave_name, manifest, line, status="blocked", reason="wait 24h: 3h left"):
    return {
        "op": "rollout",
        "wave": wave_name,
        "tag": "production",
        "status": status,
        "reason": reason,
        "manifest": manifest,
        "line": line,
        "phase": "beta",
        "phase_index": 1,
        "group": "beta",
    }


def plan(waves=(), operations=(), errors=(), warnings=(), **extra):
    return {
        "format_version": "1.0",
        "factory": "acme",
        "backend": "https://api.foundries.io",
        "now": "2026-11-01T08:00:00Z",
        "changes": False,
        "operations": list(operations),
        "waves": list(waves),
        "warnings": list(warnings),
        "errors": list(errors),
        **extra,
    }


DRIFTED = plan([wave("v46", "releases/v46.yaml", drift=["phase 1: group 'gamma' instead of 'beta'"])])


# --- running action.yml ---------------------------------------------------------------------

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_TOKEN = re.compile(r"\s*(?:(==|!=|&&|\|\||!|\(|\))|'((?:[^']|'')*)'|([A-Za-z_][\w.-]*(?:\(\))?))")


class Expressions:
    """The subset of GitHub's expression language action.yml uses.

    Context lookups (``inputs.x``, ``github.x``, ``steps.id.outputs.x``, ``env.X``,
    ``runner.x``), string literals, ``== != && || !``, parentheses and ``always()``; values
    compare case-insensitively as strings, and ``''`` is false, like GitHub's.
    """

    def __init__(self, contexts: dict):
        self.contexts = contexts

    def lookup(self, name: str):
        if name == "always()":
            return True
        value = self.contexts
        for part in name.split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value

    def evaluate(self, text: str):
        tokens = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"unsupported expression: {text!r}")
            op, literal, name = m.groups()
            tokens.append(
                ("op", op) if op else ("lit", literal.replace("''", "'")) if literal is not None else ("name", name)
            )
            pos = m.end()
        value, rest = self._or(tokens)
        if rest:
            raise ValueError(f"unsupported expression: {text!r}")
        return value

    def _or(self, tokens):
        left, tokens = self._and(tokens)
        while tokens and tokens[0] == ("op", "||"):
            right, tokens = self._and(tokens[1:])
            left = left if self.truthy(left) else right
        return left, tokens

    def _and(self, tokens):
        left, tokens = self._cmp(tokens)
        while tokens and tokens[0] == ("op", "&&"):
            right, tokens = self._cmp(tokens[1:])
            left = right if self.truthy(left) else left
        return left, tokens

    def _cmp(self, tokens):
        left, tokens = self._unary(tokens)
        while tokens and tokens[0] in (("op", "=="), ("op", "!=")):
            op = tokens[0][1]
            right, tokens = self._unary(tokens[1:])
            same = str(left).lower() == str(right).lower()
            left = same if op == "==" else not same
        return left, tokens

    def _unary(self, tokens):
        kind, value = tokens[0]
        if (kind, value) == ("op", "!"):
            inner, rest = self._unary(tokens[1:])
            return not self.truthy(inner), rest
        if (kind, value) == ("op", "("):
            inner, rest = self._or(tokens[1:])
            return inner, rest[1:]
        return (value if kind == "lit" else self.lookup(value)), tokens[1:]

    @staticmethod
    def truthy(value) -> bool:
        return value not in ("", False, None, 0)

    def substitute(self, text: str) -> str:
        def one(m):
            value = self.evaluate(m.group(1))
            return ("true" if value else "false") if isinstance(value, bool) else str(value)

        return _EXPR.sub(one, str(text))

    def condition(self, text: str) -> bool:
        inner = _EXPR.fullmatch(text.strip())
        return self.truthy(self.evaluate(inner.group(1) if inner else text))


def parse_output_file(text: str) -> dict[str, str]:
    """Read ``$GITHUB_OUTPUT`` as the runner does: ``name=value`` and ``name<<DELIM`` blocks."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
        i += 1
    return outputs


@dataclass
class ActionRun:
    returncode: int
    stdout: str
    stderr: str
    summary: str
    outputs: dict[str, str]
    steps: dict[str, dict]
    ran: list[str]


def run_action(
    action_path: Path,
    inputs: dict[str, str],
    *,
    workspace: Path,
    event: dict,
    env: dict[str, str],
    tmp: Path,
    skip: frozenset[str] = frozenset(),
    timeout: float = 120,
) -> ActionRun:
    """Run a composite action's ``run:`` steps with bash, stopping at the first failing step.

    Steps whose id is in ``skip`` are left out (the test has already installed the package).
    """
    action = yaml.safe_load((action_path / "action.yml").read_text())
    resolved = {}
    for name, spec in (action.get("inputs") or {}).items():
        resolved[name] = inputs.get(name, spec.get("default", ""))
    unknown = set(inputs) - set(resolved)
    assert not unknown, f"action.yml has no inputs {unknown}"
    tmp.mkdir(parents=True, exist_ok=True)
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(event))
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    base_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp / "home"),
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(action_path),
        "GITHUB_EVENT_PATH": str(event_path),
        "RUNNER_TEMP": str(runner_temp),
        "RUNNER_OS": "Linux",
        **env,
    }
    github = {
        "action_path": str(action_path),
        "token": env.get("GITHUB_TOKEN", ""),
        "workspace": str(workspace),
        "event_name": env.get("GITHUB_EVENT_NAME", ""),
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "event": event,
    }
    contexts = {"github": github, "env": base_env, "runner": {"temp": str(runner_temp), "os": "Linux"}, "steps": {}}
    expr = Expressions(contexts)
    resolved = {k: expr.substitute(v) if isinstance(v, str) else v for k, v in resolved.items()}
    contexts["inputs"] = resolved
    stdout, stderr, summary, ran = [], [], [], []
    returncode = 0
    for index, step in enumerate(action["runs"]["steps"]):
        step_id = step.get("id", f"__step{index}")
        contexts["steps"][step_id] = {"outputs": {}}
        if "run" not in step or step_id in skip:
            continue  # `uses:` steps (actions/setup-python) are the runner's business
        if "if" in step and not expr.condition(str(step["if"])):
            continue
        ran.append(step.get("name", step_id))
        output_file = tmp / f"output-{index}"
        summary_file = tmp / f"summary-{index}"
        output_file.write_text("")
        summary_file.write_text("")
        step_env = dict(base_env)
        step_env.update({k: expr.substitute(v) for k, v in (step.get("env") or {}).items()})
        step_env["GITHUB_OUTPUT"] = str(output_file)
        step_env["GITHUB_STEP_SUMMARY"] = str(summary_file)
        script = tmp / f"step-{index}.sh"
        script.write_text(expr.substitute(step["run"]))
        assert step.get("shell") == "bash", f"step {step_id} must set shell: bash"
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            check=False,
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout.append(proc.stdout)
        stderr.append(proc.stderr)
        summary.append(summary_file.read_text())
        contexts["steps"][step_id]["outputs"] = parse_output_file(output_file.read_text())
        if proc.returncode != 0:
            returncode = proc.returncode
            break
    outputs = {name: expr.substitute(spec.get("value", "")) for name, spec in (action.get("outputs") or {}).items()}
    return ActionRun(returncode, "".join(stdout), "".join(stderr), "".join(summary), outputs, contexts["steps"], ran)
