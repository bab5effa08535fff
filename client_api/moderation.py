"""Reporting content (C-S API "Reporting content", report_content.yaml): events, rooms and
users, stored for the server's operators."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester


async def report_event(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    # `score` left the spec in v1.18; older clients still send it, so it is kept if valid.
    await core_of(request).reports.report_event(
        who.user_id,
        request.match_info["roomId"],
        request.match_info["eventId"],
        field(body, "reason", str, required=False),
        field(body, "score", int, required=False),
    )
    return ok()


async def report_room(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).reports.report_room(
        who.user_id, request.match_info["roomId"], field(body, "reason", str)
    )
    return ok()


async def report_user(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).reports.report_user(
        who.user_id, request.match_info["userId"], field(body, "reason", str)
    )
    return ok()


def routes() -> list[web.RouteDef]:
    return [
        web.post("/_matrix/client/v3/rooms/{roomId}/report/{eventId}", report_event),
        web.post("/_matrix/client/v3/rooms/{roomId}/report", report_room),
        web.post("/_matrix/client/v3/users/{userId}/report", report_user),
    ]
