"""The two orderings of state resolution v2: reverse topological power ordering and mainline
ordering (rooms/fragments/v2-state-res.md "Definitions").
"""
from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Collection, Hashable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

from homeserver.state.common import POWER_LEVELS_KEY, sender_power_level
from homeserver.state.store import EventCache

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=tuple[Any, ...])
N = TypeVar("N", bound=Hashable)


def lexicographic_topological_sort(graph: Mapping[N, Collection[N]], key: Mapping[N, K]) -> list[N]:
    """Kahn's algorithm, earliest first: `graph` maps each node to the nodes it depends on (its
    auth events, all of which must be keys of `graph`). Among the nodes whose dependencies are all
    placed, the one with the smallest `key` goes next, giving the lexicographically smallest
    topological order (v2 "Reverse topological power ordering")."""
    dependants: dict[N, list[N]] = {node: [] for node in graph}
    waiting_on: dict[N, int] = {}
    ready: list[tuple[K, N]] = []
    for node, deps in graph.items():
        waiting_on[node] = len(deps)
        for dep in deps:
            dependants[dep].append(node)
        if not deps:
            ready.append((key[node], node))
    heapq.heapify(ready)
    ordered: list[N] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for dependant in dependants[node]:
            waiting_on[dependant] -= 1
            if waiting_on[dependant] == 0:
                heapq.heappush(ready, (key[dependant], dependant))
    return ordered


def reverse_topological_power_order(event_ids: AbstractSet[str], events: EventCache) -> list[str]:
    """Sort events, earliest first, by the DAG of their auth events among `event_ids`, breaking
    ties by the sender's greater power level (from the event's own auth events), then smaller
    `origin_server_ts`, then smaller event ID. The events and their auth events must be loaded.

    Only auth edges between the given events are followed, as Synapse and Ruma do."""
    graph: dict[str, list[str]] = {}
    key: dict[str, tuple[float, int, str]] = {}
    for event_id in event_ids:
        event = events[event_id]
        graph[event_id] = [a for a in set(events.edges(event_id)) if a in event_ids]
        power = sender_power_level(event, events.auth_events(event_id))
        key[event_id] = (-power, event.origin_server_ts, event_id)
    ordered = lexicographic_topological_sort(graph, key)
    if len(ordered) < len(graph):
        # Only possible with chosen event IDs (v1/v2 rooms): events on a cycle never sort.
        logger.warning("state res: auth events form a cycle, dropped=%d",
                       len(graph) - len(ordered))
    return ordered


def _power_levels_auth_event(event_id: str, events: EventCache) -> str | None:
    """The `m.room.power_levels` event among a loaded event's auth events, if any is loaded."""
    for auth_event in events.auth_events(event_id):
        if (auth_event.type, auth_event.state_key) == POWER_LEVELS_KEY:
            return auth_event.event_id
    return None


async def _power_levels_parents(start: Iterable[str], stop: Collection[str],
                                events: EventCache) -> dict[str, str | None]:
    """For power levels events reachable from `start` by following each one's power levels auth
    event, map each to that parent (None at the root or an unknown event). The walk stops at
    events in `stop`; it loads one level per store call."""
    parents: dict[str, str | None] = {}
    frontier = {p for p in start if p not in stop}
    while frontier:
        await events.load(frontier)
        await events.load_auth_events(frontier)
        next_frontier: set[str] = set()
        for pl_id in frontier:
            parent = _power_levels_auth_event(pl_id, events) if pl_id in events else None
            parents[pl_id] = parent
            if parent is not None and parent not in parents and parent not in stop:
                next_frontier.add(parent)
        frontier = next_frontier
    return parents


async def mainline_order(event_ids: Collection[str], power_levels_id: str | None,
                         events: EventCache) -> list[str]:
    """v2 "Mainline ordering" of the given (loaded) events based on the power levels event P:
    a greater mainline position first, then smaller `origin_server_ts`, then smaller event ID.

    The mainline position of an event is found by walking the chain of power levels events
    from its auth events until one is on P's mainline; positions are memoised per power levels
    event so that each is worked out once however many events cite it."""
    if not event_ids:
        return []
    # The mainline of P: P_0 = P, P_{i+1} the power levels event among P_i's auth events.
    # Its events' positions are their indices.
    position: dict[str, float] = {}
    if power_levels_id is not None:
        parents = await _power_levels_parents([power_levels_id], (), events)
        current: str | None = power_levels_id
        while current is not None and current not in position:
            position[current] = len(position)
            current = parents.get(current)

    await events.load_auth_events(event_ids)
    first_power_levels = {e: _power_levels_auth_event(e, events) for e in event_ids}
    parents = await _power_levels_parents(
        (p for p in first_power_levels.values() if p is not None), position, events)
    for pl_id in parents:
        # Walk up to a power levels event whose position is known, then fill in the path.
        path: list[str] = []
        on_path: set[str] = set()
        current = pl_id
        while current is not None and current not in position:
            path.append(current)
            on_path.add(current)
            current = parents.get(current)
            if current in on_path:  # an auth cycle is malformed; treat it as off the mainline
                current = None
        found = position[current] if current is not None else math.inf
        for p in path:
            position[p] = found

    def sort_key(event_id: str) -> tuple[float, int, str]:
        pl_id = first_power_levels[event_id]
        pos = position.get(pl_id, math.inf) if pl_id is not None else math.inf
        return (-pos, events[event_id].origin_server_ts, event_id)

    return sorted(event_ids, key=sort_key)
