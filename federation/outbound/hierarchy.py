"""FederationHierarchy: asking the servers an m.space.child event names about a space this
server is not in (S-S API "Spaces", GET /hierarchy), for the hierarchy handler. What they
send is checked for shape before a client sees any of it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from federation.discovery import FederationError
from federation.transport import FederationTransport
from homeserver.handlers.hierarchy import SPACE_CHILD, RemoteSpace
from homeserver.handlers.room_summary import MEGOLM
from homeserver.identifiers import is_valid_server_name

logger = logging.getLogger(__name__)

HIERARCHY = "/_matrix/federation/v1/hierarchy"
# The first few `via` servers are enough: the rest are usually the same rooms' members.
MAX_SERVERS_ASKED = 3

JsonDict = dict[str, Any]
_CHILD_EVENT_FIELDS = ("type", "state_key", "content", "sender", "origin_server_ts")
_TEXT_FIELDS = ("name", "topic", "canonical_alias", "avatar_url", "join_rule", "room_type")


class FederationHierarchy:
    def __init__(self, transport: FederationTransport, server_name: str) -> None:
        self.transport = transport
        self.server_name = server_name

    async def space(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> RemoteSpace | None:
        servers = [s for s in dict.fromkeys(via) if s != self.server_name]
        for server in [s for s in servers if is_valid_server_name(s)][:MAX_SERVERS_ASKED]:
            try:
                answer = await self.transport.request(
                    server,
                    "GET",
                    f"{HIERARCHY}/{quote(room_id, safe='')}",
                    query={"suggested_only": "true" if suggested_only else "false"},
                )
            except FederationError as e:
                logger.info("hierarchy room_id=%s server=%s failed: %s", room_id, server, e)
                continue
            space = _parse_answer(room_id, answer)
            if space is not None:
                return space
            logger.info("hierarchy room_id=%s server=%s sent an unusable answer", room_id, server)
        return None


def _parse_answer(room_id: str, answer: Any) -> RemoteSpace | None:
    if not isinstance(answer, dict):
        return None
    room = _room_chunk(answer.get("room"))
    if room is None or room["room_id"] != room_id:
        return None
    children = answer.get("children")
    inaccessible = answer.get("inaccessible_children")
    parsed = [_room_chunk(c) for c in children] if isinstance(children, list) else []
    return RemoteSpace(
        room=room,
        children=tuple(c for c in parsed if c is not None),
        inaccessible_children=frozenset(
            r for r in inaccessible if isinstance(r, str) and r.startswith("!")
        )
        if isinstance(inaccessible, list)
        else frozenset(),
    )


def _room_chunk(raw: Any) -> JsonDict | None:
    """The fields of a SpaceHierarchyRoomsChunk that have the right types (None without the
    required ones); children_state only when the server sent it."""
    if not isinstance(raw, dict):
        return None
    room_id, members = raw.get("room_id"), raw.get("num_joined_members")
    if not (
        isinstance(room_id, str)
        and room_id.startswith("!")
        and isinstance(members, int)
        and not isinstance(members, bool)
        and isinstance(raw.get("world_readable"), bool)
        and isinstance(raw.get("guest_can_join"), bool)
    ):
        return None
    chunk: JsonDict = {
        "room_id": room_id,
        "num_joined_members": members,
        "world_readable": raw["world_readable"],
        "guest_can_join": raw["guest_can_join"],
    }
    chunk.update({k: raw[k] for k in _TEXT_FIELDS if isinstance(raw.get(k), str)})
    if isinstance(raw.get("room_version"), str):
        chunk["room_version"] = raw["room_version"]
    if raw.get("encryption") == MEGOLM:
        chunk["encryption"] = MEGOLM
    allowed = raw.get("allowed_room_ids")
    if isinstance(allowed, list):
        chunk["allowed_room_ids"] = [r for r in allowed if isinstance(r, str) and r.startswith("!")]
    children_state = raw.get("children_state")
    if isinstance(children_state, list):
        chunk["children_state"] = [
            {k: c[k] for k in _CHILD_EVENT_FIELDS} for c in children_state if _is_child_event(c)
        ]
    return chunk


def _is_child_event(raw: Any) -> bool:
    """A StrippedChildStateEvent."""
    return (
        isinstance(raw, dict)
        and raw.get("type") == SPACE_CHILD
        and isinstance(raw.get("state_key"), str)
        and isinstance(raw.get("content"), dict)
        and isinstance(raw.get("sender"), str)
        and isinstance(raw.get("origin_server_ts"), int)
    )
