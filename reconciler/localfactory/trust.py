"""Server-side TUF of the local factory: the keys it holds, its CI and production roots, online signing.

The factory holds the root key and the online targets key (Foundries-held in the real service). It
never holds an operator's offline targets key: only the public half is in root. Roots come in two
versions, as a factory that added an offline key has them: version 1 lists only the online targets
key (threshold 1); version 2, signed by the same root key, lists [online, offline...] with targets
threshold 1 in the CI root and 1 + the number of offline keys in the production root (reference §4.1:
2 by default, more for a factory whose production targets need several offline signatures, which
``fioctl waves sign`` then adds, reference §2.3). Devices verify the chain 1 -> 2 before they trust
targets.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import timedelta

from reconciler import signing

from . import store
from .shapes import JsonObject

ROOT = "root"
ONLINE = "online-targets"
OFFLINE = "offline-targets"  # the first offline key; the others are offline-targets-2, -3, ...
ROOT_LIFETIME = timedelta(days=20 * 365)

_signers: dict[str, signing.TargetsSigner] = {}
_signers_lock = threading.Lock()


def save_pair(conn: sqlite3.Connection, role: str, pair: signing.KeyPair, *, private: bool) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO tuf_keys(role, keyid, public, private) VALUES (?, ?, ?, ?)",
        (role, pair.keyid, json.dumps(pair.public), json.dumps(pair.private) if private else None),
    )


def load_pair(conn: sqlite3.Connection, role: str) -> signing.KeyPair:
    row = conn.execute("SELECT keyid, public, private FROM tuf_keys WHERE role = ?", (role,)).fetchone()
    if row is None or row[2] is None:
        raise LookupError(f"the factory holds no private {role} key")
    return signing.KeyPair(json.loads(row[1]), json.loads(row[2]), row[0])


def online_public(conn: sqlite3.Connection) -> JsonObject:
    row = conn.execute("SELECT public FROM tuf_keys WHERE role = ?", (ONLINE,)).fetchone()
    if row is None:
        raise LookupError("the factory has no online targets key")
    public: JsonObject = json.loads(row[0])
    return public


def online_signer(conn: sqlite3.Connection) -> signing.TargetsSigner:
    keyid = conn.execute("SELECT keyid FROM tuf_keys WHERE role = ?", (ONLINE,)).fetchone()[0]
    with _signers_lock:
        signer = _signers.get(keyid)
        if signer is None:
            signer = _signers[keyid] = signing.signer_for_keypair(load_pair(conn, ONLINE))
    return signer


def sign_online(conn: sqlite3.Connection, signed: JsonObject) -> JsonObject:
    return online_signer(conn).sign(signed)


# ------------------------------------------------------------------------------------ roots


def add_root(conn: sqlite3.Connection, kind: str, envelope: JsonObject) -> None:
    conn.execute(
        "INSERT INTO roots(kind, version, body) VALUES (?, ?, ?)",
        (kind, envelope["signed"]["version"], json.dumps(envelope)),
    )


def root(conn: sqlite3.Connection, kind: str, version: int | None = None) -> JsonObject | None:
    if version is None:
        row = conn.execute("SELECT body FROM roots WHERE kind = ? ORDER BY version DESC LIMIT 1", (kind,)).fetchone()
    else:
        row = conn.execute("SELECT body FROM roots WHERE kind = ? AND version = ?", (kind, version)).fetchone()
    body: JsonObject | None = json.loads(row[0]) if row else None
    return body


def prod_root(conn: sqlite3.Connection) -> JsonObject:
    """The newest production root. Init writes one, so a factory without it is a damaged database."""
    body = root(conn, "prod")
    if body is None:
        raise sqlite3.DatabaseError("the factory has no production root: the database is damaged")
    return body


def root_chain(conn: sqlite3.Connection, kind: str) -> list[JsonObject]:
    return [json.loads(r[0]) for r in conn.execute("SELECT body FROM roots WHERE kind = ? ORDER BY version", (kind,))]


def init_trust(conn: sqlite3.Connection, now: int, offline_publics: Sequence[JsonObject]) -> None:
    """Generate the factory's root and online keys and write root versions 1 and 2 (CI and prod).

    Root version 2 lists the online key and every offline key; the production root needs all of
    them (threshold 1 + offline keys), the CI root one (fioctl signs waves against the CI root)."""
    if not offline_publics:
        raise ValueError("a factory needs at least one offline targets key")
    root_pair = signing.generate_keypair()
    online = signing.generate_keypair()
    save_pair(conn, ROOT, root_pair, private=True)
    save_pair(conn, ONLINE, online, private=True)
    for n, public in enumerate(offline_publics, start=1):
        role = OFFLINE if n == 1 else f"{OFFLINE}-{n}"
        save_pair(conn, role, signing.KeyPair(public, {}, signing.key_id(public)), private=False)
    expires = store.to_datetime(now) + ROOT_LIFETIME
    for kind in ("ci", "prod"):
        add_root(
            conn,
            kind,
            signing.make_root(
                version=1, expires=expires, root_pairs=[root_pair], targets_public=[online.public], targets_threshold=1
            ),
        )
        add_root(
            conn,
            kind,
            signing.make_root(
                version=2,
                expires=expires,
                root_pairs=[root_pair],
                targets_public=[online.public, *offline_publics],
                targets_threshold=1 + len(offline_publics) if kind == "prod" else 1,
            ),
        )
