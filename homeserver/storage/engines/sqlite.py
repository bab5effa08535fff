"""SQLite engine: WAL, one writer connection and one reader connection, each on its own thread,
so no SQLite call ever blocks the event loop. Transactions are serialised by an asyncio lock,
which is also what makes stream positions follow commit order on this engine.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from homeserver.storage.database import Database, DatabaseUnavailable, Row, Txn, run_after_commit

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=2048)
def _rewrite(sql: str) -> str:
    # asyncpg's $n becomes SQLite's numbered ?n, so the same argument order works for both.
    return _PLACEHOLDER.sub(r"?\1", sql)


class _Connection:
    """A sqlite3 connection owned by one thread."""

    def __init__(self, path: str, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an event acknowledged to a client survives power loss, not just a crash.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            if self._conn is None:
                self._open()
            assert self._conn is not None
            return fn(self._conn)

        return await loop.run_in_executor(self._executor, call)

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(shut)
            self._conn = None
        # Joining the thread blocks, so it is done from another thread.
        await asyncio.to_thread(self._executor.shutdown, wait=True)


def _fetch(sql: str, args: Sequence[Any]) -> Callable[[sqlite3.Connection], list[Row]]:
    def run(conn: sqlite3.Connection) -> list[Row]:
        return conn.execute(_rewrite(sql), args).fetchall()

    return run


def _execute(sql: str, args: Sequence[Any]) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute(_rewrite(sql), args)

    return run


def _executemany(sql: str, rows: Sequence[Sequence[Any]]) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.executemany(_rewrite(sql), rows)

    return run


class SqliteTxn(Txn):
    dialect = "sqlite"

    def __init__(self, conn: _Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.run(_execute(sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.run(_executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._conn.run(_fetch(sql, args))


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = _Connection(str(path), "sqlite-writer")
        self._reader = _Connection(str(path), "sqlite-reader")
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        def create(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1").fetchall()

        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            db = cls(path)
            await db._writer.run(create)
        except (OSError, sqlite3.Error) as e:
            raise DatabaseUnavailable(f"cannot open SQLite database {path}: {e}") from None
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Txn]:
        async with self._write_lock:
            txn = SqliteTxn(self._writer)
            await self._writer.run(_execute("BEGIN IMMEDIATE", ()))
            try:
                yield txn
            except BaseException:
                await self._writer.run(_execute("ROLLBACK", ()))
                raise
            await self._writer.run(_execute("COMMIT", ()))
        run_after_commit(txn)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.transaction() as txn:
            await txn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as txn:
            await txn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader.run(_fetch(sql, args))

    async def execute_script(self, script: str) -> None:
        # executescript commits first and runs outside our BEGIN, so take the write lock; a
        # script that fails inside its own BEGIN must not leave that transaction open.
        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.executescript(script)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        async with self._write_lock:
            await self._writer.run(run)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
