"""NotificationsHandler: read receipts clearing notification counts (C-S API "Marking
notifications as read", threaded receipts per "Threaded read receipts") and the list of
events a user was notified about (GET /notifications, notifications.yaml)."""

from __future__ import annotations

from typing import Any

from homeserver.errors import InvalidParam
from homeserver.handlers.client_events import ClientEventSerializer
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.push import PushStore
from homeserver.storage.stores.user_data import UNTHREADED

JsonDict = dict[str, Any]
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class NotificationsHandler:
    def __init__(
        self, store: PushStore, events: EventsStore, serializer: ClientEventSerializer
    ) -> None:
        self.store = store
        self.events = events
        self.serializer = serializer

    async def on_receipt(
        self, user_id: str, room_id: str, thread_id: str, stream_ordering: int
    ) -> None:
        """A read receipt (m.read or m.read.private) up to `stream_ordering`: an unthreaded
        one reads every thread, a threaded one its thread ("main": the main timeline)."""
        thread = None if thread_id == UNTHREADED else thread_id
        await self.store.mark_read(user_id, room_id, stream_ordering, thread)

    async def list_notifications(
        self, user_id: str, from_token: str | None, limit: int | None, only: str | None
    ) -> JsonDict:
        before: int | None = None
        if from_token is not None:
            try:
                before = int(from_token)
            except ValueError:
                raise InvalidParam("Invalid from token") from None
        count = DEFAULT_LIMIT if limit is None else max(1, min(limit, MAX_LIMIT))
        rows = await self.store.get_notifications(user_id, before, count, only == "highlight")
        found = await self.events.get_events([r.event_id for r in rows])
        shown = [r for r in rows if r.event_id in found]
        rendered = await self.serializer.serialize(
            [found[r.event_id] for r in shown], user_id=user_id, include_room_id=False
        )
        body: JsonDict = {
            "notifications": [
                {
                    "actions": row.actions,
                    "event": event,
                    "read": row.read,
                    "room_id": row.room_id,
                    "ts": row.ts,
                }
                for row, event in zip(shown, rendered, strict=True)
            ]
        }
        if len(rows) == count:
            body["next_token"] = str(rows[-1].stream_ordering)
        return body
