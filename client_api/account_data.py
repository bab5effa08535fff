"""Account data and room tags (C-S API "Client Config", "Room Tagging"): GET/PUT
/user/{userId}/account_data/{type}, /user/{userId}/rooms/{roomId}/account_data/{type} and
/user/{userId}/rooms/{roomId}/tags[/{tag}]."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.account_data import check_own


def _room_id(request: web.Request) -> str:
    room_id = request.match_info["roomId"]
    if not room_id.startswith("!") or len(room_id.encode()) > 255:
        raise MatrixError(f"{room_id} is not a valid room ID", Codes.INVALID_PARAM)
    return room_id


async def _owner(request: web.Request) -> str:
    who = await requester(request)
    check_own(who.user_id, request.match_info["userId"])
    return who.user_id


async def get_global(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    handler = core_of(request).account_data
    return ok(await handler.get(user_id, None, request.match_info["type"]))


async def put_global(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    body = await json_body(request)
    handler = core_of(request).account_data
    await handler.set_from_client(user_id, None, request.match_info["type"], body)
    return ok()


async def get_room(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    room_id = _room_id(request)
    handler = core_of(request).account_data
    return ok(await handler.get(user_id, room_id, request.match_info["type"]))


async def put_room(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    room_id = _room_id(request)
    body = await json_body(request)
    handler = core_of(request).account_data
    await handler.set_from_client(user_id, room_id, request.match_info["type"], body)
    return ok()


async def get_tags(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    tags = await core_of(request).account_data.get_tags(user_id, _room_id(request))
    return ok({"tags": tags})


async def put_tag(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    room_id = _room_id(request)
    body = await json_body(request)
    await core_of(request).account_data.add_tag(user_id, room_id, request.match_info["tag"], body)
    return ok()


async def delete_tag(request: web.Request) -> web.Response:
    user_id = await _owner(request)
    room_id = _room_id(request)
    await core_of(request).account_data.remove_tag(user_id, room_id, request.match_info["tag"])
    return ok()


def routes() -> list[web.RouteDef]:
    user = "/_matrix/client/v3/user/{userId}"
    return [
        web.get(f"{user}/account_data/{{type}}", get_global),
        web.put(f"{user}/account_data/{{type}}", put_global),
        web.get(f"{user}/rooms/{{roomId}}/account_data/{{type}}", get_room),
        web.put(f"{user}/rooms/{{roomId}}/account_data/{{type}}", put_room),
        web.get(f"{user}/rooms/{{roomId}}/tags", get_tags),
        web.put(f"{user}/rooms/{{roomId}}/tags/{{tag}}", put_tag),
        web.delete(f"{user}/rooms/{{roomId}}/tags/{{tag}}", delete_tag),
    ]
