"""The client against misbehaving servers on 127.0.0.1: deadlines per request and per run, truncated
answers retried, lost answers to writes reported as "outcome unknown" (and confirmed by reading back),
and key files that are not regular files refused at once."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pytest

from reconciler.errors import BackendError
from reconciler.factory.client import Backend, FactoryClient
from reconciler.factory.transport import DeadlineTransport, RetryTransport
from reconciler.signing import TufError, load_key_archive_file
from tests.helpers.e2e import CANARY_WAVE, commit, reconcile, wave
from tests.helpers.serving import Answer, FactoryFront

REPO = Path(__file__).resolve().parents[1]
RECONCILE = [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()"]
WAVES = b'{"waves": [], "total": 0, "next": null}'


class RawServer:
    """Hands each accepted connection to the next handler (the last one repeats); records requests."""

    def __init__(self, *handlers: Callable[[socket.socket], None]):
        self.handlers, self.requests = list(handlers), []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
            threading.Thread(target=self._handle, args=(conn, handler), daemon=True).start()

    def _handle(self, conn: socket.socket, handler) -> None:
        with conn:
            self.requests.append(conn.recv(65536).split(b"\r\n", 1)[0].decode())
            with contextlib.suppress(OSError):
                handler(conn)

    def trickle(self, data: bytes, every: float) -> Callable[[socket.socket], None]:
        def handler(conn: socket.socket) -> None:
            for i in range(len(data)):
                if self.stop.wait(every):
                    return
                conn.sendall(data[i : i + 1])

        return handler

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()


def answer(body: bytes, length: int | None = None, status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: "
        f"{len(body) if length is None else length}\r\n\r\n"
    ).encode() + body


def send(data: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(data)


def client(url: str, **kw) -> FactoryClient:
    transport = RetryTransport(DeadlineTransport(), attempts=3, backoff=0.01)
    return FactoryClient(Backend("acme", url, url, transport), **kw)


# ------------------------------------------------------------------------------------ deadlines


@pytest.mark.parametrize("trickled", ["status line", "body"])
def test_a_request_has_a_deadline_even_when_every_read_gets_a_byte(trickled):
    """httpx's timeouts are per read: a server sending a byte every 0.2 s used to hold a request forever."""
    with RawServer() as server:
        data = answer(WAVES) if trickled == "status line" else answer(WAVES, length=1000)
        if trickled == "status line":
            server.handlers = [server.trickle(data, 0.2)]
        else:
            head = data[: data.index(b"\r\n\r\n") + 4]
            server.handlers = [lambda conn: (conn.sendall(head), server.trickle(b"x" * 1000, 0.2)(conn))]
        started = time.monotonic()
        with client(server.url, request_timeout=1) as c, pytest.raises(BackendError) as caught:
            c.list_waves()
    took = time.monotonic() - started
    assert str(caught.value) == f"list waves: no complete answer from {server.url} within 1s"
    assert took < 2.5 and len(server.requests) == 1, "a request cut off at its deadline is not retried"


def test_a_run_stops_at_its_deadline_with_one_line(release_repo):
    """`reconcile --timeout 2s` against a server trickling one byte every 0.5 s: exit 1 in about 2 s."""
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    with RawServer() as server:
        server.handlers = [server.trickle(answer(WAVES), 0.5)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
        env.update(PYTHONPATH=str(REPO), RECONCILE_TIMEOUT="2s")
        started = time.monotonic()
        done = subprocess.run(
            [*RECONCILE, "--dry-run", "--api-url", server.url, "--factory", "acme", str(release_repo)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"error: list waves: no complete answer from {server.url} before the run's deadline (--timeout 2s)"
    ]
    assert took < 6, f"the run took {took:.1f}s"


def test_no_request_is_sent_once_the_run_is_out_of_time():
    with RawServer(send(answer(WAVES))) as server, client(server.url, run_timeout=0.01) as c:
        time.sleep(0.05)
        with pytest.raises(BackendError) as caught:
            c.list_waves()
    assert str(caught.value) == "list waves: not sent: the run's time is up (--timeout 0.01s)"
    assert server.requests == []


@pytest.mark.parametrize("value", ["0", "-5", "soon", "10x"])
def test_timeout_must_be_a_positive_duration(value, release_repo):
    code, _, err = reconcile("--dry-run", "--timeout", value, str(release_repo))
    assert code == 1 and f"{value!r} is not a duration" in err


# ------------------------------------------------------------------------------------ truncated answers


def test_a_truncated_get_is_retried_like_a_dropped_connection():
    """An answer shorter than its Content-Length used to surface as "cannot reach" without a retry."""
    with RawServer(send(answer(WAVES[:12], length=len(WAVES))), send(answer(WAVES))) as server, client(server.url) as c:
        assert c.list_waves() == []
    assert len(server.requests) == 2


def test_a_post_whose_answer_is_cut_short_is_an_unknown_outcome_sent_once():
    with (
        RawServer(send(answer(b'{"device-num"', length=40))) as server,
        client(server.url) as c,
        pytest.raises(BackendError) as caught,
    ):
        c.rollout("v46", {"group": "canary", "dry-run": False})
    message = str(caught.value)
    assert caught.value.outcome_unknown and "fail" not in message
    assert message.startswith(f"rollout of wave 'v46': outcome unknown: the connection to {server.url} was lost: ")
    assert message.endswith("; the next run checks the factory")
    assert server.requests == ["POST /ota/factories/acme/waves/v46/rollout/ HTTP/1.1"]


# ------------------------------------------------------------------------------------ lost answers in apply


class Gateway(FactoryFront):
    """A gateway in front of the local factory that answers a rollout POST with 502 Bad Gateway,
    after forwarding it (``forward=True``: the rollout landed) or without (it did not)."""

    def __init__(self, factory_dir: Path, forward: bool):
        super().__init__(factory_dir)
        self.pass_rollouts, self.rollouts = forward, 0
        self.date = self.app.get("/ota/factories/demo/waves/").headers["date"]

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        if not (command == "POST" and path.endswith("/rollout/")):
            answer = self.forward(command, path, body, headers)
            self.date = dict(answer[1]).get("date", self.date)
            return answer
        if self.pass_rollouts:
            self.forward(command, path, body, headers)
        self.rollouts += 1
        # The factory's simulated clock, as a real gateway passes the Date on.
        return 502, [("Date", self.date)], b"<html>Bad Gateway</html>"


# Not landed: the apply watches the wave for twice the 30 s request timeout before it may say so (slow);
# tests/test_concurrent_apply.py covers that path with a short timeout in the default run.
@pytest.mark.parametrize("landed", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_a_rollout_answered_502_is_read_back_never_called_failed(landed, release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46 to canary")
    gateway = Gateway(factory_dir, forward=landed)
    try:
        code, _, err = reconcile(
            str(release_repo),
            "--api-url",
            gateway.url,
            "--factory",
            "demo",
            "--keys",
            str(factory_dir / "targets.only.key.tgz"),
        )
    finally:
        gateway.close()
    history = [h["group-name"] for h in wave(factory_dir, "rel-46")["rollout-history"]]
    assert gateway.rollouts == 1, "a write is never sent twice"
    if landed:
        assert code == 0, err
        assert (
            "~ rollout rel-46 phase 'canary' (group canary): done (the factory shows it landed after the answer "
            "was lost)"
        ) in err
        assert history == ["canary"]
    else:
        assert code == 1
        # the apply watched the wave until the write could no longer land (issue 17: settled, not guessed)
        last = err.strip().splitlines()[-1]
        assert last.startswith(
            "error: rollout rel-46 phase 'canary' (group canary) failed: rollout of wave 'rel-46': "
            "outcome unknown: HTTP 502: <html>Bad Gateway</html>; "
        )
        assert last.endswith("so it did not land and the next run may send it again")
        assert history == []
        code, _, err = reconcile(str(release_repo), "--local", str(factory_dir))  # the next run checks
        assert code == 0 and [h["group-name"] for h in wave(factory_dir, "rel-46")["rollout-history"]] == ["canary"]


# ------------------------------------------------------------------------------------ key files


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "keys.fifo"
    os.mkfifo(path)
    return path


def test_a_fifo_given_as_keys_is_refused_at_once(fifo, release_repo):
    """Opening a FIFO waits for a writer: `--keys` pointing at one used to hang the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    env.update(PYTHONPATH=str(REPO))
    started = time.monotonic()
    done = subprocess.run(
        [*RECONCILE, "--keys", str(fifo), "--local", str(release_repo.parent / "factory"), str(release_repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: --keys {fifo} is a FIFO: give the key archive file (targets.only.key.tgz)"
    ]
    assert time.monotonic() - started < 20


def test_the_key_archive_loader_never_blocks_on_a_fifo(fifo):
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_load(fifo)), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("load_key_archive_file blocked on a FIFO")
    assert outcome == [f"key archive {fifo} is not a regular file"]


def _load(path: Path) -> str:
    try:
        load_key_archive_file(path)
    except TufError as exc:
        return str(exc)
    return "loaded"


def test_read_ahead_starts_listing_the_waves_at_once(release_repo):
    """``read_ahead`` (a dry run's and a status's) starts listing the waves before anyone asks for the
    answer; it leaves the embedded factory and wrong options to the run."""
    from reconciler.cli.options import read_ahead

    with RawServer(send(answer(WAVES))) as server:
        ahead = read_ahead(server.url, "acme", False, 30.0)
        assert ahead is not None
        client, wave_list = ahead
        deadline = time.monotonic() + 10
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests == ["GET /ota/factories/acme/waves/?limit=100&page=1 HTTP/1.1"]
        assert wave_list()[0] == []  # the first page's waves (and the answer, which says there are no more)
        client.close()
    assert read_ahead(None, "acme", False) is None, "the embedded factory has no round trips to hide"
    assert read_ahead("ftp://x", "acme", False) is None, "a bad option is reported in its usual place, later"


@pytest.mark.parametrize("command", [["--dry-run"], ["status"]], ids=["plan", "status"])
def test_manifest_errors_come_first_and_the_run_does_not_wait_for_the_read_ahead(command, release_repo):
    """The wave list is asked for before the manifests are read (the server sees the request although the
    manifest is wrong); a manifest error is the one line reported, and the run does not wait for a
    server that never answers."""
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE.replace("target: 46", "target: forty-six")}, "A typo")
    with RawServer(lambda conn: time.sleep(30)) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
        env.update(PYTHONPATH=str(REPO))
        started = time.monotonic()
        done = subprocess.run(
            [*RECONCILE, *command, "--api-url", server.url, "--factory", "acme", str(release_repo)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while "GET /ota/factories/acme/waves/?limit=100&page=1 HTTP/1.1" not in server.requests:
            assert time.monotonic() < deadline, server.requests
            time.sleep(0.01)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "rel-46.yaml:" in done.stderr and "forty-six" in done.stderr, (
        done.stderr
    )
    assert took < 10, f"the run waited {took:.1f}s for an answer nobody reads"
