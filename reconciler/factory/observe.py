"""Observe the factory in few requests and turn its JSON into ``state`` objects.

Requests, each only when the plan needs it: one wave list (with histories, paged); one
prod-targets call for all the tags involved; a status call per active wave whose next step
has a ``require.updated`` gate or whose manifest cancels it; one wave-targets call for the
expiry of the active managed waves and their signatures; with those or waves still to be created, the
production root (the targets threshold a wave must meet before it rolls out), and only for a root that
needs more than two signatures the online key, one more round trip (which offline keys may sign); for
waves still to be created, their CI targets (one per version; the same answer says which targets
lack a static delta) and one factory-status call (the tags production devices follow); one
device-group list when a phase still to roll out names a group; the UUIDs that phases still to
roll out name, one request each when they are few (``MAX_LOOKUPS_PER_TAG``, ``MAX_LOOKUPS``), else the tag's list;
the production devices of a tag, 1,000 a page (ceil(devices / 1000) requests), when a gate counts
offline devices (``onlineWithin``) or is short of its share (its reason names the offline devices;
read after the statuses, so one more round trip, only then); and a dry-run rollout of the next
phase of each active managed wave that is not short of signatures, for the plan's device counts.

Failure bounds (``require.failed``, ``core/failures.py``) cost more, so only the active managed waves
with a bound in force and at least one rollout pay it (``waves_needing_failures``): per such wave the
count of ``reconciler/wavedevices.py`` (2 + P + 2 per online device the wave reached that is not on its
version, at most ``MAX_EVENT_CHECKS`` of them; P the pages of its rolled-out groups or tag), plus its
status call when ``onFailure: cancel`` (the cancel says what it leaves behind). The counts go out with
the other requests of the observation. A wave without a bound costs nothing more.

Round trips, not requests, are what a run waits for on a real network: after the first wave page
(which tells what else to read) everything else of the observation, dry runs included, is
independent and goes out at once (``FactoryClient.gather``, at most ``client.MAX_CONCURRENT`` at a
time); paged lists read their other pages together once the first page gives the total. A dry run
(``--dry-run`` against an API) starts the wave list before reading the manifests
(``FactoryClient.ahead``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from reconciler.core import (
    Device,
    ObservedState,
    ObservedWave,
    OnFailure,
    Plan,
    ProdTargets,
    RolloutOp,
    RolloutRecord,
    SigningInputs,
    SignOp,
    TargetsKeys,
    WaveProgress,
    WaveSpec,
    WaveStatus,
    active_tags,
    next_rollouts,
    pending_groups,
    selected_specs,
    tags_needing_devices,
    uuids_to_check,
    waves_needing_failures,
    waves_needing_status,
    waves_to_cancel,
)
from reconciler.errors import BackendError
from reconciler.factory.apitime import parse_time, required_time
from reconciler.factory.client import FactoryClient
from reconciler.factory.wavedevices import count_failures


def parse_wave(data: dict) -> ObservedWave:
    """A wave from the API; an answer that does not have a wave's shape is one BackendError line."""
    try:
        return _parse_wave(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        name = data.get("name") if isinstance(data, dict) else None
        raise BackendError(
            f"list waves: unexpected wave {name!r} in the factory's answer ({type(exc).__name__}: {exc})"
        ) from None


def _parse_wave(data: dict) -> ObservedWave:
    meta = data.get("change-meta") or {}
    history = tuple(
        RolloutRecord(
            group=entry.get("group-name") or "",
            at=required_time(entry.get("rollout-at"), "rollout-at"),
            full_group=bool(entry.get("is-full-group")),
            factory_wide=bool(entry.get("is-factory-wide")),
            devices=int(entry.get("num-devices") or 0),
        )
        for entry in data.get("rollout-history") or []
    )
    status = WaveStatus(data.get("status") or "active")
    return ObservedWave(
        name=data["name"],
        version=int(data["version"]),
        tag=data.get("tag") or "",
        status=status,
        created_at=required_time(meta.get("created-at"), "change-meta.created-at"),
        history=history,
    )


def parse_prod_targets(envelope: dict) -> ProdTargets:
    signed = envelope.get("signed") or {}
    versions = set()
    for target in (signed.get("targets") or {}).values():
        version = ((target or {}).get("custom") or {}).get("version")
        if isinstance(version, str) and version.isdigit():
            versions.add(int(version))
    expires = parse_time(signed.get("expires")) or datetime.max.replace(tzinfo=timezone.utc)
    return ProdTargets(version=int(signed.get("version") or 0), expires=expires, versions=frozenset(versions))


def parse_progress(status: dict, wave: ObservedWave) -> WaveProgress:
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


def parse_tag_devices(status: dict) -> dict[str, int]:
    """Production devices per tag from the factory status: ``prod-tags`` plus those in a wave (``wave-tags``)."""
    totals: dict[str, int] = {}
    for section in ("prod-tags", "wave-tags"):
        for entry in status.get(section) or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                totals[entry["name"]] = totals.get(entry["name"], 0) + int(entry.get("devices-total") or 0)
    return totals


def parse_device(data: dict) -> Device:
    return Device(
        uuid=str(data["uuid"]),
        name=str(data.get("name") or ""),
        group=str(data.get("device-group") or ""),
        last_seen=parse_time(data.get("last-seen")),
        in_wave=bool(data.get("is-wave")),
        up_to_date=bool(data.get("up-to-date")),
    )


def _ci_tags(targets: dict) -> frozenset[str]:
    """Every tag the CI targets of one version carry (``custom.tags``): what a ``sourceTag`` may name."""
    tags: set[str] = set()
    for target in targets.values():
        custom = (target or {}).get("custom") if isinstance(target, dict) else None
        tags.update(t for t in (custom or {}).get("tags") or [] if isinstance(t, str))
    return frozenset(tags)


# Named UUIDs are looked up one by one, at most this many per tag and MAX_LOOKUPS in all (half a round
# of the request pool); the other tags with UUIDs to check are listed whole. A phase names a few
# canaries far more often than a tag is small, and a lookup costs the factory one row where a list
# costs every device of the tag, 1,000 a page: measured on the plan bench's 100,000-device factory,
# 30 lookups instead of two 1,000-device lists took the plan from 1.36 s to 1.13 s at a 100 ms round trip.
MAX_LOOKUPS_PER_TAG = 10
MAX_LOOKUPS = 32


def _device_reads(specs: list[WaveSpec], waves: dict[str, ObservedWave]) -> tuple[list[str], list[tuple[str, str]]]:
    """Tags to list whole, and (tag, uuid) pairs to look up one by one, for the plan's device checks: the
    tags with the fewest named UUIDs are looked up first, as long as the lookups stay within ``MAX_LOOKUPS``."""
    named = uuids_to_check(specs, waves)
    listed = tags_needing_devices(specs, waves) | {
        tag for tag, uuids in named.items() if len(uuids) > MAX_LOOKUPS_PER_TAG
    }
    lookups: list[tuple[str, str]] = []
    undecided = sorted((t for t in named if t not in listed), key=lambda t: (len(named[t]), t))
    for tag in undecided:
        if len(lookups) + len(named[tag]) <= MAX_LOOKUPS:
            lookups += [(tag, uuid) for uuid in sorted(named[tag])]
        else:
            listed.add(tag)
    return sorted(listed), lookups


def _without_deltas(targets: dict) -> dict[str, frozenset[str]]:
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


def _threshold(prod_root: dict) -> int:
    try:
        return int(prod_root["signed"]["roles"]["targets"]["threshold"])
    except (KeyError, TypeError, ValueError):
        raise BackendError("read the production TUF root: it has no targets role with a threshold") from None


def parse_targets_keys(prod_root: dict, online_public: dict | None) -> TargetsKeys:
    """The production root's targets threshold and offline key ids (root's targets keys minus the
    online one, as ``waves init`` and ``waves sign`` find them, reference §2.1 step 9); without the
    online key, no key ids (the threshold alone says whether a wave needs ``sign``)."""
    from reconciler import signing

    offline: tuple[str, ...] = ()
    if online_public is not None:
        with contextlib.suppress(signing.TufError):  # no offline key in root: init says so when it needs one
            offline = tuple(signing.offline_keyids(prod_root, online_public))
    return TargetsKeys(threshold=_threshold(prod_root), offline=offline)


def wave_signers(prod_root: dict, envelope: object) -> frozenset[str] | None:
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


def observe(
    client: FactoryClient,
    specs: list[WaveSpec],
    wave_list: Callable[[], list[dict]] | None = None,
    *,
    signing: bool = False,
) -> ObservedState:
    """The factory as the plan of ``specs`` needs it. ``wave_list`` gives the wave list when its reading
    was started already (``FactoryClient.ahead``); else it is read first. ``signing``: an apply that can
    sign also reads, when a wave is to be created or is active, the root and the online targets key in
    the same round, and keeps what an init signs as the factory sent it (``SigningInputs``)."""
    chosen = selected_specs(specs, client.factory)
    waves = {w.name: w for w in map(parse_wave, (wave_list or client.list_waves)())}
    tags = sorted({s.tag for s in chosen} | active_tags(waves.values()))
    failing = sorted(waves_needing_failures(chosen, waves))
    cancel_on_failure = {s.name for s in chosen if s.name in failing and s.on_failure is OnFailure.CANCEL}
    status_of = sorted(waves_needing_status(chosen, waves) | waves_to_cancel(chosen, waves) | cancel_on_failure)
    new = [s for s in chosen if s.name not in waves and not s.cancel]
    versions = sorted({s.target for s in new})
    need_groups = pending_groups(chosen, waves)
    managed_active = sorted(
        s.name for s in chosen if s.name in waves and waves[s.name].status is WaveStatus.ACTIVE and not s.cancel
    )
    need_keys = bool(managed_active or new)
    calls: list[Callable[[], Any]] = [
        functools.partial(client.prod_targets, tags),
        functools.partial(client.wave_targets, managed_active),
    ]
    calls += [client.prod_root] if need_keys else []
    calls += [functools.partial(client.wave_status, name) for name in status_of]
    calls += [functools.partial(client.ci_targets, version) for version in versions]
    calls += [client.device_groups] if need_groups else []
    calls += [client.factory_status] if new else []
    sign = signing and need_keys  # an init signs; a wave short of signatures may need a sign
    calls += [client.root, client.online_targets_key] if sign else []
    counted = next_rollouts(chosen, waves)  # dry runs for the plan's device counts, in the same round
    calls += [functools.partial(_dry_run, client, op) for op in counted]
    calls += [functools.partial(count_failures, client, waves[name]) for name in failing]
    device_tags, lookups = _device_reads(chosen, waves)
    calls += [functools.partial(client.production_devices, tag) for tag in device_tags]
    calls += [functools.partial(client.production_device, tag, uuid) for tag, uuid in lookups]
    answers = iter(client.gather(calls))
    prod: dict[str, ProdTargets | None] = dict.fromkeys(tags)
    prod_envelopes = next(answers)
    for tag, envelope in prod_envelopes.items():
        if tag in prod:
            try:
                prod[tag] = parse_prod_targets(envelope)
            except (TypeError, ValueError, AttributeError):
                raise BackendError(
                    f"read production targets: unexpected targets of tag '{tag}' in the factory's answer"
                ) from None
    wave_expires = {}
    envelopes = next(answers)
    for name, envelope in envelopes.items():
        expires = (
            parse_time(((envelope or {}).get("signed") or {}).get("expires")) if isinstance(envelope, dict) else None
        )
        if expires is not None:
            wave_expires[name] = expires
    prod_root = next(answers) if need_keys else None
    progress = {name: parse_progress(next(answers), waves[name]) for name in status_of}
    ci_versions, ci_tags, ci_without_deltas, ci_sent = {}, {}, {}, {}
    for version in versions:
        targets = ci_sent[version] = next(answers)
        ci_versions[version], ci_tags[version] = bool(targets), _ci_tags(targets)
        ci_without_deltas[version] = _without_deltas(targets)
    groups = frozenset(next(answers)) if need_groups else None
    tag_devices = parse_tag_devices(next(answers)) if new else None
    signing_inputs = (
        SigningInputs(root=next(answers), online_key=next(answers), prod_envelopes=prod_envelopes, ci_targets=ci_sent)
        if sign
        else None
    )
    targets_keys, signers = None, {}
    if prod_root is not None:
        # Two signatures are init's (the online key's and one offline); only a root needing more makes the
        # plan name the offline keys, and only then is the online key needed to tell them apart (read now,
        # one more round trip, unless an apply's observation read it already).
        online = None
        if _threshold(prod_root) > 2:
            online = signing_inputs.online_key if signing_inputs else client.online_targets_key()
        targets_keys = parse_targets_keys(prod_root, online)
        for name in managed_active:
            found = wave_signers(prod_root, envelopes.get(name))
            if found is not None:
                signers[name] = found
    rollout_counts = {(op.wave, op.phase_index): _count(next(answers)) for op in counted}
    failures = {name: next(answers) for name in failing}
    listings = {tag: next(answers) for tag in device_tags}
    named_devices: dict[str, dict[str, Device]] = {}
    for tag, _uuid in lookups:
        found = next(answers)
        named_devices.setdefault(tag, {})
        if found is not None and found.get("uuid"):
            device = parse_device(found)
            named_devices[tag][device.uuid] = device
    # Gates short of their share on the counts name their offline devices: one more round trip, only then.
    late = sorted(tags_needing_devices(chosen, waves, progress) - set(device_tags))
    listings.update(
        zip(late, client.gather([functools.partial(client.production_devices, tag) for tag in late]), strict=True)
    )
    devices = {
        tag: {d.uuid: d for d in (parse_device(item) for item in listed if item.get("uuid"))}
        for tag, listed in sorted(listings.items())
    }
    return ObservedState(
        factory=client.factory,
        backend=client.backend.label,
        now=client.server_now(),
        waves=waves,
        prod_targets=prod,
        progress=progress,
        ci_versions=ci_versions,
        groups=groups,
        ci_tags=ci_tags,
        tag_devices=tag_devices,
        devices=devices,
        named_devices=named_devices,
        wave_expires=wave_expires,
        rollout_counts=rollout_counts,
        signing=signing_inputs,
        ci_without_deltas=ci_without_deltas,
        failures=failures,
        targets_keys=targets_keys,
        wave_signers=signers,
    )


def rollout_options(op: RolloutOp, dry_run: bool) -> dict:
    """The WaveRolloutOptions body of a rollout operation (omitempty like fioctl; flags always sent)."""
    body: dict = {}
    if op.group:
        body["group"] = op.group
    if op.limit is not None:
        body["limit"] = op.limit
    if op.percentage is not None:
        body["percentage"] = op.percentage
    if op.uuids is not None:
        body["uuids"] = list(op.uuids)
    body.update({"dry-run": dry_run, "return-uuids": False, "return-names": False})
    return body


def fill_device_counts(client: FactoryClient, plan: Plan, observed: ObservedState | None = None) -> Plan:
    """The plan with the device count of each active wave's next rollout (a dry-run rollout on the backend),
    ready or waiting for its gate: the count is what the rollout would reach now. Later rollouts cannot
    be counted (the dry run does not know what the earlier ones will stage), nor a drifted wave's, nor
    those of a wave short of signatures (the factory refuses even a dry run until it is signed).
    ``observe`` made these dry runs already (``next_rollouts``); a rollout it did not count is counted now.

    A ready rollout the backend refuses is blocked with its answer, and every later step of its wave
    behind it; a refused blocked rollout keeps its reason and gets no count.
    """
    unsigned = {op.wave for op in plan.operations if isinstance(op, SignOp)}  # the factory refuses their dry runs
    next_phase = {
        w.name: w.phases_done
        for w in plan.waves
        if w.status == WaveStatus.ACTIVE and not w.drift and w.name not in unsigned
    }
    counted: dict[str, RolloutOp] = {}  # the next rollout of each existing wave
    for op in plan.operations:
        if isinstance(op, RolloutOp) and next_phase.get(op.wave) == op.phase_index and op.wave not in counted:
            counted[op.wave] = op
    known = observed.rollout_counts if observed is not None else {}
    missing = [op for op in counted.values() if (op.wave, op.phase_index) not in known]
    answers = dict(
        zip(
            [(op.wave, op.phase_index) for op in missing],
            client.gather([functools.partial(_count_rollout, client, op) for op in missing]),
            strict=True,
        )
    )
    for op in counted.values():
        answer = known.get((op.wave, op.phase_index), answers.get((op.wave, op.phase_index)))
        if isinstance(answer, int):
            plan = plan.with_operation(op, replace(op, devices=answer))
        elif op.ready:
            plan = _block_wave_from(plan, op, f"the factory refuses this rollout: {answer}")
    return plan


def _count_rollout(client: FactoryClient, op: RolloutOp) -> int | str:
    return _count(_dry_run(client, op))


def _count(answer: dict | BackendError) -> int | str:
    """A dry run's device count, or the factory's refusal as text."""
    return str(answer) if isinstance(answer, BackendError) else int(answer.get("device-num") or 0)


def _dry_run(client: FactoryClient, op: RolloutOp) -> dict | BackendError:
    """A dry-run rollout's answer, or the factory's refusal (which blocks that wave, not the run)."""
    try:
        return client.rollout(op.wave, rollout_options(op, dry_run=True))
    except BackendError as exc:
        return exc


def _block_wave_from(plan: Plan, refused: RolloutOp, reason: str) -> Plan:
    """Block a refused rollout and every later step of the same wave behind it."""
    later = False
    for op in plan.operations:
        if op is refused:
            plan, later = plan.with_operation(op, op.blocked(reason)), True
        elif later and op.wave == refused.wave and op.ready:
            plan = plan.with_operation(op, op.blocked(f"after phase '{refused.phase}'"))
    return plan
