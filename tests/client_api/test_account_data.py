"""Account data and room tags (C-S API "Client Config", "Room Tagging", "Ignoring Users"),
and what /sync will read of them."""

from __future__ import annotations

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/account-data.yaml"
TAGS = "client-server/tags.yaml"
ROOM = "!room:test.local"




async def test_global_account_data(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    path = f"{V3}/user/{alice.user_id}/account_data/org.example.config"
    missing = await rest.request("GET", path, alice, expect=404)
    assert_response_valid(API, "/user/{userId}/account_data/{type}", "get", 404, missing)
    assert missing["errcode"] == "M_NOT_FOUND"
    done = await rest.request("PUT", path, alice, {"theme": "dark"})
    assert_response_valid(API, "/user/{userId}/account_data/{type}", "put", 200, done)
    got = await rest.request("GET", path, alice)
    assert_response_valid(API, "/user/{userId}/account_data/{type}", "get", 200, got)
    assert got == {"theme": "dark"}
    await rest.request("PUT", path, alice, {"theme": "light", "size": 2})
    assert await rest.request("GET", path, alice) == {"theme": "light", "size": 2}

    direct = {"@bob:test.local": ["!dm:test.local"]}
    await rest.request("PUT", f"{V3}/user/{alice.user_id}/account_data/m.direct", alice, direct)
    assert (
        await rest.request("GET", f"{V3}/user/{alice.user_id}/account_data/m.direct", alice)
        == direct
    )


async def test_room_account_data(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    path = f"{V3}/user/{alice.user_id}/rooms/{ROOM}/account_data/org.example.draft"
    op = "/user/{userId}/rooms/{roomId}/account_data/{type}"
    missing = await rest.request("GET", path, alice, expect=404)
    assert_response_valid(API, op, "get", 404, missing)
    done = await rest.request("PUT", path, alice, {"text": "hello"})
    assert_response_valid(API, op, "put", 200, done)
    got = await rest.request("GET", path, alice)
    assert_response_valid(API, op, "get", 200, got)
    assert got == {"text": "hello"}
    # Room data is apart from global data of the same type.
    await rest.request(
        "GET", f"{V3}/user/{alice.user_id}/account_data/org.example.draft", alice, expect=404
    )
    bad_room = f"{V3}/user/{alice.user_id}/rooms/not-a-room/account_data/org.example.draft"
    for method in ("GET", "PUT"):
        invalid = await rest.request(method, bad_room, alice, {} if method == "PUT" else None, 400)
        assert_response_valid(API, op, method.lower(), 400, invalid)
        assert invalid["errcode"] == "M_INVALID_PARAM"


async def test_account_data_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    global_op = "/user/{userId}/account_data/{type}"
    room_op = "/user/{userId}/rooms/{roomId}/account_data/{type}"
    bobs = f"{V3}/user/{bob.user_id}/account_data/org.example.config"
    for method in ("GET", "PUT"):
        other = await rest.request(method, bobs, alice, {} if method == "PUT" else None, 403)
        assert_response_valid(API, global_op, method.lower(), 403, other)
        assert other["errcode"] == "M_FORBIDDEN"
    bobs_room = f"{V3}/user/{bob.user_id}/rooms/{ROOM}/account_data/org.example.config"
    other = await rest.request("PUT", bobs_room, alice, {}, 403)
    assert_response_valid(API, room_op, "put", 403, other)

    # Spec: the server manages m.fully_read and m.push_rules, globally and per room.
    for data_type in ("m.fully_read", "m.push_rules"):
        for path, op in (
            (f"{V3}/user/{alice.user_id}/account_data/{data_type}", global_op),
            (f"{V3}/user/{alice.user_id}/rooms/{ROOM}/account_data/{data_type}", room_op),
        ):
            refused = await rest.request("PUT", path, alice, {"event_id": "$x"}, 405)
            assert_response_valid(API, op, "put", 405, refused)
            assert refused["errcode"] == "M_BAD_JSON"

    path = f"{V3}/user/{alice.user_id}/account_data/org.example.config"
    not_json = await rest.client.put(path, data=b"[1, 2]", headers=alice.headers)
    body = await not_json.json()
    assert not_json.status == 400 and body["errcode"] == "M_BAD_JSON"
    assert_response_valid(API, global_op, "put", 400, body)
    no_token = await rest.request("GET", path, expect=401)
    assert no_token["errcode"] == "M_MISSING_TOKEN"


async def test_room_tags(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    base = f"{V3}/user/{alice.user_id}/rooms/{ROOM}/tags"
    empty = await rest.request("GET", base, alice)
    assert_response_valid(TAGS, "/user/{userId}/rooms/{roomId}/tags", "get", 200, empty)
    assert empty == {"tags": {}}
    done = await rest.request("PUT", f"{base}/m.favourite", alice, {"order": 0.25})
    assert_response_valid(TAGS, "/user/{userId}/rooms/{roomId}/tags/{tag}", "put", 200, done)
    await rest.request("PUT", f"{base}/u.work", alice, {})
    tags = await rest.request("GET", base, alice)
    assert_response_valid(TAGS, "/user/{userId}/rooms/{roomId}/tags", "get", 200, tags)
    assert tags == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    # Tags are the m.tag room account data, as /sync shows them.
    as_data = await rest.request(
        "GET", f"{V3}/user/{alice.user_id}/rooms/{ROOM}/account_data/m.tag", alice
    )
    assert as_data == tags
    removed = await rest.request("DELETE", f"{base}/m.favourite", alice)
    assert_response_valid(TAGS, "/user/{userId}/rooms/{roomId}/tags/{tag}", "delete", 200, removed)
    assert await rest.request("GET", base, alice) == {"tags": {"u.work": {}}}
    await rest.request("DELETE", f"{base}/not.there", alice)

    bad_order = await rest.request("PUT", f"{base}/u.x", alice, {"order": "first"}, 400)
    assert bad_order["errcode"] == "M_INVALID_PARAM"
    long_tag = await rest.request("PUT", f"{base}/{'t' * 256}", alice, {}, 400)
    assert long_tag["errcode"] == "M_INVALID_PARAM"
    bob = await rest.register("bob")
    other = await rest.request(
        "GET", f"{V3}/user/{bob.user_id}/rooms/{ROOM}/tags", alice, None, 403
    )
    assert other["errcode"] == "M_FORBIDDEN"


async def test_concurrent_tag_edits_keep_every_tag(rest: RestHelper) -> None:
    import asyncio

    alice = await rest.register("alice")
    base = f"{V3}/user/{alice.user_id}/rooms/{ROOM}/tags"
    names = [f"u.tag{i}" for i in range(8)]
    await asyncio.gather(*(rest.request("PUT", f"{base}/{n}", alice, {}) for n in names))
    assert set((await rest.request("GET", base, alice))["tags"]) == set(names)


async def test_updates_for_sync_and_ignored_users(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    handler = client_core.account_data
    start = await handler.current_position()
    with client_core.notifier.listen(alice.user_id, []) as listener:
        await rest.request(
            "PUT", f"{V3}/user/{alice.user_id}/account_data/org.example.a", alice, {"a": 1}
        )
        assert await listener.wait(1)
    await rest.request("PUT", f"{V3}/user/{alice.user_id}/rooms/{ROOM}/tags/u.x", alice, {})
    middle = await handler.current_position()
    assert middle == start + 2
    ignored = {"ignored_users": {"@troll:test.local": {}}}
    assert await handler.ignored_users(alice.user_id) == frozenset()
    await rest.request(
        "PUT", f"{V3}/user/{alice.user_id}/account_data/m.ignored_user_list", alice, ignored
    )
    assert await handler.ignored_users(alice.user_id) == {"@troll:test.local"}
    end = await handler.current_position()

    everything = await handler.changes(alice.user_id, None, 0, end)
    assert everything.global_data == [
        {"type": "org.example.a", "content": {"a": 1}},
        {"type": "m.ignored_user_list", "content": ignored},
    ]
    assert everything.rooms == {ROOM: [{"type": "m.tag", "content": {"tags": {"u.x": {}}}}]}
    since = await handler.changes(alice.user_id, None, middle, end)
    assert since.global_data == [{"type": "m.ignored_user_list", "content": ignored}]
    assert since.rooms == {}
    other_rooms = await handler.changes(alice.user_id, ["!other:test.local"], 0, end)
    assert other_rooms.rooms == {}
    assert (await handler.changes(alice.user_id, None, end, end)).global_data == []
