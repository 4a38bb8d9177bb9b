"""Waves: create, list, show, sign, complete, cancel (reference §1.2, §2.1, §2.3).

Rules the service enforces here (each has a test in tests/localfactory/test_waves.py or test_requests.py):

- wave names match ``^[a-zA-Z0-9_.-]+$`` and are unique (409 otherwise); one active wave per tag (409);
- the targets are ``{"signed", "signatures"}`` with ``signed`` holding exactly ``_type``, ``expires``,
  ``targets``, ``version``; ``version`` equals the wave version and exceeds the tag's production
  version; ``expires`` lies in the future;
- ``version`` is a JSON string of a decimal number (``"42"``), as fioctl sends it; ``signed``
  arrives as canonical JSON, byte for byte (``require_canonical_signed``);
- every target is either an unchanged production target of the tag or a CI target of the wave
  version whose only change is ``custom.tags == [tag]``; every CI target of the version is there
  unless a source tag explains the gap (``_missing_ci_targets``), else "Targets validation
  failed" with "CI Target differs for target X: not present in a wave" (reference §1.1);
  production targets left out are pruned; no two targets of one version share a hardware id;
- every signature sent must verify against the production root's targets keys (a tampered or
  wrongly signed wave is refused, 400); the service then adds its online signature. Rollout and
  complete need the production root's targets threshold (2: online + offline; 1 + N with
  ``init --offline-keys N``, the others added through ``sign``) to be met, and
  targets that have not expired (409 otherwise: production targets are never published expired).

Decisions on the reference's open questions (§6): ``POST waves/`` answers 201 with the Wave;
sign, cancel and complete answer 200 with the Wave; the list and a plain GET leave ``targets`` out
(present only with ``show-targets=1``); the list is newest first. ``change-meta.updated-*`` are
empty strings until the wave completes or is canceled. The stored ``signed`` is canonical JSON and
is served with its keys in canonical order, so ``fioctl waves sign`` signs the right bytes. The
online signature is added at create; complete copies the wave's envelope verbatim into the tag's
production targets.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from msgspec import Struct

from reconciler import signing

from . import requestbody, store, targets, trust
from .errors import bad_request, conflict, not_found
from .shapes import JsonObject, JsonValue

# Stricter than the API where it is silent: ``.`` and ``..`` are refused, since as URL path segments they
# are steps, not names (a client would then address another resource), and fullmatch refuses a final newline.
NAME_RE = re.compile(r"(?!\.\.?$)[a-zA-Z0-9_.-]{1,100}")
TAG_RE = re.compile(r"^[a-zA-Z0-9_.+-]{1,100}$")
VERSION_RE = re.compile(r"0|[1-9][0-9]{0,9}")
EXPIRES_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SIGNED_KEYS = {"_type", "expires", "targets", "version"}
ACTIVE = "$active$"
NOT_CANONICAL = (
    "targets.signed is not canonical JSON as received: send exactly the canonical bytes that were "
    "signed (keys sorted, no whitespace, as fioctl writes them)"
)


class Wave(Struct):
    id: int
    name: str
    version: int
    tag: str
    signed: str  # canonical JSON text
    signatures: list[JsonObject]
    status: str
    created_at: int
    created_by: str
    updated_at: int | None
    updated_by: str

    @property
    def signed_obj(self) -> JsonObject:
        signed: JsonObject = json.loads(self.signed)
        return signed

    def envelope(self) -> JsonObject:
        return {"signatures": self.signatures, "signed": self.signed_obj}


_COLUMNS = "id, name, version, tag, signed, signatures, status, created_at, created_by, updated_at, updated_by"


def _row(r: Sequence[Any]) -> Wave:
    return Wave(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9], r[10])


def find(conn: sqlite3.Connection, name: str) -> Wave | None:
    sql = f"SELECT {_COLUMNS} FROM waves WHERE name = ?"  # noqa: S608 - fixed column names; name is bound
    r = conn.execute(sql, (name,)).fetchone()
    return _row(r) if r else None


def resolve(conn: sqlite3.Connection, name: str) -> Wave:
    """A wave by name; ``$active$`` is the one active wave (400 if several tags have one)."""
    if name == ACTIVE:
        sql = f"SELECT {_COLUMNS} FROM waves WHERE status = 'active' ORDER BY id"  # noqa: S608 - fixed column names only
        rows = conn.execute(sql).fetchall()
        if not rows:
            raise not_found("There is no active wave")
        if len(rows) > 1:
            names = ", ".join(r[1] for r in rows)
            raise bad_request(f"More than one wave is active ({names}): name the wave")
        return _row(rows[0])
    wave = find(conn, name)
    if wave is None:
        raise not_found(f"Wave {name} not found")
    return wave


def active_for_tag(conn: sqlite3.Connection, tag: str) -> Wave | None:
    sql = f"SELECT {_COLUMNS} FROM waves WHERE tag = ? AND status = 'active'"  # noqa: S608 - fixed column names; tag is bound
    r = conn.execute(sql, (tag,)).fetchone()
    return _row(r) if r else None


def require_active(wave: Wave, action: str) -> None:
    if wave.status != "active":
        raise conflict(
            f"Cannot {action} wave {wave.name}: it is {'completed' if wave.status == 'complete' else 'canceled'}"
        )


def require_signed(conn: sqlite3.Connection, wave: Wave, action: str) -> None:
    try:
        signing.verify_threshold(trust.prod_root(conn), "targets", wave.signed_obj, wave.signatures)
    except signing.TufError as e:
        raise conflict(f"Cannot {action} wave {wave.name}: {e}; add signatures with `fioctl waves sign`") from None


def require_unexpired(conn: sqlite3.Connection, wave: Wave, action: str) -> None:
    """Rollout and complete publish the wave's targets to devices, which refuse expired metadata
    (TUF): an expired wave is never published. The reference is silent on the code; like every
    operation the wave's state no longer allows, it is 409, and the remedy is a new wave."""
    expires = wave.signed_obj["expires"]
    if store.parse_time(expires) <= store.now(conn):
        raise conflict(
            f"Cannot {action} wave {wave.name}: its targets expired at {expires}; devices would refuse "
            "them. Cancel it and create a new wave",
            [f"targets.signed.expires: {expires} has passed"],
        )


# ------------------------------------------------------------------------------------ JSON


def wave_json(conn: sqlite3.Connection, wave: Wave, *, show_targets: bool = False) -> JsonObject:
    """The API's ``Wave`` (reference §1.2); ``targets`` only with ``show-targets=1``."""
    return waves_json(conn, [wave], show_targets=show_targets)[0]


def waves_json(conn: sqlite3.Connection, waves: Sequence[Wave], *, show_targets: bool = False) -> list[JsonObject]:
    """``wave_json`` of each wave, their rollout groups and history read in one query each for them all: a
    list page of 100 waves took 200 queries one wave at a time (bench/bench_plan.py's pages: 14 ms of the
    server's CPU each before, 9 ms with this and ``store.iso``'s faster format)."""
    ids = [wave.id for wave in waves]
    marks = ",".join("?" * len(ids))
    groups: dict[int, dict[str, JsonObject]] = {wave_id: {} for wave_id in ids}
    for wave_id, gid, gname, created_at, created_by in conn.execute(
        "SELECT wave_id, group_id, group_name, created_at, created_by FROM wave_groups "  # noqa: S608 - marks only
        f"WHERE wave_id IN ({marks}) ORDER BY wave_id, seq",
        ids,
    ):
        groups[wave_id][gname] = {
            "group-id": gid,
            "group-name": gname,
            "created-at": store.iso(created_at),
            "created-by": created_by,
        }
    history: dict[int, list[JsonObject]] = {wave_id: [] for wave_id in ids}
    for wave_id, gname, by, at, full, wide, num in conn.execute(
        "SELECT wave_id, group_name, rollout_by, rollout_at, is_full_group, is_factory_wide, num_devices "  # noqa: S608 - marks only
        f"FROM rollouts WHERE wave_id IN ({marks}) ORDER BY wave_id, id",
        ids,
    ):
        history[wave_id].append(
            {
                "group-name": gname,
                "rollout-by": by,
                "rollout-at": store.iso(at),
                "is-full-group": bool(full),
                "is-factory-wide": bool(wide),
                "num-devices": num,
            }
        )
    return [_wave_json(wave, groups[wave.id], history[wave.id], show_targets) for wave in waves]


def _wave_json(wave: Wave, groups: dict[str, JsonObject], history: list[JsonObject], show_targets: bool) -> JsonObject:
    out: JsonObject = {"name": wave.name, "version": str(wave.version), "tag": wave.tag}
    if show_targets:
        out["targets"] = wave.envelope()
    out.update(
        {
            "status": wave.status,
            "rollout-groups": groups,
            "rollout-history": history,
            "change-meta": {
                "created-at": store.iso(wave.created_at),
                "created-by": wave.created_by,
                "updated-at": store.iso(wave.updated_at),
                "updated-by": wave.updated_by,
            },
        }
    )
    return out


# The status condition as fixed text, one per status (the resource refuses any other value): with the literal,
# SQLite can use the partial index of the active waves (``waves_one_active_per_tag``), so the active waves
# are found without reading the finished ones.
_STATUS_IS = {status: f"status = '{status}'" for status in ("active", "complete", "canceled")}


def list_waves(
    conn: sqlite3.Connection, *, page: int, limit: int, status: str | None, tag: str | None
) -> tuple[list[JsonObject], int]:
    where: list[str] = []  # fixed conditions with ? marks; every value goes into args
    args: list[str | int] = []
    if status:
        where.append(_STATUS_IS[status])
    if tag:
        where.append("tag = ?")
        args.append(tag)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    count_sql = f"SELECT count(*) FROM waves {clause}"  # noqa: S608 - fixed conditions; values bound (args)
    total = conn.execute(count_sql, args).fetchone()[0]
    # The page's ids first, then their rows: SQLite builds every row an OFFSET skips, and a wave's row holds
    # its signed targets (kilobytes), so selecting the columns directly made page N cost N pages of rows.
    page_sql = (
        f"SELECT {_COLUMNS} FROM waves WHERE id IN "  # noqa: S608 - as count_sql
        f"(SELECT id FROM waves {clause} ORDER BY id DESC LIMIT ? OFFSET ?) ORDER BY id DESC"
    )
    rows = conn.execute(page_sql, [*args, limit, (page - 1) * limit]).fetchall()
    return waves_json(conn, [_row(r) for r in rows]), total


# ------------------------------------------------------------------------------------ create


def _parse_version(value: JsonValue) -> int | None:
    """``WaveCreate.version`` is a JSON string (fioctl's Go struct field is a string): a number, or a
    string with signs, spaces or leading zeros, is refused rather than guessed at."""
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        return None
    v = int(value)
    return v if v < 1 << 31 else None


def require_canonical_signed(body: JsonValue, text: str | None) -> None:
    """``targets.signed`` must arrive as canonical JSON, byte for byte as it was signed.

    fioctl signs the canonical bytes and sends exactly those (reference §2.1 steps 8-10); a server
    that verifies the bytes it receives refuses anything else. This one re-canonicalises before
    verifying, so without this check a client that signs one form and sends another would pass in
    rehearsal and fail in production. ``text`` is the request body as received."""
    envelope = body.get("targets") if isinstance(body, dict) else None
    signed = envelope.get("signed") if isinstance(envelope, dict) else None
    if text is None or not isinstance(signed, dict):
        return  # create() reports a missing or malformed envelope
    try:
        canonical = signing.canonical_json(signed)
    except signing.TufError as e:
        raise bad_request("Targets validation failed", [f"targets.signed cannot be canonical JSON: {e}"]) from None
    raw = requestbody.raw_member(text, "targets", "signed")
    if raw is None or raw.encode("utf-8") != canonical:
        raise bad_request("Targets validation failed", [NOT_CANONICAL])


def create(conn: sqlite3.Connection, body: JsonValue, actor: str) -> JsonObject:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object with name, version, tag and targets")
    errors: list[str] = []
    name, tag, envelope = body.get("name"), body.get("tag"), body.get("targets")
    version = _parse_version(body.get("version"))
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        errors.append("name: required; letters, digits, '_', '.' and '-' only (at most 100)")
    if version is None:
        errors.append('version: required; the target version as a JSON string of its decimal number, e.g. "42"')
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        errors.append("tag: required; letters, digits, '_', '.', '+' and '-' only")
    if (
        not isinstance(envelope, dict)
        or not isinstance(envelope.get("signed"), dict)
        or not isinstance(envelope.get("signatures"), list)
    ):
        errors.append('targets: required; a signed TUF targets envelope {"signed": {...}, "signatures": [...]}')
    # The type tests repeat checks above that already put an error in the list: mypy cannot see that.
    if (
        errors
        or version is None
        or not isinstance(name, str)
        or not isinstance(tag, str)
        or not isinstance(envelope, dict)
    ):
        raise bad_request("Invalid wave", errors)
    if find(conn, name) is not None:
        raise conflict(f"A wave named {name} already exists")
    current = active_for_tag(conn, tag)
    if current is not None:
        raise conflict(f"Wave {current.name} is already active for tag {tag}: complete or cancel it first")
    signed = envelope["signed"]
    _validate_targets(conn, signed, version, tag)
    signatures = _verified_signatures(conn, signed, envelope["signatures"])
    signatures.append(trust.sign_online(conn, signed))
    ts = store.now(conn)
    cur = conn.execute(
        "INSERT INTO waves(name, version, tag, signed, signatures, status, created_at, created_by, updated_at, "
        "updated_by) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, NULL, '')",
        (name, version, tag, signing.canonical_json(signed).decode(), json.dumps(signatures), ts, actor),
    )
    if cur.lastrowid is None:  # sqlite3 sets it after every successful INSERT
        raise sqlite3.DatabaseError("the new wave has no row id")
    return wave_json(conn, resolve_id(conn, cur.lastrowid))


def resolve_id(conn: sqlite3.Connection, wave_id: int) -> Wave:
    sql = f"SELECT {_COLUMNS} FROM waves WHERE id = ?"  # noqa: S608 - fixed column names; wave_id is bound
    r = conn.execute(sql, (wave_id,)).fetchone()
    if r is None:
        raise not_found(f"Wave {wave_id} not found")
    return _row(r)


def _validate_targets(conn: sqlite3.Connection, signed: JsonObject, version: int, tag: str) -> None:
    if set(signed) != SIGNED_KEYS:
        raise bad_request(
            "Targets validation failed",
            ["targets.signed must hold exactly _type, expires, targets and version, not " + ", ".join(sorted(signed))],
        )
    errors: list[str] = []
    if signed["_type"] != "Targets":
        errors.append(f'targets.signed._type must be "Targets", not {signed["_type"]!r}')
    if signed["version"] != version or isinstance(signed["version"], bool):
        errors.append(f"targets.signed.version {signed['version']!r} differs from the wave version {version}")
    expires = signed["expires"]
    if not isinstance(expires, str) or not EXPIRES_RE.match(expires):
        errors.append("targets.signed.expires must be a UTC time in whole seconds, YYYY-MM-DDTHH:MM:SSZ")
    elif store.parse_time(expires) <= store.now(conn):
        errors.append(f"targets.signed.expires {expires} is not in the future")
    files = signed["targets"]
    if not isinstance(files, dict):
        errors.append("targets.signed.targets must be an object")
    if errors:
        raise bad_request("Targets validation failed", errors)

    ci = targets.ci_files(conn, version)
    if not ci:
        raise bad_request(f"No targets found for version {version}")
    prod = targets.prod_targets(conn, tag)
    prod_files = prod["signed"]["targets"] if prod else {}
    if prod and version <= prod["signed"]["version"]:
        raise bad_request(
            "Cannot create a Wave for a version lower than or equal to production Targets for the "
            f"same tag ({tag} is at version {prod['signed']['version']})"
        )
    new = 0
    by_version_hwid: dict[tuple[str, str], str] = {}
    for name in sorted(files):
        meta = files[name]
        custom = meta.get("custom") if isinstance(meta, dict) else None
        if not isinstance(custom, dict):
            errors.append(f"Target {name} has no custom metadata")
            continue
        if name in prod_files:
            if meta != prod_files[name]:
                errors.append(f"Production Target {name} differs from the production Targets of tag {tag}")
        elif name in ci:
            expected = dict(ci[name], custom={**ci[name]["custom"], "tags": [tag]})
            if meta != expected:
                errors.append(f"CI Target differs for target {name}: {_difference(meta, expected, tag)}")
            new += 1
        else:
            errors.append(f"Target {name} is not a CI target of version {version} nor a production target of tag {tag}")
        for hwid in custom.get("hardwareIds") or []:
            key = (str(custom.get("version")), hwid)
            other = by_version_hwid.setdefault(key, name)
            if other != name:
                errors.append(f"{other} and {name} conflict with each other's hardwareIds: {hwid}")
    if not errors and new == 0:
        errors.append(f"The wave holds no CI target of version {version}")
    if not errors:
        errors = _missing_ci_targets(ci, files)
    if errors:
        raise bad_request("Targets validation failed", errors)


def _missing_ci_targets(ci: dict[str, JsonObject], files: JsonObject) -> list[str]:
    """Errors for CI targets of the version the wave leaves out, unless ``--source-tag`` explains them.

    fioctl puts every CI target of the version into the wave, except that ``--source-tag T`` keeps
    only those whose CI ``custom.tags`` hold T. The request does not carry T, so a gap is accepted
    only if some tag is held by every CI target the wave includes and by none it leaves out: exactly
    the waves fioctl can produce. Otherwise each missing target is named as the real API names it
    (reference §1.1; the rule itself is open there, §6.6)."""
    included = [name for name in ci if name in files]
    missing = sorted(name for name in ci if name not in files)
    if not missing:
        return []
    shared = set.intersection(*(set(ci[name]["custom"].get("tags") or []) for name in included))
    left_out: set[str] = set().union(*(set(ci[name]["custom"].get("tags") or []) for name in missing))
    if shared - left_out:
        return []
    return [f"CI Target differs for target {name}: not present in a wave" for name in missing]


def _difference(meta: JsonObject, expected: JsonObject, tag: str) -> str:
    if meta.get("custom", {}).get("tags") != [tag]:
        return f'custom.tags must be ["{tag}"]'
    for key in sorted(set(meta) | set(expected)):
        if key == "custom":
            for ck in sorted(set(meta["custom"]) | set(expected["custom"])):
                if meta["custom"].get(ck) != expected["custom"].get(ck):
                    return f"custom.{ck} differs from the CI target"
        elif meta.get(key) != expected.get(key):
            return f"{key} differs from the CI target"
    return "differs from the CI target"


def _verified_signatures(conn: sqlite3.Connection, signed: JsonObject, signatures: list[JsonValue]) -> list[JsonObject]:
    """Every signature sent must verify against the production root; at least one, none of the online key."""
    prod_root = trust.prod_root(conn)
    online_kid = signing.key_id(trust.online_public(conn))
    errors: list[str] = []
    good: list[JsonObject] = []
    seen: set[str] = set()
    for i, sig in enumerate(signatures):
        if not isinstance(sig, dict):
            errors.append(f"signatures[{i}] is not a signature object")
            continue
        try:
            kid = signing.verify_signature(prod_root, "targets", signed, sig)
        except signing.TufError as e:
            errors.append(f"signatures[{i}]: {e}")
            continue
        if kid == online_kid or kid in seen:
            continue
        seen.add(kid)
        good.append({"keyid": sig["keyid"], "method": sig["method"], "sig": sig["sig"]})
    if errors:
        raise bad_request(
            "Targets signature verification failed: the targets were changed after signing or "
            "signed with a key that is not an offline targets key of the production root",
            errors,
        )
    if not good:
        raise bad_request(
            "Targets signature verification failed: the wave carries no signature of an offline "
            "targets key of the production root"
        )
    return good


# ------------------------------------------------------------------------------------ sign, complete, cancel


def sign(conn: sqlite3.Connection, name: str, body: JsonValue, actor: str) -> JsonObject:
    wave = resolve(conn, name)
    require_active(wave, "sign")
    sigs = body.get("signatures") if isinstance(body, dict) else None
    if not isinstance(sigs, list) or not sigs:
        raise bad_request('The request body must be {"signatures": [signature, ...]}')
    added = _verified_signatures(conn, wave.signed_obj, sigs)
    merged = {s["keyid"]: s for s in wave.signatures}
    for sig in added:
        merged[sig["keyid"]] = sig
    conn.execute("UPDATE waves SET signatures = ? WHERE id = ?", (json.dumps(list(merged.values())), wave.id))
    return wave_json(conn, resolve_id(conn, wave.id))


def complete(conn: sqlite3.Connection, name: str, actor: str) -> JsonObject:
    wave = resolve(conn, name)
    require_active(wave, "complete")
    require_signed(conn, wave, "complete")
    require_unexpired(conn, wave, "complete")
    targets.set_prod_targets(conn, wave.tag, wave.envelope())
    _finish(conn, wave, "complete", actor)
    return wave_json(conn, resolve_id(conn, wave.id))


def cancel(conn: sqlite3.Connection, name: str, actor: str) -> JsonObject:
    wave = resolve(conn, name)
    require_active(wave, "cancel")
    _finish(conn, wave, "canceled", actor)
    return wave_json(conn, resolve_id(conn, wave.id))


def _finish(conn: sqlite3.Connection, wave: Wave, status: str, actor: str) -> None:
    conn.execute(
        "UPDATE waves SET status = ?, updated_at = ?, updated_by = ? WHERE id = ?",
        (status, store.now(conn), actor, wave.id),
    )


def full_group_ids(conn: sqlite3.Connection, wave_id: int) -> list[int]:
    return [
        r[0] for r in conn.execute("SELECT group_id FROM wave_groups WHERE wave_id = ? AND full_group = 1", (wave_id,))
    ]
