"""What every inbound federation endpoint shares: the FederationServer the app holds, and
reading a request's body and origin (S-S API "Request Authentication")."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aiohttp import web

from federation.auth import RequestAuthenticator
from federation.inbound.invites import InviteHandler
from federation.inbound.joins import JoinHandler
from federation.inbound.media import FederationMedia
from federation.inbound.queries import QueryHandler
from federation.inbound.reads import FederationReads
from federation.inbound.transactions import TransactionHandler
from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.e2e_keys import E2eKeysHandler
from homeserver.handlers.hierarchy import HierarchyHandler
from homeserver.handlers.openid import OpenIdTokens
from homeserver.handlers.public_rooms import PublicRoomsHandler

# A transaction of 50 PDUs of up to 64 KiB each and 100 EDUs is several megabytes: more than
# a client request may be, so federation reads its bodies with a limit of its own.
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class FederationServer:
    server_name: str
    clock: Clock
    authenticator: RequestAuthenticator
    transactions: TransactionHandler
    joins: JoinHandler
    queries: QueryHandler
    invites: InviteHandler
    reads: FederationReads
    e2e_keys: E2eKeysHandler
    # Told of every server that makes an authenticated request: it is up (the sender then
    # retries it at once instead of waiting out a back-off).
    on_contact: Callable[[str], Awaitable[None]] | None = None
    # This server's media for other servers (None: no content repository, the endpoints are
    # unknown).
    media: FederationMedia | None = None
    # Exchanges OpenID tokens for user IDs (None: the endpoint is unknown).
    openid: OpenIdTokens | None = None
    # This server's published room directory (None: the endpoints are unknown).
    public_rooms: PublicRoomsHandler | None = None
    # Space trees for other servers (None: the endpoint is unknown).
    hierarchy: HierarchyHandler | None = None


FEDERATION = web.AppKey("federation", FederationServer)


def federation_of(request: web.Request) -> FederationServer:
    return request.app[FEDERATION]


async def authenticated(request: web.Request) -> tuple[str, Any]:
    """The origin server of a signed request and its parsed JSON body (None if empty);
    401 M_UNAUTHORIZED unless an X-Matrix signature verifies."""
    body = await _read_body(request)
    content: Any = None
    if body.strip():
        try:
            content = json.loads(body)
        except (ValueError, UnicodeError, RecursionError):
            raise MatrixError("Content not JSON.", Codes.NOT_JSON) from None
    server = federation_of(request)
    origin = await server.authenticator.authenticate(
        request.method,
        request.raw_path,
        request.headers.getall("Authorization", []),
        content,
        server.clock.time_ms(),
    )
    if server.on_contact is not None:
        await server.on_contact(origin)
    return origin, content


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise MatrixError("Request too large", Codes.TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MatrixError("Request too large", Codes.TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def server_version() -> str:
    try:
        return metadata.version("homeserver")
    except metadata.PackageNotFoundError:
        return "unknown"
