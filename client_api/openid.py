"""OpenID (C-S API "OpenID", openid.yaml): POST /user/{userId}/openid/request_token."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester


async def request_token(request: web.Request) -> web.Response:
    who = await requester(request)
    # The body is an empty object "reserved for future expansion": only its form is checked.
    await json_body(request)
    token = await core_of(request).openid.request_token(who.user_id, request.match_info["userId"])
    return ok(token)


def routes() -> list[web.RouteDef]:
    return [web.post("/_matrix/client/v3/user/{userId}/openid/request_token", request_token)]
