"""ToDeviceHandler: send-to-device messages (C-S API "Send-to-Device messaging") and the
to_device slot of /sync.

A device's messages stay in its inbox until it acknowledges them by syncing with a token
whose to_device position is at or past them, so a retried /sync with the same `since` gets
them again (at least once); the client's own `next_batch` handling makes it exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from homeserver.errors import Codes, MatrixError
from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.identifiers import domain_of, is_valid_user_id
from homeserver.lru import LruCache
from homeserver.notifier import Notifier
from homeserver.storage.stores.to_device import InboxMessage, ToDeviceStore

JsonDict = dict[str, Any]
SLOT = "to_device"
# C-S API "Send-to-Device messaging", Server behaviour: 100 per /sync is the recommended cap.
MAX_PER_SYNC = 100


class RemoteToDevice(Protocol):
    """Hands messages for users of other servers to federation (an m.direct_to_device EDU per
    destination, S-S API "Send-to-device messaging")."""

    async def send_to_device(
        self,
        sender: str,
        event_type: str,
        messages: Mapping[str, Mapping[str, JsonDict]],
    ) -> None: ...


class ToDeviceHandler:
    def __init__(self, store: ToDeviceStore, notifier: Notifier, server_name: str) -> None:
        self.store = store
        self.notifier = notifier
        self.server_name = server_name
        # Until federation sets one, messages for remote users are dropped.
        self.remote: RemoteToDevice | None = None
        # (user, device) -> the `since` position its inbox was last cleared up to. A position
        # below a token's was committed before the token existed, so nothing new can appear
        # at or below it: syncing again with the same token (every sync while no to-device
        # message moves the stream) needs no write.
        self._cleared: LruCache[tuple[str, str], int] = LruCache(100_000)

    async def current_position(self) -> int:
        return await self.store.current()

    async def send(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        body: Mapping[str, Any],
    ) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}."""
        messages = _parse_messages(body)
        local: dict[str, dict[str, JsonDict]] = {}
        remote: dict[str, dict[str, JsonDict]] = {}
        for user_id, by_device in messages.items():
            target = local if domain_of(user_id) == self.server_name else remote
            target[user_id] = by_device
        recipients = await self.store.add_messages(
            sender, (sender_device, txn_id), event_type, local
        )
        if recipients is None:
            return  # a retried transaction: already queued (and already forwarded)
        if recipients:
            self.notifier.on_new_data(users=recipients)
        if remote and self.remote is not None:
            await self.remote.send_to_device(sender, event_type, remote)

    async def receive_remote(
        self, origin: str, sender: str, event_type: str, body: Mapping[str, Any]
    ) -> None:
        """Messages from another server's user (an m.direct_to_device EDU) for ours."""
        if domain_of(sender) != origin:
            raise MatrixError("The sender is not the origin's user", Codes.FORBIDDEN)
        messages = _parse_messages(body)
        local = {u: d for u, d in messages.items() if domain_of(u) == self.server_name}
        recipients = await self.store.add_messages(sender, None, event_type, local)
        if recipients:
            self.notifier.on_new_data(users=recipients)

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        """The sync source of the to_device slot: the syncing device's messages after `since`.
        A `since` token acknowledges everything up to its position, which is deleted."""
        from_pos = request.from_token.to_device
        to_pos = request.to_token.to_device
        device = (request.user_id, request.device_id)
        if from_pos > 0 and self._cleared.get_hit(device) != from_pos:
            await self.store.delete_delivered(request.user_id, request.device_id, from_pos)
            self._cleared.put(device, from_pos)
        if from_pos >= to_pos:
            return SyncSourceUpdates()
        rows = await self.store.get_messages(
            request.user_id, request.device_id, from_pos, to_pos, MAX_PER_SYNC + 1
        )
        updates = SyncSourceUpdates(to_device=[client_format(r) for r in rows[:MAX_PER_SYNC]])
        if len(rows) > MAX_PER_SYNC:
            # A device has one message per position, so this position covers exactly what
            # is sent now; the rest follows on the next sync.
            updates.positions[SLOT] = rows[MAX_PER_SYNC - 1].stream_id
        return updates


def client_format(message: InboxMessage) -> JsonDict:
    return {"sender": message.sender, "type": message.type, "content": message.content}


def _parse_messages(body: Mapping[str, Any]) -> dict[str, dict[str, JsonDict]]:
    messages = body.get("messages")
    if not isinstance(messages, dict):
        raise MatrixError("messages must be an object", Codes.BAD_JSON)
    for user_id, by_device in messages.items():
        if not is_valid_user_id(user_id):
            raise MatrixError(f"{user_id!r} is not a valid user ID", Codes.INVALID_PARAM)
        if not isinstance(by_device, dict):
            raise MatrixError(f"messages for {user_id} must be an object", Codes.BAD_JSON)
        for device_id, content in by_device.items():
            if not device_id:
                raise MatrixError("A device ID must not be empty", Codes.INVALID_PARAM)
            if not isinstance(content, dict):
                raise MatrixError("Each message must be an object", Codes.BAD_JSON)
    return messages
