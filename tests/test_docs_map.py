"""CONTRIBUTING.md's module map matches the tree: every module of ``reconciler/`` is listed with its
job, and nothing listed is missing. A module added, moved or removed without its line fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+(?:/|\.py))(?:\s{2,}\S.*)?$")


def listed_modules(text: str) -> set[str]:
    """The paths of the tree drawn in the ``How the code is laid out`` block, from its indentation."""
    section = text.split("## How the code is laid out", 1)[1]
    block = section.split("```", 2)[1]
    stack: list[tuple[int, str]] = []
    found: set[str] = set()
    for line in block.splitlines():
        match = ENTRY.match(line)
        if not match:
            continue  # a job's description running on to the next line
        indent, name = len(match["indent"]), match["name"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(part for _, part in stack) + name
        if name.endswith("/"):
            stack.append((indent, name))
        else:
            found.add(path)
    return found


def modules_in_tree() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "reconciler").rglob("*.py")
        if p.name not in {"__init__.py", "__main__.py"}
    }


def test_contributing_lists_every_module_and_no_other():
    listed = {p for p in listed_modules((ROOT / "CONTRIBUTING.md").read_text()) if p.startswith("reconciler/")}
    tree = modules_in_tree()
    assert sorted(tree - listed) == [], "modules missing from CONTRIBUTING.md's map"
    assert sorted(listed - tree) == [], "CONTRIBUTING.md lists modules that do not exist"


def test_the_map_reader_follows_indentation():
    block = "## How the code is laid out\n```\nreconciler/\n  a/   job\n    b.py   job\n           more words\n  c.py   job\n```\n"
    assert listed_modules(block) == {"reconciler/a/b.py", "reconciler/c.py"}
