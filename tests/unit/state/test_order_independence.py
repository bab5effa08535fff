"""Property: the resolved state depends only on the state sets and the events, not on the order
of the state sets, on repeats among them, or on the order of events in the store.

Hypothesis draws random forks of a small room: each fork is a list of actions (topics, power
level changes, bans, kicks, joins, join rules) by random users with colliding timestamps, so
that every tie-break of the orderings is exercised.
"""
from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import MEMBER, POWER_LEVELS, StateMap
from homeserver.state import InMemoryStateResolutionStore, resolve_state
from tests.unit.state.room_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN,
    JOIN_RULES,
    TOPIC,
    ZARA,
    RoomDag,
)

USERS = [ALICE, BOB, CHARLIE, EVELYN, ZARA]
ACTIONS = ["topic", "power", "ban", "kick", "join", "join_rules"]

action = st.tuples(
    st.sampled_from(USERS),  # sender
    st.sampled_from(ACTIONS),
    st.sampled_from(USERS),  # target, where the action has one
    st.integers(0, 3),  # a level, topic or join rule choice
    st.integers(0, 2),  # origin_server_ts: collisions on purpose
)


def start_room(version: str) -> tuple[RoomDag, StateMap]:
    dag = RoomDag(version)
    dag.add("MA", MEMBER, ALICE, ALICE, JOIN, auth=["CREATE"])
    dag.add("P0", POWER_LEVELS, ALICE, "", dag.power_levels({BOB: 50, CHARLIE: 25}),
            auth=["CREATE", "MA"])
    dag.add("JR", JOIN_RULES, ALICE, "", {"join_rule": "public"}, auth=["CREATE", "MA", "P0"])
    for name, user in (("MB", BOB), ("MC", CHARLIE), ("MZ", ZARA)):
        dag.add(name, MEMBER, user, user, JOIN, auth=["CREATE", "P0", "JR"])
    return dag, dag.state("CREATE", "MA", "P0", "JR", "MB", "MC", "MZ")


def event_for(dag: RoomDag, sender: str, kind: str, target: str,
              choice: int) -> tuple[str, str | None, dict[str, Any]]:
    if kind == "topic":
        return TOPIC, "", {"topic": str(choice)}
    if kind == "power":
        return POWER_LEVELS, "", dag.power_levels({BOB: 50, target: 25 * choice})
    if kind == "ban":
        return MEMBER, target, {"membership": "ban"}
    if kind == "kick":
        return MEMBER, target, {"membership": "leave"}
    if kind == "join":
        return MEMBER, sender, {"membership": "join", "displayname": str(choice)}
    return JOIN_RULES, "", {"join_rule": ["public", "invite", "public", "knock"][choice]}


def grow_fork(dag: RoomDag, base: StateMap, fork: int,
              actions: list[tuple[str, str, str, int, int]]) -> StateMap:
    """Apply the actions that the auth rules allow against the fork's state, in order."""
    state = dict(base)
    for i, (sender, kind, target, choice, ts) in enumerate(actions):
        event_type, state_key, content = event_for(dag, sender, kind, target, choice)
        if dag.rv.privileged_creators and kind == "power":
            content["users"].pop(ALICE, None)
        keys = auth_types_for_event(dag.rv, event_type, sender, state_key, content)
        auth = sorted(dag.names[state[k]] for k in keys if k in state)
        if not dag.rv.room_id_from_create_event:
            auth = sorted(set(auth) | {"CREATE"})
        name = f"F{fork}E{i}"
        try:
            event = dag.add(name, event_type, sender, state_key, content, auth=auth, ts=ts)
        except AssertionError:  # same ID as an earlier event: nothing new
            continue
        try:
            check_auth_rules(event, {k: dag.events[dag.names[state[k]]]
                                     for k in keys | {("m.room.create", "")} if k in state})
        except AuthError:
            continue
        state[event.state_key_tuple] = event.event_id
    return state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(["1", "2", "11", "12"]),
    forks=st.lists(st.lists(action, max_size=6), min_size=2, max_size=3),
    seed=st.randoms(use_true_random=False),
)
async def test_resolution_does_not_depend_on_input_order(
    version: str, forks: list[list[tuple[str, str, str, int, int]]], seed: random.Random
) -> None:
    dag, base = start_room(version)
    state_sets = [grow_fork(dag, base, i, actions) for i, actions in enumerate(forks)]
    events = list(dag.events.values())
    expected = await resolve_state(dag.room_id, dag.rv, state_sets,
                                   InMemoryStateResolutionStore(events))

    for permutation in itertools.permutations(state_sets):
        shuffled = events[:]
        seed.shuffle(shuffled)
        store = InMemoryStateResolutionStore(shuffled)
        # Rebuilt maps, so dict and set iteration orders differ from the first run.
        inputs = [dict(reversed(list(s.items()))) for s in permutation]
        inputs.append(dict(permutation[0]))  # a repeated state set changes nothing
        assert await resolve_state(dag.room_id, dag.rv, inputs, store) == expected
