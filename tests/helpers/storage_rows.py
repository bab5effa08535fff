"""Rows as the persister writes them, for tests of migrations that read what older
versions of the server stored."""

from __future__ import annotations

import itertools
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.storage.database import Database

_positions = itertools.count(1)


async def state_event(
    db: Database, room_id: str, type_: str, state_key: str, content: dict[str, Any]
) -> int:
    """An event row and its current-state row, as the persister writes them; returns the
    event's stream position."""
    position = next(_positions)
    event_id = f"$e{position}"
    sender = state_key or "@creator:x"
    pdu = {
        "type": type_,
        "room_id": room_id,
        "sender": sender,
        "state_key": state_key,
        "content": content,
    }
    membership = content.get("membership") if type_ == "m.room.member" else None
    await db.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
        " origin_server_ts, received_ts, outlier, json)"
        " VALUES ($1, $2, $3, $4, $5, $6, $1, 0, 0, FALSE, $7)",
        position,
        event_id,
        room_id,
        type_,
        state_key,
        sender,
        encode_canonical_json(pdu).decode("utf-8"),
    )
    await db.execute(
        "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, type, state_key)"
        " DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
        room_id,
        type_,
        state_key,
        event_id,
        membership,
    )
    return position


async def join(db: Database, room_id: str, user_id: str, **profile: Any) -> int:
    content = {"membership": "join", **profile}
    return await state_event(db, room_id, "m.room.member", user_id, content)
