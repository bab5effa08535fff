"""Server-side search (C-S API "Server Side Search", search.yaml): POST /search."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester


async def post_search(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    result = await core_of(request).search.search(
        who.user_id, who.device_id, body, request.query.get("next_batch")
    )
    return ok(result)


def routes() -> list[web.RouteDef]:
    return [web.post("/_matrix/client/v3/search", post_search)]
