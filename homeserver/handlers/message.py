"""EventCreationHandler: build, auth-check, sign and persist a local event (ARCHITECTURE §4
step 3): prev_events from the forward extremities, auth_events by the selection algorithm,
depth one past the deepest prev event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.clock import Clock
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import InvalidEvent, MatrixError, NotFound
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, MEMBER, Event
from homeserver.events.room_versions import RoomVersion
from homeserver.events.validation import validate_pdu
from homeserver.handlers.persistence import EventPersister, NextEvent, StaleTip
from homeserver.handlers.state import StateHandler
from homeserver.storage import Storage
from homeserver.storage.stores.persist import EventContext, PersistedEvent
from homeserver.storage.stores.state import EMPTY_STATE

K = TypeVar("K")
_NOTHING: Mapping[str, Event] = MappingProxyType({})


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
        join_authorised_via: str | None = None,
    ) -> PersistedEvent:
        """Create an event in an existing room as `sender` and persist it.

        `join_authorised_via` is the local user this server chose to vouch for a restricted
        join (RoomMemberHandler); it becomes the member event's join_authorised_via_users_server.

        Raises NotFound for an unknown room, InvalidEvent/TooLarge for a malformed event and
        AuthError (403) when the auth rules refuse it against the room's current state.
        """
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(f"Unknown room {room_id}")
        content = dict(content)
        if event_type == MEMBER:
            # A restricted join names the user who vouches for it, and the auth rules trust
            # the name because the server signed it: only the server may choose that user,
            # never the client's content (restricted joins are decided by the join handler).
            content.pop("join_authorised_via_users_server", None)
            if join_authorised_via is not None:
                content["join_authorised_via_users_server"] = join_authorised_via
            if not isinstance(content.get("membership"), str):
                raise InvalidEvent("'membership' must be a string")
        builder = EventBuilder(
            room_version,
            event_type,
            sender,
            content,
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
                    [done] = self.persister.enqueue_local([(event, next_event)])
                except StaleTip:
                    continue
            return await done
        raise MatrixError("The room is busy; try again", status=503)

    async def build_event(
        self, room_id: str, event_type: str, sender: str, content: Mapping[str, Any], state_key: str
    ) -> Event:
        """An event on the room's current tips, signed and checked against the auth rules but
        not stored: for the handshakes where another server must see it first (an invite it
        countersigns, a template it fills in)."""
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(f"Unknown room {room_id}")
        builder = EventBuilder(
            room_version, event_type, sender, dict(content), room_id=room_id, state_key=state_key
        )
        async with self.persister.room_locks.lock(room_id):
            next_event = await self.persister.next_local_event(room_id, room_version)
        if next_event is None:
            raise NotFound(f"Room {room_id} has no events we can build on")
        return await self._build_and_check(builder, next_event)

    async def event_template(
        self, room_id: str, event_type: str, sender: str, content: Mapping[str, Any], state_key: str
    ) -> tuple[RoomVersion, dict[str, Any]]:
        """An unsigned event for another server to fill in and sign (S-S API make_join),
        checked against the auth rules first, so a server is never handed a template its
        event would fail with."""
        event = await self.build_event(room_id, event_type, sender, content, state_key)
        unsigned = ("hashes", "signatures", "event_id", "unsigned")
        template = {k: v for k, v in event.pdu.items() if k not in unsigned}
        # The spec's templates name the resident server as their origin.
        template["origin"] = self.server.server_name
        return event.room_version, template

    async def create_room(
        self,
        create: EventBuilder,
        initial_state: Sequence[tuple[str, str, Mapping[str, Any]]],
    ) -> list[PersistedEvent]:
        """Create a room: its m.room.create, then `initial_state` as (type, state_key,
        content) state events sent by the creator, in order. Every event is built and
        authorised before any is queued, and all commit in one transaction, so a refused event
        leaves no half-made room behind."""
        rv = create.room_version
        first = NextEvent([], 1, EventContext(state_before=EMPTY_STATE), 0)
        create_event = await self._build_and_check(create, first)
        room_id = create_event.room_id
        async with self.persister.room_locks.lock(room_id):
            first.generation = self.persister.first_event(room_id).generation
            chain = [(create_event, first)]
            built = {create_event.event_id: create_event}  # not stored until the chain commits
            for event_type, state_key, content in initial_state:
                builder = EventBuilder(
                    rv,
                    event_type,
                    create.sender,
                    dict(content),
                    room_id=room_id,
                    state_key=state_key,
                )
                next_event = self.persister.following(*chain[-1])
                event = await self._build_and_check(builder, next_event, built)
                built[event.event_id] = event
                chain.append((event, next_event))
            futures = self.persister.enqueue_local(chain)
        return list(await asyncio.gather(*futures))

    async def _build_and_check(
        self,
        builder: EventBuilder,
        next_event: NextEvent,
        unstored: Mapping[str, Event] = _NOTHING,
    ) -> Event:
        """Build, sign and authorise the event, and finish its context. `unstored` holds
        events of the same chain that its state may name but that are not stored yet."""
        rv = builder.room_version
        context = next_event.context
        state_before = context.state_before or {}
        wanted = auth_types_for_event(
            rv, builder.type, builder.sender, builder.state_key, builder.content
        )
        auth_keys = sorted(k for k in wanted if k in state_before)
        # v12 events do not cite the create event, but the auth rules read it.
        read_keys = auth_keys + ([(CREATE, "")] if (CREATE, "") in state_before else [])
        auth_state = await self._load(unstored, {k: state_before[k] for k in read_keys})
        prev_events: list[Event | str] = list(next_event.prev_event_ids)
        if rv.event_id_in_pdu:
            # v1/v2 cite each event with its reference hash, so the events themselves are needed.
            prevs = await self._load(unstored, {i: i for i in next_event.prev_event_ids})
            prev_events = [prevs.get(i, i) for i in next_event.prev_event_ids]
        event = builder.build(
            prev_events=prev_events,
            auth_events=[auth_state.get(k) or state_before[k] for k in auth_keys],
            depth=next_event.depth,
            origin_server_ts=self.clock.time_ms(),
            server_name=self.server.server_name,
            signing_key=self.server.keys.signing_key,
        )
        validate_pdu(rv, event.pdu)
        check_auth_rules(event, auth_state)
        await self.state.finish_context(event, context)
        return event

    async def _load(self, unstored: Mapping[str, Event], ids: Mapping[K, str]) -> dict[K, Event]:
        """The events named by `ids`, from `unstored` or storage; missing ones left out."""
        found = {k: unstored[e] for k, e in ids.items() if e in unstored}
        stored = await self.storage.events.get_events(e for e in ids.values() if e not in unstored)
        found.update({k: stored[e] for k, e in ids.items() if e in stored})
        return found
