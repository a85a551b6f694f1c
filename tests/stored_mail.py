"""A stored set of decided mail for the operator tests: a local Maildir run once through the pipeline."""

from __future__ import annotations

import mailbox
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omo_mailbot.config import Config
from omo_mailbot.service import build_service

from . import mails

ROOT = Path(__file__).resolve().parent.parent

WIND_PREPARATION = (
    "Beste mensen,\n\nVolgend jaar besluit de raad over een windpark aan de rand van het dorp. Kunnen jullie "
    "ons helpen met de voorbereiding van de informatieavond?\n\nGroet,\nSanne\n"
)
WIND_QUESTION = (
    "Goedemorgen,\n\nWie is mijn contactpersoon voor vragen over het windpark en de participatie? "
    "Graag advies over de communicatiestrategie.\n\nMet vriendelijke groet,\nKees\n"
)
AFTERMATH = (
    "Hallo,\n\nVorige maand was er een demonstratie bij het gemeentehuis. Het is weer rustig; we willen "
    "graag een evaluatie plannen met jullie.\n\nGroet,\nLotte\n"
)
ACUTE_WIND = (
    "Dringend!\n\nOp dit moment blokkeren 80 demonstranten de toegang tot het windpark, de sfeer is "
    "grimmig en er wordt met stenen gegooid. Kunt u vandaag nog bellen?\n\nMet spoed,\nPiet\n"
)


def stored_set() -> dict[str, bytes]:
    """Named test mails: two about a wind farm in preparation, one acute about it, others without it."""
    return {
        "acute": mails.acute(),
        "acute_wind": mails.make_mail(ACUTE_WIND, subject="Blokkade windpark", sender="piet@gemeente-a.nl"),
        "preparation": mails.preparation(),  # mentions a "windpark" too
        "wind_preparation": mails.make_mail(WIND_PREPARATION, subject="Windpark", sender="sanne@gemeente-b.nl"),
        "wind_question": mails.make_mail(WIND_QUESTION, subject="Contactpersoon", sender="kees@gemeente-c.nl"),
        "aftermath": mails.make_mail(AFTERMATH, subject="Evaluatie", sender="lotte@gemeente-d.nl"),
        "out_of_office": mails.make_mail(
            "Ik ben afwezig tot maandag; windpark-vragen graag aan mijn collega.",
            subject="Automatisch antwoord: windpark",
            sender="afwezig@gemeente-e.nl",
            headers={"Auto-Submitted": "auto-replied"},
        ),
    }


def make_maildir(path: Path, raws: Sequence[bytes]) -> Path:
    box = mailbox.Maildir(str(path), create=True)
    for raw in raws:
        box.add(raw)
    box.close()
    return path


def maildir_config(make_config: Callable[..., Config], tmp_path: Path, box: Path, extra: str = "") -> Config:
    """A config reading ``box`` and writing outgoing mail as files; other keys as the fixtures set them."""
    text = (
        f'[source]\nkind = "maildir"\nmaildir = "{box}"\n'
        f'[delivery]\nkind = "files"\noutdir = "{tmp_path / "outgoing"}"\n' + extra
    )
    cfg: Config = make_config(extra=text)
    return cfg


def process_all(cfg: Config) -> None:
    service, engine = build_service(cfg)
    service.run_once()
    engine.dispose()


def copy_rules(tmp_path: Path, name: str = "candidate") -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "rules", target)
    return target


def message_ids(raws: dict[str, bytes]) -> dict[str, str]:
    """The Message-ID of each named mail."""
    import email

    out: dict[str, str] = {}
    for name, raw in raws.items():
        msg: Any = email.message_from_bytes(raw)
        out[name] = str(msg["Message-ID"]).strip()
    return out


def run_cli(args: Sequence[str]) -> int:
    """``omo-mailbot ARGS`` in-process, leaving the root logger as it was (the CLI points it at stderr)."""
    import logging

    from omo_mailbot import cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return cli.main(list(args))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
