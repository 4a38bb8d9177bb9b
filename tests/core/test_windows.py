"""Rollout windows and freezes (core/windows.py): wall-clock membership, freezes, the next opening, DST.

Europe/Berlin changes to summer time on 2027-03-28 (02:00 CET -> 03:00 CEST, at 01:00 UTC) and back on
2027-10-31 (03:00 CEST -> 02:00 CET, at 01:00 UTC); both days are Sundays.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.windows import Freeze, Schedule, Window, day_start, describe_days, offset_changes

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def window(days=range(7), hours=(0, 24 * 60), zone=BERLIN) -> Window:
    return Window(frozenset(days), hours[0], hours[1], zone, "w.yaml:7:5")


def hm(text: str) -> tuple[int, int]:
    start, end = text.split("-")
    return tuple(int(t[:2]) * 60 + int(t[3:]) for t in (start, end))  # type: ignore[return-value]


OFFICE = window(range(MON, THU + 1), hm("09:00-16:00"))


# -- membership --------------------------------------------------------------------------------


def test_a_window_is_judged_by_the_wall_clock_of_its_zone():
    # 2026-11-02 is a Monday; Berlin is UTC+1 in winter.
    assert not OFFICE.contains(utc(2026, 11, 2, 7, 59))  # 08:59 CET
    assert OFFICE.contains(utc(2026, 11, 2, 8, 0))  # 09:00 CET
    assert OFFICE.contains(utc(2026, 11, 2, 14, 59, 59))  # 15:59:59 CET
    assert not OFFICE.contains(utc(2026, 11, 2, 15, 0))  # 16:00 CET: the end is excluded
    assert not OFFICE.contains(utc(2026, 11, 6, 10, 0))  # a Friday
    # In summer the same window is an hour earlier in UTC.
    assert OFFICE.contains(utc(2027, 6, 7, 7, 0)) and not OFFICE.contains(utc(2027, 6, 7, 14, 0))


def test_a_window_past_midnight_belongs_to_the_day_it_opens():
    night = window([FRI], hm("22:00-06:00"), UTC)
    assert night.contains(utc(2026, 11, 6, 22, 0))  # Friday 22:00
    assert night.contains(utc(2026, 11, 7, 5, 59))  # Saturday 05:59
    assert not night.contains(utc(2026, 11, 7, 6, 0))
    assert not night.contains(utc(2026, 11, 7, 22, 0))  # Saturday night is not a Friday night
    assert not night.contains(utc(2026, 11, 6, 5, 0))  # Friday early morning belongs to Thursday night


def test_the_skipped_hour_of_spring_forward_is_never_inside_a_window():
    skipped = window([SUN], hm("02:00-03:00"))
    # 00:59:59 UTC is 01:59:59 CET, 01:00 UTC is 03:00 CEST: no instant of that Sunday reads 02:xx.
    probe = utc(2027, 3, 27, 22)
    while probe < utc(2027, 3, 28, 4):
        assert not skipped.contains(probe), probe
        probe += timedelta(minutes=1)


def test_the_repeated_hour_of_fall_back_is_inside_a_window_twice():
    repeated = window([SUN], hm("02:00-03:00"))
    assert repeated.contains(utc(2027, 10, 31, 0, 0))  # 02:00 CEST
    assert repeated.contains(utc(2027, 10, 31, 0, 59))
    assert repeated.contains(utc(2027, 10, 31, 1, 0))  # 02:00 CET, the second time
    assert repeated.contains(utc(2027, 10, 31, 1, 59))
    assert not repeated.contains(utc(2027, 10, 31, 2, 0))  # 03:00 CET


# -- the next opening ------------------------------------------------------------------------------


def test_outside_the_window_the_hold_names_the_next_opening_in_local_time_and_utc():
    hold = Schedule((OFFICE,)).hold(utc(2026, 11, 1, 8))  # a Sunday
    assert hold is not None
    assert hold.opens_at == utc(2026, 11, 2, 8)
    assert hold.reason == (
        "outside the rollout windows (Mon-Thu 09:00-16:00 Europe/Berlin at w.yaml:7:5); the next "
        "window opens "
        "Mon 2026-11-02 09:00 CET = 2026-11-02T08:00:00Z"
    )
    assert Schedule((OFFICE,)).hold(utc(2026, 11, 2, 8)) is None


def test_a_window_on_the_spring_forward_day_that_does_not_exist_opens_a_week_later():
    hold = Schedule((window([SUN], hm("02:00-03:00")),)).hold(utc(2027, 3, 27, 12))
    assert hold is not None and hold.opens_at == utc(2027, 4, 4, 0)  # 02:00 CEST a week later
    assert "opens Sun 2027-04-04 02:00 CEST = 2027-04-04T00:00:00Z" in hold.reason


def test_a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps():
    schedule = Schedule((window([SUN], hm("02:30-04:00")),))
    assert schedule.next_open(utc(2027, 3, 27, 12)) == utc(2027, 3, 28, 1, 0)  # 03:00 CEST


def test_a_window_reopens_in_the_repeated_hour_of_fall_back():
    schedule = Schedule((window([SUN], hm("02:30-04:00")),))
    assert schedule.allows(utc(2027, 10, 31, 0, 45))  # 02:45 CEST
    assert not schedule.allows(utc(2027, 10, 31, 1, 10))  # 02:10 CET, back before the window
    assert schedule.next_open(utc(2027, 10, 31, 1, 10)) == utc(2027, 10, 31, 1, 30)  # 02:30 CET
    # And before the change, the first opening is 02:30 CEST.
    assert schedule.next_open(utc(2027, 10, 30, 12)) == utc(2027, 10, 31, 0, 30)


def test_the_next_opening_across_a_change_keeps_the_local_hour():
    # Friday evening before each change: Monday 09:00 is 08:00 UTC in winter, 07:00 UTC in summer.
    assert Schedule((OFFICE,)).next_open(utc(2027, 3, 26, 18)) == utc(2027, 3, 29, 7)
    assert Schedule((OFFICE,)).next_open(utc(2027, 10, 29, 18)) == utc(2027, 11, 1, 8)


def test_a_freeze_holds_inside_a_window_and_the_next_opening_is_after_it():
    freeze = Freeze(
        day_start(date(2026, 12, 21), BERLIN),
        day_start(date(2027, 1, 7), BERLIN),
        "year-end freeze",
        BERLIN,
        "reconcile.yaml:9:5",
    )
    schedule = Schedule((OFFICE,), (freeze,))
    hold = schedule.hold(utc(2026, 12, 22, 10))  # a Tuesday, inside the window
    assert hold is not None and hold.opens_at == utc(2027, 1, 7, 8)
    assert hold.reason == (
        "frozen until Thu 2027-01-07 00:00 CET: year-end freeze (reconcile.yaml:9:5); then outside the rollout "
        "windows (Mon-Thu 09:00-16:00 Europe/Berlin at w.yaml:7:5); the next window opens Thu 2027-01-07 09:00 CET "
        "= 2027-01-07T08:00:00Z"
    ), "the night after the freeze waits for the window too, and the window is named"
    assert not schedule.allows(utc(2026, 12, 21, 8))  # Monday 09:00 CET, the freeze's first day
    assert schedule.allows(utc(2026, 12, 17, 8))  # the Thursday before it


def test_a_freeze_without_windows_ends_at_its_until():
    freeze = Freeze(utc(2026, 12, 1), utc(2026, 12, 2, 6, 30, 15), "audit", UTC)
    hold = Schedule((), (freeze,)).hold(utc(2026, 12, 1, 12))
    assert hold is not None and hold.opens_at == utc(2026, 12, 2, 6, 30, 15)
    assert hold.reason == "frozen until Wed 2026-12-02 06:30:15 UTC: audit; allowed again Wed 2026-12-02 06:30:15 UTC"


def test_chained_freezes_hold_until_the_last_ends():
    first = Freeze(utc(2026, 12, 1), utc(2026, 12, 3), "one", UTC)
    second = Freeze(utc(2026, 12, 3), utc(2026, 12, 5), "two", UTC)
    assert Schedule((), (first, second)).next_open(utc(2026, 12, 2)) == utc(2026, 12, 5)


def test_a_hold_names_every_freeze_and_window_of_the_wait_in_order():
    first = Freeze(utc(2026, 12, 1), utc(2026, 12, 3), "one", UTC, "r.yaml:4:5")
    inside = Freeze(utc(2026, 12, 1), utc(2026, 12, 2), "shadowed", UTC)  # ends inside the first: no cause
    second = Freeze(utc(2026, 12, 3), utc(2026, 12, 5), "two", UTC, "w.yaml:9:5")
    hold = Schedule((), (first, inside, second)).hold(utc(2026, 12, 1, 12))
    assert hold is not None and hold.opens_at == utc(2026, 12, 5)
    assert hold.reason == (
        "frozen until Thu 2026-12-03 00:00 UTC: one (r.yaml:4:5); then frozen until Sat 2026-12-05 00:00 UTC: "
        "two (w.yaml:9:5); allowed again Sat 2026-12-05 00:00 UTC"
    )
    # Sunday night, outside office hours; a freeze on Monday; the window opens on Tuesday.
    monday = Freeze(day_start(date(2026, 11, 2), BERLIN), day_start(date(2026, 11, 3), BERLIN), "audit", BERLIN)
    hold = Schedule((OFFICE,), (monday,)).hold(utc(2026, 11, 1, 20))
    assert hold is not None and hold.opens_at == utc(2026, 11, 3, 8)
    assert hold.reason == (
        "outside the rollout windows (Mon-Thu 09:00-16:00 Europe/Berlin at w.yaml:7:5); then frozen until "
        "Tue 2026-11-03 00:00 CET: audit; then outside the rollout windows; the next window opens "
        "Tue 2026-11-03 09:00 CET = 2026-11-03T08:00:00Z"
    )


def test_an_empty_schedule_allows_everything():
    assert Schedule().allows(utc(2026, 1, 1)) and Schedule().hold(utc(2026, 1, 1)) is None


def test_days_are_described_as_written():
    assert describe_days(frozenset({MON, TUE, WED, THU})) == "Mon-Thu"
    assert describe_days(frozenset({FRI, SAT, SUN, MON})) == "Fri-Mon"
    assert describe_days(frozenset({MON, WED, FRI})) == "Mon,Wed,Fri"
    assert describe_days(frozenset(range(7))) == "every day"


def test_offset_changes_and_day_starts_of_berlin():
    assert offset_changes(BERLIN, utc(2027, 1, 1), utc(2028, 1, 1)) == {utc(2027, 3, 28, 1), utc(2027, 10, 31, 1)}
    assert day_start(date(2027, 3, 28), BERLIN) == utc(2027, 3, 27, 23)
    # Havana skipped midnight on 2012-03-11 (00:00 -> 01:00): that day starts at the jump.
    havana = ZoneInfo("America/Havana")
    assert day_start(date(2012, 3, 11), havana) == utc(2012, 3, 11, 5)


# -- properties -------------------------------------------------------------------------------------

ZONES = [ZoneInfo(name) for name in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC")]
# Biased towards 02:00-03:00, the hour Europe's clocks skip and repeat.
minutes = st.one_of(st.integers(0, 24 * 60 - 1), st.integers(120, 180))


@st.composite
def schedules(draw) -> Schedule:
    windows = []
    for _ in range(draw(st.integers(0, 2))):
        start, end = draw(minutes), draw(st.integers(1, 24 * 60))
        if start == end % (24 * 60):
            end = (start + 1) % (24 * 60) or 24 * 60
        days = draw(st.frozensets(st.integers(0, 6), min_size=1))
        windows.append(Window(days, start, end, draw(st.sampled_from(ZONES))))
    freezes = []
    for _ in range(draw(st.integers(0, 2))):
        start = utc(2027, 3, 20) + timedelta(minutes=draw(st.integers(0, 60 * 24 * 240)))
        freezes.append(Freeze(start, start + timedelta(minutes=draw(st.integers(1, 60 * 24 * 5))), "f", UTC))
    return Schedule(tuple(windows), tuple(freezes))


# Anywhere from 2027-03-20 for 240 days (Berlin's, New York's and Lord Howe's 2027 changes), and often the
# day and a half before one of Berlin's changes.
nows = st.one_of(
    st.integers(0, 60 * 24 * 240).map(lambda m: utc(2027, 3, 20) + timedelta(minutes=m)),
    st.integers(0, 60 * 36).map(lambda m: utc(2027, 3, 26, 13) + timedelta(minutes=m)),
    st.integers(0, 60 * 36).map(lambda m: utc(2027, 10, 29, 13) + timedelta(minutes=m)),
)


@settings(max_examples=60, deadline=None)
@given(schedules(), nows)
def test_the_next_opening_is_allowed_and_nothing_before_it_is(schedule, now):
    _assert_first_opening(schedule, now)


@settings(max_examples=200, deadline=None)
@given(schedules(), nows)
def test_a_hold_is_given_exactly_when_the_schedule_does_not_allow(schedule, now):
    hold = schedule.hold(now)
    assert (hold is None) == schedule.allows(now)
    if hold is not None:
        assert hold.opens_at == schedule.next_open(now)
        assert hold.opens_at is not None
        # The opening in UTC, or a local time that is UTC already.
        assert f"= {hold.opens_at:%Y-%m-%dT%H:%M:%SZ}" in hold.reason or hold.reason.endswith(" UTC")


def _assert_first_opening(schedule: Schedule, now: datetime) -> None:
    """next_open is allowed and no instant before it is. Whether an instant is allowed changes only on
    whole minutes (all zones here have whole-minute offsets; windows and freezes start on minutes), so
    checking ``now`` and every minute up to the opening checks every instant in between."""
    opens = schedule.next_open(now)
    assert opens is not None and opens >= now and schedule.allows(opens)
    probe = now
    while probe < opens:
        assert not schedule.allows(probe), (probe, opens)
        probe = (probe + timedelta(minutes=1)).replace(second=0, microsecond=0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(60, 200),
    st.integers(1, 300),
    st.sampled_from([utc(2027, 3, 26, 13), utc(2027, 10, 29, 13)]),
    st.integers(0, 60 * 36),
)
def test_sunday_night_windows_around_berlins_changes_open_first_where_the_wall_clock_enters_them(
    start, length, base, offset
):
    end = start + length
    schedule = Schedule((Window(frozenset({SUN}), start, end, BERLIN),))
    _assert_first_opening(schedule, base + timedelta(minutes=offset))


def test_long_and_overlapping_freezes_are_skipped_in_one_jump_each():
    two_years = Freeze(utc(2027, 1, 1), utc(2029, 1, 1), "migration", UTC)
    assert Schedule((OFFICE,), (two_years,)).next_open(utc(2027, 6, 1)) == utc(2029, 1, 1, 8)  # Monday 09:00 CET
    first = Freeze(utc(2027, 1, 1), utc(2027, 3, 1), "one", UTC)
    second = Freeze(utc(2027, 2, 20), utc(2027, 4, 10), "two", UTC)  # a Saturday: the window opens on Monday
    assert Schedule((OFFICE,), (first, second)).next_open(utc(2027, 1, 2)) == utc(2027, 4, 12, 7)  # 09:00 CEST


def test_a_freeze_of_decades_ends_at_the_first_window_after_it():
    decades = Schedule((OFFICE,), (Freeze(utc(2026, 1, 1), utc(2090, 1, 1), "forever", UTC),))
    assert decades.next_open(utc(2026, 6, 1)) == utc(2090, 1, 2, 8)  # Monday 2090-01-02, 09:00 CET
