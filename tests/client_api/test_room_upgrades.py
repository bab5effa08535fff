"""POST /rooms/{roomId}/upgrade (C-S API "Room Upgrades") over a real server on both
databases: the replacement room, its copied state, the moved aliases, the tombstone and the
quieted old room."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = ("client-server/room_upgrades.yaml", "/rooms/{roomId}/upgrade", "post")


async def upgrade(
    rest: RestHelper, user: User, room_id: str, body: dict[str, Any], expect: int = 200
) -> Any:
    answer = await rest.request(
        "POST", f"{V3}/rooms/{quote(room_id)}/upgrade", user, body, expect=expect
    )
    assert_response_valid(*API, expect, answer)
    return answer


async def state(rest: RestHelper, user: User, room_id: str, event_type: str) -> Any:
    return await rest.request(
        "GET", f"{V3}/rooms/{quote(room_id)}/state/{event_type}/", user, format="event"
    )


async def test_upgrade_copies_state_moves_aliases_and_tombstones(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    old = await rest.create_room(
        alice,
        room_version="10",
        preset="public_chat",
        name="Upgrades",
        topic="Going up",
        room_alias_name="up",
        visibility="public",
        initial_state=[
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.server_acl", "content": {"allow": ["*"], "deny": ["evil.example"]}},
            {"type": "m.room.avatar", "content": {"url": "mxc://test.local/avatar"}},
            {"type": "org.example.custom", "content": {"kept": False}},
        ],
    )
    await rest.join(bob, old)

    answer = await upgrade(rest, alice, old, {"new_version": "11"})

    new = answer["replacement_room"]
    assert new != old
    create = await state(rest, alice, new, "m.room.create")
    assert create["sender"] == alice.user_id
    assert create["content"]["room_version"] == "11"
    assert create["content"]["predecessor"]["room_id"] == old
    predecessor = await client_core.storage.events.get_event(
        create["content"]["predecessor"]["event_id"]
    )
    assert predecessor is not None and predecessor.room_id == old
    for event_type, key, value in (
        ("m.room.name", "name", "Upgrades"),
        ("m.room.topic", "topic", "Going up"),
        ("m.room.join_rules", "join_rule", "public"),
        ("m.room.history_visibility", "history_visibility", "shared"),
        ("m.room.guest_access", "guest_access", "forbidden"),
        ("m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"),
        ("m.room.server_acl", "deny", ["evil.example"]),
        ("m.room.avatar", "url", "mxc://test.local/avatar"),
        ("m.room.canonical_alias", "alias", "#up:test.local"),
    ):
        copied = await state(rest, alice, new, event_type)
        assert copied["content"][key] == value, event_type
    await rest.request(
        "GET", f"{V3}/rooms/{quote(new)}/state/org.example.custom/", alice, expect=404
    )
    levels = (await state(rest, alice, new, "m.room.power_levels"))["content"]
    assert levels["users"] == {alice.user_id: 100}
    assert levels["events_default"] == 0  # the old room's, before it was quieted
    members = await client_core.storage.rooms.get_users_in_room(new, "join")
    assert members == [alice.user_id]  # nobody else is moved

    # The alias, the canonical alias and the directory listing moved.
    resolved = await rest.request("GET", f"{V3}/directory/room/{quote('#up:test.local')}")
    assert resolved["room_id"] == new
    assert (await state(rest, alice, old, "m.room.canonical_alias"))["content"] == {}
    assert await client_core.storage.room_extras.get_directory_visibility(new) == "public"
    assert await client_core.storage.room_extras.get_directory_visibility(old) == "private"

    tombstone = await state(rest, alice, old, "m.room.tombstone")
    assert tombstone["content"]["replacement_room"] == new
    assert tombstone["sender"] == alice.user_id
    old_levels = (await state(rest, alice, old, "m.room.power_levels"))["content"]
    assert (old_levels["events_default"], old_levels["invite"]) == (50, 50)
    refused = await rest.send(bob, old, "still here?", expect=403)
    assert refused == "M_FORBIDDEN"
    await rest.join(bob, new)
    await rest.send(bob, new, "moved")


async def test_only_who_may_send_a_tombstone_may_upgrade(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room = await rest.create_room(alice, preset="public_chat", room_version="10")
    await rest.join(bob, room)

    for user in (bob, carol):  # too little power; not in the room
        refused = await upgrade(rest, user, room, {"new_version": "11"}, expect=403)
        assert refused["errcode"] == "M_FORBIDDEN"
    unsupported = await upgrade(rest, alice, room, {"new_version": "999"}, expect=400)
    assert unsupported["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    missing = await rest.request("POST", f"{V3}/rooms/{quote(room)}/upgrade", alice, {}, expect=400)
    assert missing["errcode"] == "M_MISSING_PARAM"
    unknown = await rest.request(
        "POST",
        f"{V3}/rooms/{quote('!nope:test.local')}/upgrade",
        alice,
        {"new_version": "11"},
        expect=404,
    )
    assert unknown["errcode"] == "M_NOT_FOUND"
    assert await client_core.storage.rooms.get_rooms_for_user(alice.user_id) == [room]


async def test_an_upgrader_without_power_for_all_state_gets_it_only_while_copying(
    rest: RestHelper,
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(alice, preset="public_chat", room_version="10", name="Named")
    await rest.join(bob, room)
    levels = (await state(rest, alice, room, "m.room.power_levels"))["content"]
    levels["users"][bob.user_id] = 60
    levels["events"]["m.room.tombstone"] = 60
    await rest.set_state(alice, room, "m.room.power_levels", levels)

    new = (await upgrade(rest, bob, room, {"new_version": "11"}))["replacement_room"]

    assert (await state(rest, bob, new, "m.room.name"))["content"]["name"] == "Named"
    new_levels = (await state(rest, bob, new, "m.room.power_levels"))["content"]
    assert new_levels["users"] == {alice.user_id: 100, bob.user_id: 60}
    # bob may not change the old room's power levels (100): it keeps them.
    assert (await state(rest, bob, room, "m.room.power_levels"))["content"] == levels


async def test_upgrade_to_v12_sets_creators_and_keeps_the_room_type(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    space = await rest.create_room(
        alice, room_version="11", preset="public_chat", creation_content={"type": "m.space"}
    )

    body = {"new_version": "12", "additional_creators": [bob.user_id]}
    new = (await upgrade(rest, alice, space, body))["replacement_room"]

    create = (await state(rest, alice, new, "m.room.create"))["content"]
    assert create["type"] == "m.space"
    assert create["additional_creators"] == [bob.user_id]
    assert create["predecessor"] == {"room_id": space}
    levels = (await state(rest, alice, new, "m.room.power_levels"))["content"]
    assert alice.user_id not in levels["users"]
    bad = await upgrade(
        rest, alice, new, {"new_version": "12", "additional_creators": ["bob"]}, expect=400
    )
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_tags_and_push_rules_follow_members_into_the_new_room(rest: RestHelper) -> None:
    """A room a member muted stays muted after its upgrade, and keeps its tags, once they
    join the new room; the upgrader's come along at once."""
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    old = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, old)
    await rest.join(carol, old)
    rules = f"{V3}/pushrules/global"
    # Element mutes with an override rule named after the room; a room rule does as well.
    mute = {
        "actions": [],
        "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old}],
    }
    await rest.request("PUT", f"{rules}/override/{quote(old)}", bob, mute)
    await rest.request("PUT", f"{rules}/room/{quote(old)}", bob, {"actions": []})
    for user, tag in ((alice, "m.favourite"), (bob, "u.work")):
        path = f"{V3}/user/{quote(user.user_id)}/rooms/{quote(old)}/tags/{tag}"
        await rest.request("PUT", path, user, {"order": 0.5})

    new = (await upgrade(rest, alice, old, {"new_version": "11"}))["replacement_room"]
    tags = await rest.request(
        "GET", f"{V3}/user/{quote(alice.user_id)}/rooms/{quote(new)}/tags", alice
    )
    assert tags == {"tags": {"m.favourite": {"order": 0.5}}}
    await rest.join(bob, new)
    await rest.join(carol, new)
    tags = await rest.request("GET", f"{V3}/user/{quote(bob.user_id)}/rooms/{quote(new)}/tags", bob)
    assert tags == {"tags": {"u.work": {"order": 0.5}}}
    override = await rest.request("GET", f"{rules}/override/{quote(new)}", bob)
    assert override["conditions"] == [{"kind": "event_match", "key": "room_id", "pattern": new}]
    assert override["actions"] == []
    assert (await rest.request("GET", f"{rules}/room/{quote(new)}", bob))["actions"] == []
    # Carol set nothing up: nothing was made for her.
    await rest.request("GET", f"{rules}/room/{quote(new)}", carol, expect=404)
    await rest.send(alice, new, "anyone?")
    synced = await rest.sync(bob)
    counts = synced["rooms"]["join"][new]["unread_notifications"]
    assert counts == {"notification_count": 0, "highlight_count": 0}
    synced = await rest.sync(carol)
    assert synced["rooms"]["join"][new]["unread_notifications"]["notification_count"] == 1
