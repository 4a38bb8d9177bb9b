"""Local factory: bad builds (``build N --failure-rate``) and the update events fioctl's
``devices updates show`` reads (``GET /ota/devices/{name}/updates/{correlation-id}/``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli, fleet
from tests.helpers.factory import new_factory


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def build(factory, *args: str):
    factory.embedded.store.close()  # the command opens the store itself
    return CliRunner().invoke(cli.main, ["--local", str(factory.path), "build", *args])


def failed_devices(factory, version: int) -> set[str]:
    return {
        name
        for (name,) in factory.sql(
            "SELECT DISTINCT d.name FROM update_events e JOIN devices d "
            "ON d.id = e.device_id WHERE e.ok = 0 AND e.to_version = ?",
            (version,),
        )
    }


def roll_out_42(factory, days: int) -> dict:
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="eu-emea")
    factory.rollout("v42", group="us-east")
    with factory.embedded.store.write() as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'install_failure_bp'")  # only the bad build fails
    return factory.advance(days * 86400)


def test_a_bad_build_fails_on_its_share_of_devices_every_attempt(factory):
    result = build(factory, "42", "--failure-rate", "30%")
    assert result.exit_code == 0, result.output
    assert "Installs of build 42 fail on 30% of devices" in result.output
    stats = roll_out_42(factory, 1)
    first = failed_devices(factory, 42)
    reached = stats["updated"] + len(first)
    assert 0.2 * reached < len(first) < 0.4 * reached
    on_42 = {name for (name,) in factory.sql("SELECT name FROM devices WHERE version = 42")}
    assert not first & on_42  # a failed device stays on its old version
    factory.advance(2 * 86400)
    assert failed_devices(factory, 42) == first  # the same devices, retried daily, fail again
    assert factory.sql("SELECT count(*) FROM update_events WHERE ok = 0")[0][0] >= 2 * len(first)


def test_without_a_failure_rate_nothing_fails(factory):
    roll_out_42(factory, 1)
    assert failed_devices(factory, 42) == set()


def test_the_failed_devices_come_from_the_seed(factory, tmp_path_factory, tmp_path):
    build(factory, "42", "--failure-rate", "30%")
    roll_out_42(factory, 1)
    twin_gen = new_factory(tmp_path_factory, tmp_path / "twin")
    twin = next(twin_gen)
    try:
        build(twin, "42", "--failure-rate", "30%")
        roll_out_42(twin, 1)
        assert failed_devices(twin, 42) == failed_devices(factory, 42)
    finally:
        twin_gen.close()


def test_update_events_have_fioctls_shape(factory):
    build(factory, "42", "--failure-rate", "100%")
    roll_out_42(factory, 1)
    name = sorted(failed_devices(factory, 42))[0]
    updates = factory.ok(factory.http.get(f"/ota/devices/{name}/updates/", params={"factory": "demo"}))["updates"]
    newest = updates[0]
    events = factory.ok(
        factory.http.get(f"/ota/devices/{name}/updates/{newest['correlation-id']}/", params={"factory": "demo"})
    )
    assert [e["eventType"]["id"] for e in events] == [
        "EcuDownloadStarted",
        "EcuDownloadCompleted",
        "EcuInstallationStarted",
        "EcuInstallationCompleted",
    ]
    assert all(set(e) == {"deviceTime", "eventType", "event"} for e in events)
    assert all(e["event"]["version"] == "42" and e["event"]["targetName"] == newest["target"] for e in events)
    assert "success" not in events[0]["event"] and events[-1]["event"]["success"] is False
    assert events[-1]["event"]["details"]
    missing = factory.http.get(f"/ota/devices/{name}/updates/nosuch/", params={"factory": "demo"})
    assert missing.status_code == 404
    other = sorted(failed_devices(factory, 42))[1]
    stolen = factory.http.get(f"/ota/devices/{other}/updates/{newest['correlation-id']}/", params={"factory": "demo"})
    assert stolen.status_code == 404  # a correlation id belongs to one device


def test_build_failure_rate_options(factory):
    assert build(factory, "61", "--failure-rate", "2.5%").exit_code == 0
    with factory.embedded.store.read() as conn:
        assert fleet.build_failure(conn, 61) == 250 and fleet.build_failure(conn, 60) == 0
    again = build(factory, "61")
    assert again.exit_code == 1 and "CI build 61 already exists" in again.output
    for bad in ("101%", "-1%", "lots"):
        result = build(factory, "62", "--failure-rate", bad)
        assert result.exit_code == 1 and "--failure-rate" in result.output
