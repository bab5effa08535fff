"""State resolution v2 (room versions 2 to 11, rooms/fragments/v2-state-res.md "Algorithm") and
v2.1 (room version 12, rooms/v12.md "State resolution"): v2.1 adds the conflicted state subgraph
to the full conflicted set and starts the iterative auth checks from an empty state map.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import Event, StateKey, StateMap
from homeserver.events.room_versions import RoomVersion, StateResAlgorithm
from homeserver.state.common import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    is_power_event,
    split_conflicts,
)
from homeserver.state.ordering import mainline_order, reverse_topological_power_order
from homeserver.state.store import EventCache, StateResolutionStore

logger = logging.getLogger(__name__)


async def resolve_v2(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    store: StateResolutionStore,
) -> StateMap:
    unconflicted, conflicted = split_conflicts(state_sets)
    if not conflicted:
        return unconflicted
    v2_1 = room_version.state_res is StateResAlgorithm.V2_1
    events = EventCache(store, room_id)

    # "Full conflicted set": the conflicted state set, the auth difference and, from v12, the
    # conflicted state subgraph.
    conflicted_ids: set[str] = set().union(*conflicted.values())
    full = conflicted_ids | await store.get_auth_chain_difference(
        room_id, [set(s.values()) for s in state_sets])
    if v2_1:
        full |= await conflicted_state_subgraph(conflicted_ids, events)
    await events.load(full)
    # Events we cannot load are dropped (EventCache logged them); only state events can be
    # applied to a state map.
    full = {e for e in full if e in events and events[e].is_state()}
    await events.load_auth_events(full)
    auth_keys = {e: _auth_keys(room_version, events[e]) for e in full}

    # v2 starts the iterative auth checks from the unconflicted state map, v2.1 from nothing.
    # From the base state, load what the auth checks and the mainline will read.
    base: StateMap = {} if v2_1 else dict(unconflicted)
    keys_read = {POWER_LEVELS_KEY}.union(*auth_keys.values())
    await events.load(base[k] for k in keys_read if k in base)
    rejected = await store.get_rejected_event_ids(
        {a for e in full for a in events.edges(e)})

    # Step 1: the power events of the full conflicted set with their auth chains in it, in
    # reverse topological power ordering.
    power = _with_auth_chains_within(
        {e for e in full if is_power_event(events[e])}, full, events)
    ordered_power = reverse_topological_power_order(power, events)
    # Step 2: iterative auth checks over them.
    partial = iterative_auth_checks(ordered_power, base, events, auth_keys, rejected)
    # Step 3: the rest in mainline ordering of the power levels just resolved.
    ordered_rest = await mainline_order(full - power, partial.get(POWER_LEVELS_KEY), events)
    # Step 4: iterative auth checks over those, from the partially resolved state.
    resolved = iterative_auth_checks(ordered_rest, partial, events, auth_keys, rejected)
    # Step 5: the unconflicted state map wins over anything resolved.
    resolved.update(unconflicted)
    return resolved


async def conflicted_state_subgraph(
    conflicted_ids: Collection[str], events: EventCache
) -> set[str]:
    """v12 "Conflicted state subgraph": every event on an auth_events path from one conflicted
    event to another, endpoints included. That is the events reachable from the conflicted set
    that can themselves reach it: walk down the auth DAG (one store call per level) noting who
    cites whom, then walk back up from the conflicted events."""
    cited_by: dict[str, list[str]] = {}
    reached = set(conflicted_ids)
    frontier = set(conflicted_ids)
    while frontier:
        await events.load(frontier)
        next_frontier: set[str] = set()
        for event_id in frontier:
            if event_id not in events:
                continue
            for auth_id in events.edges(event_id):
                cited_by.setdefault(auth_id, []).append(event_id)
                if auth_id not in reached:
                    reached.add(auth_id)
                    next_frontier.add(auth_id)
        frontier = next_frontier

    subgraph = set(conflicted_ids)
    stack = list(conflicted_ids)
    while stack:
        for citer in cited_by.get(stack.pop(), ()):
            if citer not in subgraph:
                subgraph.add(citer)
                stack.append(citer)
    return subgraph


def _with_auth_chains_within(seeds: set[str], within: set[str], events: EventCache) -> set[str]:
    """Step 1's enlargement: the seeds plus the events of their auth chains that are in `within`,
    following auth edges between events of `within` only, as Synapse and Ruma do."""
    found = set(seeds)
    stack = list(seeds)
    while stack:
        for auth_id in events.edges(stack.pop()):
            if auth_id in within and auth_id not in found:
                found.add(auth_id)
                stack.append(auth_id)
    return found


def _auth_keys(room_version: RoomVersion, event: Event) -> set[StateKey]:
    """The state keys the auth rules read for an event; the create event always, since v12
    auth needs it in the state given to `check_auth_rules`."""
    keys = auth_types_for_event(
        room_version, event.type, event.sender, event.state_key, event.content)
    return keys | {CREATE_KEY}


def iterative_auth_checks(
    event_ids: Sequence[str],
    base: StateMap,
    events: EventCache,
    auth_keys: Mapping[str, set[StateKey]],
    rejected: Collection[str],
) -> StateMap:
    """v2 "Iterative auth checks": apply each event, in order, to the state if the auth rules
    allow it against that state. A key the rules need (`auth_keys` of the event) but the state
    lacks comes from the event's own auth events unless that auth event was rejected. The
    events, their auth events and the state's events under their auth keys must be loaded."""
    state = dict(base)
    for event_id in event_ids:
        event = events[event_id]
        from_auth_events: dict[StateKey, Event] | None = None
        auth_state: dict[StateKey, Event] = {}
        for key in auth_keys[event_id]:
            current_id = state.get(key)
            chosen = events.get(current_id) if current_id is not None else None
            if chosen is None:
                if from_auth_events is None:
                    from_auth_events = {
                        a.state_key_tuple: a
                        for a in events.auth_events(event_id)
                        if a.is_state() and a.event_id not in rejected
                    }
                chosen = from_auth_events.get(key)
            if chosen is not None:
                auth_state[key] = chosen
        try:
            check_auth_rules(event, auth_state)
        except AuthError as e:
            logger.debug("state res: not applied event_id=%s reason=%s", event_id, e.message)
            continue
        state[event.state_key_tuple] = event_id
    return state
