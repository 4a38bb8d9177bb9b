"""Wave status (``GET waves/{wave}/status/``, fioctl's WaveStatus and RolloutGroupStatus, reference §2.3).

Each field as the reference defines it; counts are of production devices with the wave's tag,
taken *now* (also for a finished wave):

- ``total-devices``: all of them, in a group or not;
- ``rollout-groups``: the wave's rollout groups in rollout-time order, then ``other-groups``: every
  other group with at least one such device, by name, and last the devices in no group (name "");
- ``updated-devices``: active wave: devices in rollout groups on the wave version or newer;
  finished wave (complete or canceled): every device on the wave version or newer;
- ``scheduled-devices``: active: devices in rollout groups below the wave version; complete: every
  device below it; canceled: 0. ``unscheduled-devices`` is the rest. Per group,
  ``devices-scheduled-for-update`` is the same rule applied to that group's devices;
- ``devices-online``: devices whose last check-in lies within ``offline-threshold`` hours (an
  integer >= 1, default 4, as fioctl's flag);
- ``targets`` per group: devices per version, ``is-orphan`` for a version that is in neither the
  tag's production targets nor the (not canceled) wave's targets.

Choices where the reference is silent (its §6.9): a rollout group is every group a rollout of the
wave named, with or without ``limit``/``percentage``/``uuids`` (the Wave's ``rollout-groups``), its
``rollout-at`` the first such rollout; a later rollout to the same group adds no second row. A
factory-wide rollout adds no rollout group: until the wave finishes, the devices it reached count
as unscheduled (and as updated nowhere), the strict reading of "devices in rollout groups". So a
partial ``limit`` rollout into a big group makes the whole group scheduled: these numbers say how
far the wave is through its groups, not how many reached devices updated (the reconciler's
``require.updated`` gate therefore divides by the history's ``num-devices``, observe.py).

One scan of the ``devices_status`` covering index: per group and version, devices and online devices.
"""

from __future__ import annotations

import sqlite3

from . import store, targets
from .shapes import JsonObject
from .waves import Wave, resolve

# Devices of one group (None: in no group) per version: [devices, online devices].
Counts = dict[int | None, dict[int, list[int]]]


def known_versions(conn: sqlite3.Connection, tag: str, wave: Wave | None = None) -> set[int]:
    """Versions in the tag's production targets (and an active or completed wave's): others are orphans."""
    versions: set[int] = set()
    prod = targets.prod_targets(conn, tag)
    files = dict(prod["signed"]["targets"]) if prod else {}
    if wave is not None and wave.status != "canceled":
        files.update(wave.signed_obj["targets"])
    for meta in files.values():
        v = targets.target_version(meta)
        if v is not None:
            versions.add(v)
    return versions


def status(conn: sqlite3.Connection, name: str, offline_threshold: int) -> JsonObject:
    """WaveStatus as reference §2.3 defines each field (see the module docstring)."""
    wave = resolve(conn, name)
    cutoff = store.now(conn) - offline_threshold * 3600
    counts: Counts = {}
    for gid, version, n, online in conn.execute(
        "SELECT group_id, version, count(*), sum(online = 1 OR last_seen >= ?) FROM devices "
        "INDEXED BY devices_status WHERE tag = ? AND is_prod = 1 GROUP BY group_id, version",
        (cutoff, wave.tag),
    ):
        counts.setdefault(gid, {})[version] = [n, online]
    rollout_groups = conn.execute(
        "SELECT group_id, group_name, created_at FROM wave_groups WHERE wave_id = ? ORDER BY seq", (wave.id,)
    ).fetchall()
    rolled_ids = {gid for gid, _, _ in rollout_groups}
    v = wave.version

    def counted(gid: int | None) -> bool:
        """Whether a group's devices count as updated or scheduled: a finished wave counts every device."""
        return wave.status != "active" or gid in rolled_ids

    def scheduled(gid: int | None, version: int, n: int) -> int:
        return n if version < v and wave.status != "canceled" and counted(gid) else 0

    total = updated = scheduled_total = 0
    for gid, per_version in counts.items():
        for version, (n, _) in per_version.items():
            total += n
            updated += n if version >= v and counted(gid) else 0
            scheduled_total += scheduled(gid, version, n)

    known = known_versions(conn, wave.tag, wave)
    names = dict(conn.execute("SELECT id, name FROM device_groups").fetchall())

    def group_status(gid: int | None, gname: str, rollout_at: int | None) -> JsonObject:
        per_version = counts.get(gid, {})
        return {
            "name": gname,
            "rollout-at": store.iso(rollout_at),
            "devices-total": sum(n for n, _ in per_version.values()),
            "devices-online": sum(online for _, online in per_version.values()),
            "devices-on-wave-version": sum(n for ver, (n, _) in per_version.items() if ver == v),
            "devices-on-newer-version": sum(n for ver, (n, _) in per_version.items() if ver > v),
            "devices-on-older-version": sum(n for ver, (n, _) in per_version.items() if ver < v),
            "devices-scheduled-for-update": sum(scheduled(gid, ver, n) for ver, (n, _) in per_version.items()),
            "targets": [
                {"version": ver, "devices": n, "is-orphan": ver not in known}
                for ver, (n, _) in sorted(per_version.items(), reverse=True)
            ],
        }

    rolled = [group_status(gid, gname, at) for gid, gname, at in rollout_groups]
    others = sorted(
        (gid for gid in counts if gid not in rolled_ids and gid is not None), key=lambda g: names.get(g, "")
    )
    other = [group_status(gid, names.get(gid, ""), None) for gid in others]
    if None in counts:
        other.append(group_status(None, "", None))
    return {
        "name": wave.name,
        "version": v,
        "tag": wave.tag,
        "status": wave.status,
        "created-at": store.iso(wave.created_at),
        "finished-at": store.iso(wave.updated_at),
        "total-devices": total,
        "updated-devices": updated,
        "scheduled-devices": scheduled_total,
        "unscheduled-devices": total - updated - scheduled_total,
        "rollout-groups": rolled,
        "other-groups": other,
    }
