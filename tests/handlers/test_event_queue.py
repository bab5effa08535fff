"""The per-room queue of local events: batching, failure, stale tips, cancellation, and
announcing positions only once every lower one has committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from homeserver.core import Core
from homeserver.errors import AuthError
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.handlers.persistence import StaleTip
from homeserver.handlers.room import RoomCreationRequest
from tests.conftest import DATABASE_ERRORS, POSTGRES_DSN
from tests.handlers.test_local_events import ALICE, table_counts


async def test_concurrent_senders_form_one_chain(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    sends = [
        core.events.send_event(room_id, "m.room.message", ALICE, {"body": str(i)})
        for i in range(30)
    ] + [
        core.events.send_event(room_id, "m.room.topic", ALICE, {"topic": str(i)}, state_key="")
        for i in range(10)
    ]
    persisted = await asyncio.gather(*sends)
    by_position = sorted(persisted, key=lambda p: p.stream_ordering)
    assert len({p.stream_ordering for p in persisted}) == 40
    # Each event names exactly the one before it: the room never forked.
    for before, after in zip(by_position, by_position[1:], strict=False):
        assert after.event.prev_event_ids == (before.event.event_id,)
        assert after.event.depth == before.event.depth + 1
    last = by_position[-1].event
    assert await core.storage.events.get_forward_extremities(room_id) == [last.event_id]
    topics = [p for p in by_position if p.event.type == "m.room.topic"]
    current = await core.storage.rooms.get_current_state_ids(room_id)
    assert current[("m.room.topic", "")] == topics[-1].event.event_id
    assert dict(await core.state.get_state_after(last.event_id)) == current


async def test_a_failed_write_fails_the_queue_and_the_room_recovers(core: Core) -> None:
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    sent = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "one"})
    rv = sent.event.room_version
    # Queue a copy of a stored event: its insert breaks the events primary key.
    async with core.persister.room_locks.lock(room_id):
        next_event = await core.persister.next_local_event(room_id, rv)
        assert next_event is not None
        await core.state.finish_context(sent.event, next_event.context)
        [doomed] = core.persister.enqueue_local([(sent.event, next_event)])
    with pytest.raises(DATABASE_ERRORS):
        await doomed
    # The event built on the discarded tip is refused rather than stored on a lost parent.
    with pytest.raises(StaleTip):
        core.persister.enqueue_local([(sent.event, next_event)])
    after = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "two"})
    assert after.event.prev_event_ids == (sent.event.event_id,)
    assert await core.storage.events.get_forward_extremities(room_id) == [after.event.event_id]


async def test_room_creation_is_all_or_nothing(core: Core) -> None:
    before = await table_counts(core)
    request = RoomCreationRequest(
        ALICE,
        room_version=KNOWN_ROOM_VERSIONS["12"],
        # v12 creators may not be listed in power levels (auth rule 10.4).
        power_level_content_override={"users": {ALICE: 100}},
        name="never",
    )
    with pytest.raises(AuthError, match="10.4"):
        await core.rooms.create_room(request)
    assert await table_counts(core) == before
    assert await core.storage.rooms.get_rooms_for_user(ALICE) == []


@contextlib.asynccontextmanager
async def room_writes_blocked(room_id: str) -> AsyncIterator[None]:
    """Hold a row lock on the room's forward extremity from another PostgreSQL connection, so
    the room's next write waits inside its transaction until the block exits."""
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        async with conn.transaction():
            schema = await _schema_of(room_id)
            await conn.execute(
                f"SELECT * FROM {schema}.event_forward_extremities WHERE room_id = $1 FOR UPDATE",
                room_id,
            )
            yield
    finally:
        await conn.close()


_schemas: dict[str, str] = {}


async def _schema_of(room_id: str) -> str:
    return _schemas[room_id]


async def _remember_schema(core: Core, room_id: str) -> None:
    _schemas[room_id] = await core.storage.db.fetchval("SELECT current_schema()")


async def _wait_until_blocked(core: Core, room_id: str) -> None:
    """Until the room's drainer is inside its transaction (waiting on the row lock)."""
    for _ in range(500):
        waiting = await core.storage.db.fetchval(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the write never blocked")


async def test_listeners_wake_only_when_lower_positions_have_committed(core: Core) -> None:
    if core.storage.db.dialect != "postgres":
        pytest.skip("SQLite commits one transaction at a time, in allocation order")
    room_a = await core.rooms.create_room(RoomCreationRequest(ALICE))
    room_b = await core.rooms.create_room(RoomCreationRequest(ALICE))
    await _remember_schema(core, room_a)
    with core.notifier.listen(ALICE, [room_b]) as listener:
        async with room_writes_blocked(room_a):
            slow = asyncio.create_task(
                core.events.send_event(room_a, "m.room.message", ALICE, {"body": "slow"})
            )
            await _wait_until_blocked(core, room_a)
            fast = await core.events.send_event(room_b, "m.room.message", ALICE, {"body": "fast"})
            # B committed above A's position, but A has not committed: no wake-up yet, or a
            # /sync would hand out a token that skips A's event for good.
            assert core.storage.stream_ids.current < fast.stream_ordering
            assert not await listener.wait(0.2)
        slow_event = await slow
        assert slow_event.stream_ordering < fast.stream_ordering
        assert await listener.wait(5)
        assert listener.position >= fast.stream_ordering


async def test_a_cancelled_write_fails_its_senders_and_the_room_recovers(core: Core) -> None:
    if core.storage.db.dialect != "postgres":
        pytest.skip("needs a second connection to hold the room's write mid-transaction")
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE))
    await _remember_schema(core, room_id)
    head = (await core.storage.events.get_forward_extremities(room_id))[0]
    async with room_writes_blocked(room_id):
        sends = [
            asyncio.create_task(
                core.events.send_event(room_id, "m.room.message", ALICE, {"body": str(i)})
            )
            for i in range(3)
        ]
        await _wait_until_blocked(core, room_id)
        drainer = core.persister._drainers[room_id]
        drainer.cancel()
        results = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert await core.storage.events.get_forward_extremities(room_id) == [head]
    after = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "again"})
    assert after.event.prev_event_ids == (head,)
