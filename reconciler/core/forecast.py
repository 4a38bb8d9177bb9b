"""When can a wave be done? The earliest time of each of its remaining steps, from what the plan knows.

Release managers ask when a build reaches every device; the manifests hold the answer's lower bound:
each remaining rollout and the complete runs no earlier than its ``wait`` after the previous step, and
only inside its rollout windows and outside its freezes (``core/windows.py``, the planner's own
schedule). This module chains those bounds, step after step, from the wave's last rollout (or its
creation; for a wave still to be created, from now: init is never held).

What it assumes (``ASSUMPTIONS``, shown with every forecast):

- each step runs as soon as it may: the scheduled job runs at that instant, and the previous step ran
  at its own earliest time;
- a gate on device numbers (``require.updated``, ``require.failed``) passes as soon as its wait ends.
  Only the next step's gate can be read now: when its wait has ended (or it has none) and the numbers
  read say it is not met, the step is not forecast but shown as waiting on that gate, with the gate's
  own words (``core/gates.py``), and every later step as waiting behind it.

A step held by drift or a halt (``stopped``) is not forecast either. The times are UTC instants; they
are shown in the calendar's time zone (``Forecast.zone``: the zone of the wave's first window, else of
its first freeze, else UTC), ``Tue 2026-12-09 06:00 CET``.

The JSON shape (``to_dict``, under each wave's ``forecast`` in ``reconcile status --format json``,
schemas/status.schema.json; the same under each wave of the JSON plan, schemas/plan.schema.json)::

    {"zone": "Europe/Berlin", "done_at": "2026-12-09T05:00:00Z" | null, "completes": true,
     "expires": "..." | null, "within_expiry": true | false | null, "assumptions": ["..."],
     "steps": [{"step": "rollout beta", "phase": "beta" | null, "start": "..." | null, "at": "..." | null,
                "wait": 86400, "bound": "now" | "previous" | "wait" | "window" | "freeze", "hold": "..." | null,
                "unmet": "..." | null}]}

``start`` is when the step's wait starts (the previous step's time), ``wait`` the step's own wait in seconds
(0: none), ``at`` its earliest time (null:
``unmet`` says what it waits on, or no window ever opens), ``bound`` what set ``at`` and ``hold`` the
windows and freezes that held it, as the plan names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Any

from msgspec import Struct
from msgspec.structs import replace

from reconciler.core import gates, ledger
from reconciler.core.gates import FailedState, GateResult, UpdatedState
from reconciler.core.spec import Gate, WaveSpec
from reconciler.core.state import Device, RolloutRecord, WaveFailures, WaveProgress
from reconciler.core.text import format_duration
from reconciler.core.windows import Schedule, local_time

TITLE = "Forecast (each gate passing as soon as its wait ends)"  # the heading plan and status show it under
ASSUMPTIONS = (
    "each step runs as soon as it may, the previous one at its own earliest time",
    "a gate on device numbers passes as soon as its wait ends; one that has not passed once its wait has "
    "ended is shown as such",
)

# Device-number states that say the gate has not passed; an unread or uncounted gate is assumed to pass.
_UNMET_UPDATED = frozenset({UpdatedState.SHORT, UpdatedState.NONE_ROLLED_OUT, UpdatedState.NONE_ONLINE})
_UNMET_FAILED = frozenset({FailedState.OVER, FailedState.UNCHECKED})


class Bound(StrEnum):
    """What set a step's earliest time."""

    NOW = "now"  # it may run now
    PREVIOUS = "previous"  # no wait: it follows the previous step at once
    WAIT = "wait"  # its wait after the previous step
    WINDOW = "window"  # outside the rollout windows until then
    FREEZE = "freeze"  # a freeze ends then


class StepForecast(Struct, frozen=True):
    """One remaining step: ``rollout beta`` (``rollout big part 2 of 3``) or ``complete``."""

    step: str
    phase: str | None  # None: the complete
    start: datetime | None  # when its wait starts: the previous step's time (None: unknown)
    at: datetime | None  # earliest time; None: ``unmet`` says what it waits on, or no window opens
    bound: Bound = Bound.NOW
    wait_seconds: int = 0  # the step's own wait
    hold: str | None = None  # the windows and freezes that held it (``Schedule.hold``'s words)
    unmet: str | None = None  # the gate not met, or the earlier step it waits behind


class Forecast(Struct, frozen=True):
    wave: str
    zone: tzinfo
    steps: tuple[StepForecast, ...]
    completes: bool  # the last step is the complete (else the wave stays active after its last rollout)
    expires: datetime | None = None  # the wave's targets expire then (None: unknown)
    assumptions: tuple[str, ...] = ASSUMPTIONS

    @property
    def done_at(self) -> datetime | None:
        """The last step's earliest time: the wave is done no earlier than this (None: not forecast)."""
        return self.steps[-1].at if self.steps else None

    @property
    def within_expiry(self) -> bool | None:
        """Whether the last step can run before the targets expire (None: not known)."""
        if self.done_at is None or self.expires is None:
            return None
        return self.done_at < self.expires

    @property
    def scheduled(self) -> bool:
        """A window or a freeze moved a step later than its wait alone would."""
        return any(step.bound in (Bound.WINDOW, Bound.FREEZE) for step in self.steps)

    def local(self, instant: datetime) -> str:
        """``Tue 2026-12-09 06:00 CET``: an instant on the calendar's clock."""
        return local_time(instant, self.zone)

    def done_text(self) -> str:
        """``done no earlier than Tue 2026-12-09 06:00 CET`` (``last rollout ...`` for a wave without a
        complete; ``, after its targets expire`` when that is too late), or what the wave waits on."""
        what = "done" if self.completes else "last rollout"
        if self.done_at is not None:
            late = "" if self.within_expiry is not False else ", after its targets expire"
            return f"{what} no earlier than {self.local(self.done_at)}{late}"
        unmet = next(step for step in self.steps if step.at is None)
        return f"{what}: not forecast ({self.step_text(unmet)})"

    def step_text(self, step: StepForecast) -> str:
        """``rollout beta no earlier than Wed 2026-12-03 06:00 UTC (wait 24h)``."""
        if step.at is None:
            return f"{step.step}: waits on {step.unmet or step.hold}"
        if step.hold is not None:
            why = step.hold
        elif step.bound is Bound.WAIT:
            why = f"wait {format_duration(step.wait_seconds)}"
        else:
            why = "now" if step.bound is Bound.NOW else "right after the previous step"
        return f"{step.step} no earlier than {self.local(step.at)} ({why})"


def forecast(
    spec: WaveSpec,
    *,
    now: datetime,
    history: tuple[RolloutRecord, ...] = (),
    created_at: datetime | None = None,
    expires: datetime | None = None,
    progress: WaveProgress | None = None,
    fleet: Mapping[str, Device] | None = None,
    failures: WaveFailures | None = None,
    stopped: str | None = None,
) -> Forecast:
    """The forecast of ``spec``'s remaining steps at ``now``. ``history`` and ``created_at``: the wave as
    observed (``created_at`` None: the wave is still to be created, at ``now``). ``progress``, ``fleet``
    and ``failures``: the next step's gate inputs as the planner reads them (``gates.evaluate``).
    ``stopped``: drift or a halt that holds every remaining step."""
    done = len(history)
    previous: datetime | None = (history[-1].at if history else created_at) or now
    waiting: str | None = stopped
    steps: list[StepForecast] = []
    remaining: list[tuple[str, str | None, Gate]] = []
    for slot in ledger.slots(spec.phases, done):
        phase = spec.phases[slot.phase_index]
        remaining.append((f"rollout {phase.name}{slot.label()}", phase.name, phase.gate if slot.first else Gate()))
    if spec.complete is not None:
        remaining.append(("complete", None, spec.complete.gate))
    for position, (name, phase_name, gate) in enumerate(remaining):
        if waiting is not None or previous is None:
            steps.append(StepForecast(name, phase_name, previous, None, wait_seconds=_wait(gate), unmet=waiting))
            waiting, previous = f"after {name}", None
            continue
        if position == 0 and created_at is not None:
            result = gates.evaluate(
                gate,
                now=now,
                since=previous,
                rollouts=done,
                progress=progress,
                fleet=fleet,
                failures=failures,
            )
            if (result.wait is None or result.wait.passed) and (unmet := _unmet(result)) is not None:
                steps.append(StepForecast(name, phase_name, previous, None, wait_seconds=_wait(gate), unmet=unmet))
                waiting, previous = f"after {name}", None
                continue
        step = _earliest(name, phase_name, gate, previous, now, spec.schedule)
        steps.append(step)
        previous = step.at
        if step.at is None:
            waiting = f"after {name}"
    return Forecast(spec.name, calendar_zone(spec.schedule), tuple(steps), spec.complete is not None, expires)


def calendar_zone(schedule: Schedule) -> tzinfo:
    """The zone a wave's times are shown in: its first window's, else its first freeze's, else UTC."""
    if schedule.windows:
        return schedule.windows[0].zone
    if schedule.freezes:
        return schedule.freezes[0].zone
    return timezone.utc


def _wait(gate: Gate) -> int:
    """A step's own wait in seconds (0: none), forecast or not: the JSON shows it either way."""
    return gate.wait_seconds or 0


def _unmet(result: GateResult) -> str | None:
    """The device-number conditions known not to be met, in the gate's own words (None: none)."""
    updated = result.updated if result.updated is not None and result.updated.state in _UNMET_UPDATED else None
    failed = result.failed if result.failed is not None and result.failed.state in _UNMET_FAILED else None
    if updated is None and failed is None:
        return None
    return replace(result, wait=None, hold=None, updated=updated, failed=failed).reason()


def _earliest(
    name: str, phase: str | None, gate: Gate, previous: datetime, now: datetime, schedule: Schedule
) -> StepForecast:
    """A step's earliest time: its wait after ``previous`` (not before ``now``), then the schedule's next
    opening (``Schedule.hold``, the planner's own rule)."""
    seconds = _wait(gate)
    at, bound = previous + timedelta(seconds=seconds), Bound.WAIT if seconds else Bound.PREVIOUS
    if at <= now:
        at, bound = now, Bound.NOW
    hold = None if schedule.empty else schedule.hold(at)
    if hold is None:
        return StepForecast(name, phase, previous, at, bound, seconds)
    if hold.opens_at is None:
        return StepForecast(name, phase, previous, None, Bound.WINDOW, seconds, hold.reason)
    bound = Bound.FREEZE if any(f.end == hold.opens_at for f in schedule.freezes) else Bound.WINDOW
    return StepForecast(name, phase, previous, hold.opens_at, bound, seconds, hold.reason)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def to_dict(result: Forecast) -> dict[str, Any]:
    """The forecast as JSON (the shape in the module docstring)."""
    return {
        "zone": str(result.zone),
        "done_at": _iso(result.done_at),
        "completes": result.completes,
        "expires": _iso(result.expires),
        "within_expiry": result.within_expiry,
        "assumptions": list(result.assumptions),
        "steps": [
            {
                "step": step.step,
                "phase": step.phase,
                "start": _iso(step.start),
                "at": _iso(step.at),
                "wait": step.wait_seconds,
                "bound": str(step.bound),
                "hold": step.hold,
                "unmet": step.unmet,
            }
            for step in result.steps
        ],
    }
