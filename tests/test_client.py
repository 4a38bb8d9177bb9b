"""The HTTP client against a scripted server on 127.0.0.1: retries, error lines, the server's clock."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from reconciler.errors import BackendError
from reconciler.factory.client import Backend, FactoryClient
from reconciler.factory.transport import RetryTransport


class ScriptedServer:
    """Answers each request with the next scripted (status, body) and records what it received."""

    def __init__(self, script):
        self.script, self.seen = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.seen.append((self.command, self.path, self.headers.get("OSF-TOKEN"), self.rfile.read(length)))
                status, body = outer.script.pop(0) if outer.script else (200, {})
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

            def date_time_string(self, timestamp=None):
                return "Tue, 01 Dec 2026 10:00:00 GMT"

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def client_for(url, token="s3cret"):
    transport = RetryTransport(httpx.HTTPTransport(), attempts=3, backoff=0.01)
    return FactoryClient(Backend("acme", url, url, transport, token=token))


def test_get_is_retried_on_gateway_errors_and_reads_the_servers_clock():
    answers = [(503, b"busy"), (502, b""), (200, {"waves": [], "total": 0, "next": None})]
    with ScriptedServer(answers) as server, client_for(server.url) as client:
        assert client.list_waves() == []
        assert client.server_now() == datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    assert len(server.seen) == 3
    assert server.seen[0][:3] == ("GET", "/ota/factories/acme/waves/?limit=100&page=1", "s3cret")


def test_post_is_never_retried_blindly():
    answers = [(503, {"message": "try later"}), (200, {"device-num": 5})]
    with ScriptedServer(answers) as server, client_for(server.url) as client, pytest.raises(BackendError) as caught:
        client.rollout("v46", {"group": "canary", "dry-run": False})
    assert len(server.seen) == 1
    assert str(caught.value) == (
        "rollout of wave 'v46': outcome unknown: try later (HTTP 503); the next run checks the factory"
    )
    assert caught.value.outcome_unknown
    assert caught.value.status == 503


def test_error_bodies_become_one_line_like_fioctl_shows_them():
    body = {"message": "Targets validation failed", "errors": ["CI Target differs", "hardwareIds conflict"]}
    with (
        ScriptedServer(
            [(400, body), (409, {"msg": "busy", "errors": {"tag": "has an active wave"}}), (500, b"<html>oops</html>")]
        ) as server,
        client_for(server.url) as client,
    ):
        messages = []
        for call in (
            lambda: client.create_wave(name="w", version=46, tag="t", signed=b"{}", signatures=[]),
            lambda: client.complete("w"),
            lambda: client.cancel("w"),
        ):
            with pytest.raises(BackendError) as caught:
                call()
            messages.append(str(caught.value))
    assert messages == [
        "init wave 'w': Targets validation failed; CI Target differs; hardwareIds conflict (HTTP 400)",
        "complete wave 'w': busy; tag: has an active wave (HTTP 409)",
        "cancel wave 'w': HTTP 500: <html>oops</html>",
    ]


def test_paging_follows_next_and_404_means_none():
    pages = [
        (200, {"waves": [{"name": "a"}], "total": 2, "next": "page2"}),
        (200, {"waves": [{"name": "b"}], "total": 2, "next": None}),
        (404, {"message": "not found"}),
    ]
    with ScriptedServer(pages) as server, client_for(server.url) as client:
        assert [w["name"] for w in client.list_waves()] == ["a", "b"]
        assert client.prod_targets(["production"]) == {}
        assert client.requests == 3


def test_unreachable_backend_is_one_line_without_the_token():
    with client_for("http://127.0.0.1:9", token="tok-123") as client, pytest.raises(BackendError) as caught:
        client.list_waves()
    assert str(caught.value).startswith("list waves: cannot reach http://127.0.0.1:9")
    assert "tok-123" not in str(caught.value)


def test_a_token_that_is_no_header_value_is_refused_without_being_shown():
    """h11 quotes the header value it refuses: neither the line nor the chained cause may carry the token."""
    with ScriptedServer([]) as server, client_for(server.url, token="tok-123\n") as client:
        with pytest.raises(BackendError) as caught:
            client.list_waves()
        assert server.seen == []
    assert str(caught.value).startswith("list waves: not sent: a header is not valid HTTP")
    assert "tok-123" not in str(caught.value) and caught.value.__cause__ is None


def test_a_transport_error_keeps_its_cause_for_debug():
    with client_for("http://127.0.0.1:9") as client, pytest.raises(BackendError) as caught:
        client.list_waves()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "answer, message",
    [
        ([1, 2, 3], "list waves: unexpected answer from the factory (a JSON list where a object belongs)"),
        ({"waves": "abc"}, "list waves: unexpected answer from the factory (a JSON str where a list belongs)"),
    ],
)
def test_answers_of_the_wrong_shape_are_one_line(answer, message):
    with (
        ScriptedServer([(200, answer)]) as server,
        client_for(server.url) as client,
        pytest.raises(BackendError) as caught,
    ):
        client.list_waves()
    assert str(caught.value) == message


def test_a_wave_without_a_version_is_one_line():
    from reconciler.factory.wire import parse_wave

    with pytest.raises(BackendError) as caught:
        parse_wave({"name": "w"})
    assert str(caught.value) == "list waves: unexpected wave 'w' in the factory's answer (KeyError: 'version')"


def test_one_wave_parse_gives_what_the_plan_and_the_status_read():
    from reconciler.core import WaveStatus
    from reconciler.factory.wire import parse_wave

    def wave(status):
        return parse_wave(
            {
                "name": "w",
                "version": "46",
                "tag": "production",
                "status": status,
                "change-meta": {
                    "created-at": "2026-11-20T10:00:00Z",
                    "created-by": "ci",
                    "updated-at": "2026-11-21T10:00:00+01:00",
                    "updated-by": "bob",
                },
                "rollout-history": [
                    {"group-name": "canary", "rollout-at": "2026-11-20T11:00:00Z", "rollout-by": "alice"},
                    {"is-factory-wide": True, "rollout-at": "2026-11-20T12:00:00Z", "num-devices": 7},
                ],
            }
        )

    done, active = wave("complete"), wave("active")
    assert (done.status, done.version, done.created_by) == (WaveStatus.COMPLETE, 46, "ci")
    assert (done.finished_at, done.finished_by) == (datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc), "bob")
    assert (active.finished_at, active.finished_by) == (None, "")  # an active wave's last change finishes nothing
    canary, wide = active.history
    assert (canary.group, canary.by, canary.full_group, canary.devices) == ("canary", "alice", False, 0)
    assert (wide.group, wide.factory_wide, wide.devices) == ("", True, 7)


def test_a_server_that_ignores_page_does_not_loop_forever():
    same = (200, {"waves": [{"name": "a"}], "total": 3, "next": "again"})
    with ScriptedServer([same] * 50) as server, client_for(server.url) as client:
        assert len(client.list_waves()) == 3
    assert len(server.seen) == 3


def test_credentials_in_the_api_url_are_never_shown():
    from reconciler.factory.client import select_backend

    backend = select_backend(api_url="https://ci:hunter2@api.example.com/", factory="acme", local=None)
    assert backend.label == "https://api.example.com" and "hunter2" in backend.base_url


@pytest.mark.parametrize(
    "url, factory, message",
    [
        ("http://[::1", "acme", "--api-url 'http://[::1' is not a valid URL"),
        ("ftp://host/", "acme", "--api-url must be an http:// or https:// URL"),
        ("https://api.example.com", "../../x?y=", "factory name '../../x?y=' may contain only"),
    ],
)
def test_bad_backend_options_are_refused(url, factory, message):
    from reconciler.errors import UserError
    from reconciler.factory.client import select_backend

    with pytest.raises(UserError) as caught:
        select_backend(api_url=url, factory=factory, local=None)
    assert str(caught.value).startswith(message)


class SlowWaveServer:
    """A served wave list of ``total`` waves, ``per_page`` a page, each answer ``delay`` seconds late."""

    def __init__(self, total: int, per_page: int, delay: float):
        import time
        from urllib.parse import parse_qs, urlparse

        outer = self
        self.started: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.started.append(time.monotonic())
                query = parse_qs(urlparse(self.path).query)
                page = int(query.get("page", ["1"])[0])
                if "/status/" in self.path:
                    status, body = (404, {"message": "no such wave"}) if "missing" in self.path else (200, {})
                else:
                    names = [f"w{i}" for i in range((page - 1) * per_page, min(page * per_page, total))]
                    status = 200
                    body = {
                        "waves": [{"name": n} for n in names],
                        "total": total,
                        "next": "more" if page * per_page < total else None,
                    }
                time.sleep(delay)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_the_other_wave_pages_are_read_together_once_the_first_tells_how_many():
    import time

    with SlowWaveServer(total=250, per_page=50, delay=0.3) as server, client_for(server.url) as client:
        t = time.monotonic()
        waves = client.list_waves()
        elapsed = time.monotonic() - t
    assert [w["name"] for w in waves] == [f"w{i}" for i in range(250)]  # in page order
    assert len(server.started) == 5
    # pages 2..5 started together, after page 1 answered: two round trips, not five
    assert max(server.started[1:]) - min(server.started[1:]) < 0.25
    assert elapsed < 1.2


def test_gather_keeps_call_order_and_raises_the_first_failure_in_that_order():
    with SlowWaveServer(total=1, per_page=1, delay=0.2) as server, client_for(server.url) as client:
        calls = [
            lambda: client.wave_status("ok-1"),
            lambda: client.wave_status("missing-2"),
            lambda: client.wave_status("missing-3"),
        ]
        with pytest.raises(BackendError) as caught:
            client.gather(calls)
        assert str(caught.value).startswith("status of wave 'missing-2'")
        assert client.gather([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]


def test_a_batch_sends_its_reads_together_and_names_each_answer():
    import functools

    with SlowWaveServer(total=3, per_page=3, delay=0.3) as server, client_for(server.url) as client:
        batch = client.batch()
        status = batch.add(functools.partial(client.wave_status, "ok-1"))
        waves = batch.add(client.list_waves)
        batch.run()
        assert (status.result(), [w["name"] for w in waves.result()]) == ({}, ["w0", "w1", "w2"])
        # both started before either answered: one round trip, not two
        assert len(server.started) == 2 and max(server.started) - min(server.started) < 0.25
        failing = client.batch()
        failing.add(functools.partial(client.wave_status, "ok-2"))
        failing.add(functools.partial(client.wave_status, "missing-3"))
        failing.add(functools.partial(client.wave_status, "missing-4"))
        with pytest.raises(BackendError) as caught:
            failing.run()
        assert str(caught.value).startswith("status of wave 'missing-3'")


def test_a_reply_is_not_read_before_its_batch_ran():
    with client_for("http://127.0.0.1:9") as client:
        reply = client.batch().add(lambda: 1)
        with pytest.raises(RuntimeError):
            reply.result()
