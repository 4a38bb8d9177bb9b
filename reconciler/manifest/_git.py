"""The release repository in git: manifests at a revision, what changed since a base, provenance.

GitOps means the committed state is the desired state. So ``--rev`` reads manifests and UUID
files straight from git's object store (the work tree is never touched, so it works while
someone edits, and in a bare clone); ``--base`` narrows a pull request's plan to the waves
whose manifest or UUID files it changes; every plan records the commit it was made from;
and apply refuses a work tree with uncommitted changes, whose state no commit describes.

Every plan and apply reads its repository, work tree state and commit (``git_context`` without
``--rev``) through the ``git`` command itself, as GitPython would report them (_worktree.py). The
rarer reads (``--rev``, ``--base``, lost manifests) use GitPython, imported inside the functions so
that ``reconcile --help`` stays fast.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from msgspec import Struct, field

from reconciler.core import LostManifest, ManifestChange, WaveSpec
from reconciler.errors import UserError
from reconciler.manifest._source import MAX_FILE_BYTES, SourceError
from reconciler.manifest._worktree import (
    Provenance,
    Repository,
    commit_fields,
    discover,
    found,
    nearest_existing,
    refuse_unclean,
    work_tree,
    work_tree_provenance,
)
from reconciler.manifestfiles import MANIFEST_SUFFIXES

if TYPE_CHECKING:
    from git import Diff, Repo

_SYMLINK_MODE = "120000"
# A wave name as a manifest can write it (and a regular expression can quote it without surprises).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FACTORY_LINE = re.compile(r"^factory:[ \t]*[\"']?([^\"'#\s]+)", re.MULTILINE)
# Commits looked at per wave: the newest that took its name line away, past a few for other factories.
_LOOKUPS = 3
_MAX_LINK_HOPS = 8


def open_repo(path: str | os.PathLike[str]) -> Repo:
    """The git repository containing ``path`` (which need not exist yet); one line if there is none."""
    import git

    start = nearest_existing(path)
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


def provenance(path: str | os.PathLike[str], rev: str | None = None) -> Provenance:
    """Where a plan's manifests come from: commit, author, date, subject, branch, dirty work tree.

    With ``rev`` the manifests are read from that commit, so the work tree's state does not
    matter and ``dirty`` is false. A repository with no commit yet has ``commit: None``.
    """
    if rev is None:
        repository = found(path)
        return work_tree_provenance(repository, work_tree(repository))
    with _repo(path) as repo:
        root = _root(repo)
        data: Provenance = {"repository": root, "commit": None, "dirty": False}
        data.update(commit_fields(root, resolve_commit(repo, rev)))
        data["rev"] = rev
        return data


def ensure_clean(path: str | os.PathLike[str]) -> None:
    """Refuse to apply from a work tree whose state no commit describes."""
    repository = found(path)
    refuse_unclean(repository, work_tree(repository))


def _repository_of(paths: Sequence[str]) -> Repository | None:
    """The git repository holding every path; None when they are in no repository."""
    found = {path: discover(path) for path in paths}
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
    state = work_tree(repository)
    if require_clean:
        refuse_unclean(repository, state)
    return None, work_tree_provenance(repository, state)


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
