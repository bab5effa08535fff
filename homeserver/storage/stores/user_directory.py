"""The user directory's index (C-S API "User directory"): each user's newest profile from
their room joins, and which rooms are public or world-readable. Kept up to date by an
EventIndexer in the transaction that stores events (migration 0021 filled it from the current
state of databases older than the index); searched with the rooms' current membership, so
leaving a room takes a user out of others' results at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import HISTORY_VISIBILITY, JOIN_RULES, MEMBER
from homeserver.storage.database import Database, Txn
from homeserver.storage.stores.persist import IndexedEvent


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def like_pattern(term: str) -> str:
    """A LIKE pattern (escape character backslash) matching `term` anywhere, case-folded."""
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Joined members of rooms the searcher is joined to, or of public or world-readable rooms.
_VISIBLE_MEMBERS = """
    SELECT m.state_key FROM current_state_events AS m
    WHERE m.type = 'm.room.member' AND m.membership = 'join' AND (
        m.room_id IN (
            SELECT mine.room_id FROM current_state_events AS mine
            WHERE mine.type = 'm.room.member' AND mine.state_key = $2
                AND mine.membership = 'join')
        OR m.room_id IN (
            SELECT r.room_id FROM user_directory_rooms AS r
            WHERE r.join_rule = 'public' OR r.history_visibility = 'world_readable'))
"""


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None:
        # Backfilled events are older than what the index holds already.
        for item in events:
            event = item.event
            if not item.accepted or item.backfilled or event.state_key is None:
                continue
            if event.type == MEMBER and event.membership == "join":
                await self._set_profile_txn(txn, event.state_key, event.content)
            elif event.type == JOIN_RULES and event.state_key == "":
                await self._set_room_txn(txn, room_id, "join_rule", event.content)
            elif event.type == HISTORY_VISIBILITY and event.state_key == "":
                await self._set_room_txn(txn, room_id, "history_visibility", event.content)

    async def _set_profile_txn(self, txn: Txn, user_id: str, content: Any) -> None:
        display_name = _text(content.get("displayname"))
        avatar_url = _text(content.get("avatar_url"))
        search_text = f"{user_id} {display_name or ''}".lower()
        await txn.execute(
            "INSERT INTO user_directory (user_id, display_name, avatar_url, search_text)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
            " display_name = $2, avatar_url = $3, search_text = $4",
            user_id,
            display_name,
            avatar_url,
            search_text,
        )

    async def _set_room_txn(self, txn: Txn, room_id: str, column: str, content: Any) -> None:
        # `column` is one of two names fixed above, never from the event.
        value = _text(content.get(column))
        await txn.execute(
            f"INSERT INTO user_directory_rooms (room_id, {column}) VALUES ($1, $2)"
            f" ON CONFLICT (room_id) DO UPDATE SET {column} = $2",
            room_id,
            value,
        )

    async def search(
        self, searcher: str, term: str, limit: int, *, all_local_users: bool
    ) -> list[DirectoryEntry]:
        """Up to `limit` users whose ID or display name contains `term`, among the members of
        the searcher's rooms and of public or world-readable rooms; with `all_local_users`,
        every active account of this server too. Users whose localpart or display name
        starts with the term come first, then those with a display name.

        A scan of the directory with LIKE: fine for the thousands of users one server sees;
        a full-text index (tsvector / FTS5) is the step beyond."""
        pattern, prefix = like_pattern(term), _prefix_pattern(term)
        rows = list(
            await self.db.fetch(
                "SELECT user_id, display_name, avatar_url FROM user_directory"
                f" WHERE search_text LIKE $1 ESCAPE '\\' AND user_id IN ({_VISIBLE_MEMBERS})"
                f" ORDER BY {_rank_sql('$3')} LIMIT $4",
                pattern,
                searcher,
                prefix,
                limit,
            )
        )
        if all_local_users:
            # Accounts in no room have no directory row: their profile is the account's.
            rows += await self.db.fetch(
                "SELECT user_id, display_name, avatar_url FROM (SELECT user_id,"
                " displayname AS display_name, avatar_url FROM users"
                " WHERE deactivated = FALSE AND (LOWER(user_id) LIKE $1 ESCAPE '\\'"
                " OR LOWER(COALESCE(displayname, '')) LIKE $1 ESCAPE '\\')) AS accounts"
                f" ORDER BY {_rank_sql('$2')} LIMIT $3",
                pattern,
                prefix,
                limit,
            )
        entries = {row[0]: DirectoryEntry(row[0], row[1], row[2]) for row in reversed(rows)}
        return sorted(entries.values(), key=lambda e: _rank(e, term))[:limit]


def _rank_sql(prefix: str) -> str:
    """ORDER BY terms, `prefix` naming the parameter that holds _prefix_pattern: localpart or
    display name starting with the term first, then users with a display name."""
    return (
        f"CASE WHEN SUBSTR(LOWER(user_id), 2) LIKE {prefix} ESCAPE '\\'"
        f" OR LOWER(COALESCE(display_name, '')) LIKE {prefix} ESCAPE '\\' THEN 0 ELSE 1 END,"
        " CASE WHEN display_name IS NULL THEN 1 ELSE 0 END, user_id"
    )


def _prefix_pattern(term: str) -> str:
    return like_pattern(term.removeprefix("@"))[1:]


def _rank(entry: DirectoryEntry, term: str) -> tuple[int, int, str]:
    term = term.lower().removeprefix("@")
    starts = entry.user_id[1:].lower().startswith(term) or (
        entry.display_name or ""
    ).lower().startswith(term)
    return (0 if starts else 1, 1 if entry.display_name is None else 0, entry.user_id)
