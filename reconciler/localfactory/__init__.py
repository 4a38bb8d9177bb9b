"""The embedded local factory: the Foundries waves API over SQLite, with real TUF and a simulated fleet.

``open_embedded(path)`` opens (creating the demo factory on first use) the factory in ``path``, or in
``$RECONCILE_LOCAL``, or in the user state directory (``$XDG_STATE_HOME/reconciler/factory``, by
default ``~/.local/state/reconciler/factory``), and returns its in-process WSGI app.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from .store import Store

__all__ = ["Embedded", "default_path", "open_embedded"]


def default_path() -> Path:
    env = os.environ.get("RECONCILE_LOCAL")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "reconciler" / "factory"


@dataclass
class Embedded:
    app: object  # WSGI callable (no token check in-process)
    factory: str
    path: Path
    created: bool
    keys_archive: Path
    store: Store = field(repr=False)


def open_embedded(path: str | os.PathLike | None = None) -> Embedded:
    from . import demo, store
    from .app import make_app

    directory = Path(path).expanduser() if path else default_path()
    directory.mkdir(parents=True, exist_ok=True)
    st = Store.in_dir(directory)
    created = False
    with open(directory / ".lock", "w") as lock:  # two first runs at once create one factory
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not st.exists():
            demo.init_factory(directory)
            created = True
    with st.read() as conn:
        name = store.factory_name(conn)
    return Embedded(make_app(st), name, directory, created, directory / demo.KEY_ARCHIVE, st)
