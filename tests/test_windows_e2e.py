"""Rollout windows and freezes through the real CLIs on the local factory and a git release repository.

The demo factory's simulated clock starts on Sunday 2026-11-01 at 08:00 UTC (09:00 in Berlin);
``reconcile-factory advance`` moves it. A rollout or complete outside a window, or inside a freeze, is
held (blocked, exit 0) with the reason and the next opening; cancel is never held; init is not either.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
from click.testing import CliRunner

from reconciler.localfactory.cli import main as factory_main
from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, reconcile

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
OFFICE_HOURS = 'windows:\n  - days: Mon-Thu\n    hours: "09:00-16:00"\n    timezone: Europe/Berlin\n'
POLICY = "apiVersion: reconciler/v1\nkind: ReleasePolicy\n"


def held(repo: Path) -> str:
    """The reason a rollout waits for rel-46.yaml's office hours on Sunday 2026-11-01."""
    return (
        f"outside the rollout windows (Mon-Thu 09:00-16:00 Europe/Berlin at {repo}/rel-46.yaml:11:5); the next "
        f"window opens Mon 2026-11-02 09:00 CET = 2026-11-02T08:00:00Z"
    )


def waves(factory_dir: Path) -> dict[str, dict]:
    with api(factory_dir) as client:
        listed = client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]
    return {w["name"]: w for w in listed if w["name"] != "populate-targets"}


def run(repo: Path, factory_dir: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(factory_dir))


def test_a_wave_is_created_on_sunday_and_rolls_out_when_its_window_opens_on_monday(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "complete: true\n" + OFFICE_HOURS}, "46 in office hours")
    reason = held(release_repo)
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    assert f"~ rollout  rel-46  phase 'canary' (group canary)\n      blocked: {reason}\n" in out
    assert "* complete rel-46\n      blocked: after phase 'canary'" in out
    assert waves(factory_dir)["rel-46"]["rollout-history"] == []  # created (init is never held), not rolled out

    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--format", "json")
    plan = json.loads(out)
    jsonschema.validate(plan, json.loads((SCHEMAS / "plan.schema.json").read_text()))
    rollout = next(op for op in plan["operations"] if op["op"] == "rollout")
    assert (rollout["status"], rollout["reason"], rollout["opens_at"]) == ("blocked", reason, "2026-11-02T08:00:00Z")
    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--format", "markdown")  # the path is escaped there
    assert "| blocked: outside the rollout windows (Mon-Thu 09:00-16:00 Europe/Berlin at " in out
    assert "; the next window opens Mon 2026-11-02 09:00 CET = 2026-11-02T08:00:00Z |" in out
    code, out, _ = reconcile("status", str(release_repo), "--local", str(factory_dir))
    assert f"next: rollout canary: waiting (blocked: {reason})" in out

    advance(factory_dir, "23h59m")  # Monday 08:59 in Berlin: still closed
    code, out, _ = run(release_repo, factory_dir)
    assert code == 0 and waves(factory_dir)["rel-46"]["rollout-history"] == []
    advance(factory_dir, "1m")  # 09:00
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    wave = waves(factory_dir)["rel-46"]
    assert len(wave["rollout-history"]) == 1 and wave["status"] == "complete"


def test_a_freeze_in_the_repository_file_holds_completes_but_never_a_cancel(release_repo, factory_dir):
    phases = CANARY_WAVE + "  - name: beta\n    group: beta\n"
    commit(release_repo, {"rel-46.yaml": phases}, "46 to canary and beta")
    assert run(release_repo, factory_dir)[0] == 0
    freeze = POLICY + (
        "freezes:\n  - from: 2026-11-01\n    until: 2026-11-03\n    reason: fleet audit\n    timezone: Europe/Berlin\n"
    )
    commit(release_repo, {"reconcile.yaml": freeze, "rel-46.yaml": phases + "complete: true\n"}, "freeze; complete 46")
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    assert (
        f"* complete rel-46\n      blocked: frozen until Wed 2026-11-04 00:00 CET: fleet audit "
        f"({release_repo}/reconcile.yaml:4:5); allowed again Wed 2026-11-04 00:00 CET = 2026-11-03T23:00:00Z"
    ) in out
    assert waves(factory_dir)["rel-46"]["status"] == "active"

    commit(release_repo, {"rel-46.yaml": phases + "cancel: true\n"}, "cancel 46 during the freeze")
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    assert waves(factory_dir)["rel-46"]["status"] == "canceled"


def test_a_chain_of_freezes_names_each_freeze_that_holds_the_step(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "46 to canary")
    assert run(release_repo, factory_dir)[0] == 0
    audit = POLICY + (
        "freezes:\n  - from: 2026-11-01\n    until: 2026-11-03\n    reason: fleet audit\n    timezone: Europe/Berlin\n"
    )
    own = (
        "freezes:\n  - from: 2026-11-04\n    until: 2026-11-05\n    reason: launch week\n    timezone: Europe/Berlin\n"
    )
    commit(release_repo, {"reconcile.yaml": audit, "rel-46.yaml": CANARY_WAVE + "complete: true\n" + own}, "freezes")
    code, out, err = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 0, out + err
    assert (
        f"* complete rel-46\n      blocked: frozen until Wed 2026-11-04 00:00 CET: fleet audit "
        f"({release_repo}/reconcile.yaml:4:5); then frozen until Fri 2026-11-06 00:00 CET: launch week "
        f"({release_repo}/rel-46.yaml:11:5); allowed again Fri 2026-11-06 00:00 CET = 2026-11-05T23:00:00Z\n"
    ) in out


def test_a_wave_of_its_own_window_goes_through_the_repository_window_but_not_its_freeze(release_repo, factory_dir):
    policy = POLICY + OFFICE_HOURS + "freezes:\n  - from: 2026-11-01T12:00:00Z\n    until: 2026-11-02\n    reason: r\n"
    hotfix = CANARY_WAVE + "windows: []\n"
    commit(release_repo, {"reconcile.yaml": policy, "rel-46.yaml": hotfix}, "a hotfix any day, freezes apart")
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err  # Sunday 08:00 UTC: outside office hours, before the freeze
    assert len(waves(factory_dir)["rel-46"]["rollout-history"]) == 1


def test_a_window_that_opens_in_berlins_skipped_hour_opens_when_the_clock_jumps(release_repo, tmp_path):
    factory_dir = tmp_path / "spring"
    result = CliRunner().invoke(
        factory_main,
        ["--local", str(factory_dir), "init", "--demo", "--devices", "50", "--start", "2027-03-27T12:00:00Z"],
    )
    assert result.exit_code == 0, result.output
    night = 'windows:\n  - days: Sun\n    hours: "02:30-04:00"\n    timezone: Europe/Berlin\n'
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + night}, "46 on Sunday night")
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    assert ("the next window opens Sun 2027-03-28 03:00 CEST = 2027-03-28T01:00:00Z") in out
    advance(factory_dir, "12h59m")  # 01:59 CET
    assert run(release_repo, factory_dir)[0] == 0 and waves(factory_dir)["rel-46"]["rollout-history"] == []
    advance(factory_dir, "1m")  # 03:00 CEST
    assert run(release_repo, factory_dir)[0] == 0
    assert len(waves(factory_dir)["rel-46"]["rollout-history"]) == 1


def test_a_bad_window_or_freeze_stops_the_run_before_any_write(release_repo, factory_dir):
    bad = CANARY_WAVE + "windows:\n  - days: Mon-Frii\n    timezone: Europe/Berln\n"
    policy = POLICY + "freezes:\n  - from: 2026-12-24\n    until: 2026-12-23\n    reason: backwards\n"
    commit(release_repo, {"rel-46.yaml": bad, "reconcile.yaml": policy}, "mistakes")
    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and out == "" and "Traceback" not in err
    lines = [line.removeprefix(f"{release_repo}/") for line in err.splitlines()]
    assert lines == [
        "reconcile.yaml:5:12: until 2026-12-23 is not after from 2026-12-24: a freeze must end after it starts (a "
        "date in until counts to the end of that day)",
        "rel-46.yaml:10:11: days: unknown day 'Frii' (did you mean 'Fri'?); use Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
        "ranges such as Mon-Thu and lists such as Mon,Wed,Fri",
        "rel-46.yaml:11:15: timezone 'Europe/Berln' is not a known IANA time zone; use a name such as Europe/Berlin, "
        "America/New_York or UTC (did you mean 'Europe/Berlin'?)",
    ]
    assert waves(factory_dir) == {}


def test_a_window_that_closes_between_the_plan_and_the_step_holds_the_step(release_repo, factory_dir):
    """Apply reads the backend's clock again before each step, so a step never starts after its window closed."""
    from reconciler.apply.steps import Outcome, apply_plan
    from reconciler.core import build_plan
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe
    from reconciler.manifest import load

    sunday_morning = 'windows:\n  - days: Sun\n    hours: "08:00-09:00"\n'  # UTC; the factory is at 08:00
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + sunday_morning}, "46 on Sunday morning")
    code, out, err = run(release_repo, factory_dir)  # init and canary, inside the window
    assert code == 0, out + err
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "  - name: beta\n    group: beta\n" + sunday_morning}, "beta")
    specs = load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        observed = observe(client, specs)
        plan = build_plan(specs, observed)
        assert [op.op for op in plan.ready] == ["rollout"]  # beta, at 08:00
        advance(factory_dir, "1h")  # 09:00: the window closes before the step runs
        # as the CLI calls it after an hour: the observation is no longer fresh, so the first step reads again
        result = apply_plan(client, specs, plan, None, print, observed=observed, observed_at=time.monotonic() - 3600)
    (step,) = result.of(Outcome.HELD)
    assert step.message == (
        f"no longer ready: outside the rollout windows (Sun 08:00-09:00 UTC at "
        f"{release_repo}/rel-46.yaml:12:5); the next window opens Sun 2026-11-08 08:00 UTC"
    )
    assert len(waves(factory_dir)["rel-46"]["rollout-history"]) == 1
