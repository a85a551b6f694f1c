"""An address that is not plain ASCII goes out with SMTPUTF8 where the receiver offers it, and is refused
at once, with the reason, where it does not (a retry could never succeed)."""

from __future__ import annotations

import pytest

from omo_mailbot.errors import PermanentDeliveryError
from omo_mailbot.mailer import SmtpMailer

from .servers import SmtpSink

pytestmark = pytest.mark.integration

RAW_UTF8 = "To: jörg@gemeente.example\r\nSubject: test\r\n\r\nhallo\r\n".encode()
RAW_ASCII = b"To: jan@gemeente.example\r\nSubject: test\r\n\r\nhallo\r\n"


@pytest.fixture
def sinks():
    started = [SmtpSink(smtputf8=True).start(), SmtpSink(smtputf8=False).start()]
    yield started
    for sink in started:
        sink.stop()


def _mailer(make_config, sink: SmtpSink) -> SmtpMailer:
    return SmtpMailer(make_config(sink=sink).smtp)


def test_a_utf8_address_is_delivered_with_smtputf8(make_config, sinks):
    with_utf8, _ = sinks
    mailer = _mailer(make_config, with_utf8)
    mailer.send("omo@omo.example", "jörg@gemeente.example", RAW_UTF8)
    mailer.close()
    assert with_utf8.wait_for(lambda got: len(got) == 1, timeout=10)
    assert with_utf8.messages[0].rcpt_tos == ["jörg@gemeente.example"]


def test_without_smtputf8_such_an_address_fails_permanently_and_the_connection_goes_on(make_config, sinks):
    _, plain = sinks
    mailer = _mailer(make_config, plain)
    with pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
        mailer.send("omo@omo.example", "jörg@gemeente.example", RAW_UTF8)
    mailer.send("omo@omo.example", "jan@gemeente.example", RAW_ASCII)  # the next mail is not affected
    mailer.close()
    assert plain.wait_for(lambda got: len(got) == 1, timeout=10)
    assert plain.messages[0].rcpt_tos == ["jan@gemeente.example"]
