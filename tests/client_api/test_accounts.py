"""Registration, login, tokens and discovery over a real socket, with response shapes checked
against the spec's OpenAPI definitions."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid


async def test_discovery(rest: RestHelper) -> None:
    versions = await rest.request("GET", "/_matrix/client/versions")
    assert_response_valid("client-server/versions.yaml", "/versions", "get", 200, versions)
    assert {"v1.1", "v1.11"} <= set(versions["versions"])
    well_known = await rest.request("GET", "/.well-known/matrix/client")
    assert_response_valid("client-server/wellknown.yaml", "/matrix/client", "get", 200, well_known)
    alice = await rest.register("alice")
    caps = await rest.request("GET", f"{V3}/capabilities", alice)
    assert_response_valid("client-server/capabilities.yaml", "/capabilities", "get", 200, caps)
    assert caps["capabilities"]["m.room_versions"]["default"] == "12"


async def test_register_with_the_dummy_flow_then_whoami(rest: RestHelper) -> None:
    first = await rest.request(
        "POST", f"{V3}/register", body={"username": "Alice", "password": "pw"}, expect=401
    )
    assert_response_valid("client-server/registration.yaml", "/register", "post", 401, first)
    assert first["flows"] == [{"stages": ["m.login.dummy"]}] and first["session"]
    done = await rest.request(
        "POST",
        f"{V3}/register",
        body={
            "username": "Alice",
            "password": "pw",
            "auth": {"type": "m.login.dummy", "session": first["session"]},
            "initial_device_display_name": "laptop",
        },
    )
    assert_response_valid("client-server/registration.yaml", "/register", "post", 200, done)
    assert done["user_id"] == "@alice:test.local"
    user = User(done["user_id"], done["access_token"], done["device_id"])
    body = await rest.request("GET", f"{V3}/account/whoami", user)
    assert_response_valid("client-server/whoami.yaml", "/account/whoami", "get", 200, body)
    assert body == {
        "user_id": "@alice:test.local",
        "device_id": done["device_id"],
        "is_guest": False,
    }


async def test_registration_errors(rest: RestHelper, client_core: Core) -> None:
    await rest.register("bob")
    taken = await rest.request("POST", f"{V3}/register", body={"username": "bob"}, expect=400)
    assert taken["errcode"] == "M_USER_IN_USE"
    bad = await rest.request("POST", f"{V3}/register", body={"username": "b ob"}, expect=400)
    assert bad["errcode"] == "M_INVALID_USERNAME"
    available = await rest.request("GET", f"{V3}/register/available", username="carol")
    assert_response_valid(
        "client-server/registration.yaml", "/register/available", "get", 200, available
    )
    assert available == {"available": True}
    taken = await rest.request("GET", f"{V3}/register/available", username="bob", expect=400)
    assert taken["errcode"] == "M_USER_IN_USE"
    guest = await rest.request("POST", f"{V3}/register", body={}, expect=403, kind="guest")
    assert guest["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    not_json = await rest.client.post(f"{V3}/register", data=b"{nope")
    assert not_json.status == 400 and (await not_json.json())["errcode"] == "M_NOT_JSON"
    client_core.registration.enabled = False
    closed = await rest.request("POST", f"{V3}/register", body={"username": "dave"}, expect=403)
    assert closed["errcode"] == "M_FORBIDDEN"


async def test_login_logout_and_tokens(rest: RestHelper, client: TestClient[Any, Any]) -> None:
    alice = await rest.register("alice", "secret")
    flows = await rest.request("GET", f"{V3}/login")
    assert_response_valid("client-server/login.yaml", "/login", "get", 200, flows)
    wrong = await rest.request(
        "POST",
        f"{V3}/login",
        body={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "wrong",
        },
        expect=403,
    )
    assert wrong["errcode"] == "M_FORBIDDEN"
    unknown = await rest.request(
        "POST",
        f"{V3}/login",
        body={"type": "m.login.password", "user": "nobody", "password": "secret"},
        expect=403,
    )
    assert unknown["errcode"] == "M_FORBIDDEN"
    login = await rest.request(
        "POST",
        f"{V3}/login",
        body={
            "type": "m.login.password",
            "user": "@alice:test.local",
            "password": "secret",
            "refresh_token": True,
        },
    )
    assert_response_valid("client-server/login.yaml", "/login", "post", 200, login)
    assert login["device_id"] != alice.device_id and login["expires_in_ms"] > 0
    # Refreshing (and the old pair's lifetime) is tested in test_refresh_tokens.py.
    refreshed = await rest.request(
        "POST", f"{V3}/refresh", body={"refresh_token": login["refresh_token"]}
    )
    new = {"Authorization": f"Bearer {refreshed['access_token']}"}
    assert (await client.get(f"{V3}/account/whoami", headers=new)).status == 200

    await rest.request("POST", f"{V3}/logout", alice)
    gone = await client.get(f"{V3}/account/whoami", headers=alice.headers)
    assert gone.status == 401 and (await gone.json())["errcode"] == "M_UNKNOWN_TOKEN"
    await rest.request(
        "POST", f"{V3}/logout/all", User(alice.user_id, refreshed["access_token"], "")
    )
    assert (await client.get(f"{V3}/account/whoami", headers=new)).status == 401
    missing = await client.get(f"{V3}/account/whoami")
    assert missing.status == 401 and (await missing.json())["errcode"] == "M_MISSING_TOKEN"


async def test_passwords_and_tokens_are_stored_hashed(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice", "hunter2")
    db = client_core.storage.db
    password_hash = await db.fetchval("SELECT password_hash FROM users")
    assert password_hash.startswith("$argon2id$") and "hunter2" not in password_hash
    stored = [r[0] for r in await db.fetch("SELECT token_hash FROM access_tokens")]
    assert alice.access_token not in stored and len(stored) == 1
