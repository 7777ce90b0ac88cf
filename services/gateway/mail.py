"""Outgoing mail: invitations to invitees and notices to admins, over SMTP (aiosmtplib) or, in
dev mode, as .eml files in a folder. A message is built here from its parts; whatever secret it
carries (an invitation's setup token) is never logged: log lines name the recipient's domain only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import aiosmtplib
import structlog

from .settings import GatewaySettings

log = structlog.get_logger("strongroom.gateway.mail")


class MailNotSent(Exception):
    """The message did not reach the mail server (or folder); the caller keeps what it must re-send."""


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str

    def __repr__(self) -> str:  # the body may carry a setup token
        return f"Mail(to={self.to!r}, subject={self.subject!r})"


class Mailer:
    """Sends a `Mail` or raises `MailNotSent`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._s = settings

    @property
    def transport(self) -> str:
        return "smtp" if self._s.smtp_host else "folder" if self._s.mail_folder else "none"

    def _message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self._s.mail_from, mail.to, mail.subject
        msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid(domain="strongroom")
        msg.set_content(mail.body)
        return msg

    async def send(self, mail: Mail) -> None:
        msg = self._message(mail)
        domain = mail.to.rsplit("@", 1)[-1]
        try:
            if self._s.smtp_host:
                await self._smtp(msg)
            elif self._s.mail_folder:
                await asyncio.to_thread(self._to_folder, msg)
            else:
                raise MailNotSent("no mail transport configured (STRONGROOM_GATEWAY_SMTP_HOST or _MAIL_FOLDER)")
        except MailNotSent:
            log.warning("mail_not_sent", to_domain=domain, reason="no transport")
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("mail_not_sent", to_domain=domain, transport=self.transport, error=type(exc).__name__)
            raise MailNotSent(f"the mail server did not take the message ({type(exc).__name__})") from exc
        log.info("mail_sent", to_domain=domain, transport=self.transport)

    async def _smtp(self, msg: EmailMessage) -> None:
        s = self._s
        await aiosmtplib.send(
            msg, hostname=s.smtp_host, port=s.smtp_port, use_tls=s.smtp_tls, start_tls=s.smtp_starttls and not s.smtp_tls,
            username=s.smtp_username, password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_seconds)

    def _to_folder(self, msg: EmailMessage) -> None:
        folder = Path(self._s.mail_folder or ".")
        folder.mkdir(parents=True, exist_ok=True)
        name = msg["Message-ID"].strip("<>").replace("@", "_").replace("/", "_")
        path = folder / f"{name}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(msg))
        tmp.chmod(0o600)  # an invitation carries a setup token
        tmp.replace(path)
