"""Mailer: hands an email to the configured SMTP server (RFC 5321) with aiosmtplib, the
transport of email notifications (email_pusher.py) and of address validation mails
(handlers/threepids.py)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Protocol

import aiosmtplib

from homeserver.config import EmailConfig

# A mail server that accepts the connection but never answers must not hold a pusher forever.
SMTP_TIMEOUT_S = 30.0


def new_message(config: EmailConfig, to: str, subject: str, now_ms: int) -> EmailMessage:
    """An email of this server's to `to`, with the headers all of them carry; the caller
    sets the content."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = config.notif_from
    message["To"] = to
    message["Date"] = formatdate(now_ms / 1000, usegmt=True)
    domain = parseaddr(config.notif_from)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    # RFC 3834: sent by a machine, so vacation responders stay quiet.
    message["Auto-Submitted"] = "auto-generated"
    return message


class MailerError(Exception):
    """The SMTP server could not be reached or refused the message: worth retrying."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` to its To address. Raises MailerError."""
        ...


class SmtpMailer:
    """One SMTP connection per email: digests are rare (minutes apart per user), so keeping
    a connection open would mostly hold an idle socket the server times out anyway."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        # aiosmtplib: True requires STARTTLS, None uses it when the server offers it, False
        # never; implicit TLS (force_tls) excludes STARTTLS.
        self._start_tls: bool | None
        if config.force_tls or not config.enable_tls:
            self._start_tls = False
        elif config.require_transport_security:
            self._start_tls = True
        else:
            self._start_tls = None

    async def send(self, message: EmailMessage) -> None:
        c = self.config
        try:
            await aiosmtplib.send(
                message,
                hostname=c.smtp_host,
                port=c.smtp_port,
                username=c.smtp_user,
                password=c.smtp_pass,
                use_tls=c.force_tls,
                start_tls=self._start_tls,
                timeout=SMTP_TIMEOUT_S,
            )
        except (aiosmtplib.SMTPException, OSError) as e:
            # Never the credentials: aiosmtplib's messages carry the server's reply only.
            raise MailerError(f"{type(e).__name__}: {e}") from e
