"""Auth events selection (S2S "Auth events selection") and the checks on an event's listed
auth events (rule 2 of room versions 1-11, rule 3 of room version 12).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.errors import AuthError
from homeserver.events.event import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    THIRD_PARTY_INVITE,
    Event,
    StateKey,
)
from homeserver.events.room_versions import RoomVersion

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

# Memberships whose auth events include the join rules.
_JOIN_RULE_MEMBERSHIPS = frozenset({"join", "invite", "knock"})


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The (type, state_key) pairs an event's auth_events may name (S2S "Auth events
    selection"). The create event has none; malformed content fields are skipped, the auth
    rules reject such events later."""
    if event_type == CREATE:
        return set()
    auth_types = {POWER_LEVELS_KEY, (MEMBER, sender)}
    # v12: the room ID stands for the create event, which is never selected.
    if not room_version.room_id_from_create_event:
        auth_types.add(CREATE_KEY)
    if event_type != MEMBER:
        return auth_types
    if isinstance(state_key, str):
        auth_types.add((MEMBER, state_key))
    membership = content.get("membership")
    if membership in _JOIN_RULE_MEMBERSHIPS:
        auth_types.add(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_invite_token(content)
        if token is not None:
            auth_types.add((THIRD_PARTY_INVITE, token))
    elif membership == "join" and room_version.restricted_join_rule:
        authoriser = content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str):
            auth_types.add((MEMBER, authoriser))
    return auth_types


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def check_auth_events_list(event: Event, auth_events: Sequence[Event]) -> None:
    """Reject an event whose listed auth events (already fetched, in any order) break the
    rules on `auth_events`. Whether any of them was rejected (rule 2.3 / v12 3.3) is the
    caller's check: rejection is storage metadata, not part of the event."""
    room_version = event.room_version
    # Rule 1: a create event is allowed or rejected by its own rules alone.
    if event.type == CREATE:
        return
    rule = 3 if room_version.room_id_from_create_event else 2
    allowed = auth_types_for_event(
        room_version, event.type, event.sender, event.state_key, event.content
    )
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        state_key = auth_event.state_key
        if not isinstance(state_key, str):
            raise AuthError(f"{rule}.2: auth event {auth_event.event_id} is not a state event")
        key = (auth_event.type, state_key)
        if key in seen:
            raise AuthError(f"{rule}.1: duplicate auth events for {key}")
        seen.add(key)
        if key not in allowed:
            raise AuthError(
                f"{rule}.2: auth event {auth_event.event_id} {key} is not one the auth events "
                "selection allows"
            )
        if auth_event.room_id != event.room_id:
            raise AuthError(
                f"{rule}.5: auth event {auth_event.event_id} belongs to room {auth_event.room_id}"
            )
    # v1-v11 rule 2.4; v12 drops it because the create event is implied by the room ID.
    if not room_version.room_id_from_create_event and CREATE_KEY not in seen:
        raise AuthError("2.4: no m.room.create event among the auth events")
