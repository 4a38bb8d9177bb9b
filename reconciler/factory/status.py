"""What ``reconcile status`` reads: the waves and their devices, from the factory (no writes).

Fetching only: this module reads the factory into the pure model of ``core/status.py``; the text,
JSON and Markdown come from ``render/status.py`` and the command is ``cli/status.py``.

Requests (all documented in reference/foundries-api.md; ``FactoryClient.requests`` counts them):

- overview: the waves as the plan reads them (``history.py``: the active ones and those the manifests
  name; 1 request for up to 100 waves, else 2 + M' for M' <= ``MAX_WAVE_LOOKUPS`` named waves not on
  the list's first page, else ``ceil(W / 100)`` pages: never more than the whole list, and for a fixed
  set of manifests nothing grows with W), one ``prod-targets`` call for every tag shown, one
  ``wave-targets`` call when an active wave is shown, and one wave ``status`` call for each active or
  canceled wave shown and for the latest completed wave of each tag shown (the one whose version the
  tag's production targets hold, so the tag's history is not read; guessed from the list as the tag's
  newest completed wave shown, and read with the production targets: one request more and one round
  trip more only when the guess was wrong). At most ``ceil(W / 100) + 2 + S`` requests for W waves in the
  factory and S such waves, and at most ``2 + MAX_WAVE_LOOKUPS + 2 + S`` whatever W when the manifests
  name few waves, and one more per tag shown whose guess was wrong. ``--with-failed``
  adds, per active wave shown, what ``--devices WAVE --failed`` costs, less the wave's own request
  (every wave's reading sent with the statuses, all at once);
  an active wave with a failure bound in force (``require.failed``) costs that without the flag too,
  as it does in the plan, so that its next gate reads as the plan's; and so does the device list of
  the tag (``ceil(devices / 1000)`` pages, with the other requests) of an active wave whose next gate
  has ``onlineWithin``, which leaves that gate's offline devices out as the plan does;
- ``--devices WAVE``: the wave, its build's CI targets and the tag's production targets (to map a
  device's ``target-name`` to a version), the device list of the tag (``ceil(devices / 1000)``
  pages; for an active wave rolled out only to named groups, of those groups), and for each online device the wave reached that is not on its version, its updates and
  the events of the newest one: at most ``3 + P + 2 * MAX_EVENT_CHECKS`` requests, P the pages of
  1,000 devices (per group listed). After a cancel the wave stages no device, so its failed devices are
  read among the devices below its version in the scopes it rolled out to, online or not, at the same two
  requests each and the same cap (``wavedevices.py``).

"Failed" is defined on data the real API gives (../shared-style notes, fioctl @ 9b0a6e7e):

- ``fioctl:client/foundries_device.go#L35-63``: ``Update{correlation-id, target, version, time}``
  in an ``UpdateList{updates, total, next}``, and ``UpdateEvent{deviceTime, eventType{id},
  event{version, targetName, success?, details}}``;
- ``#L304-333`` with ``#L248-256``: ``GET /ota/devices/{name}/updates/?factory=F`` lists a device's
  updates, ``GET /ota/devices/{name}/updates/{correlation-id}/?factory=F`` its events;
- ``fioctl:subcommands/devices/updates_show.go#L14-35`` prints an event with ``success: false`` as
  "Failed!"; ``updates_list.go`` pages the list.

So a device *failed* when it is online, the wave reached it (``is-wave``), it is not on the wave
version, and its newest update is to the wave version with an event whose ``success`` is false.
The list has no success field, hence the second request per device; the update's ``version`` is
compared as fioctl prints it (a string).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from reconciler.core import (
    DeviceRow,
    ObservedWave,
    StatusReport,
    WaveSpec,
    WaveStatus,
    build_status,
    newest_completed,
    selected_specs,
    tags_needing_devices,
    waves_needing_counts,
    waves_needing_failures,
    waves_to_report,
)
from reconciler.errors import ReconcilerError, UserError
from reconciler.factory.client import FactoryClient, Json
from reconciler.factory.history import WaveListHead, read_waves
from reconciler.factory.wavedevices import classify_devices
from reconciler.factory.wire import parse_counts, parse_device, parse_wave, targets_version
from reconciler.factory.wire import targets_expiry as _expiry


def read_status(
    client: FactoryClient,
    specs: list[WaveSpec],
    *,
    with_failed: bool = False,
    warn: Callable[[str], None] = lambda line: None,
    first: Callable[[], WaveListHead] | None = None,
) -> StatusReport:
    """The overview, within the request budget in the module docstring; ``with_failed`` adds each active
    wave's failed devices per phase scope, at ``--devices WAVE --failed``'s cost per active wave.
    ``first``: the wave list as read ahead while the manifests loaded (``history.list_ahead``)."""
    selected = [s.name for s in selected_specs(specs, client.factory)]
    waves = read_waves(client, selected, first() if first is not None else None)
    names = waves_to_report(specs, client.factory, waves)
    spec_tags = {s.name: s.tag for s in specs}
    tags = sorted({waves[n].tag if n in waves else spec_tags[n] for n in names})
    active = [n for n in names if n in waves and waves[n].status is WaveStatus.ACTIVE]
    unfinished = waves_needing_counts(names, waves, {})  # active and canceled: known before production targets
    # Each tag's latest completed wave is the one its production targets hold, read in this same round: its
    # status is read with them as guessed from the wave list (the tag's newest completed wave), and once
    # they are known, a wave guessed wrong is read in one more round trip. A guessed read that failed or
    # was not needed is dropped; a needed one that failed is read again there, and fails in its place.
    guessed = [
        name for name in waves_needing_counts(names, waves, newest_completed(names, waves)) if name not in unfinished
    ]
    chosen = selected_specs(specs, client.factory)
    device_tags = sorted(tags_needing_devices(chosen, waves))  # onlineWithin gates, read as the plan reads them
    # The failed devices of the active waves that count them (a failure bound, or --with-failed) need only
    # the wave list: each wave's reading goes out with the rest, all waves at once, its warnings kept to be
    # said in the waves' order (20 waves with --with-failed over TLS at 100 ms: 6.6 s one wave after another).
    # Added last, so that a failure of the reads before them is the one reported, as when they came after.
    bounded = waves_needing_failures(chosen, waves)  # the plan counts them too
    counted = [name for name in active if with_failed or name in bounded]
    warnings: dict[str, list[str]] = {name: [] for name in counted}
    batch = client.batch()
    prod = batch.add(functools.partial(client.prod_targets, tags))
    wave_targets = batch.add(functools.partial(client.wave_targets, active))
    statuses = {name: batch.add(functools.partial(client.wave_status, name)) for name in unfinished}
    guesses = {name: batch.add(functools.partial(_unless_failed, client.wave_status, name)) for name in guessed}
    listings = {tag: batch.add(functools.partial(client.production_devices, tag)) for tag in device_tags}
    failing = {
        name: batch.add(functools.partial(classify_devices, client, waves[name], "failed", warnings[name].append))
        for name in counted
    }
    batch.run()
    prod_versions = {tag: targets_version(envelope) for tag, envelope in prod.result().items()}
    needed = waves_needing_counts(names, waves, prod_versions)
    answers = {
        name: answer for name, reply in guesses.items() if name in needed and (answer := reply.result()) is not None
    }
    latest = client.batch()
    statuses.update(
        (name, latest.add(functools.partial(client.wave_status, name)))
        for name in needed
        if name not in statuses and name not in answers
    )
    latest.run()
    answers.update((name, reply.result()) for name, reply in statuses.items())
    devices = {
        tag: {d.uuid: d for d in (parse_device(item) for item in listed.result() if item.get("uuid"))}
        for tag, listed in listings.items()
    }
    prod_expiry = {tag: when for tag, envelope in prod.result().items() if (when := _expiry(envelope)) is not None}
    wave_expiry = {
        name: when for name, envelope in wave_targets.result().items() if (when := _expiry(envelope)) is not None
    }
    counts = {name: parse_counts(answers[name]) for name in needed}  # one line if malformed
    failed: dict[str, dict[str, int]] = {}
    for name, rows in failing.items():
        for line in warnings[name]:
            warn(line)
        per_group = failed.setdefault(name, {})
        for row in rows.result():
            per_group[row.device.group] = per_group.get(row.device.group, 0) + 1
    return build_status(
        specs,
        factory=client.factory,
        backend=client.backend.label,
        now=client.server_now(),
        waves=waves,
        counts=counts,
        wave_expiry=wave_expiry,
        prod_expiry=prod_expiry,
        failed=failed,
        devices=devices,
    )


def _unless_failed(read: Callable[[str], Json], name: str) -> Json | None:
    """``read(name)``, or None if it failed: a read made on a guess must not fail the run that may not need it."""
    try:
        return read(name)
    except ReconcilerError:
        return None


def read_devices(
    client: FactoryClient, name: str, only: str | None, warn: Callable[[str], None] = lambda line: None
) -> tuple[ObservedWave, list[DeviceRow]]:
    """The devices ``name`` is about, each classified (core/status.py ``classify``); ``only`` keeps one state."""
    data = client.get_wave(name)
    if data is None:
        raise UserError(f"no wave '{name}' in factory '{client.factory}'; `reconcile status` lists the waves")
    wave = parse_wave(data)
    return wave, classify_devices(client, wave, only, warn)
