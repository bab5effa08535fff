"""Device management and account management (C-S API "Device Management", "Account
registration and management"): listing, renaming and deleting devices behind user-interactive
auth, password changes and deactivation."""

from __future__ import annotations

from typing import Any

from homeserver.core import Core
from homeserver.handlers.devices import LAST_SEEN_INTERVAL_MS, DeviceHandler
from tests.client_api.user_data_rooms import make_room
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

API = "client-server/device_management.yaml"
ERROR = "api/client-server/definitions/errors/error.yaml"
PASSWORD = "correct horse"




async def login(
    rest: RestHelper, localpart: str, password: str = PASSWORD, expect: int = 200, **extra: Any
) -> Any:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": password,
        **extra,
    }
    done = await rest.request("POST", f"{V3}/login", body=body, expect=expect)
    if expect != 200:
        return done
    return User(done["user_id"], done["access_token"], done["device_id"])


def password_auth(user: str, password: str = PASSWORD, session: str | None = None) -> Any:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    if session:
        auth["session"] = session
    return auth


async def test_list_get_and_rename_devices(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    phone = await login(rest, "alice", initial_device_display_name="phone")
    listed = await rest.request("GET", f"{V3}/devices", alice)
    assert_response_valid(API, "/devices", "get", 200, listed)
    by_id = {d["device_id"]: d for d in listed["devices"]}
    assert set(by_id) == {alice.device_id, phone.device_id}
    assert by_id[phone.device_id]["display_name"] == "phone"
    assert isinstance(by_id[alice.device_id]["last_seen_ts"], int)
    # The request that listed them came from alice's device, from the test client's address.
    assert by_id[alice.device_id]["last_seen_ip"] == "127.0.0.1"

    one = await rest.request("GET", f"{V3}/devices/{phone.device_id}", alice)
    assert_response_valid(API, "/devices/{deviceId}", "get", 200, one)
    assert one["display_name"] == "phone"
    renamed = await rest.request(
        "PUT", f"{V3}/devices/{phone.device_id}", alice, {"display_name": "old phone"}
    )
    assert_response_valid(API, "/devices/{deviceId}", "put", 200, renamed)
    one = await rest.request("GET", f"{V3}/devices/{phone.device_id}", phone)
    assert one["display_name"] == "old phone"
    # No display_name: nothing changes.
    await rest.request("PUT", f"{V3}/devices/{phone.device_id}", alice, {})
    assert (await rest.request("GET", f"{V3}/devices/{phone.device_id}", alice))[
        "display_name"
    ] == "old phone"


async def test_device_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    # Another user's device is as unknown as a device that does not exist.
    for device_id in ("NOSUCHDEVICE", bob.device_id):
        missing = await rest.request("GET", f"{V3}/devices/{device_id}", alice, expect=404)
        assert_valid(ERROR, missing)
        assert missing["errcode"] == "M_NOT_FOUND"
        missing = await rest.request(
            "PUT", f"{V3}/devices/{device_id}", alice, {"display_name": "x"}, 404
        )
        assert missing["errcode"] == "M_NOT_FOUND"
    bad = await rest.request(
        "PUT", f"{V3}/devices/{alice.device_id}", alice, {"display_name": 3}, 400
    )
    assert bad["errcode"] == "M_INVALID_PARAM"
    no_token = await rest.request("GET", f"{V3}/devices", expect=401)
    assert no_token["errcode"] == "M_MISSING_TOKEN"
    bad_list = await rest.request(
        "POST", f"{V3}/delete_devices", alice, {"devices": "ABC"}, expect=400
    )
    assert bad_list["errcode"] == "M_INVALID_PARAM"
    missing_list = await rest.request("POST", f"{V3}/delete_devices", alice, {}, expect=400)
    assert missing_list["errcode"] == "M_MISSING_PARAM"


async def test_delete_device_needs_the_password(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    phone = await login(rest, "alice")
    path = f"{V3}/devices/{phone.device_id}"
    first = await rest.request("DELETE", path, alice, {}, expect=401)
    assert_response_valid(API, "/devices/{deviceId}", "delete", 401, first)
    assert first["flows"] == [{"stages": ["m.login.password"]}]
    wrong = await rest.request(
        "DELETE", path, alice, {"auth": password_auth("alice", "wrong", first["session"])}, 401
    )
    assert_response_valid(API, "/devices/{deviceId}", "delete", 401, wrong)
    assert wrong["errcode"] == "M_FORBIDDEN"
    # The password of another user does not authorise deleting alice's devices.
    await rest.register("mallory")
    other = await rest.request(
        "DELETE", path, alice, {"auth": password_auth("mallory", session=first["session"])}, 401
    )
    assert other["errcode"] == "M_FORBIDDEN"
    await rest.request("GET", f"{V3}/account/whoami", phone)  # still logged in

    done = await rest.request(
        "DELETE",
        path,
        alice,
        {"auth": password_auth("@alice:test.local", session=first["session"])},
    )
    assert_response_valid(API, "/devices/{deviceId}", "delete", 200, done)
    revoked = await rest.request("GET", f"{V3}/account/whoami", phone, expect=401)
    assert revoked["errcode"] == "M_UNKNOWN_TOKEN"
    listed = await rest.request("GET", f"{V3}/devices", alice)
    assert [d["device_id"] for d in listed["devices"]] == [alice.device_id]
    # Deleting it again succeeds ("or had been removed previously").
    await rest.request("DELETE", path, alice, {"auth": password_auth("alice")})


async def test_delete_devices(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    phone = await login(rest, "alice")
    tablet = await login(rest, "alice")
    body: dict[str, Any] = {"devices": [phone.device_id, tablet.device_id, "UNKNOWN"]}
    first = await rest.request("POST", f"{V3}/delete_devices", alice, body, expect=401)
    assert_response_valid(API, "/delete_devices", "post", 401, first)
    body["auth"] = password_auth("alice", session=first["session"])
    done = await rest.request("POST", f"{V3}/delete_devices", alice, body)
    assert_response_valid(API, "/delete_devices", "post", 200, done)
    for gone in (phone, tablet):
        await rest.request("GET", f"{V3}/account/whoami", gone, expect=401)
    await rest.request("GET", f"{V3}/account/whoami", alice)


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def time_ms(self) -> int:
        return self.now


async def test_last_seen_is_written_at_most_once_a_minute(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    clock = ManualClock(1_000_000)
    c = client_core
    devices = DeviceHandler(c.storage, c.user_data, c.auth, c.uia, c.events, clock)

    async def last_seen() -> tuple[int | None, str | None]:
        [device] = await c.storage.accounts.get_devices(alice.user_id)
        return device.last_seen_ts, device.last_seen_ip

    await devices.note_seen(alice.user_id, alice.device_id, "10.0.0.1")
    assert await last_seen() == (1_000_000, "10.0.0.1")
    clock.now += LAST_SEEN_INTERVAL_MS - 1
    await devices.note_seen(alice.user_id, alice.device_id, "10.0.0.2")
    assert await last_seen() == (1_000_000, "10.0.0.1")
    clock.now += 1
    await devices.note_seen(alice.user_id, alice.device_id, "10.0.0.2")
    assert await last_seen() == (clock.now, "10.0.0.2")


async def test_change_password(rest: RestHelper) -> None:
    api = "client-server/password_management.yaml"
    alice = await rest.register("alice")
    phone = await login(rest, "alice")
    body: dict[str, Any] = {"new_password": "new secret"}
    first = await rest.request("POST", f"{V3}/account/password", alice, body, expect=401)
    assert_response_valid(api, "/account/password", "post", 401, first)
    body["auth"] = password_auth("alice", session=first["session"])
    done = await rest.request("POST", f"{V3}/account/password", alice, body)
    assert_response_valid(api, "/account/password", "post", 200, done)
    # logout_devices defaults to true: the other device is gone, this one stays.
    await rest.request("GET", f"{V3}/account/whoami", phone, expect=401)
    await rest.request("GET", f"{V3}/account/whoami", alice)
    await login(rest, "alice", expect=403)
    laptop = await login(rest, "alice", "new secret")

    # logout_devices false keeps every device; no access token: the password stage names the
    # user.
    body = {
        "new_password": "newer",
        "logout_devices": False,
        "auth": password_auth("alice", "new secret"),
    }
    await rest.request("POST", f"{V3}/account/password", None, body)
    await rest.request("GET", f"{V3}/account/whoami", laptop)
    await login(rest, "alice", "newer")

    missing = await rest.request("POST", f"{V3}/account/password", alice, {}, expect=400)
    assert missing["errcode"] == "M_MISSING_PARAM"
    wrong = await rest.request(
        "POST",
        f"{V3}/account/password",
        alice,
        {"new_password": "x", "auth": password_auth("alice", "new secret")},
        expect=401,
    )
    assert_response_valid(api, "/account/password", "post", 401, wrong)
    assert wrong["errcode"] == "M_FORBIDDEN"


async def test_deactivate(rest: RestHelper, client_core: Core) -> None:
    api = "client-server/account_deactivation.yaml"
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    phone = await login(rest, "alice")
    room_id = await make_room(client_core, bob.user_id, alice.user_id)
    own_room = await make_room(client_core, alice.user_id, bob.user_id)
    first = await rest.request("POST", f"{V3}/account/deactivate", alice, {}, expect=401)
    assert_response_valid(api, "/account/deactivate", "post", 401, first)
    wrong = await rest.request(
        "POST",
        f"{V3}/account/deactivate",
        alice,
        {"auth": password_auth("alice", "nope", first["session"])},
        expect=401,
    )
    assert wrong["errcode"] == "M_FORBIDDEN"
    done = await rest.request(
        "POST",
        f"{V3}/account/deactivate",
        alice,
        {"auth": password_auth("alice", session=first["session"])},
    )
    assert_response_valid(api, "/account/deactivate", "post", 200, done)
    assert done == {"id_server_unbind_result": "success"}
    for token_of in (alice, phone):
        gone = await rest.request("GET", f"{V3}/account/whoami", token_of, expect=401)
        assert gone["errcode"] == "M_UNKNOWN_TOKEN"
    refused = await login(rest, "alice", expect=403)
    assert refused["errcode"] in ("M_FORBIDDEN", "M_USER_DEACTIVATED")
    rooms = client_core.storage.rooms
    for room in (room_id, own_room):
        assert await rooms.get_membership(room, alice.user_id) == "leave"
        assert await rooms.get_membership(room, bob.user_id) == "join"
    assert await rooms.get_rooms_for_user(alice.user_id) == []
    # The user ID stays taken.
    taken = await rest.request("POST", f"{V3}/register", body={"username": "alice"}, expect=400)
    assert taken["errcode"] == "M_USER_IN_USE"
