"""Only one server process writes to a database: positions and state group IDs come from
in-process counters, so a second writer fails at start-up instead of handing out the same
values."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from homeserver.storage import DatabaseUnavailable, storage_on
from homeserver.storage.database import Database
from homeserver.storage.engines.postgres import PostgresDatabase
from homeserver.storage.engines.sqlite import SqliteDatabase
from tests.conftest import POSTGRES_DSN, drop_postgres_schema, make_postgres_database

ANOTHER = "another homeserver process is already writing to this database"
ROOT = Path(__file__).resolve().parents[2]

# What a second server process does at start-up: open the database and build its Storage.
SECOND_PROCESS = """
import asyncio, sys
from pathlib import Path
from homeserver.storage import DatabaseUnavailable, storage_on
from homeserver.storage.engines.postgres import PostgresDatabase
from homeserver.storage.engines.sqlite import SqliteDatabase

async def main(engine: str, where: str) -> None:
    if engine == "sqlite":
        db = await SqliteDatabase.open(Path(where))
    else:
        db = await PostgresDatabase.open(where, 1, 1)
    try:
        await storage_on(db)
        print("claimed")
    except DatabaseUnavailable as e:
        print(e)
    finally:
        await db.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def where(database: Database) -> str:
    """How another process opens the data `database` holds: the SQLite file or the DSN."""
    if isinstance(database, SqliteDatabase):
        return str(database.path)
    schema = await database.fetchval("SELECT current_schema()")
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{sep}search_path={schema}"


async def start_second_process(database: Database) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SECOND_PROCESS,
        database.dialect,
        await where(database),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def open_same(database: Database) -> Database:
    """A second Database in this process, with connections of its own, on the same data."""
    if isinstance(database, SqliteDatabase):
        return await SqliteDatabase.open(database.path)
    return await PostgresDatabase.open(await where(database), 1, 2)


async def test_a_second_process_fails_until_the_first_closes(database: Database) -> None:
    first_db = await open_same(database)
    try:
        first = await storage_on(first_db)
        # The PostgreSQL pool resets each connection it takes back, which includes
        # pg_advisory_unlock_all(): the claim must live on a connection of its own.
        for _ in range(3):
            await first_db.fetchval("SELECT 1")
        assert ANOTHER in await start_second_process(database)
        await first.close()
        assert await start_second_process(database) == "claimed"
    finally:
        await first_db.close()


async def test_postgres_refuses_a_second_database_in_this_process(database: Database) -> None:
    if database.dialect != "postgres":
        pytest.skip("a PostgreSQL claim is a session lock")
    first_db, second_db = await open_same(database), await open_same(database)
    try:
        first = await storage_on(first_db)
        with pytest.raises(DatabaseUnavailable, match=ANOTHER):
            await storage_on(second_db)
        await first.close()
        await storage_on(second_db)
    finally:
        await first_db.close()
        await second_db.close()


async def test_sqlite_databases_in_one_process_share_the_claim(database: Database) -> None:
    """Two Databases on one SQLite file in one process (two test applications on one data
    directory) share the claim, and closing one keeps it for the other: a POSIX lock would
    otherwise go with the first descriptor closed. Their counters are not shared: writing
    through both would fail on the primary keys of events and state_groups."""
    if not isinstance(database, SqliteDatabase):
        pytest.skip("a SQLite claim is a POSIX lock, held per process")
    first_db, second_db = await open_same(database), await open_same(database)
    try:
        await storage_on(first_db)
        await storage_on(second_db)
        await first_db.close()
        assert ANOTHER in await start_second_process(database)
        await second_db.close()
        assert await start_second_process(database) == "claimed"
    finally:
        await first_db.close()
        await second_db.close()


async def test_storages_on_one_database_object_share_its_claim(database: Database) -> None:
    # A cold-cache Storage on the same Database (tests use this to read back from the database)
    # is not a second writer; it must not be used to write concurrently with the first.
    await storage_on(database)
    await storage_on(database)


async def test_postgres_claim_is_per_schema(database: Database) -> None:
    """Advisory locks are per database; homeservers in different schemas of one database (as
    in these tests) do not exclude each other."""
    if database.dialect != "postgres":
        pytest.skip("PostgreSQL schemas")
    await storage_on(database)
    other, schema = await make_postgres_database()
    try:
        await storage_on(other)
    finally:
        await other.close()
        await drop_postgres_schema(schema)
