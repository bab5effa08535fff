"""PostgreSQL engine: an asyncpg pool; each transaction holds one pooled connection."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from homeserver.storage.database import (
    ANOTHER_WRITER,
    Database,
    DatabaseUnavailable,
    Row,
    Txn,
    finish_despite_cancellation,
    run_after_commit,
)

logger = logging.getLogger(__name__)


def _storable(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL, which JSON strings may (an event's body, a remote
    user's display name, an ID a client made up): stored or looked up, it is read as U+FFFD,
    as PostgreSQL's own JSON functions refuse it. SQLite keeps it; the event JSON, stored
    escaped, keeps it on both."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _args(args: Sequence[Any]) -> list[Any]:
    return [_storable(a) for a in args]


class PostgresTxn(Txn):
    dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *_args(args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(sql, [_args(r) for r in rows])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(sql, *_args(args))
        return rows


def writer_lock_key(schema: str) -> int:
    """The advisory lock key (a signed 64-bit integer) claiming `schema` for one writer.

    Advisory locks are per database, not per schema, and one database may hold several
    homeservers in different schemas (the tests do), so the key is derived from the schema."""
    digest = hashlib.blake2b(f"homeserver event writer:{schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, dsn: str | None = None) -> None:
        self._pool = pool
        self._dsn = dsn
        # Holds the session-level writer lock; not pooled, since the pool's reset on release
        # runs pg_advisory_unlock_all().
        self._lock_conn: asyncpg.Connection | None = None

    @classmethod
    async def open(cls, dsn: str, min_size: int = 2, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {e}") from None
        return cls(pool, dsn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Txn]:
        # BEGIN, COMMIT and ROLLBACK are sent by hand, each run to completion even when the
        # task is cancelled meanwhile: a cancelled COMMIT would otherwise leave the caller not
        # knowing whether it happened (asyncpg cancels it on the server, which may be too late),
        # and skip the callbacks of a transaction that did commit.
        committed = False
        txn: PostgresTxn | None = None

        async def commit(conn: asyncpg.Connection) -> None:
            nonlocal committed
            status = await conn.execute("COMMIT")
            # COMMIT of a transaction in which a statement failed (the body caught the error)
            # rolls back without an error: only the status tells.
            if status != "COMMIT":
                raise asyncpg.InFailedSQLTransactionError(
                    f"transaction rolled back at COMMIT ({status})"
                )
            committed = True

        try:
            async with self._pool.acquire() as conn:
                try:
                    await finish_despite_cancellation(conn.execute("BEGIN"))
                    txn = PostgresTxn(conn)
                    yield txn
                    await finish_despite_cancellation(commit(conn))
                finally:
                    if not committed and conn.is_in_transaction():
                        await self._rollback(conn)
        finally:
            # Also when a cancellation arrived during a COMMIT that succeeded.
            if committed and txn is not None:
                run_after_commit(txn)

    async def _rollback(self, conn: asyncpg.Connection) -> None:
        try:
            await finish_despite_cancellation(conn.execute("ROLLBACK"))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # Keep the exception that caused the rollback. The pool's reset on release rolls
            # back again, or closes the connection if it is unusable.
            logger.exception("ROLLBACK failed on a PostgreSQL connection")

    async def execute(self, sql: str, *args: Any) -> None:
        await self._pool.execute(sql, *_args(args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._pool.executemany(sql, [_args(r) for r in rows])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._pool.fetch(sql, *_args(args))
        return rows

    async def execute_script(self, script: str) -> None:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(script)

    async def lock_single_writer(self) -> None:
        # A session-level advisory lock on a connection of its own, held until close(): the
        # server releases it when that connection ends, even if this process dies.
        if self._lock_conn is None:
            # To completion, so that a lock taken as start-up is cancelled is still recorded,
            # and released by close().
            await finish_despite_cancellation(self._claim())

    async def _claim(self) -> None:
        if self._dsn is None:
            raise DatabaseUnavailable("cannot claim the database: no DSN to connect with")
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {e}") from None
        try:
            schema = await conn.fetchval("SELECT COALESCE(current_schema(), '')")
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", writer_lock_key(schema)):
                raise DatabaseUnavailable(f"{ANOTHER_WRITER} (PostgreSQL schema {schema!r})")
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(_writer_lock_lost)
        self._lock_conn = conn

    async def close(self) -> None:
        try:
            await self._pool.close()
        finally:
            if self._lock_conn is not None:
                conn, self._lock_conn = self._lock_conn, None
                conn.remove_termination_listener(_writer_lock_lost)
                await conn.close()


def _writer_lock_lost(conn: asyncpg.Connection) -> None:
    # The server released the lock with the connection; another process may now claim the
    # database while this one keeps writing. Restarting this process is the safe answer.
    logger.error("lost the connection holding the single-writer lock; restart this process")
