"""Observe the factory in few requests and turn its JSON into ``state`` objects.

Requests, each only when the plan needs it: the waves (``history.py``: the active ones and those the
manifests name, never the rest of a long history); one prod-targets call for all the tags involved; a status call per active wave whose next step
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
count of ``factory/wavedevices.py`` (2 + P + 2 per online device the wave reached that is not on its
version, at most ``MAX_EVENT_CHECKS`` of them; P the pages of its rolled-out groups or tag), plus its
status call when ``onFailure: cancel`` (the cancel says what it leaves behind). The counts go out with
the other requests of the observation. A wave without a bound costs nothing more.

How the count grows, for W waves in the factory (A of them active), M manifests and D production devices:
the waves cost 1 request while W <= 100, else 2 + M' for the M' <= ``MAX_WAVE_LOOKUPS`` named waves not on
the list's first page (ceil(A / 100) pages for the active ones, usually one), else ceil(W / 100) pages when
the manifests name more: never more than the whole list, and for a fixed M nothing grows with W. An apply
against an API (except one of a saved plan) reads the list's first page, or a list of at most
``AHEAD_PAGES`` pages whole, twice: ahead (before its lease) and again after it (below); when the factory
changed in between, the reads chosen from the first reading were sent for nothing, and are sent again as
the fresh waves call for. The rest
grows with the active managed waves (a status call, a dry run, a failure count each, when needed), the
versions to create and the tags involved, and with D only through the device lists above (ceil(D_tag /
1000) pages per tag listed) and the failure counts' per-device reads (capped by ``MAX_EVENT_CHECKS``).

Round trips, not requests, are what a run waits for on a real network: after the waves (``history.py``:
two round trips, or one when the list's first page holds them all), which tell what else to read, everything else of the observation, dry runs included, is
independent and goes out at once (one ``FactoryClient.batch``, at most ``transport.MAX_CONCURRENT`` at a
time); paged lists read their other pages together once the first page gives the total. A dry run
(``--dry-run`` against an API) starts the wave list's first page before reading the manifests
(``FactoryClient.ahead``), and observes with it: no round trip for the waves after the files when
``list_ahead`` read the list whole. An apply against an API (except one of a saved plan, ``--plan``)
starts it then too, but a list read before it held the apply lease may be out of date (another writer
may have just changed the factory), so it is only a guess (``_on_guess``): after the lease the same pages
go out again in one batch with the reads the guessed waves call for. When the fresh pages keep the same
waves (and the same total), those reads are the ones the fresh waves call for, and the waves cost no
round trip of their own: one round trip after the lease. Else (the factory changed, or the guess was a
long history's first page only) the waves are read as without a guess from a fresh first page
(``read_waves``: no more round trip, or one) and the reads they call for sent after them (one): the
observation is always the one made without a guess.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from msgspec import Struct
from msgspec.structs import replace

from reconciler.core import (
    Device,
    ObservedState,
    ObservedWave,
    OnFailure,
    Plan,
    RolloutOp,
    SigningInputs,
    SignOp,
    TargetsKeys,
    WaveFailures,
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
from reconciler.errors import BackendError, ReconcilerError
from reconciler.factory.client import Batch, FactoryClient, Json, Reply
from reconciler.factory.history import WaveListHead, WavePages, kept, read_waves, whole_pages
from reconciler.factory.wavedevices import count_failures
from reconciler.factory.wire import (
    ci_tags,
    devices_by_uuid,
    dry_run_devices,
    expiries,
    parse_device,
    parse_progress,
    parse_tag_devices,
    parse_targets_keys,
    prod_targets_by_tag,
    threshold,
    wave_signers,
    without_deltas,
)

# Named UUIDs are looked up one by one, at most this many per tag and MAX_LOOKUPS in all (half a round
# of the request pool); the other tags with UUIDs to check are listed whole. A phase names a few
# canaries far more often than a tag is small, and a lookup costs the factory one row where a list
# costs every device of the tag, 1,000 a page: measured on the plan bench's 100,000-device factory,
# 30 lookups instead of two 1,000-device lists took the plan from 1.36 s to 1.13 s at a 100 ms round trip.
MAX_LOOKUPS_PER_TAG = 10
MAX_LOOKUPS = 32

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class Reads(Struct, frozen=True):
    """What an observation reads after the wave list, decided from the manifests and the waves alone
    (no I/O): the module docstring says when each read is made."""

    tags: list[str]  # production targets of these tags (one request)
    managed_active: list[str]  # the targets of these waves (one request): expiry and signatures
    keys: bool  # the production root
    status_of: list[str]  # one wave status each
    versions: list[int]  # CI targets of each version a wave is to be created at
    groups: bool  # the device-group list
    tag_devices: bool  # the factory status: production devices per tag
    signing: bool  # the root and the online targets key an init signs against
    dry_runs: list[RolloutOp]  # for the plan's device counts
    failing: list[str]  # waves whose failed devices are counted (``count_failures``)
    device_tags: list[str]  # tags whose device lists are read whole
    lookups: list[tuple[str, str]]  # (tag, uuid) looked up one by one


def which_reads(chosen: list[WaveSpec], waves: dict[str, ObservedWave], signing: bool) -> Reads:
    """The reads a plan of ``chosen`` needs, given the factory's waves."""
    failing = sorted(waves_needing_failures(chosen, waves))
    cancel_on_failure = {s.name for s in chosen if s.name in failing and s.on_failure is OnFailure.CANCEL}
    new = [s for s in chosen if s.name not in waves and not s.cancel]
    managed_active = sorted(
        s.name for s in chosen if s.name in waves and waves[s.name].status is WaveStatus.ACTIVE and not s.cancel
    )
    keys = bool(managed_active or new)
    device_tags, lookups = _device_reads(chosen, waves)
    return Reads(
        tags=sorted({s.tag for s in chosen} | active_tags(waves.values())),
        managed_active=managed_active,
        keys=keys,
        status_of=sorted(waves_needing_status(chosen, waves) | waves_to_cancel(chosen, waves) | cancel_on_failure),
        versions=sorted({s.target for s in new}),
        groups=pending_groups(chosen, waves),
        tag_devices=bool(new),
        signing=signing and keys,  # an init signs; a wave short of signatures may need a sign
        dry_runs=next_rollouts(chosen, waves),
        failing=failing,
        device_tags=device_tags,
        lookups=lookups,
    )


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


class _Answer(Protocol[_T_co]):
    """A read's answer once its batch has run (``Reply``, or ``_Held``'s)."""

    def result(self) -> _T_co: ...


class _Adder(Protocol):
    """Where reads go to be sent together: a ``Batch``, or ``_Speculative`` in front of one."""

    def add(self, call: Callable[[], _T]) -> _Answer[_T]: ...


class _Replies(Struct, frozen=True):
    """The answers of ``Reads``, each by name; None: not read."""

    prod: _Answer[dict[str, Json]]
    wave_targets: _Answer[dict[str, Json]]
    prod_root: _Answer[Json] | None
    status: dict[str, _Answer[Json]]
    ci: dict[int, _Answer[dict[str, Json]]]
    groups: _Answer[set[str]] | None
    factory_status: _Answer[Json] | None
    root: _Answer[Json] | None
    online_key: _Answer[Json] | None
    dry_runs: dict[tuple[str, int], _Answer[Json | BackendError]]
    failures: dict[str, _Answer[WaveFailures]]
    listings: dict[str, _Answer[list[Json]]]
    lookups: list[tuple[str, _Answer[Json | None]]]


def _add(batch: _Adder, client: FactoryClient, reads: Reads, waves: dict[str, ObservedWave]) -> _Replies:
    """Every read of ``reads``, added to ``batch`` (sent together: one round trip, more for paged lists and
    failure counts)."""
    return _Replies(
        prod=batch.add(functools.partial(client.prod_targets, reads.tags)),
        wave_targets=batch.add(functools.partial(client.wave_targets, reads.managed_active)),
        prod_root=batch.add(functools.partial(_prod_root, client)) if reads.keys else None,
        status={name: batch.add(functools.partial(client.wave_status, name)) for name in reads.status_of},
        ci={version: batch.add(functools.partial(client.ci_targets, version)) for version in reads.versions},
        groups=batch.add(client.device_groups) if reads.groups else None,
        factory_status=batch.add(client.factory_status) if reads.tag_devices else None,
        root=batch.add(client.root) if reads.signing else None,
        online_key=batch.add(client.online_targets_key) if reads.signing else None,
        dry_runs={
            (op.wave, op.phase_index): batch.add(functools.partial(_dry_run, client, op)) for op in reads.dry_runs
        },
        failures={name: batch.add(functools.partial(count_failures, client, waves[name])) for name in reads.failing},
        listings={tag: batch.add(functools.partial(client.production_devices, tag)) for tag in reads.device_tags},
        lookups=[
            (tag, batch.add(functools.partial(client.production_device, tag, uuid))) for tag, uuid in reads.lookups
        ],
    )


def _prod_root(client: FactoryClient) -> Json:
    """The production root, and then, on the same worker thread while the rest of the batch is answered,
    the signature checks it is read for (``wire.wave_signers``): the crypto libraries take about 15 ms to
    import, which a plan otherwise spent after its last answer."""
    root = client.prod_root()
    from reconciler.signing import valid_keyids  # noqa: F401  # loads the checks and their crypto libraries

    return root


def _ask(client: FactoryClient, reads: Reads, waves: dict[str, ObservedWave]) -> _Replies:
    """Every read of ``reads``, sent together once the waves are known."""
    batch = client.batch()
    replies = _add(batch, client, reads, waves)
    batch.run()
    return replies


class _Failed(Struct, frozen=True):
    """A speculative read's error, kept in its answer."""

    error: ReconcilerError


class _Held(Generic[_T]):
    """A speculative read's answer: its value, or its error raised when the value is asked for."""

    def __init__(self, reply: Reply[Any]):
        self._reply = reply

    def result(self) -> _T:
        answer = self._reply.result()
        if isinstance(answer, _Failed):
            raise answer.error
        result: _T = answer
        return result


class _Speculative:
    """Reads chosen from a guess of the waves, added to a batch with the reads that check the guess. An
    error is kept, not raised by the batch: a read of a wave that is gone by now fails, and must not fail
    an observation that will not use it. ``raise_first`` raises the first error in the order the reads
    were added, as ``Batch.run`` does, once the guess is known to be right."""

    def __init__(self, batch: Batch):
        self._batch = batch
        self._replies: list[Reply[Any]] = []

    def add(self, call: Callable[[], _T]) -> _Answer[_T]:
        reply = self._batch.add(functools.partial(_caught, call))
        self._replies.append(reply)
        return _Held(reply)

    def raise_first(self) -> None:
        for reply in self._replies:
            if isinstance(answer := reply.result(), _Failed):
                raise answer.error


def _caught(call: Callable[[], _T]) -> _T | _Failed:
    try:
        return call()
    except ReconcilerError as exc:
        return _Failed(exc)


def _on_guess(
    client: FactoryClient, chosen: list[WaveSpec], guess: WaveListHead, signing: bool
) -> tuple[dict[str, ObservedWave], Reads, _Replies]:
    """The waves, the reads and their answers, for a ``guess`` of the wave list. A guess that is the whole
    list (``whole_pages``) has its pages read again in the same batch as the reads its waves call for;
    when the fresh pages keep the same waves (and the same total), those reads are the ones ``which_reads``
    chooses from them, and their answers are fresh: one round trip. Else (the factory changed since the
    guess, or the guess was only a long list's first page) the waves are read from a fresh first page
    (``read_waves``) and the reads they call for sent after them, as without a guess."""
    names = [s.name for s in chosen]
    pages = whole_pages(guess)
    first = None
    if pages is not None:
        guessed = kept(guess, names)
        batch = client.batch()
        fresh = WavePages(batch, client, pages)
        speculative = _Speculative(batch)
        reads = which_reads(chosen, guessed, signing)
        replies = _add(speculative, client, reads, guessed)
        batch.run()
        head = fresh.whole()
        if head is not None and head[1].get("total") == guess[1].get("total") and kept(head, names) == guessed:
            speculative.raise_first()
            return kept(head, names), reads, replies
        first = fresh.first()
    waves = read_waves(client, names, first)
    reads = which_reads(chosen, waves, signing)
    return waves, reads, _ask(client, reads, waves)


def observe(
    client: FactoryClient,
    specs: list[WaveSpec],
    first: Callable[[], WaveListHead] | None = None,
    *,
    guess: WaveListHead | None = None,
    signing: bool = False,
) -> ObservedState:
    """The factory as the plan of ``specs`` needs it. ``first`` gives the wave list's first page when its
    reading was started already (``FactoryClient.ahead``: a dry run); else it is read first. ``guess``, instead:
    the wave list as read before now (an apply's read-ahead, from before its lease), which only chooses the
    reads sent with the fresh list (``_on_guess``): the observation is the one made without it. ``signing``: an apply that can
    sign also reads, when a wave is to be created or is active, the root and the online targets key in
    the same round, and keeps what an init signs as the factory sent it (``SigningInputs``)."""
    chosen = selected_specs(specs, client.factory)
    if guess is not None:
        waves, reads, replies = _on_guess(client, chosen, guess, signing)
    else:
        waves = read_waves(client, [s.name for s in chosen], first() if first is not None else None)
        reads = which_reads(chosen, waves, signing)
        replies = _ask(client, reads, waves)
    prod_envelopes, envelopes = replies.prod.result(), replies.wave_targets.result()
    prod = prod_targets_by_tag(reads.tags, prod_envelopes)
    progress = {name: parse_progress(reply.result(), waves[name]) for name, reply in replies.status.items()}
    ci_sent = {version: reply.result() for version, reply in replies.ci.items()}
    signing_inputs = (
        SigningInputs(
            root=replies.root.result(),
            online_key=replies.online_key.result(),
            prod_envelopes=prod_envelopes,
            ci_targets=ci_sent,
        )
        if replies.root is not None and replies.online_key is not None
        else None
    )
    targets_keys: TargetsKeys | None = None
    signers: dict[str, frozenset[str]] = {}
    if replies.prod_root is not None:
        targets_keys, signers = _keys(client, replies.prod_root.result(), signing_inputs, envelopes, reads)
    named_devices: dict[str, dict[str, Device]] = {}
    for tag, reply in replies.lookups:
        found = reply.result()
        named = named_devices.setdefault(tag, {})
        if found is not None and found.get("uuid"):
            device = parse_device(found)
            named[device.uuid] = device
    listings = {tag: reply.result() for tag, reply in replies.listings.items()}
    # Gates short of their share on the counts name their offline devices: one more round trip, only then.
    late = client.batch()
    late_listings = {
        tag: late.add(functools.partial(client.production_devices, tag))
        for tag in sorted(tags_needing_devices(chosen, waves, progress) - set(reads.device_tags))
    }
    late.run()
    listings.update((tag, reply.result()) for tag, reply in late_listings.items())
    return ObservedState(
        factory=client.factory,
        backend=client.backend.label,
        now=client.server_now(),
        waves=waves,
        prod_targets=prod,
        progress=progress,
        ci_versions={version: bool(targets) for version, targets in ci_sent.items()},
        groups=frozenset(replies.groups.result()) if replies.groups is not None else None,
        ci_tags={version: ci_tags(targets) for version, targets in ci_sent.items()},
        tag_devices=parse_tag_devices(replies.factory_status.result()) if replies.factory_status is not None else None,
        devices={tag: devices_by_uuid(listed) for tag, listed in sorted(listings.items())},
        named_devices=named_devices,
        wave_expires=expiries(envelopes),
        rollout_counts={key: _count(reply.result()) for key, reply in replies.dry_runs.items()},
        signing=signing_inputs,
        ci_without_deltas={version: without_deltas(targets) for version, targets in ci_sent.items()},
        failures={name: reply.result() for name, reply in replies.failures.items()},
        targets_keys=targets_keys,
        wave_signers=signers,
    )


def _keys(
    client: FactoryClient,
    prod_root: Json,
    signing_inputs: SigningInputs | None,
    envelopes: dict[str, Json],
    reads: Reads,
) -> tuple[TargetsKeys, dict[str, frozenset[str]]]:
    """The production root's targets role, and the key ids that signed each active managed wave.

    Two signatures are init's (the online key's and one offline); only a root needing more makes the
    plan name the offline keys, and only then is the online key needed to tell them apart (read now,
    one more round trip, unless an apply's observation read it already)."""
    online = None
    if threshold(prod_root) > 2:
        online = signing_inputs.online_key if signing_inputs else client.online_targets_key()
    signers = {}
    for name in reads.managed_active:
        found = wave_signers(prod_root, envelopes.get(name))
        if found is not None:
            signers[name] = found
    return parse_targets_keys(prod_root, online), signers


def rollout_options(op: RolloutOp, dry_run: bool) -> Json:
    """The WaveRolloutOptions body of a rollout operation (omitempty like fioctl; flags always sent)."""
    body: Json = {}
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
    batch = client.batch()
    replies = {
        (op.wave, op.phase_index): batch.add(functools.partial(_count_rollout, client, op))
        for op in counted.values()
        if (op.wave, op.phase_index) not in known
    }
    batch.run()
    for op in counted.values():
        reply = replies.get((op.wave, op.phase_index))
        answer = reply.result() if reply is not None else known.get((op.wave, op.phase_index))
        if isinstance(answer, int):
            plan = plan.with_operation(op, replace(op, devices=answer))
        elif op.ready:
            plan = _block_wave_from(plan, op, f"the factory refuses this rollout: {answer}")
    return plan


def _count_rollout(client: FactoryClient, op: RolloutOp) -> int | str:
    return _count(_dry_run(client, op))


def _count(answer: Json | BackendError) -> int | str:
    """A dry run's device count, or the factory's refusal as text."""
    return str(answer) if isinstance(answer, BackendError) else dry_run_devices(answer)


def _dry_run(client: FactoryClient, op: RolloutOp) -> Json | BackendError:
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
