"""Send-to-device messages (C-S API "Send-to-Device messaging"): per-device inboxes on a stream
of their own (the to_device slot of the /sync token), and the senders' transaction IDs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database
from homeserver.storage.id_generators import LazyStream

# The device ID that addresses every device of a user.
ALL_DEVICES = "*"


@dataclass(frozen=True, slots=True)
class InboxMessage:
    sender: str
    type: str
    content: dict[str, Any]
    stream_id: int


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream = LazyStream(db, "SELECT position FROM to_device_stream WHERE id = 1")

    async def current(self) -> int:
        return await self.stream.current()

    async def add_messages(
        self,
        sender: str,
        sending_device_txn: tuple[str, str] | None,
        event_type: str,
        messages: Mapping[str, Mapping[str, Mapping[str, Any]]],
    ) -> list[str] | None:
        """Queue `messages` (user -> device ID or ALL_DEVICES -> content) for the devices that
        exist; unknown users and devices are skipped. Returns the users with a new message, or
        None when the (sending device, transaction ID) pair was used before (nothing is queued
        again). Messages from other servers have no local sending device: their transactions
        are deduplicated where federation receives them."""
        gen = await self.stream.generator()
        with gen.allocate(1) as [position]:
            async with self.db.transaction() as txn:
                # Every position handed out is recorded, used or not: see to_device_stream.
                await txn.execute(
                    "UPDATE to_device_stream SET position = CASE WHEN position < $1 THEN $1"
                    " ELSE position END WHERE id = 1",
                    position,
                )
                if sending_device_txn is not None:
                    # Through `devices`, so a device deleted meanwhile takes no row (and a
                    # deleted sender device counts as a repeat: its request has nobody to
                    # answer).
                    fresh = await txn.fetch(
                        "INSERT INTO to_device_txn_ids (user_id, device_id, txn_id)"
                        " SELECT user_id, device_id, $3 FROM devices"
                        " WHERE user_id = $1 AND device_id = $2"
                        " ON CONFLICT (user_id, device_id, txn_id) DO NOTHING RETURNING 1",
                        sender,
                        *sending_device_txn,
                    )
                    if not fresh:
                        return None
                recipients: list[str] = []
                for user_id, by_device in messages.items():
                    # Named devices first: a named device also covered by "*" gets its own
                    # message (one per device per send).
                    ordered = sorted(by_device.items(), key=lambda kv: kv[0] == ALL_DEVICES)
                    for device_id, content in ordered:
                        added = await txn.fetch(
                            "INSERT INTO device_inbox"
                            " (user_id, device_id, stream_id, sender, type, content)"
                            " SELECT user_id, device_id, CAST($3 AS BIGINT), $4, $5, $6"
                            " FROM devices WHERE user_id = $1 AND ($2 = '*' OR device_id = $2)"
                            " ON CONFLICT (user_id, device_id, stream_id) DO NOTHING"
                            " RETURNING 1",
                            user_id,
                            device_id,
                            position,
                            sender,
                            event_type,
                            json.dumps(content, ensure_ascii=False),
                        )
                        if added and user_id not in recipients:
                            recipients.append(user_id)
        return recipients

    async def get_messages(
        self, user_id: str, device_id: str, from_pos: int, to_pos: int, limit: int
    ) -> list[InboxMessage]:
        """The device's messages in (from_pos, to_pos], oldest first, at most `limit`."""
        rows = await self.db.fetch(
            "SELECT sender, type, content, stream_id FROM device_inbox"
            " WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4"
            " ORDER BY stream_id LIMIT $5",
            user_id,
            device_id,
            from_pos,
            to_pos,
            limit,
        )
        return [InboxMessage(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def delete_delivered(self, user_id: str, device_id: str, up_to: int) -> None:
        """Drop the messages the device acknowledged: stream_id <= up_to."""
        await self.db.execute(
            "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
            user_id,
            device_id,
            up_to,
        )
