"""Membership changes a local user asks for (C-S API "Room membership": join, invite, leave,
kick, ban, unban, forget). Each is one m.room.member event through EventCreationHandler, so the
auth rules decide what is allowed; this adds the checks the rules cannot make (a kick needs a
target in the room, an unban a banned one) and the member event's profile fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.auth_rules.selection import CREATE_KEY, POWER_LEVELS_KEY
from homeserver.errors import Codes, Forbidden, InvalidParam, MatrixError, NotFound
from homeserver.events.event import MEMBER, Event
from homeserver.handlers.message import EventCreationHandler
from homeserver.identifiers import domain_of, is_valid_user_id
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore

# Which membership each action sets, and which current memberships of the target it needs
# (None: any). The auth rules check the rest.
_ACTIONS: Mapping[str, tuple[str, frozenset[str | None] | None]] = {
    "join": ("join", None),
    "invite": ("invite", None),
    "leave": ("leave", None),
    "kick": ("leave", frozenset({"join", "invite", "knock"})),
    "ban": ("ban", None),
    "unban": ("leave", frozenset({"ban"})),
}


async def current_power_levels(storage: Storage, room_id: str) -> PowerLevels | None:
    """The power levels in force in a room now; None for a room we do not know."""
    state = await storage.rooms.get_current_state_for_keys(room_id, [CREATE_KEY, POWER_LEVELS_KEY])
    events = await storage.events.get_events(state.values())
    create = events.get(state.get(CREATE_KEY, ""))
    if create is None:
        return None
    return PowerLevels(create, events.get(state.get(POWER_LEVELS_KEY, "")))


class RoomMemberHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        events: EventCreationHandler,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.events = events
        self.server_name = events.server.server_name

    async def update_membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        action: str,
        *,
        reason: str | None = None,
        extra_content: Mapping[str, Any] | None = None,
    ) -> str:
        """Send the member event `action` implies; returns its event ID (or that of the
        current member event when it would be identical, as a repeated request)."""
        membership, needs = _ACTIONS[action]
        if not is_valid_user_id(target):
            raise InvalidParam(f"Invalid user ID {target[:300]!r}")
        if await self.storage.rooms.get_room_version(room_id) is None:
            raise NotFound(self.unknown_room_message(room_id))
        if action == "invite":
            await self.check_local_user(target)
        current_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, target)
        current: Event | None = None
        if current_id is not None:
            current = await self.storage.events.get_event(current_id)
        old = current.membership if current is not None else None
        if needs is not None and old not in needs:
            if action == "unban":
                raise MatrixError(f"{target} is not banned", Codes.BAD_STATE, status=403)
            raise Forbidden(f"{target} is not in the room")

        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            profile = await self.extras.get_profile(target)
            if profile is not None:
                displayname, avatar_url = profile
                if displayname is not None:
                    content["displayname"] = displayname
                if avatar_url is not None:
                    content["avatar_url"] = avatar_url
        content.update(extra_content or {})
        if reason is not None:
            content["reason"] = reason
        if current is not None and current.sender == sender and dict(current.content) == content:
            return current.event_id
        persisted = await self.events.send_event(room_id, MEMBER, sender, content, state_key=target)
        return persisted.event.event_id

    async def check_local_user(self, user_id: str) -> None:
        """Invites (and createRoom's `invite`) reach local users only until federation does."""
        if domain_of(user_id) != self.server_name:
            raise Forbidden(
                f"Cannot invite {user_id}: this server does not federate with other servers yet"
            )
        if await self.extras.get_profile(user_id) is None:
            raise InvalidParam(f"Unknown user {user_id}")

    def unknown_room_message(self, room_id: str) -> str:
        domain = domain_of(room_id)
        if domain and domain != self.server_name:
            return (
                f"Room {room_id} is on another server ({domain}); joining rooms over"
                " federation is not supported yet"
            )
        return f"Unknown room {room_id}"

    async def forget(self, user_id: str, room_id: str) -> None:
        """C-S API POST /forget: only a room the user has left (or was banned from)."""
        current_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, user_id)
        if current_id is None:
            return  # nothing to forget
        current = await self.storage.events.get_event(current_id)
        if current is not None and current.membership not in ("leave", "ban"):
            raise MatrixError(f"User {user_id} is in room {room_id}", Codes.UNKNOWN, status=400)
        await self.extras.forget_room(user_id, room_id, current_id)

    async def joined_rooms(self, user_id: str) -> list[str]:
        return sorted(await self.storage.rooms.get_rooms_for_user(user_id, "join"))
