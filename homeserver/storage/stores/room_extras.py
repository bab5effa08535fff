"""What the Client-Server room endpoints store and read beyond the event graph: room aliases,
send transaction IDs, forgotten rooms, the directory flag, and the room reads (pagination in
topological order, state at a few keys of many state groups, redactions, events by time)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import StateKey
from homeserver.storage.database import Database

# The live timeline: what clients may be shown (not outliers, rejected or soft-failed events).
_LIVE = "NOT outlier AND NOT soft_failed AND rejected_reason IS NULL"


@dataclass(frozen=True, slots=True)
class Position:
    """A place between two events of a room's timeline. With a depth: topological, just after
    the event at (depth, stream_ordering); without: just after stream position `stream`."""

    stream: int
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class TimelineRow:
    event_id: str
    depth: int
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class MembershipRow:
    event_id: str
    membership: str
    stream_ordering: int


class _Params:
    """Numbered `$n` arguments for a statement assembled from optional parts."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    @property
    def next_index(self) -> int:
        return len(self.values) + 1


# Below every stream ordering, backfilled history's negative ones included.
_BEFORE_ANY_STREAM = -(2**62)


def _at_or_before(pos: Position, params: _Params) -> str:
    if pos.depth is None:
        return f"stream_ordering <= {params.add(pos.stream)}"
    d, s = params.add(pos.depth), params.add(pos.stream)
    return f"(depth < {d} OR (depth = {d} AND stream_ordering <= {s}))"


def _after(pos: Position, params: _Params) -> str:
    if pos.depth is None:
        return f"stream_ordering > {params.add(pos.stream)}"
    d, s = params.add(pos.depth), params.add(pos.stream)
    return f"(depth > {d} OR (depth = {d} AND stream_ordering > {s}))"


class RoomExtrasStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- aliases -------------------------------------------------------------------------

    async def create_alias(self, alias: str, room_id: str, creator: str, now: int) -> bool:
        """False when the alias is taken."""
        rows = await self.db.fetch(
            "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (room_alias) DO NOTHING RETURNING room_alias",
            alias,
            room_id,
            creator,
            now,
        )
        return bool(rows)

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        """(room_id, creator) of a local alias."""
        row = await self.db.fetchrow(
            "SELECT room_id, creator FROM room_aliases WHERE room_alias = $1", alias
        )
        return None if row is None else (row[0], row[1])

    async def delete_alias(self, alias: str) -> None:
        await self.db.execute("DELETE FROM room_aliases WHERE room_alias = $1", alias)

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias", room_id
        )
        return [r[0] for r in rows]

    # -- transaction IDs -----------------------------------------------------------------

    async def get_txn_event(
        self, user_id: str, device_id: str, scope: str, txn_id: str
    ) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT event_id FROM event_txn_ids"
            " WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
            user_id,
            device_id,
            scope,
            txn_id,
        )
        return value

    async def add_txn_event(
        self,
        user_id: str,
        device_id: str,
        scope: str,
        txn_id: str,
        event_id: str,
        room_id: str,
        now: int,
    ) -> None:
        await self.db.execute(
            "INSERT INTO event_txn_ids"
            " (user_id, device_id, scope, txn_id, event_id, room_id, created_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            user_id,
            device_id,
            scope,
            txn_id,
            event_id,
            room_id,
            now,
        )

    async def get_txn_ids_for_events(
        self, user_id: str, device_id: str, event_ids: Collection[str]
    ) -> dict[str, str]:
        if not event_ids:
            return {}
        clause, arg = self.db.in_list("event_id", 3, event_ids)
        rows = await self.db.fetch(
            "SELECT event_id, txn_id FROM event_txn_ids"
            f" WHERE user_id = $1 AND device_id = $2 AND {clause}",
            user_id,
            device_id,
            arg,
        )
        return {r[0]: r[1] for r in rows}

    # -- forgotten rooms -----------------------------------------------------------------

    async def forget_room(self, user_id: str, room_id: str, membership_event_id: str) -> None:
        await self.db.execute(
            "INSERT INTO forgotten_rooms (user_id, room_id, membership_event_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (user_id, room_id)"
            " DO UPDATE SET membership_event_id = excluded.membership_event_id",
            user_id,
            room_id,
            membership_event_id,
        )

    async def get_forgotten_room_ids(self, user_id: str) -> set[str]:
        """Rooms the user forgot and has had no membership change in since."""
        rows = await self.db.fetch(
            "SELECT f.room_id FROM forgotten_rooms f JOIN current_state_events c"
            " ON c.room_id = f.room_id AND c.type = 'm.room.member'"
            " AND c.state_key = f.user_id AND c.event_id = f.membership_event_id"
            " WHERE f.user_id = $1",
            user_id,
        )
        return {r[0] for r in rows}

    # -- published room directory --------------------------------------------------------

    async def set_directory_visibility(self, room_id: str, visibility: str) -> None:
        await self.db.execute(
            "INSERT INTO room_directory (room_id, visibility) VALUES ($1, $2)"
            " ON CONFLICT (room_id) DO UPDATE SET visibility = excluded.visibility",
            room_id,
            visibility,
        )

    async def get_directory_visibility(self, room_id: str) -> str:
        value = await self.db.fetchval(
            "SELECT visibility FROM room_directory WHERE room_id = $1", room_id
        )
        return str(value) if value is not None else "private"

    async def count_members_of_published_rooms(self) -> dict[str, int]:
        """The rooms published in the directory with their joined member counts, in one query
        (rooms with no joined member here, or no state at all, are absent)."""
        rows = await self.db.fetch(
            "SELECT d.room_id, COUNT(*) FROM room_directory d"
            " JOIN current_state_events c ON c.room_id = d.room_id"
            " WHERE d.visibility = 'public'"
            " AND c.type = 'm.room.member' AND c.membership = 'join'"
            " GROUP BY d.room_id"
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- state at many events, a few keys ------------------------------------------------

    async def get_state_at_groups(
        self, groups: Collection[int], keys: Collection[StateKey]
    ) -> dict[int, dict[StateKey, str]]:
        """The state of each group at `keys` only, in one statement: the history visibility
        checks and client serialisation need two or three keys at many events, so loading every
        group's full state (one query per group) would be both slow and a query in a loop."""
        out: dict[int, dict[StateKey, str]] = {g: {} for g in groups}
        if not groups or not keys:
            return out
        params = _Params()
        groups_clause, groups_arg = self.db.in_list("id", params.next_index, list(groups))
        params.add(groups_arg)
        types_clause, types_arg = self.db.in_list("e.type", params.next_index, {t for t, _ in keys})
        params.add(types_arg)
        keys_clause, keys_arg = self.db.in_list(
            "e.state_key", params.next_index, {k for _, k in keys}
        )
        params.add(keys_arg)
        # Walk each group's delta chain (bounded by MAX_DELTA_DEPTH), nearest delta first.
        rows = await self.db.fetch(
            "WITH RECURSIVE chain(root, grp, hops) AS ("
            f" SELECT id, id, 0 FROM state_groups WHERE {groups_clause}"
            " UNION ALL SELECT c.root, g.prev_group, c.hops + 1 FROM state_groups g"
            " JOIN chain c ON g.id = c.grp WHERE g.prev_group IS NOT NULL"
            ") SELECT c.root, e.type, e.state_key, e.event_id, c.hops"
            " FROM chain c JOIN state_group_entries e ON e.state_group = c.grp"
            f" WHERE {types_clause} AND {keys_clause}",
            *params.values,
        )
        wanted = set(keys)
        best: dict[tuple[int, str, str], tuple[int, str | None]] = {}
        for root, type_, state_key, event_id, hops in rows:
            if (type_, state_key) not in wanted:
                continue
            seen = best.get((root, type_, state_key))
            if seen is None or hops < seen[0]:
                best[(root, type_, state_key)] = (hops, event_id)
        for (root, type_, state_key), (_hops, event_id) in best.items():
            if event_id is not None:  # a NULL entry removed the key
                out[root][(type_, state_key)] = event_id
        return out

    # -- the timeline --------------------------------------------------------------------

    async def paginate(
        self,
        room_id: str,
        *,
        forwards: bool,
        from_pos: Position | None,
        to_pos: Position | None,
        limit: int,
        types: Sequence[str] | None = None,
        not_types: Sequence[str] = (),
        senders: Sequence[str] | None = None,
        not_senders: Sequence[str] = (),
    ) -> list[TimelineRow]:
        """Live events in topological order (depth, then stream ordering) from `from_pos`
        towards `to_pos`: forwards, the events after `from_pos` up to and including
        `to_pos`; backwards, those at or before `from_pos` and after `to_pos`. Reads the
        events_room_topo index.

        A stream position (a /sync token) bounds by stream ordering and, for the index, also
        topologically, loosely enough to lose nothing: an event that arrived late from another
        server may be shallower than events that came before it in the stream."""
        params = _Params()
        where = [f"room_id = {params.add(room_id)}", _LIVE]
        lower, upper = (from_pos, to_pos) if forwards else (to_pos, from_pos)
        for bound, condition in ((lower, _after), (upper, _at_or_before)):
            if bound is None:
                continue
            where.append(condition(bound, params))
            if bound.depth is None:
                # A stream position alone would make the scan read every event on one side of
                # it and sort them; bound it topologically too.
                edge = await self._topological_edge(room_id, bound.stream, condition is _after)
                if edge is None:
                    return []  # no event on that side of the position
                where.append(condition(edge, params))
        for column, values, negate in (
            ("type", types, False),
            ("type", not_types, True),
            ("sender", senders, False),
            ("sender", not_senders, True),
        ):
            if values is None or (negate and not values):
                continue
            clause, arg = self.db.in_list(column, params.next_index, values)
            params.add(arg)
            where.append(f"NOT ({clause})" if negate else clause)
        order = "ASC" if forwards else "DESC"
        rows = await self.db.fetch(
            "SELECT event_id, depth, stream_ordering FROM events"
            f" WHERE {' AND '.join(where)}"
            f" ORDER BY depth {order}, stream_ordering {order} LIMIT {params.add(limit)}",
            *params.values,
        )
        return [TimelineRow(r[0], r[1], r[2]) for r in rows]

    async def _topological_edge(self, room_id: str, stream: int, after: bool) -> Position | None:
        """The topological bound of the room's live events after a stream position (after)
        or at or before it: for those at or before, the deepest of them (events_room_topo
        read from the top down to the first); for those after, just below the shallowest of
        them (events_room_stream read from the position on). Both read the events that came
        after the position, which a token from /sync keeps few. None: there are none."""
        if after:
            depth = await self.db.fetchval(
                f"SELECT MIN(depth) FROM events WHERE room_id = $1 AND stream_ordering > $2"
                f" AND {_LIVE}",
                room_id,
                stream,
            )
            return None if depth is None else Position(stream=_BEFORE_ANY_STREAM, depth=depth)
        row = await self.db.fetchrow(
            f"SELECT depth, stream_ordering FROM events WHERE room_id = $1"
            f" AND stream_ordering <= $2 AND {_LIVE}"
            " ORDER BY depth DESC, stream_ordering DESC LIMIT 1",
            room_id,
            stream,
        )
        return None if row is None else Position(stream=row[1], depth=row[0])

    async def get_redactions_of(self, event_ids: Collection[str]) -> list[tuple[str, str]]:
        """(redaction event ID, redacted event ID) of the accepted redactions targeting
        `event_ids`, oldest first (events_redacts index)."""
        if not event_ids:
            return []
        clause, arg = self.db.in_list("redacts", 1, event_ids)
        rows = await self.db.fetch(
            f"SELECT event_id, redacts FROM events WHERE {clause} AND {_LIVE}"
            " ORDER BY stream_ordering",
            arg,
        )
        return [(r[0], r[1]) for r in rows]

    async def get_event_near_ts(
        self, room_id: str, ts: int, forwards: bool
    ) -> tuple[str, int] | None:
        """The live event closest to `ts`: the first at or after it (forwards) or the last at
        or before it (events_room_ts index)."""
        op, order = (">=", "ASC") if forwards else ("<=", "DESC")
        row = await self.db.fetchrow(
            "SELECT event_id, origin_server_ts FROM events"
            f" WHERE room_id = $1 AND origin_server_ts {op} $2 AND {_LIVE}"
            f" ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
            room_id,
            ts,
        )
        return None if row is None else (row[0], row[1])

    async def get_user_memberships(self, room_id: str, user_id: str) -> list[MembershipRow]:
        """Every accepted membership event of the user in the room, oldest first
        (room_memberships_user index)."""
        rows = await self.db.fetch(
            "SELECT event_id, membership, stream_ordering FROM room_memberships"
            " WHERE user_id = $1 AND room_id = $2 ORDER BY stream_ordering",
            user_id,
            room_id,
        )
        return [MembershipRow(r[0], r[1], r[2]) for r in rows]

    async def get_user_joins_in_rooms(
        self, room_ids: Collection[str], user_id: str
    ) -> dict[str, list[int]]:
        """The stream positions of the user's accepted joins, per room, oldest first: one
        query whatever the number of rooms."""
        clause, arg = self.db.in_list("room_id", 2, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, stream_ordering FROM room_memberships"
            f" WHERE user_id = $1 AND membership = 'join' AND {clause} ORDER BY stream_ordering",
            user_id,
            arg,
        )
        joins: dict[str, list[int]] = {}
        for room_id, position in rows:
            joins.setdefault(room_id, []).append(position)
        return joins

    async def get_last_event_at(self, room_id: str, pos: Position) -> TimelineRow | None:
        """The last live event of the room at or before `pos` (for /members?at=)."""
        rows = await self.paginate(room_id, forwards=False, from_pos=pos, to_pos=None, limit=1)
        return rows[0] if rows else None
