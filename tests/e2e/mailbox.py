"""A real SMTP receiver (aiosmtpd) for the e2e stack: the gateway sends invitations and admin
notices to it over SMTP, and tests read them the way an invitee reads their mail."""

from __future__ import annotations

import email
import re
import threading
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller

from shared.embedded_mongo import free_port

SETUP_TOKEN = re.compile(r"\b(sr_setup_[A-Za-z0-9_-]+)")


class Mailbox:
    """Every message the receiver took, with its envelope recipients."""

    def __init__(self) -> None:
        self._messages: list[tuple[tuple[str, ...], EmailMessage]] = []
        self._lock = threading.Lock()
        self.refusing = False  # a mail server that is down for mail: every message gets a 451
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refusing:
            return "451 Requested action aborted: local error in processing"
        message = email.message_from_bytes(envelope.content, policy=default)
        with self._lock:
            self._messages.append((tuple(r.lower() for r in envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for rcpt, m in self._messages if address.lower() in rcpt]

    def to_domain(self, domain: str) -> list[EmailMessage]:
        """Every message with a recipient at `domain` (whoever controls the domain reads them all)."""
        suffix = "@" + domain.lower()
        with self._lock:
            return [m for rcpt, m in self._messages if any(r.endswith(suffix) for r in rcpt)]

    def all(self) -> list[EmailMessage]:
        with self._lock:
            return [m for _, m in self._messages]

    def setup_token(self, address: str) -> str:
        """The setup token of the newest invitation sent to `address`."""
        for message in reversed(self.to(address)):
            found = SETUP_TOKEN.search(message.get_content())
            if found:
                return found.group(1)
        raise AssertionError(f"no invitation reached {address}")
