"""``reconcile --watch``: re-runs on manifest and UUID file changes, diffs plans, survives bad states."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.cli.watch import plan_changes, relevant, watch
from reconciler.errors import Problem, UserError, ValidationFailed

ROOT = Path(__file__).resolve().parent.parent


def test_plan_changes_between_texts_and_operation_lists():
    old = "Factory demo\n  + init  w1\n  ~ rollout w1 canary\nPlan: 1 to init"
    new = "Factory demo\n  + init  w1\n  ~ rollout w1 beta\nPlan: 1 to init"
    assert plan_changes(old, new) == ["-   ~ rollout w1 canary", "+   ~ rollout w1 beta"]
    assert plan_changes(old, old) == []
    ops_old = [{"op": "init", "wave": "w1"}, {"op": "rollout", "wave": "w1", "phase": "canary"}]
    ops_new = [{"op": "init", "wave": "w1"}]
    assert plan_changes(ops_old, ops_new) == ['- {"op": "rollout", "phase": "canary", "wave": "w1"}']


def test_relevant_files_are_visible_files_under_the_watched_roots(tmp_path):
    root = str(tmp_path)
    assert relevant(f"{root}/waves/a.yaml", [root])
    assert relevant(f"{root}/uuids/canary.lst", [root])
    assert not relevant(f"{root}/.git/index", [root])
    assert not relevant(f"{root}/waves/.a.yaml.swp", [root])
    assert not relevant(f"{root}/waves/a.yaml~", [root])
    assert not relevant("/elsewhere/a.yaml", [root])
    assert relevant(f"{root}/a.yaml", [f"{root}/a.yaml"])  # watching a single file


def _start(paths, run_once, lines):
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(paths, run_once, stop, lines.append), daemon=True)
    thread.start()
    return stop, thread


def _wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_edits_trigger_a_new_plan_and_invalid_states_do_not_stop_the_watch(tmp_path):
    manifest = tmp_path / "wave.yaml"
    manifest.write_text("phases: [canary]\n")
    uuids = tmp_path / "canary.lst"
    uuids.write_text("")

    def run_once():
        text = manifest.read_text()
        if "{" in text:
            raise ValidationFailed([Problem(str(manifest), 1, 9, "unbalanced brace")])
        return f"plan: {text.strip()} ({len(uuids.read_text().split())} uuids)"

    lines: list[str] = []
    stop, thread = _start([str(tmp_path)], run_once, lines)
    try:
        assert _wait_for(lambda: any(line.startswith("Watching") for line in lines))
        started = time.monotonic()
        manifest.write_text("phases: [canary, {\n")  # mid-edit: invalid
        assert _wait_for(lambda: any("unbalanced brace" in line for line in lines))
        assert time.monotonic() - started < 1.5
        manifest.write_text("phases: [canary, beta]\n")
        assert _wait_for(lambda: "+ plan: phases: [canary, beta] (0 uuids)" in lines)
        (tmp_path / ".wave.yaml.swp").write_text("editor noise")
        uuids.write_text("a b\n")
        assert _wait_for(lambda: "+ plan: phases: [canary, beta] (2 uuids)" in lines)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert lines[0] == "plan: phases: [canary] (0 uuids)"
    assert not any(".wave.yaml.swp" in line for line in lines)
    assert "- plan: phases: [canary, beta] (0 uuids)" in lines


def test_a_save_during_the_first_plan_is_not_missed(tmp_path):
    """The watcher is armed before the first plan runs: an edit made meanwhile gives a re-plan."""
    manifest = tmp_path / "wave.yaml"
    manifest.write_text("v1\n")
    runs: list[str] = []

    def run_once():
        text = manifest.read_text().strip()
        if not runs:
            manifest.write_text("v2\n")  # the operator saves while the first plan is being made
        runs.append(text)
        return f"plan: {text}"

    lines: list[str] = []
    stop, thread = _start([str(tmp_path)], run_once, lines)
    try:
        assert _wait_for(lambda: "+ plan: v2" in lines), lines
    finally:
        stop.set()
        thread.join(timeout=5)
    assert runs[:2] == ["v1", "v2"]


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or directory to watch"):
        watch([str(tmp_path / "nope")], lambda: "x")


WAVE = """apiVersion: reconciler/v1
kind: Wave
name: v41-update
target: 41
tag: production
phases:
  - name: canary
    group: canary
"""


def test_reconcile_watch_replans_on_save_and_stops_on_ctrl_c(tmp_path):
    """The real command: a plan, an edit, a re-plan with the difference, then SIGINT ends it quietly."""
    releases = tmp_path / "releases"
    releases.mkdir()
    manifest = releases / "v41.yaml"
    manifest.write_text(WAVE)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RECONCILE_LOCAL": str(tmp_path / "factory"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    # Ctrl-C as a terminal delivers it: a test run started in the background (a non-interactive shell's
    # `&`, nohup) ignores SIGINT, and a child inherits that, so the watch would never see the signal.
    code = (
        "import faulthandler, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "faulthandler.register(signal.SIGUSR1, all_threads=True); "
        "from reconciler.cli.reconcile import main; sys.exit(main())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--dry-run", "--watch", "releases"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        assert _wait_for(lambda: any(line.startswith("Watching releases") for line in lines), 30), "".join(lines)
        manifest.write_text(WAVE + "  - name: beta\n    group: beta\n")
        assert _wait_for(lambda: any(line.startswith("+") and "beta" in line for line in lines), 10), "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack, into the output
            time.sleep(1)
            proc.kill()
            reader.join(timeout=5)
            raise AssertionError("still running 10 s after Ctrl-C:\n" + "".join(lines)) from None
    reader.join(timeout=5)
    assert proc.returncode == 0, "".join(lines)
    assert lines[-1].strip() == "Stopped watching."
    assert not any("Traceback" in line for line in lines)
