"""The devices a wave reached, each classified (updated, failed, offline, pending), read from the factory.

Shared by ``reconcile status --devices WAVE`` (``factory/status.py``, whose docstring cites the
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

After a cancel no device is staged any more (``is-wave`` is false for all), so the wave's failures
are read from the update history instead: the devices of the scopes its rollouts named (its groups;
the whole tag once a rollout was factory-wide) that are below its version, online or not, cost the
same two requests each (at most ``MAX_EVENT_CHECKS``), and one whose newest update, to the wave
version, reported a failed event is *failed*; the devices left on its version are *left*.
``--offline`` and ``--pending`` read no events: a canceled wave has no such devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta

from reconciler.core import (
    DeviceFacts,
    DeviceRow,
    LastUpdate,
    ObservedWave,
    WaveFailures,
    WaveStatus,
    classify,
    needs_events,
    reached,
)
from reconciler.factory.client import OFFLINE_THRESHOLD_HOURS, FactoryClient
from reconciler.factory.wire import newest_update, parse_device_facts, parse_last_update, target_versions

MAX_EVENT_CHECKS = 500  # devices whose update events one wave's reading reads (two requests each)
OFFLINE_THRESHOLD = timedelta(hours=OFFLINE_THRESHOLD_HOURS)


def classify_devices(
    client: FactoryClient, wave: ObservedWave, only: str | None, warn: Callable[[str], None]
) -> list[DeviceRow]:
    """The devices ``wave`` is about that are not on its version (or, with ``only``, in that one state)."""
    if wave.status is WaveStatus.CANCELED:
        return _after_cancel(client, wave, only, warn)
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
    devices = _reached_devices(client, wave)
    now = client.server_now()
    check = [d for d in devices if needs_events(wave, d, now, OFFLINE_THRESHOLD)]
    checked = check[:MAX_EVENT_CHECKS]
    last = _last_updates(client, checked)
    failed = sum(1 for d in checked if classify(wave, d, last.get(d.uuid), now, OFFLINE_THRESHOLD) == "failed")
    return WaveFailures(
        failed=failed,
        reached=sum(record.devices for record in wave.history),
        rollouts=len(wave.history),
        unchecked=len(check) - len(checked),
    )


def _after_cancel(
    client: FactoryClient, wave: ObservedWave, only: str | None, warn: Callable[[str], None]
) -> list[DeviceRow]:
    """A canceled wave's devices: left on its version, or failed to install it (module docstring). The
    failed ones stay listed after the cancel, which is when someone asks why the wave was canceled."""
    devices = _listed_devices(client, wave)
    groups = {e.group for e in wave.history}
    everywhere = any(e.factory_wide or not e.group for e in wave.history)
    tried = [
        d
        for d in devices
        if only in (None, "failed")
        and (d.version is None or d.version < wave.version)
        and (everywhere or d.group in groups)
    ]
    if len(tried) > MAX_EVENT_CHECKS:
        warn(
            f"warning: read the update events of {MAX_EVENT_CHECKS} of the {len(tried)} devices below version "
            f"{wave.version} the canceled wave may have reached; the others are not listed"
        )
    last = _last_updates(client, tried[:MAX_EVENT_CHECKS])
    rows: list[DeviceRow] = []
    for device in devices:
        update = last.get(device.uuid)
        if reached(wave, device):
            row = DeviceRow(device, "left", update)
        elif update is not None and update.failed and update.version == str(wave.version):
            row = DeviceRow(device, "failed", update)
        else:
            continue
        if only in (None, row.state):
            rows.append(row)
    return rows


def _reached_devices(client: FactoryClient, wave: ObservedWave) -> list[DeviceFacts]:
    return [d for d in _listed_devices(client, wave) if reached(wave, d)]


def _listed_devices(client: FactoryClient, wave: ObservedWave) -> list[DeviceFacts]:
    versions = _target_versions(client, wave)
    devices: list[DeviceFacts] = []
    for filters in _device_lists(wave):
        for page, _ in client.device_pages(filters):
            devices.extend(map(functools.partial(parse_device_facts, versions), page))
    return devices


def _last_updates(client: FactoryClient, devices: list[DeviceFacts]) -> dict[str, LastUpdate | None]:
    """Each device's newest update and whether it failed, all devices at once."""
    answers = client.gather([functools.partial(_last_update, client, d.name) for d in devices])
    return dict(zip((d.uuid for d in devices), answers, strict=True))


def _device_lists(wave: ObservedWave) -> list[dict[str, str]]:
    """The device-list queries that cover the wave's devices: an active wave rolled out to named groups
    only staged devices of those groups, so only those groups are paged; otherwise the whole tag. (A
    device moved to another group after it was staged is then not listed: the price of not paging
    100,000 devices for a canary.)"""
    tag = {"match_tag": wave.tag, "prod": "1"}
    groups = sorted({e.group for e in wave.history})
    if wave.status is WaveStatus.ACTIVE and all(e.group and not e.factory_wide for e in wave.history):
        return [{**tag, "group": group} for group in groups]
    return [tag]


def _target_versions(client: FactoryClient, wave: ObservedWave) -> dict[str, int]:
    """Target name -> version, from the wave build's CI targets and the tag's production targets."""
    batch = client.batch()
    ci = batch.add(functools.partial(client.ci_targets, wave.version))
    prod = batch.add(functools.partial(client.prod_targets, [wave.tag]))
    batch.run()
    return target_versions(ci.result(), prod.result().get(wave.tag))


def _last_update(client: FactoryClient, device: str) -> LastUpdate | None:
    newest = newest_update(client.device_updates(device))
    if newest is None:
        return None
    return parse_last_update(newest, client.update_events(device, str(newest["correlation-id"])))
