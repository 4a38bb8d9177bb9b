"""Crash safety: SIGKILL ``reconcile`` after each write, rerun, and end exactly as an uninterrupted run.

The local factory is served on 127.0.0.1 by a small HTTP front that forwards to its WSGI app.
After the factory has committed the N-th write, and before the answer is sent, the front
kills the ``reconcile`` process: the harshest moment, when the write landed but the client
never learned it. A rerun must finish the job from the factory's ledger alone, with no
rollout done twice.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.e2e import api, git, init_demo_factory, production_uuids, wave
from tests.helpers.serving import Answer, FactoryFront, is_write

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "releases"


class KillingFront(FactoryFront):
    """SIGKILLs ``victim`` right after the ``kill_after``-th write landed, before its answer goes back
    (writes are relayed one at a time, so which write that is does not depend on thread timing)."""

    def __init__(self, factory_dir: Path, kill_after: int | None):
        self.kill_after, self.writes, self.victim = kill_after, 0, None
        self.lock = threading.Lock()
        super().__init__(factory_dir)

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        with self.lock:
            answer = self.forward(command, path, body, headers)
            if is_write(command, body):
                self.writes += 1
                if self.writes == self.kill_after and self.victim is not None:
                    os.kill(self.victim.pid, signal.SIGKILL)
                    self.victim.wait()
        return answer

    def run_reconcile(self, manifests: Path) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-c",
            "from reconciler.cli.reconcile import main; main()",
            str(manifests),
            "--api-url",
            self.url,
            "--factory",
            "demo",
            "--allow-dirty",
            "--keys",
            str(self.keys),
        ]
        self.victim = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        out, err = self.victim.communicate(timeout=120)
        return subprocess.CompletedProcess(command, self.victim.returncode, out, err)


def ledger(factory_dir: Path) -> dict:
    """What must be identical after a crash and a rerun: waves, their histories, production targets."""
    with api(factory_dir) as client:
        waves = client.get("/ota/factories/demo/waves/", params={"limit": 100, "page": 1}).json()["waves"]
        prod = client.get("/ota/factories/demo/prod-targets/", params={"tag": "production"}).json()
    return {
        "waves": sorted(
            (
                w["name"],
                w["version"],
                w["status"],
                tuple(
                    (h["group-name"], h["is-full-group"], h["is-factory-wide"], h["num-devices"])
                    for h in w["rollout-history"]
                ),
            )
            for w in waves
        ),
        "production": sorted(prod["production"]["signed"]["targets"]),
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return init_demo_factory(tmp_path_factory.mktemp("pristine") / "factory", devices=300)


def fresh_copy(pristine: Path, target: Path) -> Path:
    shutil.copytree(pristine, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def release_copy(target: Path, source: Path = EXAMPLES) -> Path:
    """The examples in a release repository of their own: the apply lease is a ref in it, never in ours."""
    shutil.copytree(source, target)
    git(target, "init", "-q", "-b", "main")
    git(target, "add", "-A")
    git(target, "-c", "user.name=Release Bot", "-c", "user.email=bot@example.com", "commit", "-q", "-m", "examples")
    return target


def apply_with_crash(pristine: Path, tmp_path: Path, kill_after: int | None, source: Path = EXAMPLES):
    factory_dir = fresh_copy(pristine, tmp_path / f"factory-{kill_after}")
    releases = release_copy(tmp_path / f"releases-{kill_after}", source)
    return (factory_dir, *run_killed_then_again(factory_dir, releases, kill_after, "targets.only.key.tgz"))


def run_killed_then_again(factory_dir: Path, releases: Path, kill_after: int | None, key: str):
    """An apply killed after write ``kill_after`` (None: never), then a rerun: (writes, first run, rerun)."""
    front = KillingFront(factory_dir, kill_after)
    front.keys = factory_dir / key
    try:
        first = front.run_reconcile(releases)
        front.kill_after = None
        second = front.run_reconcile(releases)
    finally:
        front.close()
    return front.writes, first, second


def test_every_crash_point_converges_to_the_uninterrupted_end_state(pristine, tmp_path):
    reference_dir, writes, first, second = apply_with_crash(pristine, tmp_path, kill_after=None)
    assert first.returncode == 0, first.stderr
    assert "Apply complete" in first.stderr and "Apply complete" not in second.stderr, second.stderr
    assert second.stdout.rstrip().endswith("blocked.") and "0 to roll out" in second.stdout
    reference = ledger(reference_dir)
    assert writes >= 6, "the scenario should have several writes"

    for kill_after in range(1, writes + 1):
        factory_dir, total, crashed, rerun = apply_with_crash(pristine, tmp_path, kill_after)
        assert crashed.returncode == -signal.SIGKILL, (kill_after, crashed.stderr)
        assert rerun.returncode == 0, (kill_after, rerun.stderr)
        assert total == writes, f"kill after write {kill_after}: {total} writes instead of {writes} (a step repeated)"
        assert ledger(factory_dir) == reference, f"kill after write {kill_after}"


@pytest.fixture(scope="module")
def two_keys_with_a_wave(tmp_path_factory) -> tuple[Path, Path]:
    """A factory whose production root needs two offline signatures, with wave rel-46 signed by the first
    key only, and its release repository (rel-46 to canary, then factory-wide, then complete)."""
    from tests.helpers.e2e import CANARY_WAVE, commit, reconcile

    base = tmp_path_factory.mktemp("two-keys")
    factory_dir, releases = base / "factory", base / "releases"
    init_demo_factory(factory_dir, devices=200, offline_keys=2)
    releases.mkdir()
    git(releases, "init", "-q", "-b", "main")
    git(releases, "config", "user.name", "Release Bot")
    git(releases, "config", "user.email", "bot@example.com")
    commit(releases, {"rel-46.yaml": CANARY_WAVE + "  - name: more\n    limit: 5\ncomplete: true\n"}, "rel-46")
    code, _, err = reconcile(
        str(releases), "--local", str(factory_dir), "--keys", str(factory_dir / "targets.only.key.tgz")
    )
    assert code == 0 and "+ init rel-46" in err, err
    return factory_dir, releases


def test_a_crash_after_the_wave_sign_converges_without_signing_or_rolling_out_twice(two_keys_with_a_wave, tmp_path):
    pristine, releases = two_keys_with_a_wave
    ends, writes_of = [], []
    for kill_after in (None, 1, 2):
        factory_dir = fresh_copy(pristine, tmp_path / f"factory-{kill_after}")
        writes, first, second = run_killed_then_again(factory_dir, releases, kill_after, "targets.only.2.key.tgz")
        if kill_after is None:
            assert first.returncode == 0 and "# sign rel-46" in first.stderr, first.stderr
        else:
            assert first.returncode == -signal.SIGKILL, (kill_after, first.stderr)
        assert second.returncode == 0, (kill_after, second.stderr)
        assert "# sign" not in second.stderr, "a landed sign is never sent again"
        writes_of.append(writes)
        ends.append(ledger(factory_dir))
    assert writes_of == [4, 4, 4], "sign, two rollouts, complete: each once"
    assert ends[0] == ends[1] == ends[2] and ends[0]["waves"][-1][2] == "complete"


# -- a phase of more than 10,000 UUIDs: three rollouts, one history entry each -----------------------

BIG_FLEET = 25_000
BIG_WAVE = """\
apiVersion: reconciler/v1
kind: Wave
name: fleet-46
target: 46
tag: production
phases:
  - name: everyone
    uuids: uuids/fleet.lst   # 25,000 UUIDs: parts of 10,000, 10,000 and 5,000
"""


@pytest.fixture(scope="module")
def big_fleet(tmp_path_factory) -> tuple[Path, Path]:
    """A factory of 25,000 production devices, and a release directory whose one phase lists them all."""
    factory_dir = init_demo_factory(tmp_path_factory.mktemp("pristine-big") / "factory", devices=BIG_FLEET)
    uuids = production_uuids(factory_dir)
    assert len(uuids) == BIG_FLEET
    source = tmp_path_factory.mktemp("big-releases")
    (source / "uuids").mkdir()
    (source / "uuids" / "fleet.lst").write_text("\n".join(uuids) + "\n")
    (source / "fleet-46.yaml").write_text(BIG_WAVE)
    return factory_dir, source


# Each crash point reads the 25,000-device list twice (the killed run and the rerun check every UUID):
# about 10 s each on a loaded runner. The default run kills between two parts of the phase, the
# point only a split phase has; `-m slow` kills after every write.
@pytest.mark.parametrize(
    "kill_after",
    [
        pytest.param(1, marks=pytest.mark.slow),
        pytest.param(2, marks=pytest.mark.slow),
        3,
        pytest.param(4, marks=pytest.mark.slow),
    ],
)
def test_every_crash_point_of_a_phase_in_three_parts_converges_without_a_duplicate(big_fleet, tmp_path, kill_after):
    """Init and the three parts are the four writes. Killed after each of them (the write landed, the
    answer never arrived), a rerun continues from the history's length alone: exactly three entries of
    10,000, 10,000 and 5,000 devices, and no write sent twice."""
    pristine, source = big_fleet
    parts = (("", False, True, 10_000), ("", False, True, 10_000), ("", False, True, 5_000))  # factory-wide, not full
    expected = [("fleet-46", "46", "active", parts), ("populate-targets", "40", "complete", ())]
    factory_dir, total, crashed, rerun = apply_with_crash(pristine, tmp_path, kill_after, source)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert rerun.returncode == 0, rerun.stderr
    assert total == 4, f"{total} writes instead of 4 (a step repeated)"
    assert ledger(factory_dir)["waves"] == expected
    rolled = re.findall(r"phase 'everyone' part (\d) of 3 \([^)]*\): rolled out", rerun.stderr)
    assert rolled == [str(part) for part in range(kill_after, 4)], rerun.stderr


# -- killed while settling a note an earlier run left: the takeover carries the note over -------------


def _settling_kills(release_repo: Path, factory_dir: Path, kills: int, window: float) -> None:
    """A run died with its rollout of p1 unanswered (its note in the lease, settling within ``window``
    seconds). ``kills`` applies in a row take the lease over and are SIGKILLed while they wait for that
    write to settle; then the write lands (late, as a lost write may), and one more apply must see it
    landed instead of rolling p1 out a second time."""
    import json
    import random
    import time
    from datetime import datetime, timedelta, timezone

    from tests.helpers.e2e import CANARY_WAVE, commit, reconcile
    from tests.helpers.lease import REF, lease_body, note, stamp, write_lease

    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "  - name: p1\n    limit: 1\n"}, "phase p1")
    sent = datetime.now(timezone.utc)
    settle_by = sent + timedelta(seconds=window)
    write_lease(release_repo, lease_body([note(sent=stamp(sent), settle_by=stamp(settle_by))]))
    command = [sys.executable, "-c", "from reconciler.cli.reconcile import main; main()", str(release_repo)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONCILE_LOCK_TIMEOUT": "30"}
    for attempt in range(kills):
        victim = subprocess.Popen(
            [*command, "--local", str(factory_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        deadline = time.monotonic() + 30
        while victim.poll() is None and time.monotonic() < deadline:  # until it holds the lease
            held = subprocess.run(
                ["git", "-C", str(release_repo), "cat-file", "commit", REF], check=False, capture_output=True
            )
            if held.returncode == 0 and f'"pid": {victim.pid}'.encode() in held.stdout:
                break
            time.sleep(0.05)
        time.sleep(random.uniform(0, 0.3))  # somewhere in its settling
        victim.kill()
        _, err = victim.communicate(timeout=30)
        assert b"~ rollout" not in err, (attempt, err.decode())
        kept = subprocess.run(
            ["git", "-C", str(release_repo), "cat-file", "commit", REF], capture_output=True, text=True, check=True
        ).stdout
        assert [p["phase"] for p in json.loads(kept.split("\n\n", 2)[2])["pending"]] == ["p1"], (attempt, kept)
    assert datetime.now(timezone.utc) < settle_by - timedelta(seconds=2), "the kills outlasted the settle window"
    with api(factory_dir) as client:  # the dead run's write lands at last
        assert client.post("/ota/factories/demo/waves/rel-46/rollout/", json={"limit": 1}).status_code == 200
    code, _, err = reconcile(str(release_repo), "--local", str(factory_dir))
    assert code == 0 and "it landed" in err and "~ rollout" not in err, err
    assert [e["group-name"] or "*" for e in wave(factory_dir, "rel-46")["rollout-history"]] == ["canary", "*"]


def test_applies_killed_while_settling_a_note_pass_it_on_and_the_write_lands_once(release_repo, factory_dir):
    _settling_kills(release_repo, factory_dir, kills=2, window=25)


@pytest.mark.slow
def test_fifteen_applies_killed_while_settling_never_write_twice(release_repo, factory_dir):
    _settling_kills(release_repo, factory_dir, kills=15, window=58)
