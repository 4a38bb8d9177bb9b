"""Racing applies and lost answers: no phase is ever rolled out twice (issue 17, items 1 and 2).

Real parts throughout: ``reconcile`` processes started together against ``reconcile-factory serve``
on 127.0.0.1, an in-process apply on the same directory, a release repository whose ref holds the
apply lease, and a small HTTP front on loopback that delays (or kills the sender of) one write.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli as factory_cli
from reconciler.localfactory import open_embedded
from tests.helpers.e2e import CANARY_WAVE, api, commit, git, reconcile, wave
from tests.helpers.serving import Answer, FactoryFront, Front, is_write, serve_factory

REPO = Path(__file__).resolve().parent.parent


def phases(count: int) -> str:
    """The canary wave plus ``count`` one-device factory-wide phases (each one history entry)."""
    return CANARY_WAVE + "".join(f"  - name: p{i}\n    limit: 1\n" for i in range(1, count + 1))


def history(factory_dir: Path) -> list[str]:
    return [entry["group-name"] or "*" for entry in wave(factory_dir, "rel-46")["rollout-history"]]


@contextlib.contextmanager
def served(factory_dir: Path) -> Iterator[tuple[str, str]]:
    """``reconcile-factory serve`` on a free loopback port: (url, token)."""
    token = CliRunner().invoke(factory_cli.main, ["--local", str(factory_dir), "token", "--name", "ci-bot"])
    assert token.exit_code == 0, token.output
    with serve_factory(factory_dir) as url:
        yield url, token.output.strip()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RECONCILE_LOCK_TIMEOUT": "120", **extra}


def start_apply(release_repo: Path, *backend: str, token: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()", str(release_repo), *backend]
    env = _env(**({"RECONCILE_API_TOKEN": token} if token else {}))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def race(release_repo: Path, factory_dir: Path, rounds: int, *, mixed: bool) -> None:
    """Each round adds one ready phase and starts two applies together; the phase must land once."""
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0  # init + canary
    with served(factory_dir) as (url, token):
        over_http = ("--api-url", url, "--factory", "demo")
        in_process = ("--local", str(factory_dir))
        for n in range(1, rounds + 1):
            commit(release_repo, {"rel-46.yaml": phases(n)}, f"phase p{n}")
            runs = [
                start_apply(release_repo, *over_http, token=token),
                start_apply(release_repo, *(in_process if mixed else over_http), token=token),
            ]
            results = [(run.communicate(timeout=180), run.returncode) for run in runs]
            for (out, err), code in results:
                assert code == 0, (n, out, err)
            assert history(factory_dir) == ["canary"] + ["*"] * n, (n, results)
            rolled = sum(err.count("~ rollout rel-46 phase") for (_, err), _ in results)
            assert rolled == 1, (n, results)


def test_two_served_applies_started_together_roll_each_phase_out_once(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    race(release_repo, factory_dir, rounds=3, mixed=False)


def test_a_served_and_an_in_process_apply_on_one_directory_roll_each_phase_out_once(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    race(release_repo, factory_dir, rounds=2, mixed=True)


@pytest.mark.slow
def test_twenty_rounds_of_racing_applies_never_repeat_a_phase(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    race(release_repo, factory_dir, rounds=20, mixed=False)


@pytest.mark.slow
def test_twenty_rounds_of_a_served_and_an_in_process_apply_never_repeat_a_phase(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    race(release_repo, factory_dir, rounds=20, mixed=True)


# ------------------------------------------------------------------------------------ lost answers


@pytest.fixture
def front(factory_dir) -> Iterator[Front]:
    f = Front(factory_dir)
    yield f
    f.close()


def apply_with_timeout(release_repo: Path, url: str, timeout: float, keys: Path | None = None) -> tuple[str, list[str]]:
    """One apply like ``reconcile`` does it, with a short request timeout: (error or "", lines said)."""
    from reconciler import manifest, signing
    from reconciler.apply.steps import Outcome, apply_plan
    from reconciler.apply.writes import exclusive_writer
    from reconciler.core import build_plan
    from reconciler.errors import ReconcilerError
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe

    said: list[str] = []
    specs = manifest.load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=url, factory="demo", local=None), request_timeout=timeout) as client:
        try:
            with exclusive_writer(client, str(release_repo), None, said.append) as guard:
                make_signer = (
                    None
                    if keys is None
                    else (lambda root, online: signing.signer_from_uri(f"archive:{keys}", root, online))
                )
                result = apply_plan(
                    client, specs, build_plan(specs, observe(client, specs)), make_signer, said.append, guard
                )
        except ReconcilerError as exc:
            return str(exc), said
    return "; ".join(step.message for step in result.of(Outcome.FAILED)), said


def test_a_write_answered_after_the_clients_timeout_is_not_repeated_by_an_immediate_rerun(
    release_repo, factory_dir, front
):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(1)}, "phase p1")
    front.on_rollout = lambda: time.sleep(1.6)  # lands 0.6 s after the client gave up on it

    error, said = apply_with_timeout(release_repo, front.url, timeout=1.0)
    assert error == "", said
    assert any("outcome unknown" in line for line in said), said
    assert any("landed after the answer was lost" in line for line in said), said
    code, out, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo")
    assert code == 0 and "Applying" not in err, (out, err)
    assert front.rollouts == 1 and history(factory_dir) == ["canary", "*"]


def test_the_next_phase_after_a_lost_answer_starts_from_the_factory_not_from_a_guess(release_repo, factory_dir, front):
    """The wave is only polled after a lost answer: the next step of that wave reads it again."""
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(2)}, "phases p1 and p2")
    delays = iter([1.6])  # p1 lands 0.6 s after the client gave up on it; p2 is answered at once
    front.on_rollout = lambda: time.sleep(next(delays, 0))

    error, said = apply_with_timeout(release_repo, front.url, timeout=1.0)
    assert error == "", said
    assert any("landed after the answer was lost" in line for line in said), said
    assert front.rollouts == 2 and history(factory_dir) == ["canary", "*", "*"], said


def test_a_sign_answered_after_the_clients_timeout_is_settled_and_the_rollout_follows_once(release_repo, tmp_path):
    """A wave sign is a write like a rollout: its lost answer is settled by reading the wave's signatures."""
    two_keys = tmp_path / "two-keys"
    result = CliRunner().invoke(
        factory_cli.main, ["--local", str(two_keys), "init", "--demo", "--devices", "100", "--offline-keys", "2"]
    )
    assert result.exit_code == 0, result.output
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(two_keys))[0] == 0  # init, signed by the first key
    front = Front(two_keys)
    try:
        front.hook_on = "sign"
        front.on_rollout = lambda: time.sleep(1.6)  # the sign lands 0.6 s after the client gave up on it
        error, said = apply_with_timeout(release_repo, front.url, timeout=1.0, keys=two_keys / "targets.only.2.key.tgz")
        assert error == "", said
        assert any("sign rel-46" in line and "outcome unknown" in line for line in said), said
        assert any("landed after the answer was lost" in line for line in said), said
        assert any("~ rollout rel-46 phase 'canary'" in line for line in said), said
        code, out, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo")
        assert code == 0 and "Applying" not in err, (out, err)
        assert front.rollouts == 1 and [e["group-name"] for e in wave(two_keys, "rel-46")["rollout-history"]] == [
            "canary"
        ]
    finally:
        front.close()


class LeaseWatchingFront(FactoryFront):
    """Records the notes the apply lease holds as each write arrives (``at_write``), and holds the answer
    to the check that follows each write until the lease holds another note, at most 2 s: whether it
    changed while the check was under way (``changed_during_check``)."""

    def __init__(self, factory_dir: Path, release_repo: Path):
        self.repo, self.check_due = release_repo, False
        self.at_write: list[tuple[str, list[str]]] = []
        self.changed_during_check: list[bool] = []
        super().__init__(factory_dir)

    def notes(self) -> list[str]:
        message = git(self.repo, "cat-file", "commit", "refs/reconcile/locks/demo").rsplit("\n\n", 1)[1]
        return [note["step"] for note in json.loads(message)["pending"]]

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        if is_write(command, body):
            self.at_write.append((path, self.notes()))
            self.check_due = True
        elif command == "GET" and path == "/ota/factories/demo/waves/rel-46/" and self.check_due:
            self.check_due, before = False, self.notes()
            deadline = time.monotonic() + 2
            while self.notes() == before and time.monotonic() < deadline:
                time.sleep(0.02)
            self.changed_during_check.append(self.notes() != before)
        return self.forward(command, path, body, headers)


def test_the_next_writes_note_is_written_while_the_check_of_the_last_is_under_way(release_repo, factory_dir):
    """Each write's note is in the lease when the write reaches the factory (exactly once, crash or not),
    and the next one's is written while the check of the write before it is under way, not after it:
    the lease's git processes (or its push to a remote) are off the apply's chain of round trips."""
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(3)}, "phases p1 to p3")
    front = LeaseWatchingFront(factory_dir, release_repo)
    try:
        code, out, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo")
    finally:
        front.close()
    assert code == 0, (out, err)
    assert history(factory_dir) == ["canary", "*", "*", "*"]
    noted = [[f"rollout rel-46 phase 'p{n}' (factory-wide, limit 1)"] for n in (1, 2, 3)]
    assert [notes for _, notes in front.at_write] == noted, front.at_write
    assert front.changed_during_check == [True, True, False], "the last write has no next one"


def test_a_note_written_ahead_serves_only_the_write_it_describes(release_repo, factory_dir):
    """A note written ahead (``WriteGuard.after``) stands for its write only: another step, the same step
    at another history length, or a lease renewed since, and the lease is renewed with the write's own
    note before it is sent; the very write predicted goes out on the note already there."""
    from reconciler import manifest
    from reconciler.apply.lease import Lease, RefStore
    from reconciler.apply.writes import WriteGuard
    from reconciler.core import build_plan
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe

    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(2)}, "phases p1 and p2")
    specs = manifest.load([str(release_repo)]).specs
    lease = Lease.acquire(RefStore(str(release_repo), None), "demo")
    ref = "refs/reconcile/locks/demo"

    def held() -> tuple[str, list[tuple[str, int]]]:
        message = git(release_repo, "cat-file", "commit", ref).rsplit("\n\n", 1)[1]
        return git(release_repo, "rev-parse", ref).strip(), [
            (n["step"], n["history"]) for n in json.loads(message)["pending"]
        ]

    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        p1, p2 = build_plan(specs, observe(client, specs)).ready
        guard = WriteGuard(client, lease, 60.0, print)
        for ahead, sent, renewed_between, served in [
            ((p2, 2), (p1, 1), False, False),  # another step
            ((p1, 2), (p1, 1), False, False),  # the same step at another history length
            ((p1, 1), (p1, 1), True, False),  # the lease renewed since
            ((p1, 1), (p1, 1), False, True),  # the write predicted
        ]:
            guard._note_ahead(*ahead, None)
            if renewed_between:
                lease.renew(())
            before = held()
            guard.before(*sent)
            commit_now, notes = held()
            assert notes == [(sent[0].describe(), sent[1])], (ahead, sent)
            assert (commit_now == before[0]) is served, (ahead, sent)
            guard.failed()
    lease.release()


def test_a_write_lost_on_the_way_is_reported_as_not_landed_once_it_can_no_longer_land(release_repo, factory_dir, front):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(1)}, "phase p1")

    def drop():
        raise ConnectionAbortedError("the write never reaches the factory")

    front.on_rollout = drop
    started = time.monotonic()
    error, said = apply_with_timeout(release_repo, front.url, timeout=0.5)
    assert time.monotonic() - started >= 1.0, "watched the factory for twice the request timeout"
    assert "so it did not land and the next run may send it again" in error, (error, said)
    assert git(release_repo, "for-each-ref", "refs/reconcile/") == "", "settled: nothing left for the next run"
    assert front.rollouts == 0 and history(factory_dir) == ["canary"]
    assert reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo")[0] == 0
    assert front.rollouts == 1 and history(factory_dir) == ["canary", "*"]


def test_a_rerun_right_after_a_run_died_during_a_write_waits_for_that_write_instead_of_repeating_it(
    release_repo, factory_dir, front
):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(1)}, "phase p1")
    victim = start_apply(release_repo, "--api-url", front.url, "--factory", "demo")

    def kill_then_delay():
        victim.kill()
        victim.wait()
        threading.Thread(target=rerun_now, daemon=True).start()
        time.sleep(1.5)  # the dead run's write reaches the factory while the rerun is already running

    rerun: list[tuple[int, str, str]] = []

    def rerun_now():
        rerun.append(reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo"))

    front.on_rollout = kill_then_delay
    victim.communicate(timeout=120)
    deadline = time.monotonic() + 60
    while not rerun and time.monotonic() < deadline:
        time.sleep(0.1)
    ((code, out, err),) = rerun
    assert code == 0, (out, err)
    assert "it landed" in err and "took over the lease" in err, err
    assert front.rollouts == 1 and history(factory_dir) == ["canary", "*"]


def test_a_rollout_by_someone_else_at_the_same_time_stops_the_apply_naming_them(release_repo, factory_dir, front):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": phases(1)}, "phase p1")

    def someone_else_rolls_out():  # fioctl by hand, with no lease: only the post-write check can see it
        with api(factory_dir) as client:
            assert client.post("/ota/factories/demo/waves/rel-46/rollout/", json={"limit": 1}).status_code == 200

    front.on_rollout = someone_else_rolls_out
    code, _, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo")
    assert code == 1
    assert "the wave's rollout history grew by 2 entries instead of one" in err
    assert "rollout-by: local-operator" in err


# ------------------------------------------------------------------------------------ the factory's own lock


def test_a_served_write_waiting_for_an_in_process_apply_is_answered_503_in_time(factory_dir):
    from reconciler.factory.client import FactoryClient
    from reconciler.localfactory.app import make_app
    from reconciler.localfactory.store import BUSY_TIMEOUT
    from reconciler.localfactory.writelock import WRITE_WAIT, hold

    client_timeout = inspect.signature(FactoryClient).parameters["request_timeout"].default
    assert client_timeout > WRITE_WAIT + BUSY_TIMEOUT, "a served write must be answered before the client gives up"
    embedded = open_embedded(factory_dir)
    app = httpx.Client(
        transport=httpx.WSGITransport(app=make_app(embedded.store, write_lock=0.3)), base_url="http://factory"
    )
    with app:
        with hold(factory_dir, wait=None):  # an in-process apply on the same directory
            assert app.get("/ota/factories/demo/waves/").status_code == 200  # reads never wait
            started = time.monotonic()
            answer = app.post("/ota/factories/demo/waves/rel-46/rollout/", json={"limit": 1})
            assert answer.status_code == 503 and "busy" in answer.json()["message"]
            assert 0.3 <= time.monotonic() - started < 1.5
            # A dry run writes nothing: it reads a snapshot at once (here: no such wave), never a 503.
            started = time.monotonic()
            dry = app.post("/ota/factories/demo/waves/rel-46/rollout/", json={"limit": 1, "dry-run": True})
            assert dry.status_code == 404 and time.monotonic() - started < 0.3
            bad = app.post(
                "/ota/factories/demo/waves/rel-46/rollout/", content=b"{", headers={"Content-Type": "application/json"}
            )
            assert bad.status_code == 400, "the body the lock read is checked as strictly as the handler's"
        free = app.post("/ota/factories/demo/waves/rel-46/rollout/", json={"limit": 1})
        assert free.status_code == 404, "once the apply is done, the write reaches the factory (no such wave)"


@pytest.mark.slow
def test_serve_answers_503_before_the_clients_timeout_while_an_in_process_apply_holds_the_directory(factory_dir):
    from reconciler.localfactory.writelock import WRITE_WAIT, hold

    with served(factory_dir) as (url, token), hold(factory_dir, wait=None):
        started = time.monotonic()
        answer = httpx.post(
            f"{url}/ota/factories/demo/waves/rel-46/rollout/",
            json={"limit": 1},
            headers={"OSF-TOKEN": token},
            timeout=30,
        )
        took = time.monotonic() - started
    assert answer.status_code == 503 and WRITE_WAIT <= took < WRITE_WAIT + 5


# ------------------------------------------------------------------------------------ the lease itself


def test_a_held_lease_names_its_holder_and_only_unlock_frees_it(release_repo, factory_dir, monkeypatch):
    from reconciler.apply.lease import Lease, LeaseHeld, RefStore

    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    store = RefStore.for_repository(str(release_repo))
    Lease.acquire(store, "demo")  # held by this (live) process, as by an apply still running
    with pytest.raises(LeaseHeld) as caught:
        Lease.acquire(store, "demo", wait=0)
    assert f"(pid {os.getpid()})" in str(caught.value) and "reconcile --unlock --factory demo" in str(caught.value)

    monkeypatch.setenv("RECONCILE_LOCK_TIMEOUT", "0")
    code, _, err = reconcile(str(release_repo), "--local", str(factory_dir))
    assert code == 1 and "error: another apply holds factory 'demo'" in err, err
    assert "Applying" not in err and reconcile("--dry-run", str(release_repo), "--local", str(factory_dir))[0] == 0

    unlock = ("--unlock", "--factory", "demo", str(release_repo), "--local", str(factory_dir))
    code, out, err = reconcile(*unlock)
    assert code == 1 and "looks alive" in err and "--force" in err, "its process runs: not freed without --force"
    code, out, _ = reconcile(*unlock, "--force")
    assert code == 0 and out.startswith("removed the apply lease of factory 'demo' held by ")
    assert git(release_repo, "for-each-ref", "refs/reconcile/") == ""
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    assert history(factory_dir) == ["canary"]
    assert git(release_repo, "for-each-ref", "refs/reconcile/") == "", "released at the end"


def test_the_lease_lives_in_the_shared_remote_so_two_clones_exclude_each_other(tmp_path):
    from datetime import datetime, timedelta, timezone

    from reconciler.apply.lease import Lease, LeaseHeld, PendingWrite, RefStore
    from reconciler.core import OpKind

    shared = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(shared))
    clones = []
    for name in ("laptop", "ci"):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(shared), str(clone))
        clones.append(RefStore.for_repository(str(clone)))
    laptop, ci = clones
    assert laptop.remote == "origin"
    lease = Lease.acquire(laptop, "acme")
    with pytest.raises(LeaseHeld):
        Lease.acquire(ci, "acme", wait=0)
    sent = datetime.now(timezone.utc)
    note = PendingWrite(
        "v46", OpKind.ROLLOUT, "rollout v46 phase 'beta'", 1, sent, sent + timedelta(seconds=60), "beta"
    )
    lease.renew((note,))
    lease.release((note,))  # the run gave up with its write unsettled: the note outlives the lease
    taken = Lease.acquire(ci, "acme", wait=0)
    assert taken.inherited == (note,) and taken.broke is None
    taken.release()
    assert git(shared, "for-each-ref", "refs/reconcile/") == ""


def test_a_lease_writes_its_empty_tree_once_per_run_not_once_per_renew(tmp_path, monkeypatch):
    """A renew precedes every write, so its git processes are on the apply's critical path: the tree every
    lease commit points at is made once (``GIT_TRACE`` logs each git command the store runs)."""
    from datetime import datetime, timezone

    from reconciler.apply.lease import Lease, PendingWrite, RefStore
    from reconciler.core import OpKind

    repo = tmp_path / "releases"
    git(tmp_path, "init", "-q", str(repo))
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    lease = Lease.acquire(RefStore.for_repository(str(repo)), "demo")
    sent = datetime.now(timezone.utc)
    for phase in ("canary", "beta", "eu"):
        lease.renew((PendingWrite("v46", OpKind.ROLLOUT, f"rollout v46 phase '{phase}'", 1, sent, sent, phase),))
    tree = git(repo, "rev-parse", f"{lease.state.commit}^{{tree}}").strip()
    lease.release()
    commands = [
        line.split("trace: built-in: git ", 1)[1] for line in trace.read_text().splitlines() if "built-in" in line
    ]
    assert sum(command.startswith("mktree") for command in commands) == 1, commands
    assert sum(command.startswith("commit-tree") for command in commands) == 4, "acquire and three renews"
    assert tree == git(repo, "hash-object", "-t", "tree", "/dev/null").strip(), "the empty tree"
    assert git(repo, "for-each-ref", "refs/reconcile/") == ""


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_write_any_more(release_repo):
    from datetime import datetime, timezone

    from reconciler.apply.lease import REF_PREFIX, Holder, Lease, LeaseHeld, LeaseState, RefStore

    store = RefStore.for_repository(str(release_repo))
    stale = Lease.acquire(store, "demo")
    old = LeaseState(
        "",
        Holder("ci", "runner-7", 4242),
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc),
    )
    stale.state = old.with_commit(store.swap(REF_PREFIX + "demo", old.to_message("demo"), stale.state.commit) or "")
    fresh = Lease.acquire(store, "demo", wait=0)
    assert fresh.broke == "took over the lease of ci@runner-7 (pid 4242): expired at 2026-01-01T00:10:00Z"
    with pytest.raises(LeaseHeld, match="lost the lease of factory 'demo'"):
        stale.renew(())
    fresh.release()


def test_the_example_workflows_apply_job_may_push_the_lease():
    import yaml

    workflow = yaml.safe_load((REPO / "examples/workflows/release.yml").read_text())
    assert workflow["jobs"]["apply"]["permissions"]["contents"] == "write"


@pytest.mark.parametrize("shared_remote", [False, True])
def test_of_many_applies_taking_the_lease_at_once_exactly_one_gets_it(tmp_path, shared_remote):
    from concurrent.futures import ThreadPoolExecutor

    from reconciler.apply.lease import Lease, LeaseHeld, RefStore

    repo = tmp_path / "releases"
    git(tmp_path, "init", "-q", str(repo))
    if shared_remote:
        git(tmp_path, "init", "-q", "--bare", str(tmp_path / "shared.git"))
        git(repo, "remote", "add", "origin", str(tmp_path / "shared.git"))
    store = RefStore.for_repository(str(repo))

    def take(_):
        try:
            return Lease.acquire(store, "demo", wait=0)
        except LeaseHeld:
            return None

    with ThreadPoolExecutor(8) as pool:
        taken = [lease for lease in pool.map(take, range(8)) if lease is not None]
    assert len(taken) == 1


def test_the_lease_of_a_factory_on_this_machine_stays_in_the_local_repository(tmp_path, factory_dir, monkeypatch):
    import httpx as _httpx

    from reconciler.apply.writes import lease_store
    from reconciler.factory.client import Backend, select_backend

    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "shared.git"))
    git(tmp_path, "clone", "-q", str(tmp_path / "shared.git"), str(tmp_path / "releases"))
    repo = str(tmp_path / "releases")

    def api_at(url: str) -> Backend:
        return Backend("acme", url, url, _httpx.HTTPTransport())

    assert lease_store(repo, api_at("https://api.foundries.io")).remote == "origin"
    assert lease_store(repo, select_backend(api_url=None, factory=None, local=str(factory_dir))).remote is None
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert lease_store(repo, api_at(loopback)).remote is None, loopback
    monkeypatch.setenv("RECONCILE_LOCK_REMOTE", "origin")
    assert lease_store(repo, api_at("http://127.0.0.1:8080")).remote == "origin"


def test_a_lease_whose_process_on_this_machine_has_ended_is_free_even_if_its_number_was_reused():
    from datetime import datetime, timezone

    from msgspec.structs import replace

    from reconciler.apply.lease import Holder, LeaseState

    now = datetime.now(timezone.utc)
    far = datetime(9999, 1, 1, tzinfo=timezone.utc)
    me = Holder.of_this_process()
    assert LeaseState("c", me, now, far).breakable(now) is None
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    gone = replace(me, pid=int(ended.stdout), pid_start=1)
    reused = replace(me, pid_start=(me.pid_start or 0) + 1)  # this process's number, another process's start
    for holder in (gone, reused):
        assert LeaseState("c", holder, now, far).breakable(now) == "its process on this machine has ended"
        assert LeaseState("c", holder, now, far).alive(now) is None
    elsewhere = replace(gone, host="another-machine")
    assert LeaseState("c", elsewhere, now, far).breakable(now) is None, "only expiry frees it"
