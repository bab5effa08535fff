"""Reading events: by ID (cached), their metadata, the DAG and auth chains."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from homeserver.lru import LruCache
from homeserver.state.store import auth_difference
from homeserver.storage.database import Database


@dataclass(frozen=True, slots=True)
class EventMeta:
    """What we know about a stored event besides its PDU."""

    event_id: str
    room_id: str
    stream_ordering: int
    depth: int
    outlier: bool
    rejected_reason: str | None
    soft_failed: bool
    state_group_before: int | None
    state_group_after: int | None


class EventsStore:
    def __init__(self, db: Database, cache_size: int = 50_000) -> None:
        self.db = db
        # Events are immutable once stored (redaction is applied on the way out, not here).
        self._event_cache: LruCache[str, Event] = LruCache(cache_size)
        self._meta_cache: LruCache[str, EventMeta] = LruCache(cache_size)

    def remember(self, event: Event, meta: EventMeta) -> None:
        """Seed the caches with an event that was just persisted."""
        self._event_cache.put(event.event_id, event)
        self._remember_meta(meta)

    async def get_event(self, event_id: str) -> Event | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """Events by ID, rejected ones included; missing IDs are left out."""
        found: dict[str, Event] = {}
        missing: list[str] = []
        for event_id in set(event_ids):
            event = self._event_cache.get_hit(event_id)
            if event is not None:
                found[event_id] = event
            else:
                missing.append(event_id)
        if not missing:
            return found
        clause, arg = self.db.in_list("e.event_id", 1, missing)
        rows = await self.db.fetch(
            "SELECT e.event_id, r.room_version, e.json FROM events e"
            f" JOIN rooms r ON r.room_id = e.room_id WHERE {clause}",
            arg,
        )
        for event_id, version, raw in rows:
            event = Event(json.loads(raw), get_room_version(version), event_id)
            self._event_cache.put(event_id, event)
            found[event_id] = event
        return found

    async def get_event_metas(self, event_ids: Collection[str]) -> dict[str, EventMeta]:
        found: dict[str, EventMeta] = {}
        missing: list[str] = []
        for event_id in set(event_ids):
            meta = self._meta_cache.get_hit(event_id)
            if meta is not None:
                found[event_id] = meta
            else:
                missing.append(event_id)
        if not missing:
            return found
        clause, arg = self.db.in_list("event_id", 1, missing)
        rows = await self.db.fetch(
            "SELECT event_id, room_id, stream_ordering, depth, outlier, rejected_reason,"
            " soft_failed, state_group_before, state_group_after"
            f" FROM events WHERE {clause}",
            arg,
        )
        for r in rows:
            meta = EventMeta(r[0], r[1], r[2], r[3], bool(r[4]), r[5], bool(r[6]), r[7], r[8])
            self._remember_meta(meta)
            found[meta.event_id] = meta
        return found

    def _remember_meta(self, meta: EventMeta) -> None:
        # An outlier's row will change once it is de-outliered; every other row never does.
        if not meta.outlier:
            self._meta_cache.put(meta.event_id, meta)

    async def get_rejected_event_ids(self, event_ids: Collection[str]) -> set[str]:
        if not event_ids:
            return set()
        clause, arg = self.db.in_list("event_id", 1, event_ids)
        rows = await self.db.fetch(
            f"SELECT event_id FROM events WHERE rejected_reason IS NOT NULL AND {clause}", arg
        )
        return {r[0] for r in rows}

    async def have_events(self, event_ids: Collection[str]) -> set[str]:
        if not event_ids:
            return set()
        clause, arg = self.db.in_list("event_id", 1, event_ids)
        rows = await self.db.fetch(f"SELECT event_id FROM events WHERE {clause}", arg)
        return {r[0] for r in rows}

    async def get_auth_chain_ids(self, event_ids: Collection[str]) -> set[str]:
        """Every event reachable through auth_events from `event_ids`, not including them."""
        if not event_ids:
            return set()
        clause, arg = self.db.in_list("event_id", 1, event_ids)
        # UNION (not UNION ALL) deduplicates, which is also what makes the recursion end.
        rows = await self.db.fetch(
            "WITH RECURSIVE chain(id) AS ("
            f" SELECT auth_id FROM event_auth WHERE {clause}"
            " UNION SELECT a.auth_id FROM event_auth a JOIN chain c ON a.event_id = c.id"
            ") SELECT id FROM chain",
            arg,
        )
        return {r[0] for r in rows}

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Sequence[set[str]]
    ) -> set[str]:
        """State res v2 "auth difference", with each set's own events counted in its chain as
        homeserver.state.store.StateResolutionStore documents."""
        return auth_difference([await self.get_auth_chain_ids(s) | s for s in state_sets])

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = $1", room_id
        )
        return [r[0] for r in rows]

    async def get_event_ids_with_live_children(self, event_ids: Collection[str]) -> set[str]:
        """Which of `event_ids` a stored live event (not an outlier, rejected or soft-failed)
        names as a prev_event: those are not forward extremities, whenever they arrive."""
        if not event_ids:
            return set()
        clause, arg = self.db.in_list("ed.prev_event_id", 1, event_ids)
        rows = await self.db.fetch(
            "SELECT DISTINCT ed.prev_event_id FROM event_edges ed"
            " JOIN events e ON e.event_id = ed.event_id"
            f" WHERE {clause} AND NOT e.outlier AND NOT e.soft_failed"
            " AND e.rejected_reason IS NULL",
            arg,
        )
        return {r[0] for r in rows}

    async def get_backward_extremities(
        self, room_id: str, max_depth: int | None, limit: int, min_depth: int | None = None
    ) -> list[str]:
        """The edges of the room's timeline here: prev events that we lack, or hold only as
        outliers, of the room's timeline events between `min_depth` and `max_depth` deep
        (the earliest edge, or a gap in the middle); those cited by the deepest events
        first. Reads the events_room_topo index from `max_depth` down, so at the bottom of
        the timeline, or over one page's depths, it reads little."""
        args: list[object] = [room_id, limit]
        depth_bounds = ""
        for bound, operator in ((max_depth, "<="), (min_depth, ">=")):
            if bound is not None:
                args.append(bound)
                depth_bounds += f" AND e.depth {operator} ${len(args)}"
        rows = await self.db.fetch(
            "SELECT ed.prev_event_id, MAX(e.depth) AS child_depth FROM events e"
            " JOIN event_edges ed ON ed.event_id = e.event_id"
            " LEFT JOIN events p ON p.event_id = ed.prev_event_id"
            f" WHERE e.room_id = $1 AND NOT e.outlier{depth_bounds}"
            " AND (p.event_id IS NULL OR p.outlier)"
            " GROUP BY ed.prev_event_id ORDER BY child_depth DESC, ed.prev_event_id LIMIT $2",
            *args,
        )
        return [r[0] for r in rows]

    async def get_stream_events(
        self, room_id: str, from_exclusive: int, to_inclusive: int, limit: int
    ) -> list[Event]:
        """The room's live events between two stream positions, newest `limit`, oldest first."""
        rows = await self.db.fetch(
            "SELECT event_id FROM events WHERE room_id = $1 AND stream_ordering > $2"
            " AND stream_ordering <= $3 AND NOT outlier AND NOT soft_failed"
            " AND rejected_reason IS NULL"
            " ORDER BY stream_ordering DESC LIMIT $4",
            room_id,
            from_exclusive,
            to_inclusive,
            limit,
        )
        ids = [r[0] for r in reversed(rows)]
        events = await self.get_events(ids)
        return [events[i] for i in ids]
