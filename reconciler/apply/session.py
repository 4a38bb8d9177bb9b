"""One plan-and-apply run against the factory, in the steps the command line calls in order.

``open_session`` holds the client and, for an apply, what makes this run the factory's only writer
(the apply lease, settled first: writes.py). Then:

1. ``observe_and_plan``: read the factory and plan; ``--base`` keeps only the changed waves. A dry run
   observes with the wave list it read ahead; an apply only guesses with its own, read before it held
   the lease, which reads to send with the list read again (factory/observe.py: one round trip after
   the lease when the factory did not change in between).
2. ``scope_keys``: ``--without-key`` drops the steps that need the key; a key given is read
   against root once, so the plan skips the waves it has signed already.
3. ``count_devices``: the device count of each wave's next rollout, for the plan shown.
4. ``save`` (``--out``) or ``check_saved`` (``--plan``): a reviewed plan, refused when stale.
5. ``confirm``: a person at a terminal says yes; CI and a reviewed saved plan do not.
6. ``apply``: the ready steps, one at a time (steps.py).
7. ``summary`` (after the session): what was done, failed and held.

The steps print through ``Say`` (the command line's stderr); what goes to stdout (the plan) and
the exit codes stay with the command line.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from msgspec import Struct, field
from msgspec.structs import replace

from reconciler import terminal
from reconciler.apply import savedplan
from reconciler.apply.steps import ApplyResult, Outcome, SignerFactory, apply_plan
from reconciler.apply.writes import WriteGuard, exclusive_writer
from reconciler.core import (
    LostManifest,
    ObservedState,
    Plan,
    SignOp,
    WaveSpec,
    WaveStatus,
    build_plan,
    empty_rollout_warnings,
    without_keyed_steps,
    without_signs_by,
)
from reconciler.errors import ReconcilerError, UserError
from reconciler.factory import Backend, FactoryClient, WaveListHead, fill_device_counts, observe
from reconciler.render import plan as render

if TYPE_CHECKING:
    from reconciler.signing import TargetsSigner


class Say(Protocol):
    """One line for the person running the apply (stderr); ``error`` marks it as one."""

    def __call__(self, message: str, /, *, error: bool = False) -> None: ...


class KeySource(Struct, frozen=True):
    """Where the offline targets key comes from: ``--keys`` (an archive file), ``--signer`` (a URI), or
    with neither ``RECONCILE_KEYS``, then the embedded factory's operator key. ``without``:
    ``--without-key``, which never reads one."""

    archive: str | None = None
    signer_uri: str | None = None
    without: bool = False

    def signer_factory(self, backend: Backend) -> SignerFactory | None:
        """How to get the offline targets signer once root and the online key are known (None: no key)."""
        uri = self.signer_uri
        if self.archive:
            uri = f"archive:{self.archive}"
        elif not uri and os.environ.get("RECONCILE_KEYS"):
            uri = "envvar:RECONCILE_KEYS"
        elif not uri and backend.keys_archive:
            uri = f"archive:{backend.keys_archive}"
        if not uri:
            return None
        from reconciler import signing

        def make(root: dict[str, Any], online: dict[str, Any]) -> TargetsSigner:
            return signing.signer_from_uri(uri, root, online)

        return make


class Planned(Struct, frozen=True):
    """A plan and what it was made from: the specs, the observation and when it was read
    (``time.monotonic()``), how to get the signer (None: no key, or ``--without-key``), and the active
    waves whose manifest a commit took away (each step's re-plan needs them too)."""

    specs: list[WaveSpec]
    plan: Plan
    observed: ObservedState
    observed_at: float
    make_signer: SignerFactory | None = None
    lost: Mapping[str, LostManifest] = field(default_factory=dict)


# The release repository's answer to "which commits took these active waves' manifests away?"
# (``manifest.lost_manifests`` over the run's paths), given the wave names and the factory.
LostLookup = Callable[[set[str], str], Mapping[str, LostManifest]]


class Session:
    """The steps of one run; ``writes`` is False for a dry run, which holds no lease and never writes."""

    def __init__(self, client: FactoryClient, guard: WriteGuard | None, say: Say, *, writes: bool):
        self.client, self.guard, self.say, self.writes = client, guard, say, writes
        self._asked = False  # a person confirmed: the observation is no longer fresh

    def observe_and_plan(
        self,
        specs: list[WaveSpec],
        *,
        keys: KeySource,
        only: set[str] | None = None,
        waves: Callable[[], WaveListHead] | None = None,
        guess: Callable[[], WaveListHead] | None = None,
        lost: LostLookup | None = None,
    ) -> Planned:
        """Read the factory (``waves``: the wave list's first page, when already asked for) and plan.
        ``guess`` instead: the wave list an apply asked for before it held the lease, which may be out of
        date by now, so it only chooses the reads sent with the list read afresh (``observe``); a guess
        that failed chooses none. ``lost`` is asked about the active waves no manifest names (usually
        none), so a wave whose manifest a commit renamed or deleted is an error rather than a warning.
        ``only`` (``--base``): the changed waves, planned in the context of all. An apply with a key reads what
        an init signs with the rest. A saved plan (``--plan``) plays no part: what is signed and sent
        comes from the manifests and the factory; ``check_saved`` then compares."""
        guessed = _guessed(guess) if guess is not None else None
        observed = observe(self.client, specs, waves, guess=guessed, signing=self.writes and not keys.without)
        observed_at = time.monotonic()
        named = {spec.name for spec in specs}
        unmanaged = {w.name for w in observed.waves.values() if w.status is WaveStatus.ACTIVE and w.name not in named}
        gone = lost(unmanaged, observed.factory) if lost is not None and unmanaged else {}
        plan = build_plan(specs, observed, gone)
        if only is not None:
            plan = plan.restricted_to(only)
        return Planned(specs, plan, observed, observed_at, lost=gone)

    def scope_keys(self, planned: Planned, keys: KeySource) -> Planned:
        """The plan as this run's key can carry it out: without a key, no init and no sign; with one, no
        sign of a wave the key has signed already (known only once the key is read against root)."""
        if keys.without:
            if os.environ.get("RECONCILE_KEYS"):
                self.say(
                    "warning: RECONCILE_KEYS is set but --without-key never reads it; keep the key out of this job"
                )
            return replace(planned, plan=without_keyed_steps(planned.plan))  # inits wait for the keyed job
        make_signer = keys.signer_factory(self.client.backend)
        signing = planned.observed.signing
        if (
            self.writes
            and make_signer is not None
            and signing is not None
            and any(isinstance(op, SignOp) and op.ready for op in planned.plan.operations)
        ):
            make_signer = _made_once(make_signer)  # the plan reads the key's id before the apply signs
            signer = make_signer(signing.root, signing.online_key)
            return replace(planned, plan=without_signs_by(planned.plan, signer.keyid), make_signer=make_signer)
        return replace(planned, make_signer=make_signer)

    def count_devices(self, planned: Planned) -> Planned:
        """The device count of each next rollout, and a warning at each that reaches none (``core`` says why)."""
        counted = fill_device_counts(self.client, planned.plan, planned.observed)
        return replace(planned, plan=empty_rollout_warnings(counted, planned.observed))

    def save(
        self,
        planned: Planned,
        path: str,
        provenance: dict[str, Any] | None,
        diffs: dict[str, str] | None,
        paths: list[str],
    ) -> None:
        """``--out``: the plan JSON with a fingerprint of the observation, for ``--plan`` to apply."""
        if planned.plan.errors:
            raise UserError(f"the plan has errors: not saved to {path}")
        section = savedplan.saved_section(planned.plan, planned.observed, paths)
        savedplan.write(path, {**render.to_dict(planned.plan, provenance, diffs), "saved": section})
        if path == savedplan.STDOUT:
            self.say("Saved the plan to stdout: apply exactly these steps with `reconcile --plan FILE`.")
        else:
            self.say(f"Saved the plan to {path}: apply exactly these steps with `reconcile --plan {path}`.")

    def check_saved(self, planned: Planned, saved: savedplan.SavedPlan, max_age: timedelta) -> bool:
        """``--plan``: whether the fresh plan would do exactly what the saved one does, and the saved one
        is at most ``max_age`` old by the factory's clock; says how it differs."""
        stale = savedplan.stale_reasons(saved, planned.plan, planned.observed, max_age)
        for reason in stale:
            self.say(f"stale plan: {reason}", error=True)
        if stale:
            self.say("Make a new plan with `reconcile --dry-run --out FILE` and review it.")
        return not stale

    def confirm(self, planned: Planned, *, assume_yes: bool, reviewed: bool) -> bool:
        """A person at a terminal confirms what they just read; CI (no TTY), ``--yes`` and a reviewed
        saved plan do not. False: they declined."""
        self._asked = not assume_yes and not reviewed and terminal.interactive()
        return not self._asked or terminal.confirm_apply(len(planned.plan.ready))

    def apply(self, planned: Planned) -> ApplyResult:
        """The plan's ready steps. The first starts from the plan's observation while it is fresh
        (steps.FRESH_FOR); after a person confirmed, the apply observes the factory again."""
        self.say("Applying:")
        return apply_plan(
            self.client,
            planned.specs,
            planned.plan,
            planned.make_signer,
            terminal.counted(self.say, len(planned.plan.ready)),
            self.guard,
            None if self._asked else planned.observed,
            planned.observed_at,
            planned.lost,
        )


@contextlib.contextmanager
def open_session(client: FactoryClient, repository: str | None, say: Say, *, writes: bool) -> Iterator[Session]:
    """The client, and for an apply at most one writer per factory from before the plan to the last
    write (README, "Concurrent writers"): the apply lease in the release repository ``repository``,
    plus a local factory's directory lock."""
    with client:
        if not writes:
            yield Session(client, None, say, writes=False)
            return
        lock_path = client.backend.lock_path
        local_dir = os.path.dirname(lock_path) if lock_path else None
        with exclusive_writer(client, repository, local_dir, say) as guard:
            yield Session(client, guard, say, writes=True)


def summary(plan: Plan, result: ApplyResult, say: Say) -> bool:
    """What the apply did, for the log; True when every step was done and the plan had no errors.

    The count of held things is the number of ``held:`` lines that follow: each wave an error holds (with
    the later steps of its tag) and each step held during the apply."""
    done, already = len(result.of(Outcome.DONE)), len(result.of(Outcome.ALREADY_DONE))
    if result.ok and not plan.errors:
        say(f"Apply complete: {done} done, {already} already done.")
        return True
    held = len(plan.held) + len(result.of(Outcome.HELD))
    say(f"Apply incomplete: {done} done, {already} already done, {len(result.of(Outcome.FAILED))} failed, {held} held.")
    for failed in result.of(Outcome.FAILED):
        say(f"{failed.step.describe()} failed: {failed.message}", error=True)
    for wave in plan.held:
        say(f"held: wave '{wave.wave}' (tag {wave.tag}) and the later steps of its tag: {wave.reason}")
    for step in result.of(Outcome.HELD):
        say(f"held: {step.step.describe()}: {step.message}")
    return False


def _guessed(guess: Callable[[], WaveListHead]) -> WaveListHead | None:
    """The guess, or None when its read failed: the fresh read then meets (and reports) what went wrong."""
    try:
        return guess()
    except ReconcilerError:
        return None


def _made_once(make_signer: SignerFactory) -> SignerFactory:
    """The signer factory, making its signer once: the plan reads the key's id before the apply signs."""
    made: list[TargetsSigner] = []

    def once(root: dict[str, Any], online: dict[str, Any]) -> TargetsSigner:
        if not made:
            made.append(make_signer(root, online))
        return made[0]

    return once
