"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, and binding an
email address to an account the way a client does (C-S API "Adding Account Administrative
Contact Information"): requestToken, the token from the mail, the submit_url, 3pid/add."""

from __future__ import annotations

import asyncio
import email
import re
import secrets
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.smtp import SMTP, Envelope, Session

from homeserver.config import EmailConfig
from tests.helpers.rest import V3, RestHelper, User

VALIDATION_SUBJECT = "Confirm your email address"
_LINK_RE = re.compile(r"https?://\S+/submit_token\?\S+")


@dataclass
class Mailbox:
    """What the SMTP server received: the envelope's recipients and the parsed message."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        for _ in range(int(timeout_s / 0.05)):
            if len(self.received) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.received)} emails arrived, expected {count}")

    def take_validation(self, address: str) -> EmailMessage:
        """Remove and return the newest address validation email sent to `address`."""
        for i in range(len(self.received) - 1, -1, -1):
            rcpt, message = self.received[i]
            if rcpt == [address] and VALIDATION_SUBJECT in str(message["Subject"]):
                del self.received[i]
                return message
        raise AssertionError(f"no validation email to {address}")


def email_config(smtp_port: int, **changes: Any) -> EmailConfig:
    """The `email:` section the tests use: plain SMTP to the test's server on 127.0.0.1."""
    return EmailConfig(
        notif_from="Test Chat <noreply@test.local>",
        enable_notifs=True,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        enable_tls=False,
        app_name="Test Chat",
        **changes,
    )


async def start_smtp(mailbox: Mailbox, port: int = 0) -> tuple[asyncio.Server, int]:
    # hostname given: aiosmtpd would otherwise look up this machine's FQDN.
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(mailbox, hostname="smtp.test"), "127.0.0.1", port
    )
    return server, server.sockets[0].getsockname()[1]


@dataclass(frozen=True)
class ValidationMail:
    token: str
    # The link's path and query, to open on the test server (the link names the configured
    # public_baseurl, not the test server's address).
    link_path: str
    link_query: dict[str, str]


def read_validation(message: EmailMessage) -> ValidationMail:
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    match = _LINK_RE.search(text)
    assert match is not None, text
    link = urlsplit(match.group(0))
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert f"\n{query['token']}\n" in text.replace("\r\n", "\n"), "the code is in the mail"
    return ValidationMail(query["token"], link.path, query)


async def request_token(
    rest: RestHelper, address: str, client_secret: str, send_attempt: int = 1, expect: int = 200
) -> Any:
    return await rest.request(
        "POST",
        f"{V3}/account/3pid/email/requestToken",
        body={"client_secret": client_secret, "email": address, "send_attempt": send_attempt},
        expect=expect,
    )


async def submit_token(
    rest: RestHelper, submit_url: str, sid: str, client_secret: str, token: str, expect: int = 200
) -> Any:
    return await rest.request(
        "POST",
        urlsplit(submit_url).path,
        body={"sid": sid, "client_secret": client_secret, "token": token},
        expect=expect,
    )


async def add_threepid(
    rest: RestHelper,
    user: User,
    sid: str,
    client_secret: str,
    password: str = "correct horse",
    expect: int = 200,
) -> Any:
    """POST /account/3pid/add through its password stage of user-interactive auth."""
    body = {"sid": sid, "client_secret": client_secret}
    first = await rest.request("POST", f"{V3}/account/3pid/add", user, body, 401)
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": password,
        "session": first["session"],
    }
    return await rest.request(
        "POST", f"{V3}/account/3pid/add", user, {**body, "auth": auth}, expect
    )


async def bind_email(rest: RestHelper, user: User, mailbox: Mailbox, address: str) -> None:
    """Bind `address` to `user` as a client does; the validation email is taken out of
    `mailbox`, so tests count only the emails they expect."""
    client_secret = secrets.token_urlsafe(12)
    count = len(mailbox.received)
    started = await request_token(rest, address, client_secret)
    await mailbox.wait_for(count + 1)
    mail = read_validation(mailbox.take_validation(address))
    await submit_token(rest, started["submit_url"], started["sid"], client_secret, mail.token)
    await add_threepid(rest, user, started["sid"], client_secret)
