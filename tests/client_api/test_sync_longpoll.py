"""The /sync long poll (C-S API "Syncing": `timeout`): it returns as soon as something arrives
for the user, and only then; and the extension seam (SyncSource) other streams plug into."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from homeserver.core import Core
from homeserver.handlers.filters import parse_filter
from homeserver.handlers.sync import (
    SyncConfig,
    SyncSourceRequest,
    SyncSourceUpdates,
    build_sync_handler,
)
from homeserver.streams import StreamToken
from tests.helpers.rest import RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

# Generous: a correct server answers within milliseconds; this only bounds a broken one.
PROMPTLY_S = 5.0


async def poll(rest: RestHelper, user: User, since: str, timeout_ms: int = 20_000) -> Any:
    body = await rest.sync(user, since=since, timeout=str(timeout_ms))
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    return body


async def settle() -> None:
    """Let a started long poll reach its wait."""
    await asyncio.sleep(0.1)


def ids(body: Any, room_id: str, section: str = "join") -> list[str]:
    room = body["rooms"][section].get(room_id)
    return [] if room is None else [e["event_id"] for e in room["timeline"]["events"]]


async def test_long_poll_returns_when_a_message_arrives(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    since = (await rest.sync(alice))["next_batch"]
    waiting = asyncio.create_task(poll(rest, alice, since))
    await settle()
    assert not waiting.done()
    event_id = await rest.send(alice, room_id, "wake up")
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    assert ids(body, room_id) == [event_id]


async def test_long_poll_ignores_other_rooms(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_a = await rest.create_room(alice)
    room_b = await rest.create_room(bob)
    since = (await rest.sync(alice))["next_batch"]
    started = time.monotonic()
    waiting = asyncio.create_task(poll(rest, alice, since, timeout_ms=300))
    await asyncio.sleep(0.05)
    await rest.send(bob, room_b, "not for alice")
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    assert time.monotonic() - started >= 0.3
    assert body["rooms"]["join"] == {}
    # The token moved past bob's message without showing it; alice's own room still works.
    event_id = await rest.send(alice, room_a, "for alice")
    assert ids(await poll(rest, alice, body["next_batch"]), room_a) == [event_id]


async def test_invite_wakes_the_invitee_and_the_new_room_is_followed(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, name="Party")
    since = (await rest.sync(bob))["next_batch"]
    waiting = asyncio.create_task(poll(rest, bob, since))
    await settle()
    await rest.invite(alice, room_id, bob.user_id)
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    assert room_id in body["rooms"]["invite"]

    await rest.join(bob, room_id)
    joined = await poll(rest, bob, body["next_batch"])
    assert room_id in joined["rooms"]["join"]
    # Bob's next long poll follows the room he joined.
    waiting = asyncio.create_task(poll(rest, bob, joined["next_batch"]))
    await settle()
    event_id = await rest.send(alice, room_id, "welcome")
    assert ids(await asyncio.wait_for(waiting, PROMPTLY_S), room_id) == [event_id]


async def test_leave_wakes_and_shows_in_leave(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    since = (await rest.sync(bob))["next_batch"]
    waiting = asyncio.create_task(poll(rest, bob, since))
    await settle()
    # Kicked by someone else: bob's own poll must wake.
    await rest.request(
        "POST", f"/_matrix/client/v3/rooms/{room_id}/kick", alice, body={"user_id": bob.user_id}
    )
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    events = body["rooms"]["leave"][room_id]["timeline"]["events"]
    assert events[-1]["content"]["membership"] == "leave"


class CountingSource:
    """A minimal stream for the seam: global account data items, one per `bump`."""

    def __init__(self, core: Core, user_id: str) -> None:
        self.core = core
        self.user_id = user_id
        self.position = 0
        self.requests: list[SyncSourceRequest] = []

    async def current_position(self) -> int:
        return self.position

    def bump(self) -> None:
        self.position += 1
        self.core.notifier.on_new_data(users=[self.user_id])

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        self.requests.append(request)
        low, high = request.from_token.account_data, request.to_token.account_data
        return SyncSourceUpdates(
            account_data=[
                {"type": "org.example.count", "content": {"n": n}} for n in range(low + 1, high + 1)
            ],
            room_ephemeral={
                room_id: [{"type": "org.example.tick", "content": {"n": high}}]
                for room_id in request.room_ids
                if high > low
            },
        )


async def test_sync_sources_plug_in_and_wake_syncs(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    handler = build_sync_handler(
        client_core.storage,
        client_core.notifier,
        client_core.room_api.serializer,
        client_core.room_api.visibility,
    )
    source = CountingSource(client_core, alice.user_id)
    handler.add_source("account_data", source)
    source.bump()
    first = await handler.sync(SyncConfig(alice.user_id, alice.device_id))
    assert first["account_data"]["events"] == [{"type": "org.example.count", "content": {"n": 1}}]
    assert source.requests[-1].initial and source.requests[-1].room_ids == {room_id}
    since = StreamToken.parse(first["next_batch"])
    assert since.account_data == 1

    waiting = asyncio.create_task(
        handler.sync(SyncConfig(alice.user_id, alice.device_id, since=since, timeout_ms=20_000))
    )
    await settle()
    assert not waiting.done()
    source.bump()
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    assert body["account_data"]["events"] == [{"type": "org.example.count", "content": {"n": 2}}]
    room = body["rooms"]["join"][room_id]
    assert room["ephemeral"]["events"] == [{"type": "org.example.tick", "content": {"n": 2}}]
    assert room["timeline"]["events"] == []
    assert StreamToken.parse(body["next_batch"]).account_data == 2
    # Filters apply to what sources return.
    source.bump()
    hidden = await handler.sync(
        SyncConfig(
            alice.user_id,
            alice.device_id,
            filter=parse_filter({"account_data": {"not_types": ["org.example.*"]}}),
            since=StreamToken.parse(body["next_batch"]),
        )
    )
    assert hidden["account_data"]["events"] == []
