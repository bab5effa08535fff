"""The authorization rules of room versions 1-12 (rooms/v*.md "Authorisation rules"), applied to
an event and a state map: its auth events, the state before it, or the current state (S2S
"Checks performed on receipt of a PDU", steps 4-6, and "Soft failure").

Not checked here, because they need server keys: the event is signed by the sender's server
(v1/v2 also by the event ID's server) and, v8+, a join with `join_authorised_via_users_server`
is signed by that user's server. Federation checks signatures before calling in (S2S step 2).
"""
from __future__ import annotations

from collections.abc import Mapping

from homeserver.auth_rules.membership import check_membership, membership_of
from homeserver.auth_rules.power_levels import PowerLevels, check_power_levels_event
from homeserver.auth_rules.selection import CREATE_KEY, POWER_LEVELS_KEY
from homeserver.errors import AuthError
from homeserver.events.event import (
    ALIASES,
    CREATE,
    MEMBER,
    POWER_LEVELS,
    REDACTION,
    THIRD_PARTY_INVITE,
    Event,
    StateKey,
    room_id_for_create_event_id,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.identifiers import domain_of, is_valid_user_id


def check_auth_rules(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    """Raise AuthError, naming the failed rule, unless the event passes its room version's
    authorization rules against `auth_state`.

    `auth_state` maps (type, state_key) to the events to authorise against; only the keys of
    the auth events selection are read. v12: it must hold the room's create event even though
    the event does not list it. The rules on the listed auth events themselves are
    `check_auth_events_list`; signatures are the caller's (see the module docstring)."""
    rv = event.room_version
    event_type = event.type
    if event_type == CREATE:
        _check_create(event)
        return
    create = auth_state.get(CREATE_KEY)
    if rv.room_id_from_create_event:
        # v12 rule 2 (rejected-ness of the create event is the caller's check).
        if create is None or event.room_id != room_id_for_create_event_id(create.event_id):
            raise AuthError("2: room_id is not the ID of the room's m.room.create event")
    elif create is None:
        raise AuthError("2.4: no m.room.create event in the auth events")
    sender = event.sender
    # Rule 3 (v12: 4).
    if create.content.get("m.federate", True) is False and domain_of(sender) != domain_of(
        create.sender
    ):
        raise AuthError(f"{4 if rv.room_id_from_create_event else 3}: the room is not federated")
    # v1-v5 insert the aliases rule as rule 4 and v12 the room ID rule as rule 2, so the later
    # rules are numbered one higher there than in v6-v11.
    shift = 1 if rv.special_case_aliases_auth or rv.room_id_from_create_event else 0
    if event_type == ALIASES and rv.special_case_aliases_auth:
        state_key = event.state_key
        if state_key is None:
            raise AuthError("4.1: m.room.aliases has no state_key")
        if state_key != domain_of(sender):
            raise AuthError("4.2: sender's domain does not match state_key")
        return
    levels = PowerLevels(create, auth_state.get(POWER_LEVELS_KEY))
    if event_type == MEMBER:
        check_membership(event, auth_state, levels, 4 + shift)
        return
    if membership_of(auth_state, sender) != "join":
        raise AuthError(f"{5 + shift}: sender is not joined")
    sender_level = levels.user_level(sender)
    if event_type == THIRD_PARTY_INVITE:
        if sender_level < levels.named_level("invite"):
            raise AuthError(f"{6 + shift}.1: sender's power level is below the invite level")
        return
    state_key = event.state_key
    if levels.required_level(event_type, state_key) > sender_level:
        raise AuthError(f"{7 + shift}: sender's power level is below the required power level")
    if state_key is not None and state_key.startswith("@") and state_key != sender:
        raise AuthError(f"{8 + shift}: state_key starts with '@' and is not the sender")
    if event_type == POWER_LEVELS:
        check_power_levels_event(event, levels, sender_level, 9 + shift)
    elif event_type == REDACTION and rv.event_id_in_pdu:
        # v1/v2 rule 11; later versions leave redactions to "Handling redactions" (event IDs
        # have no domain there).
        if sender_level >= levels.named_level("redact"):
            return
        redacts = event.redacts
        if redacts is None or domain_of(redacts) != domain_of(event.event_id):
            raise AuthError("11.3: sender may not redact another server's event")


def _check_create(event: Event) -> None:
    """Rule 1: the create event's own checks."""
    rv = event.room_version
    content = event.content
    if event.pdu.get("prev_events"):
        raise AuthError("1.1: m.room.create has prev_events")
    if rv.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise AuthError("1.2: m.room.create has a room_id")
    elif domain_of(event.room_id) != domain_of(event.sender):
        raise AuthError("1.2: room_id's domain does not match the sender's")
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"1.3: unknown room_version {version!r}")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("1.4: m.room.create has no creator")
    if rv.privileged_creators and "additional_creators" in content:
        creators = content["additional_creators"]
        if not isinstance(creators, list) or not all(map(is_valid_user_id, creators)):
            raise AuthError("1.4: additional_creators is not an array of user IDs")


def is_soft_failed(event: Event, current_state: Mapping[StateKey, Event]) -> bool:
    """S2S "Soft failure": an event that passed auth at its own position but fails the
    rules against the room's current state (v12: including the create event)."""
    try:
        check_auth_rules(event, current_state)
    except AuthError:
        return True
    return False
