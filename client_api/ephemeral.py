"""Typing, receipts, read markers and presence (C-S API "Typing Notifications", "Receipts",
"Fully read markers", "Presence")."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester
from homeserver.errors import Forbidden


async def set_typing(request: web.Request) -> web.Response:
    who = await requester(request)
    if request.match_info["userId"] != who.user_id:
        raise Forbidden("Cannot set another user's typing state")
    body = await json_body(request)
    typing = field(body, "typing", bool)
    timeout = field(body, "timeout", int, required=False)
    await core_of(request).typing.set_typing(
        who.user_id, request.match_info["roomId"], typing, timeout
    )
    return ok()


async def send_receipt(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).receipts.send_receipt(
        who.user_id,
        request.match_info["roomId"],
        request.match_info["receiptType"],
        request.match_info["eventId"],
        field(body, "thread_id", str, required=False),
    )
    return ok()


async def set_read_markers(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).receipts.set_read_markers(
        who.user_id,
        request.match_info["roomId"],
        fully_read=field(body, "m.fully_read", str, required=False),
        read=field(body, "m.read", str, required=False),
        read_private=field(body, "m.read.private", str, required=False),
    )
    return ok()


async def put_presence(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).presence.set_presence(
        who.user_id,
        request.match_info["userId"],
        field(body, "presence", str),
        field(body, "status_msg", str, required=False),
    )
    return ok()


async def get_presence(request: web.Request) -> web.Response:
    who = await requester(request)
    presence = core_of(request).presence
    return ok(await presence.get_presence(who.user_id, request.match_info["userId"]))


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.put(f"{v3}/rooms/{{roomId}}/typing/{{userId}}", set_typing),
        web.post(f"{v3}/rooms/{{roomId}}/receipt/{{receiptType}}/{{eventId}}", send_receipt),
        web.post(f"{v3}/rooms/{{roomId}}/read_markers", set_read_markers),
        web.put(f"{v3}/presence/{{userId}}/status", put_presence),
        web.get(f"{v3}/presence/{{userId}}/status", get_presence),
    ]
