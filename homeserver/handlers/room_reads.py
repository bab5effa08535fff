"""Reading a room (C-S API "Getting events for a room", "Room membership", "Event context",
/messages, /timestamp_to_event), every read filtered by history visibility.

Pagination tokens are opaque to clients. Ours name a topological position, "t{depth}-{stream}"
(just after the event at that depth and stream ordering); a /sync token (homeserver.streams
StreamToken, e.g. "s12_0_0_0_0_0_0") names a stream position, its `events` slot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import Forbidden, InvalidParam, NotFound
from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.glob import glob_match
from homeserver.handlers.client_events import ClientEventSerializer
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import Position, RoomExtrasStore, TimelineRow
from homeserver.streams import StreamToken

_TOPO = re.compile(r"t(-?\d{1,18})-(-?\d{1,18})\Z")
MAX_LIMIT = 1000
# Pages fetched at most to fill one /messages response when visibility hides whole pages
# or history must be fetched from other servers (one backfill per round at most).
_MAX_ROUNDS = 5
# Edge events one backfill starts from at most, the nearest to the page first.
_BACKFILL_FROM = 5
# Gaps within the pages of one /messages request filled at most (each costs a round trip
# to another server; the next request goes on where this one stopped).
_MAX_GAP_FILLS = 2


def parse_token(token: str) -> Position:
    match = _TOPO.match(token)
    if match is not None:
        return Position(stream=int(match.group(2)), depth=int(match.group(1)))
    return Position(stream=StreamToken.parse(token).events)


def topo_token(depth: int, stream: int) -> str:
    return f"t{depth}-{stream}"


@dataclass(frozen=True)
class RoomEventFilter:
    """The parts of a RoomEventFilter (C-S API "Filtering") that room reads apply."""

    limit: int | None = None
    types: list[str] | None = None
    not_types: tuple[str, ...] = ()
    senders: list[str] | None = None
    not_senders: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False

    @classmethod
    def parse(cls, raw: str | None) -> RoomEventFilter:
        if raw is None or raw == "":
            return cls()
        try:
            value = json.loads(raw)
        except ValueError:
            raise InvalidParam("filter is not valid JSON") from None
        if not isinstance(value, dict):
            raise InvalidParam("filter must be a JSON object")

        def strings(key: str) -> list[str] | None:
            v = value.get(key)
            if v is None:
                return None
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise InvalidParam(f"filter.{key} must be a list of strings")
            return v

        limit = value.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidParam("filter.limit must be an integer")
        contains_url = value.get("contains_url")
        lazy = value.get("lazy_load_members", False)
        if contains_url is not None and not isinstance(contains_url, bool):
            raise InvalidParam("filter.contains_url must be a boolean")
        if not isinstance(lazy, bool):
            raise InvalidParam("filter.lazy_load_members must be a boolean")
        return cls(
            limit=limit,
            types=strings("types"),
            not_types=tuple(strings("not_types") or ()),
            senders=strings("senders"),
            not_senders=tuple(strings("not_senders") or ()),
            contains_url=contains_url,
            lazy_load_members=lazy,
        )

    def sql_lists(self) -> dict[str, Any]:
        """What storage can filter on: exact types (a `*` wildcard is matched here instead)."""
        exact = self.types is not None and not any("*" in t for t in self.types)
        return {
            "types": self.types if exact else None,
            "not_types": [t for t in self.not_types if "*" not in t],
            "senders": self.senders,
            "not_senders": list(self.not_senders),
        }

    def matches(self, event: Event) -> bool:
        if self.types is not None and not any(glob_match(p, event.type) for p in self.types):
            return False
        if any(glob_match(p, event.type) for p in self.not_types):
            return False
        if self.senders is not None and event.sender not in self.senders:
            return False
        if event.sender in self.not_senders:
            return False
        if self.contains_url is not None:
            has_url = isinstance(event.content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


class RemoteBackfill(Protocol):
    """Fetches history older than what this server holds from other servers in the room
    (S-S API "Backfilling and retrieving missing events") and stores it below the timeline."""

    async def backfill(self, room_id: str, extremities: Sequence[str]) -> int:
        """Fetch the events `extremities` (that we lack) and those before them; how many
        were stored."""
        ...


class RoomReadHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        visibility: HistoryVisibility,
        serializer: ClientEventSerializer,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.visibility = visibility
        self.serializer = serializer
        self.clock = clock
        # Set by federation: without it, history goes back only as far as this server holds.
        self.remote_backfill: RemoteBackfill | None = None

    async def get_event(
        self, user_id: str, device_id: str, room_id: str, event_id: str
    ) -> dict[str, Any]:
        """404 both for an unknown event and one the user may not see (rooms.yaml)."""
        not_found = NotFound("Event not found")
        access = await self.visibility.room_access(user_id, room_id)
        if not access.can_read_timeline:
            raise not_found
        event = await self.storage.events.get_event(event_id)
        if event is None or event.room_id != room_id:
            raise not_found
        seen = await self.visibility.filter_events(user_id, [event])
        if not seen.events:
            raise not_found
        [out] = await self.serializer.serialize(
            seen.events, user_id=user_id, device_id=device_id, memberships=seen.memberships
        )
        return out

    async def _readable_state(self, user_id: str, room_id: str) -> Mapping[StateKey, str]:
        frozen_at = await self.visibility.state_event_for_reads(user_id, room_id)
        if frozen_at is None:
            return await self.storage.rooms.get_current_state_ids(room_id)
        return await self._state_after(frozen_at)

    async def _state_after(self, event_id: str) -> Mapping[StateKey, str]:
        meta = (await self.storage.events.get_event_metas([event_id])).get(event_id)
        if meta is None or meta.state_group_after is None:
            return {}
        return await self.storage.state.get_state(meta.state_group_after)

    async def get_state(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        state = await self._readable_state(user_id, room_id)
        events = await self.storage.events.get_events(state.values())
        ordered = [events[i] for i in sorted(state.values()) if i in events]
        return await self.serializer.serialize(ordered, user_id=user_id, replaced_state=False)

    async def get_state_event(
        self, user_id: str, room_id: str, event_type: str, state_key: str
    ) -> dict[str, Any]:
        """The client event at (type, state_key); the transport returns its content unless
        the client asked for ?format=event."""
        state = await self._readable_state(user_id, room_id)
        event_id = state.get((event_type, state_key))
        event = await self.storage.events.get_event(event_id) if event_id else None
        if event is None:
            raise NotFound(f"No {event_type} state with key {state_key!r} in the room")
        [out] = await self.serializer.serialize([event], user_id=user_id)
        return out

    async def get_members(
        self,
        user_id: str,
        room_id: str,
        at: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[dict[str, Any]]:
        state = await self._readable_state(user_id, room_id)
        if at is not None:
            row = await self.extras.get_last_event_at(room_id, parse_token(at))
            if row is not None:
                # Never beyond what the user may read now (a departed user's frozen state).
                at_state = await self._state_after(row.event_id)
                frozen = await self.visibility.state_event_for_reads(user_id, room_id)
                if frozen is None or row.stream_ordering <= await self._stream_of(frozen):
                    state = at_state
        member_ids = [eid for (t, _k), eid in state.items() if t == MEMBER]
        events = await self.storage.events.get_events(member_ids)
        chosen = [
            events[i]
            for i in sorted(member_ids)
            if i in events
            and (membership is None or events[i].membership == membership)
            and (not_membership is None or events[i].membership != not_membership)
        ]
        return await self.serializer.serialize(chosen, user_id=user_id, replaced_state=False)

    async def _stream_of(self, event_id: str) -> int:
        meta = (await self.storage.events.get_event_metas([event_id])).get(event_id)
        return meta.stream_ordering if meta is not None else 0

    async def get_joined_members(self, user_id: str, room_id: str) -> dict[str, Any]:
        access = await self.visibility.room_access(user_id, room_id)
        if access.membership != "join" and not access.world_readable:
            raise Forbidden(f"User {user_id} is not in room {room_id}")
        state = await self.storage.rooms.get_current_state_ids(room_id, [MEMBER])
        events = await self.storage.events.get_events(state.values())
        joined: dict[str, Any] = {}
        for event in events.values():
            if event.membership != "join" or event.state_key is None:
                continue
            profile: dict[str, Any] = {}
            for src, dst in (("displayname", "display_name"), ("avatar_url", "avatar_url")):
                value = event.content.get(src)
                if isinstance(value, str):
                    profile[dst] = value
            joined[event.state_key] = profile
        return {"joined": joined}

    async def _page(
        self,
        user_id: str,
        room_id: str,
        *,
        forwards: bool,
        start: Position | None,
        to: Position | None,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> tuple[list[Event], dict[str, str], TimelineRow | None, bool]:
        """Up to `limit` visible events from `start`: (events, memberships, last row read,
        whether more rows may follow)."""
        found: list[Event] = []
        memberships: dict[str, str] = {}
        last: TimelineRow | None = None
        more = False
        cursor = start
        gaps_filled = 0
        for _round in range(_MAX_ROUNDS):
            rows = await self.extras.paginate(
                room_id,
                forwards=forwards,
                from_pos=cursor,
                to_pos=to,
                limit=limit - len(found),
                **event_filter.sql_lists(),
            )
            more = len(rows) == limit - len(found)
            if (
                not forwards
                and rows
                and gaps_filled < _MAX_GAP_FILLS
                and await self._backfill(room_id, cursor, rows[-1].depth)
            ):
                # History was missing among these events (this server was away while they
                # were sent): it is stored now, so the same stretch is read again.
                gaps_filled += 1
                continue
            if rows:
                last = rows[-1]
                step = 0 if forwards else -1
                cursor = Position(stream=last.stream_ordering + step, depth=last.depth)
            events = await self.storage.events.get_events([r.event_id for r in rows])
            batch = [events[r.event_id] for r in rows if r.event_id in events]
            batch = [e for e in batch if event_filter.matches(e)]
            seen = await self.visibility.filter_events(user_id, batch)
            found.extend(seen.events)
            memberships.update(seen.memberships)
            if not more and not forwards and to is None:
                # The page came back short: at the start of the room, or of what we hold.
                more = await self._backfill(room_id, cursor)
            if not more or len(found) >= limit:
                break
        return found, memberships, last, more

    async def _backfill(
        self, room_id: str, cursor: Position | None, min_depth: int | None = None
    ) -> bool:
        """Fetch the history missing before the room's events we hold at or before `cursor`
        (down to `min_depth`: a gap within a page; else the earliest edge); whether any
        was stored."""
        if self.remote_backfill is None:
            return False
        extremities = await self.storage.events.get_backward_extremities(
            room_id, cursor.depth if cursor is not None else None, _BACKFILL_FROM, min_depth
        )
        if not extremities:
            return False
        return await self.remote_backfill.backfill(room_id, extremities) > 0

    async def _lazy_members(
        self, user_id: str, at_event: Event | None, senders: set[str]
    ) -> list[dict[str, Any]]:
        """The member events of `senders` in the state after `at_event` (lazy loading)."""
        if at_event is None or not senders:
            return []
        meta = (await self.storage.events.get_event_metas([at_event.event_id])).get(
            at_event.event_id
        )
        if meta is None or meta.state_group_after is None:
            return []
        keys = [(MEMBER, s) for s in sorted(senders)]
        state = await self.extras.get_state_at_groups([meta.state_group_after], keys)
        ids = state.get(meta.state_group_after, {})
        events = await self.storage.events.get_events(ids.values())
        return await self.serializer.serialize(
            [events[ids[k]] for k in keys if k in ids and ids[k] in events], user_id=user_id
        )

    async def messages(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        forwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        access = await self.visibility.require_timeline_access(user_id, room_id)
        if from_token is not None:
            start_pos: Position | None = parse_token(from_token)
            start_token = from_token
        elif forwards:
            start_pos, start_token = None, topo_token(0, 0)
        else:
            current = self.storage.stream_ids.current
            start_pos, start_token = Position(stream=current), f"s{current}"
            if access.membership in ("leave", "ban") and not access.world_readable:
                # Nothing after a departed user's leave is theirs to see: start there.
                assert access.member_event_id is not None
                meta = (await self.storage.events.get_event_metas([access.member_event_id])).get(
                    access.member_event_id
                )
                if meta is not None:
                    start_pos = Position(stream=meta.stream_ordering, depth=meta.depth)
        to_pos = parse_token(to_token) if to_token is not None else None
        if event_filter.limit is not None:
            limit = min(limit, max(event_filter.limit, 1))
        limit = max(1, min(limit, MAX_LIMIT))
        events, memberships, last, more = await self._page(
            user_id,
            room_id,
            forwards=forwards,
            start=start_pos,
            to=to_pos,
            limit=limit,
            event_filter=event_filter,
        )
        body: dict[str, Any] = {
            "start": start_token,
            "chunk": await self.serializer.serialize(
                events, user_id=user_id, device_id=device_id, memberships=memberships
            ),
        }
        if more and last is not None:
            step = 0 if forwards else -1
            body["end"] = topo_token(last.depth, last.stream_ordering + step)
        if event_filter.lazy_load_members:
            body["state"] = await self._lazy_members(
                user_id, events[0] if events else None, {e.sender for e in events}
            )
        return body

    async def context(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        event_id: str,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        await self.visibility.require_timeline_access(user_id, room_id)
        event = await self.storage.events.get_event(event_id)
        meta = (await self.storage.events.get_event_metas([event_id])).get(event_id)
        if event is None or meta is None or event.room_id != room_id:
            raise NotFound("Event not found")
        seen = await self.visibility.filter_events(user_id, [event], {event_id: meta})
        if not seen.events:
            raise NotFound("Event not found")
        limit = max(0, min(limit, MAX_LIMIT))
        # As Synapse: half the limit before the event, the rest after it.
        before_limit = limit // 2
        after_limit = limit - before_limit
        here = Position(stream=meta.stream_ordering, depth=meta.depth)
        before: list[Event] = []
        after: list[Event] = []
        memberships = dict(seen.memberships)
        start = topo_token(meta.depth, meta.stream_ordering - 1)
        end = topo_token(meta.depth, meta.stream_ordering)
        if before_limit:
            just_before = Position(stream=meta.stream_ordering - 1, depth=meta.depth)
            before, m, last, _ = await self._page(
                user_id,
                room_id,
                forwards=False,
                start=just_before,
                to=None,
                limit=before_limit,
                event_filter=event_filter,
            )
            memberships.update(m)
            if last is not None:
                start = topo_token(last.depth, last.stream_ordering - 1)
        if after_limit:
            after, m, last, _ = await self._page(
                user_id,
                room_id,
                forwards=True,
                start=here,
                to=None,
                limit=after_limit,
                event_filter=event_filter,
            )
            memberships.update(m)
            if last is not None:
                end = topo_token(last.depth, last.stream_ordering)
        serialized = await self.serializer.serialize(
            [*before, event, *after], user_id=user_id, device_id=device_id, memberships=memberships
        )
        last_event = after[-1] if after else event
        everything = [*before, event, *after]
        if event_filter.lazy_load_members:
            state = await self._lazy_members(user_id, last_event, {e.sender for e in everything})
        else:
            ids = await self._state_after(last_event.event_id)
            state_events = await self.storage.events.get_events(ids.values())
            state = await self.serializer.serialize(
                [state_events[i] for i in sorted(ids.values()) if i in state_events],
                user_id=user_id,
                replaced_state=False,
            )
        return {
            "start": start,
            "end": end,
            "events_before": serialized[: len(before)],
            "event": serialized[len(before)],
            "events_after": serialized[len(before) + 1 :],
            "state": state,
        }

    async def timestamp_to_event(
        self, user_id: str, room_id: str, ts: int, forwards: bool
    ) -> dict[str, Any]:
        await self.visibility.require_timeline_access(user_id, room_id)
        found = await self.extras.get_event_near_ts(room_id, ts, forwards)
        nothing = NotFound(f"No event found {'after' if forwards else 'before'} {ts}")
        if found is None:
            raise nothing
        # Even an event ID says something (that the room was active then): only a visible one.
        event = await self.storage.events.get_event(found[0])
        if event is None or not (await self.visibility.filter_events(user_id, [event])).events:
            raise nothing
        return {"event_id": found[0], "origin_server_ts": found[1]}
