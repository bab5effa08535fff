"""Versioned schema migrations, applied at start-up.

Files are `schema/NNNN_name.sql`, shared by both engines, or `NNNN_name.sql.sqlite` /
`NNNN_name.sql.postgres` where one engine needs its own text. A released file is never edited;
the server refuses to run on a schema newer than the newest file it knows.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources

from homeserver.storage.database import Database, SchemaTooNew

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql(?:\.(sqlite|postgres))?$")
# Any constant works: it only has to be the same in every process migrating this database.
_PG_MIGRATION_LOCK = 0x6D6174726978


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_for(dialect: str) -> list[Migration]:
    by_version: dict[int, Migration] = {}
    for entry in resources.files("homeserver.storage").joinpath("schema").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version, engine = int(match.group(1)), match.group(2)
        if engine not in (None, dialect):
            continue
        # An engine-specific file replaces the shared one of the same number.
        if engine is None and version in by_version:
            continue
        by_version[version] = Migration(version, entry.name, entry.read_text())
    return [by_version[v] for v in sorted(by_version)]


async def apply_migrations(db: Database) -> int:
    """Bring the schema up to date; returns the resulting version. Safe to run concurrently
    from several processes on PostgreSQL and idempotent everywhere."""
    known = await asyncio.to_thread(migrations_for, db.dialect)
    newest = known[-1].version if known else 0
    if db.dialect == "postgres":
        async with db.transaction() as txn:
            await txn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
            await txn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = await txn.fetchval("SELECT MAX(version) FROM schema_version") or 0
            _refuse_newer(current, newest)
            for m in known:
                if m.version > current:
                    await txn.execute(m.sql)
                    await txn.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)
        return max(current, newest)

    await db.execute_script("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
    current = await db.fetchval("SELECT MAX(version) FROM schema_version") or 0
    _refuse_newer(current, newest)
    for m in known:
        if m.version > current:
            # executescript runs outside our transactions; wrap each file so it lands whole.
            await db.execute_script(
                f"BEGIN;\n{m.sql}\n"
                f"INSERT INTO schema_version (version) VALUES ({m.version});\nCOMMIT;"
            )
    return max(current, newest)


def _refuse_newer(current: int, newest: int) -> None:
    if current > newest:
        raise SchemaTooNew(
            f"the database schema is version {current} but this server knows only up to {newest};"
            " run a newer server"
        )
