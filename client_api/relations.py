"""Relationship reads (C-S API "Relationships", "Threading"): GET /relations/{eventId}[/{relType}
[/{eventType}]] and GET /threads."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, ok, requester
from homeserver.errors import InvalidParam
from homeserver.handlers.relations import DEFAULT_LIMIT, RelationsHandler


def _relations(request: web.Request) -> RelationsHandler:
    return core_of(request).room_api.relations


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParam("limit must be an integer") from None
    if value < 1:
        raise InvalidParam("limit must be greater than zero")
    return value


def _boolean(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise InvalidParam(f"{name} must be 'true' or 'false'")
    return raw == "true"


async def get_relations(request: web.Request) -> web.Response:
    who = await requester(request)
    direction = request.query.get("dir", "b")
    if direction not in ("b", "f"):
        raise InvalidParam("dir must be 'b' or 'f'")
    body = await _relations(request).relations(
        who.user_id,
        who.device_id,
        request.match_info["roomId"],
        request.match_info["eventId"],
        rel_type=request.match_info.get("relType"),
        event_type=request.match_info.get("eventType"),
        from_token=request.query.get("from"),
        to_token=request.query.get("to"),
        limit=_limit(request),
        forwards=direction == "f",
        recurse=_boolean(request, "recurse"),
    )
    return ok(body)


async def get_threads(request: web.Request) -> web.Response:
    who = await requester(request)
    include = request.query.get("include", "all")
    if include not in ("all", "participated"):
        raise InvalidParam("include must be 'all' or 'participated'")
    body = await _relations(request).threads(
        who.user_id,
        who.device_id,
        request.match_info["roomId"],
        participated=include == "participated",
        from_token=request.query.get("from"),
        limit=_limit(request),
    )
    return ok(body)


def routes() -> list[web.RouteDef]:
    room = "/_matrix/client/v1/rooms/{roomId}"
    relations = f"{room}/relations/{{eventId}}"
    return [
        web.get(relations, get_relations),
        web.get(f"{relations}/{{relType}}", get_relations),
        web.get(f"{relations}/{{relType}}/{{eventType}}", get_relations),
        web.get(f"{room}/threads", get_threads),
    ]
