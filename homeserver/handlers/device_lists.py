"""DeviceLists: who must re-read whose device keys (C-S API "Tracking the device list for a
user"), and the end-to-end encryption sections of /sync.

A user's devices or keys change (a device uploads keys or is deleted, cross-signing keys or
signatures are uploaded) inside `changing`, which puts the user on the device list stream.
Other users learn of it in /sync `device_lists.changed` and GET /keys/changes when they share
a room with the user, and also when they start sharing one; `device_lists.left` names the
users they no longer share any room with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.notifier.local import LocalNotifier
from homeserver.storage.database import Txn
from homeserver.storage.id_generators import StreamIdGenerator
from homeserver.storage.stores.e2e_keys import E2eKeysStore
from homeserver.storage.stores.sync_reads import SyncReadsStore
from homeserver.streams import StreamToken

JOIN = "join"
# Reported even before a device uploads any: clients (Element among them) upload one-time
# keys when they see this count, and a missing count reads as "unknown" rather than zero.
SIGNED_CURVE25519 = "signed_curve25519"


class JoinedRooms(Protocol):
    async def joined_rooms(self, user_id: str) -> list[str]: ...


@dataclass
class DeviceListChange:
    """What one `DeviceLists.changing` transaction changed, filled in by its caller: the
    devices whose keys were added or replaced, the devices deleted, and whether the user's
    cross-signing keys (or signatures) changed."""

    txn: Txn
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    signing_keys: bool = False


class RemoteDeviceLists(Protocol):
    """Tells other servers (m.device_list_update and m.signing_key_update EDUs, S-S API
    "Device Management") that a local user's devices or keys changed, at `position` of the
    device list stream."""

    async def device_lists_changed(
        self, user_id: str, position: int, change: DeviceListChange
    ) -> None: ...


@dataclass
class DeviceListChanges:
    changed: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)


class DeviceLists:
    def __init__(
        self,
        keys: E2eKeysStore,
        reads: SyncReadsStore,
        rooms: JoinedRooms,
        events: StreamIdGenerator,
        notifier: LocalNotifier,
    ) -> None:
        self.keys = keys
        self.events = events
        self.reads = reads
        self.rooms = rooms
        self.notifier = notifier
        # Until federation sets one, only local users hear of changes.
        self.remote: RemoteDeviceLists | None = None

    @asynccontextmanager
    async def changing(self, user_id: str) -> AsyncIterator[DeviceListChange]:
        """A transaction (`change.txn`) that changes the devices or keys of `user_id`, who
        says in `change` what changed; once it commits, everyone who shares a room with the
        user is woken to re-read their keys, and other servers are told."""
        async with self.keys.changing_devices([user_id]) as (txn, position):
            change = DeviceListChange(txn)
            yield change
        self.notifier.on_new_data(
            room_ids=await self.rooms.joined_rooms(user_id), users=[user_id]
        )
        if self.remote is not None:
            await self.remote.device_lists_changed(user_id, position, change)

    async def remote_user_changed(self, user_id: str) -> None:
        """Another server says its user's devices or keys changed (m.device_list_update or
        m.signing_key_update): local users who share a room with them re-read them."""
        async with self.keys.changing_devices([user_id]):
            pass  # the stream row is the whole change
        self.notifier.on_new_data(room_ids=await self.rooms.joined_rooms(user_id))

    async def changes(
        self, user_id: str, from_token: StreamToken, to_token: StreamToken
    ) -> DeviceListChanges:
        """The device list changes `user_id` must hear of between two tokens."""
        result = DeviceListChanges()
        # Never past now: a token from a database restored from backup may be ahead of it.
        upto = min(to_token.device_lists, await self.current_position())
        if from_token.device_lists < upto:
            result.changed = await self.keys.changed_users_sharing_rooms(
                user_id, from_token.device_lists, upto
            )
        upto = min(to_token.events, self.events.current)
        since = min(from_token.events, upto)
        if since < upto:
            await self._membership_changes(user_id, since, upto, result)
        return result

    async def _membership_changes(
        self, user_id: str, since: int, upto: int, result: DeviceListChanges
    ) -> None:
        """Starting to share a room with someone is a change of their device list as far as
        `user_id` knows; sharing none any more puts them in `left`."""
        joined = set(await self.rooms.joined_rooms(user_id))
        newly_joined: set[str] = set()
        rooms_left: set[str] = set()
        if self.notifier.membership_changed(user_id, since, upto):
            first_change: dict[str, str | None] = {}
            for change in await self.reads.get_membership_changes(user_id, since):
                if change.stream_ordering <= upto:
                    first_change.setdefault(change.room_id, change.prev_membership)
            for room_id, before in first_change.items():
                if room_id in joined and before != JOIN:
                    newly_joined.add(room_id)
                elif room_id not in joined and before == JOIN:
                    rooms_left.add(room_id)
        # Only rooms whose members changed in the range (all of them when the notifier does
        # not remember that far back).
        watched = joined - newly_joined
        known = self.notifier.state_changes(watched, since, upto)
        if known is not None:
            watched = {room_id for room_id, members in known.items() if members}
        now_sharing: set[str] = set()
        candidates_left: set[str] = set()
        for _room_id, other, membership in await self.reads.get_member_changes(
            watched, since, upto
        ):
            if membership == JOIN:
                now_sharing.add(other)
            else:
                candidates_left.add(other)
        now_sharing |= await self.reads.get_joined_members(newly_joined)
        candidates_left |= await self.reads.get_joined_members(rooms_left)
        # The user's own devices change only through the device list stream.
        now_sharing.discard(user_id)
        candidates_left -= now_sharing | {user_id}
        result.changed |= now_sharing
        if candidates_left:
            still_sharing = await self.reads.users_sharing_a_room(user_id, candidates_left)
            result.left |= candidates_left - still_sharing

    # -- the sync source (slot "device_lists") ------------------------------------------------

    async def current_position(self) -> int:
        return await self.keys.current_device_list_position()

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        counts, unused_fallback = await self.keys.key_counts(request.user_id, request.device_id)
        updates = SyncSourceUpdates(
            device_one_time_keys_count={SIGNED_CURVE25519: 0, **counts},
            device_unused_fallback_key_types=unused_fallback,
        )
        if not request.initial:
            changes = await self.changes(request.user_id, request.from_token, request.to_token)
            updates.device_lists_changed = sorted(changes.changed)
            updates.device_lists_left = sorted(changes.left)
        return updates
