"""The inbound federation route table (S-S API): each endpoint parses and checks its input
and hands it to a domain handler."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from federation.inbound.media import FederationMedia
from federation.server.http import authenticated, federation_of, server_version
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.public_rooms import DirectoryQuery, PublicRoomsHandler
from media_repo.repository import DEFAULT_TIMEOUT_MS
from media_repo.routes import SECURITY_HEADERS, thumbnail_request

T = TypeVar("T")

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


async def invite(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    answer = await federation_of(request).invites.on_invite(
        origin, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return web.json_response(answer)


async def get_event(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    answer = await federation_of(request).reads.get_event(origin, request.match_info["eventId"])
    return web.json_response(answer)


async def get_state(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    reads = federation_of(request).reads
    room_id, event_id = request.match_info["roomId"], _required_query(request, "event_id")
    return web.json_response(await reads.get_state(origin, room_id, event_id))


async def get_state_ids(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    reads = federation_of(request).reads
    room_id, event_id = request.match_info["roomId"], _required_query(request, "event_id")
    return web.json_response(await reads.get_state_ids(origin, room_id, event_id))


async def get_event_auth(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    answer = await federation_of(request).reads.get_event_auth(
        origin, request.match_info["roomId"], request.match_info["eventId"]
    )
    return web.json_response(answer)


async def backfill(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    event_ids = request.query.getall("v", [])
    if not event_ids:
        raise MatrixError("Missing parameter: v", Codes.MISSING_PARAM)
    limit = _int(request.query.get("limit"), "limit")
    answer = await federation_of(request).reads.backfill(
        origin, request.match_info["roomId"], event_ids, limit
    )
    return web.json_response(answer)


async def get_missing_events(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    if not isinstance(body, dict):
        raise MatrixError("The body must be a JSON object", Codes.BAD_JSON)
    earliest, latest = _event_ids(body, "earliest_events"), _event_ids(body, "latest_events")
    limit = _int(body.get("limit", 10), "limit")
    min_depth = _int(body.get("min_depth", 0), "min_depth")
    answer = await federation_of(request).reads.get_missing_events(
        origin, request.match_info["roomId"], earliest, latest, limit, min_depth
    )
    return web.json_response(answer)


async def media_download(request: web.Request) -> web.Response:
    await authenticated(request)
    timeout_ms = _int(request.query.get("timeout_ms", DEFAULT_TIMEOUT_MS), "timeout_ms")
    answer = await _media(request).download(request.match_info["mediaId"], timeout_ms)
    return web.Response(body=answer, headers=SECURITY_HEADERS)


async def media_thumbnail(request: web.Request) -> web.Response:
    await authenticated(request)
    asked = thumbnail_request(request)
    answer = await _media(request).thumbnail(
        request.match_info["mediaId"],
        asked.width,
        asked.height,
        asked.method,
        asked.animated,
        asked.timeout_ms,
    )
    return web.Response(body=answer, headers=SECURITY_HEADERS)


def _offered(handler: T | None) -> T:
    """A handler this server may be built without (media, OpenID, directory, spaces): its
    endpoints are unknown when it is absent."""
    if handler is None:
        raise MatrixError("Unrecognized request", Codes.UNRECOGNIZED, status=404)
    return handler


def _media(request: web.Request) -> FederationMedia:
    return _offered(federation_of(request).media)


async def openid_userinfo(request: web.Request) -> web.Response:
    # No X-Matrix signature: the caller is a third party (an integration manager, say) holding
    # a token the user gave it (S-S API "OpenID").
    openid = _offered(federation_of(request).openid)
    token = request.query.get("access_token")
    if token is None:
        # openid.yaml answers only 200 and 401: a missing token is a 401 as for any endpoint.
        raise MatrixError("Missing access token", Codes.MISSING_TOKEN)
    return web.json_response(await openid.user_info(token))


async def get_public_rooms(request: web.Request) -> web.Response:
    await authenticated(request)
    query = DirectoryQuery.from_query(request.query)
    return web.json_response(await _public_rooms(request).local_rooms(query))


async def post_public_rooms(request: web.Request) -> web.Response:
    _origin, body = await authenticated(request)
    query = DirectoryQuery.from_body(_object(body))
    return web.json_response(await _public_rooms(request).local_rooms(query))


def _public_rooms(request: web.Request) -> PublicRoomsHandler:
    return _offered(federation_of(request).public_rooms)


async def hierarchy(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    handler = _offered(federation_of(request).hierarchy)
    suggested_only = request.query.get("suggested_only", "false")
    if suggested_only not in ("true", "false"):
        raise MatrixError("suggested_only must be true or false", Codes.INVALID_PARAM)
    answer = await handler.federation_hierarchy(
        origin, request.match_info["roomId"], suggested_only == "true"
    )
    return web.json_response(answer)


def _event_ids(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise MatrixError(f"{name} must be a list of event IDs", Codes.BAD_JSON)
    return value


def _required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise MatrixError(f"Missing parameter: {name}", Codes.MISSING_PARAM)
    return value


def _int(value: Any, name: str) -> int:
    """An integer parameter, from a query string or JSON."""
    if value is None:
        raise MatrixError(f"Missing parameter: {name}", Codes.MISSING_PARAM)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MatrixError(f"{name} must be an integer", Codes.INVALID_PARAM)


async def user_keys_query(request: web.Request) -> web.Response:
    _origin, body = await authenticated(request)
    keys = federation_of(request).e2e_keys
    return web.json_response(await keys.query_for_server(_object(body)))


async def user_keys_claim(request: web.Request) -> web.Response:
    _origin, body = await authenticated(request)
    keys = federation_of(request).e2e_keys
    return web.json_response(await keys.claim_for_server(_object(body)))


async def user_devices(request: web.Request) -> web.Response:
    await authenticated(request)
    keys = federation_of(request).e2e_keys
    return web.json_response(await keys.devices_for_server(request.match_info["userId"]))


def _object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise MatrixError("The body must be a JSON object", Codes.BAD_JSON)
    return body


async def make_knock(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    versions = request.query.getall("ver", [])
    answer = await federation_of(request).joins.make_knock(
        origin, request.match_info["roomId"], request.match_info["userId"], versions
    )
    return web.json_response(answer)


async def send_knock(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    answer = await federation_of(request).joins.send_knock(
        origin, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return web.json_response(answer)


async def make_leave(request: web.Request) -> web.Response:
    origin, _ = await authenticated(request)
    answer = await federation_of(request).joins.make_leave(
        origin, request.match_info["roomId"], request.match_info["userId"]
    )
    return web.json_response(answer)


async def send_leave(request: web.Request) -> web.Response:
    origin, body = await authenticated(request)
    answer = await federation_of(request).joins.send_leave(
        origin, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return web.json_response(answer)


def install_federation_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{V1}/version", version)
    router.add_put(f"{V1}/send/{{txnId}}", send_transaction)
    router.add_get(f"{V1}/make_join/{{roomId}}/{{userId}}", make_join)
    router.add_put(f"{V2}/send_join/{{roomId}}/{{eventId}}", send_join)
    router.add_get(f"{V1}/make_leave/{{roomId}}/{{userId}}", make_leave)
    router.add_get(f"{V1}/make_knock/{{roomId}}/{{userId}}", make_knock)
    router.add_put(f"{V1}/send_knock/{{roomId}}/{{eventId}}", send_knock)
    router.add_put(f"{V2}/send_leave/{{roomId}}/{{eventId}}", send_leave)
    router.add_get(f"{V1}/event/{{eventId}}", get_event)
    router.add_get(f"{V1}/state/{{roomId}}", get_state)
    router.add_get(f"{V1}/state_ids/{{roomId}}", get_state_ids)
    router.add_get(f"{V1}/event_auth/{{roomId}}/{{eventId}}", get_event_auth)
    router.add_get(f"{V1}/backfill/{{roomId}}", backfill)
    router.add_post(f"{V1}/get_missing_events/{{roomId}}", get_missing_events)
    router.add_put(f"{V2}/invite/{{roomId}}/{{eventId}}", invite)
    router.add_post(f"{V1}/user/keys/query", user_keys_query)
    router.add_post(f"{V1}/user/keys/claim", user_keys_claim)
    router.add_get(f"{V1}/user/devices/{{userId}}", user_devices)
    router.add_get(f"{V1}/query/directory", query_directory)
    router.add_get(f"{V1}/query/profile", query_profile)
    router.add_get(f"{V1}/hierarchy/{{roomId}}", hierarchy)
    router.add_get(f"{V1}/publicRooms", get_public_rooms)
    router.add_post(f"{V1}/publicRooms", post_public_rooms)
    router.add_get(f"{V1}/media/download/{{mediaId}}", media_download)
    router.add_get(f"{V1}/media/thumbnail/{{mediaId}}", media_thumbnail)
    router.add_get(f"{V1}/openid/userinfo", openid_userinfo)
