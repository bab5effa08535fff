"""PostgreSQL engine: an asyncpg pool; each transaction holds one pooled connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from homeserver.storage.database import Database, DatabaseUnavailable, Row, Txn, run_after_commit


class PostgresTxn(Txn):
    dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(sql, *args)
        return rows


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, min_size: int = 2, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {e}") from None
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Txn]:
        async with self._pool.acquire() as conn:
            txn = PostgresTxn(conn)
            async with conn.transaction():
                yield txn
        run_after_commit(txn)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._pool.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._pool.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._pool.fetch(sql, *args)
        return rows

    async def execute_script(self, script: str) -> None:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(script)

    async def close(self) -> None:
        await self._pool.close()
