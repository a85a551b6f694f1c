"""Every stored verdict names the rules and model that made it, and `explain --message-id` shows them."""

from __future__ import annotations

import json

from sqlalchemy import select

from omo_mailbot import classifier
from omo_mailbot.models import Message, Verdict
from omo_mailbot.rules import load_rules
from omo_mailbot.service import open_database

from . import stored_mail


def _stored(tmp_path, make_config):
    raws = stored_mail.stored_set()
    box = stored_mail.make_maildir(tmp_path / "Maildir", [raws["acute"], raws["aftermath"]])
    cfg = stored_mail.maildir_config(make_config, tmp_path, box)
    stored_mail.process_all(cfg)
    return cfg, stored_mail.message_ids(raws)


def test_every_stored_verdict_carries_the_rules_hash_and_model_version_that_made_it(tmp_path, make_config):
    cfg, _ = _stored(tmp_path, make_config)
    rules_hash = load_rules(cfg.resolve(cfg.paths.rules_dir)).hash
    model_version = classifier.load(cfg.resolve(cfg.paths.model_file)).version
    engine, sessions = open_database(cfg)
    with sessions() as s:
        verdicts = s.execute(select(Verdict)).scalars().all()
    engine.dispose()
    assert len(verdicts) == 2
    assert {v.rules_hash for v in verdicts} == {rules_hash} and len(rules_hash) == 64
    assert {v.model_version for v in verdicts} == {model_version} and model_version not in ("", "none")


def test_explain_message_id_shows_the_stored_verdict_with_its_rules_hash_and_model(tmp_path, make_config, capsys):
    cfg, ids = _stored(tmp_path, make_config)
    engine, sessions = open_database(cfg)
    with sessions() as s:
        stored = s.execute(
            select(Verdict)
            .join(Message, Message.id == Verdict.message_id)
            .where(Message.message_id_header == ids["acute"])
        ).scalar_one()
    engine.dispose()
    config = str(tmp_path / "config.toml")

    assert stored_mail.run_cli(["--config", config, "explain", "--message-id", ids["acute"]]) == 0
    text = capsys.readouterr().out
    assert f"stored:    acute (score {stored.score:+.2f})" in text
    assert f"with rules {stored.rules_hash[:12]}, model {stored.model_version}" in text
    assert "UNREST_NOW" in text  # the dry run next to it lists the rules that fire now

    bare = ids["aftermath"].strip("<>")  # the Message-ID may be given without angle brackets
    assert stored_mail.run_cli(["--config", config, "explain", "--json", "--message-id", bare]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["stored_verdict"]["label"] == "preparation"
    assert record["stored_verdict"]["rules_hash"] == load_rules(cfg.resolve(cfg.paths.rules_dir)).hash
    assert record["stored_verdict"]["model_version"] == classifier.load(cfg.resolve(cfg.paths.model_file)).version
    assert record["rules_hash"] == record["stored_verdict"]["rules_hash"]  # decided now with the same rules


def test_explain_of_an_unknown_message_id_fails(tmp_path, make_config, capsys):
    _stored(tmp_path, make_config)
    code = stored_mail.run_cli(["--config", str(tmp_path / "config.toml"), "explain", "--message-id", "<nope@x>"])
    assert code == 1
    assert "no stored mail with Message-ID <nope@x>" in capsys.readouterr().err


def test_explain_with_candidate_rules_is_a_dry_run_of_the_change(tmp_path, make_config, capsys):
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(
        '[[rule]]\nsymbol = "WIND_FARM_CONFLICT"\ndescription = "wind"\nweight = 0.5\nwords = ["windpark*"]\n'
        'force = "acute"\n'
    )
    eml = tmp_path / "windpark.eml"
    eml.write_bytes(stored_mail.stored_set()["wind_preparation"])
    make_config()  # the shipped rules and the session's model
    config = str(tmp_path / "config.toml")
    assert stored_mail.run_cli(["--config", config, "explain", "--json", str(eml)]) == 0
    live = json.loads(capsys.readouterr().out)
    assert stored_mail.run_cli(["--config", config, "explain", "--json", "--rules", str(candidate), str(eml)]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert live["label"] == "preparation" and "WIND_FARM_CONFLICT" not in live["hits"]
    assert dry["label"] == "acute" and dry["forced_by"] == "WIND_FARM_CONFLICT"
    assert dry["rules_hash"] == load_rules(candidate).hash != live["rules_hash"]


def test_explain_shows_the_topics_and_the_assignee_a_mail_would_get(tmp_path, make_config, capsys):
    roster = tmp_path / "roster.toml"
    roster.write_text(
        '[[person]]\nname = "Anna"\naddress = "anna@omo.example"\norganisation = "BZK"\n\n'
        '[[person]]\nname = "Bram"\naddress = "bram@omo.example"\norganisation = "JenV"\n'
    )
    routing = tmp_path / "routing.toml"
    routing.write_text(
        '[[rule]]\nsymbol = "WIND"\ndescription = "Wind farms"\nwords = ["windpark*"]\n\n'
        '[[topic]]\nname = "energy"\ntitle = "Energie"\nsignals = ["WIND"]\npersons = ["anna@omo.example"]\n'
    )
    make_config(extra=f'[roster]\nroster_file = "{roster}"\nrouting_file = "{routing}"\n')
    eml = tmp_path / "windpark.eml"
    eml.write_bytes(stored_mail.stored_set()["wind_preparation"])
    config = str(tmp_path / "config.toml")

    assert stored_mail.run_cli(["--config", config, "explain", "--json", str(eml)]) == 0
    route = json.loads(capsys.readouterr().out)["routing"]
    assert [t["topic"] for t in route["topics"]] == ["energy"]
    assert route["eligible"] == ["anna@omo.example"]
    assert route["assignee"] == "anna@omo.example"  # nobody holds open cases yet
    assert route["why_topics"] == ["Energie: WIND ('Windpark', 'windpark')"]  # subject and body

    assert stored_mail.run_cli(["--config", config, "explain", str(eml)]) == 0
    text = capsys.readouterr().out
    assert "topics:    Energie: WIND ('Windpark', 'windpark')" in text
    assert "assignee:  anna@omo.example" in text
