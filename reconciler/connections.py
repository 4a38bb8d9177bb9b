"""The API's origin, and connections to it opened before a request needs them, with the standard library only.

Over TLS a new connection waits two round trips (TCP, then the TLS 1.3 handshake) before its first
request, and a plan sends up to ``MAX_CONCURRENT`` requests at once (factory/transport.py), most over
new connections. ``Spares`` opens them in the background, as a browser's ``<link rel=preconnect>``
does: one thread, non-blocking sockets and a selector, the TLS handshake included, with the same SSL
context, server name and ALPN as httpcore would use. The transport's network backend hands each out as
soon as it is open, before it connects anew, and a request that comes while they are still opening
waits for one (``Spares.take``); one a request does not take within ``SPARE_LIFETIME`` is closed instead.

This module imports no HTTP library, so a run can start connecting as soon as its command line is
read (``start``): the handshakes then overlap with importing httpx and the planner and with reading
the manifests (about 0.4 s of a plan on the bench machine), instead of following them. The transport
made for that API afterwards claims those connections (``claim``); whatever nobody claims is closed
when the command ends (``discard``).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Final

# A preconnected connection is handed out for this long after it opened, then closed instead: a server
# may drop a connection that sends nothing (nginx waits 60 s for a request, Go servers often less).
SPARE_LIFETIME: Final = 5.0
CONNECT_TIMEOUT: Final = 5.0  # seconds a connection may take to open, TLS handshake included
# The requests a plan sends together once it has the wave list (factory/observe.py), which a run opens
# connections for before it sends them: a few for every plan (the production and wave targets, the root,
# the device groups) and a few per active wave (its status, its dry run, a device lookup). A dry run or
# an apply opens them all as its command line is read, one wave per manifest file it finds (every managed
# wave may need reads; the wave list's pages use them first), and more once it knows better: a dry run
# from the wave list's first page (newest first, so it shows the active waves: factory/history.py
# ``list_ahead``), an apply once its manifests are read if they hold more waves than files. Opened after
# the first page instead, they were ready two round trips after it: at 300 ms the plan bench's reads
# waited for them (A/B, 6 runs each: best 2.418 -> 1.765 s). A status opens its own as its command line is
# read too (``status_connections``): opened from the first page, they left its bench's reads at 300 ms
# over TLS in two rounds, two round trips apart.
READS_PER_PLAN: Final = 6
READS_PER_ACTIVE_WAVE: Final = 3
# An apply's observation sends three more with them: the wave list read again once it holds the lease,
# and the root and the online targets key an init signs against (factory/observe.py). Without them the
# walkthrough's first apply sent 16 reads over 15 connections, and the last waited two round trips for
# a connection of its own.
READS_PER_APPLY: Final = 3
# Requests that do not depend on each other go out together, at most this many at a time
# (factory/transport.py), and so the connections worth opening to one API: a plan then waits for a
# handful of round trips instead of one per request, and a big factory is not flooded. The plan bench's
# observation (20 active waves: statuses, dry runs, named-UUID lookups) is 62 requests: at 32 they took
# two round trips, at 64 one (plan at 100 ms: median 1.01 -> 0.93 s). httpx's and aiohttp's own pools
# allow 100 connections.
MAX_CONCURRENT: Final = 64

Origin = tuple[str, str, int]  # (scheme, host as httpcore names it, port)


def tls_context() -> ssl.SSLContext:
    """The context every connection to the API verifies its certificate with: httpx's default
    (``httpx.create_ssl_context()``, httpx/_config.py: ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else
    certifi's bundle), made here so that connections opened before httpx is imported use the very
    context the transport's pool then uses."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class Spares:
    """Open connections waiting for a request, per (host, port), and the one SSL context they and the
    transport's pool share (a spare made for another context is never handed out).

    Each connection is handed over as soon as it is open, and a request that finds none open while some
    are still opening waits for one (``take``) rather than opening its own: a new connection would wait
    for the same handshakes, started later. A plan's requests go out as its manifests are read, often
    while the connections sized from the wave list are still opening; each then opened one of its own,
    and the bench's plan over TLS opened 93 connections for 70 requests."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self._context = context
        self._queues: dict[tuple[str, int], list[tuple[float, socket.socket]]] = {}
        self.opening = 0  # connections still being opened
        self._waiting = 0  # requests waiting in ``take`` for one of those
        self._closed = False  # a spare opened after close() is closed at once
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a spare was handed over, or an opening failed
        self._context_lock = threading.Lock()  # making the context reads a CA bundle: 50-80 ms

    @property
    def context(self) -> ssl.SSLContext:
        """The SSL context, made when first asked for (only https needs one)."""
        with self._context_lock:
            if self._context is None:
                self._context = tls_context()
            return self._context

    def open(self, host: str, port: int, tls: bool, count: int, timeout: float) -> None:
        """Open ``count`` connections to (host, port) in the background, less those open or opening."""
        with self._lock:
            count -= self.opening + len(self._queues.get((host, port), []))
            if count <= 0 or self._closed:
                return
            self.opening += count
        # One thread opens them all, each socket non-blocking: a thread per connection cost more to start
        # (each start waits for the GIL) than the handshakes saved, while the manifests load.
        opener = threading.Thread(
            target=self._open, args=(host, port, tls, count, min(timeout, CONNECT_TIMEOUT)), daemon=True
        )
        with _openers_lock:
            _openers[opener] = self
        opener.start()

    def _open(self, host: str, port: int, tls: bool, count: int, timeout: float) -> None:
        handed = 0

        def hand_over(sock: socket.socket) -> None:
            nonlocal handed
            with self._ready:
                handed += 1
                self.opening -= 1
                if self._closed:  # the run ended while it opened: nobody will use it
                    sock.close()
                    return
                self._queues.setdefault((host, port), []).append((time.monotonic(), sock))
                self._ready.notify()

        try:
            # The context (a CA bundle read: 50-80 ms) is made while the TCP handshakes are under way.
            make_context = (lambda: self.context) if tls else None
            _connect_all(host, port, make_context, count, timeout, hand_over, stopped=lambda: self._closed)
        except (OSError, ValueError):
            pass  # the requests that would have used them connect themselves, and report what fails
        finally:
            with self._ready:
                self.opening -= count - handed  # those that failed or did not open in time
                self._ready.notify_all()  # a request waiting for one of them connects itself
            with _openers_lock:
                _openers.pop(threading.current_thread(), None)

    def waiting(self, host: str, port: int) -> int:
        """The open spares to (host, port) not handed out yet."""
        with self._lock:
            return len(self._queues.get((host, port), []))

    def take(self, host: str, port: int, wait: float = 0.0) -> socket.socket | None:
        """An open connection to (host, port) opened less than ``SPARE_LIFETIME`` ago (older ones are
        closed), or None. With none open, wait up to ``wait`` seconds for one still opening, when more
        are opening than requests already wait for them."""
        deadline = time.monotonic() + wait
        with self._ready:
            queue = self._queues.setdefault((host, port), [])
            while not self._closed:
                while queue:
                    opened, sock = queue.pop()
                    if time.monotonic() - opened < SPARE_LIFETIME:
                        return sock
                    sock.close()
                left = deadline - time.monotonic()
                if left <= 0 or self._waiting >= self.opening:
                    return None
                self._waiting += 1
                try:
                    self._ready.wait(left)
                finally:
                    self._waiting -= 1
            return None

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called: the transport they belong to is closed, and opens none any more."""
        return self._closed

    def close(self) -> None:
        with self._ready:
            self._closed = True
            socks = [sock for queue in self._queues.values() for _, sock in queue]
            for queue in self._queues.values():
                queue.clear()  # a request waiting in ``take`` holds its queue: it must find it empty
            self._ready.notify_all()
        for sock in socks:
            sock.close()


def observation_connections(active_waves: int, *, apply: bool = False) -> int:
    """About how many requests a plan's observation (an apply's, with ``apply``) sends together for
    ``active_waves`` active waves: the connections worth opening before it, at most ``MAX_CONCURRENT``."""
    reads = READS_PER_PLAN + READS_PER_ACTIVE_WAVE * active_waves + (READS_PER_APPLY if apply else 0)
    return min(reads, MAX_CONCURRENT)


def status_connections(manifest_files: int) -> int:
    """About how many requests a status sends together for ``manifest_files`` manifest files
    (factory/status.py): the wave list's pages, the production and wave targets, and a wave status for
    each wave shown (the active ones, and the latest completed wave of each tag), at most one per file;
    at most ``MAX_CONCURRENT``. ``--devices WAVE`` (no files counted) reads a few at a time."""
    return min(READS_PER_PLAN + manifest_files, MAX_CONCURRENT)


def import_connections(waves: int) -> int:
    """The requests an import sends together once it has the wave list, for ``waves`` waves to adopt (each
    wave's signed targets, the production root and the online key: factory/adopt.py): the connections
    worth opening for them, at most ``MAX_CONCURRENT``."""
    return min(waves + 2, MAX_CONCURRENT)


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the host lowercased as httpx sends it; None for anything
    else (the run reports a wrong URL in its own place)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or not host.isascii():
        return None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


_early: dict[Origin, Spares] = {}  # opened by ``start``, not claimed yet
_early_lock = threading.Lock()
_openers: dict[threading.Thread, Spares] = {}  # the threads opening connections, and for whom
_openers_lock = threading.Lock()
# How often an opening thread looks whether its spares were closed while it waits for handshakes.
_CLOSED_CHECK_INTERVAL: Final = 0.05
# The most the process waits at exit for an opening thread to stop (a CA bundle read takes 50-80 ms).
_SETTLE_TIMEOUT: Final = 1.0


def start(api_url: str, allow_insecure_http: bool, count: int = READS_PER_PLAN) -> None:
    """Have ``count`` connections to the API at ``api_url`` open or opening, for the transport made for it
    later to ``claim`` (a second call before that opens only what the first did not). Nothing for a URL
    the run will refuse (not http(s), or plain http to another machine without ``allow_insecure_http``:
    factory/client.py checks it again and says why)."""
    where = origin(api_url)
    if where is None or (where[0] == "http" and not allow_insecure_http and not is_loopback(where[1])):
        return
    scheme, host, port = where
    with _early_lock:
        spares = _early.setdefault(where, Spares())
    spares.open(host, port, scheme == "https", count, CONNECT_TIMEOUT)


def claim(scheme: str, host: str, port: int) -> Spares | None:
    """The spares ``start`` opened to this origin, handed over once; None when it opened none."""
    with _early_lock:
        return _early.pop((scheme, host, port), None)


def discard() -> None:
    """Close what ``start`` opened and nobody claimed (the command ended first, or used no API)."""
    with _early_lock:
        left = list(_early.values())
        _early.clear()
    for spares in left:
        spares.close()


@atexit.register
def _settle() -> None:
    """Stop the threads still opening connections before the interpreter is torn down. A process torn
    down while one of them read the CA bundle or handshook (both inside OpenSSL, without the GIL) died of a
    segmentation fault: ``reconcile --debug`` with a mistake found just after the command line began
    connecting exited 139 instead of 1. Closing their spares ends their loops within
    ``_CLOSED_CHECK_INTERVAL``. A process that ends with ``os._exit`` (``cli.program``) runs this too,
    first; by then no thread is usually left."""
    with _openers_lock:
        left = list(_openers.items())
    for _, spares in left:
        spares.close()
    for opener, _ in left:
        opener.join(_SETTLE_TIMEOUT)


def is_loopback(host: str) -> bool:
    """This machine: ``localhost`` (and its subdomains, RFC 6761), 127.0.0.0/8 and ::1."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect_all(
    host: str,
    port: int,
    make_context: Callable[[], ssl.SSLContext] | None,
    count: int,
    timeout: float,
    hand_over: Callable[[socket.socket], None],
    stopped: Callable[[], bool],
) -> None:
    """``count`` connections to (host, port), TLS-handshaken with the context ``make_context`` gives when
    there is one, opened together from this one thread (non-blocking sockets and a selector), each given
    to ``hand_over`` as soon as it is open, blocking as httpcore's own sockets; those not open within
    ``timeout``, or when ``stopped()`` says so, are closed. The context is asked for once the TCP
    handshakes have begun: reading the CA bundle then takes place during their round trip, not before it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector, _closing_the_rest(selector):
        for _ in range(count):
            new = socket.socket(family, kind, proto)
            new.setblocking(False)
            new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as httpcore's connect_tcp
            new.connect_ex(address)
            selector.register(new, selectors.EVENT_WRITE, data=False)  # data: the TLS handshake has begun
        context = make_context() if make_context is not None else None
        while selector.get_map() and not stopped() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(left, _CLOSED_CHECK_INTERVAL)):
                selector.unregister(key.fileobj)
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if not key.data and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sock.close()  # refused or unreachable
                    continue
                if context is not None and not key.data:
                    context.set_alpn_protocols(["http/1.1"])  # as httpcore's own connect sets it
                    sock = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
                try:
                    if context is not None:
                        assert isinstance(sock, ssl.SSLSocket)
                        sock.do_handshake()
                except ssl.SSLWantReadError:
                    selector.register(sock, selectors.EVENT_READ, data=True)
                except ssl.SSLWantWriteError:
                    selector.register(sock, selectors.EVENT_WRITE, data=True)
                except OSError:  # ssl.SSLError included: a certificate that fails shows on the request's own
                    sock.close()
                else:
                    sock.setblocking(True)
                    hand_over(sock)


@contextlib.contextmanager
def _closing_the_rest(selector: selectors.BaseSelector) -> Iterator[None]:
    """The sockets still registered when the selector is done with (not open in time, or an error) are closed."""
    try:
        yield
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]  # every registered object is a socket
