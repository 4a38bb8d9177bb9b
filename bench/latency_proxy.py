"""A loopback TCP proxy that delays every chunk by half a round trip each way, and times HTTP requests.

Used by the benches to show what a run costs on a real network (a CI runner to a cloud API is about
100 ms round trip) rather than on loopback: ``with LatencyProxy(upstream_port, rtt_ms=100) as proxy``
then point the client at ``proxy.url``. Every chunk read from one side is written to the other side
``rtt / 2`` after it arrived (order kept, no extra delay for chunks queued behind it), so a request
costs one round trip and concurrent requests overlap. A new connection costs one more, TCP's own
handshake: on loopback the kernel completes it at once, so the proxy holds what the client sends
until a round trip after it accepted the connection (plus the half round trip every chunk waits),
as if the client's ``connect`` had taken that round trip.

The proxy parses HTTP/1.1 framing in both directions (Content-Length or chunked bodies, no
pipelining, as httpx and waitress speak it) to record, per request, when its first byte reached the
proxy and when the last byte of its answer was delivered back. ``longest_chain`` is the length of the
longest sequence of requests each of which started only after the previous one had finished: the
number of round trips a run waits for one after the other, whatever its concurrency.

With ``tls=ThrowawayCA(dir)`` the proxy speaks HTTPS, as a real factory does, and the figures include
the handshakes: an outer relay delays the raw (encrypted) bytes, so each TLS handshake pays its round
trips (one with TLS 1.3, two with 1.2: ``tls12=True`` caps the version), and an inner server on
loopback terminates TLS with a certificate for 127.0.0.1 signed by a CA made for the run, then relays
the plain HTTP/1.1 to the upstream port and times the requests (moved back by the delay, so the
times are the client's, as without TLS). The client trusts the CA through ``SSL_CERT_FILE=ca.ca_file``,
which httpx's default SSL context reads (``httpx.create_ssl_context``, trust_env).

With ``passthrough=True`` the upstream speaks TLS itself (bench_http2.py: hypercorn, HTTP/2 or HTTP/1.1 as
ALPN chooses): the proxy only delays the raw bytes, as the outer relay of TLS mode does, and times nothing
(it cannot read the requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BODY_KEPT = 64 * 1024  # bytes of a request's body the proxy keeps: a rollout's options, for bench_http2.py to replay
_DRY_RUN = re.compile(rb'"dry-run"\s*:\s*true')  # WaveRolloutOptions asking only to count devices


@contextlib.contextmanager
def _quiet_when_stopped() -> Iterator[None]:
    """A relay cancelled because the proxy stops ends quietly. Python 3.11's asyncio logs a cancelled
    connection handler as an error ("Exception in callback ... CancelledError"), and a client that ends
    right before the proxy stops leaves its connections' last bytes in their half-round-trip delay."""
    with contextlib.suppress(asyncio.CancelledError):
        yield


class ThrowawayCA:
    """A certificate authority made for one run (P-256 keys, valid one day) and a server certificate
    it signed for 127.0.0.1 and localhost. ``ca_file`` is the PEM a client trusts; nothing is kept."""

    def __init__(self, directory: Path):
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler bench CA (throwaway)")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = directory / "server.pem"
        self.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key_file = directory / "server.key"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def server_context(self, tls12: bool = False, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(list(alpn))
        return context


@dataclass
class Exchange:
    method: str
    target: str
    start: float  # first request byte at the proxy (monotonic seconds)
    end: float = 0.0  # last answer byte delivered to the client
    dry_run: bool = False  # a request whose body asks for a dry run (a rollout that only counts devices)
    body: bytes = b""  # the request's body, its first BODY_KEPT bytes
    status: int = 0  # the answer's status code


class _Framer:
    """Incremental HTTP/1.1 message framing: feed bytes, get the message boundaries in them."""

    def __init__(self, response: bool):
        self.response = response
        self.buffer = b""
        self.state = "head"  # head | body | chunk-size | chunk-data | chunk-trailer
        self.remaining = 0
        self.started = False
        self.body = b""  # the first BODY_KEPT bytes of a body with a length (a request's JSON)

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Events in ``data``: ("start", head) when a message's head completes, ("end", body) when it ends
        (``body``: its first ``BODY_KEPT`` bytes when it had a Content-Length, else nothing)."""
        self.buffer += data
        events: list[tuple[str, bytes]] = []
        while True:
            if self.state == "head":
                cut = self.buffer.find(b"\r\n\r\n")
                if cut < 0:
                    return events
                head, self.buffer = self.buffer[:cut], self.buffer[cut + 4 :]
                events.append(("start", head))
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                }
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    self.state = "chunk-size"
                else:
                    self.remaining = int(headers.get(b"content-length", b"0") or 0)
                    self.state, self.body = "body", b""
            elif self.state == "body":
                take = min(self.remaining, len(self.buffer))
                if len(self.body) < BODY_KEPT:
                    self.body += self.buffer[: min(take, BODY_KEPT - len(self.body))]
                self.buffer, self.remaining = self.buffer[take:], self.remaining - take
                if self.remaining:
                    return events
                events.append(("end", self.body))
                self.state = "head"
            elif self.state == "chunk-size":
                cut = self.buffer.find(b"\r\n")
                if cut < 0:
                    return events
                size = int(self.buffer[:cut].split(b";")[0], 16)
                self.buffer = self.buffer[cut + 2 :]
                self.remaining, self.state = size, ("chunk-data" if size else "chunk-trailer")
            elif self.state == "chunk-data":
                take = min(self.remaining + 2, len(self.buffer))  # the data and its CRLF
                self.buffer, self.remaining = self.buffer[take:], self.remaining + 2 - take
                if self.remaining:
                    return events
                self.state = "chunk-size"
            else:  # chunk-trailer: up to the empty line
                cut = self.buffer.find(b"\r\n")
                if cut < 0:
                    return events
                line, self.buffer = self.buffer[:cut], self.buffer[cut + 2 :]
                if not line:
                    events.append(("end", b""))
                    self.state = "head"


@dataclass
class LatencyProxy:
    upstream_port: int
    rtt_ms: float
    host: str = "127.0.0.1"
    tls: ThrowawayCA | None = None
    tls12: bool = False
    passthrough: bool = False  # the upstream speaks TLS itself: delay its bytes, time nothing
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.base_events.Server] = []
        self._lock = threading.Lock()
        self._inner_port = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls or self.passthrough else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()

        async def start() -> None:
            delay = self.rtt_ms / 2000
            if self.passthrough:  # one relay of the raw bytes, straight to the upstream's TLS
                self._inner_port = self.upstream_port
                self._servers.append(await asyncio.start_server(self._handle_raw, self.host, 0))
                return
            if self.tls is None:  # one relay: delays the chunks and times the requests
                self._servers.append(await asyncio.start_server(self._handle_plain, self.host, 0))
                return
            # Two relays: the outer one delays the encrypted bytes (handshakes included), the inner one
            # terminates TLS and times the requests as the client sees them (its times moved by the delay).
            inner = await asyncio.start_server(
                lambda r, w: self._handle(r, w, delay=0.0, shift=delay),
                self.host,
                0,
                ssl=self.tls.server_context(self.tls12),
            )
            self._inner_port = inner.sockets[0].getsockname()[1]
            outer = await asyncio.start_server(self._handle_raw, self.host, 0)
            self._servers += [inner, outer]

        asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        self.port = self._servers[-1].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)  # each ends before the loop stops

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def reset(self) -> None:
        with self._lock:
            self.exchanges.clear()
            self.connections = 0

    # ------------------------------------------------------------------------------------- figures

    def longest_chain(self) -> int:
        """The length of the longest sequence of exchanges, each started after the previous one ended."""
        return len(self.longest_chain_path())

    def longest_chain_path(self) -> list[Exchange]:
        """One longest sequence of exchanges, each started after the previous one ended, in order."""
        done, depth, previous = self._chains()
        path: list[Exchange] = []
        at = max(range(len(done)), key=lambda i: depth[i], default=None)
        while at is not None:
            path.append(done[at])
            at = previous[at]
        return path[::-1]

    def rounds(self) -> list[list[Exchange]]:
        """The exchanges by round: round k holds those whose longest chain ends with them at length k (the
        first round, those that waited for no other), as a replay sends them (bench_http2.py)."""
        done, depth, _ = self._chains()
        rounds: list[list[Exchange]] = [[] for _ in range(max(depth, default=0))]
        for exchange, length in zip(done, depth, strict=True):
            rounds[length - 1].append(exchange)
        return rounds

    def _chains(self) -> tuple[list[Exchange], list[int], list[int | None]]:
        """The finished exchanges by start, the length of the longest chain ending with each, and the
        exchange before it in that chain."""
        done = sorted((e for e in self.exchanges if e.end), key=lambda e: e.start)
        depth: list[int] = []
        previous: list[int | None] = []
        for i, exchange in enumerate(done):
            before = [j for j in range(i) if done[j].end <= exchange.start]
            link = max(before, key=lambda j: depth[j], default=None)
            depth.append(1 + (depth[link] if link is not None else 0))
            previous.append(link)
        return done, depth, previous

    # ------------------------------------------------------------------------------------- relay

    async def _handle_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handle(reader, writer, delay=self.rtt_ms / 2000, shift=0.0, connected=self._connected_at())

    def _connected_at(self) -> float:
        """When a connection accepted now would be open on a real network: one round trip later (SYN,
        SYN-ACK). The client's first bytes reach the server no sooner than half a round trip after that."""
        return time.monotonic() + self.rtt_ms / 1000

    async def _handle_raw(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """The outer relay of TLS mode (and the only one with ``passthrough``): bytes as they are, each way half
        a round trip late (and TCP's handshake, ``_connected_at``)."""
        connected = self._connected_at()  # before the inner connection is opened: the client connected now
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self._inner_port)
        except OSError:
            client_writer.close()
            return
        if self.passthrough:
            with self._lock:
                self.connections += 1
        delay = self.rtt_ms / 2000
        with _quiet_when_stopped():
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, None, delay, connected),
                self._pump(upstream_reader, client_writer, None, delay),
                return_exceptions=True,
            )

    async def _handle(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        delay: float,
        shift: float,
        connected: float = 0.0,
    ) -> None:
        """Relay one client connection to the upstream port, ``delay`` late each way, timing its requests
        (``shift``: how much earlier the client sent, and later it received, than this relay saw; ``connected``:
        when the connection is open, ``_connected_at``, for the relay that delays the client's bytes)."""
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        with self._lock:
            self.connections += 1
        pending: list[Exchange] = []  # requests of this connection waiting for their answer, in order
        requests, responses = _Framer(response=False), _Framer(response=True)

        def on_request(data: bytes, arrived: float, delivered: float) -> None:
            for kind, part in requests.feed(data):
                if kind == "start":
                    method, target = ([*part.split(b"\r\n", 1)[0].split(b" "), b"", b""])[:2]
                    exchange = Exchange(method.decode(), target.decode(), start=arrived - shift)
                    pending.append(exchange)
                    with self._lock:
                        self.exchanges.append(exchange)
                elif pending:  # the request's body is in: the last one started, as answers come in order
                    pending[-1].body = part
                    pending[-1].dry_run = _DRY_RUN.search(part) is not None

        def on_response(data: bytes, arrived: float, delivered: float) -> None:
            for kind, part in responses.feed(data):
                if kind == "start" and pending:  # "HTTP/1.1 200 OK": the answer to the oldest pending request
                    pending[0].status = int(part.split(b" ", 2)[1])
                elif kind == "end" and pending:
                    pending.pop(0).end = delivered + shift

        with _quiet_when_stopped():
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, on_request, delay, connected),
                self._pump(upstream_reader, client_writer, on_response, delay),
                return_exceptions=True,
            )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, observe, delay: float, connected: float = 0.0
    ) -> None:
        """Copy reader to writer, each chunk delivered ``delay`` seconds after it arrived, and none sooner than
        ``delay`` after ``connected`` (TCP's handshake: ``_connected_at``)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
                if observe is not None:
                    observe(chunk, due - delay, time.monotonic())
            with contextlib.suppress(OSError):
                writer.close()

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((max(time.monotonic(), connected) + delay, chunk))
        except OSError:
            pass
        finally:
            queue.put_nowait((time.monotonic() + delay, b""))
            await delivering
