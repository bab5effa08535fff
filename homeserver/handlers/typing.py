"""TypingHandler: typing notifications (C-S API "Typing Notifications"), kept in memory per
room with a stream position of their own; /sync shows each changed room's typers as an m.typing
ephemeral event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError
from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.notifier import Notifier
from homeserver.storage import Storage

logger = logging.getLogger(__name__)

# A client asking for longer is still typing after 2 minutes only if it says so again
# (Synapse's cap too).
MAX_TIMEOUT_MS = 120_000
DEFAULT_TIMEOUT_MS = 30_000


class RemoteTyping(Protocol):
    """Tells the other servers in the room that a user of ours started or stopped typing (an
    m.typing EDU, S-S API "Typing Notifications"); changes of other servers' users are not
    passed on."""

    async def typing_changed(self, user_id: str, room_id: str, typing: bool) -> None: ...


class TypingHandler:
    def __init__(self, storage: Storage, notifier: Notifier, clock: Clock) -> None:
        self.storage = storage
        self.notifier = notifier
        self.clock = clock
        # room_id -> user_id -> when their typing expires (ms)
        self._typing: dict[str, dict[str, int]] = {}
        # room_id -> the position of its last change
        self._changed_at: dict[str, int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Until federation sets one, other servers are not told.
        self.remote: RemoteTyping | None = None
        # Stops that expiry reports to other servers (a timer callback cannot await).
        self._reporting: set[asyncio.Task[None]] = set()
        # Nothing is stored, so positions start from the clock: a token from before a restart
        # is then never ahead of the positions handed out after it.
        self._position = clock.time_ms()

    @property
    def position(self) -> int:
        return self._position

    async def current_position(self) -> int:
        return self._position

    async def set_typing(
        self, user_id: str, room_id: str, typing: bool, timeout_ms: int | None
    ) -> None:
        if typing and timeout_ms is not None and timeout_ms < 0:
            raise MatrixError("timeout must not be negative", Codes.INVALID_PARAM)
        if await self.storage.rooms.get_membership(room_id, user_id) != "join":
            raise Forbidden("You are not joined to this room")
        key = (room_id, user_id)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        typers = self._typing.setdefault(room_id, {})
        if typing:
            timeout = min(
                timeout_ms if timeout_ms is not None else DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS
            )
            was_typing = user_id in typers
            typers[user_id] = self.clock.time_ms() + timeout
            self._timers[key] = asyncio.get_running_loop().call_later(
                timeout / 1000, self._expire, room_id, user_id
            )
            if not was_typing:
                self._changed(room_id)
            stopped = False
        else:
            stopped = typers.pop(user_id, None) is not None
            if stopped:
                self._changed(room_id)
        if not typers:
            self._typing.pop(room_id, None)
        # A renewed "typing" goes out too: the receiving server lapses it on a timer of its
        # own, which only an EDU restarts.
        if self.remote is not None and (typing or stopped):
            await self.remote.typing_changed(user_id, room_id, typing)

    def _expire(self, room_id: str, user_id: str) -> None:
        self._timers.pop((room_id, user_id), None)
        typers = self._typing.get(room_id)
        if typers is not None and typers.pop(user_id, None) is not None:
            if not typers:
                del self._typing[room_id]
            self._changed(room_id)
            if self.remote is not None:
                task = asyncio.create_task(self._report_expiry(self.remote, user_id, room_id))
                self._reporting.add(task)
                task.add_done_callback(self._reporting.discard)

    async def _report_expiry(self, remote: RemoteTyping, user_id: str, room_id: str) -> None:
        try:
            await remote.typing_changed(user_id, room_id, False)
        except Exception:
            logger.exception(
                "room_id=%s user_id=%s reporting typing expiry failed", room_id, user_id
            )

    def _changed(self, room_id: str) -> None:
        self._position = max(self._position + 1, self.clock.time_ms())
        self._changed_at[room_id] = self._position
        self.notifier.on_new_data(room_ids=[room_id])

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, ()))

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        """The sync source of the typing slot: m.typing in each joined room's ephemeral."""
        events = self.ephemeral_events(request.room_ids, request.from_token.typing)
        return SyncSourceUpdates(room_ephemeral={r: [e] for r, e in events.items()})

    def ephemeral_events(
        self, room_ids: Collection[str], from_pos: int
    ) -> dict[str, dict[str, Any]]:
        """room_id -> the m.typing ephemeral event of each room in `room_ids` whose typers
        changed after `from_pos` (from_pos 0: rooms where someone types now). Typing is state,
        not history: the event lists who types now (C-S API m.typing: the full list)."""
        events: dict[str, dict[str, Any]] = {}
        for room_id in room_ids:
            users = self.typing_users(room_id)
            changed = self._changed_at.get(room_id, 0) > from_pos
            if (from_pos and changed) or (not from_pos and users):
                events[room_id] = {"type": "m.typing", "content": {"user_ids": users}}
        return events

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._reporting:
            task.cancel()
