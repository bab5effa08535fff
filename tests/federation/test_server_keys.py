"""GET /_matrix/key/v2/server (S2S "Publishing Keys"): shape, validity, and a signature that
verifies with the published key."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from signedjson.key import (
    decode_verify_key_bytes,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from client_api.middleware import install_client_middleware
from federation.server.keys import KEY_VALIDITY_MS, ServerKeyServlet, server_keys_json
from homeserver.app import SERVER_KEYS, STORAGE, build_app
from homeserver.config import Config, ListenerConfig, OldSigningKey, default_config
from homeserver.crypto.keys import OldVerifyKey, ServerKeys, load_or_create_server_keys
from tests.helpers.spec_schemas import assert_valid

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
NOW = 1_700_000_000_000


class FixedClock:
    def time_ms(self) -> int:
        return NOW


def verify(body: dict[str, Any], server_name: str) -> None:
    """Verify as a remote server would: with the key the response itself publishes; and
    check the shape against the spec's schema (data/api/server-server/definitions/keys.yaml)."""
    assert_valid("api/server-server/definitions/keys.yaml", body)
    [(key_id, entry)] = body["verify_keys"].items()
    verify_key = decode_verify_key_bytes(key_id, decode_base64(entry["key"]))
    verify_signed_json(body, server_name, verify_key)
    assert set(body["signatures"][server_name]) == {key_id}


async def test_server_keys_endpoint(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    keys = await asyncio.to_thread(load_or_create_server_keys, tmp_path / "signing.key")
    app = web.Application()
    install_client_middleware(app)
    ServerKeyServlet("example.org", keys, FixedClock()).register(app.router)
    client = await aiohttp_client(app)

    resp = await client.get("/_matrix/key/v2/server")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["server_name"] == "example.org"
    assert body["verify_keys"] == {keys.key_id: {"key": keys.verify_key_base64}}
    assert body["old_verify_keys"] == {}
    assert body["valid_until_ts"] == NOW + KEY_VALIDITY_MS
    # Spec: responses should not expire within the hour; remote servers cap at 7 days.
    assert 3600_000 < KEY_VALIDITY_MS <= 7 * 24 * 3600_000
    verify(body, "example.org")


def test_old_verify_keys_are_published_and_covered_by_the_signature() -> None:
    signing_key = generate_signing_key("a_new1")
    old_key = generate_signing_key("a_old1")
    keys = ServerKeys(
        signing_key,
        {"ed25519:a_old1": OldVerifyKey(get_verify_key(old_key), 1_600_000_000_000)},
    )
    body = server_keys_json("example.org", keys, NOW)
    [(key_id, entry)] = body["old_verify_keys"].items()
    assert key_id == "ed25519:a_old1"
    assert entry["expired_ts"] == 1_600_000_000_000
    assert decode_base64(entry["key"]) == get_verify_key(old_key).encode()
    verify(body, "example.org")
    # Tampering with anything signed breaks the signature.
    body["old_verify_keys"][key_id]["expired_ts"] += 1
    with pytest.raises(SignatureVerifyException):
        verify(body, "example.org")


def app_config(tmp_path: Path, listeners: list[ListenerConfig] | None = None) -> Config:
    config = default_config(tmp_path / "data", server_name="example.org")
    if listeners is not None:
        config.listeners = listeners
    return config


async def test_served_by_the_composition_root(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    config = app_config(tmp_path)
    app = await build_app(config)
    assert app[SERVER_KEYS].key_id.startswith("ed25519:a_")
    client = await aiohttp_client(app)
    assert app[STORAGE] is not None  # opened by the cleanup context on startup

    resp = await client.get("/_matrix/key/v2/server")
    assert resp.status == 200
    body = await resp.json()
    assert body["server_name"] == "example.org"
    assert list(body["verify_keys"]) == [app[SERVER_KEYS].key_id]
    verify(body, "example.org")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (tmp_path / "data" / "example.org.signing.key").exists()
    assert (tmp_path / "data" / "homeserver.db").exists()

    resp = await client.get("/_matrix/client/v3/unknown")
    assert resp.status == 404
    assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_config_old_signing_keys_are_published(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    old_key = generate_signing_key("a_old2")
    config = app_config(tmp_path)
    config.old_signing_keys = {
        "ed25519:a_old2": OldSigningKey(encode_verify_key_base64(get_verify_key(old_key)), 123)
    }
    client = await aiohttp_client(await build_app(config))
    body = await (await client.get("/_matrix/key/v2/server")).json()
    assert body["old_verify_keys"] == {
        "ed25519:a_old2": {
            "key": encode_verify_key_base64(get_verify_key(old_key)),
            "expired_ts": 123,
        }
    }
    verify(body, "example.org")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_listener_serves_only_its_resources(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    client_port, federation_port = _free_port(), _free_port()
    config = app_config(
        tmp_path,
        [
            ListenerConfig(port=client_port, resources=["client"]),
            ListenerConfig(port=federation_port, resources=["federation"]),
        ],
    )
    app = await build_app(config)
    server = await aiohttp_server(app, port=client_port)
    url = f"http://127.0.0.1:{server.port}/_matrix/key/v2/server"
    async with ClientSession() as session, session.get(url) as resp:
        assert resp.status == 404
        assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    # The same configuration, reached on the federation listener's port, serves the keys.
    server = await aiohttp_server(await build_app(config), port=federation_port)
    url = f"http://127.0.0.1:{server.port}/_matrix/key/v2/server"
    async with ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
