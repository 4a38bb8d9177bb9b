"""Words and numbers as plans and status reports print them: counts with their noun, scopes, durations.

Pure and shared: the planner's reasons, ``reconcile status`` and the renderers all write a duration
or a device count the same way.
"""

from __future__ import annotations

from datetime import timedelta

EXPIRY_WARNING = timedelta(days=30)  # targets expiring sooner than this are warned about


def counted(count: int, noun: str) -> str:
    """``1 device``, ``2 devices``: a count and its noun in the right number (digits as they are)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def scope_text(group: str | None, limit: str | None, uuid_count: int | None) -> str:
    """Which devices a phase or rollout reaches, in words: ``group beta, limit 10%, 7 uuids``."""
    parts = [f"group {group}" if group else "factory-wide"]
    if limit is not None:
        parts.append(f"limit {limit}")
    if uuid_count is not None:
        parts.append(counted(uuid_count, "uuid"))
    return ", ".join(parts)


def format_duration(delta: timedelta | int) -> str:
    """``13h12m``, ``3d4h``, ``45s``: the largest unit and the next one, truncated.

    Hours are used up to three days, because operators write gates as ``24h`` or ``48h``.
    """
    seconds = max(0, int(delta.total_seconds()) if isinstance(delta, timedelta) else int(delta))
    units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    if seconds < 3 * 86400:
        units = units[1:]
    for position, (name, size) in enumerate(units):
        if seconds >= size or name == "s":
            count, rest = divmod(seconds, size)
            text = f"{count}{name}"
            if position + 1 < len(units):
                next_name, next_size = units[position + 1]
                if rest // next_size:
                    text += f"{rest // next_size}{next_name}"
            return text
    raise AssertionError("unreachable: the seconds unit always matches")
