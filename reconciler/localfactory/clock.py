"""The clock of a served factory: ``simulated`` (the default) or ``real`` (``serve --clock real``).

Simulated: the clock moves only when ``reconcile-factory advance`` is run, as before.

Real: a background thread moves the factory's clock forward by the wall time elapsed since its last
tick, times ``speed`` (``--speed 3600`` = one simulated hour per wall second), every ``TICK``
seconds, through ``fleet.advance``: devices check in, update and go offline as time passes, and
everything that reads the clock (the ``Date`` header, wave expiry, soak times, last-seen) sees it
move. Choices the reference does not make:

- the clock runs on from where the factory's clock stands; it never jumps to the wall-clock date
  (which could lie in the simulated past);
- readers see the clock of the last tick, so ``Date`` lags wall time by at most about one tick
  (``TICK`` x ``speed`` simulated seconds) plus the time a tick takes to simulate the fleet;
- ``advance`` keeps working and *adds to the offset*: the thread adds elapsed time to whatever the
  database's clock says, so ``advance 2h`` from another process jumps two hours ahead and the clock
  keeps running from there; time never moves backwards;
- fractions of a simulated second are carried to the next tick, so the clock neither drifts nor
  loses time at low speeds; a tick that finds the database busy keeps the time for the next one;
- the clock stops at ``store.LATEST``, the end of simulated time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from . import fleet, store

TICK = 0.2  # wall seconds between ticks
MAX_SPEED = 1_000_000.0
log = logging.getLogger(__name__)


class RealClock:
    """Moves ``st``'s simulated clock with wall time (``wall``: a monotonic clock in seconds)."""

    def __init__(
        self, st: store.Store, speed: float, *, tick: float = TICK, wall: Callable[[], float] = time.monotonic
    ):
        if not 0 < speed <= MAX_SPEED:
            raise ValueError(f"speed must be above 0 and at most {MAX_SPEED:g}")
        self.store = st
        self.speed = speed
        self.interval = tick
        self._wall = wall
        self._last = wall()
        self._carry = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Advance by the wall time elapsed since the last tick; returns the simulated seconds moved."""
        current = self._wall()
        self._carry += (current - self._last) * self.speed
        self._last = current
        whole = int(self._carry)
        if whole <= 0:
            return 0
        try:
            with self.store.write() as conn:
                step = max(0, min(whole, store.LATEST - store.now(conn)))
                if step:
                    fleet.advance(conn, step)
        except sqlite3.OperationalError as e:
            if not store.is_busy(e):
                raise
            log.warning("local factory clock: the database is busy; catching up at the next tick")
            return 0
        self._carry -= whole
        return step

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the server keeps serving; the clock tries again at the next tick
                log.exception("local factory clock: a tick failed")

    def start(self) -> None:
        self._last = self._wall()
        self._thread = threading.Thread(target=self._run, name="factory-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
