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
import heapq
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple

from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.handlers.state import StateHandler
from homeserver.notifier import Notifier
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
    chain_start: bool = False


class EventPersister:
    def __init__(self, storage: Storage, state: StateHandler, notifier: Notifier) -> None:
        self.storage = storage
        self.state = state
        self.notifier = notifier
        self.room_locks = RoomLinearizer()
        self._tips: dict[str, _Tip] = {}
        self._queues: dict[str, list[_Queued]] = defaultdict(list)
        self._drainers: dict[str, asyncio.Task[None]] = {}
        # A room's generation changes whenever its tip is discarded, so an event built on the
        # old tip is refused. Values come from one counter, so a room never sees one twice.
        self._generations: dict[str, int] = {}
        self._generation_counter = 0
        # (position, room_id, users) of committed events not yet announced: the notifier is
        # only told about positions up to the stream's current position, which waits for
        # every lower position to commit.
        self._unannounced: list[_Announcement] = []

    async def next_local_event(self, room_id: str, room_version: RoomVersion) -> NextEvent | None:
        """Where the next local event goes; the caller holds `room_locks.lock(room_id)` until it
        has called `enqueue_local`. None when the room has no events to build on."""
        tip = self._tips.get(room_id)
        if tip is not None:
            context = EventContext(state_before=tip.state, state_group_before=tip.state_group)
            return NextEvent(list(tip.extremities), tip.depth + 1, context, tip.generation)
        generation = self._generations.get(room_id, 0)
        extremities = await self.storage.events.get_forward_extremities(room_id)
        if not extremities:
            return None
        metas = await self.storage.events.get_event_metas(extremities)
        if len(extremities) > MAX_PREV_EVENTS:
            extremities = sorted(extremities, key=lambda e: metas[e].depth if e in metas else 0)
            extremities = extremities[-MAX_PREV_EVENTS:]
        extremities.sort()
        context = await self.state.context_for_new_event(room_id, room_version, extremities, metas)
        depth = max((metas[e].depth for e in extremities if e in metas), default=0)
        return NextEvent(extremities, depth + 1, context, generation)

    def first_event(self, room_id: str) -> NextEvent:
        """Where a room's m.room.create goes: nothing before it, empty state."""
        return NextEvent([], 1, EventContext(), self._generations.get(room_id, 0))

    @staticmethod
    def following(event: Event, next_event: NextEvent) -> NextEvent:
        """Where the local event after `event` (built on `next_event`) goes, before either is
        queued: lets a caller build a chain and queue it whole."""
        ctx = next_event.context
        assert ctx.state_group_after is not None and ctx.state_after is not None
        context = EventContext(
            state_before=ctx.state_after, state_group_before=ctx.state_group_after
        )
        return NextEvent([event.event_id], event.depth + 1, context, next_event.generation)

    def enqueue_local(
        self, chain: Sequence[tuple[Event, NextEvent]]
    ) -> list[asyncio.Future[PersistedEvent]]:
        """Queue a chain of local events, each built on the one before (the first on the room's
        tip), with contexts finished. Called under the room lock; nothing is awaited, so the
        chain is committed in one transaction. Each future resolves once its event commits."""
        room_id = chain[0][0].room_id
        if self._generations.get(room_id, 0) != chain[0][1].generation:
            raise StaleTip(room_id)
        loop = asyncio.get_running_loop()
        futures = []
        for i, (event, next_event) in enumerate(chain):
            done: asyncio.Future[PersistedEvent] = loop.create_future()
            self._queues[room_id].append(_Queued(event, next_event.context, done, i == 0))
            futures.append(done)
        last_event, last = chain[-1]
        ctx = last.context
        assert ctx.state_group_after is not None and ctx.state_after is not None
        self._tips[room_id] = _Tip(
            [last_event.event_id],
            last_event.depth,
            ctx.state_group_after,
            ctx.state_after,
            last.generation,
        )
        if room_id not in self._drainers:
            task = asyncio.create_task(self._drain(room_id))
            self._drainers[room_id] = task
            task.add_done_callback(lambda t: self._drainer_done(room_id, t))
        return futures

    async def _drain(self, room_id: str) -> None:
        queue = self._queues[room_id]
        try:
            while queue:
                batch = queue[: _batch_size(queue)]
                del queue[: len(batch)]
                delta = _chain_delta(batch)
                try:
                    persisted = await self.storage.persist.persist_events(
                        room_id,
                        [(q.event, q.context) for q in batch],
                        backfilled=False,
                        forward_extremities=ExtremitiesChange(
                            # The chain starts on the tip's extremities, ends at its last event.
                            frozenset(batch[0].event.prev_event_ids),
                            frozenset([batch[-1].event.event_id]),
                        ),
                        current_state_delta=delta,
                    )
                except BaseException as e:
                    # Every queued event builds on this batch: fail them all and rebuild from
                    # storage next time.
                    if not isinstance(e, asyncio.CancelledError):
                        logger.exception(
                            "room_id=%s failed to persist %d events", room_id, len(batch)
                        )
                    self._fail_queue(room_id, batch, e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                for q, p in zip(batch, persisted, strict=True):
                    if not q.done.done():
                        q.done.set_result(p)
                self._announce(persisted, [q.context for q in batch], delta)
        finally:
            # Synchronously, so an event queued from now on starts a new drainer.
            del self._drainers[room_id]
            self._queues.pop(room_id, None)

    def _drainer_done(self, room_id: str, task: asyncio.Task[None]) -> None:
        # Only a drainer cancelled before it ran still owns its entry: fail what it left.
        if self._drainers.get(room_id) is task:
            del self._drainers[room_id]
            self._fail_queue(room_id, [], asyncio.CancelledError())
            self._queues.pop(room_id, None)

    def _fail_queue(self, room_id: str, batch: list[_Queued], error: BaseException) -> None:
        self._invalidate(room_id)
        queue = self._queues.get(room_id, [])
        for q in batch + queue:
            if not q.done.done():
                q.done.set_exception(error)
        queue.clear()

    def _invalidate(self, room_id: str) -> None:
        self._generation_counter += 1
        self._generations[room_id] = self._generation_counter
        self._tips.pop(room_id, None)

    @asynccontextmanager
    async def room_write(self, room_id: str) -> AsyncIterator[None]:
        """Exclusive access to the room for writing events from elsewhere: holds the room lock
        and waits until the room's queued local events have committed, so current state and
        forward extremities read inside are what the write will change."""
        async with self.room_locks.lock(room_id):
            drainer = self._drainers.get(room_id)
            if drainer is not None:
                await asyncio.wait([drainer])
            yield

    async def close(self) -> None:
        """Let queued events commit; call before the database closes."""
        drainers = list(self._drainers.values())
        if drainers:
            await asyncio.wait(drainers)

    async def persist_events(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]], *, backfilled: bool = False
    ) -> list[PersistedEvent]:
        """Persist events from elsewhere (federation, or a room join's state and auth chain),
        in topological order. Outliers and backfilled events change neither the forward
        extremities nor current state; soft-failed and rejected events never become
        extremities."""
        async with self.room_write(room_id):
            return await self.persist_events_locked(room_id, items, backfilled=backfilled)

    async def persist_events_locked(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]], *, backfilled: bool = False
    ) -> list[PersistedEvent]:
        """`persist_events` for a caller inside `room_write(room_id)`."""
        for event, context in items:
            if event.room_id != room_id:
                raise ValueError(f"event {event.event_id} is not in room {room_id}")
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
        self._announce(persisted, [ctx for _, ctx in items], delta)
        return persisted

    async def _new_extremities_and_state(
        self, room_id: str, items: Sequence[tuple[Event, EventContext]]
    ) -> tuple[ExtremitiesChange | None, CurrentStateDelta | None]:
        candidates = [(e, ctx) for e, ctx in items if _is_live(ctx)]
        if not candidates:
            return None, None
        old = set(await self.storage.events.get_forward_extremities(room_id))
        new = old | {e.event_id for e, _ in candidates}
        for event, _ctx in candidates:
            new -= set(event.prev_event_ids)
        # An event that a stored live event already points at arrived late: not an extremity.
        new -= await self.storage.events.get_event_ids_with_live_children(new - old)
        if new == old or not new:
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

    def _announce(
        self,
        persisted: Sequence[PersistedEvent],
        contexts: Sequence[EventContext],
        delta: CurrentStateDelta | None,
    ) -> None:
        """Wake listeners for the live events that clients may see, once the stream's current
        position has reached them (an event may commit before a lower position does). The
        users whose membership changed (member events, and member keys that state resolution
        changed) are named, so their syncs see their room set change."""
        for p, ctx in zip(persisted, contexts, strict=True):
            if p.stream_ordering > 0 and _is_live(ctx):
                event = p.event
                users: tuple[str, ...] = ()
                if event.type == MEMBER and event.state_key:
                    users = (event.state_key,)
                heapq.heappush(
                    self._unannounced,
                    _Announcement(p.stream_ordering, event.room_id, users, event.is_state()),
                )
        if delta:
            # The current-state change as a whole: state resolution may change keys that no
            # event of the batch set.
            last = max(p.stream_ordering for p in persisted)
            members = tuple(sorted({k for (t, k), _ in delta.items() if t == MEMBER}))
            room_id = persisted[-1].event.room_id
            heapq.heappush(self._unannounced, _Announcement(last, room_id, members, True))
        self._drain_announcements()

    async def persist_out_of_band_membership(self, event: Event) -> None:
        """An invite to a room this server is not in (S-S API "Inviting to a room"): stored
        as an outlier, with the user's membership in current state at a live position, so
        that their /sync shows the invite."""
        position = await self.storage.persist.persist_out_of_band_membership(event)
        user = event.state_key or ""
        heapq.heappush(self._unannounced, _Announcement(position, event.room_id, (user,), True))
        self._drain_announcements()

    def _drain_announcements(self) -> None:
        current = self.storage.stream_ids.current
        while self._unannounced and self._unannounced[0].position <= current:
            a = heapq.heappop(self._unannounced)
            try:
                self.notifier.on_new_event(a.room_id, current, a.users, a.state_changed)
            except Exception:  # a broken listener must not fail the write that woke it
                logger.exception("room_id=%s notifying listeners failed", a.room_id)
        self.notifier.advance(current)


class _Announcement(NamedTuple):
    position: int
    room_id: str
    users: tuple[str, ...]
    state_changed: bool


def _is_live(ctx: EventContext) -> bool:
    """Whether an event joins the live timeline: not an outlier, rejected or soft-failed."""
    return not ctx.outlier and not ctx.soft_failed and ctx.rejected_reason is None


def _batch_size(queue: Sequence[_Queued]) -> int:
    """How many queued events to write next: whole chains (each was queued under one lock hold
    and must commit together), as many as fit in MAX_BATCH, and at least one chain."""

    def chain_end(start: int) -> int:
        return next((i for i in range(start + 1, len(queue)) if queue[i].chain_start), len(queue))

    end = chain_end(0)
    while end < len(queue) and chain_end(end) <= MAX_BATCH:
        end = chain_end(end)
    return end


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
