"""Writing events: everything one batch of events changes lands in one transaction.

The caller (handlers/persistence.py) serialises batches per room and decides the new forward
extremities and current state; this store only writes them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

from canonicaljson import encode_canonical_json

from homeserver.events.event import CREATE, MEMBER, REDACTION, Event, StateKey
from homeserver.storage.database import Database, Txn
from homeserver.storage.id_generators import StreamIdGenerator
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.state import FrozenStateMap, PendingStateGroup, StateStore, state_delta


@dataclass
class EventContext:
    """The state around an event, worked out before it is persisted.

    `state_before` is None for outliers, whose state we do not know. Otherwise the state
    before the event lives either in the existing group `state_group_before` or, for a
    freshly resolved state, in `pending_before`, written with the event.
    """

    state_before: FrozenStateMap | None = None
    state_group_before: int | None = None
    pending_before: PendingStateGroup | None = None
    rejected_reason: str | None = None
    soft_failed: bool = False

    @property
    def outlier(self) -> bool:
        return self.state_before is None

    def state_after(self, event: Event) -> FrozenStateMap | None:
        if self.state_before is None:
            return None
        if not event.is_state() or self.rejected_reason is not None:
            return self.state_before
        after = dict(self.state_before)
        after[event.state_key_tuple] = event.event_id
        return MappingProxyType(after)


@dataclass
class PersistedEvent:
    event: Event
    stream_ordering: int


class PersistEventsStore:
    def __init__(
        self,
        db: Database,
        events: EventsStore,
        state: StateStore,
        stream_ids: StreamIdGenerator,
        backfill_ids: StreamIdGenerator,
    ) -> None:
        self.db = db
        self.events = events
        self.state = state
        self.stream_ids = stream_ids
        self.backfill_ids = backfill_ids

    async def persist_events(
        self,
        room_id: str,
        items: Sequence[tuple[Event, EventContext]],
        *,
        backfilled: bool,
        new_forward_extremities: set[str] | None,
        new_current_state: Mapping[StateKey, str] | None,
    ) -> list[PersistedEvent]:
        """Write `items` (all in `room_id`, in topological order) in one transaction.

        Live events take positive stream positions; backfilled events and outliers negative
        ones, so they never show up in a stream read. `new_forward_extremities` and
        `new_current_state` replace the room's when given.
        """
        live = [
            e for e, ctx in items if not backfilled and not ctx.outlier
        ]
        # Current-state member events need their membership inlined; fetch before the txn.
        membership_of = await self._memberships_for(new_current_state, items)
        now = int(time.time() * 1000)
        with self.stream_ids.allocate(len(live)) as live_ids, \
                self.backfill_ids.allocate(len(items) - len(live)) as other_ids:
            positions: dict[str, int] = {}
            live_iter, other_iter = iter(live_ids), iter(other_ids)
            live_set = {e.event_id for e in live}
            for event, _ctx in items:
                positions[event.event_id] = (
                    next(live_iter) if event.event_id in live_set else next(other_iter)
                )
            async with self.db.transaction() as txn:
                await self._ensure_room_txn(txn, items)
                for event, ctx in items:
                    await self._insert_event_txn(txn, event, ctx, positions[event.event_id], now)
                await self._insert_edges_txn(txn, items)
                if new_forward_extremities is not None:
                    await txn.execute(
                        "DELETE FROM event_forward_extremities WHERE room_id = $1", room_id
                    )
                    await txn.executemany(
                        "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)",
                        [(room_id, e) for e in sorted(new_forward_extremities)],
                    )
                if new_current_state is not None:
                    pos = max(live_ids) if live_ids else self.stream_ids.current
                    await self._update_current_state_txn(
                        txn, room_id, new_current_state, membership_of, pos
                    )
        for event, _ctx in items:
            self.events.remember(event)
        return [PersistedEvent(e, positions[e.event_id]) for e, _ in items]

    async def _memberships_for(
        self,
        new_state: Mapping[StateKey, str] | None,
        items: Sequence[tuple[Event, EventContext]],
    ) -> dict[str, str | None]:
        if new_state is None:
            return {}
        member_ids = {eid for (t, _k), eid in new_state.items() if t == MEMBER}
        in_batch = {e.event_id: e for e, _ in items}
        fetched = await self.events.get_events(member_ids - in_batch.keys())
        fetched.update(in_batch)
        return {eid: fetched[eid].membership for eid in member_ids if eid in fetched}

    async def _ensure_room_txn(self, txn: Txn, items: Sequence[tuple[Event, EventContext]]) -> None:
        event = items[0][0]
        creator = next((e.sender for e, _ in items if e.type == CREATE and e.state_key == ""), None)
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room_id) DO NOTHING",
            event.room_id, event.room_version.identifier, creator, int(time.time() * 1000),
        )

    async def _insert_event_txn(
        self, txn: Txn, event: Event, ctx: EventContext, position: int, now: int
    ) -> None:
        group_before = ctx.state_group_before
        if ctx.pending_before is not None:
            group_before = await self.state.store_group_txn(txn, ctx.pending_before)
        group_after = group_before
        if group_before is not None and event.is_state() and ctx.rejected_reason is None:
            after = ctx.state_after(event)
            assert after is not None
            group_after = await self.state.store_group_txn(
                txn,
                PendingStateGroup(
                    room_id=event.room_id,
                    state=after,
                    prev_group=group_before,
                    delta={event.state_key_tuple: event.event_id},
                ),
            )
        await txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, received_ts, outlier, rejected_reason, soft_failed, redacts,"
            " state_group_before, state_group_after, json)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            position, event.event_id, event.room_id, event.type, event.state_key, event.sender,
            event.depth, event.origin_server_ts, now, ctx.outlier, ctx.rejected_reason,
            ctx.soft_failed, event.redacts if event.type == REDACTION else None,
            group_before, group_after, encode_canonical_json(event.pdu).decode("utf-8"),
        )
        if ctx.rejected_reason is not None:
            return
        if event.type == MEMBER and event.state_key is not None and event.membership:
            await txn.execute(
                "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
                " stream_ordering) VALUES ($1, $2, $3, $4, $5, $6)",
                event.event_id, event.room_id, event.state_key, event.sender, event.membership,
                position,
            )
        if event.type == REDACTION and event.redacts:
            await txn.execute(
                "INSERT INTO redactions (event_id, redacts) VALUES ($1, $2)",
                event.event_id, event.redacts,
            )

    async def _insert_edges_txn(self, txn: Txn, items: Sequence[tuple[Event, EventContext]]) -> None:
        await txn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            [(e.event_id, p) for e, _ in items for p in e.prev_event_ids],
        )
        await txn.executemany(
            "INSERT INTO event_auth (event_id, auth_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(e.event_id, a) for e, _ in items for a in e.auth_event_ids],
        )

    async def _update_current_state_txn(
        self,
        txn: Txn,
        room_id: str,
        new_state: Mapping[StateKey, str],
        membership_of: Mapping[str, str | None],
        position: int,
    ) -> None:
        rows = await txn.fetch(
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = $1",
            room_id,
        )
        old_state = {(r[0], r[1]): r[2] for r in rows}
        delta = state_delta(old_state, new_state)
        if not delta:
            return
        removed = [(room_id, t, k) for (t, k), e in delta.items() if e is None]
        changed = [
            (room_id, t, k, e, membership_of.get(e) if t == MEMBER else None)
            for (t, k), e in delta.items() if e is not None
        ]
        await txn.executemany(
            "DELETE FROM current_state_events WHERE room_id = $1 AND type = $2 AND state_key = $3",
            removed,
        )
        await txn.executemany(
            "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, type, state_key)"
            " DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
            changed,
        )
        await txn.executemany(
            "INSERT INTO current_state_delta_stream"
            " (stream_ordering, room_id, type, state_key, event_id, prev_event_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(position, room_id, t, k, e, old_state.get((t, k))) for (t, k), e in delta.items()],
        )
