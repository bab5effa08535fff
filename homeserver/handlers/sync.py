"""GET /sync (C-S API "Syncing", sync.yaml): the response between a `since` token and now, and
the long poll that waits for something to send.

Rooms (timeline, state, invites, leaves) come from the event stream (handlers/sync_rooms.py).
Everything else (typing, receipts, presence, account data, to-device messages, device lists)
comes from `SyncSource`s registered under a slot of the StreamToken; see `add_source`.

The long poll subscribes to the notifier before it reads the store (ARCHITECTURE §1.3), so an
event persisted while the store is read still ends the wait. Sources wake waiting syncs through
the same notifier (`LocalNotifier.on_new_data` for their rooms or users).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.handlers.filters import DEFAULT_FILTER, SyncFilter
from homeserver.handlers.sync_rooms import (
    EventSerializer,
    EventVisibility,
    ForgottenRooms,
    IgnoredUsers,
    RoomsSync,
    empty_joined_room,
)
from homeserver.notifier.local import LocalNotifier
from homeserver.storage import Storage
from homeserver.streams import FIELDS, StreamToken

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class SyncSourceRequest:
    """What a source is asked for one /sync response."""

    user_id: str
    device_id: str
    # The rooms the user is joined to at `to_token` (per-room data is wanted for these only).
    room_ids: frozenset[str]
    # START (all zeros) on an initial sync: send the current state of the stream, e.g. every
    # account data item, the users typing now.
    from_token: StreamToken
    to_token: StreamToken
    initial: bool


@dataclass
class SyncSourceUpdates:
    """What a source contributes: top-level sections and per-room events, all already in
    client format. The sync handler applies the user's filter to each list."""

    presence: list[JsonDict] = field(default_factory=list)
    account_data: list[JsonDict] = field(default_factory=list)
    to_device: list[JsonDict] = field(default_factory=list)
    device_lists_changed: list[str] = field(default_factory=list)
    device_lists_left: list[str] = field(default_factory=list)
    # Counts are reported on every sync; they are not "new data" that ends a long poll.
    device_one_time_keys_count: dict[str, int] = field(default_factory=dict)
    device_unused_fallback_key_types: list[str] | None = None
    room_ephemeral: dict[str, list[JsonDict]] = field(default_factory=dict)
    room_account_data: dict[str, list[JsonDict]] = field(default_factory=dict)
    # slot -> position: a source that sent only part of what its stream holds up to
    # to_token (a capped batch) names the position it reached; next_batch carries that
    # instead, so the rest comes in the next response.
    positions: dict[str, int] = field(default_factory=dict)

    def has_data(self) -> bool:
        return bool(
            self.presence
            or self.account_data
            or self.to_device
            or self.device_lists_changed
            or self.device_lists_left
            or any(self.room_ephemeral.values())
            or any(self.room_account_data.values())
        )

    def merge(self, other: SyncSourceUpdates) -> None:
        self.presence += other.presence
        self.account_data += other.account_data
        self.to_device += other.to_device
        self.device_lists_changed += other.device_lists_changed
        self.device_lists_left += other.device_lists_left
        self.device_one_time_keys_count.update(other.device_one_time_keys_count)
        self.positions.update(other.positions)
        if other.device_unused_fallback_key_types is not None:
            self.device_unused_fallback_key_types = other.device_unused_fallback_key_types
        for target, extra in (
            (self.room_ephemeral, other.room_ephemeral),
            (self.room_account_data, other.room_account_data),
        ):
            for room_id, events in extra.items():
                target.setdefault(room_id, []).extend(events)


class SyncSource(Protocol):
    """A stream of sync data beside room events, registered with `SyncHandler.add_source` under
    its StreamToken slot ("typing", "receipts", "presence", "account_data", "to_device",
    "device_lists").

    `current_position` is the stream's position now; `get_updates` returns what changed in
    (request.from_token.<slot>, request.to_token.<slot>]. When the stream moves, the source
    wakes the affected syncs with `LocalNotifier.on_new_data(room_ids=..., users=...)`."""

    async def current_position(self) -> int: ...

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates: ...


class SyncPresenceHook(Protocol):
    """Told of every /sync with its set_presence ("online" when the client gave none)."""

    async def on_sync(self, user_id: str, set_presence: str) -> None: ...


@dataclass(frozen=True)
class SyncConfig:
    user_id: str
    device_id: str
    filter: SyncFilter = DEFAULT_FILTER
    since: StreamToken | None = None
    full_state: bool = False
    timeout_ms: int = 0
    set_presence: str = "online"


@dataclass
class _Result:
    body: JsonDict
    has_data: bool


class SyncHandler:
    def __init__(self, storage: Storage, notifier: LocalNotifier, rooms: RoomsSync) -> None:
        self.storage = storage
        self.notifier = notifier
        self.rooms = rooms
        self._sources: dict[str, SyncSource] = {}
        self._presence_hook: SyncPresenceHook | None = None

    def add_source(self, name: str, source: SyncSource) -> None:
        """Serve `source` under the token slot `name` (one of streams.FIELDS but "events")."""
        if name not in FIELDS or name == "events":
            raise ValueError(f"no stream token slot {name!r} for a sync source")
        if name in self._sources:
            raise ValueError(f"a sync source is already registered for {name!r}")
        self._sources[name] = source

    def set_presence_hook(self, hook: SyncPresenceHook) -> None:
        self._presence_hook = hook

    async def current_token(self) -> StreamToken:
        positions = {name: await s.current_position() for name, s in self._sources.items()}
        return StreamToken(events=self.storage.stream_ids.current, **positions)

    async def sync(self, config: SyncConfig) -> JsonDict:
        """The /sync response body. Waits up to `timeout_ms` for something new when there is
        nothing to send since `since` (never on an initial or full_state sync: sync.yaml)."""
        if self._presence_hook is not None:
            try:
                await self._presence_hook.on_sync(config.user_id, config.set_presence)
            except Exception:  # presence is best effort; it must not fail the sync
                logger.exception("user_id=%s presence hook failed", config.user_id)
        if config.since is None or config.full_state or config.timeout_ms <= 0:
            return (await self._sync_once(config, await self.current_token())).body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.timeout_ms / 1000
        while True:
            # Subscribed before the read: whatever commits from here on wakes the wait below.
            # A new listener per round, since the user's rooms may have changed.
            joined = await self.rooms.joined_rooms(config.user_id)
            with self.notifier.listen(config.user_id, joined) as listener:
                now = await self.current_token()
                remaining = deadline - loop.time()
                # A token equal to now in every stream has nothing after it: a client that
                # polls again right after a response waits without computing an empty one.
                if now != config.since or remaining <= 0:
                    result = await self._sync_once(config, now)
                    if result.has_data or remaining <= 0:
                        return result.body
                # Woken or not, read again: on a timeout the final read returns the token
                # of now (events for other users may have moved the stream meanwhile).
                await listener.wait(remaining)

    async def _sync_once(self, config: SyncConfig, now: StreamToken) -> _Result:
        since = config.since
        f = config.filter
        rooms = await self.rooms.compute(
            config.user_id, config.device_id, f, since, now, config.full_state
        )
        updates = await self._source_updates(config, rooms.joined_room_ids, now)
        join = rooms.join
        for section, by_room, room_filter in (
            ("ephemeral", updates.room_ephemeral, f.ephemeral),
            ("account_data", updates.room_account_data, f.room_account_data),
        ):
            for room_id, events in by_room.items():
                if room_id not in rooms.joined_room_ids or not room_filter.matches_room(room_id):
                    continue
                kept = room_filter.filter_json(events)
                if kept:
                    entry = join.get(room_id)
                    if entry is None:
                        entry = join[room_id] = empty_joined_room(now, f)
                    entry[section]["events"].extend(kept)
        await self.rooms.add_notification_counts(config.user_id, join, f)
        presence = f.presence.filter_json(updates.presence)
        account_data = f.account_data.filter_json(updates.account_data)
        next_batch = now
        for name, position in updates.positions.items():
            next_batch = next_batch.with_position(name, min(position, now.get(name)))
        body: JsonDict = {
            "next_batch": str(next_batch),
            "rooms": {
                "join": join,
                "invite": rooms.invite,
                "leave": rooms.leave,
                "knock": rooms.knock,
            },
            "presence": {"events": presence},
            "account_data": {"events": account_data},
            "to_device": {"events": updates.to_device},
            "device_lists": {
                "changed": _unique(updates.device_lists_changed),
                "left": _unique(updates.device_lists_left),
            },
            "device_one_time_keys_count": updates.device_one_time_keys_count,
        }
        if updates.device_unused_fallback_key_types is not None:
            body["device_unused_fallback_key_types"] = updates.device_unused_fallback_key_types
        has_data = bool(
            join
            or rooms.invite
            or rooms.leave
            or rooms.knock
            or presence
            or account_data
            or updates.to_device
            or updates.device_lists_changed
            or updates.device_lists_left
        )
        return _Result(body, has_data)

    async def _source_updates(
        self, config: SyncConfig, joined: Sequence[str], now: StreamToken
    ) -> SyncSourceUpdates:
        merged = SyncSourceUpdates()
        if not self._sources:
            return merged
        from_token = config.since or StreamToken.START
        for name in self._sources:
            if from_token.get(name) > now.get(name):
                # A position the stream never reached here: an in-memory stream (typing)
                # restarted, or the database was restored. Send the stream from its start.
                from_token = from_token.with_position(name, 0)
        request = SyncSourceRequest(
            user_id=config.user_id,
            device_id=config.device_id,
            room_ids=frozenset(joined),
            from_token=from_token,
            to_token=now,
            initial=config.since is None,
        )
        # Asked even when their position has not moved: some report on every sync (one-time
        # key counts); each returns quickly when from and to are equal.
        for source in self._sources.values():
            merged.merge(await source.get_updates(request))
        return merged


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def build_sync_handler(
    storage: Storage,
    notifier: LocalNotifier,
    serializer: EventSerializer,
    visibility: EventVisibility,
    forgotten: ForgottenRooms | None = None,
    ignored: IgnoredUsers | None = None,
) -> SyncHandler:
    rooms = RoomsSync(storage, serializer, visibility, notifier, forgotten, ignored)
    return SyncHandler(storage, notifier, rooms)
