"""EventPersister: the one way events enter storage (ARCHITECTURE §4 step 4).

Local events in a room form a chain: each is built on the one before, so the room's "tip"
(forward extremities, depth, state) is kept in memory and the next event can be built while
the previous one is still being written. Built events join a per-room queue; one drainer per
room writes whatever has queued up in a single transaction, so many senders into one room
share the commit cost. A sender's call returns only once its event has committed.

Events from elsewhere (federation) are persisted directly, after the local queue has drained,
and reset the tip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.handlers.state import StateHandler
from homeserver.notifier.local import LocalNotifier
from homeserver.storage import Storage
from homeserver.storage.stores.persist import (
    CurrentStateDelta,
    EventContext,
    ExtremitiesChange,
    PersistedEvent,
    current_state_delta,
)
from homeserver.storage.stores.state import FrozenStateMap

logger = logging.getLogger(__name__)

# S2S "PDUs": prev_events holds at most 20 events; cite the deepest extremities when more.
MAX_PREV_EVENTS = 20
# Events written per transaction at most; bounds the transaction's size and latency.
MAX_BATCH = 200


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


class StaleTip(Exception):
    """The event was built on a tip that a failed write has since discarded; build again."""


@dataclass
class NextEvent:
    """What the next local event in a room builds on."""

    prev_event_ids: list[str]
    depth: int
    context: EventContext
    generation: int


@dataclass
class _Tip:
    extremities: list[str]
    depth: int
    state_group: int
    state: FrozenStateMap
    generation: int


@dataclass
class _Queued:
    event: Event
    context: EventContext
    done: asyncio.Future[PersistedEvent]


class EventPersister:
    def __init__(self, storage: Storage, state: StateHandler, notifier: LocalNotifier) -> None:
        self.storage = storage
        self.state = state
        self.notifier = notifier
        self.room_locks = RoomLinearizer()
        self._tips: dict[str, _Tip] = {}
        self._queues: dict[str, list[_Queued]] = defaultdict(list)
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._generation = 0

    async def next_local_event(self, room_id: str, room_version: RoomVersion) -> NextEvent | None:
        """Where the next local event goes; the caller holds `room_locks.lock(room_id)` until it
        has called `enqueue_local`. None when the room has no events to build on."""
        tip = self._tips.get(room_id)
        if tip is None:
            extremities = await self.storage.events.get_forward_extremities(room_id)
            if not extremities:
                return None
            metas = await self.storage.events.get_event_metas(extremities)
            if len(extremities) > MAX_PREV_EVENTS:
                extremities = sorted(extremities, key=lambda e: metas[e].depth if e in metas else 0)
                extremities = extremities[-MAX_PREV_EVENTS:]
            extremities.sort()
            context = await self.state.context_for_new_event(
                room_id, room_version, extremities, metas
            )
            depth = max((metas[e].depth for e in extremities if e in metas), default=0)
            return NextEvent(extremities, depth + 1, context, self._generation)
        context = EventContext(state_before=tip.state, state_group_before=tip.state_group)
        return NextEvent(list(tip.extremities), tip.depth + 1, context, tip.generation)

    def first_event(self) -> NextEvent:
        """Where a room's m.room.create goes: nothing before it, empty state."""
        return NextEvent([], 1, EventContext(), self._generation)

    def enqueue_local(self, event: Event, next_event: NextEvent) -> asyncio.Future[PersistedEvent]:
        """Queue an event built on `next_event` (with its context finished) for writing; the
        future resolves once it has committed. Called under the room lock."""
        room_id = event.room_id
        tip = self._tips.get(room_id)
        if (tip.generation if tip else self._generation) != next_event.generation:
            raise StaleTip(room_id)
        ctx = next_event.context
        assert ctx.state_group_after is not None and ctx.state_after is not None
        self._tips[room_id] = _Tip(
            [event.event_id],
            event.depth,
            ctx.state_group_after,
            ctx.state_after,
            next_event.generation,
        )
        done: asyncio.Future[PersistedEvent] = asyncio.get_running_loop().create_future()
        self._queues[room_id].append(_Queued(event, ctx, done))
        if room_id not in self._drainers:
            self._drainers[room_id] = asyncio.create_task(self._drain(room_id))
        return done

    async def _drain(self, room_id: str) -> None:
        queue = self._queues[room_id]
        try:
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                try:
                    persisted = await self.storage.persist.persist_events(
                        room_id,
                        [(q.event, q.context) for q in batch],
                        backfilled=False,
                        forward_extremities=ExtremitiesChange(
                            # The chain starts on the tip's extremities and ends at its last event.
                            frozenset(batch[0].event.prev_event_ids),
                            frozenset([batch[-1].event.event_id]),
                        ),
                        current_state_delta=_chain_delta(batch),
                    )
                except Exception as e:  # every queued event builds on this batch: fail them all
                    logger.exception("room_id=%s failed to persist %d events", room_id, len(batch))
                    self._invalidate(room_id)
                    batch += queue
                    queue.clear()
                    for q in batch:
                        if not q.done.done():
                            q.done.set_exception(e)
                    continue
                self._notify(persisted)
                for q, p in zip(batch, persisted, strict=True):
                    if not q.done.done():
                        q.done.set_result(p)
        finally:
            del self._drainers[room_id]
            if not queue:
                self._queues.pop(room_id, None)

    def _invalidate(self, room_id: str) -> None:
        self._generation += 1
        self._tips.pop(room_id, None)

    async def _drained(self, room_id: str) -> None:
        drainer = self._drainers.get(room_id)
        if drainer is not None:
            await asyncio.shield(drainer)

    async def persist_events(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]], *, backfilled: bool = False
    ) -> list[PersistedEvent]:
        """Persist events from elsewhere (federation, or a room join's state and auth chain),
        in topological order. Outliers and backfilled events change neither the forward
        extremities nor current state; soft-failed and rejected events never become
        extremities."""
        async with self.room_locks.lock(room_id):
            await self._drained(room_id)
            for event, context in items:
                await self.state.finish_context(event, context)
            extremities, delta = None, None
            if not backfilled:
                extremities, delta = await self._new_extremities_and_state(room_id, items)
            try:
                persisted = await self.storage.persist.persist_events(
                    room_id,
                    items,
                    backfilled=backfilled,
                    forward_extremities=extremities,
                    current_state_delta=delta,
                )
            finally:
                if extremities is not None:
                    self._invalidate(room_id)
        if not backfilled:
            self._notify(persisted)
        return persisted

    async def _new_extremities_and_state(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]]
    ) -> tuple[ExtremitiesChange | None, CurrentStateDelta | None]:
        candidates = [
            (e, ctx)
            for e, ctx in items
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
        states_after = {e.event_id: ctx.state_after for e, ctx in candidates}
        state_sets = []
        for event_id in sorted(new):
            state = states_after.get(event_id)
            if state is None:
                state = await self.state.get_state_after(event_id)
            state_sets.append(dict(state))
        room_version = candidates[0][0].room_version
        resolved = await self.state.resolve(room_id, room_version, state_sets, items)
        old_current = await self.storage.rooms.get_current_state_ids(room_id)
        change = ExtremitiesChange(frozenset(old - new), frozenset(new - old))
        return change, current_state_delta(old_current, resolved)

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


def _chain_delta(batch: Sequence[_Queued]) -> CurrentStateDelta:
    """The current-state change of a chain of local events: each accepted state event sets
    its key; the previous value is the one before the first event that touched the key."""
    delta: dict[StateKey, tuple[str | None, str | None]] = {}
    for q in batch:
        event, ctx = q.event, q.context
        if not event.is_state() or ctx.rejected_reason is not None:
            continue
        key = event.state_key_tuple
        old = delta[key][1] if key in delta else (ctx.state_before or {}).get(key)
        delta[key] = (event.event_id, old)
    return delta
