"""Notification counts (C-S API "Receiving notifications", "Marking notifications as read"):
each new live event is evaluated against the push rules of every local member of its room
but the sender. What it means for the members the server-default rules treat alike (all
but those a mention singles out, and those with rules of their own) is one row for the room;
each user whose outcome differs gets a row of their own. A message in a room of a thousand
members is one evaluation of the default rules and one or a few rows, not a thousand.

Computed in the transaction that stores the event (an EventIndexer), not by following the
event stream afterwards: the spec wants the new count "in the same /sync response as the
event itself", which a follower lagging behind the stream cannot promise, and a crash can
leave no event without its rows. The room's facts (members, member count, power levels) are
read once per batch from current state, which the transaction has not yet moved past the
batch: the state before the batch's events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion
from homeserver.lru import LruCache
from homeserver.push.evaluator import CompiledRuleset, Outcome, RoomFacts
from homeserver.push.rules import PushRulesHandler
from homeserver.storage.database import Txn
from homeserver.storage.stores.persist import IndexedEvent
from homeserver.storage.stores.push import (
    MAIN_THREAD,
    PushActionRow,
    PushStore,
    RoomOutcomeRow,
    UnreadCounts,
)

THREAD_RELATION = "m.thread"


def thread_of(event: Event) -> str:
    """The thread root of an event with an m.thread relation (C-S API "Threading"), else the
    main timeline."""
    relates_to = event.content.get("m.relates_to")
    if isinstance(relates_to, dict) and relates_to.get("rel_type") == THREAD_RELATION:
        root = relates_to.get("event_id")
        if isinstance(root, str) and root:
            return root
    return MAIN_THREAD


class NotificationCounter:
    def __init__(
        self,
        server_name: str,
        rules: PushRulesHandler,
        store: PushStore,
        on_notified: Callable[[Collection[str]], None],
    ) -> None:
        self.rules = rules
        self.store = store
        # Told, once the transaction has committed, which users got notifying rows.
        self.on_notified = on_notified
        # room_id -> ((create event ID, power levels event ID), parsed power levels): most
        # events leave both unchanged, so their JSON is read once per change.
        self._power_levels_cache: LruCache[
            str, tuple[tuple[str | None, str | None], PowerLevels | None]
        ] = LruCache(10_000)
        self._local_suffix = f":{server_name}"

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._local_suffix)

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None:
        live = [e for e in events if e.accepted and not e.backfilled]
        if not live:
            return
        members = await self._local_joined_members(txn, room_id)
        await self._track_memberships(txn, room_id, live, set(members))
        # An invite notifies its invitee, who is not yet in the room (.m.rule.invite_for_me).
        invitees = {
            e.event.state_key
            for e in live
            if e.event.type == "m.room.member"
            and e.event.membership == "invite"
            and e.event.state_key
            and self._is_local(e.event.state_key)
        }
        if not members and not invitees:
            return
        rulesets = await self.rules.compiled_rulesets(members.keys() | invitees, txn)
        room_version = live[0].event.room_version
        facts = RoomFacts(
            member_count=await txn.fetchval(
                "SELECT COUNT(*) FROM current_state_events WHERE room_id = $1"
                " AND type = 'm.room.member' AND membership = 'join'",
                room_id,
            ),
            power_levels=await self._power_levels(txn, room_id, room_version),
            display_names=(
                await self._display_names(txn, room_version, members)
                if any(r.uses_display_names for r in rulesets.values())
                else {}
            ),
        )
        # Users sharing a rule set are evaluated together: most share the server defaults,
        # whose outcome for the members they do not single out becomes one room row.
        defaults = self.rules.defaults
        groups: dict[int, tuple[CompiledRuleset, set[str]]] = {id(defaults): (defaults, set())}
        for user_id, ruleset in rulesets.items():
            groups.setdefault(id(ruleset), (ruleset, set()))[1].add(user_id)
        joined = set(members)
        room_rows: list[RoomOutcomeRow] = []
        rows: list[PushActionRow] = []
        notified: set[str] = set()
        for indexed in live:
            event = indexed.event
            pdu = event.pdu
            thread_id = thread_of(event)
            audience = joined - {event.sender}
            if event.state_key in invitees:
                audience.add(event.state_key)
            singled_out, common = defaults.evaluate_split(
                pdu, facts, groups[id(defaults)][1] & audience
            )
            room_effect = _effect(common)
            if room_effect is not None and joined:
                room_rows.append(
                    RoomOutcomeRow(
                        room_id,
                        indexed.stream_ordering,
                        event.event_id,
                        thread_id,
                        event.sender,
                        room_effect.notify,
                        room_effect.highlight,
                        room_effect.actions,
                        event.origin_server_ts,
                    )
                )
            # Who gets pushed for this event (a wake-up for their pushers).
            pushed = audience & joined if room_effect is not None and room_effect.notify else set()
            outcomes: dict[str, Outcome | None] = dict(singled_out)
            for ruleset, users in groups.values():
                if ruleset is not defaults:
                    targets = users & audience
                    found = ruleset.evaluate_for(pdu, facts, targets)
                    outcomes.update((u, found.get(u)) for u in targets)
            for user_id, outcome in outcomes.items():
                # The room row counts for joined members only; an invitee has none.
                base = room_effect if user_id in joined else None
                effect = _effect(outcome)
                if effect == base:
                    continue
                rows.append(
                    PushActionRow(
                        user_id,
                        event.event_id,
                        room_id,
                        indexed.stream_ordering,
                        thread_id,
                        effect is not None and effect.notify,
                        effect is not None and effect.highlight,
                        effect.actions if effect is not None else [],
                        event.origin_server_ts,
                        base is not None and base.notify,
                        base is not None and base.highlight,
                    )
                )
                if effect is not None and effect.notify:
                    pushed.add(user_id)
                else:
                    pushed.discard(user_id)
            notified |= pushed
            if self._is_local(event.sender):
                # Sending an event counts as reading up to it ("Marking notifications as
                # read"), in the thread it was sent to.
                await self.store.mark_read(
                    event.sender, room_id, indexed.stream_ordering, thread_id, txn
                )
        await self.store.add_push_actions_txn(txn, room_rows, rows)
        if notified:
            txn.call_after(lambda: self.on_notified(notified))

    async def _track_memberships(
        self, txn: Txn, room_id: str, live: Sequence[IndexedEvent], joined: set[str]
    ) -> None:
        """Where local users joined and left: a room's notifications count for a user from
        their join on, and not at all once they have left."""
        for indexed in live:
            event = indexed.event
            user_id = event.state_key
            if event.type != "m.room.member" or not user_id or not self._is_local(user_id):
                continue
            if event.membership == "join" and user_id not in joined:
                await self.store.joined_txn(txn, user_id, room_id, indexed.stream_ordering)
                joined.add(user_id)
            elif event.membership != "join" and user_id in joined:
                await self.store.left_txn(txn, user_id, room_id)
                joined.discard(user_id)

    async def _local_joined_members(self, txn: Txn, room_id: str) -> dict[str, str]:
        """Local joined user ID -> the event ID of their membership."""
        rows = await txn.fetch(
            "SELECT state_key, event_id FROM current_state_events WHERE room_id = $1"
            " AND type = 'm.room.member' AND membership = 'join' AND state_key LIKE $2",
            room_id,
            f"%{self._local_suffix}",
        )
        return {r[0]: r[1] for r in rows if self._is_local(r[0])}

    async def _power_levels(
        self, txn: Txn, room_id: str, room_version: RoomVersion
    ) -> PowerLevels | None:
        rows = await txn.fetch(
            "SELECT type, event_id FROM current_state_events WHERE room_id = $1"
            " AND state_key = '' AND type IN ('m.room.create', 'm.room.power_levels')",
            room_id,
        )
        ids = {r[0]: r[1] for r in rows}
        key = (ids.get("m.room.create"), ids.get("m.room.power_levels"))
        cached = self._power_levels_cache.get_hit(room_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        cond, arg = txn.in_list("event_id", 1, list(ids.values()))
        found = {
            r[0]: Event(json.loads(r[1]), room_version, r[0])
            for r in await txn.fetch(f"SELECT event_id, json FROM events WHERE {cond}", arg)
        }
        create = found.get(key[0] or "")
        levels = None
        if create is not None:
            levels = PowerLevels(create, found.get(key[1] or ""))
        # Keyed by the state's event IDs, so a stale entry is never used, only replaced.
        self._power_levels_cache.put(room_id, (key, levels))
        return levels

    async def _display_names(
        self, txn: Txn, room_version: RoomVersion, members: Mapping[str, str]
    ) -> dict[str, str]:
        cond, arg = txn.in_list("event_id", 1, list(members.values()))
        names: dict[str, str] = {}
        rows = await txn.fetch(f"SELECT event_id, json FROM events WHERE {cond}", arg)
        for event_id, raw in rows:
            member = Event(json.loads(raw), room_version, event_id)
            name = member.content.get("displayname")
            if isinstance(name, str) and member.state_key:
                names[member.state_key] = name
        return names


def _effect(outcome: Outcome | None) -> Outcome | None:
    """What an outcome changes of counts and pushes: nothing unless it notifies or
    highlights."""
    if outcome is None or not (outcome.notify or outcome.highlight):
        return None
    return outcome


def sync_counts(
    by_thread: Mapping[str, UnreadCounts], threaded: bool
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """sync.yaml's unread_notifications and unread_thread_notifications of one room: with
    `threaded` (the filter's unread_thread_notifications) the main timeline's counts and
    each thread's apart, else every count in unread_notifications."""

    def counts(values: Collection[UnreadCounts]) -> dict[str, int]:
        return {
            "highlight_count": sum(c.highlights for c in values),
            "notification_count": sum(c.notifications for c in values),
        }

    if not threaded:
        return counts(list(by_thread.values())), {}
    main = [c for t, c in by_thread.items() if t == MAIN_THREAD]
    threads = {t: counts([c]) for t, c in by_thread.items() if t != MAIN_THREAD}
    return counts(main), threads
