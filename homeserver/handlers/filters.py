"""Filters (C-S API "Filtering"; definitions/sync_filter.yaml, event_filter.yaml,
room_event_filter.yaml): parsing and validating them, storing them per user, and matching
events against them."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.errors import BadJson, Codes, Forbidden, MatrixError, NotFound
from homeserver.events.event import Event
from homeserver.glob import glob_any
from homeserver.lru import LruCache
from homeserver.storage.stores.filters import FiltersStore

# Timeline events per room when the filter names no limit, and the most we serve whatever
# the filter asks (the spec leaves both to the server; these are Synapse's defaults).
DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 100


@dataclass(frozen=True)
class EventFilter:
    """event_filter.yaml. None for `types`/`senders` means "all"; an empty list means none."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    def matches(self, event_type: str, sender: str | None) -> bool:
        """Whether an event of `event_type` sent by `sender` passes; events without a sender
        (account data, ephemeral events) are only checked for their type."""
        if self.not_types and glob_any(self.not_types, event_type):
            return False
        if self.types is not None and not glob_any(self.types, event_type):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        return True

    def filter_json(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The events (client-format dicts) that pass, at most `limit` of them."""
        kept = [
            e for e in events if self.matches(str(e.get("type", "")), _str_or_none(e.get("sender")))
        ]
        return kept if self.limit is None else kept[: self.limit]

    @property
    def is_noop(self) -> bool:
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
        )


@dataclass(frozen=True)
class RoomEventFilter(EventFilter):
    """room_event_filter.yaml: an EventFilter plus rooms and the /sync-only switches."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def matches_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches_event(self, event: Event) -> bool:
        if not self.matches(event.type, event.sender):
            return False
        if self.contains_url is not None:
            has_url = isinstance(event.content.get("url"), str)
            return has_url == self.contains_url
        return True


@dataclass(frozen=True)
class SyncFilter:
    """sync_filter.yaml. Room-level `rooms`/`not_rooms` apply before the per-section filters."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: RoomEventFilter = RoomEventFilter()
    state: RoomEventFilter = RoomEventFilter()
    ephemeral: RoomEventFilter = RoomEventFilter()
    room_account_data: RoomEventFilter = RoomEventFilter()

    def room_allowed(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit
        return DEFAULT_TIMELINE_LIMIT if limit is None else min(limit, MAX_TIMELINE_LIMIT)


DEFAULT_FILTER = SyncFilter()


# --- parsing ---------------------------------------------------------------------------------


def _invalid(path: str, why: str) -> BadJson:
    return BadJson(f"Invalid filter: {path} {why}")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _string_list(
    obj: Mapping[str, Any], key: str, path: str, prefix: str | None = None
) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{path}.{key}", "must be a list of strings")
    if prefix is not None and not all(v.startswith(prefix) for v in value):
        raise _invalid(f"{path}.{key}", f"entries must start with {prefix!r}")
    return tuple(value)


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid(f"{path}.{key}", "must be a boolean")
    return value


def _object(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{path}.{key}", "must be an object")
    return value


def _event_filter_args(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    limit = obj.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise _invalid(f"{path}.limit", "must be a non-negative integer")
    return {
        "limit": limit,
        "types": _string_list(obj, "types", path),
        "not_types": _string_list(obj, "not_types", path) or (),
        "senders": _string_list(obj, "senders", path, "@"),
        "not_senders": _string_list(obj, "not_senders", path, "@") or (),
    }


def parse_event_filter(obj: Mapping[str, Any], path: str) -> EventFilter:
    return EventFilter(**_event_filter_args(obj, path))


def parse_room_event_filter(obj: Mapping[str, Any], path: str) -> RoomEventFilter:
    return RoomEventFilter(
        **_event_filter_args(obj, path),
        rooms=_string_list(obj, "rooms", path, "!"),
        not_rooms=_string_list(obj, "not_rooms", path, "!") or (),
        contains_url=_bool(obj, "contains_url", path),
        lazy_load_members=bool(_bool(obj, "lazy_load_members", path)),
        include_redundant_members=bool(_bool(obj, "include_redundant_members", path)),
        unread_thread_notifications=bool(_bool(obj, "unread_thread_notifications", path)),
    )


def parse_filter(obj: Any) -> SyncFilter:
    """A filter definition (a JSON object) checked against sync_filter.yaml; 400 M_BAD_JSON
    naming the first offending field. Unknown fields are ignored, as in every Matrix object."""
    if not isinstance(obj, dict):
        raise BadJson("Invalid filter: must be a JSON object")
    event_format = obj.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise _invalid("event_format", "must be 'client' or 'federation'")
    room = _object(obj, "room", "filter")
    return SyncFilter(
        event_fields=_string_list(obj, "event_fields", "filter"),
        event_format=event_format,
        presence=parse_event_filter(_object(obj, "presence", "filter"), "presence"),
        account_data=parse_event_filter(_object(obj, "account_data", "filter"), "account_data"),
        rooms=_string_list(room, "rooms", "room", "!"),
        not_rooms=_string_list(room, "not_rooms", "room", "!") or (),
        include_leave=bool(_bool(room, "include_leave", "room")),
        timeline=parse_room_event_filter(_object(room, "timeline", "room"), "room.timeline"),
        state=parse_room_event_filter(_object(room, "state", "room"), "room.state"),
        ephemeral=parse_room_event_filter(_object(room, "ephemeral", "room"), "room.ephemeral"),
        room_account_data=parse_room_event_filter(
            _object(room, "account_data", "room"), "room.account_data"
        ),
    )


# --- event_fields ----------------------------------------------------------------------------


def _split_path(path: str) -> list[str]:
    # Appendices "Dot-separated property paths": `\.` is a literal dot, `\\` a backslash.
    parts, current, chars = [], [], iter(path)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def field_projector(
    event_fields: Sequence[str] | None,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function keeping only `event_fields` of a serialised event (sync_filter.yaml
    `event_fields`); the identity when the filter names none."""
    if event_fields is None:
        return lambda event: event
    paths = [_split_path(p) for p in event_fields]

    def project(event: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for parts in paths:
            source: Any = event
            for part in parts:
                if not isinstance(source, dict) or part not in source:
                    break
                source = source[part]
            else:
                target = out
                for part in parts[:-1]:
                    target = target.setdefault(part, {})
                target[parts[-1]] = source
        return out

    return project


# --- the handler -----------------------------------------------------------------------------


class FilterHandler:
    def __init__(self, store: FiltersStore, server_name: str) -> None:
        self.store = store
        self.server_name = server_name
        # Stored filters never change, so parsed ones are kept: a long-polling client names
        # its filter in every request.
        self._parsed: LruCache[tuple[str, int], SyncFilter] = LruCache(10_000)
        self._inline: LruCache[str, SyncFilter] = LruCache(1_000)

    def _check_owner(self, requester_id: str, user_id: str) -> None:
        if requester_id != user_id:
            raise Forbidden("Cannot use filters of other users")
        if not user_id.endswith(":" + self.server_name):
            raise Forbidden("Can only use filters of local users")

    async def create_filter(self, requester_id: str, user_id: str, definition: Any) -> str:
        self._check_owner(requester_id, user_id)
        parsed = parse_filter(definition)
        filter_id = await self.store.add_filter(
            user_id, encode_canonical_json(definition).decode("utf-8")
        )
        self._parsed.put((user_id, filter_id), parsed)
        return str(filter_id)

    async def get_filter(self, requester_id: str, user_id: str, filter_id: str) -> Any:
        """The definition as uploaded; 404 M_NOT_FOUND for an unknown ID."""
        self._check_owner(requester_id, user_id)
        number = _filter_number(filter_id)
        raw = None if number is None else await self.store.get_filter(user_id, number)
        if raw is None:
            raise NotFound("No such filter")
        return json.loads(raw)

    async def filter_for_sync(self, user_id: str, param: str | None) -> SyncFilter:
        """The `filter` query parameter of /sync: a filter ID or, when it starts with `{`, an
        inline definition (sync.yaml). 400 M_NOT_JSON / M_BAD_JSON for bad inline JSON,
        400 M_INVALID_PARAM for an unknown ID."""
        if param is None:
            return DEFAULT_FILTER
        if param.startswith("{"):
            inline = self._inline.get_hit(param)
            if inline is not None:
                return inline
            try:
                definition = json.loads(param)
            except ValueError:
                raise MatrixError("Filter is not valid JSON", Codes.NOT_JSON) from None
            inline = parse_filter(definition)
            # A client sends the same inline filter with every sync.
            self._inline.put(param, inline)
            return inline
        number = _filter_number(param)
        if number is None:
            raise MatrixError("No such filter", Codes.INVALID_PARAM)
        cached = self._parsed.get_hit((user_id, number))
        if cached is not None:
            return cached
        raw = await self.store.get_filter(user_id, number)
        if raw is None:
            raise MatrixError("No such filter", Codes.INVALID_PARAM)
        parsed = parse_filter(json.loads(raw))
        self._parsed.put((user_id, number), parsed)
        return parsed


def _filter_number(filter_id: str) -> int | None:
    # IDs we hand out are decimal; anything else cannot name a stored filter. Bounded so the
    # value fits a BIGINT.
    if not filter_id.isdigit() or not filter_id.isascii() or len(filter_id) > 18:
        return None
    return int(filter_id)
