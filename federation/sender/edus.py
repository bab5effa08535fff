"""Outbound EDUs: what local handlers tell other servers, queued on the FederationSender
(S-S API "Send-to-device messaging", "Typing Notifications", "Receipts", "Presence").

The typing, receipt and presence handlers report every change, including those an EDU from
another server made; a server speaks only for its own users, so only those are passed on
(and an EDU received is never relayed)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from federation.sender.sender import FederationSender
from homeserver.handlers.device_lists import DeviceListChange
from homeserver.handlers.receipts import READ
from homeserver.identifiers import domain_of
from homeserver.storage.stores.e2e_keys import E2eKeysStore

JsonDict = dict[str, Any]


class OutboundToDevice:
    """The ToDeviceHandler's RemoteToDevice: one m.direct_to_device EDU per destination."""

    def __init__(self, sender: FederationSender) -> None:
        self.sender = sender

    async def send_to_device(
        self,
        sender: str,
        event_type: str,
        messages: Mapping[str, Mapping[str, JsonDict]],
    ) -> None:
        by_server: dict[str, dict[str, Mapping[str, JsonDict]]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = by_device
        for destination, for_server in by_server.items():
            content = {
                "sender": sender,
                "type": event_type,
                # Lets the receiver tell a resent EDU from a new one.
                "message_id": secrets.token_urlsafe(16),
                "messages": for_server,
            }
            await self.sender.send_edu([destination], "m.direct_to_device", content)


class OutboundTyping:
    """The TypingHandler's RemoteTyping: an m.typing EDU to the other servers in the room."""

    def __init__(self, sender: FederationSender) -> None:
        self.sender = sender

    async def typing_changed(self, user_id: str, room_id: str, typing: bool) -> None:
        if domain_of(user_id) != self.sender.server_name:
            return
        servers = await self.sender.outbox.servers_in_room(room_id, self.sender.server_name)
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        await self.sender.send_edu(servers, "m.typing", content)


class OutboundReceipts:
    """The ReceiptsHandler's RemoteReceipts: an m.receipt EDU to the other servers in the
    room."""

    def __init__(self, sender: FederationSender) -> None:
        self.sender = sender

    async def read_receipt(
        self, user_id: str, room_id: str, event_id: str, thread_id: str | None, ts: int
    ) -> None:
        if domain_of(user_id) != self.sender.server_name:
            return
        data: JsonDict = {"ts": ts}
        if thread_id is not None:
            data["thread_id"] = thread_id
        receipt = {"event_ids": [event_id], "data": data}
        servers = await self.sender.outbox.servers_in_room(room_id, self.sender.server_name)
        await self.sender.send_edu(servers, "m.receipt", {room_id: {READ: {user_id: receipt}}})


class OutboundPresence:
    """The PresenceHandler's RemotePresence: an m.presence EDU to every other server sharing a
    room with the user (S-S API: only servers likely to be interested)."""

    def __init__(self, sender: FederationSender) -> None:
        self.sender = sender

    async def presence_changed(self, user_id: str, presence: Mapping[str, Any]) -> None:
        if domain_of(user_id) != self.sender.server_name:
            return
        servers = await self.sender.outbox.servers_sharing_a_room(user_id, self.sender.server_name)
        await self.sender.send_edu(
            servers, "m.presence", {"push": [{"user_id": user_id, **presence}]}
        )


class OutboundDeviceLists:
    """DeviceLists' RemoteDeviceLists: m.device_list_update per changed device and
    m.signing_key_update for cross-signing keys, to every server sharing a room with the
    user (S-S API "Device Management"). `prev_id` names the user's previous change, so a
    receiver that missed one asks for the whole list (GET /user/devices)."""

    def __init__(self, sender: FederationSender, keys: E2eKeysStore) -> None:
        self.sender = sender
        self.keys = keys

    async def device_lists_changed(
        self, user_id: str, position: int, change: DeviceListChange
    ) -> None:
        outbox = self.sender.outbox
        destinations = await outbox.servers_sharing_a_room(user_id, self.sender.server_name)
        if not destinations:
            return
        previous = await self.keys.previous_change(user_id, position)
        prev_id = [previous] if previous is not None else []
        updated = [d for d in dict.fromkeys(change.updated) if d not in change.deleted]
        current = (
            {d.device_id: d.keys for d in await self.keys.get_device_keys([(user_id, updated)])}
            if updated
            else {}
        )
        for device_id in updated:
            content: JsonDict = {
                "user_id": user_id,
                "device_id": device_id,
                "stream_id": position,
                "prev_id": prev_id,
                "deleted": False,
            }
            if device_id in current:
                keys = dict(current[device_id])
                keys.pop("unsigned", None)  # device names stay on their server
                content["keys"] = keys
            await self.sender.send_edu(destinations, "m.device_list_update", content)
        for device_id in dict.fromkeys(change.deleted):
            await self.sender.send_edu(
                destinations,
                "m.device_list_update",
                {
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": position,
                    "prev_id": prev_id,
                    "deleted": True,
                },
            )
        if change.signing_keys:
            found = (
                await self.keys.get_cross_signing_keys([user_id], {"master", "self_signing"})
            ).get(user_id, {})
            content = {"user_id": user_id}
            for key_type, name in (("master", "master_key"), ("self_signing", "self_signing_key")):
                if key_type in found:
                    content[name] = found[key_type]
            await self.sender.send_edu(destinations, "m.signing_key_update", content)
