"""Reading relationships (C-S API "Relationships", "Threading"): the children of an event
(/relations, with recursion) and a room's threads (/threads), filtered by history visibility;
and the send-time checks on new relationships ("Avoiding duplicate annotations", "Validation
of m.thread relationships").

Pagination tokens are /messages' topological tokens (room_reads.topo_token), so a token from
/messages or /sync works here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.errors import InvalidParam, MatrixError, NotFound
from homeserver.events.event import Event
from homeserver.handlers.client_events import ClientEventSerializer
from homeserver.handlers.room_reads import parse_token, topo_token
from homeserver.handlers.sync_rooms import IgnoredUsers, shown_despite_ignoring
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.storage import Storage
from homeserver.storage.stores.relations import ANNOTATION, THREAD, relation_of

# How many relationships deep `recurse` follows (the spec asks for at least 3).
RECURSION_DEPTH = 3
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"


def _position(token: str | None) -> tuple[int | None, int] | None:
    if token is None:
        return None
    pos = parse_token(token)
    return (pos.depth, pos.stream)


async def check_new_relation(
    storage: Storage, room_id: str, sender: str, event_type: str, content: Mapping[str, Any]
) -> None:
    """400 for a relationship the server refuses to send: a second identical annotation from
    the same user (unless the first was redacted, which dropped it from the index), or a thread
    rooted at an event that has a relationship itself."""
    rel = relation_of(content)
    if rel is None:
        return
    if rel.rel_type == ANNOTATION and rel.aggregation_key is not None:
        if await storage.relations.has_annotation(
            rel.relates_to_id, sender, event_type, rel.aggregation_key
        ):
            raise MatrixError("You have already sent this annotation", DUPLICATE_ANNOTATION, 400)
    elif rel.rel_type == THREAD:
        parent = await storage.events.get_event(rel.relates_to_id)
        if parent is not None and parent.room_id == room_id and relation_of(parent.content):
            raise MatrixError("Cannot start a thread from an event with a relation", status=400)


def annotation_lock_key(sender: str, event_type: str, content: Mapping[str, Any]) -> str | None:
    """What identical annotations share ("Avoiding duplicate annotations"): the sender, event
    type, target and key; None for an event that is not an annotation."""
    rel = relation_of(content)
    if rel is None or rel.rel_type != ANNOTATION or rel.aggregation_key is None:
        return None
    return "\x00".join((sender, event_type, rel.relates_to_id, rel.aggregation_key))


class RelationsHandler:
    def __init__(
        self,
        storage: Storage,
        visibility: HistoryVisibility,
        serializer: ClientEventSerializer,
    ) -> None:
        self.storage = storage
        self.visibility = visibility
        self.serializer = serializer
        # Set where account data is built (core.py); without it nobody is ignored.
        self.ignored: IgnoredUsers | None = None

    async def relations(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        limit: int,
        forwards: bool,
        recurse: bool,
    ) -> dict[str, Any]:
        await self._require_visible(user_id, room_id, parent_id)
        limit = max(1, min(limit, MAX_LIMIT))
        rows = await self.storage.relations.get_children(
            room_id,
            parent_id,
            rel_type=rel_type,
            event_type=event_type,
            max_depth=RECURSION_DEPTH if recurse else 1,
            forwards=forwards,
            from_pos=_position(from_token),
            to_pos=_position(to_token),
            limit=limit + 1,
        )
        page = rows[:limit]
        events = await self.storage.events.get_events(r.event_id for r in page)
        body: dict[str, Any] = {
            "chunk": await self._serialize_visible(
                user_id, device_id, [events[r.event_id] for r in page if r.event_id in events]
            )
        }
        if len(rows) > limit:
            last = page[-1]
            # A token stands just after an event: going backwards, the next page starts just
            # before the last one shown.
            stream = last.stream_ordering if forwards else last.stream_ordering - 1
            body["next_batch"] = topo_token(last.depth, stream)
        if from_token is not None:
            body["prev_batch"] = from_token
        if recurse:
            body["recursion_depth"] = RECURSION_DEPTH
        return body

    async def threads(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        *,
        participated: bool,
        from_token: str | None,
        limit: int,
    ) -> dict[str, Any]:
        await self.visibility.require_timeline_access(user_id, room_id)
        before: tuple[int, int] | None = None
        if from_token is not None:
            pos = parse_token(from_token)
            if pos.depth is None:
                raise InvalidParam("from is not a token from /threads")
            before = (pos.depth, pos.stream)
        limit = min(limit, MAX_LIMIT)
        rows = await self.storage.relations.list_threads(
            room_id,
            participant=user_id if participated else None,
            before=before,
            limit=limit + 1,
        )
        page = rows[:limit]
        roots = await self.storage.events.get_events(t.thread_id for t in page)
        # Threads started by ignored users are left out, as their messages are from /sync.
        ignored = await self.ignored.ignored_users(user_id) if self.ignored else frozenset()
        shown = [
            roots[t.thread_id]
            for t in page
            if t.thread_id in roots and shown_despite_ignoring(roots[t.thread_id], ignored)
        ]
        body: dict[str, Any] = {"chunk": await self._serialize_visible(user_id, device_id, shown)}
        if len(rows) > limit:
            last = page[-1]
            body["next_batch"] = topo_token(last.latest_depth, last.latest_stream - 1)
        return body

    async def _require_visible(self, user_id: str, room_id: str, event_id: str) -> None:
        """404 both for an unknown parent and one the user may not see (relations.yaml)."""
        not_found = NotFound("Event not found")
        access = await self.visibility.room_access(user_id, room_id)
        if not access.can_read_timeline:
            raise not_found
        event = await self.storage.events.get_event(event_id)
        if event is None or event.room_id != room_id:
            raise not_found
        if not (await self.visibility.filter_events(user_id, [event])).events:
            raise not_found

    async def _serialize_visible(
        self, user_id: str, device_id: str | None, events: list[Event]
    ) -> list[dict[str, Any]]:
        seen = await self.visibility.filter_events(user_id, events)
        return await self.serializer.serialize(
            seen.events, user_id=user_id, device_id=device_id, memberships=seen.memberships
        )
