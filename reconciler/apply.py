"""Execute a plan's ready steps against the factory, one at a time, re-observing in between.

Crash safety comes from the ledger, not from local state: before every step the factory is
observed and planned again, and the step runs only if the fresh plan still has it ready. A
step the fresh plan no longer has was done already (by an earlier, interrupted run); a step
that became blocked stops the run. Around each write a ``WriteGuard`` (writes.py) records it in
the apply lease, checks it landed exactly once, and settles a lost answer by watching the factory
instead of sending the write again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.client import FactoryClient
from reconciler.core.plan import CompleteOp, InitOp, Operation, Plan, RolloutOp, build_plan
from reconciler.core.spec import WaveSpec
from reconciler.core.state import WaveStatus
from reconciler.errors import BackendError, UserError
from reconciler.observe import observe, parse_wave, rollout_options
from reconciler.render import SYMBOLS
from reconciler.writes import WriteGuard, is_uncertain

SignerFactory = Callable[[dict, dict], object]  # (root, online key) -> signing.TargetsSigner


class ApplyFailed(UserError):
    """A step failed; the message says which, why, and what was done before it."""


@dataclass
class ApplyResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def preflight(plan: Plan, client: FactoryClient, make_signer: SignerFactory | None):
    """Refuse before the first write: plan errors, or an init without a signer whose key matches root."""
    if plan.errors:
        raise UserError(f"the plan has {len(plan.errors)} error(s); nothing was applied")
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
    for planned in plan.ready:
        observed = observe(client, specs)
        fresh = build_plan(specs, observed)
        if fresh.errors:
            raise ApplyFailed(_failure(planned, "the factory changed and the plan now has errors: "
                                       + str(fresh.errors[0]), result))
        current = fresh.find(planned.key)
        if current is None:
            if not _landed(client, planned):  # gone from the plan without being done: canceled or completed by hand
                raise ApplyFailed(_failure(planned, "the factory changed since the plan and this step is no longer "
                                           "planned; run again to see the new plan", result))
            echo(f"  = {planned.describe()}: already done")
            result.skipped.append(planned.describe())
            continue
        if not current.ready:
            raise ApplyFailed(_failure(planned, f"no longer ready: {current.reason}", result))
        try:
            history = observed.waves[current.wave].history if current.wave in observed.waves else ()
            outcome = _execute(client, current, signer, guard, len(history))
        except UserError as exc:
            raise ApplyFailed(_failure(planned, str(exc), result)) from None
        echo(f"  {SYMBOLS[current.op]} {current.describe()}: {outcome}")
        result.done.append(current.describe())
    return result


def _failure(op: Operation, why: str, result: ApplyResult) -> str:
    done = "; ".join(result.done) if result.done else "nothing"
    return f"{op.describe()} failed: {why}. Done before the failure: {done}."


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
        body, outcome = _init(client, op, signer)
        return lambda: client.create_wave(body), lambda _: outcome
    if isinstance(op, RolloutOp):
        options = rollout_options(op, dry_run=False)
        return (lambda: client.rollout(op.wave, options),
                lambda answer: f"rolled out to {int((answer or {}).get('device-num') or 0)} devices")
    if isinstance(op, CompleteOp):
        return (lambda: client.complete(op.wave),
                lambda _: "completed; its targets are now the production targets of tag " + op.tag)
    return lambda: client.cancel(op.wave), lambda _: "canceled; devices already updated stay on their version"


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


def _init(client: FactoryClient, op: InitOp, signer) -> tuple[dict, str]:
    """The signed wave body to send, and what to say once it is created."""
    from reconciler import signing

    ci_targets = client.ci_targets(op.target)
    prod = client.prod_targets([op.tag]).get(op.tag)
    signed = signing.build_wave_targets(ci_targets=ci_targets, prod_targets=prod, version=op.target, tag=op.tag,
                                    source_tag=op.source_tag, prune=op.prune, expires=op.expires)
    signature = signer.sign(signed)
    signing.verify_signature(client.root(), "targets", signed, signature)  # our own signature, before sending
    body = {"name": op.wave, "version": str(op.target), "tag": op.tag,
            "targets": {"signed": signed, "signatures": [signature]}}
    return body, f"created with {len(signed['targets'])} targets, signed by key {signature['keyid'][:12]}"
