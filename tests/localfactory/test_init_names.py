"""``reconcile-factory init``: a factory name git and the API both take, and output that cannot forge a line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.localfactory import cli

START = "2026-01-05T12:00:00Z"
HOSTILE = "f\n::error::forged\u202e\x07"  # a line feed, a workflow command, a bidi override, BEL
ESCAPED = "f\\u000a::error::forged\\u202e\\u0007"


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a..b", "it must not contain '..': the factory name is a component of the git ref"),
        ("prod.lock", "it must not end with '.lock'"),
        (".hidden", "it must not start with '.'"),
        ("prod.", "it must not end with '.'"),
        ("..", "it must not be '..': the factory name is a segment of the factory's URL paths"),
    ],
)
def test_init_refuses_a_name_git_refuses_in_the_lease_ref(tmp_path, name, reason):
    line = one_error_line(run("--local", str(tmp_path / "f"), "init", "--name", name, "--start", START))
    assert line.startswith(f"error: --name '{name}' is not a factory name: {reason}")
    assert line.endswith("'.lock'") if name != ".." else line.endswith("e.g. acme-prod")
    assert not (tmp_path / "f").exists()


def test_init_names_a_look_alike_by_code_point_and_escapes_the_name(tmp_path):
    line = one_error_line(run("--local", str(tmp_path / "f"), "init", "--name", "dem\u043e\n::error::x"))
    assert line.startswith(
        "error: --name 'dem\u043e\\u000a::error::x' is not a factory name: it must not contain "
        "U+043E CYRILLIC SMALL LETTER O (character 4)"
    )


def test_init_and_status_print_a_hostile_path_escaped(tmp_path):
    path = tmp_path / HOSTILE
    created = run("--local", str(path), "init", "--devices", "0", "--start", START)
    assert created.exit_code == 0, created.output
    lines = created.stdout.splitlines()
    assert len(lines) == 2, created.stdout
    assert lines[0].startswith(f"Created factory 'demo' at {tmp_path}/{ESCAPED}: 0 production")
    assert lines[1] == f"Operator offline targets key: {tmp_path}/{ESCAPED}/targets.only.key.tgz"
    status = run("--local", str(path), "status")
    assert status.exit_code == 0 and status.stdout.splitlines()[0] == f"Factory 'demo' at {tmp_path}/{ESCAPED}"
    missing = one_error_line(run("--local", str(tmp_path / ("none" + HOSTILE)), "status"))
    assert f"no local factory at {tmp_path}/none{ESCAPED}: run" in missing
