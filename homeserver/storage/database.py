"""The database seam: one async interface over SQLite and PostgreSQL.

SQL is written once in asyncpg's `$n` placeholder style; the SQLite engine rewrites it. A
dialect difference is an explicit branch on `Database.dialect`, so it can be found with grep.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

Row = Any  # sqlite3.Row or asyncpg.Record: both index by position and by column name.


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
    """A transaction; `call_after` callbacks run once it has committed."""

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
    async def close(self) -> None: ...


def run_after_commit(txn: Txn) -> None:
    for callback in txn.after_commit:
        callback()
