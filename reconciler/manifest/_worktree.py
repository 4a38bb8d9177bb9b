"""The work tree a run reads its manifests from, through the ``git`` command: its repository, its state
(commit, branch, dirty files) and the commit's fields, for the plan's provenance and apply's clean check.

Every plan and apply reads these (``git_context`` in _git.py without ``--rev``), so this common path runs
git itself, three processes (``rev-parse`` per path, one ``status``, one ``cat-file``): importing
GitPython alone costs more CPU than the whole read, and GitPython would run more processes besides. Its
answers are GitPython's to the byte (the repository path as GitPython names it, the same dirty files in
the same order, the commit's fields parsed as GitPython parses them), as
tests/manifest/test_git_provenance.py checks against GitPython itself.
"""

from __future__ import annotations

import io
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from reconciler.errors import UserError

if TYPE_CHECKING:
    import subprocess

# A plan's ``provenance`` object (schemas/plan.schema.json): repository, commit, dirty, author, date, ...
Provenance = dict[str, Any]

# GitPython's reading of a commit's author line (git/objects/util.py), kept so the fields match.
_ACTOR_EPOCH = re.compile(r"^(?=[^\n]*$).[^ \n]* (.*) (\d+) ([+-]\d+)")
_ONLY_ACTOR = re.compile(r"^.[^ \n]* (.*)$")


def nearest_existing(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute, or its nearest ancestor that exists (a manifest path may not exist yet)."""
    start = os.path.abspath(path)
    while not os.path.exists(start):
        start = os.path.dirname(start)
    return start


def _run_git(cwd: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``git args`` in ``cwd``, as GitPython would run it, with output that no locale or lock changes.

    The executable is GitPython's (``GIT_PYTHON_GIT_EXECUTABLE``, else ``git``); ``GIT_DIR`` is left
    out because GitPython finds the repository from the path, not from the environment (a hook sets
    it). ``GIT_OPTIONAL_LOCKS=0``: reading the state must not rewrite the index under an editor.
    """
    import subprocess  # here, not at the top: a --check, which runs no git, does not load it (8 ms)

    env = {name: value for name, value in os.environ.items() if name != "GIT_DIR"}
    env.update(LC_ALL="C", LANGUAGE="C", GIT_OPTIONAL_LOCKS="0")
    command = [os.environ.get("GIT_PYTHON_GIT_EXECUTABLE") or "git", *args]
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    except FileNotFoundError:
        # No git to run: fail as before this module ran git itself, with the ImportError GitPython
        # raises then, which names the fix (GIT_PYTHON_GIT_EXECUTABLE, or installing git).
        import git  # noqa: F401

        raise


def _git_output(cwd: str, *args: str) -> bytes:
    done = _run_git(cwd, *args)
    if done.returncode != 0:
        raise _failed(cwd, args[0], done)
    return done.stdout


def _failed(cwd: str, command: str, done: subprocess.CompletedProcess[bytes]) -> UserError:
    """git's own complaint, on one line (e.g. a repository another user owns: ``safe.directory``)."""
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit status {done.returncode}"]
    return UserError(f"{cwd}: git {command} failed: {lines[0]}")


class Repository(Struct, frozen=True):
    """The repository holding a path: its root as GitPython names it (the work tree, or a bare repository's
    own directory) and whether it is bare (no work tree to be dirty)."""

    root: str
    bare: bool


def discover(path: str | os.PathLike[str]) -> Repository | None:
    """The repository holding ``path`` (which need not exist yet), found by one ``git rev-parse``.

    git resolves symbolic links where GitPython walks up the path as written; the root is named
    as GitPython names it: the nearest ancestor of the path, as written, that is that directory.
    """
    start = nearest_existing(path)
    cwd = start if os.path.isdir(start) else os.path.dirname(start)
    done = _run_git(
        cwd, "rev-parse", "--is-bare-repository", "--is-inside-work-tree", "--absolute-git-dir", "--show-cdup"
    )
    if done.returncode != 0:
        if b"not a git repository" in done.stderr:
            return None
        raise _failed(cwd, "rev-parse", done)
    bare, inside, git_dir, *cdup = os.fsdecode(done.stdout).split("\n")
    if bare == "true":
        physical = git_dir
    elif inside == "true":
        physical = os.path.normpath(os.path.join(os.path.realpath(cwd), cdup[0]))
    else:  # inside a work tree's .git directory
        physical = os.path.dirname(git_dir)
    physical = os.path.realpath(physical)
    written = start
    while os.path.realpath(written) != physical:
        parent = os.path.dirname(written)
        if parent == written:
            written = physical
            break
        written = parent
    return Repository(written, bare == "true")


class WorkTree(Struct, frozen=True):
    """The state ``git status`` reports: the commit checked out (None before the first), the branch
    (None when detached), and the dirty files (GitPython's ``dirty_files`` order, see ``work_tree``)."""

    commit: str | None
    branch: str | None
    dirty: tuple[str, ...]


def work_tree(repository: Repository) -> WorkTree:
    """One ``git status`` (porcelain v2, so the format is fixed): what GitPython found in four processes.

    Dirty files are the tracked files with uncommitted changes, staged or not (a renamed file by its
    new name, as GitPython's reverse index diff names it), sorted; then the untracked files that
    are not ignored and not among them, sorted.
    """
    if repository.bare:
        commit = _run_git(repository.root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        ref = _run_git(repository.root, "symbolic-ref", "--quiet", "HEAD")
        return WorkTree(
            commit.stdout.decode().strip() if commit.returncode == 0 else None,
            _branch_name(os.fsdecode(ref.stdout.strip())) if ref.returncode == 0 else None,
            (),
        )
    status = _git_output(
        repository.root,
        "status",
        "--porcelain=v2",
        "--branch",
        "-z",
        "--untracked-files=all",
        "--find-renames",
    )
    head: str | None = None
    branch: str | None = None
    changed: set[str] = set()
    untracked: list[str] = []
    records = iter(status.split(b"\0"))
    for record in records:
        text = record.decode("utf-8", "replace")
        if text.startswith("# branch.oid "):
            oid = text.removeprefix("# branch.oid ")
            head = None if oid == "(initial)" else oid
        elif text.startswith("# branch.head "):
            name = text.removeprefix("# branch.head ")
            branch = None if name == "(detached)" else name
        elif text.startswith("1 "):
            fields = text.split(" ", 8)
            if fields[1][0] == "." and fields[2] == "S..U":
                continue  # only untracked files inside a submodule, which GitPython's `git diff` does not show
            changed.add(fields[8])
        elif text.startswith("2 "):
            changed.add(text.split(" ", 9)[9])
            next(records)  # the name before the rename
        elif text.startswith("u "):
            changed.add(text.split(" ", 10)[10])
        elif text.startswith("? "):
            untracked.append(text[2:])
    dirty = sorted(changed) + sorted(set(untracked) - changed)
    return WorkTree(head, branch, tuple(dirty))


def _branch_name(ref: str) -> str:
    """GitPython's ``Reference.name``: the ref without its first two parts (``refs/heads/``)."""
    parts = ref.split("/")
    return ref if len(parts) < 3 else "/".join(parts[2:])


def commit_fields(root: str, commit: str) -> Provenance:
    """A commit's id, author, date and subject from its raw object (one ``git cat-file``), read as GitPython's
    ``Commit`` reads it: UTF-8 with replacement characters (GitPython never applies an ``encoding``
    header), the author line through GitPython's patterns, the author's own UTC offset in the date."""
    stream = io.BytesIO(_git_output(root, "cat-file", "commit", commit))
    stream.readline()  # tree
    line = stream.readline()
    while line.startswith(b"parent"):
        line = stream.readline()
    author_line = line.decode("utf-8", "replace")
    stream.readline()  # committer
    line = stream.readline()
    while line.startswith(b"mergetag "):
        line = stream.readline()
        while line.startswith(b" "):
            line = stream.readline()
    header = line.strip()
    while header:  # the other headers, up to the blank line before the message
        if header[0:7] == b"gpgsig ":
            line = stream.readline()
            while line[0:1] == b" ":
                line = stream.readline()
            if line:
                header = line.strip()
                continue
        header = stream.readline().strip()
    message = stream.read().decode("utf-8", "replace")
    actor, epoch, offset = "", "0", "0"
    if match := _ACTOR_EPOCH.search(author_line):
        actor, epoch, offset = match.groups()
    else:
        only = _ONLY_ACTOR.search(author_line)
        actor = only.group(1) if only else author_line
    return {
        "commit": commit,
        "author": _actor(actor),
        "date": _iso_date(int(epoch), int(offset)),
        "subject": message.split("\n", 1)[0],
    }


def _actor(text: str) -> str:
    """``name <email>`` as GitPython's ``Actor.from_string`` splits it (no brackets: the whole text, email None)."""
    line = text.partition("\n")[0]
    left = line.find("<")
    right = line.find(">", left + 1)
    if left >= 0 and right >= 0:
        return f"{line[:left].rstrip()} <{line[left + 1 : right]}>"
    return f"{text} <None>"


def _iso_date(epoch: int, offset: int) -> str:
    """GitPython's ``authored_datetime.isoformat()``: the time at the author's offset (``+0200`` as 200),
    in UTC when the offset is not a real one."""
    seconds = (abs(offset) // 100) * 3600 + (abs(offset) % 100) * 60
    utc = datetime.fromtimestamp(epoch, UTC)
    try:
        return utc.astimezone(timezone(timedelta(seconds=-seconds if offset < 0 else seconds))).isoformat()
    except ValueError:
        return utc.isoformat()


def work_tree_provenance(repository: Repository, state: WorkTree) -> Provenance:
    data: Provenance = {"repository": repository.root, "commit": None, "dirty": bool(state.dirty)}
    if state.commit is None:
        return data
    data.update(commit_fields(repository.root, state.commit))
    if state.branch is not None:
        data["branch"] = state.branch
    return data


def refuse_unclean(repository: Repository, state: WorkTree) -> None:
    if repository.bare:
        return  # a bare repository has no work tree to be dirty
    if state.commit is None:
        raise UserError(
            f"{repository.root}: the git repository has no commit yet: commit the manifests, or pass --allow-dirty"
        )
    if state.dirty:
        more = f" and {len(state.dirty) - 1} more" if len(state.dirty) > 1 else ""
        raise UserError(
            f"{repository.root}: uncommitted changes ({state.dirty[0]}{more}): commit them, or pass --allow-dirty"
        )


def found(path: str | os.PathLike[str]) -> Repository:
    repository = discover(path)
    if repository is None:
        raise UserError(f"not a git repository: {path}")
    return repository
