"""Other servers' signing keys (S2S "Retrieving server keys"): the signed key responses the
keyring checked, and the verify keys taken from them."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database


@dataclass(frozen=True, slots=True)
class ServerVerifyKey:
    """A verify key of another server. `valid_until_ts` bounds the event timestamps it may
    verify: the capped valid_until_ts of the response for a current key, its expired_ts for an
    old one (`expired_ts` set: no later response can make it valid for longer)."""

    key_id: str
    key: str  # unpadded base64 Ed25519 public key
    valid_until_ts: int
    expired_ts: int | None = None

    def valid_at(self, ts: int) -> bool:
        return ts <= self.valid_until_ts


@dataclass(frozen=True, slots=True)
class StoredKeyResponse:
    response: dict[str, Any]
    valid_until_ts: int
    fetched_ts: int


class ServerKeysStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_verify_keys(
        self, wanted: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], ServerVerifyKey]:
        """The stored keys among the (server name, key ID) pairs in `wanted`."""
        if not wanted:
            return {}
        servers_clause, servers = self.db.in_list("server_name", 1, {s for s, _k in wanted})
        keys_clause, key_ids = self.db.in_list("key_id", 2, {k for _s, k in wanted})
        rows = await self.db.fetch(
            "SELECT server_name, key_id, verify_key, valid_until_ts, expired_ts"
            f" FROM server_verify_keys WHERE {servers_clause} AND {keys_clause}",
            servers,
            key_ids,
        )
        # The two lists select their cross product: keep the pairs asked for.
        found = {(r[0], r[1]): ServerVerifyKey(r[1], r[2], r[3], r[4]) for r in rows}
        return {pair: key for pair, key in found.items() if pair in wanted}

    async def get_key_response(self, server_name: str) -> StoredKeyResponse | None:
        row = await self.db.fetchrow(
            "SELECT response, valid_until_ts, fetched_ts FROM server_key_responses"
            " WHERE server_name = $1",
            server_name,
        )
        return None if row is None else StoredKeyResponse(json.loads(row[0]), row[1], row[2])

    async def store_key_response(
        self,
        server_name: str,
        response: dict[str, Any],
        fetched_ts: int,
        keys: Sequence[ServerVerifyKey],
    ) -> None:
        """Keep a checked key response and its keys. An older response (as a notary may hand
        out) does not replace a newer one, and never shortens a key's validity; a key listed
        as old stays old."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "INSERT INTO server_key_responses"
                " (server_name, response, valid_until_ts, fetched_ts) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (server_name) DO UPDATE SET response = excluded.response,"
                " valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts"
                " WHERE server_key_responses.valid_until_ts <= excluded.valid_until_ts",
                server_name,
                json.dumps(response, ensure_ascii=False),
                response["valid_until_ts"],
                fetched_ts,
            )
            await txn.executemany(
                "INSERT INTO server_verify_keys"
                " (server_name, key_id, verify_key, valid_until_ts, expired_ts)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = excluded.verify_key,"
                " valid_until_ts = CASE"
                "  WHEN excluded.expired_ts IS NOT NULL THEN excluded.valid_until_ts"
                "  WHEN server_verify_keys.expired_ts IS NOT NULL"
                "   THEN server_verify_keys.valid_until_ts"
                "  WHEN excluded.valid_until_ts > server_verify_keys.valid_until_ts"
                "   THEN excluded.valid_until_ts"
                "  ELSE server_verify_keys.valid_until_ts END,"
                " expired_ts = COALESCE(excluded.expired_ts, server_verify_keys.expired_ts)",
                [(server_name, k.key_id, k.key, k.valid_until_ts, k.expired_ts) for k in keys],
            )
