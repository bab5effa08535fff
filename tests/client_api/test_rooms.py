"""POST /createRoom and the membership endpoints over a real server on both databases, with
responses checked against the spec's OpenAPI definitions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

CREATE = ("client-server/create_room.yaml", "/createRoom", "post")


async def room_state(rest: RestHelper, user: User, room_id: str) -> dict[tuple[str, str], Any]:
    events = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/state", user)
    return {(e["type"], e["state_key"]): e for e in events}


async def test_create_room_defaults(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    body = await rest.request("POST", f"{V3}/createRoom", alice, body={})
    assert_response_valid(*CREATE, 200, body)
    room_id = body["room_id"]
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.create", "")]["content"]["room_version"] == "12"
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "shared"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    assert state[("m.room.member", alice.user_id)]["content"] == {"membership": "join"}
    joined = await rest.request("GET", f"{V3}/joined_rooms", alice)
    assert_response_valid(
        "client-server/list_joined_rooms.yaml", "/joined_rooms", "get", 200, joined
    )
    assert joined == {"joined_rooms": [room_id]}


async def test_create_public_room_with_alias_name_topic(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(
        alice,
        visibility="public",
        room_alias_name="pub",
        name="The Pub",
        topic="Happy hour",
        creation_content={"m.federate": False},
        room_version="10",
    )
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": "#pub:test.local"}
    assert state[("m.room.name", "")]["content"] == {"name": "The Pub"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "Happy hour"
    create = state[("m.room.create", "")]["content"]
    assert create["m.federate"] is False and create["room_version"] == "10"
    assert create["creator"] == alice.user_id
    resolved = await rest.request("GET", f"{V3}/directory/room/{quote('#pub:test.local')}")
    assert resolved["room_id"] == room_id
    assert await client_core.room_api.extras.get_directory_visibility(room_id) == "public"
    # The alias is taken now.
    taken = await rest.request(
        "POST", f"{V3}/createRoom", alice, body={"room_alias_name": "pub"}, expect=400
    )
    assert_response_valid(*CREATE, 400, taken)
    assert taken["errcode"] == "M_ROOM_IN_USE"


async def test_create_room_initial_state_and_power_levels(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(
        alice,
        preset="public_chat",
        room_version="11",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "m.room.name", "content": {"name": "overridden"}},
            {"type": "org.example.custom", "state_key": "k", "content": {"v": 1}},
        ],
        name="final name",
        power_level_content_override={"events_default": 10, "users": {alice.user_id: 100}},
    )
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "joined"}
    assert state[("m.room.name", "")]["content"] == {"name": "final name"}
    assert state[("org.example.custom", "k")]["content"] == {"v": 1}
    levels = state[("m.room.power_levels", "")]["content"]
    assert levels["events_default"] == 10 and levels["users"] == {alice.user_id: 100}


async def test_create_room_invites_with_is_direct(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(
        alice, invite=[bob.user_id], is_direct=True, preset="trusted_private_chat"
    )
    state = await room_state(rest, alice, room_id)
    invite = state[("m.room.member", bob.user_id)]
    assert invite["content"] == {"membership": "invite", "is_direct": True}
    assert invite["sender"] == alice.user_id
    # v12 trusted_private_chat: invitees become additional creators.
    assert state[("m.room.create", "")]["content"]["additional_creators"] == [bob.user_id]
    await rest.join(bob, room_id)
    assert (await rest.request("GET", f"{V3}/joined_rooms", bob))["joined_rooms"] == [room_id]


async def test_create_room_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")

    async def refused(body: dict[str, Any], errcode: str, status: int = 400) -> None:
        result = await rest.request("POST", f"{V3}/createRoom", alice, body=body, expect=status)
        assert_response_valid(*CREATE, status, result)
        assert result["errcode"] == errcode, result

    await refused({"room_version": "999"}, "M_UNSUPPORTED_ROOM_VERSION")
    await refused({"preset": "party"}, "M_INVALID_PARAM")
    await refused({"visibility": "secret"}, "M_INVALID_PARAM")
    await refused({"name": 5}, "M_INVALID_PARAM")
    await refused({"invite": ["not a user"]}, "M_INVALID_PARAM")
    await refused({"invite": ["@nobody:test.local"]}, "M_INVALID_PARAM")
    await refused({"invite": ["@someone:elsewhere.example"]}, "M_FORBIDDEN", 403)
    await refused({"room_alias_name": "has space"}, "M_INVALID_PARAM")
    await refused({"room_alias_name": "a:b"}, "M_INVALID_PARAM")
    await refused({"initial_state": [{"type": "m.room.name"}]}, "M_BAD_JSON")
    # Setting someone else's membership to join is not allowed by the auth rules.
    await refused(
        {
            "initial_state": [
                {
                    "type": "m.room.member",
                    "state_key": "@bob:test.local",
                    "content": {"membership": "join"},
                }
            ]
        },
        "M_INVALID_ROOM_STATE",
    )
    not_json = await rest.client.post(f"{V3}/createRoom", data=b"{nope", headers=alice.headers)
    assert not_json.status == 400 and (await not_json.json())["errcode"] == "M_NOT_JSON"
    # Nothing was created by any refused request.
    assert (await rest.request("GET", f"{V3}/joined_rooms", alice))["joined_rooms"] == []
    await rest.request("POST", f"{V3}/createRoom", body={}, expect=401)


async def test_join_leave_forget(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    await client_core.storage.db.execute(
        "UPDATE users SET displayname = $2, avatar_url = $3 WHERE user_id = $1",
        bob.user_id,
        "Bob",
        "mxc://test.local/bob",
    )
    room_id = await rest.create_room(alice, preset="public_chat", room_alias_name="hall")
    joined = await rest.request("POST", f"{V3}/rooms/{quote(room_id)}/join", bob, body={})
    assert_response_valid("client-server/joining.yaml", "/rooms/{roomId}/join", "post", 200, joined)
    assert joined == {"room_id": room_id}
    member = (await room_state(rest, alice, room_id))[("m.room.member", bob.user_id)]
    assert member["content"] == {
        "membership": "join",
        "displayname": "Bob",
        "avatar_url": "mxc://test.local/bob",
    }
    # Joining again changes nothing: the same event stays current.
    await rest.join(bob, room_id)
    again = (await room_state(rest, alice, room_id))[("m.room.member", bob.user_id)]
    assert again["event_id"] == member["event_id"]

    # Forgetting needs the user to have left first.
    forget = f"{V3}/rooms/{quote(room_id)}/forget"
    in_room = await rest.request("POST", forget, bob, body={}, expect=400)
    assert_response_valid(
        "client-server/leaving.yaml", "/rooms/{roomId}/forget", "post", 400, in_room
    )
    left = await rest.request(
        "POST", f"{V3}/rooms/{quote(room_id)}/leave", bob, body={"reason": "bye"}
    )
    assert_response_valid("client-server/leaving.yaml", "/rooms/{roomId}/leave", "post", 200, left)
    leave = (await room_state(rest, alice, room_id))[("m.room.member", bob.user_id)]
    assert leave["content"] == {"membership": "leave", "reason": "bye"}
    assert (await rest.request("GET", f"{V3}/joined_rooms", bob))["joined_rooms"] == []
    # Leaving a room one is no longer in is refused by the auth rules.
    await rest.leave(bob, room_id, expect=403)

    done = await rest.request("POST", forget, bob, body={})
    assert_response_valid("client-server/leaving.yaml", "/rooms/{roomId}/forget", "post", 200, done)
    extras = client_core.room_api.extras
    assert room_id in await extras.get_forgotten_room_ids(bob.user_id)
    # A new membership (joining through the alias) ends the forgetting.
    await rest.join(bob, "#hall:test.local")
    assert room_id not in await extras.get_forgotten_room_ids(bob.user_id)


async def test_join_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    private = await rest.create_room(alice)
    refused = await rest.join(bob, private, expect=403)
    assert_response_valid(
        "client-server/joining.yaml", "/join/{roomIdOrAlias}", "post", 403, refused
    )
    assert refused["errcode"] == "M_FORBIDDEN"
    unknown = await rest.join(bob, "!nothing:test.local", expect=404)
    assert unknown["errcode"] == "M_NOT_FOUND"
    remote = await rest.join(bob, "!room:elsewhere.example", expect=404)
    assert remote["errcode"] == "M_NOT_FOUND" and "elsewhere.example" in remote["error"]
    remote_alias = await rest.join(bob, "#room:elsewhere.example", expect=404)
    assert remote_alias["errcode"] == "M_NOT_FOUND" and "elsewhere.example" in remote_alias["error"]
    missing_alias = await rest.join(bob, "#nothing:test.local", expect=404)
    assert missing_alias["errcode"] == "M_NOT_FOUND"
    nonsense = await rest.join(bob, "room", expect=400)
    assert nonsense["errcode"] == "M_INVALID_PARAM"


async def test_invite_kick_ban_unban(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room_id = await rest.create_room(alice, room_version="10")
    room = f"{V3}/rooms/{quote(room_id)}"

    invited = await rest.request("POST", f"{room}/invite", alice, body={"user_id": bob.user_id})
    assert_response_valid(
        "client-server/inviting.yaml", "/rooms/{roomId}/invite ", "post", 200, invited
    )
    await rest.join(bob, room_id)
    # bob (power 0) may neither invite (invite level is 50 in our defaults) nor kick.
    no_invite = await rest.request(
        "POST", f"{room}/invite", bob, body={"user_id": carol.user_id}, expect=403
    )
    assert_response_valid(
        "client-server/inviting.yaml", "/rooms/{roomId}/invite ", "post", 403, no_invite
    )
    no_kick = await rest.request(
        "POST", f"{room}/kick", bob, body={"user_id": alice.user_id}, expect=403
    )
    assert_response_valid(
        "client-server/kicking.yaml", "/rooms/{roomId}/kick", "post", 403, no_kick
    )
    bad_user = await rest.request(
        "POST", f"{room}/invite", alice, body={"user_id": "carol"}, expect=400
    )
    assert_response_valid(
        "client-server/inviting.yaml", "/rooms/{roomId}/invite ", "post", 400, bad_user
    )
    missing = await rest.request("POST", f"{room}/invite", alice, body={}, expect=400)
    assert missing["errcode"] == "M_MISSING_PARAM"

    kicked = await rest.request(
        "POST", f"{room}/kick", alice, body={"user_id": bob.user_id, "reason": "spam"}
    )
    assert_response_valid("client-server/kicking.yaml", "/rooms/{roomId}/kick", "post", 200, kicked)
    state = await room_state(rest, alice, room_id)
    member = state[("m.room.member", bob.user_id)]
    assert member["content"] == {"membership": "leave", "reason": "spam"}
    assert member["sender"] == alice.user_id
    # A kick needs a target in the room.
    gone = await rest.request(
        "POST", f"{room}/kick", alice, body={"user_id": bob.user_id}, expect=403
    )
    assert gone["errcode"] == "M_FORBIDDEN"

    not_banned = await rest.request(
        "POST", f"{room}/unban", alice, body={"user_id": bob.user_id}, expect=403
    )
    assert_response_valid(
        "client-server/banning.yaml", "/rooms/{roomId}/unban", "post", 403, not_banned
    )
    banned = await rest.request(
        "POST", f"{room}/ban", alice, body={"user_id": bob.user_id, "reason": "troll"}
    )
    assert_response_valid("client-server/banning.yaml", "/rooms/{roomId}/ban", "post", 200, banned)
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"] == {
        "membership": "ban",
        "reason": "troll",
    }
    # Banned users can be neither invited nor join.
    await rest.request("POST", f"{room}/invite", alice, body={"user_id": bob.user_id}, expect=403)
    unbanned = await rest.request("POST", f"{room}/unban", alice, body={"user_id": bob.user_id})
    assert_response_valid(
        "client-server/banning.yaml", "/rooms/{roomId}/unban", "post", 200, unbanned
    )
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"] == {"membership": "leave"}
    # Unknown room: 404 for every membership action.
    for action in ("invite", "kick", "ban", "unban"):
        await rest.request(
            "POST",
            f"{V3}/rooms/{quote('!nope:test.local')}/{action}",
            alice,
            body={"user_id": bob.user_id},
            expect=404,
        )
