"""Issue 15, item 3: a phase of more than 10,000 UUIDs, through the CLI on a local factory.

The factory takes at most 10,000 UUIDs per rollout; such a phase is rolled out as consecutive
rollouts of at most 10,000 in file order, one history entry each (core/ledger.py). The fleet
has 25,000 production devices, so the phase ``everyone`` is three parts: 10,000, 10,000 and 5,000.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from reconciler.resources import load_schema
from tests.helpers.e2e import advance, api, commit, git, init_demo_factory, production_uuids, reconcile

FLEET = 25_000
WAVE = """\
apiVersion: reconciler/v1
kind: Wave
name: fleet-46
target: 46
tag: production
phases:
  - name: canary
    group: canary
  - name: everyone
    uuids: uuids/fleet.lst
    wait: 1h
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[str]]:
    """A 25,000-device factory and its production UUIDs in the device list's order."""
    factory_dir = init_demo_factory(tmp_path_factory.mktemp("big") / "factory", devices=FLEET)
    uuids = production_uuids(factory_dir)
    assert len(uuids) == FLEET
    return factory_dir, uuids


@pytest.fixture
def big(pristine, tmp_path, release_repo) -> tuple[Path, Path, list[str]]:
    """A fresh copy of the factory and a release repository with the wave and its 25,000-UUID file."""
    source, uuids = pristine
    factory_dir = tmp_path / "factory"
    shutil.copytree(source, factory_dir, ignore=shutil.ignore_patterns(".lock"))
    (release_repo / "uuids").mkdir()
    commit(release_repo, {"uuids/fleet.lst": "\n".join(uuids) + "\n", "fleet-46.yaml": WAVE}, "Release 46 to all")
    return release_repo, factory_dir, uuids


def run(repo: Path, factory_dir: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(factory_dir))


def history(factory_dir: Path) -> list[dict]:
    with api(factory_dir) as client:
        return client.get("/ota/factories/demo/waves/fleet-46/").json()["rollout-history"]


def test_the_phase_rolls_out_in_three_parts_after_its_gate_in_one_apply(big):
    repo, factory_dir, _ = big
    code, out, err = run(repo, factory_dir, "--dry-run", "--format", "json")
    assert code == 0, err
    plan = json.loads(out)
    jsonschema.validate(plan, load_schema("plan.schema.json"))
    assert [
        (op["phase"], op.get("part"), op.get("parts"), op.get("uuids"), op["status"], op.get("reason"))
        for op in plan["operations"]
        if op["op"] == "rollout"
    ] == [
        ("canary", None, None, None, "ready", None),
        ("everyone", 1, 3, 10_000, "blocked", "wait 1h: 1h left"),
        ("everyone", 2, 3, 10_000, "blocked", "after phase 'everyone' part 1 of 3"),
        ("everyone", 3, 3, 5_000, "blocked", "after phase 'everyone' part 1 of 3"),
    ]

    code, out, err = run(repo, factory_dir)  # init and canary; the gate holds every part
    assert code == 0, err
    assert len(history(factory_dir)) == 1
    assert "~ rollout  fleet-46  phase 'everyone' part 2 of 3 (factory-wide, 10000 uuids)" in out

    advance(factory_dir, "1h")
    code, out, err = run(repo, factory_dir)
    assert code == 0, err
    assert [line.strip() for line in err.splitlines() if "part" in line] == [
        "~ rollout fleet-46 phase 'everyone' part 1 of 3 (factory-wide, 10000 uuids): rolled out to 9990 devices",
        "~ rollout fleet-46 phase 'everyone' part 2 of 3 (factory-wide, 10000 uuids): rolled out to 10000 devices",
        "~ rollout fleet-46 phase 'everyone' part 3 of 3 (factory-wide, 5000 uuids): rolled out to 5000 devices",
    ]
    entries = history(factory_dir)
    assert [(e["group-name"], e["is-full-group"], e["is-factory-wide"], e["num-devices"]) for e in entries] == [
        ("canary", True, False, 10),
        ("", False, True, 9_990),
        ("", False, True, 10_000),
        ("", False, True, 5_000),
    ]

    code, out, err = run(repo, factory_dir)  # idempotent: the ledger says every part is done
    assert code == 0 and "Applying" not in err
    assert "No changes" in out or "0 to roll out" in out

    code, out, err = reconcile("status", str(repo), "--local", str(factory_dir))
    assert code == 0, err
    rows = [line.split()[:7] for line in out.splitlines() if line.strip().startswith("everyone")]
    assert [row[1:7] for row in rows] == [
        ["factory-wide,", "10000", "uuids,", "part", "1", "of"],
        ["factory-wide,", "10000", "uuids,", "part", "2", "of"],
        ["factory-wide,", "5000", "uuids,", "part", "3", "of"],
    ]


def test_a_shrunken_list_after_the_rollout_is_drift_at_the_uuids_line(big):
    """The history keeps no UUIDs; its entries and their device counts are what a rerun can compare."""
    repo, factory_dir, uuids = big
    assert run(repo, factory_dir)[0] == 0
    advance(factory_dir, "1h")
    assert run(repo, factory_dir)[0] == 0
    assert len(history(factory_dir)) == 4
    commit(repo, {"uuids/fleet.lst": "\n".join(uuids[:15_000]) + "\n"}, "Drop 10,000 devices from the list")
    code, out, err = run(repo, factory_dir, "--dry-run")
    assert code == 1, (out, err)
    assert (
        f"{repo}/fleet-46.yaml:10:12: phase 'everyone' part 2 of 2 sends 5000 UUIDs, but rollout 3 in the factory "
        "reached 10000 devices: it was not made from this list"
    ) in out
    assert "the factory has 4 rollouts but the manifest's 2 phases make only 3" in out


def test_a_bad_uuid_deep_in_a_big_file_is_one_line_at_its_own_position(big):
    repo, factory_dir, uuids = big
    broken = [*uuids[:17_000], uuids[17_000].upper(), *uuids[17_001:]]
    commit(repo, {"uuids/fleet.lst": "\n".join(broken) + "\n"}, "An upper-case UUID")
    code, _, err = run(repo, factory_dir)
    assert code == 1 and "Applying" not in err
    assert err.strip().splitlines() == [
        f"{repo}/uuids/fleet.lst:17001:1: UUID '{uuids[17_000].upper()}' must be written lower-case and hyphenated: "
        f"{uuids[17_000]}"
    ]
    assert len(git(repo, "log", "--oneline").splitlines()) == 2
    with api(factory_dir) as client:
        assert client.get("/ota/factories/demo/waves/fleet-46/").status_code == 404  # nothing was written


def test_a_saved_plan_names_each_part_and_goes_stale_when_a_part_changes(big, tmp_path):
    repo, factory_dir, uuids = big
    commit(repo, {"fleet-46.yaml": WAVE.replace("    wait: 1h\n", "")}, "No gate")
    plan_file = tmp_path / "plan.json"
    code, _, err = run(repo, factory_dir, "--dry-run", "--out", str(plan_file))
    assert code == 0, err
    saved = json.loads(plan_file.read_text())
    assert sorted(saved["saved"]["uuids"]) == [f"rollout fleet-46 phase 'everyone' part {n} of 3" for n in (1, 2, 3)]

    swapped = list(uuids)
    swapped[15_000], swapped[22_000] = swapped[22_000], swapped[15_000]  # the same devices, parts 2 and 3 differ
    commit(repo, {"uuids/fleet.lst": "\n".join(swapped) + "\n"}, "Reorder the list")
    code, _, err = reconcile("--plan", str(plan_file), "--local", str(factory_dir))
    assert code == 1
    assert "rollout fleet-46 phase 'everyone' part 2 of 3 differs: the UUID list changed" in err
    assert "rollout fleet-46 phase 'everyone' part 3 of 3 differs: the UUID list changed" in err
    assert "part 1 of 3 differs" not in err

    commit(repo, {"uuids/fleet.lst": "\n".join(uuids) + "\n"}, "Restore the list")
    code, _, err = reconcile("--plan", str(plan_file), "--local", str(factory_dir))
    assert code == 0, err
    assert "Apply complete: 5 done" in err
    assert len(history(factory_dir)) == 4
