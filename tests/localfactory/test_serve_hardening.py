"""``reconcile-factory serve`` under idle, slow and too many connections: a valid request is answered
within a second, a full server answers 503 at once, idle and slow connections are closed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli, requestbody, serving
from reconciler.localfactory.app import make_app
from reconciler.localfactory.store import Store
from tests.helpers.factory import F, make_template

REPO = Path(__file__).resolve().parents[2]


def _token(path: Path) -> str:
    result = CliRunner().invoke(cli.main, ["--local", str(path), "token"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``serve`` in its own process, as an operator runs it."""
    path = tmp_path_factory.mktemp("hardening") / "factory"
    shutil.copytree(make_template(tmp_path_factory), path)
    token = _token(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.localfactory", "--local", str(path), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read().decode()}")
            try:
                _connect(port).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("serve did not start within 30 s") from None
                time.sleep(0.1)
        yield port, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


def _timed_get(port: int, token: str) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(f"http://127.0.0.1:{port}{F}/waves/", headers={"OSF-TOKEN": token}, timeout=5)
    return response.status_code, time.monotonic() - started


def test_150_idle_connections_do_not_starve_a_valid_request(served):
    """Waitress stopped accepting at 100 open connections: the request waited 15 s and more."""
    port, token = served
    idle = [_connect(port) for _ in range(150)]
    try:
        time.sleep(0.3)  # let the server accept what it will
        status, took = _timed_get(port, token)
        assert status == 200 and took < 1, f"HTTP {status} after {took:.2f}s"
    finally:
        for s in idle:
            s.close()


def test_a_server_full_of_requests_under_way_answers_503_at_once_then_sheds_the_slow_ones(served):
    port, token = served
    time.sleep(0.5)  # the previous test's sockets are gone
    slow = [_connect(port) for _ in range(serving.CONNECTION_LIMIT + 5)]
    try:
        for s in slow:
            s.sendall(b"GET /ota/devices/ HTTP/1.1\r\nHost: x\r\n")  # a request that never ends
        time.sleep(0.2)
        started = time.monotonic()
        with _connect(port) as extra:
            extra.sendall(f"GET {F}/waves/ HTTP/1.1\r\nHost: x\r\nOSF-TOKEN: {token}\r\n\r\n".encode())
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer, answer
        assert time.monotonic() - started < 1
        time.sleep(serving.SLOW_SEND + 0.2)  # requests still arriving after a second may be shed to make room
        status, took = _timed_get(port, token)
        assert status == 200 and took < 1, f"HTTP {status} after {took:.2f}s"
    finally:
        for s in slow:
            s.close()


@pytest.fixture
def in_process(tmp_path_factory, tmp_path, monkeypatch):
    """The shedding server in this process with short timeouts (seconds are whole in waitress)."""
    monkeypatch.setattr(serving, "IDLE_TIMEOUT", 1)
    monkeypatch.setattr(serving, "RECEIVE_TIMEOUT", 1)
    path = tmp_path / "factory"
    shutil.copytree(make_template(tmp_path_factory), path)
    store = Store.in_dir(path)
    listening = serving.create_server(make_app(store, require_token=True), host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=listening.server.run, daemon=True).start()
    yield listening.server.effective_port
    listening.server.close()
    listening.server.task_dispatcher.shutdown()
    store.close()


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server closed ``sock`` (sending ``trickle`` a byte every 0.2 s meanwhile)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for i in range(int(seconds / 0.2)):
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started
        if trickle:
            try:
                sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {seconds}s")


def test_idle_connections_are_closed(in_process):
    with _connect(in_process) as idle:
        assert _closed_within(idle, 6) < 6


def test_a_client_trickling_its_request_is_closed_although_every_byte_is_activity(in_process):
    with _connect(in_process) as slow:
        assert _closed_within(slow, 6, trickle=b"GET /ota/devices/ HTTP/1.1\r\nX-Slow: " + b"a" * 200) < 6


def _answer(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """The status line, headers (lower-case names) and body of one answer read until the server closes."""
    sock.settimeout(5)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def test_a_body_over_the_limit_is_refused_from_its_headers_before_it_arrives(served):
    """Served, waitress used to receive the whole body (buffering it to disk, up to 1 GiB) before the
    app could answer 413: a 64 MiB body was read whole. The answer now comes from the Content-Length
    alone, with the API's JSON error body and the simulated Date; the body is never sent here."""
    port, token = served
    simulated = httpx.get(f"http://127.0.0.1:{port}{F}/waves/", headers={"OSF-TOKEN": token}).headers["date"]
    for size in (64 * 1024 * 1024, requestbody.MAX_BODY_BYTES + 1):
        with _connect(port) as s:
            s.sendall(
                f"POST {F}/waves/ HTTP/1.1\r\nHost: x\r\nOSF-TOKEN: {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            status, headers, body = _answer(s)
        assert status.startswith("HTTP/1.1 413 "), (size, status)
        assert headers["content-type"] == "application/json" and headers["date"] == simulated
        assert json.loads(body) == {"message": "The request body is larger than 16 MiB", "errors": []}


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(served):
    port, token = served
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b" " * (1024 * 1024))
    with _connect(port) as s:
        s.sendall(
            f"POST {F}/waves/ HTTP/1.1\r\nHost: x\r\nOSF-TOKEN: {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        with contextlib.suppress(OSError):  # the server closes once it has answered
            for _ in range(requestbody.MAX_BODY_BYTES // (1024 * 1024) + 2):
                s.sendall(chunk)
        status, headers, body = _answer(s)
    assert status.startswith("HTTP/1.1 413 ") and headers["content-type"] == "application/json"
    assert json.loads(body)["message"] == "The request body is larger than 16 MiB"


def test_a_body_at_the_limit_reaches_the_app(served):
    port, token = served
    r = httpx.post(
        f"http://127.0.0.1:{port}{F}/waves/",
        content=b" " * requestbody.MAX_BODY_BYTES,
        headers={"OSF-TOKEN": token, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["message"] == "The request body is not valid JSON"


def test_malformed_requests_waitress_refuses_get_the_json_error_body(served):
    port, _ = served
    with _connect(port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        status, headers, body = _answer(s)
    assert status.startswith("HTTP/1.1 400 ") and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["message"].startswith("Bad Request") and answer["errors"] == []
