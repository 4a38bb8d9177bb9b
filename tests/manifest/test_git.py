"""The release repository in git, against a real repository built with the git CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from reconciler import manifest
from reconciler.core.spec import Location, PhaseSpec, WaveSpec
from reconciler.errors import UserError, ValidationFailed
from reconciler.manifest import _git as gitrepo
from reconciler.manifest._source import SourceError
from reconciler.resources import load_schema

AUTHOR = {
    "GIT_AUTHOR_NAME": "Release Bot",
    "GIT_AUTHOR_EMAIL": "release@example.com",
    "GIT_COMMITTER_NAME": "Release Bot",
    "GIT_COMMITTER_EMAIL": "release@example.com",
}

UUID_A = "9f1c2a4e-0b7d-4c1e-8a55-3d2f6b9e7a01"
UUID_B = "2b8e4f6a-1c3d-4e5f-9a7b-8c9d0e1f2a3b"
HEAD = "apiVersion: reconciler/v1\nkind: Wave\n"
V41 = HEAD + "name: v41\ntarget: 41\ntag: production\nphases: [{group: canary}]\ncomplete: true\n"
V42 = HEAD + "name: v42\ntarget: 42\ntag: production\ncomplete: true\nphases:\n  - uuids: uuids/canary.lst\n"
V43 = HEAD + "name: v43\ntarget: 43\ntag: production\nphases: [{group: beta}]\n"


def git(repo: Path, *args: str, date: str = "2025-01-01T00:00:00Z") -> str:
    env = {**os.environ, **AUTHOR, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit(repo: Path, message: str, files: dict[str, str], date: str) -> str:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """main: v41, then v42 with a UUID list, then a new canary list; branch `next` edits v42 and adds v43."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "releases-repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shas = {
        "v41": commit(
            root,
            "release v41",
            {"releases/v41.yaml": V41, "releases/uuids/canary.lst": f"{UUID_A}\n", "README.md": "release repo\n"},
            "2025-01-01T10:00:00Z",
        ),
        "v42": commit(root, "release v42", {"releases/v42.yaml": V42}, "2025-01-02T10:00:00Z"),
        "uuids": commit(
            root, "canary list: add b", {"releases/uuids/canary.lst": f"{UUID_A}\n{UUID_B}\n"}, "2025-01-03T10:00:00Z"
        ),
    }
    git(root, "tag", "v42-released", shas["v42"])
    git(root, "checkout", "-q", "-b", "next")
    shas["next"] = commit(
        root,
        "release v43, widen v42",
        {"releases/v42.yaml": V42 + "  - group: beta\n", "releases/v43.yaml": V43},
        "2025-01-04T10:00:00Z",
    )
    git(root, "checkout", "-q", "main")
    shas["main-later"] = commit(root, "docs", {"README.md": "release repo, v2\n"}, "2025-01-05T10:00:00Z")
    monkeypatch.chdir(root)
    return root, shas


def spec(manifest: str, *uuid_files: str) -> WaveSpec:
    phases = tuple(PhaseSpec(name=f"p{i}", uuids_file=f) for i, f in enumerate(uuid_files))
    return WaveSpec(name=Path(manifest).stem, target=1, tag="production", location=Location(manifest), phases=phases)


def test_source_reads_manifests_at_a_revision_without_the_work_tree(repo):
    root, shas = repo
    (root / "releases/v41.yaml").write_text("edited in the work tree\n")
    (root / "releases/untracked.yaml").write_text("kind: Wave\n")
    with gitrepo.GitSource("v42-released") as source:
        assert source.commit == shas["v42"]
        files = source.manifests("releases")
        assert files == ["releases/v41.yaml", "releases/v42.yaml"]  # UUID lists are not manifests
        assert source.read("releases/v41.yaml") == V41.encode()
        assert source.display("releases/v41.yaml") == os.path.join("releases", "v41.yaml")
        uuid_file = source.resolve("releases/v42.yaml", "uuids/canary.lst")
        assert uuid_file == "releases/uuids/canary.lst"
        assert source.read(uuid_file) == f"{UUID_A}\n".encode()  # the list as it was at the tag
        assert source.manifests("releases/v42.yaml") == ["releases/v42.yaml"]
        assert source.manifests("releases/uuids") == []
    with gitrepo.GitSource("HEAD~3") as source:
        assert source.manifests(".") == ["releases/v41.yaml"]
    assert (root / "releases/v41.yaml").read_text() == "edited in the work tree\n"
    assert git(root, "status", "--porcelain") == "M releases/v41.yaml\n?? releases/untracked.yaml"


def test_source_refuses_escapes_and_missing_paths(repo, tmp_path):
    root, _ = repo
    with gitrepo.GitSource("main") as source:
        for escape in ("../../outside.lst", "/etc/passwd", "uuids/../../../x.lst"):
            with pytest.raises(SourceError, match=f"^outside the release repository {root}$"):
                source.resolve("releases/v42.yaml", escape)
        assert source.resolve("releases/v42.yaml", "../README.md") == "README.md"
        with pytest.raises(SourceError, match=r"^no such file or directory at revision main$"):
            source.manifests("releases/v99")
        with pytest.raises(SourceError, match=f"^outside the git repository {root}$"):
            source.manifests(str(tmp_path))
        with pytest.raises(SourceError, match="^no such file at revision main$"):
            source.read("releases/missing.lst")
        with pytest.raises(SourceError, match="^is a directory$"):
            source.read("releases/uuids")


def test_source_follows_symbolic_links_inside_the_repository_only(repo):
    root, _ = repo
    os.symlink("uuids/canary.lst", root / "releases/current.lst")
    os.symlink("../../../etc/passwd", root / "releases/escape.lst")
    commit(root, "links", {}, "2025-01-06T10:00:00Z")
    with gitrepo.GitSource("HEAD") as source:
        assert source.read("releases/current.lst") == f"{UUID_A}\n{UUID_B}\n".encode()
        with pytest.raises(SourceError, match="outside the release repository"):
            source.read("releases/escape.lst")


def test_unknown_revision_and_not_a_repository_are_one_line_errors(repo, tmp_path):
    with pytest.raises(UserError, match=r"^unknown revision 'no-such-branch' in .*releases-repo$"):
        gitrepo.GitSource("no-such-branch")
    with pytest.raises(UserError, match="unknown revision '--output=/tmp/x'"):
        gitrepo.GitSource("--output=/tmp/x")
    with pytest.raises(UserError, match="unknown revision '0000000000000000000000000000000000000000'"):
        gitrepo.GitSource("0" * 40)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UserError, match=f"^not a git repository: {plain}$"):
        gitrepo.GitSource("HEAD", plain)
    with pytest.raises(UserError, match="^not a git repository"):
        gitrepo.provenance(plain)


def test_shallow_clone_hint(repo, tmp_path):
    root, _ = repo
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{root}", str(clone))
    with pytest.raises(UserError, match="shallow clone: fetch the history first"):
        gitrepo.GitSource("HEAD~1", clone)


def test_changed_waves_between_revisions_from_the_merge_base(repo):
    _, shas = repo
    changes = gitrepo.changed_waves(".", "main", "next")
    # main moved on (README) after `next` branched: that does not count
    assert changes.base == shas["uuids"]
    assert changes.head == shas["next"]
    assert changes.paths == {"releases/v42.yaml", "releases/v43.yaml"}
    specs = [spec("releases/v41.yaml"), spec("releases/v42.yaml", "uuids/canary.lst"), spec("releases/v43.yaml")]
    assert [s.name for s in changes.select(specs)] == ["v42", "v43"]
    diff = changes.diffs[os.path.join("releases", "v42.yaml")]
    assert diff.startswith("--- a/releases/v42.yaml\n+++ b/releases/v42.yaml\n@@")
    assert "+  - group: beta\n" in diff
    assert changes.diffs[os.path.join("releases", "v43.yaml")].startswith("--- /dev/null\n+++ b/releases/v43.yaml\n")


def test_a_changed_uuid_file_selects_the_waves_that_use_it(repo):
    _, shas = repo
    changes = gitrepo.changed_waves(".", shas["v42"], shas["uuids"])
    assert changes.paths == {"releases/uuids/canary.lst"}
    specs = [spec("releases/v41.yaml"), spec("releases/v42.yaml", "uuids/canary.lst")]
    assert [s.name for s in changes.select(specs)] == ["v42"]
    assert changes.diffs == {}


def test_changed_waves_against_the_work_tree_counts_edits_and_new_files(repo):
    root, _ = repo
    (root / "releases/v41.yaml").write_text(V41 + "# done\n")
    (root / "releases/v44.yaml").write_text(V43.replace("43", "44"))
    (root / "releases/v42.yaml").unlink()
    changes = gitrepo.changed_waves("releases", "HEAD")
    assert changes.head is None
    assert changes.paths == {"releases/v41.yaml", "releases/v42.yaml", "releases/v44.yaml"}
    assert set(changes.diffs) == {os.path.join("releases", n) for n in ("v41.yaml", "v42.yaml", "v44.yaml")}
    assert changes.diffs[os.path.join("releases", "v42.yaml")].startswith("--- a/releases/v42.yaml\n+++ /dev/null\n")
    assert "+# done" in changes.diffs[os.path.join("releases", "v41.yaml")]
    assert changes.diffs[os.path.join("releases", "v44.yaml")].endswith("+phases: [{group: beta}]\n")
    with pytest.raises(UserError, match="unknown revision 'origin/main'"):
        gitrepo.changed_waves(".", "origin/main")


def test_provenance_and_dirty_work_tree(repo):
    root, shas = repo
    clean = gitrepo.provenance(".")
    assert clean == {
        "repository": str(root),
        "commit": shas["main-later"],
        "dirty": False,
        "branch": "main",
        "author": "Release Bot <release@example.com>",
        "date": "2025-01-05T10:00:00+00:00",
        "subject": "docs",
    }
    gitrepo.ensure_clean(".")
    jsonschema.validate(clean, load_schema("plan.schema.json")["properties"]["provenance"])
    at_tag = gitrepo.provenance("releases", rev="v42-released")
    assert (at_tag["commit"], at_tag["rev"], at_tag["subject"]) == (shas["v42"], "v42-released", "release v42")
    (root / "releases/v41.yaml").write_text("edited\n")
    assert gitrepo.provenance(".")["dirty"] is True
    assert gitrepo.provenance(".", rev="HEAD")["dirty"] is False  # --rev ignores the work tree
    with pytest.raises(
        UserError, match=r"uncommitted changes \(releases/v41.yaml\): commit them, or pass --allow-dirty"
    ):
        gitrepo.ensure_clean(".")
    git(root, "checkout", "-q", "--", "releases/v41.yaml")
    (root / "releases/new.yaml").write_text("x\n")
    (root / "README.md").write_text("staged\n")
    git(root, "add", "README.md")
    with pytest.raises(UserError, match=r"uncommitted changes \(README.md and 1 more\)"):
        gitrepo.ensure_clean(".")
    git(root, "checkout", "-q", "--detach", "HEAD")
    assert "branch" not in gitrepo.provenance(".")


def test_ignored_files_do_not_make_the_tree_dirty(repo):
    root, _ = repo
    commit(root, "ignore caches", {".gitignore": "*.cache\n"}, "2025-01-07T10:00:00Z")
    (root / "plan.cache").write_text("x")
    gitrepo.ensure_clean(".")


def test_context_for_the_cli(repo, tmp_path):
    root, shas = repo
    source, prov = gitrepo.git_context(["releases"], rev="next", require_clean=True)
    with source:
        assert source.manifests("releases") == ["releases/v41.yaml", "releases/v42.yaml", "releases/v43.yaml"]
    assert prov["commit"] == shas["next"]
    (root / "releases/v41.yaml").write_text("edited\n")
    assert gitrepo.git_context(["releases"], rev=None, require_clean=False) == (None, gitrepo.provenance("."))
    with pytest.raises(UserError, match="uncommitted changes"):
        gitrepo.git_context(["releases"], rev=None, require_clean=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert gitrepo.git_context([str(plain)], rev=None, require_clean=False) == (None, None)
    with pytest.raises(UserError, match="pass --allow-dirty to apply from plain files"):
        gitrepo.git_context([str(plain)], rev=None, require_clean=True)
    with pytest.raises(UserError, match="--rev reads manifests from git"):
        gitrepo.git_context([str(plain)], rev="HEAD", require_clean=False)
    with pytest.raises(UserError, match="not all in one git repository"):
        gitrepo.git_context(["releases", str(plain)], rev=None, require_clean=False)


def test_empty_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    git(tmp_path, "init", "-q")
    (tmp_path / "w.yaml").write_text("x\n")
    assert gitrepo.provenance(tmp_path) == {"repository": str(tmp_path), "commit": None, "dirty": True}
    with pytest.raises(UserError, match="has no commit yet"):
        gitrepo.ensure_clean(tmp_path)


def test_the_manifest_loader_reads_a_revision_through_git_source(repo):
    root, _ = repo
    (root / "releases/v42.yaml").write_text("not: [valid\n")  # the work tree does not matter
    with gitrepo.GitSource("v42-released") as source:
        loaded = manifest.load(["releases"], source=source)
    assert [(s.name, s.manifest) for s in loaded.specs] == [
        ("v41", os.path.join("releases", "v41.yaml")),
        ("v42", os.path.join("releases", "v42.yaml")),
    ]
    assert loaded.specs[1].phases[0].uuids == (UUID_A,)  # the UUID list as it was at the tag
    git(root, "checkout", "-q", "--", "releases/v42.yaml")
    commit(
        root,
        "escape",
        {"releases/v43.yaml": V43.replace("{group: beta}", "{uuids: ../../secrets.lst}")},
        "2025-01-08T10:00:00Z",
    )
    with gitrepo.GitSource("HEAD") as source, pytest.raises(ValidationFailed) as failed:
        manifest.load(["releases"], source=source)
    [problem] = failed.value.problems
    assert problem.file == os.path.join("releases", "v43.yaml")
    assert "outside the release repository" in problem.message
