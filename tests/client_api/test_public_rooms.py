"""The published room directory (list_public_rooms.yaml): publishing and unpublishing rooms,
and /publicRooms' order, pagination both ways and filters, on both databases."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/list_public_rooms.yaml"
LIST_ROOM = "/directory/list/room/{roomId}"


def list_room_path(room_id: str) -> str:
    return f"{V3}/directory/list/room/{quote(room_id)}"


async def public_rooms(
    rest: RestHelper, user: User | None = None, body: Any = None, **params: str
) -> Any:
    """GET /publicRooms (POST when there is a body), checked against the spec."""
    method = "GET" if body is None else "POST"
    answer = await rest.request(method, f"{V3}/publicRooms", user, body=body, **params)
    assert_response_valid(API, "/publicRooms", method.lower(), 200, answer)
    return answer


def room_ids(answer: Any) -> list[str]:
    return [room["room_id"] for room in answer["chunk"]]


async def test_publish_and_unpublish(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat", name="Lobby")

    private = await rest.request("GET", list_room_path(room_id))  # no access token needed
    assert_response_valid(API, LIST_ROOM, "get", 200, private)
    assert private == {"visibility": "private"}
    assert (await public_rooms(rest))["chunk"] == []

    published = await rest.request(
        "PUT", list_room_path(room_id), alice, body={"visibility": "public"}
    )
    assert_response_valid(API, LIST_ROOM, "put", 200, published)
    assert await rest.request("GET", list_room_path(room_id)) == {"visibility": "public"}
    listed = await public_rooms(rest)
    assert listed == {
        "chunk": [
            {
                "room_id": room_id,
                "num_joined_members": 1,
                "world_readable": False,
                "guest_can_join": False,
                "join_rule": "public",
                "name": "Lobby",
            }
        ],
        "total_room_count_estimate": 1,
    }

    # bob, joined with power 0, may not unpublish it (canonical alias needs 50); outsiders
    # neither; an empty body means public.
    carol = await rest.register("carol")
    await rest.join(bob, room_id)
    for who in (bob, carol):
        refused = await rest.request(
            "PUT", list_room_path(room_id), who, body={"visibility": "private"}, expect=403
        )
        assert refused["errcode"] == "M_FORBIDDEN"
    await rest.request("PUT", list_room_path(room_id), alice, body={"visibility": "private"})
    assert await rest.request("GET", list_room_path(room_id)) == {"visibility": "private"}
    assert (await public_rooms(rest, alice))["chunk"] == []
    await rest.request("PUT", list_room_path(room_id), alice, body={})
    assert room_ids(await public_rooms(rest, alice)) == [room_id]

    bad = await rest.request(
        "PUT", list_room_path(room_id), alice, body={"visibility": "secret"}, expect=400
    )
    assert bad["errcode"] == "M_INVALID_PARAM"
    unknown = "!unknown:test.local"
    missing = await rest.request("GET", list_room_path(unknown), expect=404)
    assert_response_valid(API, LIST_ROOM, "get", 404, missing)
    missing_put = await rest.request(
        "PUT", list_room_path(unknown), alice, body={"visibility": "public"}, expect=404
    )
    assert_response_valid(API, LIST_ROOM, "put", 404, missing_put)
    no_token = await rest.request(
        "PUT", list_room_path(room_id), body={"visibility": "public"}, expect=401
    )
    assert no_token["errcode"] == "M_MISSING_TOKEN"


async def test_order_and_pagination_both_ways(rest: RestHelper) -> None:
    users = [await rest.register(f"user{n}") for n in range(4)]
    alice = users[0]
    # Members per room: 3, 1, 2, 1, 4, 1, 2 (ties ordered by room ID).
    sizes = [3, 1, 2, 1, 4, 1, 2]
    rooms: dict[str, int] = {}
    for size in sizes:
        room_id = await rest.create_room(alice, preset="public_chat", visibility="public")
        for user in users[1:size]:
            await rest.join(user, room_id)
        rooms[room_id] = size
    # Not listed: a private room, and a published room everyone left.
    await rest.create_room(alice, preset="public_chat")
    empty = await rest.create_room(alice, preset="public_chat", visibility="public")
    await rest.leave(alice, empty)
    expected = sorted(rooms, key=lambda r: (-rooms[r], r))

    everything = await public_rooms(rest, alice)
    assert room_ids(everything) == expected
    assert [room["num_joined_members"] for room in everything["chunk"]] == sorted(
        sizes, reverse=True
    )
    assert everything["total_room_count_estimate"] == len(rooms)
    assert "next_batch" not in everything and "prev_batch" not in everything

    for use_post in (False, True):
        pages: list[Any] = []
        since: str | None = None
        while True:
            if use_post:
                page = await public_rooms(
                    rest, alice, body={"limit": 3} | ({"since": since} if since else {})
                )
            else:
                page = await public_rooms(rest, limit="3", **({"since": since} if since else {}))
            pages.append(page)
            assert len(page["chunk"]) <= 3
            since = page.get("next_batch")
            if since is None:
                break
        assert [r for page in pages for r in room_ids(page)] == expected
        assert [len(page["chunk"]) for page in pages] == [3, 3, 1]
        assert "prev_batch" not in pages[0]
        assert all("prev_batch" in page for page in pages[1:])

        # Back from the last page: the same pages in reverse.
        back = pages[-1]
        for page in reversed(pages[:-1]):
            back = await public_rooms(rest, alice, body={"limit": 3, "since": back["prev_batch"]})
            assert room_ids(back) == room_ids(page)
        assert "prev_batch" not in back
        assert "next_batch" in back


async def test_filters(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    pub = await rest.create_room(
        alice, visibility="public", name="The Pub", topic="Happy hour", room_alias_name="pub"
    )
    cafe = await rest.create_room(alice, visibility="public", name="Café", topic="Coffee")
    space = await rest.create_room(
        alice, visibility="public", name="Town", creation_content={"type": "m.space"}
    )
    await rest.create_room(alice, name="Hidden pub")  # not published

    async def search(**filter_: Any) -> list[str]:
        return sorted(room_ids(await public_rooms(rest, alice, body={"filter": filter_})))

    # Case-insensitive, in the name, the topic, the canonical alias and the room ID. (Terms
    # with characters no room ID holds, since any short one could be part of a random ID.)
    assert await search(generic_search_term="THE PUB") == [pub]
    assert await search(generic_search_term="happy hour") == [pub]
    assert await search(generic_search_term="#pub:test") == [pub]
    assert await search(generic_search_term="CAFÉ") == [cafe]
    assert await search(generic_search_term=space[:20]) == [space]
    assert await search(generic_search_term="nothing like it") == []
    assert await search(generic_search_term="  ") == sorted([pub, cafe, space])
    assert await search(room_types=[None]) == sorted([pub, cafe])
    assert await search(room_types=["m.space"]) == [space]
    assert await search(room_types=[None, "m.space"]) == sorted([pub, cafe, space])
    assert await search(room_types=[]) == []
    assert await search(room_types=[None], generic_search_term="Happy Hour") == [pub]

    # A filtered listing pages through the matches only.
    seen: list[str] = []
    body: dict[str, Any] = {"limit": 1, "filter": {"room_types": [None]}}
    while True:
        page = await public_rooms(rest, alice, body=body)
        seen += room_ids(page)
        if "next_batch" not in page:
            break
        body["since"] = page["next_batch"]
    assert sorted(seen) == sorted([pub, cafe])
    assert len(seen) == 2


async def test_bad_requests(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, visibility="public")
    path = f"{V3}/publicRooms"
    for params in ({"limit": "ten"}, {"limit": "-1"}, {"since": "not a token"}):
        bad = await rest.request("GET", path, expect=400, **params)
        assert bad["errcode"] == "M_INVALID_PARAM", params
    for body in (
        {"limit": "10"},
        {"since": 5},
        {"filter": "pub"},
        {"filter": {"generic_search_term": 1}},
        {"filter": {"room_types": "m.space"}},
        {"filter": {"room_types": [1]}},
        {"include_all_networks": True, "third_party_instance_id": "irc"},
    ):
        bad = await rest.request("POST", path, alice, body=body, expect=400)
        assert bad["errcode"] == "M_INVALID_PARAM", body
    bad_server = await rest.request("GET", path, expect=400, server="not a server!")
    assert bad_server["errcode"] == "M_INVALID_PARAM"
    # Without federation, no other server's directory can be read.
    remote = await rest.request("GET", path, expect=502, server="elsewhere.example")
    assert remote["errcode"] == "M_UNKNOWN"
    # A token that is sent must be valid; POST needs one.
    await rest.request("GET", path, User("@x:test.local", "bogus", "D"), expect=401)
    await rest.request("POST", path, body={}, expect=401)

    # This server by name, all networks: the same listing; a third-party network: no rooms.
    assert room_ids(await public_rooms(rest, server="test.local")) == [room_id]
    assert room_ids(
        await public_rooms(rest, alice, body={"include_all_networks": True}, server="test.local")
    ) == [room_id]
    assert (await public_rooms(rest, alice, body={"third_party_instance_id": "irc"}))["chunk"] == []
