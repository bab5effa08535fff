"""EventPersister: the one way events enter storage. Serialises work per room, works out the
new forward extremities and current state, writes everything in one transaction, then wakes
the notifier (ARCHITECTURE §4 step 4)."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.handlers.state import StateHandler
from homeserver.notifier.local import LocalNotifier
from homeserver.storage import Storage
from homeserver.storage.stores.persist import EventContext, PersistedEvent

logger = logging.getLogger(__name__)


class RoomLinearizer:
    """One holder at a time per room; locks are dropped when no one waits on them."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def lock(self, room_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(room_id, asyncio.Lock())
        self._users[room_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[room_id] -= 1
            if not self._users[room_id]:
                del self._users[room_id]
                del self._locks[room_id]


class EventPersister:
    def __init__(self, storage: Storage, state: StateHandler, notifier: LocalNotifier) -> None:
        self.storage = storage
        self.state = state
        self.notifier = notifier
        self.room_locks = RoomLinearizer()

    async def persist_local_event_locked(self, event: Event, context: EventContext) -> PersistedEvent:
        """Persist an event built on all of the room's forward extremities; the caller holds
        `room_locks.lock(room_id)` from reading the extremities until this returns."""
        after = context.state_after(event)
        persisted = await self.storage.persist.persist_events(
            event.room_id,
            [(event, context)],
            backfilled=False,
            new_forward_extremities={event.event_id},
            new_current_state=after,
        )
        self._notify(persisted)
        return persisted[0]

    async def persist_events(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]], *, backfilled: bool = False
    ) -> list[PersistedEvent]:
        """Persist events from elsewhere (federation, or a room join's state and auth chain),
        in topological order. Outliers and backfilled events change neither the forward
        extremities nor current state; soft-failed and rejected events never become
        extremities."""
        async with self.room_locks.lock(room_id):
            extremities, current = None, None
            if not backfilled:
                extremities, current = await self._new_extremities_and_state(room_id, items)
            persisted = await self.storage.persist.persist_events(
                room_id, items, backfilled=backfilled,
                new_forward_extremities=extremities, new_current_state=current,
            )
        if not backfilled:
            self._notify(persisted)
        return persisted

    async def _new_extremities_and_state(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]]
    ) -> tuple[set[str] | None, dict[StateKey, str] | None]:
        candidates = [
            (e, ctx) for e, ctx in items
            if not ctx.outlier and not ctx.soft_failed and ctx.rejected_reason is None
        ]
        if not candidates:
            return None, None
        old = set(await self.storage.events.get_forward_extremities(room_id))
        new = old | {e.event_id for e, _ in candidates}
        for event, ctx in items:
            if not ctx.outlier:
                new -= set(event.prev_event_ids)
        # An event that a stored event already points at is not an extremity (it arrived late).
        new -= await self._referenced_by_stored_events(new - old)
        if new == old:
            return None, None
        states_after = {e.event_id: ctx.state_after(e) for e, ctx in candidates}
        state_sets = []
        for event_id in sorted(new):
            state = states_after.get(event_id)
            if state is None:
                state = await self.state.get_state_after(event_id)
            state_sets.append(dict(state))
        room_version = candidates[0][0].room_version
        current = await self.state.resolve(room_id, room_version, state_sets)
        return new, current

    async def _referenced_by_stored_events(self, event_ids: set[str]) -> set[str]:
        if not event_ids:
            return set()
        db = self.storage.db
        clause, arg = db.in_list("prev_event_id", 1, event_ids)
        rows = await db.fetch(f"SELECT DISTINCT prev_event_id FROM event_edges WHERE {clause}", arg)
        return {r[0] for r in rows}

    def _notify(self, persisted: Sequence[PersistedEvent]) -> None:
        for p in persisted:
            if p.stream_ordering <= 0:
                continue
            event = p.event
            users = [event.state_key] if event.type == MEMBER and event.state_key else []
            self.notifier.on_new_event(event.room_id, p.stream_ordering, users)
