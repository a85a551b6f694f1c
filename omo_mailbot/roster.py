"""The roster: contact persons, their absences, and the duty schedule for acute alerts.

An operator edits ``roster/roster.toml``::

    [[person]]
    name = "Anna de Vries"
    address = "anna.devries@minbzk.example"
    organisation = "BZK"                  # BZK | JenV | SZW | VNG | NGB
    topics = ["energy"]                   # topic names from the routing file
    capacity = 6                          # open cases at most
    absences = [{ from = "2026-12-21", to = "2027-01-01", reason = "verlof" }]

    [duty]
    fallback = "dienstdoende@minbzk.example"   # when nobody on the schedule is present

    [[duty.shift]]
    days = ["mon", "tue", "wed", "thu", "fri"]
    start = "08:00"                       # wall-clock time in the digest time zone
    end = "18:00"                         # end before start: the shift runs past midnight
    persons = ["anna.devries@minbzk.example"]

Loading checks everything at once and names file, line and key of each
mistake: an address that is not an address, a duplicate person, an unknown
organisation, an absence that ends before it starts, a shift naming someone
not on the roster, and a week the shifts do not cover completely (a gap).
Pure: no database, no clock; ``now`` and ``day`` are always arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from . import tomlfile
from .errors import ConfigError, Problem
from .mail import valid_address
from .tomlfile import KeyPath, TomlDoc

ORGANISATIONS = ("BZK", "JenV", "SZW", "VNG", "NGB")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES_NL = ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MINUTES_PER_DAY = 24 * 60
_WEEK = 7 * _MINUTES_PER_DAY
PERSON_KEYS = frozenset({"name", "address", "organisation", "topics", "capacity", "absences"})
ABSENCE_KEYS = frozenset({"from", "to", "reason"})
SHIFT_KEYS = frozenset({"days", "start", "end", "persons"})
DUTY_KEYS = frozenset({"fallback", "shift"})


@dataclass(frozen=True)
class Absence:
    start: date
    end: date  # inclusive
    reason: str = ""

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class Person:
    name: str
    address: str  # lower-case
    organisation: str
    topics: tuple[str, ...]
    capacity: int
    absences: tuple[Absence, ...] = ()
    source: str = ""  # file:line of the topics key, for routing errors that point back here

    def absent_on(self, day: date) -> Absence | None:
        return next((a for a in self.absences if a.covers(day)), None)


@dataclass(frozen=True)
class Shift:
    days: tuple[int, ...]  # 0 = Monday
    start: time
    end: time
    persons: tuple[str, ...]

    def covers(self, local: datetime) -> bool:
        """Is the wall-clock moment ``local`` inside this shift (a shift past midnight ends the next day)?"""
        t = local.time().replace(second=0, microsecond=0)
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= t < self.end
        # overnight: the evening part belongs to the listed day, the morning part to the day after
        yesterday = (today - 1) % 7
        return (today in self.days and t >= self.start) or (yesterday in self.days and t < self.end)

    def minutes(self) -> list[tuple[int, int]]:
        """The minutes of the week (0 = Monday 00:00) this shift covers, as half-open ranges."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        length = (end - start) % _MINUTES_PER_DAY or _MINUTES_PER_DAY
        out: list[tuple[int, int]] = []
        for day in self.days:
            begin = day * _MINUTES_PER_DAY + start
            stop = begin + length
            if stop <= _WEEK:
                out.append((begin, stop))
            else:  # Sunday night into Monday morning
                out += [(begin, _WEEK), (0, stop - _WEEK)]
        return out


@dataclass(frozen=True)
class Roster:
    persons: tuple[Person, ...]
    shifts: tuple[Shift, ...] = ()
    fallback: str = ""
    path: str = ""

    @property
    def addresses(self) -> list[str]:
        return [p.address for p in self.persons]

    def person(self, address: str) -> Person | None:
        wanted = address.strip().lower()
        return next((p for p in self.persons if p.address == wanted), None)

    def on_duty(self, local: datetime) -> list[str]:
        """Who gets acute alerts at wall-clock moment ``local``: present people on shift, else the fallback."""
        present: list[str] = []
        for shift in self.shifts:
            if not shift.covers(local):
                continue
            for address in shift.persons:
                person = self.person(address)
                if person is not None and person.absent_on(local.date()) is None and address not in present:
                    present.append(address)
        if present:
            return present
        return [self.fallback] if self.fallback else []


# --- loading -----------------------------------------------------------------


def _time(doc: TomlDoc, key: KeyPath, value: Any, problems: list[Problem]) -> time | None:
    if not isinstance(value, str) or not _TIME.match(value):
        problems.append(doc.problem(key, f'expected a time "HH:MM", got {value!r}'))
        return None
    hh, mm = value.split(":")
    return time(int(hh), int(mm))


def _date(doc: TomlDoc, key: KeyPath, value: Any, problems: list[Problem]) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(doc.problem(key, f'expected a date such as "2027-01-04", got {value!r}'))
    return None


def _unknown_keys(doc: TomlDoc, key: KeyPath, table: dict[str, Any], known: frozenset[str], out: list[Problem]) -> None:
    for name in table:
        if name not in known:
            out.append(doc.problem((*key, name), f"unknown key (known here: {', '.join(sorted(known))})"))


def _absences(doc: TomlDoc, key: KeyPath, value: Any, problems: list[Problem]) -> list[Absence]:
    if not isinstance(value, list):
        problems.append(doc.problem(key, "expected an array of { from, to, reason } tables"))
        return []
    out: list[Absence] = []
    for i, item in enumerate(value):
        at = (*key, i)
        if not isinstance(item, dict):
            problems.append(doc.problem(at, "expected a table { from = ..., to = ..., reason = ... }"))
            continue
        _unknown_keys(doc, at, item, ABSENCE_KEYS, problems)
        start = _date(doc, (*at, "from"), item.get("from"), problems)
        end = _date(doc, (*at, "to"), item.get("to"), problems)
        reason = item.get("reason", "")
        if not isinstance(reason, str):
            problems.append(doc.problem((*at, "reason"), "expected a string"))
            reason = ""
        if start and end:
            if end < start:
                problems.append(doc.problem((*at, "to"), f"ends ({end}) before it starts ({start})"))
            else:
                out.append(Absence(start, end, reason))
    return out


def _person(doc: TomlDoc, i: int, table: Any, problems: list[Problem]) -> Person | None:
    key: KeyPath = ("person", i)
    if not isinstance(table, dict):
        problems.append(doc.problem(key, "expected a [[person]] table"))
        return None
    before = len(problems)
    _unknown_keys(doc, key, table, PERSON_KEYS, problems)
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(doc.problem((*key, "name"), "expected the person's name"))
    address = table.get("address")
    if not isinstance(address, str) or not valid_address(address.strip()):
        problems.append(doc.problem((*key, "address"), f"not a valid e-mail address: {address!r}"))
    organisation = table.get("organisation")
    if organisation not in ORGANISATIONS:
        problems.append(
            doc.problem((*key, "organisation"), f"expected one of {', '.join(ORGANISATIONS)}, got {organisation!r}")
        )
    topics = table.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
        problems.append(doc.problem((*key, "topics"), "expected an array of topic names"))
        topics = []
    capacity = table.get("capacity", 10)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity <= 1000:
        problems.append(
            doc.problem((*key, "capacity"), f"expected a whole number of open cases (0-1000), got {capacity!r}")
        )
        capacity = 0
    absences = _absences(doc, (*key, "absences"), table.get("absences", []), problems)
    if len(problems) != before:
        return None
    assert isinstance(name, str) and isinstance(address, str) and isinstance(organisation, str)
    return Person(
        name.strip(),
        address.strip().lower(),
        organisation,
        tuple(topics),
        capacity,
        tuple(absences),
        f"{doc.path}:{doc.line_of((*key, 'topics')) or 0}",
    )


def _shift(doc: TomlDoc, i: int, table: Any, known: set[str], problems: list[Problem]) -> Shift | None:
    key: KeyPath = ("duty", "shift", i)
    if not isinstance(table, dict):
        problems.append(doc.problem(key, "expected a [[duty.shift]] table"))
        return None
    before = len(problems)
    _unknown_keys(doc, key, table, SHIFT_KEYS, problems)
    days = table.get("days")
    if not isinstance(days, list) or not days or not all(d in DAYS for d in days):
        problems.append(doc.problem((*key, "days"), f"expected an array of day names from {', '.join(DAYS)}"))
        days = []
    start = _time(doc, (*key, "start"), table.get("start"), problems)
    end = _time(doc, (*key, "end"), table.get("end"), problems)
    persons = table.get("persons")
    if not isinstance(persons, list) or not persons or not all(isinstance(p, str) for p in persons):
        problems.append(doc.problem((*key, "persons"), "expected an array of roster addresses"))
        persons = []
    for j, address in enumerate(persons):
        if address.strip().lower() not in known:
            problems.append(doc.problem((*key, "persons", j), f"{address} is not a person on the roster"))
    if len(problems) != before or start is None or end is None:
        return None
    return Shift(tuple(DAYS.index(d) for d in days), start, end, tuple(p.strip().lower() for p in persons))


def _fmt_minute(m: int) -> str:
    day, rest = divmod(m % _WEEK, _MINUTES_PER_DAY)
    return f"{DAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


def gaps(shifts: list[Shift]) -> list[tuple[int, int]]:
    """The half-open minute ranges of the week that no shift covers."""
    covered = bytearray(_WEEK)
    for shift in shifts:
        for begin, stop in shift.minutes():
            covered[begin:stop] = b"\x01" * (stop - begin)
    out: list[tuple[int, int]] = []
    m = 0
    while m < _WEEK:
        if covered[m]:
            m += 1
            continue
        start = m
        while m < _WEEK and not covered[m]:
            m += 1
        out.append((start, m))
    return out


def roster_from_doc(doc: TomlDoc) -> Roster:
    problems: list[Problem] = []
    for name in doc.data:
        if name not in ("person", "duty"):
            problems.append(doc.problem((name,), "unknown key (known here: duty, person)"))
    tables = doc.data.get("person", [])
    if not isinstance(tables, list) or not tables:
        problems.append(doc.problem(("person",), "expected one or more [[person]] tables"))
        tables = []
    persons: list[Person] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(tables):
        raw = table.get("address") if isinstance(table, dict) else None
        address = raw.strip().lower() if isinstance(raw, str) else ""
        if address in seen:
            where = f"{doc.path}:{seen[address]}"
            problems.append(doc.problem(("person", i, "address"), f"{address} is already on the roster at {where}"))
            continue
        if address:
            seen[address] = str(doc.line_of(("person", i)) or 0)
        person = _person(doc, i, table, problems)
        if person is not None:
            persons.append(person)
    duty = doc.data.get("duty", {})
    shifts: list[Shift] = []
    fallback = ""
    if not isinstance(duty, dict):
        problems.append(doc.problem(("duty",), "expected a [duty] table"))
        duty = {}
    _unknown_keys(doc, ("duty",), duty, DUTY_KEYS, problems)
    raw_fallback = duty.get("fallback", "")
    if not isinstance(raw_fallback, str) or (raw_fallback and not valid_address(raw_fallback.strip())):
        problems.append(doc.problem(("duty", "fallback"), f"not a valid e-mail address: {raw_fallback!r}"))
    else:
        fallback = raw_fallback.strip().lower()
    raw_shifts = duty.get("shift", [])
    if not isinstance(raw_shifts, list):
        problems.append(doc.problem(("duty", "shift"), "expected [[duty.shift]] tables"))
        raw_shifts = []
    for i, table in enumerate(raw_shifts):
        shift = _shift(doc, i, table, set(seen), problems)
        if shift is not None:
            shifts.append(shift)
    if raw_shifts and len(shifts) == len(raw_shifts):
        holes = gaps(shifts)
        if holes:
            listed = ", ".join(f"{_fmt_minute(a)}-{_fmt_minute(b)}" for a, b in holes[:5])
            more = f" and {len(holes) - 5} more" if len(holes) > 5 else ""
            problems.append(
                doc.problem(("duty", "shift"), f"the duty schedule has gaps: nobody is on duty {listed}{more}")
            )
    if problems:
        raise ConfigError(problems)
    return Roster(tuple(persons), tuple(shifts), fallback, doc.path)


def load_roster(path: Path) -> Roster:
    """Load and validate the roster file; raise :class:`ConfigError` with every problem."""
    return roster_from_doc(tomlfile.load(path))
