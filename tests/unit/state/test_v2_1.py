"""Where state resolution v2.1 (room v12) and v2 (v11) part ways: the iterative auth checks
start from an empty state map, and the conflicted state subgraph joins the full conflicted set
(rooms/v12.md "State resolution"). Scenarios after MSC4297 and Synapse's tests/state/test_v21.py,
with our own fixtures.
"""
from __future__ import annotations

import pytest

from homeserver.events.event import MEMBER, POWER_LEVELS, StateMap
from homeserver.state.store import EventCache
from homeserver.state.v2 import conflicted_state_subgraph
from tests.unit.state.room_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN,
    JOIN_RULES,
    LEAVE,
    TOPIC,
    ZARA,
    RoomDag,
)

JOIN_RULES_KEY = (JOIN_RULES, "")


def join_rules_reset_room(version: str) -> tuple[RoomDag, StateMap, StateMap]:
    """Alice makes Bob an admin, opens the room, Bob joins, Alice makes it invite-only and
    leaves. One state set is correct; the other, from a server on a stale fork, still has the
    public join rules."""
    dag = RoomDag(version)
    dag.add("MA1", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 100}), auth=["CREATE", "MA1"])
    dag.add("JR1", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA1", "P"])
    dag.add("MB", MEMBER, BOB, BOB, JOIN, auth=["CREATE", "P", "JR1"])
    dag.add("JR2", JOIN_RULES, ALICE, "", {"join_rule": "invite"}, auth=["CREATE", "MA1", "P"])
    dag.add("MA2", MEMBER, ALICE, ALICE, LEAVE, auth=["CREATE", "P", "MA1"])
    correct = dag.state("CREATE", "MA2", "MB", "P", "JR2")
    stale = dag.state("CREATE", "MA2", "MB", "P", "JR1")
    return dag, correct, stale


async def test_v2_loses_join_rules_whose_sender_has_left() -> None:
    # v2 checks both join rules against the unconflicted state, where Alice has left: neither
    # passes and the room ends up with no join rules at all.
    dag, correct, stale = join_rules_reset_room("11")
    resolved = await dag.resolve(correct, stale)
    assert JOIN_RULES_KEY not in resolved


async def test_v2_1_starts_from_empty_state() -> None:
    # v2.1 checks them from an empty state, so Alice's membership comes from each event's own
    # auth events: both pass, and the later one (JR2) is the result.
    dag, correct, stale = join_rules_reset_room("12")
    resolved = await dag.resolve(correct, stale)
    assert resolved == dag.named(correct)


def dodgy_rename_room(version: str) -> tuple[RoomDag, StateMap, StateMap]:
    """Bob, promoted by Alice, promotes Charlie (P3). Evelyn joins under P3 and then renames
    herself citing the first power levels (P1). The state after the rename claims P1; the
    state after Zara's join has P3."""
    dag = RoomDag(version)
    dag.add("MA", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P1", POWER_LEVELS, ALICE, "", dag.power_levels(), auth=["CREATE", "MA"])
    dag.add("JR", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA", "P1"])
    dag.add("MB", MEMBER, BOB, BOB, JOIN, auth=["CREATE", "P1", "JR"])
    dag.add("MC", MEMBER, CHARLIE, CHARLIE, JOIN, auth=["CREATE", "P1", "JR"])
    dag.add("P2", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50}), auth=["CREATE", "MA", "P1"])
    dag.add("P3", POWER_LEVELS, BOB, "", dag.power_levels({BOB: 50, CHARLIE: 50}),
            auth=["CREATE", "MB", "P2"])
    dag.add("ME1", MEMBER, EVELYN, EVELYN, JOIN, auth=["CREATE", "P3", "JR"])
    dag.add("ME2", MEMBER, EVELYN, EVELYN, {"membership": "join", "displayname": "eve"},
            auth=["CREATE", "P1", "JR", "ME1"])
    dag.add("MZ", MEMBER, ZARA, ZARA, JOIN, auth=["CREATE", "P3", "JR"])
    dodgy = dag.state("CREATE", "MA", "MB", "MC", "ME2", "P1", "JR")
    sensible = dag.state("CREATE", "MA", "MB", "MC", "MZ", "P3", "JR")
    return dag, dodgy, sensible


async def test_conflicted_state_subgraph_contents() -> None:
    dag, _, _ = dodgy_rename_room("12")
    conflicted = {dag.id(n) for n in ("ME2", "MZ", "P1", "P3")}
    subgraph = await conflicted_state_subgraph(conflicted, EventCache(dag.store(), dag.room_id))
    # Besides the conflicted events: ME1 and P2 (ME2 -> ME1 -> P3 -> P2 -> P1), JR (ME2 -> JR ->
    # P1) and MB (P3 -> MB -> P1). Not the create event or Alice's join, which lead to no
    # conflicted event, nor Charlie's join, which no conflicted event cites.
    assert {dag.names[i] for i in subgraph} == {
        "ME2", "MZ", "P1", "P3", "ME1", "P2", "JR", "MB"}


async def test_v2_resets_power_levels_through_a_dodgy_rename() -> None:
    # v2: P3's auth chain to P1 passes through P2, outside the full conflicted set, so P3 is
    # checked straight after P1, fails, and the power levels reset to P1.
    dag, dodgy, sensible = dodgy_rename_room("11")
    resolved = await dag.resolve(dodgy, sensible)
    assert resolved[(POWER_LEVELS, "")] == "P1"
    assert resolved[(MEMBER, EVELYN)] == "ME2"


async def test_v2_1_replays_the_conflicted_state_subgraph() -> None:
    # v2.1: the subgraph brings P2 and ME1 (with JR and MB) into the full conflicted set, so
    # P1 -> P2 -> P3 replay in order and P3 stands; ME2 (P1 epoch) is applied before ME1 (P3
    # epoch), so ME1, in neither state set, becomes Evelyn's state.
    dag, dodgy, sensible = dodgy_rename_room("12")
    resolved = await dag.resolve(dodgy, sensible)
    assert resolved == {
        **dag.named(dag.state("CREATE", "MA", "MB", "MC", "JR")),
        (POWER_LEVELS, ""): "P3",
        (MEMBER, EVELYN): "ME1",
        (MEMBER, ZARA): "MZ",
    }


@pytest.mark.parametrize("version", ["11", "12"])
async def test_rejected_auth_events_are_not_used(version: str) -> None:
    # Bob's topic is conflicted with Alice's; the power levels making Bob a moderator (PA) are
    # unconflicted. In v12 Bob's topic is authorised from its own auth events, so marking PA
    # rejected makes it fail. (In v11 it is checked against PA in the unconflicted state, which
    # the spec does not filter for rejection.)
    dag = RoomDag(version)
    dag.add("MA", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P0", POWER_LEVELS, ALICE, "", dag.power_levels(), auth=["CREATE", "MA"])
    dag.add("JR", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA", "P0"])
    dag.add("MB", MEMBER, BOB, BOB, JOIN, auth=["CREATE", "P0", "JR"])
    dag.add("PA", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50}), auth=["CREATE", "MA", "P0"])
    dag.add("T_ALICE", TOPIC, ALICE, "", {"topic": "a"}, auth=["CREATE", "MA", "PA"])
    dag.add("T_BOB", TOPIC, BOB, "", {"topic": "b"}, auth=["CREATE", "MB", "PA"])
    base = ("CREATE", "MA", "JR", "MB", "PA")
    with_alice, with_bob = dag.state(*base, "T_ALICE"), dag.state(*base, "T_BOB")

    assert (await dag.resolve(with_alice, with_bob))[(TOPIC, "")] == "T_BOB"
    resolved = await dag.resolve(with_alice, with_bob, rejected=["PA"])
    assert resolved[(TOPIC, "")] == ("T_ALICE" if version == "12" else "T_BOB")
