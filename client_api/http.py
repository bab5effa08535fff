"""Request parsing shared by every client endpoint: JSON bodies, access tokens, path values."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from homeserver.core import Core
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import Requester

CORE: web.AppKey[Core] = web.AppKey("core", Core)


def core_of(request: web.Request) -> Core:
    return request.app[CORE]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: 400 M_NOT_JSON if it is not JSON, M_BAD_JSON if it
    is not an object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        # NaN and Infinity are not JSON (and would make every later /sync invalid JSON).
        body = json.loads(raw, parse_constant=_reject_constant)
        if b"\\u" in raw:
            # An escaped lone surrogate decodes to a str no encoder can write back.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise MatrixError("Content not JSON.", Codes.NOT_JSON) from None
    if not isinstance(body, dict):
        raise MatrixError("Content must be a JSON object.", Codes.BAD_JSON)
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def access_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise MatrixError("Invalid Authorization header.", Codes.MISSING_TOKEN)
    # Deprecated in the spec, still used by older clients and bots.
    return request.query.get("access_token")


async def requester(request: web.Request) -> Requester:
    """Who is asking, from the access token; records the device's last use (at most once a
    minute per device, so this costs no write per request)."""
    token = access_token(request)
    if token is None:
        raise MatrixError("Missing access token.", Codes.MISSING_TOKEN)
    core = core_of(request)
    who = await core.auth.requester_for_token(token)
    await core.devices.note_seen(who.user_id, who.device_id, client_ip(request))
    return who


def client_ip(request: web.Request) -> str:
    """The peer address. (Behind a reverse proxy this is the proxy; trusting
    X-Forwarded-For needs configuration that says which proxies to trust.)"""
    return request.remote or ""


def field(body: dict[str, Any], key: str, kind: type, *, required: bool = True) -> Any:
    """body[key], checked to be of `kind`: 400 M_MISSING_PARAM or M_INVALID_PARAM otherwise."""
    if key not in body or body[key] is None:
        if required:
            raise MatrixError(f"Missing parameter: {key}", Codes.MISSING_PARAM)
        return None
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MatrixError(f"Parameter {key} has the wrong type", Codes.INVALID_PARAM)
    return value


def ok(body: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    return web.json_response(body if body is not None else {}, status=status)
