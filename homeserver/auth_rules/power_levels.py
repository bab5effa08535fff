"""Power levels for the authorization rules: reading m.room.power_levels values per room version
(rooms/fragments/v1-stringy-power-levels.md, v1-floaty-power-levels.md, rooms/v10.md), defaults
(client-server-api m.room.power_levels), v12 creators, and the m.room.power_levels rule.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from homeserver.auth_rules.selection import CREATE_KEY, POWER_LEVELS_KEY
from homeserver.errors import AuthError
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.identifiers import is_valid_user_id

# The integer-valued top-level properties and their defaults when absent (S2S "Definitions";
# client-server-api m.room.power_levels).
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
# With no m.room.power_levels event, the creator has 100 (v1-v11).
_CREATOR_DEFAULT_LEVEL = 100
# v12: room creators' power level is infinitely high.
CREATOR_LEVEL = math.inf

# v1-v9 stringy levels: optional sign, base 10 digits (leading zeroes allowed); surrounding
# whitespace is stripped first.
_STRINGY_INT = re.compile(r"[+-]?[0-9]+")


def parse_power_level(room_version: RoomVersion, value: Any) -> int | None:
    """The integer a power level value stands for in this room version, or None if the value is
    not a power level there. v10+: JSON integers only. v1-v9 also accept integer strings;
    v1-v5 (no strict canonical JSON) also accept finite floats, truncated toward zero."""
    if type(value) is int:  # not bool: True is not a power level
        return value
    if room_version.integer_power_levels:
        return None
    if type(value) is str:
        text = value.strip()
        if _STRINGY_INT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond Python's int-from-str digit limit
                return None
        return None
    if type(value) is float and not room_version.strict_canonical_json and math.isfinite(value):
        return int(value)
    return None


def _int_or_raise(room_version: RoomVersion, value: Any, key: str, entry: str | None = None) -> int:
    level = parse_power_level(room_version, value)
    if level is None:
        where = key if entry is None else f"{key}[{entry!r}]"
        raise AuthError(f"m.room.power_levels has an invalid power level in {where}: {value!r}")
    return level


def _optional_level(room_version: RoomVersion, content: Mapping[str, Any], key: str) -> int | None:
    # A JSON null reads as an absent key, as Synapse reads it.
    value = content.get(key)
    return None if value is None else _int_or_raise(room_version, value, key)


def _level_map(content: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = content.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AuthError(f"m.room.power_levels has a non-object {key!r}")
    return value


def required_power_level(
    room_version: RoomVersion,
    event_type: str,
    state_key: str | None,
    power_levels_content: Mapping[str, Any] | None,
) -> int:
    """The *required power level* of an event type (S2S "Definitions"): `events[type]`, else
    `state_default` (50) for state events or `events_default` (0) for others."""
    default_key = "events_default" if state_key is None else "state_default"
    if power_levels_content is None:
        return NAMED_LEVEL_DEFAULTS[default_key]
    value = _level_map(power_levels_content, "events").get(event_type)
    if value is not None:
        return _int_or_raise(room_version, value, "events", event_type)
    level = _optional_level(room_version, power_levels_content, default_key)
    return NAMED_LEVEL_DEFAULTS[default_key] if level is None else level


def room_creator(create: Event) -> str | None:
    """The room creator the join rule (x.3.1) and the default power levels name:
    `content.creator` before v11, the create event's sender from v11."""
    if create.room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def additional_creators(create: Event) -> list[str]:
    """v12 `additional_creators`; the create event's own rule 1.4 has validated them."""
    value = create.content.get("additional_creators")
    return value if isinstance(value, list) else []


class PowerLevels:
    """The power levels in force for one auth check: the create event and the current
    m.room.power_levels content (None when the room has none). Values are parsed on demand,
    so a check reads only the few entries it needs."""

    __slots__ = ("content", "create", "room_version")

    def __init__(self, create: Event, power_levels: Event | None) -> None:
        self.room_version = create.room_version
        self.create = create
        self.content = power_levels.content if power_levels is not None else None

    def is_creator(self, user_id: str) -> bool:
        """v12 room creators: the create event's sender and its `additional_creators`."""
        return user_id == self.create.sender or user_id in additional_creators(self.create)

    def user_level(self, user_id: str) -> int | float:
        if self.room_version.privileged_creators and self.is_creator(user_id):
            return CREATOR_LEVEL
        content = self.content
        if content is None:
            # v1-v11 without power levels: the creator has 100, everyone else 0. (v12 creators
            # returned above; there everyone else has 0.)
            if user_id == room_creator(self.create):
                return _CREATOR_DEFAULT_LEVEL
            return NAMED_LEVEL_DEFAULTS["users_default"]
        value = _level_map(content, "users").get(user_id)
        if value is not None:
            return _int_or_raise(self.room_version, value, "users", user_id)
        return self.named_level("users_default")

    def named_level(self, name: str) -> int:
        """`invite`, `kick`, `ban`, `redact` or a `*_default`, with its default when absent."""
        if self.content is not None:
            level = _optional_level(self.room_version, self.content, name)
            if level is not None:
                return level
        return NAMED_LEVEL_DEFAULTS[name]

    def required_level(self, event_type: str, state_key: str | None) -> int:
        return required_power_level(self.room_version, event_type, state_key, self.content)


def user_power_level(user_id: str, auth_state: Mapping[StateKey, Event]) -> int | float:
    """A user's power level given the room's create and m.room.power_levels state (v12
    creators: math.inf). Raises AuthError when the create event is missing."""
    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no m.room.create event in the auth state")
    return PowerLevels(create, auth_state.get(POWER_LEVELS_KEY)).user_level(user_id)


def check_power_levels_event(
    event: Event, levels: PowerLevels, sender_level: float, rule: int
) -> None:
    """The m.room.power_levels rule (rule 10 of v1-v5 and v12, rule 9 of v6-v11); `levels`
    holds the previous power levels, `rule` the top-level rule number for messages."""
    rv = event.room_version
    content = event.content
    # Sub-rule numbers move: v10 inserts two type checks, v12 one creators check.
    shift = (2 if rv.integer_power_levels else 0) + (1 if rv.privileged_creators else 0)
    if rv.integer_power_levels:
        for key in NAMED_LEVEL_DEFAULTS:
            if key in content and type(content[key]) is not int:
                raise AuthError(f"{rule}.1: {key!r} is not an integer")
        for key in ("events", "notifications"):
            if key in content and not _is_int_map(content[key]):
                raise AuthError(f"{rule}.2: {key!r} is not an object of integers")
    users_rule = 3 if rv.integer_power_levels else 1
    users = content.get("users", {})
    if not isinstance(users, Mapping):
        raise AuthError(f"{rule}.{users_rule}: 'users' is not an object")
    for user_id, value in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(f"{rule}.{users_rule}: 'users' key {user_id!r} is not a user ID")
        if type(value) is not int and parse_power_level(rv, value) is None:
            raise AuthError(f"{rule}.{users_rule}: users[{user_id!r}] is not an integer")
    if rv.privileged_creators:
        create = levels.create
        for creator in (create.sender, *additional_creators(create)):
            if creator in users:
                raise AuthError(f"{rule}.4: room creator {creator} is listed in 'users'")
    old = levels.content
    if old is None:
        return  # No previous m.room.power_levels event: allow.
    named_rule = f"{rule}.{3 + shift}"
    for key in NAMED_LEVEL_DEFAULTS:
        old_level = _optional_level(rv, old, key)
        new_level = _optional_level(rv, content, key)
        if old_level == new_level:
            continue
        if old_level is not None and old_level > sender_level:
            raise AuthError(f"{named_rule}.1: current {key!r} is above the sender's level")
        if new_level is not None and new_level > sender_level:
            raise AuthError(f"{named_rule}.2: new {key!r} is above the sender's level")
    # v6+ (MSC2209): `notifications` follows the same rules as `events`.
    for key in ("events", "notifications") if rv.limit_notifications_power_levels else ("events",):
        _check_map_changes(rv, key, old, content, sender_level, None, rule, 4 + shift)
    _check_map_changes(rv, "users", old, content, sender_level, event.sender, rule, 6 + shift)


def _is_int_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(type(v) is int for v in value.values())


def _check_map_changes(
    rv: RoomVersion,
    key: str,
    old_content: Mapping[str, Any],
    new_content: Mapping[str, Any],
    sender_level: float,
    sender: str | None,
    rule: int,
    removed_sub: int,
) -> None:
    """Entries changed in or removed from `key` must not be above the sender's level (`users`:
    must be below it, except the sender's own entry); entries added or changed must not end up
    above it. `removed_sub` numbers the first of the two sub-rules; the other one follows."""
    old_map = _level_map(old_content, key)
    new_map = _level_map(new_content, key)
    for entry in old_map.keys() | new_map.keys():
        old_value = old_map.get(entry)
        new_value = new_map.get(entry)
        # Fast path: most entries are unchanged integers.
        if type(old_value) is int and type(new_value) is int and old_value == new_value:
            continue
        old_level = None if old_value is None else _int_or_raise(rv, old_value, key, entry)
        new_level = None if new_value is None else _int_or_raise(rv, new_value, key, entry)
        if old_level == new_level:
            continue
        if old_level is not None:
            if sender is None:
                if old_level > sender_level:
                    raise AuthError(
                        f"{rule}.{removed_sub}.1: current {key}[{entry!r}] is above the sender's "
                        "level"
                    )
            elif entry != sender and old_level >= sender_level:
                raise AuthError(
                    f"{rule}.{removed_sub}.1: current {key}[{entry!r}] is not below the sender's "
                    "level"
                )
        if new_level is not None and new_level > sender_level:
            raise AuthError(
                f"{rule}.{removed_sub + 1}.1: new {key}[{entry!r}] is above the sender's level"
            )
