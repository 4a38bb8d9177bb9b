"""Creating a local factory (``reconcile-factory init``), and the demo factory of notes/contracts.md.

A factory gets: a root key and an online targets key it keeps, one offline targets key (or more,
``offline_keys``) whose archive (fioctl format) is written for the operator to ``targets.only.key.tgz``
(the second to ``targets.only.2.key.tgz``, ...) and never stored in the database; CI and production
roots (version 2 lists [online, offline...]; prod threshold 1 + offline keys, 2 by default); CI builds
40..60 for ``intel-corei7-64`` and ``raspberrypi4-64`` (tagged ``main``, and ``devel`` from 50; 41..60
with static deltas, as if the operator had generated them, so rehearsals of the demo are warning-free);
the device groups canary, beta, us-east, us-west, eu-emea, apac; production targets for tag
``production`` at version 40, published the way an operator would: through a wave
``populate-targets`` signed with every offline key, then completed; production devices in those
groups on version 40, and CI devices on version 60, each trusting the TUF metadata versions of
the repository it fetches (as if provisioned with them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from msgspec import Struct

from reconciler import names, signing
from reconciler.errors import UserError
from reconciler.safetext import printable

from . import devices, fleet, groups, repo, store, targets, trust, waves

HWIDS = ("intel-corei7-64", "raspberrypi4-64")
GROUPS = ("canary", "beta", "us-east", "us-west", "eu-emea", "apac")
VERSIONS = range(40, 61)
KEY_ARCHIVE = store.KEY_ARCHIVE
MAX_OFFLINE_KEYS = 9  # a production root of 10 targets keys is far beyond any real factory
ACTOR = "factory-admin"
# A devices row as the bulk load inserts it: uuid, name, group_id, tag, is_prod, hwid, version, online,
# last_seen, rnd, created_at, tuf_timestamp, tuf_snapshot, tuf_targets.
_DemoRow = tuple[str, str, int | None, str, int, str, int, int, int, int, int, int, int, int]


class FactoryExists(UserError):
    pass


def check_name(name: str) -> None:
    """A factory name the API and git both take (reconciler/names.py): it goes into URL paths and into
    the apply lease's ref ``refs/reconcile/locks/<factory>``."""
    reason = names.problem(names.NameKind.FACTORY, name)
    if reason is not None:
        raise UserError(f"'{printable(name)}' is not a factory name: it {reason}")


def check_start(start: int) -> None:
    if not 0 <= start <= store.LATEST:
        raise UserError(
            f"start time {start} is out of range: it must lie between 1970-01-01T00:00:00Z and "
            f"{store.iso(store.LATEST)}"
        )


class InitResult(Struct):
    path: Path
    factory: str
    devices: int
    ci_devices: int
    keys_archive: Path  # the first offline key's archive
    seconds: float
    keys_archives: tuple[Path, ...] = ()  # every offline key's archive, the first one first
    key_ids: tuple[str, ...] = ()  # the key id each archive holds, in the same order (the plan names them)


def key_archive_name(n: int) -> str:
    """The archive of offline key ``n`` (1-based): ``targets.only.key.tgz``, ``targets.only.2.key.tgz``, ..."""
    return KEY_ARCHIVE if n == 1 else KEY_ARCHIVE.replace(".key.tgz", f".{n}.key.tgz")


def demo_uuid(seed: int, i: int, kind: str = "reconciler-demo") -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{seed}:{i}"))``, computed without UUID objects."""
    # UUIDv5 is defined over SHA-1 (RFC 4122 §4.3): a name-based identifier, not a security use.
    name = uuidlib.NAMESPACE_URL.bytes + f"{kind}:{seed}:{i}".encode()
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def demo_group(i: int) -> str | None:
    if i < 10:
        return "canary"
    if i < 60:
        return "beta"
    return ("us-east", "us-east", "us-east", "us-west", "us-west", "eu-emea", "eu-emea", "eu-emea", "apac", None)[
        i % 10
    ]


def init_factory(
    directory: str | Path,
    *,
    name: str = "demo",
    devices_n: int = 2000,
    seed: int = 42,
    start: int | None = None,
    ci_devices: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    offline_keys: int = 1,
) -> InitResult:
    """Create the factory in ``directory``. All or nothing: the database is built in a temporary file
    and renamed to ``factory.db`` only once complete, after the operator key archive was created
    (never overwritten: an existing archive, or an existing ``factory.db`` even a damaged one, is
    refused). A failed init leaves neither behind. ``progress(done, total)`` follows the devices created.
    ``offline_keys`` offline targets keys, each in its own archive: the production root needs a
    signature of every one of them (targets threshold 1 + offline_keys)."""
    t0 = time.perf_counter()
    directory = Path(directory)
    check_name(name)
    if start is None:
        start = int(time.time())
    check_start(start)
    if not 1 <= offline_keys <= MAX_OFFLINE_KEYS:
        raise UserError(f"{offline_keys} offline keys: give 1 to {MAX_OFFLINE_KEYS}")
    if ci_devices is None:
        ci_devices = max(5, devices_n // 100)
    final = store.Store.in_dir(directory)
    archives = [directory / key_archive_name(n) for n in range(1, offline_keys + 1)]
    if final.exists():
        final.check()  # a damaged file: say so (UserError), never replace it
        raise FactoryExists(f"a factory already exists at {directory}")
    for archive in archives:
        if os.path.lexists(archive):
            raise FactoryExists(
                f"{archive} already exists (an operator key archive) but {final.path.name} does not; "
                "move the archive away to create a new factory there"
            )
    made_dir = not directory.exists()
    directory.mkdir(mode=store.PRIVATE_DIR, parents=True, exist_ok=True)
    tmp = directory / f".{store.DB_NAME}.init-{os.getpid()}-{secrets.token_hex(4)}"
    st = store.Store(tmp)
    written: list[Path] = []
    try:
        st.create_schema()
        offline = [signing.generate_keypair() for _ in archives]
        with st.write() as conn:
            for key, value in {
                "factory": name,
                "seed": seed,
                "now": start,
                "created_at": start,
                **fleet.DEFAULTS,
            }.items():
                store.set_meta(conn, key, value)
            trust.init_trust(conn, start, [pair.public for pair in offline])
            for v in VERSIONS:  # static deltas to every build but the first, which has no older build to start from
                targets.add_ci_build(
                    conn, v, list(HWIDS), ["main", "devel"] if v >= 50 else ["main"], static_deltas=v > VERSIONS.start
                )
            for g in GROUPS:
                groups.create_group(conn, {"name": g, "description": f"{g} devices"}, ACTOR)
            _populate_production(conn, offline, start)
            _add_demo_devices(conn, seed, start, devices_n, ci_devices, progress)
        with st.write() as conn:
            conn.execute("ANALYZE")
        st.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        st.close()  # the last connection folds the WAL into the file and removes it
        # The archives first (O_EXCL: never overwrite an operator key), then the database appears:
        # a factory never exists without its operator keys.
        for archive, pair in zip(archives, offline, strict=True):
            try:
                fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise FactoryExists(
                    f"{archive} appeared while the factory was being created; nothing was overwritten"
                ) from None
            written.append(archive)
            with os.fdopen(fd, "wb") as fh:
                fh.write(signing.key_archive_bytes([pair]))
                fh.flush()
                os.fsync(fh.fileno())
        _publish(tmp, final.path)
    except BaseException:
        st.close()
        for archive in written:
            archive.unlink(missing_ok=True)
        _remove_db(tmp)
        if made_dir:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return InitResult(
        directory,
        name,
        devices_n,
        ci_devices,
        archives[0],
        time.perf_counter() - t0,
        tuple(archives),
        tuple(pair.keyid for pair in offline),
    )


def _publish(tmp: Path, final: Path) -> None:
    """``tmp`` becomes ``final``, never replacing a file there (a hard link where the file system
    has them, else a rename after a last check)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FactoryExists(f"a factory appeared at {final.parent} while this one was being created") from None
    except OSError:
        if os.path.lexists(final):
            raise FactoryExists(f"a factory appeared at {final.parent} while this one was being created") from None
        os.rename(tmp, final)
        return
    _remove_db(tmp)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _populate_production(conn: sqlite3.Connection, offline: list[signing.KeyPair], start: int) -> None:
    signed = signing.build_wave_targets(
        ci_targets=targets.ci_files(conn, 40),
        prod_targets=None,
        version=40,
        tag="production",
        expires=store.to_datetime(start) + timedelta(days=365),
    )
    signatures = [signing.signer_for_keypair(pair).sign(signed) for pair in offline]
    body = {
        "name": "populate-targets",
        "version": "40",
        "tag": "production",
        "targets": {"signed": signed, "signatures": signatures},
    }
    waves.create(conn, body, ACTOR)
    waves.complete(conn, "populate-targets", ACTOR)


def _add_demo_devices(
    conn: sqlite3.Connection,
    seed: int,
    start: int,
    n: int,
    n_ci: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Bulk load: device indexes are dropped and rebuilt around the inserts."""
    m = fleet.model(conn)
    day = start // fleet.DAY
    gids = {name: gid for gid, name in conn.execute("SELECT id, name FROM device_groups")}
    seed_s = str(seed)

    # Devices were provisioned with the metadata of the version they run: they trust its versions.
    trusted: dict[int, tuple[int, int, int]] = {}
    for prod, kind, tag in ((1, "prod", "production"), (0, "ci", "main")):
        checked, problem = fleet.check_view(conn, repo.view(conn, kind, tag), start)
        if checked is None:
            raise RuntimeError(f"the demo's {kind} metadata does not verify: {problem}")
        trusted[prod] = (checked.timestamp, checked.snapshot, checked.targets)

    def row(uid: str, name: str, gid: int | None, tag: str, prod: int, hwid: str, version: int) -> _DemoRow:
        rnd = devices.rnd_for(seed_s, uid)
        phase = rnd % m.interval
        if fleet.online_today(rnd, day, m):
            return (
                uid,
                name,
                gid,
                tag,
                prod,
                hwid,
                version,
                1,
                start - ((start - phase) % m.interval),
                rnd,
                start,
                *trusted[prod],
            )
        # offline today (or for good): last seen some time before today
        ago = fleet.DAY + (rnd >> 8) % (30 * fleet.DAY)
        return (uid, name, gid, tag, prod, hwid, version, 0, start - ago, rnd, start, *trusted[prod])

    def rows() -> Iterator[_DemoRow]:
        for i in range(n):
            if progress and i % 10_000 == 0:
                progress(i, n + n_ci)
            yield row(demo_uuid(seed, i), f"demo-{i:06d}", gids.get(demo_group(i)), "production", 1, HWIDS[i % 2], 40)
        for j in range(n_ci):
            yield row(demo_uuid(seed, j, "reconciler-demo-ci"), f"ci-{j:04d}", None, "main", 0, HWIDS[j % 2], 60)

    for index in store.DEVICE_INDEX_NAMES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.executemany(
        "INSERT INTO devices(uuid, name, group_id, tag, is_prod, hwid, version, online, last_seen, rnd, created_at, "
        "tuf_timestamp, tuf_snapshot, tuf_targets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    for stmt in store.DEVICE_INDEXES:
        conn.execute(stmt)
