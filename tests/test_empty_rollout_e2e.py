"""Issue 23.4: a phase whose dry run reaches 0 devices is a plan warning at its line, with why when known.

Each test drives the real ``reconcile`` CLI against a local demo factory and a git release repository.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, reconcile


def run(repo: Path, factory_dir: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(factory_dir))


def canary_uuids(factory_dir: Path, count: int) -> list[str]:
    with api(factory_dir) as client:
        listed = client.get("/ota/devices/", params={"factory": "demo", "group": "canary", "prod": 1, "limit": 50})
    return [d["uuid"] for d in listed.json()["devices"][:count]]


def test_a_phase_that_reaches_no_device_is_a_warning_that_says_why(release_repo, factory_dir):
    uuids = canary_uuids(factory_dir, 3)
    manifest = CANARY_WAVE + (
        f"  - name: again\n    group: canary\n    wait: 1h\n    uuids: [{', '.join(uuids)}]\n"
        "  - name: rest\n    group: canary\n    limit: 5\n    wait: 1h\n"
    )
    commit(release_repo, {"rel-46.yaml": manifest}, "Release 46")
    assert run(release_repo, factory_dir)[0] == 0  # init and the whole canary group

    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 0, "a warning does not change the exit code"
    assert "phase 'again' (group canary, 3 uuids), 0 devices" in out
    assert (
        f"{release_repo / 'rel-46.yaml'}:9:5: warning: phase 'again' of wave 'rel-46' (group canary, 3 uuids) "
        "reaches 0 devices now: the 3 devices in its scope are staged by the wave already"
    ) in out

    advance(factory_dir, "1h")
    assert run(release_repo, factory_dir)[0] == 0  # 'again' rolls out to nobody
    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--format", "json")
    (warning,) = json.loads(out)["warnings"]
    assert warning["line"] == 13 and warning["message"] == (
        "phase 'rest' of wave 'rel-46' (group canary, limit 5) reaches 0 devices now: its devices may be staged "
        "by the wave already, offline or on its version or newer, or there is no device in its scope (this run "
        "did not read the device list)"
    )
