"""RoomSummaries: what a room directory, a space hierarchy or GET /room_summary shows of a room
without joining it (C-S API PublishedRoomsChunk and RoomSummary: name, topic, alias, avatar,
member count, join rule, type, and whether guests or anyone may read it), read for many rooms in
a few batched queries; and who may see a room so described (`may_see`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import CREATE, HISTORY_VISIBILITY, JOIN_RULES, Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.handlers.room_member import membership_conditions
from homeserver.storage import Storage

JsonDict = dict[str, Any]

NAME = "m.room.name"
TOPIC = "m.room.topic"
CANONICAL_ALIAS = "m.room.canonical_alias"
AVATAR = "m.room.avatar"
GUEST_ACCESS = "m.room.guest_access"
ENCRYPTION = "m.room.encryption"
MEGOLM = "m.megolm.v1.aes-sha2"  # the one `encryption` value room_summary.yaml allows
RESTRICTED_RULES = ("restricted", "knock_restricted")
SUMMARY_TYPES = (
    CREATE,
    NAME,
    TOPIC,
    CANONICAL_ALIAS,
    AVATAR,
    JOIN_RULES,
    HISTORY_VISIBILITY,
    GUEST_ACCESS,
    ENCRYPTION,
)


@dataclass(frozen=True)
class RoomSummary:
    room_id: str
    room_version: str
    num_joined_members: int
    world_readable: bool
    guest_can_join: bool
    join_rule: str
    name: str | None = None
    topic: str | None = None
    canonical_alias: str | None = None
    avatar_url: str | None = None
    room_type: str | None = None
    encryption: str | None = None
    # The rooms whose members may join (restricted and knock_restricted join rules).
    allowed_room_ids: tuple[str, ...] = ()

    def chunk(self) -> JsonDict:
        """The C-S API PublishedRoomsChunk (optional fields left out when unset)."""
        chunk: JsonDict = {
            "room_id": self.room_id,
            "num_joined_members": self.num_joined_members,
            "world_readable": self.world_readable,
            "guest_can_join": self.guest_can_join,
            "join_rule": self.join_rule,
        }
        for key in ("name", "topic", "canonical_alias", "avatar_url", "room_type"):
            value = getattr(self, key)
            if value is not None:
                chunk[key] = value
        return chunk

    def described(self) -> JsonDict:
        """The C-S API RoomSummary (room_summary.yaml): the PublishedRoomsChunk with the room
        version, its encryption and the rooms its restricted join rules allow."""
        described = self.chunk()
        described["room_version"] = self.room_version
        if self.encryption == MEGOLM:
            described["encryption"] = self.encryption
        if self.join_rule in RESTRICTED_RULES:
            described["allowed_room_ids"] = list(self.allowed_room_ids)
        return described


class RoomSummaries:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def summaries(self, room_ids: Collection[str]) -> dict[str, RoomSummary]:
        """The summaries of the rooms this server knows the current state of (others are
        absent), in three queries whatever the number of rooms."""
        if not room_ids:
            return {}
        state = await self.storage.rooms.get_current_state_in_rooms(room_ids, SUMMARY_TYPES)
        counts = await self.storage.rooms.count_joined_members(list(state))
        events = await self.storage.events.get_events(
            [e for room in state.values() for e in room.values()]
        )
        summaries = {}
        for room_id, room_state in state.items():
            by_type = {t: events[e] for (t, _), e in room_state.items() if e in events}
            create = by_type.get(CREATE)
            if create is None:
                continue
            summaries[room_id] = _summary(room_id, create, by_type, counts.get(room_id, 0))
        return summaries


def _summary(room_id: str, create: Event, state: dict[str, Event], members: int) -> RoomSummary:
    def text(event_type: str, key: str) -> str | None:
        event = state.get(event_type)
        value = event.content.get(key) if event is not None else None
        return value if isinstance(value, str) else None

    join_rules = state.get(JOIN_RULES)
    allow = join_rules.content.get("allow") if join_rules is not None else None
    room_type = create.content.get("type")
    return RoomSummary(
        room_id=room_id,
        room_version=create.room_version.identifier,
        num_joined_members=members,
        world_readable=text(HISTORY_VISIBILITY, "history_visibility") == "world_readable",
        guest_can_join=text(GUEST_ACCESS, "guest_access") == "can_join",
        # A room without join rules is invite-only (the auth rules' default).
        join_rule=text(JOIN_RULES, "join_rule") or "invite",
        name=text(NAME, "name") or None,
        topic=text(TOPIC, "topic") or None,
        canonical_alias=text(CANONICAL_ALIAS, "alias"),
        avatar_url=text(AVATAR, "url") or None,
        room_type=room_type if isinstance(room_type, str) else None,
        encryption=text(ENCRYPTION, "algorithm"),
        allowed_room_ids=tuple(membership_conditions(allow)),
    )


def may_see(room: Mapping[str, Any], present: Collection[str], joined: Collection[str]) -> bool:
    """C-S API GET /hierarchy `rooms` and GET /room_summary: whether the requester may see or
    join the room a RoomSummary-like dict describes (this server's or another's). `present`:
    the rooms it is joined or invited to; `joined`: those it is joined to (what restricted
    join rules ask)."""
    if room["room_id"] in present or room.get("world_readable") is True:
        return True
    join_rule = room.get("join_rule")
    version = KNOWN_ROOM_VERSIONS.get(str(room.get("room_version")))
    if join_rule == "public":
        return True
    # Knocking needs a room version that has it; another server's room may not say which.
    if join_rule == "knock":
        return version is None or version.knock_join_rule
    if join_rule == "knock_restricted":
        return version is None or version.knock_restricted_join_rule
    if join_rule == "restricted" and (version is None or version.restricted_join_rule):
        return any(r in joined for r in room.get("allowed_room_ids", ()))
    return False
