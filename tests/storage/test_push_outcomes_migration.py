"""Migration 0022 moves notification counts to room rows plus per-user differences: the
rows a database held before it keep counting, read or unread as they were, on both
engines."""

from __future__ import annotations

import asyncio
import json

from homeserver.storage.database import Database
from homeserver.storage.migrations import migrations_for
from homeserver.storage.stores.push import PushStore, UnreadCounts
from tests.helpers.storage_rows import join, state_event

OUTCOMES = 22
ROOM = "!room:x"


async def _old_row(db: Database, user_id: str, position: int, is_read: bool) -> None:
    """A row of event_push_actions as 0018 wrote it: one per user and notifying event."""
    await db.execute(
        "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering, thread_id,"
        " notif, highlight, actions, ts, is_read)"
        " VALUES ($1, $2, $3, $4, 'main', TRUE, FALSE, $5, 0, $6)",
        user_id,
        f"$e{position}",
        ROOM,
        position,
        json.dumps(["notify"]),
        is_read,
    )


async def test_old_rows_keep_counting(database: Database) -> None:
    migrations = await asyncio.to_thread(migrations_for, database.dialect)
    for m in migrations:
        if m.version < OUTCOMES:
            await database.execute_script(m.sql)
    for user_id in ("@alice:x", "@bob:x"):
        await database.execute("INSERT INTO users (user_id, created_ts) VALUES ($1, 0)", user_id)
    await join(database, ROOM, "@alice:x")
    await join(database, ROOM, "@bob:x")
    await join(database, ROOM, "@remote:elsewhere")
    messages = [
        await state_event(database, ROOM, "m.room.topic", "", {"topic": str(n)}) for n in range(4)
    ]
    # alice read the first two; bob read nothing.
    for n, position in enumerate(messages):
        await _old_row(database, "@alice:x", position, is_read=n < 2)
        await _old_row(database, "@bob:x", position, is_read=False)
    [outcomes] = [m for m in migrations if m.version == OUTCOMES]
    await database.execute_script(outcomes.sql)

    store = PushStore(database)
    assert await store.get_unread_counts("@alice:x", [ROOM]) == {ROOM: {"main": UnreadCounts(2, 0)}}
    assert await store.get_unread_counts("@bob:x", [ROOM]) == {ROOM: {"main": UnreadCounts(4, 0)}}
    listed = await store.get_notifications("@alice:x", None, 10, only_highlight=False)
    assert [(r.stream_ordering, r.read) for r in listed] == [
        (p, n < 2) for n, p in reversed(list(enumerate(messages)))
    ]
    # Only local users were given positions.
    users = await database.fetch("SELECT user_id FROM push_positions ORDER BY user_id")
    assert [r[0] for r in users] == ["@alice:x", "@bob:x"]
