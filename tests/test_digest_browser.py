"""What a contact person sees: the sample digest rendered by headless Chromium.

The bundled sample mailbox (plus one hostile mail) goes through the service
with the sample roster; Anna's digest is opened in Debian's chromium
(installed when missing, as for Dovecot), screenshotted, and its DOM dumped
to check what is on screen: her case references, the unassigned queue, the
acute list, and a ``<script>`` payload from a mail shown as text, never run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from omo_mailbot.digest import DigestBuilder
from omo_mailbot.models import Case
from omo_mailbot.service import build_calendar, build_service, load_roster_and_routing
from omo_mailbot.templating import Templates

from . import mails
from .rosterkit import TUESDAY, FixedClock

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ANNA = "anna.devries@minbzk.example"
PAYLOAD = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def ensure_chromium() -> str:
    if not Path(CHROMIUM).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
            check=False,
            env=env,
            capture_output=True,
            timeout=900,
        )
    if not Path(CHROMIUM).exists():
        raise RuntimeError("chromium is not installed and could not be installed (apt-get install chromium)")
    return CHROMIUM


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        ensure_chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def render_sample_digest(tmp_path: Path, make_config) -> tuple[Path, dict[str, list[str]]]:
    """Run the sample mailbox (plus a hostile mail) through the service; write Anna's digest as HTML."""
    maildir = tmp_path / "mailbox"
    shutil.copytree(ROOT / "sample" / "mailbox", maildir)
    hostile = mails.make_mail(
        f"Over het windpark: {PAYLOAD}", subject=f"Windpark {PAYLOAD}", sender="x@gemeente-voorbeeld.nl"
    )
    (maildir / "new" / "99.sample").write_bytes(hostile)
    roster_dir = ROOT / "roster"
    extra = (
        f'[source]\nkind = "maildir"\nmaildir = "{maildir}"\n'
        f'[delivery]\nkind = "files"\noutdir = "{tmp_path / "out"}"\n'
        f'[roster]\nroster_file = "{roster_dir / "roster.toml"}"\nrouting_file = "{roster_dir / "routing.toml"}"\n'
    )
    cfg = make_config(extra=extra)
    service, engine = build_service(cfg, clock=FixedClock(TUESDAY))
    service.run_once()
    roster, _ = load_roster_and_routing(cfg)
    assert roster is not None
    builder = DigestBuilder(cfg, Templates(cfg.resolve(cfg.paths.templates_dir)), build_calendar(cfg), roster)
    person = roster.person(ANNA)
    assert person is not None
    with service.sessions() as s:
        context = builder.context(s, person, TUESDAY)
        html, _ = builder.render(context)
        cases = list(s.scalars(select(Case)))
    engine.dispose()
    page = tmp_path / "digest.html"
    page.write_text(html, encoding="utf-8")
    refs = {
        "mine": [c.reference for c in cases if c.assignee == ANNA and c.status != "closed"],
        "unassigned": [c.reference for c in cases if c.assignee is None],
        "acute": [c.reference for c in cases if c.label == "acute"],
    }
    return page, refs


def test_a_person_sees_their_cases_the_queue_and_payloads_as_text(tmp_path, make_config):
    page, refs = render_sample_digest(tmp_path, make_config)
    assert refs["mine"] and refs["unassigned"]
    shot = tmp_path / "digest.png"
    result = chromium(tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = chromium(tmp_path / "profile-2", "--dump-dom", page.as_uri()).stdout
    assert "Omo-digest voor Anna de Vries" in dom
    mine = dom[dom.index("Uw zaken") : dom.index("Niet toegewezen (")]
    assert all(ref in mine for ref in refs["mine"])
    queue = dom[dom.index("Niet toegewezen (") : dom.index("Acute mails")]
    assert all(ref in queue for ref in refs["unassigned"])
    acute = dom[dom.index("Acute mails") : dom.index("Blijven liggen")]
    assert all(ref in acute for ref in refs["acute"])
    # the payload arrived as text: escaped in the DOM, no script element, no handler ran
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "<script" not in dom and "<img" not in dom
    assert "<title>Omo-digest" in dom and "pwned</title>" not in dom
