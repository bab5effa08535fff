"""RemoteEventHandler: authorising and persisting events that came from other servers, with the
S2S "Checks performed on receipt of a PDU" that need no network (steps 3 to 6). Signature
checks (step 2) and fetching missing events are federation's, before it calls in here."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from homeserver.auth_rules import check_auth_events_list, check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import CREATE, Event, StateKey, check_content_hash
from homeserver.events.validation import validate_pdu
from homeserver.handlers.persistence import EventPersister
from homeserver.handlers.state import StateHandler
from homeserver.storage import Storage
from homeserver.storage.stores.persist import EventContext, PersistedEvent

logger = logging.getLogger(__name__)


class RemoteEventHandler:
    def __init__(self, storage: Storage, state: StateHandler, persister: EventPersister) -> None:
        self.storage = storage
        self.state = state
        self.persister = persister

    async def persist_outliers(self, room_id: str, events: Sequence[Event]) -> list[PersistedEvent]:
        """Store events we hold without their state (a join's auth chain and state), each
        checked against its own auth events; those must come earlier in `events` or be stored.
        Events failing that are stored as rejected, as the spec asks (step 4)."""
        known: dict[str, Event] = {}
        rejected: set[str] = set()
        items: list[tuple[Event, EventContext]] = []
        for event in _topological(events):
            event = _checked_hashes(event)
            reason = await self._check_against_auth_events(event, known, rejected)
            if reason is not None:
                rejected.add(event.event_id)
            known[event.event_id] = event
            items.append((event, EventContext(rejected_reason=reason)))
        return await self.persister.persist_events(room_id, items, backfilled=True)

    async def persist_event(
        self, event: Event, state_before: Mapping[StateKey, str] | None = None
    ) -> PersistedEvent:
        """Authorise and persist one event into the live timeline.

        With `state_before` (from /state_ids when we lack a prev event) that state is stored
        for it; otherwise every prev event must be stored with state. The event is rejected if
        it fails against its auth events or the state before it, and soft-failed if it fails
        against current state (stored, but it does not become an extremity or reach clients).
        """
        validate_pdu(event.room_version, event.pdu)
        event = _checked_hashes(event)
        if state_before is None:
            context = await self.state.context_for_new_event(
                event.room_id, event.room_version, event.prev_event_ids
            )
        else:
            context = await self.state.context_from_state(event.room_id, state_before)
        reason = await self._check_against_auth_events(event, {}, set())
        if reason is None:
            reason = await self._check_against_state(event, context.state_before or {})
        context.rejected_reason = reason
        if reason is None:
            current = await self.storage.rooms.get_current_state_ids(event.room_id)
            context.soft_failed = await self._check_against_state(event, current) is not None
        persisted = await self.persister.persist_events(event.room_id, [(event, context)])
        return persisted[0]

    async def _check_against_auth_events(
        self, event: Event, batch: Mapping[str, Event], batch_rejected: set[str]
    ) -> str | None:
        """Step 4: against the event's own auth events; the reason it fails, or None."""
        ids = list(event.auth_event_ids)
        found = {i: batch[i] for i in ids if i in batch}
        found.update(await self.storage.events.get_events([i for i in ids if i not in found]))
        missing = [i for i in ids if i not in found]
        if missing:
            return f"auth events not found: {', '.join(missing)}"
        stored_rejected = await self.storage.events.get_rejected_event_ids(
            [i for i in ids if i not in batch]
        )
        if (stored_rejected | batch_rejected) & set(ids):
            return "an auth event was rejected"
        auth_events = [found[i] for i in ids]
        auth_state = {e.state_key_tuple: e for e in auth_events if e.is_state()}
        try:
            check_auth_events_list(event, auth_events)
            await self._add_create_event(event, auth_state, batch)
            check_auth_rules(event, auth_state)
        except AuthError as e:
            return e.message
        return None

    async def _check_against_state(self, event: Event, state: Mapping[StateKey, str]) -> str | None:
        """Step 5 (state before the event) and step 6 (current state, for soft failure)."""
        try:
            auth_state = await self.state.load_state_events(state)
            await self._add_create_event(event, auth_state, {})
            check_auth_rules(event, auth_state)
        except AuthError as e:
            return e.message
        return None

    async def _add_create_event(
        self, event: Event, auth_state: dict[StateKey, Event], batch: Mapping[str, Event]
    ) -> None:
        # v12 events never list the create event; the auth rules still need it (rule 2).
        if (CREATE, "") in auth_state or event.type == CREATE:
            return
        if event.room_version.room_id_from_create_event:
            create_id = "$" + event.room_id[1:]
            create = batch.get(create_id) or await self.storage.events.get_event(create_id)
            if create is not None:
                auth_state[(CREATE, "")] = create


def _checked_hashes(event: Event) -> Event:
    """S2S step 3: an event whose content hash does not match is processed redacted."""
    if check_content_hash(event.pdu):
        return event
    logger.info("event_id=%s content hash mismatch; using the redacted form", event.event_id)
    return event.redacted()


def _topological(events: Sequence[Event]) -> list[Event]:
    """Auth events before the events citing them, so a batch can be checked in one pass."""
    by_id = {e.event_id: e for e in events}
    order: list[Event] = []
    seen: set[str] = set()
    for root in sorted(events, key=lambda e: (e.depth, e.event_id)):
        stack = [(root, False)]
        while stack:
            event, expanded = stack.pop()
            if event.event_id in seen:
                continue
            if expanded:
                seen.add(event.event_id)
                order.append(event)
                continue
            stack.append((event, True))
            for auth_id in event.auth_event_ids:
                if auth_id in by_id and auth_id not in seen:
                    stack.append((by_id[auth_id], False))
    return order
