"""The local factory keeps its private keys private (directory 0700, database and WAL files 0600), and a
healthy factory on a read-only or full disk is reported as such, never as a damaged database."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli, store
from tests.helpers.factory import make_template

REPO = Path(__file__).resolve().parents[2]
NOT_A_FACTORY = "is not a local factory database"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def cli_run(path: Path, *args: str):
    return CliRunner().invoke(cli.main, ["--local", str(path), *args])


@pytest.fixture
def copy(tmp_path_factory, tmp_path):
    path = tmp_path / "factory"
    shutil.copytree(make_template(tmp_path_factory), path)
    return path


# ------------------------------------------------------------------------------------ modes


def test_a_new_factory_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        result = cli_run(tmp_path / "f", "init", "--demo", "--devices", "10")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    directory = tmp_path / "f"
    assert mode(directory) == 0o700
    assert mode(directory / store.DB_NAME) == 0o600
    assert mode(directory / store.KEY_ARCHIVE) == 0o600
    assert "private" not in result.stderr, "nothing to tighten in a factory made private from the start"


def test_the_wal_files_are_private_too(copy):
    os.chmod(copy, 0o700)
    os.chmod(copy / store.DB_NAME, 0o600)
    st = store.Store.in_dir(copy)
    try:
        with st.write() as conn:
            store.set_meta(conn, "probe", 1)
        assert mode(copy / f"{store.DB_NAME}-wal") == 0o600
        assert mode(copy / f"{store.DB_NAME}-shm") == 0o600
    finally:
        st.close()


def test_an_older_factory_is_made_private_with_a_note(copy):
    os.chmod(copy, 0o755)  # noqa: S103 - an older factory's loose mode, to be tightened
    os.chmod(copy / store.DB_NAME, 0o644)
    result = cli_run(copy, "status")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Made the local factory at {copy} private (it holds private keys): the directory 0755 -> 0700, "
        f"{store.DB_NAME} 0644 -> 0600"
    ]
    assert (mode(copy), mode(copy / store.DB_NAME)) == (0o700, 0o600)
    assert cli_run(copy, "status").stderr == "", "said once"


def test_reconcile_says_so_too(copy, release_repo):
    from tests.helpers.e2e import CANARY_WAVE, commit, reconcile

    commit(release_repo, {"w.yaml": CANARY_WAVE}, "a wave")
    os.chmod(copy / store.DB_NAME, 0o640)
    code, _, err = reconcile("--dry-run", "--local", str(copy), str(release_repo))
    assert code == 0, err
    assert f"{store.DB_NAME} 0640 -> 0600" in err and mode(copy / store.DB_NAME) == 0o600


# ------------------------------------------------------------------------------------ read-only and full disks


def _factory_cli(path: Path, *args: str, prefix: tuple[str, ...] = (), preexec=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*prefix, sys.executable, "-m", "reconciler.localfactory", "--local", str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
        check=False,
    )


def _without_privileges() -> tuple[str, ...]:
    """Root ignores file modes; without capabilities (setpriv) it obeys them like anyone else."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot make a directory read-only")
    return (setpriv, "--inh-caps=-all", "--bounding-set=-all", "--")


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert NOT_A_FACTORY not in lines[0] and "move it away" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [("status",), ("advance", "1h")])
def test_a_read_only_factory_is_called_read_only_not_damaged(copy, command):
    prefix = _without_privileges()
    os.chmod(copy / store.DB_NAME, 0o400)
    os.chmod(copy, 0o500)
    try:
        line = _one_line(_factory_cli(copy, *command, prefix=prefix))
    finally:
        os.chmod(copy, 0o700)
        os.chmod(copy / store.DB_NAME, 0o600)
    assert line.startswith(
        f"error: the local factory at {copy} cannot be written (attempt to write a readonly database): "
    )
    assert "make the directory and its files writable" in line
    assert cli_run(copy, "status").exit_code == 0, "the factory was healthy all along"


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: a write past ``limit`` bytes fails (EFBIG) instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_called_a_disk_problem_not_a_damaged_database(copy):
    """A file size limit in a child process stands in for a full disk: every write fails as it would."""
    before = (copy / store.DB_NAME).read_bytes()
    line = _one_line(_factory_cli(copy, "advance", "1h", preexec=_file_size_limit(1024)))
    assert line.startswith(f"error: cannot read or write the local factory at {copy} (disk I/O error")
    assert "the disk may be full" in line
    assert (copy / store.DB_NAME).read_bytes() == before
    assert cli_run(copy, "advance", "1h").exit_code == 0, "with space again, the factory works"


def test_sqlite_reporting_a_full_disk_is_called_a_full_disk(copy):
    st = store.Store.in_dir(copy)
    try:
        conn = st.connect()
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError) as caught, st.write() as tx:
            tx.execute("CREATE TABLE filler (x)")
            tx.execute("INSERT INTO filler SELECT randomblob(100000) FROM devices")
    finally:
        st.close()
    assert st.describe(caught.value) == (
        f"the disk holding the local factory at {copy} is full (database or disk "
        "is full); free some space and try again"
    )
