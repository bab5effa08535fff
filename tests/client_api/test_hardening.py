"""Requests that once got past a check or crashed the server (review of the client API)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from tests.helpers.rest import V3, RestHelper


async def test_a_client_cannot_vouch_for_its_own_restricted_join(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    other = await rest.create_room(alice)
    room = await rest.create_room(alice, room_version="10", preset="public_chat")
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": other}]}
    await rest.set_state(alice, room, "m.room.join_rules", rules)
    await rest.join(bob, room, expect=403)
    # Naming a member who may invite in the content would pass the auth rules, which trust a
    # server-signed join_authorised_via_users_server; the server must never sign one for a
    # client.
    forged = {"membership": "join", "join_authorised_via_users_server": alice.user_id}
    await rest.set_state(bob, room, "m.room.member", forged, state_key=bob.user_id, expect=403)
    members = await rest.request("GET", f"{V3}/rooms/{quote(room)}/joined_members", alice)
    assert list(members["joined"]) == [alice.user_id]


async def test_membership_must_be_a_string(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    bad = await rest.set_state(
        alice, room, "m.room.member", {"membership": []}, state_key=alice.user_id, expect=400
    )
    assert bad["errcode"] == "M_BAD_JSON"


async def test_non_json_values_are_refused(rest: RestHelper, client: TestClient[Any, Any]) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    path = f"{V3}/rooms/{quote(room)}/send/m.room.message/"
    deep = "[" * 100_000 + "]" * 100_000
    for i, raw in enumerate(['{"n": NaN}', '{"n": Infinity}', '{"s": "\\ud800"}', deep]):
        response = await client.put(f"{path}t{i}", data=raw.encode(), headers=alice.headers)
        assert response.status == 400, raw[:20]
        assert (await response.json())["errcode"] == "M_NOT_JSON"


async def test_out_of_range_numbers_are_invalid_params(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    for token in ("t9999999999999999999-1", "s9999999999999999999", "9999999999999999999"):
        body = await rest.messages(alice, room, expect=400, **{"from": token})
        assert body["errcode"] == "M_INVALID_PARAM"
    body = await rest.request(
        "GET",
        f"/_matrix/client/v1/rooms/{quote(room)}/timestamp_to_event",
        alice,
        expect=400,
        ts="99999999999999999999",
        dir="f",
    )
    assert body["errcode"] == "M_INVALID_PARAM"


async def test_unknown_login_types_are_bad_requests(rest: RestHelper) -> None:
    for body in (
        {"type": "m.login.token", "token": "x"},
        {"password": "x", "user": "a"},
        {"type": "m.login.password", "identifier": {"type": "m.id.phone"}},
    ):
        reply = await rest.request("POST", f"{V3}/login", body=body, expect=400)
        assert reply["errcode"] == "M_UNKNOWN"


async def test_redacted_content_stays_hidden_in_the_federation_format(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    secret = await rest.send(alice, room, "my password is hunter2")
    await rest.request("PUT", f"{V3}/rooms/{quote(room)}/redact/{quote(secret)}/r1", alice, body={})
    sync_filter = json.dumps({"event_format": "federation"})
    body = await rest.sync(alice, filter=sync_filter)
    assert "hunter2" not in json.dumps(body)


async def test_a_transaction_id_is_scoped_to_its_endpoint(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    first = await rest.create_room(alice)
    second = await rest.create_room(alice)
    one = await rest.send(alice, first, "in the first room", txn_id="same")
    two = await rest.send(alice, second, "in the second room", txn_id="same")
    assert one != two
    assert await rest.send(alice, first, "retry", txn_id="same") == one
    redaction = await rest.request(
        "PUT", f"{V3}/rooms/{quote(first)}/redact/{quote(one)}/same", alice, body={}
    )
    assert redaction["event_id"] not in (one, two)


async def test_timestamp_to_event_hides_events_after_a_kick(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(alice, preset="public_chat")
    await rest.request(
        "PUT",
        f"{V3}/rooms/{quote(room)}/state/m.room.history_visibility/",
        alice,
        body={"history_visibility": "joined"},
    )
    await rest.join(bob, room)
    await rest.request(
        "POST", f"{V3}/rooms/{quote(room)}/kick", alice, body={"user_id": bob.user_id}
    )
    await rest.send(alice, room, "after bob left")
    path = f"/_matrix/client/v1/rooms/{quote(room)}/timestamp_to_event"
    found = await rest.request("GET", path, alice, ts="9999999999999", dir="b")
    hidden = await rest.request("GET", path, bob, expect=404, ts="9999999999999", dir="b")
    assert hidden["errcode"] == "M_NOT_FOUND" and found["event_id"]


async def test_nul_characters_are_stored_and_searched(rest: RestHelper) -> None:
    """JSON strings may hold U+0000, which PostgreSQL text cannot: events carrying it in
    what the indexers store (names, bodies, relation targets, display names) are accepted
    on both engines and come back as sent."""
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, preset="public_chat", name="na\u0000me")
    body_id = await rest.send(alice, room_id, "nul\u0000body")
    await rest.send(
        alice,
        room_id,
        {
            "msgtype": "m.text",
            "body": "in a thread nobody started",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$made\u0000up"},
        },
    )
    path = f"{V3}/profile/{quote(alice.user_id)}/displayname"
    await rest.request("PUT", path, alice, {"displayname": "Al\u0000ice"})
    event = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(body_id)}", alice)
    assert event["content"]["body"] == "nul\u0000body"
    found = await rest.request(
        "POST",
        f"{V3}/search",
        alice,
        {"search_categories": {"room_events": {"search_term": "body"}}},
    )
    results = found["search_categories"]["room_events"]["results"]
    assert [r["result"]["event_id"] for r in results] == [body_id]
