"""State groups and event persistence at the storage layer, on both databases."""

from __future__ import annotations

import pytest

from homeserver.core import Core
from homeserver.errors import InvalidEvent
from homeserver.events.builder import EventBuilder
from homeserver.events.event import MEMBER
from homeserver.handlers.room import RoomCreationRequest
from homeserver.storage import Storage, storage_on
from homeserver.storage.stores.persist import ExtremitiesChange
from tests.conftest import DATABASE_ERRORS
from tests.handlers.test_local_events import ALICE, table_counts
from tests.handlers.test_remote_events import BOB, REMOTE_KEY, public_room_with_bob


async def test_state_groups_store_deltas_and_removals(storage: Storage) -> None:
    state = storage.state
    base = await state.new_group("!r:x", {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3"})
    child = await state.new_group(
        "!r:x",
        {("a", ""): "$1", ("b", ""): "$9", ("d", ""): "$4"},
        base.id,
        {("b", ""): "$9", ("c", ""): None, ("d", ""): "$4"},
    )
    async with storage.db.transaction() as txn:
        await state.store_groups_txn(txn, [base, child])
    # The child is stored as three delta rows, one of them a removal, not as a full copy.
    rows = await storage.db.fetch(
        "SELECT type, event_id FROM state_group_entries WHERE state_group = $1 ORDER BY type",
        child.id,
    )
    assert [(r[0], r[1]) for r in rows] == [("b", "$9"), ("c", None), ("d", "$4")]
    fresh = await storage_on(storage.db)  # no cache: read back from the database
    assert dict(await fresh.state.get_state(child.id)) == {
        ("a", ""): "$1",
        ("b", ""): "$9",
        ("d", ""): "$4",
    }
    assert dict(await fresh.state.get_state(base.id)) == {
        ("a", ""): "$1",
        ("b", ""): "$2",
        ("c", ""): "$3",
    }
    # IDs keep increasing across a restart.
    later = await fresh.state.new_group("!r:x", {})
    assert later.id > child.id


async def test_a_failed_batch_leaves_nothing_half_written(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    sent = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "one"})
    before = await table_counts(core)
    store = core.storage
    # A new state event whose batch also repeats an already stored event: the second insert
    # violates the events primary key, so the whole transaction must roll back.
    context = await core.state.context_for_new_event(
        room_id, sent.event.room_version, [sent.event.event_id]
    )
    event = EventBuilder(
        sent.event.room_version,
        "m.room.topic",
        ALICE,
        {"topic": "t"},
        room_id=room_id,
        state_key="",
    ).build(
        prev_events=[sent.event.event_id],
        auth_events=[],
        depth=99,
        origin_server_ts=1,
        server_name="test.local",
        signing_key=core.server.keys.signing_key,
    )
    await core.state.finish_context(event, context)
    duplicate_ctx = await core.state.context_for_new_event(
        room_id, sent.event.room_version, [sent.event.event_id]
    )
    await core.state.finish_context(sent.event, duplicate_ctx)
    with pytest.raises(DATABASE_ERRORS):
        await store.persist.persist_events(
            room_id,
            [(event, context), (sent.event, duplicate_ctx)],
            backfilled=False,
            forward_extremities=ExtremitiesChange(
                frozenset([sent.event.event_id]), frozenset([event.event_id])
            ),
            current_state_delta={("m.room.topic", ""): (event.event_id, None)},
        )
    assert await table_counts(core) == before
    assert await store.events.get_forward_extremities(room_id) == [sent.event.event_id]
    assert await store.rooms.get_current_state_event_id(room_id, "m.room.topic", "") is None
    # The server carries on normally afterwards.
    after = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "two"})
    assert after.event.prev_event_ids == (sent.event.event_id,)


async def test_a_remote_join_persisted_with_the_state_before_it(core: Core) -> None:
    """The shape of a federated join: the room's state and auth chain arrive as outliers, then
    the join event with the state before it."""
    room_id, remote, join = await public_room_with_bob(core, "12")
    state_before_join = dict(await core.state.get_state_before(join.event_id))
    # A second server joins from the same state, as if it had run /send_join.
    carol = "@carol:remote.test"
    event = EventBuilder(
        join.room_version, MEMBER, carol, {"membership": "join"}, room_id=room_id, state_key=carol
    ).build(
        prev_events=list(join.prev_event_ids),
        auth_events=list(join.auth_event_ids)[:0]
        + [
            state_before_join[k]
            for k in state_before_join
            if k[0] in ("m.room.power_levels", "m.room.join_rules")
        ],
        depth=join.depth,
        origin_server_ts=2,
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )
    persisted = await core.remote_events.persist_event(event, state_before=state_before_join)
    assert persisted.stream_ordering > 0
    assert dict(await core.state.get_state_before(event.event_id)) == state_before_join
    assert await core.storage.rooms.get_membership(room_id, carol) == "join"
    assert await core.storage.rooms.get_membership(room_id, BOB) == "join"
    assert sorted(await core.storage.events.get_forward_extremities(room_id)) == sorted(
        [join.event_id, event.event_id]
    )


async def test_malformed_remote_events_are_refused_before_anything_is_stored(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "11")
    before = await table_counts(core)
    bad = await remote.build(
        "m.room.message", BOB, {"body": "x"}, prev=[join.event_id], auth_types=[]
    )
    bad.pdu["content"]["ratio"] = 0.5  # floats are not canonical JSON in v6+
    with pytest.raises(InvalidEvent, match="float"):
        await core.remote_events.persist_event(bad)
    wrong = await remote.build(
        "m.room.message", BOB, {"body": "x"}, prev=[join.event_id], auth_types=[]
    )
    wrong.pdu["depth"] = "7"
    with pytest.raises(InvalidEvent, match="depth"):
        await core.remote_events.persist_event(wrong)
    assert await table_counts(core) == before
