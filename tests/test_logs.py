"""What the service writes to its log: no addresses at INFO and above, whatever a server said."""

from __future__ import annotations

import json
import logging

import pytest

from omo_mailbot import logs

REFUSAL = "550 5.1.1 <els.vermeer@gemeente-voorbeeld.nl>: Recipient address rejected: User unknown"


@pytest.fixture
def log(capsys):
    def emit(fmt: str, level: int) -> str:
        logs.setup("DEBUG", fmt)
        logger = logging.getLogger("omo_mailbot.test")
        try:
            raise ValueError("no route to ruud.bakker@gemeente-voorbeeld.nl")
        except ValueError:
            logger.log(
                level,
                "refused by %s",
                "smtp.example",
                extra={"error": REFUSAL, "problems": ["roster.toml:3: person[0].address: ada@bzk.example twice"]},
                exc_info=True,
            )
        return capsys.readouterr().err

    yield emit
    logs.setup("WARNING", "text")


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_addresses_in_server_replies_fields_and_tracebacks_are_scrubbed_at_info_and_above(log, fmt, level):
    out = log(fmt, level)
    assert "@gemeente-voorbeeld.nl" not in out and "ada@bzk.example" not in out
    assert "<address>: Recipient address rejected" in out  # the reason stays readable
    assert "person[0].address: <address> twice" in out
    assert "no route to <address>" in out


def test_debug_output_keeps_them_for_a_developer(log):
    record = json.loads(log("json", logging.DEBUG).splitlines()[0])
    assert record["error"] == REFUSAL
    assert "ruud.bakker@gemeente-voorbeeld.nl" in record["exc"]


def test_the_message_id_field_is_kept_although_it_looks_like_an_address(capsys):
    logs.setup("INFO", "json")
    logging.getLogger("omo_mailbot.test").info("decided", extra={"message_id": "<abc.123@minbzk.nl>"})
    logs.setup("WARNING", "text")
    assert json.loads(capsys.readouterr().err)["message_id"] == "<abc.123@minbzk.nl>"
