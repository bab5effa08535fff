"""The classic state resolution conflicts, each on a small room DAG (the shape of Synapse's
tests/state/test_v2.py, with our own fixtures). Every case runs on v2 (v2-v11) and v2.1 (v12)
rooms, and on v1 where that algorithm agrees.
"""
from __future__ import annotations

import pytest

from homeserver.events.event import MEMBER, POWER_LEVELS, StateKey
from tests.unit.state.room_dag import (
    ALICE,
    BAN,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN,
    JOIN_RULES,
    TOPIC,
    ZARA,
    Node,
    RoomDag,
    initial_nodes,
)

V2_VERSIONS = ["2", "10", "11", "12"]
ALL_VERSIONS = ["1", *V2_VERSIONS]


async def changes_at_end(dag: RoomDag, nodes: list[Node], edges: list[list[str]],
                         expected: list[str]) -> tuple[dict[StateKey, str], dict[StateKey, str]]:
    """Build the DAG on the initial room and return (changed, expected): the state at END under
    the keys of `expected` or changed since START, and the named expected state."""
    initial, initial_edges = initial_nodes(dag)
    after = await dag.build_graph([*initial, *nodes], [initial_edges, *edges])
    start, end = after["START"], after["END"]
    want = {dag.events[n].state_key_tuple: n for n in expected}
    changed = dag.named({k: v for k, v in end.items() if k in want or start.get(k) != v})
    return changed, want


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_ban_racing_a_join(version: str) -> None:
    # Alice bans Evelyn while Evelyn joins the public room: the ban, a power event, is applied
    # first, and the join is not allowed after it.
    dag = RoomDag(version)
    nodes = [
        Node("BAN_E", MEMBER, ALICE, EVELYN, BAN),
        Node("JOIN_E", MEMBER, EVELYN, EVELYN, JOIN),
    ]
    edges = [["END", "BAN_E", "START"], ["END", "JOIN_E", "START"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["BAN_E"])
    assert changed == want


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_competing_power_levels_higher_power_wins(version: str) -> None:
    # After Alice makes Bob a moderator, Bob promotes Charlie while Alice demotes Bob. Alice's
    # change sorts first (greater sender power) and Bob's no longer passes after it.
    dag = RoomDag(version)
    nodes = [
        Node("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50, CHARLIE: 50})),
        Node("PA2", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 0})),
    ]
    edges = [["END", "PB", "PA", "START"], ["END", "PA2", "PA"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["PA2"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_ban_beats_the_banned_users_power_levels(version: str) -> None:
    dag = RoomDag(version)
    nodes = [
        Node("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("MA", MEMBER, ALICE, ALICE, JOIN),
        Node("MB", MEMBER, ALICE, BOB, BAN),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50})),
    ]
    edges = [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["PA", "MA", "MB"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_power_levels_chain_keeps_the_latest_authorised(version: str) -> None:
    # Charlie's change (PC) descends from Bob's (PB) which descends from Alice's (PA); the other
    # fork only has PA. The chain is applied in topological order and PC stands.
    dag = RoomDag(version)
    nodes = [
        Node("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50, CHARLIE: 50})),
        Node("PC", POWER_LEVELS, CHARLIE, "", dag.power_levels({BOB: 50, CHARLIE: 0})),
    ]
    edges = [["END", "PC", "PB", "PA", "START"], ["END", "PA"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["PC"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic_reset_after_ban(version: str) -> None:
    # Bob sets the topic as a moderator and is then banned; merged with a fork that still has
    # Alice's topic, Bob's topic no longer passes and the topic goes back to Alice's.
    dag = RoomDag(version)
    nodes = [
        Node("T1", TOPIC, ALICE, "", {"topic": "alice"}),
        Node("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("T2", TOPIC, BOB, "", {"topic": "bob"}),
        Node("MB", MEMBER, ALICE, BOB, BAN),
    ]
    edges = [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["T1", "MB", "PA"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic_by_a_user_later_demoted(version: str) -> None:
    # Bob, demoted by Alice on the main fork, sets a topic on his own fork citing his own (still
    # moderator) power levels. Alice's demotion wins and Bob's topic fails against it.
    dag = RoomDag(version)
    nodes = [
        Node("T1", TOPIC, ALICE, "", {"topic": "1"}),
        Node("PA1", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("T2", TOPIC, ALICE, "", {"topic": "2"}),
        Node("PA2", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 0})),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50})),
        Node("T3", TOPIC, BOB, "", {"topic": "3"}),
    ]
    edges = [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["PA2", "T2"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_mainline_ordering_prefers_the_later_power_levels_epoch(version: str) -> None:
    # T4 is sent after T3, but T3 cites a later power levels event on the resolved mainline
    # (PA2), so it sorts last and wins. Without mainline ordering T4 would win.
    dag = RoomDag(version)
    nodes = [
        Node("T1", TOPIC, ALICE, "", {"topic": "1"}),
        Node("PA1", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("T2", TOPIC, ALICE, "", {"topic": "2"}),
        Node("PA2", POWER_LEVELS, ALICE, "",
             dag.power_levels({BOB: 50}, events={POWER_LEVELS: 100})),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50})),
        Node("T3", TOPIC, BOB, "", {"topic": "3"}),
        Node("T4", TOPIC, ALICE, "", {"topic": "4"}),
    ]
    edges = [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["T3", "PA2"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_join_rules_change_racing_a_join(version: str) -> None:
    # Alice makes the room invite-only while Evelyn joins it as a public room: the join rules
    # are a power event, applied first, and the join fails against them.
    dag = RoomDag(version)
    nodes = [
        Node("JR", JOIN_RULES, ALICE, "", {"join_rule": "invite"}),
        Node("ME", MEMBER, EVELYN, EVELYN, JOIN),
    ]
    edges = [["END", "JR", "START"], ["END", "ME", "START"]]
    changed, want = await changes_at_end(dag, nodes, edges, ["JR"])
    assert changed == want


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_old_state_snapshot_does_not_reset_state(version: str) -> None:
    # A fork (or a server lying about the state) claims the state as it was at START: the old
    # power levels and Zara still joined. Resolved against the current state, neither wins.
    dag = RoomDag(version)
    initial, initial_edges = initial_nodes(dag)
    nodes = [
        Node("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("MZB", MEMBER, ALICE, ZARA, BAN),
        Node("ZN", MEMBER, ZARA, ZARA, {"membership": "join", "displayname": "zara"}),
    ]
    after = await dag.build_graph(
        [*initial, *nodes], [initial_edges, ["END", "MZB", "PA", "START"], ["END", "ZN", "START"]])

    for old in (after["START"], after["ZN"]):
        resolved = await dag.resolve(after["MZB"], old)
        assert resolved[(POWER_LEVELS, "")] == "PA"
        assert resolved[(MEMBER, ZARA)] == "MZB"
    assert dag.named(after["END"]) == await dag.resolve(after["MZB"], after["ZN"])


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_unconflicted_state_passes_through(version: str) -> None:
    dag = RoomDag(version)
    initial, initial_edges = initial_nodes(dag)
    nodes = [
        Node("T1", TOPIC, ALICE, "", {"topic": "1"}),
        Node("T2", TOPIC, ALICE, "", {"topic": "2"}),
    ]
    after = await dag.build_graph(
        [*initial, *nodes], [initial_edges, ["END", "T1", "START"], ["END", "T2", "START"]])
    resolved = await dag.resolve(after["T1"], after["T2"])
    start = dag.named(after["START"])
    assert {k: v for k, v in resolved.items() if k != (TOPIC, "")} == start
    assert resolved[(TOPIC, "")] in ("T1", "T2")


@pytest.mark.parametrize("version", V2_VERSIONS)
async def test_topic_after_a_merge_keeps_the_demotion(version: str) -> None:
    # As the demotion case, but the forks merge at Zara's message (MZ1) before Alice sets T4:
    # the merge drops Bob's topic and T4, after it, stands.
    dag = RoomDag(version)
    nodes = [
        Node("T1", TOPIC, ALICE, "", {"topic": "1"}),
        Node("PA1", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50})),
        Node("T2", TOPIC, ALICE, "", {"topic": "2"}),
        Node("PA2", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 0})),
        Node("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50})),
        Node("T3", TOPIC, BOB, "", {"topic": "3"}),
        Node("MZ1", "m.room.message", ZARA, None, {}),
        Node("T4", TOPIC, ALICE, "", {"topic": "4"}),
    ]
    edges = [
        ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "MZ1", "T3", "PB", "PA1"],
    ]
    changed, want = await changes_at_end(dag, nodes, edges, ["T4", "PA2"])
    assert changed == want
