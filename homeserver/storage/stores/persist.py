"""Writing events: everything one batch of events changes lands in one transaction.

The caller (handlers/persistence.py) serialises batches per room and decides the new forward
extremities and current state; this store only writes them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from canonicaljson import encode_canonical_json

from homeserver.events.event import CREATE, MEMBER, REDACTION, Event, StateKey
from homeserver.storage.database import Database, Txn
from homeserver.storage.id_generators import StreamIdGenerator
from homeserver.storage.stores.events import EventMeta, EventsStore
from homeserver.storage.stores.state import FrozenStateMap, NewStateGroup, StateStore, state_delta

# (type, state_key) -> (new event ID or None if removed, previous event ID or None).
CurrentStateDelta = Mapping[StateKey, tuple[str | None, str | None]]


def current_state_delta(
    old: Mapping[StateKey, str], new: Mapping[StateKey, str]
) -> CurrentStateDelta:
    return {k: (v, old.get(k)) for k, v in state_delta(old, new).items()}


@dataclass(frozen=True)
class ExtremitiesChange:
    removed: frozenset[str]
    added: frozenset[str]


@dataclass
class EventContext:
    """The state around an event, worked out before it is persisted.

    `state_before` is None for outliers, whose state we do not know. State groups are named
    by ID even before they are written: `new_groups` are the ones to write with this event.
    `state_group_after` and `state_after` are filled in by StateHandler.finish_context once
    the event's rejection is decided.
    """

    state_before: FrozenStateMap | None = None
    state_group_before: int | None = None
    new_groups: list[NewStateGroup] = field(default_factory=list)
    rejected_reason: str | None = None
    soft_failed: bool = False
    state_group_after: int | None = None
    state_after: FrozenStateMap | None = None

    @property
    def outlier(self) -> bool:
        return self.state_before is None


@dataclass
class PersistedEvent:
    event: Event
    stream_ordering: int


@dataclass(frozen=True)
class IndexedEvent:
    """An event as an EventIndexer sees it in the transaction that stores it."""

    event: Event
    stream_ordering: int
    # In the room's history (not an outlier), accepted by the auth rules and not soft-failed:
    # what clients may be shown.
    accepted: bool
    backfilled: bool


class EventIndexer(Protocol):
    """Rows derived from events (relations, search text, push actions), written in the same
    transaction as the events: a crash never leaves an event without them or them without
    the event."""

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None: ...


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
        # Rooms whose `rooms` row certainly exists, so most batches skip that insert.
        self._known_rooms: set[str] = set()
        # Called in every transaction that stores events (add_indexer).
        self._indexers: list[EventIndexer] = []

    def add_indexer(self, indexer: EventIndexer) -> None:
        self._indexers.append(indexer)

    async def persist_events(
        self,
        room_id: str,
        items: Sequence[tuple[Event, EventContext]],
        *,
        backfilled: bool,
        forward_extremities: ExtremitiesChange | None,
        current_state_delta: CurrentStateDelta | None,
    ) -> list[PersistedEvent]:
        """Write `items` (all in `room_id`, in topological order) in one transaction.

        Live events take positive stream positions; backfilled events and outliers negative
        ones, so they never show up in a stream read. `forward_extremities` and
        `current_state_delta`, when given, are applied to the room's.
        """
        live = [e for e, ctx in items if not backfilled and not ctx.outlier]
        # Current-state member events need their membership inlined; fetch before the txn.
        membership_of = await self._memberships_for(current_state_delta or {}, items)
        now = int(time.time() * 1000)
        with (
            self.stream_ids.allocate(len(live)) as live_ids,
            self.backfill_ids.allocate(len(items) - len(live)) as other_ids,
        ):
            positions: dict[str, int] = {}
            live_iter, other_iter = iter(live_ids), iter(other_ids)
            live_set = {e.event_id for e in live}
            for event, _ctx in items:
                positions[event.event_id] = (
                    next(live_iter) if event.event_id in live_set else next(other_iter)
                )
            async with self.db.transaction() as txn:
                if room_id not in self._known_rooms:
                    await self._ensure_room_txn(txn, items)
                await self.state.store_groups_txn(
                    txn, [g for _, ctx in items for g in ctx.new_groups]
                )
                await self._insert_events_txn(txn, items, positions, now)
                await self._insert_edges_txn(txn, items)
                await self._index_txn(txn, room_id, items, positions, backfilled)
                if forward_extremities is not None:
                    await self._change_forward_extremities_txn(txn, room_id, forward_extremities)
                if current_state_delta:
                    # Current state only changes with a live event, whose position the delta
                    # rows take: a position no client token can already cover.
                    assert live_ids, "a current-state change needs a live event"
                    pos = max(live_ids)
                    await self._update_current_state_txn(
                        txn, room_id, current_state_delta, membership_of, pos
                    )
        self._known_rooms.add(room_id)
        for event, ctx in items:
            meta = EventMeta(
                event.event_id,
                room_id,
                positions[event.event_id],
                event.depth,
                ctx.outlier,
                ctx.rejected_reason,
                ctx.soft_failed,
                ctx.state_group_before,
                ctx.state_group_after,
            )
            self.events.remember(event, meta)
        return [PersistedEvent(e, positions[e.event_id]) for e, _ in items]

    async def deoutlier_events(
        self, items: Sequence[tuple[Event, EventContext]]
    ) -> list[PersistedEvent]:
        """Give events held as outliers their place in the room's history (backfill reached
        them): the state around each and its rejection, from `items`' finished contexts. They
        keep their stream positions, which are negative as backfilled events' are."""
        async with self.db.transaction() as txn:
            await self.state.store_groups_txn(txn, [g for _, ctx in items for g in ctx.new_groups])
            await txn.executemany(
                "UPDATE events SET outlier = FALSE, state_group_before = $2,"
                " state_group_after = $3, rejected_reason = $4 WHERE event_id = $1 AND outlier",
                [
                    (e.event_id, ctx.state_group_before, ctx.state_group_after, ctx.rejected_reason)
                    for e, ctx in items
                ],
            )
            # A membership that the state before it now rejects never took effect.
            await txn.executemany(
                "DELETE FROM room_memberships WHERE event_id = $1",
                [(e.event_id,) for e, ctx in items if ctx.rejected_reason is not None],
            )
            if self._indexers:
                clause, ids = self.db.in_list("event_id", 1, [e.event_id for e, _ in items])
                rows = await txn.fetch(
                    f"SELECT event_id, stream_ordering FROM events WHERE {clause}", ids
                )
                positions = {r[0]: r[1] for r in rows}
                by_room: dict[str, list[tuple[Event, EventContext]]] = {}
                for event, ctx in items:
                    by_room.setdefault(event.room_id, []).append((event, ctx))
                for room_id, room_items in by_room.items():
                    await self._index_txn(txn, room_id, room_items, positions, backfilled=True)
        # Outliers' rows are never cached, so this reads the rows just written.
        metas = await self.events.get_event_metas([e.event_id for e, _ in items])
        return [PersistedEvent(e, metas[e.event_id].stream_ordering) for e, _ in items]

    async def _index_txn(
        self,
        txn: Txn,
        room_id: str,
        items: Sequence[tuple[Event, EventContext]],
        positions: Mapping[str, int],
        backfilled: bool,
    ) -> None:
        if not self._indexers:
            return
        indexed = [
            IndexedEvent(
                event,
                positions[event.event_id],
                accepted=not ctx.outlier and ctx.rejected_reason is None and not ctx.soft_failed,
                backfilled=backfilled,
            )
            for event, ctx in items
        ]
        for indexer in self._indexers:
            await indexer.index_events_txn(txn, room_id, indexed)

    async def _memberships_for(
        self, delta: CurrentStateDelta, items: Sequence[tuple[Event, EventContext]]
    ) -> dict[str, str | None]:
        member_ids = {new for (t, _k), (new, _old) in delta.items() if t == MEMBER and new}
        if not member_ids:
            return {}
        in_batch = {e.event_id: e for e, _ in items}
        fetched = await self.events.get_events(member_ids - in_batch.keys())
        fetched.update(in_batch)
        return {eid: fetched[eid].membership for eid in member_ids if eid in fetched}

    async def _change_forward_extremities_txn(
        self, txn: Txn, room_id: str, change: ExtremitiesChange
    ) -> None:
        # Only the rows that change are touched: rewriting the whole set on every event leaves
        # dead rows behind that slow each later statement on PostgreSQL until a vacuum.
        await txn.executemany(
            "DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2",
            [(room_id, e) for e in sorted(change.removed)],
        )
        await txn.executemany(
            "INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)",
            [(room_id, e) for e in sorted(change.added)],
        )

    async def persist_out_of_band_membership(self, event: Event) -> int:
        """Store a member event of a room whose state we do not hold (an invite from another
        server): the event as an outlier, and the user's membership in the room's current
        state and delta stream at a live position of its own. Returns that position."""
        assert event.type == MEMBER and event.state_key is not None
        room_id, user_id = event.room_id, event.state_key
        old = await self.db.fetchval(
            "SELECT event_id FROM current_state_events"
            " WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2",
            room_id,
            user_id,
        )
        items = [(event, EventContext())]
        now = int(time.time() * 1000)
        with (
            self.stream_ids.allocate(1) as [position],
            self.backfill_ids.allocate(1) as [event_position],
        ):
            async with self.db.transaction() as txn:
                await self._ensure_room_txn(txn, items)
                await self._insert_events_txn(txn, items, {event.event_id: event_position}, now)
                await self._update_current_state_txn(
                    txn,
                    room_id,
                    {(MEMBER, user_id): (event.event_id, old)},
                    {event.event_id: event.membership},
                    position,
                )
        return int(position)

    async def _ensure_room_txn(self, txn: Txn, items: Sequence[tuple[Event, EventContext]]) -> None:
        event = items[0][0]
        creator = next((e.sender for e, _ in items if e.type == CREATE and e.state_key == ""), None)
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room_id) DO NOTHING",
            event.room_id,
            event.room_version.identifier,
            creator,
            int(time.time() * 1000),
        )

    async def _insert_events_txn(
        self,
        txn: Txn,
        items: Sequence[tuple[Event, EventContext]],
        positions: Mapping[str, int],
        now: int,
    ) -> None:
        await txn.executemany(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, received_ts, outlier, rejected_reason, soft_failed, redacts,"
            " state_group_before, state_group_after, json)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            [
                (
                    positions[e.event_id],
                    e.event_id,
                    e.room_id,
                    e.type,
                    e.state_key,
                    e.sender,
                    e.depth,
                    e.origin_server_ts,
                    now,
                    ctx.outlier,
                    ctx.rejected_reason,
                    ctx.soft_failed,
                    e.redacts if e.type == REDACTION else None,
                    ctx.state_group_before,
                    ctx.state_group_after,
                    encode_canonical_json(e.pdu).decode("utf-8"),
                )
                for e, ctx in items
            ],
        )
        # Soft-failed events are stored but never take effect, so they are not memberships.
        accepted = [e for e, ctx in items if ctx.rejected_reason is None and not ctx.soft_failed]
        await txn.executemany(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
            " stream_ordering) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (e.event_id, e.room_id, e.state_key, e.sender, e.membership, positions[e.event_id])
                for e in accepted
                if e.type == MEMBER and e.state_key is not None and e.membership
            ],
        )

    async def _insert_edges_txn(
        self, txn: Txn, items: Sequence[tuple[Event, EventContext]]
    ) -> None:
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
        delta: CurrentStateDelta,
        membership_of: Mapping[str, str | None],
        position: int,
    ) -> None:
        removed = [(room_id, t, k) for (t, k), (new, _old) in delta.items() if new is None]
        changed = [
            (room_id, t, k, new, membership_of.get(new) if t == MEMBER else None)
            for (t, k), (new, _old) in delta.items()
            if new is not None
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
            [(position, room_id, t, k, new, old) for (t, k), (new, old) in delta.items()],
        )
