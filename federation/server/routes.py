"""The inbound federation route table (S-S API): each endpoint parses and checks its input
and hands it to a domain handler."""

from __future__ import annotations

from aiohttp import web

from federation.server.http import authenticated, federation_of, server_version
from homeserver.errors import Codes, MatrixError

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


async def version(_request: web.Request) -> web.Response:
    return web.json_response({"server": {"name": "homeserver", "version": server_version()}})


async def send_transaction(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    if not isinstance(body, dict):
        raise MatrixError("A transaction must be a JSON object", Codes.BAD_JSON)
    if body.get("origin", origin) != origin:
        raise MatrixError("The transaction's origin is not the signing server", Codes.FORBIDDEN)
    txn_id = request.match_info["txnId"]
    response = await federation_of(request).transactions.on_transaction(origin, txn_id, body)
    return web.json_response(response)


async def make_join(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    # Without `ver` the joining server supports only room version 1 (S-S API make_join).
    versions = request.query.getall("ver", ["1"])
    answer = await federation_of(request).joins.make_join(
        origin, request.match_info["roomId"], request.match_info["userId"], versions
    )
    return web.json_response(answer)


async def send_join(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    answer = await federation_of(request).joins.send_join(
        origin, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return web.json_response(answer)


async def query_directory(request: web.Request) -> web.Response:
    await authenticated(request)
    alias = request.query.get("room_alias")
    if alias is None:
        raise MatrixError("Missing parameter: room_alias", Codes.MISSING_PARAM)
    return web.json_response(await federation_of(request).queries.directory(alias))


async def query_profile(request: web.Request) -> web.Response:
    await authenticated(request)
    user_id = request.query.get("user_id")
    if user_id is None:
        raise MatrixError("Missing parameter: user_id", Codes.MISSING_PARAM)
    answer = await federation_of(request).queries.profile(user_id, request.query.get("field"))
    return web.json_response(answer)


def install_federation_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{V1}/version", version)
    router.add_put(f"{V1}/send/{{txnId}}", send_transaction)
    router.add_get(f"{V1}/make_join/{{roomId}}/{{userId}}", make_join)
    router.add_put(f"{V2}/send_join/{{roomId}}/{{eventId}}", send_join)
    router.add_get(f"{V1}/query/directory", query_directory)
    router.add_get(f"{V1}/query/profile", query_profile)
