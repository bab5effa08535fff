"""Rooms, their current state and the membership index."""

from __future__ import annotations

from collections.abc import Collection

from homeserver.events.event import StateKey, StateMap
from homeserver.events.room_versions import RoomVersion, get_room_version
from homeserver.storage.database import Database


class RoomsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # A room's version never changes, so it is cached for good once known.
        self._versions: dict[str, RoomVersion] = {}

    async def get_room_version(self, room_id: str) -> RoomVersion | None:
        version = self._versions.get(room_id)
        if version is None:
            identifier = await self.db.fetchval(
                "SELECT room_version FROM rooms WHERE room_id = $1", room_id
            )
            if identifier is None:
                return None
            version = self._versions[room_id] = get_room_version(identifier)
        return version

    async def get_current_state_ids(
        self, room_id: str, types: Collection[str] | None = None
    ) -> StateMap:
        if types is None:
            rows = await self.db.fetch(
                "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = $1",
                room_id,
            )
        else:
            clause, arg = self.db.in_list("type", 2, types)
            rows = await self.db.fetch(
                "SELECT type, state_key, event_id FROM current_state_events"
                f" WHERE room_id = $1 AND {clause}",
                room_id,
                arg,
            )
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_current_state_for_keys(
        self, room_id: str, keys: Collection[StateKey]
    ) -> StateMap:
        """The current state at a few keys (what the auth rules read), without loading the
        rest of a large room's state."""
        types_clause, types = self.db.in_list("type", 2, {t for t, _ in keys})
        keys_clause, state_keys = self.db.in_list("state_key", 3, {k for _, k in keys})
        rows = await self.db.fetch(
            "SELECT type, state_key, event_id FROM current_state_events"
            f" WHERE room_id = $1 AND {types_clause} AND {keys_clause}",
            room_id,
            types,
            state_keys,
        )
        return {(r[0], r[1]): r[2] for r in rows if (r[0], r[1]) in keys}

    async def get_current_state_in_rooms(
        self, room_ids: Collection[str], types: Collection[str]
    ) -> dict[str, StateMap]:
        """The current state of several rooms at the given types with an empty state key
        (what a room summary shows), in one query."""
        rooms_clause, rooms = self.db.in_list("room_id", 1, room_ids)
        types_clause, type_list = self.db.in_list("type", 2, types)
        rows = await self.db.fetch(
            "SELECT room_id, type, event_id FROM current_state_events"
            f" WHERE {rooms_clause} AND {types_clause} AND state_key = ''",
            rooms,
            type_list,
        )
        state: dict[str, StateMap] = {}
        for room_id, event_type, event_id in rows:
            state.setdefault(room_id, {})[(event_type, "")] = event_id
        return state

    async def count_joined_members(self, room_ids: Collection[str]) -> dict[str, int]:
        """How many users are joined to each room (rooms with none are absent)."""
        clause, rooms = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, COUNT(*) FROM current_state_events"
            f" WHERE {clause} AND type = 'm.room.member' AND membership = 'join'"
            " GROUP BY room_id",
            rooms,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_current_state_event_id(
        self, room_id: str, event_type: str, state_key: str
    ) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT event_id FROM current_state_events"
            " WHERE room_id = $1 AND type = $2 AND state_key = $3",
            room_id,
            event_type,
            state_key,
        )
        return value

    # The member queries name the type as a literal so that PostgreSQL can use the partial
    # index current_state_members, whose predicate is that literal.

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT membership FROM current_state_events"
            " WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2",
            room_id,
            user_id,
        )
        return value

    async def get_rooms_for_user(self, user_id: str, membership: str = "join") -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM current_state_events"
            " WHERE type = 'm.room.member' AND state_key = $1 AND membership = $2",
            user_id,
            membership,
        )
        return [r[0] for r in rows]

    async def is_server_in_room(self, room_id: str, server_name: str) -> bool:
        """Whether a user of `server_name` is joined to the room now."""
        row = await self.db.fetchrow(
            "SELECT 1 FROM current_state_events WHERE room_id = $1 AND type = 'm.room.member'"
            " AND membership = 'join' AND state_key LIKE $2 LIMIT 1",
            room_id,
            f"%:{server_name}",
        )
        return row is not None

    async def get_users_in_room(self, room_id: str, membership: str = "join") -> list[str]:
        rows = await self.db.fetch(
            "SELECT state_key FROM current_state_events"
            " WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2",
            room_id,
            membership,
        )
        return [r[0] for r in rows]

    async def get_current_state_of_type(
        self, room_ids: Collection[str], event_type: str
    ) -> dict[str, dict[str, str]]:
        """Each room's current state events of one type, by state key (the m.space.child
        events of several spaces), in one query."""
        clause, rooms = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, state_key, event_id FROM current_state_events"
            f" WHERE {clause} AND type = $2",
            rooms,
            event_type,
        )
        state: dict[str, dict[str, str]] = {}
        for room_id, state_key, event_id in rows:
            state.setdefault(room_id, {})[state_key] = event_id
        return state

    async def rooms_with_server(self, room_ids: Collection[str], server_name: str) -> set[str]:
        """Which of the rooms a user of `server_name` is joined to now, in one query."""
        clause, rooms = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT DISTINCT room_id FROM current_state_events"
            f" WHERE {clause} AND type = 'm.room.member' AND membership = 'join'"
            " AND state_key LIKE $2",
            rooms,
            f"%:{server_name}",
        )
        return {r[0] for r in rows}
