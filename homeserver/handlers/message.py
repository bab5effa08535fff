"""EventCreationHandler: build, auth-check, sign and persist a local event (ARCHITECTURE §4
step 3): prev_events from the forward extremities, auth_events by the selection algorithm,
depth one past the deepest prev event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.clock import Clock
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import MatrixError, NotFound
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.events.validation import validate_pdu
from homeserver.handlers.persistence import EventPersister, NextEvent, StaleTip
from homeserver.handlers.state import StateHandler
from homeserver.storage import Storage
from homeserver.storage.stores.persist import PersistedEvent


@dataclass(frozen=True)
class LocalServer:
    server_name: str
    keys: ServerKeys


class EventCreationHandler:
    def __init__(
        self,
        storage: Storage,
        state: StateHandler,
        persister: EventPersister,
        server: LocalServer,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.state = state
        self.persister = persister
        self.server = server
        self.clock = clock

    async def send_event(
        self,
        room_id: str,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
    ) -> PersistedEvent:
        """Create an event in an existing room as `sender` and persist it.

        Raises NotFound for an unknown room, InvalidEvent/TooLarge for a malformed event and
        AuthError (403) when the auth rules refuse it against the room's current state.
        """
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(f"Unknown room {room_id}")
        builder = EventBuilder(
            room_version,
            event_type,
            sender,
            dict(content),
            room_id=room_id,
            state_key=state_key,
            redacts=redacts,
        )
        for _attempt in range(3):
            async with self.persister.room_locks.lock(room_id):
                next_event = await self.persister.next_local_event(room_id, room_version)
                if next_event is None:
                    raise NotFound(f"Room {room_id} has no events we can build on")
                event = await self._build_and_check(builder, next_event)
                try:
                    done = self.persister.enqueue_local(event, next_event)
                except StaleTip:
                    continue
            return await done
        raise MatrixError("The room is busy; try again", status=503)

    async def create_room_event(self, builder: EventBuilder) -> PersistedEvent:
        """Persist the first event of a new room (its m.room.create)."""
        next_event = self.persister.first_event()
        next_event.context = await self.state.context_from_state(builder.room_id or "", {})
        event = await self._build_and_check(builder, next_event)
        async with self.persister.room_locks.lock(event.room_id):
            done = self.persister.enqueue_local(event, next_event)
        return await done

    async def _build_and_check(self, builder: EventBuilder, next_event: NextEvent) -> Event:
        """Build, sign and authorise the event, and finish its context."""
        rv = builder.room_version
        context = next_event.context
        state_before = context.state_before or {}
        auth_ids = self._auth_event_ids(rv, builder, state_before)
        event = builder.build(
            prev_events=next_event.prev_event_ids,
            auth_events=auth_ids,
            depth=next_event.depth,
            origin_server_ts=self.clock.time_ms(),
            server_name=self.server.server_name,
            signing_key=self.server.keys.signing_key,
        )
        validate_pdu(rv, event.pdu)
        auth_state = await self.state.load_state_events(
            {k: v for k, v in state_before.items() if v in set(auth_ids) or k == (CREATE, "")}
        )
        check_auth_rules(event, auth_state)
        await self.state.finish_context(event, context)
        return event

    @staticmethod
    def _auth_event_ids(
        rv: RoomVersion, builder: EventBuilder, state: Mapping[StateKey, str]
    ) -> list[str]:
        wanted = auth_types_for_event(
            rv, builder.type, builder.sender, builder.state_key, builder.content
        )
        return sorted(state[k] for k in wanted if k in state)
