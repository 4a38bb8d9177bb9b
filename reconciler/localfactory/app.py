"""The local factory's HTTP API: Falcon resources over the store (paths as in reference §1).

``make_app(store, require_token=...)`` gives a WSGI app. In-process (``open_embedded``) it trusts its
caller; served (``reconcile-factory serve``) every request needs ``OSF-TOKEN: <token>`` (or
``Authorization: Bearer <token>``, plain or base64 as fioctl's OAuth mode sends it) naming a token
made by ``reconcile-factory token``, else 401. Trailing slashes are optional. Every response carries
a ``Date`` header with the simulated time. Errors are ``{"message": ..., "errors": [...]}``.

Device-facing metadata (the gateway a device talks to with its client certificate; here the device
names itself with ``x-ats-device-uuid``): ``/ota/gateway/{factory}/repo/`` is that device's view of
the TUF repository (repo.py): ``root.json`` and ``N.root.json`` (production root for production
devices, CI root otherwise), ``timestamp.json``, ``snapshot.json`` and ``targets.json``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import sqlite3
from typing import Any
from urllib.parse import urlencode

import falcon

from . import (
    auth,
    devices,
    factorystatus,
    fleet,
    groups,
    repo,
    requestbody,
    rollout,
    store,
    targets,
    trust,
    waves,
    wavestatus,
)
from .errors import ApiError, bad_request, not_found
from .shapes import JsonValue

JSON_DUMPS = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
ROOT_FILE = re.compile(r"^(?:(\d+)\.)?root\.json$")
IN_PROCESS_ACTOR = "local-operator"
log = logging.getLogger(__name__)


def _int_param(req: falcon.Request, name: str, default: int, lo: int, hi: int = store.MAX_INT) -> int:
    raw = req.get_param(name)
    if raw in (None, ""):
        return default
    if not re.fullmatch(r"[+-]?[0-9]+", raw.strip()):
        raise bad_request(f"{name} must be an integer", [f"{name}: {raw[:40]!r}"])
    value = int(raw) if len(raw) <= 20 else hi + 1
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}")
    return value


def _body(req: falcon.Request) -> JsonValue:
    """The JSON body (checked by requestbody: media type, size, strict JSON), ``{}`` when there is none."""
    body = requestbody.read_json(req)
    return {} if body is None else body


class Base:
    def __init__(self, st: store.Store):
        self.store = st

    def factory(self, conn: sqlite3.Connection, name: str) -> None:
        if name != store.factory_name(conn):
            raise not_found(f"Factory {name} not found")


# ------------------------------------------------------------------------------------ waves


class WavesResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        page = _int_param(req, "page", 1, 1)
        limit = _int_param(req, "limit", 20, 1, 1000)
        status = req.get_param("status") or None
        if status not in (None, "active", "complete", "canceled"):
            raise bad_request("status must be active, complete or canceled")
        with self.store.read() as conn:
            self.factory(conn, factory)
            items, total = waves.list_waves(
                conn, page=page, limit=limit, status=status, tag=req.get_param("tag") or None
            )
        nxt = None
        if page * limit < total:
            params: dict[str, object] = dict(req.params)
            params.update(page=page + 1, limit=limit)
            nxt = f"{req.prefix}{req.path}/?{urlencode(params)}"
        resp.media = {"waves": items, "total": total, "next": nxt}

    def on_post(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        text = requestbody.read_text(req)
        body = {} if text is None else requestbody.parse(text)
        waves.require_canonical_signed(body, text)
        with self.store.write() as conn:
            self.factory(conn, factory)
            resp.media = waves.create(conn, body, req.context.actor)
        resp.status = falcon.HTTP_201


class WaveResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, wave: str) -> None:
        show = req.get_param("show-targets") not in (None, "", "0", "false")
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = waves.wave_json(conn, waves.resolve(conn, wave), show_targets=show)


class WaveActionResource(Base):
    def __init__(self, st: store.Store, action: str):
        super().__init__(st)
        self.action = action

    def on_post(self, req: falcon.Request, resp: falcon.Response, factory: str, wave: str) -> None:
        body = _body(req)
        # A dry-run rollout writes nothing: a read snapshot, so the plan's dry runs do not queue on writes.
        with (
            self.store.read()
            if self.action == "rollout" and requestbody.is_dry_run(body)
            else self.store.write() as conn
        ):
            self.factory(conn, factory)
            actor = req.context.actor
            if self.action == "rollout":
                resp.media = rollout.rollout(conn, wave, body, actor)
            elif self.action == "sign":
                resp.media = waves.sign(conn, wave, body, actor)
            elif self.action == "complete":
                resp.media = waves.complete(conn, wave, actor)
            else:
                resp.media = waves.cancel(conn, wave, actor)


class WaveStatusResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, wave: str) -> None:
        threshold = _int_param(req, "offline-threshold", 4, 1)
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = wavestatus.status(conn, wave, threshold)


# ------------------------------------------------------------------------------------ targets


def _names(req: falcon.Request, key: str) -> list[str] | None:
    """``?key=a,b`` -> [a, b]; ``?key=`` -> [] (all); absent -> None."""
    raw = req.get_param(key)
    if raw is None:
        return None
    return [x for x in (s.strip() for s in raw.split(",")) if x]


class ProdTargetsResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        tags = _names(req, "tag")
        with self.store.read() as conn:
            self.factory(conn, factory)
            every = targets.all_prod_targets(conn)
        found = every if not tags else {t: every[t] for t in tags if t in every}
        if not found:
            what = f" for tag {', '.join(tags)}" if tags else ""
            raise not_found(f"No production targets{what}")
        resp.media = found


class WaveTargetsResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        names = _names(req, "name")
        with self.store.read() as conn:
            self.factory(conn, factory)
            rows = conn.execute("SELECT name FROM waves WHERE status = 'active' ORDER BY name").fetchall()
            active = {name: waves.resolve(conn, name).envelope() for (name,) in rows}
        found = active if not names else {n: active[n] for n in names if n in active}
        if not found:
            raise not_found("No active wave with the specified name" if names else "No active wave")
        resp.media = found


class CiTargetsResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        version = req.get_param("version")
        with self.store.read() as conn:
            self.factory(conn, factory)
            if version in (None, ""):
                resp.media = targets.ci_files(conn)
            else:
                resp.media = targets.ci_files(conn, _int_param(req, "version", 0, 0))


class CiTargetResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, name: str) -> None:
        with self.store.read() as conn:
            self.factory(conn, factory)
            meta = targets.ci_file(conn, name)
        if meta is None:
            raise not_found(f"Target {name} not found")
        resp.media = meta


class OnlineKeyResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = trust.online_public(conn)


class UserRepoResource(Base):
    """``/ota/repo/{f}/api/v1/user_repo/{root.json|N.root.json|targets.json}[?production=1][&tag=T]``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, file: str) -> None:
        production = req.get_param("production") not in (None, "", "0", "false")
        kind = "prod" if production else "ci"
        with self.store.read() as conn:
            self.factory(conn, factory)
            match = ROOT_FILE.match(file)
            if match:
                body = trust.root(conn, kind, int(match.group(1)) if match.group(1) else None)
            elif file == "targets.json":
                if production:
                    tag = req.get_param("tag")
                    if not tag:
                        raise bad_request("tag is required with production=1")
                    body = targets.prod_targets(conn, tag)
                else:
                    body = targets.ci_targets_json(conn)
            else:
                body = None
        if body is None:
            raise not_found(f"{file} not found")
        resp.media = body


# ------------------------------------------------------------------------------------ devices


class DevicesResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        filters = devices.parse_filters(req.params)
        with self.store.read() as conn:
            self.factory(conn, req.get_param("factory") or store.factory_name(conn))
            items, total = devices.list_devices(conn, filters)
        pages = max(1, -(-total // filters.limit))
        nxt = None
        if filters.page < pages:
            params = dict(req.params, page=filters.page + 1, limit=filters.limit)
            nxt = f"{req.prefix}{req.path}/?{urlencode(params)}"
        resp.media = {
            "devices": items,
            "total": total,
            "next": nxt,
            "page": filters.page,
            "pages": pages,
            "limit": filters.limit,
        }


class DeviceResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, device: str) -> None:
        by_uuid = req.get_param("by-uuid") not in (None, "", "0", "false")
        with self.store.read() as conn:
            self.factory(conn, req.get_param("factory") or store.factory_name(conn))
            resp.media = devices.device_json(conn, devices.get_device(conn, device, by_uuid=by_uuid))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, device: str) -> None:
        by_uuid = req.get_param("by-uuid") not in (None, "", "0", "false")
        body = _body(req)
        with self.store.write() as conn:
            self.factory(conn, req.get_param("factory") or store.factory_name(conn))
            d = devices.patch_device(conn, devices.get_device(conn, device, by_uuid=by_uuid), body)
            resp.media = devices.device_json(conn, d)


class DeviceUpdatesResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, device: str) -> None:
        by_uuid = req.get_param("by-uuid") not in (None, "", "0", "false")
        page = _int_param(req, "page", 1, 1)
        limit = _int_param(req, "limit", 50, 1, 1000)
        with self.store.read() as conn:
            self.factory(conn, req.get_param("factory") or store.factory_name(conn))
            items, total = devices.device_updates(conn, devices.get_device(conn, device, by_uuid=by_uuid), page, limit)
        nxt = None
        if page * limit < total:
            nxt = f"{req.prefix}{req.path}/?{urlencode(dict(req.params, page=page + 1, limit=limit))}"
        resp.media = {"updates": items, "total": total, "next": nxt}


class DeviceUpdateEventsResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, device: str, correlation: str) -> None:
        by_uuid = req.get_param("by-uuid") not in (None, "", "0", "false")
        with self.store.read() as conn:
            self.factory(conn, req.get_param("factory") or store.factory_name(conn))
            resp.media = devices.update_events(conn, devices.get_device(conn, device, by_uuid=by_uuid), correlation)


class GroupsResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = {"groups": groups.list_groups(conn)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        body = _body(req)
        with self.store.write() as conn:
            self.factory(conn, factory)
            resp.media = groups.create_group(conn, body, req.context.actor)
        resp.status = falcon.HTTP_201


class GroupResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, group: str) -> None:
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = groups.get_group(conn, group)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, factory: str, group: str) -> None:
        body = _body(req)
        with self.store.write() as conn:
            self.factory(conn, factory)
            resp.media = groups.patch_group(conn, group, body, req.context.actor)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, factory: str, group: str) -> None:
        with self.store.write() as conn:
            self.factory(conn, factory)
            groups.delete_group(conn, group)
        resp.media = {}


class FactoryStatusResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str) -> None:
        threshold = _int_param(req, "offline-threshold", 4, 1)
        with self.store.read() as conn:
            self.factory(conn, factory)
            resp.media = factorystatus.factory_status(conn, threshold)


class GatewayResource(Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, factory: str, file: str) -> None:
        uuid = req.get_header("x-ats-device-uuid")
        if not uuid:
            raise bad_request("x-ats-device-uuid is required: it names the device (the client certificate's CN)")
        with self.store.read() as conn:
            self.factory(conn, factory)
            device = devices.get_device(conn, uuid, by_uuid=True)
            root_kind, view = fleet.device_view(conn, device)
            body = repo.file(conn, view, root_kind, file, store.now(conn))
        if body is None:
            raise not_found(f"{file} not found for this device")
        resp.media = body


# ------------------------------------------------------------------------------------ middleware


class Context:
    """Simulated Date on every response; the caller's identity (token) when served."""

    def __init__(self, st: store.Store, require_token: bool):
        self.store = st
        self.require_token = require_token

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.actor = IN_PROCESS_ACTOR
        if not self.require_token:
            return
        token = req.get_header("OSF-TOKEN")
        if not token:
            authz = req.get_header("Authorization") or ""
            if authz.lower().startswith("bearer "):
                token = authz[7:].strip()
        name = None
        if token:
            with self.store.read() as conn:
                name = auth.check(conn, token)
                if name is None:
                    try:
                        name = auth.check(conn, base64.b64decode(token, validate=True).decode())
                    except (binascii.Error, UnicodeDecodeError, ValueError):
                        name = None
        if name is None:
            raise ApiError(401, "Authentication required: send a valid API token in the OSF-TOKEN header")
        req.context.actor = name

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        try:
            with self.store.read() as conn:
                ts = store.now(conn)
        except Exception:  # a Date header must never turn a response into an error
            return
        resp.set_header("Date", store.http_date(ts))


def _handle_api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict[str, Any]) -> None:
    resp.status = falcon.code_to_http_status(ex.status)
    resp.media = ex.body()
    if ex.status == 401:
        resp.set_header("WWW-Authenticate", 'Bearer realm="local-factory"')


def _error(resp: falcon.Response, status: int, message: str) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = JSON_DUMPS({"message": message, "errors": []})


def _handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    """Anything else: never a traceback on the user's stderr (Falcon's default); logged at debug.
    A busy database is 503, an integer SQLite cannot hold 400, the rest 500 with one line."""
    log.debug("local factory: %s %s failed", req.method, req.path, exc_info=ex)
    if isinstance(ex, sqlite3.OperationalError) and store.is_busy(ex):
        _error(resp, 503, "the local factory is busy, try again")
        resp.set_header("Retry-After", "1")
    elif isinstance(ex, OverflowError):
        _error(resp, 400, "a number in the request is out of range")
    else:
        line = (str(ex).splitlines() or [""])[0][:200]
        _error(resp, 500, f"the local factory failed: {type(ex).__name__}{': ' + line if line else ''}")


def _serialize_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
    message = ex.title or "Error"
    if ex.description:
        message = f"{message}: {ex.description}"
    resp.content_type = falcon.MEDIA_JSON
    resp.text = JSON_DUMPS({"message": message, "errors": []})


def make_app(
    st: store.Store, *, require_token: bool = False, write_lock: float | None = None
) -> falcon.App[falcon.Request, falcon.Response]:
    """The API. ``write_lock`` (``serve``: ``writelock.WRITE_WAIT``) is how long a request that may write
    waits for an in-process apply on the same directory before it is answered 503."""
    from .writelock import ServedWriteLock

    app = falcon.App(middleware=[Context(st, require_token)])
    if write_lock is not None:  # after Context: middleware runs in the order it is added
        app.add_middleware(ServedWriteLock(st.path.parent, write_lock))
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True
    handler = falcon.media.JSONHandler(dumps=JSON_DUMPS)
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: handler})
    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(ApiError, _handle_api_error)
    app.set_error_serializer(_serialize_http_error)
    f = "/ota/factories/{factory}"
    app.add_route(f"{f}/waves", WavesResource(st))
    app.add_route(f"{f}/waves/{{wave}}", WaveResource(st))
    for action in ("sign", "rollout", "cancel", "complete"):
        app.add_route(f"{f}/waves/{{wave}}/{action}", WaveActionResource(st, action))
    app.add_route(f"{f}/waves/{{wave}}/status", WaveStatusResource(st))
    app.add_route(f"{f}/prod-targets", ProdTargetsResource(st))
    app.add_route(f"{f}/wave-targets", WaveTargetsResource(st))
    app.add_route(f"{f}/targets", CiTargetsResource(st))
    app.add_route(f"{f}/targets/{{name}}", CiTargetResource(st))
    app.add_route(f"{f}/ci-targets.pub", OnlineKeyResource(st))
    app.add_route(f"{f}/device-groups", GroupsResource(st))
    app.add_route(f"{f}/device-groups/{{group}}", GroupResource(st))
    app.add_route(f"{f}/status", FactoryStatusResource(st))
    app.add_route("/ota/repo/{factory}/api/v1/user_repo/{file}", UserRepoResource(st))
    app.add_route("/ota/devices", DevicesResource(st))
    app.add_route("/ota/devices/{device}", DeviceResource(st))
    app.add_route("/ota/devices/{device}/updates", DeviceUpdatesResource(st))
    app.add_route("/ota/devices/{device}/updates/{correlation}", DeviceUpdateEventsResource(st))
    app.add_route("/ota/gateway/{factory}/repo/{file}", GatewayResource(st))
    return app
