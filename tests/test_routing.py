"""Routing: topic signals in the rule language map a mail to topics, and topics to eligible people."""

from __future__ import annotations

from pathlib import Path

import pytest

from omo_mailbot.errors import ConfigError
from omo_mailbot.mail import parse
from omo_mailbot.roster import load_roster
from omo_mailbot.routing import load_routing
from omo_mailbot.text import new_text

from . import mails
from .rosterkit import BOB, CAS, DEE, ROSTER, ROUTING

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample" / "mailbox" / "new"


def _load(tmp_path: Path, routing: str = ROUTING, roster: str = ROSTER):
    (tmp_path / "roster.toml").write_text(roster)
    (tmp_path / "routing.toml").write_text(routing)
    r = load_roster(tmp_path / "roster.toml")
    return r, load_routing(tmp_path / "routing.toml", r)


def _problems(tmp_path: Path, routing: str, roster: str = ROSTER) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, routing, roster)
    return [str(p) for p in err.value.problems]


def _topics(routing, raw: bytes) -> list[str]:
    mail = parse(raw)
    split = new_text(mail)
    return [m.topic.name for m in routing.match_mail(mail, split.new, split.quoted)]


def test_the_sample_routing_covers_the_six_topics_and_sorts_the_sample_mails():
    roster = load_roster(ROOT / "roster" / "roster.toml")
    routing = load_routing(ROOT / "roster" / "routing.toml", roster)
    assert {t.name for t in routing.topics} == {
        "energy",
        "asylum",
        "traditions",
        "threats",
        "demonstrations",
        "polarisation",
    }
    assert _topics(routing, (SAMPLE / "09.sample").read_bytes()) == ["energy"]  # windpark Hooge Veld
    assert "traditions" in _topics(routing, (SAMPLE / "08.sample").read_bytes())  # paardenmarkt
    assert "polarisation" in _topics(routing, (SAMPLE / "12.sample").read_bytes())  # complotbewegingen
    assert "threats" in _topics(routing, (SAMPLE / "03.sample").read_bytes())  # privéadres wethouder


def test_a_topic_applies_when_one_of_its_signals_fires_and_says_which(tmp_path):
    _, routing = _load(tmp_path)
    mail = parse(mails.make_mail("De wethouder wordt bedreigd sinds het besluit over het windpark."))
    split = new_text(mail)
    matches = routing.match_mail(mail, split.new)
    assert [m.topic.name for m in matches] == ["energy", "threats"]
    assert matches[1].hits[0].symbol == "THREAT" and matches[1].hits[0].matched == ("bedreigd",)
    assert matches[1].why() == "Bedreiging van ambtsdragers: THREAT ('bedreigd')"


def test_quoted_history_does_not_choose_the_topic(tmp_path):
    _, routing = _load(tmp_path)
    body = "Dank voor uw antwoord, we bellen morgen.\n\n> Over het windpark hebben wij een vraag.\n"
    assert _topics(routing, mails.make_mail(body, subject="Re: vraag")) == []


def test_eligibility_combines_named_people_organisations_and_roster_topics(tmp_path):
    roster, routing = _load(tmp_path)
    energy, threats, asylum = (routing.topic(n) for n in ("energy", "threats", "asylum"))
    assert energy is not None and threats is not None and asylum is not None
    assert BOB in routing.eligible(energy, roster)
    assert routing.eligible(threats, roster) == [CAS, DEE]  # Cas lists it, Dee is NGB
    assert routing.eligible(asylum, roster) == [CAS]  # named in the topic


def test_a_topic_pointing_at_an_unknown_person_is_an_error_with_its_line(tmp_path):
    text = ROUTING.replace(f'persons = ["{CAS}"]', 'persons = ["ghost@omo.example"]')
    (problem,) = _problems(tmp_path, text)
    line = text.splitlines().index('persons = ["ghost@omo.example"]') + 1
    assert problem == (
        f"{tmp_path / 'routing.toml'}:{line}: topic[2].persons[0]: ghost@omo.example is not a person on the roster"
    )


def test_unknown_signals_bad_rules_and_unknown_roster_topics_are_all_reported(tmp_path):
    text = ROUTING.replace('signals = ["AZC"]', 'signals = ["AZC", "NOPE"]').replace(
        'words = ["azc"]', 'words = ["azc"]\nforce = "acute"\nregex = ["(a+)+"]'
    )
    roster = ROSTER.replace('topics = ["threats"]', 'topics = ["threats", "sport"]')
    joined = "\n".join(_problems(tmp_path, text, roster))
    assert "topic[2].signals[1]: unknown signal NOPE" in joined
    assert "rule[2].force: routing signals choose topics, not labels" in joined
    assert "rule[2](AZC).regex" in joined or "rule[2].regex[0]" in joined
    line = roster.splitlines().index('topics = ["threats", "sport"]') + 1
    assert f"roster.toml:{line}: person({CAS}).topics: unknown topic 'sport'" in joined
