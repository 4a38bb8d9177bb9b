"""The small value languages of a manifest: durations, limits, percentages, date-times.

The schema already checks their shape (so editors flag them); these functions turn them
into numbers and check what a pattern cannot (ranges, real calendar dates). Each raises
``ValueError`` with a message that completes "<field> ..." for the user.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

from reconciler.core import FailureBound, Limit
from reconciler.durations import parse_duration

__all__ = ["parse_date_time", "parse_duration", "parse_failure_bound", "parse_limit", "parse_percent"]

MAX_LIMIT = 10_000  # the factory's cap per rollout
# A percentage's number as the schema writes it: at most 100, no leading zeros ("001%" is refused there too).
_PERCENT_NUMBER = r"(100(?:\.0+)?|[0-9]{1,2}(?:\.[0-9]+)?)"
_PERCENT = re.compile(_PERCENT_NUMBER + "%")
_FAILURE_BOUND = re.compile("(<=?)" + _PERCENT_NUMBER + "%")
_LIMIT_PERCENT = re.compile(r"([0-9]{1,3})%")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


@lru_cache(maxsize=4096, typed=True)  # typed: True must not find the entry for 1
def parse_limit(value: int | str) -> Limit:
    """``10`` -> 10 devices, ``"10%"`` -> 10 percent of the eligible devices."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_LIMIT:
        return Limit(value)
    match = _LIMIT_PERCENT.fullmatch(value) if isinstance(value, str) else None
    if match and 1 <= int(match.group(1)) <= 100:
        return Limit(int(match.group(1)), percent=True)
    raise ValueError(f'must be a number of devices from 1 to 10000 or a percentage from "1%" to "100%", got {value!r}')


@lru_cache(maxsize=4096)
def parse_percent(text: str) -> float:
    """``99.5%`` -> 99.5; more than 0 and at most 100."""
    match = _PERCENT.fullmatch(text)
    if match is None or float(match.group(1)) == 0:
        raise ValueError(f"must be a percentage such as 90% or 99.5% (more than 0%, at most 100%), got '{text}'")
    return float(match.group(1))


@lru_cache(maxsize=4096)
def parse_failure_bound(text: str) -> FailureBound:
    """``<2%`` -> below 2%, ``<=2%`` -> at most 2%; 0% to 100% (``<0%`` could never hold: refused).

    Only these two forms: an upper bound is the only sensible direction, and writing the comparison out
    keeps ``failed: 2%`` (a threshold? a target?) from being read either way."""
    match = _FAILURE_BOUND.fullmatch(text)
    if match is None:
        raise ValueError(
            f'must be a bound such as "<2%" or "<=0.5%" (the share of the devices reached whose install '
            f"failed, kept below or at most that percentage), got '{text}'"
        )
    inclusive, percent = match.group(1) == "<=", float(match.group(2))
    if percent == 0 and not inclusive:
        raise ValueError(
            f'must bound a percentage from 0% to 100% ("<0%" can never hold; "<=0%" allows no failure), got \'{text}\''
        )
    return FailureBound(percent, inclusive)


def parse_date_time(text: str) -> datetime:
    """An RFC 3339 date-time (with a UTC offset) -> an aware datetime in UTC."""
    upper = text.upper()
    if not _DATE_TIME.fullmatch(upper):
        raise ValueError(f"must be an RFC 3339 date-time such as 2027-11-22T00:00:00Z, got '{text}'")
    try:
        return datetime.fromisoformat(upper).astimezone(UTC)
    except (ValueError, OverflowError):  # 2027-02-30, 25:00, offsets of a day or more, year 1 minus an hour
        raise ValueError(f"must be a real date and time, got '{text}'") from None
