"""Answers to inbound federation transactions, for idempotency per origin and transaction
ID (S-S API "Transactions"). See schema/0014_federation_inbound.sql."""

from __future__ import annotations

import json
from typing import Any

from homeserver.storage.database import Database

JsonDict = dict[str, Any]


class FederationTxnStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_response(self, origin: str, txn_id: str) -> JsonDict | None:
        text = await self.db.fetchval(
            "SELECT response_json FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
            origin,
            txn_id,
        )
        return None if text is None else dict(json.loads(text))

    async def set_response(self, origin: str, txn_id: str, response: JsonDict, now: int) -> None:
        await self.db.execute(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
            origin,
            txn_id,
            json.dumps(response),
            now,
        )

    async def forget_before(self, ts: int) -> None:
        """Senders retry a transaction for minutes, not days: old answers can go."""
        await self.db.execute("DELETE FROM federation_inbound_txns WHERE received_ts < $1", ts)
