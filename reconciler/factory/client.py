"""The Foundries API over httpx, as fioctl speaks it (reference/foundries-api.md §1).

One client for the real service and for the embedded local factory: with no API URL the
requests go in-process to the local factory's WSGI app through ``httpx.WSGITransport``.
Idempotent requests are retried on connection errors, truncated answers and 502/503/504 with
backoff; a POST is never retried blindly, because a rollout that reached the server must not
run twice (apply re-reads the wave's history instead), and a POST whose answer was lost is
reported as "outcome unknown", never as failed. The backend's ``Date`` header is "now".

What the client sends is what the user meant, or nothing: every name in a path is percent-encoded
as one segment, and a name that a URL normaliser would turn into a step up or nowhere (``.``, ``..``)
is refused. The token goes out only as printable ASCII, over TLS or to this machine (plain
``http://`` elsewhere needs ``--allow-insecure-http``), and never to another origin: a redirect is
reported, not followed. No message quotes the token or the URL's password.

Retries and deadlines (every request bounded as a whole, and every run) are the transport's job:
``factory/transport.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Self, TypeVar

import httpx

from reconciler import connections
from reconciler.core import WaveStatus
from reconciler.errors import BackendError, OutcomeUnknown, UserError, error_text
from reconciler.factory.transport import (
    CONNECT_TIMEOUT,
    DEADLINE,
    IDEMPOTENT,
    MAX_ANSWER,
    MAX_CONCURRENT,
    MAX_READING,
    REQUEST_TIMEOUT,
    RETRY_STATUS,
    AnswerTooLarge,
    DeadlineTransport,
    RetryTransport,
    origin,
    read_capped,
)
from reconciler.safetext import printable

PAGE_SIZE = 100
_T = TypeVar("_T")
_K = TypeVar("_K")
Json = dict[str, Any]  # a JSON object as the factory sent it; ``wire.py`` turns it into typed values
DEVICE_PAGE_SIZE = 1000  # the largest page the device list allows (reference §1.6)
# Pages of the device list read together once the first gave the total (``device_pages``): 100,000
# devices in 8 round trips instead of 100, and at most 16,000 devices' answers held at once. 64 at once
# took 3 round trips, but `reconcile devices` for 81,000 devices then peaked at 193 MB (134 MB at 16, 91 MB
# page by page).
DEVICE_PAGES_AT_ONCE = 16
OFFLINE_THRESHOLD_HOURS = 4  # fioctl's default for wave status
RUN_TIMEOUT = 600.0  # seconds a whole run may spend with the factory (--timeout)


@dataclass(frozen=True)
class Backend:
    """Where requests go: the label shown in plans and the transport that carries them."""

    factory: str
    label: str  # "local:<path>" or the API URL
    base_url: str
    transport: httpx.BaseTransport
    token: str | None = field(default=None, repr=False)  # never shown, not even in a repr
    keys_archive: str | None = None  # the embedded factory's operator key archive
    note: str | None = None  # one line to tell the user (e.g. "created the demo factory")
    lock_path: str | None = None  # the embedded factory serialises applies with this file


FACTORY_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The variable that allows plain http:// to another host, as --allow-insecure-http does (cli/options.py).
INSECURE_HTTP_ENV = "RECONCILE_ALLOW_INSECURE_HTTP"


def select_backend(
    *, api_url: str | None, factory: str | None, local: str | None, allow_insecure_http: bool = False
) -> Backend:
    """The Foundries API when a URL is given, else the embedded local factory. ``allow_insecure_http``
    (``--allow-insecure-http``, ``RECONCILE_ALLOW_INSECURE_HTTP=1``) lets the token travel in clear to
    another host."""
    if factory is not None and not FACTORY_NAME.match(factory):
        raise UserError(f"factory name {factory!r} may contain only letters, digits, '_', '.' and '-'")
    if factory in _DOT_SEGMENTS:
        raise UserError(f"factory name {factory!r} is no name: in a URL path it means {_DOT_SEGMENTS[factory]}")
    if api_url:
        if not factory:
            raise UserError(
                "--factory (or RECONCILE_FACTORY) is required with --api-url: name the factory to reconcile"
            )
        base_url, label = _api_url(api_url, allow_insecure_http)
        token, note = _token(os.environ.get("RECONCILE_API_TOKEN"))
        scheme, host, port = origin(httpx.URL(base_url))
        # the connections the command line began opening to this API (connections.start), if any
        spares = connections.claim(scheme, host, port)
        transport = RetryTransport(DeadlineTransport(spares=spares, tls=scheme == "https"))
        return Backend(factory, label, base_url, transport, token=token, note=note)
    from reconciler.localfactory import open_embedded  # imported only when the embedded backend is used

    embedded = open_embedded(local)
    if factory and factory != embedded.factory:
        raise UserError(
            f"the local factory at {embedded.path} is '{embedded.factory}', not '{factory}'; "
            f"drop --factory or point --local elsewhere"
        )
    created = (
        (
            f"Created the demo local factory '{embedded.factory}' at {embedded.path} "
            f"(operator key: {embedded.keys_archive})"
        )
        if embedded.created
        else None
    )
    note = "\n".join(line for line in (created, embedded.modes_note) if line) or None
    return Backend(
        embedded.factory,
        f"local:{embedded.path}",
        "http://local-factory",
        httpx.WSGITransport(app=embedded.app),
        keys_archive=str(embedded.keys_archive),
        note=note,
        lock_path=str(embedded.path / "apply.lock"),
    )


def _api_url(text: str, allow_insecure_http: bool) -> tuple[str, str]:
    """The base URL to call and the label to show: credentials in the URL are never shown."""
    try:
        url = httpx.URL(text.rstrip("/"))
    except httpx.InvalidURL as exc:
        # from None: the cause says no more than this line, from inside httpx's URL parser
        shown = _USERINFO.sub(r"\1***@", text)  # the password stays out of the line
        raise UserError(f"--api-url {shown!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UserError("--api-url must be an http:// or https:// URL with a host, such as https://api.foundries.io")
    label = str(url.copy_with(username=None, password=None))
    if url.scheme == "http" and not allow_insecure_http and not connections.is_loopback(url.host):
        raise UserError(
            f"--api-url {label} is plain http:// to another machine: the API token would travel in clear; "
            f"use https://, or pass --allow-insecure-http (or set {INSECURE_HTTP_ENV}=1) if the network is yours"
        )
    return str(url), label


# The user information of a URL (``user:password@``), hidden when the URL cannot be parsed.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


# Path segments a URL normaliser (httpx's, a proxy's, the server's) removes, with the request's target.
_DOT_SEGMENTS = {".": "'this folder' and vanishes", "..": "'one folder up' and takes the one before along"}


def _segment(value: str, kind: str) -> str:
    """``value`` as one segment of a request's path: percent-encoded, so a ``/``, ``?``, ``#``, ``%``
    or space stays inside it, and refused when normalisation would remove it (``.``, ``..``) or an
    empty segment would merge with the next: the request would reach another resource."""
    if not value or value in _DOT_SEGMENTS:
        raise BackendError(f"not sent: the {kind} name {value!r} cannot be part of a URL path")
    return urllib.parse.quote(value, safe="")


def _token(raw: str | None) -> tuple[str | None, str | None]:
    """The token to send and a warning to show, from ``RECONCILE_API_TOKEN`` as it was set.

    Whitespace around it (a pasted line break) is dropped with a warning; anything else that cannot
    be an HTTP header value is refused. Neither line shows any part of the token."""
    if not raw:
        return None, None
    token = raw.strip()
    if not token:
        raise UserError("RECONCILE_API_TOKEN holds only whitespace: set it to the token, or unset it")
    for index, char in enumerate(token):
        if not char.isascii():
            problem = "a character that is not ASCII"
        elif char.isspace():
            problem = "a space or line break"
        elif not char.isprintable():
            problem = "a control character"
        else:
            continue
        raise UserError(
            f"RECONCILE_API_TOKEN holds {problem} (character {index + 1}): a token is "
            f"printable ASCII without spaces; copy it again from the factory's token settings"
        )
    note = (
        "warning: RECONCILE_API_TOKEN has whitespace around it (a line break when it was pasted?); sending it without"
        if token != raw
        else None
    )
    return token, note


class Reply(Generic[_T]):
    """The answer of one read of a ``Batch``, to take once the batch has run."""

    def __init__(self) -> None:
        self._answer: list[_T] = []

    def result(self) -> _T:
        if not self._answer:
            raise RuntimeError("the batch of this read has not run")
        return self._answer[0]


class Batch:
    """Reads that do not depend on each other, sent together: ``run`` makes one ``FactoryClient.gather``
    of every read added (concurrently, at most ``concurrency`` at once), and each read's ``Reply`` then
    holds its answer. The caller names each answer by its reply instead of counting answers by position.
    A failure is raised by ``run``, the first failing read's in the order they were added (``gather``)."""

    def __init__(self, client: FactoryClient) -> None:
        self._client = client
        self._reads: list[tuple[Callable[[], Any], Reply[Any]]] = []

    def add(self, call: Callable[[], _T]) -> Reply[_T]:
        reply: Reply[_T] = Reply()
        self._reads.append((call, reply))
        return reply

    def run(self) -> None:
        answers = self._client.gather([call for call, _ in self._reads])
        for (_, reply), answer in zip(self._reads, answers, strict=True):
            reply._answer.append(answer)
        self._reads = []


class FactoryClient:
    """The endpoints the reconciler uses, returning parsed JSON; errors become one-line BackendErrors.

    ``run_timeout`` bounds everything this client does with the factory (``--timeout``): once it has
    passed no request is sent, and a request under way is cut off at it."""

    def __init__(self, backend: Backend, run_timeout: float = RUN_TIMEOUT, request_timeout: float = REQUEST_TIMEOUT):
        self.backend = backend
        self.factory = backend.factory
        self.timeout = request_timeout  # seconds per request; a write unanswered by then has an unknown outcome
        headers = {"User-Agent": "reconciler"}
        if backend.token:
            headers["OSF-TOKEN"] = backend.token
        self._http = httpx.Client(
            base_url=backend.base_url,
            transport=backend.transport,
            headers=headers,
            timeout=httpx.Timeout(request_timeout, connect=CONNECT_TIMEOUT),
        )
        self._base_path = self._http.base_url.raw_path.rstrip(b"/")  # what every request's path starts with
        self.run_timeout, self.request_timeout = run_timeout, request_timeout
        self.deadline = time.monotonic() + run_timeout
        self.requests = 0  # requests sent (retries not counted): observation must stay cheap
        self.now: datetime | None = None
        self._count_lock = threading.Lock()
        # In-process (WSGI) requests cost no round trip and run in the calling thread: nothing to overlap.
        self.concurrency = 1 if isinstance(backend.transport, httpx.WSGITransport) else MAX_CONCURRENT

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gather(self, calls: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run independent calls at the same time (at most ``concurrency`` at once); results in call order.

        A failure is raised once every call has finished, and it is the first failing call's in the
        given order, so the one-line error a user sees does not depend on which answer came first.
        """
        if self.concurrency <= 1 or len(calls) <= 1:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(calls)), thread_name_prefix="reconcile") as pool:
            futures = [pool.submit(call) for call in calls]
            outcomes = [(f.exception(), None if f.exception() else f.result()) for f in futures]
        for error, _ in outcomes:
            if error is not None:
                raise error
        return [result for _, result in outcomes]  # type: ignore[misc]  # no error: every result is a _T

    def preconnect(self, count: int) -> None:
        """Have ``count`` connections to the factory open or opening, in the background, for the requests
        a run is about to send together (``transport.DeadlineTransport.preconnect``). In-process
        transports have none to open."""
        if isinstance(self.backend.transport, RetryTransport | DeadlineTransport):
            self.backend.transport.preconnect(self._http.base_url, count)

    def batch(self) -> Batch:
        """Reads to send together (``gather``), each named by the handle ``Batch.add`` returns."""
        return Batch(self)

    def ahead(self, call: Callable[[], _T]) -> Callable[[], _T]:
        """Start ``call`` now, in the background, and return a function that waits for its result (or
        raises its error). A plan starts reading the factory while it reads the manifests: on a real
        network those round trips take longer than the files. The thread is a daemon so a run that stops
        early (a manifest error) does not wait for an answer nobody will read."""
        outcome: Future[_T] = Future()

        def target() -> None:
            try:
                outcome.set_result(call())
            except BaseException as exc:  # handed to the caller, who reports it as it would any error
                outcome.set_exception(exc)

        threading.Thread(target=target, name="reconcile-ahead", daemon=True).start()
        return outcome.result

    # -- transport ------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        what: str,
        missing_ok: bool = False,
    ) -> Any:
        """One request; ``body`` is encoded as JSON, ``content`` is sent as given (already JSON)."""
        if time.monotonic() >= self.deadline:
            raise BackendError(f"{what}: not sent: the run's time is up (--timeout {_seconds(self.run_timeout)})")
        with self._count_lock:
            self.requests += 1
        writes = method not in IDEMPOTENT
        request_deadline = time.monotonic() + self.request_timeout
        run_bound = self.deadline <= request_deadline  # the run's deadline comes first
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._http.build_request(
            method,
            path,
            params=params,
            json=body,
            content=content,
            headers=headers,
            extensions={DEADLINE: min(request_deadline, self.deadline)},
        )
        if request.url.raw_path.split(b"?")[0] != self._base_path + path.encode():  # httpx rewrote it
            raise BackendError(f"{what}: not sent: the path {path!r} would change on its way")
        try:
            response = read_capped(self._http.send(request, stream=True))
        # The causes go with the errors (``--debug`` shows them): httpx's messages carry no header values,
        # except a LocalProtocolError's, which quotes the header it refuses.
        except AnswerTooLarge as exc:
            why = (
                f"the answers read at once from {self.backend.label} are over {MAX_READING // 2**20} MiB, "
                "the most a run holds while reading"
                if exc.together
                else f"the answer from {self.backend.label} is over {MAX_ANSWER // 2**20} MiB, the most one answer may be"
            )
            raise self._lost(what, why, writes) from exc
        except httpx.ConnectTimeout as exc:  # never sent: a write cannot have landed
            limit = self._limit(run_bound) if run_bound else f"within {_seconds(CONNECT_TIMEOUT)}"
            raise BackendError(f"{what}: cannot reach {self.backend.label}: no connection {limit}") from exc
        except httpx.TimeoutException as exc:
            raise self._lost(
                what, f"no complete answer from {self.backend.label} {self._limit(run_bound)}", writes
            ) from exc
        except httpx.ConnectError as exc:  # never sent: a write cannot have landed
            raise BackendError(f"{what}: cannot reach {self.backend.label}: {exc}") from exc
        except httpx.LocalProtocolError:  # refused before it was sent: a write cannot have landed
            # from None, and not its message: h11 quotes the header value it refuses, which may be the token.
            raise BackendError(
                f"{what}: not sent: a header is not valid HTTP (does RECONCILE_API_TOKEN hold a line break?)"
            ) from None
        except httpx.RemoteProtocolError as exc:
            if not str(exc).startswith("Invalid URL in location header"):  # httpx parses even unfollowed ones
                raise self._lost(what, f"the connection to {self.backend.label} was lost: {exc}", writes) from exc
            why = f"{self.backend.label} redirects to a Location that is no valid URL; not followed"
            raise BackendError(f"{what}: {why}") from None  # its message quotes the Location unescaped
        except httpx.HTTPError as exc:
            raise self._lost(what, f"the connection to {self.backend.label} was lost: {exc}", writes) from exc
        self._read_clock(response)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code in REDIRECTS:
            raise BackendError(f"{what}: {self._redirect(response)}", response.status_code)
        if response.status_code not in (200, 201, 202, 204):
            if writes and response.status_code in RETRY_STATUS:  # a gateway's answer: the write may have landed
                raise self._lost(what, self._answer_text(response), writes, response.status_code)
            raise BackendError(f"{what}: {self._answer_text(response)}", response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise BackendError(
                f"{what}: the factory answered {response.status_code} with a body that is not JSON"
            ) from exc

    def _redirect(self, response: httpx.Response) -> str:
        """A redirect, reported rather than followed (the token would go along to wherever it points),
        with the ``--api-url`` that reaches the new place directly."""
        status, location = response.status_code, response.headers.get("location", "")
        if not location:
            return f"{self.backend.label} answered HTTP {status}, a redirect without a Location; not followed"
        shown = printable(location if len(location) <= 200 else location[:200] + "...")
        moved = f"{self.backend.label} redirects (HTTP {status}) to {shown}; not followed, the token would go along"
        try:
            target = response.request.url.join(location)
        except httpx.InvalidURL:
            return moved
        if target.scheme not in ("http", "https"):
            return moved
        asked = response.request.url.raw_path.split(b"?")[0][len(self._base_path) :]
        base = target.raw_path.split(b"?")[0]
        prefix = base[: -len(asked)] if base.endswith(asked) else b""
        new = target.copy_with(raw_path=prefix or b"/", query=None, fragment=None, username=None, password=None)
        return f"{moved}: set --api-url (RECONCILE_API_URL) to {printable(str(new).rstrip('/'))} if that is the factory's API"

    def _answer_text(self, response: httpx.Response) -> str:
        """The server's error as one line, the token masked: a server (or a proxy) that echoes the
        credentials it was sent must not make us print them."""
        text = error_text(response)
        token = self.backend.token
        return text.replace(token, "***") if token else text

    def _limit(self, run_bound: bool) -> str:
        if run_bound:
            return f"before the run's deadline (--timeout {_seconds(self.run_timeout)})"
        return f"within {_seconds(self.request_timeout)}"

    def _lost(self, what: str, why: str, writes: bool, status: int | None = None) -> BackendError:
        """A request whose answer never came. For a write that is not a failure: it may have landed."""
        if writes:
            return OutcomeUnknown(f"{what}: outcome unknown: {why}; the next run checks the factory", status)
        return BackendError(f"{what}: {why}", status)

    def _read_clock(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                moment = parsedate_to_datetime(date).astimezone(timezone.utc)
                with self._count_lock:  # concurrent answers: the latest clock reading wins
                    self.now = moment if self.now is None else max(self.now, moment)

    def server_now(self) -> datetime:
        """The backend's clock; the local machine's only if the backend never sent a Date header."""
        return self.now or datetime.now(timezone.utc).replace(microsecond=0)

    def _factory_path(self, rest: str) -> str:
        return f"/ota/factories/{_segment(self.factory, 'factory')}/{rest}"

    # -- waves ----------------------------------------------------------------------------------

    def _all_pages(
        self, fetch: Callable[[int], tuple[list[Json], Json]], first: tuple[list[Json], Json] | None = None
    ) -> list[Json]:
        """Every item of a paged list (``first``: its first page, when read already). The first page
        announces the total and the page size the server uses; the other pages are then read together. A
        server whose pages fall short is followed page by page, and one that keeps answering ``next``
        stops at the announced total."""
        items, data = first or fetch(1)
        items = list(items)
        total = data["total"] if isinstance(data.get("total"), int) else len(items)
        if not data.get("next") or not items or len(items) >= total:
            return items
        pages = range(2, -(-total // len(items)) + 1)
        answers = self.gather([functools.partial(fetch, page) for page in pages])
        for answer in answers:
            items.extend(answer[0])
        batch, data = answers[-1] if answers else (items, data)
        page = pages.stop
        while data.get("next") and batch and len(items) < total:
            batch, data = fetch(page)
            items.extend(batch)
            page += 1
        return items

    def list_waves(self, status: WaveStatus | None = None, first: tuple[list[Json], Json] | None = None) -> list[Json]:
        """Every wave, or only those of ``status`` (the list's ``status`` filter: active, complete or
        canceled, reference §1.2), 100 a page: ceil(waves / 100) requests. ``first``: the first page of
        the same list, when read already (``waves_page``)."""
        return self._all_pages(functools.partial(self.waves_page, status=status), first)

    def waves_page(self, page: int, status: WaveStatus | None = None) -> tuple[list[Json], Json]:
        """One page of the wave list, and the answer it came in (its ``total`` and ``next``)."""
        params: dict[str, str | int] = {"limit": PAGE_SIZE, "page": page}
        if status is not None:
            params["status"] = status.value
        data = _expect(
            self._send("GET", self._factory_path("waves/"), params=params, what="list waves"), dict, "list waves"
        )
        batch = _expect(data.get("waves") or [], list, "list waves")
        return [_expect(wave, dict, "list waves") for wave in batch], data

    def get_wave(self, name: str, *, show_targets: bool = False) -> Json | None:
        """The wave; with ``show_targets`` its signed targets envelope too (``show-targets=1``, as
        ``fioctl waves sign`` reads it, reference §1.2), whose signatures say how many it has."""
        data = self._send(
            "GET",
            self._factory_path(f"waves/{_segment(name, 'wave')}/"),
            what=f"read wave '{name}'",
            missing_ok=True,
            params={"show-targets": 1} if show_targets else None,
        )
        return None if data is None else _expect(data, dict, f"read wave '{name}'")

    def wave_status(self, name: str) -> Json:
        what = f"status of wave '{name}'"
        return _expect(
            self._send(
                "GET",
                self._factory_path(f"waves/{_segment(name, 'wave')}/status/"),
                params={"offline-threshold": OFFLINE_THRESHOLD_HOURS},
                what=what,
            ),
            dict,
            what,
        )

    def wave_targets(self, names: list[str]) -> dict[str, Json]:
        """The targets of these active waves in one request (reference §1.3); waves with none are absent."""
        return self._targets_by("wave-targets/", "name", names, "read wave targets")

    def device_updates(self, device: str) -> list[Json]:
        """A device's first page of updates, fioctl's ``devices updates`` (``UpdateList``)."""
        what = f"updates of device '{device}'"
        data = _expect(
            self._send(
                "GET",
                f"/ota/devices/{_segment(device, 'device')}/updates/",
                params={"factory": self.factory},
                what=what,
            ),
            dict,
            what,
        )
        return [u for u in _expect(data.get("updates") or [], list, what) if isinstance(u, dict)]

    def update_events(self, device: str, correlation_id: str) -> list[Json]:
        """The events of one update, fioctl's ``devices updates show`` (a list of ``UpdateEvent``)."""
        what = f"events of update '{correlation_id}' of device '{device}'"
        data = self._send(
            "GET",
            f"/ota/devices/{_segment(device, 'device')}/updates/{_segment(correlation_id, 'correlation id')}/",
            params={"factory": self.factory},
            what=what,
        )
        return [e for e in _expect(data or [], list, what) if isinstance(e, dict)]

    def device_groups(self) -> set[str]:
        data = _expect(
            self._send("GET", self._factory_path("device-groups/"), what="list device groups"),
            dict,
            "list device groups",
        )
        groups = _expect(data.get("groups") or [], list, "list device groups")
        return {g["name"] for g in groups if isinstance(g, dict) and isinstance(g.get("name"), str)}

    def factory_status(self) -> Json:
        """Devices per tag and group (fioctl's FactoryStatus): which tags production devices follow."""
        return _expect(
            self._send(
                "GET",
                self._factory_path("status/"),
                params={"offline-threshold": OFFLINE_THRESHOLD_HOURS},
                what="read the factory status",
            ),
            dict,
            "read the factory status",
        )

    def production_devices(self, tag: str) -> list[Json]:
        """The production devices on a tag, 1,000 a page: ceil(devices / 1000) requests, never one per device."""
        what = f"list the devices of tag '{tag}'"

        def fetch(page: int) -> tuple[list[Json], Json]:
            params: dict[str, str | int] = {
                "factory": self.factory,
                "match_tag": tag,
                "prod": 1,
                "limit": DEVICE_PAGE_SIZE,
            }
            if page > 1:
                params["page"] = page  # fioctl sends page only past the first
            data = _expect(self._send("GET", "/ota/devices/", params=params, what=what), dict, what)
            return [_expect(device, dict, what) for device in _expect(data.get("devices") or [], list, what)], data

        return self._all_pages(fetch)

    def production_device(self, tag: str, uuid: str) -> Json | None:
        """The production device of a tag with this UUID, or None: the device list with fioctl's ``uuid``
        filter besides ``match_tag`` and ``prod`` (reference §1.6), so the factory applies the same rule as
        to a whole tag's list, in one request whatever the tag's size."""
        what = f"look up device {uuid} on tag '{tag}'"
        data = _expect(
            self._send(
                "GET",
                "/ota/devices/",
                params={"factory": self.factory, "match_tag": tag, "prod": 1, "uuid": uuid},
                what=what,
            ),
            dict,
            what,
        )
        found = [
            d for d in _expect(data.get("devices") or [], list, what) if isinstance(d, dict) and d.get("uuid") == uuid
        ]
        return found[0] if found else None

    def create_wave(self, *, name: str, version: int, tag: str, signed: bytes, signatures: list[Json]) -> Any:
        """POST a WaveCreate whose ``targets.signed`` is ``signed`` verbatim: the canonical bytes that
        were signed, as fioctl sends them (reference §2.1 step 10). Re-encoding the object instead
        would send another byte sequence than the one the signatures cover."""
        body = b"".join(
            [
                b'{"name":',
                _json(name),
                b',"version":',
                _json(str(version)),
                b',"tag":',
                _json(tag),
                b',"targets":{"signed":',
                signed,
                b',"signatures":',
                _json(signatures),
                b"}}",
            ]
        )
        return self._send("POST", self._factory_path("waves/"), content=body, what=f"init wave '{name}'")

    def rollout(self, name: str, options: Json) -> Json:
        what = ("dry-run rollout" if options.get("dry-run") else "rollout") + f" of wave '{name}'"
        return _expect(
            self._send("POST", self._factory_path(f"waves/{_segment(name, 'wave')}/rollout/"), body=options, what=what)
            or {},
            dict,
            what,
        )

    def sign_wave(self, name: str, signatures: list[Json]) -> Any:
        """Add signatures to the wave's targets: ``POST waves/{w}/sign/ {"signatures": [...]}``, the
        call ``fioctl waves sign`` makes (fioctl client/foundries.go FactorySignWave, reference §1.2)."""
        return self._send(
            "POST",
            self._factory_path(f"waves/{_segment(name, 'wave')}/sign/"),
            body={"signatures": signatures},
            what=f"sign wave '{name}'",
        )

    def complete(self, name: str) -> Any:
        return self._send(
            "POST", self._factory_path(f"waves/{_segment(name, 'wave')}/complete/"), what=f"complete wave '{name}'"
        )

    def cancel(self, name: str) -> Any:
        return self._send(
            "POST", self._factory_path(f"waves/{_segment(name, 'wave')}/cancel/"), what=f"cancel wave '{name}'"
        )

    # -- targets and keys -----------------------------------------------------------------------

    def prod_targets(self, tags: list[str]) -> dict[str, Json]:
        """The production targets of these tags in one request; tags with none are absent."""
        return self._targets_by("prod-targets/", "tag", tags, "read production targets")

    def _targets_by(self, path: str, param: str, keys: list[str], what: str) -> dict[str, Json]:
        """Targets envelopes keyed by tag or wave name, the comma-joined ``param`` selecting them (§1.3);
        404 is "none of them has any"."""
        if not keys:
            return {}
        data = self._send(
            "GET", self._factory_path(path), params={param: ",".join(sorted(keys))}, what=what, missing_ok=True
        )
        return _expect(data or {}, dict, what)

    def ci_targets(self, version: int) -> dict[str, Json]:
        what = f"read CI targets of version {version}"
        return _expect(
            self._send("GET", self._factory_path("targets/"), params={"version": version}, what=what, missing_ok=True)
            or {},
            dict,
            what,
        )

    def root(self) -> Json:
        """The CI root: like fioctl's waves init, the offline key is found and checked against it."""
        what = "read the TUF root"
        return _expect(
            self._send("GET", f"/ota/repo/{_segment(self.factory, 'factory')}/api/v1/user_repo/root.json", what=what),
            dict,
            what,
        )

    def prod_root(self) -> Json:
        """The production root: its targets threshold is what a wave needs before it rolls out (§4.1)."""
        what = "read the production TUF root"
        return _expect(
            self._send(
                "GET",
                f"/ota/repo/{_segment(self.factory, 'factory')}/api/v1/user_repo/root.json",
                params={"production": 1},
                what=what,
            ),
            dict,
            what,
        )

    def online_targets_key(self) -> Json:
        what = "read the online targets key"
        return _expect(self._send("GET", self._factory_path("ci-targets.pub"), what=what), dict, what)

    # -- devices --------------------------------------------------------------------------------

    def device_pages(self, filters: dict[str, str], page_size: int = 1000) -> Iterator[tuple[list[Json], int]]:
        """The device list (reference §1.6), one page at a time as ``(devices, total)``, in order.

        ``GET /ota/devices/?factory=F&...``; empty filters are dropped and ``page`` is sent only
        after the first page, as fioctl does. 1000 is the largest ``limit`` fioctl allows. The first
        page gives the total and the server's page size; the pages after it are then read
        ``DEVICE_PAGES_AT_ONCE`` at a time, together: a tag of 100,000 devices costs 8 round trips
        instead of 100 (``reconcile devices`` over TLS at 100 ms, 81,000 devices, read page by page:
        15 s against the plan bench's factory), and at most that many pages are held at once. A server
        whose pages fall short is followed page by page, and paging stops at the announced total, so a
        server that keeps answering ``next`` cannot loop forever.
        """
        params: dict[str, str | int] = {
            "factory": self.factory,
            **{k: v for k, v in filters.items() if v},
            "limit": page_size,
        }

        def fetch(page: int) -> tuple[list[Json], Json]:
            query = params if page == 1 else {**params, "page": page}
            data = _expect(self._send("GET", "/ota/devices/", params=query, what="list devices"), dict, "list devices")
            return [
                _expect(d, dict, "list devices") for d in _expect(data.get("devices") or [], list, "list devices")
            ], data

        seen = 0

        def counted(batch: list[Json], data: Json) -> tuple[list[Json], int]:
            nonlocal seen
            announced = data.get("total")
            total = announced if isinstance(announced, int) else seen + len(batch)
            seen += len(batch)
            return batch, total

        batch, data = fetch(1)
        first = counted(batch, data)
        yield first
        if not data.get("next") or not batch or seen >= first[1]:
            return
        pages = range(2, -(-first[1] // len(batch)) + 1)  # as many as the total fills at the first page's size
        for start in range(pages.start, pages.stop, DEVICE_PAGES_AT_ONCE):
            window = range(start, min(start + DEVICE_PAGES_AT_ONCE, pages.stop))
            for batch, data in self.gather([functools.partial(fetch, page) for page in window]):
                yield counted(batch, data)
        page = pages.stop
        while data.get("next") and batch and seen < first[1]:
            batch, data = fetch(page)
            yield counted(batch, data)
            page += 1


def _json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as httpx encodes ``json=`` bodies."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _expect(value: object, kind: type[_K], what: str) -> _K:
    """Refuse an answer of the wrong shape with one line, instead of failing deep inside the planner."""
    if not isinstance(value, kind):
        raise BackendError(
            f"{what}: unexpected answer from the factory (a JSON {type(value).__name__} where a "
            f"{'list' if kind is list else 'object'} belongs)"
        )
    return value
