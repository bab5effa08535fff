"""Bundled aggregations (C-S API "Aggregations of child events"): what an event's children
add to its `unsigned.m.relations`: m.thread ("Server-side aggregation of m.thread
relationships"), m.replace (the most recent valid edit, "Validity of replacement events") and
m.reference. Annotations are not aggregated by servers since spec v1.7. Children sent by users
the viewer ignores are left out. A few queries per page of events, none per event;
ClientEventSerializer formats the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from homeserver.events.event import Event
from homeserver.storage import Storage
from homeserver.storage.stores.relations import REFERENCE, REPLACE, relation_of

if TYPE_CHECKING:
    from homeserver.handlers.sync_rooms import IgnoredUsers

# An encrypted edit carries m.new_content inside its ciphertext, where the server cannot look.
_ENCRYPTED = "m.room.encrypted"


@dataclass(frozen=True)
class ThreadSummary:
    latest: Event
    count: int
    current_user_participated: bool


@dataclass
class BundledRelations:
    thread: ThreadSummary | None = None
    replace: Event | None = None
    references: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.thread is not None or self.replace is not None or bool(self.references)


def is_valid_replacement(original: Event, edit: Event) -> bool:
    """C-S API "Validity of replacement events" (same room is checked by the index's room)."""
    if original.sender != edit.sender or original.type != edit.type:
        return False
    if original.is_state() or edit.is_state():
        return False
    rel = relation_of(original.content)
    if rel is not None and rel.rel_type == REPLACE:
        return False
    return edit.type == _ENCRYPTED or isinstance(edit.content.get("m.new_content"), dict)


class RelationAggregator:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Set where account data is built (core.py); without it nobody is ignored.
        self.ignored: IgnoredUsers | None = None

    async def bundle(
        self, events: Sequence[Event], user_id: str, redacted: Collection[str]
    ) -> dict[str, BundledRelations]:
        """The aggregations of each of `events` that has any. State events get none (the
        spec's warning under "Aggregations of child events"); a redacted event keeps its
        threads and references but loses its edits ("Server-side aggregation of m.replace")."""
        parents = {e.event_id: e for e in events if not e.is_state()}
        if not parents:
            return {}
        relations = self.storage.relations
        ignored = await self.ignored.ignored_users(user_id) if self.ignored else frozenset()
        out: defaultdict[str, BundledRelations] = defaultdict(BundledRelations)
        rows = await relations.get_children_of(parents, [REPLACE, REFERENCE])
        edit_ids: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            parent = parents[row.relates_to_id]
            if row.room_id != parent.room_id or row.sender in ignored:
                continue  # relationships never cross rooms
            if row.rel_type == REFERENCE:
                out[parent.event_id].references.append(row.event_id)
            elif parent.event_id not in redacted and row.sender == parent.sender:
                edit_ids[parent.event_id].append(row.event_id)
        if edit_ids:
            edits = await self.storage.events.get_events(
                {i for ids in edit_ids.values() for i in ids}
            )
            for parent_id, ids in edit_ids.items():
                valid = [
                    edits[i]
                    for i in ids
                    if i in edits and is_valid_replacement(parents[parent_id], edits[i])
                ]
                if valid:
                    # "Most recent": by origin_server_ts, then the largest event ID.
                    out[parent_id].replace = max(
                        valid, key=lambda e: (e.origin_server_ts, e.event_id)
                    )
        await self._threads(parents, user_id, ignored, out)
        return {k: v for k, v in out.items() if v}

    async def _threads(
        self,
        parents: dict[str, Event],
        user_id: str,
        ignored: frozenset[str],
        out: defaultdict[str, BundledRelations],
    ) -> None:
        # A thread cannot start at an event that has a relationship itself ("Validation of
        # m.thread relationships"), which also keeps a nested latest_event's bundle finite.
        by_room: defaultdict[str, list[str]] = defaultdict(list)
        for event in parents.values():
            if relation_of(event.content) is None:
                by_room[event.room_id].append(event.event_id)
        relations = self.storage.relations
        for room_id, ids in by_room.items():
            threads = await relations.get_threads(room_id, ids)
            if not threads:
                continue
            counts = await relations.get_thread_counts(room_id, threads, user_id, ignored)
            latest = await self.storage.events.get_events(
                t.latest_event_id for t in threads.values()
            )
            # "latest_event" is the latest from a user who is not ignored.
            ignored_latest = [
                t.thread_id
                for t in threads.values()
                if t.latest_event_id in latest and latest[t.latest_event_id].sender in ignored
            ]
            instead: dict[str, str] = {}
            if ignored_latest:
                instead = await relations.get_latest_replies(room_id, ignored_latest, ignored)
                latest.update(await self.storage.events.get_events(instead.values()))
            for thread_id, thread in threads.items():
                count = counts.get(thread_id)
                latest_event = latest.get(instead.get(thread_id, thread.latest_event_id))
                if count is None or latest_event is None:
                    continue
                out[thread_id].thread = ThreadSummary(
                    latest_event,
                    count.count,
                    count.participated or parents[thread_id].sender == user_id,
                )
