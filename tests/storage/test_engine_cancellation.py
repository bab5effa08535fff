"""Cancelling a task inside `Database.transaction()`, at any point and any number of times,
leaves the database usable, applies the transaction all or nothing, and runs the `call_after`
callbacks exactly when it committed. Also: a failing callback cannot undo a commit.

The interleavings are made with gates, not sleeps: a gate holds one BEGIN, COMMIT or ROLLBACK
while the test cancels the task. On SQLite the gate is a trace callback that blocks the writer
thread as the statement starts; on PostgreSQL it holds asyncpg's `execute` once the server has
answered, i.e. in the window where the statement has taken effect but the task has not seen it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from homeserver.storage.database import Database
from homeserver.storage.engines.sqlite import SqliteDatabase

TABLE = "CREATE TABLE t (k BIGINT PRIMARY KEY);"


class Gate:
    """Holds the first statement starting with `prefix` until `release()`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reached = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._armed = True
        self._thread_release = threading.Event()
        self._async_release = asyncio.Event()

    async def wait_reached(self) -> None:
        # The timeout only keeps a broken test from hanging the suite.
        await asyncio.wait_for(self.reached.wait(), 30)

    def release(self) -> None:
        self._thread_release.set()
        self._async_release.set()

    def take(self, sql: str) -> bool:
        if self._armed and sql.lstrip().upper().startswith(self.prefix):
            self._armed = False
            return True
        return False

    def hold_thread(self, sql: str) -> None:
        """SQLite trace callback: runs on the writer thread as a statement starts."""
        if self.take(sql):
            self._loop.call_soon_threadsafe(self.reached.set)
            # The timeout only keeps a broken test from hanging the suite.
            self._thread_release.wait(timeout=30)

    async def hold_async(self) -> None:
        self.reached.set()
        await self._async_release.wait()


@asynccontextmanager
async def gate(
    database: Database, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gate]:
    g = Gate(prefix)
    if isinstance(database, SqliteDatabase):
        writer = database._writer

        def install(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(g.hold_thread)

        def uninstall(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(None)

        await writer.run(install)
        try:
            yield g
        finally:
            g.release()
            await writer.run(uninstall)
    else:
        original = asyncpg.Connection.execute

        async def execute(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
            result = await original(self, query, *args, **kw)
            if g.take(query):
                await g.hold_async()
            return result

        monkeypatch.setattr(asyncpg.Connection, "execute", execute)
        try:
            yield g
        finally:
            g.release()
            monkeypatch.setattr(asyncpg.Connection, "execute", original)


async def keys(database: Database) -> list[int]:
    return [r[0] for r in await database.fetch("SELECT k FROM t ORDER BY k")]


async def assert_usable(database: Database, k: int) -> None:
    """The next transaction works and commits."""
    fired: list[int] = []
    async with database.transaction() as txn:
        await txn.execute("INSERT INTO t (k) VALUES ($1)", k)
        txn.call_after(lambda: fired.append(k))
    assert fired == [k]
    assert k in await keys(database)


def write(
    database: Database, k: int, fired: list[int], inside: asyncio.Event | None = None
) -> asyncio.Task[None]:
    """A task inserting k, then (with `inside`) waiting in the body until cancelled."""

    async def run() -> None:
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES ($1)", k)
            txn.call_after(lambda: fired.append(k))
            if inside is not None:
                inside.set()
                await asyncio.Future()  # never completes

    return asyncio.create_task(run())


async def test_cancel_during_begin(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await database.execute_script(TABLE)
    fired: list[int] = []
    async with gate(database, "BEGIN", monkeypatch) as g:
        task = write(database, 1, fired)
        await g.wait_reached()
        task.cancel()
        g.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fired == []
    assert await keys(database) == []
    await assert_usable(database, 2)
    assert await keys(database) == [2]


async def test_cancel_during_commit_still_runs_callbacks(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await database.execute_script(TABLE)
    fired: list[int] = []
    async with gate(database, "COMMIT", monkeypatch) as g:
        task = write(database, 1, fired)
        await g.wait_reached()
        task.cancel()
        task.cancel()  # a second cancellation (a timeout, then shutdown) changes nothing
        g.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The COMMIT was under way, so it finished; what it implies (callbacks) happened too.
    assert await keys(database) == [1]
    assert fired == [1]
    await assert_usable(database, 2)


async def test_second_cancel_during_rollback(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await database.execute_script(TABLE)
    fired: list[int] = []
    inside = asyncio.Event()
    async with gate(database, "ROLLBACK", monkeypatch) as g:
        task = write(database, 1, fired, inside)
        await inside.wait()
        task.cancel()  # leaves the body: the transaction rolls back ...
        await g.wait_reached()
        task.cancel()  # ... and a second cancellation arrives during that ROLLBACK
        g.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fired == []
    assert await keys(database) == []
    await assert_usable(database, 2)
    assert await keys(database) == [2]


async def test_repeated_cancels_while_a_body_statement_runs(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first cancellation leaves the body while its statement still occupies the
    connection, so the ROLLBACK has to wait for it; the cancellations that follow must not
    abandon that ROLLBACK before it has run."""
    await database.execute_script(TABLE)
    fired: list[int] = []
    loop_errors = capture_loop_errors()

    async def run() -> None:
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES ($1)", 1)
            txn.call_after(lambda: fired.append(1))
            await txn.execute("SELECT 42")

    try:
        async with gate(database, "SELECT 42", monkeypatch) as g:
            task = asyncio.create_task(run())
            await g.wait_reached()
            for _ in range(20):
                task.cancel()
                await asyncio.sleep(0)
            g.release()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert fired == []
        assert await keys(database) == []
        await assert_usable(database, 2)
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
    assert loop_errors == []


def capture_loop_errors() -> list[dict[str, Any]]:
    """Collect what the loop's exception handler gets (until the test resets it): asyncpg
    reports there a connection returned to its pool with a transaction still open."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    return errors


@pytest.mark.parametrize("wait_steps", [0, 1, 2, 3, 5, 8, 13, 21])
async def test_cancel_storm_at_any_point(database: Database, wait_steps: int) -> None:
    """Cancel after `wait_steps` loop iterations, then at every iteration until the task ends:
    every await on the way out is hit by a cancellation. Whatever point the first one hits,
    the transaction is all or nothing and the callbacks ran exactly if it committed."""
    await database.execute_script(TABLE)
    loop_errors = capture_loop_errors()
    try:
        for k in range(1, 6):
            fired: list[int] = []

            async def run(k: int = k, fired: list[int] = fired) -> None:
                async with database.transaction() as txn:
                    await txn.execute("INSERT INTO t (k) VALUES ($1)", k)
                    await txn.execute("INSERT INTO t (k) VALUES ($1)", -k)
                    txn.call_after(lambda: fired.append(k))

            task = asyncio.create_task(run())
            for _ in range(wait_steps * k):
                await asyncio.sleep(0)
            while not task.done():
                task.cancel()
                await asyncio.sleep(0)
            stored = [x for x in await keys(database) if abs(x) == k]
            assert stored in ([], [-k, k])
            committed = stored == [-k, k]
            assert fired == ([k] if committed else [])
            if not task.cancelled():
                assert task.exception() is None and committed
        await assert_usable(database, 100)
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
    assert loop_errors == []


async def test_body_error_rolls_back_and_keeps_its_exception(database: Database) -> None:
    await database.execute_script(TABLE)
    with pytest.raises(KeyError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES ($1)", 1)
            raise KeyError("boom")
    assert await keys(database) == []
    await assert_usable(database, 2)


async def test_failing_callback_is_logged_and_does_not_stop_the_others(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await database.execute_script(TABLE)
    fired: list[str] = []

    def broken() -> None:
        raise ValueError("callback bug")

    with caplog.at_level(logging.ERROR, logger="homeserver.storage.database"):
        async with database.transaction() as txn:  # no exception reaches the caller
            await txn.execute("INSERT INTO t (k) VALUES ($1)", 1)
            txn.call_after(lambda: fired.append("first"))
            txn.call_after(broken)
            txn.call_after(lambda: fired.append("third"))
    assert fired == ["first", "third"]
    assert await keys(database) == [1]
    [record] = [r for r in caplog.records if "callback failed" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_sqlite_writer_recovers_from_a_dangling_transaction(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer thread's backstop: a transaction left open by anything is rolled back before
    the next BEGIN instead of failing every later write."""
    if not isinstance(database, SqliteDatabase):
        pytest.skip("SQLite's writer connection only")
    await database.execute_script(TABLE)

    def leave_open(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (k) VALUES (1)")

    await database._writer.run(leave_open)
    with caplog.at_level(logging.WARNING, logger="homeserver.storage.engines.sqlite"):
        await assert_usable(database, 2)
    assert await keys(database) == [2]
    assert any("left open" in r.getMessage() for r in caplog.records)


async def test_postgres_commit_of_an_aborted_transaction_is_an_error(database: Database) -> None:
    """PostgreSQL answers COMMIT of a transaction in which a statement failed with ROLLBACK and
    no error; the caller must not believe it committed (nor run the callbacks)."""
    if database.dialect != "postgres":
        pytest.skip("PostgreSQL semantics")
    await database.execute_script(TABLE)
    fired: list[int] = []
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        async with database.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES ($1)", 1)
            txn.call_after(lambda: fired.append(1))
            with pytest.raises(asyncpg.UniqueViolationError):
                await txn.execute("INSERT INTO t (k) VALUES ($1)", 1)
    assert fired == []
    assert await keys(database) == []
    await assert_usable(database, 2)
