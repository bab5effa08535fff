"""Room aliases (C-S API "Room aliases", directory.yaml): resolve, create and delete
#alias:server, and list a room's local aliases."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester
from homeserver.errors import Forbidden
from homeserver.handlers.directory import DirectoryHandler


def _directory(request: web.Request) -> DirectoryHandler:
    return core_of(request).room_api.directory


async def get_alias(request: web.Request) -> web.Response:
    # No access token needed (directory.yaml: GET has no security requirement).
    resolved = await _directory(request).resolve(request.match_info["roomAlias"])
    return ok({"room_id": resolved.room_id, "servers": resolved.servers})


async def put_alias(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    room_id = field(body, "room_id", str)
    await _directory(request).create_alias(who, request.match_info["roomAlias"], room_id)
    return ok()


async def delete_alias(request: web.Request) -> web.Response:
    who = await requester(request)
    await _directory(request).delete_alias(who, request.match_info["roomAlias"])
    return ok()


async def room_aliases(request: web.Request) -> web.Response:
    who = await requester(request)
    room_id = request.match_info["roomId"]
    access = await core_of(request).room_api.visibility.room_access(who.user_id, room_id)
    # directory.yaml: the user must be joined, unless the room is world readable.
    if access.membership != "join" and not access.world_readable:
        raise Forbidden("You are not a member of the room")
    return ok({"aliases": await _directory(request).room_aliases(room_id)})


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.get(f"{v3}/directory/room/{{roomAlias}}", get_alias),
        web.put(f"{v3}/directory/room/{{roomAlias}}", put_alias),
        web.delete(f"{v3}/directory/room/{{roomAlias}}", delete_alias),
        web.get(f"{v3}/rooms/{{roomId}}/aliases", room_aliases),
    ]
