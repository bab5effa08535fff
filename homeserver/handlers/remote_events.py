"""RemoteEventHandler: authorising and persisting events that came from other servers, with the
S2S "Checks performed on receipt of a PDU" that need no network (steps 3 to 6). Signature
checks (step 2) and fetching missing events are federation's, before it calls in here."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from homeserver.auth_rules import auth_types_for_event, check_auth_events_list, check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import CREATE, Event, StateKey, check_content_hash
from homeserver.events.validation import validate_pdu
from homeserver.handlers.persistence import EventPersister
from homeserver.handlers.state import StateHandler
from homeserver.storage import Storage
from homeserver.storage.stores.persist import EventContext, PersistedEvent
from homeserver.storage.stores.state import EMPTY_STATE

logger = logging.getLogger(__name__)


class RemoteEventHandler:
    def __init__(self, storage: Storage, state: StateHandler, persister: EventPersister) -> None:
        self.storage = storage
        self.state = state
        self.persister = persister

    async def persist_outliers(self, room_id: str, events: Sequence[Event]) -> list[PersistedEvent]:
        """Store events we hold without their state (a join's auth chain and state), each
        checked against its own auth events; those must come earlier in `events` or be stored.
        Events failing that are stored as rejected, as the spec asks (step 4). Events we
        already have are skipped."""
        have = await self.storage.events.have_events([e.event_id for e in events])
        fresh = [_checked_hashes(e) for e in _topological(events) if e.event_id not in have]
        cited = {a for e in fresh for a in e.auth_event_ids} | {_create_event_id(e) for e in fresh}
        lookup = _AuthLookup(self.storage, {e.event_id: e for e in fresh})
        await lookup.prefetch(cited)
        items: list[tuple[Event, EventContext]] = []
        for event in fresh:
            reason = await lookup.check_against_auth_events(event)
            if reason is not None:
                lookup.rejected.add(event.event_id)
            items.append((event, EventContext(rejected_reason=reason)))
        if not items:
            return []
        return await self.persister.persist_events(room_id, items, backfilled=True)

    async def persist_backfilled(
        self,
        room_id: str,
        events: Sequence[Event],
        states_before: Mapping[str, Mapping[StateKey, str]],
    ) -> list[PersistedEvent]:
        """Store older history (S-S API "Backfilling and retrieving missing events") below
        the room's timeline: each event with the state before it, from its prev events or,
        for an event whose prev events we lack, from `states_before` (federation asked a
        server in the room). An event failing against its auth events or that state is stored
        rejected; one placed nowhere (its prev events lack state) is left out. Events we hold
        as outliers take their place in the history; those we hold otherwise are skipped.
        Returns the events placed, oldest first."""
        async with self.persister.room_write(room_id):
            ids = {e.event_id for e in events}
            metas = await self.storage.events.get_event_metas(
                ids | {p for e in events for p in e.prev_event_ids}
            )
            # The state group after each event with state: stored ones, then this batch's.
            groups_after = {i: m.state_group_after for i, m in metas.items() if not m.outlier}
            fresh = [
                _checked_hashes(e)
                for e in sorted(events, key=lambda e: (e.depth, e.event_id))
                if e.event_id not in groups_after
            ]
            lookup = _AuthLookup(self.storage, {e.event_id: e for e in fresh})
            await lookup.prefetch(
                {a for e in fresh for a in e.auth_event_ids} | {_create_event_id(e) for e in fresh}
            )
            placed: list[PersistedEvent] = []
            # Events already held as outliers are updated, the others inserted: one kind per
            # write, in order, so a state group is never written before the one it builds on.
            pending: list[tuple[Event, EventContext]] = []
            pending_held = False

            async def flush() -> None:
                if pending_held:
                    placed.extend(await self.storage.persist.deoutlier_events(pending))
                elif pending:
                    placed.extend(
                        await self.persister.persist_events_locked(
                            room_id, pending, backfilled=True
                        )
                    )
                pending.clear()

            for event in fresh:
                held = metas.get(event.event_id)
                if pending and pending_held != (held is not None):
                    await flush()
                pending_held = held is not None
                state = states_before.get(event.event_id)
                if state is not None:
                    context = await self.state.context_from_state(room_id, state)
                else:
                    known = [groups_after.get(p) for p in event.prev_event_ids]
                    groups = list(dict.fromkeys(g for g in known if g is not None))
                    if None in known:
                        logger.info(
                            "room_id=%s backfilled %s: no state before it", room_id, event.event_id
                        )
                        continue
                    if not groups:
                        context = EventContext(state_before=EMPTY_STATE)  # the create event
                    elif len(groups) == 1:
                        context = EventContext(
                            state_before=await self.storage.state.get_state(groups[0]),
                            state_group_before=groups[0],
                        )
                    else:
                        await flush()  # state resolution reads the events it resolves stored
                        context = await self.state.context_for_new_event(
                            room_id, event.room_version, event.prev_event_ids
                        )
                if held is not None:
                    reason = held.rejected_reason  # its auth events were checked on arrival
                else:
                    reason = await lookup.check_against_auth_events(event)
                if reason is None:
                    reason = await lookup.check_against_state(event, context.state_before or {})
                if reason is not None:
                    logger.info(
                        "room_id=%s backfilled %s rejected: %s", room_id, event.event_id, reason
                    )
                    lookup.rejected.add(event.event_id)
                context.rejected_reason = reason
                await self.state.finish_context(event, context)
                groups_after[event.event_id] = context.state_group_after
                pending.append((event, context))
            await flush()
        return placed

    async def persist_event(
        self, event: Event, state_before: Mapping[StateKey, str] | None = None
    ) -> PersistedEvent:
        """Authorise and persist one event into the live timeline; an event already stored
        is returned as it was.

        With `state_before` (from /state_ids when we lack a prev event) that state is stored
        for it; otherwise every prev event must be stored with state. The event is rejected if
        it fails against its auth events or the state before it, and soft-failed if it fails
        against current state (stored, but it does not become an extremity or reach clients).
        """
        validate_pdu(event.room_version, event.pdu)
        event = _checked_hashes(event)
        room_id = event.room_id
        async with self.persister.room_write(room_id):
            stored = await self.storage.events.get_event_metas([event.event_id])
            if event.event_id in stored:
                return PersistedEvent(event, stored[event.event_id].stream_ordering)
            if state_before is None:
                context = await self.state.context_for_new_event(
                    room_id, event.room_version, event.prev_event_ids
                )
            else:
                context = await self.state.context_from_state(room_id, state_before)
            lookup = _AuthLookup(self.storage, {})
            reason = await lookup.check_against_auth_events(event)
            if reason is None:
                reason = await lookup.check_against_state(event, context.state_before or {})
            context.rejected_reason = reason
            if reason is None:
                # Step 6 inside room_write: queued local events have committed, so current
                # state includes them (a ban sent a moment ago counts).
                current = await self.storage.rooms.get_current_state_for_keys(
                    room_id, _auth_keys(event)
                )
                # A room without current state here is one this server is joining with this
                # very event (its state came with send_join): nothing to soft-fail against.
                if (CREATE, "") in current:
                    failed = await lookup.check_against_state(event, current)
                    context.soft_failed = failed is not None
            [persisted] = await self.persister.persist_events_locked(room_id, [(event, context)])
        return persisted


class _AuthLookup:
    """The auth checks on receipt of a PDU, reading events from a batch being stored or from
    storage, with storage read in bulk."""

    def __init__(self, storage: Storage, batch: Mapping[str, Event]) -> None:
        self.storage = storage
        self.batch = batch
        self.rejected: set[str] = set()
        self._stored: dict[str, Event] = {}
        self._stored_rejected: set[str] = set()

    async def prefetch(self, event_ids: Collection[str]) -> None:
        wanted = [i for i in event_ids if i not in self.batch and i not in self._stored]
        self._stored.update(await self.storage.events.get_events(wanted))
        self._stored_rejected |= await self.storage.events.get_rejected_event_ids(wanted)

    async def check_against_auth_events(self, event: Event) -> str | None:
        """Step 4: against the event's own auth events; the reason it fails, or None."""
        ids = list(event.auth_event_ids)
        await self.prefetch(ids + [_create_event_id(event)])
        found = {i: self.batch.get(i) or self._stored.get(i) for i in ids}
        missing = [i for i, e in found.items() if e is None]
        if missing:
            return f"auth events not found: {', '.join(missing)}"
        if (self.rejected | self._stored_rejected) & set(ids):
            return "an auth event was rejected"
        auth_events = [e for e in found.values() if e is not None]
        auth_state = {e.state_key_tuple: e for e in auth_events if e.is_state()}
        try:
            check_auth_events_list(event, auth_events)
            self._add_create_event(event, auth_state)
            check_auth_rules(event, auth_state)
        except AuthError as e:
            return e.message
        return None

    async def check_against_state(self, event: Event, state: Mapping[StateKey, str]) -> str | None:
        """Step 5 (state before the event) and step 6 (current state, for soft failure),
        reading only the state the auth rules can consult."""
        wanted = {k: state[k] for k in _auth_keys(event) if k in state}
        events = await self.storage.events.get_events(wanted.values())
        auth_state = {k: events[e] for k, e in wanted.items() if e in events}
        try:
            self._add_create_event(event, auth_state)
            check_auth_rules(event, auth_state)
        except AuthError as e:
            return e.message
        return None

    def _add_create_event(self, event: Event, auth_state: dict[StateKey, Event]) -> None:
        # v12 events never list the create event; the auth rules still need it (rule 2).
        if (CREATE, "") in auth_state or event.type == CREATE:
            return
        create_id = _create_event_id(event)
        create = self.batch.get(create_id) or self._stored.get(create_id)
        if create is not None:
            auth_state[(CREATE, "")] = create


def _create_event_id(event: Event) -> str:
    """Where a v12 room's create event is (its room ID names it); "" for other versions."""
    return "$" + event.room_id[1:] if event.room_version.room_id_from_create_event else ""


def _auth_keys(event: Event) -> set[StateKey]:
    """The state keys the auth rules may read for `event`: its auth selection plus the create
    event."""
    keys = auth_types_for_event(
        event.room_version, event.type, event.sender, event.state_key, event.content
    )
    keys.add((CREATE, ""))
    return keys


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
