"""What the client sends and what it accepts, through the public CLI against servers on 127.0.0.1: names
as one path segment each, the token as given (or refused, never shown), plain http:// only to this
machine, redirects reported instead of followed, answers read up to a cap, and no local factory inside
a git work tree."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import httpx
import pytest
from click.testing import CliRunner

from reconciler.cli.reconcile import main as reconcile_main
from reconciler.errors import BackendError
from reconciler.factory.client import Backend, FactoryClient
from reconciler.factory.transport import MAX_ANSWER, DeadlineTransport, RetryTransport
from reconciler.localfactory.cli import main as factory_main
from tests.helpers.e2e import CANARY_WAVE, commit, init_demo_factory
from tests.helpers.serving import Answer, FactoryFront

REPO = Path(__file__).resolve().parents[1]
TOKEN = "tok-Zq7RECOGNISABLE"
WAVES = b'{"waves": [], "total": 0, "next": null}'
# Every form of name a path is built from: each must reach the factory as one segment, or not at all.
NAMES = {
    "a/b": "a%2Fb",
    "%2e": "%252e",
    "%2e%2e": "%252e%252e",
    "with space": "with%20space",
    "wäve-ü": "w%C3%A4ve-%C3%BC",
    "acme.lock": "acme.lock",
    "q?x#y": "q%3Fx%23y",
    "...": "...",
}


class Recording(FactoryFront):
    """The local factory behind a loopback HTTP server that records each request's path and headers as
    they came off the wire."""

    def __init__(self, factory_dir: Path):
        self.seen: list[tuple[str, dict[str, str]]] = []
        super().__init__(factory_dir)

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        self.seen.append((path, headers))
        return self.forward(command, path, body, headers)


class Hostile:
    """A loopback HTTP server whose every answer ``answer(handler)`` writes itself; records request paths."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]):
        self.paths: list[str] = []
        self.stop = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hostile.paths.append(self.path)
                with contextlib.suppress(OSError):
                    answer(self)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def run(*args: str, token: str | None = None, **env: str) -> tuple[int, str, str]:
    """``reconcile ARGS`` in-process with only the environment given (no RECONCILE_* of the machine's)."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("RECONCILE_")}
    clean.update(env, RECONCILE_API_TOKEN=token)
    result = CliRunner(env=clean).invoke(reconcile_main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def small_factory(tmp_path_factory) -> Path:
    return init_demo_factory(tmp_path_factory.mktemp("small") / "factory", devices=20)


@pytest.fixture
def repo(release_repo) -> Path:
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    return release_repo


# ------------------------------------------------------------------------------------ path segments


def test_every_name_reaches_the_factory_as_one_segment(small_factory):
    """Wave, device and correlation names through the real HTTP stack: the path the factory saw."""
    front = Recording(small_factory)
    transport = RetryTransport(DeadlineTransport(), attempts=1)
    try:
        with FactoryClient(Backend("demo", front.url, front.url, transport)) as client:
            for name, encoded in NAMES.items():
                front.seen.clear()
                assert client.get_wave(name) is None  # no such wave: the factory answered 404 for *this* name
                with pytest.raises(BackendError, match=r"\(HTTP 404\)$"):  # no such device
                    client.update_events(name, name)
                assert [path for path, _ in front.seen] == [
                    f"/ota/factories/demo/waves/{encoded}/",
                    f"/ota/devices/{encoded}/updates/{encoded}/?factory=demo",
                ]
            for name in (".", ".."):
                front.seen.clear()
                for call in (client.get_wave, client.wave_status, client.device_updates):
                    with pytest.raises(BackendError) as caught:
                        call(name)
                    assert f"name {name!r} cannot be part of a URL path" in str(caught.value)
                assert front.seen == []
    finally:
        front.close()


@pytest.mark.parametrize("factory", [".", ".."])
def test_a_factory_named_dot_is_refused_before_any_request(factory, repo, small_factory):
    """``--factory ..`` used to send ``/ota/factories/../waves/``, which httpx normalised to ``/ota/waves/``."""
    front = Recording(small_factory)
    try:
        code, _, err = run("--dry-run", "--api-url", front.url, "--factory", factory, str(repo))
    finally:
        front.close()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: factory name {factory!r} is no name: in a URL path it means")
    assert front.seen == []


def test_a_factory_name_with_a_dot_reaches_the_factory_as_given(repo):
    with Hostile(lambda h: _send(h, 200, WAVES)) as server:
        run("--dry-run", "--api-url", server.url, "--factory", "acme.lock", str(repo))
    assert server.paths and all("/acme.lock/" in p for p in server.paths), server.paths


# ------------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("pasted", [f"{TOKEN}\n", f"{TOKEN}\r\n", f"  {TOKEN} ", f"\t{TOKEN}"])
def test_whitespace_around_the_token_is_dropped_with_a_warning(pasted, repo, small_factory):
    front = Recording(small_factory)
    try:
        code, out, err = run("--dry-run", "--api-url", front.url, "--factory", "demo", str(repo), token=pasted)
    finally:
        front.close()
    assert code == 0, err
    assert err.startswith("warning: RECONCILE_API_TOKEN has whitespace around it")
    assert front.seen and all(headers.get("OSF-TOKEN") == TOKEN for _, headers in front.seen)
    assert "Zq7" not in out + err


@pytest.mark.parametrize(
    "token, problem",
    [
        (f"{TOKEN[:5]} {TOKEN[5:]}", "a space or line break"),
        (f"{TOKEN[:5]}\t{TOKEN[5:]}", "a space or line break"),
        (f"{TOKEN[:5]}\n{TOKEN[5:]}", "a space or line break"),
        (f"{TOKEN[:5]}\x01{TOKEN[5:]}", "a control character"),
        (f"{TOKEN}é", "a character that is not ASCII"),  # used to be a UnicodeEncodeError traceback
    ],
)
def test_a_token_that_cannot_be_a_header_is_one_line_that_never_shows_it(token, problem, repo):
    with Hostile(lambda h: _send(h, 200, WAVES)) as server:
        code, out, err = run("--dry-run", "--api-url", server.url, "--factory", "acme", str(repo), token=token)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: RECONCILE_API_TOKEN holds {problem}")
    assert "Zq7" not in out + err and "RECOGNISABLE" not in out + err
    assert server.paths == []


def _redirect(handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 301, b"", ("Location", "https://api.example.com/v2" + handler.path.split("?")[0] + "?x=\x9b31m"))


def test_a_redirect_to_no_valid_url_is_one_line(repo):
    with Hostile(lambda h: _send(h, 302, b"", ("Location", "https://x\x1b[31m/"))) as server:
        code, _, err = run("--dry-run", "--api-url", server.url, "--factory", "acme", str(repo), token=TOKEN)
    assert code == 1
    assert err.splitlines() == [
        f"error: list waves: {server.url} redirects to a Location that is no valid URL; not followed"
    ]


def _refuse(handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 401, f'{{"message": "bad token {handler.headers.get("OSF-TOKEN")}"}}'.encode())


@pytest.mark.parametrize("answer", [_redirect, _refuse, lambda h: h.connection.close()])
def test_no_failure_shows_the_token(answer, repo):
    with Hostile(answer) as server:
        code, out, err = run("--dry-run", "--api-url", server.url, "--factory", "acme", str(repo), token=TOKEN)
    assert code == 1 and err.startswith("error: list waves: ")
    assert "RECOGNISABLE" not in out + err  # a server that echoes the token gets it masked (***)


# ------------------------------------------------------------------------------------ where the token goes


def test_plain_http_to_another_machine_is_refused_unless_allowed(repo):
    # Nothing is sent anywhere: 192.0.2.1 (TEST-NET-1) is never contacted. Refused, the URL stops the run;
    # allowed, the run goes on to the next check, the token's, which a token with a space fails before
    # any request (tests send traffic only to loopback).
    url = "http://192.0.2.1:9"
    code, _, err = run("--dry-run", "--api-url", url, "--factory", "acme", str(repo), token=TOKEN)
    assert code == 1
    assert err.splitlines() == [
        f"error: --api-url {url} is plain http:// to another machine: the API token would travel in clear; use "
        "https://, or pass --allow-insecure-http (or set RECONCILE_ALLOW_INSECURE_HTTP=1) if the network is yours"
    ]
    for allowed in (["--allow-insecure-http"], []):
        env = {} if allowed else {"RECONCILE_ALLOW_INSECURE_HTTP": "1"}
        args = ["--dry-run", *allowed, "--api-url", url, "--factory", "acme", str(repo)]
        code, _, err = run(*args, token="not one token", **env)
        assert code == 1 and "plain http://" not in err and "RECONCILE_API_TOKEN holds" in err, err


def test_loopback_stays_allowed_over_plain_http(repo):
    with Hostile(lambda h: _send(h, 200, WAVES)) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        run("--dry-run", "--api-url", url, "--factory", "acme", str(repo), token=TOKEN)
    assert server.paths


def test_a_redirect_is_reported_with_where_it_points_and_never_followed(repo):
    with Hostile(_redirect) as server:
        code, _, err = run("--dry-run", "--api-url", server.url, "--factory", "acme", str(repo), token=TOKEN)
    assert code == 1
    assert err.splitlines() == [
        f"error: list waves: {server.url} redirects (HTTP 301) to "
        "https://api.example.com/v2/ota/factories/acme/waves/?x=\\u009b31m; not followed, the token would go "
        "along: set --api-url (RECONCILE_API_URL) to https://api.example.com/v2 if that is the factory's API"
    ]
    assert len(server.paths) == 1


def test_an_invalid_api_url_never_shows_its_password(repo):
    code, _, err = run("--dry-run", "--api-url", "http://ci:hunter2@[::1", "--factory", "acme", str(repo))
    assert code == 1 and err.startswith("error: --api-url 'http://***@[::1' is not a valid URL"), err
    assert "hunter2" not in err


# ------------------------------------------------------------------------------------ answers of any size


def _endless(handler: BaseHTTPRequestHandler) -> None:
    """An answer that announces 10 GiB and sends up to 1 GiB of it, 1 MiB at a time."""
    handler.send_response_only(200)
    handler.send_header("Content-Length", str(10 * 2**30))
    handler.end_headers()
    chunk = b"[" * 2**20
    for _ in range(1024):
        handler.wfile.write(chunk)


def test_an_endless_answer_is_cut_at_the_cap_and_memory_stays_bounded(repo):
    """It used to be read into memory until the deadline (1.2 GiB in 30 s)."""
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "print(done.stderr, end='')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    env.update(PYTHONPATH=str(REPO), RECONCILE_TIMEOUT="60s")
    reconcile = [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()"]
    with Hostile(_endless) as server:
        args = ["--dry-run", "--api-url", server.url, "--factory", "acme", str(repo)]
        done = subprocess.run(
            [sys.executable, "-c", measure, *reconcile, *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    first, *err = done.stdout.splitlines()
    code, peak_kib = map(int, first.split())
    assert code == 1
    assert err == [
        f"error: list waves: the answer from {server.url} is over {MAX_ANSWER // 2**20} MiB, the most one answer may be"
    ]
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_endless_answers_read_at_once_all_stop_at_the_shared_cap():
    """Up to 64 reads go out at once: 13 endless answers read together held 877 MiB under the per-answer
    cap alone. The answers share a cap, and when they go over it every answer then being read stops (each
    would otherwise read on to the per-answer cap in its own thread's memory); the bytes are given back."""
    from reconciler.factory.transport import AnswerTooLarge, _Reading, read_capped

    transport = DeadlineTransport()
    transport._reading = _Reading(limit=8 * 2**20)  # small, so the test reads megabytes, not 128 MiB
    errors: list[BaseException] = []

    def read(http: httpx.Client) -> None:
        try:
            read_capped(http.send(http.build_request("GET", "/"), stream=True))
        except AnswerTooLarge as exc:
            errors.append(exc)

    with Hostile(_endless) as server, httpx.Client(base_url=server.url, transport=transport) as http:
        threads = [threading.Thread(target=read, args=(http,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(errors) == 4
    assert all(error.together for error in errors), [str(error) for error in errors]
    assert transport._reading.held == 0


# ------------------------------------------------------------------------------------ --local


def test_no_local_factory_inside_a_git_work_tree(repo):
    """The database and the private key archive would be untracked files in the release repository."""
    inside = repo / "factory"
    code, _, err = run("--dry-run", "--local", str(inside), str(repo))
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: the local factory directory {inside} is inside the git work tree {repo}: ")
    result = CliRunner().invoke(factory_main, ["--local", str(inside / "sub"), "init", "--demo", "--devices", "0"])
    assert result.exit_code == 1 and "is inside the git work tree" in result.stderr
    assert not inside.exists()


def test_a_local_factory_in_a_directory_git_ignores_is_fine(repo):
    """The walkthrough's ``RECONCILE_LOCAL=$PWD/.local-factory``, which the clone's .gitignore lists."""
    commit(repo, {".gitignore": ".local-factory/\n"}, "Ignore the local factory")
    code, _, err = run("--dry-run", "--local", str(repo / ".local-factory"), str(repo))
    assert code in (0, 2), err
    assert (repo / ".local-factory" / "factory.db").exists()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, *headers: tuple[str, str]) -> None:
    handler.send_response_only(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
