"""Rate limits (429 M_LIMIT_EXCEEDED with retry_after_ms) and the request body limit (413)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.config import LimitsConfig, RateLimit, RegistrationConfig, parse_config
from homeserver.core import build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import MatrixError
from homeserver.ratelimit import RateLimiter
from homeserver.storage import Storage
from tests.client_api.conftest import ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper


class StoppedClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def time_ms(self) -> int:
        return self.now


def test_token_bucket_refills_at_its_rate() -> None:
    clock = StoppedClock()
    limiter = RateLimiter(RateLimit(per_second=2, burst=3), clock)
    for _ in range(3):
        limiter.check("alice")
    with pytest.raises(MatrixError) as raised:
        limiter.check("alice")
    assert raised.value.errcode == "M_LIMIT_EXCEEDED"
    assert raised.value.to_json()["retry_after_ms"] == 501
    limiter.check("bob")  # buckets are per key
    clock.now += 500
    limiter.check("alice")
    RateLimiter(RateLimit(0, 0), clock).check("anyone")  # per_second 0: no limit


async def default_limits(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> RestHelper:
    core = build_core(
        storage, "test.local", server_keys, registration=RegistrationConfig(enabled=True)
    )
    return RestHelper(await aiohttp_client(client_app(core)))


async def test_right_passwords_do_not_count_towards_the_lockout(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    rest = await default_limits(aiohttp_client, storage, server_keys)
    await rest.register("alice", "secret")
    login = {"type": "m.login.password", "user": "alice", "password": "secret"}
    # More than the per-account burst, but under the per-address one.
    for _ in range(LimitsConfig().login_account.burst + 2):
        await rest.request("POST", f"{V3}/login", body=login)


async def test_login_attempts_are_limited(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    rest = await default_limits(aiohttp_client, storage, server_keys)
    await rest.register("alice", "secret")
    burst = LimitsConfig().login_account.burst
    for _ in range(burst):
        await rest.request(
            "POST",
            f"{V3}/login",
            body={"type": "m.login.password", "user": "alice", "password": "wrong"},
            expect=403,
        )
    limited = await rest.request(
        "POST",
        f"{V3}/login",
        body={"type": "m.login.password", "user": "alice", "password": "secret"},
        expect=429,
    )
    assert limited["errcode"] == "M_LIMIT_EXCEEDED" and limited["retry_after_ms"] > 0


async def test_oversized_bodies_are_refused(client: TestClient[Any, Any]) -> None:
    big = b'{"username": "' + b"a" * (LimitsConfig().max_request_body_size + 1) + b'"}'
    response = await client.post(f"{V3}/register", data=big)
    assert response.status == 413
    assert (await response.json())["errcode"] == "M_TOO_LARGE"


def test_limits_are_configurable(tmp_path: Any) -> None:
    config = parse_config(
        "server_name: example.org\nlimits:\n  max_request_body_size: 2M\n"
        "  messages:\n    per_second: 0.5\n    burst: 3\n",
        tmp_path,
    )
    assert config.limits.max_request_body_size == 2 * 1024 * 1024
    assert config.limits.messages == RateLimit(0.5, 3)
    assert config.limits.login_ip == LimitsConfig().login_ip
