"""Profiles (C-S API "Profiles"): reading and setting displayname and avatar_url, the errors,
and propagation into the rooms the user is joined to."""

from __future__ import annotations

from homeserver.core import Core
from tests.client_api.user_data_rooms import make_room, member_content
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

API = "client-server/profile.yaml"
ERROR = "api/client-server/definitions/errors/error.yaml"




async def test_set_and_get_profile(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    empty = await rest.request("GET", f"{V3}/profile/{alice.user_id}")
    assert_response_valid(API, "/profile/{userId}", "get", 200, empty)
    assert empty == {}

    done = await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, {"displayname": "Alice"}
    )
    assert_response_valid(API, "/profile/{userId}/{keyName}", "put", 200, done)
    await rest.request(
        "PUT",
        f"{V3}/profile/{alice.user_id}/avatar_url",
        alice,
        {"avatar_url": "mxc://test.local/abc"},
    )
    name = await rest.request("GET", f"{V3}/profile/{alice.user_id}/displayname")
    assert_response_valid(API, "/profile/{userId}/{keyName}", "get", 200, name)
    assert name == {"displayname": "Alice"}
    profile = await rest.request("GET", f"{V3}/profile/{alice.user_id}", alice)
    assert_response_valid(API, "/profile/{userId}", "get", 200, profile)
    assert profile == {"displayname": "Alice", "avatar_url": "mxc://test.local/abc"}

    deleted = await rest.request("DELETE", f"{V3}/profile/{alice.user_id}/avatar_url", alice)
    assert_response_valid(API, "/profile/{userId}/{keyName}", "delete", 200, deleted)
    gone = await rest.request("GET", f"{V3}/profile/{alice.user_id}/avatar_url", expect=404)
    assert gone["errcode"] == "M_NOT_FOUND"
    # null clears a field too.
    await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, {"displayname": None}
    )
    assert await rest.request("GET", f"{V3}/profile/{alice.user_id}") == {}


async def test_profile_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    other = await rest.request(
        "PUT", f"{V3}/profile/{bob.user_id}/displayname", alice, {"displayname": "Bob?"}, 403
    )
    assert_response_valid(API, "/profile/{userId}/{keyName}", "put", 403, other)
    assert other["errcode"] == "M_FORBIDDEN"
    other_delete = await rest.request(
        "DELETE", f"{V3}/profile/{bob.user_id}/displayname", alice, expect=403
    )
    assert_response_valid(API, "/profile/{userId}/{keyName}", "delete", 403, other_delete)

    for unknown in ("@nobody:test.local", "@alice:elsewhere.example"):
        missing = await rest.request("GET", f"{V3}/profile/{unknown}", expect=404)
        assert_response_valid(API, "/profile/{userId}", "get", 404, missing)
        assert missing["errcode"] == "M_NOT_FOUND"
        field = await rest.request("GET", f"{V3}/profile/{unknown}/displayname", expect=404)
        assert_valid(ERROR, field)
        assert field["errcode"] == "M_NOT_FOUND"

    path = f"{V3}/profile/{alice.user_id}/displayname"
    missing_key = await rest.request("PUT", path, alice, {"avatar_url": "x"}, 400)
    assert_response_valid(API, "/profile/{userId}/{keyName}", "put", 400, missing_key)
    assert missing_key["errcode"] == "M_MISSING_PARAM"
    wrong_type = await rest.request("PUT", path, alice, {"displayname": 5}, 400)
    assert wrong_type["errcode"] == "M_INVALID_PARAM"
    too_long = await rest.request("PUT", path, alice, {"displayname": "x" * 300}, 400)
    assert too_long["errcode"] == "M_INVALID_PARAM"
    not_mxc = await rest.request(
        "PUT",
        f"{V3}/profile/{alice.user_id}/avatar_url",
        alice,
        {"avatar_url": "https://example.org/a.png"},
        400,
    )
    assert not_mxc["errcode"] == "M_INVALID_PARAM"
    custom = await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/m.tz", alice, {"m.tz": "Europe/London"}, 403
    )
    assert_response_valid(API, "/profile/{userId}/{keyName}", "put", 403, custom)
    no_token = await rest.request("PUT", path, None, {"displayname": "A"}, 401)
    assert no_token["errcode"] == "M_MISSING_TOKEN"
    not_json = await rest.client.put(path, data=b"{nope", headers=alice.headers)
    assert not_json.status == 400 and (await not_json.json())["errcode"] == "M_NOT_JSON"


async def test_profile_change_is_sent_to_joined_rooms(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_a = await make_room(client_core, alice.user_id, bob.user_id)
    room_b = await make_room(client_core, bob.user_id, alice.user_id)
    await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, {"displayname": "Alice"}
    )
    await rest.request(
        "PUT",
        f"{V3}/profile/{alice.user_id}/avatar_url",
        alice,
        {"avatar_url": "mxc://test.local/face"},
    )
    for room_id in (room_a, room_b):
        assert await member_content(client_core, room_id, alice.user_id) == {
            "membership": "join",
            "displayname": "Alice",
            "avatar_url": "mxc://test.local/face",
        }
        assert await member_content(client_core, room_id, bob.user_id) == {"membership": "join"}
    # Setting what is already there sends nothing.
    rooms = client_core.storage.rooms
    before = await rooms.get_current_state_event_id(room_a, "m.room.member", alice.user_id)
    await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, {"displayname": "Alice"}
    )
    assert before == await rooms.get_current_state_event_id(room_a, "m.room.member", alice.user_id)
    await rest.request("DELETE", f"{V3}/profile/{alice.user_id}/displayname", alice)
    assert await member_content(client_core, room_a, alice.user_id) == {
        "membership": "join",
        "avatar_url": "mxc://test.local/face",
    }
    # A new member event (a join) carries what is left of the profile.
    room_c = await rest.create_room(bob, preset="public_chat")
    await rest.join(alice, room_c)
    assert await member_content(client_core, room_c, alice.user_id) == {
        "membership": "join",
        "avatar_url": "mxc://test.local/face",
    }
