"""POST /rooms/{roomId}/upgrade (C-S API "Room Upgrades", room_upgrades.yaml)."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester
from homeserver.errors import InvalidParam


async def upgrade_room(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    new_version = field(body, "new_version", str)
    creators = field(body, "additional_creators", list, required=False) or []
    if not all(isinstance(c, str) for c in creators):
        raise InvalidParam("additional_creators must be a list of user IDs")
    new_room = await core_of(request).room_upgrades.upgrade(
        who.user_id, request.match_info["roomId"], new_version, creators
    )
    return ok({"replacement_room": new_room})


def routes() -> list[web.RouteDef]:
    return [web.post("/_matrix/client/v3/rooms/{roomId}/upgrade", upgrade_room)]
