"""Typing, read receipts and presence across real servers (S-S API "Typing Notifications",
"Receipts", "Presence"): a local user's changes reach the servers that share the room (or,
for presence, any room with the user); private receipts stay home, and an EDU a server
received is never relayed by it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members, wait_for_message
from tests.helpers.rest import V3, User
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

EDU_SCHEMAS = "api/server-server/definitions/event-schemas"


def ephemeral(body: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        e["content"] for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type
    ]


def typers(body: dict[str, Any], room_id: str) -> list[list[str]]:
    return [e["user_ids"] for e in ephemeral(body, room_id, "m.typing")]


def presence_of(body: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    events = body.get("presence", {}).get("events", [])
    return [e["content"] for e in events if e["sender"] == user_id]


async def set_typing(server: Homeserver, user: User, room_id: str, **body: Any) -> None:
    path = f"{V3}/rooms/{quote(room_id)}/typing/{quote(user.user_id)}"
    assert await server.rest.request("PUT", path, user, body=body) == {}


async def send_receipt(
    server: Homeserver, user: User, room_id: str, receipt_type: str, event_id: str
) -> None:
    path = f"{V3}/rooms/{quote(room_id)}/receipt/{receipt_type}/{quote(event_id)}"
    assert await server.rest.request("POST", path, user, body={}) == {}


async def set_presence(server: Homeserver, user: User, **body: Any) -> None:
    path = f"{V3}/presence/{quote(user.user_id)}/status"
    assert await server.rest.request("PUT", path, user, body=body) == {}


async def queued_edus(server: Homeserver, destination: Homeserver) -> list[dict[str, Any]]:
    batch = await server.core.storage.federation_outbox.next_batch(destination.server_name, 50, 100)
    return batch.edus


def about(edus: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    return [e for e in edus if user_id in json.dumps(e)]


async def shared_room(a: Homeserver, others: list[Homeserver]) -> tuple[str, User, list[User]]:
    """A public room of alice (on `a`) that a user of each server in `others` joined."""
    alice = await a.rest.register("alice")
    room_id = await a.rest.create_room(alice, preset="public_chat")
    users = []
    for server in others:
        user = await server.rest.register("user")
        await join_via(server, user, room_id, a)
        users.append(user)
    everyone = {alice.user_id, *(u.user_id for u in users)}
    await wait_for_members(a, alice, room_id, everyone)
    for server, user in zip(others, users, strict=True):
        await wait_for_members(server, user, room_id, everyone)
    return room_id, alice, users


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_typing_receipts_and_presence_reach_the_other_server(
    tmp_path: Path, engine: str
) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        room_id, alice, [bob] = await shared_room(a, [b])
        since = (await b.rest.sync(bob))["next_batch"]

        await set_typing(a, alice, room_id, typing=True, timeout=30_000)
        body = await b.rest.sync_until(bob, since, lambda s: [alice.user_id] in typers(s, room_id))
        await set_typing(a, alice, room_id, typing=False)
        body = await b.rest.sync_until(bob, body["next_batch"], lambda s: [] in typers(s, room_id))
        # Typing that lapses on A stops on B too, long before B's own timer would end it.
        await set_typing(a, alice, room_id, typing=True, timeout=300)
        body = await b.rest.sync_until(
            bob, body["next_batch"], lambda s: [alice.user_id] in typers(s, room_id)
        )
        body = await b.rest.sync_until(bob, body["next_batch"], lambda s: [] in typers(s, room_id))

        event_id = await b.rest.send(bob, room_id, "read me")
        await wait_for_message(a, alice, room_id, "read me")
        await send_receipt(a, alice, room_id, "m.read", event_id)

        def has_receipt(s: dict[str, Any]) -> bool:
            return any(
                alice.user_id in c.get(event_id, {}).get("m.read", {})
                for c in ephemeral(s, room_id, "m.receipt")
            )

        body = await b.rest.sync_until(bob, body["next_batch"], has_receipt)

        await set_presence(a, alice, presence="unavailable", status_msg="at lunch")

        def has_presence(s: dict[str, Any]) -> bool:
            return any(p.get("status_msg") == "at lunch" for p in presence_of(s, alice.user_id))

        body = await b.rest.sync_until(bob, body["next_batch"], has_presence)
        assert presence_of(body, alice.user_id)[-1]["presence"] == "unavailable"
        op = "/presence/{userId}/status"
        status = await b.rest.request("GET", f"{V3}/presence/{quote(alice.user_id)}/status", bob)
        assert_response_valid("client-server/presence.yaml", op, "get", 200, status)
        assert (status["presence"], status["status_msg"]) == ("unavailable", "at lunch")


async def test_private_receipts_stay_home_and_received_edus_are_not_relayed(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 3) as (a, b, c):
        room_id, alice, [bob, carol] = await shared_room(a, [b, c])
        outbox = a.core.storage.federation_outbox
        assert await outbox.servers_sharing_a_room(alice.user_id, a.server_name) == {
            b.server_name,
            c.server_name,
        }
        first = await b.rest.send(bob, room_id, "first")
        second = await b.rest.send(bob, room_id, "second")
        for server, user in ((a, alice), (c, carol)):
            await wait_for_message(server, user, room_id, "second")
        # While C is down, what A and B queue for it stays in their outboxes to be seen.
        await c.stop()
        since = (await b.rest.sync(bob))["next_batch"]

        await send_receipt(a, alice, room_id, "m.read.private", first)
        await set_typing(a, alice, room_id, typing=True)
        body = await b.rest.sync_until(bob, since, lambda s: [alice.user_id] in typers(s, room_id))
        await send_receipt(a, alice, room_id, "m.read", second)

        def has_receipt(s: dict[str, Any]) -> bool:
            return any(
                alice.user_id in c.get(second, {}).get("m.read", {})
                for c in ephemeral(s, room_id, "m.receipt")
            )

        body = await b.rest.sync_until(bob, body["next_batch"], has_receipt)
        await set_presence(a, alice, presence="online", status_msg="here")

        def has_presence(s: dict[str, Any]) -> bool:
            return any(p.get("status_msg") == "here" for p in presence_of(s, alice.user_id))

        body = await b.rest.sync_until(bob, body["next_batch"], has_presence)
        # A user sharing no room with another server tells it nothing.
        dave = await a.rest.register("dave")
        await set_presence(a, dave, presence="online")

        for_c = await queued_edus(a, c)
        assert about(for_c, dave.user_id) == []
        assert [e["edu_type"] for e in about(for_c, alice.user_id)] == [
            "m.typing",
            "m.receipt",
            "m.presence",
        ]
        typing, receipt, presence = about(for_c, alice.user_id)
        for edu in (typing, receipt, presence):
            assert_valid(f"{EDU_SCHEMAS}/{edu['edu_type']}.yaml", edu)
        assert typing["content"] == {"room_id": room_id, "user_id": alice.user_id, "typing": True}
        # Only the public receipt: the private one never left A.
        assert list(receipt["content"]) == [room_id]
        assert list(receipt["content"][room_id]) == ["m.read"]
        assert receipt["content"][room_id]["m.read"][alice.user_id]["event_ids"] == [second]
        [update] = presence["content"]["push"]
        assert (update["user_id"], update["presence"], update["status_msg"]) == (
            alice.user_id,
            "online",
            "here",
        )

        # A later EDU from A reaching B means B finished with the earlier transactions
        # (hooks included) before it answered them; none of alice's EDUs went on to C.
        await set_typing(a, alice, room_id, typing=False)
        await b.rest.sync_until(bob, body["next_batch"], lambda s: [] in typers(s, room_id))
        assert about(await queued_edus(b, c), alice.user_id) == []
