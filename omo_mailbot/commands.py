"""Acting on cases by mail: command lines from contact persons, and the one reply they get.

A contact person replies to the digest (or to a case mail) with lines such as::

    #claim OMO-2026-0042
    #assign OMO-2026-0042 name@organisation.nl
    #close OMO-2026-0042 answered by phone
    #refer OMO-2026-0042 Expertise-unit Sociale Stabiliteit
    #acute OMO-2026-0042          (or #preparation: a relabel that feeds training)

Only lines the sender wrote above any quoted, replied-to or forwarded text count
(:func:`text.own_text`), so a quoted or forwarded digest full of ready-to-copy
commands does nothing. Commands are honoured only from roster addresses, and
only when the topmost Authentication-Results header (the one the receiving
server adds) shows a DMARC pass for exactly the From domain, or a DKIM pass for
that domain or its parent or child, unless
``digest.require_authenticated_commands`` is false. Each command
mail gets exactly one reply listing what was done, or why not; it never becomes
a case. The same actions back the ``omo-mailbot cases`` subcommands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import cases, relabels
from .config import Config
from .mail import ParsedMail
from .models import Case, Message, OutboxMail
from .outbox import enqueue
from .outgoing import machine_mail, new_message_id
from .roster import Roster
from .templating import Templates
from .text import body_text, own_text

VERBS = ("claim", "assign", "close", "refer", "acute", "preparation")
COMMAND = re.compile(r"^[ \t]*#(" + "|".join(VERBS) + r")\b[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_REF = re.compile(r"^(OMO-\d{4}-\d{4,6})\b[ \t]*(.*)$", re.IGNORECASE)
COMMAND_PREFIX = "omo-command."
MAX_COMMANDS = 20
#: Answers to command mails per roster address per hour. Anyone can put a roster address in From;
#: the answer goes to the real person, so without a cap a forger could flood them through us.
MAX_ANSWERS_PER_HOUR = 20


class Refused(Exception):
    """An action that was not carried out; the message says why, for the person who asked."""


@dataclass(frozen=True)
class Command:
    verb: str
    reference: str | None
    argument: str
    line: str


@dataclass(frozen=True)
class Result:
    line: str
    done: bool
    text: str


def find_commands(text: str) -> list[Command]:
    """The command lines in ``text`` (the new text of a mail), at most :data:`MAX_COMMANDS`."""
    out: list[Command] = []
    if not text or "#" not in text:  # every command line has one; the multi-line scan costs ~70 µs a mail
        return out
    for m in COMMAND.finditer(text):
        rest = m.group(2).strip()
        ref_match = _REF.match(rest)
        reference = ref_match.group(1).upper() if ref_match else None
        argument = ref_match.group(2).strip() if ref_match else rest
        out.append(Command(m.group(1).lower(), reference, argument, m.group(0).strip()[:300]))
        if len(out) >= MAX_COMMANDS:
            break
    return out


def mail_commands(mail: ParsedMail) -> list[Command]:
    """The command lines the sender wrote: not those in a forward, which the classifier
    does read as new text, because a forwarded digest is full of ready-made commands."""
    return find_commands(own_text(body_text(mail)))


# --- authentication --------------------------------------------------------------


def _aligned(domain: str, other: str) -> bool:
    other = other.strip().strip(".").lower().lstrip("@")
    if "@" in other:
        other = other.rsplit("@", 1)[1]
    if not other or "." not in other:  # never align on a bare top-level domain
        return False
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def _statements(header: str) -> list[list[str]] | None:
    """An Authentication-Results value as statements (split on ``;``) of words (split on white space).

    Comments, nested ones too, are dropped and a quoted string stays inside its word, as
    RFC 8601 and RFC 5322 read them: a server copies text the sender chose (an envelope
    address, a comment) into the header, and a ``;`` or ``dmarc=pass`` inside it must not
    become a result. None when a quote or comment is left open: no safe reading exists."""
    statements: list[list[str]] = [[]]
    word: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in header:
        if escaped:
            escaped = False
            if quoted:
                word.append(ch)
        elif ch == "\\" and (quoted or depth):
            escaped = True
            if quoted:
                word.append(ch)
        elif quoted:
            word.append(ch)
            quoted = ch != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == '"':
            word.append(ch)
            quoted = True
        elif ch in "(;" or ch.isspace():
            depth = 1 if ch == "(" else 0
            if word:
                statements[-1].append("".join(word))
                word = []
            if ch == ";":
                statements.append([])
        else:
            word.append(ch)
    if quoted or depth:
        return None
    if word:
        statements[-1].append("".join(word))
    return statements


def _passes_for(domain: str, words: list[str]) -> bool:
    """Whether one result statement is a DKIM or DMARC pass that names ``domain``.

    DMARC's header.from is the From domain the server evaluated, so it must be ours
    exactly; a pass naming no domain proves nothing about ours. DKIM keeps relaxed
    alignment (parent or child domain), as DMARC itself allows."""
    if not words or "=" not in words[0]:
        return False
    method, _, outcome = words[0].lower().partition("=")
    props = dict(w.lower().split("=", 1) for w in words[1:] if "=" in w)
    if outcome != "pass":
        return False
    if method == "dkim":
        return any(_aligned(domain, props.get(k, "")) for k in ("header.d", "header.i"))
    return method == "dmarc" and props.get("header.from", "").rstrip(".") == domain


def authentication_problem(mail: ParsedMail, trusted_servers: list[str]) -> str | None:
    """Why the sender is not proven by DKIM or DMARC in the receiving server's header, or None when proven."""
    if mail.from_ is None:
        return "de mail heeft geen afzender (From)"
    domain = mail.from_.domain.lower()
    headers = mail.header_all("authentication-results")
    if not headers:
        return "geen Authentication-Results-kop: de ontvangende server heeft de afzender niet bevestigd"
    statements = _statements(headers[0])
    if statements is None:
        return "de bovenste Authentication-Results is onleesbaar (een aanhalingsteken of haakje sluit niet)"
    server, *results = statements
    server_id = server[0].lower() if server else ""
    if trusted_servers and server_id not in {s.lower() for s in trusted_servers}:
        return f"de bovenste Authentication-Results komt van {server_id or '(naamloos)'}, geen vertrouwde server"
    if any(_passes_for(domain, words) for words in results):
        return None
    return f"geen DKIM- of DMARC-pass voor {domain} in Authentication-Results"


# --- actions (shared with the command line) ------------------------------------------


def find_case(session: Session, reference: str) -> Case | None:
    return session.execute(select(Case).where(Case.reference == reference.upper())).scalar_one_or_none()


def _first_message(session: Session, case: Case) -> Message | None:
    return session.execute(select(Message).where(Message.case_id == case.id).order_by(Message.id).limit(1)).scalar()


def _reopen_note(session: Session, case: Case, actor: str, now: datetime) -> str:
    if case.status != "closed":
        return ""
    cases.add_event(session, case, actor, "reopened", "reopened by a command", now)
    return " (de zaak was gesloten en is weer open)"


def apply(
    session: Session,
    case: Case,
    verb: str,
    argument: str,
    actor: str,
    roster: Roster | None,
    now: datetime,
    zone: tzinfo,
) -> str:
    """Carry out one action on ``case`` for ``actor``; return what was done or raise :class:`Refused`.

    ``zone`` is the network's time zone (``digest.timezone``): absences are whole local days, so a
    command at 00:30 on someone's first day away must see that day, not the UTC date before it.
    """
    ref = case.reference
    if verb == "claim":
        if case.assignee == actor and case.status == "in_progress":
            return f"{ref} was al van u"
        note = _reopen_note(session, case, actor, now)
        previous = case.assignee
        case.assignee, case.status = actor, "in_progress"
        cases.add_event(session, case, actor, "claimed", f"from {previous}" if previous else None, now)
        return f"{ref} is nu van u (in behandeling){note}"
    if verb == "assign":
        target = argument.split()[0].strip("<>").lower() if argument.split() else ""
        if not target:
            raise Refused("geef het adres: #assign OMO-... naam@organisatie.nl")
        person = roster.person(target) if roster is not None else None
        if person is None:
            raise Refused(f"{target} is geen contactpersoon op het rooster")
        note = _reopen_note(session, case, actor, now)
        case.assignee, case.status = person.address, "assigned"
        cases.add_event(session, case, actor, "assigned", f"to {person.address} by hand", now)
        absence = person.absent_on(now.astimezone(zone).date())
        warn = f"; let op: {person.name} is afwezig tot en met {absence.end.isoformat()}" if absence else ""
        return f"{ref} is toegewezen aan {person.name} <{person.address}>{note}{warn}"
    if verb == "close":
        if case.status == "closed":
            return f"{ref} was al gesloten"
        case.status = "closed"
        cases.add_event(session, case, actor, "closed", argument or "(geen reden gegeven)", now)
        return f"{ref} is gesloten" + (f": {argument}" if argument else "")
    if verb == "refer":
        if not argument:
            raise Refused("zeg naar wie: #refer OMO-... Expertise-unit Sociale Stabiliteit")
        note = _reopen_note(session, case, actor, now)
        case.status, case.referred_to = "referred", argument[:500]
        cases.add_event(session, case, actor, "referred", argument[:500], now)
        return f"{ref} is doorverwezen naar {argument[:500]}{note}"
    if verb in ("acute", "preparation"):
        message = _first_message(session, case)
        if message is None:
            raise Refused(f"{ref} heeft geen opgeslagen mail om het label van te corrigeren")
        relabels.relabel(session, message, verb, actor, now, reason=argument or None)
        old, case.label = case.label, verb
        cases.add_event(session, case, actor, "relabelled", f"{old} -> {verb}", now)
        return f"{ref} heeft nu het label {verb} (was {old}); de volgende training gebruikt dit"
    raise Refused(f"onbekende opdracht #{verb}")


# --- the command mail ---------------------------------------------------------------


def handle(
    session: Session,
    mail: ParsedMail,
    commands: list[Command],
    roster: Roster,
    cfg: Config,
    now: datetime,
) -> list[Result]:
    """Check who sent ``commands`` (found by :func:`mail_commands`) and carry them out; one Result per line."""
    assert mail.from_ is not None
    actor = mail.from_.addr.lower()
    refusal: str | None = None
    if roster.person(actor) is None:
        refusal = "de afzender is geen contactpersoon op het rooster"
    elif cfg.digest.require_authenticated_commands:
        refusal = authentication_problem(mail, cfg.digest.trusted_authserv_ids)
    if refusal is not None:
        return [Result(c.line, False, refusal) for c in commands]
    thread_case = cases.find_thread_case(session, mail)
    results: list[Result] = []
    for command in commands:
        case = find_case(session, command.reference) if command.reference else thread_case
        if case is None:
            why = (
                f"er is geen zaak {command.reference}"
                if command.reference
                else "geen kenmerk: zet het achter de opdracht, bijvoorbeeld #claim OMO-2026-0042"
            )
            results.append(Result(command.line, False, why))
            continue
        try:  # apply() refuses before it changes anything
            done = apply(session, case, command.verb, command.argument, actor, roster, now, cfg.digest.zone)
            results.append(Result(command.line, True, done))
        except Refused as exc:
            results.append(Result(command.line, False, str(exc)))
    return results


def build_reply(
    templates: Templates, cfg: Config, mail: ParsedMail, results: list[Result], now: datetime
) -> tuple[bytes, str]:
    """The one answer to a command mail: what was done, what was not and why."""
    assert mail.from_ is not None
    message_id = new_message_id(COMMAND_PREFIX, cfg.smtp.message_id_domain)
    subject = mail.subject.strip() or "opdrachten"
    context = {
        "name": mail.from_.name or mail.from_.addr,
        "results": [{"line": r.line, "done": r.done, "text": r.text} for r in results],
        "done": sum(1 for r in results if r.done),
        "refused": sum(1 for r in results if not r.done),
    }
    raw = machine_mail(
        cfg.smtp,
        cfg.autoreply.loop_header,
        to=mail.from_.addr,
        subject=subject if subject.lower().startswith("re:") else f"Re: {subject}",
        message_id=message_id,
        now=now,
        kind="auto-replied",
        text=templates.render_text("command_reply.txt", context),
        answering=mail,
        language="nl",
    )
    return raw, message_id


def process_command_mail(
    session: Session,
    mail: ParsedMail,
    stored_id: int,
    commands: list[Command],
    roster: Roster,
    cfg: Config,
    templates: Templates,
    now: datetime,
) -> tuple[list[Result], bool]:
    """Handle a command mail inside the pipeline's transaction and queue its one reply.

    No reply goes out when this address already got :data:`MAX_ANSWERS_PER_HOUR` of them in
    the last hour; the commands are still handled (or refused) and ``answered`` says so.
    """
    results = handle(session, mail, commands, roster, cfg, now)
    assert mail.from_ is not None
    answered = session.scalar(
        select(func.count(OutboxMail.id)).where(
            OutboxMail.kind == "command_reply",
            OutboxMail.recipient == mail.from_.addr.lower(),
            OutboxMail.created_at >= now - timedelta(hours=1),
        )
    )
    if (answered or 0) >= MAX_ANSWERS_PER_HOUR:
        return results, False
    raw, message_id = build_reply(templates, cfg, mail, results, now)
    enqueue(
        session,
        kind="command_reply",
        raw=raw,
        recipient=mail.from_.addr,
        message_id=message_id,
        now=now,
        envelope_from=cfg.smtp.envelope_from,
        source_message_id=stored_id,
    )
    return results, True
