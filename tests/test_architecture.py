"""The layout's rules, checked on the source: who may import whom, and no import cycles.

The pure core stays pure only if nothing lets I/O creep in; the local factory stays a separate world
only if it never reaches into the reconciler's shell. Imports inside functions count too: a lazy
import still couples two modules (it only hides the cycle until the function runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"

# The modules the pure core may use: values, types and arithmetic; no files, clocks or sockets. All are
# the stdlib's but msgspec, whose Struct is the value class of the whole package (CONTRIBUTING.md says why).
PURE_MODULES = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "difflib",
    "enum",
    "functools",
    "itertools",
    "math",
    "msgspec",
    "re",
    "typing",
}

# The packages by role (docs/architecture.md draws them), and the leaves every package may use.
LEAVES = [
    "reconciler.errors",
    "reconciler.safetext",
    "reconciler.durations",
    "reconciler.resources",
    "reconciler.terminal",
    "reconciler.names",
    "reconciler.files",
    "reconciler.connections",
    "reconciler.manifestfiles",
]
PACKAGES = [
    "reconciler.core",
    "reconciler.manifest",
    "reconciler.signing",
    "reconciler.factory",
    "reconciler.apply",
    "reconciler.render",
    "reconciler.cli",
    "reconciler.github",
    "reconciler.localfactory",
]
IO = ["httpx", "git", "yaml", "sqlite3", "os", "time", "socket", "subprocess", "pathlib"]

# (importer prefix, imported prefixes it must not use, why)
FORBIDDEN = [
    (
        "reconciler.core",
        [p for p in PACKAGES if p != "reconciler.core"] + IO,
        "the planner is pure: no client, factory, signing or I/O",
    ),
    (
        "reconciler.localfactory",
        [p for p in PACKAGES if p not in ("reconciler.localfactory", "reconciler.signing")],
        "the local factory is a separate world behind HTTP: it imports nothing of the reconciler's shell",
    ),
    (
        "reconciler.render",
        [
            "reconciler.factory",
            "reconciler.apply",
            "reconciler.cli",
            "reconciler.localfactory",
            "reconciler.signing",
            "httpx",
        ],
        "rendering turns a plan or a status report into text: no client, no factory, no keys",
    ),
    (
        "reconciler.signing",
        [p for p in PACKAGES if p != "reconciler.signing"] + ["httpx"],
        "signing is a leaf: the factory and the reconciler both use it",
    ),
    (
        "reconciler.manifest",
        [p for p in PACKAGES if p not in ("reconciler.manifest", "reconciler.core")] + ["httpx"],
        "manifests become specs without a backend",
    ),
    (
        "reconciler.factory",
        ["reconciler.apply", "reconciler.render", "reconciler.cli", "reconciler.github", "reconciler.manifest"],
        "reading the factory knows nothing of writing, rendering or the command line",
    ),
    (
        "reconciler.apply",
        ["reconciler.cli", "reconciler.github", "reconciler.manifest"],
        "applying a plan knows nothing of the command line or GitHub",
    ),
    (
        "reconciler.github",
        [
            "reconciler.factory",
            "reconciler.apply",
            "reconciler.cli",
            "reconciler.localfactory",
            "reconciler.signing",
        ],
        "the GitHub side reads a rendered plan and talks to GitHub only (its own httpx client)",
    ),
    (
        "reconciler.github._workflow",
        ["reconciler.github._report", "reconciler.github._comment", "reconciler.github._cli"],
        "the workflow-command module is the github package's leaf",
    ),
]

# Submodules other packages may import by name besides a package's __init__: the renderers (one per
# result) and the commands. Everything else of a package is reached through its __init__.
PUBLIC_SUBMODULES = {
    "reconciler.render.plan",
    "reconciler.render.status",
    "reconciler.render.report",
    "reconciler.cli.status",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (anywhere in the file), resolved to a module of ours where possible."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = candidate in known and alias.name not in exported_by(base)
                found.add(candidate if is_module else base)
    return found


def exported_by(package: str) -> set[str]:
    """The names a package's ``__init__`` hands on (its ``__all__``): ``from reconciler.factory import
    observe`` imports the function the package exports, not the module of the same name."""
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    if not init.exists():
        return set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize(("importer", "forbidden", "why"), FORBIDDEN, ids=[rule[0] for rule in FORBIDDEN])
def test_no_module_imports_across_a_forbidden_line(importer, forbidden, why):
    violations = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items()
        if _within(name, importer)
        for target in targets
        for banned in forbidden
        if _within(target, banned)
    )
    assert violations == [], f"{why}: " + "; ".join(violations)


# What the local factory may use of the reconciler, directly or through what it imports: leaves only.
# A list of what it may use rather than of what it may not, so a shell module added later is kept out too.
LOCALFACTORY_MAY_USE = [
    "reconciler.signing",
    "reconciler.errors",
    "reconciler.safetext",
    "reconciler.durations",
    "reconciler.terminal",
    "reconciler.names",
]


def test_the_top_level_holds_only_packages_and_leaves():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == sorted(name.rsplit(".", 1)[1] for name in LEAVES)
    packages = sorted(f"reconciler.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(PACKAGES)


def test_packages_are_used_through_their_public_surface():
    """Another package imports ``reconciler.P`` (its ``__init__``), never one of P's modules, so a
    package can move its insides without touching its users (python-tuf's ``tuf/api``, httpx's
    ``__init__`` in front of private modules)."""
    edges = graph()
    reached_inside = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        for target in targets
        if target in edges
        for package in PACKAGES
        if _within(target, package)
        and target != package
        and not _within(name, package)
        and target not in PUBLIC_SUBMODULES
        and not target.endswith("__main__")
    )
    assert reached_inside == []


def test_the_local_factory_uses_only_leaves_of_the_reconciler():
    """Nothing the local factory imports, nor anything those modules import, leaves that small world."""

    def inside(name: str) -> bool:
        return name == "reconciler" or any(
            _within(name, ok) for ok in ["reconciler.localfactory", *LOCALFACTORY_MAY_USE]
        )

    edges = graph()
    outside = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        if inside(name)
        for target in targets
        if target in edges and not inside(target)
    )
    assert outside == [], "the local factory is a separate world: " + "; ".join(outside)


def test_the_core_uses_only_pure_modules():
    ours = {"reconciler.core", "reconciler.errors"}
    impure = sorted(
        f"{name} imports {target}"
        for name, targets in graph().items()
        if _within(name, "reconciler.core")
        for target in targets
        if not any(_within(target, allowed) for allowed in ours) and target.split(".")[0] not in PURE_MODULES
    )
    assert impure == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among our modules (a package's __init__ importing its own children excepted), or None."""

    def children_of_init(name: str, target: str) -> bool:
        return target.startswith(name + ".")

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in edges or children_of_init(node, target):
                continue
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_there_is_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert find_cycle({"p": {"p.x"}, "p.x": set()}) is None


def test_tests_share_helpers_not_other_test_modules():
    """What several test modules use lives in ``tests/helpers``: importing a test module pulls in its
    tests and fixtures, and moving or deleting that module breaks another one for no visible reason."""
    tests = PACKAGE.parent / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(tests.parent)}: {name}"
                for name in names
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
            ]
    assert offenders == []


MAX_MODULE_LINES = 800


def test_no_module_is_over_800_lines():
    """A module past 800 lines has grown a second job (core/plan.py had seven at 1,367): split it by job."""
    long = sorted(
        f"{path.relative_to(PACKAGE.parent)}: {lines} lines"
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    )
    assert long == []
