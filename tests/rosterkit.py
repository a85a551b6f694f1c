"""A small roster and routing for the tests, and helpers to run the service at a fixed moment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

ADA = "ada@bzk.example"
BOB = "bob@bzk.example"
CAS = "cas@jenv.example"
DEE = "dee@ngb.example"
PIKET = "piket@omo.example"
# Tuesday 1 December 2026, 10:00 in Amsterdam: a working day after the 08:00 digest time
TUESDAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

ROSTER = f"""
[[person]]
name = "Ada Bakker"
address = "{ADA}"
organisation = "BZK"
topics = ["energy"]
capacity = 2

[[person]]
name = "Bob de Wit"
address = "{BOB}"
organisation = "BZK"
topics = ["energy"]
capacity = 1

[[person]]
name = "Cas Jansen"
address = "{CAS}"
organisation = "JenV"
topics = ["threats"]
capacity = 5
absences = [{{ from = 2026-11-20, to = 2026-12-31, reason = "verlof" }}]

[[person]]
name = "Dee Smit"
address = "{DEE}"
organisation = "NGB"
capacity = 5

[duty]
fallback = "{PIKET}"

[[duty.shift]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "00:00"
persons = ["{CAS}", "{DEE}"]
"""

ROUTING = f"""
[[rule]]
symbol = "WIND"
description = "Wind farms"
words = ["windpark*", "windmolen*"]

[[rule]]
symbol = "THREAT"
description = "Threats against officials"
words = ["bedreig*", "intimidatie"]

[[rule]]
symbol = "AZC"
description = "Asylum seekers' centres"
words = ["azc"]

[[topic]]
name = "energy"
title = "Energie en windparken"
signals = ["WIND"]

[[topic]]
name = "threats"
title = "Bedreiging van ambtsdragers"
signals = ["THREAT"]
organisations = ["NGB"]

[[topic]]
name = "asylum"
title = "Asiel en nieuwkomers"
signals = ["AZC"]
persons = ["{CAS}"]
"""


def write_roster(directory: Path, roster: str = ROSTER, routing: str = ROUTING) -> str:
    """Write the two files and return the [roster] config section that points at them."""
    (directory / "roster.toml").write_text(roster)
    (directory / "routing.toml").write_text(routing)
    return f'[roster]\nroster_file = "{directory / "roster.toml"}"\nrouting_file = "{directory / "routing.toml"}"\n'


class FixedClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = TUESDAY) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


AUTH_OK = "mx.omo.test; dkim=pass header.d={domain} header.s=sel1; dmarc=pass (p=reject) header.from={domain}"
AUTH_FAIL = "mx.omo.test; dkim=fail (bad signature) header.d={domain}; dmarc=fail header.from={domain}"
