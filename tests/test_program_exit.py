"""The ``reconcile`` console script ends its process without tearing the interpreter down (``cli.program``):
its exit status, its whole output and the local factory's files must be what a normal exit leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECONCILE = str(Path(sys.executable).with_name("reconcile"))  # the console script, as users run it
EXAMPLES = str(REPO / "examples" / "releases")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    env = {name: value for name, value in env.items() if not name.startswith(("RECONCILE_", "GITHUB_"))}
    return subprocess.run([RECONCILE, *args], capture_output=True, text=True, env=env, check=False, cwd=REPO)


def test_the_program_ends_with_mains_exit_status_and_all_of_its_output(tmp_path):
    planned = run("--dry-run", "--detailed-exitcode", "--format", "json", EXAMPLES, "--local", str(tmp_path / "f"))
    assert planned.returncode == 2, planned.stderr  # changes pending
    assert json.loads(planned.stdout)["operations"], "the whole plan reached the pipe"
    checked = run("--check", EXAMPLES)
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith(": ok"), checked.stderr
    refused = run("--bogus", EXAMPLES)
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stderr


def test_a_run_on_a_local_factory_leaves_no_write_ahead_log_behind(tmp_path):
    """The store closes its connections as the process ends, so the last one folds the WAL into the
    database: a process that ended without freeing its objects left factory.db-wal and -shm."""
    factory = tmp_path / "factory"
    for _ in range(2):  # the first run creates the factory, the second opens it
        result = run("--dry-run", EXAMPLES, "--local", str(factory))
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in factory.iterdir() if p.name.startswith("factory.db")) == ["factory.db"]
