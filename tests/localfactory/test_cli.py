"""``reconcile-factory``: the commands in-process (click), and a suite against ``serve`` over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli
from tests.helpers.factory import F, Factory
from tests.helpers.serving import serve_factory

REPO = Path(__file__).resolve().parents[2]
START = "2026-01-05T12:00:00Z"


def run(path: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli.main, ["--local", str(path), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def made(tmp_path) -> Path:
    path = tmp_path / "factory"
    run(path, "init", "--demo", "--devices", "100", "--seed", "3", "--start", START)
    return path


def test_init_and_refuse_twice(tmp_path):
    path = tmp_path / "f"
    out = run(path, "init", "--demo", "--devices", "100", "--start", START).output
    assert "Created factory 'demo'" in out and "100 production and 5 CI devices" in out
    assert str(path / "targets.only.key.tgz") in out
    again = run(path, "init", "--demo", ok=False)
    assert again.exit_code == 1 and "already exists" in again.output
    bad = run(tmp_path / "g", "init", "--start", "yesterday", ok=False)
    assert bad.exit_code == 1 and "RFC 3339" in bad.output  # usage errors exit 1, not 2


def test_local_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILE_LOCAL", str(tmp_path / "env-factory"))
    result = CliRunner().invoke(cli.main, ["init", "--demo", "--devices", "10", "--start", START])
    assert result.exit_code == 0 and (tmp_path / "env-factory" / "factory.db").exists()


def test_commands_need_a_factory(tmp_path):
    result = run(tmp_path / "none", "status", ok=False)
    assert result.exit_code == 1 and "reconcile-factory init --demo" in result.output


@pytest.mark.parametrize(
    "text,seconds", [("1h", 3600), ("1d12h", 129600), ("90m", 5400), ("2w", 1209600), ("45s", 45), ("30", 30)]
)
def test_durations(text, seconds):
    assert cli.parse_duration(text) == seconds


def test_advance_and_status(made):
    out = run(made, "advance", "1d12h").output
    assert out.startswith("Now 2026-01-07T00:00:00Z:")
    status = run(made, "status").output
    assert "Simulated time: 2026-01-07T00:00:00Z" in status and "Devices: 105" in status
    assert "Production targets: tag production at version 40" in status and "No active wave" in status
    assert run(made, "advance", "soon", ok=False).exit_code == 1


def test_devices_add_import_list(made, tmp_path):
    out = run(made, "devices", "add", "lab-1", "--group", "canary", "--version", "41").output
    assert out.startswith("Added lab-1 (")
    assert "no device group nope" in run(made, "devices", "add", "lab-2", "--group", "nope", ok=False).output
    assert "already exists" in run(made, "devices", "add", "lab-1", ok=False).output
    csv = tmp_path / "devices.csv"
    csv.write_text(
        "name,uuid,group,tag,production,hardware_id,version\n"
        "imp-1,,us-east,production,true,intel-corei7-64,40\n"
        "imp-2,6a2b0c3e-1111-4222-8333-444455556666,,main,false,raspberrypi4-64,60\n"
    )
    assert "Imported 2 devices" in run(made, "devices", "import", str(csv)).output
    bad = tmp_path / "bad.csv"
    bad.write_text("name,tag,hardware_id,version\nx,production,intel-corei7-64,forty\n")
    result = run(made, "devices", "import", str(bad), ok=False)
    assert result.exit_code == 1 and "line 2: version must be an integer" in result.output
    assert "Moved imp-1 to canary" in run(made, "devices", "move", "imp-1", "canary").output
    assert "Moved imp-1 to no group" in run(made, "devices", "move", "imp-1").output
    run(made, "devices", "move", "imp-1", "canary")
    listing = run(made, "devices", "list", "--group", "canary").output
    assert "lab-1" in listing and "intel-corei7-64-lmp-41" in listing and "(12 of 12; page 1)" in listing
    ci = run(made, "devices", "list", "--ci", "--limit", "10").output
    assert "imp-2" in ci and "6a2b0c3e-1111-4222-8333-444455556666" in ci


def test_token_is_printed_once_and_stored_hashed(made):
    token = run(made, "token", "--name", "alice").output.strip()
    assert token.startswith("lf_") and len(token) > 40
    db = (
        (made / "factory.db").read_bytes() + (made / "factory.db-wal").read_bytes()
        if (made / "factory.db-wal").exists()
        else (made / "factory.db").read_bytes()
    )
    assert token.encode() not in db


def test_build_publishes_a_ci_build(made):
    assert "intel-corei7-64-lmp-61" in run(made, "build", "61").output
    assert run(made, "build", "61", ok=False).exit_code == 1


# ------------------------------------------------------------------------------------ served over HTTP


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "factory"
    run(path, "init", "--demo", "--devices", "200", "--seed", "5", "--start", START)
    token = run(path, "token", "--name", "ci-bot").output.strip()
    with serve_factory(path) as url:
        yield path, url, token


def test_served_requests_need_a_token(served):
    _, url, token = served
    with httpx.Client(base_url=url, timeout=10) as anon:
        r = anon.get(f"{F}/waves/")
        assert r.status_code == 401 and r.json()["message"].startswith("Authentication required")
        assert r.json()["errors"] == []
        assert anon.get(f"{F}/waves/", headers={"OSF-TOKEN": "lf_wrong"}).status_code == 401
        assert anon.get("/ota/devices/", headers={"OSF-TOKEN": token}).status_code == 200
        assert anon.get(f"{F}/waves/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        import base64

        b64 = base64.b64encode(token.encode()).decode()  # fioctl's OAuth mode base64-encodes again
        assert anon.get(f"{F}/waves/", headers={"Authorization": f"Bearer {b64}"}).status_code == 200


def test_served_wave_lifecycle(served):
    path, url, token = served
    http = httpx.Client(base_url=url, headers={"OSF-TOKEN": token}, timeout=30)
    f = Factory(path, http=http)
    try:
        assert http.get(f"{F}/waves/").headers["date"] == "Mon, 05 Jan 2026 12:00:00 GMT"
        wave = f.create_wave("served-42", 42)
        assert wave["change-meta"]["created-by"] == "ci-bot"
        dry = f.rollout("served-42", group="us-east", limit=10, dry_run=True, return_uuids=True)
        real = f.rollout("served-42", group="us-east", limit=10, return_uuids=True)
        assert dry["device-uuids"] == real["device-uuids"] and real["rollout-history"][0]["rollout-by"] == "ci-bot"
        assert f.rollout("served-42", expect=400, limit=20000)["errors"]
        run(path, "advance", "2h")  # another process moves time while the server runs
        assert http.get(f"{F}/waves/").headers["date"] == "Mon, 05 Jan 2026 14:00:00 GMT"
        status = f.status("$active$")
        (us_east,) = status["rollout-groups"]
        assert status["updated-devices"] + status["scheduled-devices"] == us_east["devices-total"]
        assert status["updated-devices"] >= 8
        assert f.ok(http.post(f"{F}/waves/served-42/complete/"))["status"] == "complete"
        prod = f.ok(http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
        assert prod["signed"]["version"] == 42
    finally:
        f.close()
