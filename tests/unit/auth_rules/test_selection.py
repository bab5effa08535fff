"""Auth events selection and the rules on an event's listed auth events (v1-v11 rule 2,
v12 rule 3)."""
from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from homeserver.auth_rules import auth_types_for_event, check_auth_events_list
from homeserver.errors import AuthError
from homeserver.events.event import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    THIRD_PARTY_INVITE,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import ALICE, BOB, VERSIONS

PL = (POWER_LEVELS, "")
CR = (CREATE, "")
JR = (JOIN_RULES, "")


def _base(version: str, sender: str) -> set[tuple[str, str]]:
    keys = {PL, (MEMBER, sender)}
    if version != "12":
        keys.add(CR)
    return keys


@pytest.mark.parametrize("version", VERSIONS)
def test_create_event_selects_nothing(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    assert auth_types_for_event(rv, CREATE, CREATOR, "", {"creator": CREATOR}) == set()


@pytest.mark.parametrize("version", VERSIONS)
def test_message_selects_create_power_levels_and_sender(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    keys = auth_types_for_event(rv, "m.room.message", ALICE, None, {"body": "hi"})
    assert keys == _base(version, ALICE)
    # v12 never selects the create event: the room ID stands for it.
    assert (CR in keys) is (version != "12")


def test_state_event_with_user_state_key_does_not_select_that_member() -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    keys = auth_types_for_event(rv, "m.room.topic", ALICE, BOB, {})
    assert keys == _base("10", ALICE)


@pytest.mark.parametrize("membership", ["join", "invite", "knock"])
def test_member_join_invite_knock_select_join_rules_and_target(membership: str) -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    keys = auth_types_for_event(rv, MEMBER, ALICE, BOB, {"membership": membership})
    assert keys == _base("10", ALICE) | {(MEMBER, BOB), JR}


@pytest.mark.parametrize("membership", ["leave", "ban"])
def test_member_leave_ban_select_target_without_join_rules(membership: str) -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    keys = auth_types_for_event(rv, MEMBER, ALICE, BOB, {"membership": membership})
    assert keys == _base("10", ALICE) | {(MEMBER, BOB)}


def test_third_party_invite_selects_the_token_event() -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "abc"}}}
    keys = auth_types_for_event(rv, MEMBER, ALICE, BOB, content)
    assert (THIRD_PARTY_INVITE, "abc") in keys


@pytest.mark.parametrize(
    "third_party_invite",
    [{}, {"signed": "x"}, {"signed": {"mxid": BOB}}, {"signed": {"token": 5}}, "junk"],
)
def test_malformed_third_party_invite_selects_no_token(third_party_invite: object) -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    content = {"membership": "invite", "third_party_invite": third_party_invite}
    keys = auth_types_for_event(rv, MEMBER, ALICE, BOB, content)
    assert keys == _base("10", ALICE) | {(MEMBER, BOB), JR}


@pytest.mark.parametrize("version", VERSIONS)
def test_authorising_user_selected_from_v8(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    content = {"membership": "join", "join_authorised_via_users_server": CREATOR}
    keys = auth_types_for_event(rv, MEMBER, BOB, BOB, content)
    assert ((MEMBER, CREATOR) in keys) is (int(version) >= 8)


def test_authorising_user_only_for_joins() -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    content = {"membership": "invite", "join_authorised_via_users_server": CREATOR}
    assert (MEMBER, CREATOR) not in auth_types_for_event(rv, MEMBER, ALICE, BOB, content)


# check_auth_events_list ------------------------------------------------------------------


def _prefix(version: str) -> str:
    return "3" if version == "12" else "2"


@pytest.mark.parametrize("version", VERSIONS)
def test_selected_auth_events_pass(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    for event in (
        room.build("m.room.message", ALICE, {"body": "hi"}),
        room.build(MEMBER, BOB, {"membership": "join"}, state_key=BOB),
        room.build(MEMBER, CREATOR, {"membership": "ban"}, state_key=ALICE),
    ):
        auth_events = [room.events[i] for i in event.auth_event_ids]
        check_auth_events_list(event, auth_events)


@pytest.mark.parametrize("version", VERSIONS)
def test_create_event_auth_events_are_not_checked(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    check_auth_events_list(room.create, [room.state[PL]])


@pytest.mark.parametrize("version", VERSIONS)
def test_duplicate_auth_events_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    old_join = room.state[(MEMBER, CREATOR)]
    new_join = room.join(CREATOR, displayname="Creator")
    event = room.build("m.room.message", CREATOR, {"body": "hi"})
    auth_events = [room.events[i] for i in event.auth_event_ids] + [old_join]
    assert new_join in auth_events
    with pytest.raises(AuthError, match=rf"^{_prefix(version)}\.1:"):
        check_auth_events_list(event, auth_events)


@pytest.mark.parametrize("version", VERSIONS)
def test_unselected_auth_event_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build("m.room.message", CREATOR, {"body": "hi"})
    # Join rules are selected for joins, invites and knocks only.
    auth_events = [room.events[i] for i in event.auth_event_ids] + [room.state[JR]]
    with pytest.raises(AuthError, match=rf"^{_prefix(version)}\.2:"):
        check_auth_events_list(event, auth_events)


@pytest.mark.parametrize("version", VERSIONS)
def test_non_state_auth_event_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    message = room.send("m.room.message", CREATOR, {"body": "hi"})
    event = room.build("m.room.message", CREATOR, {"body": "again"})
    auth_events = [room.events[i] for i in event.auth_event_ids] + [message]
    with pytest.raises(AuthError, match=rf"^{_prefix(version)}\.2:"):
        check_auth_events_list(event, auth_events)


def test_v12_listing_the_create_event_rejected(signing_key: SigningKey) -> None:
    room = RoomBuilder.standard("12", signing_key)
    event = room.build("m.room.message", CREATOR, {"body": "hi"})
    auth_events = [room.events[i] for i in event.auth_event_ids]
    check_auth_events_list(event, auth_events)
    with pytest.raises(AuthError, match=r"^3\.2:"):
        check_auth_events_list(event, [room.create, *auth_events])


@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_missing_create_event_rejected_before_v12(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build("m.room.message", CREATOR, {"body": "hi"})
    auth_events = [room.events[i] for i in event.auth_event_ids if i != room.create.event_id]
    with pytest.raises(AuthError, match=r"^2\.4:"):
        check_auth_events_list(event, auth_events)


@pytest.mark.parametrize("version", VERSIONS)
def test_auth_event_from_another_room_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    other = RoomBuilder.standard(version, signing_key)
    event = room.build("m.room.message", CREATOR, {"body": "hi"})
    auth_events = [
        other.state[PL] if room.events[i].type == POWER_LEVELS else room.events[i]
        for i in event.auth_event_ids
    ]
    with pytest.raises(AuthError, match=rf"^{_prefix(version)}\.5:"):
        check_auth_events_list(event, auth_events)
