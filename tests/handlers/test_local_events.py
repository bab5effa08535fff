"""Creating rooms and sending local events through the handlers, on both databases."""

from __future__ import annotations

import asyncio

import pytest

from homeserver.core import Core
from homeserver.errors import AuthError, InvalidEvent, NotFound, TooLarge
from homeserver.events.event import CREATE, MEMBER, POWER_LEVELS
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.handlers.room import RoomCreationRequest
from homeserver.storage.stores.state import MAX_DELTA_DEPTH

ALICE = "@alice:test.local"
BOB = "@bob:test.local"


async def table_counts(core: Core) -> dict[str, int]:
    tables = (
        "events",
        "event_edges",
        "event_auth",
        "state_groups",
        "state_group_entries",
        "current_state_events",
        "room_memberships",
        "current_state_delta_stream",
    )
    return {t: await core.storage.db.fetchval(f"SELECT COUNT(*) FROM {t}") for t in tables}


@pytest.mark.parametrize("version", sorted(KNOWN_ROOM_VERSIONS, key=int))
async def test_create_room_in_every_version(core: Core, version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    room_id = await core.rooms.create_room(
        RoomCreationRequest(ALICE, preset="public_chat", room_version=rv, name="Hall", topic="hi")
    )
    store = core.storage
    state = await store.rooms.get_current_state_ids(room_id)
    assert set(state) == {
        (CREATE, ""),
        (MEMBER, ALICE),
        (POWER_LEVELS, ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
    }
    events = await store.events.get_events(state.values())
    create = events[state[(CREATE, "")]]
    assert create.content["room_version"] == version
    if rv.room_id_from_create_event:
        assert room_id == "!" + create.event_id[1:]
        assert "room_id" not in create.pdu
    else:
        assert room_id.endswith(":test.local")
    assert ("creator" in create.content) == (not rv.implicit_room_creator)
    assert events[state[("m.room.join_rules", "")]].content == {"join_rule": "public"}
    assert await store.rooms.get_users_in_room(room_id) == [ALICE]
    assert await store.rooms.get_rooms_for_user(ALICE) == [room_id]

    # The topic is the last event: the only forward extremity, state after it is current state.
    topic_id = state[("m.room.topic", "")]
    assert await store.events.get_forward_extremities(room_id) == [topic_id]
    assert dict(await core.state.get_state_after(topic_id)) == state
    before = dict(await core.state.get_state_before(topic_id))
    assert ("m.room.topic", "") not in before and before[("m.room.name", "")] == state[
        ("m.room.name", "")
    ]

    # Auth events follow the selection algorithm; v12 never cites the create event.
    topic = events[topic_id]
    cited = {events[e].type if e in events else None for e in topic.auth_event_ids}
    expected = {MEMBER, POWER_LEVELS} | (set() if rv.room_id_from_create_event else {CREATE})
    assert cited == expected
    assert topic.depth == 8 and topic.prev_event_ids == (state[("m.room.name", "")],)


async def test_messages_take_increasing_stream_positions_and_keep_state(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    state = await core.storage.rooms.get_current_state_ids(room_id)
    first = await core.events.send_event(
        room_id, "m.room.message", ALICE, {"msgtype": "m.text", "body": "1"}
    )
    second = await core.events.send_event(
        room_id, "m.room.message", ALICE, {"msgtype": "m.text", "body": "2"}
    )
    assert 0 < first.stream_ordering < second.stream_ordering == core.storage.stream_ids.current
    assert await core.storage.rooms.get_current_state_ids(room_id) == state
    assert dict(await core.state.get_state_before(second.event.event_id)) == state
    assert second.event.prev_event_ids == (first.event.event_id,)
    stream = await core.storage.events.get_stream_events(
        room_id, first.stream_ordering - 1, second.stream_ordering, 10
    )
    assert [e.event_id for e in stream] == [first.event.event_id, second.event.event_id]
    chain = await core.storage.events.get_auth_chain_ids([second.event.event_id])
    chain_types = {e.type for e in (await core.storage.events.get_events(chain)).values()}
    # v12 (the default) never cites the create event; the creator's join cites nothing else.
    assert chain_types == {MEMBER, POWER_LEVELS}


async def test_refused_events_leave_the_database_unchanged(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    before = await table_counts(core)
    with pytest.raises(AuthError):  # Bob never joined this invite-only room.
        await core.events.send_event(room_id, "m.room.message", BOB, {"body": "hi"})
    with pytest.raises(AuthError):  # Bob may not join without an invite.
        await core.events.send_event(room_id, MEMBER, BOB, {"membership": "join"}, state_key=BOB)
    with pytest.raises(TooLarge):
        await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "x" * 70_000})
    with pytest.raises(InvalidEvent):
        await core.events.send_event(room_id, "m.room.message", ALICE, {"n": 2**60})
    with pytest.raises(NotFound):
        await core.events.send_event("!nowhere:test.local", "m.room.message", ALICE, {})
    assert await table_counts(core) == before


async def test_membership_changes_update_the_index(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    await core.events.send_event(room_id, MEMBER, ALICE, {"membership": "invite"}, state_key=BOB)
    assert await core.storage.rooms.get_membership(room_id, BOB) == "invite"
    assert await core.storage.rooms.get_rooms_for_user(BOB, "invite") == [room_id]
    await core.events.send_event(room_id, MEMBER, BOB, {"membership": "join"}, state_key=BOB)
    assert sorted(await core.storage.rooms.get_users_in_room(room_id)) == [ALICE, BOB]
    await core.events.send_event(room_id, MEMBER, BOB, {"membership": "leave"}, state_key=BOB)
    assert await core.storage.rooms.get_users_in_room(room_id) == [ALICE]
    rows = await core.storage.db.fetch(
        "SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2"
        " ORDER BY stream_ordering",
        room_id,
        BOB,
    )
    assert [r[0] for r in rows] == ["invite", "join", "leave"]


async def test_long_state_chains_are_cut_into_snapshots(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    for i in range(MAX_DELTA_DEPTH + 30):
        await core.events.send_event(
            room_id, "org.example.counter", ALICE, {"i": i}, state_key=str(i % 40)
        )
    assert (
        await core.storage.db.fetchval("SELECT MAX(delta_depth) FROM state_groups")
        <= MAX_DELTA_DEPTH
    )
    assert (
        await core.storage.db.fetchval("SELECT COUNT(*) FROM state_groups WHERE prev_group IS NULL")
        >= 2
    )
    current = await core.storage.rooms.get_current_state_ids(room_id)
    # A fresh store (no caches) reads every group back to the same state.
    from homeserver.storage import storage_on

    fresh = await storage_on(core.storage.db)
    extremity = (await fresh.events.get_forward_extremities(room_id))[0]
    meta = (await fresh.events.get_event_metas([extremity]))[extremity]
    assert dict(await fresh.state.get_state(meta.state_group_after)) == current
    assert len([k for k in current if k[0] == "org.example.counter"]) == 40
    # Stream positions continue after a restart.
    assert fresh.stream_ids.current == core.storage.stream_ids.current


async def test_notifier_wakes_only_listeners_of_the_room(core: Core) -> None:
    room_a = await core.rooms.create_room(RoomCreationRequest(ALICE))
    room_b = await core.rooms.create_room(RoomCreationRequest(BOB))
    with core.notifier.listen(ALICE, [room_a]) as in_a, core.notifier.listen(BOB, [room_b]) as in_b:
        waiting_a = asyncio.create_task(in_a.wait(5))
        waiting_b = asyncio.create_task(in_b.wait(0.3))
        await asyncio.sleep(0)
        sent = await core.events.send_event(room_a, "m.room.message", ALICE, {"body": "wake"})
        assert await waiting_a is True
        assert in_a.position == sent.stream_ordering
        assert await waiting_b is False
