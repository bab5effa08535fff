"""The entry point of state resolution: pick the algorithm of the room version (rooms/v1.md,
rooms/fragments/v2-state-res.md, rooms/v12.md "State resolution").
"""
from __future__ import annotations

from collections.abc import Sequence

from homeserver.events.event import StateMap
from homeserver.events.room_versions import RoomVersion, StateResAlgorithm
from homeserver.state.store import StateResolutionStore
from homeserver.state.v1 import resolve_v1
from homeserver.state.v2 import resolve_v2


async def resolve_state(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    store: StateResolutionStore,
) -> StateMap:
    """Resolve the states after the prev_events of an event into the state before it.

    Returns a new map. When nothing conflicts this is the union of the state sets and no event
    is loaded. The result does not depend on the order of `state_sets`.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if room_version.state_res is StateResAlgorithm.V1:
        return await resolve_v1(room_id, room_version, state_sets, store)
    return await resolve_v2(room_id, room_version, state_sets, store)
