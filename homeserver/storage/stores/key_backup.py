"""Server-side key backups (C-S API "Server-side key backups"): each user's backup versions and
the session keys stored in them, with the etag that changes whenever those keys change."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Queryable, Txn


@dataclass(frozen=True, slots=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class BackedUpKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tally:
    """A version's etag and number of keys after a change."""

    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class NotCurrent:
    """Keys go only to the current version; this is it (None: the user has no backup)."""

    current: int | None


# The replacement rule of the spec ("Server-side key backups"): an uploaded key replaces the
# stored one only if it is verified and the stored one is not; or, verification being equal,
# if its first_message_index is lower; or, that being equal too, its forwarded_count is lower.
_UPSERT_KEYS = (
    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
    " first_message_index = excluded.first_message_index,"
    " forwarded_count = excluded.forwarded_count,"
    " is_verified = excluded.is_verified,"
    " session_data = excluded.session_data"
    " WHERE (excluded.is_verified AND NOT room_key_backups.is_verified)"
    " OR (excluded.is_verified = room_key_backups.is_verified"
    " AND (excluded.first_message_index, excluded.forwarded_count)"
    " < (room_key_backups.first_message_index, room_key_backups.forwarded_count))"
    " RETURNING 1"
)

_COUNT_KEYS = (
    "SELECT COUNT(*) FROM room_key_backups k WHERE k.user_id = v.user_id AND k.version = v.version"
)


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> int:
        """A new version, numbered above every version the user ever had (deleted ones too)."""
        while True:
            # Two concurrent creations compute the same number; the loser's row conflicts and
            # it tries again with the winner's committed.
            version = await self.db.fetchval(
                "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)"
                " SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3"
                " FROM room_key_backup_versions WHERE user_id = $1"
                " ON CONFLICT (user_id, version) DO NOTHING RETURNING version",
                user_id,
                algorithm,
                json.dumps(auth_data, ensure_ascii=False),
            )
            if version is not None:
                return int(version)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """The version, or the latest one when `version` is None; None if there is none (or it
        was deleted)."""
        chosen = "" if version is None else " AND version = $2"
        args: list[Any] = [user_id] if version is None else [user_id, version]
        row = await self.db.fetchrow(
            f"SELECT version, algorithm, auth_data, etag, ({_COUNT_KEYS})"
            f" FROM room_key_backup_versions v WHERE user_id = $1 AND NOT deleted{chosen}"
            " ORDER BY version DESC LIMIT 1",
            *args,
        )
        if row is None:
            return None
        return BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]), int(row[4]))

    async def update_auth_data(self, user_id: str, version: int, auth_data: dict[str, Any]) -> bool:
        """Replace the version's auth_data; False if it does not exist (or was deleted)."""
        updated = await self.db.fetch(
            "UPDATE room_key_backup_versions SET auth_data = $3"
            " WHERE user_id = $1 AND version = $2 AND NOT deleted RETURNING 1",
            user_id,
            version,
            json.dumps(auth_data, ensure_ascii=False),
        )
        return bool(updated)

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Delete the version and its keys; False if it never existed."""
        async with self.db.transaction() as txn:
            existed = await txn.fetch(
                "UPDATE room_key_backup_versions SET deleted = TRUE"
                " WHERE user_id = $1 AND version = $2 RETURNING 1",
                user_id,
                version,
            )
            if existed:
                await txn.execute(
                    "DELETE FROM room_key_backups WHERE user_id = $1 AND version = $2",
                    user_id,
                    version,
                )
        return bool(existed)

    async def put_keys(
        self, user_id: str, version: int, keys: Sequence[BackedUpKey]
    ) -> Tally | NotCurrent:
        """Store `keys` in the version, each unless the stored key of its session is better;
        refused unless the version is the user's current one."""
        async with self.db.transaction() as txn:
            # The row lock keeps a concurrent DELETE of the version from committing between
            # this check and the insert (which would leave keys in a deleted version).
            lock = " FOR UPDATE" if self.db.dialect == "postgres" else ""
            current = await txn.fetchval(
                "SELECT version FROM room_key_backup_versions WHERE user_id = $1 AND NOT deleted"
                f" ORDER BY version DESC LIMIT 1{lock}",
                user_id,
            )
            if current != version:
                return NotCurrent(None if current is None else int(current))
            changed = await txn.fetch(
                "INSERT INTO room_key_backups (user_id, version, room_id, session_id,"
                " first_message_index, forwarded_count, is_verified, session_data)"
                f" {self._key_rows(3)}{_UPSERT_KEYS}",
                user_id,
                version,
                json.dumps(
                    [
                        {
                            "room_id": k.room_id,
                            "session_id": k.session_id,
                            "first_message_index": k.first_message_index,
                            "forwarded_count": k.forwarded_count,
                            "is_verified": k.is_verified,
                            "session_data": json.dumps(k.session_data, ensure_ascii=False),
                        }
                        for k in keys
                    ],
                    ensure_ascii=False,
                ),
            )
            return await self._tally_txn(txn, user_id, version, bump=bool(changed))

    def _key_rows(self, param: int) -> str:
        """A SELECT of (user $1, version $2, then the key columns) over the JSON array of
        keys in `$param`: one statement however many keys a request carries."""
        if self.db.dialect == "postgres":
            return (
                "SELECT $1, CAST($2 AS BIGINT), k.room_id, k.session_id,"
                " k.first_message_index, k.forwarded_count, k.is_verified, k.session_data"
                f" FROM jsonb_to_recordset(CAST(${param} AS JSONB)) AS k(room_id TEXT,"
                " session_id TEXT, first_message_index BIGINT, forwarded_count BIGINT,"
                " is_verified BOOLEAN, session_data TEXT)"
            )
        # WHERE true: without it SQLite would read the upsert's ON as a join constraint.
        return (
            "SELECT $1, $2, json_extract(value, '$.room_id'), json_extract(value, '$.session_id'),"
            " json_extract(value, '$.first_message_index'),"
            " json_extract(value, '$.forwarded_count'), json_extract(value, '$.is_verified'),"
            " json_extract(value, '$.session_data')"
            f" FROM json_each(${param}) WHERE true"
        )

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> list[BackedUpKey] | None:
        """The version's keys, of one room or one session if given; None if the version does
        not exist (or was deleted)."""
        if not await self._exists(self.db, user_id, version, lock=False):
            return None
        where, args = _key_filter(room_id, session_id)
        rows = await self.db.fetch(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
            f" session_data FROM room_key_backups WHERE user_id = $1 AND version = $2{where}",
            user_id,
            version,
            *args,
        )
        return [
            BackedUpKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), json.loads(r[5]))
            for r in rows
        ]

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> Tally | None:
        """Delete the version's keys, of one room or one session if given; None if the
        version does not exist (or was deleted)."""
        async with self.db.transaction() as txn:
            if not await self._exists(txn, user_id, version, lock=True):
                return None
            where, args = _key_filter(room_id, session_id)
            found = await txn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM room_key_backups"
                f" WHERE user_id = $1 AND version = $2{where})",
                user_id,
                version,
                *args,
            )
            if found:
                await txn.execute(
                    f"DELETE FROM room_key_backups WHERE user_id = $1 AND version = $2{where}",
                    user_id,
                    version,
                    *args,
                )
            return await self._tally_txn(txn, user_id, version, bump=bool(found))

    async def _exists(self, db: Queryable, user_id: str, version: int, *, lock: bool) -> bool:
        """Whether the version exists (not deleted); `lock` takes its row lock, for a writer
        that must not race a deletion of the version."""
        suffix = " FOR UPDATE" if lock and self.db.dialect == "postgres" else ""
        row = await db.fetchrow(
            "SELECT 1 FROM room_key_backup_versions"
            f" WHERE user_id = $1 AND version = $2 AND NOT deleted{suffix}",
            user_id,
            version,
        )
        return row is not None

    async def _tally_txn(self, txn: Txn, user_id: str, version: int, *, bump: bool) -> Tally:
        """The version's etag (advanced first when its keys changed) and key count."""
        if bump:
            await txn.execute(
                "UPDATE room_key_backup_versions SET etag = etag + 1"
                " WHERE user_id = $1 AND version = $2",
                user_id,
                version,
            )
        # The version row is there: the caller found it in this transaction (and locked it).
        [row] = await txn.fetch(
            f"SELECT etag, ({_COUNT_KEYS}) FROM room_key_backup_versions v"
            " WHERE user_id = $1 AND version = $2",
            user_id,
            version,
        )
        return Tally(int(row[0]), int(row[1]))


def _key_filter(room_id: str | None, session_id: str | None) -> tuple[str, list[str]]:
    """The condition (on $3, $4) selecting one room's or one session's keys, and its args."""
    if room_id is None:
        return "", []
    if session_id is None:
        return " AND room_id = $3", [room_id]
    return " AND room_id = $3 AND session_id = $4", [room_id, session_id]
