"""Building local events: fill in the format the room version wants, hash, sign, derive the ID."""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from homeserver.crypto.signing import hash_and_sign_event
from homeserver.events.event import CREATE, Event, reference_hash
from homeserver.events.room_versions import EventFormat, RoomVersion


@dataclass
class EventBuilder:
    room_version: RoomVersion
    type: str
    sender: str
    content: dict[str, Any]
    room_id: str | None = None  # None only for a v12 m.room.create
    state_key: str | None = None
    redacts: str | None = None  # pre-v11 rooms put it top-level; v11+ expect it in content
    unsigned: dict[str, Any] = field(default_factory=dict)

    def build(
        self,
        *,
        prev_events: Sequence[Event | str],
        auth_events: Sequence[Event | str],
        depth: int,
        origin_server_ts: int,
        server_name: str,
        signing_key: SigningKey,
    ) -> Event:
        rv = self.room_version
        pdu: dict[str, Any] = {
            "type": self.type,
            "sender": self.sender,
            "content": dict(self.content),
            "depth": depth,
            "origin_server_ts": origin_server_ts,
            "prev_events": _refs(rv, prev_events),
            "auth_events": _refs(rv, auth_events),
        }
        if not (rv.room_id_from_create_event and self.type == CREATE):
            if self.room_id is None:
                raise ValueError("room_id is required for every event but a v12 create event")
            pdu["room_id"] = self.room_id
        if self.state_key is not None:
            pdu["state_key"] = self.state_key
        if self.redacts is not None:
            if rv.redacts_in_content:
                pdu["content"]["redacts"] = self.redacts
            else:
                pdu["redacts"] = self.redacts
        if self.unsigned:
            pdu["unsigned"] = dict(self.unsigned)
        if rv.event_id_in_pdu:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{server_name}"
            # Pre-v3 rooms also name the origin server explicitly.
            pdu["origin"] = server_name
        hash_and_sign_event(rv, pdu, server_name, signing_key)
        return Event(pdu, rv)


def _refs(rv: RoomVersion, events: Sequence[Event | str]) -> list[Any]:
    ids = [e.event_id if isinstance(e, Event) else e for e in events]
    if rv.event_format is EventFormat.V1:
        # v1/v2: [event_id, {"sha256": <b64 reference hash>}]; the hash is advisory, so a bare
        # ID gets an empty object as other servers do.
        hashes = {
            e.event_id: {"sha256": encode_base64(reference_hash(rv, e.pdu))}
            for e in events if isinstance(e, Event)
        }
        return [[i, hashes.get(i, {})] for i in ids]
    return ids
