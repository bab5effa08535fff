"""POST /user/{userId}/openid/request_token (C-S API "OpenID"): a token for the requester
alone, which the server then exchanges for the user's ID (S-S /openid/userinfo, here through
the handler; tests/federation/test_federation_openid.py goes over HTTP) and which is good for
nothing else."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from client_api.http import CORE
from homeserver.config import RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import MatrixError
from homeserver.handlers.openid import OpenIdTokens
from homeserver.storage import Storage
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = ("client-server/openid.yaml", "/user/{userId}/openid/request_token", "post")


def request_path(user_id: str) -> str:
    return f"{V3}/user/{quote(user_id, safe='')}/openid/request_token"


async def request_token(rest: RestHelper, user: User | None, user_id: str, expect: int) -> Any:
    return await rest.request("POST", request_path(user_id), user, {}, expect=expect)


async def test_request_token(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    token = await request_token(rest, alice, alice.user_id, 200)
    assert_response_valid(*API, 200, token)
    assert token["token_type"] == "Bearer"
    assert token["matrix_server_name"] == "test.local"
    assert token["expires_in"] == 3600
    assert await client_core.openid.user_info(token["access_token"]) == {"sub": alice.user_id}
    again = await request_token(rest, alice, alice.user_id, 200)
    assert again["access_token"] != token["access_token"]
    assert await client_core.openid.user_info(again["access_token"]) == {"sub": alice.user_id}


async def test_the_token_is_no_access_token(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    token = await request_token(rest, alice, alice.user_id, 200)
    openid_user = User(alice.user_id, token["access_token"], alice.device_id)
    refused = await rest.request("GET", f"{V3}/account/whoami", openid_user, expect=401)
    assert refused["errcode"] == "M_UNKNOWN_TOKEN"
    again = await request_token(rest, openid_user, alice.user_id, 401)
    assert again["errcode"] == "M_UNKNOWN_TOKEN"


async def test_only_for_oneself(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    refused = await request_token(rest, alice, bob.user_id, 403)
    assert refused["errcode"] == "M_FORBIDDEN"


async def test_needs_an_access_token(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    refused = await request_token(rest, None, alice.user_id, 401)
    assert refused["errcode"] == "M_MISSING_TOKEN"


async def test_body_must_be_a_json_object(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    refused = await rest.request("POST", request_path(alice.user_id), alice, [], expect=400)
    assert refused["errcode"] == "M_BAD_JSON"


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def time_ms(self) -> int:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000_000)


@pytest.fixture
async def timed_client(
    storage: Storage, server_keys: ServerKeys, clock: ManualClock, aiohttp_client: ClientFactory
) -> TestClient[Any, Any]:
    core = build_core(
        storage,
        "test.local",
        server_keys,
        clock=clock,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
    )
    return await aiohttp_client(client_app(core))


async def test_the_token_expires(timed_client: TestClient[Any, Any], clock: ManualClock) -> None:
    rest = RestHelper(timed_client)
    alice = await rest.register("alice")
    token = (await request_token(rest, alice, alice.user_id, 200))["access_token"]
    openid = timed_client.app[CORE].openid
    clock.now += OpenIdTokens.LIFETIME_MS - 1
    assert await openid.user_info(token) == {"sub": alice.user_id}
    clock.now += 1
    with pytest.raises(MatrixError) as expired:
        await openid.user_info(token)
    assert (expired.value.status, expired.value.errcode) == (401, "M_UNKNOWN_TOKEN")
