"""Device management (C-S API "Device Management") and account management ("Account
registration and management": POST /account/password, POST /account/deactivate)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from client_api.http import access_token, core_of, field, json_body, ok, requester
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import Requester
from homeserver.storage.stores.accounts import Device


async def _optional_requester(request: web.Request) -> Requester | None:
    """Password change and deactivation accept a request without an access token, whose
    user is then the one the password stage authenticates."""
    if access_token(request) is None:
        return None
    return await requester(request)


def _device_json(device: Device) -> dict[str, Any]:
    body: dict[str, Any] = {"device_id": device.device_id}
    for key, value in (
        ("display_name", device.display_name),
        ("last_seen_ip", device.last_seen_ip),
        ("last_seen_ts", device.last_seen_ts),
    ):
        if value is not None:
            body[key] = value
    return body


async def get_devices(request: web.Request) -> web.Response:
    who = await requester(request)
    devices = await core_of(request).devices.get_devices(who.user_id)
    return ok({"devices": [_device_json(d) for d in devices]})


async def get_device(request: web.Request) -> web.Response:
    who = await requester(request)
    device = await core_of(request).devices.get_device(who.user_id, request.match_info["deviceId"])
    return ok(_device_json(device))


async def update_device(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    display_name = field(body, "display_name", str, required=False)
    devices = core_of(request).devices
    device_id = request.match_info["deviceId"]
    if display_name is None:
        await devices.get_device(who.user_id, device_id)  # still 404 for an unknown device
    else:
        await devices.rename_device(who.user_id, device_id, display_name)
    return ok()


async def delete_device(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    auth = field(body, "auth", dict, required=False)
    await core_of(request).devices.delete_devices(
        who.user_id, [request.match_info["deviceId"]], auth
    )
    return ok()


async def delete_devices(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    device_ids = field(body, "devices", list)
    if not all(isinstance(d, str) for d in device_ids):
        raise MatrixError("devices must be a list of device IDs", Codes.INVALID_PARAM)
    auth = field(body, "auth", dict, required=False)
    await core_of(request).devices.delete_devices(who.user_id, device_ids, auth)
    return ok()


async def change_password(request: web.Request) -> web.Response:
    who = await _optional_requester(request)
    body = await json_body(request)
    new_password = field(body, "new_password", str)
    if not new_password:
        raise MatrixError("The new password must not be empty", Codes.INVALID_PARAM)
    logout_devices = field(body, "logout_devices", bool, required=False)
    await core_of(request).devices.change_password(
        who.user_id if who else None,
        who.device_id if who else None,
        new_password,
        logout_devices is not False,  # default true
        field(body, "auth", dict, required=False),
    )
    return ok()


async def deactivate(request: web.Request) -> web.Response:
    who = await _optional_requester(request)
    body = await json_body(request)
    field(body, "erase", bool, required=False)  # type-checked; erasure is not implemented
    field(body, "id_server", str, required=False)
    await core_of(request).devices.deactivate(
        who.user_id if who else None, field(body, "auth", dict, required=False)
    )
    # No third-party identifier is ever bound to an identity server, so none is left bound.
    return ok({"id_server_unbind_result": "success"})


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3"
    return [
        web.get(f"{v3}/devices", get_devices),
        web.get(f"{v3}/devices/{{deviceId}}", get_device),
        web.put(f"{v3}/devices/{{deviceId}}", update_device),
        web.delete(f"{v3}/devices/{{deviceId}}", delete_device),
        web.post(f"{v3}/delete_devices", delete_devices),
        web.post(f"{v3}/account/password", change_password),
        web.post(f"{v3}/account/deactivate", deactivate),
    ]
