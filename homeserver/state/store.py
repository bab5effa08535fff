"""What state resolution reads from storage: the narrow store Protocol, an in-memory
implementation, and the batched auth chain walk both the algorithms and SQL stores reuse.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from homeserver.events.event import Event
from homeserver.state.common import auth_edges

logger = logging.getLogger(__name__)


class StateResolutionStore(Protocol):
    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        """The events we have, rejected or not, by ID; unknown IDs are left out."""
        ...

    async def get_rejected_event_ids(self, event_ids: Collection[str]) -> set[str]:
        """Which of these events were rejected (S2S "Rejection")."""
        ...

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Sequence[set[str]]
    ) -> set[str]:
        """v2 "Auth difference": with C_i a state set's events plus their auth chains, the union of
        the C_i minus their intersection.

        C_i includes the state set's own events, as Synapse's does: an event that is in every
        state set never lands in the difference just because only some sets' events cite it.
        """
        ...


async def auth_chain_ids(store: StateResolutionStore, event_ids: Iterable[str]) -> set[str]:
    """The auth chain of the given events: everything reachable through their auth events
    (v2 "Auth chain"), walked breadth first with one `get_events` call per level. The given
    events are included only when another one reaches them. Unknown events end the walk there."""
    chain: set[str] = set()
    frontier = set(event_ids)
    while frontier:
        events = await store.get_events(frontier)
        frontier = set()
        for event in events.values():
            for auth_id in auth_edges(event):
                if auth_id not in chain:
                    chain.add(auth_id)
                    frontier.add(auth_id)
    return chain


def auth_difference(chains: Sequence[set[str]]) -> set[str]:
    """v2 "Auth difference" given each state set's full auth chain (with its own events):
    the union of the chains minus their intersection."""
    if not chains:
        return set()
    return set().union(*chains) - chains[0].intersection(*chains[1:])


class EventCache:
    """The events one resolution has loaded, with their auth edges worked out once. Each `load`
    is one batched store call; events that are unknown or from another room are logged once and
    then treated as absent, as Synapse does, rather than failing the whole resolution."""

    def __init__(self, store: StateResolutionStore, room_id: str) -> None:
        self._store = store
        self._room_id = room_id
        self._events: dict[str, Event] = {}
        self._edges: dict[str, tuple[str, ...]] = {}
        self._absent: set[str] = set()

    async def load(self, event_ids: Iterable[str]) -> None:
        wanted = {i for i in event_ids if i not in self._events and i not in self._absent}
        if not wanted:
            return
        found = await self._store.get_events(wanted)
        for event_id in wanted:
            event = found.get(event_id)
            if event is None:
                self._absent.add(event_id)
                logger.warning("state res: event missing room_id=%s event_id=%s",
                               self._room_id, event_id)
            elif event.room_id != self._room_id:
                self._absent.add(event_id)
                logger.warning("state res: event from another room room_id=%s event_id=%s "
                               "event_room_id=%s", self._room_id, event_id, event.room_id)
            else:
                self._events[event_id] = event
                self._edges[event_id] = auth_edges(event)

    async def load_auth_events(self, event_ids: Iterable[str]) -> None:
        """Load the auth events of already loaded events, in one call."""
        edges = self._edges
        await self.load(a for i in event_ids if i in edges for a in edges[i])

    def get(self, event_id: str) -> Event | None:
        return self._events.get(event_id)

    def __getitem__(self, event_id: str) -> Event:
        return self._events[event_id]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def edges(self, event_id: str) -> tuple[str, ...]:
        """`auth_edges` of a loaded event."""
        return self._edges[event_id]

    def auth_events(self, event_id: str) -> list[Event]:
        """The loaded auth events of a loaded event, in `auth_events` order."""
        events = self._events
        return [events[i] for i in self._edges[event_id] if i in events]


class InMemoryStateResolutionStore:
    """A `StateResolutionStore` over a fixed set of events: tests, benchmarks, and callers that
    hold a room's auth DAG in memory."""

    def __init__(self, events: Iterable[Event], rejected: Collection[str] = frozenset()) -> None:
        self._events = {event.event_id: event for event in events}
        self._edges = {event_id: auth_edges(e) for event_id, e in self._events.items()}
        self._rejected = frozenset(rejected)

    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        events = self._events
        return {i: events[i] for i in event_ids if i in events}

    async def get_rejected_event_ids(self, event_ids: Collection[str]) -> set[str]:
        return {i for i in event_ids if i in self._rejected}

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Sequence[set[str]]
    ) -> set[str]:
        if not state_sets:
            return set()
        return auth_difference([self._with_auth_chain(s) for s in state_sets])

    def _with_auth_chain(self, event_ids: set[str]) -> set[str]:
        """The events and their auth chains; the same walk as `auth_chain_ids`, without the
        awaits and over auth edges parsed once per store."""
        edges = self._edges
        found = set(event_ids)
        stack = [e for e in event_ids if e in edges]
        while stack:
            for auth_id in edges[stack.pop()]:
                if auth_id not in found:
                    found.add(auth_id)
                    if auth_id in edges:
                        stack.append(auth_id)
        return found
