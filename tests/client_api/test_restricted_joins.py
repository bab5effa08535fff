"""Joins to restricted and knock_restricted rooms (C-S API "Restricted rooms"; auth rules v8+
join_authorised_via_users_server) over a real server on both databases: the server checks the
allow list and names a local member who may invite; clients can never name one themselves."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

JOIN_BY_ID = ("client-server/joining.yaml", "/rooms/{roomId}/join", "post")
JOIN = ("client-server/joining.yaml", "/join/{roomIdOrAlias}", "post")
KNOCK = ("client-server/knocking.yaml", "/knock/{roomIdOrAlias}", "post")
AUTHORISER = "join_authorised_via_users_server"


async def join(rest: RestHelper, user: User, room_id: str, expect: int = 200) -> Any:
    body = await rest.request("POST", f"{V3}/join/{quote(room_id)}", user, {}, expect)
    assert_response_valid(*JOIN, expect, body)
    return body


async def member(rest: RestHelper, viewer: User, room_id: str, user_id: str) -> Any:
    events = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/state", viewer)
    found = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == user_id]
    return found[0] if found else None


async def restricted_room(
    rest: RestHelper,
    owner: User,
    allowed: list[str],
    join_rule: str = "restricted",
    room_version: str = "12",
    **body: Any,
) -> str:
    allow = [{"type": "m.room_membership", "room_id": r} for r in allowed]
    return await rest.create_room(
        owner,
        room_version=room_version,
        initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": join_rule, "allow": allow}}
        ],
        **body,
    )


@pytest.mark.parametrize("room_version", ["8", "10", "12"])
async def test_join_allowed_through_an_allowed_room(rest: RestHelper, room_version: str) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    space = await rest.create_room(alice, preset="public_chat")
    other = await rest.create_room(alice, preset="public_chat")
    await rest.join(carol, space)
    # bob may invite too, but alice is the most powerful member to vouch for carol. (v12
    # creators have unlimited power and may not be listed in `users`.)
    users = {bob.user_id: 50} if room_version == "12" else {alice.user_id: 100, bob.user_id: 50}
    room_id = await restricted_room(
        rest,
        alice,
        ["!unknown:elsewhere.example", space],
        room_version=room_version,
        invite=[bob.user_id],
        power_level_content_override={"invite": 50, "users": users},
    )
    await rest.join(bob, room_id)
    assert AUTHORISER not in (await member(rest, alice, room_id, bob.user_id))["content"]

    body = await rest.request("POST", f"{V3}/rooms/{quote(room_id)}/join", carol, {})
    assert_response_valid(*JOIN_BY_ID, 200, body)
    assert body == {"room_id": room_id}
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["sender"] == carol.user_id
    assert event["content"]["membership"] == "join"
    assert event["content"][AUTHORISER] == alice.user_id
    # Leaving the allowed room later does not matter; a repeated join needs no authoriser.
    await rest.leave(carol, space)
    await join(rest, carol, room_id)
    assert (await member(rest, alice, room_id, carol.user_id))["event_id"] == event["event_id"]
    # dave is only in a room the allow list does not name.
    dave = await rest.register("dave")
    await rest.join(dave, other)
    refused = await join(rest, dave, room_id, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"


async def test_authoriser_is_a_joined_member_with_invite_power(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    space = await rest.create_room(alice, preset="public_chat")
    await rest.join(carol, space)
    # v10: alice (100) is no creator with unlimited power, so she can step down to 0.
    room_id = await restricted_room(
        rest,
        alice,
        [space],
        room_version="10",
        invite=[bob.user_id],
        power_level_content_override={"invite": 50, "users": {alice.user_id: 100}},
    )
    await rest.join(bob, room_id)
    await rest.set_state(
        alice,
        room_id,
        "m.room.power_levels",
        {"invite": 50, "users": {alice.user_id: 0, bob.user_id: 50}},
    )
    await join(rest, carol, room_id)
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["content"][AUTHORISER] == bob.user_id

    # With the only member who may invite gone, nobody here can vouch for a join.
    await rest.leave(carol, room_id)
    await rest.leave(bob, room_id)
    refused = await join(rest, carol, room_id, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"
    assert (await member(rest, alice, room_id, carol.user_id))["content"]["membership"] == "leave"


async def test_join_forbidden_outside_the_allowed_rooms(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    eve = await rest.register("eve")
    space = await rest.create_room(alice, preset="public_chat")
    room_id = await restricted_room(rest, alice, [space])
    nothing_allowed = await restricted_room(rest, alice, [])
    for room in (room_id, nothing_allowed):
        refused = await join(rest, eve, room, expect=403)
        assert refused["errcode"] == "M_FORBIDDEN"
        assert await member(rest, alice, room, eve.user_id) is None
    # An invitee joins without meeting any condition, and without an authoriser.
    await rest.invite(alice, room_id, eve.user_id)
    await join(rest, eve, room_id)
    event = await member(rest, alice, room_id, eve.user_id)
    assert event["content"]["membership"] == "join"
    assert AUTHORISER not in event["content"]


async def test_restricted_rule_unknown_before_v8(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    space = await rest.create_room(alice, preset="public_chat")
    await rest.join(carol, space)
    room_id = await restricted_room(rest, alice, [space], room_version="7")
    refused = await join(rest, carol, room_id, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"


async def test_clients_cannot_set_the_authoriser(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    eve = await rest.register("eve")
    space = await rest.create_room(alice, preset="public_chat")
    await rest.join(carol, space)
    room_id = await restricted_room(rest, alice, [space])
    path = f"{V3}/rooms/{quote(room_id)}/state/m.room.member/"
    # Naming a member who may invite does not let eve in.
    forged = {"membership": "join", AUTHORISER: alice.user_id}
    refused = await rest.request("PUT", path + quote(eve.user_id), eve, forged, 403)
    assert refused["errcode"] == "M_FORBIDDEN"
    assert await member(rest, alice, room_id, eve.user_id) is None
    # carol may join, but the server names the authoriser, not carol.
    await rest.request(
        "PUT", path + quote(carol.user_id), carol, {"membership": "join", AUTHORISER: eve.user_id}
    )
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["content"][AUTHORISER] == alice.user_id
    # A member's later join (a profile change) carries none, whatever the client sends.
    changed = {"membership": "join", "displayname": "Caz", AUTHORISER: alice.user_id}
    await rest.request("PUT", path + quote(carol.user_id), carol, changed)
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["content"]["displayname"] == "Caz"
    assert AUTHORISER not in event["content"]
    # Nor can any other membership carry one.
    kicked = {"membership": "leave", AUTHORISER: alice.user_id}
    await rest.request("PUT", path + quote(carol.user_id), alice, kicked)
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["content"] == {"membership": "leave"}


async def test_knock_restricted_allows_joining_and_knocking(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    eve = await rest.register("eve")
    space = await rest.create_room(alice, preset="public_chat")
    await rest.join(carol, space)
    room_id = await restricted_room(rest, alice, [space], join_rule="knock_restricted")
    # A member of the allowed room joins straight away.
    await join(rest, carol, room_id)
    event = await member(rest, alice, room_id, carol.user_id)
    assert event["content"][AUTHORISER] == alice.user_id
    # Anyone else may knock instead, and join once invited.
    assert (await join(rest, eve, room_id, expect=403))["errcode"] == "M_FORBIDDEN"
    knocked = await rest.request("POST", f"{V3}/knock/{quote(room_id)}", eve, {})
    assert_response_valid(*KNOCK, 200, knocked)
    assert (await member(rest, alice, room_id, eve.user_id))["content"]["membership"] == "knock"
    await rest.invite(alice, room_id, eve.user_id)
    await join(rest, eve, room_id)
    event = await member(rest, alice, room_id, eve.user_id)
    assert event["content"]["membership"] == "join"
    assert AUTHORISER not in event["content"]
