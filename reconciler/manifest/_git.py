"""The release repository in git: manifests at a revision, what changed since a base, provenance.

GitOps means the committed state is the desired state. So ``--rev`` reads manifests and UUID
files straight from git's object store (the work tree is never touched, so it works while
someone edits, and in a bare clone); ``--base`` narrows a pull request's plan to the waves
whose manifest or UUID files it changes; every plan records the commit it was made from;
and apply refuses a work tree with uncommitted changes, whose state no commit describes.

Every plan and apply reads its repository, work tree state and commit (``git_context`` without
``--rev``): that common path runs the ``git`` command itself, three processes (``rev-parse`` per
path, one ``status``, one ``cat-file``), because importing GitPython alone costs more CPU than the
whole read and GitPython would run more processes besides. Its answers are GitPython's to the byte
(the repository path as GitPython names it, the same dirty files in the same order, the commit's
fields parsed as GitPython parses them), as tests/manifest/test_git_provenance.py checks against
GitPython itself. The rarer reads (``--rev``, ``--base``, lost manifests) use GitPython, imported
inside the functions so that ``reconcile --help`` stays fast.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Self

from msgspec import Struct, field

from reconciler.core import LostManifest, ManifestChange, WaveSpec
from reconciler.errors import UserError
from reconciler.manifest._source import MANIFEST_SUFFIXES, MAX_FILE_BYTES, SourceError

if TYPE_CHECKING:
    import subprocess

    from git import Diff, Repo

# A plan's ``provenance`` object (schemas/plan.schema.json): repository, commit, dirty, author, date, ...
Provenance = dict[str, Any]

_SYMLINK_MODE = "120000"
# A wave name as a manifest can write it (and a regular expression can quote it without surprises).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FACTORY_LINE = re.compile(r"^factory:[ \t]*[\"']?([^\"'#\s]+)", re.MULTILINE)
# Commits looked at per wave: the newest that took its name line away, past a few for other factories.
_LOOKUPS = 3
_MAX_LINK_HOPS = 8
# GitPython's reading of a commit's author line (git/objects/util.py), kept so the fields match.
_ACTOR_EPOCH = re.compile(r"^(?=[^\n]*$).[^ \n]* (.*) (\d+) ([+-]\d+)")
_ONLY_ACTOR = re.compile(r"^.[^ \n]* (.*)$")


def _nearest_existing(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute, or its nearest ancestor that exists (a manifest path may not exist yet)."""
    start = os.path.abspath(path)
    while not os.path.exists(start):
        start = os.path.dirname(start)
    return start


def open_repo(path: str | os.PathLike[str]) -> Repo:
    """The git repository containing ``path`` (which need not exist yet); one line if there is none."""
    import git

    start = _nearest_existing(path)
    try:
        return git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UserError(f"not a git repository: {path}") from None


@contextmanager
def _repo(path: str | os.PathLike[str]) -> Iterator[Repo]:
    # Repo keeps `git cat-file --batch` processes alive until closed.
    repo = open_repo(path)
    try:
        yield repo
    finally:
        repo.close()


def _root(repo: Repo) -> str:
    return os.fspath(repo.working_tree_dir or repo.git_dir)


def resolve_commit(repo: Repo, rev: str) -> str:
    """The full hex id of the commit ``rev`` names (branch, tag, sha, ``HEAD~2``...)."""
    import git

    if rev and not rev.startswith("-"):
        try:
            commit: str = repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
            return commit
        except git.GitCommandError:
            pass
    hint = ""
    if repo.git.rev_parse("--is-shallow-repository") == "true":
        hint = " (this is a shallow clone: fetch the history first, e.g. actions/checkout with fetch-depth: 0)"
    raise UserError(f"unknown revision '{rev}' in {_root(repo)}{hint}")


def _repo_relative(root: str, path: str) -> str | None:
    """``path`` (relative to the current directory, or absolute) as a path inside the repository.

    ``""`` is the repository root; None means the path lies outside it.
    """
    rel = os.path.relpath(os.path.realpath(os.path.abspath(path)), os.path.realpath(root))
    if rel == os.curdir:
        return ""
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.replace(os.sep, "/")


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


class GitSource:
    """A ``ManifestSource`` (_source.py) reading one commit from git's object store.

    Keys are repository-relative POSIX paths; ``display`` names the same file relative to
    the current directory, as ``FileSource`` does, so an error found at ``--rev`` points at
    the file an editor opens. The release repository is the git repository itself.
    """

    def __init__(self, rev: str, start: str | os.PathLike[str] = "."):
        self._repo = open_repo(start)
        try:
            self.root = _root(self._repo)
            self.rev = rev
            self.commit = resolve_commit(self._repo, rev)
            self._entries = self._index(self.commit)
        except BaseException:
            self._repo.close()
            raise

    def _index(self, commit: str) -> dict[str, tuple[str, str, int]]:
        """path -> (mode, blob id, size) for every file of the commit: one ``git ls-tree`` call."""
        listing = self._repo.git.ls_tree("-r", "-z", "-l", "--full-tree", commit)
        entries: dict[str, tuple[str, str, int]] = {}
        for record in filter(None, listing.split("\0")):
            meta, path = record.split("\t", 1)
            mode, kind, sha, size = meta.split()
            if kind == "blob":
                entries[path] = (mode, sha, int(size))
        return entries

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifests(self, path: str) -> list[str]:
        """The file itself, or every ``*.yaml``/``*.yml`` below the directory, as at the revision."""
        key = _repo_relative(self.root, path)
        if key is None:
            raise SourceError(f"outside the git repository {self.root}")
        if key in self._entries:
            return [key]
        prefix = f"{key}/" if key else ""
        under = sorted(p for p in self._entries if p.startswith(prefix))
        if not under:
            raise SourceError(f"no such file or directory at revision {self.rev}")
        return [p for p in under if p.endswith(MANIFEST_SUFFIXES) and not _hidden(p[len(prefix) :])]

    def read(self, key: str) -> bytes:
        """The file's bytes at the revision; symbolic links are followed inside the repository."""
        for _ in range(_MAX_LINK_HOPS):
            if key not in self._entries:
                is_dir = any(p.startswith(key + "/") for p in self._entries)
                raise SourceError("is a directory" if is_dir else f"no such file at revision {self.rev}")
            mode, sha, size = self._entries[key]
            if size > MAX_FILE_BYTES:
                raise SourceError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
            data: bytes = self._repo.odb.stream(bytes.fromhex(sha)).read()
            if mode != _SYMLINK_MODE:
                return data
            key = self.resolve(key, data.decode("utf-8", "surrogateescape"))
        raise SourceError("too many levels of symbolic links")

    def resolve(self, manifest: str, relative: str) -> str:
        """The key of ``relative`` next to ``manifest``; refused when it leaves the repository."""
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(manifest), relative))
        if posixpath.isabs(relative) or joined == posixpath.pardir or joined.startswith(posixpath.pardir + "/"):
            raise SourceError(f"outside the release repository {self.root}")
        return joined

    def exists(self, key: str) -> bool:
        return key in self._entries

    def repository(self, manifest: str) -> str:
        return self.root

    def display(self, key: str) -> str:
        path = os.path.join(self.root, *key.split("/"))
        relative = os.path.relpath(path)
        return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


class Changes(Struct, frozen=True):
    """What a pull request (or a local edit) changes in the release repository since a base.

    ``paths`` are repository paths (both sides of a rename); ``diffs`` map each changed
    manifest's display path to its unified diff, for the plan comment.
    """

    root: str
    base: str  # the merge base of the given base revision and the head
    head: str | None  # commit id, or None for the work tree
    paths: frozenset[str]
    diffs: dict[str, str] = field(default_factory=dict)

    def _repo_path(self, display: str) -> str | None:
        return _repo_relative(self.root, display)

    def affects(self, spec: WaveSpec) -> bool:
        """Whether the wave's manifest, one of its UUID files or a ``reconcile.yaml`` that applies to it changed."""
        manifest = self._repo_path(spec.manifest)
        if manifest is None:
            return False
        if manifest in self.paths:
            return True
        if any(self._repo_path(file) in self.paths for file in spec.schedule.files):
            return True  # a reconcile.yaml above it changed its windows or freezes
        folder = posixpath.dirname(manifest)
        return any(
            posixpath.normpath(posixpath.join(folder, phase.uuids_file)) in self.paths
            for phase in spec.phases
            if phase.uuids_file
        )

    def select(self, specs: Iterable[WaveSpec]) -> list[WaveSpec]:
        return [spec for spec in specs if self.affects(spec)]


def _patch(diff: Diff) -> str:
    old = f"a/{diff.a_path}" if diff.a_path and not diff.new_file else "/dev/null"
    new = f"b/{diff.b_path}" if diff.b_path and not diff.deleted_file else "/dev/null"
    body = diff.diff.decode("utf-8", "replace") if isinstance(diff.diff, bytes) else (diff.diff or "")
    return f"--- {old}\n+++ {new}\n{body}" + ("" if body.endswith("\n") or not body else "\n")


def _new_file_patch(root: str, path: str) -> str:
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines)


def changed_waves(path: str | os.PathLike[str], base_rev: str, head: str | None = None) -> Changes:
    """Files that differ between ``base_rev`` and ``head`` (a revision, or None for the work tree).

    Like a pull request's "Files changed", the comparison starts at the merge base, so
    commits that landed on the base branch since the branch point do not count. With the
    work tree as head, uncommitted and untracked (not ignored) files count too.
    """
    with _repo(path) as repo:
        root = _root(repo)
        base = resolve_commit(repo, base_rev)
        head_commit = resolve_commit(repo, head) if head else None
        tip = head_commit or (resolve_commit(repo, "HEAD") if repo.head.is_valid() else None)
        merge_bases = repo.merge_base(base, tip) if tip else []
        start = merge_bases[0].hexsha if merge_bases else base
        other = repo.commit(head_commit) if head_commit else None
        diffs = repo.commit(start).diff(other, create_patch=True, ignore_submodules=True)
        paths: set[str] = set()
        patches: dict[str, str] = {}
        for diff in diffs:
            paths.update(side for side in (diff.a_path, diff.b_path) if side is not None)
            shown = diff.b_path if diff.b_path and not diff.deleted_file else diff.a_path
            if shown is not None and shown.endswith(MANIFEST_SUFFIXES):  # a diff names one side at least
                patches[os.path.relpath(os.path.join(root, shown))] = _patch(diff)
        if head_commit is None and repo.working_tree_dir:
            for untracked in repo.untracked_files:
                paths.add(untracked)
                if untracked.endswith(MANIFEST_SUFFIXES):
                    patches[os.path.relpath(os.path.join(root, untracked))] = _new_file_patch(root, untracked)
        return Changes(root=root, base=start, head=head_commit, paths=frozenset(paths), diffs=patches)


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


class _Repository(Struct, frozen=True):
    """The repository holding a path: its root as GitPython names it (the work tree, or a bare repository's
    own directory) and whether it is bare (no work tree to be dirty)."""

    root: str
    bare: bool


def _discover(path: str | os.PathLike[str]) -> _Repository | None:
    """The repository holding ``path`` (which need not exist yet), found by one ``git rev-parse``.

    git resolves symbolic links where GitPython walks up the path as written; the root is named
    as GitPython names it: the nearest ancestor of the path, as written, that is that directory.
    """
    start = _nearest_existing(path)
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
    return _Repository(written, bare == "true")


class _WorkTree(Struct, frozen=True):
    """The state ``git status`` reports: the commit checked out (None before the first), the branch
    (None when detached), and the dirty files (GitPython's ``dirty_files`` order, see ``_work_tree``)."""

    commit: str | None
    branch: str | None
    dirty: tuple[str, ...]


def _work_tree(repository: _Repository) -> _WorkTree:
    """One ``git status`` (porcelain v2, so the format is fixed): what GitPython found in four processes.

    Dirty files are the tracked files with uncommitted changes, staged or not (a renamed file by its
    new name, as GitPython's reverse index diff names it), sorted; then the untracked files that
    are not ignored and not among them, sorted.
    """
    if repository.bare:
        commit = _run_git(repository.root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        ref = _run_git(repository.root, "symbolic-ref", "--quiet", "HEAD")
        return _WorkTree(
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
    return _WorkTree(head, branch, tuple(dirty))


def _branch_name(ref: str) -> str:
    """GitPython's ``Reference.name``: the ref without its first two parts (``refs/heads/``)."""
    parts = ref.split("/")
    return ref if len(parts) < 3 else "/".join(parts[2:])


def _commit_fields(root: str, commit: str) -> Provenance:
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


def _work_tree_provenance(repository: _Repository, state: _WorkTree) -> Provenance:
    data: Provenance = {"repository": repository.root, "commit": None, "dirty": bool(state.dirty)}
    if state.commit is None:
        return data
    data.update(_commit_fields(repository.root, state.commit))
    if state.branch is not None:
        data["branch"] = state.branch
    return data


def _refuse_unclean(repository: _Repository, state: _WorkTree) -> None:
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


def _found(path: str | os.PathLike[str]) -> _Repository:
    repository = _discover(path)
    if repository is None:
        raise UserError(f"not a git repository: {path}")
    return repository


def provenance(path: str | os.PathLike[str], rev: str | None = None) -> Provenance:
    """Where a plan's manifests come from: commit, author, date, subject, branch, dirty work tree.

    With ``rev`` the manifests are read from that commit, so the work tree's state does not
    matter and ``dirty`` is false. A repository with no commit yet has ``commit: None``.
    """
    if rev is None:
        repository = _found(path)
        return _work_tree_provenance(repository, _work_tree(repository))
    with _repo(path) as repo:
        root = _root(repo)
        data: Provenance = {"repository": root, "commit": None, "dirty": False}
        data.update(_commit_fields(root, resolve_commit(repo, rev)))
        data["rev"] = rev
        return data


def ensure_clean(path: str | os.PathLike[str]) -> None:
    """Refuse to apply from a work tree whose state no commit describes."""
    repository = _found(path)
    _refuse_unclean(repository, _work_tree(repository))


def _repository_of(paths: Sequence[str]) -> _Repository | None:
    """The git repository holding every path; None when they are in no repository."""
    found = {path: _discover(path) for path in paths}
    if len({repository.root if repository else None for repository in found.values()}) > 1:
        raise UserError(f"the paths {', '.join(paths)} are not all in one git repository")
    return found[paths[0]]


def git_context(
    paths: Sequence[str], *, rev: str | None, require_clean: bool
) -> tuple[GitSource | None, Provenance | None]:
    """What the CLI needs from git for one run: a manifest source and the plan's provenance.

    - ``rev``: manifests come from that commit (a ``GitSource``); the work tree is ignored.
    - otherwise manifests come from disk (source None); with ``require_clean`` (apply without
      ``--allow-dirty``) a dirty work tree, or no repository at all, is refused.
    Outside a git repository, a dry run gets no provenance rather than an error.
    """
    paths = list(paths) or ["."]
    repository = _repository_of(paths)
    if repository is None:
        if rev:
            raise UserError(f"not a git repository: {paths[0]} (--rev reads manifests from git)")
        if require_clean:
            raise UserError(
                f"not a git repository: {paths[0]}: apply takes committed manifests; "
                "pass --allow-dirty to apply from plain files"
            )
        return None, None
    if rev:
        return GitSource(rev, repository.root), provenance(repository.root, rev)
    state = _work_tree(repository)
    if require_clean:
        _refuse_unclean(repository, state)
    return None, _work_tree_provenance(repository, state)


def lost_manifests(
    paths: Sequence[str], waves: Iterable[str], factory: str, rev: str | None = None
) -> dict[str, LostManifest]:
    """The commits that renamed or deleted the manifests of these waves (active in the factory, named by no
    manifest), by wave: the waves the release repository once managed, which must not stall in silence.

    One bounded ``git log -S`` over the manifest paths per wave (usually zero or one wave): the newest commit
    that changed how often ``name: <wave>`` occurs at the top of a document, when it took the line away and
    the file it took it from was not another factory's. Outside a git repository, or for a name no manifest
    could have had, nothing is known and the wave stays a warning."""
    names = sorted({name for name in waves if _PLAIN_NAME.fullmatch(name)})
    if not names:
        return {}
    paths = list(paths) or ["."]
    try:
        repository = _repository_of(paths)
    except UserError:
        return {}
    if repository is None:
        return {}
    root = repository.root
    with _repo(root) as repo:
        if rev is None and not repo.head.is_valid():
            return {}
        tip = resolve_commit(repo, rev or "HEAD")
        pathspec = [inside or "." for inside in (_repo_relative(root, path) for path in paths) if inside is not None]
        found = {}
        for name in names:
            lost = _lost_manifest(repo, tip, pathspec, name, factory)
            if lost is not None:
                found[name] = lost
        return found


def _lost_manifest(repo: Repo, tip: str, pathspec: list[str], name: str, factory: str) -> LostManifest | None:
    quoted = name.replace(".", "[.]")
    line = f"^name:[[:space:]]*[\"']?{quoted}[\"']?[[:space:]]*(#.*)?$"
    log: str = repo.git.log(
        tip,
        f"--max-count={_LOOKUPS}",
        "--no-renames",
        "--pickaxe-regex",
        "-S",
        line,
        "--format=%x00%H%x00%s",
        "--name-status",
        "--",
        *pathspec,
    )
    named = re.compile(line.replace("[[:space:]]", r"\s"), re.MULTILINE)
    fields = log.split("\x00")[1:]
    for commit, rest in zip(fields[::2], fields[1::2], strict=True):
        subject, _, statuses = rest.partition("\n")
        for status_line in statuses.splitlines():
            status, _, path = status_line.partition("\t")
            if status not in ("D", "M") or not path.endswith(MANIFEST_SUFFIXES):
                continue
            before = _blob_text(repo, f"{commit}^", path)
            if before is None or not named.search(before):
                return None  # the newest change added the name: no commit took it away
            if status == "M" and named.search(_blob_text(repo, commit, path) or ""):
                continue  # the name moved within the file (another document): not this file's loss
            other = _FACTORY_LINE.search(before)
            if other is not None and other.group(1) != factory:
                continue  # another factory's wave of the same name
            change = ManifestChange.DELETED if status == "D" else ManifestChange.RENAMED
            return LostManifest(name, commit, subject, path, change)
    return None


def _blob_text(repo: Repo, commit: str, path: str) -> str | None:
    import git

    try:
        text: str = repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None
    return text
