"""``reconcile-factory serve --clock real --speed N`` (issue 11, item 6): served over real HTTP, the
``Date`` header, the fleet and wave expiry follow wall time sped up; ``advance`` still jumps ahead."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies

from reconciler.localfactory import cli, clock, open_embedded, store
from tests.helpers.factory import F, Factory
from tests.helpers.serving import serve_factory

REPO = Path(__file__).resolve().parents[2]
START = "2026-01-05T12:00:00Z"
SPEED = 3600


def run(path: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli.main, ["--local", str(path), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def made(tmp_path) -> Path:
    path = tmp_path / "factory"
    run(path, "init", "--demo", "--devices", "200", "--seed", "5", "--start", START)
    return path


@pytest.fixture
def served_real(made):
    token = run(made, "token", "--name", "ci-bot").output.strip()
    with (
        serve_factory(made, "--clock", "real", "--speed", str(SPEED)) as url,
        httpx.Client(base_url=url, headers={"OSF-TOKEN": token}, timeout=30) as http,
    ):
        yield made, http


def date_of(http: httpx.Client) -> int:
    r = http.get(f"{F}/waves/")
    assert r.status_code == 200, r.text
    return int(parsedate_to_datetime(r.headers["date"]).timestamp())


def test_real_clock_moves_date_and_fleet_with_wall_time(served_real):
    path, http = served_real
    first = date_of(http)
    time.sleep(1.0)
    second = date_of(http)
    assert 0.5 * SPEED <= second - first <= 2 * SPEED, second - first  # about one simulated hour

    f = Factory(path, http=http)
    try:
        expires = store.to_datetime(first + 6 * 3600)  # six simulated hours: six wall seconds
        f.create_wave("live-42", 42, expires=expires)
        f.rollout("live-42", group="canary")
        deadline = time.monotonic() + 20
        while True:  # devices check in every 5 simulated minutes: within a wall second or two
            versions = [d["version"] for d in f.devices(group="canary")]
            if sum(v == 42 for v in versions) >= 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(v == 42 for v in versions) >= 8, versions
        seen = f.ok(http.get("/ota/devices/demo-000001/", params={"factory": "demo"}))["last-seen"]
        assert store.parse_time(seen) > first + SPEED

        deadline = time.monotonic() + 20  # the wave's targets expire while the server runs
        while date_of(http) <= int(expires.timestamp()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f.rollout("live-42", expect=409, group="beta")["message"].startswith(
            "Cannot roll out wave live-42: its targets expired at "
        )
        assert http.post(f"{F}/waves/live-42/complete/").status_code == 409

        before = date_of(http)
        run(path, "advance", "1d")  # adds to the offset: a day ahead, and the clock runs on
        after = date_of(http)
        assert after >= before + 86400
        time.sleep(0.5)
        assert date_of(http) > after
    finally:
        f.close()


def test_speed_needs_the_real_clock(made):
    result = run(made, "serve", "--speed", "60", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --speed needs --clock real: the simulated clock moves only with `advance`"
    ]
    result = run(made, "serve", "--clock", "real", "--speed", "0", ok=False)
    assert result.exit_code == 1 and "--speed" in result.output


def test_ticks_carry_fractions_and_stop_at_the_end_of_time(made):
    wall = [100.0]
    embedded = open_embedded(made)
    try:
        real = clock.RealClock(embedded.store, 0.5, wall=lambda: wall[0])
        with embedded.store.read() as conn:
            start = store.now(conn)
        for _ in range(5):
            wall[0] += 1.0
            real.tick()
        with embedded.store.read() as conn:
            assert store.now(conn) == start + 2  # 2.5 simulated seconds: 2 moved, 0.5 carried
        wall[0] += 1.0
        assert real.tick() == 1
        with embedded.store.write() as conn:
            store.set_meta(conn, "now", store.LATEST - 10)
        fast = clock.RealClock(embedded.store, 1000, wall=lambda: wall[0])
        wall[0] += 1.0
        assert fast.tick() == 10
        with embedded.store.read() as conn:
            assert store.now(conn) == store.LATEST
    finally:
        embedded.store.close()


@given(ts=strategies.integers(min_value=-62135596800, max_value=store.LATEST + 20 * 366 * 86400))
def test_time_formats_match_datetime(ts: int) -> None:
    """``iso`` and ``device_time`` format with ``time.gmtime`` (faster); they write what datetime writes,
    from year 1 to past the simulated clock's last instant plus the longest TUF expiry (datetime's %Y does
    not pad a year before 1000; RFC 3339 wants four digits, which the formats write)."""
    moment = datetime.fromtimestamp(ts, UTC)
    assert store.iso(ts) == moment.strftime("%Y-%m-%dT%H:%M:%SZ").rjust(20, "0")
    assert store.device_time(ts) == moment.strftime("%Y-%m-%dT%H:%M:%S+00:00").rjust(25, "0")
    assert store.parse_time(store.iso(ts)) == ts
    assert store.iso(None) == store.device_time(None) == ""
