"""Wave manifests -> ``WaveSpec`` objects: the desired state, with every problem at ``file:line:col``.

The steps, one private module each: list the files of a work tree (``_source``) or of a git revision
(``_git``), read YAML with positions (``_yaml``), check the schema (``_schema``), turn values into
numbers (``_values``) and UUID lists (``_uuids``), then the rules that span documents and files
(``_loader``). ``load`` is the entry point; the git helpers give ``--rev``, ``--base``,
provenance, and the commits that took an active wave's manifest away (``lost_manifests``). ``_generate``
writes the manifest that adopts a wave of the factory (``reconcile import``).
"""

from reconciler.manifest._generate import (
    Generated,
    Selection,
    WaveFacts,
    choose_waves,
    file_name,
    generate,
    problems_of,
)
from reconciler.manifest._git import (
    Changes,
    GitSource,
    changed_waves,
    ensure_clean,
    git_context,
    lost_manifests,
    provenance,
)
from reconciler.manifest._loader import LoadResult, load
from reconciler.manifest._source import FileSource, ManifestSource, SourceError
from reconciler.manifest._values import parse_date_time, parse_duration, parse_limit, parse_percent
from reconciler.manifestfiles import MANIFEST_SUFFIXES

__all__ = [
    "MANIFEST_SUFFIXES",
    "Changes",
    "FileSource",
    "Generated",
    "GitSource",
    "LoadResult",
    "ManifestSource",
    "Selection",
    "SourceError",
    "WaveFacts",
    "changed_waves",
    "choose_waves",
    "ensure_clean",
    "file_name",
    "generate",
    "git_context",
    "load",
    "lost_manifests",
    "parse_date_time",
    "parse_duration",
    "parse_limit",
    "parse_percent",
    "problems_of",
    "provenance",
]
