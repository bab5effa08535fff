"""Per-user data outside the room DAG: profiles (columns of `users`), account deactivation,
account data and room tags, receipts and presence (C-S API "Profiles", "Client Config",
"Receipts", "Presence"). Account data, receipts and presence each have a stream of their own."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

from homeserver.storage.database import Database, Txn
from homeserver.storage.id_generators import LazyStream

ProfileField = Literal["displayname", "avatar_url"]
GLOBAL = ""  # the room_id of global account data
UNTHREADED = ""  # the thread_id of an unthreaded receipt


@dataclass(frozen=True, slots=True)
class Profile:
    displayname: str | None
    avatar_url: str | None
    deactivated: bool

    def fields(self) -> dict[str, str]:
        """The fields that are set, as the profile API and m.room.member content carry them."""
        out = {}
        if self.displayname is not None:
            out["displayname"] = self.displayname
        if self.avatar_url is not None:
            out["avatar_url"] = self.avatar_url
        return out


@dataclass(frozen=True, slots=True)
class AccountDataRow:
    room_id: str  # GLOBAL for global account data
    type: str
    content: dict[str, Any]
    stream_id: int


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str  # UNTHREADED for an unthreaded receipt
    event_id: str
    ts: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class PresenceRow:
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


class UserDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.account_data_stream = LazyStream(db, "SELECT MAX(stream_id) FROM account_data")
        self.receipts_stream = LazyStream(db, "SELECT MAX(stream_id) FROM receipts")
        self.presence_stream = LazyStream(db, "SELECT MAX(stream_id) FROM presence")

    # -- profiles and account state ------------------------------------------------------

    async def get_profile(self, user_id: str) -> Profile | None:
        """None for an unknown user."""
        row = await self.db.fetchrow(
            "SELECT displayname, avatar_url, deactivated FROM users WHERE user_id = $1", user_id
        )
        return None if row is None else Profile(row[0], row[1], bool(row[2]))

    async def set_profile_field(self, user_id: str, name: ProfileField, value: str | None) -> None:
        # The column name comes from the Literal type, never from the request.
        column = {"displayname": "displayname", "avatar_url": "avatar_url"}[name]
        await self.db.execute(f"UPDATE users SET {column} = $2 WHERE user_id = $1", user_id, value)

    async def set_password_hash_txn(self, txn: Txn, user_id: str, password_hash: str) -> None:
        await txn.execute(
            "UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
        )

    async def mark_deactivated_txn(self, txn: Txn, user_id: str) -> None:
        # The password goes too: nothing can log in to a deactivated account again.
        await txn.execute(
            "UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1",
            user_id,
        )

    async def set_device_display_name(
        self, user_id: str, device_id: str, display_name: str
    ) -> bool:
        """False when the device does not exist."""
        rows = await self.db.fetch(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2"
            " RETURNING device_id",
            user_id,
            device_id,
            display_name,
        )
        return bool(rows)

    async def set_device_last_seen(
        self, user_id: str, device_id: str, ts: int, ip: str | None
    ) -> None:
        await self.db.execute(
            "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4"
            " WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
            ts,
            ip,
        )

    # -- account data --------------------------------------------------------------------

    async def get_account_data(
        self, user_id: str, room_id: str, data_type: str
    ) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
            user_id,
            room_id,
            data_type,
        )
        return None if raw is None else _object(raw)

    async def update_account_data(
        self,
        user_id: str,
        room_id: str,
        data_type: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any]],
    ) -> int:
        """Replace the content with `change(old content)`, atomically (room tags are edited
        one tag at a time); returns the new stream position."""
        gen = await self.account_data_stream.generator()
        with gen.allocate(1) as [position]:
            async with self.db.transaction() as txn:
                # Concurrent edits of one m.tag must not lose each other's change. Inserting
                # first takes the row lock on a new row (a concurrent insert waits for us);
                # on PostgreSQL, FOR UPDATE takes it on an existing row. SQLite transactions
                # are serialised anyway.
                created = await txn.fetch(
                    "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
                    " VALUES ($1, $2, $3, '{}', $4) ON CONFLICT (user_id, room_id, type)"
                    " DO NOTHING RETURNING stream_id",
                    user_id,
                    room_id,
                    data_type,
                    position,
                )
                old: dict[str, Any] | None = None
                if not created:
                    lock = " FOR UPDATE" if self.db.dialect == "postgres" else ""
                    raw = await txn.fetchval(
                        "SELECT content FROM account_data"
                        f" WHERE user_id = $1 AND room_id = $2 AND type = $3{lock}",
                        user_id,
                        room_id,
                        data_type,
                    )
                    old = _object(raw)
                await txn.execute(
                    "UPDATE account_data SET content = $4, stream_id = $5"
                    " WHERE user_id = $1 AND room_id = $2 AND type = $3",
                    user_id,
                    room_id,
                    data_type,
                    json.dumps(change(old), ensure_ascii=False),
                    position,
                )
        return position

    async def get_account_data_changes(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[AccountDataRow]:
        """Account data of `user_id` changed in (from_pos, to_pos]; from_pos 0 gives all."""
        rows = await self.db.fetch(
            "SELECT room_id, type, content, stream_id FROM account_data"
            " WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
            user_id,
            from_pos,
            to_pos,
        )
        return [AccountDataRow(r[0], r[1], _object(r[2]), r[3]) for r in rows]

    # -- receipts ------------------------------------------------------------------------

    async def get_receipt_event(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str
    ) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT event_id FROM receipts WHERE room_id = $1 AND receipt_type = $2"
            " AND user_id = $3 AND thread_id = $4",
            room_id,
            receipt_type,
            user_id,
            thread_id,
        )
        return value

    async def upsert_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, ts: int
    ) -> int:
        gen = await self.receipts_stream.generator()
        with gen.allocate(1) as [position]:
            await self.db.execute(
                "INSERT INTO receipts"
                " (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE"
                " SET event_id = excluded.event_id, ts = excluded.ts,"
                " stream_id = excluded.stream_id",
                room_id,
                receipt_type,
                user_id,
                thread_id,
                event_id,
                ts,
                position,
            )
        return position

    async def get_receipt_changes(
        self, room_ids: Collection[str], from_pos: int, to_pos: int
    ) -> list[ReceiptRow]:
        """Receipts in `room_ids` changed in (from_pos, to_pos]; from_pos 0 gives all."""
        if not room_ids:
            return []
        clause, arg = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
            f" FROM receipts WHERE {clause} AND stream_id > $2 AND stream_id <= $3"
            " ORDER BY stream_id",
            arg,
            from_pos,
            to_pos,
        )
        return [ReceiptRow(*r) for r in rows]

    # -- presence ------------------------------------------------------------------------

    async def get_presence(self, user_id: str) -> PresenceRow | None:
        row = await self.db.fetchrow(
            "SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence"
            " WHERE user_id = $1",
            user_id,
        )
        return None if row is None else PresenceRow(*row)

    async def set_presence(
        self, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> int:
        gen = await self.presence_stream.generator()
        with gen.allocate(1) as [position]:
            await self.db.execute(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE"
                " SET state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts, stream_id = excluded.stream_id",
                user_id,
                state,
                status_msg,
                last_active_ts,
                position,
            )
        return position

    async def shares_room(self, user_id: str, other_id: str) -> bool:
        """Whether both users are joined to some room (who may see whose presence)."""
        found = await self.db.fetchval(
            "SELECT 1 FROM current_state_events a JOIN current_state_events b"
            " ON a.room_id = b.room_id"
            " WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'"
            " AND b.type = 'm.room.member' AND b.state_key = $2 AND b.membership = 'join'"
            " LIMIT 1",
            user_id,
            other_id,
        )
        return found is not None

    async def get_presence_changes(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[PresenceRow]:
        """Presence changed in (from_pos, to_pos] of the users who share a joined room with
        `user_id` (themselves included); from_pos 0 gives all."""
        rows = await self.db.fetch(
            "SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence"
            " WHERE stream_id > $2 AND stream_id <= $3 AND user_id IN ("
            "  SELECT b.state_key FROM current_state_events a JOIN current_state_events b"
            "  ON a.room_id = b.room_id"
            "  WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'"
            "  AND b.type = 'm.room.member' AND b.membership = 'join'"
            "  UNION SELECT $1)"
            " ORDER BY stream_id",
            user_id,
            from_pos,
            to_pos,
        )
        return [PresenceRow(*r) for r in rows]


def _object(raw: str) -> dict[str, Any]:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}
