"""State resolution v1 (room version 1, rooms/v1.md "State resolution"): depth and sha1 ordering,
passes for power levels, join rules and members, then everything else.
"""
from __future__ import annotations

from homeserver.events.event import MEMBER, POWER_LEVELS
from tests.unit.state.room_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN,
    JOIN_RULES,
    TOPIC,
    Node,
    RoomDag,
    initial_nodes,
)

BASE = ("CREATE", "MA", "P0", "JR", "MB", "MC")


def v1_room() -> RoomDag:
    """Alice's public room with Bob and Charlie joined; Bob has no power."""
    dag = RoomDag("1")
    dag.add("MA", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P0", POWER_LEVELS, ALICE, "", dag.power_levels(), auth=["CREATE", "MA"])
    dag.add("JR", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA", "P0"])
    dag.add("MB", MEMBER, BOB, BOB, JOIN, auth=["CREATE", "P0", "JR"])
    dag.add("MC", MEMBER, CHARLIE, CHARLIE, JOIN, auth=["CREATE", "P0", "JR"])
    return dag


async def test_power_levels_stop_at_the_first_unauthorised_one() -> None:
    # Ascending depth: PA (Alice) is taken, PB (Bob, powerless) fails against it, and the pass
    # stops there although PC (Alice, deepest) would have been allowed.
    dag = v1_room()
    auth = ["CREATE", "P0", "MA"]
    dag.add("PA", POWER_LEVELS, ALICE, "", dag.power_levels({CHARLIE: 10}), auth=auth, depth=10)
    dag.add("PB", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 100}), auth=auth, depth=11)
    dag.add("PC", POWER_LEVELS, ALICE, "", dag.power_levels({CHARLIE: 20}), auth=auth, depth=12)
    resolved = await dag.resolve(
        dag.state(*BASE, "PA"), dag.state(*BASE, "PB"), dag.state(*BASE, "PC"))
    assert resolved[(POWER_LEVELS, "")] == "PA"


async def test_other_events_take_the_deepest_allowed() -> None:
    dag = v1_room()
    dag.add("T_LOW", TOPIC, ALICE, "", {"topic": "low"}, auth=["CREATE", "P0", "MA"], depth=10)
    dag.add("T_MID", TOPIC, ALICE, "", {"topic": "mid"}, auth=["CREATE", "P0", "MA"], depth=11)
    dag.add("T_BOB", TOPIC, BOB, "", {"topic": "bob"}, auth=["CREATE", "P0", "MB"], depth=12)
    states = [dag.state(*BASE, t) for t in ("T_LOW", "T_MID", "T_BOB")]
    assert (await dag.resolve(*states))[(TOPIC, "")] == "T_MID"


async def test_other_events_fall_back_to_the_shallowest_when_none_is_allowed() -> None:
    dag = v1_room()
    dag.add("T1", TOPIC, BOB, "", {"topic": "1"}, auth=["CREATE", "P0", "MB"], depth=10)
    dag.add("T2", TOPIC, CHARLIE, "", {"topic": "2"}, auth=["CREATE", "P0", "MC"], depth=11)
    resolved = await dag.resolve(dag.state(*BASE, "T1"), dag.state(*BASE, "T2"))
    assert resolved[(TOPIC, "")] == "T1"


async def test_members_are_resolved_under_the_resolved_power_levels() -> None:
    # Alice's deeper power levels (PA) make Bob a moderator, so his kick of Charlie passes
    # against them; under P0 it would not.
    dag = v1_room()
    dag.add("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50}), auth=["CREATE", "P0", "MA"])
    dag.add("KICK", MEMBER, BOB, CHARLIE, {"membership": "leave"},
            auth=["CREATE", "PA", "MB", "MC"])
    kicked = dag.state(*BASE, "PA", "KICK")
    old = dag.state(*BASE)
    assert await dag.resolve(kicked, old) == dag.named(kicked)
    # With the power levels not conflicted but left at P0, the kick loses to Charlie's join.
    assert (await dag.resolve(dag.state(*BASE, "KICK"), old))[(MEMBER, CHARLIE)] == "MC"


async def test_a_key_only_one_state_has_is_not_a_conflict() -> None:
    # Evelyn joins while Alice makes the room invite-only. v1 only resolves keys whose events
    # differ, so Evelyn's join, absent from the other state, is kept: one of v1's known holes.
    dag = RoomDag("1")
    initial, initial_edges = initial_nodes(dag)
    nodes = [
        Node("JR", JOIN_RULES, ALICE, "", {"join_rule": "invite"}),
        Node("ME", MEMBER, EVELYN, EVELYN, JOIN),
    ]
    after = await dag.build_graph(
        [*initial, *nodes], [initial_edges, ["END", "JR", "START"], ["END", "ME", "START"]])
    resolved = dag.named(after["END"])
    assert resolved[(JOIN_RULES, "")] == "JR"
    assert resolved[(MEMBER, EVELYN)] == "ME"
