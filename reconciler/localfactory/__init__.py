"""The embedded local factory: the Foundries waves API over SQLite, with real TUF and a simulated fleet.

``open_embedded(path)`` opens (creating the demo factory on first use) the factory in ``path``, or in
``$RECONCILE_LOCAL``, or in the user state directory (``$XDG_STATE_HOME/reconciler/factory``, by
default ``~/.local/state/reconciler/factory``), and returns an ``Embedded`` holding its in-process WSGI
app, its name and the operator's key archive.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

from .store import PRIVATE_DIR, PRIVATE_FILE, Store, make_private
from .writelock import hold, is_free

__all__ = ["Embedded", "default_path", "hold", "is_free", "open_embedded"]


def default_path() -> Path:
    env = os.environ.get("RECONCILE_LOCAL")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "reconciler" / "factory"


@dataclass
class Embedded:
    app: WSGIApplication  # no token check in-process
    factory: str
    path: Path
    created: bool
    keys_archive: Path
    store: Store = field(repr=False)
    modes_note: str | None = None  # modes of an older factory made private, or why they could not be


def open_embedded(path: str | os.PathLike[str] | None = None) -> Embedded:
    """Open the factory in ``path`` (creating the demo factory when there is no ``factory.db``).
    Anything wrong with the place or the file is a UserError (one line); a file that is there but
    is not a factory database is refused, never replaced."""
    from reconciler.errors import UserError

    from . import demo
    from .app import make_app

    directory = Path(path).expanduser() if path else default_path()
    st = Store.in_dir(directory)
    created = False
    try:
        if os.path.lexists(directory) and not directory.is_dir():
            raise UserError(
                f"the local factory directory {directory} is not a directory; point --local/RECONCILE_LOCAL elsewhere"
            )
        directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        lock = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:  # two first runs at once create one factory
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not st.exists():
                demo.init_factory(directory)
                created = True
        finally:
            os.close(lock)
        modes = make_private(directory)  # before the first connection creates WAL files with the old mode
        name = st.check()
        with st.read() as conn:  # the read-write connection the app uses works too
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
    except UserError:
        st.close()
        raise
    except sqlite3.DatabaseError as e:
        st.close()
        raise UserError(st.describe(e)) from None
    except OSError as e:
        st.close()
        raise UserError(f"cannot use {directory} for the local factory: {(e.strerror or str(e)).lower()}") from None
    return Embedded(make_app(st), name, directory, created, directory / demo.KEY_ARCHIVE, st, modes)
