"""Who may command: the receiving server's Authentication-Results must name the sender's own domain.

The header is read the way RFC 8601 writes it: comments (nested too) are not results, and a quoted
string is one opaque value, so text the sender chose (an envelope address, a comment) cannot add a
``dmarc=pass`` of its own.
"""

from __future__ import annotations

import pytest

from omo_mailbot.commands import authentication_problem
from omo_mailbot.mail import parse

from .rosterkit import AUTH_FAIL, AUTH_OK

NO_PASS = "geen DKIM- of DMARC-pass voor bzk.example in Authentication-Results"
UNREADABLE = "de bovenste Authentication-Results is onleesbaar (een aanhalingsteken of haakje sluit niet)"


def _problem(header: str, trusted: list[str] | None = None) -> str | None:
    raw = (
        f"Authentication-Results: {header}\r\nFrom: Ada <ada@bzk.example>\r\nSubject: x\r\n\r\n#claim OMO-2026-0001\r\n"
    )
    return authentication_problem(parse(raw.encode()), trusted or [])


def test_the_roster_kit_headers_still_decide_as_before():
    assert _problem(AUTH_OK.format(domain="bzk.example")) is None
    assert _problem(AUTH_FAIL.format(domain="bzk.example")) == NO_PASS


@pytest.mark.parametrize(
    "header",
    [
        "mx.omo.test; dmarc=pass",  # a pass that names no domain proves nothing about ours
        "mx.omo.test; dmarc=pass (p=reject)",
        "mx.omo.test; dmarc=pass header.from=",
        "mx.omo.test; dmarc=pass header.from=mail.bzk.example",  # DMARC evaluated another From
        "mx.omo.test; dmarc=pass header.from=example",
        "mx.omo.test; dkim=pass header.s=sel1",
    ],
)
def test_a_pass_must_name_the_from_domain(header):
    assert _problem(header) == NO_PASS


def test_the_domain_comparison_ignores_case():
    assert _problem("mx.omo.test; dmarc=pass header.from=BZK.Example") is None
    assert _problem("mx.omo.test; dkim=pass header.i=@BZK.example") is None


@pytest.mark.parametrize(
    "header",
    [
        'mx.omo.test; spf=pass smtp.mailfrom="x;dmarc=pass y"@evil.com; dmarc=fail header.from=bzk.example',
        'mx.omo.test; spf=pass smtp.mailfrom="x;dmarc=pass header.from=bzk.example y"@evil.com; dmarc=fail',
        'mx.omo.test; spf=pass smtp.mailfrom="a\\";dmarc=pass header.from=bzk.example "@evil.com; dkim=fail',
        "mx.omo.test; dkim=fail (bad (x) ; dmarc=pass header.from=bzk.example ) header.d=bzk.example",
        "mx.omo.test; dkim=fail header.d=bzk.example (unterminated; dmarc=pass header.from=bzk.example",
        'mx.omo.test; spf=pass smtp.mailfrom="unterminated; dmarc=pass header.from=bzk.example',
    ],
)
def test_quoted_strings_and_comments_cannot_add_a_result(header):
    assert _problem(header) in (NO_PASS, UNREADABLE)


def test_semicolons_inside_comments_and_quotes_do_not_break_a_real_pass():
    header = (
        'mx.omo.test (Postfix; "quoted" (nested; comment)); spf=pass smtp.mailfrom="a;b"@bzk.example;'
        " dkim=pass (2048-bit key; unprotected) header.d=bzk.example header.s=sel1"
    )
    assert _problem(header) is None
    assert _problem(header, ["MX.omo.test"]) is None
    assert "geen vertrouwde server" in (_problem(header, ["mx.minbzk.nl"]) or "")
