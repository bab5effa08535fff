"""Definitions shared by the state resolution algorithms: auth edges, power events, sender power
and the unconflicted/conflicted split (rooms/fragments/v2-state-res.md "Definitions").
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from homeserver.auth_rules import user_power_level
from homeserver.errors import AuthError
from homeserver.events.event import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    Event,
    StateKey,
    StateMap,
)

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")

# A power level: an int, or math.inf for a v12 room creator (rooms/v12.md "Authorization rules").
PowerLevel = int | float


def create_event_id_for_room(room_id: str) -> str:
    """v12: the create event's ID is the room ID with the `$` sigil (appendices "Room IDs")."""
    return "$" + room_id[1:]


def auth_edges(event: Event) -> tuple[str, ...]:
    """The event's auth events as graph edges.

    v12 forbids listing the create event in `auth_events` because the room ID names it
    (rooms/v12.md "Authorization rules" rule 3.2), so we add that implied edge back: the create
    event stays in every auth chain and reaches the auth checks, as in every older version.
    """
    ids = event.auth_event_ids
    if event.room_version.room_id_from_create_event and event.type != CREATE and event.room_id:
        create_id = create_event_id_for_room(event.room_id)
        if create_id not in ids:
            return (*ids, create_id)
    return ids


def is_power_event(event: Event) -> bool:
    """v2 "Power events": power levels, join rules, and kicks or bans of another user."""
    if not event.is_state():
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES):
        return event.state_key == ""
    if event.type == MEMBER and event.membership in ("leave", "ban"):
        return event.sender != event.state_key
    return False


def split_conflicts(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[StateMap, dict[StateKey, set[str]]]:
    """v2 "Unconflicted state map and conflicted state set".

    A key is unconflicted only when every state set holds it with the same event; a key that
    some set lacks is conflicted, with the events of the sets that have it.
    """
    unconflicted: StateMap = {}
    conflicted: dict[StateKey, set[str]] = {}
    first, rest = state_sets[0], state_sets[1:]
    for key, event_id in first.items():
        for other in rest:
            if other.get(key) != event_id:
                conflicted[key] = {s[key] for s in state_sets if key in s}
                break
        else:
            unconflicted[key] = event_id
    # Keys the first state set lacks are conflicted whatever the others hold.
    for other in rest:
        for key in other.keys() - first.keys():
            conflicted.setdefault(key, set()).add(other[key])
    return unconflicted, conflicted


def sender_power_level(event: Event, auth_events: Iterable[Event]) -> PowerLevel:
    """The power of the event's sender "when looking at their auth_events" (v2 "Reverse
    topological power ordering", comparison 1): the auth rules' reading of the create and power
    levels events among them (v12 creators: math.inf). Malformed levels, or no create event to
    read them against, count as 0: such an event cannot pass the auth checks anyway."""
    auth_state = {
        key: auth_event
        for auth_event in auth_events
        if (key := (auth_event.type, auth_event.state_key)) in (CREATE_KEY, POWER_LEVELS_KEY)
    }
    try:
        return user_power_level(event.sender, auth_state)
    except AuthError:
        return 0
