"""Only the new text decides: history, signatures and disclaimers are set aside (and kept)."""

from __future__ import annotations

from omo_mailbot.mail import parse
from omo_mailbot.text import language, new_text, split_text

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
