"""Local factory: rollouts (selection, limits, UUIDs, history) and the command sequence of seed 002."""

from __future__ import annotations

import pytest

from reconciler.localfactory import devices as dev
from tests.helpers.factory import F, new_factory, split_uuids


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def staged(factory, wave_name: str) -> set[str]:
    """UUIDs a wave reached (explicitly staged or in a fully rolled-out group)."""
    return {d["uuid"] for d in factory.devices(prod=1) if d["is-wave"]}


def group_of(factory) -> dict[str, str]:
    return {d["uuid"]: d["device-group"] for d in factory.devices(prod=1)}


def test_seed_002_command_sequence(factory, tmp_path):
    factory.create_wave("v2.0-update", 42)
    groups = group_of(factory)
    us_east = {u for u, g in groups.items() if g == "us-east"}

    # fioctl waves rollout v2.0-update us-east --limit=10 ; --limit=50 ; (the rest)
    r1 = factory.rollout("v2.0-update", group="us-east", limit=10, return_uuids=True)
    assert r1["device-num"] == 10 and len(set(r1["device-uuids"])) == 10
    assert set(r1["device-uuids"]) <= us_east
    r2 = factory.rollout("v2.0-update", group="us-east", limit=50, return_uuids=True)
    assert r2["device-num"] == 50 and not set(r2["device-uuids"]) & set(r1["device-uuids"])
    assert set(r2["device-uuids"]) <= us_east
    assert staged(factory, "v2.0-update") == set(r1["device-uuids"]) | set(r2["device-uuids"])  # 60 in total
    r3 = factory.rollout("v2.0-update", group="us-east", return_uuids=True)
    assert r3["device-num"] == len(us_east) - 60
    assert set(r3["device-uuids"]) == us_east - set(r1["device-uuids"]) - set(r2["device-uuids"])
    assert staged(factory, "v2.0-update") == us_east

    # fioctl waves rollout v2.0-update --limit=5  (factory-wide, across groups, never us-east again)
    r4 = factory.rollout("v2.0-update", limit=5, return_uuids=True, return_names=True)
    assert r4["device-num"] == 5 and len(r4["device-names"]) == 5
    assert not set(r4["device-uuids"]) & us_east

    # --dry-run --print-uuids: a list, nothing staged, no history; the real call picks the same devices
    before = staged(factory, "v2.0-update")
    dry = factory.rollout("v2.0-update", limit=5, dry_run=True, return_uuids=True)
    assert dry["device-num"] == 5 and len(dry["device-uuids"]) == 5
    assert staged(factory, "v2.0-update") == before and len(dry["rollout-history"]) == 4
    real = factory.rollout("v2.0-update", limit=5, return_uuids=True)
    assert real["device-uuids"] == dry["device-uuids"]

    # --uuids @file with mixed separators
    others = sorted(u for u, g in groups.items() if g == "eu-emea" and u not in staged(factory, "v2.0-update"))[:7]
    lst = tmp_path / "canary-devices.lst"
    lst.write_text(f"{others[0]},{others[1]};{others[2]}|{others[3]}\n{others[4]}\t{others[5]}  \r\n{others[6]}\n")
    r6 = factory.rollout("v2.0-update", uuids=split_uuids(lst.read_text()), return_uuids=True)
    assert r6["device-num"] == 7 and set(r6["device-uuids"]) == set(others)

    history = factory.wave("v2.0-update")["rollout-history"]
    assert [(h["group-name"], h["is-full-group"], h["is-factory-wide"], h["num-devices"]) for h in history] == [
        ("us-east", False, False, 10),
        ("us-east", False, False, 50),
        ("us-east", True, False, len(us_east) - 60),
        ("", False, True, 5),
        ("", False, True, 5),
        ("", False, True, 7),
    ]
    assert list(factory.wave("v2.0-update")["rollout-groups"]) == ["us-east"]

    # updates happen, then cancel: updated devices keep the version, nobody else gets it
    factory.advance(3600)
    updated = {d["uuid"] for d in factory.devices(prod=1) if d["version"] == 42}
    assert updated and updated <= staged(factory, "v2.0-update")
    factory.ok(factory.http.post(f"{F}/waves/v2.0-update/cancel/"))
    factory.advance(2 * 86400)
    after = {d["uuid"]: d["version"] for d in factory.devices(prod=1)}
    assert {u for u, v in after.items() if v == 42} == updated
    assert set(after.values()) == {40, 42}

    # a new wave, completed: every production device (that is online) moves to it
    factory.create_wave("v2.1-update", 43)
    factory.ok(factory.http.post(f"{F}/waves/v2.1-update/complete/"))
    factory.advance(3 * 86400)
    versions = [d["version"] for d in factory.devices(prod=1)]
    assert versions.count(43) >= 0.95 * len(versions) and set(versions) <= {40, 42, 43}


def test_one_history_entry_per_call_even_when_nobody_is_left(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="canary")
    again = factory.rollout("v42", group="canary")
    assert again["device-num"] == 0
    limited = factory.rollout("v42", group="canary", limit=3)
    assert limited["device-num"] == 0
    assert [h["num-devices"] for h in limited["rollout-history"]] == [10, 0, 0]


def test_limit_and_uuid_count_are_bounded_at_10000(factory):
    factory.create_wave("v42", 42)
    r = factory.rollout("v42", expect=400, limit=10001)
    assert "between 1 and 10,000" in r["errors"][0]
    fake = [f"00000000-0000-4000-8000-{i:012d}" for i in range(10001)]
    r = factory.rollout("v42", expect=400, uuids=fake)
    assert "at most 10,000" in r["errors"][0]
    assert factory.rollout("v42", limit=10000)["device-num"] == 400  # the whole fleet is smaller


def test_options_are_validated(factory):
    factory.create_wave("v42", 42)
    assert "complete the wave" in factory.rollout("v42", expect=400)["message"]
    assert factory.rollout("v42", expect=400, limit=5, percentage=5)["errors"]
    assert factory.rollout("v42", expect=400, percentage=101)["errors"]
    assert factory.rollout("v42", expect=400, limit="5")["errors"]
    assert factory.rollout("v42", expect=400, uuids="abc")["errors"]
    assert factory.rollout("v42", expect=404, group="nope")["message"] == "Device group nope not found"
    assert factory.rollout("v42x", expect=404, group="canary")["message"] == "Wave v42x not found"


def test_uuids_must_be_production_devices_on_the_wave_tag_and_group(factory):
    factory.create_wave("v42", 42)
    with factory.embedded.store.write() as conn:
        dev.add_devices(conn, [dev.NewDevice("other-tag", "", "beta-fleet", "intel-corei7-64", 40, True, "canary")])
    everyone = {d["name"]: d for d in factory.devices()}
    ci = everyone["ci-0000"]["uuid"]
    other_tag = everyone["other-tag"]["uuid"]
    beta = everyone["demo-000010"]["uuid"]
    canary = everyone["demo-000001"]["uuid"]
    unknown = "11111111-2222-4333-8444-555555555555"
    r = factory.rollout("v42", expect=400, group="canary", uuids=[canary, ci, other_tag, beta, unknown])
    assert r["message"].startswith("4 UUID(s) are not production devices with tag production in group canary")
    for u in (ci, other_tag, beta, unknown):
        assert u in r["message"]
    assert [e.split(":")[0] for e in r["errors"]] == [ci, other_tag, beta, unknown]
    assert "not a production device" in r["errors"][0] and "no such device" in r["errors"][3]
    assert factory.wave("v42")["rollout-history"] == []  # nothing happened
    ok = factory.rollout("v42", group="canary", uuids=[canary], return_names=True)
    assert ok["device-names"] == ["demo-000001"]


def test_selection_excludes_staged_and_updated_devices(factory):
    factory.create_wave("v42", 42)
    first = factory.rollout("v42", group="eu-emea", limit=30, return_uuids=True)["device-uuids"]
    factory.advance(3600)  # most of them update to 42
    on_42 = {d["uuid"] for d in factory.devices(group="eu-emea") if d["version"] == 42}
    assert on_42 and on_42 <= set(first)
    second = factory.rollout("v42", group="eu-emea", limit=1000, return_uuids=True)["device-uuids"]
    assert not set(second) & set(first)
    assert len(second) == sum(1 for d in factory.devices(group="eu-emea")) - 30
    # a UUID list naming already staged devices only adds the new ones
    assert factory.rollout("v42", group="eu-emea", uuids=first[:5])["device-num"] == 0


def test_selection_prefers_online_devices(factory):
    factory.create_wave("v42", 42)
    rows = factory.devices(group="us-east")
    offline = {d["uuid"] for d in rows if d["last-seen"] < "2026-01-05T11"}
    assert offline  # the demo fleet has some devices that did not check in today
    picked = factory.rollout("v42", group="us-east", limit=len(rows) - len(offline), return_uuids=True)
    assert not set(picked["device-uuids"]) & offline
    rest = factory.rollout("v42", group="us-east", limit=len(offline), return_uuids=True)
    assert set(rest["device-uuids"]) == offline


def test_selection_is_pseudo_random_across_waves(factory):
    factory.create_wave("v42", 42)
    a = factory.rollout("v42", group="us-east", limit=10, dry_run=True, return_uuids=True)["device-uuids"]
    factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))
    factory.create_wave("v43", 43)
    b = factory.rollout("v43", group="us-east", limit=10, dry_run=True, return_uuids=True)["device-uuids"]
    assert a != b
    names = sorted(d["name"] for d in factory.devices(group="us-east"))
    chosen = sorted(d["name"] for d in factory.devices(group="us-east") if d["uuid"] in a)
    assert chosen != names[:10]  # not simply the first ten by name


def test_percentage_is_of_matching_devices_rounded_up(factory):
    factory.create_wave("v42", 42)
    size = len(factory.devices(group="us-west"))
    r = factory.rollout("v42", group="us-west", percentage=3)
    assert r["device-num"] == -(-3 * size // 100)
    total = len(factory.devices(prod=1))
    r = factory.rollout("v42", percentage=1)
    assert r["device-num"] == -(-total // 100)
    uuids = [d["uuid"] for d in factory.devices(group="apac")][:9]
    assert factory.rollout("v42", uuids=uuids, percentage=50)["device-num"] == 5


def test_uuids_with_limit_pick_from_the_list(factory):
    factory.create_wave("v42", 42)
    uuids = [d["uuid"] for d in factory.devices(group="eu-emea")][:40]
    r = factory.rollout("v42", group="eu-emea", uuids=uuids, limit=10, return_uuids=True)
    assert r["device-num"] == 10 and set(r["device-uuids"]) <= set(uuids)
    r = factory.rollout("v42", group="eu-emea", uuids=uuids, limit=100, return_uuids=True)
    assert r["device-num"] == 30


def test_full_group_rollout_covers_devices_that_join_later(factory):
    factory.create_wave("v42", 42)
    factory.rollout("v42", group="apac")
    with factory.embedded.store.write() as conn:
        dev.add_devices(
            conn,
            [
                dev.NewDevice("late-joiner", "", "production", "raspberrypi4-64", 40, True, "apac"),
                dev.NewDevice("elsewhere", "", "production", "raspberrypi4-64", 40, True, "us-west"),
            ],
        )
    late = factory.ok(factory.http.get("/ota/devices/late-joiner/", params={"factory": "demo"}))
    assert late["is-wave"] is True and late["group"]["name"] == "apac"
    assert factory.ok(factory.http.get("/ota/devices/elsewhere/", params={"factory": "demo"}))["is-wave"] is False
    status = factory.status("v42")
    apac = status["rollout-groups"][0]
    assert apac["name"] == "apac" and apac["devices-scheduled-for-update"] == apac["devices-total"]
    # an existing device moved into the group joins too (fioctl devices config group)
    mover = factory.devices(group="us-west")[0]["name"]
    moved = factory.ok(factory.http.patch(f"/ota/devices/{mover}/", params={"factory": "demo"}, json={"group": "apac"}))
    assert moved["is-wave"] is True and moved["device-group"] == "apac"
    assert (
        factory.http.patch(f"/ota/devices/{mover}/", params={"factory": "demo"}, json={"group": "nope"}).status_code
        == 404
    )
    factory.advance(86400)
    assert factory.ok(factory.http.get("/ota/devices/late-joiner/", params={"factory": "demo"}))["version"] == 42
    assert factory.ok(factory.http.get(f"/ota/devices/{mover}/", params={"factory": "demo"}))["version"] == 42
    assert factory.ok(factory.http.get("/ota/devices/elsewhere/", params={"factory": "demo"}))["version"] == 40


def test_large_results_omit_device_lists(factory):
    factory.create_wave("v42", 42)
    r = factory.rollout("v42", limit=10000, dry_run=True, return_uuids=True, return_names=True)
    assert r["device-num"] == 400 and len(r["device-uuids"]) == 400 == len(r["device-names"])
    r = factory.rollout("v42", limit=10, dry_run=True)
    assert r["device-uuids"] == [] and r["device-names"] == []


def test_rollout_invariants_hold_for_any_sequence(tmp_path_factory):
    """Whatever rollouts are asked for: every call adds one history entry, picks never overlap, never
    exceed the limit, only reach production devices of the tag (and group), and count what they add."""
    import shutil
    import uuid as uuidlib

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.helpers.factory import Factory, make_template

    groups = [None, "canary", "beta", "us-east", "apac"]
    option = st.fixed_dictionaries(
        {
            "group": st.sampled_from(groups),
            "limit": st.one_of(st.none(), st.integers(1, 60)),
            "percentage": st.one_of(st.none(), st.integers(1, 30)),
            "uuid_share": st.one_of(st.none(), st.integers(1, 40)),
        }
    )
    template = make_template(tmp_path_factory)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(option, min_size=1, max_size=5))
    def check(calls):
        path = tmp_path_factory.mktemp("hyp") / "f"
        shutil.copytree(template, path)
        f = Factory(path)
        try:
            f.create_wave("w", 42)
            info = {d["uuid"]: d for d in f.devices(prod=1)}
            reached: set[str] = set()
            full: set[str] = set()
            calls_made = 0
            for call in calls:
                opts = {"return_uuids": True}
                if call["group"]:
                    opts["group"] = call["group"]
                if call["limit"] is not None:
                    opts["limit"] = call["limit"]
                elif call["percentage"] is not None:
                    opts["percentage"] = call["percentage"]
                pool = [u for u, d in info.items() if not call["group"] or d["device-group"] == call["group"]]
                if call["uuid_share"] is not None:
                    opts["uuids"] = sorted(pool, key=lambda u: uuidlib.UUID(u).int)[: call["uuid_share"]]
                if len(opts) == 1:
                    f.rollout("w", expect=400)
                    continue
                r = f.rollout("w", **opts)
                calls_made += 1
                got = set(r["device-uuids"])
                assert len(r["rollout-history"]) == calls_made
                assert len(got) == r["device-num"] and not got & reached and not got & full
                assert got <= set(pool) and all(info[u]["is-prod"] for u in got)
                if "limit" in opts:
                    assert len(got) <= opts["limit"]
                if "uuids" in opts:
                    assert got <= set(opts["uuids"])
                is_full = call["group"] and len(opts) == 2
                if is_full:
                    full |= {u for u, d in info.items() if d["device-group"] == call["group"]}
                reached |= got
            assert {d["uuid"] for d in f.devices(prod=1) if d["is-wave"]} == reached | full
        finally:
            f.close()

    check()
