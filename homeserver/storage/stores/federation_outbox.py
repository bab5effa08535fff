"""The outbound federation queue (S-S API "Transactions"): per destination, the local PDUs and
the EDUs it has yet to acknowledge, the event stream position the queue has caught up to, and
each failing destination's back-off. See schema/0013_federation_outbox.sql."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.events.event import MEMBER
from homeserver.identifiers import domain_of
from homeserver.storage.database import Database, Txn

JsonDict = dict[str, Any]


@dataclass
class OutboxBatch:
    """The oldest queued items of one destination, in queue order."""

    queue_ids: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    edus: list[JsonDict] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Backoff:
    retry_at_ts: int
    retry_interval_ms: int


class FederationOutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._next_id: int | None = None
        self._lock = asyncio.Lock()

    async def _allocate(self, n: int) -> int:
        """The first of `n` new queue IDs. Every queued row keeps its ID until it is sent, so
        seeding from the highest one left keeps new rows after every waiting one."""
        async with self._lock:
            if self._next_id is None:
                top = await self.db.fetchval("SELECT MAX(queue_id) FROM federation_outbox")
                self._next_id = (top or 0) + 1
            first = self._next_id
            self._next_id += n
            return first

    async def sender_position(self) -> int | None:
        value = await self.db.fetchval(
            "SELECT stream_ordering FROM federation_sender_position WHERE id = 1"
        )
        return None if value is None else int(value)

    async def start_at(self, position: int) -> None:
        """Where a sender that never ran starts: the events before it are history."""
        await self.db.execute(
            "INSERT INTO federation_sender_position (id, stream_ordering) VALUES (1, $1)"
            " ON CONFLICT (id) DO NOTHING",
            position,
        )

    async def queue_local_events(
        self, server_name: str, after: int, upto: int, limit: int
    ) -> tuple[int, dict[str, int]]:
        """Queue the live local events in (after, upto] (at most `limit` of them) for every
        other server in their rooms, and move the sender position past them in the same
        transaction. Returns the new position and the number of PDUs queued per destination."""
        rows = await self.db.fetch(
            "SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, e.sender,"
            " m.membership FROM events e LEFT JOIN room_memberships m ON m.event_id = e.event_id"
            " WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2 AND NOT e.outlier"
            " AND e.rejected_reason IS NULL AND NOT e.soft_failed"
            " ORDER BY e.stream_ordering LIMIT $3",
            after,
            upto,
            limit,
        )
        position = rows[-1][0] if len(rows) == limit else upto
        local = [r for r in rows if domain_of(r[5]) == server_name]
        servers = await self._servers_in_rooms({r[2] for r in local}, server_name)
        queued: list[tuple[str, str]] = []
        for _pos, event_id, room_id, event_type, state_key, _sender, membership in local:
            destinations = set(servers.get(room_id, ()))
            if event_type == MEMBER and state_key and membership != "invite":
                # A user who leaves, is kicked or banned is told even though their server
                # is no longer in the room. (Invites travel by /invite, not here.)
                target = domain_of(state_key)
                if target != server_name:
                    destinations.add(target)
            queued += [(d, event_id) for d in sorted(destinations)]
        first = await self._allocate(len(queued)) if queued else 0
        async with self.db.transaction() as txn:
            if queued:
                await txn.executemany(
                    "INSERT INTO federation_outbox (destination, queue_id, event_id)"
                    " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [(d, first + i, e) for i, (d, e) in enumerate(queued)],
                )
            await txn.execute(
                "UPDATE federation_sender_position SET stream_ordering = $1 WHERE id = 1",
                position,
            )
        counts: dict[str, int] = {}
        for destination, _e in queued:
            counts[destination] = counts.get(destination, 0) + 1
        return position, counts

    async def _servers_in_rooms(
        self, room_ids: Collection[str], server_name: str
    ) -> dict[str, set[str]]:
        if not room_ids:
            return {}
        clause, arg = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, state_key FROM current_state_events"
            f" WHERE type = 'm.room.member' AND membership = 'join' AND {clause}",
            arg,
        )
        servers: dict[str, set[str]] = {}
        for room_id, user_id in rows:
            domain = domain_of(user_id)
            if domain != server_name:
                servers.setdefault(room_id, set()).add(domain)
        return servers

    async def queue_event(self, destinations: Collection[str], event_id: str) -> None:
        """Queue one event for `destinations` (an event another server made that we must
        pass on, such as a join we accepted through send_join)."""
        if not destinations:
            return
        first = await self._allocate(len(destinations))
        await self.db.executemany(
            "INSERT INTO federation_outbox (destination, queue_id, event_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            [(d, first + i, event_id) for i, d in enumerate(sorted(destinations))],
        )

    async def servers_in_room(self, room_id: str, server_name: str) -> set[str]:
        """The other servers with a member joined to the room now."""
        return (await self._servers_in_rooms([room_id], server_name)).get(room_id, set())

    async def servers_sharing_a_room(self, user_id: str, server_name: str) -> set[str]:
        """The other servers with a member joined to any room the user is joined to (who
        may see the user's presence)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT b.state_key FROM current_state_events a JOIN current_state_events b"
            " ON a.room_id = b.room_id"
            " WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'"
            " AND b.type = 'm.room.member' AND b.membership = 'join'",
            user_id,
        )
        return {domain_of(r[0]) for r in rows} - {server_name}

    async def queue_edu(self, destinations: Collection[str], edu: JsonDict) -> None:
        if not destinations:
            return
        first = await self._allocate(len(destinations))
        text = json.dumps(edu, ensure_ascii=False)
        await self.db.executemany(
            "INSERT INTO federation_outbox (destination, queue_id, edu_json) VALUES ($1, $2, $3)",
            [(d, first + i, text) for i, d in enumerate(sorted(destinations))],
        )

    async def next_batch(self, destination: str, max_pdus: int, max_edus: int) -> OutboxBatch:
        """The oldest items of the destination: up to `max_pdus` PDUs and `max_edus` EDUs
        (S-S API: a transaction holds at most 50 PDUs and 100 EDUs)."""
        batch = OutboxBatch()
        for kind, limit in (("event_id", max_pdus), ("edu_json", max_edus)):
            rows = await self.db.fetch(
                f"SELECT queue_id, {kind} FROM federation_outbox"
                f" WHERE destination = $1 AND {kind} IS NOT NULL ORDER BY queue_id LIMIT $2",
                destination,
                limit,
            )
            batch.queue_ids += [r[0] for r in rows]
            if kind == "event_id":
                batch.event_ids = [r[1] for r in rows]
            else:
                batch.edus = [json.loads(r[1]) for r in rows]
        return batch

    async def remove(self, destination: str, queue_ids: Sequence[int]) -> None:
        """Drop what the destination acknowledged, and its back-off with it."""
        clause, arg = self.db.in_list("queue_id", 2, queue_ids)
        async with self.db.transaction() as txn:
            await txn.execute(
                f"DELETE FROM federation_outbox WHERE destination = $1 AND {clause}",
                destination,
                arg,
            )
            await self._clear_backoff_txn(txn, destination)

    async def destinations_with_items(self) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT destination FROM federation_outbox")
        return [r[0] for r in rows]

    async def get_backoff(self, destination: str) -> Backoff | None:
        row = await self.db.fetchrow(
            "SELECT retry_at_ts, retry_interval_ms FROM federation_destinations"
            " WHERE destination = $1",
            destination,
        )
        return None if row is None else Backoff(row[0], row[1])

    async def set_backoff(self, destination: str, backoff: Backoff) -> None:
        await self.db.execute(
            "INSERT INTO federation_destinations (destination, retry_at_ts, retry_interval_ms)"
            " VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE"
            " SET retry_at_ts = EXCLUDED.retry_at_ts,"
            " retry_interval_ms = EXCLUDED.retry_interval_ms",
            destination,
            backoff.retry_at_ts,
            backoff.retry_interval_ms,
        )

    async def clear_backoff(self, destination: str) -> None:
        async with self.db.transaction() as txn:
            await self._clear_backoff_txn(txn, destination)

    async def _clear_backoff_txn(self, txn: Txn, destination: str) -> None:
        await txn.execute("DELETE FROM federation_destinations WHERE destination = $1", destination)
