"""Factories over real HTTP for tests: ``reconcile-factory serve`` in its own process on a free loopback
port, and ``Front``, a loopback HTTP server in front of a factory directory that can hook its writes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx

from reconciler.localfactory import open_embedded

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_factory(path: Path, *extra: str, start_within: float = 20.0) -> Iterator[str]:
    """Serve the factory at ``path`` (``extra``: more ``serve`` options) and yield its URL once it answers;
    stop it afterwards, killing it if it does not stop within 10 s."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.localfactory", "--local", str(path), "serve", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_within
        while True:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise AssertionError(f"serve exited: {proc.stderr.read().decode()}")
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"serve did not start within {start_within:g} s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


# (status, headers, body) of one answer a front sends back.
Answer = tuple[int, list[tuple[str, str]], bytes]
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection")


def is_write(command: str, body: bytes | None) -> bool:
    """A request that changes the factory: a POST that is not a dry run."""
    return command == "POST" and not json.loads(body or b"{}").get("dry-run")


class FactoryFront:
    """HTTP on loopback in front of a factory directory's WSGI app, so a test can put a network, and
    whatever that network does (delays, lost answers, a killed sender), between the client and the
    factory. ``relay`` decides each answer; by default it is the factory's own. Answers carry only the
    factory's ``Date`` (its simulated clock), never the test machine's."""

    def __init__(self, factory_dir: Path):
        self.app = httpx.Client(
            transport=httpx.WSGITransport(app=open_embedded(factory_dir).app), base_url="http://factory"
        )
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                status, answer_headers, content = front.relay(self.command, self.path, body, headers)
                with contextlib.suppress(OSError):  # the client may have given up long ago
                    self.send_response_only(status)
                    for key, value in answer_headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)

            do_GET = do_POST = _relay

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """The factory's own answer to the request."""
        answer = self.app.request(command, path, content=body, headers=headers)
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP]
        return answer.status_code, kept, answer.content

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        return self.forward(command, path, body, headers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app.close()


class Front(FactoryFront):
    """The first real rollout it receives runs ``on_rollout`` (delay it, kill its sender, or write behind
    the client's back) before it is forwarded; ``rollouts`` counts the rollouts that reached the factory.
    ``hook_on`` names the wave action whose calls are hooked and counted (``rollout``; ``sign`` for a
    wave sign)."""

    def __init__(self, factory_dir: Path):
        self.on_rollout = lambda: None
        self.hook_on = "rollout"
        self.rollouts = 0
        self.lock = threading.Lock()
        super().__init__(factory_dir)

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        if f"/{self.hook_on}/" in path and is_write(command, body):
            hook, self.on_rollout = self.on_rollout, lambda: None
            hook()
            with self.lock:
                self.rollouts += 1
        return self.forward(command, path, body, headers)


Request = tuple[str, dict[str, str]]  # a request's path and its query


class HoldingFront(FactoryFront):
    """The factory over HTTP, noting every request (``requests``, as path and query). The answer to the
    first request ``held`` picks waits (at most ``patience`` seconds) until ``ready`` holds for the requests
    come by then, and ``came_first`` says whether it did in time: a request a client sends only once that
    answer arrived makes it False. A request ``refuse`` picks (given the requests before it) is answered
    500, as a failing service would."""

    def __init__(
        self,
        factory_dir: Path,
        *,
        held: Callable[[Request], bool],
        ready: Callable[[list[Request]], bool],
        refuse: Callable[[Request, list[Request]], bool] = lambda request, before: False,
        patience: float = 5.0,
    ):
        self.requests: list[Request] = []
        self.came_first: bool | None = None
        self._held, self._ready, self._refuse, self._patience = held, ready, refuse, patience
        self._arrived = threading.Condition()
        super().__init__(factory_dir)

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        parts = urlsplit(path)
        request = (parts.path, dict(parse_qsl(parts.query)))
        with self._arrived:
            before = list(self.requests)
            self.requests.append(request)
            self._arrived.notify_all()
            if self._refuse(request, before):
                return 500, [("Content-Type", "application/json")], b'{"detail": "server error"}'
            if self.came_first is None and self._held(request):
                self.came_first = self._arrived.wait_for(lambda: self._ready(self.requests), timeout=self._patience)
        return self.forward(command, path, body, headers)
