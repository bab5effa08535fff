"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy (C-S API "Spaces", "Discovering rooms
within spaces"): parses the query, the hierarchy handler walks the space."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, ok, requester
from homeserver.errors import InvalidParam


def _bool_param(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false")
    if value not in ("true", "false"):
        raise InvalidParam(f"{name} must be true or false")
    return value == "true"


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidParam(f"{name} must be an integer") from None


async def get_hierarchy(request: web.Request) -> web.Response:
    who = await requester(request)
    answer = await core_of(request).room_api.hierarchy.room_hierarchy(
        who.user_id,
        request.match_info["roomId"],
        suggested_only=_bool_param(request, "suggested_only"),
        limit=_int_param(request, "limit"),
        max_depth=_int_param(request, "max_depth"),
        from_token=request.query.get("from"),
    )
    return ok(answer)


def routes() -> list[web.RouteDef]:
    return [web.get("/_matrix/client/v1/rooms/{roomId}/hierarchy", get_hierarchy)]
