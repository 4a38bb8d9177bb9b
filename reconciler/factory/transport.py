"""The transport under the factory client: retries of idempotent requests and deadlines.

httpx's timeouts bound each socket operation, so a server that trickles one byte every few seconds
would hold a request forever. ``DeadlineTransport`` bounds every request as a whole
(``REQUEST_TIMEOUT``) and every run (``FactoryClient(run_timeout=...)``, ``--timeout``): each socket
operation waits at most until the earlier of the two. ``RetryTransport`` retries idempotent requests
on connection errors, truncated answers and 502/503/504 with backoff; a POST is never retried blindly.

An answer is read with a size cap (``MAX_ANSWER``): a server that sends without end used to be read
into memory until the deadline (1.2 GiB in 30 s on loopback). ``_DeadlineBody`` caps the bytes as they
arrive and ``read_capped`` the decoded answer, so a small compressed answer cannot expand without end.
The answers read at once share a second cap (``MAX_READING``, ``_Reading``): up to ``MAX_CONCURRENT``
reads go out together, and 13 endless answers read at once held 877 MiB under the per-answer cap alone
(bench/bench_memory.py, mode concurrent). An answer's bytes count from their arrival until the answer is
decoded and handed over.

A run opens connections before it needs them (``DeadlineTransport.preconnect``, reconciler/connections.py):
each new connection over TLS waits for the TCP and TLS handshakes, two round trips, and a plan's
observation sends up to ``MAX_CONCURRENT`` requests at once, most over new connections. The first few
open as the command line is read (``connections.start``; the transport made for that API claims them),
the rest while a dry run or a status loads its manifests, or while an apply takes its lease: they wait
for nothing later.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from reconciler import connections

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUS = frozenset({502, 503, 504})
REQUEST_TIMEOUT = 30.0  # seconds one request may take from connecting to its answer's last byte
CONNECT_TIMEOUT = connections.CONNECT_TIMEOUT  # seconds to open a connection (TLS handshake included)
MAX_CONCURRENT = connections.MAX_CONCURRENT  # requests sent at once (connections.py says why 64)
# Request extension: the time.monotonic() by which a request must be answered in full, retries included.
DEADLINE = "reconciler.deadline"
# The deadline of the request being sent or read on this thread; socket operations wait until it.
_deadline: ContextVar[float | None] = ContextVar("reconciler_request_deadline", default=None)
# Bytes one answer may have, as sent and once decoded. The largest legitimate answers are a device page
# (1,000 devices of about 1 KB each: 1 MB), a wave's signed targets (a few MB) and the production targets
# of every tag in one request (a targets.json per tag: tens of MB for a big factory). 64 MiB leaves room
# for those and keeps a run's memory bounded whatever a server sends.
MAX_ANSWER = 64 * 1024 * 1024
# Bytes of all the answers being read at once (as sent, then decoded): the largest legitimate answer and
# room for the others read with it, so a run's memory stays bounded whatever a server sends.
MAX_READING = 2 * MAX_ANSWER
# Response extension: the ``_Reading`` of the transport that read the answer (``read_capped`` counts in it).
READING = "reconciler.reading"
_RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)


class AnswerTooLarge(httpx.TransportError):
    """An answer longer than ``MAX_ANSWER``, or (``together``) the answers being read at once over
    ``MAX_READING``: reading stopped there. Not retried: it would be as long again."""

    def __init__(self, message: str, together: bool = False):
        super().__init__(message)
        self.together = together


class _Reading:
    """The bytes held by the answers being read at once, at most ``limit`` of them (thread-safe).

    When they go over, every answer being read then stops too, not only the one that crossed the line:
    each thread's freed memory stays with that thread's allocator arena, so letting the others read on
    (each up to ``MAX_ANSWER``) grew the process to 411 MiB with a 128 MiB cap (bench_memory.py,
    mode concurrent); stopping them kept it at 171 MiB. Answers started after that read as usual."""

    def __init__(self, limit: int = MAX_READING):
        self.limit, self.held = limit, 0
        self.overruns = 0  # times the cap was hit: an answer started before the last one stops
        self._lock = threading.Lock()

    def take(self, size: int, started: int) -> None:
        """Count ``size`` more bytes of an answer begun when ``overruns`` was ``started``."""
        with self._lock:
            if started != self.overruns or self.held + size > self.limit:
                if started == self.overruns:
                    self.overruns += 1
                raise AnswerTooLarge(f"the answers read at once are over {self.limit // 2**20} MiB", together=True)
            self.held += size

    def give(self, size: int) -> None:
        with self._lock:
            self.held -= size


def read_capped(response: httpx.Response) -> httpx.Response:
    """``response`` read in full, at most ``MAX_ANSWER`` bytes once decoded: a new response holding the
    decoded bytes (and no ``Content-Encoding``), or ``AnswerTooLarge``. httpx's own ``read`` decodes
    without bound, so 64 MiB of gzip could become gigabytes. The decoded bytes count in the transport's
    ``_Reading`` (the ``READING`` extension) until they are handed over."""
    reading: _Reading = response.extensions.get(READING) or _Reading()
    started = reading.overruns
    chunks, size = [], 0
    try:
        with contextlib.closing(response):
            for chunk in response.iter_bytes():
                if size + len(chunk) > MAX_ANSWER:
                    raise AnswerTooLarge(f"the answer is larger than {MAX_ANSWER // 2**20} MiB")
                reading.take(len(chunk), started)
                size += len(chunk)
                chunks.append(chunk)
    finally:
        reading.give(size)
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in (b"content-encoding", b"content-length")]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=response.request,
        extensions=response.extensions,
    )


class RetryTransport(httpx.BaseTransport):
    """Retries idempotent requests on connection failures, truncated answers and gateway errors, with
    exponential backoff that never sleeps past the request's deadline (the ``DEADLINE`` extension).
    The answer of an idempotent request is read here in full (as sent, not yet decoded: at most
    ``MAX_ANSWER`` bytes), so an answer cut short (fewer bytes than announced) is retried like a
    dropped connection instead of surfacing later as "cannot reach"."""

    def __init__(self, inner: httpx.BaseTransport, attempts: int = 4, backoff: float = 0.25):
        self.inner, self.attempts, self.backoff = inner, attempts, backoff

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.attempts):
            delay = self.backoff * 2**attempt
            try:
                response = self.inner.handle_request(request)
                if request.method in IDEMPOTENT:
                    response = _read_raw(response)
            except _RETRYABLE:
                if not self._may_retry(request, attempt, delay):
                    raise
            else:
                if response.status_code not in RETRY_STATUS or not self._may_retry(request, attempt, delay):
                    return response
                response.close()
            time.sleep(delay)
        raise AssertionError("the last attempt always returns or raises")

    def preconnect(self, url: httpx.URL, count: int) -> None:
        if isinstance(self.inner, DeadlineTransport):
            self.inner.preconnect(url, count)

    def _may_retry(self, request: httpx.Request, attempt: int, delay: float) -> bool:
        deadline = request.extensions.get(DEADLINE)
        return (
            request.method in IDEMPOTENT
            and attempt < self.attempts - 1
            and (deadline is None or time.monotonic() + delay < deadline)
        )

    def close(self) -> None:
        self.inner.close()


def origin(url: httpx.URL) -> connections.Origin:
    """(scheme, host, port) of ``url`` as httpcore names the origin it connects to: the key spare
    connections are kept and claimed under (connections.py)."""
    return url.scheme, url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)


def _read_raw(response: httpx.Response) -> httpx.Response:
    """The response with its body read as sent (still encoded): ``read_capped`` decodes it later."""
    with contextlib.closing(response):
        raw = b"".join(response.iter_raw())
    return httpx.Response(response.status_code, headers=response.headers, content=raw, extensions=response.extensions)


class _LinearPool(httpcore.ConnectionPool):
    """httpcore's pool, its assignment pass linear in the connections. httpcore 1.0.9 counts the pool's
    connections once for each idle one (``len([connection.is_idle() for connection in self._connections])``)
    and lists the available and idle connections again for each queued request, on every request and
    every answer: with the 64 connections of the plan bench's observation, about 4,000 calls a pass and
    40-50 ms of the client's CPU per plan. encode/httpcore#1035 fixes it upstream (open since 2025); the
    pydantic fork merged it (pydantic/httpx2#974). The decisions are httpcore 1.0.9's own, for HTTP/1.1
    (the pool never speaks HTTP/2, see below): the same connections closed and the same connection
    given to each request, in one pass. Used with the httpcore it was written against (``_POOL``)."""

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        closing: list[httpcore.ConnectionInterface] = []
        connections = self._connections
        for connection in list(connections):
            if connection.is_closed():
                connections.remove(connection)
            elif connection.has_expired() or (
                connection.is_idle() and len(connections) > self._max_keepalive_connections
            ):
                connections.remove(connection)
                closing.append(connection)
        queued = [request for request in self._requests if request.is_queued()]
        if not queued:
            return closing
        # A connection made in this pass is neither available nor idle until it has connected, and giving
        # a connection to a request changes neither, so both lists hold for the whole pass but for the
        # idle connection closed to make room (removed from both).
        idle = [connection for connection in connections if connection.is_idle()]
        available: dict[tuple[bytes, bytes, int], list[httpcore.ConnectionInterface]] = {}  # by origin
        for pool_request in queued:
            origin = pool_request.request.url.origin
            key = (origin.scheme, origin.host, origin.port)  # an Origin compares, but does not hash
            if key not in available:
                available[key] = [c for c in connections if c.can_handle_request(origin) and c.is_available()]
            if available[key]:
                pool_request.assign_to_connection(available[key][0])
                continue
            if len(connections) >= self._max_connections:
                if not idle:
                    continue
                made_room = idle.pop(0)
                connections.remove(made_room)
                closing.append(made_room)
                for others in available.values():
                    if made_room in others:
                        others.remove(made_room)
            connection = self.create_connection(origin)
            connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing


# The pool class: ``_LinearPool`` with the httpcore whose pass it reproduces, else httpcore's own.
_POOL: type[httpcore.ConnectionPool] = _LinearPool if httpcore.__version__ == "1.0.9" else httpcore.ConnectionPool


class DeadlineTransport(httpx.BaseTransport):
    """HTTP(S) over httpcore, every request bounded as a whole: it must be answered completely by the
    ``DEADLINE`` request extension, or within ``timeout`` seconds when there is none.

    The deadline reaches the sockets through ``_deadline``: it is set while the request is sent and
    its headers read, and again around each read of the body, so a trickling server meets a read
    timeout at the deadline instead of resetting httpx's per-read timeout with every byte."""

    def __init__(
        self,
        timeout: float = REQUEST_TIMEOUT,
        retries: int = 2,
        spares: connections.Spares | None = None,
        tls: bool = True,
    ) -> None:
        """``spares``: connections opened already (``connections.claim``), whose SSL context the pool shares.
        ``tls``: False for a plain http:// API, which then makes no SSL context (reading the CA bundle
        costs 50-80 ms of every run)."""
        self.timeout = timeout
        self._reading = _Reading()
        self._backend = _DeadlineBackend(spares or connections.Spares())
        self._ssl_context = self._backend.spares.context if tls else None
        # As many connections as requests go out at once (httpcore's default is 10), so none waits for a slot.
        # HTTP/1.1 only: HTTP/2 would carry them all on one connection, but httpcore's sync HTTP/2 breaks when
        # threads share it (encode/httpx#3324, #3072). Measured with httpx 0.29, httpcore 1.0.9 and h2 4.4.1
        # against hypercorn over TLS: with 4 to 64 threads, 8 to 191 of 640-1,280 requests failed (the server
        # closed the connection on a PROTOCOL_ERROR); with one thread none did, nor over HTTP/1.1. And an HTTP/2
        # client on one event loop would not make a plan faster: bench/bench_http2.py replays a plan's requests
        # both ways (README, "Round trips, not requests").
        self._pool = _POOL(
            ssl_context=self._ssl_context,
            retries=retries,
            max_connections=MAX_CONCURRENT,
            max_keepalive_connections=MAX_CONCURRENT,
            network_backend=self._backend,
        )

    def preconnect(self, url: httpx.URL, count: int) -> None:
        """Start opening connections to ``url``'s origin in the background, so that at least ``count``
        (at most ``MAX_CONCURRENT``) are open or opening; the connections the pool opens next are then
        these. Never an error: a connection that cannot be opened is opened, or reported, when a
        request needs it."""
        idle = sum(1 for connection in self._pool.connections if connection.is_idle())
        scheme, host, port = origin(url)
        self._backend.spares.open(host, port, scheme == "https", min(count, MAX_CONCURRENT) - idle, self.timeout)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = request.extensions.get(DEADLINE) or time.monotonic() + self.timeout
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _until(deadline):
            answer = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_DeadlineBody(answer.stream, deadline, self._reading),
            extensions={**answer.extensions, READING: self._reading},
        )

    def close(self) -> None:
        self._pool.close()
        self._backend.spares.close()


class _DeadlineBody(httpx.SyncByteStream):
    """An answer's bytes as they arrive, each read bounded by the deadline, at most ``MAX_ANSWER`` of them,
    counted in ``reading`` until the answer is closed (once read: ``read_capped`` then counts it decoded)."""

    def __init__(self, inner: Any, deadline: float, reading: _Reading):
        self._inner, self._deadline, self._reading = inner, deadline, reading
        self._held, self._started = 0, reading.overruns

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            with _until(self._deadline):
                chunk = next(chunks, None)
            if chunk is None:
                return
            if self._held + len(chunk) > MAX_ANSWER:
                raise AnswerTooLarge(f"the answer is larger than {MAX_ANSWER // 2**20} MiB")
            self._reading.take(len(chunk), self._started)
            self._held += len(chunk)
            yield chunk

    def close(self) -> None:
        self._reading.give(self._held)
        self._held = 0
        self._inner.close()


# httpcore's exceptions as httpx raises them (the subclasses first: the first match wins).
_HTTPX_ERROR: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _until(deadline: float) -> Iterator[None]:
    """Socket operations inside wait at most until ``deadline``; httpcore errors become httpx's."""
    token = _deadline.set(deadline)
    try:
        yield
    except tuple(theirs for theirs, _ in _HTTPX_ERROR) as exc:
        raise _as_httpx(exc) from exc  # as httpx chains them: --debug shows the socket's own error
    finally:
        _deadline.reset(token)


def _as_httpx(exc: Exception) -> httpx.TransportError:
    kind = next(mine for theirs, mine in _HTTPX_ERROR if isinstance(exc, theirs))
    return kind(str(exc))


def _clamp(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """A socket operation's timeout, cut to what is left before the current request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


_TlsWith = tuple[Any, str]  # (ssl.SSLContext, server name) a spare connection's handshake used


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, each operation bounded by the request's deadline (``_clamp``), and the spare
    connections of ``preconnect`` (reconciler/connections.py): ``connect_tcp`` hands out an open one
    before it connects anew."""

    def __init__(self, spares: connections.Spares) -> None:
        self._inner = httpcore.SyncBackend()
        self.spares = spares

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        # One still opening is waited for, within the time a connection of its own may take to open; a
        # connection of its own then gets what is left of that time.
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        started = time.monotonic()
        if (
            local_address is None
            and not socket_options
            and (spare := self.spares.take(host, port, wait=CONNECT_TIMEOUT if timeout is None else timeout))
        ):
            # a TLS spare was handshaken with the pool's own context, for this host (connections.py)
            return _SpareStream(spare, (self.spares.context, host) if isinstance(spare, ssl.SSLSocket) else None)
        if timeout is not None and (timeout := timeout - (time.monotonic() - started)) <= 0:
            raise httpcore.ConnectTimeout("no connection opened within the connect timeout")
        if self.spares.closed:  # a request still under way when its client closed (a read-ahead nobody waits for)
            raise httpcore.ConnectError("the client was closed")
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        if self.spares.closed:  # it closed while this connected: its pool no longer holds the connection to close it
            stream.close()
            raise httpcore.ConnectError("the client was closed")
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_unix_socket(path, _clamp(timeout, httpcore.ConnectTimeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _SpareStream(httpcore.NetworkStream):
    """A connection ``preconnect`` opened, as httpcore's ``SyncStream`` reads and writes a socket, each
    operation bounded by the request's deadline (``_clamp``). Its TLS handshake (``tls``) is done
    already, so the ``start_tls`` httpcore asks for with the same context and server name is itself."""

    def __init__(self, sock: socket.socket, tls: _TlsWith | None):
        self._sock, self._tls = sock, tls
        self._poll: select.poll | None = None  # made once: the pool asks every idle connection on every request

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout = _clamp(timeout, httpcore.ReadTimeout)
        with _socket_errors(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        while buffer:
            timeout = _clamp(timeout, httpcore.WriteTimeout)
            with _socket_errors(httpcore.WriteTimeout, httpcore.WriteError):
                self._sock.settimeout(timeout)
                buffer = buffer[self._sock.send(buffer) :]

    def close(self) -> None:
        self._poll = None  # registered by descriptor number, which the system may give another socket now
        self._sock.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        if self._tls != (ssl_context, server_hostname):  # a plain spare, or another handshake: never made so
            self.close()
            raise httpcore.ConnectError("a preconnected connection was made for another TLS setting")
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock._sslobj if isinstance(self._sock, ssl.SSLSocket) else None  # type: ignore[attr-defined]  # as httpcore's SyncStream
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # as httpcore asks it: poll, which takes any descriptor (select stops at 1,024)
            if not hasattr(select, "poll"):  # Windows
                return bool(select.select([self._sock], [], [], 0)[0])
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(self._sock, select.POLLIN)
            return bool(self._poll.poll(0))
        return None


@contextlib.contextmanager
def _socket_errors(timed_out: type[Exception], failed: type[Exception]) -> Iterator[None]:
    """Socket errors as httpcore's ``SyncStream`` maps them."""
    try:
        yield
    except TimeoutError as exc:
        raise timed_out(str(exc)) from exc
    except OSError as exc:
        raise failed(str(exc)) from exc
