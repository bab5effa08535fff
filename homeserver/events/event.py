"""Event: an immutable view over a PDU plus its room version; content and reference hashes and
event IDs (S2S "Calculating the reference hash", "Calculating the content hash"; rooms/v*.md
"Event IDs").
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.redaction import prune_event_dict
from homeserver.events.room_versions import EventFormat, RoomVersion

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
REDACTION = "m.room.redaction"
ALIASES = "m.room.aliases"
HISTORY_VISIBILITY = "m.room.history_visibility"


def content_hash(pdu: Mapping[str, Any]) -> bytes:
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(pdu: dict[str, Any]) -> None:
    pdu["hashes"] = {"sha256": encode_base64(content_hash(pdu))}


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        expected = decode_base64(hashes["sha256"])
    except Exception:
        return False
    return expected == content_hash(pdu)


def reference_hash(room_version: RoomVersion, pdu: Mapping[str, Any]) -> bytes:
    pruned = prune_event_dict(room_version, pdu)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(pruned)).digest()


def compute_event_id(room_version: RoomVersion, pdu: Mapping[str, Any]) -> str:
    """The event ID of a v3+ format PDU; v1/v2 rooms carry theirs in the PDU."""
    if room_version.event_format is EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("event_id missing from a room v1/v2 PDU")
        return event_id
    digest = reference_hash(room_version, pdu)
    return "$" + encode_base64(digest, urlsafe=room_version.event_format is EventFormat.V3)


def room_id_for_create_event_id(event_id: str) -> str:
    """v12: the room ID is the create event's ID with the `!` sigil (appendices "Room IDs")."""
    return "!" + event_id[1:]


def _event_ids(refs: Any) -> tuple[str, ...]:
    """prev_events/auth_events as IDs: v1/v2 list [id, {hashes}] pairs, later versions IDs."""
    if not isinstance(refs, list):
        return ()
    out: list[str] = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, list) and ref and isinstance(ref[0], str):
            out.append(ref[0])
    return tuple(out)


class Event:
    """A PDU with its room version and event ID. Treat `pdu` as read-only; it is not copied."""

    __slots__ = ("pdu", "room_version", "event_id", "_room_id")

    def __init__(self, pdu: dict[str, Any], room_version: RoomVersion, event_id: str | None = None):
        self.pdu = pdu
        self.room_version = room_version
        self.event_id = event_id if event_id is not None else compute_event_id(room_version, pdu)
        room_id = pdu.get("room_id")
        if room_id is None and room_version.room_id_from_create_event and pdu.get("type") == CREATE:
            room_id = room_id_for_create_event_id(self.event_id)
        self._room_id: str = room_id if isinstance(room_id, str) else ""

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def room_id(self) -> str:
        return self._room_id

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def state_key_tuple(self) -> StateKey:
        return (self.pdu["type"], self.pdu["state_key"])

    @property
    def content(self) -> Mapping[str, Any]:
        content = self.pdu.get("content")
        return content if isinstance(content, dict) else {}

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def depth(self) -> int:
        value = self.pdu.get("depth")
        return value if isinstance(value, int) else 0

    @property
    def origin_server_ts(self) -> int:
        value = self.pdu.get("origin_server_ts")
        return value if isinstance(value, int) else 0

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return _event_ids(self.pdu.get("prev_events"))

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        return _event_ids(self.pdu.get("auth_events"))

    @property
    def redacts(self) -> str | None:
        """The target of an m.room.redaction: top-level before v11, in content from v11."""
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts")
        else:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def signatures(self) -> Mapping[str, Mapping[str, str]]:
        sigs = self.pdu.get("signatures")
        return sigs if isinstance(sigs, dict) else {}

    @property
    def unsigned(self) -> Mapping[str, Any]:
        unsigned = self.pdu.get("unsigned")
        return unsigned if isinstance(unsigned, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.pdu.get(key, default)

    def redacted(self) -> Event:
        pruned = prune_event_dict(self.room_version, self.pdu)
        return Event(pruned, self.room_version, self.event_id)

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.pdu.get('type')} {self.pdu.get('state_key')!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)
