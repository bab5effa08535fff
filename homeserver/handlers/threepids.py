"""ThreepidHandler: email addresses bound to accounts (C-S API "Adding Account Administrative
Contact Information"). The homeserver validates an address itself: requestToken mails a
random token to it, which comes back through the link in the mail or the submit_url (with
the Identity Service API's submitToken parameters and errors); /account/3pid/add then binds
the validated address, behind user-interactive auth. No identity server is ever contacted."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from homeserver.clock import Clock
from homeserver.config import EmailConfig
from homeserver.errors import Codes, InvalidParam, MatrixError
from homeserver.identifiers import canonical_email
from homeserver.push.email_pusher import EMAIL_APP_ID
from homeserver.push.mailer import Mailer, MailerError, new_message
from homeserver.push.pusher_pool import PusherPool
from homeserver.ratelimit import RateLimiter
from homeserver.storage.stores.threepids import (
    MEDIUM_EMAIL,
    Threepid,
    ThreepidsStore,
    ValidationSession,
)

logger = logging.getLogger(__name__)

MEDIUMS = (MEDIUM_EMAIL, "msisdn")
# request_email_validation.yaml: client_secret grammar.
_CLIENT_SECRET_RE = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
# The next_link becomes a Location header: no spaces or control characters.
_URL_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f]")
# Identity Service API "Establishing associations": a session can be validated, and its
# validation used, within 24 hours of its last change.
SESSION_LIFETIME_MS = 24 * 3600 * 1000
# Where the mailed link and the submit_url point (Synapse serves the same path).
SUBMIT_TOKEN_PATH = "_matrix/client/unstable/add_threepid/email/submit_token"
MAX_NEXT_LINK_CHARS = 2048
# Canonical JSON's integer range: a send_attempt the database stores whatever its engine.
MAX_SEND_ATTEMPT = 2**53 - 1

# The m.login.password stage of user-interactive auth (DeviceHandler.require_password):
# (user_id, auth, purpose) -> the user authenticated.
PasswordCheck = Callable[[str, Mapping[str, Any] | None, str], Awaitable[str]]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_medium(medium: str) -> None:
    if medium not in MEDIUMS:
        raise InvalidParam(f"medium must be one of {', '.join(MEDIUMS)}")


def check_client_secret(client_secret: str) -> None:
    if _CLIENT_SECRET_RE.fullmatch(client_secret) is None:
        raise InvalidParam("client_secret must be 1 to 255 of the characters [0-9a-zA-Z.=_-]")


class ThreepidHandler:
    def __init__(
        self,
        store: ThreepidsStore,
        pushers: PusherPool,
        clock: Clock,
        server_name: str,
        public_baseurl: str | None,
        email: EmailConfig | None,
        mailer: Mailer | None,
        limiter: RateLimiter,
        require_password: PasswordCheck,
    ) -> None:
        self.store = store
        self.pushers = pushers
        self.clock = clock
        self.server_name = server_name
        self.email = email
        self.mailer = mailer
        self.limiter = limiter
        self.require_password = require_password
        # The mailed link goes to a configured address, never to one taken from the request's
        # Host header, which whoever asks for the mail controls. The config documents
        # https://<server_name>/ as the default.
        self.submit_url = (public_baseurl or f"https://{server_name}/") + SUBMIT_TOKEN_PATH

    @property
    def can_add_email(self) -> bool:
        """Addresses can be validated, so added: the m.3pid_changes capability."""
        return self.email is not None and self.mailer is not None

    async def request_email_token(
        self,
        client_secret: str,
        email: str,
        send_attempt: int,
        next_link: str | None,
        client_ip: str,
    ) -> str:
        """POST /account/3pid/email/requestToken: mail a token to the address unless this
        send_attempt was mailed already for the client secret and address; returns the
        session ID."""
        if self.email is None or self.mailer is None:
            raise MatrixError(
                "Adding an email address to your account is disabled on this server",
                Codes.THREEPID_MEDIUM_NOT_SUPPORTED,
            )
        check_client_secret(client_secret)
        address = canonical_email(email)
        if address is None:
            raise InvalidParam("email must be an email address such as alice@example.org")
        if abs(send_attempt) > MAX_SEND_ATTEMPT:
            raise InvalidParam("send_attempt is out of range")
        if next_link is not None:
            parts = urlsplit(next_link)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or len(next_link) > MAX_NEXT_LINK_CHARS
                or _URL_UNSAFE_RE.search(next_link) is not None
            ):
                raise InvalidParam("next_link must be an http or https URL")
        # Anyone may ask, without an access token: both the asker and the mailbox are
        # limited, so nobody gets this server to flood an address.
        self.limiter.check(f"ip:{client_ip}")
        self.limiter.check(f"{MEDIUM_EMAIL}:{address}")
        if await self.store.get_owner(MEDIUM_EMAIL, address) is not None:
            raise MatrixError("This email address is already in use", Codes.THREEPID_IN_USE)
        now = self.clock.time_ms()
        expired_up_to = now - SESSION_LIFETIME_MS
        session = await self.store.find_pending_session(
            client_secret, MEDIUM_EMAIL, address, expired_up_to
        )
        # request_email_validation.yaml: only a send_attempt above the last one seen for
        # this client secret and address sends another email.
        if session is not None and send_attempt <= session.last_send_attempt:
            return session.session_id
        session_id = session.session_id if session is not None else secrets.token_urlsafe(16)
        token = secrets.token_urlsafe(24)
        await self._send(address, session_id, client_secret, token, now)
        if session is None:
            new = ValidationSession(
                session_id, MEDIUM_EMAIL, address, client_secret, send_attempt, next_link, now, None
            )
            await self.store.start_session(new, _token_hash(token), expired_up_to)
        else:
            await self.store.session_resent(session_id, send_attempt, _token_hash(token), now)
        return session_id

    async def _send(
        self, address: str, session_id: str, client_secret: str, token: str, now: int
    ) -> None:
        assert self.email is not None and self.mailer is not None
        query = urlencode({"token": token, "client_secret": client_secret, "sid": session_id})
        app = " ".join(self.email.app_name.split())
        message = new_message(self.email, address, f"[{app}] Confirm your email address", now)
        message.set_content(
            f"Someone, probably you, asked to add this email address to a Matrix account on"
            f" {app} ({self.server_name}).\n\n"
            f"To confirm, open this link:\n{self.submit_url}?{query}\n\n"
            f"or enter this code where your Matrix client asks for it:\n{token}\n\n"
            "The link and the code work for 24 hours. If you did not ask for this, ignore"
            " this email: without them the address is not added.\n"
        )
        try:
            await self.mailer.send(message)
        except MailerError as e:
            logger.warning("address validation email not sent session=%s: %s", session_id, e)
            raise MatrixError(
                "The validation email could not be sent; try again later", Codes.UNKNOWN
            ) from None
        logger.info("address validation email sent session=%s", session_id)

    async def submit_token(self, session_id: str, client_secret: str, token: str) -> str | None:
        """The submit_url and the mailed link: mark the session's address validated.
        Returns the next_link given at requestToken, if any."""
        check_client_secret(client_secret)
        session = await self.store.get_session(session_id)
        if session is None or not hmac.compare_digest(
            session.client_secret.encode(), client_secret.encode()
        ):
            raise MatrixError(
                "No validation session matches this sid and client_secret",
                Codes.NO_VALID_SESSION,
            )
        now = self.clock.time_ms()
        if session.modified_ts + SESSION_LIFETIME_MS <= now:
            raise MatrixError(
                "The validation session has expired: request a new token",
                Codes.SESSION_EXPIRED,
            )
        offered = _token_hash(token)
        hashes = await self.store.get_token_hashes(session_id)
        if not any(hmac.compare_digest(offered, h) for h in hashes):
            raise MatrixError("The token is incorrect", Codes.TOKEN_INCORRECT)
        await self.store.mark_validated(session_id, now)
        logger.info("address validated session=%s", session_id)
        return session.next_link

    async def add_threepid(
        self, user_id: str, session_id: str, client_secret: str, auth: Mapping[str, Any] | None
    ) -> None:
        """POST /account/3pid/add: bind the session's validated address to the user."""
        check_client_secret(client_secret)
        await self.require_password(user_id, auth, "add_threepid")
        session = await self.store.get_session(session_id)
        now = self.clock.time_ms()
        if (
            session is None
            or not hmac.compare_digest(session.client_secret.encode(), client_secret.encode())
            or session.validated_ts is None
            or session.modified_ts + SESSION_LIFETIME_MS <= now
        ):
            raise MatrixError("No validated 3pid session found", Codes.THREEPID_AUTH_FAILED)
        owner = await self.store.add_threepid(
            user_id, session.medium, session.address, session.validated_ts, now
        )
        if owner != user_id:
            raise MatrixError("This email address is already in use", Codes.THREEPID_IN_USE)
        logger.info("3pid added user_id=%s medium=%s", user_id, session.medium)

    async def get_threepids(self, user_id: str) -> list[Threepid]:
        return await self.store.get_threepids(user_id)

    async def delete_threepid(self, user_id: str, medium: str, address: str) -> None:
        """POST /account/3pid/delete: unbind the address (nothing happens if it was not
        bound to the user) and stop the email pushers that mailed it."""
        check_medium(medium)
        if medium == MEDIUM_EMAIL:
            address = canonical_email(address) or address
        if await self.store.delete_threepid(user_id, medium, address):
            logger.info("3pid deleted user_id=%s medium=%s", user_id, medium)
            if medium == MEDIUM_EMAIL:
                await self.pushers.pusher_removed(user_id, EMAIL_APP_ID, address)
