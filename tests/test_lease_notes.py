"""Lease notes read as a schema, bounded settling, and ``--unlock`` that never forgets a write silently
(issue 21, item 3).

Each test sets the lease up as another run would have left it: a ref under ``refs/reconcile/locks/``
in the release repository, written with git, then drives the public CLI (``reconcile``, ``reconcile
--unlock``) in a subprocess with a timeout, so a run that hangs fails the test instead of the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers.e2e import CANARY_WAVE, commit, git, reconcile, wave
from tests.helpers.lease import REF, empty_tree, lease_body, note, now, stamp, write_lease

REPO = Path(__file__).resolve().parent.parent
P1_WAVE = CANARY_WAVE + "  - name: p1\n    limit: 1\n"


def lease_ref(repo: Path) -> str:
    return git(repo, "for-each-ref", "refs/reconcile/")


def cli(*args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    """``reconcile ARGS`` in a process of its own: (exit code, stdout, stderr, seconds it took). A run that
    outlives ``timeout`` is killed and fails the test."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), "RECONCILE_LOCK_TIMEOUT": "0"},
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def in_process(*args: str) -> tuple[int, str, str]:
    """``reconcile ARGS`` in this process (faster, for runs that cannot hang): a crash fails the test."""
    from click.testing import CliRunner

    from reconciler.cli.reconcile import main

    result = CliRunner().invoke(main, list(args), env={"RECONCILE_LOCK_TIMEOUT": "0"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def history(factory_dir: Path) -> list[str]:
    return [entry["group-name"] or "*" for entry in wave(factory_dir, "rel-46")["rollout-history"]]


@pytest.fixture
def rel46(release_repo: Path, factory_dir: Path) -> tuple[Path, Path]:
    """rel-46 created and rolled out to canary (history: 1 entry), phase p1 committed and ready."""
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": P1_WAVE}, "phase p1")
    return release_repo, factory_dir


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------ settling is bounded


def test_a_note_settling_a_day_ahead_is_refused_at_once_and_only_force_unlock_clears_it(rel46):
    """A runner with a fast clock: its note says it settles tomorrow. Waiting for it would hang the apply
    (and ``--timeout`` had no effect); it is a note no working apply can write, so it is malformed."""
    repo, factory_dir = rel46
    tomorrow = now() + timedelta(days=1)
    write_lease(repo, lease_body([note(sent=stamp(tomorrow), settle_by=stamp(tomorrow + timedelta(seconds=60)))]))
    local = ("--local", str(factory_dir))

    code, _, err, took = cli("--timeout", "10s", str(repo), *local)
    assert code == 1 and took < 10, (took, err)
    (line,) = error_lines(err)
    assert "settle_by" in line and "reconcile --unlock --factory demo --force" in line, line
    assert "Applying" not in err and history(factory_dir) == ["canary"]

    code, _, err, _ = cli("--unlock", "--factory", "demo", str(repo), *local)
    assert code == 1 and "--force" in error_lines(err)[0], err
    assert lease_ref(repo) != "", "without --force the note stays"

    code, out, err, _ = cli("--unlock", "--factory", "demo", "--force", str(repo), *local)
    assert code == 0, err
    assert "may or may not have landed" in out and "rel-46" in out, out
    assert lease_ref(repo) == ""
    assert reconcile(str(repo), *local)[0] == 0 and history(factory_dir) == ["canary", "*"]


def test_timeout_bounds_settling_a_note_and_the_note_stays_for_the_next_run(rel46):
    repo, factory_dir = rel46
    pending = note(settle_by=stamp(now() + timedelta(seconds=55)))
    write_lease(repo, lease_body([pending]))

    code, _, err, took = cli("--timeout", "2s", str(repo), "--local", str(factory_dir))
    assert code == 1 and took < 20, (took, err)
    (line,) = error_lines(err)
    assert "rollout rel-46 phase 'p1'" in line and "--timeout 2s" in line, line
    assert "Applying" not in err and history(factory_dir) == ["canary"]
    kept = git(repo, "cat-file", "commit", REF)
    assert '"released": true' in kept and pending["settle_by"] in kept, "the next run still settles it"


def test_unlock_settles_notes_against_the_factory_before_it_clears_them(rel46):
    repo, factory_dir = rel46
    landed = note(history=0, step="rollout rel-46 phase 'canary' (group canary)", phase="canary")
    not_yet = note(settle_by=stamp(now() + timedelta(seconds=2)))
    write_lease(repo, lease_body([landed, not_yet]))

    code, out, err, took = cli("--unlock", "--factory", "demo", str(repo), "--local", str(factory_dir))
    assert code == 0, err
    assert "phase 'canary' (group canary) of wave 'rel-46'" in err and "it landed" in err, err
    assert "it did not land" in err and took >= 1.5, "waited until the write could no longer land"
    assert out.startswith("removed the apply lease of factory 'demo'"), out
    assert lease_ref(repo) == ""
    assert history(factory_dir) == ["canary"]


def test_unlock_within_a_timeout_shorter_than_the_settle_time_keeps_the_note(rel46):
    repo, factory_dir = rel46
    write_lease(repo, lease_body([note(settle_by=stamp(now() + timedelta(seconds=50)))]))

    code, _, err, took = cli("--unlock", "--factory", "demo", "--timeout", "1s", str(repo), "--local", str(factory_dir))
    assert code == 1 and took < 20, (took, err)
    assert "--timeout 1s" in err and "--force" in err, err
    assert '"released": true' in git(repo, "cat-file", "commit", REF)


# ------------------------------------------------------------------------------------ malformed leases


MALFORMED_NOTES = {
    "no settle_by": note(settle_by=None),
    "an unknown kind": note(kind="reboot"),
    "a history that is text": note(history="1"),
    "a history that is a fraction": note(history=1.5),
    "a history that is a boolean": note(history=True),
    "a time that is no time": note(sent="yesterday"),
    "a settle time before the send": note(settle_by="2020-01-01T00:00:00Z"),
    "a note that is a list": ["rel-46", "rollout"],
}


@pytest.mark.parametrize("what", sorted(MALFORMED_NOTES))
def test_a_malformed_note_stops_every_apply_with_one_line_naming_the_way_out(rel46, what):
    repo, factory_dir = rel46
    write_lease(repo, lease_body([MALFORMED_NOTES[what]]))
    assert_only_force_unlock_clears_it(repo, factory_dir)


def test_a_malformed_holder_or_lease_body_names_the_way_out_too(rel46):
    repo, factory_dir = rel46
    for body in (
        lease_body([], released=False, pid="4242"),
        lease_body([], released=False, user=["ci"]),
        {**lease_body([note()]), "expires": "soon"},
        {**lease_body([note()]), "factory": "another"},
        "reconcile lease for factory demo\n\nnot json\n",
        "a commit someone else pointed the ref at\n",
    ):
        write_lease(repo, body)
        assert_only_force_unlock_clears_it(repo, factory_dir)


@pytest.mark.parametrize("kind", ["blob", "tree"])
def test_a_lease_ref_to_a_blob_or_a_tree_names_the_way_out(rel46, kind):
    repo, factory_dir = rel46
    if kind == "blob":
        made = subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-w", "--stdin"],
            input="not a lease",
            check=True,
            capture_output=True,
            text=True,
        )
        oid = made.stdout.strip()
    else:
        oid = empty_tree(repo)
    git(repo, "update-ref", REF, oid)
    assert_only_force_unlock_clears_it(repo, factory_dir, f"a {kind}")


def assert_only_force_unlock_clears_it(repo: Path, factory_dir: Path, says: str = "") -> None:
    local = ("--local", str(factory_dir))
    for args in ((str(repo), *local), ("--unlock", "--factory", "demo", str(repo), *local)):
        code, out, err = in_process(*args)
        assert code == 1, (args, out, err)
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "reconcile --unlock --factory demo --force" in lines[0] and says in lines[0], lines[0]
        assert lease_ref(repo) != "" and history(factory_dir) == ["canary"]
    code, out, err = in_process("--unlock", "--factory", "demo", "--force", str(repo), *local)
    assert code == 0 and out.startswith("removed the unreadable apply lease of factory 'demo'"), (out, err)
    assert lease_ref(repo) == ""


# ------------------------------------------------------------------------------------ live holders, escaping


def test_unlock_refuses_a_live_holder_unless_forced(rel46):
    repo, factory_dir = rel46
    local = ("--local", str(factory_dir))
    alive_here = {"host": socket.gethostname(), "pid": os.getpid(), "user": "me"}
    far = stamp(now() + timedelta(minutes=5))
    for body in (
        {**lease_body([], released=False, **alive_here), "expires": "2026-01-01T00:10:00Z"},  # its process runs
        {**lease_body([], released=False), "expires": far},  # elsewhere, not expired
    ):
        write_lease(repo, body)
        code, out, err, _ = cli("--unlock", "--factory", "demo", str(repo), *local)
        assert code == 1 and out == "", (out, err)
        (line,) = error_lines(err)
        assert "looks alive" in line and "reconcile --unlock --factory demo --force" in line, line
        assert lease_ref(repo) != ""
        code, out, err, _ = cli("--unlock", "--factory", "demo", "--force", str(repo), *local)
        assert code == 0 and out.startswith("removed the apply lease of factory 'demo'"), (out, err)
        assert lease_ref(repo) == ""


def test_unlock_escapes_what_the_lease_says(rel46):
    repo, factory_dir = rel46
    forged = "eve\n::error::forged"
    write_lease(
        repo,
        lease_body(
            [note(history=0, step="rollout rel-46\n::error::step\u202e\x07")],
            user=forged,
            host="runner\u202e7\x07",
            run="https://github.com/acme/r/actions/runs/1\n::warning::x",
        ),
    )
    code, out, err, _ = cli("--unlock", "--factory", "demo", str(repo), "--local", str(factory_dir))
    assert code == 0, err
    for text in (out, err):
        assert not any(line.startswith(("::error::", "::warning::")) for line in text.splitlines()), text
        assert "\u202e" not in text and "\x07" not in text, text
    assert "eve\\u000a::error::forged" in out and "runner\\u202e7\\u0007" in out, out


# ------------------------------------------------------------------------------------ the CLI's options


def test_force_without_unlock_is_refused(rel46):
    repo, factory_dir = rel46
    code, _, err = reconcile("--force", str(repo), "--local", str(factory_dir))
    assert code == 1 and "--force works with --unlock" in err, err


def test_the_longest_settle_a_note_may_have_is_twice_the_clients_request_timeout():
    """The bound on ``settle_by`` (README, "Concurrent writers") follows from how the apply writes a note."""
    from reconciler.apply.lease import LONGEST_AHEAD, LONGEST_SETTLE, TTL
    from reconciler.factory.client import REQUEST_TIMEOUT

    assert LONGEST_SETTLE.total_seconds() == 2 * REQUEST_TIMEOUT
    assert LONGEST_AHEAD == TTL + LONGEST_SETTLE
