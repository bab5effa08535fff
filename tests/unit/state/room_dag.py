"""Test fixture: a room's event DAG built from named events, for state resolution tests.

Two ways to build one. `RoomDag.add` takes explicit auth events, for hand-made forks and state
sets. `RoomDag.build_graph` takes nodes and chains of prev_event edges (the shape of Synapse's
tests/state/test_v2.py) and derives each event's auth events from the state before it, resolving
the states of its prev_events where branches merge.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.auth_rules import auth_types_for_event
from homeserver.events.event import CREATE, MEMBER, POWER_LEVELS, Event, StateKey, StateMap
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion
from homeserver.state import InMemoryStateResolutionStore, resolve_state
from homeserver.state.ordering import lexicographic_topological_sort

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

TOPIC = "m.room.topic"
JOIN_RULES = "m.room.join_rules"
JOIN = {"membership": "join"}
BAN = {"membership": "ban"}
LEAVE = {"membership": "leave"}


def member_key(user: str) -> StateKey:
    return (MEMBER, user)


@dataclass
class Node:
    """An event of `RoomDag.build_graph`, named for the test to refer to."""
    name: str
    type: str
    sender: str
    state_key: str | None = None
    content: dict[str, Any] = field(default_factory=dict)


class RoomDag:
    """Events of one room by name, created by ALICE unless told otherwise.

    Power levels contents are written without the creator: `power_levels` gives the creator 100
    before v12 and leaves them out in v12, where creators are implicitly all-powerful and may
    not be listed.
    """

    def __init__(self, version: str, creator: str = ALICE,
                 room_id: str = "!room:example.com") -> None:
        self.rv: RoomVersion = KNOWN_ROOM_VERSIONS[version]
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.names: dict[str, str] = {}  # event ID -> name
        self._ts = 0
        # v12 derives the room ID from the create event.
        self.room_id = "" if self.rv.room_id_from_create_event else room_id
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        create = self.add("CREATE", CREATE, creator, "", content)
        self.room_id = create.room_id

    def power_levels(self, users: Mapping[str, int] | None = None, **rest: Any) -> dict[str, Any]:
        all_users = dict(users or {})
        if not self.rv.privileged_creators:
            all_users.setdefault(self.creator, 100)
        return {"users": all_users, **rest}

    def add(
        self,
        name: str,
        type: str,
        sender: str,
        state_key: str | None = None,
        content: Mapping[str, Any] | None = None,
        *,
        auth: Iterable[str] = (),
        prev: Iterable[str] = (),
        ts: int | None = None,
        depth: int | None = None,
    ) -> Event:
        """Add an event citing the named auth and prev events. The create event is dropped
        from the auth events of v12 events, as v12 requires."""
        auth = [a for a in auth if not (self.rv.room_id_from_create_event and a == "CREATE")]
        prev = list(prev)
        self._ts += 1
        if depth is None:
            depth = 1 + max((self.events[n].depth for n in [*auth, *prev]), default=0)
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": dict(content or {}),
            "depth": depth,
            "origin_server_ts": self._ts if ts is None else ts,
            "prev_events": self._refs(prev),
            "auth_events": self._refs(auth),
        }
        if self.room_id:
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_format is EventFormat.V1:
            pdu["event_id"] = f"${name}:example.com"
        event = Event(pdu, self.rv)
        # Redaction drops most content from the reference hash: events that differ only there
        # would share an ID.
        assert event.event_id not in self.names, f"{name} has the same ID as another event"
        self.events[name] = event
        self.names[event.event_id] = name
        return event

    def _refs(self, names: list[str]) -> list[Any]:
        ids = [self.events[n].event_id for n in names]
        if self.rv.event_format is EventFormat.V1:
            return [[i, {}] for i in ids]
        return ids

    def id(self, name: str) -> str:
        return self.events[name].event_id

    def state(self, *names: str) -> StateMap:
        """The state map holding the named state events."""
        return {self.events[n].state_key_tuple: self.id(n) for n in names}

    def store(self, rejected: Iterable[str] = ()) -> InMemoryStateResolutionStore:
        return InMemoryStateResolutionStore(
            self.events.values(), rejected={self.id(n) for n in rejected})

    def named(self, state: StateMap) -> dict[StateKey, str]:
        return {k: self.names.get(v, v) for k, v in state.items()}

    async def resolve(
        self, *state_sets: StateMap, rejected: Iterable[str] = ()
    ) -> dict[StateKey, str]:
        """Resolve the state sets; the result names its events."""
        resolved = await resolve_state(self.room_id, self.rv, state_sets, self.store(rejected))
        return self.named(resolved)

    async def build_graph(
        self, nodes: Iterable[Node], edges: Iterable[list[str]]
    ) -> dict[str, StateMap]:
        """Add the nodes with prev_events from the edge chains (`["B", "A"]`: B follows A) and
        return the state after each. Auth events are those of the state before the node."""
        by_name = {n.name: n for n in nodes}
        prevs: dict[str, set[str]] = {name: set() for name in by_name}
        for chain in edges:
            for later, earlier in itertools.pairwise(chain):
                prevs[later].add(earlier)
        after: dict[str, StateMap] = {"CREATE": self.state("CREATE")}
        order = lexicographic_topological_sort(
            {n: {p for p in ps if p in by_name} for n, ps in prevs.items()},
            {n: (n,) for n in prevs})
        for name in order:
            node = by_name[name]
            prev_names = sorted(prevs[name]) or ["CREATE"]
            before = await resolve_state(
                self.room_id, self.rv, [after[p] for p in prev_names], self.store())
            keys = auth_types_for_event(
                self.rv, node.type, node.sender, node.state_key, node.content)
            auth = [self.names[before[k]] for k in sorted(keys) if k in before]
            self.add(name, node.type, node.sender, node.state_key, node.content,
                     auth=auth, prev=prev_names)
            after[name] = dict(before)
            if node.state_key is not None:
                after[name][(node.type, node.state_key)] = self.id(name)
        return after


def initial_nodes(dag: RoomDag) -> tuple[list[Node], list[str]]:
    """A public room where ALICE is admin and BOB, CHARLIE and ZARA have joined, then START; the
    chain of edges ends at START, from which tests branch."""
    nodes = [
        Node("IMA", MEMBER, ALICE, ALICE, JOIN),
        Node("IPOWER", POWER_LEVELS, ALICE, "", dag.power_levels()),
        Node("IJR", JOIN_RULES, ALICE, "", {"join_rule": "public"}),
        Node("IMB", MEMBER, BOB, BOB, JOIN),
        Node("IMC", MEMBER, CHARLIE, CHARLIE, JOIN),
        Node("IMZ", MEMBER, ZARA, ZARA, JOIN),
        Node("START", "m.room.message", ZARA, None, {}),
        Node("END", "m.room.message", ZARA, None, {}),
    ]
    return nodes, ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA"]
