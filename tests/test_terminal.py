"""The terminal: colour, the apply prompt and progress on a TTY only, through the real CLIs.

TTY behaviour runs the real commands as subprocesses on a pseudo-terminal (``pty``), because
only a real terminal makes ``isatty()`` true; everything else runs them with pipes or in-process.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import main as reconcile_main
from reconciler.localfactory.cli import main as factory_main
from tests.helpers.e2e import CANARY_WAVE, advance, commit, reconcile, wave

REPO = Path(__file__).resolve().parents[1]
ANSI = "\x1b["


def on_tty(
    args: list[str], *, answer: str | None = None, env: dict | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run a console command with stdin, stdout and stderr on one pseudo-terminal; type ``answer``
    once the prompt appears. Returns the exit code and everything the terminal showed."""
    controller, terminal = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}  # the user's own NO_COLOR is not the test's
    environment.update(PYTHONPATH=str(REPO), TERM="xterm", **(env or {}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from reconciler.cli.reconcile import main; "
            "from reconciler.localfactory.cli import main as factory; "
            "(factory if sys.argv[1] == 'factory' else main)(sys.argv[2:])",
            *args,
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=environment,
        close_fds=True,
    )
    os.close(terminal)
    shown, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not chunk:
                    break
                shown += chunk
            if answer is not None and not answered and b"[y/N]" in shown:
                os.write(controller, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), shown.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def release(release_repo: Path) -> None:
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")


def test_an_interactive_apply_asks_and_a_no_applies_nothing(release_repo, factory_dir):
    release(release_repo)
    code, shown = on_tty(["main", str(release_repo), "--local", str(factory_dir)], answer="n")
    assert "Apply 2 steps? [y/N]" in shown
    assert code == 1 and "apply canceled: nothing was applied" in shown
    assert "status" not in wave(factory_dir, "rel-46") or wave(factory_dir, "rel-46").get("status") is None
    code, shown = on_tty(["main", str(release_repo), "--local", str(factory_dir)], answer="y")
    assert code == 0 and "Apply 2 steps? [y/N]" in shown
    assert "[1/2] + init rel-46" in shown and "[2/2] ~ rollout rel-46" in shown  # progress of a long apply
    assert wave(factory_dir, "rel-46")["status"] == "active"


def test_colour_on_a_tty_only_and_never_with_no_color_or_json(release_repo, factory_dir):
    release(release_repo)
    local = ["--local", str(factory_dir)]
    code, shown = on_tty(["main", "--dry-run", str(release_repo), *local])
    assert code == 0 and f"{ANSI}" in shown and "+ init" in shown
    for extra, env in ((["--no-color"], None), ([], {"NO_COLOR": "1"}), (["--format", "json"], None)):
        code, shown = on_tty(["main", "--dry-run", str(release_repo), *local, *extra], env=env)
        assert code == 0 and ANSI not in shown, (extra, env)
    # Not a TTY (pipes, as in CI): no colour, no prompt, the apply runs as before.
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and ANSI not in out + err and "[y/N]" not in err and "Apply complete: 2 done" in err


def test_yes_skips_the_prompt_and_errors_have_one_red_prefix(release_repo, factory_dir):
    release(release_repo)
    code, shown = on_tty(["main", "--yes", str(release_repo), "--local", str(factory_dir)])
    assert code == 0 and "[y/N]" not in shown and "Apply complete" in shown
    code, shown = on_tty(["main", "devices", "--tag", "production", "--group", "nosuch", "--local", str(factory_dir)])
    assert code == 1 and f"{ANSI}" in shown and "error:" in shown and "no device group 'nosuch'" in shown


def test_progress_of_a_long_advance_and_init_on_a_tty_only(tmp_path):
    path = tmp_path / "factory"
    code, shown = on_tty(["factory", "--local", str(path), "init", "--demo", "--devices", "30000"])
    assert code == 0 and "Creating devices 0/30,300 (0%)" in shown  # the first report always shows
    code, shown = on_tty(["factory", "--local", str(path), "advance", "3d"])
    assert code == 0 and "Simulating seconds 259,200/259,200 (100%)" in shown  # so does the last
    piped = subprocess.run(
        [sys.executable, "-m", "reconciler.localfactory", "--local", str(path), "advance", "2d"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    assert "Simulating" not in piped.stderr and piped.stdout.startswith("Now ")


def test_plurals_and_one_line_errors(release_repo, factory_dir):
    release(release_repo)
    code, out, _ = reconcile("--check", str(release_repo))
    assert code == 0 and out.strip() == "1 manifest, 1 wave: ok"
    runner = CliRunner()
    result = runner.invoke(factory_main, ["--local", str(factory_dir), "devices", "list", "--group", "nosuch"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: no device group 'nosuch' (groups: apac, beta, canary, eu-emea, us-east, us-west)"
    ]
    status = runner.invoke(factory_main, ["--local", str(factory_dir), "status"]).output
    assert "  production tag production: 400 devices" in status
    assert "    group canary: 10 devices, " in status and "    group (none): " in status


def test_one_device_and_one_uuid_are_singular_in_the_plan_and_the_apply(release_repo, factory_dir):
    local = ("--local", str(factory_dir))
    code, uuid, err = reconcile("devices", *local, "--tag", "production", "--group", "us-east", "--limit", "1")
    assert code == 0, err
    wave = CANARY_WAVE + f"  - name: pilot\n    group: us-east\n    uuids: [{uuid.strip()}]\n    wait: 1h\n"
    commit(release_repo, {"rel-46.yaml": wave}, "Release 46 to the canaries, then one pilot")
    code, _, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    code, out, err = reconcile("--dry-run", str(release_repo), *local)  # the pilot is counted while it waits
    assert code == 0, err
    assert "~ rollout  rel-46  phase 'pilot' (group us-east, 1 uuid), 1 device\n" in out
    advance(factory_dir, "2h")
    code, _, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "~ rollout rel-46 phase 'pilot' (group us-east, 1 uuid): rolled out to 1 device\n" in err


def test_shell_completion_as_the_readme_documents_it():
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        _RECONCILE_COMPLETE="bash_complete",
        COMP_WORDS="reconcile --dr",
        COMP_CWORD="1",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reconciler.cli.reconcile import main; main(prog_name='reconcile', complete_var='_RECONCILE_COMPLETE')",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0 and "plain,--dry-run" in done.stdout


def test_a_usage_mistake_prints_what_was_typed_escaped():
    """An unknown option is quoted back: a bidi control, a BEL or a newline in it is shown as an escape,
    never acted on by the terminal (or, after a newline, read by GitHub as a workflow command). click's
    quoting escapes these today; ``UsageMistake.show`` escapes again through safetext, the one path
    everything printed takes, so a click release that quotes differently cannot let them through."""
    for main in (reconcile_main, factory_main):
        result = CliRunner().invoke(main, ["--bogus\u202e\a\n::error::forged"])
        assert result.exit_code == 1
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and "\u202e" not in line and "\a" not in line
        assert "\\u202e" in line
