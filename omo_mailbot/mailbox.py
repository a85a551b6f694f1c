"""Where mail comes from: the IMAP mailbox (the only importer of imapclient), or a local Maildir.

Failure taxonomy at this boundary (after Home Assistant's imap integration):
network trouble, BYE and timeouts raise :class:`TransientMailboxError` (back off,
reconnect); a refused login raises :class:`AuthenticationFailed` (bounded
retries, then stop); a folder that does not exist raises :class:`FolderMissing`
(a configuration error).

Reading never changes the mail: ``BODY.PEEK[]`` leaves ``\\Seen`` alone. The only
change is :meth:`mark_processed`, which the caller invokes *after* its database
commit: an IMAP keyword, or a MOVE to a configured folder. Nothing is deleted.
"""

from __future__ import annotations

import contextlib
import logging
import mailbox as std_mailbox
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import ImapConfig
from .errors import AuthenticationFailed, FolderMissing, TransientMailboxError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedMail:
    uid: int
    raw: bytes
    size: int
    too_large: bool = False
    bodystructure: str = ""


class MailSource(Protocol):
    name: str

    def open(self) -> int: ...
    def uids_after(self, last_uid: int) -> list[int]: ...
    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMail]: ...
    def mark_processed(self, uids: Sequence[int]) -> None: ...
    def unmarked_upto(self, last_uid: int) -> list[int]: ...
    def wait_for_mail(self, timeout: float, stop: threading.Event) -> bool: ...
    def close(self) -> None: ...


TokenProvider = Callable[[], str]


class ImapSource:
    """One IMAP connection to one folder. Not thread-safe: one per thread."""

    def __init__(self, cfg: ImapConfig, *, token_provider: TokenProvider | None = None) -> None:
        self.cfg = cfg
        self.name = f"imap:{cfg.username}@{cfg.host}:{cfg.port}/{cfg.folder}"
        self._token_provider = token_provider
        self._client: Any = None
        self._idle_capable = False
        self._keywords_ok = True
        self.max_bytes = int(cfg.max_message_mb * 1024 * 1024)

    # -- connection ---------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cfg.ca_file or None)

    def open(self) -> int:
        """Connect, log in, select the folder; return its UIDVALIDITY."""
        import imapclient
        from imapclient.exceptions import LoginError

        self.close()
        timeout = imapclient.SocketTimeout(connect=self.cfg.connect_timeout_seconds, read=self.cfg.read_timeout_seconds)
        try:
            client = imapclient.IMAPClient(
                self.cfg.host,
                port=self.cfg.port,
                ssl=self.cfg.security == "ssl",
                ssl_context=self._ssl_context() if self.cfg.security == "ssl" else None,
                timeout=timeout,
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransientMailboxError(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}") from None
        self._client = client
        try:
            try:
                sock = client.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
            if self.cfg.security == "starttls":
                client.starttls(self._ssl_context())
            if self.cfg.auth == "xoauth2":
                if self._token_provider is None:
                    raise AuthenticationFailed("imap.auth is xoauth2 but no [oauth] token source is configured")
                client.oauth2_login(self.cfg.username, self._token_provider())
            else:
                client.login(self.cfg.username, self.cfg.password())
        except LoginError as exc:
            self.close()
            raise AuthenticationFailed(f"login refused for the configured imap.username: {_short(exc)}") from None
        except AuthenticationFailed:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise TransientMailboxError(f"IMAP session setup failed: {_short(exc)}") from None
        return self._select()

    def _select(self) -> int:
        from imapclient.exceptions import IMAPClientError

        client = self._client
        try:
            info = client.select_folder(self.cfg.folder)
        except IMAPClientError as exc:
            if not client.folder_exists(self.cfg.folder):
                raise FolderMissing(
                    f"imap.folder: the folder {self.cfg.folder!r} does not exist on the server"
                ) from None
            raise TransientMailboxError(f"SELECT failed: {_short(exc)}") from None
        except Exception as exc:
            raise TransientMailboxError(f"SELECT failed: {_short(exc)}") from None
        self._idle_capable = self.cfg.use_idle and client.has_capability("IDLE")
        flags = [f.decode() if isinstance(f, bytes) else str(f) for f in info.get(b"PERMANENTFLAGS", ())]
        self._keywords_ok = "\\*" in flags
        if self.cfg.move_to and not client.folder_exists(self.cfg.move_to):
            raise FolderMissing(f"imap.move_to: the folder {self.cfg.move_to!r} does not exist on the server")
        if self.cfg.move_to and not client.has_capability("MOVE"):
            # without MOVE every marking would fail and the service would reconnect for ever
            raise FolderMissing(
                "imap.move_to: the server does not offer MOVE (RFC 6851); leave move_to empty to mark "
                "processed mail with imap.processed_keyword instead"
            )
        return int(info[b"UIDVALIDITY"])

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``IMAPClient.<method>``; every failure becomes a TransientMailboxError."""
        if self._client is None:
            raise TransientMailboxError("not connected")
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except (OSError, ssl.SSLError) as exc:
            raise TransientMailboxError(f"{what}: connection lost: {_short(exc)}") from None
        except Exception as exc:
            raise TransientMailboxError(f"{what} failed: {_short(exc)}") from None

    # -- reading ------------------------------------------------------------
    def uids_after(self, last_uid: int) -> list[int]:
        # "UID n:*" always matches the highest UID, even below n: filter ourselves.
        found = self._call("UID SEARCH", "search", ["UID", f"{last_uid + 1}:*"])
        return sorted(int(u) for u in found if int(u) > last_uid)

    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMail]:
        batch = max(1, self.cfg.batch_size)
        for start in range(0, len(uids), batch):
            chunk = list(uids[start : start + batch])
            sizes, bodies, heads = self._read(chunk)
            unread = self._unread([u for u in chunk if u not in bodies and u not in heads], sizes, bodies, heads)
            for uid in chunk:
                if uid in bodies:
                    raw = bodies[uid].get(b"BODY[]") or b""
                    yield FetchedMail(uid, bytes(raw), len(raw))
                elif uid in heads:
                    head = bytes(heads[uid].get(b"BODY[HEADER]") or b"")
                    yield FetchedMail(
                        uid,
                        head,
                        int(sizes[uid][b"RFC822.SIZE"]),
                        too_large=True,
                        bodystructure=repr(heads[uid].get(b"BODYSTRUCTURE"))[:4000],
                    )
                elif uid in unread:
                    # It exists but the server gives no bytes: stored empty, it becomes an error case a
                    # human sees (the pipeline keys an empty body by its place), instead of being passed over.
                    log.warning(
                        "the server returns no message for an existing UID; a human must look", extra={"uid": uid}
                    )
                    yield FetchedMail(uid, b"", 0)
                else:  # expunged by another client between SEARCH and FETCH: nothing left to read
                    log.info("a mail was expunged before it could be read", extra={"uid": uid})

    def _read(self, uids: list[int]) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
        """One look at ``uids``: their sizes, the whole message of those within the size limit, and the
        header and structure of the others. A UID the server leaves out is in none of the three."""
        sizes = self._call("FETCH RFC822.SIZE", "fetch", uids, ["RFC822.SIZE"])
        small = [u for u in uids if u in sizes and int(sizes[u].get(b"RFC822.SIZE", 0)) <= self.max_bytes]
        large = [u for u in uids if u in sizes and u not in small]
        bodies = self._call("FETCH BODY.PEEK[]", "fetch", small, ["BODY.PEEK[]"]) if small else {}
        heads = self._call("FETCH HEADER", "fetch", large, ["BODY.PEEK[HEADER]", "BODYSTRUCTURE"]) if large else {}
        return sizes, bodies, heads

    def _unread(
        self, missing: list[int], sizes: dict[int, Any], bodies: dict[int, Any], heads: dict[int, Any]
    ) -> set[int]:
        """Of the UIDs a FETCH skipped, read what it can once more (into ``sizes``, ``bodies`` and
        ``heads``, as the first look did), and return those that still exist on the server but gave no
        message. What no longer exists was expunged."""
        if not missing:
            return set()
        for seen, more in zip((sizes, bodies, heads), self._read(missing), strict=True):
            seen.update(more)
        left = [u for u in missing if u not in bodies and u not in heads]
        if not left:
            return set()
        found = self._call("UID SEARCH", "search", ["UID", ",".join(str(u) for u in left)])
        return {int(u) for u in found} & set(left)

    def mark_processed(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        if self.cfg.move_to:
            self._call("MOVE", "move", list(uids), self.cfg.move_to)
        elif self._keywords_ok and self.cfg.processed_keyword:
            self._call("STORE", "add_flags", list(uids), [self.cfg.processed_keyword], silent=True)

    def unmarked_upto(self, last_uid: int) -> list[int]:
        """Mail up to ``last_uid`` (already committed) that a crash or an outage left unmarked."""
        if last_uid <= 0:
            return []
        if self.cfg.move_to:
            found = self._call("UID SEARCH", "search", ["UID", f"1:{last_uid}"])
        elif self._keywords_ok and self.cfg.processed_keyword:
            found = self._call(
                "UID SEARCH", "search", ["UNKEYWORD", self.cfg.processed_keyword, "UID", f"1:{last_uid}"]
            )
        else:
            return []
        return sorted(int(u) for u in found if int(u) <= last_uid)

    def wait_for_mail(self, timeout: float, stop: threading.Event) -> bool:
        """Block until the server reports new mail, ``timeout`` passes or ``stop`` is set.

        With IDLE the wait is cut into one-second slices so that a stop request is
        honoured quickly; any error means the connection is gone.
        """
        if not self._idle_capable:  # IDLE switched off, or not offered: poll at the polling interval
            stop.wait(min(timeout, float(self.cfg.poll_interval_seconds)))
            self._call("NOOP", "noop")
            return False
        # Mail that arrived since the last command may not be announced once IDLE has
        # started (seen with Dovecot: a MULTIAPPEND committing during SEARCH -> IDLE).
        _, pending = self._call("NOOP", "noop")
        if _announces_mail(pending):
            return True
        self._call("IDLE", "idle")
        woke = False
        try:
            remaining = timeout
            while remaining > 0 and not stop.is_set():
                step = min(1.0, remaining)
                responses = self._call("IDLE wait", "idle_check", timeout=step)
                remaining -= step
                if _announces_mail(responses):
                    woke = True
                    break
        finally:
            self._call("DONE", "idle_done")
        # idle_check hides a dead socket as "nothing happened"; a NOOP does not.
        self._call("NOOP", "noop")
        return woke


def _announces_mail(responses: Any) -> bool:
    return any(isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses or ())


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ")
    return f"{type(exc).__name__}: {text[:200]}"


class MaildirSource:
    """A read-only local Maildir (the bundled sample). UIDs follow sorted file names;
    marking changes nothing on disk, the database remembers what was done."""

    def __init__(self, path: Path, *, max_bytes: int = 25 * 1024 * 1024) -> None:
        self.path = path
        self.name = f"maildir:{path.resolve()}"
        self.max_bytes = max_bytes
        self._keys: list[str] = []

    def open(self) -> int:
        if not (self.path / "new").is_dir() and not (self.path / "cur").is_dir():
            raise FolderMissing(f"source.maildir: {self.path} is not a Maildir (no new/ or cur/)")
        box = std_mailbox.Maildir(str(self.path), create=False)
        self._box = box
        self._keys = sorted(box.keys())
        return zlib.crc32(str(self.path.resolve()).encode()) & 0x7FFFFFFF or 1

    def uids_after(self, last_uid: int) -> list[int]:
        return [i for i in range(1, len(self._keys) + 1) if i > last_uid]

    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMail]:
        for uid in uids:
            try:
                raw = self._box.get_bytes(self._keys[uid - 1])
            except (KeyError, OSError):
                continue  # removed since open(): gone, like an expunged IMAP message
            if len(raw) > self.max_bytes:
                head = raw.split(b"\n\n", 1)[0]
                yield FetchedMail(uid, head, len(raw), too_large=True)
            else:
                yield FetchedMail(uid, raw, len(raw))

    def mark_processed(self, uids: Sequence[int]) -> None:
        return None

    def unmarked_upto(self, last_uid: int) -> list[int]:
        return []

    def wait_for_mail(self, timeout: float, stop: threading.Event) -> bool:
        stop.wait(timeout)
        return False

    def close(self) -> None:
        return None
