"""EventCreationHandler: build, auth-check, sign and persist a local event (ARCHITECTURE §4
step 3): prev_events from the forward extremities, auth_events by the selection algorithm,
depth one past the deepest prev event."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.clock import Clock
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import NotFound
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.events.validation import validate_pdu
from homeserver.handlers.persistence import EventPersister
from homeserver.handlers.state import StateHandler
from homeserver.storage import Storage
from homeserver.storage.stores.persist import EventContext, PersistedEvent

# S2S "PDUs": prev_events holds at most 20 events; cite the newest extremities when more.
MAX_PREV_EVENTS = 20


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
            room_version, event_type, sender, dict(content), room_id=room_id,
            state_key=state_key, redacts=redacts,
        )
        async with self.persister.room_locks.lock(room_id):
            extremities = await self.storage.events.get_forward_extremities(room_id)
            if not extremities:
                raise NotFound(f"Room {room_id} has no events we can build on")
            prev_ids = await self._newest(extremities)
            context = await self.state.context_for_new_event(room_id, room_version, prev_ids)
            depth = await self.storage.events.get_max_depth(prev_ids) + 1
            event = await self._build_and_check(builder, context, prev_ids, depth)
            return await self.persister.persist_local_event_locked(event, context)

    async def create_room_event(self, builder: EventBuilder) -> PersistedEvent:
        """Persist the first event of a new room (its m.room.create)."""
        context = self.state.context_from_state(builder.room_id or "", {})
        event = await self._build_and_check(builder, context, [], 1)
        async with self.persister.room_locks.lock(event.room_id):
            return await self.persister.persist_local_event_locked(event, context)

    async def _newest(self, extremities: list[str]) -> list[str]:
        if len(extremities) <= MAX_PREV_EVENTS:
            return sorted(extremities)
        metas = await self.storage.events.get_event_metas(extremities)
        extremities.sort(key=lambda e: metas[e].depth if e in metas else 0, reverse=True)
        return sorted(extremities[:MAX_PREV_EVENTS])

    async def _build_and_check(
        self, builder: EventBuilder, context: EventContext, prev_ids: list[str], depth: int
    ) -> Event:
        rv = builder.room_version
        state_before = context.state_before or {}
        auth_ids = self._auth_event_ids(rv, builder, state_before)
        event = builder.build(
            prev_events=prev_ids,
            auth_events=auth_ids,
            depth=depth,
            origin_server_ts=self.clock.time_ms(),
            server_name=self.server.server_name,
            signing_key=self.server.keys.signing_key,
        )
        validate_pdu(rv, event.pdu)
        auth_state = await self.state.load_state_events(
            {k: v for k, v in state_before.items() if v in set(auth_ids) or k == (CREATE, "")}
        )
        check_auth_rules(event, auth_state)
        return event

    @staticmethod
    def _auth_event_ids(
        rv: RoomVersion, builder: EventBuilder, state: Mapping[StateKey, str]
    ) -> list[str]:
        wanted = auth_types_for_event(rv, builder.type, builder.sender, builder.state_key, builder.content)
        return sorted(state[k] for k in wanted if k in state)
