# mypy: allow-subclassing-any
# (waitress ships no type hints, pyproject: ignore_missing_imports, so its classes are Any; the server,
# channel and error task here extend them all the same)
"""The HTTP server of ``reconcile-factory serve``: waitress, made to shed idle and slow clients.

Waitress serves requests on a few threads but holds connections in one event loop, and by default it
stops *accepting* once ``connection_limit`` (100) connections are open: 150 clients that connect and
send nothing leave every later client waiting in the kernel's backlog until the idle ones time out
(``channel_timeout``, 120 s). Here the server keeps accepting at the limit and makes room instead:

- at the limit, a new connection closes the connection that has been idle longest (no request, or
  a request still arriving after ``SLOW_SEND`` seconds: no working client is that slow on one
  request), the way a reverse proxy sheds keep-alive connections first; when every connection is
  busy with a request, the new one is answered ``503`` with ``Retry-After`` at once;
- a connection idle for ``IDLE_TIMEOUT`` seconds is closed, and so is one that has taken longer than
  ``RECEIVE_TIMEOUT`` seconds to send a single request (a client trickling its headers or body);
- the event loop uses ``poll``, so open descriptors beyond ``FD_SETSIZE`` cannot break it;
- a body over ``requestbody.MAX_BODY_BYTES`` is refused with 413 from its ``Content-Length``, before
  any of it is received (waitress's own limit is 1 GiB, and it receives a whole body, into a
  temporary file, before the app runs); a chunked body is cut off once its bytes on the wire, chunk
  framing included, pass the limit. Waitress's own refusals (this 413, a malformed request) carry
  the API's JSON error body, ``{"message": ..., "errors": []}``, and the factory's ``Date`` (the
  simulated clock, ``create_server(date=...)``), like every other answer.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgspec import Struct
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import RequestEntityTooLarge

from . import requestbody

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

CONNECTION_LIMIT = 100  # open connections per listening socket (waitress's default)
IDLE_TIMEOUT = 30  # seconds a connection may stay open without sending a request
RECEIVE_TIMEOUT = 10  # seconds a client may take to send one request, headers and body
SLOW_SEND = 1  # seconds after which a request still arriving may be shed to make room
CLEANUP_INTERVAL = 1  # seconds between sweeps for idle and slow connections
BACKLOG = 1024  # connections the kernel queues until the loop accepts them

_BUSY_BODY = json.dumps(
    {"message": "the local factory is busy: every connection is in use; retry shortly", "errors": []}
).encode()
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _JsonErrorTask(ErrorTask):
    """Waitress's answer to a request it refuses itself, with the API's error body (errors.py)."""

    def execute(self) -> None:
        error = self.request.error
        if isinstance(error, RequestEntityTooLarge):
            message = requestbody.too_large().message
        else:
            message = f"{error.reason}: {error.body}"
        body = json.dumps({"message": message, "errors": []}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        date = getattr(self.channel.server, "date", None)
        value = date() if date is not None else None
        if value:  # else waitress adds the wall clock's
            self.response_headers.append(("Date", value))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """A connection that remembers when the request it is receiving began (``time.time()``, like
    waitress's ``last_activity``), and answers waitress's own refusals in JSON."""

    error_task_class = _JsonErrorTask
    receiving_since: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.receiving_since = time.time()
        result: bool = super().received(data)
        if self.request is None:  # every request in ``data`` arrived whole
            self.receiving_since = None
        return result

    def unproductive_since(self, now: float) -> float | None:
        """Since when this connection has done nothing useful, if closing it to make room loses no
        work: idle between requests, or slow past ``SLOW_SEND`` sending one. None while a request
        waits, runs or is being answered."""
        if self.requests or self.total_outbufs_len or self.will_close:
            return None
        if self.receiving_since is None:
            idle_since: float = self.last_activity
            return idle_since
        return self.receiving_since if now - self.receiving_since > SLOW_SEND else None


class _SheddingServer(TcpWSGIServer):
    channel_class = _Channel
    date: Callable[[], str | None] | None = None  # the Date of waitress's own answers
    next_channel_cleanup: float = 0

    def readable(self) -> bool:
        """Waitress's sweep, but accepting at the connection limit too: ``handle_accept`` makes room."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle past channel_timeout
        too_old = now - RECEIVE_TIMEOUT
        for channel in self.active_channels.values():
            since = getattr(channel, "receiving_since", None)
            if since is not None and since < too_old:
                channel.will_close = True

    def handle_accept(self) -> None:
        if len(self.active_channels) < self.adj.connection_limit or self._shed_one_idle():
            super().handle_accept()
            return
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is not None:
            _answer_busy(accepted[0])

    def _shed_one_idle(self) -> bool:
        now = time.time()
        since = {c: c.unproductive_since(now) for c in self.active_channels.values() if isinstance(c, _Channel)}
        candidates = [(t, c._fileno) for c, t in since.items() if t is not None]
        if not candidates:
            return False
        self.active_channels[min(candidates)[1]].handle_close()
        return True


def _answer_busy(conn: socket.socket) -> None:
    """503 and close, without blocking the event loop on a client that does not read."""
    try:
        conn.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            conn.recv(65536)  # unread request bytes would turn the close into a reset that eats the answer
        conn.send(BUSY_ANSWER)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


class Listening(Struct):
    server: TcpWSGIServer | MultiSocketServer
    urls: list[str]


def create_server(
    app: WSGIApplication, *, host: str, port: int, threads: int, date: Callable[[], str | None] | None = None
) -> Listening:
    """Like ``waitress.create_server`` with the shedding server on every address ``host`` names;
    ``date`` gives the ``Date`` header of the answers waitress makes itself (None: the wall clock)."""
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        ident="reconcile-factory",
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=IDLE_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        backlog=BACKLOG,
        asyncore_use_poll=True,
        max_request_body_size=requestbody.MAX_BODY_BYTES + 1,
    )  # waitress refuses >= this
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}  # waitress's file descriptor -> dispatcher (untyped)
    servers: list[_SheddingServer] = []
    try:
        servers.extend(
            _SheddingServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen
        )
    except BaseException:
        for server in servers:
            server.close()
        dispatcher.shutdown()
        raise
    for server in servers:
        server.date = date
    urls = [f"http://{_bracketed(s.effective_host)}:{s.effective_port}" for s in servers]
    if len(servers) == 1:
        return Listening(servers[0], urls)
    listen = [(s.effective_host, s.effective_port) for s in servers]
    return Listening(MultiSocketServer(socket_map, adj, listen, dispatcher), urls)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
