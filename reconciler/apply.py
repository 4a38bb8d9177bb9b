"""Execute a plan's ready steps against the factory, one at a time, re-reading what each depends on.

Crash safety comes from the ledger, not from local state: before every step the factory is read
again and the plan remade, and the step runs only if the fresh plan still has it ready. A step the
fresh plan no longer has was done already (by an earlier, interrupted run). What is read again is
what the step depends on, in one round trip: its wave (or, right after our own write to that wave,
the wave as the write's check read it), its wave status when its gate counts updated devices or it
cancels, and for an init the tag's production targets, the build's CI targets and root. The rest of
the observation the plan was made from stands in for the rest of the factory: other writers are
kept out by the apply lease and caught by the check after each write (writes.py). Around each
write a ``WriteGuard`` (writes.py) records it in the apply lease, checks it landed exactly once, and
settles a lost answer by watching the factory instead of sending the write again.

Errors are scoped like the plan's: a step that fails, or that the fresh plan no longer has
ready, holds the later steps of its tag; the ready steps of other tags still run. Every step
gets an outcome (done, already done, failed, held) for the summary and ``--format json``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from reconciler.client import FactoryClient
from reconciler.core.plan import CancelOp, CompleteOp, InitOp, Operation, Plan, RolloutOp, build_plan
from reconciler.core.spec import WaveSpec
from reconciler.core.state import ObservedState, WaveStatus
from reconciler.errors import BackendError, UserError
from reconciler.observe import observe, parse_prod_targets, parse_progress, parse_wave, rollout_options
from reconciler.render import SYMBOLS
from reconciler.writes import WriteGuard, is_uncertain

SignerFactory = Callable[[dict, dict], object]  # (root, online key) -> signing.TargetsSigner


class Outcome(StrEnum):
    """What became of a ready step in an apply."""

    DONE = "done"
    ALREADY_DONE = "already_done"  # an earlier, interrupted run did it
    FAILED = "failed"  # the factory refused it, or it vanished from the plan without being done
    HELD = "held"  # not attempted: an earlier step of its tag failed or it is no longer ready


@dataclass(frozen=True)
class StepOutcome:
    step: Operation
    outcome: Outcome
    message: str


@dataclass
class ApplyResult:
    outcomes: list[StepOutcome] = field(default_factory=list)

    def of(self, outcome: Outcome) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.outcome is outcome]

    @property
    def ok(self) -> bool:
        return not self.of(Outcome.FAILED) and not self.of(Outcome.HELD)


def preflight(plan: Plan, client: FactoryClient, make_signer: SignerFactory | None):
    """Refuse before the first write: an init without a signer whose key matches root."""
    if not any(isinstance(op, InitOp) for op in plan.ready):
        return None
    if make_signer is None:
        raise UserError("creating a wave needs the offline targets key: pass --keys FILE, --signer URI or set "
                        "RECONCILE_KEYS")
    root, online_key = client.gather([client.root, client.online_targets_key])
    return make_signer(root, online_key)


@dataclass(frozen=True)
class _Reads:
    """What one step depends on, read from the factory just before it (see the module docstring)."""

    wave: dict | None  # the wave's JSON; None: it does not exist
    status: dict | None = None  # its wave status, when the step's gate or cancel needs it
    prod_envelope: dict | None = None  # init: the tag's production targets (None: the tag has none)
    ci_targets: dict | None = None  # init: the build's CI targets
    root: dict | None = None  # init: the TUF root the signature is checked against


_UNREAD = object()  # no wave read after our own last write: read it


def apply_plan(client: FactoryClient, specs: list[WaveSpec], plan: Plan, make_signer: SignerFactory | None,
               echo: Callable[[str], None], guard: WriteGuard | None = None,
               observed: ObservedState | None = None) -> ApplyResult:
    """Run the plan's ready steps. ``observed`` is the observation the plan was made from (read anew if
    not given); each step then re-reads only what it depends on."""
    signer = preflight(plan, client, make_signer)
    guard = guard or WriteGuard(client, None, 0.0, echo)
    state = observed if observed is not None else observe(client, specs)
    by_name = {spec.name: spec for spec in specs}
    after_write: dict[str, object] = {}  # wave -> its JSON as the check after our write read it (None: gone)
    result = ApplyResult()
    stopped: dict[str, str] = {}  # tag -> why its later steps are held

    def record(step: Operation, outcome: Outcome, message: str) -> None:
        result.outcomes.append(StepOutcome(step, outcome, message))
        if outcome in (Outcome.FAILED, Outcome.HELD):
            stopped.setdefault(step.tag, f"after {step.describe()} {'failed' if outcome is Outcome.FAILED else 'was held'}")
            echo(f"  ! {step.describe()}: {outcome}: {message}")

    for planned in plan.ready:
        if planned.tag in stopped:
            record(planned, Outcome.HELD, stopped[planned.tag])
            continue
        reads = _read_for(client, planned, by_name.get(planned.wave), after_write.pop(planned.wave, _UNREAD))
        # The clock of these reads too: a rollout window that closed during the apply holds the step.
        state = replace(_with_reads(state, planned, reads), now=client.server_now())
        fresh = build_plan(specs, state)
        current = fresh.find(planned.key)
        if current is None:
            if not _landed(client, planned):  # gone from the plan without being done: canceled or completed by hand
                record(planned, Outcome.FAILED, "the factory changed since the plan and this step is no longer "
                                                "planned; run again to see the new plan")
                continue
            echo(f"  = {planned.describe()}: already done")
            record(planned, Outcome.ALREADY_DONE, "done by an earlier run")
            continue
        if not current.ready:
            record(planned, Outcome.HELD, f"no longer ready: {current.reason}")
            continue
        try:
            history = state.waves[current.wave].history if current.wave in state.waves else ()
            message, after_write[current.wave] = _execute(client, current, signer, guard, len(history), reads)
        except UserError as exc:
            record(planned, Outcome.FAILED, str(exc))
            continue
        echo(f"  {SYMBOLS[current.op]} {current.describe()}: {message}")
        record(current, Outcome.DONE, message)
    return result


def _read_for(client: FactoryClient, op: Operation, spec: WaveSpec | None, known: object) -> _Reads:
    """The step's reads, sent together: one round trip (none when the wave is known and nothing else is needed)."""
    calls: dict[str, Callable[[], Any]] = {}
    if known is _UNREAD:
        calls["wave"] = functools.partial(client.get_wave, op.wave)
    if isinstance(op, CancelOp) or (spec is not None and _gate_counts_updated(op, spec)):
        calls["status"] = functools.partial(client.wave_status, op.wave)
    if isinstance(op, InitOp):
        calls["prod_envelope"] = lambda: client.prod_targets([op.tag]).get(op.tag)
        calls["ci_targets"] = functools.partial(client.ci_targets, op.target)
        calls["root"] = client.root
    answers = dict(zip(calls, client.gather(list(calls.values())), strict=True))
    wave = answers.pop("wave") if "wave" in answers else known
    return _Reads(wave=wave if isinstance(wave, dict) else None, **answers)


def _gate_counts_updated(op: Operation, spec: WaveSpec) -> bool:
    if isinstance(op, RolloutOp) and op.phase_index < len(spec.phases):
        return spec.phases[op.phase_index].gate.updated_percent is not None
    if isinstance(op, CompleteOp) and spec.complete is not None:
        return spec.complete.gate.updated_percent is not None
    return False


def _with_reads(state: ObservedState, op: Operation, reads: _Reads) -> ObservedState:
    """The observation with what the step depends on replaced by what was just read."""
    waves = dict(state.waves)
    if reads.wave is None:
        waves.pop(op.wave, None)
    else:
        waves[op.wave] = parse_wave(reads.wave)
    changes: dict[str, Any] = {"waves": waves}
    if reads.status is not None and op.wave in waves:
        changes["progress"] = {**state.progress, op.wave: parse_progress(reads.status, waves[op.wave])}
    if isinstance(op, InitOp):
        prod = parse_prod_targets(reads.prod_envelope) if reads.prod_envelope else None
        changes["prod_targets"] = {**state.prod_targets, op.tag: prod}
        changes["ci_versions"] = {**state.ci_versions, op.target: bool(reads.ci_targets)}
    return replace(state, **changes)


def _execute(client: FactoryClient, op: Operation, signer, guard: WriteGuard, history_length: int,
             reads: _Reads) -> tuple[str, object]:
    """Send one write, between the guard's note (lease) and its exactly-once check of the factory.
    Returns what to say and the wave as the check read it (the next step of that wave starts from it;
    ``_UNREAD`` when the answer was lost and the wave was only polled, so the next step reads it)."""
    write, outcome = _prepare(client, op, signer, reads)  # signing first: only the write is noted
    guard.before(op, history_length)
    try:
        answer = write()
    except BackendError as exc:
        if not is_uncertain(exc):
            guard.failed()
            raise
        return guard.after_lost_answer(exc), _UNREAD
    seen = guard.after()
    return outcome(answer), seen


def _prepare(client: FactoryClient, op: Operation, signer, reads: _Reads
             ) -> tuple[Callable[[], Any], Callable[[Any], str]]:
    """The write to send for ``op`` (reads and signing done), and how to describe its answer."""
    if isinstance(op, InitOp):
        payload, signature, outcome = _init(op, signer, reads)
        return (lambda: client.create_wave(name=op.wave, version=op.target, tag=op.tag, signed=payload,
                                           signatures=[signature]),
                lambda _: outcome)
    if isinstance(op, RolloutOp):
        options = rollout_options(op, dry_run=False)
        return (lambda: client.rollout(op.wave, options),
                lambda answer: f"rolled out to {int((answer or {}).get('device-num') or 0)} devices")
    if isinstance(op, CompleteOp):
        return (lambda: client.complete(op.wave),
                lambda _: "completed; its targets are now the production targets of tag " + op.tag)
    left = op.leaves_behind() if isinstance(op, CancelOp) and op.orphans is not None else \
        "devices already updated stay on their version"
    return lambda: client.cancel(op.wave), lambda _: f"canceled; {left}"


def _landed(client: FactoryClient, op: Operation) -> bool:
    """After an uncertain write, read the wave back: did the step reach the factory?"""
    data = client.get_wave(op.wave)
    if data is None:
        return False
    wave = parse_wave(data)
    if isinstance(op, InitOp):
        return wave.version == op.target and wave.tag == op.tag
    if isinstance(op, RolloutOp):
        return len(wave.history) > op.phase_index
    return wave.status is (WaveStatus.COMPLETE if isinstance(op, CompleteOp) else WaveStatus.CANCELED)


def _init(op: InitOp, signer, reads: _Reads) -> tuple[bytes, dict, str]:
    """The canonical ``signed`` bytes to send, their signature, and what to say once the wave is created."""
    from reconciler import signing

    signed = signing.build_wave_targets(ci_targets=reads.ci_targets or {}, prod_targets=reads.prod_envelope,
                                        version=op.target, tag=op.tag, source_tag=op.source_tag, prune=op.prune,
                                        expires=op.expires)
    payload = signing.canonical_json(signed)  # signed and sent as these very bytes
    signature = signer.sign_bytes(payload)
    signing.verify_signature(reads.root or {}, "targets", signed, signature)  # our own signature, before sending
    return payload, signature, f"created with {len(signed['targets'])} targets, signed by key {signature['keyid'][:12]}"
