"""Rooms, their current state and the membership index."""

from __future__ import annotations

from collections.abc import Collection

from homeserver.events.event import MEMBER, StateMap
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

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT membership FROM current_state_events"
            " WHERE room_id = $1 AND type = $2 AND state_key = $3",
            room_id,
            MEMBER,
            user_id,
        )
        return value

    async def get_rooms_for_user(self, user_id: str, membership: str = "join") -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM current_state_events"
            " WHERE type = $1 AND state_key = $2 AND membership = $3",
            MEMBER,
            user_id,
            membership,
        )
        return [r[0] for r in rows]

    async def get_users_in_room(self, room_id: str, membership: str = "join") -> list[str]:
        rows = await self.db.fetch(
            "SELECT state_key FROM current_state_events"
            " WHERE room_id = $1 AND type = $2 AND membership = $3",
            room_id,
            MEMBER,
            membership,
        )
        return [r[0] for r in rows]

    async def get_membership_history(
        self, room_id: str, user_id: str
    ) -> list[tuple[str, str, int]]:
        """(event_id, membership, stream_ordering) of every membership event, oldest first."""
        rows = await self.db.fetch(
            "SELECT event_id, membership, stream_ordering FROM room_memberships"
            " WHERE room_id = $1 AND user_id = $2 ORDER BY stream_ordering",
            room_id,
            user_id,
        )
        return [(r[0], r[1], r[2]) for r in rows]
