"""The Database seam behaves the same on both engines."""

from __future__ import annotations

import asyncio

import pytest

from homeserver.storage.database import Database, SchemaTooNew
from homeserver.storage.migrations import apply_migrations, migrations_for
from tests.conftest import DATABASE_ERRORS


async def test_migrations_apply_from_empty_and_are_idempotent(database: Database) -> None:
    known = await asyncio.to_thread(migrations_for, database.dialect)
    newest = known[-1].version
    assert await apply_migrations(database) == newest
    assert await apply_migrations(database) == newest
    versions = [
        r[0] for r in await database.fetch("SELECT version FROM schema_version ORDER BY version")
    ]
    assert versions == [m.version for m in known]
    # Every table of the core schema exists and is empty.
    for table in (
        "rooms",
        "events",
        "event_edges",
        "event_auth",
        "state_groups",
        "state_group_entries",
        "current_state_events",
        "event_forward_extremities",
        "room_memberships",
        "current_state_delta_stream",
    ):
        assert await database.fetchval(f"SELECT COUNT(*) FROM {table}") == 0


async def test_refuses_a_newer_schema(database: Database) -> None:
    await apply_migrations(database)
    await database.execute("INSERT INTO schema_version (version) VALUES ($1)", 9999)
    with pytest.raises(SchemaTooNew, match="9999"):
        await apply_migrations(database)


async def test_transaction_rolls_back_and_runs_callbacks_only_on_commit(database: Database) -> None:
    await database.execute_script("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT);")
    fired: list[str] = []
    with pytest.raises(RuntimeError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", "a", 1)
            txn.call_after(lambda: fired.append("rolled back"))
            raise RuntimeError("boom")
    assert await database.fetchval("SELECT COUNT(*) FROM t") == 0
    assert fired == []
    async with database.transaction() as txn:
        await txn.executemany(
            "INSERT INTO t (k, v) VALUES ($1, $2)", [("a", 1), ("b", 2), ("c", 3)]
        )
        txn.call_after(lambda: fired.append("committed"))
    assert fired == ["committed"]
    clause, arg = database.in_list("k", 1, ["a", "c", "zz"])
    rows = await database.fetch(f"SELECT k, v FROM t WHERE {clause} ORDER BY k", arg)
    assert [(r[0], r[1]) for r in rows] == [("a", 1), ("c", 3)]
    assert [(r["k"], r["v"]) for r in rows] == [("a", 1), ("c", 3)]
    clause, arg = database.in_list("k", 2, [])
    assert await database.fetch(f"SELECT k FROM t WHERE v > $1 AND {clause}", 0, arg) == []


async def test_failed_migration_leaves_nothing_behind(database: Database) -> None:
    bad = "CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;"
    with pytest.raises(DATABASE_ERRORS):
        if database.dialect == "sqlite":
            await database.execute_script(f"BEGIN;\n{bad}\nCOMMIT;")
        else:
            await database.execute_script(bad)
    with pytest.raises(DATABASE_ERRORS):
        await database.fetch("SELECT * FROM half")
