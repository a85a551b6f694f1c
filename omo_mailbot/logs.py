"""Logging: JSON lines in production, readable lines in a terminal.

Extra fields passed with ``extra={...}`` are rendered too. Policy (AVG/GDPR):
nothing at INFO or above may contain a mail body or an address; call sites log
database ids, Message-IDs, case references, rule symbols and timings only. Text
that comes from elsewhere (an SMTP server's refusal quotes the recipient, a
rejected roster names its addresses) is scrubbed on the way out: at INFO and
above every e-mail address in the message, the fields (but ``message_id``)
and a traceback is written as ``<address>``. DEBUG output keeps them, for a
developer's eyes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


_ADDRESS = re.compile(r"<?[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+>?")
_KEPT = frozenset({"message_id"})  # a Message-ID has an address's shape, but the log contract promises it


def scrub(value: Any) -> Any:
    """``value`` with every e-mail address in its strings (in lists and dicts too) replaced by ``<address>``."""
    if isinstance(value, str):
        return _ADDRESS.sub("<address>", value) if "@" in value else value
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    return value


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    if record.levelno < logging.INFO:
        return fields
    return {k: v if k in _KEPT else scrub(v) for k, v in fields.items()}


def _message(record: logging.LogRecord) -> str:
    text = record.getMessage()
    return text if record.levelno < logging.INFO else str(scrub(text))


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    text = formatter.formatException(record.exc_info) if record.exc_info else ""
    return text if record.levelno < logging.INFO else str(scrub(text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = _exception(self, record)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {_message(record)}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + _exception(self, record)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the record (test runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # libraries that would print message data at DEBUG stay quiet unless asked for
    for noisy in ("imapclient", "imapclient.imaplib", "alembic", "apscheduler", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # mail-parser warns for every MIME part type it does not render: noise, not news
    logging.getLogger("mailparser").setLevel(logging.ERROR)
