"""Room endpoints that change a room (C-S API "Creation", "Room membership", "Sending events to
a room", "Redactions"): createRoom, join/knock/invite/leave/forget/kick/ban/unban, joined_rooms,
send, state PUT and redact. Reads are in room_reads.py, aliases in directory.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester
from homeserver.errors import BadJson, Codes, InvalidParam, MatrixError
from homeserver.handlers.room_create import CreateRoomOptions
from homeserver.handlers.room_handlers import RoomHandlers
from homeserver.identifiers import domain_of


def _api(request: web.Request) -> RoomHandlers:
    return core_of(request).room_api


def _initial_state(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    raw = field(body, "initial_state", list, required=False) or []
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadJson("initial_state entries must be objects")
        event_type = item.get("type")
        state_key = item.get("state_key", "")
        content = item.get("content")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            raise BadJson("initial_state entries need a string type and state_key")
        if not isinstance(content, dict):
            raise BadJson("initial_state entries need an object content")
        out.append((event_type, state_key, content))
    return out


async def create_room(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    invite = field(body, "invite", list, required=False) or []
    if not all(isinstance(u, str) for u in invite):
        raise InvalidParam("invite must be a list of user IDs")
    options = CreateRoomOptions(
        preset=field(body, "preset", str, required=False),
        visibility=field(body, "visibility", str, required=False) or "private",
        room_alias_name=field(body, "room_alias_name", str, required=False),
        name=field(body, "name", str, required=False),
        topic=field(body, "topic", str, required=False),
        invite=invite,
        is_direct=bool(field(body, "is_direct", bool, required=False)),
        initial_state=list(_initial_state(body)),
        power_level_content_override=field(
            body, "power_level_content_override", dict, required=False
        )
        or {},
        creation_content=field(body, "creation_content", dict, required=False) or {},
        room_version=field(body, "room_version", str, required=False),
    )
    if field(body, "invite_3pid", list, required=False):
        raise MatrixError("Third-party invites are not supported", Codes.UNRECOGNIZED, status=400)
    core_of(request).rate_limits.messages.check(who.user_id)
    room_id = await _api(request).create.create_room(who.user_id, options)
    return ok({"room_id": room_id})


def _reason(body: dict[str, Any]) -> str | None:
    reason: str | None = field(body, "reason", str, required=False)
    return reason


async def _resolve_room(request: web.Request, room_id_or_alias: str) -> str:
    """A room ID, or the room a local alias points at (404 for an alias or room elsewhere)."""
    if room_id_or_alias.startswith("#"):
        return (await _api(request).directory.resolve(room_id_or_alias)).room_id
    if not room_id_or_alias.startswith("!"):
        raise InvalidParam(f"{room_id_or_alias[:300]!r} is neither a room ID nor an alias")
    return room_id_or_alias


async def _join(
    request: web.Request, room_id: str, alias_servers: Sequence[str] = ()
) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    # Servers to join through when this one is not in the room: the client's (`via`, and
    # the older `server_name`), those the alias's server named, then the one named in the
    # room ID (up to room version 11).
    servers = request.query.getall("via", []) + request.query.getall("server_name", [])
    servers += alias_servers
    if domain_of(room_id):
        servers.append(domain_of(room_id))
    await _api(request).members.join(who.user_id, room_id, servers, reason=_reason(body))
    return ok({"room_id": room_id})


async def join_room_id(request: web.Request) -> web.Response:
    return await _join(request, request.match_info["roomId"])


async def join_room_id_or_alias(request: web.Request) -> web.Response:
    target = request.match_info["roomIdOrAlias"]
    if target.startswith("#"):
        resolved = await _api(request).directory.resolve(target)
        return await _join(request, resolved.room_id, resolved.servers)
    return await _join(request, await _resolve_room(request, target))


async def knock(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    target = request.match_info["roomIdOrAlias"]
    alias_servers: list[str] = []
    if target.startswith("#"):
        resolved = await _api(request).directory.resolve(target)
        room_id, alias_servers = resolved.room_id, resolved.servers
    else:
        room_id = await _resolve_room(request, target)
    # Servers to knock through when this one is not in the room, as for joins.
    servers = request.query.getall("via", []) + request.query.getall("server_name", [])
    servers += alias_servers
    if domain_of(room_id):
        servers.append(domain_of(room_id))
    await _api(request).members.knock(who.user_id, room_id, _reason(body), servers)
    return ok({"room_id": room_id})


async def _target_action(request: web.Request, action: str) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    target = field(body, "user_id", str)
    await _api(request).members.update_membership(
        who.user_id, request.match_info["roomId"], target, action, reason=_reason(body)
    )
    return ok()


async def invite(request: web.Request) -> web.Response:
    if "id_server" in await json_body(request):
        raise MatrixError("Third-party invites are not supported", Codes.UNRECOGNIZED, status=400)
    return await _target_action(request, "invite")


async def kick(request: web.Request) -> web.Response:
    return await _target_action(request, "kick")


async def ban(request: web.Request) -> web.Response:
    return await _target_action(request, "ban")


async def unban(request: web.Request) -> web.Response:
    return await _target_action(request, "unban")


async def leave(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    room_id = request.match_info["roomId"]
    await _api(request).members.update_membership(
        who.user_id, room_id, who.user_id, "leave", reason=_reason(body)
    )
    return ok()


async def forget(request: web.Request) -> web.Response:
    who = await requester(request)
    await _api(request).members.forget(who.user_id, request.match_info["roomId"])
    return ok()


async def joined_rooms(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok({"joined_rooms": await _api(request).members.joined_rooms(who.user_id)})


async def send_message(request: web.Request) -> web.Response:
    who = await requester(request)
    content = await json_body(request)
    core_of(request).rate_limits.messages.check(who.user_id)
    event_id = await _api(request).send.send_message(
        who,
        request.match_info["roomId"],
        request.match_info["eventType"],
        content,
        request.match_info["txnId"],
    )
    return ok({"event_id": event_id})


async def put_state(request: web.Request) -> web.Response:
    who = await requester(request)
    content = await json_body(request)
    state_key = request.match_info.get("stateKey", "")
    event_type = request.match_info["eventType"]
    if event_type == "m.room.member" and not state_key.startswith("@"):
        raise InvalidParam("The state key of m.room.member must be a user ID")
    event_id = await _api(request).send.send_state(
        who, request.match_info["roomId"], event_type, state_key, content
    )
    return ok({"event_id": event_id})


async def redact(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    reason = _reason(body)
    core_of(request).rate_limits.messages.check(who.user_id)
    event_id = await _api(request).send.redact(
        who,
        request.match_info["roomId"],
        request.match_info["eventId"],
        {"reason": reason} if reason is not None else {},
        request.match_info["txnId"],
    )
    return ok({"event_id": event_id})


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    room = f"{v3}/rooms/{{roomId}}"
    return [
        web.post(f"{v3}/createRoom", create_room),
        web.post(f"{v3}/join/{{roomIdOrAlias}}", join_room_id_or_alias),
        web.post(f"{v3}/knock/{{roomIdOrAlias}}", knock),
        web.get(f"{v3}/joined_rooms", joined_rooms),
        web.post(f"{room}/join", join_room_id),
        web.post(f"{room}/invite", invite),
        web.post(f"{room}/leave", leave),
        web.post(f"{room}/forget", forget),
        web.post(f"{room}/kick", kick),
        web.post(f"{room}/ban", ban),
        web.post(f"{room}/unban", unban),
        web.put(f"{room}/send/{{eventType}}/{{txnId}}", send_message),
        # The state key may be empty (the trailing slash form) or omitted altogether.
        web.put(f"{room}/state/{{eventType}}", put_state),
        web.put(f"{room}/state/{{eventType}}/{{stateKey:.*}}", put_state),
        web.put(f"{room}/redact/{{eventId}}/{{txnId}}", redact),
    ]
