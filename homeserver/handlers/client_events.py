"""Serialising stored events for one client: applies redactions (rooms/v3.md "Handling
redactions", C-S API "Redactions": the pruned event with `redacted_because`), and fills
`unsigned` (transaction_id for the device that sent it, prev_content and replaces_state for
state events, the user's membership at the event) and bundled aggregations (handlers/
aggregations.py). A few bulk queries per call, none per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.auth_rules.selection import CREATE_KEY, POWER_LEVELS_KEY
from homeserver.clock import Clock
from homeserver.errors import AuthError
from homeserver.events.client_format import (
    ClientEventExtras,
    format_client_event,
    redaction_applies,
)
from homeserver.events.event import Event
from homeserver.handlers.aggregations import BundledRelations, RelationAggregator
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.identifiers import domain_of
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore


class ClientEventSerializer:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        visibility: HistoryVisibility,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.visibility = visibility
        self.clock = clock
        self.aggregations = RelationAggregator(storage)

    async def serialize(
        self,
        events: Sequence[Event],
        *,
        user_id: str,
        device_id: str | None = None,
        memberships: Mapping[str, str] | None = None,
        include_room_id: bool = True,
        replaced_state: bool = True,
        bundle_relations: bool = True,
    ) -> list[dict[str, Any]]:
        """Client events for `events` (which the caller has checked the user may see), in
        their order. `memberships` (from HistoryVisibility.filter_events) fills
        unsigned.membership. `replaced_state` adds prev_content and replaces_state to state
        events: worth it for timelines, too costly for a large room's whole state (each event
        there has its own state group to look into). `bundle_relations` adds
        unsigned.m.relations."""
        if not events:
            return []
        now = self.clock.time_ms()
        metas = await self.storage.events.get_event_metas([e.event_id for e in events])
        # The state each state event replaced: its key in the state before it.
        state_events = [e for e in events if e.is_state()] if replaced_state else []
        before_groups = {
            metas[e.event_id].state_group_before
            for e in state_events
            if e.event_id in metas and metas[e.event_id].state_group_before is not None
        }
        replaced_at = await self.extras.get_state_at_groups(
            {g for g in before_groups if g is not None}, {e.state_key_tuple for e in state_events}
        )
        replaces: dict[str, str] = {}
        for e in state_events:
            group = metas[e.event_id].state_group_before if e.event_id in metas else None
            if group is not None and e.state_key_tuple in replaced_at.get(group, {}):
                replaces[e.event_id] = replaced_at[group][e.state_key_tuple]
        prev_events = await self.storage.events.get_events(replaces.values())
        # prev_content only "if the client has permission to see the previous event".
        seen_prev = await self.visibility.filter_events(user_id, list(prev_events.values()))
        visible_prev = {e.event_id for e in seen_prev.events}

        all_events = {e.event_id: e for e in events}
        all_events.update({i: e for i, e in prev_events.items() if i in visible_prev})
        redacted_by = await self._applied_redactions(all_events)
        txn_ids = (
            await self.extras.get_txn_ids_for_events(
                user_id, device_id or "", [e.event_id for e in events if e.sender == user_id]
            )
            if device_id
            else {}
        )

        out = []
        for event in events:
            extras = ClientEventExtras(
                transaction_id=txn_ids.get(event.event_id),
                membership=(memberships or {}).get(event.event_id),
                replaces_state=replaces.get(event.event_id),
            )
            prev_id = replaces.get(event.event_id)
            if prev_id is not None and prev_id in visible_prev:
                prev = prev_events[prev_id]
                if prev_id in redacted_by:
                    prev = prev.redacted()
                extras.prev_content = prev.content
            shown = event
            redaction = redacted_by.get(event.event_id)
            if redaction is not None:
                shown = event.redacted()
                extras.redacted_because = format_client_event(
                    redaction, now, include_room_id=include_room_id
                )
            out.append(format_client_event(shown, now, extras, include_room_id=include_room_id))
        if bundle_relations:
            bundles = await self.aggregations.bundle(events, user_id, redacted_by.keys())
            if bundles:
                await self._add_bundles(out, bundles, user_id, device_id, include_room_id)
        return out

    async def _add_bundles(
        self,
        out: list[dict[str, Any]],
        bundles: Mapping[str, BundledRelations],
        user_id: str,
        device_id: str | None,
        include_room_id: bool,
    ) -> None:
        """Fill unsigned.m.relations. A thread's latest event is "serialized in the same form
        as the event itself", its own aggregations included (it has no thread of its own, so
        this nests once); edits are shown without theirs."""
        latest = [b.thread.latest for b in bundles.values() if b.thread is not None]
        edits = [b.replace for b in bundles.values() if b.replace is not None]
        shown_latest = await self.serialize(
            latest, user_id=user_id, device_id=device_id, include_room_id=include_room_id
        )
        shown_edits = await self.serialize(
            edits,
            user_id=user_id,
            device_id=device_id,
            include_room_id=include_room_id,
            bundle_relations=False,
        )
        by_id = {e["event_id"]: e for e in shown_latest + shown_edits}
        for client_event in out:
            bundle = bundles.get(client_event["event_id"])
            if bundle is None:
                continue
            relations: dict[str, Any] = {}
            if bundle.thread is not None:
                relations["m.thread"] = {
                    "latest_event": by_id[bundle.thread.latest.event_id],
                    "count": bundle.thread.count,
                    "current_user_participated": bundle.thread.current_user_participated,
                }
            if bundle.replace is not None:
                relations["m.replace"] = by_id[bundle.replace.event_id]
            if bundle.references:
                relations["m.reference"] = {"chunk": [{"event_id": i} for i in bundle.references]}
            client_event["unsigned"]["m.relations"] = relations

    async def federation_format(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        """The PDUs themselves (a filter's event_format "federation"), pruned where a
        redaction applies: a redacted event's content never leaves the server."""
        redacted_by = await self._applied_redactions({e.event_id: e for e in events})
        return [dict((e.redacted() if e.event_id in redacted_by else e).pdu) for e in events]

    async def _applied_redactions(self, events: Mapping[str, Event]) -> dict[str, Event]:
        """For each of `events` that a redaction applies to, the first such redaction."""
        pairs = await self.extras.get_redactions_of(list(events))
        if not pairs:
            return {}
        redactions = await self.storage.events.get_events({r for r, _ in pairs})
        # Power levels are only needed where the servers differ (the common case, a user
        # redacting their own or a same-server event, needs no state).
        need_levels = [
            redactions[r]
            for r, target in pairs
            if r in redactions
            and domain_of(redactions[r].sender) != domain_of(events[target].sender)
        ]
        levels = await self._levels_at(need_levels)
        applied: dict[str, Event] = {}
        for redaction_id, target_id in pairs:
            redaction = redactions.get(redaction_id)
            if redaction is None or target_id in applied:
                continue
            sender_level, redact_level = levels.get(redaction_id, (0, 0))
            if redaction_applies(events[target_id], redaction, sender_level, redact_level):
                applied[target_id] = redaction
        return applied

    async def _levels_at(self, redactions: Sequence[Event]) -> dict[str, tuple[float, int]]:
        """(sender's power level, redact level) in the state before each redaction."""
        if not redactions:
            return {}
        metas = await self.storage.events.get_event_metas([r.event_id for r in redactions])
        groups = {m.state_group_before for m in metas.values() if m.state_group_before}
        states = await self.extras.get_state_at_groups(
            {g for g in groups if g is not None}, [CREATE_KEY, POWER_LEVELS_KEY]
        )
        events = await self.storage.events.get_events(
            {eid for s in states.values() for eid in s.values()}
        )
        out: dict[str, tuple[float, int]] = {}
        for redaction in redactions:
            meta = metas.get(redaction.event_id)
            state = states.get(meta.state_group_before or 0, {}) if meta else {}
            create = events.get(state.get(CREATE_KEY, ""))
            if create is None:
                continue
            levels = PowerLevels(create, events.get(state.get(POWER_LEVELS_KEY, "")))
            try:
                out[redaction.event_id] = (
                    levels.user_level(redaction.sender),
                    levels.named_level("redact"),
                )
            except AuthError:
                continue  # malformed power levels: no power-based redaction
        return out
