"""The building blocks: the in-memory store and auth chain walk, the event cache's handling of
missing events, the orderings, and that resolution reads the store in batches.
"""
from __future__ import annotations

import logging
from collections.abc import Collection

import pytest

from bench.state_res_bench_data import build_fork_scenario
from homeserver.events.event import MEMBER, POWER_LEVELS, Event
from homeserver.state import InMemoryStateResolutionStore, auth_chain_ids, resolve_state
from homeserver.state.ordering import (
    lexicographic_topological_sort,
    reverse_topological_power_order,
)
from homeserver.state.store import EventCache
from tests.unit.state.room_dag import ALICE, BOB, CHARLIE, JOIN, JOIN_RULES, TOPIC, RoomDag


class CountingStore(InMemoryStateResolutionStore):
    """Counts `get_events` calls, to show the walks are batched per level."""

    def __init__(self, events: list[Event], rejected: Collection[str] = ()) -> None:
        super().__init__(events, rejected)
        self.get_events_calls = 0

    async def get_events(self, event_ids: Collection[str]) -> dict[str, Event]:
        self.get_events_calls += 1
        return await super().get_events(event_ids)


def small_room(version: str = "11") -> RoomDag:
    dag = RoomDag(version)
    dag.add("MA", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P0", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50}), auth=["CREATE", "MA"])
    dag.add("JR", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA", "P0"])
    dag.add("MB", MEMBER, BOB, BOB, JOIN, auth=["CREATE", "P0", "JR"])
    dag.add("MC", MEMBER, CHARLIE, CHARLIE, JOIN, auth=["CREATE", "P0", "JR"])
    return dag


def test_lexicographic_topological_sort() -> None:
    # Dependencies first; among ready nodes the smallest key goes next.
    graph = {"l": {"o"}, "m": {"n", "o"}, "n": {"o"}, "o": set(), "p": {"o"}}
    assert lexicographic_topological_sort(graph, {k: (k,) for k in graph}) == [
        "o", "l", "n", "m", "p"]


async def test_reverse_topological_power_order_ties() -> None:
    # No auth edges between them: greater sender power first, then earlier ts, then event ID.
    dag = small_room()
    dag.add("T_BOB_LATE", TOPIC, BOB, "", {"topic": "1"}, auth=["CREATE", "P0", "MB"], ts=5)
    dag.add("T_BOB_EARLY", TOPIC, BOB, "", {"topic": "2"}, auth=["CREATE", "P0", "MB"], ts=3)
    dag.add("T_ALICE", TOPIC, ALICE, "", {"topic": "3"}, auth=["CREATE", "P0", "MA"], ts=9)
    dag.add("T_CHARLIE", TOPIC, CHARLIE, "", {"topic": "4"}, auth=["CREATE", "P0", "MC"], ts=1)
    dag.add("T_BOB_SAME_1", TOPIC, BOB, "a", {"topic": "5"}, auth=["CREATE", "P0", "MB"], ts=4)
    dag.add("T_BOB_SAME_2", TOPIC, BOB, "b", {"topic": "6"}, auth=["CREATE", "P0", "MB"], ts=4)
    names = ["T_BOB_LATE", "T_BOB_EARLY", "T_ALICE", "T_CHARLIE", "T_BOB_SAME_1", "T_BOB_SAME_2"]
    events = EventCache(dag.store(), dag.room_id)
    await events.load(dag.id(n) for n in names)
    await events.load_auth_events(dag.id(n) for n in names)
    ordered = [dag.names[i] for i in reverse_topological_power_order({dag.id(n) for n in names},
                                                                     events)]
    same_ts = sorted(["T_BOB_SAME_1", "T_BOB_SAME_2"], key=dag.id)
    assert ordered == ["T_ALICE", "T_BOB_EARLY", *same_ts, "T_BOB_LATE", "T_CHARLIE"]


async def test_auth_chain_ids_walks_one_level_per_call() -> None:
    dag = small_room()
    store = CountingStore(list(dag.events.values()))
    chain = await auth_chain_ids(store, [dag.id("MB"), dag.id("MC")])
    assert {dag.names[i] for i in chain} == {"CREATE", "MA", "P0", "JR"}
    # Levels: {MB, MC} -> {CREATE, P0, JR} -> {MA} -> {} (CREATE and MA cite nothing new).
    assert store.get_events_calls == 3


async def test_auth_chain_includes_the_implied_v12_create_event() -> None:
    dag = small_room("12")
    assert "CREATE" not in [dag.names[i] for i in dag.events["MB"].auth_event_ids]
    chain = await auth_chain_ids(dag.store(), [dag.id("MB")])
    assert {dag.names[i] for i in chain} == {"CREATE", "MA", "P0", "JR"}


async def test_in_memory_auth_chain_difference() -> None:
    dag = small_room()
    dag.add("T", TOPIC, BOB, "", {"topic": "t"}, auth=["CREATE", "P0", "MB"])
    base = {dag.id(n) for n in ("CREATE", "MA", "P0", "JR")}
    with_bob = base | {dag.id("MB")}
    with_topic = base | {dag.id("T")}
    # Each set counts with its own events, so MB is in both (cited by T) and only T differs.
    diff = await dag.store().get_auth_chain_difference(dag.room_id, [with_bob, with_topic])
    assert {dag.names[i] for i in diff} == {"T"}
    diff = await dag.store().get_auth_chain_difference(dag.room_id, [base, with_topic])
    assert {dag.names[i] for i in diff} == {"T", "MB"}


async def test_event_cache_drops_missing_and_foreign_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dag = small_room()
    other = RoomDag("11", room_id="!other:example.com")
    store = InMemoryStateResolutionStore([*dag.events.values(), other.events["CREATE"]])
    events = EventCache(store, dag.room_id)
    with caplog.at_level(logging.WARNING, logger="homeserver.state.store"):
        await events.load([dag.id("MA"), "$missing", other.id("CREATE")])
        await events.load(["$missing"])  # known absent: not asked for or logged again
    assert dag.id("MA") in events
    assert "$missing" not in events and other.id("CREATE") not in events
    messages = [r.getMessage() for r in caplog.records]
    assert sum("$missing" in m for m in messages) == 1
    assert any("another room" in m for m in messages)


async def test_missing_conflicted_event_is_dropped() -> None:
    dag = small_room()
    dag.add("T1", TOPIC, ALICE, "", {"topic": "1"}, auth=["CREATE", "P0", "MA"])
    base = dag.state("CREATE", "MA", "P0", "JR", "MB", "MC")
    resolved = await dag.resolve({**base, (TOPIC, ""): dag.id("T1")},
                                 {**base, (TOPIC, ""): "$gone:example.com"})
    assert resolved == {**dag.named(base), (TOPIC, ""): "T1"}


async def test_no_conflict_is_the_union_without_reading_the_store() -> None:
    dag = small_room()
    state = dag.state("CREATE", "MA", "P0", "JR", "MB")
    store = CountingStore([])
    assert await resolve_state(dag.room_id, dag.rv, [state, dict(state)], store) == state
    assert store.get_events_calls == 0


async def test_store_reads_do_not_grow_with_the_number_of_events() -> None:
    calls = []
    for changes in (20, 200):
        room_version, state_sets, events = build_fork_scenario(
            "12", members=changes, changes_per_fork=changes)
        store = CountingStore(events)
        await resolve_state(events[0].room_id, room_version, state_sets, store)
        calls.append(store.get_events_calls)
    assert calls[0] == calls[1] < 20
