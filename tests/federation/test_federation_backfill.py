"""Backfill across real servers: a server that joined a room late reads the history from
before its join through /messages, fetched from a server in the room with /backfill, checked
and stored below its timeline; bad events in that history never reach clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from signedjson.key import generate_signing_key
from signedjson.types import SigningKey

from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, MEMBER, POWER_LEVELS
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import (
    DEADLINE_S,
    join_via,
    wait_for_members,
    wait_for_message,
)
from tests.helpers.rest import V3, User
from tests.helpers.spec_schemas import assert_response_valid

MESSAGES = ("client-server/message_pagination.yaml", "/rooms/{roomId}/messages", "get")


async def read_back(server: Homeserver, user: User, room_id: str, page: int) -> list[str]:
    """Every event ID of the room the user can read, newest first, by paginating /messages
    backwards `page` events at a time until no `end` comes back."""
    ids: list[str] = []
    params = {"dir": "b", "limit": str(page)}
    path = f"{V3}/rooms/{quote(room_id)}/messages"
    for _ in range(10_000 // page):
        body = await server.rest.request("GET", path, user, **params)
        if "from" not in params:  # the validator is slow; one page of each walk is enough
            assert_response_valid(*MESSAGES, 200, body)
        ids += [e["event_id"] for e in body["chunk"]]
        if "end" not in body:
            return ids
        params["from"] = body["end"]
    raise AssertionError("pagination never ended")


async def bodies(server: Homeserver, ids: list[str]) -> list[Any]:
    events = await server.core.storage.events.get_events(ids)
    return [events[i].content.get("body") for i in ids]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_history_from_before_the_join_is_read_back_to_creation(
    tmp_path: Path, engine: str
) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat", name="Old times")
        for n in range(500):
            await a.rest.send(alice, room_id, f"m{n}")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})

        # Bob on B reads the room exactly as alice on A does: every event, newest first, down
        # to the room's creation (pages of 33 do not line up with backfill's batches of 100).
        on_a = await read_back(a, alice, room_id, 50)
        on_b = await read_back(b, bob, room_id, 33)
        assert on_b == on_a
        assert len(set(on_b)) == len(on_b)
        assert (await b.core.storage.events.get_events([on_b[-1]]))[on_b[-1]].type == CREATE
        assert [x for x in await bodies(b, on_b) if x is not None] == [
            f"m{n}" for n in range(499, -1, -1)
        ]
        # Stored as backfilled history, below the live stream; B's own join is live.
        metas = await b.core.storage.events.get_event_metas(on_b)
        assert metas[on_b[0]].stream_ordering > 0
        assert all(metas[i].stream_ordering < 0 and not metas[i].outlier for i in on_b[1:])

        # Read again with A gone, the history comes from B's storage alone, unchanged.
        await a.stop()
        assert await read_back(b, bob, room_id, 100) == on_a


async def persist_forged_message(
    server: Homeserver, room_id: str, sender: str, body: str, key: SigningKey | None = None
) -> str:
    """A message made and stored on `server` as if accepted, whatever the auth rules say, so
    that its later events build on it: signed with `key` in place of the server's own key when
    given (a signature no one can verify), and citing the sender's membership only if any."""
    core = server.core
    room_version = await core.storage.rooms.get_room_version(room_id)
    assert room_version is not None
    prevs = await core.storage.events.get_forward_extremities(room_id)
    metas = await core.storage.events.get_event_metas(prevs)
    state = await core.storage.rooms.get_current_state_ids(room_id)
    auth_keys = [(POWER_LEVELS, ""), (MEMBER, sender)]
    if not room_version.room_id_from_create_event:
        auth_keys.append((CREATE, ""))
    own = core.server.keys.signing_key
    if key is not None:
        key.version = own.version  # claims to be the server's key, and is not
    event = EventBuilder(
        room_version, "m.room.message", sender, {"msgtype": "m.text", "body": body}, room_id
    ).build(
        prev_events=prevs,
        auth_events=[state[k] for k in auth_keys if k in state],
        depth=max(m.depth for m in metas.values()) + 1,
        origin_server_ts=core.clock.time_ms(),
        server_name=server.server_name,
        signing_key=key or own,
    )
    context = await core.state.context_for_new_event(room_id, room_version, prevs)
    await core.persister.persist_events(room_id, [(event, context)])
    return event.event_id


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_bad_events_in_backfilled_history_never_reach_clients(
    tmp_path: Path, engine: str
) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        for n in range(60):
            await a.rest.send(alice, room_id, f"m{n}")
        # A message from someone who never joined (fails the auth rules), and one of alice's
        # with a signature that is not A's: A holds both as history and hands them out.
        unauthorised = await persist_forged_message(
            a, room_id, a.user_id("mallory"), "not a member"
        )
        for n in range(60, 120):
            await a.rest.send(alice, room_id, f"m{n}")
        bad_signature = await persist_forged_message(
            a, room_id, alice.user_id, "forged", key=generate_signing_key("x")
        )
        for n in range(120, 180):
            await a.rest.send(alice, room_id, f"m{n}")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})

        on_a = await read_back(a, alice, room_id, 40)
        assert unauthorised in on_a and bad_signature in on_a
        on_b = await read_back(b, bob, room_id, 25)
        # Everything else arrives, in order, back to the creation.
        assert on_b == [i for i in on_a if i not in (unauthorised, bad_signature)]
        assert [x for x in await bodies(b, on_b) if x is not None] == [
            f"m{n}" for n in range(179, -1, -1)
        ]
        # The event failing the auth rules is stored rejected; the other was dropped.
        metas = await b.core.storage.events.get_event_metas([unauthorised, bad_signature])
        assert metas[unauthorised].rejected_reason is not None
        assert bad_signature not in metas


async def test_history_without_a_server_to_ask_ends_where_this_server_holds_it(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        for n in range(5):
            await a.rest.send(alice, room_id, f"m{n}")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        await a.stop()

        # Nobody answers: B shows what it holds (bob's join), and says the history ends.
        on_b = await read_back(b, bob, room_id, 10)
        assert len(on_b) == 1
        join = await b.core.storage.events.get_event(on_b[0])
        assert join is not None and join.type == MEMBER and join.state_key == bob.user_id

        # Once A is back, the same pagination reaches the room's creation.
        await a.start()
        on_b = await read_back(b, bob, room_id, 10)
        assert [x for x in await bodies(b, on_b) if x is not None] == [
            f"m{n}" for n in range(4, -1, -1)
        ]
        assert (await b.core.storage.events.get_events([on_b[-1]]))[on_b[-1]].type == CREATE


async def outbox_size(server: Homeserver, destination: str) -> int:
    count = await server.core.storage.db.fetchval(
        "SELECT COUNT(*) FROM federation_outbox WHERE destination = $1", destination
    )
    return int(count)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_gap_in_the_middle_of_the_timeline_is_filled_when_read(
    tmp_path: Path, engine: str
) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        await a.rest.send(alice, room_id, "before")
        await join_via(b, bob, room_id, a)
        await wait_for_message(b, bob, room_id, "before")

        # B is away while alice sends 60 messages, and A gives up on queueing them for B (as
        # Synapse's catch-up does, which sends a room's latest event only): when B is back,
        # the next message arrives with 60 events missing before it. /get_missing_events
        # brings the latest 10; the 50 before them are a gap in B's timeline.
        await b.stop()
        for n in range(60):
            await a.rest.send(alice, room_id, f"away {n}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while await outbox_size(a, b.server_name) < 60 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await a.core.storage.db.execute(
            "DELETE FROM federation_outbox WHERE destination = $1", b.server_name
        )
        await b.start()
        await b.rest.send(bob, room_id, "bob is back")  # B contacts A, which retries B now
        after = await a.rest.send(alice, room_id, "after")
        deadline = loop.time() + DEADLINE_S
        while not await b.core.storage.events.have_events([after]):
            assert loop.time() < deadline, "the message after the gap never arrived"
            await asyncio.sleep(0.05)
        away_ids = await read_back(a, alice, room_id, 100)
        held = await b.core.storage.events.have_events(away_ids)
        # B holds the room's start, the last 10 of alice's messages and what came after.
        assert len(away_ids) - len(held) == 50

        # Reading back across the gap fills it: bob sees every message, in A's order.
        on_b = await read_back(b, bob, room_id, 20)
        on_a = await read_back(a, alice, room_id, 20)
        messages_on_a = [x for x in await bodies(a, on_a) if x is not None]
        assert [x for x in await bodies(b, on_b) if x is not None] == messages_on_a
        assert [f"away {n}" for n in range(59, -1, -1)] == [
            x for x in messages_on_a if x.startswith("away")
        ]
