"""Preconnected connections (``DeadlineTransport.preconnect``, and ``connections.start`` before any client
exists) carry the requests that follow, over plain HTTP and TLS, against a real loopback server that
counts the connections it accepts and those that ended."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from reconciler import connections
from reconciler.cli import preconnect
from reconciler.factory import select_backend
from reconciler.factory.transport import DeadlineTransport, RetryTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from latency_proxy import ThrowawayCA  # the benches' throwaway CA, on the path just above


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection carries several requests

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # an apply opens up to 64 at once; the default backlog of 5 would hold them back

    def __init__(self, context: ssl.SSLContext | None):
        super().__init__(("127.0.0.1", 0), _Answer)
        self.context, self.accepted, self.ended = context, 0, 0
        self.accept_delay = 0.0

    def get_request(self) -> tuple[socket.socket, object]:
        time.sleep(self.accept_delay)  # a slow server: handshakes wait for it
        sock, address = super().get_request()
        self.accepted += 1
        return sock, address

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            if self.context is not None:  # the handshake in the connection's own thread
                request = self.context.wrap_socket(request, server_side=True)
            super().finish_request(request, client_address)
        finally:
            self.ended += 1  # the client closed it (or its handshake failed)


@contextlib.contextmanager
def serving(context: ssl.SSLContext | None) -> Iterator[_CountingServer]:
    server = _CountingServer(context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def spares(transport: DeadlineTransport, url: httpx.URL) -> int:
    return transport._backend.spares.waiting(url.host, url.port or 0)


def wait_for(condition: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def requests_at_once(client: httpx.Client, count: int) -> list[int]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: client.get("/").status_code, range(count)))


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_requests_after_a_preconnect_open_no_connection(tls, tmp_path, monkeypatch):
    ca = ThrowawayCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))  # read by the transport's SSL context
    with serving(ca.server_context() if tls else None) as server:
        url = httpx.URL(f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}")
        transport = DeadlineTransport()
        transport.preconnect(url, 4)
        wait_for(lambda: spares(transport, url) == 4 and server.accepted == 4)
        transport.preconnect(url, 3)  # fewer than are open: opens none
        with httpx.Client(transport=RetryTransport(transport), base_url=url) as client:
            assert requests_at_once(client, 4) == [200] * 4
            assert server.accepted == 4, "the four requests went over preconnected connections"
            assert requests_at_once(client, 2) == [200] * 2
            assert server.accepted == 4, "and they stayed in the pool for the next ones"


def test_a_request_waits_for_a_connection_still_opening_instead_of_opening_its_own(tmp_path, monkeypatch):
    """A plan's requests often go out while the connections opened for them are still in their TLS
    handshakes; each one opening a connection of its own would wait for the same handshakes."""
    ca = ThrowawayCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    with serving(ca.server_context()) as server:
        server.accept_delay = 0.2
        url = httpx.URL(f"https://127.0.0.1:{server.server_address[1]}")
        transport = DeadlineTransport()
        transport.preconnect(url, 2)
        assert transport._backend.spares.opening == 2 and spares(transport, url) == 0
        with httpx.Client(transport=RetryTransport(transport), base_url=url) as client:
            assert requests_at_once(client, 2) == [200] * 2
        assert server.accepted == 2, "both requests went over the two connections that were opening"


def test_waiting_for_a_connection_still_opening_counts_against_the_connect_timeout(tmp_path, monkeypatch):
    """A server that accepts connections but never answers a TLS handshake: the request waits for the
    spare still opening, then for none of its own; the two together stay within one connect timeout."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ThrowawayCA(tmp_path).ca_file))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes TCP; nobody speaks TLS
        url = httpx.URL(f"https://127.0.0.1:{silent.getsockname()[1]}")
        transport = DeadlineTransport(retries=0)  # one attempt to connect (httpcore retries each failed one)
        transport.preconnect(url, 1)
        started = time.monotonic()
        with (
            httpx.Client(transport=transport, base_url=url, timeout=httpx.Timeout(10, connect=1.0)) as client,
            pytest.raises(httpx.ConnectTimeout),
        ):
            client.get("/")
        assert time.monotonic() - started < 1.7, "one connect timeout in all, not one for the spare and one more"


def test_a_preconnect_that_cannot_connect_is_no_error_and_the_request_reports_its_own():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # a port nothing listens on
        url = httpx.URL(f"http://127.0.0.1:{held.getsockname()[1]}")
        transport = DeadlineTransport()
        transport.preconnect(url, 3)
        wait_for(lambda: transport._backend.spares.opening == 0)
        assert spares(transport, url) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.Client(transport=transport, base_url=url).get("/")
        transport.close()


def test_a_server_whose_certificate_fails_gets_no_spare_and_the_request_fails_as_without(tmp_path, monkeypatch):
    trusted, other = ThrowawayCA(tmp_path / "trusted"), ThrowawayCA(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted.ca_file))
    with serving(other.server_context()) as server:
        url = httpx.URL(f"https://127.0.0.1:{server.server_address[1]}")
        transport = DeadlineTransport()
        transport.preconnect(url, 2)
        wait_for(lambda: transport._backend.spares.opening == 0)
        assert spares(transport, url) == 0
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.Client(transport=transport, base_url=url).get("/")
        transport.close()


def test_spares_opened_after_the_transport_closed_are_closed_not_kept():
    with serving(None) as server:
        url = httpx.URL(f"http://127.0.0.1:{server.server_address[1]}")
        transport = DeadlineTransport()
        transport.preconnect(url, 3)
        transport.close()  # the run ends while they open
        wait_for(lambda: transport._backend.spares.opening == 0)
        assert spares(transport, url) == 0
        transport.preconnect(url, 3)
        assert transport._backend.spares.opening == 0, "a closed transport opens none"


def test_a_closed_transport_opens_no_connection_for_a_request_still_under_way():
    """A read-ahead nobody waits for any more may still be sending when its client closes; a connection it
    opened then would belong to no pool, and stay open until the process ends."""
    with serving(None) as server:
        url = httpx.URL(f"http://127.0.0.1:{server.server_address[1]}")
        transport = DeadlineTransport(retries=0)
        transport.close()
        with pytest.raises(httpx.ConnectError, match="closed"):
            httpx.Client(transport=transport, base_url=url).get("/")
        assert server.accepted == 0


def test_closing_the_spares_empties_the_queue_a_waiting_request_holds():
    """A request waiting in ``take`` holds its origin's queue; a spare handed over just before the close
    must not reach it as a closed socket."""
    spares = connections.Spares()
    with socket.socket() as sock:
        spares._queues[("127.0.0.1", 1)] = [(time.monotonic(), sock)]
        held = spares._queues[("127.0.0.1", 1)]
        spares.close()
        assert held == [] and sock.fileno() == -1
        assert spares.take("127.0.0.1", 1, wait=1.0) is None


def test_a_spare_whose_descriptor_is_past_1024_is_asked_if_readable_as_any_other(tmp_path):
    """httpcore asks an idle connection whether it is readable before reusing it; ``select`` refuses
    descriptors past 1,024, which a long-lived process reaches."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(soft, hard) < 1200:
        pytest.skip("needs 1,200 file descriptors")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with serving(None) as server:
            url = httpx.URL(f"http://127.0.0.1:{server.server_address[1]}")
            transport = DeadlineTransport()
            transport.preconnect(url, 1)
            wait_for(lambda: spares(transport, url) == 1)
            assert transport._backend.spares._queues[(url.host, url.port)][0][1].fileno() > 1024
            with httpx.Client(transport=RetryTransport(transport), base_url=url) as client:
                assert [client.get("/").status_code for _ in range(3)] == [200] * 3
            assert server.accepted == 1, "the spare carried all three"
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_connections_started_before_any_client_carry_the_clients_requests(tls, tmp_path, monkeypatch):
    """``connections.start`` opens them as the command line is read; the transport ``select_backend``
    makes for that API claims them, so its first requests wait for no handshake."""
    ca = ThrowawayCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
    with serving(ca.server_context() if tls else None) as server:
        api = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
        connections.start(api, allow_insecure_http=False, count=3)
        port = server.server_address[1]
        wait_for(
            lambda: connections._early[("https" if tls else "http", "127.0.0.1", port)].waiting("127.0.0.1", port) == 3
        )
        backend = select_backend(api_url=api, factory="demo", local=None)
        assert connections._early == {}, "claimed, once"
        with httpx.Client(transport=backend.transport, base_url=api) as client:
            assert requests_at_once(client, 3) == [200] * 3
        assert server.accepted == 3, "the three requests went over the connections opened first"
        wait_for(lambda: server.ended == 3)


def test_connections_nobody_claims_are_closed_by_discard():
    with serving(None) as server:
        connections.start(f"http://127.0.0.1:{server.server_address[1]}", allow_insecure_http=False, count=2)
        wait_for(lambda: server.accepted == 2)
        connections.discard()
        wait_for(lambda: server.ended == 2)
        assert connections.claim("http", "127.0.0.1", server.server_address[1]) is None


@pytest.mark.parametrize(
    "url",
    ["http://192.0.2.1:8080", "ftp://127.0.0.1/", "not a url", "https://", "http://[::1"],
    ids=["plain-http-elsewhere", "not-http", "text", "no-host", "broken"],
)
def test_no_connection_is_started_for_a_url_the_run_refuses(url):
    """Plain http:// to another machine needs --allow-insecure-http (factory/client.py says why); the
    rest is no API URL at all. Nothing is opened, nothing raised: the run reports it in its place."""
    connections.start(url, allow_insecure_http=False)
    assert connections._early == {}


@pytest.mark.parametrize(
    "mistake",
    [["--keys", "k.tgz", "--signer", "file:k.tgz"], []],
    ids=["options-refused-before-any-client", "manifest-error-after-the-read-ahead"],
)
def test_a_run_that_stops_early_closes_the_connections_it_opened(mistake, tmp_path, monkeypatch):
    """The command line starts connecting before it checks the rest of itself or reads the manifests; a
    run that stops there, before or after a client claimed them, leaves none open."""
    from click.testing import CliRunner

    from reconciler.cli import main

    (tmp_path / "broken.yaml").write_text("name: [\n")
    monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
    with serving(None) as server:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        args = ["--dry-run", str(tmp_path), "--api-url", api, "--factory", "demo", *mistake]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        wait_for(lambda: server.accepted >= connections.READS_PER_PLAN)
        wait_for(lambda: server.ended == server.accepted)
    assert connections._early == {}


@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
def test_a_plan_opens_its_observations_connections_as_its_command_line_is_read(dry_run, tmp_path, monkeypatch):
    """A plan's observation goes out all its reads together, as soon as a dry run has the wave list or an
    apply holds its lease: the connections for them open as its command line is read, one wave per
    manifest file, and an apply's own reads. Here the run stops at its manifests (not YAML), before any
    is read: the connections were sized from the files alone."""
    from click.testing import CliRunner

    from reconciler.cli import main

    for number in range(5):
        (tmp_path / f"wave-{number}.yaml").write_text("name: [\n")
    (tmp_path / ".hidden.yaml").write_text("name: [\n")  # not a manifest: the loader skips it too
    monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
    wanted = connections.observation_connections(5, apply=not dry_run)
    assert wanted > connections.READS_PER_PLAN
    with serving(None) as server:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        args = [str(tmp_path), "--api-url", api, "--factory", "demo", *(["--dry-run"] if dry_run else [])]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        wait_for(lambda: server.accepted >= wanted)
        wait_for(lambda: server.ended == server.accepted)
        assert server.accepted == wanted
    assert connections._early == {}


def test_a_status_opens_its_reads_connections_as_its_command_line_is_read(tmp_path, monkeypatch):
    """A status sends its reads together once it has the wave list (the wave statuses with the production
    targets): their connections open as its command line is read, one per manifest file and the first
    few. Opened from the wave list's first page, they were ready two round trips after it, and over TLS at
    300 ms the status bench's reads went out in two rounds. Here the run stops at its manifests."""
    from click.testing import CliRunner

    from reconciler.cli import main

    for number in range(5):
        (tmp_path / f"wave-{number}.yaml").write_text("name: [\n")
    monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
    wanted = connections.status_connections(5)
    assert wanted > connections.READS_PER_PLAN
    with serving(None) as server:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["status", str(tmp_path), "--api-url", api, "--factory", "demo"])
        assert result.exit_code == 1, result.output
        wait_for(lambda: server.accepted >= wanted)
        wait_for(lambda: server.ended == server.accepted)
        assert server.accepted == wanted
    assert connections._early == {}


def test_a_status_opens_a_connection_per_wave_it_may_read_at_most_as_many_as_go_out_together():
    assert connections.status_connections(0) == connections.READS_PER_PLAN
    assert connections.status_connections(3) == connections.READS_PER_PLAN + 3
    assert connections.status_connections(1_000) == connections.MAX_CONCURRENT


def test_an_observation_opens_at_most_as_many_connections_as_requests_go_out_together():
    assert connections.observation_connections(0) == connections.READS_PER_PLAN
    assert connections.observation_connections(2, apply=True) == connections.observation_connections(3)
    assert connections.observation_connections(1_000) == connections.MAX_CONCURRENT
    assert connections.observation_connections(1_000, apply=True) == connections.MAX_CONCURRENT


def test_a_plain_http_api_reads_no_ca_bundle(monkeypatch):
    """Making an SSL context reads the CA bundle (50-80 ms); a run against http:// never needs one."""
    monkeypatch.setenv("RECONCILE_API_TOKEN", "t")
    plain = select_backend(api_url="http://127.0.0.1:9", factory="demo", local=None).transport
    secure = select_backend(api_url="https://127.0.0.1:9", factory="demo", local=None).transport
    assert isinstance(plain, RetryTransport) and isinstance(secure, RetryTransport)
    assert isinstance(plain.inner, DeadlineTransport) and isinstance(secure.inner, DeadlineTransport)
    assert plain.inner._ssl_context is None and plain.inner._backend.spares._context is None
    assert secure.inner._ssl_context is secure.inner._backend.spares.context


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--dry-run", "--api-url", "https://api.example", "releases"], {}, "https://api.example"),
        (["--dry-run", "--api-url=https://api.example", "releases"], {}, "https://api.example"),
        (["--dry-run", "releases"], {"RECONCILE_API_URL": "https://env.example"}, "https://env.example"),
        (["--api-url", "https://a.example", "--api-url", "https://b.example"], {}, "https://b.example"),
        (["--api-url", "https://a.example"], {"RECONCILE_API_URL": "https://env.example"}, "https://a.example"),
        (["status", "--api-url", "https://api.example"], {}, "https://api.example"),
        (["import", "adopted", "--api-url", "https://api.example"], {}, "https://api.example"),
        (["--check", "--api-url", "https://api.example"], {}, None),
        (["--watch", "releases"], {"RECONCILE_API_URL": "https://env.example"}, None),
        (["--unlock", "--api-url", "https://api.example"], {}, None),
        (["--api-url", "https://api.example", "--help"], {}, None),
        (["status", "-h"], {"RECONCILE_API_URL": "https://env.example"}, None),
        (["devices", "--tag", "t", "--api-url", "https://api.example"], {}, None),
        (["keys", "k.tgz"], {"RECONCILE_API_URL": "https://env.example"}, None),
        (["--", "--api-url", "https://api.example"], {}, None),
        (["--", "--check"], {"RECONCILE_API_URL": "https://env.example"}, "https://env.example"),
        (["--api-url"], {}, None),
        (["--api-url", "https://api.example"], {"_RECONCILE_COMPLETE": "bash_complete"}, None),
    ],
    ids=[
        "option",
        "option=value",
        "environment",
        "the-last-option",
        "option-over-environment",
        "status",
        "import",
        "check",
        "watch",
        "unlock",
        "help",
        "status-help",
        "devices",
        "keys",
        "paths-after-dashes",
        "a-path-named-check",
        "no-value",
        "shell-completion",
    ],
)
def test_the_api_url_is_found_before_click_reads_the_command_line(argv, environ, expected):
    """``preconnect.api_url``: what the command line will connect to as soon as click has read it (the
    main command unless --check, --watch or --unlock; ``status``), found without click."""
    assert preconnect.api_url(argv, environ) == expected


def test_the_subcommands_preconnect_knows_are_the_command_lines():
    from reconciler.cli.reconcile import SUBCOMMANDS

    assert set(SUBCOMMANDS) == preconnect.SUBCOMMANDS
    assert preconnect.CONNECTING_SUBCOMMANDS <= preconnect.SUBCOMMANDS


def test_the_program_starts_connecting_before_it_imports_the_command_line(tmp_path):
    """``reconcile`` (``cli.program``) asks for its first connections before click and the command line's
    modules are imported (``preconnect``), and again, for the same URL, once click has read the options
    (``connect_early``). The run then stops (no manifests in the directory): what counts is the order."""
    calls = tmp_path / "calls"
    script = (
        "import sys\n"
        "from reconciler import connections\n"
        "real = connections.start\n"
        "def start(url, allow_insecure_http, count=connections.READS_PER_PLAN):\n"
        f"    with open({str(calls)!r}, 'a') as out:\n"
        "        out.write(f\"{'click' in sys.modules} {url}\\n\")\n"
        "    return real(url, allow_insecure_http, count)\n"
        "connections.start = start\n"
        "import reconciler.cli\n"
        "assert 'click' not in sys.modules, 'importing reconciler.cli imported the command line'\n"
        "reconciler.cli.program()\n"
    )
    with serving(None) as server:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "GITHUB_"))}
        argv = ["--dry-run", str(tmp_path), "--api-url", api, "--factory", "demo"]
        done = subprocess.run(
            [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 1, done.stderr
    assert "no *.yaml or *.yml manifests found" in done.stderr
    assert calls.read_text().splitlines() == [f"False {api}", f"True {api}"]
