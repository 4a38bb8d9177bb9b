"""Times in the factory's answers (RFC 3339), read the same way by every module that observes the factory."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from the API as UTC; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def required_time(value: object, field: str) -> datetime:
    """Gates count from these times: an unreadable one must stop the plan, not let a wait pass at once."""
    moment = parse_time(value) if isinstance(value, str) else None
    if moment is None:
        raise ValueError(f"{field} {value!r} is not an RFC 3339 time")
    return moment
