"""Event relationships (C-S API "Forming relationships between events", "Threading",
"Event annotations and reactions"): the relations index, written as events are stored (an
EventIndexer), and its reads for /relations, /threads and bundled aggregations."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import REDACTION
from homeserver.storage.database import Database, Txn
from homeserver.storage.stores.persist import IndexedEvent

ANNOTATION = "m.annotation"
REPLACE = "m.replace"
REFERENCE = "m.reference"
THREAD = "m.thread"
# A redaction that clients may see (as the room reads' timeline).
_LIVE = "NOT outlier AND NOT soft_failed AND rejected_reason IS NULL"


@dataclass(frozen=True, slots=True)
class Relation:
    """What an event's `m.relates_to` says, when it is well formed."""

    relates_to_id: str
    rel_type: str
    aggregation_key: str | None


def relation_of(content: Mapping[str, Any]) -> Relation | None:
    """The relationship in an event's content: `m.relates_to` with string `rel_type` and
    `event_id` (C-S API "Relationship types"); an annotation also needs a string `key`. A
    rich reply (`m.in_reply_to` alone) is not a relationship with a rel_type."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    rel_type, parent = relates_to.get("rel_type"), relates_to.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent, str):
        return None
    key = relates_to.get("key")
    if rel_type == ANNOTATION and not isinstance(key, str):
        return None
    return Relation(parent, rel_type, key if rel_type == ANNOTATION else None)


@dataclass(frozen=True, slots=True)
class RelationRow:
    event_id: str
    relates_to_id: str
    rel_type: str
    room_id: str
    sender: str
    type: str
    depth: int
    stream_ordering: int
    origin_server_ts: int


@dataclass(frozen=True, slots=True)
class ThreadCount:
    count: int
    # Whether the given user sent one of the thread's events.
    participated: bool


@dataclass(frozen=True, slots=True)
class ThreadRow:
    thread_id: str
    latest_event_id: str
    latest_depth: int
    latest_stream: int


_COLUMNS = (
    "event_id",
    "relates_to_id",
    "rel_type",
    "room_id",
    "sender",
    "type",
    "depth",
    "stream_ordering",
    "origin_server_ts",
)
_ROW_COLUMNS = ", ".join(_COLUMNS)


def _relation_row(r: Any) -> RelationRow:
    return RelationRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])


class RelationsStore:
    """Also the EventIndexer that keeps the index (PersistEventsStore.add_indexer)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the index ----------------------------------------------------------------------

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None:
        accepted = [e for e in events if e.accepted]
        related = [(e, rel) for e in accepted if (rel := relation_of(e.event.content))]
        redacted_targets = [
            e.event.redacts for e in accepted if e.event.type == REDACTION and e.event.redacts
        ]
        if related:
            # A redaction may come before its target (over federation): the target arrives
            # with its relationship already broken.
            clause, arg = txn.in_list("redacts", 1, [e.event.event_id for e, _ in related])
            rows = await txn.fetch(f"SELECT redacts FROM events WHERE {clause} AND {_LIVE}", arg)
            already_redacted = {r[0] for r in rows}
            fresh = [(e, rel) for e, rel in related if e.event.event_id not in already_redacted]
            await txn.executemany(
                "INSERT INTO event_relations (event_id, relates_to_id, rel_type, aggregation_key,"
                " room_id, sender, type, depth, stream_ordering, origin_server_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                [
                    (
                        e.event.event_id,
                        rel.relates_to_id,
                        rel.rel_type,
                        rel.aggregation_key,
                        room_id,
                        e.event.sender,
                        e.event.type,
                        e.event.depth,
                        e.stream_ordering,
                        e.event.origin_server_ts,
                    )
                    for e, rel in fresh
                ],
            )
            await txn.executemany(
                "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_depth,"
                " latest_stream) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (room_id, thread_id) DO UPDATE SET"
                " latest_event_id = excluded.latest_event_id,"
                " latest_depth = excluded.latest_depth, latest_stream = excluded.latest_stream"
                " WHERE (excluded.latest_depth, excluded.latest_stream)"
                " > (threads.latest_depth, threads.latest_stream)",
                [
                    (room_id, rel.relates_to_id, e.event.event_id, e.event.depth, e.stream_ordering)
                    for e, rel in fresh
                    if rel.rel_type == THREAD
                ],
            )
        if redacted_targets:
            await self._unrelate_txn(txn, room_id, redacted_targets)

    async def _unrelate_txn(self, txn: Txn, room_id: str, event_ids: Sequence[str]) -> None:
        """Drop the relationships of redacted events; a thread whose latest reply was one of
        them falls back to its latest remaining reply (or stops being a thread)."""
        clause, arg = txn.in_list("event_id", 1, event_ids)
        rows = await txn.fetch(
            f"SELECT DISTINCT relates_to_id FROM event_relations WHERE {clause}"
            f" AND rel_type = '{THREAD}'",
            arg,
        )
        await txn.execute(f"DELETE FROM event_relations WHERE {clause}", arg)
        threads = [(room_id, r[0]) for r in rows]
        await txn.executemany("DELETE FROM threads WHERE room_id = $1 AND thread_id = $2", threads)
        await txn.executemany(
            "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_depth,"
            " latest_stream)"
            " SELECT room_id, relates_to_id, event_id, depth, stream_ordering"
            " FROM event_relations WHERE room_id = $1 AND relates_to_id = $2"
            f" AND rel_type = '{THREAD}' ORDER BY depth DESC, stream_ordering DESC LIMIT 1",
            threads,
        )

    # -- reads ---------------------------------------------------------------------------

    async def get_relation(self, event_id: str) -> RelationRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_ROW_COLUMNS} FROM event_relations WHERE event_id = $1", event_id
        )
        return None if row is None else _relation_row(row)

    async def has_annotation(self, parent_id: str, sender: str, event_type: str, key: str) -> bool:
        return bool(
            await self.db.fetchval(
                "SELECT 1 FROM event_relations WHERE relates_to_id = $1 AND sender = $2"
                f" AND aggregation_key = $3 AND type = $4 AND rel_type = '{ANNOTATION}'",
                parent_id,
                sender,
                key,
                event_type,
            )
        )

    async def get_children(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        max_depth: int,
        forwards: bool,
        from_pos: tuple[int | None, int] | None,
        to_pos: tuple[int | None, int] | None,
        limit: int,
    ) -> list[RelationRow]:
        """Events relating to `parent_id` directly, or through up to `max_depth` relationships,
        in topological order. Positions are (depth, stream ordering) "just after" an event, or
        (None, stream) for a /sync token: backwards, the rows at or before `from_pos` and after
        `to_pos`; forwards, those after `from_pos` up to and including `to_pos`."""
        args: list[Any] = [parent_id, room_id]
        where = ["r.room_id = $2"]
        if max_depth > 1:
            args.append(max_depth)
            # The level guard keeps a relationship cycle (possible over federation) finite.
            source = (
                "WITH RECURSIVE related (event_id, level) AS ("
                " SELECT event_id, 1 FROM event_relations WHERE relates_to_id = $1"
                " UNION"
                " SELECT c.event_id, related.level + 1 FROM event_relations c"
                " JOIN related ON c.relates_to_id = related.event_id WHERE related.level < $3)"
                f" SELECT DISTINCT {', '.join('r.' + c for c in _COLUMNS)}"
                " FROM event_relations r JOIN related ON r.event_id = related.event_id"
            )
        else:
            # Direct children only: read in order from the (relates_to_id, depth, stream)
            # index, a page at a time, however long the thread.
            where.append("r.relates_to_id = $1")
            source = f"SELECT {', '.join('r.' + c for c in _COLUMNS)} FROM event_relations r"

        def bound(pos: tuple[int | None, int], op: str) -> str:
            depth, stream = pos
            if depth is None:
                args.append(stream)
                return f"r.stream_ordering {op} ${len(args)}"
            args.extend((depth, stream))
            return f"(r.depth, r.stream_ordering) {op} (${len(args) - 1}, ${len(args)})"

        lower, upper = (from_pos, to_pos) if forwards else (to_pos, from_pos)
        if lower is not None:
            where.append(bound(lower, ">"))
        if upper is not None:
            where.append(bound(upper, "<="))
        for column, value in (("r.rel_type", rel_type), ("r.type", event_type)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        order = "ASC" if forwards else "DESC"
        args.append(limit)
        rows = await self.db.fetch(
            f"{source} WHERE {' AND '.join(where)}"
            f" ORDER BY r.depth {order}, r.stream_ordering {order} LIMIT ${len(args)}",
            *args,
        )
        return [_relation_row(r) for r in rows]

    async def get_children_of(
        self, parent_ids: Collection[str], rel_types: Sequence[str]
    ) -> list[RelationRow]:
        """Every direct child of `parent_ids` with one of `rel_types`, oldest first."""
        if not parent_ids:
            return []
        clause, arg = self.db.in_list("relates_to_id", 1, parent_ids)
        types_clause, types_arg = self.db.in_list("rel_type", 2, rel_types)
        rows = await self.db.fetch(
            f"SELECT {_ROW_COLUMNS} FROM event_relations WHERE {clause} AND {types_clause}"
            " ORDER BY depth, stream_ordering",
            arg,
            types_arg,
        )
        return [_relation_row(r) for r in rows]

    async def get_thread_counts(
        self, room_id: str, thread_ids: Collection[str], user_id: str, ignored: Collection[str]
    ) -> dict[str, ThreadCount]:
        """Replies per thread, those from `ignored` senders left out."""
        if not thread_ids:
            return {}
        clause, arg = self.db.in_list("relates_to_id", 3, thread_ids)
        not_ignored, ignored_arg = self.db.in_list("sender", 4, ignored)
        rows = await self.db.fetch(
            "SELECT relates_to_id, COUNT(*),"
            " MAX(CASE WHEN sender = $2 THEN 1 ELSE 0 END) FROM event_relations"
            f" WHERE room_id = $1 AND rel_type = '{THREAD}' AND {clause}"
            f" AND NOT ({not_ignored}) GROUP BY relates_to_id",
            room_id,
            user_id,
            arg,
            ignored_arg,
        )
        return {r[0]: ThreadCount(int(r[1]), bool(r[2])) for r in rows}

    async def get_latest_replies(
        self, room_id: str, thread_ids: Collection[str], ignored: Collection[str]
    ) -> dict[str, str]:
        """The latest reply of each thread not sent by one of `ignored` (the threads table
        holds the latest of all)."""
        if not thread_ids:
            return {}
        clause, arg = self.db.in_list("relates_to_id", 2, thread_ids)
        not_ignored, ignored_arg = self.db.in_list("sender", 3, ignored)
        rows = await self.db.fetch(
            "SELECT relates_to_id, event_id FROM event_relations"
            f" WHERE room_id = $1 AND rel_type = '{THREAD}' AND {clause} AND NOT ({not_ignored})"
            " ORDER BY depth DESC, stream_ordering DESC",
            room_id,
            arg,
            ignored_arg,
        )
        latest: dict[str, str] = {}
        for row in rows:
            latest.setdefault(row[0], row[1])
        return latest

    async def get_threads(self, room_id: str, thread_ids: Collection[str]) -> dict[str, ThreadRow]:
        if not thread_ids:
            return {}
        clause, arg = self.db.in_list("thread_id", 2, thread_ids)
        rows = await self.db.fetch(
            "SELECT thread_id, latest_event_id, latest_depth, latest_stream FROM threads"
            f" WHERE room_id = $1 AND {clause}",
            room_id,
            arg,
        )
        return {r[0]: ThreadRow(r[0], r[1], r[2], r[3]) for r in rows}

    async def list_threads(
        self,
        room_id: str,
        *,
        participant: str | None,
        before: tuple[int, int] | None,
        limit: int,
    ) -> list[ThreadRow]:
        """A room's threads, latest activity first, at or before the position `before`;
        with `participant`, only those the user started or replied in."""
        args: list[Any] = [room_id]
        where = ["t.room_id = $1"]
        if before is not None:
            args.extend(before)
            where.append("(t.latest_depth, t.latest_stream) <= ($2, $3)")
        if participant is not None:
            args.append(participant)
            n = len(args)
            where.append(
                f"(EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.thread_id"
                f" AND e.sender = ${n}) OR EXISTS (SELECT 1 FROM event_relations r"
                f" WHERE r.relates_to_id = t.thread_id AND r.rel_type = '{THREAD}'"
                f" AND r.sender = ${n}))"
            )
        args.append(limit)
        rows = await self.db.fetch(
            "SELECT t.thread_id, t.latest_event_id, t.latest_depth, t.latest_stream"
            f" FROM threads t WHERE {' AND '.join(where)}"
            f" ORDER BY t.latest_depth DESC, t.latest_stream DESC LIMIT ${len(args)}",
            *args,
        )
        return [ThreadRow(r[0], r[1], r[2], r[3]) for r in rows]
