"""Canonical JSON as fioctl's encoder writes it, and the expiry format of targets metadata.

What is signed must be byte-for-byte what a server re-encodes: ``canonical_json`` refuses what it
cannot encode the way fioctl does (floats with fractions, NaN, non-string keys) instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.signing._errors import TufError

DEFAULT_EXPIRES_DAYS = 365
_INT64 = 1 << 63

# The JSON shapes of this package (root and targets metadata, keys, signatures): what it builds is a
# ``Json`` dict; what it reads, parsed from a server or a file or built here, is a ``JsonObject``.
Json = dict[str, Any]
JsonObject = Mapping[str, Any]


# In json.dumps output, escapes fioctl does not write (\b, \f, \u00XX for other control characters).
# A literal backslash followed by b/f/u also matches; that only costs the slow path.
_ODD_ESCAPE = re.compile(r"\\[bfu]")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def canonical_json(obj: object) -> bytes:
    """Encode ``obj`` exactly as fioctl's canonical JSON encoder does (reference §4.3).

    Sorted keys, no white space, only ``\\ " \\n \\r \\t`` escaped (other control characters and
    non-ASCII written raw as UTF-8), integral floats written as integers, other floats refused.
    Signatures are made over these bytes, so both sides must produce them byte for byte.
    ``json.dumps`` (C accelerated) gives the same bytes for plain data without floats and
    without other control characters; it is used when a cheap check shows that holds.
    """
    try:
        if _is_plain(obj):
            text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False)
            if not _ODD_ESCAPE.search(text):
                return _utf8(text)
        parts: list[str] = []
        _encode(obj, parts)
    except RecursionError:
        raise TufError("canonical JSON cannot encode circular or too deeply nested data") from None
    return _utf8("".join(parts))


_SCALARS = frozenset({str, int, bool, type(None)})


def _is_plain(o: Any) -> bool:  # Any: mypy cannot narrow by the exact-type tests, the fast path's point
    """True if ``o`` holds only dicts with str keys, lists, str, int, bool and None (no floats).
    Exact types only: subclasses (IntEnum, OrderedDict, ...) take the general encoder."""
    t = type(o)
    if t is dict:
        for k, v in o.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is dict or tv is list:
                if not _is_plain(v):
                    return False
            elif tv not in _SCALARS:
                return False
        return True
    if t is list:
        for v in o:
            tv = type(v)
            if tv is dict or tv is list:
                if not _is_plain(v):
                    return False
            elif tv not in _SCALARS:
                return False
        return True
    return t in _SCALARS


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TufError("canonical JSON cannot encode a string with a lone surrogate") from None


def _encode(o: object, parts: list[str]) -> None:
    """The general encoder: any Mapping, list/tuple, str, int, bool, None and integral floats."""
    if isinstance(o, str):
        parts.append('"' + o.translate(_ESCAPES) + '"')
    elif o is None:
        parts.append("null")
    elif o is True:
        parts.append("true")
    elif o is False:
        parts.append("false")
    elif isinstance(o, int):
        parts.append(int.__repr__(o))
    elif isinstance(o, float):
        parts.append(_integral_float(o))
    elif isinstance(o, Mapping):
        parts.append("{")
        items = list(o.items())
        for k, _ in items:
            if not isinstance(k, str):
                raise TufError(f"canonical JSON object keys must be strings, not {type(k).__name__}")
        items.sort(key=lambda kv: kv[0])
        for i, (k, v) in enumerate(items):
            if i:
                parts.append(",")
            parts.append('"' + k.translate(_ESCAPES) + '":')
            _encode(v, parts)
        parts.append("}")
    elif isinstance(o, (list, tuple)):
        parts.append("[")
        for i, v in enumerate(o):
            if i:
                parts.append(",")
            _encode(v, parts)
        parts.append("]")
    else:
        raise TufError(f"canonical JSON cannot encode a {type(o).__name__}")


def _integral_float(f: float) -> str:
    """fioctl writes 1.0 as 1 and refuses 1.5; beyond int64 Go's behaviour is unclear, so refuse."""
    if not math.isfinite(f) or f != int(f):
        raise TufError(f"canonical JSON cannot encode the non-integral number {f!r}")
    if not -_INT64 <= int(f) < _INT64:
        raise TufError(f"canonical JSON cannot encode the number {f!r}: out of the 64-bit range")
    return str(int(f))


def format_expires(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, rounded to whole seconds, half up, like Go's Round(time.Second).

    aktualizr on devices cannot parse fractional seconds. A naive datetime is taken as UTC.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond >= 500_000:
        dt += timedelta(seconds=1)
    return dt.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_expires(now: datetime, days: int = DEFAULT_EXPIRES_DAYS) -> datetime:
    """fioctl's default wave expiry: ``now + days`` (365), before rounding by format_expires."""
    return now + timedelta(days=days)
