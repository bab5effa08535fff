"""Room endpoints that read (C-S API "Getting events for a room", "Event context",
"Room membership"): event, state, members, joined_members, messages, context and
timestamp_to_event. History visibility is applied by the handlers."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, ok, requester
from homeserver.errors import InvalidParam
from homeserver.handlers.room_reads import RoomEventFilter, RoomReadHandler

_MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})


def _reads(request: web.Request) -> RoomReadHandler:
    return core_of(request).room_api.reads


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParam(f"{name} must be an integer") from None
    if value < 0:
        raise InvalidParam(f"{name} may not be negative")
    if value > 2**63 - 1:  # what the databases' BIGINT holds
        raise InvalidParam(f"{name} is too large")
    return value


def _direction(request: web.Request, default: str | None = None) -> bool:
    """True for forwards ("f"); the `dir` parameter is required where no default is given."""
    raw = request.query.get("dir", default)
    if raw not in ("b", "f"):
        raise InvalidParam("dir must be 'b' or 'f'")
    return raw == "f"


async def get_event(request: web.Request) -> web.Response:
    who = await requester(request)
    event = await _reads(request).get_event(
        who.user_id, who.device_id, request.match_info["roomId"], request.match_info["eventId"]
    )
    return ok(event)


async def get_state(request: web.Request) -> web.Response:
    who = await requester(request)
    events = await _reads(request).get_state(who.user_id, request.match_info["roomId"])
    return web.json_response(events)


async def get_state_event(request: web.Request) -> web.Response:
    who = await requester(request)
    form = request.query.get("format", "content")
    if form not in ("content", "event"):
        raise InvalidParam("format must be 'content' or 'event'")
    event = await _reads(request).get_state_event(
        who.user_id,
        request.match_info["roomId"],
        request.match_info["eventType"],
        request.match_info.get("stateKey", ""),
    )
    return ok(event if form == "event" else event["content"])


async def get_members(request: web.Request) -> web.Response:
    who = await requester(request)
    membership = request.query.get("membership")
    not_membership = request.query.get("not_membership")
    for value in (membership, not_membership):
        if value is not None and value not in _MEMBERSHIPS:
            raise InvalidParam(f"Unknown membership {value[:50]!r}")
    chunk = await _reads(request).get_members(
        who.user_id,
        request.match_info["roomId"],
        request.query.get("at"),
        membership,
        not_membership,
    )
    return ok({"chunk": chunk})


async def get_joined_members(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok(await _reads(request).get_joined_members(who.user_id, request.match_info["roomId"]))


async def messages(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await _reads(request).messages(
        who.user_id,
        who.device_id,
        request.match_info["roomId"],
        from_token=request.query.get("from"),
        to_token=request.query.get("to"),
        forwards=_direction(request),
        limit=_int_param(request, "limit", 10),
        event_filter=RoomEventFilter.parse(request.query.get("filter")),
    )
    return ok(body)


async def context(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await _reads(request).context(
        who.user_id,
        who.device_id,
        request.match_info["roomId"],
        request.match_info["eventId"],
        _int_param(request, "limit", 10),
        RoomEventFilter.parse(request.query.get("filter")),
    )
    return ok(body)


async def timestamp_to_event(request: web.Request) -> web.Response:
    who = await requester(request)
    raw_ts = request.query.get("ts")
    if raw_ts is None:
        raise InvalidParam("ts is required")
    body = await _reads(request).timestamp_to_event(
        who.user_id,
        request.match_info["roomId"],
        _int_param(request, "ts", 0),
        _direction(request),
    )
    return ok(body)


def routes() -> list[web.RouteDef]:
    room = "/_matrix/client/v3/rooms/{roomId}"
    return [
        web.get(f"{room}/event/{{eventId}}", get_event),
        web.get(f"{room}/state", get_state),
        web.get(f"{room}/state/{{eventType}}", get_state_event),
        web.get(f"{room}/state/{{eventType}}/{{stateKey:.*}}", get_state_event),
        web.get(f"{room}/members", get_members),
        web.get(f"{room}/joined_members", get_joined_members),
        web.get(f"{room}/messages", messages),
        web.get(f"{room}/context/{{eventId}}", context),
        # Stable since spec v1.6.
        web.get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", timestamp_to_event),
    ]
