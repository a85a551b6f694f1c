"""Dutch working days for the next three years, as a snapshot.

The ``holidays`` package is pinned because its definitions for the Netherlands
have changed between releases (Goede Vrijdag, Bevrijdingsdag). This snapshot of
every weekday off in 2027-2029 under the default configuration fails when an
upgrade changes what the digest treats as a day off. The dates were checked by
hand against the Easter dates (28 March 2027, 16 April 2028, 1 April 2029).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from omo_mailbot.config import default_config
from omo_mailbot.workdays import WorkCalendar

WEEKDAYS_OFF_2027_2029 = {
    "2027-01-01": "Nieuwjaarsdag",
    "2027-03-29": "Tweede paasdag",
    "2027-04-27": "Koningsdag",
    "2027-05-05": "Bevrijdingsdag",
    "2027-05-06": "Hemelvaartsdag",
    "2027-05-17": "Tweede pinksterdag",
    "2028-04-17": "Tweede paasdag",
    "2028-04-27": "Koningsdag",
    "2028-05-05": "Bevrijdingsdag",
    "2028-05-25": "Hemelvaartsdag",
    "2028-06-05": "Tweede pinksterdag",
    "2028-12-25": "Eerste kerstdag",
    "2028-12-26": "Tweede kerstdag",
    "2029-01-01": "Nieuwjaarsdag",
    "2029-04-02": "Tweede paasdag",
    "2029-04-27": "Koningsdag",
    "2029-05-10": "Hemelvaartsdag",
    "2029-05-21": "Tweede pinksterdag",
    "2029-12-25": "Eerste kerstdag",
    "2029-12-26": "Tweede kerstdag",
}


def _calendar(**overrides: list[str]) -> WorkCalendar:
    d = default_config().digest
    return WorkCalendar(
        d.holiday_names,
        overrides.get("extra_days_off", d.extra_days_off),
        overrides.get("extra_working_days", d.extra_working_days),
    )


def _weekdays_off(cal: WorkCalendar, first: date, last: date) -> dict[str, str]:
    out: dict[str, str] = {}
    day = first
    while day <= last:
        if day.weekday() < 5 and not cal.is_working_day(day):
            out[day.isoformat()] = cal.holiday_name(day) or "?"
        day += timedelta(days=1)
    return out


def test_weekdays_off_in_2027_2029_match_the_snapshot():
    assert _weekdays_off(_calendar(), date(2027, 1, 1), date(2029, 12, 31)) == WEEKDAYS_OFF_2027_2029


def test_weekends_are_never_working_days_and_good_friday_is_one():
    cal = _calendar()
    assert not cal.is_working_day(date(2027, 3, 27)) and not cal.is_working_day(date(2027, 3, 28))
    assert cal.is_working_day(date(2027, 3, 26))  # Goede Vrijdag is not in the default holiday_names
    working = sum(
        cal.is_working_day(date(2028, 1, 1) + timedelta(days=i)) for i in range(366)
    )  # 2028 is a leap year with 260 weekdays
    assert working == 260 - 7


def test_extra_days_off_and_extra_working_days_override_the_calendar():
    cal = _calendar(extra_days_off=["2027-12-31"], extra_working_days=["2027-05-05"])
    assert not cal.is_working_day(date(2027, 12, 31))
    assert cal.holiday_name(date(2027, 12, 31)) == "extra vrije dag"
    assert cal.is_working_day(date(2027, 5, 5))


def test_the_next_working_day_skips_a_long_weekend():
    cal = _calendar()
    assert cal.next_working_day(date(2027, 5, 14)) == date(2027, 5, 18)  # Friday -> Tuesday after Pinksteren
    assert cal.working_days_between(date(2027, 5, 14), date(2027, 5, 18)) == 1


AMSTERDAM = ZoneInfo("Europe/Amsterdam")
EIGHT = time(8, 0)


@pytest.mark.parametrize(
    ("arrives", "first_digest"),
    [
        (datetime(2026, 12, 1, 7, 59, tzinfo=AMSTERDAM), date(2026, 12, 1)),  # Tuesday before the digest: today
        (datetime(2026, 12, 1, 8, 0, tzinfo=AMSTERDAM), date(2026, 12, 2)),  # the digest has gone: tomorrow
        (datetime(2026, 12, 4, 17, 0, tzinfo=AMSTERDAM), date(2026, 12, 7)),  # Friday afternoon: Monday
        (datetime(2026, 12, 5, 6, 0, tzinfo=AMSTERDAM), date(2026, 12, 7)),  # Saturday morning: Monday
        (datetime(2027, 5, 14, 9, 0, tzinfo=AMSTERDAM), date(2027, 5, 18)),  # before Pinksteren: Tuesday
        (datetime(2026, 12, 1, 6, 30, tzinfo=UTC), date(2026, 12, 1)),  # 07:30 in Amsterdam
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), date(2026, 12, 1)),  # already Tuesday 00:30 in Amsterdam
    ],
)
def test_the_answer_names_the_day_whose_digest_first_shows_the_mail(arrives, first_digest):
    assert _calendar().first_digest_day(arrives, AMSTERDAM, EIGHT) == first_digest
