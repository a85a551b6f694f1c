"""Deterministic synthetic Dutch mails for the benchmarks (our own sentence templates).

Sizes follow ../shared/notes/limits.md: 2–20 KB of text, 40 % multipart/alternative
(text + HTML), quoted history, and every 100th mail with a 200 KB binary attachment.
A share of the mails is acute (an incident happening now), so the pipeline also
queues and sends replies.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

FIRST = ["Els", "Ruud", "Fatima", "Joost", "Sanne", "Mehmet", "Anouk", "Pieter", "Noor", "Bram", "Lotte", "Kees"]
LAST = ["Vermeer", "Bakker", "de Vries", "Jansen", "Yilmaz", "van Dijk", "Smit", "Visser", "Mulder", "Bos"]
TOWNS = ["Zwolle", "Almere", "Tilburg", "Groningen", "Delft", "Emmen", "Venlo", "Hoorn", "Assen", "Breda"]
TOPICS = {
    "windpark": [
        "De gemeenteraad besluit in {maand} over het windpark bij {plaats} en we verwachten veel reacties.",
        "Bewoners hebben een petitie met {n} handtekeningen ingediend tegen de plaatsing van de turbines.",
        "Kunnen jullie meedenken over de participatieavond en de communicatie richting de omwonenden?",
        "Wij zoeken een expert die ervaring heeft met gesprekken over energieprojecten in kleine kernen.",
    ],
    "azc": [
        "Het college onderzoekt een nieuwe opvanglocatie voor asielzoekers aan de rand van {plaats}.",
        "Bij de vorige informatieavond liep het gesprek hoog op; dat willen we deze keer voorkomen.",
        "Welke ervaringen hebben andere gemeenten met een klankbordgroep van buurtbewoners?",
        "We overwegen de bijeenkomst in kleinere tafels te organiseren met een onafhankelijke gespreksleider.",
    ],
    "boeren": [
        "Er is voor {dag} een trekkeractie aangekondigd richting het provinciehuis in {plaats}.",
        "De politie schat dat er ongeveer {n} voertuigen zullen komen; de verkeersregelaars zijn gewaarschuwd.",
        "Wij willen graag weten hoe we de dialoog met de organisatoren vooraf kunnen voeren.",
        "De burgemeester overweegt een noodverordening, maar wil eerst advies over de proportionaliteit.",
    ],
    "online": [
        "Op sociale media circuleren berichten met bedreigingen aan het adres van een wethouder in {plaats}.",
        "We hebben de berichten bewaard en gemeld bij de politie; de wethouder is erg aangeslagen.",
        "Is er een handreiking voor het ondersteunen van bestuurders die online worden geïntimideerd?",
        "Graag horen we welke stappen andere gemeenten hebben gezet om medewerkers te beschermen.",
    ],
    "corona": [
        "Een groep inwoners wil elke zaterdag een stille tocht houden door het centrum van {plaats}.",
        "Tot nu toe verliep alles rustig, maar de toon in de appgroepen wordt grimmiger.",
        "Kunnen jullie ons helpen met een analyse van de netwerken achter deze beweging?",
        "Wij plannen een overleg met de driehoek op {dag} en willen ons goed voorbereiden.",
    ],
}
ACUTE = [
    "Op dit moment staan er ongeveer {n} demonstranten voor het gemeentehuis in {plaats} en de sfeer wordt grimmig.",
    "Er wordt met vuurwerk gegooid en de ME is onderweg; kunt u vandaag nog iemand laten bellen?",
    "De burgemeester wil dringend advies, vanavond is er een raadsvergadering en er dreigt een bestorming.",
    "Wij vragen met spoed om ondersteuning, de situatie escaleert en er zijn al ruiten ingegooid.",
]
CLOSING = ["Met vriendelijke groet,", "Hartelijke groet,", "Groet,", "Vriendelijke groeten,"]
ROLES = ["OOV-adviseur", "beleidsmedewerker", "communicatieadviseur", "burgemeester", "teamleider veiligheid"]
MONTHS = ["januari", "februari", "maart", "april", "mei", "juni", "september", "oktober", "november"]
DAYS = ["maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag"]
ATTACHMENT = random.Random(7).randbytes(200 * 1024)


def _fill(rng: random.Random, s: str) -> str:
    return s.format(maand=rng.choice(MONTHS), plaats=rng.choice(TOWNS), n=rng.randint(20, 900), dag=rng.choice(DAYS))


def _paragraphs(rng: random.Random, pool: list[str], target: int) -> str:
    out: list[str] = []
    size = 0
    while size < target:
        para = " ".join(_fill(rng, rng.choice(pool)) for _ in range(rng.randint(3, 6)))
        out.append(para)
        size += len(para) + 2
    return "\n\n".join(out)


def make_mail(i: int, rng: random.Random, *, acute: bool, attachment: bool, tag: str = "bench") -> bytes:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = f"{first}.{last}".lower().replace(" ", "")
    sender = f"{local}{i}@gemeente-{rng.choice(TOWNS).lower()}.nl"
    topic = rng.choice(list(TOPICS))
    target = rng.randint(1500, 18000)
    if acute:
        body = _paragraphs(rng, ACUTE, min(target, 1200))
        subject = f"Spoed: demonstratie in {rng.choice(TOWNS)}"
    else:
        body = _paragraphs(rng, TOPICS[topic], int(target * 0.7))
        subject = f"Vraag over {topic} ({rng.choice(TOWNS)})"
    quoted = "\n".join("> " + line for line in _paragraphs(rng, TOPICS[topic], int(target * 0.3)).splitlines())
    text = (
        f"Beste collega's,\n\n{body}\n\n{rng.choice(CLOSING)}\n{first} {last}\n{rng.choice(ROLES)}\n\n"
        f"Op {rng.choice(DAYS)} schreef Omo <Omo@minbzk.nl>:\n{quoted}\n"
    )
    msg = EmailMessage()
    msg["From"] = f"{first} {last} <{sender}>"
    msg["To"] = "Omo@minbzk.nl"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 2, 8, 0, tzinfo=UTC) + timedelta(minutes=i))
    msg["Message-ID"] = f"<{tag}-{i}-{rng.getrandbits(32):08x}@gemeente.example>"
    msg.set_content(text, cte="quoted-printable")
    if rng.random() < 0.4:
        html = "<html><body>" + "".join(f"<p>{p}</p>" for p in text.split("\n\n")) + "</body></html>"
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    if attachment:
        msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename=f"verslag-{i}.pdf")
    return msg.as_bytes(policy=SMTP)


def backlog(n: int, *, seed: int = 42, acute_every: int = 20) -> list[bytes]:
    """``n`` mails: every ``acute_every``-th acute, every 100th with a 200 KB attachment."""
    rng = random.Random(seed)
    return [make_mail(i, rng, acute=i % acute_every == 7, attachment=i % 100 == 99) for i in range(n)]


def acute_mail(i: int, *, tag: str) -> tuple[bytes, str]:
    """One short acute mail from its own sender (so no per-sender limit applies); returns (raw, Message-ID)."""
    rng = random.Random(1000 + i)
    raw = make_mail(i, rng, acute=True, attachment=False, tag=tag)
    start = raw.index(b"Message-ID: ") + len(b"Message-ID: ")
    return raw, raw[start : raw.index(b"\r\n", start)].decode()
