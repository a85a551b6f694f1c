"""Before the first mail, the service does the slow first-time work, so an acute mail arriving first is not
kept waiting for it; warming up stores and sends nothing, and its failure only costs speed."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from omo_mailbot.models import Message, OutboxMail, Verdict
from omo_mailbot.service import build_service


def test_warming_up_loads_the_holidays_and_the_templates_and_stores_nothing(make_config):
    service, engine = build_service(make_config())
    pipeline = service.pipeline
    assert not pipeline.calendar._cache and not pipeline.templates.text_env.cache
    pipeline.warm_up()
    year = pipeline.clock().astimezone(service.cfg.digest.zone).year
    assert year in pipeline.calendar._cache
    compiled = {t.name for t in pipeline.templates.text_env.cache.values()}
    assert {"acute_reply.nl.txt", "acute_reply.en.txt", "duty_alert.txt"} <= compiled
    assert {t.name for t in pipeline.templates.html_env.cache.values()} >= {"acute_reply.nl.html"}
    with service.sessions() as s:
        for table in (Message, Verdict, OutboxMail):
            assert s.execute(select(func.count()).select_from(table)).scalar_one() == 0
    engine.dispose()


class _Broken:
    def decide(self, mail, *, explain=False):
        raise RuntimeError("a decider that cannot decide")


def test_a_failing_warm_up_is_logged_and_the_service_goes_on(make_config, caplog):
    service, engine = build_service(make_config())
    service.pipeline.decider = _Broken()
    with caplog.at_level(logging.WARNING, logger="omo_mailbot.pipeline"):
        service.pipeline.warm_up()  # does not raise
    assert any("warming up" in r.getMessage() for r in caplog.records)
    engine.dispose()
