"""Server ACLs (S-S API "Server Access Control Lists (ACLs)"; the m.room.server_acl event):
whether a server may take part in a room, checked on every protected inbound endpoint and,
per PDU and per room-scoped EDU, on /send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.discovery import ip_literal
from homeserver.errors import Forbidden
from homeserver.storage import Storage

SERVER_ACL = "m.room.server_acl"


def server_acl_allows(content: Mapping[str, Any], server_name: str) -> bool:
    """The event's rules, in its order, for `server_name` (its port not considered)."""
    host = _without_port(server_name).lower()
    if content.get("allow_ip_literals") is False and _is_ip_literal(host):
        return False
    if any(glob_matches(p, host) for p in _patterns(content.get("deny"))):
        return False
    return any(glob_matches(p, host) for p in _patterns(content.get("allow")))


async def is_server_allowed(storage: Storage, room_id: str, server_name: str) -> bool:
    """Whether the room's current m.room.server_acl lets `server_name` in (rule 1: a room
    without one lets everyone in)."""
    event_id = await storage.rooms.get_current_state_event_id(room_id, SERVER_ACL, "")
    if event_id is None:
        return True
    event = await storage.events.get_event(event_id)
    return event is None or server_acl_allows(event.content, server_name)


async def require_server_allowed(storage: Storage, room_id: str, server_name: str) -> None:
    """403 M_FORBIDDEN for a server the room's ACL denies."""
    if not await is_server_allowed(storage, room_id, server_name):
        raise Forbidden(f"Server {server_name} is denied by the room's server ACL")


def glob_matches(pattern: str, value: str) -> bool:
    """Appendices "Glob-style matching" (`*` any run, `?` one character), case-insensitive,
    in O(len(pattern) * len(value)): no regular expression that could backtrack without end."""
    pattern, value = pattern.lower(), value.lower()
    p = v = 0
    star, star_v = -1, 0
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star, star_v = p, v
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", value[v]):
            p += 1
            v += 1
        elif star >= 0:
            # Let the last `*` swallow one more character and retry from there.
            star_v += 1
            p, v = star + 1, star_v
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _patterns(value: Any) -> list[str]:
    # Entries that are not strings are ignored; a missing list is empty ("allow" then
    # denies everyone, as the event's description warns).
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _without_port(server_name: str) -> str:
    if server_name.startswith("["):
        return server_name[: server_name.find("]") + 1] or server_name
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        return ip_literal(host) is not None
    except ValueError:
        return False
