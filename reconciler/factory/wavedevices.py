"""The devices a wave reached, each classified (updated, failed, offline, pending), read from the factory.

Shared by ``reconcile status --devices WAVE`` (``reconciler/status.py``, whose docstring cites the
fioctl sources of the update and event calls and the definition of *failed*) and by observation,
which counts the failed devices of waves with a failure bound in force (``require.failed``,
``core/failures.py``), so a gate and ``status --failed`` never disagree.

Requests for one wave (``FactoryClient.requests`` counts them):

- 2 to map the devices' ``target-name`` to versions: the wave build's CI targets and the tag's
  production targets, together;
- P pages of the device list, 1,000 devices a page: for an active wave rolled out only to named
  groups, of those groups; otherwise of the tag;
- 2 per device the wave reached that is online and not on its version (``core/status.py``
  ``needs_events``): its updates, then the events of the newest one; at most ``MAX_EVENT_CHECKS``
  devices, read concurrently (``FactoryClient.gather``).

So at most ``2 + P + 2 * MAX_EVENT_CHECKS``, and with a good build far fewer: updated and offline
devices cost nothing beyond their page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from reconciler.core import (
    DeviceFacts,
    DeviceRow,
    LastUpdate,
    ObservedWave,
    RolloutEntry,
    WaveFacts,
    WaveFailures,
    WaveStatus,
    classify,
    needs_events,
    reached,
)
from reconciler.factory.apitime import parse_time
from reconciler.factory.client import OFFLINE_THRESHOLD_HOURS, FactoryClient

MAX_EVENT_CHECKS = 500  # devices whose update events one wave's reading reads (two requests each)
OFFLINE_THRESHOLD = timedelta(hours=OFFLINE_THRESHOLD_HOURS)
_TRAILING_VERSION = re.compile(r"-(\d+)$")


def classify_devices(
    client: FactoryClient, wave: WaveFacts, only: str | None, warn: Callable[[str], None]
) -> list[DeviceRow]:
    """The devices ``wave`` is about that are not on its version (or, with ``only``, in that one state)."""
    devices = _reached_devices(client, wave)
    now = client.server_now()
    check = [d for d in devices if only != "offline" and needs_events(wave, d, now, OFFLINE_THRESHOLD)]
    if len(check) > MAX_EVENT_CHECKS:
        warn(
            f"warning: read the update events of {MAX_EVENT_CHECKS} of the {len(check)} devices not on version "
            f"{wave.version}; the others show as pending"
        )
    last = _last_updates(client, check[:MAX_EVENT_CHECKS])
    rows = [
        DeviceRow(d, classify(wave, d, last.get(d.uuid), now, OFFLINE_THRESHOLD), last.get(d.uuid)) for d in devices
    ]
    # The devices still to act on: without a filter, every one that is not on the wave version.
    return [r for r in rows if (r.state == only if only is not None else r.state != "updated")]


def count_failures(client: FactoryClient, wave: ObservedWave) -> WaveFailures:
    """The failed devices of an active wave, as ``classify_devices`` finds them, against the devices its
    rollouts reached; within the request budget of the module docstring."""
    facts = _facts(wave)
    devices = _reached_devices(client, facts)
    now = client.server_now()
    check = [d for d in devices if needs_events(facts, d, now, OFFLINE_THRESHOLD)]
    checked = check[:MAX_EVENT_CHECKS]
    last = _last_updates(client, checked)
    failed = sum(1 for d in checked if classify(facts, d, last.get(d.uuid), now, OFFLINE_THRESHOLD) == "failed")
    return WaveFailures(
        failed=failed,
        reached=sum(record.devices for record in wave.history),
        rollouts=len(wave.history),
        unchecked=len(check) - len(checked),
    )


def _facts(wave: ObservedWave) -> WaveFacts:
    """An observed wave as the classification reads it (who made each rollout does not matter to it)."""
    history = tuple(
        RolloutEntry(
            group=r.group, at=r.at, by="", devices=r.devices, full_group=r.full_group, factory_wide=r.factory_wide
        )
        for r in wave.history
    )
    return WaveFacts(
        name=wave.name,
        version=wave.version,
        tag=wave.tag,
        status=wave.status,
        created_at=wave.created_at,
        created_by="",
        finished_at=None,
        finished_by="",
        history=history,
    )


def _reached_devices(client: FactoryClient, wave: WaveFacts) -> list[DeviceFacts]:
    versions = _target_versions(client, wave)
    devices: list[DeviceFacts] = []
    for filters in _device_lists(wave):
        for page, _ in client.device_pages(filters):
            devices.extend(d for d in map(functools.partial(_device, versions), page) if reached(wave, d))
    return devices


def _last_updates(client: FactoryClient, devices: list[DeviceFacts]) -> dict[str, LastUpdate | None]:
    """Each device's newest update and whether it failed, all devices at once."""
    answers = client.gather([functools.partial(_last_update, client, d.name) for d in devices])
    return dict(zip((d.uuid for d in devices), answers, strict=True))


def _device_lists(wave: WaveFacts) -> list[dict[str, str]]:
    """The device-list queries that cover the wave's devices: an active wave rolled out to named groups
    only staged devices of those groups, so only those groups are paged; otherwise the whole tag. (A
    device moved to another group after it was staged is then not listed: the price of not paging
    100,000 devices for a canary.)"""
    tag = {"match_tag": wave.tag, "prod": "1"}
    groups = sorted({e.group for e in wave.history})
    if wave.status is WaveStatus.ACTIVE and all(e.group and not e.factory_wide for e in wave.history):
        return [{**tag, "group": group} for group in groups]
    return [tag]


def _target_versions(client: FactoryClient, wave: WaveFacts) -> dict[str, int]:
    """Target name -> version, from the wave build's CI targets and the tag's production targets."""
    ci, prod = client.gather(
        [functools.partial(client.ci_targets, wave.version), functools.partial(client.prod_targets, [wave.tag])]
    )
    files = dict((prod.get(wave.tag) or {}).get("signed", {}).get("targets") or {})
    versions = {}
    for target_name, meta in [*files.items(), *ci.items()]:
        version = ((meta or {}).get("custom") or {}).get("version")
        if isinstance(version, str) and version.isdigit():
            versions[target_name] = int(version)
    return versions


def _device(versions: dict[str, int], data: dict) -> DeviceFacts:
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


def _last_update(client: FactoryClient, device: str) -> LastUpdate | None:
    updates = [u for u in client.device_updates(device) if u.get("correlation-id")]
    if not updates:
        return None
    newest = max(updates, key=lambda u: parse_time(u.get("time")) or datetime.min.replace(tzinfo=timezone.utc))
    events = client.update_events(device, str(newest["correlation-id"]))
    failed = any(isinstance(e.get("event"), dict) and e["event"].get("success") is False for e in events)
    return LastUpdate(
        version=str(newest.get("version") or ""),
        target=str(newest.get("target") or ""),
        at=str(newest.get("time") or ""),
        failed=failed,
        at_utc=parse_time(newest.get("time")),
    )
