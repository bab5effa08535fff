"""Typing, receipts, read markers and presence (C-S API "Typing Notifications", "Receipts",
"Fully read markers", "Presence"): the endpoints, their errors, and the ephemeral and presence
events /sync will read from the handlers."""

from __future__ import annotations

import asyncio

from homeserver.core import Core
from homeserver.handlers.presence import IDLE_TIMEOUT_MS
from homeserver.storage.stores.user_data import PresenceRow
from tests.client_api.user_data_rooms import make_room, send_message
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

ERROR = "api/client-server/definitions/errors/error.yaml"




def event_schema(name: str) -> str:
    return f"event-schemas/schema/{name}.yaml"


async def test_typing(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id, bob.user_id)
    typing = client_core.typing
    path = f"{V3}/rooms/{room_id}/typing/{alice.user_id}"
    start = typing.position
    with client_core.notifier.listen(bob.user_id, [room_id]) as listener:
        done = await rest.request("PUT", path, alice, {"typing": True, "timeout": 30000})
        assert await listener.wait(1)
    assert_response_valid(
        "client-server/typing.yaml", "/rooms/{roomId}/typing/{userId}", "put", 200, done
    )
    updates = typing.ephemeral_events([room_id, "!other:test.local"], start)
    assert updates == {room_id: {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}}
    assert_valid(event_schema("m.typing"), updates[room_id])
    # An initial sync sees who types now; nothing changed since the current position.
    assert typing.ephemeral_events([room_id], 0) == updates
    assert typing.ephemeral_events([room_id], typing.position) == {}

    await rest.request(
        "PUT", f"{V3}/rooms/{room_id}/typing/{bob.user_id}", bob, {"typing": True, "timeout": 50}
    )
    assert typing.typing_users(room_id) == sorted([alice.user_id, bob.user_id])
    before_expiry = typing.position
    await asyncio.sleep(0.2)  # bob's 50 ms run out
    assert typing.typing_users(room_id) == [alice.user_id]
    assert typing.position > before_expiry

    stopped_at = typing.position
    await rest.request("PUT", path, alice, {"typing": False})
    assert typing.ephemeral_events([room_id], stopped_at) == {
        room_id: {"type": "m.typing", "content": {"user_ids": []}}
    }
    assert typing.ephemeral_events([room_id], 0) == {}


async def test_typing_errors(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id)
    other = await rest.request(
        "PUT", f"{V3}/rooms/{room_id}/typing/{alice.user_id}", bob, {"typing": True}, 403
    )
    assert_valid(ERROR, other)
    assert other["errcode"] == "M_FORBIDDEN"
    not_joined = await rest.request(
        "PUT", f"{V3}/rooms/{room_id}/typing/{bob.user_id}", bob, {"typing": True}, 403
    )
    assert not_joined["errcode"] == "M_FORBIDDEN"
    path = f"{V3}/rooms/{room_id}/typing/{alice.user_id}"
    missing = await rest.request("PUT", path, alice, {}, 400)
    assert missing["errcode"] == "M_MISSING_PARAM"
    bad = await rest.request("PUT", path, alice, {"typing": True, "timeout": "soon"}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    negative = await rest.request("PUT", path, alice, {"typing": True, "timeout": -1}, 400)
    assert negative["errcode"] == "M_INVALID_PARAM"


async def test_receipts(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id, bob.user_id)
    first = await send_message(client_core, room_id, alice.user_id, "one")
    second = await send_message(client_core, room_id, alice.user_id, "two")
    receipts = client_core.receipts
    start = await receipts.current_position()
    op = "/rooms/{roomId}/receipt/{receiptType}/{eventId}"

    with client_core.notifier.listen(alice.user_id, [room_id]) as listener:
        done = await rest.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{second}", bob, {})
        assert await listener.wait(1)
    assert_response_valid("client-server/receipts.yaml", op, "post", 200, done)
    await rest.request(
        "POST", f"{V3}/rooms/{room_id}/receipt/m.read/{first}", bob, {"thread_id": "main"}
    )
    await rest.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read.private/{second}", bob)
    # An older receipt than the one already sent changes nothing.
    moved_back = await receipts.current_position()
    await rest.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{first}", bob, {})
    assert await receipts.current_position() == moved_back
    end = await receipts.current_position()
    assert end == start + 3

    seen_by_alice = await receipts.receipt_events(alice.user_id, [room_id], start, end)
    event = seen_by_alice[room_id]
    assert_valid(event_schema("m.receipt"), event)
    content = event["content"]
    assert set(content) == {first, second}
    assert set(content[second]) == {"m.read"}  # bob's private receipt is his alone
    assert set(content[second]["m.read"][bob.user_id]) == {"ts"}
    assert content[first]["m.read"][bob.user_id]["thread_id"] == "main"
    seen_by_bob = await receipts.receipt_events(bob.user_id, [room_id], start, end)
    assert set(seen_by_bob[room_id]["content"][second]) == {"m.read", "m.read.private"}
    assert await receipts.receipt_events(bob.user_id, [room_id], end, end) == {}
    assert await receipts.receipt_events(bob.user_id, [], 0, end) == {}


async def test_receipt_errors(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id)
    event_id = await send_message(client_core, room_id, alice.user_id)
    base = f"{V3}/rooms/{room_id}/receipt"
    op = "/rooms/{roomId}/receipt/{receiptType}/{eventId}"
    for body in ({"thread_id": ""}, {"thread_id": 5}):
        bad = await rest.request("POST", f"{base}/m.read/{event_id}", alice, body, 400)
        assert_response_valid("client-server/receipts.yaml", op, "post", 400, bad)
        assert bad["errcode"] == "M_INVALID_PARAM"
    threaded_marker = await rest.request(
        "POST", f"{base}/m.fully_read/{event_id}", alice, {"thread_id": "main"}, 400
    )
    assert threaded_marker["errcode"] == "M_INVALID_PARAM"
    unknown_type = await rest.request("POST", f"{base}/m.seen/{event_id}", alice, {}, 400)
    assert unknown_type["errcode"] == "M_INVALID_PARAM"
    not_joined = await rest.request("POST", f"{base}/m.read/{event_id}", bob, {}, 403)
    assert not_joined["errcode"] == "M_FORBIDDEN"
    unknown_event = await rest.request("POST", f"{base}/m.read/$nope", alice, {}, 404)
    assert unknown_event["errcode"] == "M_NOT_FOUND"
    other_room = await make_room(client_core, alice.user_id)
    elsewhere = await rest.request(
        "POST", f"{V3}/rooms/{other_room}/receipt/m.read/{event_id}", alice, {}, 404
    )
    assert elsewhere["errcode"] == "M_NOT_FOUND"


async def test_read_markers(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id, bob.user_id)
    first = await send_message(client_core, room_id, alice.user_id, "one")
    second = await send_message(client_core, room_id, alice.user_id, "two")
    path = f"{V3}/rooms/{room_id}/read_markers"
    done = await rest.request(
        "POST", path, bob, {"m.fully_read": second, "m.read": first, "m.read.private": second}
    )
    assert_response_valid(
        "client-server/read_markers.yaml", "/rooms/{roomId}/read_markers", "post", 200, done
    )
    marker = f"{V3}/user/{bob.user_id}/rooms/{room_id}/account_data/m.fully_read"
    assert await rest.request("GET", marker, bob) == {"event_id": second}
    # The marker does not move backwards, through either endpoint.
    await rest.request("POST", path, bob, {"m.fully_read": first})
    await rest.request("POST", f"{V3}/rooms/{room_id}/receipt/m.fully_read/{first}", bob, {})
    assert await rest.request("GET", marker, bob) == {"event_id": second}

    updates = await client_core.receipts.receipt_events(bob.user_id, [room_id], 0, 10**9)
    content = updates[room_id]["content"]
    assert bob.user_id in content[first]["m.read"]
    assert bob.user_id in content[second]["m.read.private"]
    data = await client_core.account_data.changes(bob.user_id, None, 0, 10**9)
    assert data.rooms[room_id] == [{"type": "m.fully_read", "content": {"event_id": second}}]
    assert_valid(event_schema("m.fully_read"), data.rooms[room_id][0])

    outsider = await rest.register("carol")
    refused = await rest.request("POST", path, outsider, {"m.fully_read": first}, 403)
    assert refused["errcode"] == "M_FORBIDDEN"
    bad = await rest.request("POST", path, bob, {"m.read": 1}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    unknown = await rest.request("POST", path, bob, {"m.fully_read": "$nope"}, 404)
    assert unknown["errcode"] == "M_NOT_FOUND"


async def test_presence(rest: RestHelper, client_core: Core) -> None:
    api = "client-server/presence.yaml"
    op = "/presence/{userId}/status"
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    path = f"{V3}/presence/{alice.user_id}/status"
    # Never set: offline.
    assert await rest.request("GET", path, alice) == {"presence": "offline"}
    presence = client_core.presence
    start = await presence.current_position()
    done = await rest.request("PUT", path, alice, {"presence": "online", "status_msg": "here"})
    assert_response_valid(api, op, "put", 200, done)
    own = await rest.request("GET", path, alice)
    assert_response_valid(api, op, "get", 200, own)
    assert own["presence"] == "online" and own["status_msg"] == "here"
    assert own["currently_active"] is True and 0 <= own["last_active_ago"] < 60_000

    # Only users who share a room may look.
    hidden = await rest.request("GET", path, bob, expect=403)
    assert_response_valid(api, op, "get", 403, hidden)
    assert hidden["errcode"] == "M_FORBIDDEN"
    room_id = await make_room(client_core, alice.user_id)
    with client_core.notifier.listen(bob.user_id, [room_id]) as listener:
        await rest.request("PUT", path, alice, {"presence": "unavailable"})
        assert await listener.wait(1)
    await make_room(client_core, alice.user_id, bob.user_id)
    seen = await rest.request("GET", path, bob)
    assert_response_valid(api, op, "get", 200, seen)
    assert seen["presence"] == "unavailable" and "currently_active" not in seen
    assert "status_msg" not in seen  # not given again: cleared

    end = await presence.current_position()
    assert end == start + 2
    for_bob = await presence.presence_events(bob.user_id, start, end)
    assert [e["sender"] for e in for_bob] == [alice.user_id]
    assert_valid(event_schema("m.presence"), for_bob[0])
    assert for_bob[0]["content"]["presence"] == "unavailable"
    assert await presence.presence_events(carol.user_id, start, end) == []
    assert await presence.presence_events(bob.user_id, end, end) == []

    for unknown in ("@nobody:test.local", "@alice:elsewhere.example"):
        missing = await rest.request("GET", f"{V3}/presence/{unknown}/status", alice, None, 404)
        assert_response_valid(api, op, "get", 404, missing)
        assert missing["errcode"] == "M_NOT_FOUND"
    other = await rest.request("PUT", path, bob, {"presence": "online"}, 403)
    assert other["errcode"] == "M_FORBIDDEN"
    bad = await rest.request("PUT", path, alice, {"presence": "away"}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    missing_state = await rest.request("PUT", path, alice, {}, 400)
    assert missing_state["errcode"] == "M_MISSING_PARAM"


async def test_presence_idle_and_activity(client_core: Core) -> None:
    presence = client_core.presence
    now = client_core.clock.time_ms()
    idle = presence.format(
        PresenceRow("@a:test.local", "online", None, now - IDLE_TIMEOUT_MS - 1, 1)
    )
    assert idle["presence"] == "unavailable" and "currently_active" not in idle
    recent = presence.format(PresenceRow("@a:test.local", "online", "hi", now - 1000, 1))
    assert recent["currently_active"] is True and recent["status_msg"] == "hi"

    user = "@active:test.local"
    start = await presence.current_position()
    await presence.note_active(user)
    await presence.note_active(user)  # within a minute: not written again
    assert await presence.current_position() == start + 1
    row = await client_core.user_data.get_presence(user)
    assert row is not None and row.state == "online"
    # /sync's set_presence: unavailable marks the user idle; offline changes nothing.
    await presence.on_sync(user, "unavailable")
    await presence.on_sync(user, "offline")
    row = await client_core.user_data.get_presence(user)
    assert row is not None and row.state == "unavailable"
    assert await presence.current_position() == start + 2


async def test_sync_shows_typing_receipts_presence_and_account_data(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await make_room(client_core, alice.user_id, bob.user_id)
    event_id = await send_message(client_core, room_id, alice.user_id)
    # offline: this sync must not make bob online.
    first = await rest.request("GET", f"{V3}/sync", bob, set_presence="offline")
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, first)

    await rest.request(
        "PUT", f"{V3}/rooms/{room_id}/typing/{alice.user_id}", alice, {"typing": True}
    )
    await rest.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{event_id}", alice, {})
    await rest.request(
        "PUT", f"{V3}/presence/{alice.user_id}/status", alice, {"presence": "online"}
    )
    await rest.request("PUT", f"{V3}/user/{bob.user_id}/account_data/org.example.a", bob, {"a": 1})
    await rest.request("PUT", f"{V3}/user/{bob.user_id}/rooms/{room_id}/tags/u.x", bob, {})
    second = await rest.request(
        "GET", f"{V3}/sync", bob, since=first["next_batch"], set_presence="offline"
    )
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, second)
    joined = second["rooms"]["join"][room_id]
    ephemeral = {e["type"]: e["content"] for e in joined["ephemeral"]["events"]}
    assert ephemeral["m.typing"] == {"user_ids": [alice.user_id]}
    assert alice.user_id in ephemeral["m.receipt"][event_id]["m.read"]
    assert joined["account_data"]["events"] == [{"type": "m.tag", "content": {"tags": {"u.x": {}}}}]
    assert {"type": "org.example.a", "content": {"a": 1}} in second["account_data"]["events"]
    senders = {e["sender"]: e["content"]["presence"] for e in second["presence"]["events"]}
    assert senders == {alice.user_id: "online"}

    # A long poll ends when alice stops typing, with nothing else new.
    poll = asyncio.create_task(
        rest.request(
            "GET",
            f"{V3}/sync",
            bob,
            since=second["next_batch"],
            timeout="5000",
            set_presence="offline",
        )
    )
    await asyncio.sleep(0.1)
    assert not poll.done()
    await rest.request(
        "PUT", f"{V3}/rooms/{room_id}/typing/{alice.user_id}", alice, {"typing": False}
    )
    third = await asyncio.wait_for(poll, 2)
    events = third["rooms"]["join"][room_id]["ephemeral"]["events"]
    assert events == [{"type": "m.typing", "content": {"user_ids": []}}]
