"""Request bodies checked the way a real server checks them, before any handler sees them.

The real API is a Go service: it reads a bounded body, refuses media types it does not speak and
decodes strict JSON. Where the reference (§1.1) is silent the local factory is stricter, so that a
client bug shows in rehearsal rather than in production:

- a body is a request with ``Content-Length`` > 0 or ``Transfer-Encoding`` (chunked); fioctl sends
  ``Content-Type: application/json`` only then (cancel and complete send none, which is fine);
- a body needs ``Content-Type: application/json`` (parameters allowed, a ``charset`` only if it is
  UTF-8), else **415**;
- a body may hold at most ``MAX_BODY_BYTES`` (16 MiB; a wave of 10,000 targets is about 10 MiB),
  else **413**, decided from ``Content-Length`` before reading, and for a chunked body by reading
  at most one byte past the limit (served, waitress applies the same limit before the app runs,
  so the body is not received either: serving.py);
- the body is UTF-8 JSON (400 otherwise) with no ``NaN``/``Infinity``, no duplicate object keys,
  no lone surrogate (``"\\ud800"``: it cannot be UTF-8 nor canonical JSON) and at most
  ``MAX_DEPTH`` nested arrays/objects (64; the deepest legitimate body, a wave, is about 8 deep):
  each of these is **400**, never 500.

``raw_member`` finds the exact text of a member in an already validated body, so a handler can
check that what the client sent is byte for byte what it signed (waves.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import falcon
from falcon.typing import ReadableIO

from .errors import ApiError, bad_request
from .shapes import JsonValue

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
_READ_CHUNK = 1024 * 1024
_NOT_WHITESPACE = re.compile(r"[^ \t\n\r]")  # JSON's whitespace (RFC 8259 §2) is these four
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECODER = json.JSONDecoder()


def read_json(req: falcon.Request) -> JsonValue:
    """The request's JSON body, or None when the request has no body (see the module docstring)."""
    text = read_text(req)
    return None if text is None else parse(text)


def read_text(req: falcon.Request) -> str | None:
    """The body as text after the media type, size and UTF-8 checks; None when there is none. A body
    read already (by the served write lock, which must know whether a rollout is a dry run) is kept in
    ``req.context.body_text``: a request's stream can be read once."""
    if hasattr(req.context, "body_text"):
        kept: str | None = req.context.body_text
        return kept
    length = req.content_length  # Falcon answers 400 itself for a malformed Content-Length
    chunked = length is None and bool(req.get_header("Transfer-Encoding"))
    if not length and not chunked:
        return None
    _require_json_media_type(req.content_type)
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large()
    data = req.bounded_stream.read(length) if length is not None else _read_capped(req.stream)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8") from None


def is_dry_run(body: JsonValue) -> bool:
    """A rollout body that asks for a dry run (WaveRolloutOptions ``dry-run``, a JSON boolean)."""
    return isinstance(body, dict) and body.get("dry-run") is True


def _read_capped(stream: ReadableIO) -> bytes:
    """A chunked body, read until its end or one byte past the limit, whichever comes first."""
    parts: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = stream.read(min(_READ_CHUNK, MAX_BODY_BYTES + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    raise too_large()


def too_large() -> ApiError:
    return ApiError(413, f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")


def _require_json_media_type(content_type: str | None) -> None:
    media, *params = (content_type or "").split(";")
    charset_ok = all(
        p.partition("=")[2].strip().strip('"').lower() in ("utf-8", "utf8")
        for p in params
        if p.partition("=")[0].strip().lower() == "charset"
    )
    if media.strip().lower() != "application/json" or not charset_ok:
        shown = content_type or "none"
        raise ApiError(415, f"Unsupported Content-Type {shown[:80]}: the body must be sent as application/json")


def _no_constants(name: str) -> NoReturn:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON."""
    raise ValueError(f"{name} is not JSON")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object, unless a key repeats: Python keeps the last value, Go's decoder too, a careful
    server refuses; and a repeated key would make the raw ``signed`` ambiguous."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def parse(text: str) -> JsonValue:
    """Strict JSON (see the module docstring); every refusal is a 400 ApiError."""
    try:
        value: JsonValue = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as e:
        raise bad_request("The request body is not valid JSON", [str(e)[:200]]) from None
    _check_depth_and_strings(value)
    return value


def _too_deep() -> ApiError:
    return bad_request(f"The request body nests arrays and objects more than {MAX_DEPTH} deep")


def _check_depth_and_strings(value: JsonValue) -> None:
    """Iteratively (no recursion to exhaust): the nesting limit, and no lone surrogate in any string."""
    stack: list[tuple[JsonValue, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise bad_request("The request body holds invalid Unicode (a lone surrogate escape)")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def raw_member(text: str, *path: str) -> str | None:
    """The exact source text of ``body[path[0]][path[1]]...`` in ``text``, a body ``parse`` accepted
    (so keys are unique and the JSON is well formed); None when some step is not an object member."""
    start = _skip_ws(text, 0)
    end = len(text)
    for key in path:
        span = _member_span(text, start, key)
        if span is None:
            return None
        start, end = span
    return text[start:end]


def _skip_ws(text: str, i: int) -> int:
    """The index of the first non-whitespace character at or after ``i`` (the end of the text if none)."""
    found = _NOT_WHITESPACE.search(text, i)
    return found.start() if found else len(text)


def _member_span(text: str, i: int, wanted: str) -> tuple[int, int] | None:
    """Where the value of member ``wanted`` of the object starting at ``i`` lies."""
    if text[i : i + 1] != "{":
        return None
    i = _skip_ws(text, i + 1)
    if text[i] == "}":
        return None
    while True:
        key, i = _DECODER.raw_decode(text, i)
        i = _skip_ws(text, _skip_ws(text, i) + 1)  # past the ':'
        _, end = _DECODER.raw_decode(text, i)
        if key == wanted:
            return i, end
        i = _skip_ws(text, end)
        if text[i] == "}":
            return None
        i = _skip_ws(text, i + 1)  # past the ','
