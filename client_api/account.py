"""Registration, login, logout, refresh and whoami (C-S API "Client Authentication",
"Account registration and management")."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from client_api.http import client_ip, core_of, field, json_body, ok, requester
from homeserver.errors import Codes, Forbidden, MatrixError
from homeserver.handlers.auth import LoginResult, RegistrationTokenUsedUp
from homeserver.handlers.uia import DUMMY, REGISTRATION_TOKEN, dummy_stage
from homeserver.identifiers import MAX_ID_BYTES

# C-S API "User Identifiers": localparts we hand out use only these characters.
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+\Z")


def _login_response(result: LoginResult, server_name: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": result.user_id,
        "access_token": result.access_token,
        "device_id": result.device_id,
        "home_server": server_name,
    }
    if result.refresh_token is not None:
        body["refresh_token"] = result.refresh_token
        body["expires_in_ms"] = result.expires_in_ms
    return body


def _check_localpart(localpart: str, server_name: str) -> None:
    if not _LOCALPART.match(localpart):
        raise MatrixError("User ID may only contain a-z, 0-9, and ._=-/+", Codes.INVALID_USERNAME)
    if len(f"@{localpart}:{server_name}".encode()) > MAX_ID_BYTES:
        raise MatrixError("User ID is too long", Codes.INVALID_USERNAME)


async def register(request: web.Request) -> web.Response:
    core = core_of(request)
    body = await json_body(request)
    if request.query.get("kind", "user") != "user":
        raise MatrixError("Guest access is not enabled", Codes.GUEST_ACCESS_FORBIDDEN)
    if not core.registration.enabled:
        raise Forbidden("Registration has been disabled")
    core.rate_limits.registration_ip.check(client_ip(request))
    username = field(body, "username", str, required=False)
    password = field(body, "password", str, required=False)
    # Parsed before user-interactive auth, so a malformed request does not use up a session.
    device_id = field(body, "device_id", str, required=False)
    device_display_name = field(body, "initial_device_display_name", str, required=False)
    inhibit_login = field(body, "inhibit_login", bool, required=False)
    refresh_token = bool(field(body, "refresh_token", bool, required=False))
    localpart = username.lower() if username else secrets.token_hex(8)
    _check_localpart(localpart, core.server.server_name)
    if await core.storage.accounts.user_exists(f"@{localpart}:{core.server.server_name}"):
        raise MatrixError("User ID already taken.", Codes.USER_IN_USE)
    flows = [[REGISTRATION_TOKEN]] if core.registration.requires_token else [[DUMMY]]
    stages = await core.uia.check(
        field(body, "auth", dict, required=False),
        flows,
        {DUMMY: dummy_stage, REGISTRATION_TOKEN: core.registration_tokens.check},
        purpose="register",
    )
    token = stages.get(REGISTRATION_TOKEN)
    try:
        result = await core.auth.register(
            localpart,
            password,
            device_id=device_id,
            device_display_name=device_display_name,
            with_device=not inhibit_login,
            refresh_token=refresh_token,
            registration_token=token if isinstance(token, str) else None,
        )
    except RegistrationTokenUsedUp as e:
        # Other registrations used the token up after its stage passed: start again.
        raise core.uia.restart(flows, "register", e) from None
    if isinstance(result, str):
        return ok({"user_id": result})
    return ok(_login_response(result, core.server.server_name))


async def registration_token_validity(request: web.Request) -> web.Response:
    """C-S API "GET /register/m.login.registration_token/validity"."""
    core = core_of(request)
    if not core.registration.enabled:
        raise Forbidden("Registration is not enabled on this homeserver.")
    # The registration budget per address: guessing tokens here costs what guessing them at
    # the registration stage does.
    core.rate_limits.registration_ip.check(client_ip(request))
    token = request.query.get("token")
    if token is None:
        raise MatrixError("Missing parameter: token", Codes.MISSING_PARAM)
    return ok({"valid": await core.registration_tokens.is_valid(token)})


async def register_available(request: web.Request) -> web.Response:
    core = core_of(request)
    localpart = request.query.get("username", "").lower()
    _check_localpart(localpart, core.server.server_name)
    if await core.storage.accounts.user_exists(f"@{localpart}:{core.server.server_name}"):
        raise MatrixError("User ID already taken.", Codes.USER_IN_USE)
    return ok({"available": True})


async def login_flows(_request: web.Request) -> web.Response:
    return ok({"flows": [{"type": "m.login.password"}]})


def _user_id_from_login(body: Mapping[str, Any], server_name: str) -> str:
    identifier = body.get("identifier")
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            raise MatrixError("Unknown identifier type", Codes.UNKNOWN, status=400)
        user = identifier.get("user")
    else:
        user = body.get("user")  # the deprecated top-level field
    if not isinstance(user, str) or not user:
        raise MatrixError("Missing user identifier", Codes.MISSING_PARAM)
    if user.startswith("@"):
        localpart, _, domain = user[1:].partition(":")
        if domain != server_name:
            raise Forbidden("Invalid username or password")
        return f"@{localpart.lower()}:{server_name}"
    return f"@{user.lower()}:{server_name}"


async def login(request: web.Request) -> web.Response:
    core = core_of(request)
    body = await json_body(request)
    if body.get("type") != "m.login.password":
        raise MatrixError("Unknown login type", Codes.UNKNOWN, status=400)
    core.rate_limits.login_ip.check(client_ip(request))
    user_id = _user_id_from_login(body, core.server.server_name)
    password = field(body, "password", str)
    if not await core.auth.check_password(user_id, password):
        raise Forbidden("Invalid username or password")
    result = await core.auth.login(
        user_id,
        device_id=field(body, "device_id", str, required=False),
        device_display_name=field(body, "initial_device_display_name", str, required=False),
        refresh_token=bool(field(body, "refresh_token", bool, required=False)),
    )
    return ok(_login_response(result, core.server.server_name))


async def refresh(request: web.Request) -> web.Response:
    body = await json_body(request)
    result = await core_of(request).auth.refresh(field(body, "refresh_token", str))
    return ok(
        {
            "access_token": result.access_token,
            "refresh_token": result.refresh_token,
            "expires_in_ms": result.expires_in_ms,
        }
    )


async def logout(request: web.Request) -> web.Response:
    await core_of(request).auth.logout(await requester(request))
    return ok()


async def logout_all(request: web.Request) -> web.Response:
    who = await requester(request)
    await core_of(request).auth.logout_all(who.user_id)
    return ok()


async def whoami(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok({"user_id": who.user_id, "device_id": who.device_id, "is_guest": False})


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    v1 = "/_matrix/client/v1"
    return [
        web.post(f"{v3}/register", register),
        web.get(f"{v1}/register/m.login.registration_token/validity", registration_token_validity),
        web.get(f"{v3}/register/available", register_available),
        web.get(f"{v3}/login", login_flows),
        web.post(f"{v3}/login", login),
        web.post(f"{v3}/refresh", refresh),
        web.post(f"{v3}/logout", logout),
        web.post(f"{v3}/logout/all", logout_all),
        web.get(f"{v3}/account/whoami", whoami),
    ]
