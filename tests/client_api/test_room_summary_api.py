"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (C-S API "Room Summaries", MSC3266) on
one server, both databases: what members, invitees, knockers, outsiders and unauthenticated
callers see of public, private, knock, world-readable and restricted rooms, by room ID or
alias, on the stable and the unstable path."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.client_api.test_knock import knock, knock_room
from tests.helpers.rest import RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/room_summary.yaml"
ENDPOINT = "/room_summary/{roomIdOrAlias}"
STABLE = "/_matrix/client/v1/room_summary"
UNSTABLE = "/_matrix/client/unstable/im.nheko.summary/summary"
SERVER = "test.local"
MEGOLM = "m.megolm.v1.aes-sha2"


async def summary(
    rest: RestHelper,
    user: User | None,
    target: str,
    expect: int = 200,
    prefix: str = STABLE,
    **params: str,
) -> Any:
    body = await rest.request(
        "GET", f"{prefix}/{quote(target, safe='')}", user, expect=expect, **params
    )
    if expect in (200, 404):  # the only answers room_summary.yaml describes
        assert_response_valid(API, ENDPOINT, "get", expect, body)
    return body


async def assert_hidden(rest: RestHelper, user: User | None, target: str) -> None:
    """404 M_NOT_FOUND, the answer for a room that does not exist."""
    error = await summary(rest, user, target, expect=404)
    assert error["errcode"] == "M_NOT_FOUND"


async def test_public_room_by_id_and_alias_for_anyone(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(
        alice,
        preset="public_chat",
        name="The Pub",
        topic="Happy hour",
        room_alias_name="pub",
        creation_content={"type": "m.space"},
        initial_state=[
            {"type": "m.room.avatar", "content": {"url": f"mxc://{SERVER}/pub"}},
            {"type": "m.room.encryption", "content": {"algorithm": MEGOLM}},
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
        ],
    )
    expected = {
        "room_id": room,
        "num_joined_members": 1,
        "world_readable": False,
        "guest_can_join": True,
        "join_rule": "public",
        "room_type": "m.space",
        "room_version": "12",
        "encryption": MEGOLM,
        "name": "The Pub",
        "topic": "Happy hour",
        "avatar_url": f"mxc://{SERVER}/pub",
        "canonical_alias": f"#pub:{SERVER}",
    }

    assert await summary(rest, alice, room) == {**expected, "membership": "join"}
    # Someone with no membership: "leave" (MSC3266); no token: no membership at all.
    assert await summary(rest, bob, room) == {**expected, "membership": "leave"}
    assert await summary(rest, None, room) == expected
    assert await summary(rest, None, f"#pub:{SERVER}") == expected
    assert await summary(rest, bob, f"#pub:{SERVER}", prefix=UNSTABLE) == {
        **expected,
        "membership": "leave",
    }
    # `via` is only asked when this server is not in the room.
    assert await summary(rest, None, room, via="elsewhere.example") == expected

    await rest.join(bob, room)
    joined = await summary(rest, bob, room)
    assert (joined["membership"], joined["num_joined_members"]) == ("join", 2)
    # A banned user still sees a room anyone may see, with the ban (the spec's enum has it).
    await rest.request(
        "POST", f"/_matrix/client/v3/rooms/{quote(room)}/ban", alice, {"user_id": bob.user_id}
    )
    assert (await summary(rest, bob, room))["membership"] == "ban"


async def test_private_room_is_seen_by_members_and_invitees_only(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room = await rest.create_room(
        alice, preset="private_chat", name="Secret", room_alias_name="secret"
    )

    # A private room, an unknown room and an unknown alias get the same answer.
    for target in (room, f"#secret:{SERVER}", f"!unknown:{SERVER}", f"#unknown:{SERVER}"):
        await assert_hidden(rest, bob, target)
        await assert_hidden(rest, None, target)

    member = await summary(rest, alice, room)
    assert (member["membership"], member["join_rule"]) == ("join", "invite")
    assert member["name"] == "Secret"
    assert "allowed_room_ids" not in member

    await rest.invite(alice, room, bob.user_id)
    assert (await summary(rest, bob, f"#secret:{SERVER}"))["membership"] == "invite"
    await assert_hidden(rest, carol, room)
    # Once bob declines, the room is closed to him again.
    await rest.leave(bob, room)
    await assert_hidden(rest, bob, room)


async def test_knock_and_world_readable_rooms_are_open_to_unauthenticated_callers(
    rest: RestHelper,
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    club = await knock_room(rest, alice, room_version="10", name="Club")
    readable = await rest.create_room(
        alice,
        preset="private_chat",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )

    anyone = await summary(rest, None, club)
    assert (anyone["join_rule"], anyone["room_version"]) == ("knock", "10")
    assert "membership" not in anyone
    await knock(rest, bob, club)
    assert (await summary(rest, bob, club))["membership"] == "knock"

    peek = await summary(rest, None, readable)
    assert (peek["world_readable"], peek["join_rule"]) == (True, "invite")


async def test_restricted_room_for_members_of_an_allowed_room(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    space = await rest.create_room(
        alice, preset="private_chat", creation_content={"type": "m.space"}
    )
    restricted = await rest.create_room(
        alice,
        room_version="10",
        name="Members of the space",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )

    await assert_hidden(rest, bob, restricted)
    await assert_hidden(rest, None, restricted)
    await rest.invite(alice, space, bob.user_id)
    # Invited to the allowed room is not yet a member of it.
    await assert_hidden(rest, bob, restricted)
    await rest.join(bob, space)

    seen = await summary(rest, bob, restricted)
    assert seen["join_rule"] == "restricted"
    assert seen["allowed_room_ids"] == [space]
    assert seen["membership"] == "leave"
    assert seen["name"] == "Members of the space"
    await assert_hidden(rest, None, restricted)


async def test_bad_input_is_a_matrix_error(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice, preset="public_chat")
    for target in ("not-a-room", "!", "!no-domain", "#no-domain", "@alice:test.local"):
        for user in (alice, None):
            error = await summary(rest, user, target, expect=400)
            assert error["errcode"] == "M_INVALID_PARAM", target
    bad_via = await summary(rest, alice, room, expect=400, via="bad server!")
    assert bad_via["errcode"] == "M_INVALID_PARAM"
    # The token is optional, but one that is sent must be valid.
    response = await rest.client.get(
        f"{STABLE}/{quote(room, safe='')}", headers={"Authorization": "Bearer nonsense"}
    )
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_UNKNOWN_TOKEN"
