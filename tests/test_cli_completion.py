"""The command line as typed (issue 23.11): shell completion of subcommands and their options in bash, zsh
and fish, "did you mean" for a subcommand's name, and ``error:`` at the start of every error line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.helpers.e2e import reconcile


def complete(shell: str, words: str, monkeypatch, tmp_path) -> list[str]:
    """What ``reconcile`` answers the shell's completion script for ``words`` (the last one incomplete)."""
    monkeypatch.chdir(tmp_path)
    env = {"_RECONCILE_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    if words.endswith(" "):
        env["COMP_CWORD"] = str(len(words.split()))
    if shell == "fish":  # fish's script sends the incomplete word itself
        env["COMP_CWORD"] = "" if words.endswith(" ") else words.rsplit(maxsplit=1)[-1]
    result = CliRunner().invoke(main, [], env=env, prog_name="reconcile", complete_var="_RECONCILE_COMPLETE")
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_bash_completes_subcommand_names_with_the_paths(monkeypatch, tmp_path):
    (tmp_path / "stuff").mkdir()
    assert complete("bash", "reconcile st", monkeypatch, tmp_path) == ["plain,status", "plain,stuff/"]
    every = complete("bash", "reconcile ", monkeypatch, tmp_path)
    assert {"plain,status", "plain,devices", "plain,init-repo", "plain,keys"} <= set(every)
    # after a path, only paths: the shell completes file names
    assert complete("bash", "reconcile stuff st", monkeypatch, tmp_path) == ["file,st"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_completes_a_subcommands_own_options(shell, monkeypatch, tmp_path):
    assert any("--format" in item for item in complete(shell, "reconcile status --for", monkeypatch, tmp_path))
    assert any("--tag" in item for item in complete(shell, "reconcile devices --ta", monkeypatch, tmp_path))
    assert any("--dry-run" in item for item in complete(shell, "reconcile --dry", monkeypatch, tmp_path))


def test_a_subcommand_typed_wrong_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile("statu", "--check")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: statu: no such file or directory; did you mean 'reconcile status'? (see 'main --help')"
    ]  # click's runner calls the command 'main'
    code, _, err = reconcile("device", "--tag", "production")
    assert code == 1
    assert err.splitlines() == [
        "error: device: no such file or directory; did you mean 'reconcile devices'? (see 'main --help')"
    ]
    code, _, err = reconcile("--check", "statu")
    assert (code, err.splitlines()) == (
        1,
        ["error: statu: no such file or directory; did you mean 'reconcile status'?"],
    )


def test_a_missing_path_is_an_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile("--check", "no-such-dir")
    assert (code, out) == (1, "")
    assert err.splitlines() == ["error: no-such-dir: no such file or directory"]
