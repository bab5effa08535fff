"""A deterministic state resolution workload: a room with members, then two forks that change the
same state keys, each from a sender of different power. Used by bench/core_bench.py and by
tests/unit/state/test_bench_scenario.py.

    room_version, state_sets, events = build_fork_scenario("11", changes_per_fork=1000)
    await resolve_state(events[0].room_id, room_version, state_sets,
                        InMemoryStateResolutionStore(events))
"""
from __future__ import annotations

from typing import Any

from homeserver.events.event import Event, StateKey, StateMap
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion

ADMIN = "@admin:bench.example"
MOD = "@mod:bench.example"
SETTING = "org.example.bench.setting"


CREATE_KEY: StateKey = ("m.room.create", "")
PL_KEY: StateKey = ("m.room.power_levels", "")
JR_KEY: StateKey = ("m.room.join_rules", "")


def _member(user: str) -> StateKey:
    return ("m.room.member", user)


class _Room:
    """Builds unsigned events in order; state resolution reads neither hashes nor signatures."""

    def __init__(self, room_version: RoomVersion) -> None:
        self.rv = room_version
        self.events: list[Event] = []
        self.room_id = "!bench:bench.example"

    def add(self, state: dict[StateKey, Event], ts: int, type: str, sender: str, state_key: str,
            content: dict[str, Any], auth_keys: list[StateKey]) -> None:
        """Add a state event citing `state` under `auth_keys` (and the create event, except in
        v12, where the room ID stands for it), then apply it to `state`."""
        rv = self.rv
        if not rv.room_id_from_create_event:
            auth_keys = [CREATE_KEY, *auth_keys]
        auth = [state[k] for k in auth_keys if k in state]
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "state_key": state_key,
            "content": content,
            "depth": len(self.events) + 1,
            "origin_server_ts": ts,
            "prev_events": [self._ref(self.events[-1])] if self.events else [],
            "auth_events": [self._ref(a) for a in auth],
        }
        if not (rv.room_id_from_create_event and type == "m.room.create"):
            pdu["room_id"] = self.room_id
        if rv.event_format is EventFormat.V1:
            pdu["event_id"] = f"${len(self.events)}:bench.example"
        event = Event(pdu, rv)
        if type == "m.room.create":
            self.room_id = event.room_id
        self.events.append(event)
        state[(type, state_key)] = event

    def _ref(self, event: Event) -> Any:
        return [event.event_id, {}] if self.rv.event_format is EventFormat.V1 else event.event_id


def build_fork_scenario(
    room_version: str = "11", *, members: int = 500, changes_per_fork: int = 1000
) -> tuple[RoomVersion, list[StateMap], list[Event]]:
    """Create a public room (ADMIN at 100, MOD at 50) that `members` users join, then fork it.

    Each fork changes the same `changes_per_fork` state keys: the members' displaynames (in the
    fork of MOD, every tenth member is banned instead) and SETTING state for the rest, after
    first changing the power levels (ADMIN in one fork, MOD in the other). Returns the room
    version, the state after each fork, and every event (create event first)."""
    rv = KNOWN_ROOM_VERSIONS[room_version]
    room = _Room(rv)
    users = {MOD: 50} if rv.privileged_creators else {ADMIN: 100, MOD: 50}
    create_content: dict[str, Any] = {"room_version": room_version}
    if not rv.implicit_room_creator:
        create_content["creator"] = ADMIN
    state: dict[StateKey, Event] = {}
    room.add(state, 1, "m.room.create", ADMIN, "", create_content, [])
    room.add(state, 2, "m.room.member", ADMIN, ADMIN, {"membership": "join"}, [])
    room.add(state, 3, "m.room.power_levels", ADMIN, "", {"users": users}, [_member(ADMIN)])
    room.add(state, 4, "m.room.join_rules", ADMIN, "", {"join_rule": "public"},
             [_member(ADMIN), PL_KEY])
    user_ids = [MOD] + [f"@user{i:05d}:bench.example" for i in range(members)]
    for i, user in enumerate(user_ids):
        room.add(state, 5 + i, "m.room.member", user, user, {"membership": "join"},
                 [PL_KEY, JR_KEY])

    member_changes = min(members, changes_per_fork // 2)
    forks: list[StateMap] = []
    for fork, (sender, pl_change) in enumerate((
        (ADMIN, {"users": {**users, "@helper:bench.example": 10}}),
        (MOD, {"users": users, "events": {"org.example.bench.note": 50}}),
    )):
        fork_state = dict(state)
        # The forks interleave in time: one takes the odd timestamps, the other the even ones.
        timestamps = iter(range(len(room.events) + fork, 10**9, 2))
        room.add(fork_state, next(timestamps), "m.room.power_levels", sender, "", pl_change,
                 [PL_KEY, _member(sender)])
        for i in range(changes_per_fork):
            ts = next(timestamps)
            if i >= member_changes:
                room.add(fork_state, ts, SETTING, sender, f"k{i}", {"value": f"fork {fork}"},
                         [PL_KEY, _member(sender)])
                continue
            user = user_ids[1 + i]
            if fork == 1 and i % 10 == 0:
                room.add(fork_state, ts, "m.room.member", MOD, user, {"membership": "ban"},
                         [PL_KEY, _member(MOD), _member(user)])
            else:
                room.add(fork_state, ts, "m.room.member", user, user,
                         {"membership": "join", "displayname": f"user {i} fork {fork}"},
                         [PL_KEY, _member(user), JR_KEY])
        forks.append({key: event.event_id for key, event in fork_state.items()})
    return rv, forks, room.events
