"""Dehydrated devices (MSC3814): which of a user's devices is the dehydrated one, and its
opaque device data. The device itself is an ordinary row of `devices`, with keys and an inbox
like any other. See schema/0011_dehydrated_devices.sql."""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.database import Database, Txn

JsonDict = dict[str, Any]


class DehydratedDevicesStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: str) -> tuple[str, JsonDict] | None:
        """(device ID, device data) of the user's dehydrated device."""
        row = await self.db.fetchrow(
            "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1", user_id
        )
        return None if row is None else (row[0], json.loads(row[1]))

    async def get_for_update_txn(self, txn: Txn, user_id: str) -> str | None:
        """The dehydrated device's ID, locked until `txn` ends (PostgreSQL; SQLite has one
        writer), so concurrent replacements take turns."""
        lock = " FOR UPDATE" if self.db.dialect == "postgres" else ""
        value = await txn.fetchval(
            f"SELECT device_id FROM dehydrated_devices WHERE user_id = $1{lock}", user_id
        )
        return None if value is None else str(value)

    async def set_txn(self, txn: Txn, user_id: str, device_id: str, device_data: JsonDict) -> None:
        await txn.execute(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE"
            " SET device_id = EXCLUDED.device_id, device_data = EXCLUDED.device_data",
            user_id,
            device_id,
            json.dumps(device_data, ensure_ascii=False),
        )
