"""HierarchyHandler: the rooms of a space tree (C-S API "Spaces", GET /hierarchy: the
m.space.child events walked depth first, each room the user may see or join) and one level of
a space for another server (S-S API "Spaces", GET /hierarchy). Rooms this server is not in
are asked of the servers their m.space.child events name, through RemoteHierarchy."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import Forbidden, InvalidParam, NotFound
from homeserver.events.event import Event
from homeserver.handlers.room_summary import RoomSummaries, RoomSummary, may_see
from homeserver.storage import Storage

JsonDict = dict[str, Any]

SPACE_CHILD = "m.space.child"
SPACE = "m.space"

# The spec asks for defaults and maxima of `limit` and `max_depth`; a larger value is lowered.
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 10
# A page also ends after this many rooms walked, shown or not: a space full of rooms the user
# may not see (each perhaps asked of another server) costs a bounded amount per request.
MAX_WALKED_PER_PAGE = 250
# Pagination state lives in memory for a while, like the `from` tokens of other servers.
SESSION_TTL_MS = 5 * 60 * 1000
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class SpaceChild:
    room_id: str
    via: tuple[str, ...]


@dataclass(frozen=True)
class RemoteSpace:
    """Another server's answer to S-S GET /hierarchy: the room and the children it could
    describe (SpaceHierarchyRoomsChunk-like dicts, already checked for shape), and the
    children the asking server may never see."""

    room: JsonDict
    children: tuple[JsonDict, ...]
    inaccessible_children: frozenset[str]


class RemoteHierarchy(Protocol):
    """Asks the `via` servers (in order) for a space this server is not in; None when none
    could answer."""

    async def space(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> RemoteSpace | None: ...


@dataclass(frozen=True)
class _Pending:
    room_id: str
    depth: int
    via: tuple[str, ...]
    # What the parent's server said of this room, when the parent was another server's.
    described: JsonDict | None = None


@dataclass(frozen=True)
class _Walk:
    """Where a paginated walk stands: what the `from` token names."""

    user_id: str
    root: str
    suggested_only: bool
    max_depth: int
    stack: tuple[_Pending, ...]
    processed: frozenset[str]


@dataclass
class _Requester:
    """The rooms a user is in, invited to or banned from, read once per request."""

    joined: set[str]
    invited: set[str]
    banned: set[str]
    # Local room chunks loaded so far in this request (None: this server is not in the room).
    local: dict[str, JsonDict | None] = field(default_factory=dict)


class HierarchyHandler:
    def __init__(
        self, storage: Storage, summaries: RoomSummaries, server_name: str, clock: Clock
    ) -> None:
        self.storage = storage
        self.summaries = summaries
        self.server_name = server_name
        self.clock = clock
        # Set by federation: spaces on other servers.
        self.remote: RemoteHierarchy | None = None
        self._sessions: dict[str, tuple[int, _Walk]] = {}

    async def room_hierarchy(
        self,
        user_id: str,
        room_id: str,
        *,
        suggested_only: bool = False,
        limit: int | None = None,
        max_depth: int | None = None,
        from_token: str | None = None,
    ) -> JsonDict:
        """C-S API GET /rooms/{roomId}/hierarchy: one page of the space tree."""
        if limit is not None and limit < 1:
            raise InvalidParam("limit must be greater than zero")
        if max_depth is not None and max_depth < 0:
            raise InvalidParam("max_depth must not be negative")
        page_size = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        depth = MAX_DEPTH if max_depth is None else min(max_depth, MAX_DEPTH)
        who = _Requester(
            joined=set(await self.storage.rooms.get_rooms_for_user(user_id, "join")),
            invited=set(await self.storage.rooms.get_rooms_for_user(user_id, "invite")),
            banned=set(await self.storage.rooms.get_rooms_for_user(user_id, "ban")),
        )
        if from_token is None:
            await self._load_local(who, [room_id])
            root = who.local[room_id]
            if root is None or not self._user_may_see(who, root):
                raise Forbidden(f"You may not see the hierarchy of {room_id}")
            walk = _Walk(
                user_id, room_id, suggested_only, depth, (_Pending(room_id, 0, ()),), frozenset()
            )
        else:
            walk = self._resume(from_token, user_id, room_id, suggested_only, depth)
        rooms, walk = await self._walk_page(who, walk, page_size)
        answer: JsonDict = {"rooms": rooms}
        if walk.stack:
            answer["next_batch"] = self._save(walk)
        return answer

    async def _walk_page(
        self, who: _Requester, walk: _Walk, page_size: int
    ) -> tuple[list[JsonDict], _Walk]:
        stack, processed = list(walk.stack), set(walk.processed)
        rooms: list[JsonDict] = []
        walked = 0
        while stack and len(rooms) < page_size and walked < MAX_WALKED_PER_PAGE:
            entry = stack.pop()
            if entry.room_id in processed:
                continue
            processed.add(entry.room_id)
            walked += 1
            if entry.room_id not in who.local:
                # Everything pending is loaded at once: the siblings pushed together are
                # read in one batch.
                await self._load_local(who, [e.room_id for e in stack] + [entry.room_id])
            room = who.local[entry.room_id]
            described: dict[str, JsonDict] = {}
            if room is None:
                room, described, inaccessible = await self._ask_remote(entry, walk.suggested_only)
                processed |= inaccessible
            if room is None or not self._user_may_see(who, room):
                continue
            rooms.append({**room, "children_state": room.get("children_state", [])})
            if entry.depth >= walk.max_depth or room.get("room_type") != SPACE:
                continue
            children = children_to_walk(room.get("children_state", []), walk.suggested_only)
            stack.extend(
                _Pending(child.room_id, entry.depth + 1, child.via, described.get(child.room_id))
                for child in reversed(children)
                if child.room_id not in processed
            )
        return rooms, _Walk(
            walk.user_id,
            walk.root,
            walk.suggested_only,
            walk.max_depth,
            tuple(stack),
            frozenset(processed),
        )

    async def _ask_remote(
        self, entry: _Pending, suggested_only: bool
    ) -> tuple[JsonDict | None, dict[str, JsonDict], frozenset[str]]:
        """A room this server is not in: what its parent's server said of it, when that is
        complete, else what its `via` servers say (the room, its children, and those the
        asking server may never see)."""
        described = entry.described
        if described is not None and (
            "children_state" in described or described.get("room_type") != SPACE
        ):
            return described, {}, frozenset()
        if self.remote is None or not entry.via:
            return None, {}, frozenset()
        answer = await self.remote.space(entry.room_id, entry.via, suggested_only)
        if answer is None:
            return None, {}, frozenset()
        children = {child["room_id"]: child for child in answer.children}
        return answer.room, children, answer.inaccessible_children

    async def federation_hierarchy(
        self, origin: str, room_id: str, suggested_only: bool = False
    ) -> JsonDict:
        """S-S API GET /hierarchy/{roomId}: the room and those of its children `origin` could
        peek or join; 404 when it could do neither with the room itself."""
        local = await self.local_rooms([room_id])
        room = local.get(room_id)
        if room is None:
            raise NotFound(f"Unknown room {room_id}")
        children = children_to_walk(room["children_state"], suggested_only)
        described = await self.local_rooms([c.room_id for c in children])
        # Which rooms `origin` is in: the rooms themselves, and those their join rules name.
        named = {room_id, *described}
        for described_room in (room, *described.values()):
            named.update(described_room.get("allowed_room_ids", ()))
        joined = await self.storage.rooms.rooms_with_server(named, origin)
        if not may_see(room, joined, joined):
            raise NotFound(f"{origin} may not see room {room_id}")
        accessible, inaccessible = [], []
        for child in children:
            chunk = described.get(child.room_id)
            if chunk is None:
                continue  # not ours to describe (S-S: left out, not inaccessible)
            if may_see(chunk, joined, joined):
                accessible.append(chunk)
            else:
                inaccessible.append(child.room_id)
        return {"room": room, "children": accessible, "inaccessible_children": inaccessible}

    async def local_rooms(self, room_ids: Collection[str]) -> dict[str, JsonDict]:
        """The hierarchy chunks (with children_state) of the rooms this server is in, in a
        fixed number of queries whatever their number."""
        if not room_ids:
            return {}
        ours = await self.storage.rooms.rooms_with_server(set(room_ids), self.server_name)
        summaries = await self.summaries.summaries(ours)
        spaces = [r for r, summary in summaries.items() if summary.room_type == SPACE]
        child_ids = (
            await self.storage.rooms.get_current_state_of_type(spaces, SPACE_CHILD)
            if spaces
            else {}
        )
        events = await self.storage.events.get_events(
            [event_id for by_key in child_ids.values() for event_id in by_key.values()]
        )
        return {
            room_id: _chunk(
                summary,
                ordered_children(
                    _stripped(events[e]) for e in child_ids.get(room_id, {}).values() if e in events
                ),
            )
            for room_id, summary in summaries.items()
        }

    async def _load_local(self, who: _Requester, room_ids: Iterable[str]) -> None:
        wanted = {r for r in room_ids if r not in who.local}
        found = await self.local_rooms(wanted)
        for room_id in wanted:
            who.local[room_id] = found.get(room_id)

    def _user_may_see(self, who: _Requester, room: JsonDict) -> bool:
        if room["room_id"] in who.banned:
            return False
        return may_see(room, who.joined | who.invited, who.joined)

    def _resume(
        self, token: str, user_id: str, root: str, suggested_only: bool, max_depth: int
    ) -> _Walk:
        self._expire()
        saved = self._sessions.get(token)
        walk = saved[1] if saved is not None else None
        if walk is None or (walk.user_id, walk.root) != (user_id, root):
            raise InvalidParam("Unknown pagination token")
        if (walk.suggested_only, walk.max_depth) != (suggested_only, max_depth):
            raise InvalidParam("suggested_only and max_depth cannot change on paginated requests")
        return walk

    def _save(self, walk: _Walk) -> str:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(16)
        self._sessions[token] = (self.clock.time_ms(), walk)
        return token

    def _expire(self) -> None:
        # Sessions are kept in the order they were made, so the expired ones come first.
        oldest = self.clock.time_ms() - SESSION_TTL_MS
        while self._sessions and next(iter(self._sessions.values()))[0] < oldest:
            del self._sessions[next(iter(self._sessions))]


def _chunk(summary: RoomSummary, children_state: list[JsonDict]) -> JsonDict:
    """SpaceHierarchyRoomsChunk of a room this server is in."""
    chunk = summary.described()
    # C-S "Spaces": empty unless the room is a space.
    chunk["children_state"] = children_state if summary.room_type == SPACE else []
    return chunk


def _stripped(event: Event) -> JsonDict:
    """A stripped state event with its origin_server_ts (StrippedChildStateEvent)."""
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": dict(event.content),
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
    }


def _is_valid_child(child: Mapping[str, Any]) -> bool:
    """C-S "Spaces": a child without a non-empty `via` has been removed from the space."""
    content = child.get("content")
    state_key = child.get("state_key")
    if not isinstance(content, dict) or not isinstance(state_key, str):
        return False
    via = content.get("via")
    return (
        state_key.startswith("!")
        and isinstance(via, list)
        and bool(via)
        and all(isinstance(server, str) for server in via)
    )


def _order_key(child: Mapping[str, Any]) -> tuple[int, str, int, str]:
    """C-S "Ordering of children within a space": a valid `order` first (by code point),
    then the event's timestamp, then the room ID."""
    order = child["content"].get("order")
    timestamp = child.get("origin_server_ts")
    ts = timestamp if isinstance(timestamp, int) else 0
    if (
        isinstance(order, str)
        and len(order) <= 50
        and all("\x20" <= character <= "\x7e" for character in order)
    ):
        return (0, order, ts, child["state_key"])
    return (1, "", ts, child["state_key"])


def ordered_children(children_state: Iterable[Mapping[str, Any]]) -> list[JsonDict]:
    """The valid m.space.child events of a space, in the spec's order."""
    return sorted((dict(c) for c in children_state if _is_valid_child(c)), key=_order_key)


def children_to_walk(
    children_state: Iterable[Mapping[str, Any]], suggested_only: bool
) -> list[SpaceChild]:
    return [
        SpaceChild(child["state_key"], tuple(child["content"]["via"]))
        for child in ordered_children(children_state)
        if not suggested_only or child["content"].get("suggested") is True
    ]
