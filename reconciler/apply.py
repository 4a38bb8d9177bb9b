"""Execute a plan's ready steps against the factory, one at a time, re-observing in between.

Crash safety comes from the ledger, not from local state: before every step the factory is
observed and planned again, and the step runs only if the fresh plan still has it ready. A
step the fresh plan no longer has was done already (by an earlier, interrupted run); a step
that became blocked stops the run. When a write's outcome is uncertain (the connection
dropped after sending), the wave is read back instead of sending the write again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.client import FactoryClient
from reconciler.core.plan import CompleteOp, InitOp, Operation, Plan, RolloutOp, build_plan
from reconciler.core.spec import WaveSpec
from reconciler.core.state import WaveStatus
from reconciler.errors import BackendError, UserError
from reconciler.observe import observe, parse_wave, rollout_options
from reconciler.render import SYMBOLS

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
               echo: Callable[[str], None]) -> ApplyResult:
    signer = preflight(plan, client, make_signer)
    result = ApplyResult()
    for planned in plan.ready:
        fresh = build_plan(specs, observe(client, specs))
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
            outcome = _execute(client, current, signer)
        except UserError as exc:
            raise ApplyFailed(_failure(planned, str(exc), result,
                                       unknown=getattr(exc, "outcome_unknown", False))) from None
        echo(f"  {SYMBOLS[current.op]} {current.describe()}: {outcome}")
        result.done.append(current.describe())
    return result


def _failure(op: Operation, why: str, result: ApplyResult, unknown: bool = False) -> str:
    done = "; ".join(result.done) if result.done else "nothing"
    if unknown:  # ``why`` says "outcome unknown ...; the next run checks the factory"
        return f"{op.describe()}: {why}. Done before it: {done}."
    return f"{op.describe()} failed: {why}. Done before the failure: {done}."


def _execute(client: FactoryClient, op: Operation, signer) -> str:
    try:
        if isinstance(op, InitOp):
            return _init(client, op, signer)
        if isinstance(op, RolloutOp):
            answer = client.rollout(op.wave, rollout_options(op, dry_run=False))
            return f"rolled out to {int((answer or {}).get('device-num') or 0)} devices"
        if isinstance(op, CompleteOp):
            client.complete(op.wave)
            return "completed; its targets are now the production targets of tag " + op.tag
        client.cancel(op.wave)
        return "canceled; devices already updated stay on their version"
    except BackendError as exc:
        if not exc.outcome_unknown:
            raise
        try:
            landed = _landed(client, op)
        except BackendError:
            raise exc from None  # the read-back failed too: the outcome stays unknown
        if not landed:
            raise
        return "done (confirmed by reading the wave back after a lost answer)"


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


def _init(client: FactoryClient, op: InitOp, signer) -> str:
    from reconciler import signing

    ci_targets = client.ci_targets(op.target)
    prod = client.prod_targets([op.tag]).get(op.tag)
    signed = signing.build_wave_targets(ci_targets=ci_targets, prod_targets=prod, version=op.target, tag=op.tag,
                                    source_tag=op.source_tag, prune=op.prune, expires=op.expires)
    signature = signer.sign(signed)
    signing.verify_signature(client.root(), "targets", signed, signature)  # our own signature, before sending
    client.create_wave({"name": op.wave, "version": str(op.target), "tag": op.tag,
                        "targets": {"signed": signed, "signatures": [signature]}})
    return f"created with {len(signed['targets'])} targets, signed by key {signature['keyid'][:12]}"
