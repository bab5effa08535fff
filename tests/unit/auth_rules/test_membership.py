"""The m.room.member rule: join, invite, leave, ban, knock and unknown memberships."""
from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from homeserver.events.event import JOIN_RULES, MEMBER
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import (
    ALICE,
    BOB,
    CAROL,
    MEMBER_RULE,
    VERSIONS,
    allowed,
    rejected,
    versions_from,
)


def _sub(version: str, membership: str) -> str:
    """The number of the rule for `membership` in `version` (v8 inserts x.2 before join)."""
    join = 3 if int(version) >= 8 else 2
    offset = {"join": 0, "invite": 1, "leave": 2, "ban": 3, "knock": 4}[membership]
    return f"{MEMBER_RULE[version]}.{join + offset}"


def _unknown(version: str) -> str:
    join = 3 if int(version) >= 8 else 2
    return f"{MEMBER_RULE[version]}.{join + (5 if int(version) >= 7 else 4)}"


def _member(room: RoomBuilder, sender: str, target: str, membership: str, **content: Any):
    return room.build(MEMBER, sender, {"membership": membership, **content}, state_key=target)


# Rule x.1 and unknown memberships ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_member_without_membership_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build(MEMBER, ALICE, {"displayname": "A"}, state_key=ALICE)
    rejected(event, room.state, f"{MEMBER_RULE[version]}.1")


@pytest.mark.parametrize("version", VERSIONS)
def test_member_without_state_key_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build(MEMBER, ALICE, {"membership": "join"})
    rejected(event, room.state, f"{MEMBER_RULE[version]}.1")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("membership", ["foo", 5, None])
def test_unknown_membership_rejected(
    version: str, membership: object, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build(MEMBER, CREATOR, {"membership": membership}, state_key=CREATOR)
    rejected(event, room.state, _unknown(version))


# Join ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_creator_joins_after_create(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    allowed(_member(room, CREATOR, CREATOR, "join"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_other_user_cannot_join_after_create(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    # No join rules yet: the room reads as invite-only.
    rejected(_member(room, ALICE, ALICE, "join"), room.state, f"{_sub(version, 'join')}.4")


@pytest.mark.parametrize("version", VERSIONS)
def test_creator_join_needs_create_as_only_prev_event(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.new(version, signing_key)
    other = RoomBuilder.new(version, signing_key)
    event = room.build(
        MEMBER, CREATOR, {"membership": "join"}, state_key=CREATOR,
        prev_events=[room.create, other.create],
    )
    rejected(event, room.state, f"{_sub(version, 'join')}.4")


@pytest.mark.parametrize("version", VERSIONS)
def test_creator_rejoin_after_other_event_needs_join_rules(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.new(version, signing_key)
    room.join(CREATOR)
    room.member(CREATOR, CREATOR, "leave")
    # A single prev event, but not the create event.
    rejected(_member(room, CREATOR, CREATOR, "join"), room.state, f"{_sub(version, 'join')}.4")


@pytest.mark.parametrize("version", VERSIONS)
def test_creator_is_content_creator_before_v11(version: str, signing_key: SigningKey) -> None:
    """v1-v10 read the creator from content.creator; v11+ from the create event's sender."""
    room = RoomBuilder.new(version, signing_key, extra_create_content={"creator": ALICE})
    by_alice = _member(room, ALICE, ALICE, "join")
    by_sender = _member(room, CREATOR, CREATOR, "join")
    if int(version) < 11:
        allowed(by_alice, room.state)
        rejected(by_sender, room.state, f"{_sub(version, 'join')}.4")
    else:
        rejected(by_alice, room.state, f"{_sub(version, 'join')}.4")
        allowed(by_sender, room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_join_for_another_user_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    rejected(_member(room, CREATOR, ALICE, "join"), room.state, f"{_sub(version, 'join')}.2")


@pytest.mark.parametrize("version", VERSIONS)
def test_banned_user_cannot_join(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.member(CREATOR, BOB, "ban")
    rejected(_member(room, BOB, BOB, "join"), room.state, f"{_sub(version, 'join')}.3")


@pytest.mark.parametrize("version", VERSIONS)
def test_public_room_join(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="public")
    allowed(_member(room, BOB, BOB, "join"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_invite_only_room(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="invite")
    rejected(_member(room, BOB, BOB, "join"), room.state, f"{_sub(version, 'join')}.4")
    room.member(CREATOR, BOB, "invite")
    allowed(_member(room, BOB, BOB, "join"), room.state)
    room.join(BOB)
    # A joined user may send another join (a profile change).
    allowed(_member(room, BOB, BOB, "join", displayname="Bob"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_no_join_rules_event_reads_as_invite(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key)
    room.join(CREATOR)
    rejected(_member(room, BOB, BOB, "join"), room.state, f"{_sub(version, 'join')}.4")
    room.member(CREATOR, BOB, "invite")
    allowed(_member(room, BOB, BOB, "join"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_knock_room_join_needs_invite_from_v7(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock")
    room.member(CREATOR, BOB, "invite")
    event = _member(room, BOB, BOB, "join")
    if int(version) >= 7:
        allowed(event, room.state)
        rejected(_member(room, CAROL, CAROL, "join"), room.state, f"{_sub(version, 'join')}.4")
    else:
        # v1-v6 do not know the knock join rule: "Otherwise, reject".
        rejected(event, room.state, f"{_sub(version, 'join')}.6")


@pytest.mark.parametrize("join_rule", ["private", "", 5, None])
@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_join_rule_rejects_joins(
    version: str, join_rule: object, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.send(JOIN_RULES, CREATOR, {"join_rule": join_rule}, state_key="")
    room.member(CREATOR, BOB, "invite")
    otherwise = 7 if int(version) >= 8 else 6
    rejected(_member(room, BOB, BOB, "join"), room.state, f"{_sub(version, 'join')}.{otherwise}")


def _restricted_room(version: str, key: SigningKey, join_rule: str, **levels: Any) -> RoomBuilder:
    room = RoomBuilder.standard(version, key, join_rule=join_rule, users={ALICE: 50}, **levels)
    room.send(
        JOIN_RULES, CREATOR,
        {"join_rule": join_rule, "allow": [{"type": "m.room_membership", "room_id": "!x:a.test"}]},
        state_key="",
    )
    room.join(ALICE)
    return room


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize("version", VERSIONS)
def test_restricted_join_with_authoriser(
    version: str, join_rule: str, signing_key: SigningKey
) -> None:
    room = _restricted_room(version, signing_key, join_rule)
    event = _member(room, BOB, BOB, "join", join_authorised_via_users_server=ALICE)
    supported = int(version) >= (8 if join_rule == "restricted" else 10)
    if supported:
        allowed(event, room.state)
    else:
        otherwise = 7 if int(version) >= 8 else 6
        rejected(event, room.state, f"{_sub(version, 'join')}.{otherwise}")


@pytest.mark.parametrize("join_rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize("version", versions_from(10))
def test_restricted_join_authoriser_checks(
    version: str, join_rule: str, signing_key: SigningKey
) -> None:
    room = _restricted_room(version, signing_key, join_rule, invite=50)
    rule = f"{_sub(version, 'join')}.5.2"
    # No authoriser.
    rejected(_member(room, BOB, BOB, "join"), room.state, rule)
    rejected(_member(room, BOB, BOB, "join", join_authorised_via_users_server=5), room.state, rule)
    # The authoriser is not joined.
    rejected(
        _member(room, BOB, BOB, "join", join_authorised_via_users_server=CAROL), room.state, rule
    )
    # The authoriser is joined but below the invite level.
    room.join(CAROL)
    rejected(
        _member(room, BOB, BOB, "join", join_authorised_via_users_server=CAROL), room.state, rule
    )
    # Joined and at the invite level.
    allowed(_member(room, BOB, BOB, "join", join_authorised_via_users_server=ALICE), room.state)


@pytest.mark.parametrize("version", versions_from(8))
def test_restricted_join_by_invited_user_needs_no_authoriser(
    version: str, signing_key: SigningKey
) -> None:
    room = _restricted_room(version, signing_key, "restricted")
    room.member(ALICE, BOB, "invite")
    allowed(_member(room, BOB, BOB, "join"), room.state)


def test_v12_creator_can_authorise_restricted_join(signing_key: SigningKey) -> None:
    room = _restricted_room("12", signing_key, "restricted", invite=100)
    allowed(_member(room, BOB, BOB, "join", join_authorised_via_users_server=CREATOR), room.state)
    rule = f"{_sub('12', 'join')}.5.2"
    rejected(_member(room, BOB, BOB, "join", join_authorised_via_users_server=ALICE), room.state,
             rule)


# Invite ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_invite_by_joined_member(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="invite")
    allowed(_member(room, CREATOR, BOB, "invite"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_invite_by_non_member_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    rejected(_member(room, ALICE, BOB, "invite"), room.state, f"{_sub(version, 'invite')}.2")
    room.member(CREATOR, ALICE, "invite")
    rejected(_member(room, ALICE, BOB, "invite"), room.state, f"{_sub(version, 'invite')}.2")


@pytest.mark.parametrize("target_membership", ["join", "ban"])
@pytest.mark.parametrize("version", VERSIONS)
def test_invite_of_joined_or_banned_user_rejected(
    version: str, target_membership: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    if target_membership == "join":
        room.join(BOB)
    else:
        room.member(CREATOR, BOB, "ban")
    rejected(_member(room, CREATOR, BOB, "invite"), room.state, f"{_sub(version, 'invite')}.3")


@pytest.mark.parametrize("target_membership", ["invite", "leave", "knock"])
def test_invite_of_invited_left_or_knocking_user_allowed(
    target_membership: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard("10", signing_key, join_rule="knock")
    if target_membership == "invite":
        room.member(CREATOR, BOB, "invite")
    elif target_membership == "leave":
        room.join(BOB)
        room.member(BOB, BOB, "leave")
    else:
        room.member(BOB, BOB, "knock")
    allowed(_member(room, CREATOR, BOB, "invite"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_invite_needs_invite_level(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 10}, invite=20)
    room.join(ALICE)
    rejected(_member(room, ALICE, BOB, "invite"), room.state, f"{_sub(version, 'invite')}.5")
    room.send("m.room.power_levels", CREATOR, _levels(room, {ALICE: 20}, invite=20), state_key="")
    allowed(_member(room, ALICE, BOB, "invite"), room.state)


def _levels(room: RoomBuilder, users: dict[str, int], **rest: Any) -> dict[str, Any]:
    if not room.room_version.privileged_creators:
        users = {CREATOR: 100, **users}
    return {"users": users, **rest}


@pytest.mark.parametrize("version", VERSIONS)
def test_invite_level_defaults_to_zero(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    allowed(_member(room, ALICE, BOB, "invite"), room.state)


# Leave -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_leave_from_join_or_invite(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    allowed(_member(room, ALICE, ALICE, "leave"), room.state)
    room.member(CREATOR, BOB, "invite")
    allowed(_member(room, BOB, BOB, "leave"), room.state)  # rejecting the invite


@pytest.mark.parametrize("version", VERSIONS)
def test_leave_from_knock_allowed_from_v7(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    # Knocks are state in every version's DAG; only v7+ accept them, v1-v6 never see one
    # accepted, but the leave rule still reads the state it is given.
    room.member(BOB, BOB, "knock")
    event = _member(room, BOB, BOB, "leave")
    if int(version) >= 7:
        allowed(event, room.state)
    else:
        rejected(event, room.state, f"{_sub(version, 'leave')}.1")


@pytest.mark.parametrize("current", [None, "leave", "ban"])
@pytest.mark.parametrize("version", VERSIONS)
def test_leave_from_other_membership_rejected(
    version: str, current: str | None, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    if current == "leave":
        room.join(BOB)
        room.member(BOB, BOB, "leave")
    elif current == "ban":
        room.member(CREATOR, BOB, "ban")
    rejected(_member(room, BOB, BOB, "leave"), room.state, f"{_sub(version, 'leave')}.1")


@pytest.mark.parametrize("version", VERSIONS)
def test_kick_by_non_member_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 100})
    room.join(BOB)
    rejected(_member(room, ALICE, BOB, "leave"), room.state, f"{_sub(version, 'leave')}.2")


@pytest.mark.parametrize("version", VERSIONS)
def test_kick_needs_kick_level_and_more_power(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 50, BOB: 50, CAROL: 49})
    for user in (ALICE, BOB, CAROL):
        room.join(user)
    rule = f"{_sub(version, 'leave')}.5"
    allowed(_member(room, ALICE, CAROL, "leave"), room.state)
    rejected(_member(room, ALICE, BOB, "leave"), room.state, rule)  # equal power
    rejected(_member(room, CAROL, ALICE, "leave"), room.state, rule)  # below the kick level
    rejected(_member(room, ALICE, CREATOR, "leave"), room.state, rule)
    allowed(_member(room, CREATOR, ALICE, "leave"), room.state)
    # Kicking a user who is not in the room only needs the levels.
    allowed(_member(room, ALICE, "@nobody:z.test", "leave"), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_kick_and_ban_levels_default_to_50(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 49, BOB: 50})
    for user in (ALICE, BOB, CAROL):
        room.join(user)
    for membership in ("leave", "ban"):
        rejected(_member(room, ALICE, CAROL, membership), room.state,
                 f"{_sub(version, membership)}.{5 if membership == 'leave' else 3}")
        allowed(_member(room, BOB, CAROL, membership), room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_unban_needs_ban_and_kick_levels(version: str, signing_key: SigningKey) -> None:
    users = {ALICE: 60, BOB: 60}
    room = RoomBuilder.standard(version, signing_key, users=users, kick=70, ban=50)
    room.join(ALICE)
    room.join(BOB)
    room.member(CREATOR, CAROL, "ban")
    # ALICE has the ban level but not the kick level.
    rejected(_member(room, ALICE, CAROL, "leave"), room.state, f"{_sub(version, 'leave')}.5")
    room.send("m.room.power_levels", CREATOR, _levels(room, users, kick=50, ban=70), state_key="")
    # Now the kick level but not the ban level.
    rejected(_member(room, ALICE, CAROL, "leave"), room.state, f"{_sub(version, 'leave')}.3")
    room.send("m.room.power_levels", CREATOR, _levels(room, users, kick=60, ban=60), state_key="")
    allowed(_member(room, ALICE, CAROL, "leave"), room.state)


# Ban -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_ban(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 50, BOB: 50, CAROL: 10})
    for user in (ALICE, BOB, CAROL):
        room.join(user)
    rule = f"{_sub(version, 'ban')}.3"
    allowed(_member(room, ALICE, CAROL, "ban"), room.state)
    allowed(_member(room, ALICE, "@stranger:z.test", "ban"), room.state)
    rejected(_member(room, ALICE, BOB, "ban"), room.state, rule)  # equal power
    rejected(_member(room, CAROL, "@stranger:z.test", "ban"), room.state, rule)  # below ban
    rejected(_member(room, ALICE, CREATOR, "ban"), room.state, rule)


@pytest.mark.parametrize("version", VERSIONS)
def test_ban_by_non_member_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 100})
    rejected(_member(room, ALICE, BOB, "ban"), room.state, f"{_sub(version, 'ban')}.1")


def test_v12_creators_cannot_be_kicked_or_banned(signing_key: SigningKey) -> None:
    room = RoomBuilder.new("12", signing_key, extra_create_content={"additional_creators": [ALICE]})
    room.join(CREATOR)
    room.send("m.room.power_levels", CREATOR, {"users": {BOB: 9000}}, state_key="")
    room.send(JOIN_RULES, CREATOR, {"join_rule": "public"}, state_key="")
    room.join(ALICE)
    room.join(BOB)
    for membership, sub in (("ban", "ban.3"), ("leave", "leave.5")):
        kind, _, n = sub.partition(".")
        rule = f"{_sub('12', kind)}.{n}"
        rejected(_member(room, BOB, CREATOR, membership), room.state, rule)
        rejected(_member(room, BOB, ALICE, membership), room.state, rule)
        # Creators are equally (infinitely) powerful, so they cannot remove each other either.
        rejected(_member(room, CREATOR, ALICE, membership), room.state, rule)
        allowed(_member(room, ALICE, BOB, membership), room.state)


# Knock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_knock_allowed_from_v7(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock")
    event = _member(room, BOB, BOB, "knock")
    if int(version) >= 7:
        allowed(event, room.state)
    else:
        rejected(event, room.state, _unknown(version))


@pytest.mark.parametrize("version", VERSIONS)
def test_knock_restricted_allowed_from_v10(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock_restricted")
    event = _member(room, BOB, BOB, "knock")
    if int(version) >= 10:
        allowed(event, room.state)
    elif int(version) >= 7:
        rejected(event, room.state, f"{_sub(version, 'knock')}.1")
    else:
        rejected(event, room.state, _unknown(version))


@pytest.mark.parametrize("join_rule", ["public", "invite", "restricted"])
@pytest.mark.parametrize("version", versions_from(7))
def test_knock_needs_a_knock_join_rule(
    version: str, join_rule: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule=join_rule)
    rejected(_member(room, BOB, BOB, "knock"), room.state, f"{_sub(version, 'knock')}.1")


@pytest.mark.parametrize("version", versions_from(7))
def test_knock_for_another_user_rejected(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock")
    rejected(_member(room, CREATOR, BOB, "knock"), room.state, f"{_sub(version, 'knock')}.2")


@pytest.mark.parametrize("current", ["join", "invite", "ban"])
@pytest.mark.parametrize("version", versions_from(7))
def test_knock_by_joined_invited_or_banned_user_rejected(
    version: str, current: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock")
    if current == "join":
        room.member(CREATOR, BOB, "invite")
        room.join(BOB)
    else:
        room.member(CREATOR, BOB, current)
    rejected(_member(room, BOB, BOB, "knock"), room.state, f"{_sub(version, 'knock')}.4")


@pytest.mark.parametrize("version", versions_from(7))
def test_knock_after_leaving_or_knocking_allowed(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, join_rule="knock")
    room.member(BOB, BOB, "knock")
    allowed(_member(room, BOB, BOB, "knock"), room.state)
    room.member(BOB, BOB, "leave")
    allowed(_member(room, BOB, BOB, "knock"), room.state)


# m.federate applies to membership too ---------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_unfederated_room_rejects_remote_joins(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key, extra_create_content={"m.federate": False})
    room.join(CREATOR)
    room.send(JOIN_RULES, CREATOR, {"join_rule": "public"}, state_key="")
    allowed(_member(room, ALICE, ALICE, "join"), room.state)
    rejected(_member(room, BOB, BOB, "join"), room.state, "4" if version == "12" else "3")

