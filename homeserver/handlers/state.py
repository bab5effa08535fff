"""Room state around events: the state before a new event from its prev_events (resolving
forks), and the state at any stored event (rooms/v2.md: S(E) is the resolution of S'(prev))."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from homeserver.errors import NotFound
from homeserver.events.event import Event, StateKey, StateMap
from homeserver.events.room_versions import RoomVersion
from homeserver.state.resolver import resolve_state
from homeserver.storage import Storage
from homeserver.storage.stores.events import EventMeta
from homeserver.storage.stores.persist import EventContext
from homeserver.storage.stores.state import FrozenStateMap, state_delta


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
        group = None if meta is None else (meta.state_group_after if after else meta.state_group_before)
        if group is None:
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
        return EventContext(state_before=group.state, state_group_before=group.id, new_groups=[group])

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
            event.room_id, MappingProxyType(after), context.state_group_before, {key: event.event_id}
        )
        context.new_groups.append(group)
        context.state_group_after = group.id
        context.state_after = group.state

    async def resolve(
        self, room_id: str, room_version: RoomVersion, state_sets: Sequence[StateMap]
    ) -> StateMap:
        return await resolve_state(room_id, room_version, state_sets, self.storage.events)

    async def load_state_events(self, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        events = await self.storage.events.get_events(state.values())
        return {key: events[eid] for key, eid in state.items() if eid in events}
