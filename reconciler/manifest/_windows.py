"""``windows`` and ``freezes`` of a wave manifest and of the repository-wide ``reconcile.yaml``.

The schema checks their shape (so editors flag them); this module checks what a pattern
cannot (a time zone that exists, day names, real times and dates, a freeze that ends after it
starts) and turns them into ``core.windows`` objects, each problem at its line and column.

How a wave's schedule is put together (README, "Rollout windows and freezes"):

- ``reconcile.yaml`` files (``kind: ReleasePolicy``) in the wave manifest's directory and in
  every directory above it, up to the top of the release repository, apply to the wave;
- windows: the wave's own ``windows`` if it has the key (``windows: []``: any time), else those of
  the nearest ``reconcile.yaml`` that has the key, else none (any time);
- freezes always add up: the wave's own and those of every ``reconcile.yaml`` above it, because a
  freeze declared for the repository must not be lifted by one wave's manifest.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING

from msgspec import Struct

from reconciler.core import MINUTES_PER_DAY, WEEKDAYS, Freeze, Schedule, Window, day_start
from reconciler.errors import Problem, Problems
from reconciler.manifest._schema import WaveSchema
from reconciler.manifest._source import ManifestSource, SourceError, decode_utf8
from reconciler.manifest._yaml import Document, YamlPath, position, read_documents

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

POLICY_FILE = "reconcile.yaml"
POLICY_KIND = "ReleasePolicy"
_DAY_NAMES = {name.lower(): index for index, name in enumerate(WEEKDAYS)} | {
    name.lower(): index
    for index, name in enumerate(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"))
}
_HOURS = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LOCAL_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")
# Names zoneinfo finds on some machines but that mean "this machine's zone", not a place.
_NOT_PLACES = {"localtime", "posixrules", "factory"}

Report = Callable[[YamlPath, str], None]  # (path in the document, message): an error at that value


class ScheduleKeys(Struct, frozen=True):
    """What one document (a wave or a ReleasePolicy) says: windows (None: the key is absent) and freezes."""

    windows: tuple[Window, ...] | None
    freezes: tuple[Freeze, ...]


def is_policy_file(key: str) -> bool:
    return os.path.basename(key) == POLICY_FILE


class Policies:
    """The ``reconcile.yaml`` files of one load, each read and checked once, and the schedule they give a wave.

    ``report`` takes the load's problems (the loader's ``_Run.report``), so a mistake in a
    reconcile.yaml fails the run like one in a manifest.
    """

    def __init__(self, source: ManifestSource, report: Callable[[Sequence[Problem] | Problems], None]):
        self.source = source
        self._report = report
        self._read: dict[str, ScheduleKeys | None] = {}  # key -> what it says (None: it is wrong)
        self._refused: set[str] = set()  # reconcile.yaml files leading out of the repository, reported once
        self._found: dict[tuple[str, str], tuple[str, ...]] = {}  # (directory, repository) -> files above

    def read(self, key: str) -> ScheduleKeys | None:
        """What the ``reconcile.yaml`` at ``key`` says; None when it is wrong (its problems are reported)."""
        if key in self._read:
            return self._read[key]
        self._read[key] = None
        file = self.source.display(key)
        try:
            text = decode_utf8(self.source.read(key), file)
        except SourceError as error:
            self._report([Problem(file, 1, 1, f"cannot read the file: {error}")])
            return None
        if isinstance(text, Problem):
            self._report([text])
            return None
        documents, problems = read_documents(text, file)
        self._report(problems)
        if problems.total:
            return None
        if (
            len(documents) != 1
            or not isinstance(documents[0].data, dict)
            or documents[0].data.get("kind") != POLICY_KIND
        ):
            line, col = (
                position(documents[1].node if len(documents) > 1 else documents[0].node) if documents else (1, 1)
            )
            self._report(
                [
                    Problem(
                        file,
                        line,
                        col,
                        f"{POLICY_FILE} is the repository-wide settings file: it must hold "
                        f"one document with apiVersion: reconciler/v1 and kind: {POLICY_KIND} "
                        f"(wave manifests go in other files)",
                    )
                ]
            )
            return None
        document = documents[0]
        schema_problems, flagged = _policy_schema().check(document)
        self._report(schema_problems)
        wrong = []
        keys = read_schedule(
            document, flagged, lambda path, message: wrong.append(document.problem(document.node_at(path), message))
        )
        self._report(wrong)
        if schema_problems.total or wrong or not document.clean:
            return None
        self._read[key] = keys
        return keys

    def schedule(self, manifest: str, own: ScheduleKeys) -> Schedule:
        """The windows and freezes in force for the wave of ``manifest`` (``own``: what the wave says), with
        every ``reconcile.yaml`` from the manifest's directory up to the top of the release repository."""
        windows, freezes, files = own.windows, list(own.freezes), []
        for key in self._above(manifest):
            files.append(self.source.display(key))
            policy = self.read(key)
            if policy is None:
                continue
            if windows is None:  # the nearest file with windows decides
                windows = policy.windows
            freezes.extend(policy.freezes)
        return Schedule(windows or (), tuple(freezes), tuple(files))

    def _above(self, manifest: str) -> tuple[str, ...]:
        """The ``reconcile.yaml`` files from the manifest's directory up, nearest first: looked for once per
        directory and repository, as the manifests of a directory share them."""
        place = (os.path.dirname(manifest), self.source.repository(manifest))
        if place not in self._found:
            self._found[place] = self._walk(manifest)
        return self._found[place]

    def _walk(self, manifest: str) -> tuple[str, ...]:
        found: list[str] = []
        seen: set[str] = set()
        up = "."
        while True:
            try:
                directory = self.source.resolve(manifest, up)
            except SourceError:
                break  # above the release repository
            if directory in seen:
                break  # the file system's root
            seen.add(directory)
            try:
                key = self.source.resolve(manifest, f"{up}/{POLICY_FILE}")
            except SourceError as error:  # the directory is inside, so the file is a link leading out
                file = os.path.normpath(os.path.join(self.source.display(directory), POLICY_FILE))
                if file not in self._refused:
                    self._refused.add(file)
                    self._report([Problem(file, 1, 1, f"cannot read the file: {error}")])
                break
            up = ".." if up == "." else f"{up}/.."
            if self.source.exists(key):
                found.append(key)
        return tuple(found)


@cache
def _policy_schema() -> WaveSchema:
    from reconciler.resources import load_schema

    return WaveSchema(load_schema("policy.schema.json"))


def read_schedule(document: Document, flagged: set[YamlPath], report: Report) -> ScheduleKeys:
    """The ``windows`` and ``freezes`` of a document the schema checked (``flagged``: values it found wrong)."""
    data = document.data if isinstance(document.data, dict) else {}
    reader = _Reader(document, flagged, report)
    raw_windows = data.get("windows")
    windows = None
    if "windows" in data:
        windows = tuple(
            filter(
                None,
                (
                    reader.window(item, ("windows", index))
                    for index, item in enumerate(raw_windows if isinstance(raw_windows, list) else ())
                ),
            )
        )
    raw_freezes = data.get("freezes")
    freezes = tuple(
        filter(
            None,
            (
                reader.freeze(item, ("freezes", index))
                for index, item in enumerate(raw_freezes if isinstance(raw_freezes, list) else ())
            ),
        )
    )
    return ScheduleKeys(windows, freezes)


class _Reader:
    def __init__(self, document: Document, flagged: set[YamlPath], report: Report):
        self.document = document
        self.flagged = flagged
        self.report = report

    def where(self, path: YamlPath) -> str:
        line, col = position(self.document.node_at(path))
        return f"{self.document.file}:{line}:{col}"

    def text(self, raw: dict[str, object], path: YamlPath, key: str) -> str | None:
        """``raw[key]`` when it is a string the schema did not flag."""
        value = raw.get(key)
        return value if isinstance(value, str) and (*path, key) not in self.flagged else None

    def window(self, raw: object, path: YamlPath) -> Window | None:
        if not isinstance(raw, dict):
            return None
        zone = self.zone(raw, path)
        days = self.days(raw.get("days"), (*path, "days")) if "days" in raw else frozenset(range(7))
        hours = self.hours(raw, path) if "hours" in raw else (0, MINUTES_PER_DAY)
        if zone is None or days is None or hours is None:
            return None
        return Window(days, hours[0], hours[1], zone, self.where(path))

    def freeze(self, raw: object, path: YamlPath) -> Freeze | None:
        if not isinstance(raw, dict):
            return None
        zone = self.zone(raw, path)
        if zone is None:
            return None
        start = self.instant(raw, path, "from", zone, end=False)
        end = self.instant(raw, path, "until", zone, end=True)
        reason = self.text(raw, path, "reason")
        if start is None or end is None or reason is None:
            return None
        if end <= start:
            self.report(
                (*path, "until"),
                f"until {raw['until']} is not after from {raw['from']}: a freeze must end "
                f"after it starts (a date in until counts to the end of that day)",
            )
            return None
        return Freeze(start, end, reason, zone, self.where(path))

    def zone(self, raw: dict[str, object], path: YamlPath) -> ZoneInfo | None:
        # Imported here: zoneinfo (with sysconfig, 5 ms) is loaded only by a manifest with a schedule.
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if "timezone" not in raw:
            return ZoneInfo("UTC")
        name = self.text(raw, path, "timezone")
        if name is None:
            return None
        try:
            if name.lower() in _NOT_PLACES:
                raise ValueError(name)
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.report(
                (*path, "timezone"),
                f"timezone '{name}' is not a known IANA time zone; use a name such as "
                f"Europe/Berlin, America/New_York or UTC{_closest_zone(name)}",
            )
            return None

    def days(self, raw: object, path: YamlPath) -> frozenset[int] | None:
        """``Mon-Thu``, ``Mon,Wed,Fri``, ``Fri-Mon`` (across the weekend) or a list of those."""
        if path in self.flagged:
            return None
        items = (
            [(raw, path)]
            if isinstance(raw, str)
            else [(item, (*path, index)) for index, item in enumerate(raw) if isinstance(item, str)]
            if isinstance(raw, list)
            else []
        )
        days: set[int] = set()
        ok = True
        for text, where in items:
            for part in text.split(","):
                part = part.strip()
                ends = [end.strip() for end in part.split("-")]
                numbers = [_DAY_NAMES.get(end.lower()) for end in ends]
                bad = next((end for end, number in zip(ends, numbers, strict=True) if number is None), None)
                if bad is not None or len(ends) > 2:
                    self.report(
                        where,
                        f"days: {_bad_day(part, bad)}; use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges "
                        f"such as Mon-Thu and lists such as Mon,Wed,Fri",
                    )
                    ok = False
                    continue
                first, last = numbers[0], numbers[-1]
                assert first is not None and last is not None
                days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
        return frozenset(days) if ok and days else None

    def hours(self, raw: dict[str, object], path: YamlPath) -> tuple[int, int] | None:
        """``09:00-16:00`` -> minutes (540, 960); ``22:00-06:00`` runs past midnight; ``24:00`` may end a window."""
        text = self.text(raw, path, "hours")
        if text is None:
            return None
        match = _HOURS.fullmatch(text)
        if match is None:
            return None  # the schema's pattern reported it
        start_h, start_m, end_h, end_m = map(int, match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        problem = None
        if start_h > 23 or start_m > 59:
            problem = f"{match.group(1)}:{match.group(2)} is not a time of day (00:00 to 23:59)"
        elif end_m > 59 or end > MINUTES_PER_DAY:
            problem = f"{match.group(3)}:{match.group(4)} is not a time of day (00:00 to 24:00)"
        elif start == end % MINUTES_PER_DAY:
            problem = "the window starts and ends at the same time; for the whole day leave hours out"
        if problem:
            self.report((*path, "hours"), f"hours '{text}': {problem}")
            return None
        return start, end if end else MINUTES_PER_DAY

    def instant(
        self, raw: dict[str, object], path: YamlPath, key: str, zone: ZoneInfo, *, end: bool
    ) -> datetime | None:
        """A ``from``/``until`` value: a date (``until``: through the end of that day), a local date-time in
        the freeze's time zone, or an RFC 3339 date-time with an offset."""
        text = self.text(raw, path, key)
        if text is None:
            return None
        try:
            if _DATE.fullmatch(text):
                day = date.fromisoformat(text)
                return day_start(day + timedelta(days=1) if end else day, zone)
            parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            self.report((*path, key), f"{key} '{text}' is not a real date or time")
            return None
        if parsed.tzinfo is None:
            if not _LOCAL_DATE_TIME.fullmatch(text):
                self.report((*path, key), f"{key} '{text}' is not a date or date-time")
                return None
            parsed = parsed.replace(tzinfo=zone)
        return parsed.astimezone(timezone.utc)


def _bad_day(part: str, bad: str | None) -> str:
    if bad is None:
        return f"'{part}' is not a day or a range of two days"
    if not bad:
        return f"'{part}' has an empty day name"
    close = difflib.get_close_matches(bad.lower(), list(_DAY_NAMES), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0].capitalize()}'?)" if close else ""
    return f"unknown day '{bad}'{hint}"


def _closest_zone(name: str) -> str:
    """`` (did you mean 'Europe/Berlin'?)``; the list of zones is read only when a name is wrong."""
    from zoneinfo import available_timezones

    zones = sorted(zone for zone in available_timezones() if zone.lower() not in _NOT_PLACES)
    lowered = {zone.lower(): zone for zone in zones}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""
