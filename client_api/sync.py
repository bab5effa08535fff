"""GET /sync (C-S API "Syncing", sync.yaml): query parameters in, the handler's body out."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, ok, requester
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.sync import SyncConfig
from homeserver.streams import StreamToken

SET_PRESENCE = ("offline", "online", "unavailable")
# The longest a request waits, whatever the client asks: a reverse proxy would cut it anyway.
MAX_TIMEOUT_MS = 10 * 60 * 1000


def _bool_param(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise MatrixError(f"Query parameter {name} must be true or false", Codes.INVALID_PARAM)
    return value == "true"


def _timeout_ms(request: web.Request) -> int:
    value = request.query.get("timeout")
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit():
        raise MatrixError("Query parameter timeout must be an integer", Codes.INVALID_PARAM)
    return min(int(value), MAX_TIMEOUT_MS)


async def sync(request: web.Request) -> web.Response:
    who = await requester(request)
    core = core_of(request)
    query = request.query
    since = query.get("since")
    set_presence = query.get("set_presence", "online")
    if set_presence not in SET_PRESENCE:
        raise MatrixError(
            "set_presence must be one of " + ", ".join(SET_PRESENCE), Codes.INVALID_PARAM
        )
    config = SyncConfig(
        user_id=who.user_id,
        device_id=who.device_id,
        filter=await core.filters.filter_for_sync(who.user_id, query.get("filter")),
        since=StreamToken.parse(since) if since else None,
        full_state=_bool_param(request, "full_state"),
        timeout_ms=_timeout_ms(request),
        set_presence=set_presence,
    )
    return ok(await core.sync.sync(config))


def routes() -> list[web.RouteDef]:
    return [web.get("/_matrix/client/v3/sync", sync)]
