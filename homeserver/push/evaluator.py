"""The push rule evaluator (C-S API "Push Rules", "Conditions", "Actions"): a user's rule set
compiled once into matchers, then run over events with the facts about their room that are
read once per event for all of its local members."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.auth_rules.power_levels import PowerLevels, parse_power_level
from homeserver.errors import AuthError

JsonDict = dict[str, Any]
# Appendix "Glob-style matching" is about `*` and `?` only; a run of `*` means the same as one.
_STARS = re.compile(r"\*+")
_MEMBER_COUNT = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")
# C-S API "Conditions": a word boundary is the start or end of the value or a character not
# in [A-Za-z0-9_].
_BOUNDARY_BEFORE = r"(?:^|(?<=[^A-Za-z0-9_]))"
_BOUNDARY_AFTER = r"(?:$|(?=[^A-Za-z0-9_]))"
# Actions of older spec versions that clients and servers must ignore ("Historical Actions").
_HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
_MAX_SAFE_INT = 2**53 - 1


@dataclass(frozen=True)
class RoomFacts:
    """What conditions need to know of the room an event is in, as it was before the event."""

    member_count: int
    power_levels: PowerLevels | None
    # Local members' display names in the room (only read when a rule set asks for them).
    display_names: Mapping[str, str]


Condition = Callable[[JsonDict, RoomFacts, str], bool]  # (event, room, rule owner) -> match


@dataclass(frozen=True)
class Outcome:
    """The actions of the first rule that matched, and what they mean for counts."""

    actions: list[Any]
    notify: bool
    highlight: bool


@dataclass(frozen=True)
class _CompiledRule:
    rule_id: str
    conditions: tuple[Condition, ...]
    outcome: Outcome


class CompiledRuleset:
    """One user's enabled rules in evaluation order (override, content, room, sender,
    underride), each a list of matchers."""

    def __init__(self, user_id: str, ruleset: Mapping[str, Sequence[JsonDict]]) -> None:
        self.user_id = user_id
        self.uses_display_names = False
        self._rules: list[_CompiledRule] = []
        for kind in ("override", "content", "room", "sender", "underride"):
            for rule in ruleset.get(kind, ()):
                if rule.get("enabled", True):
                    self._rules.append(self._compile(kind, rule))

    def _compile(self, kind: str, rule: JsonDict) -> _CompiledRule:
        rule_id = str(rule["rule_id"])
        conditions: list[Condition]
        if kind == "content":
            pattern = rule.get("pattern")
            conditions = [
                _event_match("content.body", pattern) if isinstance(pattern, str) else _never
            ]
        elif kind == "room":
            conditions = [lambda event, _room, _user: event.get("room_id") == rule_id]
        elif kind == "sender":
            conditions = [lambda event, _room, _user: event.get("sender") == rule_id]
        else:
            conditions = [self._condition(c) for c in rule.get("conditions") or ()]
        return _CompiledRule(rule_id, tuple(conditions), outcome_of(rule.get("actions") or []))

    def _condition(self, condition: Any) -> Condition:
        if not isinstance(condition, dict):
            return _never
        kind = condition.get("kind")
        key = condition.get("key")
        if kind == "event_match" and isinstance(key, str):
            return _event_match(key, condition.get("pattern"))
        if kind == "event_property_is" and isinstance(key, str):
            return _property_is(key, condition.get("value"))
        if kind == "event_property_contains" and isinstance(key, str):
            return _property_contains(key, condition.get("value"))
        if kind == "contains_display_name":
            self.uses_display_names = True
            return _contains_display_name
        if kind == "room_member_count":
            return _member_count(condition.get("is"))
        if kind == "sender_notification_permission" and isinstance(key, str):
            return _sender_permission(key)
        # "Unrecognised conditions MUST NOT match any events".
        return _never

    def evaluate(self, event: JsonDict, room: RoomFacts) -> Outcome | None:
        """The outcome of the first enabled rule whose conditions all hold; None when no rule
        matches."""
        for rule in self._rules:
            if all(c(event, room, self.user_id) for c in rule.conditions):
                return rule.outcome
        return None


def outcome_of(actions: Sequence[Any]) -> Outcome:
    kept = [a for a in actions if not (isinstance(a, str) and a in _HISTORICAL_ACTIONS)]
    highlight = any(
        isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True) is True
        for a in kept
    )
    return Outcome(kept, "notify" in kept, highlight)


def split_key(key: str) -> list[str]:
    """Appendix "Dot-separated property paths": `.` separates, `\\.` and `\\\\` escape."""
    parts, current, chars = [], [], iter(key)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            if following in (".", "\\"):
                current.append(following)
            else:
                current.append(char + following)
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_MISSING = object()


def _lookup(event: JsonDict, path: Sequence[str]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _glob_regex(pattern: str, word_boundaries: bool) -> re.Pattern[str]:
    body = "".join(
        ".*" if piece == "*" else "." if piece == "?" else re.escape(piece)
        for piece in re.split(r"(\*|\?)", _STARS.sub("*", pattern))
        if piece
    )
    if word_boundaries:
        body = f"{_BOUNDARY_BEFORE}{body}{_BOUNDARY_AFTER}"
    else:
        body = f"^{body}$"
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def _event_match(key: str, pattern: Any) -> Condition:
    if not isinstance(pattern, str):
        return _never
    path = split_key(key)
    # "As a special case, if key is content.body", any substring between word boundaries.
    regex = _glob_regex(pattern, word_boundaries=key == "content.body")

    def matches(event: JsonDict, _room: RoomFacts, _user: str) -> bool:
        value = _lookup(event, path)
        return isinstance(value, str) and regex.search(value) is not None

    return matches


def _is_simple(value: Any) -> bool:
    """Non-compound canonical JSON values: strings, safe integers, booleans and null."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same(a: Any, b: Any) -> bool:
    # Exact: no casts, and `True == 1` in Python must not count.
    return type(a) is type(b) and a == b


def _property_is(key: str, expected: Any) -> Condition:
    if not _is_simple(expected):
        return _never
    path = split_key(key)

    def matches(event: JsonDict, _room: RoomFacts, _user: str) -> bool:
        value = _lookup(event, path)
        return value is not _MISSING and _is_simple(value) and _same(value, expected)

    return matches


def _property_contains(key: str, expected: Any) -> Condition:
    if not _is_simple(expected):
        return _never
    path = split_key(key)

    def matches(event: JsonDict, _room: RoomFacts, _user: str) -> bool:
        values = _lookup(event, path)
        return isinstance(values, list) and any(
            _is_simple(v) and _same(v, expected) for v in values
        )

    return matches


def _contains_display_name(event: JsonDict, room: RoomFacts, user_id: str) -> bool:
    name = room.display_names.get(user_id)
    body = _lookup(event, ("content", "body"))
    if not name or not isinstance(body, str):
        return False
    pattern = f"{_BOUNDARY_BEFORE}{re.escape(name)}{_BOUNDARY_AFTER}"
    return re.search(pattern, body, re.IGNORECASE) is not None


def _member_count(spec: Any) -> Condition:
    match = _MEMBER_COUNT.match(spec) if isinstance(spec, str) else None
    if match is None:
        return _never
    operator, number = match.group(1) or "==", int(match.group(2))
    compare: Callable[[int], bool] = {
        "==": lambda n: n == number,
        "<": lambda n: n < number,
        ">": lambda n: n > number,
        "<=": lambda n: n <= number,
        ">=": lambda n: n >= number,
    }[operator]
    return lambda _event, room, _user: compare(room.member_count)


def _sender_permission(key: str) -> Condition:
    def matches(event: JsonDict, room: RoomFacts, _user: str) -> bool:
        levels = room.power_levels
        sender = event.get("sender")
        if levels is None or not isinstance(sender, str):
            return False
        notifications = (levels.content or {}).get("notifications")
        raw = notifications.get(key) if isinstance(notifications, dict) else None
        # m.room.power_levels: `notifications.room` defaults to 50.
        required = parse_power_level(levels.room_version, raw)
        try:
            return levels.user_level(sender) >= (50 if required is None else required)
        except AuthError:
            # Power levels the auth rules accepted never get here; a bad value must not
            # fail the transaction storing the event, so it just does not notify.
            return False

    return matches


def _never(_event: JsonDict, _room: RoomFacts, _user: str) -> bool:
    return False
