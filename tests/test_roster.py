"""The roster file: persons, absences and a duty schedule, every mistake named by file, line and key."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from omo_mailbot.errors import ConfigError
from omo_mailbot.roster import load_roster

from .rosterkit import ADA, CAS, DEE, PIKET, ROSTER

ROOT = Path(__file__).resolve().parent.parent


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "roster.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_roster(path)
    return [str(p) for p in err.value.problems]


def test_the_sample_roster_loads_with_people_of_every_organisation():
    roster = load_roster(ROOT / "roster" / "roster.toml")
    assert len(roster.persons) >= 8
    assert {p.organisation for p in roster.persons} == {"BZK", "JenV", "SZW", "VNG", "NGB"}
    assert any(p.absences for p in roster.persons)
    assert roster.fallback


def test_a_person_is_absent_only_inside_their_period(tmp_path):
    (tmp_path / "r.toml").write_text(ROSTER)
    cas = load_roster(tmp_path / "r.toml").person(CAS)
    assert cas is not None
    assert cas.absent_on(date(2026, 11, 19)) is None
    assert cas.absent_on(date(2026, 11, 20)) is not None
    assert cas.absent_on(date(2026, 12, 31)) is not None
    assert cas.absent_on(date(2027, 1, 1)) is None


def test_on_duty_skips_absent_people_and_falls_back_when_nobody_is_left(tmp_path):
    (tmp_path / "r.toml").write_text(ROSTER)
    roster = load_roster(tmp_path / "r.toml")
    assert roster.on_duty(datetime(2026, 12, 1, 3, 0)) == [DEE]  # Cas is on leave
    assert roster.on_duty(datetime(2027, 1, 5, 3, 0)) == [CAS, DEE]
    only_cas = ROSTER.replace(f'persons = ["{CAS}", "{DEE}"]', f'persons = ["{CAS}"]')
    (tmp_path / "r.toml").write_text(only_cas)
    assert load_roster(tmp_path / "r.toml").on_duty(datetime(2026, 12, 1, 3, 0)) == [PIKET]


def test_shifts_past_midnight_belong_to_the_day_they_start():
    roster = load_roster(ROOT / "roster" / "roster.toml")
    night = "gijs.mulder@burgemeesters.example"  # mon-thu 18:00-08:00
    assert roster.on_duty(datetime(2026, 12, 1, 23, 0)) == [night]  # Tuesday evening
    assert roster.on_duty(datetime(2026, 12, 2, 7, 59)) == [night]  # Wednesday early morning
    assert night not in roster.on_duty(datetime(2026, 12, 5, 3, 0))  # Saturday night is the weekend shift
    assert roster.on_duty(datetime(2026, 11, 30, 7, 0)) == ["daan.visser@minjenv.example"]  # Sunday night -> Monday


def test_an_invalid_address_names_file_line_and_key(tmp_path):
    text = ROSTER.replace(f'address = "{ADA}"', 'address = "ada at bzk"')
    (problem,) = _problems(tmp_path, text)
    line = text.splitlines().index('address = "ada at bzk"') + 1
    assert problem == f"{tmp_path / 'roster.toml'}:{line}: person[0].address: not a valid e-mail address: 'ada at bzk'"


def test_a_duty_schedule_with_gaps_is_an_error_that_says_when(tmp_path):
    text = ROSTER.replace('start = "00:00"\nend = "00:00"', 'start = "08:00"\nend = "18:00"')
    (problem,) = _problems(tmp_path, text)
    assert "duty.shift: the duty schedule has gaps: nobody is on duty mon 00:00-mon 08:00" in problem
    assert problem.startswith(f"{tmp_path / 'roster.toml'}:")


def test_a_shift_naming_someone_not_on_the_roster_is_an_error(tmp_path):
    text = ROSTER.replace(f'persons = ["{CAS}", "{DEE}"]', f'persons = ["{CAS}", "nobody@omo.example"]')
    (problem,) = _problems(tmp_path, text)
    assert "duty.shift[0].persons[1]: nobody@omo.example is not a person on the roster" in problem


def test_every_mistake_is_reported_at_once(tmp_path):
    text = (
        ROSTER.replace('organisation = "BZK"', 'organisation = "Politie"', 1)
        .replace("capacity = 1", "capacity = -1")
        .replace("to = 2026-12-31", "to = 2026-11-01")
        .replace(f'address = "{DEE}"', f'address = "{ADA}"')
        .replace('name = "Ada Bakker"', 'name = "Ada Bakker"\nphone = "06"')
    )
    joined = "\n".join(_problems(tmp_path, text))
    assert "person[0].organisation: expected one of BZK, JenV, SZW, VNG, NGB, got 'Politie'" in joined
    assert "person[0].phone: unknown key" in joined
    assert "person[1].capacity: expected a whole number" in joined
    assert "person[2].absences[0].to: ends (2026-11-01) before it starts (2026-11-20)" in joined
    assert f"person[3].address: {ADA} is already on the roster" in joined
