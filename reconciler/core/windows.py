"""Rollout windows and freezes: when a rollout or complete may run, and when it may run next.

Pure: the planner passes the factory's clock (``observed.now``); nothing here reads a clock.
Time zones arrive as ``zoneinfo.ZoneInfo`` objects built by the manifest loader (which reads the
time zone database); this module only does arithmetic with them.

A window is judged by the wall clock of its time zone: an instant is inside ``days: Mon-Thu,
hours: "09:00-16:00", timezone: Europe/Berlin`` when a clock on a wall in Berlin shows a
Monday to Thursday and a time from 09:00 up to (not including) 16:00. That one rule decides
every daylight-saving question the same way:

- on a spring-forward day the skipped hour does not exist, so a window ``02:00-03:00`` on
  2027-03-28 in Berlin is empty and ``02:30-04:00`` opens at 03:00 CEST, when the clock jumps;
- on a fall-back day the repeated hour happens twice, so ``02:00-03:00`` on 2027-10-31 is open
  for two real hours, and ``02:30-04:00`` closes at the first 03:00 and opens again at the
  second 02:30;
- a window whose ``hours`` end at or before they start runs past midnight into the next day
  (``22:00-06:00``); its days are the days it opens.

A freeze is a span of real time ``[from, until)``: nothing rolls out or completes inside it,
whatever the windows say. Cancel is never held (an emergency must always go through), and init
is not either (creating a wave changes no device); the planner applies both rules.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo

from msgspec import Struct

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MINUTES_PER_DAY = 24 * 60
# How far ahead the next opening is searched for at a time: every window opens at least once a week,
# and a daylight-saving change can empty one opening (02:00-03:00 on a spring-forward day).
_SEARCH_BEYOND = timedelta(days=16)
_TRANSITION_STEP = timedelta(hours=6)  # no zone changes its offset twice within six hours


class Window(Struct, frozen=True):
    """Allowed wall-clock times: ``days`` (0 = Monday) and minutes of the day ``[start, end)``.

    ``end <= start`` means the window runs past midnight: it opens on one of ``days`` at
    ``start`` and closes the next day at ``end``. ``start == 0, end == 1440`` is the whole day.
    """

    days: frozenset[int]
    start: int  # minutes after midnight, 0..1439
    end: int  # minutes after midnight, 1..1440
    zone: tzinfo
    where: str = ""  # file:line:col of the window, for messages

    def contains(self, instant: datetime) -> bool:
        local = instant.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days and minute < self.end)

    def openings(self, after: datetime, until: datetime) -> set[datetime]:
        """Every instant in ``(after, until]`` at which this window may open: each allowed day's
        ``start`` in either fold of a repeated hour, and each change of the zone's UTC offset (a
        clock that jumps into the window opens it there)."""
        found = set(offset_changes(self.zone, after, until))
        first = after.astimezone(self.zone).date() - timedelta(days=1)
        last = until.astimezone(self.zone).date() + timedelta(days=1)
        day = first
        while day <= last:
            if day.weekday() in self.days:
                wall = datetime.combine(day, time(self.start // 60, self.start % 60))
                for fold in (0, 1):
                    instant = wall.replace(tzinfo=self.zone, fold=fold).astimezone(timezone.utc)
                    # A start inside a skipped hour does not exist: the offset change above opens it.
                    if instant.astimezone(self.zone).replace(tzinfo=None) == wall and after < instant <= until:
                        found.add(instant)
            day += timedelta(days=1)
        return found

    def describe(self) -> str:
        """``Mon-Thu 09:00-16:00 Europe/Berlin``."""
        hours = (
            "all day" if (self.start, self.end) == (0, MINUTES_PER_DAY) else f"{_clock(self.start)}-{_clock(self.end)}"
        )
        return f"{describe_days(self.days)} {hours} {self.zone}"


class Freeze(Struct, frozen=True):
    """Nothing rolls out or completes from ``start`` up to (not including) ``end``."""

    start: datetime  # aware
    end: datetime  # aware, after start
    reason: str
    zone: tzinfo  # the zone its dates were written in, for messages
    where: str = ""  # file:line:col of the freeze

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


class Schedule(Struct, frozen=True):
    """The windows and freezes in force for one wave. No windows: any time outside a freeze."""

    windows: tuple[Window, ...] = ()
    freezes: tuple[Freeze, ...] = ()
    files: tuple[str, ...] = ()  # repository-wide files that contributed (a change to one affects the wave)

    @property
    def empty(self) -> bool:
        return not self.windows and not self.freezes

    def allows(self, instant: datetime) -> bool:
        if any(freeze.contains(instant) for freeze in self.freezes):
            return False
        return not self.windows or any(window.contains(instant) for window in self.windows)

    def next_open(self, now: datetime) -> datetime | None:
        """The earliest instant at or after ``now`` that ``allows``; None if windows never open (a guard:
        every valid window opens at least once in 16 days outside freezes).

        Searched 16 days at a time: whether an instant is allowed changes only where a window opens or
        a freeze ends, so only those instants are tried; a stretch with none allowed ends inside
        freezes, and nothing is allowed before the last of them ends, so the search jumps there. A
        freeze of years therefore costs no more than one of days.
        """
        start = now
        for _ in range(len(self.freezes) + 2):  # each round finds the opening or jumps past a freeze
            if self.allows(start):
                return start
            end = start + _SEARCH_BEYOND
            candidates = {f.end for f in self.freezes if start < f.end <= end}
            for window in self.windows:
                candidates |= window.openings(start, end)
            found = next((c for c in sorted(candidates) if self.allows(c)), None)
            if found is not None:
                return found
            covering = [f.end for f in self.freezes if f.contains(end)]
            if not covering:
                return None
            start = max(covering)
        return None

    def hold(self, now: datetime) -> Hold | None:
        """Why a rollout or complete may not run at ``now``, and when it may; None when it may.

        The reason names, in order, every freeze and every stretch outside the windows that keeps the
        step waiting until the next opening: a freeze that ends inside another, or a night before the
        wave's own freeze, is as much a cause of the wait as the first freeze."""
        if self.allows(now):
            return None
        opens = self.next_open(now)
        why = "; then ".join(self._causes(now, opens))
        if opens is None:
            return Hold(f"{why}; no window ever opens", None)
        window = next((w for w in self.windows if w.contains(opens)), None)
        last = next((f for f in self.freezes if f.end == opens), None)
        zone = window.zone if window is not None else last.zone if last is not None else timezone.utc
        what = "the next window opens" if window is not None else "allowed again"
        return Hold(f"{why}; {what} {local_time(opens, zone)}{_also_utc(opens, zone)}", opens)

    def _causes(self, now: datetime, opens: datetime | None) -> list[str]:
        """What holds a step from ``now`` to ``opens`` (None: as far as the freezes reach), in order: each
        freeze that extends the wait, with where it is written, and the windows (each window once, with
        where it is written, the first time they hold it). Each round passes a freeze or reaches the next
        instant a window or freeze may change, so the rounds are bounded by the freezes and the windows."""
        causes: list[str] = []
        at = now
        windows_named = False
        for _ in range(2 * len(self.freezes) + 2 * len(self.windows) + 4):
            if opens is not None and at >= opens:
                break
            covering = [f for f in self.freezes if f.contains(at)]
            if covering:
                freeze = max(covering, key=lambda f: f.end)
                text = f"frozen until {local_time(freeze.end, freeze.zone)}: {freeze.reason}"
                causes.append(text + (f" ({freeze.where})" if freeze.where else ""))
                at = freeze.end
                continue
            if not self.windows or self.allows(at):
                break
            if windows_named:
                causes.append("outside the rollout windows")
            else:
                # Each window with where it is written: the wave's manifest or a reconcile.yaml to edit.
                listed = "; ".join(w.describe() + (f" at {w.where}" if w.where else "") for w in self.windows)
                causes.append(f"outside the rollout windows ({listed})")
                windows_named = True
            end = at + _SEARCH_BEYOND
            changes = {f.start for f in self.freezes if at < f.start <= end}
            for window in self.windows:
                changes |= {c for c in window.openings(at, end) if window.contains(c)}
            if not changes:
                break
            at = min(changes)
        return causes


class Hold(Struct, frozen=True):
    """A rollout or complete held by the schedule: why, and the instant it may run (None: not within reach)."""

    reason: str
    opens_at: datetime | None


def offset_changes(zone: tzinfo, after: datetime, until: datetime) -> set[datetime]:
    """The instants in ``(after, until]`` at which ``zone``'s UTC offset changes (to the second)."""
    found: set[datetime] = set()
    if isinstance(zone, timezone):
        return found
    low = after
    while low < until:
        high = min(low + _TRANSITION_STEP, until)
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            before, at = low, high  # offset(before) differs from offset(at): bisect to the first second
            while at - before > timedelta(seconds=1):
                middle = before + (at - before) / 2
                middle = middle.replace(microsecond=0)
                if middle.astimezone(zone).utcoffset() == before.astimezone(zone).utcoffset():
                    before = middle
                else:
                    at = middle
            found.add(at)
        low = high
    return found


def describe_days(days: frozenset[int]) -> str:
    """``Mon-Thu``, ``Mon,Wed,Fri``, ``Fri-Mon`` or ``every day``: runs of three or more as ranges."""
    if len(days) == 7:
        return "every day"
    # Start at a day that follows a day not in the set, so a run across Sunday stays one run.
    first = next(day for day in range(7) if day in days and (day - 1) % 7 not in days)
    runs: list[list[int]] = []
    for offset in range(7):
        day = (first + offset) % 7
        if day not in days:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}")
        else:
            parts.extend(WEEKDAYS[day] for day in run)
    return ",".join(parts)


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant of a calendar day in ``zone`` (midnight, or the end of a skipped midnight)."""
    instant = datetime.combine(day, time()).replace(tzinfo=zone).astimezone(timezone.utc)
    if instant.astimezone(zone).date() != day:  # midnight was skipped: the day starts at the jump
        changes = offset_changes(zone, instant - timedelta(days=1), instant + timedelta(days=1))
        instant = min(c for c in changes if c.astimezone(zone).date() == day)
    return instant


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def local_time(instant: datetime, zone: tzinfo) -> str:
    """``Mon 2026-11-02 09:00 CET``; seconds only when there are some."""
    local = instant.astimezone(zone)
    clock = "%H:%M:%S" if local.second else "%H:%M"
    return local.strftime(f"%a %Y-%m-%d {clock} ") + (local.tzname() or "")


def _utc(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _also_utc(instant: datetime, zone: tzinfo) -> str:
    """`` = 2026-11-02T08:00:00Z`` after a local time, unless the zone is UTC itself."""
    return "" if str(zone) in ("UTC", "Etc/UTC") else f" = {_utc(instant)}"
