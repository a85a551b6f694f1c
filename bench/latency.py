"""Acute latency: APPEND returned -> reply at the SMTP sink, for a floor script and for the service.

Both run in this process, as threads, like the sink: they share the GIL the
same way. Each trial appends one acute mail from a sender of its own and waits
for the reply that names its Message-ID.
"""

from __future__ import annotations

import random
import smtplib
import threading
import time
from email.message import EmailMessage
from typing import Any

from . import gen


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms), "min": min(ms)}


def trials(dovecot: Any, user: str, sink: Any, n: int, tag: str, timeout: float = 15.0) -> list[float]:
    """Append ``n`` acute mails one by one; milliseconds from APPEND returned to the reply at the sink."""
    client = dovecot.client(user)
    rng = random.Random(5)
    out: list[float] = []
    for i in range(n):
        raw, msgid = gen.acute_mail(i, tag=tag)
        needle = msgid.encode()
        client.append("INBOX", raw)
        appended = time.perf_counter()
        found: list[float] = []

        def match(messages: list[Any], needle: bytes = needle, found: list[float] = found) -> bool:
            for m in messages:
                if needle in m.content and b"auto-replied" in m.content:
                    found.append(m.at)
                    return True
            return False

        if not sink.wait_for(match, timeout):
            raise RuntimeError(f"{tag}: no reply to trial {i} within {timeout} s")
        out.append((found[0] - appended) * 1000)
        time.sleep(rng.uniform(0.05, 0.1))
    client.logout()
    return out


class FloorResponder:
    """The least an IDLE-driven responder must do: wake, fetch, parse, classify, send."""

    def __init__(self, port: int, user: str, password: str, sink_port: int, model: Any) -> None:
        self.port, self.user, self.password, self.sink_port, self.model = port, user, password, sink_port, model
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="floor", daemon=True)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    def _loop(self) -> None:
        import imapclient
        import mailparser

        from omo_mailbot.classifier import model_text

        client = imapclient.IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        client.select_folder("INBOX")
        last = max(client.search("ALL") or [0])
        smtp = smtplib.SMTP("127.0.0.1", self.sink_port, timeout=10)
        self.ready.set()
        while not self.stop.is_set():
            client.idle()
            woke = False
            while not woke and not self.stop.is_set():
                woke = any(len(r) >= 2 and r[1] == b"EXISTS" for r in client.idle_check(timeout=0.5))
            client.idle_done()
            uids = [u for u in client.search(["UID", f"{last + 1}:*"]) if u > last]
            if not uids:
                continue
            for uid, data in client.fetch(uids, ["BODY.PEEK[]"]).items():
                last = max(last, uid)
                mail = mailparser.parse_from_bytes(data[b"BODY[]"])
                text = "\n".join(mail.text_plain)
                p = self.model.acute_probability([model_text(mail.subject, text)])[0]
                reply = EmailMessage()
                reply["From"] = "Omo <Omo@minbzk.nl>"
                reply["To"] = mail.from_[0][1]
                reply["Subject"] = "Re: " + mail.subject
                reply["In-Reply-To"] = mail.message_id
                reply["Auto-Submitted"] = "auto-replied"
                reply.set_content(f"Uw melding is ontvangen (p={p:.2f}).\n" * 20)
                smtp.sendmail("", [mail.from_[0][1]], reply.as_bytes())
        smtp.quit()
        client.logout()

    def __enter__(self) -> FloorResponder:
        self.thread.start()
        self.ready.wait(30)
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
