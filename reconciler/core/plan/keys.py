"""The plan as a run without the offline key, or with one that has signed already, sees it.

Only init and sign sign targets: a run that cannot sign holds them, and the steps of their wave behind
them, as waits, not errors (``reconcile --without-key``, ``--keys`` of a key holder who signed).
"""

from __future__ import annotations

from reconciler.core import signatures as sigs
from reconciler.core.plan.model import InitOp, Plan, SignOp

# Why a keyless run (``reconcile --without-key``) leaves an init for later.
NEEDS_KEY = "needs the offline key; runs in the keyed apply job"


def without_keyed_steps(plan: Plan) -> Plan:
    """The plan as a run without the offline key sees it: ready inits and signs held, and the steps behind them.

    Only init and sign sign targets; rollouts, completes and cancels need an API token alone. A
    scheduled job that advances gated phases therefore needs no key and no approval, while
    creating a wave, or adding a signature the production root still needs, waits for the keyed
    apply job. A held init holds its own wave's later steps too, since the wave does not exist
    yet; a held sign holds them with what the wave still needs.
    """
    held: dict[str, str] = {}  # wave -> why its later steps wait
    for op in plan.operations:
        if op.ready and isinstance(op, (InitOp, SignOp)) and op.wave not in held:
            held[op.wave] = "after init" if isinstance(op, InitOp) else op.shortfall.text()
    for op in plan.operations:
        if op.wave in held and op.ready:
            reason = NEEDS_KEY if isinstance(op, (InitOp, SignOp)) else held[op.wave]
            plan = plan.with_operation(op, op.blocked(reason))
    return plan


def without_signs_by(plan: Plan, keyid: str) -> Plan:
    """The plan as a run whose offline key is ``keyid`` sees it: a wave that key has signed already waits
    for another key holder (a key counts once towards the threshold), with the steps behind its sign;
    the other waves and tags go on. Like ``without_keyed_steps``, a wait, not an error."""
    held: dict[str, str] = {}  # wave -> why its later steps wait
    for op in plan.operations:
        if op.ready and isinstance(op, SignOp) and keyid not in op.keyids:
            held[op.wave] = op.shortfall.text()
    for op in plan.operations:
        if op.wave in held and op.ready:
            reason = held[op.wave]
            if isinstance(op, SignOp):
                reason = (
                    f"this run's offline key (key id {sigs.short_keyid(keyid)}) has signed it already and a key "
                    f"counts once; {reason}: run with that key (--keys FILE or --signer URI)"
                )
            plan = plan.with_operation(op, op.blocked(reason))
    return plan
