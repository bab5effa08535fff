"""Refresh tokens (C-S API "Refreshing access tokens", POST /refresh): the old pair stays valid
until the new access or refresh token is first used, so a client that lost a /refresh answer
can repeat it; expired access tokens are a soft logout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.config import RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.auth import AuthHandler
from homeserver.storage import Storage
from homeserver.storage.database import Database
from homeserver.storage.migrations import migrations_for
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid

REFRESH = "client-server/refresh.yaml"
WHOAMI = "client-server/whoami.yaml"


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def time_ms(self) -> int:
        return self.now


async def login(rest: RestHelper, localpart: str) -> dict[str, Any]:
    """A password login asking for a refresh token."""
    await rest.register(localpart, "secret")
    body = {"type": "m.login.password", "user": localpart, "password": "secret"}
    done = await rest.request("POST", f"{V3}/login", body={**body, "refresh_token": True})
    assert_response_valid("client-server/login.yaml", "/login", "post", 200, done)
    assert done["expires_in_ms"] == AuthHandler.ACCESS_TOKEN_LIFETIME_MS
    return dict(done)


async def refresh(rest: RestHelper, refresh_token: str, expect: int = 200) -> Any:
    body = await rest.request(
        "POST", f"{V3}/refresh", body={"refresh_token": refresh_token}, expect=expect
    )
    assert_response_valid(REFRESH, "/refresh", "post", expect, body)
    if expect == 200:
        assert body["expires_in_ms"] == AuthHandler.ACCESS_TOKEN_LIFETIME_MS
        assert body["refresh_token"] != refresh_token
    return body


async def whoami(client: TestClient[Any, Any], access_token: str) -> tuple[int, Any]:
    response = await client.get(
        f"{V3}/account/whoami", headers={"Authorization": f"Bearer {access_token}"}
    )
    body = await response.json()
    assert_response_valid(WHOAMI, "/account/whoami", "get", response.status, body)
    return response.status, body


async def assert_works(client: TestClient[Any, Any], access_token: str) -> None:
    status, body = await whoami(client, access_token)
    assert status == 200, body


async def assert_revoked(client: TestClient[Any, Any], access_token: str) -> None:
    status, body = await whoami(client, access_token)
    assert status == 401, body
    assert body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is False


async def assert_refresh_revoked(rest: RestHelper, refresh_token: str) -> None:
    body = await refresh(rest, refresh_token, expect=401)
    assert body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is False


async def device_token_rows(core: Core, device_id: str) -> tuple[int, int]:
    db = core.storage.db
    access = await db.fetchval("SELECT COUNT(*) FROM access_tokens WHERE device_id = $1", device_id)
    refresh = await db.fetchval(
        "SELECT COUNT(*) FROM refresh_tokens WHERE device_id = $1", device_id
    )
    return access, refresh


async def test_a_lost_refresh_answer_can_be_repeated_until_the_new_pair_is_used(
    rest: RestHelper, client: TestClient[Any, Any], client_core: Core
) -> None:
    first = await login(rest, "alice")
    lost = await refresh(rest, first["refresh_token"])
    # The client never saw `lost`: its old pair still works, and it refreshes again.
    await assert_works(client, first["access_token"])
    second = await refresh(rest, first["refresh_token"])
    assert second["access_token"] != lost["access_token"]
    # Only one chain stays valid: the pair nobody received is gone.
    await assert_revoked(client, lost["access_token"])
    await assert_refresh_revoked(rest, lost["refresh_token"])
    await assert_works(client, first["access_token"])
    assert await device_token_rows(client_core, first["device_id"]) == (2, 2)

    # The first request with the new access token revokes the pair it replaced.
    await assert_works(client, second["access_token"])
    await assert_revoked(client, first["access_token"])
    await assert_refresh_revoked(rest, first["refresh_token"])
    await assert_works(client, second["access_token"])
    assert await device_token_rows(client_core, first["device_id"]) == (1, 1)

    # And so on down the chain.
    third = await refresh(rest, second["refresh_token"])
    await assert_works(client, second["access_token"])
    await assert_works(client, third["access_token"])
    await assert_revoked(client, second["access_token"])
    await assert_refresh_revoked(rest, second["refresh_token"])
    status, body = await whoami(client, third["access_token"])
    assert body["device_id"] == first["device_id"] and body["user_id"] == "@alice:test.local"


async def test_using_the_new_refresh_token_revokes_the_old_pair(
    rest: RestHelper, client: TestClient[Any, Any], client_core: Core
) -> None:
    first = await login(rest, "alice")
    second = await refresh(rest, first["refresh_token"])
    # Refreshing again with the new refresh token is a use of the new pair.
    third = await refresh(rest, second["refresh_token"])
    await assert_refresh_revoked(rest, first["refresh_token"])
    await assert_revoked(client, first["access_token"])
    # The second pair in turn lives until the third is used.
    await assert_works(client, second["access_token"])
    await assert_works(client, third["access_token"])
    await assert_revoked(client, second["access_token"])
    await assert_refresh_revoked(rest, second["refresh_token"])
    assert await device_token_rows(client_core, first["device_id"]) == (1, 1)


async def test_refresh_errors_and_logout(rest: RestHelper, client: TestClient[Any, Any]) -> None:
    await assert_refresh_revoked(rest, "syr_never_issued")
    missing = await rest.request("POST", f"{V3}/refresh", body={}, expect=400)
    assert missing["errcode"] == "M_MISSING_PARAM"
    first = await login(rest, "alice")
    second = await refresh(rest, first["refresh_token"])
    # Logging out with the new token ends the device: the old pair dies with it.
    logout = await client.post(
        f"{V3}/logout", headers={"Authorization": f"Bearer {second['access_token']}"}, json={}
    )
    assert logout.status == 200
    for token in (first["access_token"], second["access_token"]):
        await assert_revoked(client, token)
    for token in (first["refresh_token"], second["refresh_token"]):
        await assert_refresh_revoked(rest, token)


async def test_concurrent_refreshes_leave_one_chain(
    rest: RestHelper, client: TestClient[Any, Any], client_core: Core
) -> None:
    first = await login(rest, "alice")
    answers = await asyncio.gather(*(refresh(rest, first["refresh_token"]) for _ in range(5)))
    assert await device_token_rows(client_core, first["device_id"]) == (2, 2)
    statuses = [(await whoami(client, a["access_token"]))[0] for a in answers]
    assert sorted(statuses) == [200, 401, 401, 401, 401]
    await assert_revoked(client, first["access_token"])

    # Many first requests at once with a refreshed token: all succeed, the old pair goes.
    current = answers[statuses.index(200)]
    after = await refresh(rest, current["refresh_token"])
    results = await asyncio.gather(*(whoami(client, after["access_token"]) for _ in range(5)))
    assert [status for status, _ in results] == [200] * 5
    await assert_revoked(client, current["access_token"])
    assert await device_token_rows(client_core, first["device_id"]) == (1, 1)


@pytest.fixture
async def clocked(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> tuple[RestHelper, ManualClock]:
    clock = ManualClock(1_000_000_000)
    core = build_core(
        storage,
        "test.local",
        server_keys,
        clock=clock,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
    )
    return RestHelper(await aiohttp_client(client_app(core))), clock


async def test_an_expired_access_token_is_a_soft_logout(
    clocked: tuple[RestHelper, ManualClock],
) -> None:
    rest, clock = clocked
    first = await login(rest, "alice")
    clock.now += first["expires_in_ms"]
    status, body = await whoami(rest.client, first["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is True

    second = await refresh(rest, first["refresh_token"])
    await assert_works(rest.client, second["access_token"])
    await assert_refresh_revoked(rest, first["refresh_token"])
    clock.now += second["expires_in_ms"] - 1
    await assert_works(rest.client, second["access_token"])

    # A request with an expired new token is not a use of it: the old refresh token stays
    # valid (the client may not have stored the new one).
    third = await refresh(rest, second["refresh_token"])
    clock.now += third["expires_in_ms"]
    status, body = await whoami(rest.client, third["access_token"])
    assert status == 401 and body["soft_logout"] is True
    fourth = await refresh(rest, second["refresh_token"])
    await assert_works(rest.client, fourth["access_token"])
    await assert_refresh_revoked(rest, second["refresh_token"])
    await assert_refresh_revoked(rest, third["refresh_token"])


async def test_migration_pairs_tokens_issued_before_it(database: Database) -> None:
    migrations = await asyncio.to_thread(migrations_for, database.dialect)
    [pairing] = [m for m in migrations if m.version == 6]
    for m in migrations:
        if m.version < pairing.version:
            await database.execute_script(m.sql)
    rows = [
        ("a_plain", "@a:x", "D1", None),
        ("a_expiring", "@a:x", "D2", 5),
        ("a_other", "@b:x", "D2", 5),
    ]
    for token, user, device, expires in rows:
        await database.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)"
            " VALUES ($1, $2, $3, 0, $4)",
            token,
            user,
            device,
            expires,
        )
    for token, user, device in [("r_a", "@a:x", "D2"), ("r_b", "@b:x", "D2")]:
        await database.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)"
            " VALUES ($1, $2, $3, 0)",
            token,
            user,
            device,
        )
    await database.execute_script(pairing.sql)
    paired = await database.fetch(
        "SELECT token_hash, refresh_token_hash, replaces_refresh_hash FROM access_tokens"
        " ORDER BY token_hash"
    )
    assert [tuple(r) for r in paired] == [
        ("a_expiring", "r_a", None),
        ("a_other", "r_b", None),
        ("a_plain", None, None),
    ]
