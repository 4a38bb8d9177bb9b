"""A step's gate, evaluated: wait and ``require.updated`` (with ``onlineWithin``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.core.spec import Gate
from reconciler.core.state import Device, WaveProgress
from reconciler.core.text import format_duration

OFFLINE_AFTER = timedelta(hours=4)  # a gate's reason calls a device offline after this (fioctl's default threshold)
MAX_NAMED_OFFLINE = 5  # offline devices named in a gate's reason


def gate_reason(
    gate: Gate,
    since: datetime | None,
    now: datetime,
    progress: WaveProgress | None,
    pending_before: bool,
    fleet: dict[str, Device] | None = None,
) -> str | None:
    """Why a gate has not passed yet, or None. ``since`` None means the previous step happens in this plan."""
    reasons = []
    if gate.wait_seconds:
        wait = timedelta(seconds=gate.wait_seconds)
        left = wait if since is None else since + wait - now
        if left > timedelta(0):
            reasons.append(f"wait {format_duration(wait)}: {format_duration(left)} left")
    if gate.updated_percent is not None:
        need = f"{gate.updated_percent:g}%"
        if pending_before or progress is None:
            reasons.append(f"updated {need}: needs the wave status after the previous rollout")
        elif progress.rolled_out == 0:
            reasons.append(f"updated {need}: no devices rolled out yet")
        else:
            reason = _updated_reason(gate, gate.updated_percent, need, now, progress, fleet)
            if reason:
                reasons.append(reason)
    return "; ".join(reasons) or None


def _updated_reason(
    gate: Gate, percent: float, need: str, now: datetime, progress: WaveProgress, fleet: dict[str, Device] | None
) -> str | None:
    """The ``require.updated`` gate: updated / rolled out, minus the offline devices when ``onlineWithin`` says so.

    A device counts as offline when it is staged by the wave, not yet updated, and not seen for
    ``onlineWithin`` (or, for the reason's sake only, for 4 hours, fioctl's offline threshold).
    """
    window = timedelta(seconds=gate.online_within_seconds) if gate.online_within_seconds else OFFLINE_AFTER
    offline = _offline(fleet, now, window) if fleet is not None else []
    counted = progress.rolled_out
    if gate.online_within_seconds:
        counted = max(progress.rolled_out - len(offline), 0)
        need += f" of devices seen within {format_duration(window)}"
    share = 100.0 * progress.updated / counted if counted else 0.0
    if counted and share >= percent:
        return None
    numbers = f"{progress.updated} of {progress.rolled_out} devices"
    if fleet is not None:
        numbers += f" rolled out are updated, {len(offline)} waiting offline for more than {format_duration(window)}"
        if offline:
            named = ", ".join(f"{d.name} ({d.uuid})" for d in offline[:MAX_NAMED_OFFLINE])
            more = f" and {len(offline) - MAX_NAMED_OFFLINE} more" if len(offline) > MAX_NAMED_OFFLINE else ""
            numbers += f": {named}{more}"
            if not gate.online_within_seconds:
                numbers += "; to leave offline devices out, add onlineWithin to require"
    if not counted:
        return f"updated {need}: no online device rolled out yet ({numbers})"
    return f"updated {need}: {share:.1f}% ({numbers})"


def _offline(fleet: dict[str, Device], now: datetime, window: timedelta) -> list[Device]:
    """Devices staged by the wave and not updated yet that have not been seen within ``window``, oldest first."""
    never = datetime.min.replace(tzinfo=now.tzinfo)
    waiting = [
        d
        for d in fleet.values()
        if d.in_wave and not d.up_to_date and (d.last_seen is None or now - d.last_seen > window)
    ]
    return sorted(waiting, key=lambda d: (d.last_seen or never, d.uuid))
