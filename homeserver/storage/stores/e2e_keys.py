"""End-to-end encryption keys (C-S API "End-to-End Encryption"): device keys, one-time and
fallback keys, cross-signing keys and signatures, and the device list stream that tells
other users when any of them change. See schema/0009_e2e_keys.sql."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Queryable, Txn
from homeserver.storage.id_generators import LazyStream

JsonDict = dict[str, Any]
# (user ID, device ID, algorithm): one key wanted by POST /keys/claim.
ClaimRequest = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    user_id: str
    device_id: str
    display_name: str | None
    keys: JsonDict


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    key_id: str  # "<algorithm>:<key ID>"
    key: JsonDict | str


@dataclass(frozen=True, slots=True)
class Signature:
    target_user_id: str
    target_key_id: str
    signer_user_id: str
    signer_key_id: str
    signature: str


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class E2eKeysStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream = LazyStream(db, "SELECT MAX(stream_id) FROM device_lists_stream")

    # -- the device list stream ------------------------------------------------------------

    async def current_device_list_position(self) -> int:
        return await self.stream.current()

    @asynccontextmanager
    async def changing_devices(
        self, user_ids: Collection[str]
    ) -> AsyncIterator[tuple[Txn, int]]:
        """A transaction that changes the devices or keys of `user_ids`, and its position:
        the change is on the device list stream when it commits (and the stream's position
        moves past it only then)."""
        gen = await self.stream.generator()
        with gen.allocate(1) as [position]:
            async with self.db.transaction() as txn:
                yield txn, position
                if user_ids:
                    await txn.executemany(
                        "INSERT INTO device_lists_stream (stream_id, user_id) VALUES ($1, $2)",
                        [(position, user_id) for user_id in user_ids],
                    )

    async def previous_change(self, user_id: str, before: int) -> int | None:
        """The user's last position on the device list stream before `before`."""
        value = await self.db.fetchval(
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = $1 AND stream_id < $2",
            user_id,
            before,
        )
        return None if value is None else int(value)

    async def changed_users_sharing_rooms(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> set[str]:
        """Users whose devices changed in (from_pos, to_pos] and who share a joined room with
        `user_id` now, or are `user_id`."""
        rows = await self.db.fetch(
            "SELECT DISTINCT d.user_id FROM device_lists_stream d"
            " WHERE d.stream_id > $2 AND d.stream_id <= $3 AND (d.user_id = $1 OR EXISTS ("
            "  SELECT 1 FROM current_state_events mine JOIN current_state_events theirs"
            "  ON theirs.room_id = mine.room_id AND theirs.type = 'm.room.member'"
            "  AND theirs.state_key = d.user_id AND theirs.membership = 'join'"
            "  WHERE mine.type = 'm.room.member' AND mine.state_key = $1"
            "  AND mine.membership = 'join'))",
            user_id,
            from_pos,
            to_pos,
        )
        return {r[0] for r in rows}

    # -- device keys ------------------------------------------------------------------------

    async def get_device_keys(
        self, queries: Iterable[tuple[str, Sequence[str]]]
    ) -> list[DeviceKeys]:
        """The keys of the devices asked for: (user ID, device IDs) pairs, where no device IDs
        means every device of the user. Devices that uploaded no keys are left out."""
        everything: list[str] = []
        named: list[tuple[str, str]] = []
        for user_id, device_ids in queries:
            if device_ids:
                named += [(user_id, d) for d in device_ids]
            else:
                everything.append(user_id)
        select = (
            "SELECT k.user_id, k.device_id, d.display_name, k.key_json FROM e2e_device_keys k"
            " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
        )
        rows = []
        if everything:
            clause, arg = self.db.in_list("k.user_id", 1, everything)
            rows += await self.db.fetch(f"{select} WHERE {clause}", arg)
        if named:
            clause, arg = self.db.in_list("k.user_id", 1, {u for u, _d in named})
            wanted = set(named)
            rows += [
                r
                for r in await self.db.fetch(f"{select} WHERE {clause}", arg)
                if (r[0], r[1]) in wanted
            ]
        return [DeviceKeys(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def get_one_device_keys(self, user_id: str, device_id: str) -> JsonDict | None:
        text = await self.db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
            user_id,
            device_id,
        )
        return None if text is None else dict(json.loads(text))

    async def set_device_keys_txn(
        self, txn: Txn, user_id: str, device_id: str, keys: JsonDict
    ) -> None:
        """Store the device's keys; signatures others made over its previous keys go, since
        they no longer sign what is stored."""
        await txn.execute(
            "DELETE FROM e2e_cross_signing_signatures"
            " WHERE target_user_id = $1 AND target_key_id = $2",
            user_id,
            device_id,
        )
        await txn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json",
            user_id,
            device_id,
            _dumps(keys),
        )

    # -- one-time and fallback keys -----------------------------------------------------------

    async def get_one_time_keys(
        self, user_id: str, device_id: str, key_ids: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], JsonDict | str]:
        """Those of the (algorithm, key ID) pairs the device has stored, with their keys."""
        if not key_ids:
            return {}
        clause, arg = self.db.in_list("key_id", 3, {k for _a, k in key_ids})
        rows = await self.db.fetch(
            "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys"
            f" WHERE user_id = $1 AND device_id = $2 AND {clause}",
            user_id,
            device_id,
            arg,
        )
        wanted = set(key_ids)
        return {(r[0], r[1]): json.loads(r[2]) for r in rows if (r[0], r[1]) in wanted}

    async def add_one_time_keys_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str,
        keys: Sequence[tuple[str, str, JsonDict | str]],
    ) -> None:
        """Add (algorithm, key ID, key) rows; one already there is left as it is."""
        await txn.executemany(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(user_id, device_id, a, k, _dumps(key)) for a, k, key in keys],
        )

    async def set_fallback_keys_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str,
        keys: Sequence[tuple[str, str, JsonDict | str]],
    ) -> None:
        """Replace the device's fallback key per algorithm. The same key uploaded again keeps
        its `used` flag: a retried upload must not make a handed-out key look fresh."""
        await txn.executemany(
            "INSERT INTO e2e_fallback_keys"
            " (user_id, device_id, algorithm, key_id, key_json, used)"
            " VALUES ($1, $2, $3, $4, $5, FALSE)"
            " ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
            " SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE"
            " WHERE e2e_fallback_keys.key_id <> EXCLUDED.key_id"
            " OR e2e_fallback_keys.key_json <> EXCLUDED.key_json",
            [(user_id, device_id, a, k, _dumps(key)) for a, k, key in keys],
        )

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        return (await self.key_counts(user_id, device_id))[0]

    async def key_counts(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        """The device's one-time keys per algorithm, and the algorithms of its unused fallback
        keys: one query, since /sync reports both every time."""
        rows = await self.db.fetch(
            "SELECT algorithm, COUNT(*), FALSE FROM e2e_one_time_keys"
            " WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm"
            " UNION ALL SELECT algorithm, 0, TRUE FROM e2e_fallback_keys"
            " WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY 1",
            user_id,
            device_id,
        )
        counts = {r[0]: r[1] for r in rows if not r[2]}
        return counts, [r[0] for r in rows if r[2]]

    async def claim_keys(self, wanted: Collection[ClaimRequest]) -> dict[ClaimRequest, ClaimedKey]:
        """One key per (user, device, algorithm): a one-time key, which is deleted so nobody
        gets it again, else the fallback key, which is marked used. Devices with neither are
        left out."""
        if not wanted:
            return {}
        claimed: dict[ClaimRequest, ClaimedKey] = {}
        async with self.db.transaction() as txn:
            for row in await self._claim_one_time_keys(txn, wanted):
                claimed[(row[0], row[1], row[2])] = ClaimedKey(
                    f"{row[2]}:{row[3]}", json.loads(row[4])
                )
            rest = [w for w in wanted if w not in claimed]
            if rest:
                table, arg = self._claim_table(rest)
                rows = await txn.fetch(
                    "UPDATE e2e_fallback_keys SET used = TRUE"
                    f" WHERE (user_id, device_id, algorithm) IN (SELECT u, d, a FROM {table})"
                    " RETURNING user_id, device_id, algorithm, key_id, key_json",
                    *arg,
                )
                for row in rows:
                    claimed[(row[0], row[1], row[2])] = ClaimedKey(
                        f"{row[2]}:{row[3]}", json.loads(row[4])
                    )
        return claimed

    def _claim_table(self, wanted: Collection[ClaimRequest]) -> tuple[str, list[Any]]:
        """A table expression of `wanted` with columns u, d, a, bound as $1 (and $2, $3)."""
        if self.db.dialect == "postgres":
            columns = [list(c) for c in zip(*wanted, strict=True)]
            return "unnest($1::text[], $2::text[], $3::text[]) AS w(u, d, a)", columns
        return (
            "(SELECT json_extract(value, '$[0]') AS u, json_extract(value, '$[1]') AS d,"
            " json_extract(value, '$[2]') AS a FROM json_each($1)) AS w",
            [json.dumps([list(w) for w in wanted])],
        )

    async def _claim_one_time_keys(
        self, txn: Queryable, wanted: Collection[ClaimRequest]
    ) -> list[Any]:
        table, args = self._claim_table(wanted)
        if self.db.dialect == "postgres":
            # SKIP LOCKED: a key another claim holds is passed over for the next one, so two
            # concurrent claims never get the same key and neither waits for the other.
            sql = (
                "DELETE FROM e2e_one_time_keys o USING ("
                f" SELECT k.* FROM {table} CROSS JOIN LATERAL ("
                "  SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys"
                "  WHERE user_id = w.u AND device_id = w.d AND algorithm = w.a"
                "  ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) k) p"
                " WHERE o.user_id = p.user_id AND o.device_id = p.device_id"
                " AND o.algorithm = p.algorithm AND o.key_id = p.key_id"
                " RETURNING o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json"
            )
        else:
            # One writer at a time on SQLite: picking and deleting cannot interleave.
            sql = (
                "DELETE FROM e2e_one_time_keys WHERE rowid IN ("
                " SELECT (SELECT o.rowid FROM e2e_one_time_keys o"
                "  WHERE o.user_id = w.u AND o.device_id = w.d AND o.algorithm = w.a"
                f"  ORDER BY o.key_id LIMIT 1) FROM {table})"
                " RETURNING user_id, device_id, algorithm, key_id, key_json"
            )
        return await txn.fetch(sql, *args)

    # -- cross-signing ----------------------------------------------------------------------

    async def get_cross_signing_keys(
        self, user_ids: Collection[str], key_types: Collection[str]
    ) -> dict[str, dict[str, JsonDict]]:
        """user ID -> key type -> key, for the key types asked for."""
        if not user_ids:
            return {}
        clause, arg = self.db.in_list("user_id", 1, user_ids)
        rows = await self.db.fetch(
            f"SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys WHERE {clause}",
            arg,
        )
        keys: dict[str, dict[str, JsonDict]] = {}
        for r in rows:
            if r[1] in key_types:
                keys.setdefault(r[0], {})[r[1]] = json.loads(r[2])
        return keys

    async def set_cross_signing_keys_txn(
        self, txn: Txn, user_id: str, keys: Sequence[tuple[str, str, JsonDict]]
    ) -> None:
        """Store (key type, public key, key) rows, replacing the user's key of each type."""
        await txn.executemany(
            "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key_type) DO UPDATE"
            " SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json",
            [(user_id, t, public, _dumps(key)) for t, public, key in keys],
        )

    async def is_cross_signing_key(self, user_id: str, public_key: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 FROM e2e_cross_signing_keys WHERE user_id = $1 AND public_key = $2",
            user_id,
            public_key,
        )
        return row is not None

    async def get_signatures(self, target_user_ids: Collection[str]) -> list[Signature]:
        if not target_user_ids:
            return []
        clause, arg = self.db.in_list("target_user_id", 1, target_user_ids)
        rows = await self.db.fetch(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
            f" FROM e2e_cross_signing_signatures WHERE {clause}",
            arg,
        )
        return [Signature(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def add_signatures_txn(self, txn: Txn, signatures: Sequence[Signature]) -> None:
        await txn.executemany(
            "INSERT INTO e2e_cross_signing_signatures"
            " (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
            " DO UPDATE SET signature = EXCLUDED.signature",
            [
                (s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature)
                for s in signatures
            ],
        )

    async def device_ids_in_use(self, user_id: str, device_ids: Collection[str]) -> bool:
        """Whether the user has a device with any of `device_ids`."""
        clause, arg = self.db.in_list("device_id", 2, device_ids)
        row = await self.db.fetchrow(
            f"SELECT 1 FROM devices WHERE user_id = $1 AND {clause} LIMIT 1", user_id, arg
        )
        return row is not None
