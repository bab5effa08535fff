"""Events as clients see them (C-S API "Room event format": the ClientEvent definition), and
which redactions apply to them (rooms/v3.md "Handling redactions"). Pure: the caller loads the
redaction events, the power levels and the transaction IDs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.events.event import Event
from homeserver.identifiers import domain_of


@dataclass
class ClientEventExtras:
    """What the server adds to an event's `unsigned` for one client."""

    redacted_because: dict[str, Any] | None = None
    transaction_id: str | None = None
    prev_content: Mapping[str, Any] | None = None
    replaces_state: str | None = None
    # The requesting user's membership at the event (unsigned.membership, spec v1.11).
    membership: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def format_client_event(
    event: Event,
    now_ms: int,
    extras: ClientEventExtras | None = None,
    *,
    include_room_id: bool = True,
) -> dict[str, Any]:
    """The ClientEvent for `event` (already pruned if it is redacted): the federation-only keys
    (auth_events, prev_events, hashes, signatures, depth, origin...) are left out, and `unsigned`
    holds what this server knows rather than what the origin server sent."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
        "content": dict(event.content),
    }
    if include_room_id:
        # A v12 m.room.create has no room_id in its PDU: it is derived from the event ID.
        out["room_id"] = event.room_id
    if event.is_state():
        out["state_key"] = event.state_key
    if event.type == "m.room.redaction":
        redacts = event.redacts
        if redacts is not None:
            # Top-level for clients in every room version (v11 moved it into content; clients
            # written before then read it here, and the v11 content keeps it too).
            out["redacts"] = redacts
    unsigned: dict[str, Any] = {"age": max(0, now_ms - event.origin_server_ts)}
    if extras is not None:
        if extras.redacted_because is not None:
            unsigned["redacted_because"] = extras.redacted_because
        if extras.transaction_id is not None:
            unsigned["transaction_id"] = extras.transaction_id
        if extras.prev_content is not None:
            unsigned["prev_content"] = dict(extras.prev_content)
        if extras.replaces_state is not None:
            unsigned["replaces_state"] = extras.replaces_state
        if extras.membership is not None:
            unsigned["membership"] = extras.membership
        unsigned.update(extras.extra)
    out["unsigned"] = unsigned
    return out


def redaction_applies(
    target: Event, redaction: Event, redaction_sender_level: float, redact_level: int
) -> bool:
    """Whether `redaction` redacts `target` (rooms/v3.md "Handling redactions"): it must be in
    the same room, and its sender must have the redact level or share the target sender's
    server. (Rooms v1 and v2 enforce the same in their auth rules, so this holds there too.)"""
    if redaction.room_id != target.room_id or redaction.redacts != target.event_id:
        return False
    if redaction_sender_level >= redact_level:
        return True
    return domain_of(redaction.sender) == domain_of(target.sender)


def strip_state_event(event: Event) -> dict[str, Any]:
    """A stripped state event (C-S API "Stripped state"): sender, type, state_key, content."""
    return {
        "type": event.type,
        "state_key": event.state_key,
        "sender": event.sender,
        "content": dict(event.content),
    }
