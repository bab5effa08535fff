"""GET /_matrix/federation/v1/openid/userinfo (S-S API "OpenID") across real servers: a user on
A requests an OpenID token, and B, standing in for an integration manager, exchanges it at A by
an unsigned request after finding A by server discovery, as a third party would."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from federation.transport import FederationTransport, RemoteError
from homeserver.handlers.auth import token_hash
from tests.client_api.test_openid import request_path
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_reads import path, signed_as
from tests.helpers.spec_schemas import assert_response_valid

USERINFO = ("server-server/openid.yaml", "/openid/userinfo", "get")


async def user_info(fed: FederationTransport, server: Homeserver, **query: str) -> Any:
    """The answer of `server`, unsigned: a third party has no server key to sign with."""
    try:
        answer = await fed.request(
            server.server_name, "GET", path("openid/userinfo"), query, signed=False
        )
    except RemoteError as e:
        assert_response_valid(*USERINFO, e.status, e.body)
        return e.status, e.body
    assert_response_valid(*USERINFO, 200, answer)
    return 200, answer


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_userinfo_names_the_owner(tmp_path: Path, engine: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(homeservers(tmp_path, 2, engine))
        fed = await stack.enter_async_context(signed_as(b))
        alice = await a.rest.register("alice")
        token = await a.rest.request("POST", request_path(alice.user_id), alice, {})
        assert token["matrix_server_name"] == a.server_name
        assert await user_info(fed, a, access_token=token["access_token"]) == (
            200,
            {"sub": alice.user_id},
        )
        # Only A knows A's tokens: B has no user of that token.
        status, unknown_at_b = await user_info(fed, b, access_token=token["access_token"])
        assert (status, unknown_at_b["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_unknown_expired_and_missing_tokens(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(homeservers(tmp_path, 2))
        fed = await stack.enter_async_context(signed_as(b))
        alice = await a.rest.register("alice")
        status, unknown = await user_info(fed, a, access_token="not-a-token")
        assert (status, unknown["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        # The servers run on the system clock: a token stored as expired a second ago.
        now = a.core.clock.time_ms()
        await a.core.storage.openid.add_token(token_hash("stale"), alice.user_id, now - 1000, now)
        status, expired = await user_info(fed, a, access_token="stale")
        assert (status, expired["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        status, missing = await user_info(fed, a)
        assert (status, missing["errcode"]) == (401, "M_MISSING_TOKEN")
