"""Power levels: parsing per room version, user and required levels, and the
m.room.power_levels rule (rule 10 of v1-v5 and v12, rule 9 of v6-v11)."""
from __future__ import annotations

import math
from typing import Any

import pytest
from nacl.signing import SigningKey

from homeserver.auth_rules import (
    parse_power_level,
    required_power_level,
    user_power_level,
)
from homeserver.errors import AuthError
from homeserver.events.event import POWER_LEVELS
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import (
    ALICE,
    BOB,
    CAROL,
    VERSIONS,
    allowed,
    rejected,
    rule_after_member,
    versions_from,
)

# parse_power_level -----------------------------------------------------------------------

_INTS = [(0, 0), (50, 50), (-7, -7), (2**53 - 1, 2**53 - 1)]
_STRINGS = [("50", 50), ("-100", -100), ("+100", 100), ("000100", 100), (" 100 ", 100),
            (" +0010\n", 10), ("\t-5 ", -5)]
_FLOATS = [(50.7, 50), (-50.7, -50), (5.114698e4, 51146), (100.0, 100)]
_NEVER = [True, False, None, "", "5.5", "1e3", "1_000", "0x10", "٥", "+-1", "- 1", "abc",
          [50], {"v": 50}, math.inf, -math.inf, math.nan]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("value", "expected"), _INTS)
def test_integers_are_power_levels(version: str, value: int, expected: int) -> None:
    assert parse_power_level(KNOWN_ROOM_VERSIONS[version], value) == expected


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("value", "expected"), _STRINGS)
def test_integer_strings_until_v9(version: str, value: str, expected: int) -> None:
    parsed = parse_power_level(KNOWN_ROOM_VERSIONS[version], value)
    assert parsed == (expected if int(version) < 10 else None)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("value", "expected"), _FLOATS)
def test_floats_truncated_until_v5(version: str, value: float, expected: int) -> None:
    """rooms/fragments/v1-floaty-power-levels.md; v6+ enforce canonical JSON (no floats)."""
    parsed = parse_power_level(KNOWN_ROOM_VERSIONS[version], value)
    assert parsed == (expected if int(version) <= 5 else None)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value", _NEVER)
def test_non_levels(version: str, value: Any) -> None:
    assert parse_power_level(KNOWN_ROOM_VERSIONS[version], value) is None


def test_huge_digit_string_is_not_a_level() -> None:
    assert parse_power_level(KNOWN_ROOM_VERSIONS["9"], "9" * 5000) is None


# user_power_level ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_without_power_levels_the_creator_has_100(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    expected = math.inf if version == "12" else 100
    assert user_power_level(CREATOR, room.state) == expected
    assert user_power_level(ALICE, room.state) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_content_creator_has_100_before_v11(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key, extra_create_content={"creator": ALICE})
    alice, sender = user_power_level(ALICE, room.state), user_power_level(CREATOR, room.state)
    if int(version) < 11:
        assert (alice, sender) == (100, 0)
    else:
        assert alice == 0 and sender in (100, math.inf)


@pytest.mark.parametrize("version", VERSIONS)
def test_levels_from_users_and_users_default(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 42}, users_default=7)
    assert user_power_level(ALICE, room.state) == 42
    assert user_power_level(BOB, room.state) == 7
    assert user_power_level(CREATOR, room.state) == (math.inf if version == "12" else 100)


def test_users_default_defaults_to_zero(signing_key: SigningKey) -> None:
    room = RoomBuilder.standard("10", signing_key)
    assert user_power_level(BOB, room.state) == 0


def test_v12_additional_creators_are_infinitely_powerful(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key, extra_create_content={"additional_creators": [BOB]})
    assert user_power_level(BOB, room.state) == math.inf
    room.send(POWER_LEVELS, CREATOR, {"users": {ALICE: 50}, "users_default": 10}, state_key="")
    assert user_power_level(BOB, room.state) == math.inf
    assert user_power_level(CREATOR, room.state) == math.inf
    assert user_power_level(ALICE, room.state) == 50
    assert user_power_level(CAROL, room.state) == 10


@pytest.mark.parametrize("version", VERSIONS)
def test_stringy_user_level(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    room.send(POWER_LEVELS, CREATOR, {"users": {ALICE: "30"}, "users_default": "5"}, state_key="")
    if int(version) < 10:
        assert user_power_level(ALICE, room.state) == 30
        assert user_power_level(BOB, room.state) == 5
    else:
        with pytest.raises(AuthError):
            user_power_level(ALICE, room.state)


def test_user_power_level_needs_the_create_event() -> None:
    with pytest.raises(AuthError):
        user_power_level(ALICE, {})


# required_power_level --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "state_key", "content", "expected"),
    [
        ("m.room.message", None, None, 0),
        ("m.room.topic", "", None, 50),
        ("m.room.message", None, {}, 0),
        ("m.room.topic", "", {}, 50),
        ("m.room.message", None, {"events_default": 10, "state_default": 20}, 10),
        ("m.room.topic", "", {"events_default": 10, "state_default": 20}, 20),
        ("m.room.topic", "", {"events": {"m.room.topic": 5}, "state_default": 20}, 5),
        ("m.room.topic", None, {"events": {"m.room.topic": 5}, "events_default": 20}, 5),
        ("m.room.name", "", {"events": {"m.room.topic": 5}}, 50),
        ("m.room.message", None, {"events_default": None}, 0),
    ],
)
def test_required_power_level(
    event_type: str, state_key: str | None, content: Any, expected: int
) -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    assert required_power_level(rv, event_type, state_key, content) == expected


def test_required_power_level_stringy_before_v10() -> None:
    content = {"events": {"m.room.topic": "25"}, "events_default": "3"}
    assert required_power_level(KNOWN_ROOM_VERSIONS["9"], "m.room.topic", "", content) == 25
    assert required_power_level(KNOWN_ROOM_VERSIONS["9"], "m.room.message", None, content) == 3
    with pytest.raises(AuthError):
        required_power_level(KNOWN_ROOM_VERSIONS["10"], "m.room.topic", "", content)


@pytest.mark.parametrize("content", [{"events": []}, {"events": {"m.room.topic": "x"}},
                                     {"state_default": "x"}])
def test_malformed_required_power_level_rejects(content: Any) -> None:
    with pytest.raises(AuthError):
        required_power_level(KNOWN_ROOM_VERSIONS["9"], "m.room.topic", "", content)


# The required power level rule in action --------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_events_default_and_state_default(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 10}, events_default=10)
    room.join(ALICE)
    room.join(BOB)
    rule = rule_after_member(version, 3)
    allowed(room.build("m.room.message", ALICE, {"body": "hi"}), room.state)
    rejected(room.build("m.room.message", BOB, {"body": "hi"}), room.state, rule)
    rejected(room.build("m.room.topic", ALICE, {"topic": "t"}, state_key=""), room.state, rule)
    allowed(room.build("m.room.topic", CREATOR, {"topic": "t"}, state_key=""), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_events_override(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(
        version, signing_key, events={"m.room.topic": 0, "m.reaction": 5}
    )
    room.join(ALICE)
    allowed(room.build("m.room.topic", ALICE, {"topic": "t"}, state_key=""), room.state)
    rejected(room.build("m.reaction", ALICE, {}), room.state, rule_after_member(version, 3))


@pytest.mark.parametrize("version", VERSIONS)
def test_stringy_events_default_until_v9(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    room.join(CREATOR)
    room.send(POWER_LEVELS, CREATOR, {"events_default": "20"}, state_key="")
    room.join(ALICE)
    event = room.build("m.room.message", ALICE, {"body": "hi"})
    if int(version) < 10:
        rejected(event, room.state, rule_after_member(version, 3))
    else:
        with pytest.raises(AuthError, match="invalid power level"):
            allowed(event, room.state)


# The m.room.power_levels rule --------------------------------------------------------------


def _pl_rule(version: str, v1_sub: int) -> str:
    """A power levels sub-rule number, given by its v1-v9 number."""
    v = int(version)
    shift = 0 if v < 10 else 2 if v < 12 else 3
    if v1_sub == 1:  # the `users` check, third from v10
        return f"{rule_after_member(version, 5)}.{1 + (2 if v >= 10 else 0)}"
    return f"{rule_after_member(version, 5)}.{v1_sub + shift}"


def _send_levels(room: RoomBuilder, sender: str, **content: Any):
    return room.build(POWER_LEVELS, sender, content, state_key="")


def _users(room: RoomBuilder, **users: int) -> dict[str, Any]:
    names = {"alice": ALICE, "bob": BOB, "carol": CAROL}
    out = {names[k]: v for k, v in users.items()}
    if not room.room_version.privileged_creators:
        out[CREATOR] = 100
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "users",
    [["not", "an", "object"], "x", {"alice": 50}, {"@alice": 50}, {"@alice:bad server": 1}],
)
def test_invalid_users_rejected(version: str, users: Any, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    rejected(_send_levels(room, CREATOR, users=users), room.state, _pl_rule(version, 1))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value", [None, True, "x", "5.5", [1]])
def test_invalid_user_level_rejected(version: str, value: Any, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users={**_users(room), ALICE: value})
    rejected(event, room.state, _pl_rule(version, 1))


@pytest.mark.parametrize("version", VERSIONS)
def test_stringy_user_level_accepted_until_v9(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users={**_users(room), ALICE: "50"})
    if int(version) < 10:
        allowed(event, room.state)
    else:
        rejected(event, room.state, _pl_rule(version, 1))


@pytest.mark.parametrize("version", VERSIONS)
def test_float_user_level_accepted_until_v5(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users={**_users(room), ALICE: 50.57})
    if int(version) <= 5:
        allowed(event, room.state)
    else:
        rejected(event, room.state, _pl_rule(version, 1))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("key", ["users_default", "events_default", "state_default", "ban",
                                 "redact", "kick", "invite"])
def test_v10_named_levels_must_be_integers(version: str, key: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users=_users(room), **{key: "50"})
    if int(version) < 10:
        allowed(event, room.state)
    else:
        rejected(event, room.state, f"{rule_after_member(version, 5)}.1")
        null = _send_levels(room, CREATOR, users=_users(room), **{key: None})
        rejected(null, room.state, f"{rule_after_member(version, 5)}.1")


@pytest.mark.parametrize("version", versions_from(10))
@pytest.mark.parametrize("key", ["events", "notifications"])
@pytest.mark.parametrize("value", [{"x": "50"}, [], 5, {"x": True}, {"x": None}])
def test_v10_events_and_notifications_must_be_integer_maps(
    version: str, key: str, value: Any, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users=_users(room), **{key: value})
    rejected(event, room.state, f"{rule_after_member(version, 5)}.2")


@pytest.mark.parametrize("version", versions_from(1, 9))
@pytest.mark.parametrize("key", ["events", "notifications"])
@pytest.mark.parametrize("value", [[], 5, {"x": True}, {"x": "5.5"}])
def test_malformed_maps_before_v10_fail_when_compared(
    version: str, key: str, value: Any, signing_key: SigningKey
) -> None:
    """v1-v9 only validate `users` up front; other values fail once the change rules read
    them. v1-v5 never read `notifications`."""
    room = RoomBuilder.standard(version, signing_key)
    event = _send_levels(room, CREATOR, users=_users(room), **{key: value})
    if key == "notifications" and int(version) <= 5:
        allowed(event, room.state)
    else:
        with pytest.raises(AuthError, match="m.room.power_levels has"):
            allowed(event, room.state)


@pytest.mark.parametrize("version", versions_from(1, 9))
def test_stringy_events_map_before_v10(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    allowed(_send_levels(room, CREATOR, users=_users(room), events={"x": " 50"}), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_first_power_levels_event_allowed(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    room.join(CREATOR)
    # Anything well-formed goes when there is no previous power levels event.
    event = _send_levels(room, CREATOR, users={ALICE: 9000}, ban=9000, events={"x": 9000})
    allowed(event, room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_named_level_changes(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 60}, kick=70, ban=50)
    room.join(ALICE)
    base = {"users": _users(room, alice=60), "kick": 70, "ban": 50}
    # Within the sender's level.
    allowed(_send_levels(room, ALICE, **{**base, "ban": 60}), room.state)
    allowed(_send_levels(room, ALICE, **{**base, "redact": 60}), room.state)
    # The current value is above the sender's level.
    rejected(_send_levels(room, ALICE, **{**base, "kick": 60}), room.state,
             f"{_pl_rule(version, 3)}.1")
    rejected(_send_levels(room, ALICE, **{k: v for k, v in base.items() if k != "kick"}),
             room.state, f"{_pl_rule(version, 3)}.1")
    # The new value is above the sender's level.
    rejected(_send_levels(room, ALICE, **{**base, "ban": 61}), room.state,
             f"{_pl_rule(version, 3)}.2")
    rejected(_send_levels(room, ALICE, **{**base, "users_default": 61}), room.state,
             f"{_pl_rule(version, 3)}.2")


@pytest.mark.parametrize("version", versions_from(1, 9))
def test_stringy_equal_value_is_no_change(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 60}, kick=70)
    room.join(ALICE)
    allowed(_send_levels(room, ALICE, users=_users(room, alice=60), kick="070"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_events_changes(version: str, signing_key: SigningKey) -> None:
    events = {"m.room.topic": 70, "m.room.name": 50}
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 60}, events=events)
    room.join(ALICE)
    users = _users(room, alice=60)
    allowed(_send_levels(room, ALICE, users=users, events={**events, "m.room.name": 60}),
            room.state)
    allowed(_send_levels(room, ALICE, users=users, events={**events, "x": 60}), room.state)
    # Changing or removing an entry above the sender.
    rejected(_send_levels(room, ALICE, users=users, events={**events, "m.room.topic": 10}),
             room.state, f"{_pl_rule(version, 4)}.1")
    rejected(_send_levels(room, ALICE, users=users, events={"m.room.name": 50}),
             room.state, f"{_pl_rule(version, 4)}.1")
    # Adding or raising an entry above the sender.
    rejected(_send_levels(room, ALICE, users=users, events={**events, "x": 61}),
             room.state, f"{_pl_rule(version, 5)}.1")
    rejected(_send_levels(room, ALICE, users=users, events={**events, "m.room.name": 61}),
             room.state, f"{_pl_rule(version, 5)}.1")


@pytest.mark.parametrize("version", VERSIONS)
def test_notifications_limited_from_v6(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 60},
                                notifications={"room": 80})
    room.join(ALICE)
    users = _users(room, alice=60)
    lowered = _send_levels(room, ALICE, users=users, notifications={"room": 10})
    added = _send_levels(room, ALICE, users=users, notifications={"room": 80, "x": 70})
    if int(version) >= 6:
        rejected(lowered, room.state, f"{_pl_rule(version, 4)}.1")
        rejected(added, room.state, f"{_pl_rule(version, 5)}.1")
        allowed(_send_levels(room, ALICE, users=users, notifications={"room": 80, "x": 60}),
                room.state)
    else:
        allowed(lowered, room.state)
        allowed(added, room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_users_changes(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 60, BOB: 60, CAROL: 59})
    room.join(ALICE)
    current = _users(room, alice=60, bob=60, carol=59)
    removed_rule = f"{_pl_rule(version, 6)}.1"
    added_rule = f"{_pl_rule(version, 7)}.1"
    # Demoting or removing a user below the sender.
    allowed(_send_levels(room, ALICE, users={**current, CAROL: 0}), room.state)
    allowed(_send_levels(room, ALICE, users={k: v for k, v in current.items() if k != CAROL}),
            room.state)
    # Demoting oneself.
    allowed(_send_levels(room, ALICE, users={**current, ALICE: 10}), room.state)
    # Promoting up to one's own level, not above.
    allowed(_send_levels(room, ALICE, users={**current, CAROL: 60, "@new:d.test": 60}),
            room.state)
    rejected(_send_levels(room, ALICE, users={**current, CAROL: 61}), room.state, added_rule)
    rejected(_send_levels(room, ALICE, users={**current, "@new:d.test": 61}), room.state,
             added_rule)
    rejected(_send_levels(room, ALICE, users={**current, ALICE: 61}), room.state, added_rule)
    # A peer at the sender's level cannot be changed or removed.
    rejected(_send_levels(room, ALICE, users={**current, BOB: 10}), room.state, removed_rule)
    rejected(_send_levels(room, ALICE, users={k: v for k, v in current.items() if k != BOB}),
             room.state, removed_rule)


@pytest.mark.parametrize("version", VERSIONS)
def test_users_default_counts_for_unlisted_sender(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users_default=60, state_default=50)
    room.join(ALICE)
    users = _users(room)
    allowed(_send_levels(room, ALICE, users={**users, BOB: 60}, users_default=60,
                         state_default=50), room.state)
    rejected(_send_levels(room, ALICE, users={**users, BOB: 61}, users_default=60,
                          state_default=50), room.state, f"{_pl_rule(version, 7)}.1")


def test_v12_creators_may_not_be_listed(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key, extra_create_content={"additional_creators": [ALICE]})
    room.join(CREATOR)
    rule = f"{rule_after_member('12', 5)}.4"
    # Even the first power levels event.
    rejected(_send_levels(room, CREATOR, users={CREATOR: 100}), room.state, rule)
    rejected(_send_levels(room, CREATOR, users={ALICE: 100}), room.state, rule)
    allowed(_send_levels(room, CREATOR, users={BOB: 100}), room.state)
    room.send(POWER_LEVELS, CREATOR, {"users": {BOB: 100}}, state_key="")
    rejected(_send_levels(room, CREATOR, users={BOB: 100, CREATOR: 1}), room.state, rule)


@pytest.mark.parametrize("version", versions_from(1, 11))
def test_creator_may_be_listed_before_v12(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    allowed(_send_levels(room, CREATOR, users={CREATOR: 100, ALICE: 100}), room.state)


def test_v12_creator_may_set_any_level(signing_key: SigningKey) -> None:
    room = RoomBuilder.standard("12", signing_key, users={BOB: 2**53 - 1}, ban=2**53 - 1)
    event = _send_levels(room, CREATOR, users={BOB: 0, ALICE: 2**53 - 1}, ban=0, kick=2**53 - 1)
    allowed(event, room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_power_levels_with_user_state_key_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build(POWER_LEVELS, CREATOR, {"users": _users(room)}, state_key=ALICE)
    rejected(event, room.state, rule_after_member(version, 4))
