"""Execute a plan's ready steps against the factory, one at a time, re-observing in between.

Crash safety comes from the ledger, not from local state: before every step the factory is
observed and planned again, and the step runs only if the fresh plan still has it ready. A
step the fresh plan no longer has was done already (by an earlier, interrupted run). Around each
write a ``WriteGuard`` (writes.py) records it in the apply lease, checks it landed exactly once, and
settles a lost answer by watching the factory instead of sending the write again.

Errors are scoped like the plan's: a step that fails, or that the fresh plan no longer has
ready, holds the later steps of its tag; the ready steps of other tags still run. Every step
gets an outcome (done, already done, failed, held) for the summary and ``--format json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.client import FactoryClient
from reconciler.core.plan import CancelOp, CompleteOp, InitOp, Operation, Plan, RolloutOp, build_plan
from reconciler.core.spec import WaveSpec
from reconciler.core.state import WaveStatus
from reconciler.errors import BackendError, UserError
from reconciler.observe import observe, parse_wave, rollout_options
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
    return make_signer(client.root(), client.online_targets_key())


def apply_plan(client: FactoryClient, specs: list[WaveSpec], plan: Plan, make_signer: SignerFactory | None,
               echo: Callable[[str], None], guard: WriteGuard | None = None) -> ApplyResult:
    signer = preflight(plan, client, make_signer)
    guard = guard or WriteGuard(client, None, 0.0, echo)
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
        observed = observe(client, specs)
        fresh = build_plan(specs, observed)
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
            history = observed.waves[current.wave].history if current.wave in observed.waves else ()
            message = _execute(client, current, signer, guard, len(history))
        except UserError as exc:
            record(planned, Outcome.FAILED, str(exc))
            continue
        echo(f"  {SYMBOLS[current.op]} {current.describe()}: {message}")
        record(current, Outcome.DONE, message)
    return result


def _execute(client: FactoryClient, op: Operation, signer, guard: WriteGuard, history_length: int) -> str:
    """Send one write, between the guard's note (lease) and its exactly-once check of the factory."""
    write, outcome = _prepare(client, op, signer)  # reads and signing first: only the write is noted
    guard.before(op, history_length)
    try:
        answer = write()
    except BackendError as exc:
        if not is_uncertain(exc):
            guard.failed()
            raise
        return guard.after_lost_answer(exc)
    guard.after()
    return outcome(answer)


def _prepare(client: FactoryClient, op: Operation, signer) -> tuple[Callable[[], Any], Callable[[Any], str]]:
    """The write to send for ``op`` (reads and signing done), and how to describe its answer."""
    if isinstance(op, InitOp):
        payload, signature, outcome = _init(client, op, signer)
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


def _init(client: FactoryClient, op: InitOp, signer) -> tuple[bytes, dict, str]:
    """The canonical ``signed`` bytes to send, their signature, and what to say once the wave is created."""
    from reconciler import signing

    ci_targets = client.ci_targets(op.target)
    prod = client.prod_targets([op.tag]).get(op.tag)
    signed = signing.build_wave_targets(ci_targets=ci_targets, prod_targets=prod, version=op.target, tag=op.tag,
                                    source_tag=op.source_tag, prune=op.prune, expires=op.expires)
    payload = signing.canonical_json(signed)  # signed and sent as these very bytes
    signature = signer.sign_bytes(payload)
    signing.verify_signature(client.root(), "targets", signed, signature)  # our own signature, before sending
    return payload, signature, f"created with {len(signed['targets'])} targets, signed by key {signature['keyid'][:12]}"
