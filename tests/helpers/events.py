"""Test helper: build a room of real, signed events one by one and keep its current state.

`RoomBuilder.new(version, signing_key)` makes the create event; `build` makes an event on top of
the current state (auth events selected as the spec says) without applying it; `send` builds and
applies it. Each event is signed by the sender's server with the one given key.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.signing import SigningKey

from homeserver.auth_rules import auth_types_for_event
from homeserver.events.builder import EventBuilder
from homeserver.events.event import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    Event,
    StateKey,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

CREATOR = "@creator:a.test"

# Each room starts at its own timestamp so that two v12 rooms with the same create content
# still get distinct create events, hence distinct room IDs.
_ROOM_START_TS = itertools.count(1_700_000_000_000, 1_000_000)


def server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


class RoomBuilder:
    """One room's events: `events` every event built, by ID; `state` the current state;
    `prev_events` the forward extremities."""

    def __init__(self, room_version: RoomVersion, signing_key: SigningKey) -> None:
        self.room_version = room_version
        self.signing_key = signing_key
        self.room_id = ""
        self.events: dict[str, Event] = {}
        self.state: dict[StateKey, Event] = {}
        self.prev_events: list[Event] = []
        self.depth = 0
        self.ts = next(_ROOM_START_TS)

    @classmethod
    def new(
        cls,
        version: str,
        signing_key: SigningKey,
        creator: str = CREATOR,
        extra_create_content: Mapping[str, Any] | None = None,
    ) -> RoomBuilder:
        """A room with only its create event (`creator` set where the room version needs it)."""
        room = cls(KNOWN_ROOM_VERSIONS[version], signing_key)
        content: dict[str, Any] = {"room_version": version}
        if not room.room_version.implicit_room_creator:
            content["creator"] = creator
        content.update(extra_create_content or {})
        if not room.room_version.room_id_from_create_event:
            room.room_id = f"!{secrets.token_urlsafe(12)}:{server_of(creator)}"
        create = room.send(CREATE, creator, content, state_key="")
        room.room_id = create.room_id
        return room

    @classmethod
    def standard(
        cls,
        version: str,
        signing_key: SigningKey,
        creator: str = CREATOR,
        join_rule: str = "public",
        users: Mapping[str, int] | None = None,
        **power_levels: Any,
    ) -> RoomBuilder:
        """Create, the creator's join, power levels (the creator at 100 before v12, where
        creators may not be listed, plus `users`) and join rules."""
        room = cls.new(version, signing_key, creator)
        room.send(MEMBER, creator, {"membership": "join"}, state_key=creator)
        all_users = dict(users or {})
        if not room.room_version.privileged_creators:
            all_users.setdefault(creator, 100)
        room.send(POWER_LEVELS, creator, {"users": all_users, **power_levels}, state_key="")
        room.send(JOIN_RULES, creator, {"join_rule": join_rule}, state_key="")
        return room

    @property
    def create(self) -> Event:
        return self.state[(CREATE, "")]

    def build(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        prev_events: Sequence[Event | str] | None = None,
        auth_events: Sequence[Event | str] | None = None,
        redacts: str | None = None,
        room_id: str | None = None,
    ) -> Event:
        """A signed event on top of the current state, not applied to it. Auth events default
        to the spec's selection from the current state."""
        if auth_events is None:
            keys = auth_types_for_event(self.room_version, type, sender, state_key, content)
            auth_events = [self.state[k] for k in sorted(keys) if k in self.state]
        self.ts += 1
        event = EventBuilder(
            room_version=self.room_version,
            type=type,
            sender=sender,
            content=dict(content),
            room_id=room_id if room_id is not None else (self.room_id or None),
            state_key=state_key,
            redacts=redacts,
        ).build(
            prev_events=list(self.prev_events if prev_events is None else prev_events),
            auth_events=list(auth_events),
            depth=self.depth + 1,
            origin_server_ts=self.ts,
            server_name=server_of(sender),
            signing_key=self.signing_key,
        )
        self.events[event.event_id] = event
        return event

    def apply(self, event: Event) -> Event:
        """Make `event` the new forward extremity and, for a state event, current state."""
        if event.is_state():
            self.state[event.state_key_tuple] = event
        self.prev_events = [event]
        self.depth += 1
        return event

    def send(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        **kwargs: Any,
    ) -> Event:
        """`build` then `apply` (no auth check: tests decide what to check)."""
        return self.apply(self.build(type, sender, content, state_key, **kwargs))

    def join(self, user_id: str, **content: Any) -> Event:
        return self.send(MEMBER, user_id, {"membership": "join", **content}, state_key=user_id)

    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.send(MEMBER, sender, {"membership": membership, **content}, state_key=target)
