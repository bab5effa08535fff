"""Sending events: PUT send (idempotent per device and transaction ID, across restarts),
state PUT/GET and redactions, on both databases."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.auth import Requester
from tests.client_api.test_rooms import room_state
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

SEND = ("client-server/room_send.yaml", "/rooms/{roomId}/send/{eventType}/{txnId}", "put")
PUT_STATE = ("client-server/room_state.yaml", "/rooms/{roomId}/state/{eventType}/{stateKey}", "put")
GET_STATE = ("client-server/rooms.yaml", "/rooms/{roomId}/state/{eventType}/{stateKey}", "get")
REDACT = ("client-server/redaction.yaml", "/rooms/{roomId}/redact/{eventId}/{txnId}", "put")
GET_EVENT = ("client-server/rooms.yaml", "/rooms/{roomId}/event/{eventId}", "get")
ERROR = "api/client-server/definitions/errors/error.yaml"


async def test_send_is_idempotent_per_device(
    rest: RestHelper, client_core: Core, server_keys: ServerKeys
) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    path = f"{V3}/rooms/{quote(room_id)}/send/m.room.message/txn1"
    content = {"msgtype": "m.text", "body": "hello"}
    first = await rest.request("PUT", path, alice, body=content)
    assert_response_valid(*SEND, 200, first)
    again = await rest.request("PUT", path, alice, body=content)
    assert again == first
    # Another device of the same user has its own transaction IDs.
    laptop = await rest.login("alice")
    other = await rest.request("PUT", path, laptop, body=content)
    assert other["event_id"] != first["event_id"]
    # After a restart (a new Core over the same database) the mapping is still there.
    restarted = build_core(client_core.storage, "test.local", server_keys)
    requester = Requester(alice.user_id, alice.device_id, False, "")
    event_id = await restarted.room_api.send.send_message(
        requester, room_id, "m.room.message", content, "txn1"
    )
    assert event_id == first["event_id"]
    await restarted.persister.close()
    # The sender's device sees its transaction ID; another device does not.
    own = await rest.request(
        "GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(first['event_id'])}", alice
    )
    assert_response_valid(*GET_EVENT, 200, own)
    assert own["unsigned"]["transaction_id"] == "txn1"
    assert own["content"] == content and own["room_id"] == room_id
    seen_elsewhere = await rest.request(
        "GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(first['event_id'])}", laptop
    )
    assert "transaction_id" not in seen_elsewhere["unsigned"]


async def test_concurrent_retries_send_once(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    requester = Requester(alice.user_id, alice.device_id, False, "")
    send = client_core.room_api.send
    ids = await asyncio.gather(
        *(
            send.send_message(requester, room_id, "m.room.message", {"body": "x"}, "t")
            for _ in "123"
        )
    )
    assert len(set(ids)) == 1


async def test_send_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice)
    # Not in the room: the auth rules refuse.
    refused = await rest.send(bob, room_id, expect=403)
    assert refused == "M_FORBIDDEN"
    unknown = await rest.send(alice, "!nope:test.local", expect=404)
    assert unknown == "M_NOT_FOUND"
    not_object = await rest.client.put(
        f"{V3}/rooms/{quote(room_id)}/send/m.room.message/x", json=[1], headers=alice.headers
    )
    body = await not_object.json()
    assert not_object.status == 400 and body["errcode"] == "M_BAD_JSON"
    assert_response_valid(*SEND, 400, body)
    too_big = await rest.send(alice, room_id, {"body": "x" * 70_000}, expect=413)
    assert too_big == "M_TOO_LARGE"


async def test_state_put_and_get(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    room = f"{V3}/rooms/{quote(room_id)}"

    put = await rest.set_state(alice, room_id, "m.room.name", {"name": "Lobby"})
    assert_response_valid(*PUT_STATE, 200, put)
    # The same content again from the same sender sends nothing new.
    assert await rest.set_state(alice, room_id, "m.room.name", {"name": "Lobby"}) == put
    # The no-state-key form is the empty state key.
    no_key = await rest.request("GET", f"{room}/state/m.room.name", alice)
    assert no_key == {"name": "Lobby"}
    with_slash = await rest.request("GET", f"{room}/state/m.room.name/", bob)
    assert_response_valid(*GET_STATE, 200, with_slash)
    assert with_slash == {"name": "Lobby"}
    as_event = await rest.request("GET", f"{room}/state/m.room.name/", alice, format="event")
    # rooms.yaml's oneOf (any object, or a state event) matches an event twice; check the
    # event against the state event schema itself.
    assert_valid("event-schemas/schema/core-event-schema/state_event.yaml", as_event)
    assert as_event["event_id"] == put["event_id"] and as_event["state_key"] == ""
    await rest.request("PUT", f"{room}/state/m.room.topic", alice, body={"topic": "t"})
    assert (await rest.request("GET", f"{room}/state/m.room.topic", alice)) == {"topic": "t"}

    # State keys may hold slashes and other characters.
    await rest.set_state(alice, room_id, "org.example.x", {"a": 1}, state_key="a/b c")
    got = await rest.request("GET", f"{room}/state/org.example.x/{quote('a/b c')}", alice)
    assert got == {"a": 1}

    missing = await rest.request("GET", f"{room}/state/m.room.avatar/", alice, expect=404)
    assert_valid(ERROR, missing)  # rooms.yaml gives these errors no schema
    assert missing["errcode"] == "M_NOT_FOUND"
    # bob (power 0) may not change the name (state_default 50).
    refused = await rest.set_state(bob, room_id, "m.room.name", {"name": "mine"}, expect=403)
    assert_response_valid(*PUT_STATE, 403, refused)
    bad = await rest.request("GET", f"{room}/state/m.room.name/", alice, expect=400, format="x")
    assert bad["errcode"] == "M_INVALID_PARAM"
    stranger = await rest.register("carol")
    outsider = await rest.request("GET", f"{room}/state/m.room.name/", stranger, expect=403)
    assert_valid(ERROR, outsider)
    all_state = await rest.request("GET", f"{room}/state", stranger, expect=403)
    assert_valid(ERROR, all_state)
    full = await rest.request("GET", f"{room}/state", bob)
    assert_response_valid("client-server/rooms.yaml", "/rooms/{roomId}/state", "get", 200, full)
    # In the timeline a state event says in unsigned what it replaced.
    hall = await rest.set_state(alice, room_id, "m.room.name", {"name": "Hall"})
    name = await rest.request("GET", f"{room}/event/{quote(hall['event_id'])}", bob)
    assert name["unsigned"]["prev_content"] == {"name": "Lobby"}
    assert name["unsigned"]["replaces_state"] == put["event_id"]


async def test_member_state_put_joins_with_profile(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    await client_core.storage.db.execute(
        "UPDATE users SET displayname = 'Bob' WHERE user_id = $1", bob.user_id
    )
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.set_state(bob, room_id, "m.room.member", {"membership": "join"}, bob.user_id)
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"] == {
        "membership": "join",
        "displayname": "Bob",
    }
    bad = await rest.set_state(alice, room_id, "m.room.member", {"membership": "join"}, expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_canonical_alias_must_point_at_the_room(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, room_alias_name="here")
    other = await rest.create_room(alice, room_alias_name="there")
    ok = await rest.set_state(
        alice, room_id, "m.room.canonical_alias", {"alias": "#here:test.local", "alt_aliases": []}
    )
    assert_response_valid(*PUT_STATE, 200, ok)
    for content, errcode in (
        ({"alias": "#there:test.local"}, "M_BAD_ALIAS"),
        ({"alias": "#missing:test.local"}, "M_BAD_ALIAS"),
        ({"alt_aliases": ["#here:test.local", "#x:elsewhere.example"]}, "M_BAD_ALIAS"),
        ({"alias": "not-an-alias"}, "M_INVALID_PARAM"),
        ({"alt_aliases": "#here:test.local"}, "M_INVALID_PARAM"),
    ):
        refused = await rest.set_state(
            alice, room_id, "m.room.canonical_alias", content, expect=400
        )
        assert_response_valid(*PUT_STATE, 400, refused)
        assert refused["errcode"] == errcode, content
    assert other


async def test_redactions(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat", room_version="10")
    await rest.join(bob, room_id)
    room = f"{V3}/rooms/{quote(room_id)}"
    bobs = await rest.send(bob, room_id, "from bob")
    alices = await rest.send(alice, room_id, "from alice")

    # bob may redact his own event, not alice's (redact level 50).
    own = await rest.request("PUT", f"{room}/redact/{quote(bobs)}/r1", bob, body={"reason": "oops"})
    assert_response_valid(*REDACT, 200, own)
    assert await rest.request("PUT", f"{room}/redact/{quote(bobs)}/r1", bob, body={}) == own
    refused = await rest.request(
        "PUT", f"{room}/redact/{quote(alices)}/r2", bob, body={}, expect=403
    )
    assert refused["errcode"] == "M_FORBIDDEN"
    # alice (power 100) may redact bob's.
    by_admin = await rest.request("PUT", f"{room}/redact/{quote(bobs)}/r3", alice, body={})
    assert by_admin["event_id"] != own["event_id"]

    redacted = await rest.request("GET", f"{room}/event/{quote(bobs)}", alice)
    assert_response_valid(*GET_EVENT, 200, redacted)
    assert redacted["content"] == {}
    because = redacted["unsigned"]["redacted_because"]
    assert because["event_id"] == own["event_id"] and because["redacts"] == bobs
    assert because["content"] == {"reason": "oops"}
    intact = await rest.request("GET", f"{room}/event/{quote(alices)}", bob)
    assert intact["content"]["body"] == "from alice"

    # Redacting through PUT /send with content.redacts (spec v1.18) follows the same rules.
    refused = await rest.send(bob, room_id, {"redacts": alices}, "m.room.redaction", expect=403)
    assert refused == "M_FORBIDDEN"
    through_send = await rest.send(alice, room_id, {"redacts": alices}, "m.room.redaction")
    assert (await rest.request("GET", f"{room}/event/{quote(alices)}", bob))["content"] == {}
    assert through_send.startswith("$")
    missing = await rest.send(alice, room_id, {}, "m.room.redaction", expect=400)
    assert missing == "M_INVALID_PARAM"
    other_room = await rest.create_room(alice)
    elsewhere = await rest.request(
        "PUT",
        f"{V3}/rooms/{quote(other_room)}/redact/{quote(alices)}/r9",
        alice,
        body={},
        expect=400,
    )
    assert elsewhere["errcode"] == "M_INVALID_PARAM"


async def test_redacted_state_keeps_protected_keys(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, room_version="11")
    member = (await room_state(rest, alice, room_id))[("m.room.member", alice.user_id)]
    await rest.request(
        "PUT", f"{V3}/rooms/{quote(room_id)}/redact/{quote(member['event_id'])}/r", alice, body={}
    )
    after = (await room_state(rest, alice, room_id))[("m.room.member", alice.user_id)]
    assert after["content"] == {"membership": "join"}
    assert "redacted_because" in after["unsigned"]
