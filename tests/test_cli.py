"""The reconcile command line: exit codes for usage mistakes, conflicting options, serialised applies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, reconcile

REPO = Path(__file__).resolve().parent.parent

WAVE = CANARY_WAVE + "  - name: beta\n    group: beta\n    wait: 1h\n"


def test_usage_mistakes_exit_1_not_the_changes_pending_code(tmp_path):
    for args in (["--format", "yaml"], ["--bogus"], ["--keys", str(tmp_path)]):
        code, _, err = reconcile("--dry-run", "--detailed-exitcode", *args, str(tmp_path))
        assert code == 1, (args, err)


def test_usage_mistakes_are_one_error_line_in_every_command(tmp_path):
    """click's three-line "Usage: ... Try ... Error:" block becomes the one ``error:`` line every other
    mistake gets, naming the help to read, in reconcile, its subcommands and reconcile-factory."""
    reconcile_exe = str(Path(sys.executable).with_name("reconcile"))  # the console script: its name in the hint
    factory_exe = str(Path(sys.executable).with_name("reconcile-factory"))
    cases = [
        ([reconcile_exe, "--bogus", str(tmp_path)], "No such option '--bogus'", "reconcile"),
        (
            [reconcile_exe, "status", "--format", "xml"],
            "'xml' is not one of",
            "reconcile status",
        ),
        ([reconcile_exe, "devices"], "Missing option '--tag'", "reconcile devices"),
        ([factory_exe, "nosuch"], "No such command 'nosuch'", "reconcile-factory"),
        (
            [factory_exe, "advance", "bogus"],
            "got 'bogus'",
            "reconcile-factory advance",
        ),
    ]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    for command, message, help_of in cases:
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stdout == "", command
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and line.endswith(f"(see '{help_of} --help')"), line
        # Without quotes and colons: click 8.2 (the lower bound) writes "No such option: --bogus".
        plain = str.maketrans("", "", "'\":")
        assert message.translate(plain) in line.translate(plain), line


def test_conflicting_options_are_refused(tmp_path):
    code, _, err = reconcile("--keys", "a.tgz", "--signer", "file2:x", str(tmp_path))
    assert code == 1 and "--keys FILE or --signer URI, not both" in err
    code, _, err = reconcile("--detailed-exitcode", str(tmp_path))
    assert code == 1 and "--detailed-exitcode works with --dry-run" in err


def test_concurrent_applies_on_a_local_factory_never_repeat_a_rollout(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    advance(factory_dir, "2h")  # beta is ready: every concurrent run sees it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-c",
        "from reconciler.cli.reconcile import main; main()",
        str(release_repo),
        "--local",
        str(factory_dir),
    ]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    results = [(*run.communicate(timeout=120), run.returncode) for run in runs]
    assert all(code == 0 for _, _, code in results), results
    with api(factory_dir) as client:
        history = client.get("/ota/factories/demo/waves/rel-46/").json()["rollout-history"]
    assert [h["group-name"] for h in history] == ["canary", "beta"]
    assert sum("rolled out to" in err for _, err, _ in results) == 1


def test_without_key_holds_inits_and_advances_gated_phases_with_no_key_anywhere(release_repo, factory_dir, monkeypatch):
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    archive = factory_dir / "targets.only.key.tgz"
    archive.rename(factory_dir / "key.moved")  # the demo key is the only key there is: keyless for real
    monkeypatch.setenv("RECONCILE_KEYS", "not a key archive")  # would fail the run if anything read it
    code, out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--without-key")
    assert code == 0, err
    assert "needs the offline key; runs in the keyed apply job" in out
    assert "warning: RECONCILE_KEYS is set but --without-key never reads it" in err
    assert "Applying" not in err
    monkeypatch.delenv("RECONCILE_KEYS")
    with api(factory_dir) as client:
        assert client.get("/ota/factories/demo/waves/rel-46/").status_code == 404

    code, _, err = reconcile(str(release_repo), "--local", str(factory_dir), "--keys", str(factory_dir / "key.moved"))
    assert code == 0, err  # the keyed run creates the wave and rolls out to the canaries
    advance(factory_dir, "2h")
    code, out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--without-key")
    assert code == 0, err
    assert "beta" in err and "rolled out to" in err
    with api(factory_dir) as client:
        history = client.get("/ota/factories/demo/waves/rel-46/").json()["rollout-history"]
    assert [h["group-name"] for h in history] == ["canary", "beta"]


def test_without_key_refuses_a_key(tmp_path):
    for option in (["--keys", "a.tgz"], ["--signer", "file2:x"]):
        code, _, err = reconcile("--without-key", *option, str(tmp_path))
        assert code == 1 and "--without-key never uses a key: drop --keys and --signer" in err


def test_the_demo_factory_note_is_one_escaped_line_each_never_a_literal_newline_escape(tmp_path):
    """A demo factory created in an existing directory that was not private gets two notes (created,
    and the modes made private): each is its own line, not one line with a ``\\u000a`` in it."""
    place = tmp_path / "factory"
    place.mkdir(mode=0o755)
    place.chmod(0o755)
    code, _, err = reconcile("devices", "--tag", "production", "--limit", "1", "--local", str(place))
    assert code == 0
    assert "\\u000a" not in err
    assert any(line.startswith("Created the demo local factory 'demo'") for line in err.splitlines())
    assert any(line.startswith("Made ") for line in err.splitlines()), err
