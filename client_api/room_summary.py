"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (C-S API "Room Summaries",
room_summary.yaml; MSC3266) and the unstable path clients still call: the access token is
optional, the room summary handler decides what the caller may see."""

from __future__ import annotations

from aiohttp import web

from client_api.http import access_token, core_of, ok, requester


async def get_room_summary(request: web.Request) -> web.Response:
    # Anyone may ask (room_summary.yaml); a token that is sent must still be valid, and
    # makes the answer the user's (rooms they are in or may join, and their membership).
    user_id = (await requester(request)).user_id if access_token(request) is not None else None
    summary = await core_of(request).room_api.room_summary.room_summary(
        user_id, request.match_info["roomIdOrAlias"], request.query.getall("via", [])
    )
    return ok(summary)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/_matrix/client/v1/room_summary/{roomIdOrAlias}", get_room_summary),
        # MSC3266's unstable prefix, which Element and nheko call.
        web.get(
            "/_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}", get_room_summary
        ),
    ]
