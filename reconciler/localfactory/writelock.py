"""The factory directory's write lock: a served factory and an in-process apply never write at once.

An in-process ``reconcile`` apply holds ``apply.lock`` (an ``flock``) for its whole run, from the
plan to the last write, so two of them on one directory never interleave. ``serve`` takes the same
lock around every request that may write (any method but GET, HEAD and OPTIONS; a dry-run rollout
writes nothing and skips it), waiting at most ``WRITE_WAIT`` seconds and then answering 503:
together with SQLite's own ``BUSY_TIMEOUT`` the answer always comes before a client's request
timeout (30 s), so a client never gives up on a write that might still land. Plan-then-write sections of HTTP applies are kept apart by the
client's lease (the reconciler's ``lease.py``); this lock only protects the directory's database.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import falcon

LOCK_NAME = "apply.lock"
WRITE_WAIT = 10.0  # seconds a served write waits for an in-process apply before answering 503
_POLL = 0.05


class Busy(Exception):
    """The lock stayed taken for the whole wait."""


@contextmanager
def hold(directory: str | Path, wait: float | None) -> Iterator[None]:
    """Hold the directory's write lock; wait None blocks until it is free, else ``Busy`` after ``wait`` s."""
    with open(Path(directory) / LOCK_NAME, "a") as handle:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    break
                if time.monotonic() >= deadline:
                    raise Busy() from None
                time.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_free(directory: str | Path) -> bool:
    """Whether nobody holds the lock right now (for a message that says who waits for whom)."""
    with open(Path(directory) / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


class ServedWriteLock:
    """Falcon middleware for ``serve``: requests that may write hold the directory's lock, or get 503.

    The server's own threads queue on a lock of their own first, so only the request at the head of
    the queue polls the directory's ``flock`` (which another process may hold): twenty writes or
    dry-run rollouts sent at once then follow each other at once, not in steps of the poll interval."""

    SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, directory: str | Path, wait: float):
        import threading

        self.directory, self.wait = Path(directory), wait
        self._queue = threading.Lock()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method in self.SAFE:
            return
        import json
        from contextlib import ExitStack

        if req.path.rstrip("/").endswith("/rollout"):
            from . import requestbody

            req.context.body_text = text = requestbody.read_text(req)  # kept for the handler
            if text is not None and requestbody.is_dry_run(requestbody.parse(text)):
                return  # a dry run reads a snapshot and writes nothing

        deadline = time.monotonic() + self.wait
        stack = ExitStack()
        try:
            if not self._queue.acquire(timeout=self.wait):
                raise Busy()
            stack.callback(self._queue.release)
            stack.enter_context(hold(self.directory, max(0.0, deadline - time.monotonic())))
        except Busy:
            stack.close()
            resp.status = falcon.HTTP_503
            resp.content_type = falcon.MEDIA_JSON
            resp.text = json.dumps(
                {"message": "the local factory is busy (another apply holds it), try again", "errors": []}
            )
            resp.set_header("Retry-After", "1")
            resp.complete = True
            return
        req.context.write_lock = stack

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        stack = getattr(req.context, "write_lock", None)
        if stack is not None:
            req.context.write_lock = None
            stack.close()
