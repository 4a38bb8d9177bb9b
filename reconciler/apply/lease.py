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
process, CI run), the start and the expiry, and the **pending writes**: before each write the lease
is renewed with a note of what is about to be sent (wave, step, history length before it and the
time by which an answer lost in transit must have settled), usually while the check of the write
before it is under way (writes.py ``WriteGuard.after``). A run that dies, or whose answer is
lost, leaves that note behind; the next holder takes it over with the lease (so a run killed while
settling passes it on in turn) and settles it against the factory (did the history grow? did the
wave appear, complete, cancel?) before planning anything, waiting up to the settle time, so a rerun
never repeats a write that may still land.

What the ref holds is read as a schema (``Holder``, ``PendingWrite``, ``LeaseState``: typed, frozen,
times parsed), never trusted: anything else, a ref to a blob or a tree included, is ``Malformed``, and
the apply stops with one line that names the way out (``reconcile --unlock --force``) and what it
loses. A note's ``settle_by`` is bounded (``LONGEST_AHEAD``), so a runner with a fast clock cannot
make every later apply wait for a day.

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
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from msgspec import Struct
from msgspec.structs import asdict, replace

from reconciler.core import OpKind
from reconciler.errors import ReconcilerError, UserError
from reconciler.safetext import printable

REF_PREFIX = "refs/reconcile/locks/"
TTL = timedelta(minutes=10)  # renewed before every write; a dead CI job's lease frees itself after this
# The longest a write whose answer was lost may still land after it was sent: twice the client's request
# timeout (reconciler.factory.client.REQUEST_TIMEOUT, 30 s; a test pins the two together).
LONGEST_SETTLE = timedelta(seconds=60)
# How far ahead of this machine's clock a note may settle: a note is written just before its write is
# sent and settles at most LONGEST_SETTLE later; the writer's clock may run ahead of ours by up to one
# lease duration (further, and its lease would not expire on time either). A ``settle_by`` beyond that
# is no note a working apply writes, and waiting for it would hold every later apply.
LONGEST_AHEAD = TTL + LONGEST_SETTLE
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


class LeaseUnreadable(UserError):
    """The lease ref holds what no apply writes; the message names the way out and what it loses."""


class Malformed(ValueError):
    """What the lease ref holds does not follow the schema; the message says where (``located``: it
    names the field already, as a nested record's does)."""

    def __init__(self, message: str, *, located: bool = False):
        super().__init__(message)
        self.located = located


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_precise(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the schema ---------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Malformed(f"is {_shown(value)}, not text")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"is {_shown(value)}, not an integer")
    return value


def _count(value: object) -> int:
    number = _integer(value)
    if number < 0:
        raise Malformed(f"is {number}, below 0")
    return number


def _pid(value: object) -> int:
    number = _integer(value)
    if number < 1:  # 0 and -1 would signal a whole process group, which always "exists"
        raise Malformed(f"is {number}, not a process id")
    return number


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise Malformed(f"is {_shown(value)}, not true or false")
    return value


def _time(value: object) -> datetime:
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"is {_shown(value)}, not a time such as 2026-12-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise Malformed(f"is {_shown(value)}, a time without its UTC offset")
    return moment.astimezone(timezone.utc)


def _kind(value: object) -> OpKind:
    text = _text(value)
    try:
        return OpKind(text)
    except ValueError:
        known = ", ".join(kind.value for kind in OpKind)
        raise Malformed(f"is {_shown(value)}, not a step kind ({known})") from None


def _shown(value: object) -> str:
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return printable(shown if len(shown) <= 40 else shown[:37] + "...")


def _fields(
    raw: object,
    what: str,
    required: dict[str, Callable[[object], Any]],
    optional: dict[str, Callable[[object], Any]] | None = None,
) -> dict[str, Any]:
    """``raw`` as a JSON object of exactly these fields, each converted (and so checked) by its function."""
    optional = optional or {}
    if not isinstance(raw, dict):
        raise Malformed(f"{what} is {_shown(raw)}, not an object", located=True)
    missing = sorted(set(required) - set(raw))
    if missing:
        raise Malformed(f"{what} has no {missing[0]}", located=True)
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        raise Malformed(f"{what} has an unknown field {_shown(unknown[0])}", located=True)
    converted: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            converted[name] = {**required, **optional}[name](value)
        except Malformed as exc:
            if exc.located:
                raise
            raise Malformed(f"{what}: {name} {exc}", located=True) from None
    return converted


class Holder(Struct, frozen=True):
    """Who holds the lease, as a person reading ``unlock``'s message needs to find it."""

    user: str
    host: str
    pid: int
    pid_start: int | None = None  # the process's start (Linux clock ticks): a reused pid is another process
    run: str | None = None  # in GitHub Actions, the run's URL

    @classmethod
    def of_this_process(cls) -> Holder:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        run = None
        if os.environ.get("GITHUB_ACTIONS") and os.environ.get("GITHUB_RUN_ID"):
            server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
            run = f"{server}/{os.environ.get('GITHUB_REPOSITORY', '')}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
        return cls(user, socket.gethostname(), os.getpid(), _process_start(os.getpid()), run)

    @classmethod
    def from_json(cls, raw: object) -> Holder:
        fields = _fields(
            raw, "the holder", {"user": _text, "host": _text, "pid": _pid}, {"pid_start": _count, "run": _text}
        )
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}

    def describe(self) -> str:
        """The holder in one line, escaped: its fields come from whoever wrote the ref."""
        text = f"{self.user}@{self.host} (pid {self.pid})"
        return printable(f"{text}, {self.run}" if self.run else text)

    def ended_here(self) -> bool:
        """Whether the holder was a process on this machine that no longer exists."""
        return self.host == socket.gethostname() and not _process_exists(self.pid, self.pid_start)

    def running_here(self) -> bool:
        return self.host == socket.gethostname() and _process_exists(self.pid, self.pid_start)


class PendingWrite(Struct, frozen=True):
    """A write noted in the lease before it was sent, until the factory shows whether it landed.

    ``history`` is the wave's rollout history length before it (a rollout landed when the history is
    longer); ``keyid`` is a sign's key, whose signature the wave shows once it landed; ``settle_by``
    is when an answer lost in transit can no longer land."""

    wave: str
    kind: OpKind
    step: str
    history: int
    sent: datetime
    settle_by: datetime
    phase: str | None = None
    keyid: str | None = None

    @classmethod
    def from_json(cls, raw: object, what: str, now: datetime) -> PendingWrite:
        """A note as written by ``to_json``; ``now`` bounds its settle time (``LONGEST_AHEAD``)."""
        fields = _fields(
            raw,
            what,
            {
                "wave": _text,
                "kind": _kind,
                "step": _text,
                "history": _count,
                "sent": _time,
                "settle_by": _time,
            },
            {"phase": _text, "keyid": _text},
        )
        note = cls(**fields)
        if note.settle_by < note.sent:
            raise Malformed(f"{what}: settle_by {_iso_precise(note.settle_by)} is before it was sent", located=True)
        if note.settle_by - note.sent > LONGEST_SETTLE or note.settle_by > now + LONGEST_AHEAD:
            raise Malformed(
                f"{what}: settle_by {_iso_precise(note.settle_by)} is further ahead than any apply waits "
                f"(at most {int(LONGEST_SETTLE.total_seconds())} s after the write was sent, and "
                f"{int(LONGEST_AHEAD.total_seconds() // 60)} minutes after now, {_iso(now)}): the clock of "
                "the machine that wrote it is wrong",
                located=True,
            )
        return note

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "wave": self.wave,
            "kind": self.kind.value,
            "step": self.step,
            "history": self.history,
            "sent": _iso_precise(self.sent),
            "settle_by": _iso_precise(self.settle_by),
        }
        if self.phase is not None:
            body["phase"] = self.phase
        if self.keyid is not None:
            body["keyid"] = self.keyid
        return body

    def describe(self) -> str:
        """The write in one line, escaped: it comes from whoever wrote the ref."""
        return printable(f"{self.step} of wave '{self.wave}' sent at {_iso_precise(self.sent)}")


def _pending(raw: object, now: datetime) -> tuple[PendingWrite, ...]:
    if not isinstance(raw, list):
        raise Malformed(f"the lease: pending is {_shown(raw)}, not a list", located=True)
    return tuple(PendingWrite.from_json(item, f"pending write {n}", now) for n, item in enumerate(raw, 1))


class RefValue(NamedTuple):
    """What a ref points at: the object, its type (a lease is a commit), and a commit's message."""

    oid: str
    type: str
    message: str


class LeaseState(Struct, frozen=True):
    """What the lease ref holds: a live lease, or a released one that still carries unsettled writes."""

    commit: str
    holder: Holder
    started: datetime
    expires: datetime
    released: bool = False
    pending: tuple[PendingWrite, ...] = ()

    def to_message(self, factory: str) -> str:
        body = {
            "factory": factory,
            "holder": self.holder.to_json(),
            "started": _iso(self.started),
            "expires": _iso(self.expires),
            "released": self.released,
            "pending": [note.to_json() for note in self.pending],
            "nonce": uuid.uuid4().hex,
        }
        title = "released" if self.released else f"held by {self.holder.describe()}"
        return f"reconcile lease for factory {factory}: {title}\n\n{json.dumps(body, sort_keys=True)}\n"

    @classmethod
    def parse(cls, value: RefValue, factory: str, now: datetime) -> LeaseState:
        """The lease in ``value``, checked against the schema; ``Malformed`` says what is wrong."""
        if value.type != "commit":
            raise Malformed(f"the ref points at a {printable(value.type)} {value.oid}, not at a lease commit")
        parts = value.message.split("\n\n", 1)
        try:
            body = json.loads(parts[1]) if len(parts) > 1 else None
        except ValueError:
            body = None
        if body is None:
            raise Malformed(f"commit {value.oid} carries no lease (its message has no JSON body)")
        fields = _fields(
            body,
            "the lease",
            {
                "factory": _text,
                "holder": Holder.from_json,
                "started": _time,
                "expires": _time,
                "released": _flag,
                "pending": lambda raw: _pending(raw, now),
            },
            {"nonce": _text},
        )
        if fields["factory"] != factory:
            raise Malformed(f"the lease is for factory {_shown(fields['factory'])}", located=True)
        return cls(
            value.oid, fields["holder"], fields["started"], fields["expires"], fields["released"], fields["pending"]
        )

    def breakable(self, now: datetime) -> str | None:
        """Why an apply may take this lease over (None: it is held)."""
        if self.released:
            return "released"
        if self.expires <= now:
            return f"expired at {_iso(self.expires)}"
        if self.holder.ended_here():
            return "its process on this machine has ended"
        return None

    def alive(self, now: datetime) -> str | None:
        """Why the holder looks alive, so ``unlock`` leaves it alone without ``--force`` (None: it is dead).
        The lease is renewed before every write, so an unexpired one has a recent heartbeat."""
        if self.released or self.holder.ended_here():
            return None
        if self.holder.running_here():
            return f"its process {self.holder.pid} is running on this machine"
        if self.expires > now:
            return f"it was renewed within {int(TTL.total_seconds() // 60)} minutes and expires at {_iso(self.expires)}"
        return None

    def with_commit(self, commit: str) -> LeaseState:
        return replace(self, commit=commit)


def _process_exists(pid: int, started: int | None = None) -> bool:
    """Whether the process is still there; with its start time known, a new process that reuses the
    number does not count."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process has so large a number
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
        self._empty_tree: str | None = None  # every lease commit's tree, written once per run

    def _tree(self) -> str:
        """The empty tree every lease commit points at: one ``git mktree`` per run, not one per write
        (a renew precedes every write, so its git processes are on the apply's critical path)."""
        if self._empty_tree is None:
            self._empty_tree = _git(self.root, "mktree", stdin="").strip()
        return self._empty_tree

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

    def read(self, ref: str) -> RefValue | None:
        """What the ref points at, or None when it does not exist. Any object: a lease is a commit, but
        whatever else someone pointed the ref at must read as something ``unlock --force`` can remove."""
        if self.remote:
            listing = _git(self.root, "ls-remote", "--", self.remote, ref).split()
            if not listing:
                return None
            oid = listing[0]
            if _run(self.root, "cat-file", "-e", oid).returncode != 0:
                _git(self.root, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, ref)
        else:
            probe = _run(self.root, "rev-parse", "--verify", "--quiet", ref)
            if probe.returncode != 0:
                return None
            oid = probe.stdout.strip()
        kind = _git(self.root, "cat-file", "-t", oid).strip()
        if kind != "commit":
            return RefValue(oid, kind, "")
        message = _git(self.root, "cat-file", "commit", oid).split("\n\n", 1)
        return RefValue(oid, kind, message[1] if len(message) > 1 else "")

    def swap(self, ref: str, message: str | None, expected: str | None) -> str | None:
        """Point ``ref`` at a new commit with ``message`` (None: delete it) if it is still ``expected``
        (None: absent). Returns the new commit, "" for a deletion, None when the ref had changed."""
        new = ""
        if message is not None:
            new = _git(self.root, "commit-tree", self._tree(), "-m", message, extra_env=_GIT_IDENTITY).strip()
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
            if (current.oid if current else None) != expected:
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


def read_state(store: RefStore, factory: str, now: datetime) -> tuple[RefValue, LeaseState | Malformed] | None:
    """The factory's lease as the ref holds it (None: there is none), read against the schema."""
    value = store.read(REF_PREFIX + factory)
    if value is None:
        return None
    try:
        return value, LeaseState.parse(value, factory, now)
    except Malformed as exc:
        return value, exc


def unreadable(store: RefStore, factory: str, value: RefValue, why: Malformed) -> LeaseUnreadable:
    """The one line for a lease no apply wrote: what is wrong, the way out, and what taking it loses."""
    return LeaseUnreadable(
        f"the apply lease of factory '{factory}' ({REF_PREFIX}{factory} in {store.where}) cannot be read: {why}. "
        f"Once no apply is running, `reconcile --unlock --factory {factory} --force` removes it: {forgotten(value)}"
    )


def forgotten(value: RefValue) -> str:
    """What removing an unreadable lease loses: any write it noted, named as far as it can be read."""
    waves: list[str] = []
    try:
        body = json.loads(value.message.split("\n\n", 1)[1]) if value.type == "commit" else None
        for raw in body.get("pending", []) if isinstance(body, dict) else []:
            if isinstance(raw, dict) and isinstance(raw.get("wave"), str) and raw["wave"] not in waves:
                waves.append(raw["wave"])
    except (IndexError, ValueError, AttributeError, TypeError):
        pass
    named = ", ".join(f"'{printable(wave)}'" for wave in waves)
    where = f"the rollout history of wave {named}" if waves else "the rollout history of the waves being applied"
    return (
        "any write it noted as unsettled is forgotten (it may or may not have landed): check "
        f"{where} (`reconcile status`) before the next apply"
    )


class Lease(Struct):
    """The factory's lease while this process holds it; ``inherited`` are writes left unsettled before,
    carried in the lease until settled."""

    store: RefStore
    factory: str
    state: LeaseState
    inherited: tuple[PendingWrite, ...] = ()
    broke: str | None = None  # why an earlier holder's lease was taken over, to tell the user

    @property
    def ref(self) -> str:
        return REF_PREFIX + self.factory

    @classmethod
    def take_over(cls, store: RefStore, factory: str, previous: LeaseState | None, why: str) -> Lease | None:
        """This process's lease in place of ``previous`` (None: there is none), carrying its pending
        writes over, so they outlive this process too. None when another writer changed the ref first."""
        now = _now()
        pending = previous.pending if previous else ()
        mine = LeaseState("", Holder.of_this_process(), now, now + TTL, pending=pending)
        commit = store.swap(REF_PREFIX + factory, mine.to_message(factory), previous.commit if previous else None)
        if commit is None:
            return None
        taken_over = previous is not None and not previous.released
        return cls(
            store,
            factory,
            mine.with_commit(commit),
            inherited=pending,
            broke=f"took over the lease of {previous.holder.describe()}: {why}" if taken_over and previous else None,
        )

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
            current = read_state(store, factory, now)
            if current is not None and isinstance(current[1], Malformed):
                raise unreadable(store, factory, current[0], current[1])
            previous = current[1] if current is not None and isinstance(current[1], LeaseState) else None
            why = previous.breakable(now) if previous else "free"
            if why is not None:
                lease = cls.take_over(store, factory, previous, why)
                if lease is not None:
                    return lease
                continue  # lost the race to another writer: look again
            assert previous is not None
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"another apply holds factory '{factory}': {previous.holder.describe()} since "
                    f"{_iso(previous.started)}, until {_iso(previous.expires)} (lease {ref} in {store.where}); "
                    f"wait for it to finish, or if it is dead run `reconcile --unlock --factory {factory}`"
                )
            if on_wait and not told:
                on_wait(
                    f"Waiting for the apply lease of factory '{factory}', held by "
                    f"{previous.holder.describe()} since {_iso(previous.started)} ..."
                )
                told = True
            time.sleep(POLL_SECONDS[store.remote is not None])

    def renew(self, pending: tuple[PendingWrite, ...]) -> None:
        """Extend the lease and record the writes not yet settled; fails if the lease was taken from us."""
        state = replace(self.state, expires=_now() + TTL, released=False, pending=pending)
        commit = self.store.swap(self.ref, state.to_message(self.factory), self.state.commit)
        if commit is None:
            current = read_state(self.store, self.factory, _now())
            other = "nobody"
            if current is not None:
                other = current[1].holder.describe() if isinstance(current[1], LeaseState) else "an unreadable lease"
            raise LeaseHeld(
                f"lost the lease of factory '{self.factory}' (now held by {other}); stopped before the next write"
            )
        self.state = state.with_commit(commit)

    def release(self, pending: tuple[PendingWrite, ...] = ()) -> None:
        """Free the lease; unsettled writes stay recorded for the next holder to settle."""
        if pending:
            state = replace(self.state, released=True, pending=pending)
            self.store.swap(self.ref, state.to_message(self.factory), self.state.commit)
        else:
            self.store.swap(self.ref, None, self.state.commit)
