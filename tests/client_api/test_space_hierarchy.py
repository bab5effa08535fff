"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy on one server, both databases: the depth
first walk and its order, max_depth, suggested_only, pagination, and which rooms a user may
see."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.helpers.rest import RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/space_hierarchy.yaml"
ENDPOINT = "/rooms/{roomId}/hierarchy"
SERVER = "test.local"


async def hierarchy(
    rest: RestHelper, user: User, room_id: str, expect: int = 200, **params: str
) -> Any:
    body = await rest.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room_id, safe='')}/hierarchy",
        user,
        expect=expect,
        **params,
    )
    assert_response_valid(API, ENDPOINT, "get", expect, body)
    return body


async def new_space(rest: RestHelper, user: User, preset: str = "public_chat", **body: Any) -> str:
    return await rest.create_room(user, preset=preset, creation_content={"type": "m.space"}, **body)


async def add_child(
    rest: RestHelper, user: User, space: str, child: str, via: Any = (SERVER,), **content: Any
) -> None:
    await rest.set_state(
        user, space, "m.space.child", {"via": list(via), **content}, state_key=child
    )


def ids(body: Any) -> list[str]:
    return [room["room_id"] for room in body["rooms"]]


async def test_nested_spaces_walk_depth_first_in_the_spec_order(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    space = await new_space(rest, alice, name="Top", topic="All of it")
    sub = await new_space(rest, alice, name="Sub")
    first = await rest.create_room(alice, preset="public_chat", name="First")
    deep = await rest.create_room(alice, preset="public_chat", name="Deep")
    private = await rest.create_room(alice, preset="private_chat")
    removed = await rest.create_room(alice, preset="public_chat")
    later = await rest.create_room(alice, preset="public_chat")
    # `order` first (by code point), then those without one by timestamp.
    await add_child(rest, alice, space, sub, order="b")
    await add_child(rest, alice, space, first, order="a")
    await add_child(rest, alice, space, private)
    await add_child(rest, alice, space, later, order="\x7f invalid: sorted as if unset")
    await add_child(rest, alice, space, removed, via=[])
    await add_child(rest, alice, sub, deep)
    # A loop back to the top ends the walk there (C-S "Spaces": servers break loops).
    await add_child(rest, alice, sub, space)

    seen_by_alice = await hierarchy(rest, alice, space)
    assert ids(seen_by_alice) == [space, first, sub, deep, private, later]
    assert "next_batch" not in seen_by_alice
    top = seen_by_alice["rooms"][0]
    assert top["name"] == "Top" and top["topic"] == "All of it"
    assert top["room_type"] == "m.space" and top["join_rule"] == "public"
    assert top["num_joined_members"] == 1
    assert [c["state_key"] for c in top["children_state"]] == [first, sub, private, later]
    child = top["children_state"][0]
    assert child["type"] == "m.space.child" and child["sender"] == alice.user_id
    assert child["content"] == {"via": [SERVER], "order": "a"}
    assert isinstance(child["origin_server_ts"], int)
    # Rooms that are not spaces have no children state.
    assert seen_by_alice["rooms"][1]["children_state"] == []

    # bob may join the public rooms, not the private one.
    assert ids(await hierarchy(rest, bob, space)) == [space, first, sub, deep, later]


async def test_max_depth_and_suggested_only(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    space = await new_space(rest, alice)
    sub = await new_space(rest, alice)
    room = await rest.create_room(alice, preset="public_chat")
    deep = await rest.create_room(alice, preset="public_chat")
    await add_child(rest, alice, space, sub, suggested=True, order="1")
    await add_child(rest, alice, space, room, order="2")
    await add_child(rest, alice, sub, deep, suggested=True)

    assert ids(await hierarchy(rest, alice, space, max_depth="0")) == [space]
    assert ids(await hierarchy(rest, alice, space, max_depth="1")) == [space, sub, room]
    assert ids(await hierarchy(rest, alice, space)) == [space, sub, deep, room]
    suggested = await hierarchy(rest, alice, space, suggested_only="true")
    assert ids(suggested) == [space, sub, deep]
    # children_state still lists every child: suggested_only chooses what is walked.
    assert len(suggested["rooms"][0]["children_state"]) == 2

    for bad in ({"max_depth": "-1"}, {"limit": "0"}, {"limit": "x"}, {"suggested_only": "1"}):
        error = await hierarchy(rest, alice, space, expect=400, **bad)
        assert error["errcode"] == "M_INVALID_PARAM"


async def test_pagination_with_limit_and_from(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    space = await new_space(rest, alice)
    rooms = [await rest.create_room(alice, preset="public_chat") for _ in range(4)]
    for n, room in enumerate(rooms):
        await add_child(rest, alice, space, room, order=str(n))

    first = await hierarchy(rest, alice, space, limit="2")
    assert ids(first) == [space, rooms[0]]
    second = await hierarchy(rest, alice, space, limit="2", **{"from": first["next_batch"]})
    assert ids(second) == rooms[1:3]
    # A token can be used again (a retried request), and the limit may change.
    again = await hierarchy(rest, alice, space, limit="5", **{"from": first["next_batch"]})
    assert ids(again) == rooms[1:]
    assert "next_batch" not in again
    last = await hierarchy(rest, alice, space, **{"from": second["next_batch"]})
    assert ids(last) == rooms[3:]
    assert "next_batch" not in last

    token = {"from": first["next_batch"]}
    for changed in ({"max_depth": "1"}, {"suggested_only": "true"}):
        error = await hierarchy(rest, alice, space, expect=400, **token, **changed)
        assert error["errcode"] == "M_INVALID_PARAM"
    unknown = await hierarchy(rest, alice, space, expect=400, **{"from": "nonsense"})
    assert unknown["errcode"] == "M_INVALID_PARAM"
    # The token is alice's walk of this space: not bob's, nor another room's.
    bob = await rest.register("bob")
    await hierarchy(rest, bob, space, expect=400, **token)
    await hierarchy(rest, alice, rooms[0], expect=400, **token)


async def test_inaccessible_children_are_skipped(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    space = await new_space(rest, alice, preset="private_chat")
    invited = await rest.create_room(alice, preset="private_chat")
    private = await rest.create_room(alice, preset="private_chat")
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
    knock = await rest.create_room(
        alice,
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    restricted = await rest.create_room(
        alice,
        room_version="10",
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
    unknown = f"!unknown:{SERVER}"
    for n, child in enumerate([invited, private, readable, knock, restricted, unknown]):
        await add_child(rest, alice, space, child, order=str(n))

    # A private space: only members and invitees see it (403, as for a room that does not
    # exist).
    forbidden = await hierarchy(rest, bob, space, expect=403)
    assert forbidden["errcode"] == "M_FORBIDDEN"
    assert (await hierarchy(rest, bob, unknown, expect=403))["errcode"] == "M_FORBIDDEN"

    await rest.invite(alice, space, bob.user_id)
    await rest.invite(alice, invited, bob.user_id)
    # Invited to the space: not yet a member of it, so the restricted room is closed.
    assert ids(await hierarchy(rest, bob, space)) == [space, invited, readable, knock]
    await rest.join(bob, space)
    seen = await hierarchy(rest, bob, space)
    assert ids(seen) == [space, invited, readable, knock, restricted]
    assert seen["rooms"][4]["allowed_room_ids"] == [space]
    assert seen["rooms"][4]["join_rule"] == "restricted"
    assert seen["rooms"][4]["room_version"] == "10"
    assert ids(await hierarchy(rest, alice, space)) == [
        space,
        invited,
        private,
        readable,
        knock,
        restricted,
    ]
