"""GET /room_summary for a room on another server (C-S API "Room Summaries", MSC3266), between
real servers: A asks B through S-S GET /hierarchy, then shows B's answer under the same rules
as its own rooms."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/room_summary.yaml"
ENDPOINT = "/room_summary/{roomIdOrAlias}"


async def summary(
    server: Homeserver, user: User | None, target: str, expect: int = 200, **params: str
) -> Any:
    body = await server.rest.request(
        "GET",
        f"/_matrix/client/v1/room_summary/{quote(target, safe='')}",
        user,
        expect=expect,
        **params,
    )
    assert_response_valid(API, ENDPOINT, "get", expect, body)
    return body


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_summary_of_a_room_on_another_server(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        bob = await b.rest.register("bob")
        alice = await a.rest.register("alice")
        carol = await a.rest.register("carol")
        room = await b.rest.create_room(
            bob, preset="public_chat", name="Bob's room", topic="On B", room_alias_name="bobs"
        )
        secret = await b.rest.create_room(bob, preset="private_chat", name="Secret")
        # Room version 10: the room ID names B, so no `via` is needed.
        club = await b.rest.create_room(
            bob,
            room_version="10",
            initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
        )
        space = await b.rest.create_room(
            bob, preset="public_chat", creation_content={"type": "m.space"}
        )
        restricted = await b.rest.create_room(
            bob,
            room_version="10",
            name="Space members",
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
        assert not await a.core.storage.rooms.is_server_in_room(room, a.server_name)

        seen = await summary(a, alice, room, via=b.server_name)
        assert seen == {
            "room_id": room,
            "num_joined_members": 1,
            "world_readable": False,
            "guest_can_join": False,
            "join_rule": "public",
            "room_version": "12",
            "name": "Bob's room",
            "topic": "On B",
            "canonical_alias": f"#bobs:{b.server_name}",
            "membership": "leave",
        }
        # The alias's server is asked, by alias; a v12 room ID names no server to ask.
        assert await summary(a, None, f"#bobs:{b.server_name}") == {
            k: v for k, v in seen.items() if k != "membership"
        }
        assert (await summary(a, alice, room, expect=404))["errcode"] == "M_NOT_FOUND"
        assert (await summary(a, None, club))["join_rule"] == "knock"

        # B refuses what A may not see; an unknown room is the same answer.
        for hidden in (secret, f"!unknown:{b.server_name}"):
            refused = await summary(a, alice, hidden, expect=404, via=b.server_name)
            assert refused["errcode"] == "M_NOT_FOUND"

        # Once alice is in the space, B shows A the restricted room; A shows it to alice
        # only, not to carol, who is not in the space.
        await join_via(a, alice, space, b)
        await wait_for_members(a, alice, space, {alice.user_id, bob.user_id})
        allowed = await summary(a, alice, restricted, via=b.server_name)
        assert allowed["allowed_room_ids"] == [space]
        assert (allowed["name"], allowed["membership"]) == ("Space members", "leave")
        await summary(a, carol, restricted, expect=404, via=b.server_name)
        await summary(a, None, restricted, expect=404, via=b.server_name)

        # A room A is in is described from A's own state.
        await join_via(a, alice, room, b)
        await wait_for_members(a, alice, room, {alice.user_id, bob.user_id})
        joined = await summary(a, alice, room)
        assert (joined["membership"], joined["num_joined_members"]) == ("join", 2)
