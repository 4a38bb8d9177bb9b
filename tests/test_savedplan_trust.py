"""A saved plan is untrusted input, and what ``--plan`` says about it is true: through the real CLI
against the local factory (``--dry-run --out plan.json`` then ``--plan plan.json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.apply.savedplan import MAX_BYTES
from tests.helpers.e2e import CANARY_WAVE, add_device, advance, api, commit, reconcile, wave

REPO = Path(__file__).resolve().parents[1]
GATED = CANARY_WAVE + "  - name: beta\n    group: beta\n    limit: 10\n    wait: 24h\n"  # beta waits a day


def history(factory_dir: Path, name: str) -> list:
    return wave(factory_dir, name).get("rollout-history") or []


def save_plan(release_repo: Path, factory_dir: Path, plan_file: Path) -> dict:
    code, _, err = reconcile("--dry-run", "--out", str(plan_file), str(release_repo), "--local", str(factory_dir))
    assert code == 0, err
    return json.loads(plan_file.read_text())


def stale_lines(err: str) -> list[str]:
    return [line.removeprefix("error: stale plan: ") for line in err.splitlines() if line.startswith("error:")]


def shifted(stamp: str, years: int) -> str:
    return f"{int(stamp[:4]) + years:04d}{stamp[4:]}"


# -- 21.1: nothing signed comes from the file; its clock is bounded by the factory's -----------------


@pytest.mark.parametrize(
    "years,reasons",
    [
        (
            70,
            [
                "the plan was made at 2096-11-01T08:00:00Z, 25568d ahead of the factory's clock (2026-11-01T08:00:00Z)",
                "init rel-46 would sign an expiry of 2027-11-01T08:00:00Z, the plan reviewed 2097-11-01T08:00:00Z: "
                "25568d apart, more than the plan's age (0s)",
            ],
        ),
        (
            -70,
            [
                "the plan was made at 1956-11-01T08:00:00Z, 25567d ago by the factory's clock: "
                "older than --plan-max-age 24h"
            ],
        ),
    ],
)
def test_a_plan_with_a_shifted_clock_is_refused_and_signs_nothing(release_repo, factory_dir, tmp_path, years, reasons):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    plan_file = tmp_path / "plan.json"
    saved = save_plan(release_repo, factory_dir, plan_file)
    saved["now"] = shifted(saved["now"], years)
    for op in saved["operations"]:
        if op["op"] == "init":
            op["expires"] = shifted(op["expires"], years)  # 2097 with +70
    plan_file.write_text(json.dumps(saved))
    code, _, err = reconcile("--plan", str(plan_file), "--local", str(factory_dir))
    assert code == 1 and stale_lines(err) == reasons
    with api(factory_dir) as client:
        assert client.get("/ota/factories/demo/waves/rel-46/").status_code == 404


def test_a_tampered_expiry_is_stale_and_the_signed_one_is_recomputed(release_repo, factory_dir, tmp_path):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    plan_file = tmp_path / "plan.json"
    saved = save_plan(release_repo, factory_dir, plan_file)
    reviewed = saved["operations"][0]["expires"]
    saved["operations"][0]["expires"] = shifted(reviewed, 70)
    plan_file.write_text(json.dumps(saved))
    code, _, err = reconcile("--plan", str(plan_file), "--local", str(factory_dir))
    assert code == 1 and stale_lines(err) == [
        f"init rel-46 would sign an expiry of {reviewed}, the plan reviewed 2097-11-01T08:00:00Z: "
        "25568d apart, more than the plan's age (0s)"
    ]
    assert wave(factory_dir, "rel-46").get("name") is None  # nothing created


def _tampered(saved: dict, change: str) -> str:
    if change == "missing now":
        del saved["now"]
    elif change == "operations a string":
        saved["operations"] = "init"
    elif change == "paths a string":
        saved["saved"]["paths"] = "releases"
    elif change == "observed edited":
        saved["saved"]["observed"]["CI build 46"] = "absent"
    elif change == "no such date":
        saved["now"] = "2026-13-45T08:00:00Z"
    elif change == "deep nesting":
        return json.dumps(saved)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return json.dumps(saved)


@pytest.mark.parametrize(
    "change,message",
    [
        ("missing now", "not a valid saved plan: at the top level: 'now' is a required property"),
        ("operations a string", "not a valid saved plan: at operations: 'init' is not of type 'array'"),
        ("paths a string", "not a valid saved plan: at saved/paths: 'releases' is not of type 'array'"),
        ("observed edited", "not a valid saved plan: its fingerprint does not match its observed state"),
        ("no such date", "not a valid saved plan: month must be in 1..12"),
        ("deep nesting", "not a saved plan: JSON nested too deeply"),
    ],
)
def test_a_malformed_saved_plan_is_one_error_line(release_repo, factory_dir, tmp_path, change, message):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(_tampered(save_plan(release_repo, factory_dir, plan_file), change))
    code, _, err = reconcile("--plan", str(plan_file), "--local", str(factory_dir))
    assert code == 1 and err.splitlines() == [f"error: {plan_file}: {message}"]


def test_a_saved_plan_must_be_a_regular_file_of_at_most_16_mib(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as file:
        file.truncate(MAX_BYTES + 1)
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    cases = {
        "/dev/zero": "error: cannot read the saved plan /dev/zero: it is a device, not a regular file",
        str(big): f"error: {big}: not a saved plan: larger than 16 MiB",
        str(fifo): f"error: cannot read the saved plan {fifo}: it is a FIFO, not a regular file",
    }
    for path, message in cases.items():
        # a process of its own: opening a FIFO for reading would wait for a writer forever
        done = subprocess.run(
            [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()", "--plan", path],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=tmp_path,
        )
        assert done.returncode == 1 and done.stderr.splitlines() == [message], path


# -- 21.6: --out writes only the file it names --------------------------------------------------------


def test_out_never_follows_a_link_planted_at_a_temporary_name(release_repo, factory_dir, tmp_path):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / ".plan.json.tmp").symlink_to(victim)  # the temporary name --out used to write through
    plan_file = tmp_path / "plan.json"
    saved = save_plan(release_repo, factory_dir, plan_file)
    assert victim.read_text() == "precious\n"
    assert not plan_file.is_symlink() and saved["saved"]["format"] == 1
    assert (tmp_path / ".plan.json.tmp").is_symlink()  # left alone
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [".plan.json.tmp"]


def test_out_refuses_a_link_or_a_device_and_writes_stdout_for_a_dash(release_repo, factory_dir, tmp_path):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    local = ("--local", str(factory_dir))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "stdout"
    link.symlink_to(victim)  # like /dev/stdout, a link to something else
    code, _, err = reconcile("--dry-run", "--out", str(link), str(release_repo), *local)
    assert code == 1 and err.splitlines()[-1] == (
        f"error: cannot write the plan to {link}: it is a symbolic link; give a regular file, or - for stdout"
    )
    assert link.is_symlink() and victim.read_text() == "precious\n"
    code, _, err = reconcile("--dry-run", "--out", "/dev/null", str(release_repo), *local)
    assert code == 1 and "error: cannot write the plan to /dev/null: it is a device" in err
    assert Path("/dev/null").is_char_device()

    code, out, err = reconcile("--dry-run", "--out", "-", str(release_repo), *local)
    assert code == 0, err
    assert json.loads(out)["saved"]["paths"] == [str(release_repo)]  # stdout is the saved plan alone
    assert "+ init" in err and "Saved the plan to stdout" in err and not (release_repo / "-").exists()


# -- 23.1: the reviewed device counts are pinned ------------------------------------------------------


def test_a_rollout_reaching_other_devices_than_reviewed_is_stale(release_repo, factory_dir, tmp_path):
    local = ("--local", str(factory_dir))
    commit(release_repo, {"rel-46.yaml": GATED.replace("    limit: 10\n", "")}, "Release 46")
    assert reconcile(str(release_repo), *local)[0] == 0  # init and canary
    advance(factory_dir, "25h")  # the beta gate opens
    plan_file = tmp_path / "plan.json"
    code, out, _ = reconcile("--dry-run", "--out", str(plan_file), str(release_repo), *local)
    assert code == 0 and "~ rollout  rel-46  phase 'beta' (group beta), 50 devices" in out
    for n in range(3):
        add_device(factory_dir, f"late-beta-{n}", group="beta")  # devices join the group after the review
    code, _, err = reconcile("--plan", str(plan_file), *local)
    assert code == 1 and stale_lines(err) == [
        "rollout rel-46 phase 'beta' would reach 53 devices; the plan reviewed 50 devices"
    ]
    assert len(history(factory_dir, "rel-46")) == 1  # refused: beta not rolled out


# -- 23.2: every stale reason is true -----------------------------------------------------------------


def _another_apply(release_repo: Path, factory_dir: Path) -> None:
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0


def _group(factory_dir: Path, method: str, path: str, **body: str) -> None:
    with api(factory_dir) as client:
        answer = client.request(method, f"/ota/factories/demo/device-groups{path}", json=body or None)
        assert answer.status_code in (200, 201, 204), answer.text


def _complete(factory_dir: Path) -> None:
    with api(factory_dir) as client:
        assert client.post("/ota/factories/demo/waves/rel-46/complete/", json={}).status_code == 200


def _ci_build(factory_dir: Path) -> None:
    from click.testing import CliRunner

    from reconciler.localfactory.cli import main as factory_main

    assert CliRunner().invoke(factory_main, ["--local", str(factory_dir), "build", "61"]).exit_code == 0


CREATED = "active version 46 tag production created 2026-11-01T08:00:00Z"


@pytest.mark.parametrize(
    "case",
    [
        "another apply",
        "group added",
        "group removed",
        "CI build added",
        "production targets changed",
        "older than the max age",
        "manifest changed",
    ],
)
def test_each_stale_reason_names_exactly_what_changed(release_repo, factory_dir, tmp_path, case):
    local = ("--local", str(factory_dir))
    gated = case in ("group added", "group removed", "production targets changed")
    commit(release_repo, {"rel-46.yaml": GATED if gated else CANARY_WAVE}, "Release 46")
    if gated:  # the canary rolled out; beta waits, so the plan reads the device groups
        assert reconcile(str(release_repo), *local)[0] == 0
    if case == "group removed":
        _group(factory_dir, "POST", "/", name="gamma")
    if case == "production targets changed":
        advance(factory_dir, "25h")  # beta is ready in the saved plan
    plan_file = tmp_path / "plan.json"
    save_plan(release_repo, factory_dir, plan_file)
    before = wave(factory_dir, "rel-46").get("rollout-history") or []

    expected: list[str]
    if case == "another apply":
        _another_apply(release_repo, factory_dir)
        expected = [
            f"wave rel-46 changed since the plan: was absent, now {CREATED}, 1 rollout (canary at 2026-11-01T08:00:00Z)",
            "init rel-46 is no longer in the plan",
            "rollout rel-46 phase 'canary' is no longer in the plan",
        ]
    elif case == "group added":
        _group(factory_dir, "POST", "/", name="gamma")
        expected = ["device groups changed since the plan: added gamma"]
    elif case == "group removed":
        _group(factory_dir, "DELETE", "/gamma/")
        expected = ["device groups changed since the plan: removed gamma"]
    elif case == "CI build added":
        _ci_build(factory_dir)
        expected = []  # the plan reads build 46 only: nothing it depends on changed
    elif case == "production targets changed":
        with api(factory_dir) as client:
            old = client.get("/ota/factories/demo/prod-targets/", params={"tag": "production"}).json()
        _complete(factory_dir)
        with api(factory_dir) as client:
            new = client.get("/ota/factories/demo/prod-targets/", params={"tag": "production"}).json()
        old_version, new_version = old["production"]["signed"]["version"], new["production"]["signed"]["version"]
        assert new_version != old_version
        expected = [
            f"production targets of tag production changed since the plan: was version {old_version} ",
            "wave rel-46 changed since the plan: was active version 46",
            "rollout rel-46 phase 'beta' is no longer in the plan",
        ]
    elif case == "older than the max age":
        advance(factory_dir, "25h")
        expected = [
            "the plan was made at 2026-11-01T08:00:00Z, 25h ago by the factory's clock: older than --plan-max-age 24h"
        ]
    else:
        commit(release_repo, {"rel-46.yaml": CANARY_WAVE.replace("group: canary", "group: beta")}, "Beta first")
        expected = ["rollout rel-46 phase 'canary' differs: group canary -> beta"]

    code, _, err = reconcile("--plan", str(plan_file), *local)
    lines = stale_lines(err)
    if case == "production targets changed":  # versions and times in the middle: each line's start
        assert len(lines) == len(expected) and all(
            line.startswith(start) for line, start in zip(lines, expected, strict=True)
        ), lines
        assert "now complete version 46" in lines[1]
    else:
        assert lines == expected
    if expected:
        assert code == 1
        if case != "another apply":
            assert (wave(factory_dir, "rel-46").get("rollout-history") or []) == before  # refused: nothing written
    else:
        assert code == 0 and "Apply complete: 2 done" in err


def test_plan_max_age_lets_an_older_plan_apply_with_a_recomputed_expiry(release_repo, factory_dir, tmp_path):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    plan_file = tmp_path / "plan.json"
    save_plan(release_repo, factory_dir, plan_file)
    advance(factory_dir, "25h")
    code, _, err = reconcile("--plan", str(plan_file), "--plan-max-age", "2d", "--local", str(factory_dir))
    assert code == 0, err
    with api(factory_dir) as client:
        signed = client.get("/ota/factories/demo/wave-targets/", params={"name": "rel-46"}).json()["rel-46"]["signed"]
    assert signed["expires"] == "2027-11-02T09:00:00Z"  # 365d from the apply, by the factory's clock
    code, _, err = reconcile("--plan-max-age", "2d", str(release_repo), "--local", str(factory_dir))
    assert (
        code == 1
        and err.strip() == "error: --plan-max-age is how old a saved plan --plan applies may be: it needs --plan FILE"
    )
