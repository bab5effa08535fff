"""The definitions shared by the algorithms: the conflict split, power events, sender power."""
from __future__ import annotations

import math

import pytest

from homeserver.events.event import CREATE, MEMBER, POWER_LEVELS
from homeserver.state.common import is_power_event, sender_power_level, split_conflicts
from tests.unit.state.room_dag import ALICE, BAN, BOB, CHARLIE, JOIN, JOIN_RULES, LEAVE, RoomDag

A, B, C = ("t", "a"), ("t", "b"), ("t", "c")


def test_split_conflicts() -> None:
    unconflicted, conflicted = split_conflicts([
        {A: "$1", B: "$2", C: "$3"},
        {A: "$1", B: "$4"},
        {A: "$1", B: "$2"},
    ])
    assert unconflicted == {A: "$1"}
    # A key some state set lacks is conflicted (v2), with the events of the sets that hold it.
    assert conflicted == {B: {"$2", "$4"}, C: {"$3"}}
    _, conflicted = split_conflicts([{A: "$1"}, {A: "$1", C: "$3"}])
    assert conflicted == {C: {"$3"}}


def test_power_events() -> None:
    dag = RoomDag("11")
    cases = {
        "PL": (POWER_LEVELS, ALICE, "", {}, True),
        "JR": (JOIN_RULES, ALICE, "", {"join_rule": "invite"}, True),
        "KICK": (MEMBER, ALICE, BOB, LEAVE, True),
        "BAN": (MEMBER, ALICE, CHARLIE, BAN, True),
        "OWN_LEAVE": (MEMBER, BOB, BOB, LEAVE, False),
        "JOIN": (MEMBER, BOB, BOB, JOIN, False),
        "TOPIC": ("m.room.topic", ALICE, "", {}, False),
    }
    for name, (event_type, sender, state_key, content, expected) in cases.items():
        event = dag.add(name, event_type, sender, state_key, content, auth=["CREATE"])
        assert is_power_event(event) is expected, name


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_sender_power_level(version: str) -> None:
    dag = RoomDag(version)
    create = dag.events["CREATE"]
    topic = {u: dag.add(f"T_{u}", "m.room.topic", u, "", {}, auth=["CREATE"])
             for u in (ALICE, BOB, CHARLIE)}
    privileged = dag.rv.privileged_creators
    # No power levels: the creator has 100 (v12: infinite), everyone else 0.
    assert sender_power_level(topic[ALICE], [create]) == (math.inf if privileged else 100)
    assert sender_power_level(topic[BOB], [create]) == 0
    # With power levels: `users`, else `users_default`.
    pl = dag.add("PL", POWER_LEVELS, ALICE, "",
                 dag.power_levels({BOB: 50}, users_default=5), auth=["CREATE"])
    assert sender_power_level(topic[BOB], [create, pl]) == 50
    assert sender_power_level(topic[CHARLIE], [create, pl]) == 5
    assert sender_power_level(topic[ALICE], [pl, create]) == (math.inf if privileged else 100)
    # Without a create event to read them against, nothing counts.
    assert sender_power_level(topic[BOB], [pl]) == 0


def test_v12_additional_creators_are_infinitely_powerful() -> None:
    dag = RoomDag("12")
    create = dag.add("CREATE2", CREATE, ALICE, "",
                     {"room_version": "12", "additional_creators": [BOB]})
    topic = dag.add("T", "m.room.topic", BOB, "", {}, auth=[])
    assert sender_power_level(topic, [create]) == math.inf
