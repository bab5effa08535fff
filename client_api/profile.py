"""Profiles (C-S API "Profiles"): GET /profile/{userId}, GET/PUT/DELETE
/profile/{userId}/{keyName} for displayname and avatar_url."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.profile import PROFILE_FIELDS
from homeserver.storage.stores.user_data import ProfileField


def _field(request: web.Request) -> ProfileField:
    name = request.match_info["keyName"]
    if name not in PROFILE_FIELDS:
        # m.tz and custom fields (spec v1.16) are not stored: reading one finds nothing, and
        # the m.profile_fields capability does not offer them for writing.
        raise NotFound("Profile field not found")
    return name


async def get_profile(request: web.Request) -> web.Response:
    return ok(await core_of(request).profile.get_profile(request.match_info["userId"]))


async def get_profile_field(request: web.Request) -> web.Response:
    user_id = request.match_info["userId"]
    name = _field(request)
    profile = await core_of(request).profile.get_profile(user_id)
    if name not in profile:
        raise NotFound("Profile field not set")
    return ok({name: profile[name]})


def _writable_field(request: web.Request) -> ProfileField:
    name = request.match_info["keyName"]
    if name not in PROFILE_FIELDS:
        raise Forbidden(f"Profile field {name} cannot be changed on this server")
    return name


async def set_profile_field(request: web.Request) -> web.Response:
    who = await requester(request)
    name = _writable_field(request)
    body = await json_body(request)
    if name not in body:
        raise MatrixError(f"Missing key '{name}'", Codes.MISSING_PARAM)
    value = body[name]
    if value is not None and not isinstance(value, str):
        raise MatrixError(f"{name} must be a string", Codes.INVALID_PARAM)
    await core_of(request).profile.set_field(who.user_id, request.match_info["userId"], name, value)
    return ok()


async def delete_profile_field(request: web.Request) -> web.Response:
    who = await requester(request)
    name = _writable_field(request)
    await core_of(request).profile.set_field(who.user_id, request.match_info["userId"], name, None)
    return ok()


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.get(f"{v3}/profile/{{userId}}", get_profile),
        web.get(f"{v3}/profile/{{userId}}/{{keyName}}", get_profile_field),
        web.put(f"{v3}/profile/{{userId}}/{{keyName}}", set_profile_field),
        web.delete(f"{v3}/profile/{{userId}}/{{keyName}}", delete_profile_field),
    ]
