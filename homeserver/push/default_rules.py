"""The server-default push rules (C-S API "Push Notifications", "Predefined Rules"), as
of v1.17: the legacy rules that looked for mentions in `content.body` are gone. `USER_ID`
stands for the rule set owner's Matrix ID and is filled in per user."""

from __future__ import annotations

from typing import Any

USER_ID = "[the user's Matrix ID]"
KINDS = ("override", "content", "room", "sender", "underride")
MASTER = ".m.rule.master"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(
    rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True
) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": enabled,
        "conditions": conditions,
        "actions": actions,
    }


DEFAULT_OVERRIDE: tuple[dict[str, Any], ...] = (
    _rule(MASTER, [], [], enabled=False),
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(
        ".m.rule.invite_for_me",
        [
            _match("type", "m.room.member"),
            _match("content.membership", "invite"),
            _match("state_key", USER_ID),
        ],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [
            {
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": USER_ID,
            }
        ],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.tombstone",
        [_match("type", "m.room.tombstone"), _match("state_key", "")],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(
        ".m.rule.room.server_acl",
        [_match("type", "m.room.server_acl"), _match("state_key", "")],
        [],
    ),
    _rule(
        ".m.rule.suppress_edits",
        [
            {
                "kind": "event_property_is",
                "key": "content.m\\.relates_to.rel_type",
                "value": "m.replace",
            }
        ],
        [],
    ),
)

_ONE_TO_ONE = {"kind": "room_member_count", "is": "2"}

DEFAULT_UNDERRIDE: tuple[dict[str, Any], ...] = (
    _rule(
        ".m.rule.call",
        [_match("type", "m.call.invite")],
        ["notify", {"set_tweak": "sound", "value": "ring"}],
    ),
    _rule(
        ".m.rule.encrypted_room_one_to_one",
        [_ONE_TO_ONE, _match("type", "m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(
        ".m.rule.room_one_to_one",
        [_ONE_TO_ONE, _match("type", "m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
)

DEFAULT_RULES: dict[str, tuple[dict[str, Any], ...]] = {
    "override": DEFAULT_OVERRIDE,
    "content": (),
    "room": (),
    "sender": (),
    "underride": DEFAULT_UNDERRIDE,
}
DEFAULT_RULE_KINDS: dict[str, str] = {
    rule["rule_id"]: kind for kind, rules in DEFAULT_RULES.items() for rule in rules
}


def for_user(rule: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A default rule with the owner's Matrix ID filled in where the spec writes it."""

    def fill(value: Any) -> Any:
        if value == USER_ID:
            return user_id
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    filled: dict[str, Any] = fill(rule)
    return filled
