"""The database seam: one async interface over SQLite and PostgreSQL.

SQL is written once in asyncpg's `$n` placeholder style; the SQLite engine rewrites it. A
dialect difference is an explicit branch on `Database.dialect`, so it can be found with grep.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

Row = Any  # sqlite3.Row or asyncpg.Record: both index by position and by column name.
T = TypeVar("T")

# Why start-up fails when a second server process opens a database that one already writes to.
ANOTHER_WRITER = "another homeserver process is already writing to this database"


class DatabaseUnavailable(Exception):
    """The database could not be reached or opened; the message names the cause."""


class SchemaTooNew(Exception):
    pass


class Queryable(abc.ABC):
    dialect: str

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    def in_list(self, column: str, param_index: int, values: Collection[Any]) -> tuple[str, Any]:
        """`column IN values` as one placeholder `$param_index`: (sql fragment, argument).

        PostgreSQL binds an array; SQLite binds a JSON array read back through json_each, so
        the statement text is the same whatever the number of values.
        """
        if self.dialect == "postgres":
            return f"{column} = ANY(${param_index})", list(values)
        return (
            f"{column} IN (SELECT value FROM json_each(${param_index}))",
            json.dumps(list(values)),
        )


class Txn(Queryable):
    """A transaction; `call_after` callbacks run once it has committed.

    Leaving `Database.transaction()` with an exception means it rolled back, with one exception:
    a CancelledError that arrives while COMMIT is under way is raised only once COMMIT has
    finished, and when that COMMIT succeeded the callbacks have run (the data is there, so the
    cache invalidations and wake-ups it implies must happen too).
    """

    def __init__(self) -> None:
        self.after_commit: list[Callable[[], Any]] = []

    def call_after(self, callback: Callable[[], Any]) -> None:
        self.after_commit.append(callback)


class Database(Queryable):
    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Txn]: ...

    @abc.abstractmethod
    async def execute_script(self, script: str) -> None:
        """Run several statements at once (migrations); each engine splits as it must."""

    @abc.abstractmethod
    async def lock_single_writer(self) -> None:
        """Claim the database for this process's writer until this Database is closed; raise
        DatabaseUnavailable(ANOTHER_WRITER) if another server process holds the claim. Calling
        it again on the same Database is a no-op.

        Stream positions and state group IDs come from in-process counters seeded from the
        database at start-up, so a second writer would hand out the same values. PostgreSQL
        also refuses a second Database object in this process (the claim is a session lock);
        SQLite lets Databases on one file in one process share it (the claim is a POSIX lock,
        which belongs to the process).
        """

    @abc.abstractmethod
    async def close(self) -> None: ...


def run_after_commit(txn: Txn) -> None:
    """Run a committed transaction's callbacks. A failing callback is logged and does not stop
    the others: the transaction has committed, so its caller must not see an error."""
    for callback in txn.after_commit:
        try:
            callback()
        except Exception:
            logger.exception("after-commit callback failed callback=%r", callback)


async def finish_despite_cancellation(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even if the calling task is cancelled (once or many times) meanwhile,
    then re-raise the cancellation.

    For BEGIN, COMMIT and ROLLBACK: abandoning one halfway leaves a connection whose transaction
    state nobody knows (SQLite's writer thread runs the statement anyway; asyncpg cancels it on
    the server, so a COMMIT may or may not have happened). Each is short, so the delay this adds
    to a cancellation is bounded by the statement itself.
    """
    inner = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError as e:
            if inner.cancelled():
                raise  # the work itself was cancelled (loop shutdown): nothing left to wait for
            cancelled = e
        except BaseException:
            pass  # `inner` failed; its exception is raised below
    if cancelled is not None:
        if not inner.cancelled() and inner.exception() is not None:
            # The cancellation wins, but the failure must not vanish without a trace.
            logger.warning(
                "statement failed while its task was being cancelled", exc_info=inner.exception()
            )
        raise cancelled
    return inner.result()
