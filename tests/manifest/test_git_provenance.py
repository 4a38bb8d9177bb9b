"""Provenance and the clean check, read with the git command, give GitPython's answers to the byte.

The oracle is the GitPython code this module replaced on the common path (``gitpython_*`` below),
run on real repositories built with the git CLI in every state a release repository can be in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git as gitpython
import pytest

import reconciler
from reconciler.errors import UserError
from reconciler.manifest import _git as gitrepo
from reconciler.manifest import _worktree

AUTHOR = {
    "GIT_AUTHOR_NAME": "Zoë Release",
    "GIT_AUTHOR_EMAIL": "release@example.com",
    "GIT_COMMITTER_NAME": "Release Bot",
    "GIT_COMMITTER_EMAIL": "bot@example.com",
}


def run(
    where: Path, *args: str, date: str = "2026-12-05T10:00:00+02:00", stdin: bytes | None = None, check: bool = True
) -> bytes:
    env = {**os.environ, **AUTHOR, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(
        ["git", "-C", str(where), *args], check=check, capture_output=True, env=env, input=stdin
    ).stdout


def commit(repo: Path, files: dict[str, str], message: str = "a change", **kw: Any) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    run(repo, "add", "-A")
    run(repo, "commit", "-q", "-m", message, **kw)


# The GitPython implementation this module used before, kept as the oracle (the repository opened by
# gitrepo.open_repo, which still opens it with GitPython for --rev and --base).
def gitpython_dirty_files(repo: gitpython.Repo) -> list[str]:
    changed = {path for d in repo.index.diff(None) if (path := d.a_path or d.b_path)}
    if repo.head.is_valid():
        changed |= {path for d in repo.index.diff("HEAD") if (path := d.a_path or d.b_path)}
    return sorted(changed) + sorted(set(repo.untracked_files) - changed)


def gitpython_provenance(path: str | os.PathLike[str], rev: str | None = None) -> dict[str, Any]:
    with gitrepo.open_repo(path) as repo:
        root = os.fspath(repo.working_tree_dir or repo.git_dir)
        data: dict[str, Any] = {"repository": root, "commit": None, "dirty": False}
        if rev is None:
            data["dirty"] = bool(repo.working_tree_dir) and bool(gitpython_dirty_files(repo))
            if not repo.head.is_valid():
                return data
        commit = repo.commit(rev or "HEAD")
        summary = commit.summary
        data.update(
            commit=commit.hexsha,
            author=f"{commit.author.name} <{commit.author.email}>",
            date=commit.authored_datetime.isoformat(),
            subject=summary if isinstance(summary, str) else summary.decode("utf-8", "replace"),
        )
        if rev:
            data["rev"] = rev
        elif not repo.head.is_detached:
            data["branch"] = repo.active_branch.name
        return data


def gitpython_clean_error(path: str | os.PathLike[str]) -> str | None:
    with gitrepo.open_repo(path) as repo:
        root = os.fspath(repo.working_tree_dir or repo.git_dir)
        if not repo.working_tree_dir:
            return None
        if not repo.head.is_valid():
            return f"{root}: the git repository has no commit yet: commit the manifests, or pass --allow-dirty"
        dirty = gitpython_dirty_files(repo)
        if dirty:
            more = f" and {len(dirty) - 1} more" if len(dirty) > 1 else ""
            return f"{root}: uncommitted changes ({dirty[0]}{more}): commit them, or pass --allow-dirty"
    return None


def clean_error(path: str | os.PathLike[str]) -> str | None:
    try:
        gitrepo.ensure_clean(path)
    except UserError as error:
        return str(error)
    return None


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return tmp_path


def _repo(home: Path) -> Path:
    repo = home / "releases-repo"
    repo.mkdir()
    run(repo, "init", "-q", "-b", "feature/wave-42")
    commit(
        repo,
        {"releases/v41.yaml": "name: v41\n", "releases/uuids/a.lst": "x\n", "README.md": "r\n", "? odd": "o\n"},
        "first",
    )
    commit(
        repo,
        {"releases/v42.yaml": "name: v42\n"},
        "release v42\n\nwith a body\nof lines\n",
        date="2026-12-05T10:00:00-05:30",
    )
    return repo


def _edit(repo: Path) -> None:
    (repo / "releases/v41.yaml").write_text("edited\n")


def _stage(repo: Path) -> None:
    (repo / "README.md").write_text("staged\n")
    run(repo, "add", "README.md")


def _untracked(repo: Path) -> None:
    (repo / "releases/new dir").mkdir()
    (repo / "releases/new dir/z v43.yaml").write_text("x\n")
    (repo / "releases/é.yaml").write_text("x\n")
    (repo / "releases/line\nbreak.yaml").write_text("x\n")


def _ignored(repo: Path) -> None:
    commit(repo, {".gitignore": "*.cache\n"}, "ignore caches")
    (repo / "plan.cache").write_text("x\n")


def _deleted(repo: Path) -> None:
    (repo / "releases/v42.yaml").unlink()


def _renamed(repo: Path) -> None:
    run(repo, "mv", "releases/v41.yaml", "releases/v41-old.yaml")
    run(repo, "mv", "? odd", "releases/odd")  # the old name, a record of its own, reads like an untracked file's
    run(repo, "rm", "-q", "--cached", "README.md")


def _touched(repo: Path) -> None:
    os.utime(repo / "releases/v41.yaml", (1_000_000_000, 1_000_000_000))  # the same content, a new time


def _everything(repo: Path) -> None:
    for change in (_edit, _stage, _untracked, _deleted):
        change(repo)


def _conflict(repo: Path) -> None:
    run(repo, "checkout", "-q", "-b", "other", "HEAD~1")
    commit(repo, {"releases/v42.yaml": "name: v42-other\n"}, "other v42")
    run(repo, "checkout", "-q", "feature/wave-42")
    commit(repo, {"releases/v42.yaml": "name: v42-mine\n"}, "my v42")
    run(repo, "merge", "-q", "other", check=False)
    assert b"releases/v42.yaml" in run(repo, "diff", "--name-only", "--diff-filter=U")


def _intent_to_add_and_type_change(repo: Path) -> None:
    (repo / "releases/v44.yaml").write_text("x\n")
    run(repo, "add", "-N", "releases/v44.yaml")
    (repo / "README.md").unlink()
    (repo / "README.md").symlink_to("releases/v41.yaml")


def _detached(repo: Path) -> None:
    run(repo, "checkout", "-q", "--detach", "HEAD~1")


def _latin1_subject(repo: Path) -> None:
    (repo / "README.md").write_text("latin-1\n")
    run(repo, "add", "README.md")
    run(repo, "-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-F", "-", stdin="café déjà\n".encode("latin-1"))


def _raw_commit(repo: Path) -> None:
    """A commit git's porcelain would not write: bytes that are not UTF-8, a signature, an encoding header."""
    tree, parent = (run(repo, "rev-parse", rev).decode().strip() for rev in ("HEAD^{tree}", "HEAD"))
    raw = (
        f"tree {tree}\nparent {parent}\n"
        "author Zoë Release <release@example.com> 1780000000 +1400\n"
        "committer Release Bot <bot@example.com> 1780000000 +1400\n"
        "encoding ISO-8859-1\n"
        "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEz\n -----END PGP SIGNATURE-----\n\n"
    ).encode() + b"bad \xff\xfe bytes\xc3\n\nbody \xff\n"
    commit = run(repo, "hash-object", "-t", "commit", "-w", "--stdin", stdin=raw).decode().strip()
    run(repo, "update-ref", "HEAD", commit)


def _utc_minus_zero(repo: Path) -> None:
    commit(repo, {"README.md": "-0000\n"}, "odd offset", date="1700000000 -0000")


STATES: dict[str, Callable[[Path], None]] = {
    "clean": lambda repo: None,
    "unstaged edit": _edit,
    "staged change": _stage,
    "untracked files with spaces, newlines, non-ASCII": _untracked,
    "ignored file": _ignored,
    "deleted file": _deleted,
    "staged rename and unstaged removal": _renamed,
    "timestamp only": _touched,
    "all at once": _everything,
    "merge conflict": _conflict,
    "intent to add, type change": _intent_to_add_and_type_change,
    "detached head": _detached,
    "latin-1 subject with an encoding header": _latin1_subject,
    "signed commit, subject not UTF-8": _raw_commit,
    "offset -0000": _utc_minus_zero,
}


@pytest.mark.parametrize("state", STATES)
def test_work_tree_provenance_and_clean_check_match_gitpython(home, state):
    repo = _repo(home)
    STATES[state](repo)
    for path in (repo, repo / "releases", repo / "releases/v41.yaml", repo / "releases/not-yet/v99.yaml"):
        expected = gitpython_provenance(path)
        assert gitrepo.provenance(path) == expected
        assert list(gitrepo.provenance(path)) == list(expected)  # the plan's JSON keeps the order
        assert clean_error(path) == gitpython_clean_error(path)
    assert gitrepo.git_context([str(repo / "releases")], rev=None, require_clean=False) == (
        None,
        gitpython_provenance(repo),
    )
    assert gitrepo.provenance(repo, rev="HEAD") == gitpython_provenance(repo, rev="HEAD")


# Changed tracked files (a rename by its new name, README.md staged for removal), then untracked ones not among them.
DIRTY = [
    "README.md",
    "releases/odd",
    "releases/v41-old.yaml",
    "releases/v42.yaml",
    "releases/line\nbreak.yaml",
    "releases/new dir/z v43.yaml",
    "releases/é.yaml",
]


def test_the_dirty_files_are_gitpythons_in_its_order(home):
    repo = _repo(home)
    _everything(repo)
    _renamed(repo)
    expected = gitpython_clean_error(repo)
    assert expected is not None and "(README.md and 6 more)" in expected
    assert clean_error(repo) == expected
    state = _worktree.work_tree(_worktree.found(repo))
    with gitrepo.open_repo(repo) as oracle:
        assert list(state.dirty) == gitpython_dirty_files(oracle) == DIRTY


def test_a_repository_without_commits(home):
    repo = home / "empty"
    repo.mkdir()
    run(repo, "init", "-q")
    assert (
        gitrepo.provenance(repo)
        == gitpython_provenance(repo)
        == {"repository": str(repo), "commit": None, "dirty": False}
    )
    assert clean_error(repo) == gitpython_clean_error(repo)
    (repo / "w.yaml").write_text("x\n")
    assert gitrepo.provenance(repo) == gitpython_provenance(repo)
    assert gitrepo.provenance(repo)["dirty"] is True
    assert clean_error(repo) == gitpython_clean_error(repo)


def test_bare_repositories_and_paths_inside_git_directories(home):
    work = _repo(home)
    bare = home / "releases.git"
    run(home, "clone", "-q", "--bare", str(work), str(bare))
    empty = home / "empty.git"
    run(home, "init", "-q", "--bare", str(empty))
    for path in (bare, bare / "refs", empty, work / ".git", work / ".git/refs/heads"):
        assert gitrepo.provenance(path) == gitpython_provenance(path)
        assert clean_error(path) == gitpython_clean_error(path)
    assert gitrepo.provenance(bare)["repository"] == str(bare)
    assert gitrepo.git_context([str(bare)], rev=None, require_clean=True) == (None, gitpython_provenance(bare))


def test_submodules_count_as_gitpython_counts_them(home):
    repo = _repo(home)
    inner = home / "inner"
    inner.mkdir()
    run(inner, "init", "-q")
    commit(inner, {"keys.lst": "k\n"}, "keys")
    run(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "keys")
    run(repo, "commit", "-q", "-m", "keys as a submodule")
    sub = repo / "keys"
    dirty = []
    for change in (
        lambda: (sub / "scratch").write_text("untracked in the submodule\n"),  # not dirty for GitPython
        lambda: (sub / "keys.lst").write_text("edited\n"),
        lambda: run(sub, "commit", "-q", "-am", "moved on"),
    ):
        change()
        assert gitrepo.provenance(repo) == gitpython_provenance(repo)
        assert clean_error(repo) == gitpython_clean_error(repo)
        dirty.append(gitrepo.provenance(repo)["dirty"])
    assert dirty == [False, True, True]


def test_a_repository_reached_through_a_symbolic_link_keeps_the_name_gitpython_gives(home):
    repo = _repo(home)
    link = home / "link"
    link.symlink_to(repo)
    _edit(repo)
    for path in (link, link / "releases"):
        assert gitrepo.provenance(path) == gitpython_provenance(path)
        assert gitrepo.provenance(path)["repository"] == str(link)
        assert clean_error(path) == gitpython_clean_error(path)


def test_paths_in_two_repositories_or_none(home):
    repo = _repo(home)
    other = home / "other"
    other.mkdir()
    run(other, "init", "-q")
    plain = home / "plain"
    plain.mkdir()
    with pytest.raises(UserError, match="not all in one git repository"):
        gitrepo.git_context([str(repo), str(other)], rev=None, require_clean=False)
    with pytest.raises(UserError, match="not all in one git repository"):
        gitrepo.git_context([str(repo), str(plain)], rev=None, require_clean=False)
    assert gitrepo.git_context([str(plain)], rev=None, require_clean=False) == (None, None)
    with pytest.raises(UserError, match=f"^not a git repository: {plain}$"):
        gitrepo.provenance(plain)
    with pytest.raises(UserError, match=f"^not a git repository: {plain}$"):
        gitrepo.ensure_clean(plain)
    with pytest.raises(UserError, match=f"^not a git repository: {plain}$"):
        gitpython_provenance(plain)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    source = str(Path(reconciler.__file__).parents[1])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "PYTHONPATH": source}, check=False
    )


def test_the_common_path_does_not_import_gitpython(home):
    repo = _repo(home)
    _edit(repo)
    code = (
        "import sys; from reconciler.manifest import git_context\n"
        f"print(git_context([{str(repo / 'releases')!r}], rev=None, require_clean=False)[1]['dirty'])\n"
        f"try:\n    git_context([{str(repo)!r}], rev=None, require_clean=True)\n"
        "except Exception as error:\n    print(type(error).__name__)\n"
        "print('git' in sys.modules)"
    )
    done = _python(code, dict(os.environ))
    assert done.stdout.split() == ["True", "UserError", "False"], done.stderr


def test_without_git_installed_the_error_is_gitpythons_as_before(home):
    repo = _repo(home)
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_PYTHON")}
    env["PATH"] = str(home / "no-git-here")
    ours = _python(
        f"from reconciler.manifest import git_context; git_context([{str(repo)!r}], rev=None, require_clean=False)", env
    )
    theirs = _python("import git", env)
    assert ours.returncode != 0
    assert ours.stderr.strip().splitlines()[-1] == theirs.stderr.strip().splitlines()[-1]
    assert "ImportError" in ours.stderr
