"""Room reads: /messages, /context, /members, /joined_members, /event and
/timestamp_to_event, with history visibility enforced, on both databases."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from homeserver.core import Core
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

MESSAGES = ("client-server/message_pagination.yaml", "/rooms/{roomId}/messages", "get")
CONTEXT = ("client-server/event_context.yaml", "/rooms/{roomId}/context/{eventId}", "get")
MEMBERS = ("client-server/rooms.yaml", "/rooms/{roomId}/members", "get")
JOINED = ("client-server/rooms.yaml", "/rooms/{roomId}/joined_members", "get")
GET_EVENT = ("client-server/rooms.yaml", "/rooms/{roomId}/event/{eventId}", "get")
BY_TS = ("client-server/room_event_by_timestamp.yaml", "/rooms/{roomId}/timestamp_to_event", "get")
ERROR = "api/client-server/definitions/errors/error.yaml"


def bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


async def messages(rest: RestHelper, user: User, room_id: str, **params: Any) -> Any:
    expect = params.pop("expect", 200)
    if "filter" in params:
        params["filter"] = json.dumps(params["filter"])
    body = await rest.messages(user, room_id, expect=expect, **params)
    if expect == 200:
        assert_response_valid(*MESSAGES, 200, body)
    return body


async def test_messages_paginates_both_ways(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    for i in range(7):
        await rest.send(alice, room_id, f"m{i}")

    first = await messages(rest, alice, room_id, limit="3")
    assert bodies(first["chunk"]) == ["m6", "m5", "m4"]
    second = await messages(rest, alice, room_id, limit="3", **{"from": first["end"]})
    assert second["start"] == first["end"]
    assert bodies(second["chunk"]) == ["m3", "m2", "m1"]
    rest_of_it = await messages(rest, alice, room_id, limit="100", **{"from": second["end"]})
    # m0, then the room's initial state back to the create event; no end: nothing before.
    assert bodies(rest_of_it["chunk"]) == ["m0"]
    assert rest_of_it["chunk"][-1]["type"] == "m.room.create"
    assert "end" not in rest_of_it

    # Forwards from the start, and back again from a forward token.
    forwards = await messages(rest, alice, room_id, dir="f", limit="5")
    assert forwards["chunk"][0]["type"] == "m.room.create"
    everything = await messages(rest, alice, room_id, dir="f", limit="100")
    assert bodies(everything["chunk"]) == [f"m{i}" for i in range(7)]
    assert "end" not in everything
    onwards = await messages(
        rest, alice, room_id, dir="f", limit="100", **{"from": forwards["end"]}
    )
    assert len(forwards["chunk"]) + len(onwards["chunk"]) == len(everything["chunk"])
    # `to` bounds the page: backwards from the end to the forward token above.
    bounded = await messages(rest, alice, room_id, limit="100", to=forwards["end"])
    assert [e["event_id"] for e in bounded["chunk"]] == [
        e["event_id"] for e in reversed(onwards["chunk"])
    ]
    # A /sync-style stream token ("s" + position) works as `from`.
    streamed = await messages(rest, alice, room_id, limit="2", **{"from": "s999999"})
    assert bodies(streamed["chunk"]) == ["m6", "m5"]


async def test_messages_filters_and_lazy_loading(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    await rest.send(alice, room_id, "a1")
    await rest.send(bob, room_id, "b1")
    await rest.send(bob, room_id, {"k": 1}, "org.example.thing")

    only = await messages(rest, alice, room_id, filter={"types": ["m.room.message"]})
    assert [e["type"] for e in only["chunk"]] == ["m.room.message"] * 2
    wildcard = await messages(rest, alice, room_id, filter={"types": ["org.example.*"]})
    assert [e["type"] for e in wildcard["chunk"]] == ["org.example.thing"]
    not_messages = await messages(
        rest, alice, room_id, filter={"not_types": ["m.room.*", "m.room.message"]}
    )
    assert [e["type"] for e in not_messages["chunk"]] == ["org.example.thing"]
    by_sender = await messages(
        rest, alice, room_id, filter={"types": ["m.room.message"], "senders": [bob.user_id]}
    )
    assert bodies(by_sender["chunk"]) == ["b1"]
    lazy = await messages(
        rest,
        alice,
        room_id,
        filter={"types": ["m.room.message"], "lazy_load_members": True},
    )
    assert sorted(e["state_key"] for e in lazy["state"]) == sorted([alice.user_id, bob.user_id])
    assert all(e["type"] == "m.room.member" for e in lazy["state"])
    limited = await messages(rest, alice, room_id, filter={"limit": 1}, limit="10")
    assert len(limited["chunk"]) == 1


async def test_messages_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice)
    outsider = await messages(rest, bob, room_id, expect=403)
    assert_valid(ERROR, outsider)  # message_pagination.yaml gives it no schema
    unknown = await messages(rest, bob, "!nope:test.local", expect=403)
    assert unknown["errcode"] == "M_FORBIDDEN"
    for params in (
        {"dir": "x"},
        {"from": "garbage"},
        {"to": "t1"},
        {"limit": "many"},
        {"limit": "-1"},
        {"filter": "{not json"},
        {"filter": '{"types": "m.room.message"}'},
        {"filter": "[]"},
    ):
        bad = await rest.request(
            "GET",
            f"{V3}/rooms/{quote(room_id)}/messages",
            alice,
            expect=400,
            **{"dir": "b", **params},
        )
        assert bad["errcode"] == "M_INVALID_PARAM", params
    no_dir = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/messages", alice, expect=400)
    assert no_dir["errcode"] == "M_INVALID_PARAM"


async def test_history_visibility(rest: RestHelper) -> None:
    """C-S API "Room History Visibility", "Server behaviour" rules 1 to 5."""
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room_id = await rest.create_room(alice, preset="public_chat")

    async def visible(user: User) -> list[str]:
        return bodies((await messages(rest, user, room_id, limit="100"))["chunk"])

    # shared: a later joiner sees everything from before, even what came before the setting.
    before = await rest.send(alice, room_id, "before")
    await rest.join(bob, room_id)
    assert await visible(bob) == ["before"]

    # joined: events sent while carol was not joined stay hidden from her.
    await rest.set_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"}
    )
    await rest.send(alice, room_id, "joined-only")
    await rest.join(carol, room_id)
    await rest.send(alice, room_id, "after carol")
    carols = await messages(rest, carol, room_id, limit="100")
    # "before" was sent under `shared` and carol has joined since (rule 3).
    assert bodies(carols["chunk"]) == ["after carol", "before"]
    # The m.room.history_visibility change is visible to her: it went from shared.
    # ...and she sees her own join.
    assert any(
        e["type"] == "m.room.member" and e["state_key"] == carol.user_id for e in carols["chunk"]
    )
    shown = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(before)}", carol)
    assert shown["content"]["body"] == "before"
    assert shown["unsigned"]["membership"] == "leave"  # she had not joined then

    # After leaving, bob sees nothing sent after his leave.
    await rest.leave(bob, room_id)
    await rest.send(alice, room_id, "after bob left")
    assert "after bob left" not in await visible(bob)
    assert "after carol" in await visible(bob)
    # A departed user's state reads show the room as it was when they left.
    await rest.set_state(alice, room_id, "m.room.name", {"name": "later"})
    bob_state = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/state", bob)
    assert not any(e["type"] == "m.room.name" for e in bob_state)

    # world_readable: anyone can read, without joining.
    stranger = await rest.register("dave")
    assert await messages(rest, stranger, room_id, expect=403)
    await rest.set_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    await rest.send(alice, room_id, "public now")
    assert await visible(stranger) == ["public now"]

    # invited: an invitee sees events from their invite on.
    invited_only = {
        "type": "m.room.history_visibility",
        "content": {"history_visibility": "invited"},
    }
    private = await rest.create_room(alice, initial_state=[invited_only])
    await rest.send(alice, private, "secret")
    await rest.invite(alice, private, carol.user_id)
    await rest.send(alice, private, "for invitees")
    assert bodies((await messages(rest, carol, private))["chunk"]) == ["for invitees"]


async def test_get_event_visibility(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice)
    event_id = await rest.send(alice, room_id, "hi")
    path = f"{V3}/rooms/{quote(room_id)}/event/{quote(event_id)}"
    got = await rest.request("GET", path, alice)
    assert_response_valid(*GET_EVENT, 200, got)
    assert got["sender"] == alice.user_id and got["unsigned"]["membership"] == "join"
    for user, event in ((bob, event_id), (alice, "$nope")):
        missing = await rest.request(
            "GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(event)}", user, expect=404
        )
        assert_response_valid(*GET_EVENT, 404, missing)
    other = await rest.create_room(alice)
    wrong_room = f"{V3}/rooms/{quote(other)}/event/{quote(event_id)}"
    assert (await rest.request("GET", wrong_room, alice, expect=404))["errcode"] == "M_NOT_FOUND"


async def test_members_and_joined_members(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    await client_core.storage.db.execute(
        "UPDATE users SET displayname = 'Alice', avatar_url = 'mxc://test.local/a'"
        " WHERE user_id = $1",
        alice.user_id,
    )
    room_id = await rest.create_room(alice, preset="public_chat")
    room = f"{V3}/rooms/{quote(room_id)}"
    first = await messages(rest, alice, room_id, limit="1")
    await rest.join(bob, room_id)
    await rest.invite(alice, room_id, carol.user_id)

    members = await rest.request("GET", f"{room}/members", alice)
    assert_response_valid(*MEMBERS, 200, members)
    by_user = {e["state_key"]: e["content"]["membership"] for e in members["chunk"]}
    assert by_user == {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"}
    joined_only = await rest.request("GET", f"{room}/members", alice, membership="join")
    assert {e["state_key"] for e in joined_only["chunk"]} == {alice.user_id, bob.user_id}
    not_joined = await rest.request("GET", f"{room}/members", alice, not_membership="join")
    assert {e["state_key"] for e in not_joined["chunk"]} == {carol.user_id}
    # `at` a pagination token: the members then (only alice).
    at_start = await rest.request("GET", f"{room}/members", alice, at=first["start"])
    assert {e["state_key"] for e in at_start["chunk"]} == {alice.user_id}
    bad = await rest.request("GET", f"{room}/members", alice, membership="x", expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"

    joined = await rest.request("GET", f"{room}/joined_members", bob)
    assert_response_valid(*JOINED, 200, joined)
    assert joined == {
        "joined": {
            alice.user_id: {"display_name": "Alice", "avatar_url": "mxc://test.local/a"},
            bob.user_id: {},
        }
    }
    stranger = await rest.register("dave")
    for path in (f"{room}/members", f"{room}/joined_members"):
        refused = await rest.request("GET", path, stranger, expect=403)
        assert_valid(ERROR, refused)
    # carol is invited, not joined: no joined_members for her yet.
    await rest.request("GET", f"{room}/joined_members", carol, expect=403)


async def test_context(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    ids = [await rest.send(alice if i % 2 else bob, room_id, f"m{i}") for i in range(6)]
    path = f"{V3}/rooms/{quote(room_id)}/context/{quote(ids[3])}"
    body = await rest.request("GET", path, alice, limit="4")
    assert_response_valid(*CONTEXT, 200, body)
    assert body["event"]["event_id"] == ids[3]
    assert bodies(body["events_before"]) == ["m2", "m1"]
    assert bodies(body["events_after"]) == ["m4", "m5"]
    assert {(e["type"], e["state_key"]) for e in body["state"]} >= {
        ("m.room.create", ""),
        ("m.room.member", bob.user_id),
    }
    # The tokens continue pagination on either side.
    earlier = await messages(rest, alice, room_id, limit="1", **{"from": body["start"]})
    assert bodies(earlier["chunk"]) == ["m0"]
    later = await messages(rest, alice, room_id, dir="f", **{"from": body["end"]})
    assert later["chunk"] == []

    lazy = await rest.request(
        "GET",
        path,
        alice,
        limit="2",
        filter=json.dumps({"lazy_load_members": True, "senders": [bob.user_id]}),
    )
    assert bodies(lazy["events_before"]) == ["m2"] and bodies(lazy["events_after"]) == ["m4"]
    assert {e["state_key"] for e in lazy["state"]} == {alice.user_id, bob.user_id}

    stranger = await rest.register("carol")
    await rest.request("GET", path, stranger, expect=403)
    missing = await rest.request(
        "GET", f"{V3}/rooms/{quote(room_id)}/context/{quote('$nope')}", alice, expect=404
    )
    assert_valid(ERROR, missing)


async def test_timestamp_to_event(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    event_id = await rest.send(alice, room_id, "now")
    event = await client_core.storage.events.get_event(event_id)
    assert event is not None
    path = f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event"
    later = await rest.request("GET", path, alice, ts=str(event.origin_server_ts + 1), dir="b")
    assert_response_valid(*BY_TS, 200, later)
    assert later == {"event_id": event_id, "origin_server_ts": event.origin_server_ts}
    first = await rest.request("GET", path, alice, ts="0", dir="f")
    assert first["event_id"] != event_id
    none = await rest.request(
        "GET", path, alice, ts=str(event.origin_server_ts + 1), dir="f", expect=404
    )
    assert_response_valid(*BY_TS, 404, none)
    bad = await rest.request("GET", path, alice, ts="x", dir="f", expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    await rest.request("GET", path, alice, dir="f", expect=400)
    stranger = await rest.register("bob")
    await rest.request("GET", path, stranger, ts="0", dir="f", expect=403)
