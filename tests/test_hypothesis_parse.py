"""Property: whatever bytes arrive, parse + decide raise nothing but ParseError.

Generated mails (headers full of CR/LF, encoded words, odd charsets, nested
multiparts without their boundaries) and byte-level mutations of real test
mails go through the same step the pipeline runs for every mail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omo_mailbot.config import default_config
from omo_mailbot.errors import ParseError
from omo_mailbot.mail import parse
from omo_mailbot.service import build_decider
from omo_mailbot.verdict import Decider

from . import mails

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [mails.acute(), mails.preparation(), mails.BROKEN]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def decider(model_file: Path) -> Decider:
    cfg = default_config(str(ROOT))
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, model_file=str(model_file)))
    return build_decider(cfg)


def parse_and_decide(decider: Decider, raw: bytes) -> None:
    try:
        mail = parse(raw)
    except ParseError:
        return
    decision = decider.decide(mail)
    assert decision.label in ("acute", "preparation", "automated")


header_text = st.lists(
    st.sampled_from([*"abcXYZ <>@.,;:\"'=?_-\r\n\t\\()", "é", "ü", "€", "\x00", "=?utf-8?q?", "=?x-bad?b?", "?="]),
    max_size=40,
).map("".join)
charsets = st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", "utf-7", "windows-1252", "", "us-ascii\x00"])
ctypes = st.sampled_from(
    [
        "text/plain",
        "text/html",
        "multipart/mixed",
        "multipart/alternative",
        "message/rfc822",
        "application/ms-tnef",
        "multipart/report; report-type=delivery-status",
        "text/calendar",
        "garbage/",
        "",
    ]
)
encodings = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "??"])


@st.composite
def generated_mail(draw: st.DrawFn) -> bytes:
    lines = []
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "From",
                    "To",
                    "Subject",
                    "Reply-To",
                    "Message-ID",
                    "In-Reply-To",
                    "References",
                    "Date",
                    "Auto-Submitted",
                    "Precedence",
                    "List-Id",
                    "Return-Path",
                    "X-Random",
                ]
            ),
            max_size=12,
        )
    ):
        lines.append(f"{name}: {draw(header_text)}".encode("utf-8", "surrogatepass"))
    boundary = draw(st.sampled_from(["b1", "", '"unclosed', "a" * 200]))
    lines.append(
        f"Content-Type: {draw(ctypes)}; charset={draw(charsets)}; boundary={boundary}".encode(errors="replace")
    )
    lines.append(f"Content-Transfer-Encoding: {draw(encodings)}".encode())
    body = draw(st.binary(max_size=600))
    if draw(st.booleans()):
        body = b"--b1\r\nContent-Type: text/plain\r\n\r\n" + body + draw(st.sampled_from([b"\r\n--b1--", b"", b"--b1"]))
    sep = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    return sep.join(lines) + sep + sep + body


@st.composite
def mutated_mail(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 12))):
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if op == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from([b"\r\n", b"\x00", b"=?", b"--", b"\xff\xfe", b": ", b"\r\n\r\n"]))
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[max(0, at - 60) : at]
    return bytes(raw)


@SETTINGS
@given(raw=generated_mail())
def test_generated_mails_never_raise_anything_but_parse_error(decider: Decider, raw: bytes) -> None:
    parse_and_decide(decider, raw)


@SETTINGS
@given(raw=mutated_mail())
def test_mutated_mails_never_raise_anything_but_parse_error(decider: Decider, raw: bytes) -> None:
    parse_and_decide(decider, raw)


@SETTINGS
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(decider: Decider, raw: bytes) -> None:
    parse_and_decide(decider, raw)
