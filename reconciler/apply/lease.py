"""At most one writer per factory: a lease in the release repository, and a ledger of unsettled writes.

The Foundries API has no locks and no conditional writes, so two applies that plan at the same
moment would both see a phase ready and both roll it out. Whoever starts an apply (a laptop, a
scheduled workflow, a merge), it first takes the factory's **lease**: the git ref
``refs/reconcile/locks/<factory>`` in the release repository, created atomically. With a remote
(``origin``, or ``$RECONCILE_LOCK_REMOTE``) the ref is created by ``git push
--force-with-lease=<ref>:`` (the remote refuses when it exists), else in the local repository by
``git update-ref <ref> <new> ""``. Every change afterwards is a compare-and-swap on the ref's commit,
so exactly one of two racers wins, on GitHub as on disk.

The ref points at a parentless commit whose message carries, as JSON, the holder (user, host,
process, CI run), the start and the expiry, and the **pending write**: before each write the lease
is renewed with a note of what is about to be sent (wave, step, history length before it and the
time by which an answer lost in transit must have settled). A run that dies, or whose answer is
lost, leaves that note behind; the next holder settles it against the factory (did the history
grow? did the wave appear, complete, cancel?) before planning anything, waiting up to the
settle time, so a rerun never repeats a write that may still land.

A lease is released at the end of the apply (deleted, or kept as a "released" note when a write
is still unsettled). It is broken only when it has expired, when its holder was a process on this
machine that no longer exists, or by ``reconcile --unlock``.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.errors import ReconcilerError, UserError

REF_PREFIX = "refs/reconcile/locks/"
TTL = timedelta(minutes=10)  # renewed before every write; a dead CI job's lease frees itself after this
_CONTENDED_ATTEMPTS = 40
POLL_SECONDS = {True: 1.0, False: 0.2}  # how often a waiting apply looks again: over the network, on disk
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "reconcile",
    "GIT_AUTHOR_EMAIL": "reconcile@localhost",
    "GIT_COMMITTER_NAME": "reconcile",
    "GIT_COMMITTER_EMAIL": "reconcile@localhost",
}


class LeaseHeld(ReconcilerError):
    """Another writer holds the factory's lease; the message names it and how to proceed."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def holder_identity() -> dict[str, Any]:
    """Who takes the lease, as a person reading ``unlock``'s message needs to find it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    holder = {"user": user, "host": socket.gethostname(), "pid": os.getpid()}
    started = _process_start(os.getpid())
    if started is not None:
        holder["pid_start"] = started
    if os.environ.get("GITHUB_ACTIONS") and os.environ.get("GITHUB_RUN_ID"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        holder["run"] = f"{server}/{os.environ.get('GITHUB_REPOSITORY', '')}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
    return holder


def describe_holder(holder: dict[str, Any]) -> str:
    text = f"{holder.get('user', '?')}@{holder.get('host', '?')} (pid {holder.get('pid', '?')})"
    return f"{text}, {holder['run']}" if holder.get("run") else text


@dataclass(frozen=True)
class LeaseState:
    """What the lease ref holds: a live lease, or a released one that still carries an unsettled write."""

    commit: str
    holder: dict[str, Any]
    started: str
    expires: str
    released: bool = False
    pending: tuple[dict[str, Any], ...] = ()

    def to_message(self, factory: str) -> str:
        body = {
            "factory": factory,
            "holder": self.holder,
            "started": self.started,
            "expires": self.expires,
            "released": self.released,
            "pending": list(self.pending),
            "nonce": uuid.uuid4().hex,
        }
        title = "released" if self.released else f"held by {describe_holder(self.holder)}"
        return f"reconcile lease for factory {factory}: {title}\n\n{json.dumps(body, sort_keys=True)}\n"

    @classmethod
    def from_message(cls, commit: str, message: str) -> LeaseState:
        """A ref whose commit is not ours reads as held forever: only ``unlock`` removes it."""
        try:
            body = json.loads(message.split("\n\n", 1)[1])
            return cls(
                commit,
                dict(body["holder"]),
                str(body["started"]),
                str(body["expires"]),
                bool(body.get("released")),
                tuple(dict(p) for p in body.get("pending") or ()),
            )
        except (IndexError, KeyError, TypeError, ValueError):
            return cls(commit, {"user": "unknown (unreadable lease)"}, "?", "9999-12-31T23:59:59Z")

    def breakable(self, now: datetime) -> str | None:
        """Why this lease may be taken over (None: it is held)."""
        if self.released:
            return "released"
        try:
            if _parse(self.expires) <= now:
                return f"expired at {self.expires}"
        except ValueError:
            return None
        pid = self.holder.get("pid")
        if (
            self.holder.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not _process_exists(pid, self.holder.get("pid_start"))
        ):
            return "its process on this machine has ended"
        return None


def _process_exists(pid: int, started: object = None) -> bool:
    """Whether the process is still there; with its start time known, a new process that reuses the
    number does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _process_start(pid) in (None, started)


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


class RefStore:
    """One ref, read and compare-and-swapped, in a remote of the repository or in the repository itself."""

    def __init__(self, root: str, remote: str | None):
        self.root, self.remote = root, remote

    @classmethod
    def for_repository(cls, root: str, *, factory_on_this_machine: bool = False) -> RefStore:
        """``$RECONCILE_LOCK_REMOTE``; else the repository itself for a factory only this machine reaches (a
        local factory: a rehearsal needs no network and no push access); else ``origin`` when there is one."""
        wanted = os.environ.get("RECONCILE_LOCK_REMOTE")
        remotes = _git(root, "remote").split()
        if wanted and wanted not in remotes:
            raise UserError(f"RECONCILE_LOCK_REMOTE names '{wanted}', which is not a remote of {root}")
        if wanted:
            return cls(root, wanted)
        return cls(root, "origin" if "origin" in remotes and not factory_on_this_machine else None)

    @property
    def where(self) -> str:
        return f"remote '{self.remote}' of {self.root}" if self.remote else f"the repository {self.root}"

    def read(self, ref: str) -> tuple[str, str] | None:
        """(commit, message) of the ref, or None when it does not exist."""
        if self.remote:
            listing = _git(self.root, "ls-remote", "--", self.remote, ref).split()
            if not listing:
                return None
            commit = listing[0]
            if _run(self.root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
                _git(self.root, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, ref)
        else:
            probe = _run(self.root, "rev-parse", "--verify", "--quiet", ref)
            if probe.returncode != 0:
                return None
            commit = probe.stdout.strip()
        message = _git(self.root, "cat-file", "commit", commit).split("\n\n", 1)
        return commit, message[1] if len(message) > 1 else ""

    def swap(self, ref: str, message: str | None, expected: str | None) -> str | None:
        """Point ``ref`` at a new commit with ``message`` (None: delete it) if it is still ``expected``
        (None: absent). Returns the new commit, "" for a deletion, None when the ref had changed."""
        new = ""
        if message is not None:
            empty_tree = _git(self.root, "mktree", stdin="").strip()
            new = _git(self.root, "commit-tree", empty_tree, "-m", message, extra_env=_GIT_IDENTITY).strip()
        for _ in range(_CONTENDED_ATTEMPTS):
            if self.remote:
                lease = f"--force-with-lease={ref}:{expected or ''}"
                done = _run(
                    self.root, "push", "--quiet", "--porcelain", "--no-verify", lease, self.remote, f"{new}:{ref}"
                )
            elif message is None:
                done = _run(self.root, "update-ref", "-d", ref, expected or "")
            else:
                done = _run(self.root, "update-ref", ref, new, expected or "")
            if done.returncode == 0:
                return new
            current = self.read(ref)
            if (current[0] if current else None) != expected:
                return None  # lost a race: someone else changed the ref first
            if "lock" not in (done.stderr + done.stdout).lower():
                break
            time.sleep(0.05)  # another writer holds git's own ref lock at this instant: its swap decides soon
        said = ((done.stderr or done.stdout).strip().splitlines() or ["git failed"])[-1]
        hint = "; in GitHub Actions the apply job needs `permissions: contents: write`" if self.remote else ""
        raise UserError(f"cannot write the apply lease {ref} in {self.where}: {said}{hint}")


def _run(
    root: str, *args: str, stdin: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(extra_env or {})}
    return subprocess.run(
        ["git", "-C", root, *args], check=False, capture_output=True, text=True, input=stdin, env=env, timeout=120
    )


def _git(root: str, *args: str, stdin: str | None = None, extra_env: dict[str, str] | None = None) -> str:
    done = _run(root, *args, stdin=stdin, extra_env=extra_env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise UserError(f"apply lease: git {args[0]} in {root}: {last}")
    return done.stdout


@dataclass
class Lease:
    """The factory's lease while this process holds it; ``inherited`` are writes left unsettled before."""

    store: RefStore
    factory: str
    state: LeaseState
    inherited: tuple[dict[str, Any], ...] = ()
    broke: str | None = None  # why an earlier holder's lease was taken over, to tell the user
    _clock: Callable[[], datetime] = field(default=_now, repr=False)

    @property
    def ref(self) -> str:
        return REF_PREFIX + self.factory

    @classmethod
    def acquire(
        cls, store: RefStore, factory: str, wait: float = 0.0, on_wait: Callable[[str], None] | None = None
    ) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for a live holder to release it."""
        ref = REF_PREFIX + factory
        deadline = time.monotonic() + wait
        told = False
        while True:
            now = _now()
            current = store.read(ref)
            previous = LeaseState.from_message(*current) if current else None
            why = previous.breakable(now) if previous else "free"
            if why is not None:
                mine = LeaseState("", holder_identity(), _iso(now), _iso(now + TTL))
                commit = store.swap(ref, mine.to_message(factory), previous.commit if previous else None)
                if commit is not None:
                    taken_over = previous is not None and not previous.released
                    return cls(
                        store,
                        factory,
                        _replace_commit(mine, commit),
                        inherited=previous.pending if previous else (),
                        broke=f"took over the lease of {describe_holder(previous.holder)}: {why}"
                        if taken_over and previous
                        else None,
                    )
                continue  # lost the race to another writer: look again
            assert previous is not None
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"another apply holds factory '{factory}': {describe_holder(previous.holder)} since "
                    f"{previous.started}, until {previous.expires} (lease {ref} in {store.where}); wait for it "
                    f"to finish, or if it is dead run `reconcile --unlock --factory {factory}`"
                )
            if on_wait and not told:
                on_wait(
                    f"Waiting for the apply lease of factory '{factory}', held by "
                    f"{describe_holder(previous.holder)} since {previous.started} ..."
                )
                told = True
            time.sleep(POLL_SECONDS[store.remote is not None])

    def renew(self, pending: tuple[dict[str, Any], ...]) -> None:
        """Extend the lease and record the write about to be sent; fails if the lease was taken from us."""
        now = _now()
        state = LeaseState("", self.state.holder, self.state.started, _iso(now + TTL), False, pending)
        commit = self.store.swap(self.ref, state.to_message(self.factory), self.state.commit)
        if commit is None:
            current = self.store.read(self.ref)
            other = describe_holder(LeaseState.from_message(*current).holder) if current else "nobody"
            raise LeaseHeld(
                f"lost the lease of factory '{self.factory}' (now held by {other}); stopped before the next write"
            )
        self.state = _replace_commit(state, commit)

    def release(self, pending: tuple[dict[str, Any], ...] = ()) -> None:
        """Free the lease; an unsettled write stays recorded for the next holder to settle."""
        if pending:
            state = LeaseState("", self.state.holder, self.state.started, self.state.expires, True, pending)
            self.store.swap(self.ref, state.to_message(self.factory), self.state.commit)
        else:
            self.store.swap(self.ref, None, self.state.commit)


def _replace_commit(state: LeaseState, commit: str) -> LeaseState:
    return LeaseState(commit, state.holder, state.started, state.expires, state.released, state.pending)


def unlock(store: RefStore, factory: str) -> str:
    """Free the factory's lease whoever holds it (``reconcile --unlock``); returns what was done.

    A write the holder left unsettled stays recorded (the lease becomes "released"), so the next
    apply still settles it against the factory before it plans anything."""
    ref = REF_PREFIX + factory
    current = store.read(ref)
    if current is None:
        return f"factory '{factory}' has no apply lease in {store.where}; nothing to do"
    state = LeaseState.from_message(*current)
    if state.pending:
        kept = LeaseState("", state.holder, state.started, state.expires, True, state.pending)
        swapped = store.swap(ref, kept.to_message(factory), state.commit)
    else:
        swapped = store.swap(ref, None, state.commit)
    if swapped is None:
        raise UserError(f"the apply lease of factory '{factory}' changed while unlocking; look again")
    done = (
        f"removed the apply lease of factory '{factory}' held by {describe_holder(state.holder)} since {state.started}"
    )
    if state.pending:
        done += "; kept its unsettled write for the next apply to settle: " + "; ".join(
            describe_pending(p) for p in state.pending
        )
    return done


def describe_pending(pending: dict[str, Any]) -> str:
    step = pending.get("step", "?")
    return f"{step} of wave '{pending.get('wave', '?')}' sent at {pending.get('sent', '?')}"
