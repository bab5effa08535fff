"""The published room directory (C-S API "Published room directory", list_public_rooms.yaml):
a room's visibility there, and /publicRooms of this server or another."""

from __future__ import annotations

from aiohttp import web

from client_api.http import access_token, core_of, json_body, ok, requester
from homeserver.handlers.public_rooms import DirectoryQuery, PublicRoomsHandler


def _public_rooms(request: web.Request) -> PublicRoomsHandler:
    return core_of(request).room_api.public_rooms


async def get_visibility(request: web.Request) -> web.Response:
    # No access token needed (list_public_rooms.yaml: GET has no security requirement).
    visibility = await _public_rooms(request).visibility(request.match_info["roomId"])
    return ok({"visibility": visibility})


async def put_visibility(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await _public_rooms(request).set_visibility(
        who, request.match_info["roomId"], body.get("visibility", "public")
    )
    return ok()


async def get_public_rooms(request: web.Request) -> web.Response:
    # The GET needs no access token; one that is sent must still be valid.
    if access_token(request) is not None:
        await requester(request)
    query = DirectoryQuery.from_query(request.query)
    return ok(await _public_rooms(request).list_rooms(query, request.query.get("server")))


async def post_public_rooms(request: web.Request) -> web.Response:
    await requester(request)
    query = DirectoryQuery.from_body(await json_body(request))
    return ok(await _public_rooms(request).list_rooms(query, request.query.get("server")))


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.get(f"{v3}/directory/list/room/{{roomId}}", get_visibility),
        web.put(f"{v3}/directory/list/room/{{roomId}}", put_visibility),
        web.get(f"{v3}/publicRooms", get_public_rooms),
        web.post(f"{v3}/publicRooms", post_public_rooms),
    ]
