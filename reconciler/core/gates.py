"""A step's gate, evaluated once for both the planner and ``reconcile status``.

A step with a gate (a phase's first rollout, or the complete) runs when every condition of its gate
holds and nothing holds it:

- ``wait``: time since the previous rollout (the first phase's: since the wave's creation). When the
  previous step happens in the same plan the wait starts once it has run, so all of it is left;
- ``require.updated``: updated / rolled out >= P%, on the wave status read after the previous rollout
  (``WaveProgress``). With ``onlineWithin`` the devices offline for longer (staged by the wave, not up
  to date, not seen within it) leave the denominator, so an offline canary cannot hold the gate forever;
- ``require.failed``: the step's failure bound, on a count made after the previous rollout
  (``core/failures.py``; before any rollout nothing has failed);
- a rollout window or a freeze (``core/windows.py``) holds the step until it opens.

``evaluate`` returns a frozen ``GateResult`` holding each condition with its numbers. The planner's
reason (``GateResult.reason``) and the status report's line (``core/status.py``) are both rendered from
it, so a plan and ``reconcile status`` never disagree on whether a step's gate has passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from msgspec import Struct

from reconciler.core.spec import FailureBound, Gate
from reconciler.core.state import Device, WaveFailures, WaveProgress
from reconciler.core.text import format_duration
from reconciler.core.windows import Hold

OFFLINE_AFTER = timedelta(hours=4)  # a gate's reason calls a device offline after this (fioctl's default threshold)
MAX_NAMED_OFFLINE = 5  # offline devices named in a gate's reason


class WaitCheck(Struct, frozen=True):
    """``wait``: it passes at ``passes_at``; ``left`` is what remains of it now."""

    seconds: int
    passes_at: datetime | None  # None: the previous step runs in this plan, and the wait starts then
    left: timedelta

    @property
    def passed(self) -> bool:
        return self.left <= timedelta(0)


class UpdatedState(StrEnum):
    """Where a ``require.updated`` condition stands."""

    MET = "met"
    SHORT = "short"  # below its share
    UNREAD = "unread"  # no wave status read after the previous rollout
    NONE_ROLLED_OUT = "none rolled out"
    NONE_ONLINE = "none online"  # every device rolled out is offline (onlineWithin)


class UpdatedCheck(Struct, frozen=True):
    """``require.updated`` (with ``onlineWithin``) and its numbers."""

    percent: float
    online_within: timedelta | None
    window: timedelta  # a device not seen for this long is offline: onlineWithin, else OFFLINE_AFTER
    progress: WaveProgress | None  # None: not read after the previous rollout
    offline: tuple[Device, ...] | None  # offline devices staged and not up to date, oldest first; None: not listed

    @property
    def counted(self) -> int:
        """The denominator: devices rolled out, less the offline ones when ``onlineWithin`` says so."""
        if self.progress is None:
            return 0
        left_out = len(self.offline or ()) if self.online_within is not None else 0
        return max(self.progress.rolled_out - left_out, 0)

    @property
    def share(self) -> float:
        """Percent of the counted devices that are updated (0 when none is counted)."""
        if self.progress is None or not self.counted:
            return 0.0
        return 100.0 * self.progress.updated / self.counted

    @property
    def state(self) -> UpdatedState:
        if self.progress is None:
            return UpdatedState.UNREAD
        if self.progress.rolled_out == 0:
            return UpdatedState.NONE_ROLLED_OUT
        if not self.counted:
            return UpdatedState.NONE_ONLINE
        return UpdatedState.MET if self.share >= self.percent else UpdatedState.SHORT

    @property
    def passed(self) -> bool:
        return self.state is UpdatedState.MET


class FailedState(StrEnum):
    """Where a ``require.failed`` condition stands."""

    MET = "met"
    UNCOUNTED = "uncounted"  # no failure count made after the previous rollout
    OVER = "over"  # the counted failures exceed the bound
    UNCHECKED = "unchecked"  # within it, but not if the devices whose events were not read failed too


class FailedCheck(Struct, frozen=True):
    """``require.failed`` and its numbers."""

    bound: FailureBound
    failures: WaveFailures | None  # None: no count made after the previous rollout
    nothing_rolled_out: bool  # no rollout yet, nor one earlier in this plan: nothing can have failed

    @property
    def state(self) -> FailedState:
        if self.nothing_rolled_out:
            return FailedState.MET
        counted = self.failures
        if counted is None:
            return FailedState.UNCOUNTED
        if not self.bound.allows(counted.failed, counted.reached):
            return FailedState.OVER
        if counted.unchecked and not self.bound.allows(counted.failed + counted.unchecked, counted.reached):
            return FailedState.UNCHECKED
        return FailedState.MET

    @property
    def passed(self) -> bool:
        return self.state is FailedState.MET


class GateResult(Struct, frozen=True):
    """A step's gate evaluated at one instant: each condition the gate has, and the window or freeze
    holding the step (None: none)."""

    wait: WaitCheck | None = None
    updated: UpdatedCheck | None = None
    failed: FailedCheck | None = None
    hold: Hold | None = None

    @property
    def passed(self) -> bool:
        checks = (self.wait, self.updated, self.failed)
        return self.hold is None and all(check.passed for check in checks if check is not None)

    def reason(self) -> str | None:
        """Why the step waits, as the plan says it (``wait 24h: 3h left; updated 90%: 80.0% (...)``), or None."""
        reasons = [_wait_reason(self.wait), _updated_reason(self.updated), _failed_reason(self.failed)]
        reasons.append(self.hold.reason if self.hold is not None else None)
        return "; ".join(reason for reason in reasons if reason) or None


def evaluate(
    gate: Gate,
    *,
    now: datetime,
    since: datetime | None,
    rollouts: int,
    progress: WaveProgress | None = None,
    fleet: Mapping[str, Device] | None = None,
    failures: WaveFailures | None = None,
    pending_before: bool = False,
    hold: Hold | None = None,
) -> GateResult:
    """``gate`` at ``now``. ``since``: when the previous rollout happened (None: it happens in this plan,
    as ``pending_before`` says for a rollout of the same wave earlier in the plan). ``rollouts``: the
    length of the wave's rollout history. ``progress`` and ``failures``: the wave's numbers as read; they
    count only when read after the previous rollout. ``fleet``: the tag's devices by UUID, when listed."""
    wait = None
    if gate.wait_seconds:
        length = timedelta(seconds=gate.wait_seconds)
        passes_at = None if since is None else since + length
        wait = WaitCheck(gate.wait_seconds, passes_at, length if passes_at is None else passes_at - now)
    updated = None
    if gate.updated_percent is not None:
        online_within = timedelta(seconds=gate.online_within_seconds) if gate.online_within_seconds else None
        window = online_within or OFFLINE_AFTER
        updated = UpdatedCheck(
            percent=gate.updated_percent,
            online_within=online_within,
            window=window,
            progress=None if pending_before else progress,
            offline=None if fleet is None else _offline(fleet, now, window),
        )
    failed = None
    if gate.failed is not None:
        current = failures is not None and not pending_before and failures.rollouts == rollouts
        failed = FailedCheck(gate.failed, failures if current else None, rollouts == 0 and not pending_before)
    return GateResult(wait=wait, updated=updated, failed=failed, hold=hold)


def _offline(fleet: Mapping[str, Device], now: datetime, window: timedelta) -> tuple[Device, ...]:
    """Devices staged by the wave and not updated yet that have not been seen within ``window``, oldest first."""
    never = datetime.min.replace(tzinfo=now.tzinfo)
    waiting = [
        d
        for d in fleet.values()
        if d.in_wave and not d.up_to_date and (d.last_seen is None or now - d.last_seen > window)
    ]
    return tuple(sorted(waiting, key=lambda d: (d.last_seen or never, d.uuid)))


def _wait_reason(wait: WaitCheck | None) -> str | None:
    if wait is None or wait.passed:
        return None
    return f"wait {format_duration(wait.seconds)}: {format_duration(wait.left)} left"


def _updated_reason(check: UpdatedCheck | None) -> str | None:
    """The plan's words for a ``require.updated`` condition that is not met: its share with the updated,
    rolled-out and offline counts, and the offline devices by name (``MAX_NAMED_OFFLINE`` at most)."""
    if check is None or check.passed:
        return None
    need = f"updated {check.percent:g}%"
    state, progress = check.state, check.progress
    if state is UpdatedState.UNREAD or progress is None:
        return f"{need}: needs the wave status after the previous rollout"
    if state is UpdatedState.NONE_ROLLED_OUT:
        return f"{need}: no devices rolled out yet"
    if check.online_within is not None:
        need += f" of devices seen within {format_duration(check.window)}"
    numbers = f"{progress.updated} of {progress.rolled_out} devices"
    if check.offline is not None:
        offline = check.offline
        window = format_duration(check.window)
        numbers += f" rolled out are updated, {len(offline)} waiting offline for more than {window}"
        if offline:
            named = ", ".join(f"{d.name} ({d.uuid})" for d in offline[:MAX_NAMED_OFFLINE])
            more = f" and {len(offline) - MAX_NAMED_OFFLINE} more" if len(offline) > MAX_NAMED_OFFLINE else ""
            numbers += f": {named}{more}"
            if check.online_within is None:
                numbers += "; to leave offline devices out, add onlineWithin to require"
    if state is UpdatedState.NONE_ONLINE:
        return f"{need}: no online device rolled out yet ({numbers})"
    return f"{need}: {check.share:.1f}% ({numbers})"


def _failed_reason(check: FailedCheck | None) -> str | None:
    """The plan's words for a ``require.failed`` condition that is not met."""
    if check is None or check.passed:
        return None
    need = f"failed {check.bound}"
    counted = check.failures
    if check.state is FailedState.UNCOUNTED or counted is None:
        return f"{need}: needs the failure count after the previous rollout"
    if check.state is FailedState.OVER:
        share = 100.0 * counted.failed / counted.reached
        return f"{need}: {share:.1f}% ({counted.failed} of {counted.reached} devices reached)"
    return (
        f"{need}: {counted.failed} of {counted.reached} devices reached failed, but {counted.unchecked} more "
        f"not on the wave version were not checked; waits until fewer are pending"
    )
