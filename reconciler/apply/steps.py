"""Execute a plan's ready steps against the factory, one at a time, re-reading what each depends on.

Crash safety comes from the ledger, not from local state: before every step the factory is read
again and the plan remade, and the step runs only if the fresh plan still has it ready. A step the
fresh plan no longer has was done already (by an earlier, interrupted run). What is read again is
what the step depends on, in one round trip shared with the previous write's check (so each step
costs its write and one read round trip): its wave (or, when the previous write was to the same
wave, the wave as that write's check read it), its wave status when its gate counts updated
devices or it cancels, and for an init the tag's production targets, the build's CI targets and
root. None of this grows with the factory's history: the first observation reads the waves as the
plan does (factory/history.py: the active ones and those the manifests name), and each step then
reads its own wave by name: per step a fixed handful of reads (those above, and the production root
when the step's signatures count), whatever the number of waves, manifests or devices. The rest of
the observation the plan was made from stands in for the rest of the factory: other writers are
kept out by the apply lease and caught by the check after each write (writes.py). Around each
write a ``WriteGuard`` (writes.py) records it in the apply lease, checks it landed exactly once, and
settles a lost answer by watching the factory instead of sending the write again.

Errors are scoped like the plan's: a step that fails, or that the fresh plan no longer has
ready, holds the later steps of its tag; the ready steps of other tags still run. Every step
gets an outcome (done, already done, failed, held) for the summary and ``--format json``.

Steps of different tags could run side by side, yet they run one at a time: a Ctrl-C reaches the main
thread only, so a write on another thread would still go out after the run was stopped; the guard's
rule that no write goes out while one of this run is unsettled (writes.py) would have to give way; and
nothing documents how the API takes concurrent writes to one factory (reference/foundries-api.md is
silent on it), while fioctl sends one write per command. Per step the round trips are already the fewest the checks
allow: its write, then one read round trip (bench/bench_apply.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from msgspec import Struct, field
from msgspec.structs import replace

from reconciler.apply.writes import WriteGuard, is_uncertain
from reconciler.core import (
    CancelOp,
    CompleteOp,
    InitOp,
    LostManifest,
    ObservedState,
    Operation,
    Plan,
    RolloutOp,
    SignOp,
    WaveSpec,
    WaveStatus,
    build_plan,
    counted,
    short_keyid,
    shortfall,
    signatures_text,
)
from reconciler.errors import BackendError, ReconcilerError, UserError
from reconciler.factory import (
    FactoryClient,
    observe,
    parse_prod_targets,
    parse_progress,
    parse_wave,
    rollout_options,
    wave_signers,
)
from reconciler.render import SYMBOLS

if TYPE_CHECKING:
    from reconciler.signing import TargetsSigner

SignerFactory: TypeAlias = Callable[[dict[str, Any], dict[str, Any]], "TargetsSigner"]  # (root, online key)


class Outcome(StrEnum):
    """What became of a ready step in an apply."""

    DONE = "done"
    ALREADY_DONE = "already_done"  # an earlier, interrupted run did it
    FAILED = "failed"  # the factory refused it, or it vanished from the plan without being done
    HELD = "held"  # not attempted: an earlier step of its tag failed or it is no longer ready


class StepOutcome(Struct, frozen=True):
    step: Operation
    outcome: Outcome
    message: str


class ApplyResult(Struct):
    outcomes: list[StepOutcome] = field(default_factory=list)

    def of(self, outcome: Outcome) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.outcome is outcome]

    @property
    def ok(self) -> bool:
        return not self.of(Outcome.FAILED) and not self.of(Outcome.HELD)


def preflight(
    plan: Plan, client: FactoryClient, make_signer: SignerFactory | None, state: ObservedState
) -> tuple[TargetsSigner | None, dict[str, Any]]:
    """Refuse before the first write: an init or a sign without a signer whose key matches root, or a
    sign for a wave the key has signed already (one key counts once towards the threshold). Returns the
    signer (None: nothing to sign) and, when the first step is an init, what it signs: from the
    observation when it kept them (``observe(signing=True)``), else read in the same round trip as root
    and the online key."""
    keyed = [op for op in plan.ready if isinstance(op, (InitOp, SignOp))]
    if not keyed:
        return None, {}
    if make_signer is None:
        what = "creating a wave" if isinstance(keyed[0], InitOp) else f"signing wave '{keyed[0].wave}'"
        raise UserError(f"{what} needs the offline targets key: pass --keys FILE, --signer URI or set RECONCILE_KEYS")
    first = plan.ready[0]
    inputs = state.signing
    answers: dict[str, Any] = {}
    if inputs is not None:
        root, online_key = inputs.root, inputs.online_key
        if isinstance(first, InitOp):
            answers = {
                "prod_envelope": inputs.prod_envelopes.get(first.tag),
                "ci_targets": inputs.ci_targets.get(first.target),
                "root": inputs.root,
            }
    else:
        also = _reads_needed(client, first, None, None) if isinstance(first, InitOp) else {}
        root, online_key, *read = client.gather([client.root, client.online_targets_key, *also.values()])
        answers = dict(zip(also, read, strict=True))
    signer = make_signer(root, online_key)
    for op in keyed:
        if isinstance(op, SignOp) and signer.keyid not in op.keyids:
            raise UserError(_signed_already(op, signer.keyid))
    return signer, answers


def _signed_already(op: SignOp, keyid: str) -> str:
    others = ", ".join(map(short_keyid, op.keyids)) or "none left in root"
    return (
        f"wave '{op.wave}': the offline key given (key id {short_keyid(keyid)}) has signed it already, and a key "
        f"counts once; it needs {signatures_text(op.shortfall.needed)} by another offline key (key id "
        f"{others}): run with that key (--keys FILE or --signer URI)"
    )


class _Wave(Enum):
    """A wave not read just before its step (the JSON of one that was, or None: it does not exist)."""

    UNREAD = "unread"  # no wave read after our own last write: read it
    AS_OBSERVED = "as observed"  # the first step: the wave (and its status) are as the plan's observation has them


_UNREAD: Literal[_Wave.UNREAD] = _Wave.UNREAD
_AS_OBSERVED: Literal[_Wave.AS_OBSERVED] = _Wave.AS_OBSERVED
Known: TypeAlias = dict[str, Any] | Literal[_Wave.UNREAD] | None  # a wave as the check after our write read it


class _Reads(Struct, frozen=True):
    """What one step depends on, read from the factory just before it (see the module docstring)."""

    wave: dict[str, Any] | Literal[_Wave.AS_OBSERVED] | None  # the wave's JSON; None: it does not exist
    status: dict[str, Any] | None = None  # its wave status, when the step's gate or cancel needs it
    prod_envelope: dict[str, Any] | None = None  # init: the tag's production targets (None: the tag has none)
    ci_targets: dict[str, Any] | None = None  # init: the build's CI targets
    root: dict[str, Any] | None = None  # init: the TUF root the signature is checked against
    prod_root: dict[str, Any] | None = None  # a wave short of signatures: the root that counts them

    @classmethod
    def of(cls, answers: dict[str, Any], known: Known) -> _Reads:
        """The reads from their answers; the wave is ``known`` when it was not read (``_UNREAD``: not known)."""
        answers = dict(answers)
        wave = answers.pop("wave") if "wave" in answers else known
        return cls(wave=wave if isinstance(wave, dict) else None, **answers)


# How old (seconds of this machine's clock) the plan's observation may be for the first step to start
# from it: then its write follows a read as closely as any later step's follows the check before it.
# Older (a person confirming, a slow signer), and the first step reads the factory again, clock included:
# a rollout window may have closed, another writer may have been at work.
FRESH_FOR = 10.0


def apply_plan(
    client: FactoryClient,
    specs: list[WaveSpec],
    plan: Plan,
    make_signer: SignerFactory | None,
    echo: Callable[[str], None],
    guard: WriteGuard | None = None,
    observed: ObservedState | None = None,
    observed_at: float | None = None,
    lost: Mapping[str, LostManifest] | None = None,
) -> ApplyResult:
    """Run the plan's ready steps. ``observed`` is the observation the plan was made from (read anew if
    not given), ``observed_at`` when it was read (``time.monotonic()``): while it is fresh (``FRESH_FOR``)
    the first step starts from it. ``lost``: the active waves whose manifest a commit took away, as the
    plan had them (``build_plan``). Each step re-reads only what it depends on, with the check of the
    write before it."""
    guard = guard or WriteGuard(client, None, 0.0, echo)
    if observed is None:
        observed, observed_at = observe(client, specs, signing=make_signer is not None), time.monotonic()
    state = observed
    signer, first_answers = preflight(plan, client, make_signer, state)  # an init's inputs, when observed
    start_from_observation = observed_at is not None and time.monotonic() - observed_at <= FRESH_FOR
    by_name = {spec.name: spec for spec in specs}
    after_write: dict[str, Known] = {}  # wave -> its JSON as the check after our write read it (None: gone)
    result = ApplyResult()
    stopped: dict[str, str] = {}  # tag -> why its later steps are held

    def record(step: Operation, outcome: Outcome, message: str) -> None:
        result.outcomes.append(StepOutcome(step, outcome, message))
        if outcome in (Outcome.FAILED, Outcome.HELD):
            stopped.setdefault(
                step.tag, f"after {step.describe()} {'failed' if outcome is Outcome.FAILED else 'was held'}"
            )
            echo(f"  ! {step.describe()}: {outcome}: {message}")

    ready = plan.ready
    prefetched: dict[str, Any] | None = None  # the next step's reads, sent with the previous write's check
    for position, planned in enumerate(ready):
        answers, prefetched = prefetched, None  # for this step only
        if planned.tag in stopped:
            record(planned, Outcome.HELD, stopped[planned.tag])
            continue
        if (
            position == 0 and start_from_observation and not isinstance(planned, SignOp)
        ):  # a sign reads the bytes it signs
            reads = _Reads(wave=_AS_OBSERVED, **first_answers)
        else:
            known = after_write.pop(planned.wave, _UNREAD)
            if answers is None:
                answers = _answers(
                    client,
                    _reads_needed(
                        client, planned, by_name.get(planned.wave), known, counts_signatures=_short(state, planned.wave)
                    ),
                )
            reads = _Reads.of(answers, known)
        # The clock of these reads too: a rollout window that closed during the apply holds the step.
        state = replace(_with_reads(state, planned, reads), now=client.server_now())
        fresh = build_plan(specs, state, lost)
        current = fresh.find(planned.key)
        if current is None:
            if not _landed(client, planned):  # gone from the plan without being done: canceled or completed by hand
                record(
                    planned,
                    Outcome.FAILED,
                    "the factory changed since the plan and this step is no longer "
                    "planned; run again to see the new plan",
                )
                continue
            echo(f"  = {planned.describe()}: already done")
            record(planned, Outcome.ALREADY_DONE, "done by an earlier run")
            continue
        if not current.ready:
            record(planned, Outcome.HELD, f"no longer ready: {current.reason}")
            continue
        following = ready[position + 1] if position + 1 < len(ready) else None
        then: dict[str, Callable[[], Any]] = {}
        history = len(state.waves[current.wave].history) if current.wave in state.waves else 0
        next_write = None
        if following is not None and following.tag not in stopped:
            # what the next step reads goes out with this write's check: one read round trip per step
            then = _reads_needed(
                client,
                following,
                by_name.get(following.wave),
                None if following.wave == current.wave else _UNREAD,
                counts_signatures=_short(state, following.wave),
            )
            # and its note, as it will be if this write lands and the next step is as planned
            next_write = (
                following,
                _history_after(state, current, history, following),
                signer.keyid if isinstance(following, SignOp) and signer else None,
            )
        try:
            message, after_write[current.wave], prefetched = _execute(
                client, current, signer, guard, history, reads, then, next_write
            )
        except ReconcilerError as exc:
            record(planned, Outcome.FAILED, str(exc))
            continue
        echo(f"  {SYMBOLS[current.op]} {current.describe()}: {message}")
        record(current, Outcome.DONE, message)
    return result


def _history_after(state: ObservedState, current: Operation, history: int, following: Operation) -> int:
    """The rollout history length ``following``'s note will say, if ``current`` (of ``history`` entries)
    lands as planned: one entry more after a rollout of the same wave; another wave's, as observed."""
    if following.wave == current.wave:
        return history + (1 if isinstance(current, RolloutOp) else 0)
    return len(state.waves[following.wave].history) if following.wave in state.waves else 0


def _reads_needed(
    client: FactoryClient, op: Operation, spec: WaveSpec | None, known: Known, counts_signatures: bool = False
) -> dict[str, Callable[[], Any]]:
    """The reads a step depends on: its wave unless ``known`` (read after our own last write to it), its
    status when its gate counts updated devices or it cancels, and for an init what it signs. A wave
    whose signatures the plan counts (or a sign) is read with its targets, and the production root with it."""
    calls: dict[str, Callable[[], Any]] = {}
    with_targets = isinstance(op, SignOp) or counts_signatures
    if known is _UNREAD or (with_targets and not (isinstance(known, dict) and "targets" in known)):
        calls["wave"] = functools.partial(client.get_wave, op.wave, show_targets=with_targets)
    if with_targets:
        calls["prod_root"] = client.prod_root
    if isinstance(op, CancelOp) or (spec is not None and _gate_counts_updated(op, spec)):
        calls["status"] = functools.partial(client.wave_status, op.wave)
    if isinstance(op, InitOp):
        calls["prod_envelope"] = lambda: client.prod_targets([op.tag]).get(op.tag)
        calls["ci_targets"] = functools.partial(client.ci_targets, op.target)
        calls["root"] = client.root
    return calls


def _short(state: ObservedState, wave: str) -> bool:
    """Whether the plan counts this wave's signatures (it is short of its root's threshold)."""
    return shortfall(state.targets_keys, state.wave_signers.get(wave)) is not None


def _answers(client: FactoryClient, calls: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """The reads, sent together: one round trip (none when nothing is needed)."""
    return dict(zip(calls, client.gather(list(calls.values())), strict=True))


def _gate_counts_updated(op: Operation, spec: WaveSpec) -> bool:
    if isinstance(op, RolloutOp) and op.phase_index < len(spec.phases):  # a later part of a phase has no gate
        return op.part == 1 and spec.phases[op.phase_index].gate.updated_percent is not None
    if isinstance(op, CompleteOp) and spec.complete is not None:
        return spec.complete.gate.updated_percent is not None
    return False


def _with_reads(state: ObservedState, op: Operation, reads: _Reads) -> ObservedState:
    """The observation with what the step depends on replaced by what was just read."""
    waves = dict(state.waves)
    if reads.wave is None:
        waves.pop(op.wave, None)
    elif isinstance(reads.wave, dict):
        waves[op.wave] = parse_wave(reads.wave)
    changes: dict[str, Any] = {"waves": waves}
    if reads.prod_root is not None and isinstance(reads.wave, dict):
        signers = wave_signers(reads.prod_root, reads.wave.get("targets"))
        if signers is not None:
            changes["wave_signers"] = {**state.wave_signers, op.wave: signers}
    if reads.status is not None and op.wave in waves:
        changes["progress"] = {**state.progress, op.wave: parse_progress(reads.status, waves[op.wave])}
    if isinstance(op, InitOp):
        prod = parse_prod_targets(reads.prod_envelope) if reads.prod_envelope else None
        changes["prod_targets"] = {**state.prod_targets, op.tag: prod}
        changes["ci_versions"] = {**state.ci_versions, op.target: bool(reads.ci_targets)}
    return replace(state, **changes)


def _execute(
    client: FactoryClient,
    op: Operation,
    signer: TargetsSigner | None,
    guard: WriteGuard,
    history_length: int,
    reads: _Reads,
    then: dict[str, Callable[[], Any]],
    next_write: tuple[Operation, int, str | None] | None = None,
) -> tuple[str, Known, dict[str, Any] | None]:
    """Send one write, between the guard's note (lease) and its exactly-once check of the factory.
    Returns what to say, the wave as the check read it (the next step of that wave starts from it;
    ``_UNREAD`` when the answer was lost and the wave was only polled, so the next step reads it), and
    the answers to ``then``, the next step's reads sent with the check (None: the next step reads them:
    the answer was lost, or one of those reads failed and is better reported by the step it belongs to).
    ``next_write``: the next step's write as predicted, whose note the guard writes with the check."""
    write, outcome = _prepare(client, op, signer, reads)  # signing first: only the write is noted
    guard.before(op, history_length, keyid=signer.keyid if isinstance(op, SignOp) and signer else None)
    try:
        answer = write()
    except BackendError as exc:
        if not is_uncertain(exc):
            guard.failed()
            raise
        return guard.after_lost_answer(exc), _UNREAD, None
    seen, answers = guard.after([functools.partial(_or_error, call) for call in then.values()], next_write)
    prefetched = dict(zip(then, answers, strict=True))
    if any(isinstance(value, BackendError) for value in prefetched.values()):
        return outcome(answer), seen, None
    return outcome(answer), seen, prefetched


def _or_error(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BackendError as exc:
        return exc


def _prepare(
    client: FactoryClient, op: Operation, signer: TargetsSigner | None, reads: _Reads
) -> tuple[Callable[[], Any], Callable[[Any], str]]:
    """The write to send for ``op`` (reads and signing done), and how to describe its answer."""
    if isinstance(op, (InitOp, SignOp)) and signer is None:
        raise AssertionError("preflight makes the signer for a plan with a keyed step, and this step was planned")
    if isinstance(op, InitOp) and signer is not None:
        payload, signature, outcome = _init(op, signer, reads)
        return (
            lambda: client.create_wave(
                name=op.wave, version=op.target, tag=op.tag, signed=payload, signatures=[signature]
            ),
            lambda _: outcome,
        )
    if isinstance(op, SignOp) and signer is not None:
        signature = _sign(op, signer, reads)
        still = op.shortfall.needed - 1
        after = "the wave meets the threshold" if still <= 0 else f"it still needs {signatures_text(still)}"
        return (
            lambda: client.sign_wave(op.wave, [signature]),
            lambda _: (
                f"signed by key {short_keyid(signature['keyid'])}; {after} "
                f"({op.signatures + 1} of {op.threshold} signatures)"
            ),
        )
    if isinstance(op, RolloutOp):
        options = rollout_options(op, dry_run=False)
        return (
            lambda: client.rollout(op.wave, options),
            lambda answer: f"rolled out to {counted(int((answer or {}).get('device-num') or 0), 'device')}",
        )
    if isinstance(op, CompleteOp):
        return (
            lambda: client.complete(op.wave),
            lambda _: "completed; its targets are now the production targets of tag " + op.tag,
        )
    left = (
        op.leaves_behind()
        if isinstance(op, CancelOp) and op.orphans is not None
        else "devices already updated stay on their version"
    )
    why = f" because {op.reason}" if op.reason else ""  # onFailure: cancel
    return lambda: client.cancel(op.wave), lambda _: f"canceled{why}; {left}"


def _landed(client: FactoryClient, op: Operation) -> bool:
    """After an uncertain write, read the wave back: did the step reach the factory?"""
    data = client.get_wave(op.wave)
    if data is None:
        return False
    wave = parse_wave(data)
    if isinstance(op, InitOp):
        return wave.version == op.target and wave.tag == op.tag
    if isinstance(op, RolloutOp):
        return len(wave.history) > op.history_index
    if isinstance(op, SignOp):
        return wave.status is WaveStatus.ACTIVE  # still active but no sign planned: it has its signatures
    return wave.status is (WaveStatus.COMPLETE if isinstance(op, CompleteOp) else WaveStatus.CANCELED)


def _sign(op: SignOp, signer: TargetsSigner, reads: _Reads) -> dict[str, Any]:
    """This run's signature over the wave's targets as the factory serves them, the way ``fioctl waves
    sign`` makes it (fioctl subcommands/waves/sign.go L33-42: GET the wave with show-targets=1, sign the
    canonical JSON of ``targets.signed``, POST ``{"signatures": [sig]}``), checked against root first."""
    from reconciler import signing

    if signer.keyid not in op.keyids:  # the fresh plan's view: another run may have signed with it meanwhile
        raise UserError(_signed_already(op, signer.keyid))
    envelope = reads.wave.get("targets") if isinstance(reads.wave, dict) else None
    signed = envelope.get("signed") if isinstance(envelope, dict) else None
    if not isinstance(signed, dict):
        raise UserError(f"sign wave '{op.wave}': the factory's answer has no targets to sign (show-targets=1)")
    signature = signer.sign_bytes(signing.canonical_json(signed))
    signing.verify_signature(reads.prod_root or {}, "targets", signed, signature)  # our own signature, before sending
    return signature


def _init(op: InitOp, signer: TargetsSigner, reads: _Reads) -> tuple[bytes, dict[str, Any], str]:
    """The canonical ``signed`` bytes to send, their signature, and what to say once the wave is created."""
    from reconciler import signing

    signed = signing.build_wave_targets(
        ci_targets=reads.ci_targets or {},
        prod_targets=reads.prod_envelope,
        version=op.target,
        tag=op.tag,
        source_tag=op.source_tag,
        prune=op.prune,
        expires=op.expires,
    )
    payload = signing.canonical_json(signed)  # signed and sent as these very bytes
    signature = signer.sign_bytes(payload)
    signing.verify_signature(reads.root or {}, "targets", signed, signature)  # our own signature, before sending
    return payload, signature, f"created with {len(signed['targets'])} targets, signed by key {signature['keyid'][:12]}"
