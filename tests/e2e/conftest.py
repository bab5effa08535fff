"""The whole server, built from a config as `homeserver run` builds it, on a real socket, for
real clients (matrix-nio) to talk to. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from homeserver.app import build_app
from homeserver.config import (
    LimitsConfig,
    RateLimit,
    RegistrationConfig,
    default_config,
)
from tests.conftest import POSTGRES_DSN, drop_postgres_schema, make_postgres_database

UNLIMITED = RateLimit(0, 0)


@pytest.fixture(params=["sqlite", "postgres"])
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    config = default_config(tmp_path / "data", server_name="e2e.test")
    config.registration = RegistrationConfig(enabled=True)
    # Tests act faster than people: no rate limits.
    config.limits = LimitsConfig(
        messages=UNLIMITED,
        login_ip=UNLIMITED,
        login_account=UNLIMITED,
        registration_ip=UNLIMITED,
    )
    schema = None
    if request.param == "postgres":
        probe, schema = await make_postgres_database()
        await probe.close()
        sep = "&" if "?" in POSTGRES_DSN else "?"
        config.database = dataclasses.replace(
            config.database, engine="postgres", dsn=f"{POSTGRES_DSN}{sep}search_path={schema}"
        )
    server = TestServer(await build_app(config), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        if schema is not None:
            await drop_postgres_schema(schema)
