"""Room upgrades (C-S API "Room Upgrades", POST /rooms/{roomId}/upgrade): a replacement room
in the new version with the old room's transferable state, the local aliases moved over, a
tombstone in the old room and the old room's power levels raised so that it falls quiet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.clock import Clock
from homeserver.errors import AuthError, Forbidden, InvalidParam, NotFound
from homeserver.events.event import (
    CREATE,
    HISTORY_VISIBILITY,
    JOIN_RULES,
    POWER_LEVELS,
    Event,
    StateKey,
)
from homeserver.events.room_versions import RoomVersion, get_room_version
from homeserver.handlers.directory import CANONICAL_ALIAS
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.persistence import RoomLinearizer
from homeserver.handlers.room import GUEST_ACCESS, RoomCreationHandler, RoomCreationRequest
from homeserver.identifiers import is_valid_user_id
from homeserver.storage import Storage

TOMBSTONE = "m.room.tombstone"
# Step 3's recommended list; the power levels are handled apart. No member events (servers
# cannot impersonate other servers' users) and nothing whose meaning depends on its sender.
_TRANSFERRED = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    GUEST_ACCESS,
    HISTORY_VISIBILITY,
    JOIN_RULES,
)
# Step 6: what the old room's power levels are raised to (at least), so nobody new is
# invited and ordinary members can no longer talk there.
_QUIETED = ("events_default", "invite")


class TagCopier(Protocol):
    async def copy_tags(self, user_id: str, old_room: str, new_room: str) -> None: ...


class RoomRuleCopier(Protocol):
    async def copy_room_rules(self, user_id: str, old_room: str, new_room: str) -> None: ...


class UpgradeCarryOver:
    """What a member set up for a room follows them into its replacement when they join it,
    as Synapse does: the room's tags and the push rules naming it (a muted room stays
    muted, a favourite stays a favourite)."""

    def __init__(self, storage: Storage, tags: TagCopier, push_rules: RoomRuleCopier) -> None:
        self.storage = storage
        self.tags = tags
        self.push_rules = push_rules

    async def joined(self, user_id: str, room_id: str) -> None:
        create_id = await self.storage.rooms.get_current_state_event_id(room_id, CREATE, "")
        create = await self.storage.events.get_event(create_id) if create_id else None
        predecessor = create.content.get("predecessor") if create is not None else None
        old_room = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        if not isinstance(old_room, str):
            return
        if await self.storage.rooms.get_membership(old_room, user_id) is None:
            return
        await self.tags.copy_tags(user_id, old_room, room_id)
        await self.push_rules.copy_room_rules(user_id, old_room, room_id)


class RoomUpgradeHandler:
    def __init__(
        self,
        storage: Storage,
        events: EventCreationHandler,
        rooms: RoomCreationHandler,
        clock: Clock,
        carry_over: UpgradeCarryOver,
    ) -> None:
        self.storage = storage
        self.extras = storage.room_extras
        self.events = events
        self.rooms = rooms
        self.clock = clock
        self.carry_over = carry_over
        # One upgrade of a room at a time: two at once would make two replacement rooms.
        self._upgrading = RoomLinearizer()

    async def upgrade(
        self,
        user_id: str,
        room_id: str,
        new_version: str,
        additional_creators: Sequence[str] = (),
    ) -> str:
        """Upgrade the room; returns the replacement room's ID."""
        room_version = get_room_version(new_version)  # 400 M_UNSUPPORTED_ROOM_VERSION
        for creator in additional_creators:
            if not is_valid_user_id(creator):
                raise InvalidParam(f"Invalid user ID in additional_creators: {creator[:300]!r}")
        async with self._upgrading.lock(room_id):
            state = await self._old_state(room_id)
            create = state[(CREATE, "")]
            levels = PowerLevels(create, state.get((POWER_LEVELS, "")))
            # Step 1, checked before anything is made.
            if await self.storage.rooms.get_membership(room_id, user_id) != "join":
                raise Forbidden("You are not in this room")
            if levels.user_level(user_id) < levels.required_level(TOMBSTONE, ""):
                raise Forbidden("You do not have permission to upgrade this room")
            new_room = await self._create_replacement(
                user_id, room_id, room_version, state, levels, additional_creators
            )
            await self._move_aliases(user_id, room_id, new_room, state)
            # The upgrading user joined the new room in making it.
            await self.carry_over.joined(user_id, new_room)
            await self.events.send_event(
                room_id,
                TOMBSTONE,
                user_id,
                {"body": "This room has been replaced", "replacement_room": new_room},
                state_key="",
            )
            await self._quiet_old_room(user_id, room_id, levels)
            return new_room

    async def _old_state(self, room_id: str) -> dict[StateKey, Event]:
        ids = await self.storage.rooms.get_current_state_ids(room_id)
        if (CREATE, "") not in ids:
            raise NotFound(f"Unknown room {room_id}")
        wanted = {
            key: event_id
            for key, event_id in ids.items()
            if key[1] == "" and key[0] in (CREATE, POWER_LEVELS, CANONICAL_ALIAS, *_TRANSFERRED)
        }
        events = await self.storage.events.get_events(wanted.values())
        return {key: events[event_id] for key, event_id in wanted.items() if event_id in events}

    async def _create_replacement(
        self,
        user_id: str,
        room_id: str,
        room_version: RoomVersion,
        state: Mapping[StateKey, Event],
        levels: PowerLevels,
        additional_creators: Sequence[str],
    ) -> str:
        """Step 2 and 3: the new room, its create event naming the predecessor and copying
        the room type, then the transferable state."""
        old_create = state[(CREATE, "")].content
        predecessor: dict[str, Any] = {"room_id": room_id}
        if not room_version.room_id_from_create_event:
            # Optional from v12 on; before, the last event this server knows of.
            extremities = await self.storage.events.get_forward_extremities(room_id)
            if extremities:
                predecessor["event_id"] = sorted(extremities)[0]
        creation_content: dict[str, Any] = {"predecessor": predecessor}
        for key in ("type", "m.federate"):
            if key in old_create:
                creation_content[key] = old_create[key]
        if room_version.privileged_creators and additional_creators:
            # Never copied from the old room (spec v1.16): the request names them all.
            creation_content["additional_creators"] = list(dict.fromkeys(additional_creators))
        new_levels, own_level = self._new_power_levels(
            user_id, room_version, levels, state, additional_creators
        )
        # The upgrader creates the copied state, so may need more power for that than the
        # old levels give them: raised in the initial levels, the old ones restored after.
        needed = max(
            [levels.required_level(POWER_LEVELS, "")]
            + [levels.required_level(t, "") for t, _ in state if t in _TRANSFERRED]
        )
        initial_levels = new_levels
        raised = own_level is not None and own_level < needed
        if raised:
            initial_levels = {**new_levels, "users": {**new_levels["users"], user_id: needed}}
        initial_state: list[tuple[str, str, Mapping[str, Any]]] = [
            (POWER_LEVELS, "", initial_levels)
        ]
        initial_state += [
            (t, k, event.content) for (t, k), event in state.items() if t in _TRANSFERRED
        ]
        profile = await self.storage.user_data.get_profile(user_id)
        new_room = await self.rooms.create_room(
            RoomCreationRequest(
                creator=user_id,
                preset="private_chat",
                room_version=room_version,
                creation_content=creation_content,
                initial_state=initial_state,
                creator_member_content=profile.fields() if profile is not None else {},
            )
        )
        if raised:
            await self.events.send_event(new_room, POWER_LEVELS, user_id, new_levels, state_key="")
        return new_room

    def _new_power_levels(
        self,
        user_id: str,
        room_version: RoomVersion,
        levels: PowerLevels,
        state: Mapping[StateKey, Event],
        additional_creators: Sequence[str],
    ) -> tuple[dict[str, Any], int | None]:
        """The old room's power levels for the new room, and the upgrader's level in them
        (None for a v12 creator, whose power is unlimited)."""
        old = state.get((POWER_LEVELS, ""))
        content: dict[str, Any] = dict(old.content) if old is not None else {}
        users = dict(content.get("users") or {})
        if room_version.privileged_creators:
            # v12 creators must not be listed (v12 auth rule 10.4).
            for creator in (user_id, *additional_creators):
                users.pop(creator, None)
            content["users"] = users
            return content, None
        own = levels.user_level(user_id)
        if levels.room_version.privileged_creators and levels.is_creator(user_id):
            # An unlisted v12 creator becomes the new room's creator at the usual 100.
            users[user_id] = own = 100
        content["users"] = users
        return content, int(own)

    async def _move_aliases(
        self, user_id: str, room_id: str, new_room: str, state: Mapping[StateKey, Event]
    ) -> None:
        """Step 4: the local aliases and the directory listing go to the new room, and the
        canonical alias with them (the old room's is emptied, as its aliases no longer lead
        there)."""
        now = self.clock.time_ms()
        for alias in await self.extras.get_aliases_for_room(room_id):
            found = await self.extras.get_alias(alias)
            creator = found[1] if found is not None else user_id
            await self.extras.delete_alias(alias)
            await self.extras.create_alias(alias, new_room, creator, now)
        if await self.extras.get_directory_visibility(room_id) == "public":
            await self.extras.set_directory_visibility(new_room, "public")
            await self.extras.set_directory_visibility(room_id, "private")
        canonical = state.get((CANONICAL_ALIAS, ""))
        if canonical is None or not canonical.content:
            return
        for target, content in ((new_room, canonical.content), (room_id, {})):
            try:
                await self.events.send_event(
                    target, CANONICAL_ALIAS, user_id, content, state_key=""
                )
            except AuthError:
                pass  # the upgrader may not change it there: the aliases moved regardless

    async def _quiet_old_room(self, user_id: str, room_id: str, levels: PowerLevels) -> None:
        """Step 6: events_default and invite to at least max(50, users_default + 1), when the
        upgrader may change the power levels."""
        if levels.content is None:
            return
        floor = max(50, levels.named_level("users_default") + 1)
        content = dict(levels.content)
        changed = False
        for name in _QUIETED:
            if levels.named_level(name) < floor:
                content[name] = floor
                changed = True
        if not changed:
            return
        try:
            await self.events.send_event(room_id, POWER_LEVELS, user_id, content, state_key="")
        except AuthError:
            pass  # "if possible": the tombstone is already there
