"""The push rule evaluator (C-S API "Push Rules", "Conditions", "Actions"): a user's rule set
compiled once into matchers, then run over events with the facts about their room that are
read once per event for all of its local members."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
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


# A condition that holds or not whatever user the rule set is evaluated for.
SharedCondition = Callable[[JsonDict, RoomFacts], bool]
# A condition naming the user it is evaluated for (their ID, their display name): the
# subset of the candidate users it holds for, found without a loop over every candidate
# where it can be.
UserCondition = Callable[[JsonDict, RoomFacts, AbstractSet[str]], AbstractSet[str]]


@dataclass(frozen=True)
class Outcome:
    """The actions of the first rule that matched, and what they mean for counts."""

    actions: list[Any]
    notify: bool
    highlight: bool


@dataclass(frozen=True)
class _CompiledRule:
    rule_id: str
    shared: tuple[SharedCondition, ...]
    per_user: tuple[_PerUser, ...]
    outcome: Outcome


class CompiledRuleset:
    """Enabled rules in evaluation order (override, content, room, sender, underride), each
    a list of matchers, for `owner`: a user's Matrix ID, or default_rules.USER_ID for the
    server-default rule set that every user without changes of their own shares.

    Conditions on the owner's ID or display name are evaluated for a set of users at once,
    the others once per event: a message in a room of a thousand members costs one pass
    over the default rules plus set operations, not a thousand passes."""

    def __init__(self, owner: str, ruleset: Mapping[str, Sequence[JsonDict]]) -> None:
        self.owner = owner
        self.uses_display_names = False
        self._rules: list[_CompiledRule] = []
        for kind in ("override", "content", "room", "sender", "underride"):
            for rule in ruleset.get(kind, ()):
                if rule.get("enabled", True):
                    self._rules.append(self._compile(kind, rule))

    def _compile(self, kind: str, rule: JsonDict) -> _CompiledRule:
        rule_id = str(rule["rule_id"])
        conditions: list[SharedCondition | _PerUser]
        if kind == "content":
            pattern = rule.get("pattern")
            conditions = [self._event_match("content.body", pattern)]
        elif kind == "room":
            conditions = [lambda event, _room: event.get("room_id") == rule_id]
        elif kind == "sender":
            conditions = [lambda event, _room: event.get("sender") == rule_id]
        else:
            conditions = [self._condition(c) for c in rule.get("conditions") or ()]
        shared = tuple(c for c in conditions if not isinstance(c, _PerUser))
        per_user = tuple(c for c in conditions if isinstance(c, _PerUser))
        return _CompiledRule(rule_id, shared, per_user, outcome_of(rule.get("actions") or []))

    def _condition(self, condition: Any) -> SharedCondition | _PerUser:
        if not isinstance(condition, dict):
            return _never
        kind = condition.get("kind")
        key = condition.get("key")
        if kind == "event_match" and isinstance(key, str):
            return self._event_match(key, condition.get("pattern"))
        if kind == "event_property_is" and isinstance(key, str):
            return _property_is(key, condition.get("value"))
        if kind == "event_property_contains" and isinstance(key, str):
            value = condition.get("value")
            if value == self.owner:
                return _PerUser(_contains_user(key))
            return _property_contains(key, value)
        if kind == "contains_display_name":
            self.uses_display_names = True
            return _PerUser(_contains_display_name)
        if kind == "room_member_count":
            return _member_count(condition.get("is"))
        if kind == "sender_notification_permission" and isinstance(key, str):
            return _sender_permission(key)
        # "Unrecognised conditions MUST NOT match any events".
        return _never

    def _event_match(self, key: str, pattern: Any) -> SharedCondition | _PerUser:
        if not isinstance(pattern, str):
            return _never
        if pattern == self.owner:
            return _PerUser(_matches_user(key))
        return _event_match(key, pattern)

    def evaluate_split(
        self, event: JsonDict, room: RoomFacts, users: Collection[str]
    ) -> tuple[dict[str, Outcome], Outcome | None]:
        """The outcomes of the users a rule on their own ID or name singles out, and the
        outcome for every other user (None when no rule matches them): what anyone sharing
        this rule set gets unless singled out, even when `users` is empty."""
        singled_out: dict[str, Outcome] = {}
        remaining: AbstractSet[str] = set(users)
        for rule in self._rules:
            if not all(c(event, room) for c in rule.shared):
                continue
            if not rule.per_user:
                return singled_out, rule.outcome
            matched = remaining
            for condition in rule.per_user:
                if not matched:
                    break
                matched = condition(event, room, matched)
            if matched:
                singled_out.update(dict.fromkeys(matched, rule.outcome))
                remaining = remaining - matched
        return singled_out, None

    def evaluate_for(
        self, event: JsonDict, room: RoomFacts, users: Collection[str]
    ) -> dict[str, Outcome]:
        """Each user's outcome: that of the first enabled rule whose conditions all hold for
        them; users no rule matches are left out."""
        singled_out, rest = self.evaluate_split(event, room, users)
        if rest is not None:
            for user_id in users:
                singled_out.setdefault(user_id, rest)
        return singled_out

    def evaluate(self, event: JsonDict, room: RoomFacts) -> Outcome | None:
        """The owner's outcome; None when no rule matches."""
        return self.evaluate_for(event, room, (self.owner,)).get(self.owner)


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


@functools.lru_cache(maxsize=4096)
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


class _PerUser:
    """Marks a UserCondition among a rule's conditions."""

    __slots__ = ("holds_for",)

    def __init__(self, holds_for: UserCondition) -> None:
        self.holds_for = holds_for

    def __call__(
        self, event: JsonDict, room: RoomFacts, users: AbstractSet[str]
    ) -> AbstractSet[str]:
        return self.holds_for(event, room, users)


def _event_match(key: str, pattern: str) -> SharedCondition:
    path = split_key(key)
    # "As a special case, if key is content.body", any substring between word boundaries.
    regex = _glob_regex(pattern, word_boundaries=key == "content.body")

    def matches(event: JsonDict, _room: RoomFacts) -> bool:
        value = _lookup(event, path)
        return isinstance(value, str) and regex.search(value) is not None

    return matches


def _matches_user(key: str) -> UserCondition:
    """event_match with the rule owner's ID as the pattern (`.m.rule.invite_for_me`)."""
    path = split_key(key)
    word_boundaries = key == "content.body"

    def holds_for(event: JsonDict, _room: RoomFacts, users: AbstractSet[str]) -> set[str]:
        value = _lookup(event, path)
        if not isinstance(value, str):
            return set()
        return {u for u in users if _glob_regex(u, word_boundaries).search(value) is not None}

    return holds_for


def _is_simple(value: Any) -> bool:
    """Non-compound canonical JSON values: strings, safe integers, booleans and null."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same(a: Any, b: Any) -> bool:
    # Exact: no casts, and `True == 1` in Python must not count.
    return type(a) is type(b) and a == b


def _property_is(key: str, expected: Any) -> SharedCondition:
    if not _is_simple(expected):
        return _never
    path = split_key(key)

    def matches(event: JsonDict, _room: RoomFacts) -> bool:
        value = _lookup(event, path)
        return value is not _MISSING and _is_simple(value) and _same(value, expected)

    return matches


def _property_contains(key: str, expected: Any) -> SharedCondition:
    if not _is_simple(expected):
        return _never
    path = split_key(key)

    def matches(event: JsonDict, _room: RoomFacts) -> bool:
        values = _lookup(event, path)
        return isinstance(values, list) and any(
            _is_simple(v) and _same(v, expected) for v in values
        )

    return matches


def _contains_user(key: str) -> UserCondition:
    """event_property_contains with the rule owner's ID as the value
    (`.m.rule.is_user_mention`): the users the list names."""
    path = split_key(key)

    def holds_for(event: JsonDict, _room: RoomFacts, users: AbstractSet[str]) -> set[str]:
        values = _lookup(event, path)
        if not isinstance(values, list):
            return set()
        return {v for v in values if isinstance(v, str) and v in users}

    return holds_for


def _contains_display_name(event: JsonDict, room: RoomFacts, users: AbstractSet[str]) -> set[str]:
    body = _lookup(event, ("content", "body"))
    if not isinstance(body, str):
        return set()
    folded = body.casefold()
    out = set()
    for user_id in users:
        name = room.display_names.get(user_id)
        # The substring test is a cheap filter; the regex decides on word boundaries.
        if name and name.casefold() in folded:
            pattern = f"{_BOUNDARY_BEFORE}{re.escape(name)}{_BOUNDARY_AFTER}"
            if re.search(pattern, body, re.IGNORECASE) is not None:
                out.add(user_id)
    return out


def _member_count(spec: Any) -> SharedCondition:
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
    return lambda _event, room: compare(room.member_count)


def _sender_permission(key: str) -> SharedCondition:
    def matches(event: JsonDict, room: RoomFacts) -> bool:
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


def _never(_event: JsonDict, _room: RoomFacts) -> bool:
    return False
