"""Server-side key backups (C-S API "Server-side key backups"): /room_keys/version[/{version}]
and /room_keys/keys[/{roomId}[/{sessionId}]]."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester
from homeserver.errors import Codes, MatrixError

VERSIONS = "/_matrix/client/v3/room_keys/version"
KEYS = "/_matrix/client/v3/room_keys/keys"


async def create_version(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).key_backup.create_version(who.user_id, body))


async def get_version(request: web.Request) -> web.Response:
    who = await requester(request)
    version = request.match_info.get("version")
    return ok(await core_of(request).key_backup.get_version(who.user_id, version))


async def update_version(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).key_backup.update_version(
        who.user_id, request.match_info["version"], body
    )
    return ok()


async def delete_version(request: web.Request) -> web.Response:
    who = await requester(request)
    await core_of(request).key_backup.delete_version(who.user_id, request.match_info["version"])
    return ok()


def _version_param(request: web.Request) -> str:
    version = request.query.get("version")
    if version is None:
        raise MatrixError("Missing parameter: version", Codes.MISSING_PARAM)
    return version


async def put_keys(request: web.Request) -> web.Response:
    who = await requester(request)
    version = _version_param(request)
    body = await json_body(request)
    result = await core_of(request).key_backup.put_keys(
        who.user_id,
        version,
        body,
        request.match_info.get("roomId"),
        request.match_info.get("sessionId"),
    )
    return ok(result)


async def get_keys(request: web.Request) -> web.Response:
    who = await requester(request)
    result = await core_of(request).key_backup.get_keys(
        who.user_id,
        _version_param(request),
        request.match_info.get("roomId"),
        request.match_info.get("sessionId"),
    )
    return ok(result)


async def delete_keys(request: web.Request) -> web.Response:
    who = await requester(request)
    result = await core_of(request).key_backup.delete_keys(
        who.user_id,
        _version_param(request),
        request.match_info.get("roomId"),
        request.match_info.get("sessionId"),
    )
    return ok(result)


def routes() -> list[web.RouteDef]:
    keys_paths = (KEYS, KEYS + "/{roomId}", KEYS + "/{roomId}/{sessionId}")
    return [
        web.post(VERSIONS, create_version),
        web.get(VERSIONS, get_version),
        web.get(VERSIONS + "/{version}", get_version),
        web.put(VERSIONS + "/{version}", update_version),
        web.delete(VERSIONS + "/{version}", delete_version),
        *(web.put(path, put_keys) for path in keys_paths),
        *(web.get(path, get_keys) for path in keys_paths),
        *(web.delete(path, delete_keys) for path in keys_paths),
    ]
