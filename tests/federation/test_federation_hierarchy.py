"""Space hierarchies across real servers: GET /_matrix/federation/v1/hierarchy answers for
the asking server, and a C-S /hierarchy walk goes through another server for the rooms of a
space that this server is not in."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.transport import RemoteError
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_reads import path, signed_as
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid

CS_API = "client-server/space_hierarchy.yaml"
SS_API = "server-server/space_hierarchy.yaml"


async def new_space(server: Homeserver, user: User, **body: Any) -> str:
    return await server.rest.create_room(
        user, preset="public_chat", creation_content={"type": "m.space"}, **body
    )


async def add_child(
    server: Homeserver, user: User, space: str, child: str, via: str, **content: Any
) -> None:
    await server.rest.set_state(
        user, space, "m.space.child", {"via": [via], **content}, state_key=child
    )


async def space_on_b(b: Homeserver) -> tuple[User, str, str, str]:
    """bob's space on B: a public room (suggested) and a private one, in that order."""
    bob = await b.rest.register("bob")
    space = await new_space(b, bob, name="Bob's space")
    room = await b.rest.create_room(bob, preset="public_chat", name="Bob's room")
    secret = await b.rest.create_room(bob, preset="private_chat", name="Secret")
    await add_child(b, bob, space, room, b.server_name, order="1", suggested=True)
    await add_child(b, bob, space, secret, b.server_name, order="2")
    return bob, space, room, secret


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_walk_reaches_rooms_on_another_server(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        bob, bobs_space, bobs_room, secret = await space_on_b(b)
        alice = await a.rest.register("alice")
        space = await new_space(a, alice, name="Alice's space")
        await add_child(a, alice, space, bobs_space, b.server_name)
        assert not await a.core.storage.rooms.is_server_in_room(bobs_space, a.server_name)

        answer = await a.rest.request(
            "GET", f"/_matrix/client/v1/rooms/{quote(space, safe='')}/hierarchy", alice
        )

        assert_response_valid(CS_API, "/rooms/{roomId}/hierarchy", "get", 200, answer)
        # The private room is B's to refuse: A never shows it.
        assert [r["room_id"] for r in answer["rooms"]] == [space, bobs_space, bobs_room]
        remote_space, remote_room = answer["rooms"][1:]
        assert remote_space["name"] == "Bob's space"
        assert remote_space["room_type"] == "m.space"
        assert [c["state_key"] for c in remote_space["children_state"]] == [bobs_room, secret]
        assert remote_room["name"] == "Bob's room"
        assert remote_room["num_joined_members"] == 1

        suggested = await a.rest.request(
            "GET",
            f"/_matrix/client/v1/rooms/{quote(space, safe='')}/hierarchy",
            alice,
            suggested_only="true",
        )
        # alice's link to bob's space is not suggested, so the walk stops at her space.
        assert [r["room_id"] for r in suggested["rooms"]] == [space]

        # Once alice is in the private room, B shows it to A, and A describes it itself.
        await b.rest.invite(bob, secret, alice.user_id)
        await join_via(a, alice, secret, b)
        await wait_for_members(a, alice, secret, {alice.user_id, bob.user_id})
        async with signed_as(a) as fed:
            answer = await fed.request(b.server_name, "GET", path("hierarchy", bobs_space))
        assert [c["room_id"] for c in answer["children"]] == [bobs_room, secret]
        assert answer["inaccessible_children"] == []
        walk = await a.rest.request(
            "GET", f"/_matrix/client/v1/rooms/{quote(space, safe='')}/hierarchy", alice
        )
        assert [r["room_id"] for r in walk["rooms"]] == [space, bobs_space, bobs_room, secret]
        assert walk["rooms"][3]["num_joined_members"] == 2


async def test_the_federation_endpoint_answers_for_the_asking_server(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2, "sqlite") as (a, b):
        _bob, space, room, secret = await space_on_b(b)
        async with signed_as(a) as fed:
            answer = await fed.request(b.server_name, "GET", path("hierarchy", space))
            assert_response_valid(SS_API, "/hierarchy/{roomId}", "get", 200, answer)
            assert answer["room"]["room_id"] == space
            assert answer["room"]["name"] == "Bob's space"
            assert [c["state_key"] for c in answer["room"]["children_state"]] == [room, secret]
            assert [c["room_id"] for c in answer["children"]] == [room]
            assert answer["inaccessible_children"] == [secret]

            only_suggested = await fed.request(
                b.server_name,
                "GET",
                path("hierarchy", space),
                query={"suggested_only": "true"},
            )
            assert [c["room_id"] for c in only_suggested["children"]] == [room]
            assert only_suggested["inaccessible_children"] == []

            for hidden in (secret, f"!unknown:{b.server_name}"):
                with pytest.raises(RemoteError) as refused:
                    await fed.request(b.server_name, "GET", path("hierarchy", hidden))
                assert (refused.value.status, refused.value.errcode) == (404, "M_NOT_FOUND")
