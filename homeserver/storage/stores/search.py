"""Search text of room events (C-S API "Server Side Search"): the rows written with each event
(an EventIndexer) and the one query that reads a page of matches. PostgreSQL matches a tsvector
under a GIN index, SQLite an FTS5 table (schema/0017_search.sql.*): the two differ only in how
a match and its rank are written, an explicit branch below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.events.event import Event
from homeserver.storage.database import Database, Txn
from homeserver.storage.stores.persist import IndexedEvent

MESSAGE, NAME, TOPIC = "m.room.message", "m.room.name", "m.room.topic"
# The event type each searchable key belongs to (search.md "room_events").
KEY_TYPES = {"content.body": MESSAGE, "content.name": NAME, "content.topic": TOPIC}
_TYPE_KEYS = {t: k for k, t in KEY_TYPES.items()}

# A redaction the room accepted: its target is left out of search (see the migration).
_REDACTED = (
    "EXISTS (SELECT 1 FROM events r WHERE r.redacts = s.event_id AND NOT r.outlier"
    " AND NOT r.soft_failed AND r.rejected_reason IS NULL)"
)


def searchable_text(event: Event) -> tuple[str, str] | None:
    """(key, text) for an event search covers, None for any other."""
    key = _TYPE_KEYS.get(event.type)
    content = event.content
    if key is None or (event.type != MESSAGE and event.state_key != ""):
        return None
    texts = [content.get(key.removeprefix("content."))]
    if event.type == TOPIC:
        # Rich topics (m.topic): the text/plain representation is searched too.
        topic = content.get("m.topic")
        reps = topic.get("m.text") if isinstance(topic, dict) else None
        for rep in reps if isinstance(reps, list) else []:
            if isinstance(rep, dict) and rep.get("mimetype", "text/plain") == "text/plain":
                texts.append(rep.get("body"))
    words = " ".join(t for t in texts if isinstance(t, str) and t)
    # PostgreSQL text cannot hold NUL, which JSON strings may.
    return (key, words.replace("\x00", " ")) if words else None


@dataclass(frozen=True)
class SearchQuery:
    """One page of matches: every term must match; the lists restrict with exact values
    (None: no restriction). `after` is where the previous page stopped: (rank, stream
    ordering) when ordered by rank, (None, stream ordering) when by recency."""

    terms: Sequence[str]
    keys: Sequence[str]
    by_rank: bool
    limit: int
    after: tuple[float | None, int] | None = None
    rooms: Sequence[str] | None = None
    not_rooms: Sequence[str] = ()
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()
    types: Sequence[str] | None = None
    not_types: Sequence[str] = ()


@dataclass(frozen=True)
class SearchRow:
    event_id: str
    room_id: str
    stream_ordering: int
    rank: float


@dataclass(frozen=True)
class ContextRow:
    """An event next to a search result, in topological order around it."""

    anchor_id: str
    event_id: str
    before: bool
    depth: int
    stream_ordering: int


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None:
        rows = []
        for item in events:
            found = searchable_text(item.event) if item.accepted else None
            if found is not None:
                e = item.event
                rows.append(
                    (
                        e.event_id,
                        room_id,
                        e.sender,
                        e.type,
                        found[0],
                        item.stream_ordering,
                        found[1],
                    )
                )
        if not rows:
            return
        if self.db.dialect == "postgres":
            sql = (
                "INSERT INTO event_search (event_id, room_id, sender, type, key, stream_ordering,"
                " vector) VALUES ($1, $2, $3, $4, $5, $6, to_tsvector('english', $7))"
            )
        else:
            sql = (
                "INSERT INTO event_search (event_id, room_id, sender, type, key, rowid, value)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            )
        await txn.executemany(sql, rows)

    async def search(self, user_id: str, query: SearchQuery) -> tuple[list[SearchRow], int]:
        """A page of matches in rooms `user_id` has a membership in (history visibility is the
        caller's), not redacted; and how many matches there are from `query.after` on."""
        args: list[Any] = []

        def bind(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        def in_list(column: str, values: Sequence[str]) -> str:
            clause, arg = self.db.in_list(column, len(args) + 1, values)
            args.append(arg)
            return clause

        if self.db.dialect == "postgres":
            inner = (
                "SELECT s.event_id, s.room_id, s.stream_ordering,"
                " ts_rank(s.vector, q.query) AS rank"
                f" FROM event_search s, plainto_tsquery('english', {bind(' '.join(query.terms))})"
                " AS q(query) WHERE s.vector @@ q.query"
            )
        else:
            # Quoted, each term is a plain string to FTS5 (no operators); together, an AND.
            fts = " ".join('"' + t.replace('"', '""') + '"' for t in query.terms)
            inner = (
                "SELECT s.event_id, s.room_id, s.rowid AS stream_ordering,"
                " -bm25(event_search) AS rank"
                f" FROM event_search s WHERE event_search MATCH {bind(fts)}"
            )
        conditions = [
            f"s.room_id IN (SELECT room_id FROM room_memberships WHERE user_id = {bind(user_id)})",
            in_list("s.key", query.keys),
            f"NOT {_REDACTED}",
        ]
        for column, only, never in (
            ("s.room_id", query.rooms, query.not_rooms),
            ("s.sender", query.senders, query.not_senders),
            ("s.type", query.types, query.not_types),
        ):
            if only is not None:
                conditions.append(in_list(column, only))
            if never:
                conditions.append(f"NOT ({in_list(column, never)})")
        inner += "".join(f" AND {c}" for c in conditions)

        if query.by_rank:
            order = "m.rank DESC, m.stream_ordering DESC"
        else:
            order = "m.stream_ordering DESC"
        cursor = "TRUE"
        if query.after is not None:
            rank, position = query.after
            if query.by_rank and rank is not None:
                r, p = bind(rank), bind(position)
                cursor = f"(m.rank < {r} OR (m.rank = {r} AND m.stream_ordering < {p}))"
            else:
                cursor = f"m.stream_ordering < {bind(position)}"
        rows = await self.db.fetch(
            "SELECT m.event_id, m.room_id, m.stream_ordering, m.rank, COUNT(*) OVER () AS total"
            f" FROM ({inner}) m WHERE {cursor} ORDER BY {order} LIMIT {bind(query.limit)}",
            *args,
        )
        total = int(rows[0][4]) if rows else 0
        return [SearchRow(r[0], r[1], int(r[2]), float(r[3])) for r in rows], total

    async def get_context(
        self, event_ids: Sequence[str], before: int, after: int
    ) -> list[ContextRow]:
        """Up to `before` and `after` events in the room's history around each of `event_ids`
        (topological order, as /context), in one statement: a LATERAL walk per event on
        PostgreSQL, the same walk as a correlated subquery on SQLite."""
        if not event_ids or (before <= 0 and after <= 0):
            return []
        live = "NOT x.outlier AND NOT x.soft_failed AND x.rejected_reason IS NULL"
        walks = {
            True: ("<", "DESC", "$2"),
            False: (">", "ASC", "$3"),
        }
        clause, ids = self.db.in_list("a.event_id", 1, event_ids)
        if self.db.dialect == "postgres":
            parts = [
                f"(SELECT x.event_id, {is_before} AS before, x.depth, x.stream_ordering"
                " FROM events x WHERE x.room_id = a.room_id"
                f" AND (x.depth, x.stream_ordering) {op} (a.depth, a.stream_ordering)"
                f" AND {live} ORDER BY x.depth {order}, x.stream_ordering {order} LIMIT {limit})"
                for is_before, (op, order, limit) in walks.items()
            ]
            sql = (
                "SELECT a.event_id, c.event_id, c.before, c.depth, c.stream_ordering"
                f" FROM events a, LATERAL ({' UNION ALL '.join(parts)}) c WHERE {clause}"
            )
        else:
            parts = [
                f"SELECT a.event_id, c.event_id, {int(is_before)}, c.depth, c.stream_ordering"
                " FROM events a JOIN events c ON c.stream_ordering IN"
                " (SELECT x.stream_ordering FROM events x WHERE x.room_id = a.room_id"
                f" AND (x.depth, x.stream_ordering) {op} (a.depth, a.stream_ordering)"
                f" AND {live} ORDER BY x.depth {order}, x.stream_ordering {order} LIMIT {limit})"
                f" WHERE {clause}"
                for is_before, (op, order, limit) in walks.items()
            ]
            sql = " UNION ALL ".join(parts)
        rows = await self.db.fetch(sql, ids, max(before, 0), max(after, 0))
        return [ContextRow(r[0], r[1], bool(r[2]), int(r[3]), int(r[4])) for r in rows]
