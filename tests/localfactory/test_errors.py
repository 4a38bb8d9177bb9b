"""Local factory: a user's mistake, a damaged or busy database, a bad place are one line and exit 1,
never a traceback, and never destructive (the operator key archive is never overwritten)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3

import click
import pytest
from click.testing import CliRunner

from reconciler import signing
from reconciler.errors import UserError
from reconciler.localfactory import cli, demo, open_embedded, store, targets
from tests.helpers.factory import T0, F, Factory, make_template

NOT_A_FACTORY = "is not a local factory database"


@pytest.fixture
def copy(tmp_path_factory, tmp_path):
    """A fresh copy of the session's template factory (no connection open on it)."""
    path = tmp_path / "factory"
    shutil.copytree(make_template(tmp_path_factory), path)
    return path


@pytest.fixture
def short_busy_timeout(monkeypatch):
    monkeypatch.setattr(store, "BUSY_TIMEOUT", 0.05)


def cli_run(path, *args):
    return CliRunner().invoke(cli.main, ["--local", str(path), *args])


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def damage(db, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    if how == "empty":
        db.write_bytes(b"")
    elif how == "random":
        db.write_bytes(os.urandom(4096))
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[:1000])
    elif how == "other-sqlite":
        db.unlink()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()
        conn.close()
    elif how == "directory":
        db.unlink()
        db.mkdir()


# ------------------------------------------------------------------------------------ 1. damaged factory.db


@pytest.mark.parametrize("how", ["empty", "random", "truncated", "other-sqlite", "directory"])
def test_a_damaged_database_is_refused_never_recreated(copy, how):
    archive = copy / demo.KEY_ARCHIVE
    key = archive.read_bytes()
    db = copy / store.DB_NAME
    damage(db, how)
    before = None if db.is_dir() else db.read_bytes()
    with pytest.raises(UserError) as e:
        open_embedded(copy)
    message = str(e.value)
    assert message.startswith(f"{db} {NOT_A_FACTORY} (") and "move it away or point --local/RECONCILE_LOCAL" in message
    assert "\n" not in message
    assert archive.read_bytes() == key  # the operator key survives
    assert before is None or db.read_bytes() == before  # the file is not touched either
    with pytest.raises(UserError, match=NOT_A_FACTORY):
        demo.init_factory(copy, devices_n=0, start=T0)
    assert archive.read_bytes() == key


def test_a_locked_database_is_busy_not_absent(copy, short_busy_timeout):
    archive = copy / demo.KEY_ARCHIVE
    key = archive.read_bytes()
    holder = sqlite3.connect(copy / store.DB_NAME, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE meta SET value = value WHERE key = 'now'")
        with pytest.raises(UserError, match=r"is busy \(database is locked\)"):
            open_embedded(copy)
        one_line_error(cli_run(copy, "status"), "is busy")
    finally:
        holder.close()
    assert archive.read_bytes() == key
    emb = open_embedded(copy)
    assert emb.created is False
    emb.store.close()


def test_init_never_overwrites_an_operator_key_archive(copy):
    archive = copy / demo.KEY_ARCHIVE
    key = archive.read_bytes()
    (copy / store.DB_NAME).unlink()  # the database is gone, the operator's key is not
    with pytest.raises(UserError, match="targets.only.key.tgz already exists"):
        open_embedded(copy)
    one_line_error(cli_run(copy, "init", "--devices", "0"), "already exists", "move the archive away")
    assert archive.read_bytes() == key and not (copy / store.DB_NAME).exists()


def leftovers(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else None


def test_a_failed_init_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "f"

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(demo, "_add_demo_devices", boom)
    with pytest.raises(RuntimeError):
        demo.init_factory(path, devices_n=10, start=T0)
    assert leftovers(path) is None  # the directory it made is gone too
    path.mkdir()
    with pytest.raises(RuntimeError):
        demo.init_factory(path, devices_n=10, start=T0)
    assert leftovers(path) == []
    monkeypatch.undo()
    monkeypatch.setattr(signing, "key_archive_bytes", boom)  # fails after the archive file was created
    with pytest.raises(RuntimeError):
        demo.init_factory(path, devices_n=10, start=T0)
    assert leftovers(path) == []
    monkeypatch.undo()
    result = demo.init_factory(path, devices_n=10, start=T0)
    assert leftovers(path) == [store.DB_NAME, demo.KEY_ARCHIVE] and result.devices == 10


# ------------------------------------------------------------------------------------ 2. bad places


def test_open_embedded_bad_places_are_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        str(a_file): "is not a directory",
        str(a_file / "below"): "not a directory",
        "/proc/self": "cannot use /proc/self for the local factory",
    }
    for place, fragment in cases.items():
        monkeypatch.setenv("RECONCILE_LOCAL", place)
        with pytest.raises(UserError) as e:
            open_embedded()
        assert fragment in str(e.value) and "\n" not in str(e.value)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["advance", "1h"],
        ["token"],
        ["serve", "--port", "0"],
        ["devices", "list"],
        ["devices", "add", "lab-9"],
        ["devices", "move", "x"],
        ["devices", "import", "CSV"],
        ["build", "70"],
        ["init"],
    ],
)
def test_every_command_on_a_corrupt_database(copy, args, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("name,tag,hardware_id,version\n")
    key = (copy / demo.KEY_ARCHIVE).read_bytes()
    damage(copy / store.DB_NAME, "random")
    one_line_error(cli_run(copy, *[str(csv) if a == "CSV" else a for a in args]), NOT_A_FACTORY)
    assert (copy / demo.KEY_ARCHIVE).read_bytes() == key


def test_a_write_waiting_too_long_is_busy(copy, short_busy_timeout):
    holder = sqlite3.connect(copy / store.DB_NAME, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the factory
        one_line_error(cli_run(copy, "token"), "is busy (database is locked)", "try again")
        one_line_error(cli_run(copy, "advance", "1h"), "is busy")
    finally:
        holder.close()


# ------------------------------------------------------------------------------------ 3. serve


def test_serve_cannot_listen(copy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(
            cli_run(copy, "serve", "--port", str(port)), f"cannot listen on 127.0.0.1:{port}: address already in use"
        )
    one_line_error(cli_run(copy, "serve", "--host", "999.1.1.1"), "cannot listen on 999.1.1.1:8080: ")
    one_line_error(cli_run(copy, "serve", "--host", "8.8.8.8"), "cannot listen on 8.8.8.8:8080: ")


# ------------------------------------------------------------------------------------ 4. devices


def test_devices_import_and_add_refuse_bad_input(copy, tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("name,tag,hardware_id,version\nger\u00e4t,production,intel-corei7-64,40\n".encode("latin-1"))
    one_line_error(cli_run(copy, "devices", "import", str(latin1)), "latin1.csv: not UTF-8 text")
    for version in ("99999999999999999999", "-1", "2147483648"):
        one_line_error(
            cli_run(copy, "devices", "add", "lab-1", "--version", version),
            f"--version {version} is out of range: a version is 0..2147483647",
        )
    ranges = tmp_path / "ranges.csv"
    ranges.write_text(
        "name,tag,hardware_id,version\na,production,intel-corei7-64,-1\n"
        "b,production,intel-corei7-64,2147483648\nc,production,intel-corei7-64,"
        + "9" * 5000
        + "\nd,production,intel-corei7-64,+-5\n"
    )
    result = cli_run(copy, "devices", "import", str(ranges))
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert [line.strip() for line in result.stderr.splitlines()] == [
        "error: Invalid device CSV",
        "line 2: version must be between 0 and 2147483647",
        "line 3: version must be between 0 and 2147483647",
        "line 4: version must be between 0 and 2147483647",
        "line 5: version must be an integer",
    ]
    edge = tmp_path / "edge.csv"
    edge.write_text("name,tag,hardware_id,version\nz,production,intel-corei7-64,2147483647\n")
    assert "Imported 1 device" in cli_run(copy, "devices", "import", str(edge)).output
    assert "lab-1" not in cli_run(copy, "devices", "list", "--limit", "1000").output


# ------------------------------------------------------------------------------------ 5. init


def test_init_refuses_overflowing_starts_and_bad_names(tmp_path):
    for start in ("9999-12-31T23:59:59Z", "9000-01-01T00:00:01Z", "1969-12-31T23:59:59Z"):
        one_line_error(cli_run(tmp_path / "f", "init", "--start", start), "--start", "out of range")
    for name in ("../x y", "..", "a/b", "", "x" * 101):
        one_line_error(cli_run(tmp_path / "f", "init", "--name", name), "--name", "is not a factory name")
    assert not (tmp_path / "f").exists()
    with pytest.raises(UserError, match="out of range"):
        demo.init_factory(tmp_path / "f", devices_n=0, start=store.LATEST + 1)
    with pytest.raises(UserError, match="factory name"):
        demo.init_factory(tmp_path / "f", devices_n=0, name="a b", start=T0)
    assert not (tmp_path / "f").exists()
    out = cli_run(
        tmp_path / "f", "init", "--devices", "0", "--name", "my_factory.v2-1", "--start", "8999-12-31T00:00:00Z"
    )
    assert out.exit_code == 0 and "Created factory 'my_factory.v2-1'" in out.output


# ------------------------------------------------------------------------------------ 6. durations


def test_durations_are_capped():
    assert cli.parse_duration("3650d") == 3650 * 86400
    assert cli.parse_duration("315360000") == 3650 * 86400
    for text in ("99999999999999999999w", "3651d", "3650d1s", "522w", "315360001", "9" * 5000, "1" + "0" * 30 + "s"):
        with pytest.raises(click.BadParameter, match="at most 3650d"):
            cli.parse_duration(text)


def test_advance_refuses_huge_durations_and_the_end_of_time(copy, tmp_path):
    result = cli_run(copy, "advance", "99999999999999999999w")
    assert result.exit_code == 1 and "the duration must be at most 3650d" in result.stderr
    late = tmp_path / "late"
    assert cli_run(late, "init", "--devices", "0", "--start", "8999-12-31T00:00:00Z").exit_code == 0
    one_line_error(cli_run(late, "advance", "2d"), "cannot advance past 9000-01-01T00:00:00Z")


# ------------------------------------------------------------------------------------ 7. the WSGI app


@pytest.fixture
def factory(copy):
    f = Factory(copy)
    yield f
    f.close()


def test_app_answers_a_locked_database_with_503(copy, short_busy_timeout):
    f = Factory(copy)
    holder = sqlite3.connect(copy / store.DB_NAME, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = f.http.post(f"{F}/device-groups/", json={"name": "lab", "description": "x"})
        assert r.status_code == 503 and r.json() == {"message": "the local factory is busy, try again", "errors": []}
        assert f.http.get(f"{F}/device-groups/").status_code == 200  # readers are not blocked (WAL)
    finally:
        holder.close()
        f.close()


@pytest.mark.parametrize(
    "query",
    [
        f"{F}/targets/?version=9223372036854775808",
        f"{F}/targets/?version=-1",
        f"{F}/targets/?version=2147483648",
        f"{F}/waves/?page=99999999999999999999",
        f"{F}/waves/?page=" + "9" * 5000,
        f"{F}/status/?offline-threshold=9223372036854775807",
        "/ota/devices/?factory=demo&page=9223372036854775808",
    ],
)
def test_out_of_range_integers_are_400(factory, query):
    r = factory.http.get(query)
    assert r.status_code == 400, r.text
    assert r.json()["message"]


def test_unexpected_errors_are_500_json_logged_not_printed(factory, monkeypatch, capfd, caplog):
    def boom(conn, version=None):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(targets, "ci_files", boom)
    with caplog.at_level(logging.DEBUG, logger="reconciler.localfactory.app"):
        r = factory.http.get(f"{F}/targets/")
    assert r.status_code == 500
    assert r.json() == {"message": "the local factory failed: RuntimeError: boom", "errors": []}
    assert "Traceback" not in capfd.readouterr().err
    assert any(rec.exc_info and "boom" in str(rec.exc_info[1]) for rec in caplog.records)
    assert factory.http.get(f"{F}/no-such-thing").status_code == 404  # Falcon's own errors are unchanged


# ------------------------------------------------------------------------------------ 8. build


def test_build_validates_tags_and_hardware_ids(copy):
    one_line_error(cli_run(copy, "build", "2147483647", "--tag", "bad tag"), "--tag 'bad tag' is not a tag")
    one_line_error(cli_run(copy, "build", "2147483647", "--hardware-id", ""), "--hardware-id", "is not a hardware id")
    result = cli_run(copy, "build", "2147483648")
    assert result.exit_code == 1 and "2147483648 is not in the range" in result.stderr
    out = cli_run(
        copy, "build", "2147483647", "--tag", "main", "--tag", "main", "--hardware-id", "x86", "--hardware-id", "x86"
    )
    assert out.exit_code == 0 and "Published x86-lmp-2147483647" in out.output


# ------------------------------------------------------------------------------------ 9. usage errors exit 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["advance", "garbage"], "the duration must be a duration such as"),
        (["nope"], "No such command 'nope'"),
        (["--bogus"], "No such option '--bogus'"),
        (["devices", "add"], "Missing argument 'NAME'"),
        (["devices", "list", "--limit", "0"], "Invalid value for '--limit'"),
        (["status", "--offline-threshold", "x"], "is not a valid integer"),
    ],
)
def test_usage_errors_exit_1(copy, args, message):
    result = cli_run(copy, *args)
    assert result.exit_code == 1, result.output
    # Compared without quotes and colons: click words the same error differently across the versions
    # pyproject.toml allows ("No such option: --bogus" in 8.2, "No such option '--bogus'." from 8.4).
    plain = str.maketrans("", "", "'\":")
    [line] = result.stderr.splitlines()  # one line, as every other mistake, not click's Usage block
    assert line.startswith("error: ") and message.translate(plain) in line.translate(plain), line
    assert line.endswith(" --help')"), line  # names the help to read


def test_every_command_and_group_exits_1_on_usage_errors():
    def walk(cmd):
        yield cmd
        for sub in getattr(cmd, "commands", {}).values():
            yield from walk(sub)

    for cmd in walk(cli.main):
        assert isinstance(cmd, (cli.FactoryCommand, cli.FactoryGroup)), cmd.name
