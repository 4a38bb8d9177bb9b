"""The forecast against the walkthrough's local factory: under ``reconcile-factory advance`` no step of
``v46`` becomes ready before its forecast time, ``beta`` becomes ready exactly at it, and a step whose
device gate is not met at its time shows that gate until it passes (README, Walkthrough); the README's
forecast line is what the tool prints."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler.localfactory.cli import main as factory_main
from reconciler.resources import load_schema
from tests.helpers.e2e import advance, commit, reconcile

ROOT = Path(__file__).resolve().parents[1]
START = "2026-12-01T05:00:00Z"


def _status(manifests: str, local: list[str]) -> dict:
    code, out, err = reconcile("status", manifests, "--format", "json", *local)
    assert code == 0, err
    return next(w for w in json.loads(out)["waves"] if w["name"] == "v46")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _seconds(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


def _walkthrough(release_repo: Path, tmp_path: Path) -> tuple[str, Path, list[str]]:
    """The walkthrough's first apply: v42 and v44 complete, v46 on its canaries."""
    shutil.copytree(ROOT / "examples" / "releases", release_repo / "releases")
    commit(release_repo, {}, "the walkthrough's release repository")
    factory = tmp_path / "walkthrough-factory"
    result = CliRunner().invoke(factory_main, ["--local", str(factory), "init", "--demo", "--start", START])
    assert result.exit_code == 0, result.output
    manifests, local = str(release_repo / "releases"), ["--local", str(factory)]
    code, _, err = reconcile(manifests, *local)
    assert code == 0, err
    return manifests, factory, local


def test_status_and_plan_show_the_forecast_in_every_format(release_repo, tmp_path):
    manifests, _, local = _walkthrough(release_repo, tmp_path)
    code, out, err = reconcile("status", manifests, *local)
    assert code == 0, err
    assert "  forecast: last rollout no earlier than Mon 2026-12-07 05:00 UTC\n" in out
    assert "    rollout beta no earlier than Wed 2026-12-02 05:00 UTC (wait 24h)\n" in out
    assert "    rollout us-west no earlier than Mon 2026-12-07 05:00 UTC (wait 24h)\n" in out
    assert "    assuming each step runs as soon as it may" in out

    code, out, err = reconcile("status", manifests, "--format", "json", *local)
    data = json.loads(out)
    Draft202012Validator(load_schema("status.schema.json")).validate(data)
    forecasts = {w["name"]: w["forecast"] for w in data["waves"]}
    assert forecasts["v42"] is None and forecasts["v44"] is None, "complete waves have no steps left"
    assert forecasts["v46"]["done_at"] == "2026-12-07T05:00:00Z" and forecasts["v46"]["within_expiry"] is True

    code, out, err = reconcile("status", manifests, "--format", "markdown", *local)
    assert "- forecast: last rollout no earlier than Mon 2026-12-07 05:00 UTC\n" in out
    assert "Forecast (each gate passing as soon as its wait ends):\n\n- rollout beta no earlier than" in out

    code, out, err = reconcile("--dry-run", manifests, *local)
    assert (
        "Forecast (each gate passing as soon as its wait ends):\n"
        "  v46: last rollout no earlier than Mon 2026-12-07 05:00 UTC\n"
    ) in out
    code, out, err = reconcile("--dry-run", "--format", "json", manifests, *local)
    plan = json.loads(out)
    Draft202012Validator(load_schema("plan.schema.json")).validate(plan)
    assert next(w for w in plan["waves"] if w["name"] == "v46")["forecast"]["done_at"] == "2026-12-07T05:00:00Z"
    code, out, err = reconcile("--dry-run", "--format", "markdown", manifests, *local)
    assert "```mermaid\ngantt\n" in out and "  rollout us-west :s4, 2026-12-06 05:00, 2026-12-07 05:00\n" in out


def test_the_walkthrough_forecast_is_when_its_steps_become_ready(release_repo, tmp_path):
    manifests, factory, local = _walkthrough(release_repo, tmp_path)
    wave = _status(manifests, local)
    forecast = wave["forecast"]
    steps = [(s["step"], _time(s["at"])) for s in forecast["steps"]]
    assert [name for name, _ in steps] == [
        "rollout beta",
        "rollout eu-canaries",
        "rollout us-east-10",
        "rollout us-east",
        "rollout us-west",
    ]
    assert _time(forecast["done_at"]) == steps[-1][1]

    # The README's line, with the times of this run.
    code, out, _ = reconcile("status", manifests, *local)
    line = next(line.strip() for line in out.splitlines() if line.strip().startswith("forecast: "))
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r'"(forecast: last rollout no earlier than [^"]+)"', readme)
    assert shown is not None, "the walkthrough shows the forecast line"
    pattern = re.escape(shown[1]).replace(r"Mon\ 2026\-12\-07\ 05:00\ UTC", r"\w{3} \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")
    assert re.fullmatch(pattern, line), (line, shown[1])
    assert line == "forecast: last rollout no earlier than Mon 2026-12-07 05:00 UTC"

    # Each step: never ready before its forecast time. At it, ready; or, when its device gate is not met
    # yet, the forecast says so (not forecast away) until it is met, and then says now.
    ready_at: dict[str, datetime] = {}
    now = _time(START)
    # The walkthrough's later steps and the one after (us-east waits for 98% of a group with offline devices).
    for name in [step for step, _ in steps[:3]]:
        forecast = _status(manifests, local)["forecast"]
        first = forecast["steps"][0]
        assert first["step"] == name and first["at"] is not None, first
        at = _time(first["at"])
        advance(factory, _seconds(at - timedelta(minutes=1) - now))
        assert _status(manifests, local)["next_step"]["passed"] is False, f"{name} is ready before its forecast"
        advance(factory, "60s")
        now = at
        wave = _status(manifests, local)
        while not wave["next_step"]["passed"]:
            first = wave["forecast"]["steps"][0]
            assert first["at"] is None and first["unmet"].startswith("updated "), first
            assert all(s["at"] is None for s in wave["forecast"]["steps"])
            advance(factory, "2h")
            now += timedelta(hours=2)
            assert now - at < timedelta(days=3), f"{name} never became ready"
            wave = _status(manifests, local)
        assert wave["next_step"]["step"] == name
        assert _time(wave["forecast"]["steps"][0]["at"]) == now, "a ready step is forecast for now"
        code, out, err = reconcile(manifests, *local)
        assert code == 0 and f"phase '{name.removeprefix('rollout ')}'" in err, err
        ready_at[name] = now
    assert ready_at["rollout beta"] == steps[0][1], "beta: ready at its first forecast, as the walkthrough shows"
