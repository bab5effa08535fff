"""POST /createRoom beyond the room's initial state (C-S API "Creation", create_room.yaml): the
alias and its m.room.canonical_alias, the directory flag, and the invites (with is_direct)
sent once the room exists. RoomCreationHandler builds the state itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import AuthError, Codes, InvalidParam, MatrixError
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, get_room_version
from homeserver.handlers.directory import CANONICAL_ALIAS, DirectoryHandler, is_valid_alias
from homeserver.handlers.room import RoomCreationHandler, RoomCreationRequest
from homeserver.handlers.room_member import RoomMemberHandler
from homeserver.identifiers import is_valid_user_id
from homeserver.storage import Storage


@dataclass
class CreateRoomOptions:
    """The createRoom request body, type-checked by the transport."""

    preset: str | None = None
    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = field(default_factory=list)
    is_direct: bool = False
    initial_state: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    power_level_content_override: Mapping[str, Any] = field(default_factory=dict)
    creation_content: Mapping[str, Any] = field(default_factory=dict)
    room_version: str | None = None


class RoomCreator:
    def __init__(
        self,
        rooms: RoomCreationHandler,
        members: RoomMemberHandler,
        directory: DirectoryHandler,
        storage: Storage,
    ) -> None:
        self.rooms = rooms
        self.members = members
        self.directory = directory
        self.storage = storage
        self.extras = storage.room_extras

    async def create_room(self, creator: str, options: CreateRoomOptions) -> str:
        """Create the room; returns its ID. Everything that can be refused is checked before
        the room is made, so a refused request leaves nothing behind."""
        if options.visibility not in ("public", "private"):
            raise InvalidParam("visibility must be 'public' or 'private'")
        room_version = (
            get_room_version(options.room_version)
            if options.room_version is not None
            else DEFAULT_ROOM_VERSION
        )
        # create_room.yaml: without a preset, the visibility picks one.
        preset = options.preset or (
            "public_chat" if options.visibility == "public" else "private_chat"
        )
        alias = await self._check_alias(options.room_alias_name)
        for invitee in options.invite:
            if not isinstance(invitee, str) or not is_valid_user_id(invitee):
                raise InvalidParam(f"Invalid user ID in invite: {str(invitee)[:300]!r}")
            await self.members.check_local_user(invitee)

        initial_state = list(options.initial_state)
        if alias is not None:
            # Step 4 of create_room.yaml; an m.room.canonical_alias in initial_state (step 6)
            # still overrides it, as the order says.
            initial_state.insert(0, (CANONICAL_ALIAS, "", {"alias": alias}))
        profile = await self.storage.user_data.get_profile(creator)
        member_content: dict[str, Any] = profile.fields() if profile is not None else {}
        request = RoomCreationRequest(
            creator=creator,
            preset=preset,
            room_version=room_version,
            name=options.name,
            topic=options.topic,
            creation_content=options.creation_content,
            initial_state=initial_state,
            power_level_content_override=options.power_level_content_override,
            trusted_users=[u for u in options.invite if u != creator],
            creator_member_content=member_content,
        )
        try:
            room_id = await self.rooms.create_room(request)
        except AuthError as e:
            # create_room.yaml: the state the request implies is not allowed.
            raise MatrixError(
                f"The requested initial state is not allowed: {e.message}",
                Codes.INVALID_ROOM_STATE,
            ) from None
        if alias is not None:
            try:
                await self.directory.add_alias(alias, room_id, creator)
            except MatrixError:
                # Taken between the check and now by a concurrent request.
                raise MatrixError("Room alias already taken", Codes.ROOM_IN_USE) from None
        if options.visibility == "public":
            await self.extras.set_directory_visibility(room_id, "public")
        extra = {"is_direct": True} if options.is_direct else None
        for invitee in dict.fromkeys(options.invite):
            if invitee != creator:
                await self.members.update_membership(
                    creator, room_id, invitee, "invite", extra_content=extra
                )
        return room_id

    async def _check_alias(self, localpart: str | None) -> str | None:
        if localpart is None:
            return None
        # Synapse refuses whitespace too: such aliases cannot be typed or linked reliably.
        if not localpart or any(c.isspace() for c in localpart) or ":" in localpart:
            raise InvalidParam("room_alias_name may not be empty or contain ':' or whitespace")
        alias = f"#{localpart}:{self.directory.server_name}"
        if not is_valid_alias(alias):
            raise InvalidParam("room_alias_name is not a valid alias localpart")
        if await self.extras.get_alias(alias) is not None:
            raise MatrixError("Room alias already taken", Codes.ROOM_IN_USE)
        return alias
