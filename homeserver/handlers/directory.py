"""Room aliases on this server (C-S API "Room aliases", appendices "Room Aliases") and the
check that an m.room.canonical_alias event names aliases that point at its room."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import AuthError, Codes, Forbidden, InvalidParam, MatrixError, NotFound
from homeserver.handlers.auth import Requester
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.room_member import current_power_levels
from homeserver.identifiers import MAX_ID_BYTES, SERVER_NAME_PATTERN, domain_of
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore

CANONICAL_ALIAS = "m.room.canonical_alias"
BAD_ALIAS = "M_BAD_ALIAS"  # C-S API PUT /state: an alias that does not point at the room

# The localpart may hold any code point but `:` and NUL (appendices "Room Aliases").
_ALIAS = re.compile(r"#[^:\x00]+:" + SERVER_NAME_PATTERN + r"\Z")


def is_valid_alias(alias: object) -> bool:
    return (
        isinstance(alias, str)
        and _ALIAS.match(alias) is not None
        and len(alias.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES
    )


@dataclass(frozen=True)
class ResolvedAlias:
    room_id: str
    servers: list[str]


class RemoteAliases(Protocol):
    """Asks an alias's server which room it names (S-S API GET /query/directory);
    NotFound when it names none."""

    async def query_alias(self, alias: str) -> ResolvedAlias: ...


class DirectoryHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        events: EventCreationHandler,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.events = events
        self.clock = clock
        self.server_name = events.server.server_name
        # Set by federation: aliases of other servers.
        self.remote: RemoteAliases | None = None

    def parse_local_alias(self, alias: str) -> str:
        if not is_valid_alias(alias):
            raise InvalidParam(f"Invalid room alias {alias[:300]!r}")
        if domain_of(alias) != self.server_name:
            raise InvalidParam("Room aliases can only be created on this server's domain")
        return alias

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        self.parse_local_alias(alias)
        if await self.storage.rooms.get_room_version(room_id) is None:
            raise NotFound(f"Unknown room {room_id}")
        # Servers may restrict who creates aliases (directory.yaml); only members here, as
        # anyone else could squat names on rooms they cannot even see.
        if await self.storage.rooms.get_membership(room_id, requester.user_id) != "join":
            raise Forbidden("You must be in the room to create an alias for it")
        await self.add_alias(alias, room_id, requester.user_id)

    async def add_alias(self, alias: str, room_id: str, creator: str) -> None:
        if not await self.extras.create_alias(alias, room_id, creator, self.clock.time_ms()):
            raise MatrixError(f"Room alias {alias} already exists", Codes.UNKNOWN, status=409)

    async def resolve(self, alias: str) -> ResolvedAlias:
        if not is_valid_alias(alias):
            raise InvalidParam(f"Invalid room alias {alias[:300]!r}")
        if domain_of(alias) != self.server_name:
            if self.remote is None:
                raise NotFound(f"Room alias {alias} is on another server, which we cannot ask")
            return await self.remote.query_alias(alias)
        found = await self.extras.get_alias(alias)
        if found is None:
            raise NotFound(f"Room alias {alias} not found")
        room_id = found[0]
        joined = await self.storage.rooms.get_users_in_room(room_id)
        # Servers that can help a joining user: ours first, then others with members.
        servers = [self.server_name] + sorted({domain_of(u) for u in joined} - {self.server_name})
        return ResolvedAlias(room_id, servers)

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        if not is_valid_alias(alias):
            raise InvalidParam(f"Invalid room alias {alias[:300]!r}")
        found = await self.extras.get_alias(alias) if domain_of(alias) == self.server_name else None
        if found is None:
            raise NotFound(f"Room alias {alias} not found")
        room_id, creator = found
        if not (requester.user_id == creator or requester.is_admin):
            # Like Synapse: those who may change the canonical alias may delete aliases too.
            levels = await current_power_levels(self.storage, room_id)
            if levels is None or levels.user_level(requester.user_id) < levels.required_level(
                CANONICAL_ALIAS, ""
            ):
                raise Forbidden("You may not delete this alias")
        await self.extras.delete_alias(alias)
        await self._drop_from_canonical_alias(requester.user_id, room_id, alias)

    async def _drop_from_canonical_alias(self, user_id: str, room_id: str, alias: str) -> None:
        """Take a deleted alias out of the room's m.room.canonical_alias, when the user may."""
        event_id = await self.storage.rooms.get_current_state_event_id(room_id, CANONICAL_ALIAS, "")
        event = await self.storage.events.get_event(event_id) if event_id else None
        if event is None:
            return
        content = dict(event.content)
        alt = content.get("alt_aliases")
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if not changed:
            return
        try:
            await self.events.send_event(room_id, CANONICAL_ALIAS, user_id, content, state_key="")
        except AuthError:
            pass  # the alias is gone either way; the stale event no longer resolves

    async def room_aliases(self, room_id: str) -> list[str]:
        return await self.extras.get_aliases_for_room(room_id)

    async def check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """C-S API PUT /state m.room.canonical_alias: every alias named must be well formed
        (400 M_INVALID_PARAM) and point at this room (400 M_BAD_ALIAS)."""
        named: list[Any] = []
        if content.get("alias") is not None:
            named.append(content["alias"])
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise InvalidParam("alt_aliases must be a list of room aliases")
            named.extend(alt)
        for alias in named:
            if not is_valid_alias(alias):
                raise InvalidParam(f"Invalid room alias {str(alias)[:300]!r}")
            found = (
                await self.extras.get_alias(alias) if domain_of(alias) == self.server_name else None
            )
            if found is None or found[0] != room_id:
                raise MatrixError(f"Room alias {alias} does not point to this room", BAD_ALIAS)
