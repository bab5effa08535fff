"""PresenceHandler: online/unavailable/offline, status messages and last activity (C-S API
"Presence"), visible to users who share a room; stored with a stream position of their own
for /sync's presence section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.identifiers import domain_of
from homeserver.lru import LruCache
from homeserver.notifier import Notifier
from homeserver.storage import Storage
from homeserver.storage.stores.user_data import PresenceRow, UserDataStore

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = frozenset({ONLINE, UNAVAILABLE, OFFLINE})
# C-S API "Idle timeout": online turns unavailable after this long without activity.
IDLE_TIMEOUT_MS = 5 * 60 * 1000
# Within this of the last activity an online user is `currently_active`, and activity is not
# written again (the spec's reason for currently_active: fewer updates).
ACTIVE_GRANULARITY_MS = 60 * 1000
MAX_STATUS_MSG_LEN = 1024


class RemotePresence(Protocol):
    """Tells the servers sharing a room with a user of ours of their new presence (an
    m.presence EDU, S-S API "Presence"); other servers' users' presence is not passed on.
    `presence` is as clients see it (format())."""

    async def presence_changed(self, user_id: str, presence: Mapping[str, Any]) -> None: ...


class PresenceHandler:
    def __init__(
        self,
        storage: Storage,
        user_data: UserDataStore,
        notifier: Notifier,
        clock: Clock,
        server_name: str,
    ) -> None:
        self.storage = storage
        self.user_data = user_data
        self.notifier = notifier
        self.clock = clock
        self.server_name = server_name
        # user_id -> last_active_ts of the "online" this process last wrote for them: a
        # client syncs many times a minute, and each sync would otherwise read presence to
        # find there is nothing to write.
        self._online_written: LruCache[str, int] = LruCache(100_000)
        # Until federation sets one, other servers are not told.
        self.remote: RemotePresence | None = None

    async def current_position(self) -> int:
        return await self.user_data.presence_stream.current()

    async def set_presence(
        self, requester_id: str, user_id: str, state: str, status_msg: str | None
    ) -> None:
        """PUT /presence/{userId}/status: only for oneself."""
        if requester_id != user_id:
            raise Forbidden("Cannot set another user's presence")
        if state not in STATES:
            raise MatrixError(f"Unknown presence state {state!r}", Codes.INVALID_PARAM)
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LEN:
            raise MatrixError("status_msg is too long", Codes.INVALID_PARAM)
        now = self.clock.time_ms()
        old = await self.user_data.get_presence(user_id)
        # Spec "Last active ago": becoming online is activity; other states keep the old time.
        last_active = now if state == ONLINE or old is None else old.last_active_ts
        await self._write(user_id, state, status_msg, last_active)

    async def set_remote_presence(
        self, user_id: str, state: str, status_msg: str | None, last_active_ago: int
    ) -> None:
        """Presence another server reports for its user (an m.presence EDU)."""
        if state not in STATES:
            raise MatrixError(f"Unknown presence state {state!r}", Codes.INVALID_PARAM)
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LEN:
            status_msg = status_msg[:MAX_STATUS_MSG_LEN]
        last_active = self.clock.time_ms() - max(0, last_active_ago)
        await self._write(user_id, state, status_msg, last_active)

    async def note_active(self, user_id: str) -> None:
        """Activity by the user (a /sync with set_presence=online, a sent message): online
        now. Written at most once a minute while nothing else changes."""
        now = self.clock.time_ms()
        written = self._online_written.get_hit(user_id)
        if written is not None and now - written < ACTIVE_GRANULARITY_MS:
            return
        old = await self.user_data.get_presence(user_id)
        if (
            old is not None
            and old.state == ONLINE
            and now - old.last_active_ts < ACTIVE_GRANULARITY_MS
        ):
            return
        await self._write(user_id, ONLINE, old.status_msg if old else None, now)

    async def _write(
        self, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> None:
        position = await self.user_data.set_presence(user_id, state, status_msg, last_active_ts)
        if state == ONLINE:
            self._online_written.put(user_id, last_active_ts)
        else:
            self._online_written.pop(user_id)
        # Everyone sharing a room listens to that room; the user to themselves.
        rooms = await self.storage.rooms.get_rooms_for_user(user_id)
        self.notifier.on_new_data(room_ids=rooms, users=[user_id])
        if self.remote is not None:
            row = PresenceRow(user_id, state, status_msg, last_active_ts, position)
            await self.remote.presence_changed(user_id, self.format(row))

    async def get_presence(self, requester_id: str, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status: 404 for unknown users (a remote user is known once
        their server has told us their presence), 403 when the requester shares no room with
        them."""
        row = await self.user_data.get_presence(user_id)
        if domain_of(user_id) == self.server_name:
            known = row is not None or await self.storage.accounts.user_exists(user_id)
        else:
            known = row is not None
        if not known:
            raise NotFound("Unknown user")
        if requester_id != user_id and not await self.user_data.shares_room(requester_id, user_id):
            raise Forbidden("You are not allowed to see this user's presence")
        if row is None:
            return {"presence": OFFLINE}
        return self.format(row)

    def format(self, row: PresenceRow) -> dict[str, Any]:
        """Presence as clients see it now: last_active_ago relative to now, and online past
        the idle timeout shown as unavailable."""
        now = self.clock.time_ms()
        ago = max(0, now - row.last_active_ts)
        state = row.state
        if state == ONLINE and ago > IDLE_TIMEOUT_MS:
            state = UNAVAILABLE
        content: dict[str, Any] = {"presence": state, "last_active_ago": ago}
        if state == ONLINE:
            content["currently_active"] = ago < ACTIVE_GRANULARITY_MS
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        return content

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        """The sync source of the presence slot: the top-level presence section."""
        if request.from_token.presence >= request.to_token.presence:
            return SyncSourceUpdates()
        events = await self.presence_events(
            request.user_id, request.from_token.presence, request.to_token.presence
        )
        return SyncSourceUpdates(presence=events)

    async def on_sync(self, user_id: str, set_presence: str) -> None:
        """The sync presence hook (C-S API /sync `set_presence`): online marks activity,
        unavailable marks the user idle, offline leaves presence as it is."""
        if set_presence == ONLINE:
            await self.note_active(user_id)
        elif set_presence == UNAVAILABLE:
            old = await self.user_data.get_presence(user_id)
            if old is None or old.state != UNAVAILABLE:
                last_active = old.last_active_ts if old else self.clock.time_ms()
                status_msg = old.status_msg if old else None
                await self._write(user_id, UNAVAILABLE, status_msg, last_active)

    async def presence_events(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[dict[str, Any]]:
        """m.presence events for /sync: presence changed in (from_pos, to_pos] of the users
        who share a joined room with `user_id`, and their own."""
        rows = await self.user_data.get_presence_changes(user_id, from_pos, to_pos)
        return [
            {"type": "m.presence", "sender": row.user_id, "content": self.format(row)}
            for row in rows
        ]
