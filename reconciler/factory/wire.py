"""The factory's answers as typed values: every JSON answer the reconciler reads is parsed here, once.

The client (``client.py``) checks an answer's outer shape (an object where an object belongs); what it
contains becomes a ``core`` value here, and an answer that does not have the shape the reference gives
(reference/foundries-api.md) is one ``BackendError`` line naming the read, never a traceback from deep
inside the planner. ``observe``, ``status`` and ``wavedevices`` read only these values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from reconciler.core import (
    Device,
    DeviceFacts,
    LastUpdate,
    ObservedWave,
    ProdTargets,
    RolloutRecord,
    ScopeCounts,
    TargetsKeys,
    WaveCounts,
    WaveProgress,
    WaveStatus,
)
from reconciler.errors import BackendError
from reconciler.factory.apitime import parse_time, required_time

Json = dict[str, Any]  # a JSON object as the factory sent it, before it is parsed here
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError)
_TRAILING_VERSION = re.compile(r"-(\d+)$")


# -- waves --------------------------------------------------------------------------------------------


def parse_wave(data: object) -> ObservedWave:
    """A wave of the wave list (or ``GET waves/{name}/``); an answer without a wave's shape is one line."""
    try:
        return _parse_wave(data)
    except _MALFORMED as exc:
        name = data.get("name") if isinstance(data, dict) else None
        raise BackendError(
            f"list waves: unexpected wave {name!r} in the factory's answer ({type(exc).__name__}: {exc})"
        ) from exc


def _parse_wave(data: Any) -> ObservedWave:
    meta = data.get("change-meta") or {}
    history = tuple(
        RolloutRecord(
            group=entry.get("group-name") or "",
            at=required_time(entry.get("rollout-at"), "rollout-at"),
            full_group=bool(entry.get("is-full-group")),
            factory_wide=bool(entry.get("is-factory-wide")),
            devices=int(entry.get("num-devices") or 0),
            by=str(entry.get("rollout-by") or ""),
        )
        for entry in data.get("rollout-history") or []
    )
    return ObservedWave(
        name=data["name"],
        version=int(data["version"]),
        tag=data.get("tag") or "",
        status=WaveStatus(data.get("status") or "active"),
        created_at=required_time(meta.get("created-at"), "change-meta.created-at"),
        history=history,
        created_by=str(meta.get("created-by") or ""),
        updated_at=parse_time(meta.get("updated-at")),
        updated_by=str(meta.get("updated-by") or ""),
    )


def parse_progress(status: Json, wave: ObservedWave) -> WaveProgress:
    """Reached = the history's ``num-devices``; updated = devices on the wave version or newer, summed
    over every group of the status. Not ``updated-devices``: for an active wave it counts rollout
    groups only, so devices a factory-wide rollout reached would never count (reference §2.3, §6.9)."""
    groups = [*(status.get("rollout-groups") or []), *(status.get("other-groups") or [])]
    return WaveProgress(
        updated=sum(
            int(g.get("devices-on-wave-version") or 0) + int(g.get("devices-on-newer-version") or 0) for g in groups
        ),
        rolled_out=sum(record.devices for record in wave.history),
        total=int(status.get("total-devices") or 0),
    )


def parse_counts(status: Json) -> WaveCounts:
    """A wave status (reference §2.3): per group and for the tag, updated = on the wave version or
    newer, pending = on an older version, offline = total minus online."""
    try:
        return _parse_counts(status)
    except (TypeError, ValueError, AttributeError) as exc:
        raise BackendError("wave status: unexpected numbers in the factory's answer") from exc


def _parse_counts(status: Json) -> WaveCounts:
    groups: dict[str, ScopeCounts] = {}
    on_wave = 0
    for group in [*(status.get("rollout-groups") or []), *(status.get("other-groups") or [])]:
        total, online = int(group.get("devices-total") or 0), int(group.get("devices-online") or 0)
        current = int(group.get("devices-on-wave-version") or 0)
        on_wave += current
        groups[str(group.get("name") or "")] = ScopeCounts(
            devices=total,
            updated=current + int(group.get("devices-on-newer-version") or 0),
            pending=int(group.get("devices-on-older-version") or 0),
            offline=max(0, total - online),
        )
    tag = ScopeCounts(
        devices=sum(g.devices for g in groups.values()),
        updated=sum(g.updated for g in groups.values()),
        pending=sum(g.pending for g in groups.values()),
        offline=sum(g.offline for g in groups.values()),
    )
    groups.pop("", None)  # devices in no group: part of the tag's numbers, no phase targets them by name
    return WaveCounts(tag=tag, groups=groups, on_wave_version=on_wave)


def dry_run_devices(answer: Json) -> int:
    """The devices a dry-run rollout would reach (``device-num``)."""
    return int(answer.get("device-num") or 0)


# -- targets ------------------------------------------------------------------------------------------


def parse_prod_targets(envelope: Json) -> ProdTargets:
    """A tag's production targets envelope: its metadata version, expiry and the versions it holds."""
    signed = envelope.get("signed") or {}
    versions = set()
    for target in (signed.get("targets") or {}).values():
        version = ((target or {}).get("custom") or {}).get("version")
        if isinstance(version, str) and version.isdigit():
            versions.add(int(version))
    expires = parse_time(signed.get("expires")) or datetime.max.replace(tzinfo=timezone.utc)
    return ProdTargets(version=int(signed.get("version") or 0), expires=expires, versions=frozenset(versions))


def prod_targets_by_tag(tags: Iterable[str], envelopes: Json) -> dict[str, ProdTargets | None]:
    """The production targets of each of ``tags`` (None: the tag has none) from one ``prod-targets`` answer."""
    prod: dict[str, ProdTargets | None] = dict.fromkeys(tags)
    for tag, envelope in envelopes.items():
        if tag in prod:
            try:
                prod[tag] = parse_prod_targets(envelope)
            except (TypeError, ValueError, AttributeError) as exc:
                raise BackendError(
                    f"read production targets: unexpected targets of tag '{tag}' in the factory's answer"
                ) from exc
    return prod


def targets_expiry(envelope: object) -> datetime | None:
    """When a targets envelope expires (``signed.expires``); None when it does not say."""
    signed = envelope.get("signed") if isinstance(envelope, dict) else None
    return parse_time(signed.get("expires")) if isinstance(signed, dict) else None


def targets_version(envelope: object) -> int | None:
    """A targets envelope's version (``signed.version``); None when it does not say."""
    signed = envelope.get("signed") if isinstance(envelope, dict) else None
    version = signed.get("version") if isinstance(signed, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def expiries(envelopes: Json) -> dict[str, datetime]:
    """Tag or wave -> when its targets expire, from one ``prod-targets`` or ``wave-targets`` answer."""
    return {key: when for key, envelope in envelopes.items() if (when := targets_expiry(envelope)) is not None}


def ci_tags(targets: Json) -> frozenset[str]:
    """Every tag the CI targets of one version carry (``custom.tags``): what a ``sourceTag`` may name."""
    tags: set[str] = set()
    for target in targets.values():
        custom = (target or {}).get("custom") if isinstance(target, dict) else None
        tags.update(t for t in (custom or {}).get("tags") or [] if isinstance(t, str))
    return frozenset(tags)


def without_deltas(targets: Json) -> dict[str, frozenset[str]]:
    """The CI targets of one version that have no static delta, each with its tags (for a ``sourceTag``).

    A target has one when ``custom.delta-stats`` is an object (reference §1.4); fioctl tests the same
    field for nil (subcommands/waves/init.go ``hasStaticDelta``)."""
    missing = {}
    for name, target in targets.items():
        custom = (target.get("custom") if isinstance(target, dict) else None) or {}
        if not isinstance(custom, dict) or isinstance(custom.get("delta-stats"), dict):
            continue
        tags = custom.get("tags")
        missing[name] = frozenset(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else frozenset()
    return missing


def target_versions(ci: Json, prod_envelope: object) -> dict[str, int]:
    """Target name -> version, from a build's CI targets and a tag's production targets envelope."""
    signed = prod_envelope.get("signed") if isinstance(prod_envelope, dict) else None
    files = dict((signed.get("targets") if isinstance(signed, dict) else None) or {})
    versions = {}
    for target_name, meta in [*files.items(), *ci.items()]:
        version = ((meta or {}).get("custom") or {}).get("version")
        if isinstance(version, str) and version.isdigit():
            versions[target_name] = int(version)
    return versions


# -- keys and signatures ------------------------------------------------------------------------------


def threshold(prod_root: Json) -> int:
    """The production root's targets threshold: the signatures a wave needs before it rolls out."""
    try:
        return int(prod_root["signed"]["roles"]["targets"]["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError("read the production TUF root: it has no targets role with a threshold") from exc


def parse_targets_keys(prod_root: Json, online_public: Json | None) -> TargetsKeys:
    """The production root's targets threshold and offline key ids (root's targets keys minus the
    online one, as ``waves init`` and ``waves sign`` find them, reference §2.1 step 9); without the
    online key, no key ids (the threshold alone says whether a wave needs ``sign``)."""
    from reconciler import signing  # the crypto libraries load only for a plan that reads keys

    offline: tuple[str, ...] = ()
    if online_public is not None:
        with contextlib.suppress(signing.TufError):  # no offline key in root: init says so when it needs one
            offline = tuple(signing.offline_keyids(prod_root, online_public))
    return TargetsKeys(threshold=threshold(prod_root), offline=offline)


def wave_signers(prod_root: Json, envelope: object) -> frozenset[str] | None:
    """The key ids whose signature over the wave's targets verifies against the production root
    (each key once); None when the envelope has no readable signatures."""
    from reconciler import signing

    if (
        not isinstance(envelope, dict)
        or not isinstance(envelope.get("signed"), dict)
        or not isinstance(envelope.get("signatures"), list)
    ):
        return None
    try:
        return frozenset(signing.valid_keyids(prod_root, "targets", envelope["signed"], envelope["signatures"]))
    except signing.TufError:
        return None


# -- devices ------------------------------------------------------------------------------------------


def parse_tag_devices(status: Json) -> dict[str, int]:
    """Production devices per tag from the factory status: ``prod-tags`` plus those in a wave (``wave-tags``)."""
    totals: dict[str, int] = {}
    for section in ("prod-tags", "wave-tags"):
        for entry in status.get(section) or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                totals[entry["name"]] = totals.get(entry["name"], 0) + int(entry.get("devices-total") or 0)
    return totals


def parse_device(data: Json) -> Device:
    """A production device of a tag's list, as the plan's UUID checks and offline counts read it."""
    return Device(
        uuid=str(data["uuid"]),
        name=str(data.get("name") or ""),
        group=str(data.get("device-group") or ""),
        last_seen=parse_time(data.get("last-seen")),
        in_wave=bool(data.get("is-wave")),
        up_to_date=bool(data.get("up-to-date")),
    )


def devices_by_uuid(listed: Iterable[Json]) -> dict[str, Device]:
    """A device list by UUID; entries without one are no device the plan can name."""
    return {d.uuid: d for d in (parse_device(item) for item in listed if item.get("uuid"))}


def parse_device_facts(versions: dict[str, int], data: Json) -> DeviceFacts:
    """A device of the list; a target outside the known targets falls back to LmP's ``<hwid>-lmp-<N>`` naming."""
    target = str(data.get("target-name") or "")
    version = versions.get(target)
    if version is None and (match := _TRAILING_VERSION.search(target)):
        version = int(match.group(1))
    return DeviceFacts(
        uuid=str(data.get("uuid") or ""),
        name=str(data.get("name") or ""),
        group=str(data.get("device-group") or ""),
        last_seen=parse_time(data.get("last-seen")),
        target_name=target,
        version=version,
        in_wave=bool(data.get("is-wave")),
    )


def newest_update(updates: list[Json]) -> Json | None:
    """A device's newest update (fioctl's ``Update``) of those with a correlation id, whose events say
    whether it failed; None when it has none."""
    listed = [u for u in updates if u.get("correlation-id")]
    if not listed:
        return None
    return max(listed, key=lambda u: parse_time(u.get("time")) or datetime.min.replace(tzinfo=timezone.utc))


def parse_last_update(update: Json, events: list[Json]) -> LastUpdate:
    """The newest update and its events: failed when an event reports ``success: false`` (fioctl's "Failed!")."""
    failed = any(isinstance(e.get("event"), dict) and e["event"].get("success") is False for e in events)
    return LastUpdate(
        version=str(update.get("version") or ""),
        target=str(update.get("target") or ""),
        at=str(update.get("time") or ""),
        failed=failed,
        at_utc=parse_time(update.get("time")),
    )
