"""HttpPusher: delivers a user's notifications to their push gateway (C-S API "Push
Notifications", Push Gateway API POST /_matrix/push/v1/notify), one request per
notification, in order, retried with back-off while the gateway fails."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.events.event import Event
from homeserver.push.pusher_pool import PusherWorker
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.push import PushActionRow, Pusher, PushStore

logger = logging.getLogger(__name__)
JsonDict = dict[str, Any]
EVENT_ID_ONLY = "event_id_only"
BATCH = 50


class PushGatewayError(Exception):
    """The gateway could not be reached or did not answer 200: worth retrying."""


class PushGateway(Protocol):
    async def notify(self, url: str, body: JsonDict) -> list[str]:
        """POST `body` to the gateway at `url`; returns the pushkeys it rejected. Raises
        PushGatewayError."""
        ...

    async def close(self) -> None: ...


class HttpPusher(PusherWorker):
    def __init__(
        self,
        pusher: Pusher,
        store: PushStore,
        clock: Clock,
        events: EventsStore,
        gateway: PushGateway,
    ) -> None:
        super().__init__(pusher, store, clock)
        self.events = events
        self.gateway = gateway

    async def process(self) -> float | None:
        rows = await self.store.pending_notifications(self.pusher.user_id, self.position, BATCH)
        if not rows:
            return None
        events = await self.events.get_events([r.event_id for r in rows])
        for row in rows:
            event = events.get(row.event_id)
            if event is None:  # purged meanwhile: nothing to tell
                await self.delivered(row.stream_ordering)
                continue
            try:
                rejected = await self._send(row, event)
            except PushGatewayError as e:
                logger.info("push to %s failed: %s", self.pusher.user_id, e)
                return await self.failed(row.stream_ordering)
            if rejected:
                # Push Gateway API: the homeserver must stop pushing to rejected pushkeys.
                await self.store.delete_pusher(
                    self.pusher.user_id, self.pusher.app_id, self.pusher.pushkey
                )
                self.gone = True
                return None
            await self.delivered(row.stream_ordering)
        return 0

    async def _send(self, row: PushActionRow, event: Event) -> bool:
        """Whether the gateway rejected this pusher's pushkey."""
        url = self.pusher.data.get("url")
        if not isinstance(url, str):
            return True
        unread = await self.store.count_unread(row.user_id)
        body = {"notification": notification(row, event, self.pusher, unread)}
        return self.pusher.pushkey in await self.gateway.notify(url, body)


def notification(row: PushActionRow, event: Event, pusher: Pusher, unread: int) -> JsonDict:
    """The `notification` object of push_notifier.yaml; `event_id_only` pushers get no event
    fields beyond the IDs (pusher.yaml `format`)."""
    tweaks = {
        a["set_tweak"]: a.get("value", True)
        for a in row.actions
        if isinstance(a, dict) and isinstance(a.get("set_tweak"), str)
    }
    device = {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts // 1000,
        # pusher.yaml: everything in `data` but `url` goes to the gateway.
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
        "tweaks": tweaks,
    }
    out: JsonDict = {
        "event_id": event.event_id,
        "room_id": event.room_id,
        "counts": {"unread": unread},
        "devices": [device],
    }
    if pusher.data.get("format") != EVENT_ID_ONLY:
        out.update(
            type=event.type,
            sender=event.sender,
            content=dict(event.content),
            user_is_target=event.state_key == row.user_id,
            prio="high" if row.highlight or "sound" in tweaks else "low",
        )
    return out
