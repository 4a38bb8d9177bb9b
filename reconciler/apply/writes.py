"""Every write lands exactly once, or the run stops and says who else wrote.

The lease (lease.py) keeps cooperating applies apart; this module checks the factory itself,
which has no conditional writes, around each write:

- **before** it, the lease is renewed with a note of the write (wave, step, history length
  before it, and when an answer lost in transit must have settled). The next write's note is written
  while the check of the one before it (below) is under way, as the apply predicts it (``after``): when
  the step then sent is that write, its note is already in the lease and it goes out at once (the
  lease's git processes, or its push to the remote, are off the apply's chain); else the lease is
  renewed then, as without a prediction;
- **after** it, the wave is read back: a rollout must have grown the history by exactly one
  entry, an init/complete/cancel must show its effect; anything else means another writer
  (``rollout-by`` / ``created-by`` / ``updated-by`` named) and the run stops;
- when the answer is **lost** (timeout, dropped connection, 502/504), the wave is polled until
  the write shows or its settle time passes, and only then is the step called done or failed;
- a note left by a run that died or gave up is **settled first** by the next holder, before it
  plans anything, so a rerun never repeats a write that may still land; the note stays in the lease
  until then, so a holder killed while settling passes it on in turn.

Settling waits at most until the run's deadline (``--timeout``): a note still unsettled then stays in
the lease. ``unlock`` (``reconcile --unlock``) settles the notes the same way before it clears them,
or with ``force`` forgets them, saying which writes may or may not have landed.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from msgspec.structs import replace

from reconciler import connections
from reconciler.apply.lease import (
    REF_PREFIX,
    Lease,
    LeaseState,
    Malformed,
    PendingWrite,
    RefStore,
    forgotten,
    read_state,
    unreadable,
)
from reconciler.core import Operation, OpKind, RolloutOp
from reconciler.errors import BackendError, OutcomeUnknown, ReconcilerError, UserError
from reconciler.factory import Backend, FactoryClient
from reconciler.safetext import printable

UNCERTAIN_STATUS = frozenset({502, 504})  # a gateway answered: the write may or may not have reached the factory
POLL_SECONDS = 0.5
# A note written ahead (``WriteGuard.after``) serves a write sent at most this long after it: the note's
# settle time counts from when it was written, and must stay past the time the write can still land
# (sent + the client's request timeout, which the settle time is twice).
AHEAD_NOTE_SERVES = timedelta(seconds=10)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def is_uncertain(exc: BackendError) -> bool:
    """An error after which the write may still have landed (or land later): the client says the outcome is
    unknown (the answer was lost after sending), or a gateway answered in the factory's place."""
    return isinstance(exc, OutcomeUnknown) or exc.status in UNCERTAIN_STATUS


class ConcurrentWriter(ReconcilerError):
    """The factory shows a write that was not ours: another writer is at work on the same wave."""


class Unsettled(BackendError):
    """The run's time (``--timeout``) was up before a noted write settled: the note stays in the lease."""


class WriteGuard:
    """Renews the lease around each write, checks each write landed once, and settles lost answers.

    ``settle_seconds`` is how long after sending a write whose answer was lost may still land:
    twice the client's request timeout over HTTP, nothing in-process (the write and the run die
    together). ``lease`` is None when the manifests are in no git repository: the checks still run.
    """

    def __init__(self, client: FactoryClient, lease: Lease | None, settle_seconds: float, echo: Callable[[str], None]):
        self.client, self.lease, self.settle_seconds, self.echo = client, lease, settle_seconds, echo
        self.pending: tuple[PendingWrite, ...] = lease.inherited if lease else ()
        # A note the lease holds for a write not sent yet (``after``), and the lease's commit that holds it.
        self._ahead: tuple[PendingWrite, str] | None = None

    # -- before planning ------------------------------------------------------------------------

    def settle_inherited(self) -> list[tuple[PendingWrite, bool]]:
        """Resolve the writes an earlier run left unsettled, before anything else touches their waves;
        each stays in the lease until the factory shows its outcome. Returns each note and whether it landed."""
        if self.lease and self.lease.broke:
            self.echo(f"Apply lease: {self.lease.broke}")
        settled = []
        while self.pending:
            note = self.pending[0]
            landed = self._wait_until_settled(note)
            self.pending = self.pending[1:]  # settled: a failed check below is reported once, not forever
            if self.lease:
                self.lease.renew(self.pending)
            self.echo(
                f"  settled {note.describe()} by an earlier run: " + ("it landed" if landed else "it did not land")
            )
            settled.append((note, landed))
            if landed:
                self._check_once(note, _read_wave(self.client, note))
        return settled

    # -- around one write -----------------------------------------------------------------------

    def before(self, op: Operation, history_length: int, keyid: str | None = None) -> None:
        """Note the write in the lease before it is sent: renew the lease with its note, unless the lease
        holds that very note already (written ahead, with the last write's check) and nothing changed
        the lease since. ``keyid``: a sign's key (public), whose signature the wave must show afterwards."""
        if self.pending:  # an earlier write of this run is still unsettled: sending another could repeat it
            raise Unsettled(
                f"not sent: {self.pending[0].describe()} has not settled yet; it stays in the apply lease "
                "for the next run to settle"
            )
        note, ahead, self._ahead = self._note(op, history_length, keyid), self._ahead, None
        if ahead is not None and self._holds(ahead, note):
            self.pending = (ahead[0],)
            return
        if self.lease:
            self.lease.renew((note,))  # stops here, before sending, if another writer has taken the lease
        self.pending = (note,)

    def after(
        self, also: Sequence[Callable[[], Any]] = (), then: tuple[Operation, int, str | None] | None = None
    ) -> tuple[dict[str, Any] | None, list[Any]]:
        """The write was answered: check it landed exactly once. Returns the wave as read for the check
        (None: gone), which the apply may use as the wave's state for its next step, and the answers of
        ``also``: reads sent in the same round trip as the check's (the next step's). ``then``: the write
        the apply expects to send next (its operation, history length and key, as ``before`` takes them),
        whose note is written in the lease meanwhile; a note that cannot be written is left to ``before``,
        which meets the same error where it belongs, before that write."""
        note, self.pending = self.pending[0], ()
        calls: list[Callable[[], Any]] = [functools.partial(_read_wave, self.client, note), *also]
        if then is not None and self.lease is not None:
            calls.append(functools.partial(self._note_ahead, *then))
        read, *answers = self.client.gather(calls)
        return self._check_once(note, read), answers[: len(also)]

    def _note(self, op: Operation, history_length: int, keyid: str | None) -> PendingWrite:
        """The note of a write sent now."""
        sent = _now()
        return PendingWrite(
            op.wave,
            op.kind,
            op.describe(),
            history_length,
            sent,
            sent + timedelta(seconds=self.settle_seconds),
            phase=op.phase if isinstance(op, RolloutOp) else None,
            keyid=keyid,
        )

    def _note_ahead(self, op: Operation, history_length: int, keyid: str | None) -> None:
        """Write the note of the write the apply expects to send next (``after``'s ``then``)."""
        assert self.lease is not None
        note = self._note(op, history_length, keyid)
        try:
            self.lease.renew((note,))
        except Exception:  # the lease was taken, or git failed: ``before`` renews, and reports it in its place
            return
        self._ahead = (note, self.lease.state.commit)

    def _holds(self, ahead: tuple[PendingWrite, str], note: PendingWrite) -> bool:
        """Whether the note written ahead serves ``note``'s write: the same write, the lease unchanged since
        (no other note replaced it), and recent enough that its settle time still covers the write."""
        noted, commit = ahead
        return (
            self.lease is not None
            and self.lease.state.commit == commit
            and _same_write(noted, note)
            and note.sent - noted.sent <= AHEAD_NOTE_SERVES
        )

    def after_lost_answer(self, exc: BackendError) -> str:
        """The write's answer was lost: wait until the factory shows it, or until it cannot land any more."""
        note = self.pending[0]
        settle_by = _stamp(note.settle_by)
        self.echo(f"  ? {note.step}: {exc}; outcome unknown, watching the factory until {settle_by}")
        if not self._wait_until_settled(note):
            self.pending = ()
            raise BackendError(
                f"{exc}; the factory still did not show it at {settle_by}, so it did not "
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

    def _wait_until_settled(self, note: PendingWrite) -> bool:
        """Poll the wave until the write shows (True) or its settle time has passed without it (False).
        Never past the run's deadline (``--timeout``): then ``Unsettled``, and the note stays."""
        while True:
            if time.monotonic() >= self.client.deadline:
                raise Unsettled(
                    f"{note.describe()} had not settled when the run's time was up "
                    f"(--timeout {_seconds(self.client.run_timeout)}); it may still land until "
                    f"{_stamp(note.settle_by)}, so it stays in the apply lease for the next run to settle"
                )
            try:
                if _landed(note, _read_wave(self.client, note)):
                    return True
            except BackendError:
                if _now() >= note.settle_by:
                    raise
            else:
                if _now() >= note.settle_by:
                    return False
            left = min((note.settle_by - _now()).total_seconds(), self.client.deadline - time.monotonic())
            time.sleep(max(0.05, min(POLL_SECONDS, left)))

    def _check_once(self, note: PendingWrite, read: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whether the wave as ``read`` after the write shows it exactly once; raises if another writer was at work."""
        wave = read or {}
        if note.kind is OpKind.ROLLOUT:
            history = wave.get("rollout-history") or []
            grown = len(history) - note.history
            if grown != 1:
                others = sorted({str(entry.get("rollout-by") or "?") for entry in history[note.history :]})
                raise ConcurrentWriter(
                    f"{note.step}: the wave's rollout history grew by {grown} entries instead of one: another "
                    f"writer is rolling this wave out (rollout-by: {', '.join(others) or 'none'}). Stop it, then "
                    "compare the history with the manifest (`reconcile --dry-run` reports the drift)"
                )
        elif not _landed(note, wave or None):
            meta = wave.get("change-meta") or {}
            by = meta.get("updated-by") or meta.get("created-by") or "unknown"
            raise ConcurrentWriter(
                f"{note.step}: the factory answered, but the wave does not show it (status "
                f"{wave.get('status', 'absent')!r}, last changed by {by}): another writer is at "
                "work on this wave"
            )
        return read


def _same_write(noted: PendingWrite, note: PendingWrite) -> bool:
    """Whether two notes are of the same write, whenever each was written."""
    return replace(noted, sent=note.sent, settle_by=note.settle_by) == note


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _read_wave(client: FactoryClient, note: PendingWrite) -> dict[str, Any] | None:
    """The wave a note is about; after a sign, with its targets, whose signatures show the sign."""
    return client.get_wave(note.wave, show_targets=note.kind is OpKind.SIGN)


def _landed(note: PendingWrite, wave: dict[str, Any] | None) -> bool:
    """Whether the write the note describes shows in the wave as read from the factory."""
    if wave is None:
        return False
    match note.kind:
        case OpKind.ROLLOUT:
            return len(wave.get("rollout-history") or []) > note.history
        case OpKind.INIT:
            return True
        case OpKind.SIGN:
            targets = wave.get("targets")
            signatures = targets.get("signatures") if isinstance(targets, dict) else None
            return any(isinstance(s, dict) and s.get("keyid") == note.keyid for s in signatures or [])
        case OpKind.COMPLETE:
            return wave.get("status") == "complete"
        case OpKind.CANCEL:
            return wave.get("status") == "canceled"


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
    import httpx

    return connections.is_loopback(httpx.URL(url).host)


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


def unlock(client: FactoryClient, repository: str, *, force: bool, echo: Callable[[str], None]) -> str:
    """``reconcile --unlock``: free the factory's apply lease left by an apply that died; returns what was done.

    A holder that looks alive (``LeaseState.alive``) is left alone, and a lease that cannot be read is
    left in place, unless ``force``. The writes the lease notes as unsettled are settled against the
    factory first, as an apply does (the lease is taken over meanwhile, so a kill passes them on), and
    the lease is cleared only once the factory shows each outcome; ``force`` forgets them instead and
    says which writes may or may not have landed."""
    factory = client.factory
    store = lease_store(repository, client.backend)
    now = _now().replace(microsecond=0)
    current = read_state(store, factory, now)
    if current is None:
        return f"factory '{factory}' has no apply lease in {store.where}; nothing to do"
    value, state = current
    if isinstance(state, Malformed):
        if not force:
            raise unreadable(store, factory, value, state)
        _remove(store, factory, value.oid)
        return f"removed the unreadable apply lease of factory '{factory}' ({state}); --force: {forgotten(value)}"
    done = f"removed the apply lease of factory '{factory}' held by {state.holder.describe()} since {_stamp_s(state)}"
    alive = state.alive(now)
    if alive and not force:
        raise UserError(
            f"the apply lease of factory '{factory}' is held by {state.holder.describe()} since {_stamp_s(state)}, "
            f"who looks alive: {alive}. Wait for that apply to finish; only if you know it has stopped, "
            f"`reconcile --unlock --factory {factory} --force` frees it (two applies at once may roll a phase out twice)"
        )
    if force:
        _remove(store, factory, state.commit)
        if alive:
            done += f" (--force: it looked alive: {alive}; if it still runs it stops before its next write)"
        if state.pending:
            done += "; --force: forgot its unsettled " + "; ".join(_lost(note) for note in state.pending)
        return done
    lease = Lease.take_over(store, factory, state, state.breakable(now) or "unlocked")
    if lease is None:
        raise UserError(f"the apply lease of factory '{factory}' changed while unlocking; look again")
    guard = WriteGuard(client, lease, 0.0, echo)
    try:
        settled = guard.settle_inherited()
    except Unsettled as exc:
        raise Unsettled(
            f"{exc}; `reconcile --unlock --factory {factory} --force` forgets it instead: {_lost(guard.pending[0])}"
        ) from exc
    finally:
        guard.release()
    if settled:
        outcomes = "; ".join(f"{note.describe()}: {'landed' if landed else 'did not land'}" for note, landed in settled)
        done += f"; settled its unsettled writes against the factory first: {outcomes}"
    return done


def _stamp_s(state: LeaseState) -> str:
    return state.started.strftime("%Y-%m-%dT%H:%M:%SZ")


def _lost(note: PendingWrite) -> str:
    return (
        f"{note.describe()}, which may or may not have landed: check the rollout history of wave "
        f"'{printable(note.wave)}' (`reconcile status`) before the next apply"
    )


def _remove(store: RefStore, factory: str, expected: str) -> None:
    if store.swap(REF_PREFIX + factory, None, expected) is None:
        raise UserError(f"the apply lease of factory '{factory}' changed while unlocking; look again")
