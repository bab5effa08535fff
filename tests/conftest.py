"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL and Redis tests skip with a reason when the server is unreachable, unless
HS_TEST_REQUIRE_SERVICES=1 (as .ci/run sets), where they fail instead.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from signedjson.key import generate_signing_key

from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage, storage_on
from homeserver.storage.database import Database
from homeserver.storage.engines.postgres import PostgresDatabase
from homeserver.storage.engines.sqlite import SqliteDatabase

POSTGRES_DSN = os.environ.get("HS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("HS_TEST_REQUIRE_SERVICES") == "1"

# What a failing statement raises, on either engine.
DATABASE_ERRORS = (sqlite3.Error, asyncpg.PostgresError)

_pg_reachable: bool | None = None


async def _postgres_reachable() -> bool:
    global _pg_reachable
    if _pg_reachable is None:
        try:
            conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
            await conn.close()
            _pg_reachable = True
        except (TimeoutError, OSError, asyncpg.PostgresError):
            _pg_reachable = False
    return _pg_reachable


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and HS_TEST_REQUIRE_SERVICES=1")
    pytest.skip(message)


async def make_postgres_database() -> tuple[PostgresDatabase, str]:
    """A pool on a fresh schema of the test database; returns (db, schema)."""
    if not await _postgres_reachable():
        _unavailable(f"PostgreSQL at {POSTGRES_DSN}")
    schema = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(POSTGRES_DSN)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return await PostgresDatabase.open(f"{POSTGRES_DSN}{sep}search_path={schema}", 1, 10), schema


async def drop_postgres_schema(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db: Database = await SqliteDatabase.open(tmp_path / "homeserver.db")
        yield db
        await db.close()
        return
    pg, schema = await make_postgres_database()
    yield pg
    await pg.close()
    await drop_postgres_schema(schema)


@pytest.fixture
async def storage(database: Database) -> Storage:
    return await storage_on(database)


@pytest.fixture
def server_keys() -> ServerKeys:
    return ServerKeys(signing_key=generate_signing_key("a_test"))


@pytest.fixture
def core(storage: Storage, server_keys: ServerKeys) -> Core:
    return build_core(storage, "test.local", server_keys)


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_event_loop(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Fail any test in which our code blocks the event loop (file or socket I/O, sleeps).

    Only calls made from the server's own packages count: test set-up may block."""
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx(["homeserver", "client_api", "federation", "media_repo"]) as bb:
        # asyncpg looks for ~/.pgpass and ~/.postgresql/ when it opens a connection: a few
        # stat calls while parsing connection arguments, at pool start-up.
        for name, function in bb.functions.items():
            if name.startswith("os."):
                function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
        yield bb
