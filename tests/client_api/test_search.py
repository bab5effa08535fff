"""POST /search (C-S API "Server Side Search") on both databases: matching across keys, both
orders, filters, pagination, context, groups, and only what the user may see. (matrix-nio has
no search call, so these go through the REST helper.)"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

SEARCH = ("client-server/search.yaml", "/search", "post")


async def search(
    rest: RestHelper,
    user: User,
    term: str,
    expect: int = 200,
    next_batch: str | None = None,
    **criteria: Any,
) -> Any:
    body = {"search_categories": {"room_events": {"search_term": term, **criteria}}}
    params = {"next_batch": next_batch} if next_batch is not None else {}
    out = await rest.request("POST", f"{V3}/search", user, body=body, expect=expect, **params)
    if expect == 200:
        assert_response_valid(*SEARCH, 200, out)
        return out["search_categories"]["room_events"]
    return out


def found(result: Any) -> list[str]:
    return [r["result"]["event_id"] for r in result["results"]]


async def test_terms_match_across_keys_and_stems(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice, name="Martian embassy", topic="Talk about Mars")
    msg = await rest.send(alice, room, "The martians are landing")
    await rest.send(alice, room, "nothing to see here")

    everywhere = await search(rest, alice, "martian")
    assert len(everywhere["results"]) == 2  # the message and the room name
    assert msg in found(everywhere)
    assert everywhere["count"] == 2
    assert everywhere["highlights"] == ["martian"]
    types = {r["result"]["type"] for r in everywhere["results"]}
    assert types == {"m.room.message", "m.room.name"}

    bodies_only = await search(rest, alice, "martian", keys=["content.body"])
    assert found(bodies_only) == [msg]
    topic = await search(rest, alice, "mars", keys=["content.topic"])
    assert [r["result"]["type"] for r in topic["results"]] == ["m.room.topic"]
    # Every term must match.
    assert found(await search(rest, alice, "martians landing")) == [msg]
    assert found(await search(rest, alice, "martians sleeping")) == []
    assert found(await search(rest, alice, "")) == []


async def test_rich_topic_text_is_searched(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    content = {
        "topic": "plain",
        "m.topic": {
            "m.text": [
                {"mimetype": "text/html", "body": "<b>hidden</b>"},
                {"body": "photosynthesis"},
            ]
        },
    }
    await rest.set_state(alice, room, "m.room.topic", content)
    assert len((await search(rest, alice, "photosynthesis"))["results"]) == 1
    assert (await search(rest, alice, "hidden"))["results"] == []


async def test_rank_and_recent_orders(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    strong = await rest.send(alice, room, "apple apple apple")
    weak = await rest.send(alice, room, "apple pie with a long tail of other words about baking")
    newest = await rest.send(alice, room, "one apple among many words in a long sentence today")

    by_rank = await search(rest, alice, "apple")
    assert found(by_rank)[0] == strong
    ranks = [r["rank"] for r in by_rank["results"]]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[-1]
    by_time = await search(rest, alice, "apple", order_by="recent")
    assert found(by_time) == [newest, weak, strong]


async def test_filters(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    one = await rest.create_room(alice, preset="public_chat")
    two = await rest.create_room(alice)
    await rest.join(bob, one)
    a1 = await rest.send(alice, one, "banana split")
    b1 = await rest.send(bob, one, "banana bread")
    a2 = await rest.send(alice, two, "banana boat")
    await rest.set_state(alice, two, "m.room.name", {"name": "banana room"})

    def q(**f: Any) -> Any:
        return search(rest, alice, "banana", order_by="recent", filter=f)

    assert found(await q(rooms=[one])) == [b1, a1]
    assert a2 in found(await q(not_rooms=[one]))
    assert found(await q(senders=[bob.user_id])) == [b1]
    assert b1 not in found(await q(not_senders=[bob.user_id]))
    assert found(await q(types=["m.room.message"], rooms=[two])) == [a2]
    assert [r["result"]["type"] for r in (await q(types=["m.room.n*"]))["results"]] == [
        "m.room.name"
    ]
    assert found(await q(not_types=["m.room.name"], rooms=[two])) == [a2]
    assert len((await q(limit=2))["results"]) == 2


async def test_pagination_has_no_duplicates(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    sent = [await rest.send(alice, room, f"cherry number {i}") for i in range(7)]
    for order in ("rank", "recent"):
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = await search(
                rest, alice, "cherry", next_batch=token, order_by=order, filter={"limit": 3}
            )
            assert page["count"] == 7
            seen.extend(found(page))
            pages += 1
            token = page.get("next_batch")
            if token is None:
                break
        assert sorted(seen) == sorted(sent), order
        assert len(seen) == len(set(seen))
        assert pages == 3
        if order == "recent":
            assert seen == list(reversed(sent))


async def test_event_context_and_profiles(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room)
    await rest.request(
        "PUT", f"{V3}/profile/{quote(bob.user_id)}/displayname", bob, {"displayname": "Bobby"}
    )
    before = [await rest.send(alice, room, f"before {i}") for i in range(3)]
    hit = await rest.send(bob, room, "the durian smells")
    after = [await rest.send(alice, room, f"after {i}") for i in range(3)]

    result = await search(
        rest,
        alice,
        "durian",
        event_context={"before_limit": 2, "after_limit": 1, "include_profile": True},
    )
    [only] = result["results"]
    assert only["result"]["event_id"] == hit
    context = only["context"]
    assert [e["event_id"] for e in context["events_before"]] == [before[2], before[1]]
    assert [e["event_id"] for e in context["events_after"]] == [after[0]]
    assert context["profile_info"][bob.user_id]["displayname"] == "Bobby"
    assert alice.user_id in context["profile_info"]
    # The tokens are /messages tokens around the context.
    page = await rest.messages(alice, room, limit="1", **{"from": context["start"]})
    assert [e["event_id"] for e in page["chunk"]] == [before[0]]
    page = await rest.messages(alice, room, dir="f", limit="1", **{"from": context["end"]})
    assert [e["event_id"] for e in page["chunk"]] == [after[1]]

    no_context = await search(rest, alice, "durian")
    assert "context" not in no_context["results"][0]


async def test_groupings_and_group_pagination(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    one = await rest.create_room(alice, preset="public_chat")
    two = await rest.create_room(alice)
    await rest.join(bob, one)
    for i in range(3):
        await rest.send(alice, one, f"grape {i}")
        await rest.send(bob, one, f"grape bob {i}")
        await rest.send(alice, two, f"grape two {i}")
    groupings = {"group_by": [{"key": "room_id"}, {"key": "sender"}]}
    result = await search(
        rest, alice, "grape", order_by="recent", groupings=groupings, filter={"limit": 4}
    )
    ids = set(found(result))
    by_room = result["groups"]["room_id"]
    assert set(by_room) <= {one, two}
    assert {i for g in by_room.values() for i in g["results"]} == ids
    by_sender = result["groups"]["sender"]
    assert {i for g in by_sender.values() for i in g["results"]} == ids
    assert sorted(g["order"] for g in by_room.values()) == list(range(1, len(by_room) + 1))

    # A group's token goes on within that group only.
    token = by_room[one]["next_batch"]
    rest_of_one = await search(
        rest,
        alice,
        "grape",
        next_batch=token,
        order_by="recent",
        groupings=groupings,
        filter={"limit": 10},
    )
    more = found(rest_of_one)
    assert more and all(r["result"]["room_id"] == one for r in rest_of_one["results"])
    assert not ids & set(more)
    assert len(more) + len(by_room[one]["results"]) == 6


async def test_left_rooms_and_private_rooms(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    shared = await rest.create_room(alice, preset="private_chat")
    await rest.invite(alice, shared, bob.user_id)
    await rest.join(bob, shared)
    seen_before = await rest.send(alice, shared, "kiwi before leaving")
    await rest.leave(bob, shared)
    await rest.send(alice, shared, "kiwi after leaving")
    private = await rest.create_room(alice, preset="private_chat")
    await rest.send(alice, private, "kiwi secret")
    public = await rest.create_room(alice, preset="public_chat")
    await rest.send(alice, public, "kiwi public but bob never joined")

    assert found(await search(rest, bob, "kiwi")) == [seen_before]
    assert found(await search(rest, bob, "secret")) == []
    assert len((await search(rest, alice, "kiwi"))["results"]) == 4


async def test_count_leaves_out_what_the_user_may_not_see(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(
        alice,
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    for i in range(3):
        await rest.send(alice, room, f"durian before bob joined {i}")
    await rest.invite(alice, room, bob.user_id)
    # Invited, bob may see none of them: nor may the count tell him they exist.
    invited = await search(rest, bob, "durian")
    assert (invited["results"], invited["count"]) == ([], 0)

    await rest.join(bob, room)
    seen = [await rest.send(alice, room, f"durian while bob is here {i}") for i in range(2)]
    await rest.leave(bob, room)
    await rest.send(alice, room, "durian after bob left")
    token = None
    pages: list[str] = []
    while True:
        page = await search(rest, bob, "durian", next_batch=token, filter={"limit": 1})
        assert page["count"] == 2
        pages += found(page)
        token = page.get("next_batch")
        if token is None:
            break
    assert sorted(pages) == sorted(seen)
    assert (await search(rest, alice, "durian"))["count"] == 6

    # Too many matches (in rooms bob ever was in) to check each: no count rather than one
    # that could include hidden events.
    client_core.search.max_counted = 5
    for user in (alice, bob):
        assert "count" not in await search(rest, user, "durian")


async def test_redacted_events_are_not_found(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    gone = await rest.send(alice, room, "mango regret")
    kept = await rest.send(alice, room, "mango fine")
    await rest.request(
        "PUT", f"{V3}/rooms/{quote(room)}/redact/{quote(gone)}/r1", alice, {"reason": "oops"}
    )
    assert found(await search(rest, alice, "mango")) == [kept]
    assert found(await search(rest, alice, "regret")) == []


async def test_bad_requests(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    url = f"{V3}/search"
    for body, errcode in [
        ({}, "M_BAD_JSON"),
        ({"search_categories": []}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": {}}}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": {"search_term": 3}}}, "M_BAD_JSON"),
        (
            {"search_categories": {"room_events": {"search_term": "x", "keys": ["content.x"]}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "order_by": "best"}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": "a"}}}},
            "M_BAD_JSON",
        ),
        (
            {
                "search_categories": {
                    "room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "x"}]}}
                }
            },
            "M_INVALID_PARAM",
        ),
    ]:
        out = await rest.request("POST", url, alice, body=body, expect=400)
        assert out["errcode"] == errcode, body
    out = await rest.request(
        "POST",
        url,
        alice,
        body={"search_categories": {"room_events": {"search_term": "x"}}},
        expect=400,
        next_batch="not-a-token",
    )
    assert out["errcode"] == "M_INVALID_PARAM"
    # Categories this server does not know are ignored.
    out = await rest.request("POST", url, alice, body={"search_categories": {"future": {}}})
    assert out == {"search_categories": {}}
    await rest.request("POST", url, body={"search_categories": {}}, expect=401)


async def test_include_state(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice, name="Lemon grove")
    await rest.send(alice, room, "lemon tart")
    result = await search(rest, alice, "lemon", include_state=True)
    assert set(result["state"]) == {room}
    types = {e["type"] for e in result["state"][room]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= types
