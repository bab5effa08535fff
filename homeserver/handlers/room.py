"""RoomCreationHandler: a new room's initial state from a preset, in the order the
Client-Server API gives for /createRoom (create, creator's join, power levels, aliases, preset
state, initial_state, name, topic)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import InvalidParam
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, HISTORY_VISIBILITY, JOIN_RULES, MEMBER, POWER_LEVELS
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, RoomVersion
from homeserver.handlers.message import EventCreationHandler

PRESETS = ("private_chat", "trusted_private_chat", "public_chat")

# C-S API "Creation": the state each preset implies.
_PRESET_STATE: dict[str, dict[str, str]] = {
    "private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "trusted_private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "public_chat": {
        "join_rule": "public",
        "history_visibility": "shared",
        "guest_access": "forbidden",
    },
}


@dataclass
class RoomCreationRequest:
    creator: str
    preset: str = "private_chat"
    room_version: RoomVersion = DEFAULT_ROOM_VERSION
    name: str | None = None
    topic: str | None = None
    creation_content: Mapping[str, Any] = field(default_factory=dict)
    initial_state: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    power_level_content_override: Mapping[str, Any] = field(default_factory=dict)
    # Given the creator's power level (trusted_private_chat), or made creators in v12.
    trusted_users: list[str] = field(default_factory=list)


def default_power_levels(request: RoomCreationRequest) -> dict[str, Any]:
    rv = request.room_version
    users: dict[str, int] = {}
    if not rv.privileged_creators:
        # v12 creators have infinite power and must not be listed (v12 auth rule 10.4).
        users[request.creator] = 100
        if request.preset == "trusted_private_chat":
            users.update({u: 100 for u in request.trusted_users})
    content: dict[str, Any] = {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
        "notifications": {"room": 50},
    }
    content.update(request.power_level_content_override)
    return content


class RoomCreationHandler:
    def __init__(self, events: EventCreationHandler) -> None:
        self.events = events

    async def create_room(self, request: RoomCreationRequest) -> str:
        if request.preset not in PRESETS:
            raise InvalidParam(f"Unknown preset {request.preset!r}")
        rv = request.room_version
        server_name = self.events.server.server_name
        creator = request.creator

        create_content = dict(request.creation_content)
        create_content["room_version"] = rv.identifier
        if not rv.implicit_room_creator:
            create_content["creator"] = creator
        if (
            rv.privileged_creators
            and request.preset == "trusted_private_chat"
            and request.trusted_users
        ):
            create_content["additional_creators"] = list(request.trusted_users)
        room_id = (
            None if rv.room_id_from_create_event else f"!{secrets.token_urlsafe(18)}:{server_name}"
        )
        create = await self.events.create_room_event(
            EventBuilder(rv, CREATE, creator, create_content, room_id=room_id, state_key="")
        )
        room_id = create.event.room_id

        async def send(event_type: str, content: Mapping[str, Any], state_key: str = "") -> None:
            await self.events.send_event(room_id, event_type, creator, content, state_key=state_key)

        await send(MEMBER, {"membership": "join"}, state_key=creator)
        await send(POWER_LEVELS, default_power_levels(request))
        preset = _PRESET_STATE[request.preset]
        given = {(t, k) for t, k, _ in request.initial_state}
        if (JOIN_RULES, "") not in given:
            await send(JOIN_RULES, {"join_rule": preset["join_rule"]})
        if (HISTORY_VISIBILITY, "") not in given:
            await send(HISTORY_VISIBILITY, {"history_visibility": preset["history_visibility"]})
        if ("m.room.guest_access", "") not in given:
            await send("m.room.guest_access", {"guest_access": preset["guest_access"]})
        for event_type, state_key, content in request.initial_state:
            await send(event_type, content, state_key)
        if request.name is not None:
            await send("m.room.name", {"name": request.name})
        if request.topic is not None:
            await send("m.room.topic", {"topic": request.topic})
        return room_id
