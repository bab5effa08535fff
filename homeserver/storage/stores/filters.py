"""Filters uploaded by users (C-S API "Filtering": POST /user/{userId}/filter)."""

from __future__ import annotations

import asyncio
import hashlib

from homeserver.storage.database import Database


class FiltersStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Filter IDs count up per user. This process is the only writer of the database
        # (storage README), so a lock here is enough to hand each ID out once.
        self._lock = asyncio.Lock()

    async def add_filter(self, user_id: str, filter_json: str) -> int:
        """Store `filter_json` (canonical JSON) for `user_id`; returns its ID. Uploading the same
        filter again returns the existing ID: clients upload theirs at every start-up."""
        filter_hash = hashlib.sha256(filter_json.encode("utf-8")).hexdigest()
        async with self._lock:
            existing = await self.db.fetchval(
                "SELECT filter_id FROM user_filters"
                " WHERE user_id = $1 AND filter_hash = $2 AND filter_json = $3",
                user_id,
                filter_hash,
                filter_json,
            )
            if existing is not None:
                return int(existing)
            async with self.db.transaction() as txn:
                top = await txn.fetchval(
                    "SELECT MAX(filter_id) FROM user_filters WHERE user_id = $1", user_id
                )
                filter_id = 0 if top is None else int(top) + 1
                await txn.execute(
                    "INSERT INTO user_filters (user_id, filter_id, filter_hash, filter_json)"
                    " VALUES ($1, $2, $3, $4)",
                    user_id,
                    filter_id,
                    filter_hash,
                    filter_json,
                )
            return filter_id

    async def get_filter(self, user_id: str, filter_id: int) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2",
            user_id,
            filter_id,
        )
        return value
