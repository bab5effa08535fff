"""POST /user_directory/search (C-S API "User directory", users.yaml)."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, field, json_body, ok, requester
from homeserver.errors import InvalidParam
from homeserver.handlers.user_directory import DEFAULT_LIMIT


async def search(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    term = field(body, "search_term", str)
    limit = field(body, "limit", int, required=False)
    if limit is not None and limit < 0:
        raise InvalidParam("limit may not be negative")
    found = await core_of(request).user_directory.search(
        who.user_id, term, DEFAULT_LIMIT if limit is None else limit
    )
    return ok({"results": found.results, "limited": found.limited})


def routes() -> list[web.RouteDef]:
    return [web.post("/_matrix/client/v3/user_directory/search", search)]
