"""Which files under a path are wave manifests: one rule for the loader and for a run that counts them
before it imports the loader.

The manifest package imports its whole pipeline when imported (YAML, the schema, git: 60-80 ms of CPU).
An apply against an API counts its manifests as soon as its command line is read, to open the
connections its observation will need while it imports and reads (cli/reconcile.py), so the rule lives
here, with nothing to import but ``os``; ``manifest/_source.py`` lists a work tree's manifests with it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence

MANIFEST_SUFFIXES = (".yaml", ".yml")


def walk(top: str) -> Iterator[str]:
    """The manifest files below the directory ``top``, each path normalized: ``*.yaml`` and ``*.yml``,
    hidden files and directories skipped (``.github/``, an editor's ``.#wave.yaml``)."""
    for directory, subdirectories, files in os.walk(top):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in files:
            if name.endswith(MANIFEST_SUFFIXES) and not name.startswith("."):
                yield os.path.normpath(os.path.join(directory, name))


def count(paths: Sequence[str], limit: int) -> int:
    """How many manifest files ``paths`` name (a file counts as one, a directory as the manifests below
    it), counting no further than ``limit``: an estimate of the waves, made before any is read (a file may
    hold several, or be ``reconcile.yaml``), that stops early in a big tree. A path that does not exist
    counts nothing here, nor does a symbolic link: the loader reports the one and checks where the other
    leads (out of the release repository, it is refused before anything below it is listed)."""
    found = 0
    for path in paths:
        if os.path.islink(path):
            continue
        if os.path.isdir(path):
            found += sum(1 for _ in itertools.islice(walk(path), limit - found))  # the walk stops at the limit
        elif os.path.isfile(path):
            found += 1
        if found >= limit:
            return limit
    return found
