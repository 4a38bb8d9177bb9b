"""Names that become URL path segments or a git ref component: refused at the manifest line, and the
rules (reconciler/names.py) agree with git and with schemas/wave.schema.json."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli.reconcile import main
from reconciler.names import NameKind, problem, ref_component_problem

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "wave.schema.json").read_text())

# Characters git's ref rules single out, and a few that are ordinary (ASCII and not).
GIT_ALPHABET = st.sampled_from(list("a0_-.lockLOCK@{}~^:?*[]\\ \t\x01\x1f\x7féд\u202e"))


def git_accepts(component: str) -> bool:
    """git's verdict on ``component`` alone (``--allow-onelevel``; '@' is refused only as a whole name)
    and as the lease ref's last component (the only test for a name git would read as an option)."""
    full = subprocess.run(["git", "check-ref-format", f"refs/reconcile/locks/{component}"], check=False)
    if component.startswith("-"):
        return full.returncode == 0
    alone = subprocess.run(["git", "check-ref-format", "--allow-onelevel", component], check=False)
    return full.returncode == 0 and alone.returncode == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(GIT_ALPHABET, max_size=12))
def test_the_ref_rules_are_git_s(component):
    assert (ref_component_problem(component) is None) == git_accepts(component)


@pytest.mark.parametrize(
    "component", ["a..b", ".a", "a.", "a.lock", ".lock", "@", "a@{b", "a b", "a\\b", "a:b", "", "x.lock.", "-a"]
)
def test_the_ref_rules_on_known_cases(component):
    assert (ref_component_problem(component) is None) == git_accepts(component)


def test_a_slash_makes_two_components_not_one():
    assert ref_component_problem("a/b") == "must not contain '/'"


@settings(max_examples=500)
@given(st.text(st.sampled_from(list("aZ9_.-+l ock/é")), max_size=10))
def test_each_pattern_says_what_problem_says(name):
    for kind in NameKind:
        assert (re.fullmatch(kind.pattern, name) is not None) == (problem(kind, name) is None), (kind, name)


def test_a_factory_name_is_a_component_git_accepts():
    for name in ("a..b", ".hidden", "prod.", "prod.lock"):
        assert problem(NameKind.FACTORY, name) is not None and ref_component_problem(name) is not None
    assert problem(NameKind.FACTORY, "acme-prod.v2") is None


def test_the_schema_uses_the_name_rules():
    properties, defs = SCHEMA["properties"], SCHEMA["$defs"]
    assert defs["name"]["pattern"] == NameKind.WAVE.pattern
    assert defs["tag"]["pattern"] == NameKind.TAG.pattern
    assert properties["factory"]["pattern"] == NameKind.FACTORY.pattern
    assert defs["phase"]["properties"]["group"]["pattern"] == NameKind.GROUP.pattern


HOSTILE = """\
apiVersion: reconciler/v1
kind: Wave
name: ..
factory: a..b
target: 46
tag: "."
sourceTag: ..
phases:
  - group: ..
  - group: canary.
---
apiVersion: reconciler/v1
kind: Wave
name: fine
factory: prod.lock
target: 46
tag: production
complete: true
---
apiVersion: reconciler/v1
kind: Wave
name: fine-2
factory: .hidden
target: 46
tag: production
complete: true
"""


def test_check_refuses_dot_segments_and_ref_breaking_factories_at_their_lines(tmp_path, monkeypatch):
    (tmp_path / "w.yaml").write_text(HOSTILE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--check", "w.yaml"])
    assert result.exit_code == 1
    url = "is a segment of the factory's URL paths, where '{}' means {} directory, so requests for it would reach"
    ref = "the factory name is a component of the git ref refs/reconcile/locks/<factory> (the apply lease)"
    lines = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        "w.yaml:3:7",
        "w.yaml:4:10",
        "w.yaml:6:6",
        "w.yaml:7:12",
        "w.yaml:9:12",
        "w.yaml:15:10",
        "w.yaml:23:10",
    ]
    assert lines[0].startswith("w.yaml:3:7: name must not be '..': the wave name " + url.format("..", "the parent"))
    assert lines[0].endswith("; add letters or digits, e.g. rel-46")
    assert lines[1].startswith(f"w.yaml:4:10: factory must not contain '..': {ref}, and git refuses it; use 1-100")
    assert lines[2].startswith("w.yaml:6:6: tag must not be '.': the tag " + url.format(".", "this"))
    assert lines[3].startswith("w.yaml:7:12: sourceTag must not be '..'")
    assert lines[4].startswith("w.yaml:9:12: group must not be '..': the device group name is a segment")
    assert lines[5].startswith(f"w.yaml:15:10: factory must not end with '.lock': {ref}")
    assert lines[6].startswith(f"w.yaml:23:10: factory must not start with '.': {ref}")


def test_a_name_with_dots_and_more_is_fine(tmp_path, monkeypatch):
    (tmp_path / "w.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: ...x\nfactory: a.b-c_d\ntarget: 46\ntag: v1.2+b\n"
        "phases:\n  - group: .canary\n"
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--check", "w.yaml"])
    assert (result.exit_code, result.stdout) == (0, "1 manifest, 1 wave: ok\n"), result.stderr
