"""ReceiptsHandler: read receipts, private and threaded (C-S API "Receipts"), and read markers
("Fully read markers"). Receipts are stored with a stream position of their own; /sync shows
them as one m.receipt ephemeral event per room."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.account_data import FULLY_READ, AccountDataHandler
from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.notifier import Notifier
from homeserver.storage import Storage
from homeserver.storage.stores.user_data import UNTHREADED, UserDataStore

READ = "m.read"
READ_PRIVATE = "m.read.private"
RECEIPT_TYPES = frozenset({READ, READ_PRIVATE})
MAIN_THREAD = "main"


class RemoteReceipts(Protocol):
    """Tells the other servers in the room of a public read receipt by a user of ours (an
    m.receipt EDU, S-S API "Receipts"); other servers' users' receipts are not passed on."""

    async def read_receipt(
        self, user_id: str, room_id: str, event_id: str, thread_id: str | None, ts: int
    ) -> None: ...


class ReceiptsRead(Protocol):
    """Told of each new m.read or m.read.private receipt of a user: both clear notification
    counts up to their event (C-S API "Marking notifications as read")."""

    async def on_receipt(
        self, user_id: str, room_id: str, thread_id: str, stream_ordering: int
    ) -> None: ...


class ReceiptsHandler:
    def __init__(
        self,
        storage: Storage,
        user_data: UserDataStore,
        account_data: AccountDataHandler,
        notifier: Notifier,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.user_data = user_data
        self.account_data = account_data
        self.notifier = notifier
        self.clock = clock
        # Until federation sets one, other servers are not told.
        self.remote: RemoteReceipts | None = None
        self.receipts_read: ReceiptsRead | None = None

    async def current_position(self) -> int:
        return await self.user_data.receipts_stream.current()

    async def send_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None = None,
    ) -> None:
        """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}. m.fully_read goes to the read
        marker, as the spec says the endpoint "effectively calls /read_markers"."""
        if receipt_type == FULLY_READ:
            if thread_id is not None:
                raise MatrixError("m.fully_read cannot be threaded", Codes.INVALID_PARAM)
            await self.set_read_markers(user_id, room_id, fully_read=event_id)
            return
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(f"Unknown receipt type {receipt_type}", Codes.INVALID_PARAM)
        if thread_id is not None and not thread_id:
            raise MatrixError("thread_id must be a non-empty string", Codes.INVALID_PARAM)
        await self._check_joined(user_id, room_id)
        stream_ordering = await self._event_position(room_id, event_id)
        await self._store_receipt(
            user_id, room_id, receipt_type, event_id, thread_id or UNTHREADED, stream_ordering
        )

    async def set_read_markers(
        self,
        user_id: str,
        room_id: str,
        *,
        fully_read: str | None = None,
        read: str | None = None,
        read_private: str | None = None,
    ) -> None:
        """POST /rooms/{roomId}/read_markers: m.fully_read is room account data, m.read and
        m.read.private are (unthreaded) receipts, as the receipt endpoint makes them."""
        await self._check_joined(user_id, room_id)
        if fully_read is not None:
            position = await self._event_position(room_id, fully_read)
            old = await self.user_data.get_account_data(user_id, room_id, FULLY_READ)
            old_id = old.get("event_id") if old else None
            # Like receipts, the marker only moves forward.
            if not isinstance(old_id, str) or await self._is_after(room_id, position, old_id):
                await self.account_data.set(user_id, room_id, FULLY_READ, {"event_id": fully_read})
        for receipt_type, event_id in ((READ, read), (READ_PRIVATE, read_private)):
            if event_id is not None:
                position = await self._event_position(room_id, event_id)
                await self._store_receipt(
                    user_id, room_id, receipt_type, event_id, UNTHREADED, position
                )

    async def _store_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str,
        stream_ordering: int,
    ) -> None:
        old = await self.user_data.get_receipt_event(room_id, receipt_type, user_id, thread_id)
        # A receipt for an event before the one already acknowledged changes nothing (what
        # Synapse does too): a client replaying an old receipt must not un-read the room.
        if old is not None and not await self._is_after(room_id, stream_ordering, old):
            return
        ts = self.clock.time_ms()
        await self.user_data.upsert_receipt(room_id, receipt_type, user_id, thread_id, event_id, ts)
        if self.receipts_read is not None:
            await self.receipts_read.on_receipt(user_id, room_id, thread_id, stream_ordering)
        if receipt_type == READ_PRIVATE:
            # Spec: a private receipt is never sent to any other user (nor server).
            self.notifier.on_new_data(users=[user_id])
            return
        self.notifier.on_new_data(room_ids=[room_id], users=[user_id])
        if self.remote is not None:
            thread = None if thread_id == UNTHREADED else thread_id
            await self.remote.read_receipt(user_id, room_id, event_id, thread, ts)

    async def _is_after(self, room_id: str, stream_ordering: int, other_event_id: str) -> bool:
        metas = await self.storage.events.get_event_metas([other_event_id])
        other = metas.get(other_event_id)
        return other is None or other.room_id != room_id or stream_ordering > other.stream_ordering

    async def _check_joined(self, user_id: str, room_id: str) -> None:
        if await self.storage.rooms.get_membership(room_id, user_id) != "join":
            raise Forbidden("You are not joined to this room")

    async def _event_position(self, room_id: str, event_id: str) -> int:
        meta = (await self.storage.events.get_event_metas([event_id])).get(event_id)
        if meta is None or meta.room_id != room_id or meta.outlier:
            raise NotFound("Unknown event in this room")
        return int(meta.stream_ordering)

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        """The sync source of the receipts slot: m.receipt in joined rooms' ephemeral."""
        if request.from_token.receipts >= request.to_token.receipts:
            return SyncSourceUpdates()
        events = await self.receipt_events(
            request.user_id,
            request.room_ids,
            request.from_token.receipts,
            request.to_token.receipts,
        )
        return SyncSourceUpdates(room_ephemeral={r: [e] for r, e in events.items()})

    async def receipt_events(
        self, user_id: str, room_ids: Collection[str], from_pos: int, to_pos: int
    ) -> dict[str, dict[str, Any]]:
        """room_id -> the m.receipt ephemeral event for receipts in `room_ids` changed in
        (from_pos, to_pos] (from_pos 0: every current receipt); other users' private receipts
        left out. Content shape: {event_id: {receipt_type: {user_id: {ts, thread_id?}}}}."""
        events: dict[str, dict[str, Any]] = {}
        for row in await self.user_data.get_receipt_changes(room_ids, from_pos, to_pos):
            if row.receipt_type == READ_PRIVATE and row.user_id != user_id:
                continue
            receipt: dict[str, Any] = {"ts": row.ts}
            if row.thread_id != UNTHREADED:
                receipt["thread_id"] = row.thread_id
            event = events.setdefault(row.room_id, {"type": "m.receipt", "content": {}})
            by_type = event["content"].setdefault(row.event_id, {})
            by_type.setdefault(row.receipt_type, {})[row.user_id] = receipt
        return events
