"""The environment in which the benches run ``reconcile``: the program as an installed copy runs it.

``pip install`` compiles the package's bytecode when it installs it, so a user's ``reconcile`` never
compiles our modules. A development checkout installed in editable mode, on a machine that sets
``PYTHONDONTWRITEBYTECODE`` (this sandbox does), recompiles about 40 modules on every run: 0.15 s of
CPU before the first request, which no user pays. The benches therefore let the child write bytecode,
into a cache outside the repository (``PYTHONPYCACHEPREFIX``), and make one untimed run first.

Settings that would choose a backend or CI behaviour for the child (``RECONCILE_*``, ``CI``,
``GITHUB_*``) are dropped: each bench names its factory on the command line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PYCACHE = Path(tempfile.gettempdir()) / "reconcile-bench-pycache"


def program_env(**extra: str) -> dict[str, str]:
    """The caller's environment, cleaned as above, with ``extra`` added."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RECONCILE_", "GITHUB_")) and name not in ("CI", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env
