"""When omo-mailbot must not answer a mail, and whether a machine wrote it.

The catalogue in tests/guard_cases/ is the main specification:

* ``block_*.eml`` carries ``X-Test-Expect: <code>[, <code>...]`` -- the exact set of
  reason codes :func:`check` must give -- and ``X-Test-Automated: yes|no`` -- whether
  the mail as a whole counts as machine-written. guards.py never reads X-Test-*
  headers; a test below proves that stripping them changes nothing.
* ``allow_*.eml`` are ordinary mails (some of them tricky) that must be answerable.

The unit tests after the catalogue pin down single rules, the public values and
their formatting.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omo_mailbot import guards
from omo_mailbot.config import AutoReplyConfig
from omo_mailbot.guards import GuardPolicy, GuardResult, Reason, check
from omo_mailbot.mail import Address, ParsedMail, parse

CASES_DIR = Path(__file__).parent / "guard_cases"
CASES = sorted(CASES_DIR.glob("*.eml"))
BLOCK_CASES = [p for p in CASES if p.name.startswith("block_")]
ALLOW_CASES = [p for p in CASES if p.name.startswith("allow_")]

OWN = "omo@minbzk.nl"
ROSTER = "a.jansen@minbzk.nl"
POLICY = GuardPolicy(own_addresses=frozenset({OWN}), roster_addresses=frozenset({ROSTER}))

ALL_CODES = {
    "auto-submitted",
    "precedence",
    "list-header",
    "bulk-sender",
    "x-auto-response-suppress",
    "no-ack",
    "x-loop",
    "own-loop-header",
    "reply-to-our-auto-reply",
    "vendor-autoreply",
    "null-sender",
    "delivery-report",
    "read-receipt",
    "machine-report",
    "calendar-reply",
    "robot-sender",
    "own-address",
    "roster-address",
    "no-reply-address",
    "spam",
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _expected(mail: ParsedMail) -> tuple[set[str], bool]:
    expect = mail.header("x-test-expect")
    automated = mail.header("x-test-automated")
    assert expect is not None, "a block_ case needs an X-Test-Expect header"
    assert automated in ("yes", "no"), "a block_ case needs X-Test-Automated: yes|no"
    return {c.strip() for c in expect.split(",") if c.strip()}, automated == "yes"


def _strip_test_headers(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\n\n")
    kept = [line for line in head.split(b"\n") if not line.lower().startswith(b"x-test-")]
    return b"\n".join(kept) + sep + body


def make(
    *headers: str,
    body: str = "Er is onrust in de wijk.\n",
    policy: GuardPolicy = POLICY,
    content_type: str = "text/plain; charset=utf-8",
) -> GuardResult:
    """Check a small mail built from ``Name: value`` lines on top of ordinary defaults."""
    names = {h.split(":", 1)[0].strip().lower() for h in headers}
    defaults = {
        "from": "From: Pieter Verbeek <p.verbeek@gemeente-zuidwaard.example>",
        "to": f"To: {OWN}",
        "subject": "Subject: Onrust in de wijk",
        "message-id": "Message-ID: <unit-1@gemeente-zuidwaard.example>",
        "mime-version": "MIME-Version: 1.0",
        "content-type": f"Content-Type: {content_type}",
    }
    lines = [v for k, v in defaults.items() if k not in names] + list(headers)
    raw = ("\n".join(lines) + "\n\n" + body).encode("utf-8")
    return check(parse(raw), policy)


def codes(result: GuardResult) -> set[str]:
    return {r.code for r in result.reasons}


def reason(result: GuardResult, code: str) -> Reason:
    found = [r for r in result.reasons if r.code == code]
    assert len(found) == 1, f"expected exactly one {code} reason, got {result.reasons}"
    return found[0]


# --- the catalogue ---------------------------------------------------------------


def test_catalogue_names_every_file_block_or_allow() -> None:
    assert CASES, "tests/guard_cases/ is empty"
    assert {p for p in CASES} == set(BLOCK_CASES) | set(ALLOW_CASES)


def test_catalogue_has_a_block_case_for_every_reason_code() -> None:
    seen: set[str] = set()
    for path in BLOCK_CASES:
        seen |= _expected(parse(path.read_bytes()))[0]
    assert seen == ALL_CODES


def test_catalogue_has_automated_and_reply_blocked_only_cases() -> None:
    flags = {_expected(parse(p.read_bytes()))[1] for p in BLOCK_CASES}
    assert flags == {True, False}


@pytest.mark.parametrize("path", BLOCK_CASES, ids=_ids(BLOCK_CASES))
def test_block_case_gives_exactly_the_expected_reasons(path: Path) -> None:
    mail = parse(path.read_bytes())
    want_codes, want_automated = _expected(mail)
    result = check(mail, POLICY)
    assert codes(result) == want_codes
    assert result.automated is want_automated
    assert result.may_reply is False
    assert result.blocked_by is not None


@pytest.mark.parametrize("path", BLOCK_CASES, ids=_ids(BLOCK_CASES))
def test_block_case_does_not_depend_on_the_test_headers(path: Path) -> None:
    raw = path.read_bytes()
    stripped = parse(_strip_test_headers(raw))
    assert stripped.header("x-test-expect") is None
    assert check(stripped, POLICY) == check(parse(raw), POLICY)


@pytest.mark.parametrize("path", ALLOW_CASES, ids=_ids(ALLOW_CASES))
def test_allow_case_may_be_answered(path: Path) -> None:
    mail = parse(path.read_bytes())
    assert mail.header("x-test-expect") is None, "allow_ cases carry no expectation header"
    result = check(mail, POLICY)
    assert result.reasons == ()
    assert result.may_reply is True
    assert result.automated is False
    assert result.blocked_by is None
    assert result.reply_to is not None


def test_a_test_expectation_header_alone_blocks_nothing() -> None:
    result = make("X-Test-Expect: auto-submitted, list-header", "X-Test-Automated: yes")
    assert result.may_reply


@pytest.mark.parametrize("path", BLOCK_CASES, ids=_ids(BLOCK_CASES))
def test_details_never_quote_the_body(path: Path) -> None:
    mail = parse(path.read_bytes())
    blocked_by = check(mail, POLICY).blocked_by or ""
    body_lines = [ln.strip() for ln in (mail.text_plain + mail.text_html).splitlines()]
    for line in body_lines:
        if len(line) > 20:
            assert line not in blocked_by


# --- the public values --------------------------------------------------------------


def test_blocked_by_is_none_when_nothing_blocks() -> None:
    result = GuardResult(reasons=(), reply_to=Address("", "p@x.example"))
    assert result.blocked_by is None
    assert result.may_reply is True
    assert result.automated is False


def test_blocked_by_joins_code_and_detail_of_every_reason_in_order() -> None:
    result = GuardResult(
        reasons=(
            Reason("x-auto-response-suppress", "X-Auto-Response-Suppress: All", False),
            Reason("precedence", "Precedence: bulk", True),
        ),
        reply_to=None,
    )
    assert result.blocked_by == (
        "x-auto-response-suppress: X-Auto-Response-Suppress: All; precedence: Precedence: bulk"
    )


def test_blocked_by_of_a_checked_mail_names_every_rule_that_fired() -> None:
    result = make("Auto-Submitted: auto-replied", "Precedence: bulk", "List-Id: <wijk.example>")
    assert result.blocked_by == (
        "auto-submitted: Auto-Submitted: auto-replied; "
        "precedence: Precedence: bulk; "
        "list-header: List-Id (List-Id: <wijk.example>)"
    )


def test_automated_when_any_reason_is_automated() -> None:
    only_blocked = GuardResult((Reason("robot-sender", "noreply", False),), None)
    mixed = GuardResult(
        (Reason("robot-sender", "noreply", False), Reason("spam", "X-Spam-Flag: YES", True)),
        None,
    )
    assert only_blocked.automated is False and only_blocked.may_reply is False
    assert mixed.automated is True


def test_all_rules_are_checked_not_just_the_first() -> None:
    result = make(
        "From: MAILER-DAEMON@mx.example",
        "Return-Path: <>",
        "Auto-Submitted: auto-replied",
        "X-Spam-Flag: YES",
        "X-Auto-Response-Suppress: All",
    )
    assert codes(result) == {
        "auto-submitted",
        "x-auto-response-suppress",
        "null-sender",
        "robot-sender",
        "spam",
    }


def test_two_findings_of_one_kind_become_one_reason() -> None:
    result = make("From: noreply@meldingen.example", "Return-Path: <noreply@meldingen.example>")
    robot = reason(result, "robot-sender")
    assert "From" in robot.detail and "Return-Path" in robot.detail


def test_header_values_in_details_are_clipped() -> None:
    result = make("Precedence: bulk " + "x" * 500)
    assert len(reason(result, "precedence").detail) < 160


# --- where a reply would go ------------------------------------------------------------


def test_reply_goes_to_reply_to_when_it_differs_from_from() -> None:
    result = make("Reply-To: Crisisteam <crisisteam@gemeente-zuidwaard.example>")
    assert result.may_reply
    assert result.reply_to == Address("Crisisteam", "crisisteam@gemeente-zuidwaard.example")


def test_reply_goes_to_the_first_valid_reply_to_address() -> None:
    result = make("Reply-To: kapot, eerste@gemeente.example, tweede@gemeente.example")
    assert result.reply_to is not None
    assert result.reply_to.addr == "eerste@gemeente.example"


def test_reply_falls_back_to_from_when_no_reply_to_is_valid() -> None:
    result = make("Reply-To: geen-adres")
    assert result.reply_to is not None
    assert result.reply_to.addr == "p.verbeek@gemeente-zuidwaard.example"
    assert result.may_reply


def test_reply_goes_to_from_without_reply_to() -> None:
    result = make()
    assert result.reply_to == Address("Pieter Verbeek", "p.verbeek@gemeente-zuidwaard.example")


@pytest.mark.parametrize("from_header", ["From: Burgemeester <burgemeester>", "From: <>", "From: iemand@"])
def test_no_valid_address_means_no_reply_target(from_header: str) -> None:
    result = make(from_header)
    assert result.reply_to is None
    no_addr = reason(result, "no-reply-address")
    assert no_addr.automated is False


def test_a_mail_without_from_has_no_reply_target() -> None:
    result = check(ParsedMail(headers=(("subject", "leeg"),), subject="leeg"), POLICY)
    assert result.reply_to is None
    assert codes(result) == {"no-reply-address"}


# --- single rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "automated"),
    [
        ("auto-replied", True),
        ("Auto-Replied", True),
        ('auto-replied; owner-email="x@gemeente.example"', True),
        ("auto-notified", True),
        ("vacation", True),
        ("yes", True),
        ("notified", True),
        ("auto-generated", False),
        ("auto-generated (alert system)", False),
    ],
)
def test_auto_submitted_other_than_no_blocks(value: str, automated: bool) -> None:
    result = make(f"Auto-Submitted: {value}")
    assert reason(result, "auto-submitted").automated is automated


@pytest.mark.parametrize("value", ["no", "No", " NO ", "no (written by a person)"])
def test_auto_submitted_no_is_an_ordinary_mail(value: str) -> None:
    assert make(f"Auto-Submitted: {value}").may_reply


@pytest.mark.parametrize("header", ["Precedence", "X-Precedence"])
@pytest.mark.parametrize("value", ["bulk", "list", "junk", "auto_reply", "BULK", '"bulk"', "'list'", '"Junk" (x)'])
def test_precedence_bulk_list_junk_auto_reply_blocks(header: str, value: str) -> None:
    assert reason(make(f"{header}: {value}"), "precedence").automated is True


@pytest.mark.parametrize("value", ["normal", "first-class", "urgent"])
def test_other_precedence_values_are_ordinary(value: str) -> None:
    assert make(f"Precedence: {value}").may_reply


@pytest.mark.parametrize(
    "header",
    [
        "List-Id: <a.example>",
        "List-Help: <mailto:h@a.example>",
        "List-Subscribe: <mailto:s@a.example>",
        "List-Unsubscribe: <mailto:u@a.example>",
        "List-Post: <mailto:p@a.example>",
        "List-Owner: <mailto:o@a.example>",
        "List-Archive: <https://a.example/archief>",
        "Mailing-List: contact h@a.example",
    ],
)
def test_every_list_header_blocks_as_automated(header: str) -> None:
    assert reason(make(header), "list-header").automated is True


@pytest.mark.parametrize("header", ["Feedback-ID: 1:2:3:zender", "X-CSA-Complaints: csa@x.example"])
def test_sending_platform_markers_block_the_reply_only(header: str) -> None:
    assert reason(make(header), "bulk-sender").automated is False


@pytest.mark.parametrize(
    "value",
    [
        "All",
        "all",
        "OOF",
        "AutoReply",
        "DR",
        "RN, OOF",
        " rn ,\tautoreply ",
        "DR, RN, NRN",
        "OOF AutoReply",
        "RN; OOF",
        "NRN;AutoReply",
        "RN\tDR",
    ],
)
def test_auto_response_suppress_all_oof_autoreply_dr_blocks_the_reply_only(value: str) -> None:
    assert reason(make(f"X-Auto-Response-Suppress: {value}"), "x-auto-response-suppress").automated is False


@pytest.mark.parametrize("value", ["None", "NDR", "RN, NRN", "OOFX", "", "RN NRN", "NDR; RN"])
def test_other_auto_response_suppress_values_are_ordinary(value: str) -> None:
    assert make(f"X-Auto-Response-Suppress: {value}").may_reply


def test_mailman_no_ack_blocks_the_reply_only() -> None:
    assert reason(make("X-Ack: no"), "no-ack").automated is False
    assert reason(make("X-No-Ack: yes"), "no-ack").automated is False
    assert make("X-Ack: yes").may_reply


@pytest.mark.parametrize("value", [OWN, "Omo@MinBZK.nl", "Omo <omo@minbzk.nl>", "iemand@x.example, omo@minbzk.nl"])
def test_x_loop_naming_our_address_is_a_loop(value: str) -> None:
    assert reason(make(f"X-Loop: {value}"), "x-loop").automated is True


@pytest.mark.parametrize("value", ["yes", "crisis@gemeente.example", "notomo@minbzk.nl.example"])
def test_x_loop_naming_someone_else_is_ordinary(value: str) -> None:
    assert make(f"X-Loop: {value}").may_reply


def test_our_loop_header_is_a_loop_and_its_name_is_configurable() -> None:
    assert reason(make("X-Omo-Loop: 1"), "own-loop-header").automated is True
    custom = GuardPolicy(own_addresses=frozenset({OWN}), loop_header="X-Omo-Test-Loop")
    assert reason(make("X-Omo-Test-Loop: 1", policy=custom), "own-loop-header").automated
    assert make("X-Omo-Loop: 1", policy=custom).may_reply


def test_a_reply_to_only_our_auto_reply_is_not_answered_but_not_called_a_machine() -> None:
    result = make("In-Reply-To: <omo-reply.abc123@minbzk.nl>")
    assert reason(result, "reply-to-our-auto-reply").automated is False


def test_a_thread_with_an_earlier_mail_of_the_sender_is_ordinary() -> None:
    result = make(
        "In-Reply-To: <omo-reply.abc123@minbzk.nl>",
        "References: <orig-1@gemeente.example> <omo-reply.abc123@minbzk.nl>",
    )
    assert result.may_reply


@pytest.mark.parametrize("msgid", ["<x.omo-reply.1@minbzk.nl>", "<reply.1@minbzk.nl>"])
def test_our_prefix_must_start_the_local_part(msgid: str) -> None:
    assert make(f"In-Reply-To: {msgid}").may_reply


def test_auto_reply_prefix_is_configurable() -> None:
    custom = GuardPolicy(own_addresses=frozenset({OWN}), auto_reply_msgid_prefix="omo-test.")
    assert "reply-to-our-auto-reply" in codes(make("In-Reply-To: <omo-test.9@x.example>", policy=custom))
    assert make("In-Reply-To: <omo-reply.9@minbzk.nl>", policy=custom).may_reply


@pytest.mark.parametrize(
    "header",
    [
        "X-Autoreply: yes",
        "X-Auto-Reply: yes",
        "X-Autorespond: bedankt",
        "X-Autoresponder: 1",
        "X-Autoresponse: 1",
        "X-Autoreply-From: k@x.example",
        "X-FC-MachineGenerated: true",
        "X-POST-MessageClass: 9; Autoresponder",
        "Delivered-To: Autoresponder",
    ],
)
def test_vendor_auto_responder_markers_are_automated(header: str) -> None:
    assert reason(make(header), "vendor-autoreply").automated is True


def test_firstclass_marker_must_say_true() -> None:
    assert make("X-FC-MachineGenerated: false").may_reply


@pytest.mark.parametrize(
    "subject",
    [
        "Automatisch antwoord: Onrust",
        "automatic reply: update",
        "Out of Office: update",
        "Out of Office AutoReply: update",
        "Afwezig: tot maandag",
        "Afwezig : tot maandag",
        "Automatische Antwort: Unruhe",
        "Réponse automatique : troubles",
    ],
)
def test_out_of_office_subject_prefixes_are_automated(subject: str) -> None:
    assert reason(make(f"Subject: {subject}"), "vendor-autoreply").automated is True


@pytest.mark.parametrize(
    "subject",
    [
        "RE: Automatisch antwoord: Onrust",
        "Fwd: Out of Office: update",
        "Afwezigheid van de burgemeester",
        "Automatisch antwoord gevraagd?",
        "Auto: in brand gestoken bij de demonstratie",
        "Vraag over een automatisch antwoord:",
    ],
)
def test_subjects_that_only_resemble_out_of_office_are_ordinary(subject: str) -> None:
    assert make(f"Subject: {subject}").may_reply


def test_body_mentioning_automatic_reply_is_ordinary() -> None:
    body = "Automatisch antwoord: dat kreeg ik vorige keer. Wij zitten op geen mailinglijst.\n"
    assert make(body=body).may_reply


def test_exchange_rules_loop_alone_is_ordinary() -> None:
    assert make("X-MS-Exchange-Inbox-Rules-Loop: secretariaat@gemeente.example").may_reply


def test_exchange_rules_loop_with_suppress_all_is_an_out_of_office() -> None:
    result = make("X-MS-Exchange-Inbox-Rules-Loop: w@gemeente.example", "X-Auto-Response-Suppress: All")
    assert reason(result, "vendor-autoreply").automated is True
    assert result.automated is True


@pytest.mark.parametrize(
    ("source", "automated"),
    [
        ("Transport Rule Agent", True),
        ("Journal Agent", True),
        ("DC Pre Content Filter Agent", True),
        ("Mailbox Rules Agent", False),
    ],
)
def test_exchange_generated_message_source(source: str, automated: bool) -> None:
    result = make(f"X-MS-Exchange-Generated-Message-Source: {source}")
    assert reason(result, "vendor-autoreply").automated is automated


@pytest.mark.parametrize("value", ["<>", "<> (null sender)", "(bounce) <>", " <> (a (nested) comment)"])
def test_null_envelope_sender_is_automated(value: str) -> None:
    assert reason(make(f"Return-Path: {value}"), "null-sender").automated is True


def test_a_commented_envelope_sender_is_read_without_the_comment() -> None:
    mail = parse(b"Return-Path: <p.verbeek@gemeente-zuidwaard.example> (via relay)\nFrom: p@x.example\n\nhoi\n")
    assert mail.return_path == "p.verbeek@gemeente-zuidwaard.example"
    assert make("Return-Path: <p.verbeek@gemeente-zuidwaard.example> (via relay)").may_reply


def test_an_ordinary_envelope_sender_is_ordinary() -> None:
    assert make("Return-Path: <p.verbeek@gemeente-zuidwaard.example>").may_reply


@pytest.mark.parametrize(
    ("content_type", "code"),
    [
        ("multipart/report; report-type=delivery-status; boundary=b", "delivery-report"),
        ("multipart/report; report-type=global-delivery-status; boundary=b", "delivery-report"),
        ("multipart/report; report-type=disposition-notification; boundary=b", "read-receipt"),
        ("multipart/report; report-type=tlsrpt; boundary=b", "machine-report"),
        ("message/delivery-status", "delivery-report"),
        ("message/disposition-notification", "read-receipt"),
    ],
)
def test_reports_are_automated(content_type: str, code: str) -> None:
    body = (
        "--b\nContent-Type: text/plain\n\nrapport\n--b--\n"
        if "boundary" in content_type
        else "Reporting-MTA: dns; mx.example\n"
    )
    result = make(content_type=content_type, body=body)
    assert reason(result, code).automated is True


@pytest.mark.parametrize("method", ["REPLY", "reply", "COUNTER", "REFRESH", "DECLINECOUNTER"])
def test_calendar_responses_are_automated(method: str) -> None:
    result = make(
        content_type=f"text/calendar; method={method}", body=f"BEGIN:VCALENDAR\nMETHOD:{method}\nEND:VCALENDAR\n"
    )
    assert reason(result, "calendar-reply").automated is True


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL", "PUBLISH", "ADD"])
def test_calendar_invitations_and_updates_are_ordinary(method: str) -> None:
    result = make(
        content_type=f"text/calendar; method={method}", body=f"BEGIN:VCALENDAR\nMETHOD:{method}\nEND:VCALENDAR\n"
    )
    assert result.may_reply


def test_a_visible_method_wins_over_a_response_like_subject() -> None:
    result = make(
        "Subject: Voorlopig: overleg jaarwisseling",
        content_type="text/calendar; method=REQUEST",
        body="BEGIN:VCALENDAR\nMETHOD:REQUEST\nEND:VCALENDAR\n",
    )
    assert result.may_reply


def _multipart_with_calendar(subject: str) -> GuardResult:
    body = (
        "--c\nContent-Type: text/plain\n\nZie agenda.\n"
        "--c\nContent-Type: text/calendar; method=REPLY\n\nBEGIN:VCALENDAR\nEND:VCALENDAR\n"
        "--c--\n"
    )
    return make(f"Subject: {subject}", content_type="multipart/alternative; boundary=c", body=body)


@pytest.mark.parametrize(
    "subject",
    [
        "Accepted: Overleg",
        "Declined: Overleg",
        "Geaccepteerd: Overleg",
        "Geweigerd: Overleg",
        "Voorlopig geaccepteerd: Overleg",
    ],
)
def test_calendar_part_with_a_response_subject_is_automated(subject: str) -> None:
    assert reason(_multipart_with_calendar(subject), "calendar-reply").automated is True


def test_calendar_part_inside_multipart_with_an_ordinary_subject_is_not_recognised() -> None:
    # Known limit: ParsedMail keeps no part headers, so METHOD inside a multipart is
    # invisible; only the response subject gives such a calendar reply away.
    assert _multipart_with_calendar("Overleg netwerk").may_reply


def test_response_subject_without_a_calendar_part_is_ordinary() -> None:
    assert make("Subject: Afgewezen: onze aanvraag voor extra politie-inzet").may_reply


@pytest.mark.parametrize(
    ("local", "automated"),
    [
        ("mailer-daemon", True),
        ("MAILER-DAEMON", True),
        ("postmaster", True),
        ("listserv", True),
        ("majordomo", True),
        ("mailman", True),
        ("root", True),
        ("owner-crisisnet", True),
        ("crisisnet-owner", True),
        ("crisisnet-request", True),
        ("crisisnet-bounces", True),
        ("crisisnet-bounces+omo=minbzk.nl", True),
        ("bounce-123", True),
        ("bounces", True),
        ("noreply", False),
        ("no-reply", False),
        ("no_reply", False),
        ("noreply-meldingen", False),
        ("donotreply", False),
        ("DoNotReply", False),
        ("do-not-reply", False),
        ("do_not_reply", False),
        ("no.reply", False),
        ("No.Reply", False),
        ("no.reply+meldingen", False),
        ("no.reply.meldingen", False),
        ("do.not.reply", False),
        ("do_not.reply", False),
    ],
)
def test_robot_from_addresses_block(local: str, automated: bool) -> None:
    result = make(f"From: {local}@systeem.example")
    assert reason(result, "robot-sender").automated is automated


@pytest.mark.parametrize(
    "local",
    [
        "kristel.list",
        "specialist",
        "listig",
        "lijst",
        "ownership",
        "request",
        "bouncer",
        "mailerdaemon.fan",
        "postmasters",
        "rooted",
        "owner.jansen",
        "bounce.jansen",
        "j.root",
        "jansen.owner",
        "reply.desk",
        "norbert",
    ],
)
def test_local_parts_that_only_resemble_robots_are_ordinary(local: str) -> None:
    assert make(f"From: {local}@gemeente.example").may_reply


def test_robot_envelope_sender_blocks_the_reply_only() -> None:
    result = make("Return-Path: <crisisnet-bounces+omo=minbzk.nl@lijsten.example>")
    assert reason(result, "robot-sender").automated is False


def test_robot_reply_target_blocks_the_reply_only() -> None:
    result = make("Reply-To: noreply@gemeente.example")
    assert result.reply_to is not None and result.reply_to.addr == "noreply@gemeente.example"
    assert reason(result, "robot-sender").automated is False


def test_robot_reply_to_that_is_not_the_reply_target_is_ignored() -> None:
    result = make("Reply-To: crisisteam@gemeente.example, noreply@gemeente.example")
    assert result.may_reply


def test_robot_globs_come_from_the_policy() -> None:
    custom = GuardPolicy(own_addresses=frozenset({OWN}), robot_local_parts=("alerts-*",))
    assert "robot-sender" in codes(make("From: alerts-noord@x.example", policy=custom))
    assert make("From: noreply@x.example", policy=custom).may_reply
    # With postmaster taken off the list (RFC 5230 says it is usually a person), it is ordinary.
    assert make("From: postmaster@x.example", policy=custom).may_reply
    # An operator-added glob never makes a mail count as machine-written.
    assert reason(make("From: alerts-noord@x.example", policy=custom), "robot-sender").automated is False


@pytest.mark.parametrize(
    "header",
    [
        "From: Omo <Omo@MINBZK.nl>",
        "Reply-To: omo@minbzk.nl",
        "Return-Path: <OMO@minbzk.nl>",
        # a +tag form is delivered to our own mailbox too: answering it is answering ourselves
        "From: Omo <omo+x@minbzk.nl>",
        "Reply-To: OMO+test@MinBZK.nl",
        "Return-Path: <omo+bounce@minbzk.nl>",
    ],
)
def test_our_own_address_is_a_loop(header: str) -> None:
    assert reason(make(header), "own-address").automated is True


@pytest.mark.parametrize(
    "header",
    [
        "From: Anna Jansen <A.Jansen@minbzk.nl>",
        "Reply-To: a.jansen@minbzk.nl",
        "Return-Path: <a.jansen@minbzk.nl>",
        "From: Anna <a.jansen+1@minbzk.nl>",
        "Reply-To: A.Jansen+omo@minbzk.nl",
        "Return-Path: <a.jansen+x@minbzk.nl>",
    ],
)
def test_a_roster_address_blocks_the_reply_only(header: str) -> None:
    assert reason(make(header), "roster-address").automated is False


def test_a_tagged_roster_entry_matches_its_mailbox() -> None:
    policy = GuardPolicy(own_addresses=frozenset({OWN}), roster_addresses=frozenset({"cp+omo@gemeente.example"}))
    assert "roster-address" in codes(make("Reply-To: cp@gemeente.example", policy=policy))


@pytest.mark.parametrize("value", ["omo+loop@minbzk.nl", "Omo <OMO+x@minbzk.nl>"])
def test_x_loop_naming_our_tagged_address_is_a_loop(value: str) -> None:
    assert reason(make(f"X-Loop: {value}"), "x-loop").automated is True


@pytest.mark.parametrize("addr", ["omo.x@minbzk.nl", "omo@minbzk.nl.example", "xomo@minbzk.nl", "a.jansen2@minbzk.nl"])
def test_addresses_that_only_resemble_ours_or_the_roster_are_ordinary(addr: str) -> None:
    assert make(f"Reply-To: {addr}").may_reply


@pytest.mark.parametrize(
    "header",
    ["X-Spam-Flag: YES", "X-Spam-Flag: yes", "X-Spam-Status: Yes, score=8.1 required=5.0", "X-Spam-Status:   yes"],
)
def test_spam_is_automated(header: str) -> None:
    assert reason(make(header), "spam").automated is True


@pytest.mark.parametrize("header", ["X-Spam-Flag: NO", "X-Spam-Status: No, score=1.0 tests=none"])
def test_not_spam_is_ordinary(header: str) -> None:
    assert make(header).may_reply


# --- the policy -------------------------------------------------------------------------


def test_policy_from_config_copies_addresses_globs_and_loop_header() -> None:
    cfg = AutoReplyConfig(
        own_addresses=["Omo@MinBZK.nl", "Omo-Test@minbzk.nl"],
        robot_local_parts=["NoReply*", "mailer-daemon"],
        loop_header="X-Omo-Loop-2",
    )
    policy = GuardPolicy.from_config(cfg, roster_addresses=["A.Jansen@minbzk.nl"])
    assert policy.own_addresses == frozenset({"omo@minbzk.nl", "omo-test@minbzk.nl"})
    assert policy.roster_addresses == frozenset({"a.jansen@minbzk.nl"})
    assert policy.robot_local_parts == ("noreply*", "mailer-daemon")
    assert policy.loop_header == "X-Omo-Loop-2"
    assert policy.auto_reply_msgid_prefix == "omo-reply."


def test_policy_defaults_match_the_config_defaults() -> None:
    from_cfg = GuardPolicy.from_config(AutoReplyConfig())
    plain = GuardPolicy(own_addresses=frozenset({"omo@minbzk.nl"}))
    assert from_cfg == plain


def test_policy_lower_cases_what_it_is_given() -> None:
    policy = GuardPolicy(
        own_addresses=frozenset({" Omo@MinBZK.nl "}),
        roster_addresses=frozenset({"A.Jansen@MinBZK.nl"}),
        robot_local_parts=("NoReply*", ""),
    )
    assert policy.own_addresses == frozenset({"omo@minbzk.nl"})
    assert policy.roster_addresses == frozenset({"a.jansen@minbzk.nl"})
    assert policy.robot_local_parts == ("noreply*",)


def test_results_are_frozen_values() -> None:
    result = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.reasons = ()  # type: ignore[misc]


# --- the module stays pure ---------------------------------------------------------------


def test_guards_imports_only_the_standard_library_mail_and_config() -> None:
    tree = ast.parse(Path(guards.__file__).read_text(encoding="utf-8"))
    runtime: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # the TYPE_CHECKING block is not run
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                runtime |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                runtime.add(("." * sub.level) + (sub.module or ""))
    allowed = {"__future__", "fnmatch", "re", "collections.abc", "dataclasses", "typing", ".mail", ".config"}
    assert runtime <= allowed, runtime - allowed


# --- it never raises ----------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        "auto-submitted",
        "precedence",
        "x-precedence",
        "list-id",
        "x-auto-response-suppress",
        "x-loop",
        "x-omo-loop",
        "return-path",
        "x-spam-status",
        "x-spam-flag",
        "content-type",
        "x-ms-exchange-generated-message-source",
        "delivered-to",
        "x-ack",
        "x-fc-machinegenerated",
    ]
)
_TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAMES, _TEXT), max_size=8),
    subject=_TEXT,
    from_addr=_TEXT,
    ids=st.lists(_TEXT, max_size=3),
    types=st.lists(st.sampled_from(["text/plain", "text/calendar", "multipart/report"]), max_size=3),
)
def test_check_never_raises_and_its_answers_agree(
    headers: list[tuple[str, str]],
    subject: str,
    from_addr: str,
    ids: list[str],
    types: list[str],
) -> None:
    mail = ParsedMail(
        headers=tuple(headers),
        subject=subject,
        from_=Address("", from_addr),
        in_reply_to=tuple(ids),
        part_types=tuple(types),
        content_type=types[0] if types else "text/plain",
    )
    result = check(mail, POLICY)
    assert result.may_reply == (result.reasons == ())
    assert (result.blocked_by is None) == result.may_reply
    assert not (result.automated and result.may_reply)
    assert len({r.code for r in result.reasons}) == len(result.reasons)
    assert all(r.code in ALL_CODES for r in result.reasons)
    assert all(re.fullmatch(r"[a-z-]+", r.code) for r in result.reasons)
