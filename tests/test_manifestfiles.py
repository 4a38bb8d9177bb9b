"""Which files are manifests (``reconciler.manifestfiles``): the rule the loader lists a work tree with,
and the count an apply sizes its connections from before it imports the loader."""

from __future__ import annotations

from reconciler import manifestfiles
from reconciler.manifest import FileSource


def tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kind: Wave\n")


def test_the_count_is_the_files_the_loader_lists(tmp_path):
    tree(
        tmp_path,
        ["a.yaml", "b.yml", "notes.txt", ".hidden.yaml", "deep/c.yaml", ".github/workflows/release.yml", "d.yaml.bak"],
    )
    listed = FileSource().manifests(str(tmp_path))
    assert sorted(listed) == sorted(str(tmp_path / name) for name in ("a.yaml", "b.yml", "deep/c.yaml"))
    assert manifestfiles.count([str(tmp_path)], limit=100) == len(listed) == 3


def test_a_file_counts_once_and_a_missing_path_not_at_all(tmp_path):
    tree(tmp_path, ["one.yaml", "dir/two.yaml"])
    paths = [str(tmp_path / "one.yaml"), str(tmp_path / "dir"), str(tmp_path / "missing")]
    assert manifestfiles.count(paths, limit=100) == 2


def test_counting_stops_at_the_limit(tmp_path):
    tree(tmp_path, [f"wave-{number:03}.yaml" for number in range(50)])
    assert manifestfiles.count([str(tmp_path)], limit=7) == 7
    assert manifestfiles.count([str(tmp_path / "wave-000.yaml")] * 9, limit=7) == 7


def test_a_symbolic_link_named_on_the_command_line_is_not_walked(tmp_path):
    """It may lead out of the release repository (``releases -> /``), which the loader refuses without
    listing it; the count must not walk there first."""
    outside = tmp_path / "outside"
    tree(outside, ["x.yaml", "y.yaml"])
    (tmp_path / "releases").symlink_to(outside)
    (tmp_path / "one.yaml").symlink_to(outside / "x.yaml")
    assert manifestfiles.count([str(tmp_path / "releases"), str(tmp_path / "one.yaml")], limit=100) == 0
    assert manifestfiles.count([str(outside)], limit=100) == 2
