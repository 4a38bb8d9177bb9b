"""The dependency lower bounds in pyproject.toml are versions the suite passes with (issue 9, item 5).

The slow test runs ``bench/lowest_deps.py``: a scratch virtual environment with every lower bound
pinned exactly, then this whole suite inside it. The fast tests check the script's small PEP 508
parser against ``packaging`` (installed with pytest), so the pins it builds are the bounds the file
states, not what a mis-parse makes of them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement as PackagingRequirement

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "lowest_deps.py"


def _load_script() -> ModuleType:
    """Import bench/lowest_deps.py by path: bench/ is scripts, not a package."""
    spec = importlib.util.spec_from_file_location("lowest_deps", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


lowest_deps = _load_script()


def _declared_lines() -> list[str]:
    """Every requirement string the script reads, straight from pyproject.toml."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [
        *data["build-system"]["requires"],
        *data["project"]["dependencies"],
        *data["project"]["optional-dependencies"]["test"],
    ]


def test_the_parser_reads_every_declared_requirement_as_packaging_does() -> None:
    lines = _declared_lines()
    parsed = lowest_deps.declared_requirements(ROOT / "pyproject.toml")
    assert len(parsed) == len(lines) > 10
    for line, ours in zip(lines, parsed, strict=True):
        theirs = PackagingRequirement(line)
        assert ours.name == theirs.name, line
        assert set(ours.extras) == theirs.extras, line
        assert {f"{op}{v}" for op, v in ours.specifiers} == {str(s) for s in theirs.specifier}, line
        assert (ours.marker or None) == (str(theirs.marker) if theirs.marker else None), line
        lower = [s.version for s in theirs.specifier if s.operator in (">=", "==")]
        assert lower, f"{line}: every dependency needs a lower bound the bench can test"
        pin = PackagingRequirement(ours.pinned())
        assert (pin.name, pin.extras, [str(s) for s in pin.specifier]) == (
            theirs.name,
            theirs.extras,
            [f"=={lower[0]}"],
        )


@pytest.mark.parametrize(
    ("line", "pinned"),
    [
        ("securesystemslib[crypto] >= 1.6", "securesystemslib[crypto]==1.6"),
        ("foo>=1.2,<2", "foo==1.2"),
        ("foo<2, >=1.2", "foo==1.2"),
        ("foo (>=1.2)", "foo==1.2"),
        ("foo[a, b]>=3 ; python_version < '3.12'", "foo[a,b]==3 ; python_version < '3.12'"),
    ],
)
def test_a_lower_bound_becomes_an_exact_pin_keeping_extras_and_markers(line: str, pinned: str) -> None:
    assert lowest_deps.parse_requirement(line).pinned() == pinned


@pytest.mark.parametrize("line", ["foo", "foo<2", "foo~=1.0"])
def test_a_requirement_without_a_lower_bound_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="no '>=' lower bound"):
        lowest_deps.parse_requirement(line).pinned()


def test_an_exact_pin_is_its_own_lowest_version() -> None:
    assert lowest_deps.parse_requirement("ruff==0.17.6").pinned() == "ruff==0.17.6"


@pytest.mark.parametrize("line", ["foo @ https://example.org/foo.whl", "foo >>= 1", "[x]>=1"])
def test_what_the_parser_does_not_understand_is_an_error_not_a_guess(line: str) -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        lowest_deps.parse_requirement(line)


@pytest.mark.slow
def test_the_suite_passes_with_every_dependency_at_its_lower_bound(tmp_path: Path) -> None:
    """Minutes: installs the lowest versions (pip, network or local index) and runs the whole suite."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--python", sys.executable, "--venv", str(tmp_path / "venv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for pin in lowest_deps.lowest_pins(ROOT / "pyproject.toml"):
        assert f"  {pin}\n" in result.stdout  # the pins are printed, so a log shows what was tested
    summary = result.stdout.rstrip().splitlines()[-3:]
    assert any(" passed" in line and "failed" not in line for line in summary), output[-6000:]
