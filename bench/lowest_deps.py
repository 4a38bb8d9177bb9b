"""Run the test suite against the lowest dependency versions that ``pyproject.toml`` allows.

    python bench/lowest_deps.py [--python PATH] [--venv DIR] [-- PYTEST_ARGS...]

Why: a lower bound such as ``jsonschema>=4.23`` is a promise to users that 4.23 works. Nothing in
the normal test run checks it, because ``pip install '.[test]'`` always picks the newest release.
This script keeps the promise honest (issue 9, item 5).

What it does, in a scratch virtual environment (a temporary directory, removed afterwards, or DIR
with ``--venv``, which is kept and reused):

1. reads ``[project] dependencies``, the ``test`` extra and ``[build-system] requires`` from
   ``pyproject.toml`` (with ``tomllib``) and turns every ``>=X`` into ``==X`` (extras and
   environment markers are kept); a requirement without a ``>=`` lower bound is an error, since
   its lowest version cannot be tested;
2. installs those pins in one ``pip install`` (so pip checks that they are compatible with each
   other), using the machine's pip configuration; dependencies of our dependencies resolve to
   whatever pip picks for them (the "lowest direct" strategy: those are not our promises);
3. builds and installs the project itself with ``--no-deps --no-build-isolation``, so the pinned
   build backend is the one that builds it;
4. runs ``python -m pytest -q -p no:cacheprovider`` in the project directory with the scratch
   environment's interpreter, and prints the pins, the resolved environment and pytest's output.

The exit code is pytest's (0: all passed, 1: failures, 5: no tests ran, ...). When the pinned
versions cannot be installed at all, the exit code is ``INSTALL_FAILED`` (10), outside pytest's
range, so that a caller can tell "a bound does not install" from "a bound does not pass".

Pick the interpreter with ``--python`` (default: the one running this script), e.g. the lowest
supported one: ``python bench/lowest_deps.py --python /root/.pyenv/versions/3.11.7/bin/python3``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_FAILED = 10

# PEP 508, the subset a pyproject.toml dependency line uses: a name, optional [extras], a
# comma-separated list of version specifiers, an optional "; marker". Written out instead of
# importing `packaging` because this script runs before any environment exists, on a bare
# interpreter; tests/test_lowest_deps.py checks that it agrees with `packaging` on our file.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(
    rf"^\s*(?P<name>{_NAME})\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.*?))?\s*$"
)
_SPEC = re.compile(r"^\s*(?P<op>~=|===|==|!=|<=|>=|<|>)\s*(?P<version>[^\s,]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One dependency line, parsed: what the lowest-version pin is built from."""

    name: str
    extras: tuple[str, ...]
    specifiers: tuple[tuple[str, str], ...]  # (operator, version), in the order written
    marker: str | None

    @property
    def lower_bound(self) -> str | None:
        """The version after ``>=`` (or ``==``: an exact pin is its own lowest); None when there is none."""
        for op, version in self.specifiers:
            if op in (">=", "=="):
                return version
        return None

    def pinned(self) -> str:
        """The requirement with its lower bound as an exact pin: ``name[extras]==X ; marker``.

        Why an error without a bound: "the lowest version" is then whatever pip finds oldest,
        a version nobody chose, and the bound the file should state is missing.
        """
        bound = self.lower_bound
        if bound is None:
            raise ValueError(f"{self.name}: no '>=' lower bound to test; add one to pyproject.toml")
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        marker = f" ; {self.marker}" if self.marker else ""
        return f"{self.name}{extras}=={bound}{marker}"


def parse_requirement(line: str) -> Requirement:
    """Parse one PEP 508 requirement of the form pyproject.toml uses (no URLs); ValueError otherwise."""
    match = _REQUIREMENT.match(line)
    if match is None or "@" in line.split(";", maxsplit=1)[0]:
        raise ValueError(f"cannot parse requirement {line!r}")
    specs: list[tuple[str, str]] = []
    text = match["specs"].strip()
    if text.startswith("(") and text.endswith(")"):  # PEP 508 allows "name (>=1.0)"
        text = text[1:-1]
    for part in filter(None, (p.strip() for p in text.split(","))):
        spec = _SPEC.match(part)
        if spec is None:
            raise ValueError(f"cannot parse version specifier {part!r} in {line!r}")
        specs.append((spec["op"], spec["version"]))
    extras = tuple(e.strip() for e in (match["extras"] or "").split(",") if e.strip())
    return Requirement(match["name"], extras, tuple(specs), match["marker"] or None)


def declared_requirements(pyproject: Path, extra: str = "test") -> list[Requirement]:
    """The build requirements, the runtime dependencies and the ``extra`` of ``pyproject``, in order."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    lines = [
        *data.get("build-system", {}).get("requires", []),
        *data["project"].get("dependencies", []),
        *data["project"].get("optional-dependencies", {}).get(extra, []),
    ]
    return [parse_requirement(line) for line in lines]


def lowest_pins(pyproject: Path, extra: str = "test") -> list[str]:
    """Every declared requirement pinned at its lower bound (see ``Requirement.pinned``)."""
    return [req.pinned() for req in declared_requirements(pyproject, extra)]


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment (POSIX layout, or Windows' Scripts/)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() else venv / "Scripts" / "python.exe"


def child_env(venv: Path) -> dict[str, str]:
    """The environment for commands in the scratch venv: its bin first, nothing leaking in.

    Why: a PYTHONPATH or another activated venv of the caller would let the suite import packages
    that are not the pinned ones, and the run would prove nothing about the bounds.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv_python(venv).parent), env.get("PATH", "")])
    return env


def run(cmd: list[str], env: dict[str, str], *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the project directory, echoing it first so the log can be replayed by hand."""
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=capture, check=False)


def main(argv: list[str] | None = None) -> int:
    """Create the venv, install the lowest pins and the project, run pytest; return pytest's code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv (default: this one)")
    parser.add_argument("--venv", type=Path, help="keep the venv in DIR (reused when it exists)")
    parser.add_argument("--extra", default="test", help="optional-dependencies group to include (default: test)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    try:
        pins = lowest_pins(ROOT / "pyproject.toml", args.extra)
    except ValueError as err:
        print(f"lowest_deps: {err}", file=sys.stderr)
        return INSTALL_FAILED

    scratch: Path | None = None
    if args.venv is not None:
        venv: Path = args.venv
    else:
        scratch = Path(tempfile.mkdtemp(prefix="lowest-deps-"))
        venv = scratch / "venv"
    try:
        if not venv_python(venv).exists():
            created = subprocess.run([args.python, "-m", "venv", str(venv)], check=False)
            if created.returncode != 0:
                return INSTALL_FAILED
        python = str(venv_python(venv))
        env = child_env(venv)
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if run([*pip, *pins], env).returncode != 0:
            print("lowest_deps: the lower bounds do not install together on this interpreter", file=sys.stderr)
            return INSTALL_FAILED
        if run([*pip, "--no-deps", "--no-build-isolation", "--force-reinstall", "."], env).returncode != 0:
            print("lowest_deps: the project does not build with the lowest build requirements", file=sys.stderr)
            return INSTALL_FAILED

        version = run([python, "-c", "import sys; print(sys.version.split()[0])"], env, capture=True).stdout
        frozen = run([python, "-m", "pip", "freeze", "--exclude-editable"], env, capture=True).stdout
        print(f"\nPython {version.strip()} ({args.python})")
        print("pinned (lower bounds from pyproject.toml):")
        for pin in pins:
            print(f"  {pin}")
        print("resolved environment (pip freeze):")
        for line in frozen.splitlines():
            print(f"  {line}")
        print(flush=True)

        tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args], env)
        print(f"\nlowest_deps: pytest exit code {tests.returncode}", flush=True)
        return tests.returncode
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
