"""RoomSummaryHandler: one room as a possible joiner sees it (C-S API "Room Summaries",
GET /room_summary/{roomIdOrAlias}, MSC3266): from this server's state when it is in the room,
else from another server's answer to S-S GET /hierarchy; shown under the rules /hierarchy
uses (`may_see`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from homeserver.errors import InvalidParam, NotFound
from homeserver.events.validation import is_valid_room_id_of_some_version
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.hierarchy import RemoteHierarchy
from homeserver.handlers.room_summary import RoomSummaries, may_see
from homeserver.identifiers import domain_of, is_valid_server_name
from homeserver.storage import Storage

JsonDict = dict[str, Any]

# room_summary.yaml RoomSummary: what is kept of another server's SpaceHierarchyRoomsChunk
# (its children_state is for /hierarchy only).
SUMMARY_FIELDS = (
    "room_id",
    "num_joined_members",
    "world_readable",
    "guest_can_join",
    "join_rule",
    "room_type",
    "room_version",
    "encryption",
    "name",
    "topic",
    "avatar_url",
    "canonical_alias",
    "allowed_room_ids",
)


class RoomSummaryHandler:
    def __init__(
        self,
        storage: Storage,
        summaries: RoomSummaries,
        directory: DirectoryHandler,
        server_name: str,
    ) -> None:
        self.storage = storage
        self.summaries = summaries
        self.directory = directory
        self.server_name = server_name
        # Set by federation: rooms this server is not in, asked of their servers.
        self.remote: RemoteHierarchy | None = None

    async def room_summary(
        self, user_id: str | None, room_id_or_alias: str, via: Sequence[str] = ()
    ) -> JsonDict:
        """The RoomSummary of a room the user (None: an unauthenticated caller) may see or
        join, with the user's membership. A room that is unknown and one the user may not
        see get the same 404, so that the answer tells nothing of the room's existence."""
        bad_via = [server for server in via if not is_valid_server_name(server)]
        if bad_via:
            raise InvalidParam(f"Invalid server name in via: {bad_via[0][:300]!r}")
        room_id, servers = await self._resolve(room_id_or_alias)
        room = await self._local(room_id)
        if room is None:
            # The client's servers first, then those the alias named, then the room ID's
            # domain (room versions up to 11 have one).
            room = await self._remote(room_id, [*via, *servers, domain_of(room_id)])
        membership = await self.storage.rooms.get_membership(room_id, user_id) if user_id else None
        if room is None or not await self._user_may_see(user_id, room, membership):
            raise NotFound("Room not found")
        if user_id is not None:
            # MSC3266: "leave" when the user has no membership (usually the case for a
            # room this server is not in).
            room["membership"] = membership or "leave"
        return room

    async def _resolve(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room ID, and the servers its alias's server named."""
        if room_id_or_alias.startswith("#"):
            try:
                resolved = await self.directory.resolve(room_id_or_alias)
            except NotFound:
                raise NotFound("Room not found") from None
            return resolved.room_id, resolved.servers
        if not is_valid_room_id_of_some_version(room_id_or_alias):
            raise InvalidParam(f"{room_id_or_alias[:300]!r} is neither a room ID nor an alias")
        return room_id_or_alias, []

    async def _local(self, room_id: str) -> JsonDict | None:
        # A room this server has left keeps a current state that no longer changes: another
        # server's view is fresher.
        if not await self.storage.rooms.rooms_with_server({room_id}, self.server_name):
            return None
        summary = (await self.summaries.summaries([room_id])).get(room_id)
        return summary.described() if summary is not None else None

    async def _remote(self, room_id: str, servers: Sequence[str]) -> JsonDict | None:
        # A v12 room ID has no domain: "" names no server.
        asked = [server for server in servers if server]
        if self.remote is None or not asked:
            return None
        answer = await self.remote.space(room_id, asked, suggested_only=False)
        if answer is None:
            return None
        return {key: answer.room[key] for key in SUMMARY_FIELDS if key in answer.room}

    async def _user_may_see(
        self, user_id: str | None, room: JsonDict, membership: str | None
    ) -> bool:
        present: set[str] = set()
        joined: set[str] = set()
        if user_id is not None:
            if membership in ("join", "invite"):
                present.add(room["room_id"])
            # Restricted rooms: the rooms whose members may join, read only when needed.
            if room.get("allowed_room_ids"):
                joined = set(await self.storage.rooms.get_rooms_for_user(user_id, "join"))
        return may_see(room, present, joined)
