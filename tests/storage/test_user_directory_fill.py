"""Migration 0021 fills the user directory from the current state of a database written
before 0019 added the directory, on both engines."""

from __future__ import annotations

import asyncio

from homeserver.storage.database import Database
from homeserver.storage.migrations import migrations_for
from homeserver.storage.stores.user_directory import UserDirectoryStore
from tests.helpers.storage_rows import join, state_event

FILL = 21
PUBLIC, PRIVATE = "!public:x", "!private:x"
async def found(db: Database, searcher: str, term: str) -> list[tuple[str, str | None]]:
    entries = await UserDirectoryStore(db).search(searcher, term, 10, all_local_users=False)
    return [(e.user_id, e.display_name) for e in entries]


async def test_fill_finds_users_of_a_database_older_than_the_directory(
    database: Database,
) -> None:
    migrations = await asyncio.to_thread(migrations_for, database.dialect)
    for m in migrations:
        if m.version < 19:
            await database.execute_script(m.sql)

    # What a database written before 0019 holds: events and current state, no directory.
    await state_event(database, PUBLIC, "m.room.join_rules", "", {"join_rule": "public"})
    await join(database, PUBLIC, "@carol:x", displayname="ÖLAF Carolsson")
    await join(database, PUBLIC, "@eve:x", displayname=5)  # not a name: left out
    await join(database, PUBLIC, "@nul:x", displayname="nul\u0000name")
    await state_event(database, PRIVATE, "m.room.join_rules", "", {"join_rule": "invite"})
    await join(database, PRIVATE, "@alice:x")
    await join(database, PRIVATE, "@bob:x", displayname="Old Bob", avatar_url="mxc://x/old")
    await join(database, PRIVATE, "@dan:x", displayname="Dan Before")
    await join(database, PRIVATE, "@gone:x", displayname="Gone")
    await state_event(database, PRIVATE, "m.room.member", "@gone:x", {"membership": "leave"})
    # bob's newest join is the profile the directory shows.
    await join(database, PUBLIC, "@bob:x", displayname="Bobby Tables", avatar_url="mxc://x/b")

    for m in migrations:
        if 19 <= m.version < FILL:
            await database.execute_script(m.sql)
    # What the indexer wrote after 0019: newer than the fill, so kept. The public room's
    # history visibility changed (its join rule did not, and is filled in).
    await database.execute(
        "INSERT INTO user_directory (user_id, display_name, search_text)"
        " VALUES ('@dan:x', 'Dan After', '@dan:x dan after')"
    )
    await database.execute(
        "INSERT INTO user_directory_rooms (room_id, history_visibility) VALUES ($1, 'shared')",
        PUBLIC,
    )
    [fill] = [m for m in migrations if m.version == FILL]
    await database.execute_script(fill.sql)
    await database.execute_script(fill.sql)  # a second run changes nothing

    # Shared rooms and public rooms, with each user's newest profile.
    assert await found(database, "@alice:x", "tables") == [("@bob:x", "Bobby Tables")]
    assert await found(database, "@alice:x", "dan") == [("@dan:x", "Dan After")]
    assert await found(database, "@alice:x", "gone") == []
    # Lower-cased as the indexer does, beyond ASCII, on both engines.
    assert await found(database, "@zed:x", "ölaf") == [("@carol:x", "ÖLAF Carolsson")]
    # Someone in no room sees the public room's members only.
    assert await found(database, "@zed:x", "alice") == []
    assert await found(database, "@zed:x", "eve") == [("@eve:x", None)]
    [(nul, _name)] = await found(database, "@zed:x", "@nul")
    assert nul == "@nul:x"
    rooms = await database.fetch(
        "SELECT room_id, join_rule, history_visibility FROM user_directory_rooms ORDER BY room_id"
    )
    assert [tuple(r) for r in rooms] == [(PRIVATE, "invite", None), (PUBLIC, "public", "shared")]
    avatar = await database.fetchval(
        "SELECT avatar_url FROM user_directory WHERE user_id = '@bob:x'"
    )
    assert avatar == "mxc://x/b"
