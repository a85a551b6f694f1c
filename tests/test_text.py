"""Only the new text decides: history, signatures and disclaimers are set aside (and kept)."""

from __future__ import annotations

import pytest

from omo_mailbot.mail import parse
from omo_mailbot.text import _WORD, _letter_runs, language, new_text, own_text, split_text

from .mails import make_mail


def test_dutch_reply_header_and_quoted_lines_are_set_aside():
    body = (
        "Dank voor het snelle contact gisteren. Het is weer rustig; graag plannen we een evaluatie.\n\n"
        "Met vriendelijke groet,\nMarco Dijkstra\nGemeentesecretaris\nT 0570 123 456\n\n"
        "Op ma 23 nov. 2026 om 21:14 schreef Marco Dijkstra <m.dijkstra@gemeente-voorbeeld.nl>:\n"
        "> Er staan nu ruim 200 mensen bij het gemeentehuis en er wordt met stenen gegooid.\n"
        "> Kunt u direct bellen?\n"
    )
    split = split_text(body)
    assert split.new == "Dank voor het snelle contact gisteren. Het is weer rustig; graag plannen we een evaluatie."
    assert "stenen gegooid" in split.quoted
    assert "Gemeentesecretaris" in split.signature
    assert "stenen" not in split.new


def test_english_reply_header_is_recognised():
    split = split_text("Thanks, all calm now.\n\nOn Mon, 23 Nov 2026 at 21:14, Jan Smit <j@x.nl> wrote:\n> riot now\n")
    assert split.new == "Thanks, all calm now." and "riot now" in split.quoted


def test_outlook_header_block_starts_the_history():
    body = (
        "Kunt u mij vandaag bellen? Het loopt uit de hand bij de sporthal.\n\n"
        "Van: Secretariaat Burgemeester <secretariaat@gemeente-voorbeeld.nl>\n"
        "Verzonden: maandag 23 november 2026 09:12\nAan: Omo <Omo@minbzk.nl>\n"
        "Onderwerp: Vraag over de informatieavond\n\nBeste mensen, wij plannen in maart een avond.\n"
    )
    split = split_text(body, "RE: Vraag over de informatieavond")
    assert split.new == "Kunt u mij vandaag bellen? Het loopt uit de hand bij de sporthal."
    assert "in maart" in split.quoted


def test_a_forward_keeps_the_forwarded_mail_because_that_is_the_question():
    body = (
        "Ter info, namens de burgemeester doorgestuurd.\n\n"
        "---------- Doorgestuurd bericht ----------\nVan: Burgemeester <b@gemeente-voorbeeld.nl>\n"
        "Datum: ma 23 nov 2026 om 20:01\nOnderwerp: Blokkade\nAan: secretariaat <s@gemeente-voorbeeld.nl>\n\n"
        "Er is op dit moment een blokkade bij de ingang van het gemeentehuis.\n\nGroet,\nB.\n"
    )
    split = split_text(body, "Fwd: Blokkade")
    assert split.is_forward
    assert "blokkade bij de ingang" in split.new
    assert "Van:" not in split.new and "Datum:" not in split.new


def test_mobile_signatures_and_disclaimers_are_not_new_text():
    body = (
        "Er staat een groep bij het huis van de wethouder.\n\nVerzonden vanaf mijn iPhone\n\n"
        "Dit bericht kan vertrouwelijke informatie bevatten. Bent u niet de geadresseerde, verwijder het dan.\n"
    )
    split = split_text(body)
    assert split.new == "Er staat een groep bij het huis van de wethouder."
    assert "vertrouwelijke" in split.signature


def test_html_only_mail_is_read_as_text():
    raw = (
        b"From: A <a@gemeente-voorbeeld.nl>\r\nTo: Omo@minbzk.nl\r\nSubject: nu\r\nMessage-ID: <h1@x.nl>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>Er zijn <b>nu</b> rellen in het centrum.</p><ul><li>politie ter plaatse</li></ul>"
        b"<script>alert(1)</script></body></html>"
    )
    split = new_text(parse(raw))
    assert "Er zijn nu rellen in het centrum." in split.new
    assert "politie ter plaatse" in split.new
    assert "<b>" not in split.new and "alert(1)" not in split.new


def test_a_mail_without_history_is_all_new_text():
    mail = parse(make_mail("Graag advies over een participatieavond in februari."))
    assert new_text(mail).new == "Graag advies over een participatieavond in februari."


def test_language_is_dutch_unless_clearly_english():
    assert language("Er staan nu mensen voor het gemeentehuis, kunt u bellen?") == "nl"
    assert language("There is a crowd at the town hall right now, can you call us today?") == "en"
    assert language("OK") == "nl"


def test_language_finds_the_words_its_pattern_finds_whatever_the_characters():
    """language() splits words with a byte table rather than its regular expression; both must find
    the same words for every character (lone surrogates, non-breaking and other spaces, letters
    outside Latin-1 and upper case included), between letters and next to each other."""
    every = [chr(c) for c in range(0x110000)]
    for text in ("".join(every), "a".join(every), "é".join(every), " ".join(every)):
        assert [w.decode("latin-1") for w in _letter_runs(text)] == _WORD.findall(text)


FORWARDED_DIGEST = (
    "#claim OMO-2026-0001\n\n"
    "Van: Omo <Omo@minbzk.nl>\nVerzonden: dinsdag 1 december 2026 08:00\nAan: Ada Bakker <ada@bzk.example>\n"
    "Onderwerp: Omo-digest\n\nUw zaken\n  OMO-2026-0002 Windpark\n    #close OMO-2026-0002 reden\n"
    "    #refer OMO-2026-0002 Expertise-unit Sociale Stabiliteit\n"
)


def test_own_text_stops_at_a_forward_that_the_classifier_still_reads():
    assert own_text(FORWARDED_DIGEST) == "#claim OMO-2026-0001"
    assert "#close OMO-2026-0002" in split_text(FORWARDED_DIGEST, "FW: Omo-digest").new  # unchanged for the classifier


@pytest.mark.parametrize(
    "history",
    [
        "Op ma 30 nov. 2026 om 08:00 schreef Omo <Omo@minbzk.nl>:\n",
        "On Mon, 30 Nov 2026 at 08:00, Omo <Omo@minbzk.nl> wrote:\n",
        "Op ma 30 nov. 2026 om 08:00 schreef Omo Ondersteuningsnetwerk\n<Omo@minbzk.nl>:\n",
        "Op ma 30 nov. 2026 om 08:00 schreef Omo Ondersteuningsnetwerk <\nOmo@minbzk.nl>:\n",
        "Op ma 30 nov. 2026 om 08:00\nschreef Omo Ondersteuningsnetwerk\n<Omo@minbzk.nl>:\n",
        "Op ma 30 nov. 2026 om 08:00 schreef Omo\nOndersteuningsnetwerk\nOmo@minbzk.nl:\n",
        "-----Original Message-----\n",
        "-----Oorspronkelijk bericht-----\n",
        "Begin forwarded message:\n",
        "Begin forwarded message\n",
        "---------- Forwarded message ---------\n",
        "---------- Doorgestuurd bericht ---------\n",
        "From: Omo <Omo@minbzk.nl>\nSent: Monday, 30 November 2026 08:00\nTo: Ada\nSubject: Omo-digest\n",
        "> Uw zaken\n",
    ],
)
def test_own_text_is_what_the_sender_wrote_above_any_history(history):
    body = f"Goedemorgen,\n#claim OMO-2026-0001\n\n{history}\n#close OMO-2026-0002 reden\n> #refer OMO-2026-0003 x\n"
    assert own_text(body) == "Goedemorgen,\n#claim OMO-2026-0001"


def test_own_text_keeps_a_signature_and_a_mail_without_history():
    assert own_text("#claim OMO-2026-0001\n\nMet vriendelijke groet,\nAda\n") == (
        "#claim OMO-2026-0001\n\nMet vriendelijke groet,\nAda"
    )
    assert own_text("Op maandag bellen wij u.\nDank!\n") == "Op maandag bellen wij u.\nDank!"
