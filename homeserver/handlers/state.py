"""Room state around events: the state before a new event from its prev_events (resolving
forks), and the state at any stored event (rooms/v2.md: S(E) is the resolution of S'(prev))."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

from homeserver.errors import InvalidEvent, NotFound
from homeserver.events.event import Event, StateKey, StateMap
from homeserver.events.room_versions import RoomVersion
from homeserver.state.resolver import resolve_state
from homeserver.state.store import StateResolutionStore, auth_difference
from homeserver.storage import Storage
from homeserver.storage.stores.events import EventMeta, EventsStore
from homeserver.storage.stores.persist import EventContext
from homeserver.storage.stores.state import EMPTY_STATE, FrozenStateMap, state_delta


class MissingState(Exception):
    """We lack the state after one of an event's prev_events (it is an outlier or unknown)."""


class StateHandler:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def get_state_before(self, event_id: str) -> FrozenStateMap:
        return await self._state_of(event_id, after=False)

    async def get_state_after(self, event_id: str) -> FrozenStateMap:
        return await self._state_of(event_id, after=True)

    async def _state_of(self, event_id: str, *, after: bool) -> FrozenStateMap:
        meta = (await self.storage.events.get_event_metas([event_id])).get(event_id)
        group = (
            None if meta is None else (meta.state_group_after if after else meta.state_group_before)
        )
        if group is None:
            if meta is not None and not meta.outlier and not after:
                return EMPTY_STATE  # a room's create event: nothing comes before it
            raise NotFound(f"No state known at event {event_id}")
        return await self.storage.state.get_state(group)

    async def context_for_new_event(
        self,
        room_id: str,
        room_version: RoomVersion,
        prev_event_ids: Sequence[str],
        metas: Mapping[str, EventMeta] | None = None,
    ) -> EventContext:
        """The context of an event whose prev_events are all stored with state; pass their
        `metas` when already loaded."""
        if metas is None:
            metas = await self.storage.events.get_event_metas(prev_event_ids)
        groups: list[int] = []
        for prev_id in prev_event_ids:
            meta = metas.get(prev_id)
            if meta is not None and meta.room_id != room_id:
                # Taking another room's state would leak it into this one.
                raise InvalidEvent(f"prev_event {prev_id} is in another room")
            if meta is None or meta.state_group_after is None:
                raise MissingState(prev_id)
            if meta.state_group_after not in groups:
                groups.append(meta.state_group_after)
        if len(groups) == 1:
            state = await self.storage.state.get_state(groups[0])
            return EventContext(state_before=state, state_group_before=groups[0])
        states = await self.storage.state.get_states(groups)
        resolved = await self.resolve(room_id, room_version, [dict(states[g]) for g in groups])
        return await self.context_from_state(room_id, resolved, base=groups[0])

    async def context_from_state(
        self, room_id: str, state: Mapping[StateKey, str], base: int | None = None
    ) -> EventContext:
        """The context for a state we were given (federation) or resolved; stored as a delta
        on the group `base` when there is one."""
        if base is not None:
            base_state = await self.storage.state.get_state(base)
            if dict(base_state) == dict(state):
                return EventContext(state_before=base_state, state_group_before=base)
            group = await self.storage.state.new_group(
                room_id, MappingProxyType(dict(state)), base, state_delta(base_state, state)
            )
        else:
            group = await self.storage.state.new_group(room_id, MappingProxyType(dict(state)))
        return EventContext(
            state_before=group.state, state_group_before=group.id, new_groups=[group]
        )

    async def finish_context(self, event: Event, context: EventContext) -> None:
        """Fill in the state after the event, once its rejection is decided: a state event
        that is accepted adds a one-entry delta; anything else leaves the state as it was."""
        if context.state_before is None or context.state_after is not None:
            return
        if not event.is_state() or context.rejected_reason is not None:
            context.state_group_after = context.state_group_before
            context.state_after = context.state_before
            return
        key = event.state_key_tuple
        after = dict(context.state_before)
        after[key] = event.event_id
        group = await self.storage.state.new_group(
            event.room_id,
            MappingProxyType(after),
            context.state_group_before,
            {key: event.event_id},
        )
        context.new_groups.append(group)
        context.state_group_after = group.id
        context.state_after = group.state

    async def resolve(
        self,
        room_id: str,
        room_version: RoomVersion,
        state_sets: Sequence[StateMap],
        pending: Sequence[tuple[Event, EventContext]] = (),
    ) -> StateMap:
        """Resolve `state_sets`; `pending` are events not stored yet (the batch being
        persisted) that the sets may name."""
        store: StateResolutionStore = self.storage.events
        if pending:
            store = PendingEventsOverlay(self.storage.events, pending)
        return await resolve_state(room_id, room_version, state_sets, store)

    async def load_state_events(self, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        events = await self.storage.events.get_events(state.values())
        return {key: events[eid] for key, eid in state.items() if eid in events}


class PendingEventsOverlay:
    """The stored events plus a batch about to be stored, as state resolution reads them."""

    def __init__(self, stored: EventsStore, pending: Sequence[tuple[Event, EventContext]]) -> None:
        self._stored = stored
        self._pending = {e.event_id: e for e, _ in pending}
        self._rejected = {e.event_id for e, ctx in pending if ctx.rejected_reason is not None}

    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        found = {i: self._pending[i] for i in event_ids if i in self._pending}
        found.update(await self._stored.get_events([i for i in event_ids if i not in found]))
        return found

    async def get_rejected_event_ids(self, event_ids: Collection[str]) -> set[str]:
        stored = [i for i in event_ids if i not in self._pending]
        return {
            i for i in event_ids if i in self._rejected
        } | await self._stored.get_rejected_event_ids(stored)

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Sequence[set[str]]
    ) -> set[str]:
        return auth_difference([await self._chain(s) for s in state_sets])

    async def _chain(self, event_ids: set[str]) -> set[str]:
        """`event_ids` with their auth chain: walk the pending part here, the rest in SQL."""
        chain = set(event_ids)
        stack = [i for i in event_ids if i in self._pending]
        stored_roots: set[str] = {i for i in event_ids if i not in self._pending}
        while stack:
            for auth_id in self._pending[stack.pop()].auth_event_ids:
                if auth_id in chain:
                    continue
                chain.add(auth_id)
                if auth_id in self._pending:
                    stack.append(auth_id)
                else:
                    stored_roots.add(auth_id)
        return chain | await self._stored.get_auth_chain_ids(stored_roots)
