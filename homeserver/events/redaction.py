"""The redaction algorithm per room version (rooms/fragments/v1-redactions.md to v11-redactions).

Redaction is also the first step of reference hashes and event signatures, so it must be
byte-exact with every other server.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.events.room_versions import RedactionRules, RoomVersion

_TOP_LEVEL_V1 = frozenset({
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
    "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
    "membership",
})
# v11 drops origin, membership and prev_state from the kept top-level keys.
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS = (
    "ban", "events", "events_default", "kick", "redact", "state_default", "users",
    "users_default",
)


def _kept_content_keys(rules: RedactionRules, event_type: str) -> tuple[str, ...] | None:
    """The content keys a redacted event keeps; None means all of them."""
    v11 = rules is RedactionRules.V11
    if event_type == "m.room.member":
        keys: tuple[str, ...] = ("membership",)
        if rules in (RedactionRules.V9, RedactionRules.V11):
            keys += ("join_authorised_via_users_server",)
        return keys
    if event_type == "m.room.create":
        return None if v11 else ("creator",)
    if event_type == "m.room.join_rules":
        if rules in (RedactionRules.V8, RedactionRules.V9, RedactionRules.V11):
            return ("join_rule", "allow")
        return ("join_rule",)
    if event_type == "m.room.power_levels":
        return _POWER_LEVEL_KEYS + (("invite",) if v11 else ())
    if event_type == "m.room.aliases":
        return ("aliases",) if rules is RedactionRules.V1 else ()
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.redaction" and v11:
        return ("redacts",)
    return ()


def prune_event_dict(room_version: RoomVersion, pdu: Mapping[str, Any]) -> dict[str, Any]:
    """Return the redacted copy of a PDU; `unsigned` is dropped like any other unlisted key."""
    rules = room_version.redaction
    top = _TOP_LEVEL_V11 if rules is RedactionRules.V11 else _TOP_LEVEL_V1
    pruned = {k: v for k, v in pdu.items() if k in top}
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        pruned["content"] = {}
        return pruned
    kept = _kept_content_keys(rules, str(pdu.get("type", "")))
    if kept is None:
        new_content = dict(content)
    else:
        new_content = {k: content[k] for k in kept if k in content}
    # v11 keeps only `signed` of a member event's third_party_invite. The spec is silent on
    # an invite object without `signed`; Synapse keeps it as {}, and event IDs must match.
    third_party_invite = content.get("third_party_invite")
    if (
        rules is RedactionRules.V11
        and pdu.get("type") == "m.room.member"
        and isinstance(third_party_invite, Mapping)
    ):
        new_content["third_party_invite"] = (
            {"signed": third_party_invite["signed"]} if "signed" in third_party_invite else {}
        )
    pruned["content"] = new_content
    return pruned
