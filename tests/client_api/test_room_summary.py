"""RoomSummaries: the batched room summaries behind the room directory and space hierarchy,
over a real server on both databases."""

from __future__ import annotations

from homeserver.core import Core
from tests.helpers.rest import RestHelper


async def test_summaries_of_several_rooms(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    public = await rest.create_room(
        alice, preset="public_chat", name="The Pub", topic="Happy hour", room_alias_name="pub"
    )
    space = await rest.create_room(
        alice,
        preset="private_chat",
        creation_content={"type": "m.space"},
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )
    restricted = await rest.create_room(
        alice,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}, {"type": "x"}],
                },
            }
        ],
    )
    await rest.join(bob, public)

    summaries = await client_core.room_api.summaries.summaries(
        [public, space, restricted, "!unknown:test.local"]
    )

    assert set(summaries) == {public, space, restricted}
    assert summaries[public].chunk() == {
        "room_id": public,
        "num_joined_members": 2,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        "name": "The Pub",
        "topic": "Happy hour",
        "canonical_alias": "#pub:test.local",
    }
    assert summaries[space].chunk() == {
        "room_id": space,
        "num_joined_members": 1,
        "world_readable": True,
        # private_chat lets guests join.
        "guest_can_join": True,
        "join_rule": "invite",
        "room_type": "m.space",
    }
    assert summaries[restricted].join_rule == "restricted"
    assert summaries[restricted].allowed_room_ids == (space,)
    assert summaries[restricted].room_version == "10"
    assert await client_core.room_api.summaries.summaries([]) == {}
