"""Dutch working days for the network: weekends and chosen public holidays off.

The ``holidays`` package (the only importer) supplies the dates; which of them
the organisation observes is configuration (``digest.holiday_names``), because
Goede Vrijdag and Bevrijdingsdag depend on the collective agreement, and the
package's own classification has changed between releases. Extra days off and
extra working days come from config too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, tzinfo

import holidays as holidays_lib

DAY_NAMES_NL = ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag")
MONTHS_NL = (
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
)


class WorkCalendar:
    def __init__(
        self, holiday_names: Iterable[str], extra_days_off: Iterable[str] = (), extra_working_days: Iterable[str] = ()
    ) -> None:
        self.names = frozenset(n.casefold() for n in holiday_names)
        self.extra_off = frozenset(date.fromisoformat(d) for d in extra_days_off)
        self.extra_on = frozenset(date.fromisoformat(d) for d in extra_working_days)
        self._cache: dict[int, dict[date, str]] = {}

    def _year(self, year: int) -> dict[date, str]:
        if year not in self._cache:
            nl = holidays_lib.country_holidays("NL", years=year, language="nl", categories=("public", "optional"))
            chosen: dict[date, str] = {}
            for day, names in nl.items():
                for name in str(names).split("; "):
                    if name.casefold() in self.names:
                        chosen[day] = name
            self._cache[year] = chosen
        return self._cache[year]

    def holiday_name(self, day: date) -> str | None:
        if day in self.extra_off:
            return "extra vrije dag"
        return self._year(day.year).get(day)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_on:
            return True
        if day.weekday() >= 5 or day in self.extra_off:
            return False
        return self.holiday_name(day) is None

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        probe = day + timedelta(days=1)
        for _ in range(60):
            if self.is_working_day(probe):
                return probe
            probe += timedelta(days=1)
        return probe

    def first_digest_day(self, moment: datetime, zone: tzinfo, at: time) -> date:
        """The day whose digest (sent at ``at`` in ``zone``) first lists a mail that arrives at ``moment``.

        Today when today is a working day and its digest is still to come, else
        the next working day. The automatic answers name this day.
        """
        local = moment.astimezone(zone)
        today = local.date()
        if self.is_working_day(today) and local.time() < at:
            return today
        return self.next_working_day(today)

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end``."""
        count, probe = 0, start
        while probe < end:
            probe += timedelta(days=1)
            if self.is_working_day(probe):
                count += 1
        return count


def format_day(day: date, lang: str) -> str:
    if lang == "en":
        return day.strftime("%A %-d %B %Y")
    return f"{DAY_NAMES_NL[day.weekday()]} {day.day} {MONTHS_NL[day.month - 1]} {day.year}"
