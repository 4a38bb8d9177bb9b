"""``reconcile devices``: UUID files from the fleet, through the real CLI, in-process and over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.localfactory.cli import main as factory_main
from reconciler.manifest._uuids import parse_file
from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, init_demo_factory, reconcile
from tests.helpers.serving import HoldingFront, Request, serve_factory

REPO = Path(__file__).resolve().parents[1]


def uuids_of(out: str) -> tuple[str, ...]:
    """The output read exactly as a manifest's UUID file is read: it must be valid as it stands."""
    uuids, problems = parse_file(out.encode(), "canary.lst")
    assert problems == [], problems
    return uuids


def group_members(factory_dir: Path, group: str) -> set[str]:
    with api(factory_dir) as client:
        data = client.get("/ota/devices/", params={"factory": "demo", "group": group, "limit": 1000}).json()
    return {d["uuid"] for d in data["devices"]}


def test_a_group_limit_is_a_valid_uuid_file_with_its_recipe_on_stderr(factory_dir):
    code, out, err = reconcile(
        "devices", "--local", str(factory_dir), "--tag", "production", "--group", "canary", "--limit", "5"
    )
    assert code == 0, err
    uuids = uuids_of(out)
    assert len(uuids) == 5 and list(uuids) == sorted(uuids)
    assert set(uuids) <= group_members(factory_dir, "canary")
    assert out == "".join(f"{u}\n" for u in uuids)  # nothing but the UUIDs on stdout
    assert "5 device UUIDs: the most recently seen of" in err
    assert "Made with: reconcile devices --tag production --group canary --limit 5" in err
    assert "From: factory demo (local:" in err and "at 2026-11-01T08:00:00Z" in err
    again = reconcile(
        "devices", "--local", str(factory_dir), "--tag", "production", "--group", "canary", "--limit", "5"
    )
    assert again[1] == out


def test_a_sample_is_reproducible_with_its_printed_seed(factory_dir):
    base = ("devices", "--local", str(factory_dir), "--tag", "production", "--sample", "20")
    code, out, err = reconcile(*base)
    assert code == 0, err
    seed = err.split("--seed ")[1].split()[0]
    assert reconcile(*base, "--seed", seed)[1] == out
    other = reconcile(*base, "--seed", str(int(seed) + 1))[1]
    assert len(uuids_of(other)) == 20 and other != out


def test_below_and_seen_within_filter_on_documented_fields(factory_dir, release_repo):
    local = ("--local", str(factory_dir))
    canary = group_members(factory_dir, "canary")
    # The demo fleet runs build 40: nothing is below 40, everything is below 41.
    code, out, err = reconcile("devices", *local, "--tag", "production", "--group", "canary", "--below", "40")
    assert (
        code == 1
        and out == ""
        and err.strip().splitlines()
        == [
            "error: no production devices with tag production in group canary, on a build below 40 in factory demo; "
            "nothing written"
        ]
    )
    assert (
        set(uuids_of(reconcile("devices", *local, "--tag", "production", "--group", "canary", "--below", "41")[1]))
        == canary
    )
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46 to the canaries")
    assert reconcile(str(release_repo), *local)[0] == 0
    advance(factory_dir, "24h")  # most canaries update to 46; the rest are still to do, staged by the wave
    code, out, err = reconcile("devices", *local, "--tag", "production", "--group", "canary", "--below", "46")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "other than " in err and " the tag's active wave has staged already (is-wave; --include-staged" in err
    code, out, err = reconcile(
        "devices", *local, "--tag", "production", "--group", "canary", "--below", "46", "--include-staged"
    )
    behind = set(uuids_of(out))
    assert code == 0 and 0 < len(behind) < len(canary) and behind < canary
    assert "Made with: reconcile devices --tag production --group canary --below 46 --include-staged" in err
    assert "on a build below 46, staged by the tag's active wave or not" in err
    seen = uuids_of(reconcile("devices", *local, "--tag", "production", "--seen-within", "1h")[1])
    everyone = uuids_of(reconcile("devices", *local, "--tag", "production")[1])
    assert 0 < len(seen) < len(everyone)


def test_a_generated_file_is_used_in_a_phase(factory_dir, release_repo):
    local = ("--local", str(factory_dir))
    code, out, err = reconcile("devices", *local, "--tag", "production", "--group", "us-east", "--limit", "7")
    assert code == 0, err
    (release_repo / "uuids").mkdir()
    wave = CANARY_WAVE + "  - name: us-east-pilots\n    uuids: uuids/us-east-pilots.lst\n"
    commit(release_repo, {"uuids/us-east-pilots.lst": out, "rel-46.yaml": wave}, "Pilots from the fleet")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "phase 'us-east-pilots' (factory-wide, 7 uuids): rolled out to 7 devices" in err, err


def in_wave(factory_dir: Path, group: str) -> set[str]:
    with api(factory_dir) as client:
        data = client.get("/ota/devices/", params={"factory": "demo", "group": group, "limit": 1000}).json()
    return {d["uuid"] for d in data["devices"] if d["is-wave"]}


def test_the_pilot_recipe_leaves_out_devices_the_active_wave_staged(factory_dir, release_repo):
    """Issue 23.4: a pilot list made while the wave is active picked the devices it had staged, and the new
    phase then rolled out to 0 devices."""
    local = ("--local", str(factory_dir))
    limited = CANARY_WAVE.replace("  - name: canary\n    group: canary\n", "  - name: us-east-5\n    group: us-east\n")
    limited += "    limit: 5\n"
    commit(release_repo, {"rel-46.yaml": limited}, "Release 46 to five us-east devices")
    assert reconcile(str(release_repo), *local)[0] == 0
    staged = in_wave(factory_dir, "us-east")
    assert len(staged) == 5
    below = ("devices", *local, "--tag", "production", "--group", "us-east", "--below", "46")
    code, out, err = reconcile(*below)
    assert code == 0, err
    assert set(uuids_of(out)) == group_members(factory_dir, "us-east") - staged  # the demo fleet runs build 40
    assert "Left out: 5 devices the tag's active wave has staged already (is-wave; --include-staged keeps them)" in err
    code, out, err = reconcile(*below, "--include-staged")
    assert code == 0 and set(uuids_of(out)) == group_members(factory_dir, "us-east") and "Left out" not in err
    code, out, err = reconcile(*below, "--limit", "5")
    chosen = set(uuids_of(out))
    assert code == 0 and len(chosen) == 5 and not chosen & staged, err
    (release_repo / "uuids").mkdir()
    wave = limited + "  - name: us-east-pilots\n    group: us-east\n    uuids: uuids/us-east-pilots.lst\n"
    commit(release_repo, {"uuids/us-east-pilots.lst": out, "rel-46.yaml": wave}, "Pilots from the fleet")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "phase 'us-east-pilots' (group us-east, 5 uuids): rolled out to 5 devices" in err, err
    assert in_wave(factory_dir, "us-east") == staged | chosen


@pytest.mark.parametrize(
    "args,message",
    [
        (("--group", "nosuch"), "error: no device group 'nosuch' in factory demo"),
        (
            ("--limit", "5", "--sample", "5"),
            "error: --limit takes the most recently seen devices, --sample a random set",
        ),
        (("--seed", "3"), "error: --seed makes --sample reproducible; it needs --sample N"),
        (("--seen-within", "yesterday"), "error: --seen-within must be a duration"),
        (("--limit", "400001"), "Invalid value for '--limit'"),
        (("--sample", "400001"), "Invalid value for '--sample'"),
    ],
)
def test_mistakes_are_one_line_and_exit_1(factory_dir, args, message):
    code, out, err = reconcile("devices", "--local", str(factory_dir), "--tag", "production", *args)
    assert code == 1 and out == ""
    assert message in err and "Traceback" not in err
    if message.startswith("error:"):
        assert len(err.strip().splitlines()) == 1


def test_a_file_for_a_phase_of_more_than_one_rollout(tmp_path):
    """A phase takes more than the 10,000 UUIDs of one rollout (it is rolled out in parts), so a file may too."""
    factory_dir = init_demo_factory(tmp_path / "big", devices=10_400)
    code, out, err = reconcile("devices", "--local", str(factory_dir), "--tag", "production")
    assert code == 0, err
    assert len(uuids_of(out)) == 10_400
    assert "10,400 device UUIDs: every matching device" in err


@pytest.mark.slow
def test_more_than_a_uuid_file_holds_says_how_to_split(tmp_path):
    factory_dir = init_demo_factory(tmp_path / "huge", devices=400_100)
    code, out, err = reconcile("devices", "--local", str(factory_dir), "--tag", "production")
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(
        "error: 400,100 production devices with tag production: a UUID file holds at most 400,000 (one phase)"
    )
    assert "by group: --group " in line and "in no group; or take --limit N or --sample N" in line
    code, out, _ = reconcile("devices", "--local", str(factory_dir), "--tag", "production", "--group", "us-east")
    assert code == 0 and 10_000 < len(uuids_of(out)) < 400_000


# ------------------------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The local factory served over real HTTP (1,500 devices: the list takes two pages of 1,000)."""
    path = tmp_path_factory.mktemp("served") / "factory"
    runner = CliRunner()
    assert (
        runner.invoke(
            factory_main,
            ["--local", str(path), "init", "--demo", "--devices", "1500", "--start", "2026-11-01T08:00:00Z"],
        ).exit_code
        == 0
    )
    token = runner.invoke(factory_main, ["--local", str(path), "token"]).output.strip()
    with serve_factory(path) as url:
        yield path, url, token


def test_devices_over_http_page_through_the_whole_list(served, monkeypatch):
    path, url, token = served
    monkeypatch.setenv("RECONCILE_API_TOKEN", token)
    remote = ("devices", "--api-url", url, "--factory", "demo", "--tag", "production")
    code, out, err = reconcile(*remote)
    assert code == 0, err
    assert len(uuids_of(out)) == 1500  # two pages of 1,000
    assert f"From: factory demo ({url}) at" in err and token not in err
    assert out == reconcile("devices", "--local", str(path), "--tag", "production")[1]  # both backends agree
    code, out, err = reconcile(*remote, "--group", "beta", "--sample", "10", "--seed", "4")
    assert code == 0 and set(uuids_of(out)) <= group_members(path, "beta")
    monkeypatch.setenv("RECONCILE_API_TOKEN", "wrong")
    code, out, err = reconcile(*remote)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1


def test_the_split_advice_names_the_groups_largest_first():
    """The default run's check of the message the slow test above reaches through the CLI (400,100 devices)."""
    from reconciler.factory.fleet import MAX_UUIDS, DeviceSelection, _split_advice

    matching = [
        (f"{n:08x}-0000-0000-0000-000000000000", group, None)
        for n, group in enumerate(["us-east"] * 250_000 + ["apac"] * 150_000 + [""] * 100)
    ]
    assert len(matching) > MAX_UUIDS == 400_000
    assert _split_advice(matching, DeviceSelection(tag="production")) == (
        "400,100 production devices with tag production: a UUID file holds at most 400,000 (one phase); split the "
        "list by group: --group us-east (250,000), --group apac (150,000), 100 in no group; or take --limit N or "
        "--sample N"
    )
    one_group = [(uuid, "us-east", seen) for uuid, _, seen in matching]
    assert _split_advice(one_group, DeviceSelection(tag="production", group="us-east")) == (
        "400,100 production devices with tag production in group us-east: a UUID file holds at most 400,000 (one "
        "phase); split the list with --below or --seen-within, or take --limit N or --sample N"
    )


def device_list_pages(requests: list[Request]) -> list[int]:
    """The device-list pages asked for, in the order they were (fioctl sends no ``page`` for the first)."""
    return [int(query.get("page", 1)) for path, query in requests if path == "/ota/devices/"]


def test_the_pages_after_the_first_are_read_together_in_order(tmp_path):
    """Once the first page gave the total, the device list's pages go out ``DEVICE_PAGES_AT_ONCE`` at a
    time, together (81,000 devices over TLS at 100 ms: 25 s read page by page, 6 s so), and come back
    in the list's order: every device once, as one page of all of them lists them."""
    from reconciler.factory.client import DEVICE_PAGES_AT_ONCE, FactoryClient, select_backend

    factory = init_demo_factory(tmp_path / "factory", devices=2_500)
    window = set(range(2, 2 + DEVICE_PAGES_AT_ONCE))
    front = HoldingFront(
        factory,
        held=lambda request: request[0] == "/ota/devices/" and request[1].get("page") == "2",
        ready=lambda requests: window <= set(device_list_pages(requests)),  # page 2's answer waits for them
    )
    try:
        with FactoryClient(select_backend(api_url=front.url, factory="demo", local=None)) as client:
            pages = list(client.device_pages({"match_tag": "production", "prod": "1"}, page_size=100))
            whole = next(client.device_pages({"match_tag": "production", "prod": "1"}, page_size=1000))
    finally:
        front.close()
    assert front.came_first is True, "the window's pages were all asked for before page 2 was answered"
    asked = device_list_pages(front.requests)
    assert sorted(asked[:25]) == list(range(1, 26)), "each of the 25 pages once"
    assert asked[25:] == [1]  # the whole list in one page, to compare with
    assert [total for _, total in pages] == [2_500] * 25
    listed = [device["uuid"] for batch, _ in pages for device in batch]
    with api(factory) as http:
        everything = http.get(
            "/ota/devices/", params={"factory": "demo", "match_tag": "production", "prod": 1, "limit": 1000}
        )
    assert len(listed) == len(set(listed)) == 2_500
    assert listed[:1000] == [device["uuid"] for device in whole[0]] == [d["uuid"] for d in everything.json()["devices"]]
