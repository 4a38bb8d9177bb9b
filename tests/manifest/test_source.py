"""FileSource: listing, reading, the release-repository boundary, and how files are named in messages."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from reconciler.manifest._source import MAX_FILE_BYTES, FileSource, SourceError, decode_utf8


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """releases/{a.yaml, sub/b.yml, .hidden/c.yaml, uuids/x.lst, notes.txt} with the current directory at tmp_path."""
    for relative in (
        "releases/a.yaml",
        "releases/sub/b.yml",
        "releases/.hidden/c.yaml",
        "releases/.d.yaml",
        "releases/uuids/x.lst",
        "releases/notes.txt",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lists_manifests_recursively_sorted_without_hidden_ones(tree):
    assert FileSource().manifests("releases") == ["releases/a.yaml", "releases/sub/b.yml"]
    assert FileSource().manifests("./releases/") == ["releases/a.yaml", "releases/sub/b.yml"]
    assert FileSource().manifests("releases/.hidden/c.yaml") == ["releases/.hidden/c.yaml"]  # named explicitly
    assert FileSource().manifests("releases/uuids") == []


def test_keys_are_named_as_typed_and_relative_below_the_current_directory(tree):
    source = FileSource()
    assert source.manifests(str(tree / "releases" / "a.yaml")) == ["releases/a.yaml"]
    os.chdir(tree / "releases" / "sub")
    source = FileSource()
    assert source.manifests("../a.yaml") == ["../a.yaml"]
    assert source.manifests(str(tree / "releases" / "a.yaml")) == [str(tree / "releases" / "a.yaml")]
    assert source.display("b.yml") == "b.yml"


def test_paths_that_cannot_be_listed(tree):
    with pytest.raises(SourceError, match="^no such file or directory$"):
        FileSource().manifests("missing")
    os.mkfifo(tree / "pipe")
    with pytest.raises(SourceError, match="^not a regular file or directory$"):
        FileSource().manifests("pipe")


def test_reading(tree):
    source = FileSource()
    assert source.read("releases/a.yaml") == b"x\n"
    for key, reason in [("releases/nope.yaml", "no such file or directory"), ("releases/sub", "is a directory")]:
        with pytest.raises(SourceError, match=f"^{re.escape(reason)}$"):
            source.read(key)
    with open(tree / "huge.yaml", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SourceError, match="^larger than 16 MiB$"):
        source.read("huge.yaml")


@pytest.mark.skipif(not os.path.exists("/proc/self/cmdline"), reason="needs Linux's /proc")
def test_a_file_whose_size_says_0_is_read_whole():
    """Reads are sized by what fstat says (os.read allocates what it is asked for); a file system that
    says 0, as /proc does for its files, still gives all it holds."""
    with open("/proc/self/cmdline", "rb") as handle:
        expected = handle.read()
    assert os.stat("/proc/self/cmdline").st_size == 0 and expected
    assert FileSource().read("/proc/self/cmdline") == expected


def test_a_file_longer_than_its_size_said_is_read_to_its_end(tree, monkeypatch):
    """What fstat says only sizes the reads: a file that grew since (here fstat says 10 bytes of 400,000)
    is read on, 64 KiB at a time, to its end."""
    (tree / "grown.yaml").write_bytes(b"a" * 100_000 + b"b" * 300_000)
    real_fstat = os.fstat

    def stale_fstat(descriptor):
        status = list(real_fstat(descriptor))
        status[6] = 10  # st_size
        return os.stat_result(status)

    monkeypatch.setattr(os, "fstat", stale_fstat)
    assert FileSource().read("grown.yaml") == b"a" * 100_000 + b"b" * 300_000


def test_outside_git_the_release_repository_is_the_directory_given(tree):
    source = FileSource()
    (manifest,) = source.manifests("releases/sub")
    sub = re.escape(str(tree / "releases" / "sub"))
    with pytest.raises(SourceError, match=f"^outside the release repository {sub}$"):
        source.resolve(manifest, "../uuids/x.lst")
    source = FileSource()
    (manifest,) = [key for key in source.manifests("releases") if key.endswith("b.yml")]
    assert source.resolve(manifest, "../uuids/x.lst") == "releases/uuids/x.lst"
    with pytest.raises(SourceError, match=f"^outside the release repository {re.escape(str(tree / 'releases'))}$"):
        source.resolve(manifest, "../../elsewhere.lst")


def test_given_a_file_the_release_repository_is_its_directory(tree):
    source = FileSource()
    (manifest,) = source.manifests("releases/sub/b.yml")
    sub = re.escape(str(tree / "releases" / "sub"))
    with pytest.raises(SourceError, match=f"^outside the release repository {sub}$"):
        source.resolve(manifest, "../uuids/x.lst")


def test_inside_git_the_release_repository_is_the_work_tree(tree):
    subprocess.run(["git", "init", "-q", str(tree / "releases")], check=True)
    source = FileSource()
    (manifest,) = source.manifests("releases/sub/b.yml")
    assert source.resolve(manifest, "../uuids/x.lst") == "releases/uuids/x.lst"
    with pytest.raises(SourceError, match="^outside the release repository"):
        source.resolve(manifest, "../../outside.lst")


def test_symbolic_links_are_followed_before_the_boundary_check(tree):
    (tree / "secret.lst").write_text("x\n")
    os.symlink(tree / "secret.lst", tree / "releases" / "uuids" / "link.lst")
    os.symlink(tree, tree / "releases" / "up")
    source = FileSource()
    (manifest, _) = source.manifests("releases")
    for relative in ("uuids/link.lst", "up/secret.lst"):
        with pytest.raises(SourceError, match="^outside the release repository"):
            source.resolve(manifest, relative)


def test_decoding_points_at_the_first_bad_byte():
    assert decode_utf8(b"\xef\xbb\xbfa: 1\n", "f") == "a: 1\n"
    problem = decode_utf8(b"a: 1\nb: \xc3\x28\n", "f")
    assert str(problem) == "f:2:4: not UTF-8 text (byte 0xc3); save the file as UTF-8"
