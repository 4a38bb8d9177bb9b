"""API tokens of a served local factory: created by ``reconcile-factory token``, printed once,
stored only as their SHA-256. A token is 32 random bytes (URL-safe base64), so a fast hash is
enough: there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3

from . import store

PREFIX = "lf_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: sqlite3.Connection, name: str) -> str:
    token = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO tokens(sha256, name, created_at) VALUES (?, ?, ?)", (_digest(token), name, store.now(conn))
    )
    return token


def check(conn: sqlite3.Connection, token: str) -> str | None:
    """The token's owner name, or None."""
    digest = _digest(token)
    row = conn.execute("SELECT sha256, name FROM tokens WHERE sha256 = ?", (digest,)).fetchone()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    name: str = row[1]
    return name
