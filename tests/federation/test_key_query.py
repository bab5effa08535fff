"""The notary endpoints (S2S "Querying Keys Through Another Server"): GET
/_matrix/key/v2/query/{serverName} and POST /_matrix/key/v2/query, on both databases, with the
origins on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import verify_signed_json
from signedjson.types import VerifyKey

from client_api.middleware import install_client_middleware
from federation.server.key_query import KEYRING, KeyQueryServlet
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from tests.federation.test_keyring import (
    DAY,
    NOW,
    ORIGIN,
    US,
    Network,
    ServerFactory,
    open_network,
)
from tests.helpers.spec_schemas import assert_response_valid

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
OUR_KEYS = ServerKeys(generate_signing_key("u_1"))


@pytest.fixture
async def net(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Network]:
    async with open_network(aiohttp_server, tmp_path) as network:
        yield network


@pytest.fixture
async def notary(
    net: Network, storage: Storage, aiohttp_client: ClientFactory
) -> TestClient[Any, Any]:
    """This server as a notary on the storage under test."""
    app = web.Application()
    install_client_middleware(app)
    KeyQueryServlet(US, OUR_KEYS, net.clock).register(app.router)
    app[KEYRING] = net.keyring(storage.server_keys, keys=OUR_KEYS)
    return await aiohttp_client(app)


def check_signed(entry: dict[str, Any], server: str, key: VerifyKey) -> None:
    verify_signed_json(entry, server, key)
    verify_signed_json(entry, US, get_verify_key(OUR_KEYS.signing_key))


async def test_get_fetches_signs_and_caches(net: Network, notary: TestClient[Any, Any]) -> None:
    origin = await net.origin()
    for _ in range(2):
        resp = await notary.get(f"/_matrix/key/v2/query/{ORIGIN}")
        assert resp.status == 200
        body = await resp.json()
        assert_response_valid(
            "server-server/keys_query.yaml", "/query/{serverName}", "get", 200, body
        )
        [entry] = body["server_keys"]
        assert entry["verify_keys"] == {origin.keys.key_id: {"key": origin.keys.verify_key_base64}}
        assert set(entry["signatures"]) == {ORIGIN, US}
        check_signed(entry, ORIGIN, origin.verify_key)
    assert origin.requests == 1


async def test_post_answers_each_server(net: Network, notary: TestClient[Any, Any]) -> None:
    origin = await net.origin()
    query = {
        "server_keys": {
            ORIGIN: {origin.keys.key_id: {"minimum_valid_until_ts": NOW + DAY}},
            US: {},
            "unreachable.test": {},
        }
    }
    resp = await notary.post("/_matrix/key/v2/query", json=query)
    assert resp.status == 200
    body = await resp.json()
    assert_response_valid("server-server/keys_query.yaml", "/query", "post", 200, body)
    by_server = {entry["server_name"]: entry for entry in body["server_keys"]}
    assert set(by_server) == {ORIGIN, US}
    check_signed(by_server[ORIGIN], ORIGIN, origin.verify_key)
    # Our own keys: the response GET /_matrix/key/v2/server gives, signed by us.
    assert by_server[US]["verify_keys"] == {OUR_KEYS.key_id: {"key": OUR_KEYS.verify_key_base64}}
    verify_signed_json(by_server[US], US, get_verify_key(OUR_KEYS.signing_key))

    resp = await notary.post("/_matrix/key/v2/query", json={"server_keys": {}})
    assert (resp.status, await resp.json()) == (200, {"server_keys": []})


async def test_refreshes_stale_responses_and_serves_them_if_the_origin_is_down(
    net: Network, notary: TestClient[Any, Any]
) -> None:
    origin = await net.origin()
    assert (await notary.get(f"/_matrix/key/v2/query/{ORIGIN}")).status == 200
    # Asking for more than the cached response promises makes the notary ask again.
    url = f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={NOW + 2 * DAY}"
    assert (await notary.get(url)).status == 200
    assert origin.requests == 2
    # Past half its lifetime a response is refreshed; when that fails the old one still serves.
    net.clock.now = NOW + DAY // 2 + 1
    origin.up = False
    body = await (await notary.get(f"/_matrix/key/v2/query/{ORIGIN}")).json()
    assert origin.requests == 3
    [entry] = body["server_keys"]
    assert entry["valid_until_ts"] == NOW + DAY
    check_signed(entry, ORIGIN, origin.verify_key)


async def test_unknown_server_gives_an_empty_list(notary: TestClient[Any, Any]) -> None:
    resp = await notary.get("/_matrix/key/v2/query/unreachable.test")
    assert (resp.status, await resp.json()) == (200, {"server_keys": []})


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"{not json", "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b"{}", "M_MISSING_PARAM"),
        (b'{"server_keys": []}', "M_BAD_JSON"),
        (b'{"server_keys": {"origin.test": []}}', "M_BAD_JSON"),
        (b'{"server_keys": {"origin.test": {"ed25519:a": 1}}}', "M_BAD_JSON"),
        (
            b'{"server_keys": {"origin.test": {"ed25519:a": {"minimum_valid_until_ts": "1"}}}}',
            "M_BAD_JSON",
        ),
        (b'{"server_keys": {"not a server": {}}}', "M_INVALID_PARAM"),
    ],
)
async def test_post_rejects_bad_bodies(
    notary: TestClient[Any, Any], body: bytes, errcode: str
) -> None:
    resp = await notary.post("/_matrix/key/v2/query", data=body)
    assert resp.status == 400
    assert (await resp.json())["errcode"] == errcode


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/key/v2/query/bad%20name",
        f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts=soon",
        f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts=-1",
    ],
)
async def test_get_rejects_bad_parameters(notary: TestClient[Any, Any], path: str) -> None:
    resp = await notary.get(path)
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_INVALID_PARAM"
