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


def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    env = {name: value for name, value in env.items() if not name.startswith(("RECONCILE_", "GITHUB_"))}
    if token is not None:
        env["RECONCILE_API_TOKEN"] = token
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


CONNECT_THEN_FAIL = """
import socket, sys, time
from reconciler import connections
listener = socket.create_server(("127.0.0.1", 0))
connections.Spares().open("127.0.0.1", listener.getsockname()[1], True, 4, 5.0)
time.sleep(float(sys.argv[1]))
raise RuntimeError("the run fails while its connections are opening")
"""


def test_a_process_that_ends_while_its_connections_open_does_not_crash():
    """An opening thread reads the CA bundle and handshakes inside OpenSSL, without the GIL. A process torn
    down meanwhile died of a segmentation fault: an uncaught error 10-30 ms after the connections started,
    while a bundle of some 150 roots was read, exited 139 in 5 runs of 5. Now the opening threads are
    stopped first (``connections._settle``), and the error ends the process as usual."""
    import certifi

    env = {**os.environ, "PYTHONPATH": str(REPO), "SSL_CERT_FILE": certifi.where()}
    for delay in ("0", "0.01", "0.02", "0.03", "0.06"):
        result = subprocess.run(
            [sys.executable, "-c", CONNECT_THEN_FAIL, delay], capture_output=True, text=True, env=env, check=False
        )
        assert result.returncode == 1, f"after {delay} s: exit {result.returncode}\n{result.stderr}"
        assert result.stderr.rstrip().endswith("RuntimeError: the run fails while its connections are opening")


def test_reconcile_debug_with_an_early_mistake_shows_its_traceback_and_exits_1():
    """The same as a user meets it: ``--debug`` shows a mistake's traceback, which the interpreter prints
    as it ends, right after the command line began connecting to an https API."""
    mistake = ["--debug", "--out", "plan.json", EXAMPLES, "--api-url", "https://127.0.0.1:9", "--factory", "d"]
    for _ in range(3):
        result = run(*mistake, token="t")
        assert result.returncode == 1, result.stderr
        assert "UserError: --out saves a plan without applying it" in result.stderr
