"""The reads /sync makes, in bulk over all of a user's rooms (C-S API "Syncing").

Each method is one statement whatever the number of rooms, so a sync costs a handful of
queries rather than a few per room.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import StateMap
from homeserver.storage.database import Database

# An event a client may see in a live timeline (not an outlier, rejected or soft-failed).
_LIVE = "NOT {a}.outlier AND NOT {a}.soft_failed AND {a}.rejected_reason IS NULL"


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A change of the user's own m.room.member in current state, at `stream_ordering`.
    `event_id`/`membership` are None when the key was removed; `prev_*` None when there was
    none before."""

    room_id: str
    stream_ordering: int
    event_id: str | None
    membership: str | None
    prev_event_id: str | None
    prev_membership: str | None


@dataclass(frozen=True, slots=True)
class EventTypeFilter:
    """The part of a timeline filter that SQL applies, so `limit` counts matching events.
    Patterns may end in or contain `*` (any sequence of characters)."""

    types: Sequence[str] | None = None
    not_types: Sequence[str] = ()
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()


class _Params:
    def __init__(self, db: Database, *initial: Any) -> None:
        self.db = db
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def in_list(self, column: str, values: Collection[Any]) -> str:
        clause, arg = self.db.in_list(column, len(self.values) + 1, values)
        self.values.append(arg)
        return clause


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _type_condition(params: _Params, column: str, patterns: Sequence[str]) -> str:
    exact = [p for p in patterns if "*" not in p]
    parts = [params.in_list(column, exact)] if exact else []
    parts += [f"{column} LIKE {params.add(_like(p))} ESCAPE '\\'" for p in patterns if "*" in p]
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def _filter_sql(params: _Params, alias: str, f: EventTypeFilter | None) -> str:
    if f is None:
        return ""
    parts: list[str] = []
    if f.types is not None:
        parts.append(_type_condition(params, f"{alias}.type", f.types))
    if f.not_types:
        parts.append("NOT " + _type_condition(params, f"{alias}.type", f.not_types))
    if f.senders is not None:
        parts.append(params.in_list(f"{alias}.sender", f.senders))
    if f.not_senders:
        parts.append("NOT " + params.in_list(f"{alias}.sender", f.not_senders))
    return "".join(f" AND {p}" for p in parts)


class SyncReadsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_memberships(self, user_id: str) -> dict[str, tuple[str, str]]:
        """room_id -> (membership, event_id) of the user in every room's current state."""
        rows = await self.db.fetch(
            "SELECT room_id, membership, event_id FROM current_state_events"
            " WHERE type = 'm.room.member' AND state_key = $1",
            user_id,
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def get_membership_changes(
        self, user_id: str, from_exclusive: int
    ) -> list[MembershipChange]:
        """The user's membership changes after a position, oldest first."""
        rows = await self.db.fetch(
            "SELECT d.room_id, d.stream_ordering, d.event_id, m.membership, d.prev_event_id,"
            " pm.membership"
            " FROM current_state_delta_stream d"
            " LEFT JOIN room_memberships m ON m.event_id = d.event_id"
            " LEFT JOIN room_memberships pm ON pm.event_id = d.prev_event_id"
            " WHERE d.type = 'm.room.member' AND d.state_key = $1 AND d.stream_ordering > $2"
            " ORDER BY d.stream_ordering",
            user_id,
            from_exclusive,
        )
        return [MembershipChange(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def get_memberships_before(
        self, user_id: str, positions: Mapping[str, int]
    ) -> dict[str, str]:
        """room_id -> the user's membership just before stream position positions[room_id]
        (rooms with none before it are left out)."""
        if not positions:
            return {}
        clause, arg = self.db.in_list("room_id", 2, positions)
        rows = await self.db.fetch(
            "SELECT room_id, membership, stream_ordering FROM room_memberships"
            f" WHERE user_id = $1 AND {clause} ORDER BY stream_ordering",
            user_id,
            arg,
        )
        out: dict[str, str] = {}
        for room_id, membership, position in rows:
            if 0 < position < positions[room_id]:
                out[room_id] = membership
        return out

    async def get_timelines(
        self,
        room_ids: Collection[str],
        from_exclusive: int,
        to_inclusive: int,
        limit: int,
        event_filter: EventTypeFilter | None = None,
    ) -> dict[str, tuple[list[str], bool]]:
        """room_id -> (the newest `limit` live events in (from, to] oldest first, whether
        there were more). One statement: per room, a backward walk of events_room_stream."""
        if not room_ids:
            return {}
        params = _Params(self.db)
        rooms = params.in_list("r.room_id", room_ids)
        low, high = params.add(from_exclusive), params.add(to_inclusive)
        # One more than asked, so that `limited` is known.
        count = params.add(limit + 1)
        if self.db.dialect == "postgres":
            # LATERAL makes the plan a loop over the rooms, each reading only its newest
            # events; written as a join, PostgreSQL hashes every event of the rooms instead.
            sql = (
                "SELECT t.room_id, t.event_id, t.stream_ordering FROM rooms r CROSS JOIN LATERAL"
                " (SELECT e.room_id, e.event_id, e.stream_ordering FROM events e"
                f" WHERE e.room_id = r.room_id AND e.stream_ordering > {low}"
                f" AND e.stream_ordering <= {high} AND {_LIVE.format(a='e')}"
                f"{_filter_sql(params, 'e', event_filter)}"
                f" ORDER BY e.stream_ordering DESC LIMIT {count}) t"
                f" WHERE {rooms} ORDER BY t.stream_ordering"
            )
        else:
            # SQLite has no LATERAL: per room, an index walk finds the position below which
            # events are cut, then a range read returns the rest.
            inner_filter = _filter_sql(params, "e2", event_filter)
            outer_filter = _filter_sql(params, "e", event_filter)
            sql = (
                "SELECT e.room_id, e.event_id, e.stream_ordering FROM ("
                "  SELECT r.room_id AS room_id, COALESCE(("
                "    SELECT e2.stream_ordering FROM events e2"
                f"   WHERE e2.room_id = r.room_id AND e2.stream_ordering > {low}"
                f"   AND e2.stream_ordering <= {high} AND {_LIVE.format(a='e2')}{inner_filter}"
                f"   ORDER BY e2.stream_ordering DESC LIMIT 1 OFFSET {count}"
                f"  ), {low}) AS low FROM rooms r WHERE {rooms}"
                ") b JOIN events e ON e.room_id = b.room_id AND e.stream_ordering > b.low"
                f" WHERE e.stream_ordering <= {high} AND {_LIVE.format(a='e')}{outer_filter}"
                " ORDER BY e.stream_ordering"
            )
        rows = await self.db.fetch(sql, *params.values)
        found: dict[str, list[str]] = defaultdict(list)
        for room_id, event_id, _pos in rows:
            found[room_id].append(event_id)
        out: dict[str, tuple[list[str], bool]] = {}
        for room_id in room_ids:
            ids = found.get(room_id, [])
            limited = len(ids) > limit
            out[room_id] = (ids[len(ids) - limit :] if limited else ids, limited)
        return out

    async def get_state_groups_at(
        self, room_ids: Collection[str], position: int
    ) -> dict[str, int | None]:
        """room_id -> the state group after the room's last live event at or before
        `position` (None if the room had no events by then)."""
        if not room_ids:
            return {}
        clause, arg = self.db.in_list("r.room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT r.room_id, (SELECT e.state_group_after FROM events e"
            " WHERE e.room_id = r.room_id AND e.stream_ordering > 0 AND e.stream_ordering <= $2"
            f" AND {_LIVE.format(a='e')} ORDER BY e.stream_ordering DESC LIMIT 1)"
            f" FROM rooms r WHERE {clause}",
            arg,
            position,
        )
        return {r[0]: r[1] for r in rows}

    async def get_rooms_with_state_changes(
        self, room_ids: Collection[str], from_exclusive: int, to_inclusive: int
    ) -> dict[str, bool]:
        """room_id -> whether a member changed, for the rooms whose current state changed in
        (from, to]."""
        if not room_ids:
            return {}
        clause, arg = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, MAX(CASE WHEN type = 'm.room.member' THEN 1 ELSE 0 END)"
            f" FROM current_state_delta_stream WHERE {clause}"
            " AND stream_ordering > $2 AND stream_ordering <= $3 GROUP BY room_id",
            arg,
            from_exclusive,
            to_inclusive,
        )
        return {r[0]: bool(r[1]) for r in rows}

    async def get_current_state_of_types(
        self, room_ids: Collection[str], types: Collection[str]
    ) -> dict[str, StateMap]:
        if not room_ids:
            return {}
        rooms, room_arg = self.db.in_list("room_id", 1, room_ids)
        kinds, type_arg = self.db.in_list("type", 2, types)
        rows = await self.db.fetch(
            "SELECT room_id, type, state_key, event_id FROM current_state_events"
            f" WHERE {rooms} AND {kinds}",
            room_arg,
            type_arg,
        )
        out: dict[str, StateMap] = defaultdict(dict)
        for room_id, event_type, state_key, event_id in rows:
            out[room_id][(event_type, state_key)] = event_id
        return dict(out)

    async def get_member_counts(self, room_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """room_id -> {membership: count} for joined and invited members."""
        if not room_ids:
            return {}
        clause, arg = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, membership, COUNT(*) FROM current_state_events"
            f" WHERE {clause} AND type = 'm.room.member' AND membership IN ('join', 'invite')"
            " GROUP BY room_id, membership",
            arg,
        )
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for room_id, membership, count in rows:
            out[room_id][membership] = int(count)
        return dict(out)

    async def get_first_members(
        self,
        room_ids: Collection[str],
        memberships: Collection[str],
        exclude_user: str,
        n: int,
    ) -> dict[str, list[str]]:
        """room_id -> the first `n` users (by the stream order of their membership event) whose
        current membership is one of `memberships`: the m.heroes candidates (sync.yaml)."""
        if not room_ids:
            return {}
        params = _Params(self.db)
        rooms = params.in_list("c.room_id", room_ids)
        kinds = params.in_list("c.membership", memberships)
        rows = await self.db.fetch(
            "SELECT room_id, state_key FROM ("
            " SELECT c.room_id, c.state_key, ROW_NUMBER() OVER"
            " (PARTITION BY c.room_id ORDER BY e.stream_ordering, c.state_key) AS rn"
            " FROM current_state_events c JOIN events e ON e.event_id = c.event_id"
            f" WHERE {rooms} AND c.type = 'm.room.member' AND {kinds}"
            f" AND c.state_key <> {params.add(exclude_user)}"
            f") t WHERE rn <= {params.add(n)} ORDER BY room_id, rn",
            *params.values,
        )
        out: dict[str, list[str]] = defaultdict(list)
        for room_id, user_id in rows:
            out[room_id].append(user_id)
        return dict(out)

    # -- who shares rooms (device lists: C-S API "Tracking the device list for a user") -----

    async def get_member_changes(
        self, room_ids: Collection[str], from_exclusive: int, to_inclusive: int
    ) -> list[tuple[str, str, str | None]]:
        """(room ID, user ID, membership now) for each member of `room_ids` whose membership
        changed in (from_exclusive, to_inclusive]."""
        if not room_ids:
            return []
        clause, arg = self.db.in_list("d.room_id", 3, room_ids)
        rows = await self.db.fetch(
            "SELECT DISTINCT d.room_id, d.state_key, c.membership"
            " FROM current_state_delta_stream d"
            " LEFT JOIN current_state_events c ON c.room_id = d.room_id"
            " AND c.type = 'm.room.member' AND c.state_key = d.state_key"
            " WHERE d.type = 'm.room.member' AND d.stream_ordering > $1"
            f" AND d.stream_ordering <= $2 AND {clause}",
            from_exclusive,
            to_inclusive,
            arg,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def get_joined_members(self, room_ids: Collection[str]) -> set[str]:
        """Everyone joined to any of `room_ids` now."""
        if not room_ids:
            return set()
        clause, arg = self.db.in_list("room_id", 1, room_ids)
        rows = await self.db.fetch(
            "SELECT DISTINCT state_key FROM current_state_events"
            f" WHERE type = 'm.room.member' AND membership = 'join' AND {clause}",
            arg,
        )
        return {r[0] for r in rows}

    async def users_sharing_a_room(self, user_id: str, candidates: Collection[str]) -> set[str]:
        """Those of `candidates` joined to a room that `user_id` is joined to now."""
        if not candidates:
            return set()
        clause, arg = self.db.in_list("theirs.state_key", 2, candidates)
        rows = await self.db.fetch(
            "SELECT DISTINCT theirs.state_key FROM current_state_events mine"
            " JOIN current_state_events theirs ON theirs.room_id = mine.room_id"
            " AND theirs.type = 'm.room.member' AND theirs.membership = 'join'"
            " WHERE mine.type = 'm.room.member' AND mine.state_key = $1"
            f" AND mine.membership = 'join' AND {clause}",
            user_id,
            arg,
        )
        return {r[0] for r in rows}
