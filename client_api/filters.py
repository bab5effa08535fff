"""Filters (C-S API "Filtering", filter.yaml): POST /user/{userId}/filter and
GET /user/{userId}/filter/{filterId}."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester


async def create_filter(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    filter_id = await core_of(request).filters.create_filter(
        who.user_id, request.match_info["userId"], body
    )
    return ok({"filter_id": filter_id})


async def get_filter(request: web.Request) -> web.Response:
    who = await requester(request)
    definition = await core_of(request).filters.get_filter(
        who.user_id, request.match_info["userId"], request.match_info["filterId"]
    )
    return ok(definition)


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.post(f"{v3}/user/{{userId}}/filter", create_filter),
        web.get(f"{v3}/user/{{userId}}/filter/{{filterId}}", get_filter),
    ]
