"""Server-side search (C-S API "Server Side Search", search.yaml): the `room_events` category
over the events a user may see, ranked or by recency, with context, profiles, room state,
groups and pagination. Each page is one indexed query (the first page a second one, for
`count`), then batched reads: events, history visibility, context, profiles and
serialisation each cost one call whatever the page size.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from homeserver.errors import BadJson, Forbidden, InvalidParam
from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.handlers.client_events import ClientEventSerializer
from homeserver.handlers.filters import RoomEventFilter, parse_room_event_filter
from homeserver.handlers.room_reads import RoomReadHandler, topo_token
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.storage import Storage
from homeserver.storage.stores.events import EventMeta
from homeserver.storage.stores.room_extras import RoomExtrasStore
from homeserver.storage.stores.search import KEY_TYPES, SearchQuery, SearchRow

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 100
GROUP_KEYS = ("room_id", "sender")
# Pages of matches read at most to fill one response when history visibility hides some;
# the next_batch token goes on from where the last one stopped.
_MAX_ROUNDS = 5
# Matches whose history visibility `count` checks at most. `count` must not reveal events the
# user may not see, so it is only given when every match could be checked.
MAX_COUNTED = 500
_WORD = re.compile(r"\w+")


def _bad(path: str, why: str) -> BadJson:
    return BadJson(f"Invalid search: {path} {why}")


def _object(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{path}.{key}", "must be an object")
    return value


def _context_limit(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, DEFAULT_CONTEXT)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"event_context.{key}", "must be an integer")
    if value < 0:
        raise InvalidParam(f"event_context.{key} must not be negative")
    return min(value, MAX_CONTEXT)


@dataclass(frozen=True)
class EventContextRequest:
    before_limit: int
    after_limit: int
    include_profile: bool


@dataclass(frozen=True)
class RoomEventsCriteria:
    """search_categories.room_events of a request, checked."""

    terms: tuple[str, ...]
    keys: tuple[str, ...]
    event_filter: RoomEventFilter
    by_rank: bool
    context: EventContextRequest | None
    include_state: bool
    group_by: tuple[str, ...]

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> RoomEventsCriteria:
        term = obj.get("search_term")
        if not isinstance(term, str):
            raise _bad("search_term", "is required and must be a string")
        keys = obj.get("keys", list(KEY_TYPES))
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _bad("keys", "must be a list of strings")
        if unknown := [k for k in keys if k not in KEY_TYPES]:
            raise InvalidParam(f"Unknown search keys: {', '.join(unknown)}")
        order_by = obj.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise InvalidParam("order_by must be 'rank' or 'recent'")
        context: EventContextRequest | None = None
        if obj.get("event_context") is not None:
            raw = _object(obj, "event_context", "room_events")
            include_profile = raw.get("include_profile", False)
            if not isinstance(include_profile, bool):
                raise _bad("event_context.include_profile", "must be a boolean")
            context = EventContextRequest(
                _context_limit(raw, "before_limit"),
                _context_limit(raw, "after_limit"),
                include_profile,
            )
        include_state = obj.get("include_state", False)
        if not isinstance(include_state, bool):
            raise _bad("include_state", "must be a boolean")
        group_by = _object(obj, "groupings", "room_events").get("group_by", [])
        if not isinstance(group_by, list) or not all(isinstance(g, dict) for g in group_by):
            raise _bad("groupings.group_by", "must be a list of objects")
        if bad := [g.get("key") for g in group_by if g.get("key") not in GROUP_KEYS]:
            raise InvalidParam(f"Unknown group keys: {bad}")
        return cls(
            terms=tuple(dict.fromkeys(_WORD.findall(term.lower()))),
            keys=tuple(keys),
            event_filter=parse_room_event_filter(_object(obj, "filter", "room_events"), "filter"),
            by_rank=order_by == "rank",
            context=context,
            include_state=include_state,
            group_by=tuple(dict.fromkeys(str(g["key"]) for g in group_by)),
        )


@dataclass(frozen=True)
class SearchCursor:
    """Where a page stopped (an opaque next_batch token): the last match read, the `count`
    the first page gave (None: none), and the group a group's token stays within."""

    by_rank: bool
    rank: float | None
    stream_ordering: int
    count: int | None
    group: tuple[str, str] | None = None

    def encode(self) -> str:
        data = [self.by_rank, self.rank, self.stream_ordering, self.count, self.group]
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    def in_group(self, key: str, value: str) -> SearchCursor:
        return replace(self, group=(key, value))

    @classmethod
    def decode(cls, token: str) -> SearchCursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            by_rank, rank, position, count, group = data
            if not (
                isinstance(by_rank, bool)
                and (rank is None or isinstance(rank, (int, float)))
                and isinstance(position, int)
                and (count is None or isinstance(count, int))
            ):
                raise ValueError
            if group is not None:
                key, value = group
                if key not in GROUP_KEYS or not isinstance(value, str):
                    raise ValueError
                group = (key, value)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidParam("Invalid next_batch token") from None
        return cls(by_rank, None if rank is None else float(rank), position, count, group)


@dataclass
class _Page:
    rows: list[SearchRow] = field(default_factory=list)
    events: dict[str, Event] = field(default_factory=dict)
    memberships: dict[str, str] = field(default_factory=dict)
    count: int | None = 0
    next_cursor: SearchCursor | None = None


class SearchHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        visibility: HistoryVisibility,
        serializer: ClientEventSerializer,
        reads: RoomReadHandler,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.visibility = visibility
        self.serializer = serializer
        self.reads = reads
        self.max_counted = MAX_COUNTED

    async def search(
        self, user_id: str, device_id: str, body: Mapping[str, Any], next_batch: str | None
    ) -> dict[str, Any]:
        if "search_categories" not in body:
            raise _bad("search_categories", "is required")
        categories = _object(body, "search_categories", "request")
        # Categories this server does not know are ignored (only room_events is specified).
        if categories.get("room_events") is None:
            return {"search_categories": {}}
        criteria = RoomEventsCriteria.parse(_object(categories, "room_events", "search_categories"))
        cursor = SearchCursor.decode(next_batch) if next_batch is not None else None
        if cursor is not None and cursor.by_rank != criteria.by_rank:
            raise InvalidParam("next_batch belongs to a search with another order_by")
        result = await self._room_events(user_id, device_id, criteria, cursor)
        return {"search_categories": {"room_events": result}}

    async def _room_events(
        self,
        user_id: str,
        device_id: str,
        criteria: RoomEventsCriteria,
        cursor: SearchCursor | None,
    ) -> dict[str, Any]:
        limit = criteria.event_filter.limit
        # At least one: a page of none could never move the cursor on.
        limit = DEFAULT_LIMIT if limit is None else max(1, min(limit, MAX_LIMIT))
        page = await self._page(user_id, criteria, cursor, limit) if criteria.terms else _Page()
        ordered = [page.events[r.event_id] for r in page.rows]
        serialized = await self.serializer.serialize(
            ordered, user_id=user_id, device_id=device_id, memberships=page.memberships
        )
        results: list[dict[str, Any]] = [
            {"rank": row.rank, "result": event}
            for row, event in zip(page.rows, serialized, strict=True)
        ]
        if criteria.context is not None:
            contexts = await self._contexts(user_id, device_id, ordered, criteria)
            for result, event in zip(results, ordered, strict=True):
                result["context"] = contexts[event.event_id]
        out: dict[str, Any] = {"highlights": list(criteria.terms), "results": results}
        if page.count is not None:
            out["count"] = page.count
        if page.next_cursor is not None:
            out["next_batch"] = page.next_cursor.encode()
        if criteria.group_by:
            out["groups"] = _groups(ordered, criteria.group_by, page.next_cursor)
        if criteria.include_state:
            out["state"] = await self._room_states(user_id, [e.room_id for e in ordered])
        return out

    async def _room_states(
        self, user_id: str, room_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """The state the user may read of each room (current, or as they left it); a room
        whose state they may not read (invited only) is left out rather than failing."""
        states: dict[str, list[dict[str, Any]]] = {}
        for room_id in dict.fromkeys(room_ids):
            try:
                states[room_id] = await self.reads.get_state(user_id, room_id)
            except Forbidden:
                continue
        return states

    async def _page(
        self,
        user_id: str,
        criteria: RoomEventsCriteria,
        cursor: SearchCursor | None,
        limit: int,
    ) -> _Page:
        """Up to `limit` visible matches after `cursor`, and the cursor after them."""
        f = criteria.event_filter
        rooms, senders = f.rooms, f.senders
        if cursor is not None and cursor.group is not None:
            key, value = cursor.group
            if key == "room_id":
                rooms = (value,) if rooms is None or value in rooms else ()
            else:
                senders = (value,) if senders is None or value in senders else ()
        # Types with a glob are matched below, on the events; exact ones by the query.
        exact_types = (
            f.types if f.types is not None and not any("*" in t for t in f.types) else None
        )
        after = (cursor.rank, cursor.stream_ordering) if cursor is not None else None
        query = SearchQuery(
            terms=criteria.terms,
            keys=criteria.keys,
            by_rank=criteria.by_rank,
            limit=limit,
            rooms=rooms,
            not_rooms=f.not_rooms,
            senders=senders,
            not_senders=f.not_senders,
            types=exact_types,
            not_types=[t for t in f.not_types if "*" not in t],
        )
        page = _Page(count=cursor.count if cursor is not None else None)
        for round_ in range(_MAX_ROUNDS):
            asked = limit - len(page.rows)
            rows, remaining = await self.storage.search.search(
                user_id, replace(query, limit=asked, after=after)
            )
            if round_ == 0 and cursor is None:
                # Later pages repeat the first page's count from their token.
                page.count = await self._visible_count(user_id, query, remaining)
            events = await self.storage.events.get_events([r.event_id for r in rows])
            batch = [
                events[r.event_id]
                for r in rows
                if r.event_id in events and f.matches_event(events[r.event_id])
            ]
            visible = await self.visibility.filter_events(user_id, batch)
            shown = {e.event_id: e for e in visible.events}
            page.rows.extend(r for r in rows if r.event_id in shown)
            page.events.update(shown)
            page.memberships.update(visible.memberships)
            if rows:
                last = rows[-1]
                after = (last.rank if criteria.by_rank else None, last.stream_ordering)
            if len(rows) < asked:
                return page
            if len(page.rows) >= limit:
                break
        assert after is not None
        group = cursor.group if cursor is not None else None
        page.next_cursor = SearchCursor(criteria.by_rank, after[0], after[1], page.count, group)
        return page

    async def _visible_count(self, user_id: str, query: SearchQuery, total: int) -> int | None:
        """search.yaml `count` of a search with `total` matches in the user's rooms: how many
        of them the user may see (events hidden by history visibility, e.g. from before they
        joined, must not show in it), None when there are too many to check. Filters on
        type globs and event fields are not applied, so it may count a few more than could
        be shown: the spec calls it approximate."""
        if total == 0:
            return 0
        if total > self.max_counted:
            return None
        rows, _ = await self.storage.search.search(user_id, replace(query, limit=total))
        metas = await self.storage.events.get_event_metas([r.event_id for r in rows])
        return len(await self.visibility.visible_memberships(user_id, list(metas.values())))

    async def _contexts(
        self,
        user_id: str,
        device_id: str,
        results: Sequence[Event],
        criteria: RoomEventsCriteria,
    ) -> dict[str, dict[str, Any]]:
        """search.yaml "context" of every result: one context query, one visibility check and
        one serialisation for them all."""
        assert criteria.context is not None
        wanted = criteria.context
        ids = [e.event_id for e in results]
        rows = await self.storage.search.get_context(ids, wanted.before_limit, wanted.after_limit)
        metas = await self.storage.events.get_event_metas(list({*ids, *(r.event_id for r in rows)}))
        fetched = await self.storage.events.get_events({r.event_id for r in rows})
        candidates = [
            fetched[i]
            for i in dict.fromkeys(r.event_id for r in rows)
            if i in fetched and criteria.event_filter.matches_event(fetched[i])
        ]
        visible = await self.visibility.filter_events(user_id, candidates, metas)
        serialized = dict(
            zip(
                [e.event_id for e in visible.events],
                await self.serializer.serialize(
                    visible.events,
                    user_id=user_id,
                    device_id=device_id,
                    memberships=visible.memberships,
                ),
                strict=True,
            )
        )
        contexts: dict[str, dict[str, Any]] = {}
        for event in results:
            meta = metas[event.event_id]
            mine = [r for r in rows if r.anchor_id == event.event_id]
            before = sorted(
                (r for r in mine if r.before), key=lambda r: (r.depth, r.stream_ordering)
            )
            after = sorted(
                (r for r in mine if not r.before), key=lambda r: (r.depth, r.stream_ordering)
            )
            first = before[0] if before else None
            last = after[-1] if after else None
            contexts[event.event_id] = {
                # As /context: events_before nearest first.
                "events_before": [
                    serialized[r.event_id] for r in reversed(before) if r.event_id in serialized
                ],
                "events_after": [serialized[r.event_id] for r in after if r.event_id in serialized],
                "start": topo_token(first.depth, first.stream_ordering - 1)
                if first
                else topo_token(meta.depth, meta.stream_ordering - 1),
                "end": topo_token(last.depth, last.stream_ordering)
                if last
                else topo_token(meta.depth, meta.stream_ordering),
            }
        if wanted.include_profile:
            senders_of = {
                e.event_id: {e.sender}
                | {c["sender"] for c in contexts[e.event_id]["events_before"]}
                | {c["sender"] for c in contexts[e.event_id]["events_after"]}
                for e in results
            }
            profiles = await self._profiles_at(results, metas, senders_of)
            for event in results:
                contexts[event.event_id]["profile_info"] = profiles[event.event_id]
        return contexts

    async def _profiles_at(
        self,
        results: Sequence[Event],
        metas: Mapping[str, EventMeta],
        senders_of: Mapping[str, set[str]],
    ) -> dict[str, dict[str, dict[str, str]]]:
        """The senders' display names and avatars in the state at each result (the
        "historic profile information")."""
        group_of = {e.event_id: metas[e.event_id].state_group_after for e in results}
        keys: set[StateKey] = {(MEMBER, s) for senders in senders_of.values() for s in senders}
        states = await self.extras.get_state_at_groups(
            {g for g in group_of.values() if g is not None}, keys
        )
        members = await self.storage.events.get_events(
            {i for state in states.values() for i in state.values()}
        )
        profiles: dict[str, dict[str, dict[str, str]]] = {}
        for event in results:
            group = group_of.get(event.event_id)
            state = states.get(group, {}) if group is not None else {}
            info: dict[str, dict[str, str]] = {}
            for sender in sorted(senders_of[event.event_id]):
                member = members.get(state.get((MEMBER, sender), ""))
                if member is None:
                    continue
                info[sender] = {
                    k: v
                    for k in ("displayname", "avatar_url")
                    if isinstance(v := member.content.get(k), str)
                }
            profiles[event.event_id] = info
        return profiles


def _groups(
    results: Sequence[Event], group_by: Sequence[str], cursor: SearchCursor | None
) -> dict[str, dict[str, dict[str, Any]]]:
    """search.yaml "groups": the results' event IDs by room or sender, groups in order of
    their best result; a group's next_batch goes on within that group."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for key in group_by:
        by_value: dict[str, dict[str, Any]] = {}
        for event in results:
            value = event.room_id if key == "room_id" else event.sender
            group = by_value.setdefault(value, {"order": len(by_value) + 1, "results": []})
            group["results"].append(event.event_id)
        if cursor is not None:
            for value, group in by_value.items():
                group["next_batch"] = cursor.in_group(key, value).encode()
        groups[key] = by_value
    return groups
