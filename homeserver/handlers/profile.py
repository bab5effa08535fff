"""ProfileHandler: display names and avatars (C-S API "Profiles"), and their propagation into
every room the user is joined to as a new m.room.member join event ("Events on Change of
Profile Information")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.events.event import MEMBER
from homeserver.handlers.message import EventCreationHandler
from homeserver.identifiers import domain_of
from homeserver.storage import Storage
from homeserver.storage.stores.user_data import Profile, ProfileField, UserDataStore

logger = logging.getLogger(__name__)

PROFILE_FIELDS: tuple[ProfileField, ...] = ("displayname", "avatar_url")
# Synapse's limits; the spec only bounds the whole profile (64 KiB) and keys (255 bytes).
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
# Rooms updated at once when a profile changes: each is a separate event to persist.
_PROPAGATION_CONCURRENCY = 8


class RemoteProfiles(Protocol):
    """Asks a user's server for their profile (S-S API GET /query/profile); NotFound when
    that server does not know them."""

    async def query_profile(self, user_id: str) -> dict[str, str]: ...


class ProfileHandler:
    def __init__(
        self,
        storage: Storage,
        user_data: UserDataStore,
        events: EventCreationHandler,
        server_name: str,
    ) -> None:
        self.storage = storage
        self.user_data = user_data
        self.events = events
        self.server_name = server_name
        # Set by federation: other servers' users' profiles.
        self.remote: RemoteProfiles | None = None

    def is_mine(self, user_id: str) -> bool:
        return domain_of(user_id) == self.server_name

    async def get_profile(self, user_id: str) -> dict[str, str]:
        """The profile as the spec returns it (fields not set are absent). 404 M_NOT_FOUND for
        unknown users. Another server's users are asked of their server."""
        if not self.is_mine(user_id) and self.remote is not None:
            return await self.remote.query_profile(user_id)
        return (await self._profile(user_id)).fields()

    async def _profile(self, user_id: str) -> Profile:
        profile = await self.user_data.get_profile(user_id) if self.is_mine(user_id) else None
        if profile is None:
            raise NotFound("Profile not found")
        return profile

    async def set_field(
        self, requester_id: str, user_id: str, name: ProfileField, value: str | None
    ) -> None:
        if requester_id != user_id:
            raise Forbidden("Cannot set another user's profile")
        limit = MAX_DISPLAYNAME_LEN if name == "displayname" else MAX_AVATAR_URL_LEN
        if value is not None and len(value) > limit:
            raise MatrixError(f"{name} is too long (at most {limit})", Codes.INVALID_PARAM)
        if name == "avatar_url" and value and not value.startswith("mxc://"):
            raise MatrixError("avatar_url must be an mxc:// URI", Codes.INVALID_PARAM)
        profile = await self._profile(user_id)
        if profile.deactivated:
            raise Forbidden("The account is deactivated")
        await self.user_data.set_profile_field(user_id, name, value or None)
        await self.propagate(user_id)

    async def propagate(self, user_id: str) -> None:
        """Send a new join event carrying the current profile into each joined room. A room
        that refuses it (the event is authorised like any other join) is logged and skipped:
        the profile itself has changed either way."""
        profile = await self._profile(user_id)
        room_ids = await self.storage.rooms.get_rooms_for_user(user_id)
        limit = asyncio.Semaphore(_PROPAGATION_CONCURRENCY)

        async def update(room_id: str) -> None:
            async with limit:
                try:
                    await self._update_member_event(room_id, user_id, profile)
                except MatrixError as e:
                    logger.warning(
                        "profile update not sent room_id=%s user_id=%s errcode=%s error=%s",
                        room_id,
                        user_id,
                        e.errcode,
                        e.message,
                    )

        await asyncio.gather(*(update(r) for r in room_ids))

    async def _update_member_event(self, room_id: str, user_id: str, profile: Profile) -> None:
        event_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, user_id)
        current = await self.storage.events.get_event(event_id) if event_id else None
        if current is None or current.content.get("membership") != "join":
            return  # left meanwhile
        # Keep whatever else the join carried, but not the restricted-join authorisation: that
        # needs the authorising server's signature (auth rules v8+), and a join -> join
        # change needs no authorisation anyway.
        content: dict[str, Any] = dict(current.content)
        content.pop("join_authorised_via_users_server", None)
        for name, value in (
            ("displayname", profile.displayname),
            ("avatar_url", profile.avatar_url),
        ):
            if value is None:
                content.pop(name, None)
            else:
                content[name] = value
        if content == current.content:
            return
        await self.events.send_event(room_id, MEMBER, user_id, content, state_key=user_id)

