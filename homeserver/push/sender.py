"""PushSender: hands each new notification to the user's http pushers' push gateways (C-S API
"Push Notifications", Push Gateway API POST /_matrix/push/v1/notify) once the event that
caused it has committed. Best effort and in memory: a notification not sent when the process
stops is not sent later (the counts in /sync are unaffected)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from homeserver.events.event import Event
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.push import PushActionRow, Pusher, PushStore

logger = logging.getLogger(__name__)
JsonDict = dict[str, Any]
EVENT_ID_ONLY = "event_id_only"


class PushGateway(Protocol):
    async def notify(self, url: str, body: JsonDict) -> list[str]:
        """POST `body` to the gateway at `url`; returns the pushkeys it rejected."""
        ...

    async def close(self) -> None: ...


class PushSender:
    def __init__(self, store: PushStore, events: EventsStore, gateway: PushGateway) -> None:
        self.store = store
        self.events = events
        self.gateway = gateway
        self._queue: list[PushActionRow] = []
        self._task: asyncio.Task[None] | None = None

    def on_committed(self, rows: Sequence[PushActionRow]) -> None:
        """Queue the notifying rows of a committed transaction (a call_after callback)."""
        self._queue.extend(r for r in rows if r.notify)
        if self._queue and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            rows, self._queue = self._queue, []
            try:
                await self._send_batch(rows)
            except Exception:  # the database went away (shutdown): these are dropped
                logger.exception("count=%d pushes dropped", len(rows))

    async def _send_batch(self, rows: Sequence[PushActionRow]) -> None:
        by_user: dict[str, list[Pusher]] = {}
        for pusher in await self.store.get_pushers({r.user_id for r in rows}):
            by_user.setdefault(pusher.user_id, []).append(pusher)
        rows = [r for r in rows if r.user_id in by_user]
        events = await self.events.get_events([r.event_id for r in rows])
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            try:
                await self._send(row, event, by_user[row.user_id])
            except Exception:  # one gateway failing must not stop the others
                logger.exception("user_id=%s event_id=%s push failed", row.user_id, row.event_id)

    async def _send(self, row: PushActionRow, event: Event, pushers: list[Pusher]) -> None:
        unread = await self.store.count_unread(row.user_id)
        tweaks = {
            a["set_tweak"]: a.get("value", True)
            for a in row.actions
            if isinstance(a, dict) and isinstance(a.get("set_tweak"), str)
        }
        for pusher in pushers:
            url = pusher.data.get("url")
            if pusher.kind != "http" or not isinstance(url, str):
                continue
            body = {"notification": notification(row, event, pusher, tweaks, unread)}
            rejected = await self.gateway.notify(url, body)
            if pusher.pushkey in rejected:
                # Push Gateway API: the homeserver must stop pushing to rejected pushkeys.
                await self.store.delete_pusher(pusher.user_id, pusher.app_id, pusher.pushkey)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.gateway.close()


def notification(
    row: PushActionRow, event: Event, pusher: Pusher, tweaks: JsonDict, unread: int
) -> JsonDict:
    """The `notification` object of push_notifier.yaml; `event_id_only` pushers get no event
    fields beyond the IDs (pusher.yaml `format`)."""
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
