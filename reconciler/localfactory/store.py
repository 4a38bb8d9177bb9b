"""The local factory's storage: one SQLite file in WAL mode, its schema, connections and clock.

The schema is built for a million devices. ``devices`` is one row per device with the columns
the hot paths read; its indexes serve exactly those paths:

- ``devices_pick_group`` / ``devices_pick_tag`` (tag, is_prod, [group_id,] rnd): rollout selection
  walks devices of a tag (and group) in the order of their random ``rnd`` from a seeded start, so a
  pick of N devices reads about N index entries and never sorts;
- ``devices_status`` (tag, is_prod, group_id, version, online, last_seen): wave and factory status
  are one covering-index scan with GROUP BY in index order;
- ``devices_wave`` (partial, wave_id): the devices a rollout staged explicitly;
- ``devices_trust`` (tag, is_prod, tuf_snapshot): the devices of a view that have not yet fetched
  its snapshot, so a check-in of an unchanged view reads no rows.

Times are integer UNIX seconds of the *simulated* clock (``meta.now``), which moves only when
``advance`` is called. A device's ``last_seen`` is stored when it changes state; while ``online``
is 1 the device checks in every ``checkin_interval`` seconds and its last check-in is derived
(see fleet.py), so an hour of simulated time does not rewrite a million rows. ``tuf_timestamp``,
``tuf_snapshot`` and ``tuf_targets`` are the metadata versions the device trusts (tufclient.py),
written when it accepts a new snapshot (fleet.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import overload

DB_NAME = "factory.db"
KEY_ARCHIVE = "targets.only.key.tgz"  # the operator's offline key, written next to the database by init
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600  # the database holds the root and online targets private keys
SCHEMA_VERSION = "1"
SQLITE_HEADER = b"SQLite format 3\x00"
# Seconds a connection waits for another writer before "database is locked" (503 when served).
# With writelock.WRITE_WAIT it stays under a client's 30 s request timeout: a served write is
# answered, landed or refused, before the client gives up on it.
BUSY_TIMEOUT = 10.0
# The simulated clock stays before this (init --start, advance): TUF expiries up to 20 years later
# and every time format stay representable.
LATEST = 221845392000  # 9000-01-01T00:00:00Z
MAX_INT = 2**31 - 1  # versions, pages and other integers a user gives

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tuf_keys (
    role TEXT PRIMARY KEY, keyid TEXT NOT NULL, public TEXT NOT NULL, private TEXT);
CREATE TABLE IF NOT EXISTS roots (
    kind TEXT NOT NULL CHECK (kind IN ('ci', 'prod')), version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, version));
CREATE TABLE IF NOT EXISTS ci_targets (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL, hwid TEXT NOT NULL, tags TEXT NOT NULL,
    meta TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ci_targets_version ON ci_targets(version, hwid);
CREATE TABLE IF NOT EXISTS prod_targets (
    tag TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_groups (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL, updated_by TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS waves (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL, tag TEXT NOT NULL,
    signed TEXT NOT NULL, signatures TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'complete', 'canceled')),
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
    updated_at INTEGER, updated_by TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS waves_one_active_per_tag ON waves(tag) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS waves_tag_version ON waves(tag, version);
CREATE TABLE IF NOT EXISTS wave_groups (
    wave_id INTEGER NOT NULL, group_id INTEGER NOT NULL, group_name TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, full_group INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL, PRIMARY KEY (wave_id, group_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY, wave_id INTEGER NOT NULL, group_id INTEGER, group_name TEXT NOT NULL,
    rollout_by TEXT NOT NULL, rollout_at INTEGER NOT NULL, is_full_group INTEGER NOT NULL,
    is_factory_wide INTEGER NOT NULL, num_devices INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rollouts_wave ON rollouts(wave_id, id);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, uuid TEXT NOT NULL, name TEXT NOT NULL, group_id INTEGER,
    tag TEXT NOT NULL, is_prod INTEGER NOT NULL, hwid TEXT NOT NULL, version INTEGER NOT NULL,
    online INTEGER NOT NULL DEFAULT 0, last_seen INTEGER, rnd INTEGER NOT NULL, wave_id INTEGER,
    created_at INTEGER NOT NULL, owner TEXT NOT NULL DEFAULT '',
    tuf_timestamp INTEGER NOT NULL DEFAULT 0, tuf_snapshot INTEGER NOT NULL DEFAULT 0,
    tuf_targets INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS update_events (
    id INTEGER PRIMARY KEY, device_id INTEGER NOT NULL, at INTEGER NOT NULL,
    from_version INTEGER NOT NULL, to_version INTEGER NOT NULL, ok INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS update_events_device ON update_events(device_id, id);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at INTEGER NOT NULL);
"""

# The device list in its default order (``sortby=name``) within a tag's production devices: a page is read
# in that order and stops at its limit, instead of sorting all the tag's devices for every page. The
# plan bench's 81,000 production devices: the last of 81 pages 258 -> 19 ms, `reconcile devices --tag
# production` 16 -> 5 s on loopback.
DEVICE_LIST_INDEX = "CREATE INDEX IF NOT EXISTS devices_list ON devices(tag, is_prod, name)"
# Created after a bulk load (building an index over sorted data is several times faster than
# maintaining it row by row), and by create_schema for an empty factory.
DEVICE_INDEXES = (
    DEVICE_LIST_INDEX,
    "CREATE UNIQUE INDEX IF NOT EXISTS devices_uuid ON devices(uuid)",
    "CREATE UNIQUE INDEX IF NOT EXISTS devices_name ON devices(name)",
    "CREATE INDEX IF NOT EXISTS devices_pick_group ON devices(tag, is_prod, group_id, rnd)",
    "CREATE INDEX IF NOT EXISTS devices_pick_tag ON devices(tag, is_prod, rnd)",
    "CREATE INDEX IF NOT EXISTS devices_status ON devices(tag, is_prod, group_id, version, online, last_seen)",
    "CREATE INDEX IF NOT EXISTS devices_wave ON devices(wave_id) WHERE wave_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS devices_trust ON devices(tag, is_prod, tuf_snapshot)",
)
DEVICE_INDEX_NAMES = tuple(stmt.split(" ON ")[0].split()[-1] for stmt in DEVICE_INDEXES)


class Store:
    """A factory database. Each thread gets its own connection (waitress serves on several)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Closed when the store is dropped, or else when the process ends, even one that ends without
        # freeing its objects (``reconcile``'s ``cli.program``): the last connection to close folds the
        # WAL into the database and removes the -wal and -shm files.
        weakref.finalize(self, _close_all, self._all, self._lock)

    @classmethod
    def in_dir(cls, directory: str | Path) -> Store:
        """The factory in ``directory``. Every way to a factory directory comes here (``reconcile
        --local``, each ``reconcile-factory`` command, ``init``), so here a directory inside a git work
        tree is refused, before anything is created in it."""
        refuse_work_tree(Path(directory))
        return cls(Path(directory) / DB_NAME)

    def exists(self) -> bool:
        """Whether the database file is there (lexists: a dangling link is "there" too). Whether it
        is a factory is ``check``'s business: a damaged file must never look like "no factory"."""
        return os.path.lexists(self.path)

    def check(self) -> str:
        """The factory's name; UserError when the file is not a readable local factory database.
        Reads through a read-only connection, so a foreign or damaged file is never modified."""
        from reconciler.errors import UserError

        if os.path.isdir(self.path):
            raise UserError(self._not_a_factory("a directory"))
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(len(SQLITE_HEADER))
        except FileNotFoundError as e:  # a dangling link: nothing of a factory is there
            raise UserError(self._not_a_factory(e.strerror or str(e))) from None
        except OSError as e:  # unreadable is not "not a factory": the file may be perfectly healthy
            raise UserError(
                f"cannot read the local factory database {self.path}: {(e.strerror or str(e)).lower()}"
            ) from None
        if not header:
            raise UserError(self._not_a_factory("an empty file"))
        if header != SQLITE_HEADER:
            raise UserError(self._not_a_factory("not an SQLite database"))
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                row = (
                    conn.execute("SELECT value FROM meta WHERE key = 'factory'").fetchone()
                    if "meta" in tables
                    else None
                )
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise UserError(self.describe(e)) from None
        if row is None or not row[0]:
            raise UserError(self._not_a_factory("it holds no factory; a failed `init` may have left it"))
        name: str = row[0]
        return name

    def describe(self, e: sqlite3.Error) -> str:
        """One line for a database error that says what is wrong: busy, a full disk, a place SQLite may
        not write, an I/O error, and only for the rest "not a factory database". A healthy factory on
        a full or read-only disk must never be called damaged: the advice "move it away" would lose it.
        """
        where, code, text = self.path.parent, getattr(e, "sqlite_errorname", "") or "", str(e)
        if is_busy(e):
            return f"the local factory at {where} is busy ({text}): another process holds it; try again"
        if code.startswith("SQLITE_FULL") or "disk is full" in text:
            return f"the disk holding the local factory at {where} is full ({text}); free some space and try again"
        if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in text:
            return (
                f"the local factory at {where} cannot be written ({text}): SQLite writes next to "
                f"{self.path.name} even to read it; make the directory and its files writable "
                "(a read-only file system or missing permissions)"
            )
        if code.startswith("SQLITE_IOERR") or "disk I/O error" in text:
            return (
                f"cannot read or write the local factory at {where} ({text}{', ' + code if code else ''}): "
                "the disk may be full, over a quota or file size limit, or failing; free some space or "
                "check the disk and try again"
            )
        return self._not_a_factory(text)

    def _not_a_factory(self, why: str) -> str:
        return (
            f"{self.path} is not a local factory database ({why}); move it away or point "
            "--local/RECONCILE_LOCAL elsewhere"
        )

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            create_private(self.path)  # SQLite gives its -wal and -shm files the database's mode
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
                conn.execute("PRAGMA cache_size=-131072")  # 128 MiB
                conn.execute("PRAGMA temp_store=MEMORY")
                _add_trust_columns(conn)
                _add_later_indexes(conn)
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        _close_all(self._all, self._lock)
        self._local = threading.local()

    @contextmanager
    def _tx(self, begin: str) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        if conn.in_transaction:  # nested: the outer transaction decides
            yield conn
            return
        conn.execute(begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot for reads."""
        return self._tx("BEGIN")

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction, taken up front so that concurrent writers queue instead of failing."""
        return self._tx("BEGIN IMMEDIATE")

    def create_schema(self) -> None:
        with self.write() as conn:  # statement by statement: executescript would COMMIT
            for stmt in _statements(SCHEMA):
                conn.execute(stmt)
            for stmt in DEVICE_INDEXES:
                conn.execute(stmt)
            set_meta(conn, "schema_version", SCHEMA_VERSION)


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (an empty file is an empty SQLite database),
    so that SQLite never creates the file holding the factory's private keys with the umask's mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE))


def refuse_work_tree(directory: Path) -> None:
    """UserError when ``directory`` is in a git work tree (a ``.git`` in it or above it, as git looks)
    and git does not ignore it.
    The factory's database and key archive hold private keys; in a release repository they would be
    untracked files that one ``git add -A`` commits, and a pushed private key is lost for good."""
    from reconciler.errors import UserError

    start = Path(os.path.abspath(directory.expanduser()))
    with contextlib.suppress(OSError):  # a loop of links: the walk below still looks at the path as given
        start = start.resolve()
    for place in (start, *start.parents):
        if os.path.lexists(place / ".git"):
            if _ignored(place, start / DB_NAME):
                return  # git add -A leaves it alone (the walkthrough's .local-factory/)
            raise UserError(
                f"the local factory directory {directory} is inside the git work tree {place}: its database "
                f"and private key archive would be untracked files there, one `git add -A` from a commit; "
                f"point --local (RECONCILE_LOCAL) at a directory outside any repository or one git ignores, "
                f"or leave it unset for the user state directory"
            )


def _ignored(work_tree: Path, path: Path) -> bool:
    """Whether git ignores ``path`` in ``work_tree`` (``git check-ignore``); not when git cannot tell."""
    try:
        done = subprocess.run(
            ["git", "-C", str(work_tree), "check-ignore", "-q", "--", str(path.relative_to(work_tree))],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def make_private(directory: Path) -> str | None:
    """Tighten an existing factory to the modes a new one gets: the directory 0700, the database, its
    WAL/SHM/journal files and the operator key archive 0600, because the database holds the root and
    online targets private keys. Returns one line saying what changed (or, when a mode cannot be
    changed, a warning saying what stays readable), None when everything was private already."""
    wanted = [(directory, PRIVATE_DIR)] + [
        (directory / f"{DB_NAME}{suffix}", PRIVATE_FILE) for suffix in ("", "-wal", "-shm", "-journal")
    ]
    wanted.append((directory / KEY_ARCHIVE, PRIVATE_FILE))
    changed, failed = [], []
    for path, mode in wanted:
        try:
            st = os.lstat(path)
        except OSError:
            continue  # absent (WAL files come and go); a missing database is reported elsewhere
        if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
            continue  # links are not followed: the file they point at is not ours to change
        old = f"{'the directory' if path == directory else path.name} {stat.S_IMODE(st.st_mode):04o}"
        try:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
        except OSError as e:
            failed.append(f"{old} ({(e.strerror or str(e)).lower()})")
        else:
            changed.append(f"{old} -> {stat.S_IMODE(st.st_mode) & mode:04o}")
    if failed:
        return (
            f"warning: the local factory at {directory} holds private keys but stays readable by other users: "
            f"cannot change {', '.join(failed)}"
        )
    if changed:
        return f"Made the local factory at {directory} private (it holds private keys): {', '.join(changed)}"
    return None


def is_busy(e: BaseException) -> bool:
    """``database is locked`` / ``busy``: another process held the factory longer than BUSY_TIMEOUT."""
    text = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


TRUST_COLUMNS = ("tuf_timestamp", "tuf_snapshot", "tuf_targets")


def _add_trust_columns(conn: sqlite3.Connection) -> None:
    """A factory made before devices recorded the TUF versions they trust gets the columns (0: a
    device that trusts nothing yet accepts what it fetches next), so it keeps working."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(devices)")}
    if not have or have.issuperset(TRUST_COLUMNS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(devices)")}  # another process may have won
        for column in TRUST_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE devices ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        conn.execute(DEVICE_INDEXES[-1])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


WAVE_INDEX = "CREATE INDEX IF NOT EXISTS waves_tag_version ON waves(tag, version)"
# Indexes added after factories were made, each with its table: a factory made before one existed gets it
# when opened. Without ``waves_tag_version`` a device's production view (``repo.view``), which finds the
# wave that published its tag's targets by tag and version, scans the whole history, thousands of
# finished waves, on every device answer; without ``devices_list``, every page of the device list sorts
# the tag's devices (``DEVICE_LIST_INDEX``).
_LATER_INDEXES = (("waves", "waves_tag_version", WAVE_INDEX), ("devices", "devices_list", DEVICE_LIST_INDEX))


def _add_later_indexes(conn: sqlite3.Connection) -> None:
    """The ``_LATER_INDEXES`` a factory lacks, made in one write transaction (none when it has them all,
    and none before ``create_schema`` made the tables, with their indexes)."""

    def missing() -> list[str]:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        return [stmt for table, index, stmt in _LATER_INDEXES if table in names and index not in names]

    if not missing():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in missing():  # again: another process may have made them meanwhile
            conn.execute(stmt)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# ------------------------------------------------------------------------------------ meta


@overload
def get_meta(conn: sqlite3.Connection, key: str) -> str | None: ...
@overload
def get_meta(conn: sqlite3.Connection, key: str, default: str) -> str: ...
@overload
def get_meta(conn: sqlite3.Connection, key: str, default: None) -> str | None: ...


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def meta_int(conn: sqlite3.Connection, key: str, default: int = 0) -> int:
    value = get_meta(conn, key)
    return default if value is None else int(value)


def now(conn: sqlite3.Connection) -> int:
    """The simulated clock, UNIX seconds."""
    return meta_int(conn, "now")


def factory_name(conn: sqlite3.Connection) -> str:
    return get_meta(conn, "factory") or ""


# ------------------------------------------------------------------------------------ time formats


def iso(ts: int | None) -> str:
    """RFC 3339 UTC with a ``Z``, whole seconds (waves, groups, rollouts, TUF expiry); "" for None."""
    return "" if ts is None else _utc(ts) + "Z"


def device_time(ts: int | None) -> str:
    """RFC 3339 UTC with ``+00:00``, as the device API writes ``last-seen``; "" for never."""
    return "" if ts is None else _utc(ts) + "+00:00"


def _utc(ts: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of UNIX seconds in UTC. ``time.gmtime`` and a %-format take half the time of
    ``datetime.strftime`` (3.3 against 6.3 us), and a page of the wave list writes 400 of these (a test compares the two)."""
    return "%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(ts)[:6]  # noqa: UP031 - 3.3 us; an f-string of the fields 5.3


def http_date(ts: int) -> str:
    return formatdate(ts, usegmt=True)


def to_datetime(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def parse_time(text: str) -> int:
    """RFC 3339 (``Z`` or an offset; a naive value is UTC) to UNIX seconds; ValueError otherwise."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _close_all(connections: list[sqlite3.Connection], lock: threading.Lock) -> None:
    """Close a store's connections (``Store.close``, and its finalizer, which must not hold the store)."""
    with lock:
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        connections.clear()
