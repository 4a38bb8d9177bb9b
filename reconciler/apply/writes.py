"""Every write lands exactly once, or the run stops and says who else wrote.

The lease (lease.py) keeps cooperating applies apart; this module checks the factory itself,
which has no conditional writes, around each write:

- **before** it, the lease is renewed with a note of the write (wave, step, history length
  before it, and when an answer lost in transit must have settled);
- **after** it, the wave is read back: a rollout must have grown the history by exactly one
  entry, an init/complete/cancel must show its effect; anything else means another writer
  (``rollout-by`` / ``created-by`` / ``updated-by`` named) and the run stops;
- when the answer is **lost** (timeout, dropped connection, 502/504), the wave is polled until
  the write shows or its settle time passes, and only then is the step called done or failed;
- a note left by a run that died or gave up is **settled first** by the next holder, before it
  plans anything, so a rerun never repeats a write that may still land.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.apply.lease import Lease, RefStore, describe_pending
from reconciler.core import CancelOp, CompleteOp, InitOp, Operation, RolloutOp, SignOp
from reconciler.errors import BackendError, OutcomeUnknown, ReconcilerError, UserError
from reconciler.factory import Backend, FactoryClient

UNCERTAIN_STATUS = frozenset({502, 504})  # a gateway answered: the write may or may not have reached the factory
POLL_SECONDS = 0.5


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_uncertain(exc: BackendError) -> bool:
    """An error after which the write may still have landed (or land later): the client says the outcome is
    unknown (the answer was lost after sending), or a gateway answered in the factory's place."""
    return isinstance(exc, OutcomeUnknown) or exc.status in UNCERTAIN_STATUS


class ConcurrentWriter(ReconcilerError):
    """The factory shows a write that was not ours: another writer is at work on the same wave."""


class WriteGuard:
    """Renews the lease around each write, checks each write landed once, and settles lost answers.

    ``settle_seconds`` is how long after sending a write whose answer was lost may still land:
    twice the client's request timeout over HTTP, nothing in-process (the write and the run die
    together). ``lease`` is None when the manifests are in no git repository: the checks still run.
    """

    def __init__(self, client: FactoryClient, lease: Lease | None, settle_seconds: float, echo: Callable[[str], None]):
        self.client, self.lease, self.settle_seconds, self.echo = client, lease, settle_seconds, echo
        self.pending: tuple[dict[str, Any], ...] = lease.inherited if lease else ()

    # -- before planning ------------------------------------------------------------------------

    def settle_inherited(self) -> None:
        """Resolve the writes an earlier run left unsettled, before anything else touches their waves."""
        if self.lease and self.lease.broke:
            self.echo(f"Apply lease: {self.lease.broke}")
        while self.pending:
            note = self.pending[0]
            landed = self._wait_until_settled(note)
            self.pending = self.pending[1:]  # settled: a failed check below is reported once, not forever
            self.echo(
                f"  settled {describe_pending(note)} by an earlier run: "
                + ("it landed" if landed else "it did not land")
            )
            if landed:
                self._check_once(note, _read_wave(self.client, note))

    # -- around one write -----------------------------------------------------------------------

    def before(self, op: Operation, history_length: int, keyid: str | None = None) -> None:
        """``keyid``: a sign's key (public), whose signature the wave must show afterwards."""
        sent = _now()
        note = {
            "wave": op.wave,
            "kind": str(op.kind),
            "step": op.describe(),
            "history": history_length,
            "sent": _iso(sent),
            "settle_by": _iso(sent + timedelta(seconds=self.settle_seconds)),
        }
        if keyid is not None:
            note["keyid"] = keyid
        if isinstance(op, RolloutOp):
            note["phase"] = op.phase
        if self.lease:
            self.lease.renew((note,))  # stops here, before sending, if another writer has taken the lease
        self.pending = (note,)

    def after(self, also: Sequence[Callable[[], Any]] = ()) -> tuple[dict[str, Any] | None, list[Any]]:
        """The write was answered: check it landed exactly once. Returns the wave as read for the check
        (None: gone), which the apply may use as the wave's state for its next step, and the answers of
        ``also``: reads sent in the same round trip as the check's (the next step's)."""
        note, self.pending = self.pending[0], ()
        calls: list[Callable[[], Any]] = [functools.partial(_read_wave, self.client, note), *also]
        read, *answers = self.client.gather(calls)
        return self._check_once(note, read), answers

    def after_lost_answer(self, exc: BackendError) -> str:
        """The write's answer was lost: wait until the factory shows it, or until it cannot land any more."""
        note = self.pending[0]
        self.echo(f"  ? {note['step']}: {exc}; outcome unknown, watching the factory until {note['settle_by']}")
        if not self._wait_until_settled(note):
            self.pending = ()
            raise BackendError(
                f"{exc}; the factory still did not show it at {note['settle_by']}, so it did not "
                "land and the next run may send it again",
                exc.status,
            ) from exc
        self.pending = ()
        self._check_once(note, _read_wave(self.client, note))
        return "done (the factory shows it landed after the answer was lost)"

    def failed(self) -> None:
        """The factory refused the write (a definite answer): nothing is unsettled."""
        self.pending = ()

    def release(self) -> None:
        """Free the lease; a write still unsettled (this run was interrupted) stays recorded in it."""
        if self.lease:
            self.lease.release(self.pending)

    # -- reading the factory --------------------------------------------------------------------

    def _wait_until_settled(self, note: dict[str, Any]) -> bool:
        """Poll the wave until the write shows (True) or its settle time has passed without it (False)."""
        settle_by = datetime.fromisoformat(note["settle_by"].replace("Z", "+00:00"))
        while True:
            try:
                if _landed(note, _read_wave(self.client, note)):
                    return True
            except BackendError:
                if _now() >= settle_by:
                    raise
            else:
                if _now() >= settle_by:
                    return False
            time.sleep(max(0.05, min(POLL_SECONDS, (settle_by - _now()).total_seconds())))

    def _check_once(self, note: dict[str, Any], read: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whether the wave as ``read`` after the write shows it exactly once; raises if another writer was at work."""
        wave = read or {}
        kind = note["kind"]
        if kind == RolloutOp.kind:
            history = wave.get("rollout-history") or []
            grown = len(history) - int(note["history"])
            if grown != 1:
                others = sorted({str(entry.get("rollout-by") or "?") for entry in history[int(note["history"]) :]})
                raise ConcurrentWriter(
                    f"{note['step']}: the wave's rollout history grew by {grown} entries instead of one: another "
                    f"writer is rolling this wave out (rollout-by: {', '.join(others) or 'none'}). Stop it, then "
                    "compare the history with the manifest (`reconcile --dry-run` reports the drift)"
                )
        elif not _landed(note, wave or None):
            meta = wave.get("change-meta") or {}
            by = meta.get("updated-by") or meta.get("created-by") or "unknown"
            raise ConcurrentWriter(
                f"{note['step']}: the factory answered, but the wave does not show it (status "
                f"{wave.get('status', 'absent')!r}, last changed by {by}): another writer is at "
                "work on this wave"
            )
        return read


def _read_wave(client: FactoryClient, note: dict[str, Any]) -> dict[str, Any] | None:
    """The wave a note is about; after a sign, with its targets, whose signatures show the sign."""
    return client.get_wave(note["wave"], show_targets=note["kind"] == SignOp.kind)


def _landed(note: dict[str, Any], wave: dict[str, Any] | None) -> bool:
    """Whether the write the note describes shows in the wave as read from the factory."""
    kind = note["kind"]
    if wave is None:
        return False
    if kind == RolloutOp.kind:
        return len(wave.get("rollout-history") or []) > int(note["history"])
    if kind == InitOp.kind:
        return True
    if kind == SignOp.kind:
        targets = wave.get("targets")
        signatures = targets.get("signatures") if isinstance(targets, dict) else None
        return any(isinstance(s, dict) and s.get("keyid") == note.get("keyid") for s in signatures or [])
    if kind == CompleteOp.kind:
        return wave.get("status") == "complete"
    if kind == CancelOp.kind:
        return wave.get("status") == "canceled"
    raise AssertionError(f"unknown step kind {kind!r}")


LEASE_WAIT_ENV = "RECONCILE_LOCK_TIMEOUT"
LEASE_WAIT = 300.0  # seconds an apply waits for another writer's lease before giving up


@contextmanager
def exclusive_writer(
    client: FactoryClient, repository: str | None, local_dir: str | None, echo: Callable[[str], None]
) -> Iterator[WriteGuard]:
    """Hold what makes this apply the factory's only writer, settle what an earlier run left, and yield
    the guard for the writes. Order matters: the lease first (shared by every machine and by HTTP and
    in-process applies alike), then the local factory directory's lock (which a served factory takes
    for each write), so an apply waiting for the lease never holds the directory."""
    from reconciler.apply.lease import Lease

    with ExitStack() as stack:
        lease = None
        if repository is None:
            echo(
                "warning: the manifests are in no git repository, so there is no apply lease: nothing keeps "
                "a second writer on another machine out (the post-write checks still stop a double rollout)"
            )
        else:
            lease = Lease.acquire(
                lease_store(repository, client.backend), client.factory, wait=_lease_wait(), on_wait=echo
            )
        guard = WriteGuard(client, lease, 0.0 if local_dir else 2 * client.timeout, echo)
        stack.callback(guard.release)
        if local_dir is not None:
            from reconciler.localfactory import hold, is_free

            if not is_free(local_dir):
                echo(f"Waiting for another apply on the local factory at {local_dir} to finish ...")
            stack.enter_context(hold(local_dir, wait=None))
        guard.settle_inherited()
        yield guard


def lease_store(repository: str, backend: Backend) -> RefStore:
    """Where the factory's lease lives: in the release repository itself for a factory only this machine
    reaches (in-process, or served on a loopback address), else in its shared remote (lease.py)."""
    on_this_machine = backend.lock_path is not None or _is_loopback(backend.base_url)
    return RefStore.for_repository(repository, factory_on_this_machine=on_this_machine)


def _is_loopback(url: str) -> bool:
    """A factory served on a loopback address is on this machine, like an in-process one."""
    import ipaddress

    import httpx

    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _lease_wait() -> float:
    text = os.environ.get(LEASE_WAIT_ENV)
    if not text:
        return LEASE_WAIT
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 86400:
        raise UserError(f"{LEASE_WAIT_ENV}={text!r}: give the seconds to wait for another apply's lease (0-86400)")
    return wait
