"""SQLite engine: WAL, one writer connection and one reader connection, each on its own thread,
so no SQLite call ever blocks the event loop. Transactions are serialised by an asyncio lock,
which is also what makes stream positions follow commit order on this engine.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import queue
import re
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=2048)
def _rewrite(sql: str) -> str:
    # asyncpg's $n becomes SQLite's numbered ?n, so the same argument order works for both.
    return _PLACEHOLDER.sub(r"?\1", sql)


def _lower(value: str | bytes | int | float | None) -> str | bytes | int | float | None:
    return value.lower() if isinstance(value, str) else value


class _Connection:
    """A sqlite3 connection owned by one thread, which runs the calls queued for it in order.

    A plain queue and a future resolved with call_soon_threadsafe, rather than an executor:
    /sync makes several small reads per request, and an executor's bookkeeping (a
    concurrent.futures.Future with its lock, chained to an asyncio future) cost more of the
    event loop's time than the queries themselves."""

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._name = name
        self._conn: sqlite3.Connection | None = None
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an event acknowledged to a client survives power loss, not just a crash.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        # SQLite's own LOWER folds ASCII only; Python's, as PostgreSQL's, folds all of Unicode,
        # so text lower-cased in SQL matches text lower-cased in Python (the user directory).
        conn.create_function("lower", 1, _lower, deterministic=True)
        return conn

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future, loop = call
            try:
                if self._conn is None:
                    self._conn = self._open()
                result = fn(self._conn)
            except BaseException as e:  # handed to the awaiting task, whatever it is
                loop.call_soon_threadsafe(_set_exception, future, e)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, future, loop))
        return await future

    async def run_to_completion(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`run`, but a cancellation of the caller waits for `fn` to finish (then is re-raised):
        for BEGIN, COMMIT and ROLLBACK, whose effect the caller must know."""
        return await finish_despite_cancellation(self.run(fn))

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(shut)
            self._conn = None
        if self._thread is not None:
            self._calls.put(None)
            # Joining the thread blocks, so it is done from another thread.
            await asyncio.to_thread(self._thread.join)
            self._thread = None


_Call = tuple[Callable[[sqlite3.Connection], T], "asyncio.Future[T]", asyncio.AbstractEventLoop]


# The awaiting task may have been cancelled meanwhile; the call itself still ran.
def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


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


def _begin(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # Every path out of transaction() rolls back, so this is a backstop: a transaction left
        # open (by a bug, or a ROLLBACK that failed) would otherwise make every later BEGIN fail
        # with "cannot start a transaction within a transaction", i.e. stop all writes.
        logger.warning("rolling back a transaction left open on the SQLite writer connection")
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")


def _rollback_if_open(conn: sqlite3.Connection) -> None:
    # Not open when BEGIN failed, or when SQLite already rolled back by itself (some errors,
    # such as SQLITE_FULL, end the transaction).
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _lock_path(path: Path) -> Path:
    # A file of its own: SQLite holds POSIX locks on the database file itself, and a process
    # loses all its POSIX locks on a file when it closes any descriptor of it.
    return path.with_name(path.name + ".writer-lock")


# POSIX record locks belong to a process, not to a descriptor: a second lock by the same process
# succeeds, and closing either descriptor drops both. So the claims this process holds are
# counted here, per lock file, and the descriptor is closed when the last Database lets go.
_claims_lock = threading.Lock()
_claims: dict[str, list[int]] = {}  # lock file -> [descriptor, Databases sharing it]


def _claim_writer_lock(path: Path) -> str | None:
    """Lock `path`'s lock file against other processes; the key to release it with, or None
    where POSIX locks do not exist."""
    if sys.platform == "win32":
        return None
    import fcntl

    key = str(_lock_path(path).resolve())
    with _claims_lock:
        if key in _claims:
            _claims[key][1] += 1
            return key
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EAGAIN):
                raise DatabaseUnavailable(f"{ANOTHER_WRITER} (SQLite {path})") from None
            raise
        _claims[key] = [fd, 1]
        return key


def _release_writer_lock(key: str) -> None:
    with _claims_lock:
        claim = _claims[key]
        claim[1] -= 1
        if claim[1] == 0:
            del _claims[key]
            os.close(claim[0])


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
        self._writer_claim: str | None = None

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
        # Cancellation safety: BEGIN, COMMIT and ROLLBACK run to completion even when the task
        # is cancelled (once or repeatedly) meanwhile; the writer thread would finish them
        # anyway, behind the caller's back. Every exit that did not commit rolls back before
        # the write lock is released, so the next transaction finds the connection idle.
        txn = SqliteTxn(self._writer)
        committed = False

        def commit(conn: sqlite3.Connection) -> None:
            nonlocal committed
            conn.execute("COMMIT")
            committed = True

        try:
            async with self._write_lock:
                try:
                    await self._writer.run_to_completion(_begin)
                    yield txn
                    await self._writer.run_to_completion(commit)
                finally:
                    if not committed:
                        await self._rollback()
        finally:
            # Also when a cancellation arrived during a COMMIT that succeeded.
            if committed:
                run_after_commit(txn)

    async def _rollback(self) -> None:
        try:
            await self._writer.run_to_completion(_rollback_if_open)
        except sqlite3.Error:
            # Keep the exception that caused the rollback; the next BEGIN rolls back again.
            logger.exception("ROLLBACK failed on the SQLite writer connection")

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
            # To completion: the lock must not be released while the script still runs.
            await self._writer.run_to_completion(run)

    async def lock_single_writer(self) -> None:
        # SQLite's own locking serialises transactions, not the allocation of stream positions
        # and state group IDs from in-process counters: a second writer would hand out the same
        # values, and its inserts (or the first one's) would then fail on the primary keys.
        # Only other processes are excluded: Databases on one file in this process share the
        # claim (tests start two applications on one data directory; one process serves every
        # listener from one application, so a server never does).
        async def claim() -> None:
            self._writer_claim = await asyncio.to_thread(_claim_writer_lock, self.path)

        if self._writer_claim is None:
            # To completion, so that a claim taken as start-up is cancelled is still recorded,
            # and released by close().
            await finish_despite_cancellation(claim())

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
        if self._writer_claim is not None:
            claim, self._writer_claim = self._writer_claim, None
            await asyncio.to_thread(_release_writer_lock, claim)
