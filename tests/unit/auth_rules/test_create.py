"""Rule 1: m.room.create, and v12 rule 2 (the room ID is the create event's ID)."""
from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from homeserver.events.event import CREATE, Event
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import (
    ALICE,
    BOB,
    VERSIONS,
    allowed,
    rejected,
    versions_from,
)


def _create(version: str, key: SigningKey, **content: Any) -> Event:
    return RoomBuilder.new(version, key, extra_create_content=content).create


def _with_pdu(event: Event, **changes: Any) -> Event:
    """A copy of `event` with top-level PDU keys changed (a key set to None is removed)."""
    pdu = {k: v for k, v in event.pdu.items() if k not in changes}
    pdu.update({k: v for k, v in changes.items() if v is not None})
    return Event(pdu, event.room_version)


@pytest.mark.parametrize("version", VERSIONS)
def test_create_allowed(version: str, signing_key: SigningKey) -> None:
    allowed(_create(version, signing_key), {})


@pytest.mark.parametrize("version", VERSIONS)
def test_create_with_prev_events_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    other = RoomBuilder.new(version, signing_key)
    content = dict(room.create.content)
    event = room.build(CREATE, CREATOR, content, state_key="", prev_events=[other.create])
    rejected(event, {}, "1.1")


@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_room_id_domain_must_match_sender_before_v12(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    event = room.build(CREATE, BOB, dict(room.create.content), state_key="", prev_events=[])
    rejected(event, {}, "1.2")


def test_v12_create_with_room_id_rejected(signing_key: SigningKey) -> None:
    create = _create("12", signing_key)
    rejected(_with_pdu(create, room_id="!" + create.event_id[1:]), {}, "1.2")


def test_v12_room_id_may_have_any_sender_domain(signing_key: SigningKey) -> None:
    allowed(RoomBuilder.new("12", signing_key, creator=BOB).create, {})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("room_version", ["13", "", 12, None, ["1"]])
def test_unknown_room_version_in_content_rejected(
    version: str, room_version: object, signing_key: SigningKey
) -> None:
    rejected(_create(version, signing_key, room_version=room_version), {}, "1.3")


@pytest.mark.parametrize("version", VERSIONS)
def test_absent_room_version_in_content_allowed(version: str, signing_key: SigningKey) -> None:
    create = _create(version, signing_key)
    content = {k: v for k, v in create.content.items() if k != "room_version"}
    allowed(_with_pdu(create, content=content), {})


@pytest.mark.parametrize("version", VERSIONS)
def test_creator_required_before_v11(version: str, signing_key: SigningKey) -> None:
    create = _create(version, signing_key)
    content = {k: v for k, v in create.content.items() if k != "creator"}
    event = _with_pdu(create, content=content)
    if int(version) < 11:
        rejected(event, {}, "1.4")
    else:
        allowed(event, {})


@pytest.mark.parametrize(
    "creators",
    [[], [ALICE], [ALICE, BOB], ["@:a.test"], ["@weird\u00e9:[::1]:8448"]],
)
def test_v12_valid_additional_creators_allowed(
    creators: list[str], signing_key: SigningKey
) -> None:
    allowed(_create("12", signing_key, additional_creators=creators), {})


@pytest.mark.parametrize(
    "creators",
    [
        ALICE,  # not an array
        {"a": ALICE},
        [ALICE, 5],
        [None],
        ["alice:a.test"],  # no sigil
        ["@alice"],  # no server name
        ["@alice:bad_server!"],
        ["@alice:a.test:99999999"],
        ["@a\x00b:a.test"],
        ["@" + "a" * 250 + ":a.test"],  # over 255 bytes
    ],
)
def test_v12_invalid_additional_creators_rejected(
    creators: object, signing_key: SigningKey
) -> None:
    rejected(_create("12", signing_key, additional_creators=creators), {}, "1.4")


@pytest.mark.parametrize("version", versions_from(1, 11))
def test_additional_creators_ignored_before_v12(version: str, signing_key: SigningKey) -> None:
    allowed(_create(version, signing_key, additional_creators="junk"), {})


# v12 rule 2 ------------------------------------------------------------------------------


def test_v12_event_in_the_create_events_room_allowed(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key)
    assert room.room_id == "!" + room.create.event_id[1:]
    join = room.build("m.room.member", CREATOR, {"membership": "join"}, state_key=CREATOR)
    allowed(join, room.state)


def test_v12_room_id_not_matching_the_create_event_rejected(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key)
    other = RoomBuilder.new("12", signing_key)
    join = other.build("m.room.member", CREATOR, {"membership": "join"}, state_key=CREATOR)
    rejected(join, room.state, "2")


def test_v12_without_the_create_event_rejected(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key)
    join = room.build("m.room.member", CREATOR, {"membership": "join"}, state_key=CREATOR)
    rejected(join, {}, "2")


@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_without_the_create_event_rejected_before_v12(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.new(version, signing_key)
    join = room.build("m.room.member", CREATOR, {"membership": "join"}, state_key=CREATOR)
    rejected(join, {}, "2.4")
